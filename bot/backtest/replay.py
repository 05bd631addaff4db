"""Replaying a history with a simulated clock, through the real store, scan, router and digest.

Each replay gets a fresh SQLite database in a temporary directory. The clock advances in
steps of `routing.scan_interval_minutes` (aligned to the hour, as the scheduler's interval
roughly is), and at each step, in this order:

1. the records that arrived by then are stored, through `storage.ingest.store_events`, with
   the clock at their arrival. Product events are stored together per interval; Stripe and
   helpdesk records are stored one by one and evaluated the moment they arrive, as the
   routes do (`evaluate_accounts`), and so are accounts whose progress may close a stall;
2. the scan runs (`bot.scan.scan`), exactly as the scheduler runs it. A scan is skipped when
   no account is due (none changed since the last one, none at a moment `rules.review`
   named): such a scan evaluates nobody and changes nothing, so the result is the same.
   After the first (full) scan, a scan evaluates exactly the due accounts, so the replay
   names them (`scan(..., only=due)`, one statement per tick finds them) instead of letting
   each scan query for them, read the last full scan's rules and look for journeys to
   refresh (see `_scan`);
3. every stall the scan or an evaluation opened or changed goes through the real router
   (`bot.slack.router.Router`, with an alerts channel and no Slack token), so pings respect
   quiet hours, the hourly budget and "never twice"; the real outbox sender delivers the
   rows to a stand-in for Slack (bot.slack.simulated) on the simulated clock: a ping held by
   quiet hours goes out when they end, or is cancelled if its stall closed first, and a
   later priority change or close edits it, exactly as live;
4. at each `digest.time` the digest is built (`bot.slack.digest.build_digest`) and its
   length recorded.

The router and the outbox sender take the simulated clock (their `clock`), and the router
stamps its outbox rows with it, so a held row is due at its simulated time.

People's resolves can be replayed too (`resolves`: at a moment, an account's alert resolved
with a reason, through the real use-case `bot.stalls.actions.resolve`, as an admin). The scan
honours their decisions as live (rules/decisions.py): the same condition does not reopen.

The replay then reads back what it did (stalls as they were opened, pings, digests) and
`rules.backtest.summarize` turns that into the report's figures.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from typing import Callable, Sequence

from sqlalchemy import Engine, bindparam, select

from bot.backtest.history import History
from rules.backtest import DigestFact, PingFact, StallFact, Summary, summarize
from rules.config import Rules
from rules.routing import next_digest_at
from storage.ingest import rules_version

log = logging.getLogger(__name__)
UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
URGENT_SOURCES = frozenset({"stripe", "tickets"})  # evaluated the moment they arrive (DESIGN.md)
MAX_SPAN = timedelta(days=3700)  # ten years of days to replay and report, at most


_DUE = ("SELECT EXISTS (SELECT 1 FROM account WHERE next_eval_at IS NULL), "
        "(SELECT min(next_eval_at) FROM account)")
# When the sender next has something to send: the earliest due time of a row that heads its
# lane (the sender sends a lane's rows in order, so a row behind a held one waits for it).
_NEXT_SEND = ("SELECT min(next_attempt_at) FROM slack_outbox WHERE status IN ('pending', 'sending') AND "
              "(channel IS NULL OR id IN (SELECT min(id) FROM slack_outbox WHERE status IN ('pending', 'sending') "
              "AND channel IS NOT NULL GROUP BY channel))")


class SpanError(ValueError):
    """The history covers more time than a backtest replays (most likely a wrong timestamp)."""


@dataclass(frozen=True)
class Resolve:
    """A person resolving an account's alert at `at`, with a reason (rules.decisions.KINDS, or
    None: no lasting decision), a quiet-until date for "known" and a note."""

    at: datetime
    account_id: str
    reason: str | None = None
    until: date | None = None
    note: str | None = None


BACKTEST_USER = "U0BACKTEST"  # who resolves in a replay (an admin of the simulated workspace)


@dataclass
class ReplayResult:
    label: str
    start: datetime | None = None  # first arrival
    end: datetime | None = None  # the last simulated moment
    stored: int = 0
    duplicates: int = 0
    store_failures: list[tuple[int, str]] = field(default_factory=list)  # (line, error)
    scans: int = 0
    scans_skipped: int = 0
    scan_failures: int = 0
    evaluations: int = 0
    stalls: list[StallFact] = field(default_factory=list)
    pings: list[PingFact] = field(default_factory=list)
    digests: list[DigestFact] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> Summary:
        first = self.start.date() if self.start else None
        last = self.end.date() if self.end else None
        return summarize(self.stalls, self.pings, self.digests, first, last)


def replay(history: History, rules: Rules, *, label: str = "rules",
           progress: Callable[[int], None] | None = None, skip_idle: bool = True,
           resolves: Sequence[Resolve] = ()) -> ReplayResult:
    """Replay `history` against `rules`; `progress` gets the number of records done since its
    last call. `skip_idle=False` runs every scan and the outbox sender at every step, even
    when nobody is due and nothing is to send (the same result, slower: the tests check that).
    `resolves`: people resolving alerts, each at the first step at or after its moment."""
    started = time.perf_counter()
    result = ReplayResult(label=label)
    if history.entries:
        span = history.entries[-1].at - history.entries[0].at
        if span > MAX_SPAN:
            first, last = history.entries[0], history.entries[-1]
            raise SpanError(
                f"the history spans {span.days:,} days, from {first.at:%Y-%m-%d} ({history.path}:{first.line}) "
                f"to {last.at:%Y-%m-%d} ({history.path}:{last.line}); a backtest replays at most "
                f"{MAX_SPAN.days:,}: check those times")
        with tempfile.TemporaryDirectory(prefix="stallwatch-backtest-") as tmp:
            engine = _engine(f"sqlite:///{tmp}/backtest.db")
            try:
                replayer = _Replay(engine, rules, history, result, progress, skip_idle, resolves)
                replayer.run()
            finally:
                engine.dispose()
    result.seconds = time.perf_counter() - started
    return result


def _engine(url: str) -> Engine:
    from storage import migrate
    from storage.db import make_engine

    engine = make_engine(url, scratch=True)  # a throw-away database: no need to survive a crash
    migrate.upgrade(engine)
    return engine


def _ceil(at: datetime, step: timedelta) -> datetime:
    """The first step boundary (counted from the epoch) at or after `at`."""
    n = -(-(at - EPOCH) // step)
    return EPOCH + n * step


class _Replay:
    def __init__(self, engine: Engine, rules: Rules, history: History, result: ReplayResult,
                 progress: Callable[[int], None] | None, skip_idle: bool = True, resolves: Sequence[Resolve] = ()):
        from bot.slack.simulated import SimulatedSlack
        from bot.settings import Settings
        from bot.slack.outbox import OutboxSender
        from bot.slack.router import Router

        self.engine, self.rules, self.history, self.result = engine, rules, history, result
        self.now = history.entries[0].at
        self.skip_idle = skip_idle
        self.progress = progress or (lambda n: None)
        self.step = timedelta(minutes=rules.routing.scan_interval_minutes)
        settings = Settings(_env_file=None, DATABASE_URL=str(engine.url), SLACK_BOT_TOKEN=None,
                            SLACK_SIGNING_SECRET=None, SLACK_APP_TOKEN=None,
                            STALLWATCH_ALERTS_CHANNEL="#backtest-alerts", STALLWATCH_DIGEST_CHANNEL=None,
                            STALLWATCH_ADMINS=BACKTEST_USER)
        self.router = Router(engine, settings, rules, client_factory=_no_slack, clock=lambda: self.now)
        slack = SimulatedSlack()
        self.sender = OutboxSender(engine, lambda: slack, worker_id="backtest", clock=lambda: self.now,
                                   rules=rules)
        self.next_send: datetime | None = None  # when the earliest undelivered outbox row is due
        self.opened: dict[int, StallFact] = {}
        self.resolves = sorted(resolves, key=lambda r: r.at)
        self.settings = settings
        # Until a whole scan has run (the first: a full one), scans go through `scan` as the
        # scheduler calls it; after that, see _scan.
        self.full_pending = True
        self.journey_version = rules_version(rules)
        self._conn = None  # see _read

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        """The replay's own look-ups (when is anything next due), on one DB-API connection
        kept for the whole replay: each SELECT is its own implicit read transaction (the
        connection is in autocommit mode, see storage.db), read to the end, so it holds no
        snapshot between ticks. The store, scan, router and sender use the engine as live."""
        if self._conn is None:
            self._conn = self.engine.raw_connection()
        cursor = self._conn.driver_connection.execute(sql, args)
        try:
            return cursor.fetchall()
        finally:
            cursor.close()

    # ------------------------------------------------------------------ the clock

    def run(self) -> None:
        try:
            self._run()
        finally:
            if self._conn is not None:
                self._conn.close()  # back to the pool
                self._conn = None

    def _run(self) -> None:
        entries = self.history.entries
        n = len(entries)
        self.result.start = entries[0].at
        final = _ceil(entries[-1].at, self.step)
        self.result.end = final
        tick = _ceil(entries[0].at, self.step)
        digest_at = next_digest_at(entries[0].at - timedelta(microseconds=1), self.rules)
        i = 0
        first_scan = True
        while True:
            done = i
            batch: list = []
            batch_lines: list[int] = []
            batch_at = None
            while i < n and entries[i].at <= tick:
                entry = entries[i]
                i += 1
                if entry.event.source in URGENT_SOURCES:
                    if batch:
                        self.now = batch_at
                        self._store(batch, batch_lines, batch_at)
                        batch, batch_lines = [], []
                    self.now = entry.at
                    self._store([entry.event], [entry.line], entry.at)
                else:
                    batch.append(entry.event)
                    batch_lines.append(entry.line)
                    batch_at = entry.at
            if batch:
                self.now = batch_at
                self._store(batch, batch_lines, batch_at)
            self.now = tick
            self._resolve_due(tick)
            if not self.skip_idle:
                self.next_send = tick  # give the sender its turn at every tick too
            self._deliver()
            due_ids, stale, due = self._due(tick)
            if first_scan or not self.skip_idle or due_ids:
                self._scan(tick, due_ids, stale)
                first_scan = False
                due = self._due_at()
            else:
                self.result.scans_skipped += 1
            while digest_at <= tick:
                self.now = digest_at
                self._digest(digest_at)
                digest_at = next_digest_at(digest_at, self.rules)
            self.progress(i - done)
            if tick >= final:
                break
            # The next moment anything can happen: a record arrives, an account comes due, a digest.
            candidates = [final, _ceil(digest_at, self.step)]
            if i < n:
                candidates.append(_ceil(entries[i].at, self.step))
            if due is not None:
                candidates.append(_ceil(due, self.step))
            if self.next_send is not None:
                candidates.append(_ceil(self.next_send, self.step))
            if self.resolves:
                candidates.append(_ceil(self.resolves[0].at, self.step))
            tick = max(min(candidates), tick + self.step) if self.skip_idle else tick + self.step
        self._collect()

    def _due_at(self) -> datetime | None:
        """When the next scan has someone to evaluate: at once if an account changed (its
        next_eval_at is NULL), else the earliest review moment; None if there is no account.
        Look-ups on the index the scan itself uses (ix_account_next_eval)."""
        ((changed, earliest),) = self._read(_DUE)
        if changed:
            return EPOCH
        if earliest is None:
            return None
        if isinstance(earliest, str):  # SQLite's stored text, UTC
            earliest = datetime.fromisoformat(earliest)
        return _aware(earliest)

    def _due(self, now: datetime) -> tuple[list[str], bool, datetime | None]:
        """In one statement: the accounts a scan at `now` evaluates (storage.stalls.due_accounts,
        as the scan finds them on SQLite), by id; whether an account's stored journey was
        computed under other rules (or never), which the scan's `refresh_journeys` would
        recompute first; and, when none is due, the earliest review moment (_due_at's answer
        then)."""
        sql, order, binds = _due_sql(self.engine)
        values = {"now": now, "version": self.journey_version}
        args = tuple(binds[name](values[name]) if name in binds else values[name] for name in order)
        rows = self._read(sql, args)
        ids = sorted(r[0] for r in rows if r[0] is not None and r[1])
        stale = any(r[2] for r in rows)
        earliest = next(r[3] for r in rows if r[0] is None)  # min(next_eval_at) of every account
        if isinstance(earliest, str):  # SQLite's stored text, UTC
            earliest = datetime.fromisoformat(earliest)
        return ids, stale, (EPOCH if ids else _aware(earliest))

    # ------------------------------------------------------------------ the pipeline

    def _store(self, events: list, lines: list[int], now: datetime) -> None:
        from storage.ingest import store_events

        try:
            stored = store_events(self.engine, events, self.rules, now)
        except Exception as exc:
            if len(events) > 1:  # as the ingest writer does: find the one that fails, keep the rest
                for ev, line in zip(events, lines):
                    self._store([ev], [line], now)
                return
            log.debug("backtest: storing line %s failed", lines[0], exc_info=True)
            self.result.store_failures.append((lines[0], f"{type(exc).__name__}: {exc}"[:300]))
            return
        self.result.stored += stored.accepted
        self.result.duplicates += stored.duplicates
        if stored.evaluate:
            self._evaluate(sorted(stored.evaluate), now)

    def _resolve_due(self, tick: datetime) -> None:
        """People's resolves due by `tick`, through the use-case (permission, decision, audit);
        the pings they close are re-rendered, as the Slack listener does."""
        from bot.stalls import actions
        from bot.stalls.context import Services
        from bot.stalls.errors import StallwatchError
        from bot.slack.outbox import enqueue_refresh
        from storage import stall_actions
        from storage.db import write_tx

        while self.resolves and self.resolves[0].at <= tick:
            r = self.resolves.pop(0)
            services = Services(engine=self.engine, settings=self.settings, rules=self.rules, clock=lambda: self.now)
            with self.engine.connect() as conn:
                live = stall_actions.live_stalls_of(conn, r.account_id)
            if not live:
                continue  # closed meanwhile: nothing to resolve (a stale click, live)
            try:
                actions.resolve(services, live[0].id, BACKTEST_USER, reason=r.reason, until=r.until, note=r.note,
                                source="backtest")
            except StallwatchError:
                log.debug("backtest: resolve of %s at %s refused", r.account_id, tick, exc_info=True)
                continue
            with write_tx(self.engine) as conn:
                enqueue_refresh(conn, live[0].id, now=self.now)
            self.next_send = self.now

    def _evaluate(self, account_ids: list[str], now: datetime) -> None:
        from bot.scan import scan

        self.result.evaluations += 1
        try:
            report = scan(self.engine, self.rules, now, only=account_ids)
        except Exception:  # live: the ingest hook logs it and the next scan catches up
            log.debug("backtest: event-driven evaluation failed at %s", now, exc_info=True)
            self.result.scan_failures += 1
            return
        self._route(report)

    def _scan(self, now: datetime, due_ids: list[str], stale: bool) -> None:
        """The scheduler's scan at `now`. Once the first (full) scan is done, and while no
        account waits for its journey to be recomputed (`refresh_journeys`: one ingest created
        without its journey), a scan is the evaluation of the due accounts and nothing else:
        the replay names them (`only`, the very rows `due_condition` selects), which skips the
        scan's own look-ups per tick (the last full scan's rules, journeys to refresh, the
        candidate query)."""
        from bot.scan import scan

        self.result.scans += 1
        try:
            if self.full_pending or stale:
                report = scan(self.engine, self.rules, now)
                self.full_pending = False
            else:
                report = scan(self.engine, self.rules, now, only=due_ids)
        except Exception:  # live: the scheduler logs it and scans again at the next interval
            log.debug("backtest: scan failed at %s", now, exc_info=True)
            self.result.scan_failures += 1
            return
        self._route(report)

    def _route(self, report) -> None:
        if report.opened_ids:
            self._remember(report.opened_ids)
        ids = list(dict.fromkeys([*report.opened_ids, *report.changed_ids]))
        if ids:
            self.now = report.now
            stats = self.router.route_stalls(ids, report.now)
            if stats.enqueued or stats.closed:  # new rows, or a held ping cancelled: a lane may move
                self.next_send = self.now  # the router wakes the sender
                self._deliver()

    def _deliver(self) -> None:
        """The outbox sender's turn at the simulated now: send what is due."""
        if self.next_send is None or self.next_send > self.now:
            return
        while self.sender.run_once(limit=500):
            pass
        earliest = self._read(_NEXT_SEND)[0][0]
        if isinstance(earliest, str):
            earliest = datetime.fromisoformat(earliest)
        self.next_send = _aware(earliest)

    def _remember(self, stall_ids: list[int]) -> None:
        """The opened stalls as they are now, at opening (rule, stage, priority, track, ARR, owner)."""
        from storage.db import read_tx
        from storage.models import Account, Stall

        stall, account = Stall.__table__, Account.__table__
        with read_tx(self.engine) as conn:
            rows = conn.execute(
                select(stall.c.id, stall.c.account_id, stall.c.rule, stall.c.stage, stall.c.priority,
                       stall.c.opened_at, stall.c.threshold_at, account.c.track, account.c.arr,
                       account.c.owner_email)
                .select_from(stall.join(account, account.c.id == stall.c.account_id, isouter=True))
                .where(stall.c.id.in_(stall_ids)))
            for r in rows:
                self.opened[r.id] = StallFact(
                    id=r.id, account_id=r.account_id, rule=r.rule, stage=r.stage, track=r.track or "standard",
                    priority=r.priority, owner=(r.owner_email or None), arr=float(r.arr or 0.0),
                    opened_at=_aware(r.opened_at), threshold_at=_aware(r.threshold_at))

    def _digest(self, at: datetime) -> None:
        from bot.slack.digest import build_digest

        try:
            d = build_digest(self.engine, self.rules, at)
        except Exception:  # live: the scheduler logs it; the report shows no digest that day
            log.debug("backtest: digest failed at %s", at, exc_info=True)
            return
        listed = min(len(d.rows), max(d.max_items, 0))
        total = d.total_open if d.total_open is not None else len(d.rows)
        self.result.digests.append(DigestFact(at=at, listed=listed, open_total=total, arr_at_risk=d.arr_at_risk))

    # ------------------------------------------------------------------ reading back

    def _collect(self) -> None:
        from dataclasses import replace

        from bot.slack.outbox import OUTBOX
        from storage.db import read_tx
        from storage.models import Account, Alert, Stall

        stall, account, alert = Stall.__table__, Account.__table__, Alert.__table__
        with read_tx(self.engine) as conn:
            final = {r.id: r for r in conn.execute(select(stall.c.id, stall.c.status, stall.c.resolved_at))}
            sent = {r.key: _aware(r.sent_at) for r in conn.execute(
                select(OUTBOX.c.key, OUTBOX.c.sent_at).where(OUTBOX.c.key.like("ping:%"), OUTBOX.c.status == "sent"))}
            pings = conn.execute(
                select(alert.c.stall_id, alert.c.channel, alert.c.priority, stall.c.account_id, account.c.owner_email)
                .select_from(alert.join(stall, stall.c.id == alert.c.stall_id)
                             .join(account, account.c.id == stall.c.account_id, isouter=True))
                .where(alert.c.kind == "ping").order_by(alert.c.id)).all()
        facts: list[StallFact] = []
        for sid, fact in sorted(self.opened.items()):
            row = final.get(sid)
            if row is not None:
                fact = replace(fact, status=row.status, resolved_at=_aware(row.resolved_at))
            facts.append(fact)
        self.result.stalls = facts
        # One PingFact per stall with a "ping" Alert row that went out, its account the stall's:
        # right whether the router pings every stall or once per account on a lead stall.
        seen: set[int] = set()
        went_out = []
        for p in pings:
            at = sent.get(f"ping:{p.stall_id}:{p.channel}")
            if at is None or p.stall_id in seen:
                continue  # cancelled before it went out (its stall closed), or still held at the end
            seen.add(p.stall_id)  # one ping per stall, whatever the number of destinations
            went_out.append(PingFact(stall_id=p.stall_id, owner=p.owner_email or None, at=at, priority=p.priority,
                                     account_id=p.account_id))
        self.result.pings = sorted(went_out, key=lambda p: (p.at, p.stall_id))


