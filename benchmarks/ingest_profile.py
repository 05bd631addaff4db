"""Profile the server under the ingest benchmark's load with py-spy (sampling every thread).

    python -m benchmarks.ingest_profile [--events 50000] [--out /tmp/ingest.txt]

Starts `stallwatch serve`, sends the accounts and a warm-up, then attaches
`py-spy record --gil --format raw` (collapsed stacks of the thread holding the GIL: the
Python work that competes for the one interpreter) while the benchmark's batches are sent
from 4 clients, and prints the top frames by self and by cumulative (inclusive) samples.
`--wall`: every thread sampled, idle included, and only the ingest writer thread's stacks
reported (where its wall time goes: the writer is the one serial step). Needs py-spy
(pip install py-spy) and ptrace rights.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from benchmarks.ingest import WRITE_KEY, account_batches, blast, make_batches, start_server


def top(collapsed: Path, n: int, only: str = "") -> str:
    self_c: Counter = Counter()
    cum: Counter = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        count = int(count)
        frames = stack.split(";")
        if only and not any(only in f for f in frames):
            continue
        # Frames are "func (file:line)": counted per function.
        frames = [f.rsplit(":", 1)[0] + ")" if ":" in f else f for f in frames]
        total += count
        self_c[frames[-1] if frames else "?"] += count
        for f in set(frames):
            cum[f] += count
    out = [f"{total} samples" + (f" of stacks through {only}" if only else ""), "", "self:"]
    out += [f"  {100 * c / total:5.1f}%  {f}" for f, c in self_c.most_common(n)]
    out += ["", "cumulative:"]
    out += [f"  {100 * c / total:5.1f}%  {f}" for f, c in cum.most_common(n * 2)]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--out", default="/tmp/ingest-profile.txt")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--wall", action="store_true",
                        help="sample every thread, idle included (wall time), and report the ingest writer thread")
    args = parser.parse_args()
    batches = make_batches(args.events + 800, 100)
    with tempfile.TemporaryDirectory() as tmp:
        env = {"DATABASE_URL": f"sqlite:///{Path(tmp) / 'sw.db'}", "STALLWATCH_WRITE_KEY": WRITE_KEY}
        py_spy = str(Path(sys.executable).parent / "py-spy")
        argv = [sys.executable, "-m", "bot.cli", "serve", "--no-scheduler", "--host", "127.0.0.1", "--port", "3911"]
        proc = start_server(argv, env, 3911)
        try:
            asyncio.run(blast("http://127.0.0.1:3911/v1/batch", account_batches(), 4))
            asyncio.run(blast("http://127.0.0.1:3911/v1/batch", batches[:8], 4))
            mode = ["--idle"] if args.wall else ["--gil"]
            spy = subprocess.Popen([py_spy, "record", *mode, "--format", "raw", "-r", "200", "-o", args.out,
                                    "--pid", str(proc.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
            seconds, done = asyncio.run(blast("http://127.0.0.1:3911/v1/batch", batches[8:], 4))
            print(f"{done * 100 / seconds:,.0f} events/s while profiled")
            spy.send_signal(2)  # py-spy writes its output when interrupted
            spy.wait(timeout=60)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(top(Path(args.out), args.top, "BatchWriter._run" if args.wall else ""))


if __name__ == "__main__":
    main()
