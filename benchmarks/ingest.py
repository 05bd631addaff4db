"""Ingest throughput through POST /v1/batch, compared with two floors on the same stack.

    python -m benchmarks.ingest [--events 100000] [--clients 4] [--batch 100]

Starts each server as its own process (one uvicorn worker, SQLite in a temp dir), sends the
same pre-built batches from `--clients` concurrent HTTP clients, and prints events/s for
each and Stallwatch's ratio to each floor:

- bare (benchmarks/bare_server.py): orjson + one SQLAlchemy Core executemany per request;
- raw (benchmarks/raw_server.py): stdlib `json` + one raw `sqlite3` executemany per request
  into a table shaped like our `event` table (same columns, unique key and partial index).

Both floors run on uvicorn + Starlette, like Stallwatch, with SQLite in WAL mode, and by
default with uvicorn's h11 HTTP parser, which `stallwatch serve` runs (bot/serving.py: header
limits httptools lacks); `--floor-http httptools` gives them uvicorn's C parser instead. Events are realistic: track calls (step events and feature usage)
spread over 10,000 accounts, with identify and group calls mixed in.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import orjson

WRITE_KEY = "bench-key"
STEPS = ["Signed Up", "Project Created", "Integration Connected", "Invite Sent", "Report Shared"]
FEATURES = ["Dashboard Viewed", "Report Viewed", "Filter Applied", "Export Clicked", "Search Performed"]


def make_batches(n_events: int, batch_size: int, accounts: int = 10_000, seed: int = 7,
                 start: datetime = datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc)) -> list[bytes]:
    """A live stream from a product with `accounts` active accounts, as Segment would send it:
    timestamps move forward with the stream (a few arrive hours late), most events are feature
    usage, a few are onboarding steps, identify and group calls are mixed in."""
    rnd = random.Random(seed)
    span = timedelta(hours=2)
    batches = []
    for first in range(0, n_events, batch_size):
        messages = []
        for i in range(first, first + batch_size):
            acct = rnd.randrange(accounts)
            user = f"user-{acct}-{rnd.randrange(5)}"
            at = start + span * (i / n_events)
            if rnd.random() < 0.02:
                at -= timedelta(minutes=rnd.randrange(1, 600))  # a late event from an offline client
            base = {"userId": user, "messageId": str(uuid.UUID(int=rnd.getrandbits(128))), "timestamp": at.isoformat(),
                    "context": {"groupId": f"acct-{acct}", "library": {"name": "analytics-python", "version": "2.3.4"}}}
            roll = rnd.random()
            if roll < 0.01:
                messages.append({**base, "type": "identify",
                                 "traits": {"email": f"{user}@example.com", "name": f"User {acct}"}})
            elif roll < 0.015:
                messages.append({**base, "type": "group", "groupId": f"acct-{acct}",
                                 "traits": {"name": f"Account {acct}", "plan": "pro", "arr": 1000 + acct * 7}})
            else:
                name = rnd.choice(STEPS) if rnd.random() < 0.03 else rnd.choice(FEATURES)
                messages.append({**base, "type": "track", "event": name,
                                 "properties": {"plan": "pro", "path": "/app/reports", "value": round(rnd.random(), 4)}})
        batches.append(orjson.dumps({"batch": messages, "sentAt": start.isoformat()}))
    return batches


def account_batches(accounts: int = 10_000, batch_size: int = 100) -> list[bytes]:
    """The accounts' group calls, sent before timing: the stream is about known accounts."""
    at = datetime(2026, 10, 1, tzinfo=timezone.utc).isoformat()
    messages = [{"type": "group", "userId": f"user-{a}-0", "groupId": f"acct-{a}", "timestamp": at,
                 "messageId": f"group-{a}", "traits": {"name": f"Account {a}", "plan": "pro", "arr": 1000 + a * 7}}
                for a in range(accounts)]
    return [orjson.dumps({"batch": messages[i:i + batch_size]}) for i in range(0, accounts, batch_size)]


