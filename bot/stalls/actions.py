"""Use-cases on a stall's alert: assign, snooze, resolve, view.

One alert per account: a change applies to every live stall of the account (the reasons its
ping lists). Each change is one write transaction: load the stall (NotFound; AlreadyResolved
when nothing of its alert is live), check the permission (bot.stalls.permissions), make the
guarded changes (only a live stall changes, so a double click or a race is harmless),
acknowledge the alerts and write an AuditEntry per stall changed. Nothing changes when any step refuses. How the result is shown (which
messages are re-rendered) is the caller's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Connection

from bot.stalls.context import Services
from bot.stalls.errors import AlreadyResolved, BadRequest, NotFound
from bot.stalls.permissions import Op, Subject, check
from storage import stall_actions as sql
from storage.db import write_tx

DEFAULT_SNOOZE_DAYS = 1
RESOLUTION = "Resolved in Slack"


@dataclass(frozen=True)
class Outcome:
    stall_id: int
    changed: bool
    text: str  # what the user is told when there is no message showing the change


def subject(row) -> Subject:
    return Subject(stall_id=row.id, owner_slack_id=row.owner_slack_id, assignee=row.assignee)


def checked(conn: Connection, services: Services, op: Op, stall_id: int, user: str, *, live: bool = True):
    """The stall's row once `user` may perform `op` on it. NotFound when there is no such stall;
    AlreadyResolved when `live` and it is closed; NotAllowed when the user may not."""
    row = sql.subject_of(conn, stall_id)
    if row is None:
        raise NotFound()
    if live and row.open_key is None:
        raise AlreadyResolved(row.resolved_by, row.status)
    check(op, user, subject(row), services.admins)
    return row


def assign(services: Services, stall_id: int, user: str, *, source: str) -> Outcome:
    def apply(conn, sid, now):
        return sql.assign(conn, sid, user, now)

    def told(changed: int, row) -> tuple[str, str, dict]:
        text = "Assigned to you." if changed else "It is already assigned to you."
        return text, "stall.assign", {"assignee": user, "previous": row.assignee}

    return _change(services, Op.ASSIGN, stall_id, user, source, apply, told)


def snooze(services: Services, stall_id: int, user: str, days: int | None = None, *, source: str) -> Outcome:
    days = days or DEFAULT_SNOOZE_DAYS
    until = [None]

    def apply(conn, sid, now):
        until[0] = now + timedelta(days=days)
        return sql.snooze(conn, sid, user, until[0], now)

    def told(changed: int, row) -> tuple[str, str, dict]:
        return (f"Snoozed for {days} day{'s' if days != 1 else ''}.", "stall.snooze",
                {"days": days, "until": until[0].isoformat() if until[0] else None})

    return _change(services, Op.SNOOZE, stall_id, user, source, apply, told)


def resolve(services: Services, stall_id: int, user: str, *, source: str) -> Outcome:
    def apply(conn, sid, now):
        return sql.resolve(conn, sid, user, RESOLUTION, now)

    def told(changed: int, row) -> tuple[str, str, dict]:
        if not changed:
            # Someone closed them between our read and our write (PostgreSQL: no lock was held).
            raise AlreadyResolved(None, "resolved")
        return "Resolved.", "stall.resolve", {}

    return _change(services, Op.RESOLVE, stall_id, user, source, apply, told)


def view(services: Services, stall_id: int, user: str) -> str:
    """The account id of the stall, once `user` may view it (a closed stall too)."""
    with services.engine.connect() as conn:
        return checked(conn, services, Op.VIEW, stall_id, user, live=False).account_id


CHANGES = {Op.ASSIGN: assign, Op.SNOOZE: snooze, Op.RESOLVE: resolve}


def change(services: Services, op: Op, stall_id: int, user: str, *, source: str, days: int | None = None) -> Outcome:
    """Dispatch a change by its op (menus carry the op in their payload)."""
    if op not in CHANGES:
        raise BadRequest()
    if op == Op.SNOOZE:
        return snooze(services, stall_id, user, days, source=source)
    return CHANGES[op](services, stall_id, user, source=source)


def _change(services: Services, op: Op, stall_id: int, user: str, source: str, apply, told) -> Outcome:
    """Check, change, ack alerts and audit, in one transaction.

    One alert per account: the change applies to every live stall of the clicked stall's
    account (the reasons of its one alert), so "Resolve" on a ping resolves the alert, not
    one of its reasons. `apply(conn, stall_id, now)` changes one stall and says whether it
    did; `told(changed, row)` gives (text, audit action, audit detail) for the whole."""
    now = services.clock()
    with write_tx(services.engine) as conn:
        row, targets = alert_of(conn, services, op, stall_id, user)
        changed = [sid for sid in targets if apply(conn, sid, now)]
        text, action, detail = told(len(changed), row)
        for sid in changed:
            sql.ack_alerts(conn, sid, user, now)
            sql.audit(conn, now=now, actor=user, action=action, stall_id=sid, account_id=row.account_id,
                      source=source, detail=detail)
        if changed and stall_id not in changed:
            sql.ack_alerts(conn, stall_id, user, now)  # the ping sits on the clicked (lead) stall
    return Outcome(stall_id, bool(changed), text)


def alert_of(conn: Connection, services: Services, op: Op, stall_id: int, user: str):
    """The clicked stall's row and the live stalls of its account's alert, once `user` may
    perform `op` on it. NotFound: no such stall; AlreadyResolved: nothing of the alert is
    live; NotAllowed: the user may not (the owner, an assignee of any of its stalls, an admin may)."""
    row = sql.subject_of(conn, stall_id)
    if row is None:
        raise NotFound()
    live = sql.live_stalls_of(conn, row.account_id)
    if not live:
        raise AlreadyResolved(row.resolved_by, row.status)
    assignee = row.assignee or next((s.assignee for s in live if s.assignee), None)
    check(op, user, Subject(stall_id=row.id, owner_slack_id=row.owner_slack_id, assignee=assignee), services.admins)
    return row, [s.id for s in live]
