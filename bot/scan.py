"""The stall scan: open, update, auto-resolve and suppress stalls (`stallwatch scan`).

SQL finds the accounts some rule could fire on (indexed branches, see
storage.stalls.candidate_condition); the pure rules decide; one write transaction applies
the decisions. With the same `now` and data, a second run changes nothing.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import multiprocessing
import os
import threading
import traceback
from collections import Counter
from contextlib import contextmanager
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable, Sequence

from sqlalchemy import Engine, bindparam, case, event, func, select, update

from rules.config import Rules
from rules.health import HealthFacts, HealthStall, account_health, escalated
from rules.journey import compute_journey, days_until, journey_stage, parse_step_times
from rules.model import NO_STEPS, AccountFacts, JourneyState, StallChange
from rules.plan import plan_for
from rules.reconcile import reconcile
from rules.review import next_review
from rules.scoring import score
from rules.stalls import evaluate
from bot import metrics
from storage.db import read_tx, retry_conflicts, utcnow, write_tx
from storage.ingest import journey_columns, rules_version
from storage.models import Account
from storage.sql import FastMany
from storage.meta import get_meta, set_meta
from storage.stalls import (Applied, active_days_by_account, apply_changes, held_decisions, iter_candidates,
                            live_stalls, next_eval_many, open_params, stale_journey, tickets_by_account)

log = logging.getLogger(__name__)
ACCOUNT = Account.__table__
# An account whose evaluation failed is skipped and looked at again after this long: soon
# enough to pick up a fix, late enough that a scan does not spin on it.
RETRY_FAILED = timedelta(hours=1)


@dataclass
class ScanReport:
    now: datetime
    candidates: int = 0
    opened: int = 0
    updated: int = 0
    unsnoozed: int = 0
    auto_resolved: int = 0
    suppressed: int = 0
    journeys_refreshed: int = 0
    failed: int = 0  # accounts skipped because evaluating them failed (retried after RETRY_FAILED)
    full: bool = False
    seconds: float = 0.0
    opened_ids: list[int] = field(default_factory=list)
    changed_ids: list[int] = field(default_factory=list)
    actions: Counter = field(default_factory=Counter, repr=False)  # a worker process's changes, for the metrics

    def summary(self) -> str:
        kind = "full scan" if self.full else "scan"
        return (f"{kind} at {self.now.isoformat(timespec='seconds')}: {self.candidates} accounts evaluated, "
                f"{self.opened} opened, {self.updated} updated, {self.unsnoozed} unsnoozed, "
                f"{self.auto_resolved} auto-resolved, {self.suppressed} suppressed"
                + (f", {self.failed} failed (retried later)" if self.failed else "") + f" in {self.seconds:.2f}s")


# Called with the report after changes are committed (the Slack router's `handle`): the
# process keeps its hooks in Services.change_hooks (bot/stalls/context.py) and passes them.
ChangeHook = Callable[[ScanReport], None]


def scan(engine: Engine, rules: Rules, now: datetime | None = None, *, only: Sequence[str] | None = None,
         full: bool | None = None, hooks: Sequence[ChangeHook] = (), workers: int | None = None) -> ScanReport:
    """Evaluate the due accounts (or only the given ones) at `now`; then, when stalls opened
    or changed, call each of `hooks` with the report.

    An account is due when ingest changed it or when rules.review.next_review said time
    alone could change its verdict by now. A full scan evaluates every account a rule could
    fire on as well: the first scan, after a rules change (`full=None` decides by comparing
    the rules with those of the last full scan) or on request (`stallwatch scan --full`).

    Candidates are read in batches from one snapshot and each batch's decisions are written
    in its own short transaction, so memory stays bounded and ingest is never blocked for
    long. Writes are guarded (see storage.stalls.apply_changes), so a concurrent evaluation
    of the same account cannot double-open or re-close a stall.

    A full scan of many accounts (at least PARALLEL_MIN_ACCOUNTS, on 2 cores or more) is
    split in two by account id: this process evaluates the first half while a forked worker
    process evaluates the second (`workers=1` keeps it in this process, `workers=2` splits
    whatever the size). See _scan_two.
    """
    started = time.perf_counter()
    now = now or utcnow()
    report = ScanReport(now=now)
    # Only a scan of every due account compares or records the rules' fingerprint (an
    # evaluation of given accounts neither reads nor writes it: not computed for them).
    fingerprint = rules_fingerprint(rules) if only is None else None
    if only is None:
        report.journeys_refreshed = refresh_journeys(engine, rules, now, report)
        if full is None:
            full = get_meta(engine, "scan_rules") != fingerprint
    report.full = bool(full)
    split = _split_point(engine, workers) if full and only is None else None
    if split is None:
        _scan_range(engine, rules, now, only, bool(full), report)
    else:
        _scan_two(engine, rules, now, split, report)
    if full and only is None:
        set_meta(engine, "scan_rules", fingerprint)
    report.seconds = time.perf_counter() - started
    metrics.SCAN_SECONDS.observe(report.seconds)
    if report.opened_ids or report.changed_ids:
        for hook in list(hooks):  # a copy: the process may add or remove hooks meanwhile
            hook(report)
    return report


def _scan_range(engine: Engine, rules: Rules, now: datetime, only: Sequence[str] | None, full: bool,
                report: ScanReport, after: str | None = None, upto: str | None = None, write_lock=None,
                on_batch: Callable[[str, ScanReport], None] | None = None) -> None:
    """Evaluate the candidates (of ids in (after, upto] when given) batch by batch: each
    batch decided from one read snapshot, then written in its own transaction. `on_batch`
    gets each written batch's last id and its own report (a worker sends them on)."""
    with read_tx(engine) as conn, _no_gc():
        for rows in iter_candidates(conn, rules, now, only, full=full, after=after, upto=upto):
            _scan_batch(engine, conn, rows, rules, now, report, write_lock, on_batch)


