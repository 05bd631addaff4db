"""Ping latency: from the ingest request that completes a ticket spike to the chat.postMessage
arriving at Slack (issue 3, "Speed": p50 <= 200 ms, p99 <= 1 s).

    python -m benchmarks.ping_latency [--spikes 200] [--database-url URL]

Runs `stallwatch serve` as its own process (scheduler on, the outbox sender thread running,
SQLite in a temp dir unless --database-url), with Slack pointed at the loopback FakeSlack
(tests/fakes) in this process. For each spike: a new account with $50,000 ARR and its own
CSM (in the fake's directory, so every ping includes users.lookupByEmail and
conversations.open), two tickets on one topic, then the timed third ticket. The latency is
from just before that request is sent to the fake's recorded arrival time of the first
chat.postMessage for the account (the owner's DM or the alerts channel, whichever is first).
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx

from benchmarks import ingest as ingest_bench

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.ingest.tickets import sign  # noqa: E402
from bot.settings import default_rules_text  # noqa: E402
from tests.fakes.slack_api import FakeSlack  # noqa: E402

WRITE_KEY = "bench-key"
TICKETS_SECRET = "bench-tickets"
ALERTS = "C0ALERTS"
UTC = timezone.utc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(env: dict, port: int) -> subprocess.Popen:
    argv = [sys.executable, "-m", "bot.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    return ingest_bench.start_server(argv, env, port)


def private_schema(url: str):
    """A fresh schema on the PostgreSQL server at `url`; returns its URL and a function dropping it."""
    import uuid

    from sqlalchemy import create_engine, text

    schema = f"ping_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1)
                          if url.startswith("postgresql://") else url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))

    def drop() -> None:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}", drop


def post_ticket(client: httpx.Client, ticket: dict) -> None:
    body = json.dumps(ticket).encode()
    r = client.post("/ingest/tickets", content=body,
                    headers={"Content-Type": "application/json", "X-Stallwatch-Signature": sign(body, TICKETS_SECRET)})
    r.raise_for_status()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spikes", type=int, default=200)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temp dir")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each ping")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="stallwatch-ping-"))
    rules = tmp / "rules.toml"  # the default rules; quiet hours do not apply to a P0 anyway
    rules.write_text(default_rules_text(), encoding="utf-8")
    port = free_port()
    latencies: list[float] = []
    database_url, drop_schema = args.database_url or f"sqlite:///{tmp / 'bench.db'}", None
    if database_url.startswith("postgresql"):  # a private schema, dropped afterwards
        database_url, drop_schema = private_schema(database_url)
    with FakeSlack() as fake:
        env = {
            "DATABASE_URL": database_url,
            "SLACK_BOT_TOKEN": fake.token, "SLACK_API_URL": fake.url, "STALLWATCH_ALERTS_CHANNEL": ALERTS,
            "STALLWATCH_WRITE_KEY": WRITE_KEY, "TICKETS_SHARED_SECRET": TICKETS_SECRET,
            "STALLWATCH_RULES": str(rules), "SLACK_SIGNING_SECRET": "", "STALLWATCH_DIGEST_CHANNEL": "",
        }
        proc = start_server(env, port)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30,
                              auth=(WRITE_KEY, "")) as client:
                run = int(time.time())
                for i in range(args.spikes):
                    account, name = f"bench-{run}-{i}", f"Bench {run} {i:05d}"
                    email = f"csm{i}@bench.test"
                    fake.add_user(f"U{i:07d}", email)
                    client.post("/v1/group", json={"type": "group", "userId": f"{account}-u", "groupId": account,
                                                   "traits": {"name": name, "arr": 50000, "owner_email": email}}
                                ).raise_for_status()
                    now = datetime.now(UTC)
                    for n, days in enumerate((5, 3)):
                        post_ticket(client, {"id": f"{account}-T{n}", "account_id": account, "status": "open",
                                             "topic": "SSO", "subject": "SSO is broken",
                                             "created_at": (now - timedelta(days=days)).isoformat()})
                    third = {"id": f"{account}-T2", "account_id": account, "status": "open", "topic": "sso",
                             "subject": "SSO still broken", "created_at": (now - timedelta(days=1)).isoformat()}
                    started = time.time()
                    post_ticket(client, third)
                    mine = re.compile(rf"\b{re.escape(name)}\b")

                    def arrived() -> list:
                        return [c for c in fake.calls("chat.postMessage")
                                if mine.search(str(c.body.get("text") or ""))]

                    if not fake.wait_for(lambda: bool(arrived()), timeout=args.timeout):
                        raise SystemExit(f"no chat.postMessage for {name} within {args.timeout} s")
                    latencies.append(min(c.at for c in arrived()) - started)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
            if drop_schema is not None:
                drop_schema()
        posts = len(fake.calls("chat.postMessage"))
    ms = [x * 1000 for x in latencies]
    p50, p99 = statistics.median(ms), percentile(ms, 0.99)
    print(f"ping latency over {len(ms)} ticket spikes ({posts} chat.postMessage calls, "
          f"{'PostgreSQL' if args.database_url and 'postgres' in args.database_url else 'SQLite'}):")
    print(f"  p50 {p50:.1f} ms   p90 {percentile(ms, 0.90):.1f} ms   p99 {p99:.1f} ms   max {max(ms):.1f} ms")
    print(f"  targets: p50 <= 200 ms {'OK' if p50 <= 200 else 'MISSED'}, p99 <= 1000 ms {'OK' if p99 <= 1000 else 'MISSED'}")


if __name__ == "__main__":
    main()
