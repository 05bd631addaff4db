"""Queries behind the scan: candidate accounts, their signals, live stalls; applying changes."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from datetime import date, datetime, timedelta
from typing import Iterator, Sequence

from sqlalchemy import Connection, and_, bindparam, case, func, or_, select, update

from rules.config import Rules
from rules.decisions import Decision
from rules.model import OpenStall, StallChange, TicketFact
from rules.reconcile import stall_open_key
from storage.models import Account, ActiveDay, AuditEntry, Stall, Ticket
from storage.sql import FastMany, FastSelect, chunks, insert_ignore, select_in, stream_rows, upsert

ACCOUNT = Account.__table__
ACTIVE_DAY = ActiveDay.__table__
AUDIT = AuditEntry.__table__
STALL = Stall.__table__
TICKET = Ticket.__table__

FACT_COLUMNS = (
    "id", "name", "arr", "status", "track", "plan", "seats", "signup_at", "activated_at", "renewal_date",
    "payment_failed_at", "stage", "waiting_step", "waiting_since", "stalled_at", "checkpoint_at", "steps_done",
    "updated_at", "health", "health_reasons", "next_eval_at",
)
TICKET_LOOKBACK = timedelta(days=30)
STORED_TEXT = ("updated_at",)  # read as stored on SQLite (see iter_candidates)


def stale_journey(version):
    """Accounts whose stored journey was computed under other rules (another `version`, or
    none yet), which the scan recomputes first (bot.scan.refresh_journeys). Written as two
    ranges, not `!=`, so ix_account_journey_version serves it (neither SQLite nor PostgreSQL
    looks up an inequality in an index)."""
    column = ACCOUNT.c.journey_version
    return or_(column < version, column > version)


def due_condition(now: datetime):
    """Accounts due for evaluation: changed since (NULL) or at a moment rules.review named."""
    return or_(ACCOUNT.c.next_eval_at.is_(None), ACCOUNT.c.next_eval_at <= now)


def due_accounts(now: datetime):
    """The due accounts as a condition on their id, for SQLite: asked for rows in id order
    with due_condition, it walks the whole table along its primary key and tests every row
    (a scheduled scan of 100,000 accounts read them all to find ~40); as a sub-query of ids,
    it looks up each branch of due_condition in ix_account_next_eval. (PostgreSQL plans the
    plain condition as a bitmap OR of that index: it gets due_condition itself.)"""
    return ACCOUNT.c.id.in_(select(ACCOUNT.c.id).where(due_condition(now)).correlate(None))


def candidate_condition(rules: Rules, now: datetime, only: Sequence[str] | None = None):
    """Accounts some rule could fire on, or with a live stall to re-check: each branch indexed.
    A full scan (first one, or after the rules changed) evaluates these and the due ones."""
    if only is not None:
        return ACCOUNT.c.id.in_(list(only))
    sr = rules.stall_rules
    not_activated = ACCOUNT.c.activated_at.is_(None)
    # The due accounts' branch first: a database stops at the first true branch, so a due
    # account (on a first scan, all of them) costs one column check, and a sub-query no row
    # gets to is never run (a first scan of 100,000 accounts read them in 0.35 s instead of 0.5 s).
    branches = [due_condition(now),
                ACCOUNT.c.id.in_(select(STALL.c.account_id).where(STALL.c.open_key.is_not(None)))]
    if sr.step_stall.enabled:
        branches.append(and_(ACCOUNT.c.stalled_at <= now, not_activated))
    if sr.not_activated.enabled:
        branches.append(and_(ACCOUNT.c.checkpoint_at <= now, not_activated))
    if sr.payment_failed.enabled:
        branches.append(ACCOUNT.c.payment_failed_at.is_not(None))
    if sr.renewal_risk.enabled:
        today = now.date()
        branches.append(ACCOUNT.c.renewal_date.between(today, today + timedelta(days=sr.renewal_risk.within_days)))
    if sr.ticket_spike.enabled:
        since = now - timedelta(days=sr.ticket_spike.window_days)
        branches.append(ACCOUNT.c.id.in_(
            select(TICKET.c.account_id).where(TICKET.c.created_at >= since, TICKET.c.created_at <= now)
            .group_by(TICKET.c.account_id).having(func.count() >= sr.ticket_spike.min_tickets)
        ))
    if sr.usage_drop.enabled:
        start, middle = usage_window(now)
        branches.append(and_(ACCOUNT.c.activated_at.is_not(None), ACCOUNT.c.id.in_(
            select(ACTIVE_DAY.c.account_id).where(ACTIVE_DAY.c.day >= start, ACTIVE_DAY.c.day < middle)
            .group_by(ACTIVE_DAY.c.account_id).having(func.count() >= sr.usage_drop.min_previous_days)
        )))
    return or_(*branches)


def usage_window(now: datetime) -> tuple[date, date]:
    """[start, middle) is the previous week, [middle, today) the recent one (days, UTC).
    Complete days only: counting today's unfinished day made every account look less active
    just after midnight (usage_drop opened at 00:05 and closed by itself at noon)."""
    today = now.date()
    return today - timedelta(days=14), today - timedelta(days=7)


CANDIDATE_WORK_MEM = "128MB"  # PostgreSQL: room to hash ~2,000,000 account ids per IN-subquery


def iter_candidates(conn: Connection, rules: Rules, now: datetime, only: Sequence[str] | None = None,
                    batch: int = 5000, full: bool = True, *, after: str | None = None,
                    upto: str | None = None) -> Iterator[list]:
    """Candidate account rows, in batches, ordered by id (bounded memory): the given ones,
    every account a rule could fire on (`full`), or only the due ones; of ids in
    (`after`, `upto`] when given (a scan split over processes). On SQLite `updated_at` is
    the stored text: the scan only writes it back as the guard of its next-review update
    (next_eval_many), so it is neither parsed nor formatted again."""
    cols = [ACCOUNT.c[c] for c in FACT_COLUMNS]
    if only is not None:
        for chunk in chunks(sorted(set(only)), 900):
            # In id order, as the other paths: PostgreSQL returns an IN look-up's rows in
            # whatever order its plan gives, and the order stalls open in numbers them.
            yield sorted(select_in(conn, ACCOUNT, FACT_COLUMNS, "id", chunk, keep_text=STORED_TEXT), key=lambda r: r.id)
        return
    if full:
        condition = candidate_condition(rules, now)
    else:
        condition = due_accounts(now) if conn.dialect.name == "sqlite" else due_condition(now)
    if full and conn.dialect.name == "postgresql":
        # The full condition's IN-subqueries (live stalls, ticket spikes, active days) must be
        # hashed once; past PostgreSQL's default 4 MB of work_mem (about 100,000 accounts)
        # the planner re-runs them for every account instead: a first scan of 1,000,000
        # accounts took 586 s, nearly all waiting on that query (benchmarks/scale.py).
        # For this read transaction only.
        conn.exec_driver_sql(f"SET LOCAL work_mem = '{CANDIDATE_WORK_MEM}'")
    stmt = select(*cols).where(condition).order_by(ACCOUNT.c.id)
    if after is not None:
        stmt = stmt.where(ACCOUNT.c.id > after)
    if upto is not None:
        stmt = stmt.where(ACCOUNT.c.id <= upto)
    yield from stream_rows(conn, stmt, batch, keep_text=STORED_TEXT)


def next_eval_many(conn: Connection) -> FastMany:
    """The next review's statement (keys _id, _updated_at, next_eval_at): records each
    account's next review, unless ingest changed the account after the scan read it (its
    updated_at moved): then it stays due, and the next scan sees the change. `_updated_at`
    as iter_candidates read it (on SQLite its stored text, bound as is). For a caller that
    builds its parameters before taking a write lock (FastMany.params / run_params)."""
    return FastMany.of(
        conn, "account.next_eval",
        lambda c: update(ACCOUNT).where(ACCOUNT.c.id == bindparam("_id"),
                                        ACCOUNT.c.updated_at == bindparam("_updated_at"))
        .values(next_eval_at=bindparam("next_eval_at")),
        ("_id", "_updated_at", "next_eval_at"),
        {"next_eval_at": ACCOUNT.c.next_eval_at.type},
    )


def _tickets_statement():
    return (select(TICKET.c.account_id, TICKET.c.id, TICKET.c.created_at, TICKET.c.status, TICKET.c.topic,
                   TICKET.c.subject, TICKET.c.priority)
            .where(TICKET.c.account_id.in_(bindparam("ids", expanding=True)),
                   TICKET.c.created_at >= bindparam("since", type_=TICKET.c.created_at.type),
                   TICKET.c.created_at <= bindparam("now", type_=TICKET.c.created_at.type)))


def tickets_by_account(conn: Connection, account_ids: Sequence[str], now: datetime) -> dict[str, list[TicketFact]]:
    """The tickets of the last TICKET_LOOKBACK of each account (a statement built once)."""
    out: dict[str, list[TicketFact]] = defaultdict(list)
    rows = FastSelect.of("stalls.tickets", _tickets_statement, "ids").rows(
        conn, sorted(account_ids), {"since": now - TICKET_LOOKBACK, "now": now})
    for aid, tid, created, status, topic, subject, priority in rows:
        out[aid].append(TicketFact(tid, created, status, topic, subject, priority))
    return out


def _active_days_statement():
    day = ACTIVE_DAY.c.day
    middle = bindparam("middle", type_=day.type)
    recent = func.sum(case((day >= middle, 1), else_=0))
    previous = func.sum(case((day < middle, 1), else_=0))
    return (select(ACTIVE_DAY.c.account_id, recent, previous)
            .where(ACTIVE_DAY.c.account_id.in_(bindparam("ids", expanding=True)),
                   day >= bindparam("start", type_=day.type), day < bindparam("today", type_=day.type))
            .group_by(ACTIVE_DAY.c.account_id))


def active_days_by_account(conn: Connection, account_ids: Sequence[str], now: datetime) -> dict[str, tuple[int, int]]:
    """(recent, previous) distinct active days for each account with any in the last 14 days
    (a statement built once)."""
    start, middle = usage_window(now)
    rows = FastSelect.of("stalls.active_days", _active_days_statement, "ids").rows(
        conn, sorted(account_ids), {"middle": middle, "start": start, "today": now.date()})
    return {aid: (int(r or 0), int(p or 0)) for aid, r, p in rows}


def live_stalls(conn: Connection, account_ids: Sequence[str]) -> dict[str, list[OpenStall]]:
    out: dict[str, list[OpenStall]] = defaultdict(list)
    cols = (STALL.c.id, STALL.c.account_id, STALL.c.rule, STALL.c.step, STALL.c.status, STALL.c.score,
            STALL.c.priority, STALL.c.snoozed_until)
    names = tuple(c.name for c in cols)
    for row in select_in(conn, STALL, names, "account_id", sorted(account_ids), where="open_key IS NOT NULL"):
        out[row.account_id].append(OpenStall(*row))
    return out


def held_decisions(conn: Connection, account_ids: Sequence[str]) -> dict[str, list[Decision]]:
    """The decisions that still hold (at most one per account and rule: the latest resolve
    with a reason), for a batch of accounts: one statement per 900 accounts, on
    ix_stall_decision."""
    out: dict[str, list[Decision]] = defaultdict(list)
    names = ("id", "account_id", "rule", "step", "resolution_kind", "resolved_at", "quiet_until")
    for row in select_in(conn, STALL, names, "account_id", sorted(account_ids), where="decision_key IS NOT NULL"):
        out[row.account_id].append(Decision(row.id, row.account_id, row.rule, row.step, row.resolution_kind,
                                            row.resolved_at, row.quiet_until))
    return out


@dataclass
class Applied:
    opened: list[int]
    changed: list[int]  # updated, unsnoozed, resolved or suppressed


def apply_changes(conn: Connection, changes: Sequence[StallChange], now: datetime, opens: list | None = None) -> Applied:
    """Write reconcile's decisions. Guarded so a concurrent evaluation can't double-open or
    re-close: opens are ON CONFLICT (open_key) DO NOTHING, the rest touch live stalls only.
    `opens`: the stalls to open as open_params built them (before the write lock, by the scan)."""
    if opens is None:
        opens = open_params(conn, changes, now)
    applied = Applied([], [])
    if not changes:
        return applied  # (most evaluations: nothing opens, changes or closes)
    scored = [c for c in changes if c.action in ("update", "unsnooze")]
    if scored:
        # A plain update keeps a snooze; an unsnooze (snooze expired, still stalled) reopens.
        conn.execute(_change_statements()["score"], [_score_params(c, now) for c in scored])
        unsnoozed = [{"_id": c.stall_id} for c in scored if c.action == "unsnooze"]
        if unsnoozed:
            conn.execute(_change_statements()["unsnooze"], unsnoozed)
    closing = [c for c in changes if c.action in ("auto_resolve", "suppress")]
    if closing:
        conn.execute(_change_statements()["close"], [
            {"_id": c.stall_id, "status": "auto_resolved" if c.action == "auto_resolve" else "suppressed",
             "reason": (c.reason or "")[:500], "now": now}
            for c in closing
        ])
    if opens:
        # After the closes: a stall that moved to another step closes the old one and opens
        # the new one under the same open_key in one scan.
        applied.opened = _open(conn, opens)
    lapsed = [c for c in changes if c.action == "lapse"]
    if lapsed:
        # Before the opens: the rule of a decision that no longer holds may open again now.
        conn.execute(_change_statements()["lapse"], [{"_id": c.stall_id} for c in lapsed])
    applied.changed = [c.stall_id for c in scored + closing]
    audits = [
        {"at": now, "actor": "system", "action": f"stall.{c.action}", "stall_id": c.stall_id,
         "account_id": c.account_id, "source": "scan", "detail": {"rule": c.rule, "reason": c.reason}}
        for c in closing + [c for c in scored if c.action == "unsnooze"] + lapsed
    ]
    if audits:
        conn.execute(AUDIT.insert(), audits)
    return applied


@lru_cache(maxsize=None)
def _change_statements() -> dict:
    """apply_changes' UPDATE statements, built once; each touches live stalls only (the
    lapse: stalls holding a decision)."""
    live = STALL.c.open_key.is_not(None)
    return {
        "score": (update(STALL).where(STALL.c.id == bindparam("_id"), live)
                  .values(score=bindparam("score"), severity=bindparam("severity"), priority=bindparam("priority"),
                          why=bindparam("why"), detail=bindparam("detail"), stalled_since=bindparam("stalled_since"),
                          threshold_at=bindparam("threshold_at"), stage=bindparam("stage"),
                          updated_at=bindparam("updated_at"))),
        "unsnooze": update(STALL).where(STALL.c.id == bindparam("_id"), live).values(status="open", snoozed_until=None),
        "close": (update(STALL).where(STALL.c.id == bindparam("_id"), live)
                  .values(status=bindparam("status"), open_key=None, resolved_at=bindparam("now"),
                          resolved_by="system", resolution=bindparam("reason"), updated_at=bindparam("now"))),
        "lapse": (update(STALL).where(STALL.c.id == bindparam("_id"), STALL.c.decision_key.is_not(None))
                  .values(decision_key=None)),
    }


OPEN_KEYS = ("account_id", "rule", "step", "open_key", "status", "opened_at", "stalled_since", "threshold_at",
             "updated_at", "score", "severity", "priority", "why", "detail", "stage", "recovery_attempts")
_OPEN_CONVERTED = frozenset({"opened_at", "stalled_since", "threshold_at", "updated_at", "score", "severity"})


def _open_many(conn: Connection) -> FastMany:
    return FastMany.of(conn, "stall.open", lambda c: upsert(c, STALL).on_conflict_do_nothing(), OPEN_KEYS,
                       {c.name: c.type for c in STALL.columns})


def open_params(conn: Connection, changes: Sequence[StallChange], now: datetime) -> list:
    """The rows of the stalls `changes` open, as the insert takes them: on SQLite tuples in
    OPEN_KEYS order with the columns' bind processors applied (`now` converted once, no dict
    per row), elsewhere dicts. Pure Python: the scan builds them before the write lock."""
    opens = [c for c in changes if c.action == "open"]
    if not opens:
        return []
    many = _open_many(conn)
    if conn.dialect.name != "sqlite":
        return [_open_row(c, now) for c in opens]
    procs, ordered = many.sqlite_params(conn)
    if not ordered or {k for k in OPEN_KEYS if k in procs} != _OPEN_CONVERTED:
        return many.params(conn, [_open_row(c, now) for c in opens])  # (not this schema: the general way)
    at = procs["opened_at"](now)
    since, threshold, to_score, to_severity = (procs["stalled_since"], procs["threshold_at"], procs["score"],
                                               procs["severity"])
    rows = []
    for c in opens:
        f, s, aid = c.finding, c.score, c.account_id
        ss, th = f.stalled_since, f.threshold_at
        rows.append((aid, c.rule, f.step, stall_open_key(aid, c.rule), "open", at,
                     None if ss is None else since(ss), None if th is None else threshold(th), at,
                     None if s.score is None else to_score(s.score),
                     None if s.severity is None else to_severity(s.severity),
                     s.priority, s.why[:1000], f.detail[:500], f.stage, 0))
    return rows


def _open(conn: Connection, rows: list) -> list[int]:
    """Insert new stalls (open_params' rows) unless one is already live for the same
    open_key; return the ids of those inserted here (a concurrent evaluation may have
    opened some of them first)."""
    if conn.dialect.name != "sqlite":
        stmt = insert_ignore(conn, STALL, "open_key").returning(STALL.c.id)
        return [r[0] for chunk in chunks(rows, 500) for r in conn.execute(stmt, chunk)]
    # SQLite: this transaction holds the write lock, so the rows with ids above the highest
    # before the insert are those it inserted (a live open_key's row is skipped by the insert):
    # before+1 .. before+n when the highest after is before+n (checked: else they are read).
    before = conn.exec_driver_sql('SELECT coalesce(max(id), 0) FROM "stall"').scalar()
    inserted = _open_many(conn).run_params(conn, rows)
    if inserted >= 0 and conn.exec_driver_sql('SELECT coalesce(max(id), 0) FROM "stall"').scalar() == before + inserted:
        return list(range(before + 1, before + inserted + 1))
    return [r[0] for r in conn.exec_driver_sql('SELECT id FROM "stall" WHERE id > ? ORDER BY id', (before,)).fetchall()]


def _open_row(change: StallChange, now: datetime) -> dict:
    f, s = change.finding, change.score
    return {
        "account_id": change.account_id, "rule": change.rule, "step": f.step,
        "open_key": stall_open_key(change.account_id, change.rule), "status": "open",
        "opened_at": now, "stalled_since": f.stalled_since, "threshold_at": f.threshold_at, "updated_at": now,
        "score": s.score, "severity": s.severity, "priority": s.priority, "why": s.why[:1000],
        "detail": f.detail[:500], "stage": f.stage, "recovery_attempts": 0,
    }


def _score_params(change: StallChange, now: datetime) -> dict:
    f, s = change.finding, change.score
    return {
        "_id": change.stall_id, "score": s.score, "severity": s.severity, "priority": s.priority,
        "why": s.why[:1000], "detail": f.detail[:500], "stalled_since": f.stalled_since,
        "threshold_at": f.threshold_at, "stage": f.stage, "updated_at": now,
    }