@contextmanager
def _no_gc():
    """No cyclic garbage collection while candidates are read, decided and written: their
    many small objects, all freed by reference counting, made the collector run thousands of
    times per batch (~15% of the deciding), and between batches a full collection walked
    everything alive (0.2 s of a 100,000-account scan in one process). A whole scan of
    100,000 accounts leaves ~70 objects in reference cycles, collected once it is over."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _scan_batch(engine: Engine, conn, rows: list, rules: Rules, now: datetime, report: ScanReport, write_lock,
                on_batch: Callable[[str, ScanReport], None] | None) -> None:
    """Decide one batch of candidate rows and write its decisions in one transaction."""
    part = ScanReport(now=now, full=report.full) if on_batch is not None else report
    part.candidates += len(rows)
    stage_updates: list[dict] = []
    reviews: list[dict] = []
    changes = _decide(conn, rows, rules, now, stage_updates, reviews, part)

    # The rows to write are built before the write lock is taken (the other half's process
    # writes meanwhile): under it, only the SQL runs.
    opens = open_params(conn, changes, now)
    account_writes = _account_writes(conn, stage_updates, reviews)

    def write(changes=changes, opens=opens, account_writes=account_writes) -> Applied:
        with write_tx(engine) as wconn:
            applied = apply_changes(wconn, changes, now, opens)
            for many, params in account_writes:
                many.run_params(wconn, params)
        return applied

    # Concurrent evaluations of overlapping accounts (two servers and a worker) can
    # deadlock on PostgreSQL; the aborted one is run again (its writes are guarded).
    if write_lock is None:
        applied = retry_conflicts(write, log=log, what="a scan's batch")
    else:
        with write_lock:  # the other half's process queues here, not on SQLite's busy handler
            applied = retry_conflicts(write, log=log, what="a scan's batch")
    _count(part, changes, applied)
    if on_batch is not None:
        _merge(report, part)
        on_batch(rows[-1].id, part)


# A full scan of at least this many accounts is split over two processes (below it, starting
# the second process costs more than it saves).
PARALLEL_MIN_ACCOUNTS = 20_000
HALF_CACHE_KB = 8192
WORKER_SILENT = 300.0  # seconds without a batch written: the worker is ended (see _await)
_IN_WORKER = False  # set in a scan's worker process: its metrics are counted by the parent


def _split_point(engine: Engine, workers: int | None) -> str | None:
    """The last account id of the first half, when the scan is to be split in two; else None."""
    if (workers is not None and workers < 2) or _IN_WORKER:
        return None
    if engine.url.get_backend_name() == "sqlite" and engine.url.database in (None, "", ":memory:"):
        return None  # an in-memory database is this process's alone
    if workers is None and (os.cpu_count() or 1) < 2:
        return None
    with read_tx(engine) as conn:
        count = conn.execute(select(func.count()).select_from(ACCOUNT)).scalar_one()
        if count < 2 or (workers is None and count < PARALLEL_MIN_ACCOUNTS):
            return None
        return conn.execute(select(ACCOUNT.c.id).order_by(ACCOUNT.c.id).offset(count // 2 - 1).limit(1)).scalar()


def _scan_two(engine: Engine, rules: Rules, now: datetime, split: str, report: ScanReport) -> None:
    """A full scan in two halves at once: ids up to `split` here, the rest in a forked
    worker process with its own engine (the writes of both queue on one lock on SQLite; on
    PostgreSQL the halves touch different rows). The worker sends each batch's report as
    it is written; whatever it did not finish (it failed or died) is then evaluated here, so
    the scan's outcome is the same as in one process, and its errors surface here."""
    ctx = multiprocessing.get_context("fork")
    write_lock = ctx.Lock() if engine.url.get_backend_name() == "sqlite" else None
    receive, send = ctx.Pipe(duplex=False)
    url = engine.url.render_as_string(hide_password=False)
    gc.freeze()  # the parent's objects stay out of the worker's collections: fewer copied pages
    worker = ctx.Process(target=_worker, args=(url, rules, now, split, write_lock, send), daemon=True,
                         name="stallwatch-scan-worker")
    worker.start()
    send.close()
    messages: list = []
    reader = threading.Thread(target=_drain, args=(receive, messages), daemon=True)
    reader.start()
    half = _half_engine(url) if write_lock is not None else engine
    try:
        _scan_range(half, rules, now, None, True, report, upto=split, write_lock=write_lock)
    finally:
        if half is not engine:
            half.dispose()
        _await(worker, messages)
        reader.join()
        receive.close()
        gc.unfreeze()
    last, done = split, False
    for message in messages:
        if message[0] == "batch":
            last = message[1]
            _merge(report, message[2], count_metrics=True)
        elif message[0] == "done":
            done = True
        else:
            log.warning("scan: the worker process failed (%s); its remaining accounts are evaluated here", message[1])
    if not done:
        if not messages or messages[-1][0] == "batch":
            log.warning("scan: the worker process ended early (exit code %s); its remaining accounts are "
                        "evaluated here", worker.exitcode)
        _scan_range(engine, rules, now, None, True, report, after=last)