def start_server(argv: list[str], env: dict, port: int) -> subprocess.Popen:
    """Start a server process and wait until its /healthz answers (shared by the benchmarks)."""
    proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read().decode()[-2000:]}")
    proc.kill()
    raise SystemExit("server did not start in 60 s")


async def blast(url: str, batches: list[bytes], clients: int) -> tuple[float, int]:
    queue = list(reversed(batches))
    stored = 0

    async def client() -> None:
        nonlocal stored
        async with httpx.AsyncClient(auth=(WRITE_KEY, ""), timeout=60,
                                     headers={"Content-Type": "application/json"}) as http:
            while queue:
                body = queue.pop()
                response = await http.post(url, content=body)
                response.raise_for_status()
                stored += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - started, stored


def run(label: str, argv: list[str], env: dict, port: int, batches: list[bytes], clients: int, batch_size: int) -> float:
    proc = start_server(argv, env, port)
    try:
        # Not timed: the accounts the stream is about, and a warm-up of connections and caches.
        asyncio.run(blast(f"http://127.0.0.1:{port}/v1/batch", account_batches(), clients))
        asyncio.run(blast(f"http://127.0.0.1:{port}/v1/batch", batches[:8], clients))
        cpu = cpu_seconds(proc.pid)
        seconds, done = asyncio.run(blast(f"http://127.0.0.1:{port}/v1/batch", batches[8:], clients))
        cpu = cpu_seconds(proc.pid) - cpu
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    rate = done * batch_size / seconds
    # The server's own CPU time per event is steadier than events/s on a shared machine.
    print(f"{label:<12} {done * batch_size:>8} events in {seconds:6.2f} s  = {rate:>9,.0f} events/s"
          f"   server CPU {1e6 * cpu / (done * batch_size):6.1f} us/event")
    return rate


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--floor-http", choices=("h11", "httptools", "auto"), default="h11",
                        help="the floors' HTTP parser: h11 (default), what `stallwatch serve` runs (bot/serving.py "
                             "chose it for its header limits), or httptools/auto, uvicorn's faster C parser")
    args = parser.parse_args()
    batches = make_batches(args.events + 8 * args.batch, args.batch)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(f"ingest benchmark: {args.events} events, {args.batch}-event batches, {args.clients} concurrent clients, "
              f"SQLite, one process each, {os.cpu_count()} cores; floors on uvicorn --http {args.floor_http}")
        sw = run("stallwatch", [sys.executable, "-m", "bot.cli", "serve", "--no-scheduler", "--host", "127.0.0.1",
                                "--port", "3901"],
                 {"DATABASE_URL": f"sqlite:///{tmp / 'sw.db'}", "STALLWATCH_WRITE_KEY": WRITE_KEY},
                 3901, batches, args.clients, args.batch)
        bare = run("bare", [sys.executable, "-m", "uvicorn", "benchmarks.bare_server:app", "--host", "127.0.0.1",
                            "--port", "3902", "--log-level", "warning", "--no-access-log", "--http", args.floor_http],
                   {"DATABASE_URL": f"sqlite:///{tmp / 'bare.db'}"}, 3902, batches, args.clients, args.batch)
        raw = run("raw", [sys.executable, "-m", "uvicorn", "benchmarks.raw_server:app", "--host", "127.0.0.1",
                          "--port", "3903", "--log-level", "warning", "--no-access-log", "--http", args.floor_http],
                  {"DATABASE_URL": f"sqlite:///{tmp / 'raw.db'}"}, 3903, batches, args.clients, args.batch)
        print(f"floors: bare (SQLAlchemy) {bare:,.0f} events/s, raw (stdlib json + sqlite3) {raw:,.0f} events/s")
        print(f"ratio stallwatch/bare: {sw / bare:.2f}   ratio stallwatch/raw: {sw / raw:.2f}   "
              f"(target >= 0.4 of raw, aim 0.5; stallwatch >= 10,000 events/s)")


if __name__ == "__main__":
    main()
