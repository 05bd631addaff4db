"""What the proof scenarios share: a private database, real `stallwatch` processes, the fake
Slack, a rules file tuned for a short run, and the HTTP load client.

Processes are started as an operator would (`python -m bot.cli serve|worker|digest`) with
the contract's environment variables; their logs go to files (never to a pipe nobody reads,
which would block a process that logs a lot), and they are stopped by their own pid.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import quote

import httpx

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bot.settings import default_rules_text  # noqa: E402
from tests.fakes.slack_api import FakeSlack  # noqa: E402

WRITE_KEY = "proof-write-key"
SEGMENT_SECRET = "proof-segment-secret"
STRIPE_SECRET = "whsec_proof"
TICKETS_SECRET = "proof-tickets-secret"
SIGNING_SECRET = "proof-signing-secret"
ALERTS = "C0ALERTS"
DIGEST = "C0DIGEST"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


@dataclass
class Result:
    """What a scenario measured (`figures`), what it found wrong (`problems`: the run fails),
    and defects it measured but that lie outside what it proves (`known_issues`)."""

    figures: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    known_issues: list[str] = field(default_factory=list)

    def check(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)


# --------------------------------------------------------------------------- the database


@dataclass
class Database:
    """A database of its own for one scenario: a SQLite file, or a fresh PostgreSQL schema."""

    url: str
    backend: str
    _drop: Callable[[], None] | None = None
    _engine: object = None

    @classmethod
    def sqlite(cls, directory: Path) -> "Database":
        return cls(url=f"sqlite:///{directory / 'stallwatch.db'}", backend="sqlite")

    @classmethod
    def postgres(cls, base_url: str, prefix: str = "proof") -> "Database":
        """A new, empty schema (the processes migrate it when they start, concurrently)."""
        from sqlalchemy import text

        from storage.db import make_engine

        schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
        admin = make_engine(base_url, pool_size=1)
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))

        def drop() -> None:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()

        sep = "&" if "?" in base_url else "?"
        return cls(url=f"{base_url}{sep}options=-csearch_path%3D{schema}", backend="postgresql", _drop=drop)

    @classmethod
    def create(cls, backend: str, directory: Path, pg_url: str | None) -> "Database":
        if backend == "postgresql":
            if not pg_url:
                raise ValueError("PostgreSQL needs a server URL (STALLWATCH_TEST_POSTGRES_URL or --database-url)")
            return cls.postgres(pg_url)
        return cls.sqlite(directory)

    def url_for(self, process: str) -> str:
        """The URL a process uses; on PostgreSQL it names the process (pg_stat_activity)."""
        if self.backend != "postgresql":
            return self.url
        return f"{self.url}&application_name={quote(process)}"

    @property
    def engine(self):
        if self._engine is None:
            from storage.db import make_engine

            self._engine = make_engine(self.url, pool_size=2)
        return self._engine

    def migrate(self) -> None:
        from storage import migrate

        migrate.upgrade(self.engine)

    def scalar(self, sql: str, **params):
        from sqlalchemy import text

        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def rows(self, sql: str, **params) -> list:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            return list(conn.execute(text(sql), params))

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        if self._drop is not None:
            self._drop()
            self._drop = None


# --------------------------------------------------------------------------- rules


def rules_text(*, scan_minutes: float = 0.1, digest_time: str | None = None, hourly_budget: int = 100_000,
               quiet_hours: bool = False) -> str:
    """The packaged default rules with the knobs a short run needs turned: scans every few
    seconds, no quiet hours (every P0/P1 pings at once), a budget that never overflows, and
    the digest at `digest_time` (UTC) or never during the run."""
    text = default_rules_text()
    subs = [(r"scan_interval_minutes = 5", f"scan_interval_minutes = {scan_minutes}"),
            (r"hourly_budget_per_csm = 6", f"hourly_budget_per_csm = {hourly_budget}")]
    if not quiet_hours:
        subs += [(r'quiet_hours_start = "20:00"', 'quiet_hours_start = "00:00"'),
                 (r'quiet_hours_end = "08:00"', 'quiet_hours_end = "00:00"')]
    if digest_time is None:  # 12 hours away: never during a run
        digest_time = time.strftime("%H:%M", time.gmtime(time.time() + 12 * 3600))
    subs.append((r'time = "09:00"', f'time = "{digest_time}"'))
    for old, new in subs:
        if old not in text:
            raise AssertionError(f"the default rules changed: {old!r} not found")
        text = text.replace(old, new, 1)
    return text


# --------------------------------------------------------------------------- processes


class Proc:
    """One `stallwatch` process (or any command), logging to a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path, port: int | None = None):
        self.name = name
        self.argv = argv
        self.env = env
        self.port = port
        self.log_path = log_dir / f"{name}.log"
        self.popen: subprocess.Popen | None = None
        self.starts = 0
        self.killed_at: list[float] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def start(self, wait: bool = True, timeout: float = 90) -> "Proc":
        log = open(self.log_path, "ab")
        log.write(f"\n===== start #{self.starts + 1} at {time.time():.3f} =====\n".encode())
        log.flush()
        self.popen = subprocess.Popen(self.argv, env=self.env, cwd=self.env.get("PROOF_CWD", str(ROOT)),
                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.starts += 1
        if wait and self.port is not None:
            self.wait_healthy(timeout)
        return self

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait_healthy(self, timeout: float = 90) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited ({self.popen.returncode}):\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer /healthz within {timeout} s:\n{self.log_tail()}")

    def health(self, timeout: float = 2) -> dict | None:
        try:
            r = httpx.get(f"{self.url}/healthz", timeout=timeout)
            return r.json()
        except (httpx.HTTPError, ValueError):
            return None

    def kill9(self) -> float:
        """SIGKILL: no cleanup of any kind, as in a crash or an OOM kill. Returns when it happened."""
        assert self.popen is not None
        at = time.time()
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=30)
        self.killed_at.append(at)
        return at

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (a graceful stop), then SIGKILL if it does not exit."""
        if not self.alive():
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(timeout=30)

    def rss_kb(self) -> int | None:
        """Resident set size from /proc (Linux)."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except (OSError, ValueError, TypeError):
            return None
        return None

    def cpu_seconds(self) -> float | None:
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError, TypeError):
            return None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