def _await(worker, messages: list) -> None:
    """Wait for the worker to finish; one that sent nothing for WORKER_SILENT (it hangs: a
    lock some other thread of this process held when it forked, say) is ended, and what it
    did not do is evaluated here."""
    seen, since = len(messages), time.monotonic()
    while worker.is_alive():
        worker.join(0.5)
        if len(messages) != seen:
            seen, since = len(messages), time.monotonic()
        elif worker.is_alive() and time.monotonic() - since > WORKER_SILENT:
            log.warning("scan: the worker process sent nothing for %.0f s; ended", WORKER_SILENT)
            worker.kill()
            worker.join()


def _half_engine(url: str) -> Engine:
    """An engine of its own for one half of a split scan. On SQLite with a small page cache:
    each half reads and writes its accounts once (the OS caches the file anyway), and the
    scan's memory is the two processes' together. Without a checkpoint thread: the scan's
    own engine, in the parent process, has one for the file (a second and third copied the
    same WAL pages again, in both processes at once)."""
    from storage.db import make_engine

    engine = make_engine(url, checkpoints=False)
    if engine.url.get_backend_name() == "sqlite":
        event.listen(engine, "connect", lambda dbapi_conn, _record: dbapi_conn.execute(
            f"PRAGMA cache_size=-{HALF_CACHE_KB}"))
    return engine


def _drain(receive, messages: list) -> None:
    while True:
        try:
            messages.append(receive.recv())
        except (EOFError, OSError):
            return