@lru_cache(maxsize=None)
def _due_statement():
    from sqlalchemy import case, exists, func, literal_column, null, union_all

    from storage.models import Account
    from storage.stalls import due_accounts, stale_journey

    account = Account.__table__
    # Each part an index look-up (ix_account_next_eval, ix_account_journey_version): as one
    # OR over the table, SQLite read every account on every simulated tick.
    stale = exists().where(stale_journey(bindparam("version"))).correlate(None)  # refresh_journeys' own condition
    one, zero = literal_column("1"), literal_column("0")
    return union_all(
        select(account.c.id, one, zero, null()).where(due_accounts(bindparam("now", type_=account.c.next_eval_at.type))),
        select(null(), zero, case((stale, one), else_=zero), func.min(account.c.next_eval_at)))  # id NULL: this row


def _due_sql(engine: Engine) -> tuple[str, tuple[str, ...], dict]:
    """_due_statement compiled once for the engine's dialect (its SQL text, the order of its
    parameters, their bind processors): run as plain DB-API, once per simulated tick."""
    key = engine.dialect.name
    found = _DUE_SQL.get(key)
    if found is None:
        compiled = _due_statement().compile(dialect=engine.dialect)
        procs = compiled._bind_processors
        order = tuple(compiled.positiontup)
        found = _DUE_SQL[key] = (compiled.string, order, {k: procs[k] for k in order if k in procs})
    return found


