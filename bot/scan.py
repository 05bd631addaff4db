"""The stall scan: open, update, auto-resolve and suppress stalls (`stallwatch scan`).

SQL finds the accounts some rule could fire on (indexed branches, see
storage.stalls.candidate_condition); the pure rules decide; one write transaction applies
the decisions. With the same `now` and data, a second run changes nothing.
"""

from __future__ import annotations

import hashlib
import logging
import traceback
from collections import Counter
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable, Sequence

from sqlalchemy import Engine, bindparam, case, select, update

from rules.config import Rules
from rules.health import HealthFacts, HealthStall, account_health, escalated
from rules.journey import compute_journey, days_until, journey_stage, parse_step_times
from rules.model import AccountFacts, JourneyState, StallChange
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
                            live_stalls, set_next_eval, tickets_by_account)

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
         full: bool | None = None, hooks: Sequence[ChangeHook] = ()) -> ScanReport:
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
    """
    started = time.perf_counter()
    now = now or utcnow()
    report = ScanReport(now=now)
    fingerprint = rules_fingerprint(rules)
    if only is None:
        report.journeys_refreshed = refresh_journeys(engine, rules, now, report)
        if full is None:
            full = get_meta(engine, "scan_rules") != fingerprint
    report.full = bool(full)
    with read_tx(engine) as conn:
        for rows in iter_candidates(conn, rules, now, only, full=bool(full)):
            report.candidates += len(rows)
            stage_updates: list[dict] = []
            reviews: list[dict] = []
            changes = _decide(conn, rows, rules, now, stage_updates, reviews, report)
            def write(changes=changes, stage_updates=stage_updates, reviews=reviews) -> Applied:
                with write_tx(engine) as wconn:
                    applied = apply_changes(wconn, changes, now)
                    _set_stage_and_health(wconn, stage_updates)
                    set_next_eval(wconn, reviews)
                return applied

            # Concurrent evaluations of overlapping accounts (two servers and a worker) can
            # deadlock on PostgreSQL; the aborted one is run again (its writes are guarded).
            applied = retry_conflicts(write, log=log, what="a scan's batch")
            _count(report, changes, applied)
    if full and only is None:
        set_meta(engine, "scan_rules", fingerprint)
    report.seconds = time.perf_counter() - started
    metrics.SCAN_SECONDS.observe(report.seconds)
    if report.opened_ids or report.changed_ids:
        for hook in list(hooks):  # a copy: the process may add or remove hooks meanwhile
            hook(report)
    return report


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
    facts = AccountFacts(
        id=row.id, name=row.name, arr=row.arr or 0.0, status=row.status, track=row.track, plan=row.plan,
        seats=row.seats, signup_at=row.signup_at, activated_at=row.activated_at,
        renewal_date=row.renewal_date, tickets=tickets,
        active_days_recent=recent, active_days_previous=previous, payment_failed_at=row.payment_failed_at,
    )
    findings = evaluate(facts, plan, now, journey=journey, open_stalls=account_stalls)
    scored = [(f, score(f, facts, plan, now, explain=False)) for f in findings] if findings else []
    changes: list[StallChange] = []
    if account_stalls or scored or decisions:  # else reconcile has nothing to say (most accounts)
        for change in reconcile(row.id, row.status, account_stalls, scored, now, decisions):
            if change.finding is not None:  # the words for a stall that opens or changes
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
    health = _health(row, plan, facts, scored, now)
    # Only what changed is written: an unchanged next review (the guarded update would write
    # the same value) and an unchanged stage and health are left alone; when both changed,
    # one statement writes them (see _write_accounts).
    review = None if next_at == row.next_eval_at else {
        "_id": row.id, "_updated_at": row.updated_at, "next_eval_at": next_at}
    if stage != row.stage or health.score != row.health or list(health.reasons) != (row.health_reasons or []):
        update = {"_id": row.id, "stage": stage, "health": health.score, "health_reasons": list(health.reasons)}
        if review is not None:
            update["_updated_at"], update["next_eval_at"] = row.updated_at, next_at
            review = None
        stage_updates.append(update)
    if review is not None:
        reviews.append(review)
    return changes


def _health(row, plan, facts: AccountFacts, scored, now: datetime):
    """The account's health from the facts the scan already has (no extra query): its live
    stalls as decided now, with their priorities."""
    open_tickets = [t for t in facts.tickets if t.is_open]
    return account_health(HealthFacts(
        activated=row.activated_at is not None, steps_done=row.steps_done or 0, steps_total=len(plan.step_events),
        stalls=[HealthStall(f.rule, s.priority, f.stalled_since) for f, s in scored],
        active_days_recent=facts.active_days_recent, active_days_previous=facts.active_days_previous,
        open_tickets=len(open_tickets), escalated_tickets=sum(escalated(t.priority) for t in open_tickets),
        payment_failed=row.payment_failed_at is not None, renewal_days=days_until(row.renewal_date, now),
    ), plan.rules.health, now)


def _set_stage_and_health(conn, updates: list[dict]) -> None:
    """The stage and the health of the accounts where either changed (a first scan: all of
    them), as one executemany each: with the next review as well where that changed too
    (written as set_next_eval writes it: unless ingest changed the account meanwhile)."""
    alone = [u for u in updates if "next_eval_at" not in u]
    both = [u for u in updates if "next_eval_at" in u] if len(alone) != len(updates) else []
    if alone:
        FastMany.of(
            conn, "account.stage_health",
            lambda c: update(ACCOUNT).where(ACCOUNT.c.id == bindparam("_id")).values(
                stage=bindparam("stage"), health=bindparam("health"), health_reasons=bindparam("health_reasons")),
            ("_id", "stage", "health", "health_reasons"), {"health_reasons": ACCOUNT.c.health_reasons.type},
        ).run(conn, alone)
    if both:
        FastMany.of(
            conn, "account.stage_health_next_eval",
            lambda c: update(ACCOUNT).where(ACCOUNT.c.id == bindparam("_id")).values(
                stage=bindparam("stage"), health=bindparam("health"), health_reasons=bindparam("health_reasons"),
                next_eval_at=case((ACCOUNT.c.updated_at == bindparam("_updated_at"), bindparam("next_eval_at")),
                                  else_=ACCOUNT.c.next_eval_at)),
            ("_id", "stage", "health", "health_reasons", "_updated_at", "next_eval_at"),
            {"health_reasons": ACCOUNT.c.health_reasons.type, "_updated_at": ACCOUNT.c.updated_at.type,
             "next_eval_at": ACCOUNT.c.next_eval_at.type},
        ).run(conn, both)


def _count(report: ScanReport, changes: list[StallChange], applied: Applied) -> None:
    for action, n in Counter(c.action for c in changes).items():
        metrics.STALL_CHANGES.labels(action).inc(n)
    report.opened += len(applied.opened)
    report.updated += sum(c.action == "update" for c in changes)
    report.unsnoozed += sum(c.action == "unsnooze" for c in changes)
    report.auto_resolved += sum(c.action == "auto_resolve" for c in changes)
    report.suppressed += sum(c.action == "suppress" for c in changes)
    report.opened_ids.extend(applied.opened)
    report.changed_ids.extend(applied.changed)


def rules_fingerprint(rules: Rules) -> str:
    """Everything a verdict depends on: a change to any of it calls for a full scan."""
    return hashlib.sha1(rules.model_dump_json().encode()).hexdigest()[:16]


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
                .where(ACCOUNT.c.journey_version != version).limit(batch)
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