def _worker(url: str, rules: Rules, now: datetime, after: str, write_lock, send) -> None:
    """The second half of a split full scan, in a forked process: a fresh engine (nothing of
    the parent's connections or locks is used), no metrics (the parent counts them)."""
    global _IN_WORKER
    _IN_WORKER = True
    code = 0
    try:
        engine = _half_engine(url)
        report = ScanReport(now=now, full=True)
        _scan_range(engine, rules, now, None, True, report, after=after, write_lock=write_lock,
                    on_batch=lambda last, part: send.send(("batch", last, part)))
        send.send(("done",))
        engine.dispose()
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which finishes the range
        code = 1
        try:  # the error's type only: its text may quote customer data
            send.send(("failed", type(exc).__name__))
        except Exception:  # noqa: BLE001
            pass
    finally:
        try:
            send.close()
        finally:
            os._exit(code)  # no atexit handlers or finalizers of the parent's objects in the child


def _merge(report: ScanReport, part: ScanReport, count_metrics: bool = False) -> None:
    """Add a batch's report (of this process, or of the worker's: then its metrics too)."""
    if part is report:
        return
    report.candidates += part.candidates
    report.opened += part.opened
    report.updated += part.updated
    report.unsnoozed += part.unsnoozed
    report.auto_resolved += part.auto_resolved
    report.suppressed += part.suppressed
    report.failed += part.failed
    report.opened_ids.extend(part.opened_ids)
    report.changed_ids.extend(part.changed_ids)
    if count_metrics:
        for action, n in part.actions.items():
            metrics.STALL_CHANGES.labels(action).inc(n)
        if part.failed:
            metrics.SCAN_ACCOUNT_FAILURES.inc(part.failed)


def evaluate_accounts(engine: Engine, rules: Rules, account_ids: Sequence[str], now: datetime | None = None, *,
                      hooks: Sequence[ChangeHook] = ()) -> ScanReport:
    """Event-driven evaluation of a few accounts right after their events were stored."""
    return scan(engine, rules, now, only=list(account_ids), hooks=hooks)


def _decide(conn, rows, rules: Rules, now: datetime, stage_updates: list[dict], reviews: list[dict],
            report: ScanReport) -> list[StallChange]:
    """Each account's decisions. One account's bad data never fails the scan: that account is
    skipped (logged, counted) and retried after RETRY_FAILED; every other one is evaluated."""
    plan = plan_for(rules)
    ids = [r.id for r in rows]
    tickets = tickets_by_account(conn, ids, now)
    days = active_days_by_account(conn, [r.id for r in rows if r.activated_at is not None], now)
    live = live_stalls(conn, ids)
    decisions = held_decisions(conn, ids)
    changes: list[StallChange] = []
    for row in rows:
        try:
            changes += _decide_account(row, plan, now, tickets.get(row.id, ()), days.get(row.id, (0, 0)),
                                       live.get(row.id, ()), stage_updates, reviews, decisions.get(row.id, ()))
        except Exception as exc:
            _skip_failed(report, row.id, exc, "evaluating")
            reviews.append({"_id": row.id, "_updated_at": row.updated_at, "next_eval_at": now + RETRY_FAILED})
    return changes


def _skip_failed(report: ScanReport, account_id: str, exc: Exception, doing: str) -> None:
    """Log (the account and where it failed, not the error's text: it may quote customer
    data), count, and go on with the other accounts."""
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    log.error("scan: %s account %r failed (%s at %s:%s); skipped, retried later", doing, account_id,
              type(exc).__name__, frame.filename.rsplit("/", 1)[-1], frame.lineno)
    report.failed += 1
    if not _IN_WORKER:
        metrics.SCAN_ACCOUNT_FAILURES.inc()


