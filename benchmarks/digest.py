"""Digest build time (issue 3, "Speed"): 100,000 accounts with 10,000 open stalls, built
(`build_digest`) and rendered (`digest_messages`) in at most 2 s.

Rows are bulk-inserted with SQLAlchemy Core straight into `account` and `stall` (not through
ingest): signups spread over two years (so ~1,900 accounts are in the 14-day funnel cohort),
10,000 open stalls + 1,000 snoozed + 5,000 resolved, 25 owners.

    source /tmp/v/bin/activate && cd /work/main && python -m benchmarks.digest            # SQLite (temp file)
    DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test python -m benchmarks.digest
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone

from sqlalchemy import Engine, text

from storage.models import Account, Stall

UTC = timezone.utc
ACCOUNT = Account.__table__
STALL = Stall.__table__
STEPS = ("Signed Up", "Project Created", "Integration Connected", "Invite Sent")
TRACKS = ("high_touch", "standard", "self_serve")
PRIORITIES = ("P0", "P1", "P2", "P3")


def account_row(i: int, now: datetime, *, owner: str | None, arr: float, signup_days: float,
                steps_done: int = 1, activated: bool = False, track: str = "standard") -> dict:
    signup = now - timedelta(days=signup_days)
    steps = {STEPS[k]: (signup + timedelta(hours=k)).isoformat() for k in range(min(steps_done, len(STEPS)))}
    return dict(
        id=f"acct-{i}", name=f"Account {i}", name_lower=f"account {i}", arr=arr, owner_email=owner,
        owner_slack_id=None, track=track, status="active" if activated else "trialing", steps=steps,
        signup_at=signup, activated_at=(signup + timedelta(days=2)) if activated else None,
        stage="Activation" if activated else "Onboarding", steps_done=len(steps), journey_version="",
        created_at=signup, updated_at=now,
    )


def stall_row(account_id: str, now: datetime, *, score: float, priority: str = "P2", status: str = "open",
              opened_days: float = 3.0, rule: str = "step_stalled", resolved_hours: float | None = None) -> dict:
    opened = now - timedelta(days=opened_days)
    live = status in ("open", "snoozed")
    return dict(
        account_id=account_id, rule=rule, step="Integration Connected",
        open_key=f"{account_id}:{rule}" if live else None, status=status, opened_at=opened,
        stalled_since=opened - timedelta(days=1), threshold_at=opened, updated_at=now,
        resolved_at=None if live else now - timedelta(hours=resolved_hours or 1.0),
        resolved_by=None if live else "system", score=score, severity=1.0, priority=priority,
        why=f"{priority}: ${score:,.0f} at risk: stuck on 'Connect integration'", detail="", stage="Onboarding",
        snoozed_until=now + timedelta(days=3) if status == "snoozed" else None, recovery_attempts=0,
    )


def seed(engine: Engine, now: datetime, *, accounts: int = 100_000, open_stalls: int = 10_000,
         snoozed: int = 1_000, resolved: int = 5_000, owners: int = 25, seed_value: int = 7) -> None:
    rng = random.Random(seed_value)
    acc_rows = []
    for i in range(accounts):
        acc_rows.append(account_row(
            i, now, owner=f"csm{i % owners}@example.com", arr=float(rng.choice((1200, 2400, 12000, 50000, 120000))),
            signup_days=rng.uniform(0, 730), steps_done=rng.randint(1, 4), activated=rng.random() < 0.4,
            track=TRACKS[i % 3]))
    stall_rows = []
    picked = rng.sample(range(accounts), open_stalls + snoozed + resolved)
    for n, i in enumerate(picked):
        status = "open" if n < open_stalls else "snoozed" if n < open_stalls + snoozed else "resolved"
        stall_rows.append(stall_row(f"acct-{i}", now, score=rng.uniform(100, 200_000),
                                    priority=rng.choice(PRIORITIES), status=status,
                                    opened_days=rng.uniform(0, 20), resolved_hours=rng.uniform(0, 72)))
    with engine.begin() as conn:
        for start in range(0, len(acc_rows), 5_000):
            conn.execute(ACCOUNT.insert(), acc_rows[start:start + 5_000])
        for start in range(0, len(stall_rows), 5_000):
            conn.execute(STALL.insert(), stall_rows[start:start + 5_000])
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))


def main() -> None:
    from bot.settings import load_rules
    from bot.slack.render import digest_messages
    from bot.slack.digest import build_digest
    from storage import migrate
    from storage.db import make_engine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--stalls", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    url = os.environ.get("DATABASE_URL")
    tmp = None
    schema = None
    if not url:
        tmp = tempfile.TemporaryDirectory()
        url = f"sqlite:///{tmp.name}/bench.db"
    elif url.startswith("postgresql"):
        schema = f"bench_digest_{os.getpid()}"
        admin = make_engine(url)
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        admin.dispose()
        url = f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
        now = datetime.now(UTC).replace(microsecond=0)
        t0 = time.perf_counter()
        seed(engine, now, accounts=args.accounts, open_stalls=args.stalls)
        print(f"seeded {args.accounts:,} accounts, {args.stalls:,} open stalls in {time.perf_counter() - t0:.1f} s "
              f"({engine.dialect.name})")
        rules = load_rules(None)
        timings = []
        for _ in range(args.runs):
            t = time.perf_counter()
            data = build_digest(engine, rules, now)
            messages = digest_messages(data)
            timings.append(time.perf_counter() - t)
        print(f"digest: {data.total_open:,} open, {data.snoozed:,} snoozed, {len(data.rows)} listed, "
              f"{len(messages)} message(s), ARR at risk ${data.arr_at_risk:,.0f}")
        print(f"build_digest + digest_messages: first {timings[0]:.3f} s, median {statistics.median(timings):.3f} s, "
              f"max {max(timings):.3f} s over {args.runs} runs (target <= 2 s)")
    finally:
        engine.dispose()
        if schema:
            admin = make_engine(os.environ["DATABASE_URL"])
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
