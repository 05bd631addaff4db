"""Use-cases on a stall: assign, snooze, resolve, view.

Each change is one write transaction: load the stall (NotFound; AlreadyResolved when it is
closed), check the permission (bot.stalls.permissions), make the guarded change (only a live
stall changes, so a double click or a race is harmless), acknowledge the stall's alerts and
write the AuditEntry. Nothing changes when any step refuses. How the result is shown (which
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
    def apply(conn, row, now):
        changed = sql.assign(conn, stall_id, user, now)
        text = "Assigned to you." if changed else "It is already assigned to you."
        return changed, text, "stall.assign", {"assignee": user, "previous": row.assignee}

    return _change(services, Op.ASSIGN, stall_id, user, source, apply)


def snooze(services: Services, stall_id: int, user: str, days: int | None = None, *, source: str) -> Outcome:
    days = days or DEFAULT_SNOOZE_DAYS

    def apply(conn, row, now):
        until = now + timedelta(days=days)
        changed = sql.snooze(conn, stall_id, user, until, now)
        text = f"Snoozed for {days} day{'s' if days != 1 else ''}."
        return changed, text, "stall.snooze", {"days": days, "until": until.isoformat()}

    return _change(services, Op.SNOOZE, stall_id, user, source, apply)


def resolve(services: Services, stall_id: int, user: str, *, source: str) -> Outcome:
    def apply(conn, row, now):
        if not sql.resolve(conn, stall_id, user, RESOLUTION, now):
            # Someone closed it between our read and our write (PostgreSQL: no lock was held).
            row = sql.subject_of(conn, stall_id)
            raise AlreadyResolved(row.resolved_by if row else None, row.status if row else "resolved")
        return True, "Resolved.", "stall.resolve", {}

    return _change(services, Op.RESOLVE, stall_id, user, source, apply)


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


def _change(services: Services, op: Op, stall_id: int, user: str, source: str, apply) -> Outcome:
    """Check, change, ack alerts and audit, in one transaction. `apply(conn, row, now)` makes
    the change and returns (changed, text, audit action, audit detail)."""
    now = services.clock()
    with write_tx(services.engine) as conn:
        row = checked(conn, services, op, stall_id, user)
        changed, text, action, detail = apply(conn, row, now)
        if changed:
            sql.ack_alerts(conn, stall_id, user, now)
            sql.audit(conn, now=now, actor=user, action=action, stall_id=stall_id, account_id=row.account_id,
                      source=source, detail=detail)
    return Outcome(stall_id, changed, text)
