"""Past one machine: 1,000,000 accounts / 10,000,000 events on PostgreSQL, two `serve`
processes and a `worker`, as a deployment that outgrew SQLite would run them.

    python -m benchmarks.scale [--accounts 1000000] [--seed-accounts 100000] [--events 200000]
                               [--admin-url postgresql+psycopg://postgres@127.0.0.1:5432/test]

1. Data (kept in its own database, `stallwatch_scale`, reused while its schema is current):
   `--seed-accounts` accounts with 10 events each go through the real storage path
   (benchmarks.scan.build: journeys, contacts, active days, tickets), then PostgreSQL copies
   them (`INSERT ... SELECT`, ids suffixed `~r<n>`) up to `--accounts`: the same shapes,
   every derived column consistent, in minutes instead of an hour of ingest.
2. Ingest: `serve --no-scheduler` twice (ports 3911, 3912) and a `worker` (the scheduler:
   leader election, scans, escalations) against that database; `--clients` HTTP clients per
   serve process post `--events` events in 100-event `/v1/batch` requests about existing
   accounts. Printed: events/s, and the CPU seconds each process (and PostgreSQL's backends,
   summed) spent meanwhile, which says where the next bottleneck is.
3. Scans, each in a fresh process with the servers stopped (`scan --now`, as the scheduler
   runs it): the first full scan, the scheduled scans 5 minutes and an hour later, and a
   forced full scan (what a rules change costs); wall time and peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import zlib
from datetime import timedelta
from pathlib import Path

import orjson
import sqlalchemy as sa

from benchmarks.ingest import WRITE_KEY, blast, make_batches, start_server
from benchmarks.scan import NOW, build, run_scan

DATABASE = "stallwatch_scale"
# Tables that hold per-account rows: copied with every account-derived id suffixed.
# column -> suffixed (ids that name an account, a contact or a message).
COPIED = {
    "account": ("id",),
    "contact": ("id", "account_id"),
    "event": ("account_id", "contact_id", "message_id"),
    "active_day": ("account_id",),
    "ticket": ("id", "account_id"),
}
SERVE_PORTS = (3911, 3912)


def _database_url(admin_url: str) -> str:
    return sa.engine.make_url(admin_url).set(database=DATABASE).render_as_string(hide_password=False)


def _prepare_database(admin_url: str) -> bool:
    """Create the benchmark's database if needed; True when it already holds a data set."""
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": DATABASE}).first()
        if not exists:
            conn.exec_driver_sql(f'CREATE DATABASE "{DATABASE}"')
    admin.dispose()
    if not exists:
        return False
    from storage import migrate
    from storage.db import make_engine
    from storage.models import metadata

    engine = make_engine(_database_url(admin_url))
    try:
        migrate.upgrade(engine)  # a data set built by an earlier version gains the new columns
        with engine.connect() as conn:

            for table in metadata.sorted_tables:
                have = {r[0] for r in conn.execute(sa.text(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = :t"), {"t": table.name})}
                if have != {c.name for c in table.columns}:
                    return False
            return (conn.execute(sa.text("SELECT count(*) FROM account")).scalar() or 0) > 0
    finally:
        engine.dispose()


def _reset(url: str) -> None:
    """Drop everything in the benchmark's database (a schema change or --rebuild)."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP SCHEMA public CASCADE")
        conn.exec_driver_sql("CREATE SCHEMA public")
    engine.dispose()


def _multiply(url: str, copies: int) -> None:
    """Copy every seeded account `copies` more times, in SQL, one table and copy at a time."""
    engine = sa.create_engine(url)
    for n in range(1, copies + 1):
        started = time.perf_counter()
        with engine.begin() as conn:
            for table, suffixed in COPIED.items():
                columns = [r[0] for r in conn.execute(sa.text(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = :t "
                    "ORDER BY ordinal_position"), {"t": table})]
                if table == "event":
                    columns.remove("id")  # a serial: PostgreSQL numbers the copies
                select = ", ".join(f"{c} || '~r{n}'" if c in suffixed else c for c in columns)
                conn.exec_driver_sql(f"INSERT INTO {table} ({', '.join(columns)}) SELECT {select} FROM {table} "
                                     f"WHERE strpos({'id' if table in ('account', 'contact', 'ticket') else 'account_id'}, "
                                     f"'~r') = 0")
        print(f"\r  copy {n}/{copies} in {time.perf_counter() - started:.0f} s", end="", flush=True)
    print()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")
    engine.dispose()


def _counts(url: str) -> tuple[int, int]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        accounts = conn.execute(sa.text("SELECT count(*) FROM account")).scalar()
        events = conn.execute(sa.text("SELECT count(*) FROM event")).scalar()
    engine.dispose()
    return accounts, events


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _postgres_cpu() -> float:
    """CPU seconds of every PostgreSQL process now running (backends come and go: a delta of
    this is a lower bound, close enough while the servers keep their pools)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    total += _cpu_seconds(int(entry.name))
            except OSError:
                continue
    return total


def _stream(seed_accounts: int, accounts: int, events: int, seed: int) -> list[bytes]:
    """The ingest benchmark's live stream, about accounts of the data set (seeded or copied);
    `seed` new for each run, so its message ids are new (not duplicates of a previous run's)."""
    batches = make_batches(events, 100, accounts=seed_accounts, seed=seed)
    copies = accounts // seed_accounts

    def existing(group_id: str) -> str:
        n = int(group_id.rsplit("-", 1)[1])
        copy = zlib.crc32(group_id.encode()) % copies
        return f"acct-{n:06d}" + (f"~r{copy}" if copy else "")

    out = []
    for body in batches:
        payload = orjson.loads(body)
        for message in payload["batch"]:
            aid = existing(message["context"]["groupId"])
            message["context"]["groupId"] = aid
            if "groupId" in message:
                message["groupId"] = aid
        out.append(orjson.dumps(payload))
    return out


def ingest(url: str, batches: list[bytes], clients: int) -> None:
    env = {"DATABASE_URL": url, "STALLWATCH_WRITE_KEY": WRITE_KEY}
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"):
        env[name] = ""
    serve = [start_server([sys.executable, "-m", "bot.cli", "serve", "--no-scheduler", "--host", "127.0.0.1",
                           "--port", str(port)], env, port) for port in SERVE_PORTS]
    worker = subprocess.Popen([sys.executable, "-m", "bot.cli", "worker"], env={**os.environ, **env},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        warm = [f"http://127.0.0.1:{port}/v1/batch" for port in SERVE_PORTS]
        asyncio.run(_blast_all(warm, [batches[:4], batches[4:8]], clients))
        procs = {"serve 1": serve[0].pid, "serve 2": serve[1].pid, "worker": worker.pid}
        before = {name: _cpu_seconds(pid) for name, pid in procs.items()}
        pg_before = _postgres_cpu()
        rest = batches[8:]
        halves = [rest[0::2], rest[1::2]]
        started = time.perf_counter()
        stored = asyncio.run(_blast_all(warm, halves, clients))
        seconds = time.perf_counter() - started
        cpu = {name: _cpu_seconds(pid) - before[name] for name, pid in procs.items()}
        cpu["postgres"] = _postgres_cpu() - pg_before
    finally:
        for proc in (*serve, worker):
            proc.terminate()
        for proc in (*serve, worker):
            proc.wait(timeout=60)
    print(f"  ingest: {stored * 100:,} events in {seconds:.1f} s = {stored * 100 / seconds:,.0f} events/s "
          f"(2 serve processes x {clients} clients, worker running)")
    busy = ", ".join(f"{name} {value:.1f} s ({value / seconds:.0%} of a core)" for name, value in cpu.items())
    print(f"  CPU meanwhile: {busy}; {os.cpu_count()} cores in all", flush=True)


async def _blast_all(urls: list[str], parts: list[list[bytes]], clients: int) -> int:
    done = await asyncio.gather(*(blast(url, part, clients) for url, part in zip(urls, parts)))
    return sum(stored for _seconds, stored in done)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--seed-accounts", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=200_000, help="events posted in the ingest step")
    parser.add_argument("--clients", type=int, default=4, help="HTTP clients per serve process")
    parser.add_argument("--admin-url", default=os.environ.get("STALLWATCH_TEST_POSTGRES_URL",
                                                              "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--skip-scans", action="store_true")
    parser.add_argument("--build-only", action="store_true", help="build (or upgrade) the data set and stop")
    args = parser.parse_args()
    if args.accounts % args.seed_accounts:
        raise SystemExit("--accounts must be a multiple of --seed-accounts")
    url = _database_url(args.admin_url)
    if args.rebuild or not _prepare_database(args.admin_url):
        _reset(url)
        print(f"building {args.seed_accounts:,} accounts x 10 events through the storage path, then copying "
              f"them to {args.accounts:,} in SQL")
        build(url, args.seed_accounts, 10)
        _multiply(url, args.accounts // args.seed_accounts - 1)
    accounts, events = _counts(url)
    if args.build_only:
        print(f"data set ready: {accounts:,} accounts, {events:,} events")
        return
    print(f"scale benchmark: {accounts:,} accounts, {events:,} events, PostgreSQL "
          f"({sa.engine.make_url(url).render_as_string()}), {os.cpu_count()} cores")
    if not args.skip_ingest:
        ingest(url, _stream(args.seed_accounts, accounts, args.events + 800, seed=events), args.clients)
    if args.skip_scans:
        return
    _reset_scan_state(url)
    _scan("first scan (full)", url, NOW, "auto")
    _scan("scheduled, 5 minutes later", url, NOW + timedelta(minutes=5), "auto")
    # A full scan rewrites every account row: until autovacuum has run, the index of due
    # accounts is full of dead entries and the statistics are stale. Shown, then done by hand
    # (autovacuum starts on its own within a minute of such a write; tune it for `account`).
    started = time.perf_counter()
    _vacuum(url)
    print(f"  VACUUM ANALYZE (what autovacuum does after a full scan) {time.perf_counter() - started:7.1f} s")
    _scan("scheduled, an hour later", url, NOW + timedelta(hours=1), "auto")
    _scan("scheduled, 65 minutes later", url, NOW + timedelta(minutes=65), "auto")
    _scan("forced full scan (a rules change)", url, NOW + timedelta(minutes=65), "full")


def _scan(label: str, url: str, now, mode: str) -> None:
    seconds, peak, what = run_scan(url, now, mode)
    print(f"  {label:<36} {seconds:7.2f} s   peak {peak:5.0f} MB   ({what})", flush=True)


def _vacuum(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE account")
        conn.exec_driver_sql("VACUUM ANALYZE stall")
    engine.dispose()


def _reset_scan_state(url: str) -> None:
    """Scans start from no stalls, as on the data set's first day (the ingest step's worker
    scanned at the real clock)."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for table in ("alert", "slack_outbox", "audit_entry", "stall", "meta"):
            conn.exec_driver_sql(f"DELETE FROM {table}")
        conn.exec_driver_sql("UPDATE account SET next_eval_at = NULL WHERE next_eval_at IS NOT NULL")
    engine.dispose()


if __name__ == "__main__":
    main()