def _decide_account(row, plan, now: datetime, tickets, days: tuple[int, int], account_stalls,
                    stage_updates: list[dict], reviews: list[dict], decisions=()) -> list[StallChange]:
    """One account's stall changes; its review and stage are appended only once all of it
    was computed, so a failure leaves nothing half-decided. `decisions`: people's decisions
    that still hold (rules.decisions), which keep their rule's findings from reopening."""
    # The journey as ingest stored it (refresh_journeys keeps it current with the rules).
    journey = JourneyState(row.stage, row.signup_at, row.activated_at, row.waiting_step, row.waiting_since,
                           row.stalled_at, row.checkpoint_at, row.steps_done)
    recent, previous = days
    # By position (cheaper than keywords): id, name, arr, status, track, plan, seats, signup_at,
    # activated_at, steps (not needed: the journey is given), last_seen_at, renewal_date,
    # tickets, active_days_recent, active_days_previous, payment_failed_at, stage (None:
    # derived by evaluate).
    facts = AccountFacts(row.id, row.name, row.arr or 0.0, row.status, row.track, row.plan, row.seats,
                         row.signup_at, row.activated_at, NO_STEPS, None, row.renewal_date, tickets, recent,
                         previous, row.payment_failed_at, None)
    findings = evaluate(facts, plan, now, journey=journey, open_stalls=account_stalls)
    changes: list[StallChange] = []
    if findings:
        scored = []
        worded: set[int] = set()  # the scores computed with their words (why) already
        # A finding of a rule with no live stall and no decision opens one: its score is
        # computed with the words at once (the same score, the why line too), not twice.
        live_rules = {stall.rule for stall in account_stalls} if account_stalls else ()
        for f in findings:
            if decisions or f.rule in live_rules:
                scored.append((f, score(f, facts, plan, now, explain=False)))
            else:
                worded_score = score(f, facts, plan, now)
                worded.add(id(worded_score))
                scored.append((f, worded_score))
    else:
        scored, worded = [], ()
    if account_stalls or scored or decisions:  # else reconcile has nothing to say (most accounts)
        for change in reconcile(row.id, row.status, account_stalls, scored, now, decisions):
            if change.finding is not None and id(change.score) not in worded:  # the words for a stall that opens or changes
                change = StallChange(change.action, change.account_id, change.rule, change.stall_id, change.finding,
                                     score(change.finding, facts, plan, now), change.reason)
            changes.append(change)
    next_at = next_review(facts, journey, scored, plan, now,
                          snoozed_until=[s.snoozed_until for s in account_stalls] if account_stalls else (),
                          quiet_until=[d.quiet_until for d in decisions] if decisions else ())
    if findings:
        stage = findings[0].stage
    else:
        stage = journey_stage(plan, activated=row.activated_at is not None,
                              all_steps_done=row.steps_done == len(plan.step_events),
                              renewal_date=row.renewal_date, now=now)
    # The account's health from the facts at hand (no extra query): its live stalls as
    # decided now, with their priorities.
    if tickets:
        open_tickets = [t for t in tickets if t.is_open]
        open_count, escalated_count = len(open_tickets), sum(escalated(t.priority) for t in open_tickets)
    else:
        open_count = escalated_count = 0
    health = account_health(HealthFacts(
        row.activated_at is not None, row.steps_done or 0, len(plan.step_events),
        [HealthStall(f.rule, s.priority, f.stalled_since) for f, s in scored] if scored else (),
        recent, previous, open_count, escalated_count, row.payment_failed_at is not None,
        days_until(row.renewal_date, now)), plan.rules.health, now)
    # Only what changed is written: an unchanged next review (the guarded update would write
    # the same value) and an unchanged stage and health are left alone; when both changed,
    # one statement writes them (see _write_accounts).
    reasons = list(health.reasons)
    if stage != row.stage or health.score != row.health or reasons != (row.health_reasons or []):
        update = {"_id": row.id, "stage": stage, "health": health.score, "health_reasons": reasons}
        if next_at != row.next_eval_at:
            update["_updated_at"], update["next_eval_at"] = row.updated_at, next_at
        stage_updates.append(update)
    elif next_at != row.next_eval_at:
        reviews.append({"_id": row.id, "_updated_at": row.updated_at, "next_eval_at": next_at})
    return changes