class Stack:
    """The fake Slack, a database, a rules file and any number of stallwatch processes."""

    def __init__(self, workdir: Path, database: Database, *, rules: str | None = None, slack: bool = True,
                 extra_env: dict[str, str] | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.database = database
        self.rules_path = self.workdir / "rules.toml"
        self.rules_path.write_text(rules or rules_text(), encoding="utf-8")
        self.fake = FakeSlack() if slack else None
        self.extra_env = extra_env or {}
        self.procs: list[Proc] = []

    def __enter__(self) -> "Stack":
        if self.fake is not None:
            self.fake.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for proc in self.procs:
            try:
                proc.stop(timeout=20)
            except Exception:  # noqa: BLE001 - cleanup goes on
                pass
        if self.fake is not None:
            self.fake.stop()
        self.database.close()

    def env(self, name: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("SLACK_", "STALLWATCH_", "SMTP_", "OPENAI_")) and k not in (
                   "DATABASE_URL", "PORT", "SEGMENT_SHARED_SECRET", "STRIPE_WEBHOOK_SECRET", "TICKETS_SHARED_SECRET")}
        env.update({
            "DATABASE_URL": self.database.url_for(name),
            "STALLWATCH_RULES": str(self.rules_path),
            "STALLWATCH_WRITE_KEY": WRITE_KEY,
            "SEGMENT_SHARED_SECRET": SEGMENT_SECRET,
            "STRIPE_WEBHOOK_SECRET": STRIPE_SECRET,
            "TICKETS_SHARED_SECRET": TICKETS_SECRET,
            "STALLWATCH_ALERTS_CHANNEL": ALERTS,
            "STALLWATCH_DIGEST_CHANNEL": DIGEST,
            "PYTHONPATH": str(ROOT) + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""),
            "PYTHONUNBUFFERED": "1",
            "PROOF_CWD": str(self.workdir),  # no stray .env is read: the working directory is ours
        })
        if self.fake is not None:
            env.update({"SLACK_BOT_TOKEN": self.fake.token, "SLACK_API_URL": self.fake.url,
                        "SLACK_SIGNING_SECRET": SIGNING_SECRET})
        env.update(self.extra_env)
        return env

    def _add(self, proc: Proc) -> Proc:
        self.procs.append(proc)
        return proc

    def serve(self, name: str, *, scheduler: bool = True, port: int | None = None) -> Proc:
        port = port or free_port()
        argv = [sys.executable, "-m", "bot.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
        if not scheduler:
            argv.append("--no-scheduler")
        return self._add(Proc(name, argv, self.env(name), self.workdir, port=port))

    def worker(self, name: str) -> Proc:
        return self._add(Proc(name, [sys.executable, "-m", "bot.cli", "worker"], self.env(name), self.workdir))

    def cli(self, name: str, *args: str) -> Proc:
        return self._add(Proc(name, [sys.executable, "-m", "bot.cli", *args], self.env(name), self.workdir))


def start_all(procs: Iterable[Proc], timeout: float = 120) -> None:
    """Start processes together (they race on migrations and leadership), then wait for each."""
    procs = list(procs)
    for p in procs:
        p.start(wait=False)
    for p in procs:
        if p.port is not None:
            p.wait_healthy(timeout)


class Sampler(threading.Thread):
    """Calls `probe()` every `interval` seconds in the background; keeps (time, value)."""

    def __init__(self, probe: Callable[[], object], interval: float):
        super().__init__(daemon=True)
        self.probe, self.interval = probe, interval
        self.samples: list[tuple[float, object]] = []
        self.errors: list[str] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self.samples.append((time.time(), self.probe()))
            except Exception as exc:  # noqa: BLE001 - recorded, the run decides
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._halt.wait(self.interval)

    def stop(self) -> list[tuple[float, object]]:
        self._halt.set()
        self.join(timeout=10)
        return self.samples


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.2, what: str = "") -> float:
    """Wait for `predicate()`; returns the seconds waited; raises TimeoutError with `what`."""
    started = time.time()
    while True:
        if predicate():
            return time.time() - started
        if time.time() - started > timeout:
            raise TimeoutError(f"not within {timeout:.0f} s: {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------- HTTP load


@dataclass
class Delivery:
    """One HTTP request of a workload and what it carries: (source, message id) pairs."""

    route: str
    body: bytes
    headers: dict[str, str]
    ids: list[tuple[str, str]]
    redelivery: bool = False
    server: int = 0  # index into the servers it is sent to
    tag: str = ""


@dataclass
class Outcome:
    delivery: Delivery
    server: int
    status: int | None  # None: no answer (connection refused or reset, timeout)
    sent_at: float
    latency: float
    body: dict | None = None
    error: str | None = None
    attempt: int = 1
    due: float | None = None  # paced load: when it was scheduled

    @property
    def lag(self) -> float:
        return max(0.0, self.sent_at - self.due) if self.due is not None else 0.0

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class LoadReport:
    outcomes: list[Outcome] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0

    @property
    def ok(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.ok]

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    def acked_ids(self) -> set[tuple[str, str]]:
        """Every (source, message id) of a delivery that got a 2xx: durably stored, by contract."""
        return {i for o in self.outcomes if o.ok for i in o.delivery.ids}

    def latencies(self, since: float = 0.0, until: float = float("inf"), tag: str | None = None) -> list[float]:
        return [o.latency for o in self.outcomes
                if o.ok and since <= o.sent_at < until and (tag is None or o.delivery.tag == tag)]


def signed_headers(route: str, body: bytes) -> dict[str, str]:
    import base64
    import hashlib
    import hmac

    from bot.ingest import stripe, tickets

    headers = {"Content-Type": "application/json"}
    if route.startswith("/v1/"):
        headers["Authorization"] = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    elif route == "/ingest/segment":
        headers["X-Signature"] = hmac.new(SEGMENT_SECRET.encode(), body, hashlib.sha1).hexdigest()
    elif route == "/ingest/tickets":
        headers["X-Stallwatch-Signature"] = tickets.sign(body, TICKETS_SECRET)
    elif route == "/ingest/stripe":
        headers["Stripe-Signature"] = stripe.sign(body, STRIPE_SECRET, int(time.time()))
    return headers


async def _post(http: httpx.AsyncClient, base: str, d: Delivery, server: int, attempt: int) -> Outcome:
    headers = d.headers
    if d.route == "/ingest/stripe":  # signed when sent: Stripe's signature carries a timestamp
        headers = signed_headers(d.route, d.body)
    started = time.time()
    t0 = time.perf_counter()
    try:
        r = await http.post(base + d.route, content=d.body, headers=headers)
    except httpx.HTTPError as exc:
        return Outcome(d, server, None, started, time.perf_counter() - t0, error=f"{type(exc).__name__}: {exc}",
                       attempt=attempt)
    try:
        body = r.json()
    except ValueError:
        body = None
    return Outcome(d, server, r.status_code, started, time.perf_counter() - t0, body=body, attempt=attempt)


def send_all(urls: list[str], deliveries: list[Delivery], *, concurrency: int = 8, retry: bool = False,
             retry_for: float = 120.0, timeout: float = 60.0, on_outcome: Callable[[Outcome], None] | None = None,
             stop: threading.Event | None = None) -> LoadReport:
    """Send every delivery (to urls[d.server % len(urls)]) from `concurrency` clients, as fast
    as the servers answer. `retry`: a delivery without a 2xx answer is sent again (as Segment
    and Stripe do) until it gets one or `retry_for` seconds have passed; every try is recorded."""
    report = LoadReport(started=time.time())

    async def main() -> None:
        queue: asyncio.Queue = asyncio.Queue()
        for d in deliveries:
            queue.put_nowait(d)
        limits = httpx.Limits(max_connections=concurrency * len(urls), max_keepalive_connections=concurrency * len(urls))
        async with httpx.AsyncClient(timeout=timeout, limits=limits) as http:

            async def client() -> None:
                while not queue.empty():
                    if stop is not None and stop.is_set():
                        return
                    d = queue.get_nowait()
                    first = time.time()
                    attempt = 1
                    while True:
                        server = d.server % len(urls)
                        outcome = await _post(http, urls[server], d, server, attempt)
                        report.outcomes.append(outcome)
                        if on_outcome is not None:
                            on_outcome(outcome)
                        if outcome.ok or not retry or time.time() - first > retry_for:
                            break
                        if outcome.status is not None and outcome.status < 500 and outcome.status != 429:
                            break  # a refusal, not an outage: sending it again would not help
                        attempt += 1
                        await asyncio.sleep(min(0.2 * attempt, 2.0))

            await asyncio.gather(*(client() for _ in range(concurrency)))

    asyncio.run(main())
    report.finished = time.time()
    return report


@dataclass
class Lane:
    """A client of a paced load: unit i (one or more deliveries, sent in order, each until it
    gets a 2xx when the Loader retries) is due at start + i / per_second."""

    name: str
    make: Callable[[int], list[Delivery]]
    per_second: float


class Loader:
    """Open-loop load from a background thread: each lane sends its units on schedule, however
    the server answers; a lane that falls behind sends without pausing until it has caught up
    (so a slow server shows as lag, not as a lower offered rate). With `retry`, a delivery is
    sent again until it gets a 2xx (as Segment, Stripe and helpdesks do), across a server
    restart. Every try is recorded with the time it was due."""

    def __init__(self, url: str | Callable[[], str], lanes: list[Lane], *, retry: bool = False,
                 retry_for: float = 300.0, timeout: float = 30.0):
        self.url = url if callable(url) else (lambda u=url: u)
        self.lanes = lanes
        self.retry = retry
        self.retry_for = retry_for
        self.timeout = timeout
        self.report = LoadReport()
        self.units_done: dict[str, int] = {lane.name: 0 for lane in lanes}
        self._halt = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="proof-loader", daemon=True)

    def start(self) -> "Loader":
        self.report.started = time.time()
        self._thread.start()
        return self

    def stop(self, timeout: float = 300.0) -> LoadReport:
        """Stop scheduling new units; the units in progress are finished (retried if needed)."""
        self._halt.set()
        self._thread.join(timeout=timeout)
        self.report.finished = time.time()
        return self.report

    async def _main(self) -> None:
        limits = httpx.Limits(max_connections=4 * len(self.lanes) + 4, max_keepalive_connections=4 * len(self.lanes) + 4)
        async with httpx.AsyncClient(timeout=self.timeout, limits=limits) as http:
            await asyncio.gather(*(self._lane(http, lane) for lane in self.lanes))

    async def _lane(self, http: httpx.AsyncClient, lane: Lane) -> None:
        start = time.time()
        i = 0
        while not self._halt.is_set():
            due = start + i / lane.per_second
            wait = due - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
                if self._halt.is_set():
                    return
            unit = lane.make(i)
            i += 1
            for d in unit:
                first = time.time()
                attempt = 1
                while True:
                    outcome = await _post(http, self.url(), d, 0, attempt)
                    outcome.due = due
                    self.report.outcomes.append(outcome)
                    if outcome.ok or not self.retry or time.time() - first > self.retry_for:
                        break
                    if outcome.status is not None and outcome.status < 500 and outcome.status != 429:
                        break
                    attempt += 1
                    await asyncio.sleep(min(0.1 * attempt, 1.0))
            self.units_done[lane.name] += 1


# --------------------------------------------------------------------------- log reading

_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")


def log_time(line: str) -> float | None:
    """The time of a stallwatch log line (logging's asctime, local time)."""
    m = _LOG_TIME.match(line)
    if not m:
        return None
    return time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000


def leadership_changes(proc: Proc) -> list[tuple[float, bool]]:
    """(time, is_leader) from a process's "scheduler ...: now the leader / standby" log lines."""
    out = []
    for line in proc.log_text().splitlines():
        if "bot.leader" in line and ("now the leader" in line or line.rstrip().endswith(": standby")):
            at = log_time(line)
            if at is not None:
                out.append((at, "now the leader" in line))
    return out