_DUE_SQL: dict = {}


def _no_slack():
    raise RuntimeError("the backtest never calls Slack")


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# ---------------------------------------------------------------------- several rules files


def replay_all(history: History, rule_sets: list[tuple[Rules, str]], *,
               progress: Callable[[int], None] | None = None, parallel: bool = True) -> list[ReplayResult]:
    """Replay the history once per (rules, label). With two or more and more than one CPU, the
    others run in child processes (spawned: they read the history file again) while the first
    runs here; `progress` counts the records of every replay."""
    import multiprocessing
    import os

    progress = progress or (lambda n: None)
    if len(rule_sets) == 1 or not parallel or (os.cpu_count() or 1) < 2 or not history.entries:
        return [replay(history, rules, label=label, progress=progress) for rules, label in rule_sets]
    ctx = multiprocessing.get_context("spawn")
    children = []
    for rules, label in rule_sets[1:]:
        counter = ctx.Value("q", 0)
        parent_end, child_end = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child, args=(history.path, rules, label, counter, child_end), daemon=True)
        proc.start()
        child_end.close()
        children.append([proc, parent_end, counter, 0])

    def poll_children() -> None:
        for child in children:
            done = child[2].value
            if done > child[3]:
                progress(done - child[3])
                child[3] = done

    def local(n: int) -> None:
        progress(n)
        poll_children()

    results = [replay(history, rule_sets[0][0], label=rule_sets[0][1], progress=local)]
    for proc, pipe, counter, _ in children:
        while not pipe.poll(0.2):
            poll_children()
            if not proc.is_alive() and not pipe.poll(0):
                raise RuntimeError(f"the replay in process {proc.pid} died (exit code {proc.exitcode})")
        outcome = pipe.recv()
        proc.join()
        poll_children()
        if isinstance(outcome, BaseException):
            raise outcome
        results.append(outcome)
    return results


def _child(path: str, rules: Rules, label: str, counter, pipe) -> None:
    from bot.backtest.history import read_history

    def progress(n: int) -> None:
        with counter.get_lock():
            counter.value += n

    try:
        history = read_history(path)  # the parent already reported its problems
        outcome: object = replay(history, rules, label=label, progress=progress)
    except BaseException as exc:  # handed to the parent, which raises it
        outcome = exc
    pipe.send(outcome)
    pipe.close()