def _account_writes(conn, updates: list[dict], reviews: list[dict]) -> list[tuple[FastMany, list]]:
    """The account columns to write, as (statement, parameters) built before the write lock
    (FastMany.params): the stage and the health of the accounts where either changed (a first
    scan: all of them), with the next review as well where that changed too (written as
    storage.stalls.next_eval_many writes it: unless ingest changed the account meanwhile);
    then the next reviews alone (next_eval_many's statement)."""
    writes: list[tuple[FastMany, list]] = []
    alone = [u for u in updates if "next_eval_at" not in u]
    both = [u for u in updates if "next_eval_at" in u] if len(alone) != len(updates) else []
    if alone:
        many = FastMany.of(
            conn, "account.stage_health",
            lambda c: update(ACCOUNT).where(ACCOUNT.c.id == bindparam("_id")).values(
                stage=bindparam("stage"), health=bindparam("health"), health_reasons=bindparam("health_reasons")),
            ("_id", "stage", "health", "health_reasons"), {"health_reasons": ACCOUNT.c.health_reasons.type},
        )
        writes.append((many, many.params(conn, alone)))
    if both:
        many = FastMany.of(
            conn, "account.stage_health_next_eval",
            lambda c: update(ACCOUNT).where(ACCOUNT.c.id == bindparam("_id")).values(
                stage=bindparam("stage"), health=bindparam("health"), health_reasons=bindparam("health_reasons"),
                next_eval_at=case((ACCOUNT.c.updated_at == bindparam("_updated_at"), bindparam("next_eval_at")),
                                  else_=ACCOUNT.c.next_eval_at)),
            ("_id", "stage", "health", "health_reasons", "_updated_at", "next_eval_at"),
            # _updated_at as iter_candidates read it (SQLite: the stored text, bound as is).
            {"health_reasons": ACCOUNT.c.health_reasons.type, "next_eval_at": ACCOUNT.c.next_eval_at.type},
        )
        writes.append((many, many.params(conn, both)))
    if reviews:
        many = next_eval_many(conn)
        writes.append((many, many.params(conn, reviews)))
    return writes


def _count(report: ScanReport, changes: list[StallChange], applied: Applied) -> None:
    counts = Counter([c.action for c in changes])  # one pass over the batch's changes
    for action, n in counts.items():
        if _IN_WORKER:
            report.actions[action] += n
        else:
            metrics.STALL_CHANGES.labels(action).inc(n)
    report.opened += len(applied.opened)
    report.updated += counts["update"]
    report.unsnoozed += counts["unsnooze"]
    report.auto_resolved += counts["auto_resolve"]
    report.suppressed += counts["suppress"]
    report.opened_ids.extend(applied.opened)
    report.changed_ids.extend(applied.changed)


def rules_fingerprint(rules: Rules) -> str:
    """Everything a verdict depends on: a change to any of it calls for a full scan. The
    `[hubspot]` table (which CRM properties the sync reads) decides no verdict: left out, so
    the fingerprint of a file is the same as before the table existed."""
    return hashlib.sha1(rules.model_dump_json(exclude={"hubspot"}).encode()).hexdigest()[:16]


def refresh_journeys(engine: Engine, rules: Rules, now: datetime, report: ScanReport | None = None,
                     batch: int = 5000) -> int:
    """Recompute stored journey state of accounts computed under other journey rules
    (a changed step list or threshold), so the due-stall indexes tell the truth again. An
    account whose journey cannot be computed keeps its old one (marked current, so this loop
    ends) and is skipped, as in _decide."""
    version = rules_version(rules)
    plan = plan_for(rules)
    total = 0
    while True:
        with write_tx(engine) as conn:
            rows = list(conn.execute(
                select(ACCOUNT.c.id, ACCOUNT.c.steps, ACCOUNT.c.first_seen_at, ACCOUNT.c.renewal_date, ACCOUNT.c.stage,
                       ACCOUNT.c.track)
                .where(stale_journey(version)).limit(batch)
            ))
            if not rows:
                return total
            params, failed = [], []
            for r in rows:
                try:
                    params.append({"_id": r.id, **journey_columns(compute_journey(
                        parse_step_times(r.steps or {}), plan, first_seen_at=r.first_seen_at,
                        renewal_date=r.renewal_date, now=now, churn_risk=r.stage == "Churn risk", track=r.track)),
                        "journey_version": version, "next_eval_at": None})
                except Exception as exc:
                    _skip_failed(report or ScanReport(now=now), r.id, exc, "refreshing the journey of")
                    failed.append({"_id": r.id, "journey_version": version, "next_eval_at": now + RETRY_FAILED})
            for group in (params, failed):
                if group:
                    conn.execute(update(ACCOUNT).where(ACCOUNT.c.id == bindparam("_id"))
                                 .values({k: bindparam(k) for k in group[0] if k != "_id"}), group)
            total += len(params)
