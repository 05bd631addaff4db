"""Proof under load and faults (issue 6): run a scenario, print its figures and verdict.

    python -m benchmarks.proof SCENARIO [--full] [--database sqlite|postgresql] [--database-url URL]
                                        [--json FILE]

SCENARIO: multiprocess (PostgreSQL only), crash, storm, soak, mail_crash, or all. Without
--full each runs at the short size CI uses (tests/proof); --full is the size of
benchmarks/REPORT.md. PostgreSQL: --database-url, or STALLWATCH_TEST_POSTGRES_URL; each run
makes its own schema and drops it afterwards. Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

SCENARIOS = ("multiprocess", "crash", "storm", "soak", "mail_crash")


def machine() -> str:
    mem = ""
    try:
        kb = int(next(line for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal")).split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GB"
    except (OSError, StopIteration, ValueError):
        pass
    return f"{os.cpu_count()} cores{mem}, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def run_one(name: str, backend: str, url: str | None, full: bool) -> dict:
    module = importlib.import_module(f"benchmarks.proof.{name}")
    params = module.FULL if full else module.SHORT
    started = time.time()
    with tempfile.TemporaryDirectory(prefix=f"stallwatch-proof-{name}-") as tmp:
        print(f"== {name} ({'full' if full else 'short'}, {backend}) ==", flush=True)
        if name == "multiprocess":
            result = module.run(url, Path(tmp), params)
        else:
            result = module.run(backend, url, Path(tmp), params)
    verdict = "PASS" if not result.problems else "FAIL"
    print(json.dumps(result.figures, indent=1, default=str))
    for p in result.problems:
        print(f"  PROBLEM: {p}")
    for k in result.known_issues:
        print(f"  KNOWN ISSUE: {k}")
    print(f"== {name} ({backend}): {verdict} in {time.time() - started:.0f} s ==\n", flush=True)
    return {"scenario": name, "backend": backend, "full": full, "verdict": verdict, "seconds": round(time.time() - started),
            "figures": result.figures, "problems": result.problems, "known_issues": result.known_issues}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=SCENARIOS + ("all",))
    parser.add_argument("--full", action="store_true", help="the report's sizes (minutes), not CI's (seconds)")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default=None,
                        help="default: postgresql when a URL is known, else sqlite (multiprocess: postgresql)")
    parser.add_argument("--database-url", default=os.environ.get("STALLWATCH_TEST_POSTGRES_URL"),
                        help="a PostgreSQL server URL (default: $STALLWATCH_TEST_POSTGRES_URL)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    url = args.database_url
    backend = args.database or ("postgresql" if url else "sqlite")
    print(f"machine: {machine()}; {time.strftime('%Y-%m-%d %H:%M %Z')}")
    results = []
    for name in (SCENARIOS if args.scenario == "all" else (args.scenario,)):
        if name == "multiprocess" and not url:
            print("multiprocess needs PostgreSQL: give --database-url or STALLWATCH_TEST_POSTGRES_URL")
            sys.exit(2)
        results.append(run_one(name, "postgresql" if name == "multiprocess" else backend, url, args.full))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "at": time.strftime("%Y-%m-%d %H:%M"),
                                         "results": results}, indent=1, default=str))
    sys.exit(0 if all(r["verdict"] == "PASS" for r in results) else 1)


if __name__ == "__main__":
    main()
