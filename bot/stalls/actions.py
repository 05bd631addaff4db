"""Use-cases on a stall's alert: assign (to oneself or to someone else), snooze, resolve, view.

One alert per account: a change applies to every live stall of the account (the reasons its
ping lists). Each change is one write transaction: load the stall (NotFound; AlreadyResolved
when nothing of its alert is live), check the permission (bot.stalls.permissions), make the
guarded changes (only a live stall changes, so a double click or a race is harmless),
acknowledge the alerts and write an AuditEntry per stall changed. Nothing changes when any step refuses. How the result is shown (which
messages are re-rendered) is the caller's business.

Who may: bot.stalls.permissions, with the admins and the CS team (`services.team`, which may
read a Slack user group) resolved before the write transaction opens. Visibility (`view`,
`view_account`, `sees_every_account`) is the one rule for every surface that shows accounts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import Connection

from bot.stalls.context import Services
from bot.stalls.errors import AlreadyResolved, BadRequest, NotFound
from bot.stalls import permissions
from bot.stalls.permissions import Op, Subject, check
from rules import decisions
from rules.reconcile import stall_open_key
from storage import stall_actions as sql
from storage.db import write_tx

DEFAULT_SNOOZE_DAYS = 1
RESOLUTION = "Resolved in Slack"


@dataclass(frozen=True)
class Outcome:
    stall_id: int
    changed: bool
    text: str  # what the user is told when there is no message showing the change
    # What someone else had done to the alert that this change replaced (the clicker may have
    # seen a stale message): the adapter tells them.
    before: "Before | None" = None


@dataclass(frozen=True)
class Before:
    """Someone else's assignment or snooze that a change replaced."""

    what: str  # "assigned" (to `by`) | "snoozed" (by `by`, until `until`)
    by: str
    until: datetime | None = None


def before_of(row, op: Op, user: str) -> Before | None:
    """Someone else's assignment (for an assignment) or snooze (for a snooze) of the clicked
    stall, which the change replaces."""
    if op in (Op.ASSIGN, Op.REASSIGN) and row.assignee and row.assignee != user:
        return Before("assigned", row.assignee)
    if op == Op.SNOOZE and row.status == "snoozed" and row.snoozed_by and row.snoozed_by != user:
        return Before("snoozed", row.snoozed_by, row.snoozed_until)
    return None


@dataclass(frozen=True)
class Assigned:
    """An assignment to someone other than the actor, recorded: what its notice needs."""

    actor: str
    assignee: str
    stall_id: int  # the clicked (lead) stall
    account_id: str
    audit_id: int  # the assignment's first audit row: the notice's idempotency key
    at: datetime


# Called inside the assignment's transaction (the Slack adapter queues the assignee's DM in
# its outbox there, so the DM exists exactly when the assignment does).
Notify = Callable[[object, Assigned], None]


def subject(row) -> Subject:
    return Subject(stall_id=row.id, owner_slack_id=row.owner_slack_id, assignee=row.assignee)


def checked(conn: Connection, services: Services, op: Op, stall_id: int, user: str, *, live: bool = True,
            team: frozenset[str] | None = None):
    """The stall's row once `user` may perform `op` on it. NotFound when there is no such stall;
    AlreadyResolved when `live` and it is closed; NotAllowed when the user may not."""
    row = sql.subject_of(conn, stall_id)
    if row is None:
        raise NotFound()
    if live and row.open_key is None:
        raise AlreadyResolved(row.resolved_by, row.status)
    check(op, user, subject(row), services.admins, services.team if team is None else team)
    return row


def assign(services: Services, stall_id: int, user: str, *, source: str, assignee: str | None = None,
           notify: Notify | None = None) -> Outcome:
    """Assign the account's alert to `assignee` (default: the acting `user`, Op.ASSIGN; someone
    else: Op.REASSIGN). An assignment to someone else is audited with both and `notify` is
    called once, in the transaction, when it changed anything (a double click changes nothing)."""
    assignee = assignee or user
    to_self = assignee == user
    first_audit: list[int] = []

    def apply(conn, sid, now):
        return sql.assign(conn, sid, assignee, now)

    def told(changed: int, row) -> tuple[str, str, dict]:
        if to_self:
            text = "Assigned to you." if changed else "It is already assigned to you."
        else:
            text = "Assigned." if changed else "It is already assigned to that person."
        detail = {"assignee": assignee, "previous": row.assignee}
        return text, "stall.assign", detail if to_self else {**detail, "by": user}

    def audited(conn, row, audit_id: int, now) -> None:
        if first_audit:
            return
        first_audit.append(audit_id)
        if notify is not None and not to_self:
            notify(conn, Assigned(actor=user, assignee=assignee, stall_id=stall_id, account_id=row.account_id,
                                  audit_id=audit_id, at=now))

    return _change(services, Op.ASSIGN if to_self else Op.REASSIGN, stall_id, user, source, apply, told,
                   audited=audited)


def snooze(services: Services, stall_id: int, user: str, days: int | None = None, *, source: str,
           until: date | None = None) -> Outcome:
    """Snooze the alert for `days` (1 to 30) or until the start of `until` (a date after today,
    at most 30 days ahead). BadRequest past 30 days or in the past."""
    length = None if until is not None else days or DEFAULT_SNOOZE_DAYS
    if length is not None and not 1 <= length <= decisions.MAX_SNOOZE_DAYS:
        raise BadRequest(f"A snooze lasts 1 to {decisions.MAX_SNOOZE_DAYS} days.")
    if until is not None:
        refused = decisions.check_until(until, services.clock(), decisions.MAX_SNOOZE_DAYS)
        if refused:
            raise BadRequest(f"Cannot snooze until {until:%Y-%m-%d}: {refused[0].lower()}{refused[1:]}")
    ended = [None]

    def apply(conn, sid, now):
        ended[0] = decisions.quiet_until(until) if until is not None else now + timedelta(days=length)
        return sql.snooze(conn, sid, user, ended[0], now)

    def told(changed: int, row) -> tuple[str, str, dict]:
        text = (f"Snoozed until {until:%Y-%m-%d}." if until is not None
                else f"Snoozed for {length} day{'s' if length != 1 else ''}.")
        return text, "stall.snooze", {"days": length, "until": ended[0].isoformat() if ended[0] else None}

    return _change(services, Op.SNOOZE, stall_id, user, source, apply, told)


def resolve(services: Services, stall_id: int, user: str, *, source: str, reason: str | None = None,
            until: date | None = None, note: str | None = None) -> Outcome:
    """Close the alert (every live stall of the account). With a `reason` (rules.decisions:
    handled, false_positive, known with `until`, a date after today at most 90 days ahead)
    the decision is stored on each stall and lasts: the same condition does not reopen it
    (rules/decisions.py). `note`: an optional word on why, kept with it. BadRequest when the
    reason, the date or the note does not fit."""
    note = " ".join((note or "").split()) or None
    if reason is not None and reason not in decisions.KINDS:
        raise BadRequest("Pick why it is resolved.")
    if note is not None and len(note) > decisions.NOTE_MAX:
        raise BadRequest(f"The note is at most {decisions.NOTE_MAX} characters.")
    quiet = None
    if reason == decisions.KNOWN:
        if until is None:
            raise BadRequest("Pick the date until which it stays quiet.")
        refused = decisions.check_until(until, services.clock(), decisions.MAX_QUIET_DAYS)
        if refused:
            raise BadRequest(refused)
        quiet = decisions.quiet_until(until)
    resolution = decisions.describe(reason, note, quiet) if reason else RESOLUTION

    def apply(conn, sid, now):
        if reason is None:
            return sql.resolve(conn, sid, user, RESOLUTION, now)
        stall = sql.subject_of(conn, sid)
        return sql.resolve(conn, sid, user, resolution, now, kind=reason, quiet_until=quiet,
                           account_id=stall.account_id, decision_key=stall_open_key(stall.account_id, stall.rule))

    def told(changed: int, row) -> tuple[str, str, dict]:
        if not changed:
            # Someone closed them between our read and our write (PostgreSQL: no lock was held);
            # `row` is the stall as they left it.
            raise AlreadyResolved(row.resolved_by, row.status, at=row.resolved_at, resolution=row.resolution,
                                  now=services.clock())
        detail = {} if reason is None else {"reason": reason, "note": note,
                                            "quiet_until": quiet.isoformat() if quiet else None}
        # The note is not repeated here: this text is shown as is, the ping shows it escaped.
        return (f"Resolved ({decisions.LABELS[reason]})." if reason else "Resolved."), "stall.resolve", detail

    return _change(services, Op.RESOLVE, stall_id, user, source, apply, told)


def may(services: Services, op: Op, stall_id: int, user: str) -> None:
    """Raise (NotFound, AlreadyResolved, NotAllowed) unless `user` may perform `op` on the
    stall's alert now: a check before asking for more (e.g. before the picker opens)."""
    team = services.team
    with services.engine.connect() as conn:
        alert_of(conn, services, op, stall_id, user, team=team)


def view(services: Services, stall_id: int, user: str) -> str:
    """The account id of the stall, once `user` may view its account (a closed stall too):
    exactly `view_account`'s rule, so "View journey" and `/journey` never disagree."""
    with services.engine.connect() as conn:
        row = sql.subject_of(conn, stall_id)
    if row is None:
        raise NotFound()
    view_account(services, row.account_id, user)
    return row.account_id


def view_account(services: Services, account_id: str, user: str) -> None:
    """Raise NotAllowed unless `user` may see the account (its journey, its rows): its owner,
    the assignee of its alert, a CS team member or an admin."""
    team = services.team
    if permissions.sees_every_account(user, services.admins, team):
        return
    with services.engine.connect() as conn:
        check(Op.VIEW, user, account_subject(conn, account_id), services.admins, team)


def visible_accounts(services: Services, account_ids: list[str], user: str) -> list[str]:
    """Those of `account_ids` that `user` may see, in order (e.g. "did you mean" suggestions)."""
    team = services.team
    if permissions.sees_every_account(user, services.admins, team):
        return list(account_ids)
    with services.engine.connect() as conn:
        return [a for a in account_ids
                if permissions.allowed(Op.VIEW, user, account_subject(conn, a), services.admins, team)]


def sees_every_account(services: Services, user: str) -> bool:
    """Whether lists may show `user` every account (CS team, admins), or only their own."""
    return permissions.sees_every_account(user, services.admins, services.team)


def account_subject(conn: Connection, account_id: str) -> Subject:
    """The account as a permission subject: its owner, and its alert's assignee (that of its
    live stalls, as `alert_of` reads it)."""
    live = sql.live_stalls_of(conn, account_id)
    assignee = next((s.assignee for s in live if s.assignee), None)
    return Subject(stall_id=None, owner_slack_id=sql.owner_of(conn, account_id), assignee=assignee)


CHANGES = {Op.ASSIGN: assign, Op.SNOOZE: snooze, Op.RESOLVE: resolve}


def change(services: Services, op: Op, stall_id: int, user: str, *, source: str,
           days: int | None = None) -> Outcome:  # a resolve asks why first (a modal): `resolve`
    """Dispatch a change by its op (menus carry the op in their payload)."""
    if op not in CHANGES:
        raise BadRequest()
    if op == Op.SNOOZE:
        return snooze(services, stall_id, user, days, source=source)
    return CHANGES[op](services, stall_id, user, source=source)


def _change(services: Services, op: Op, stall_id: int, user: str, source: str, apply, told,
            audited=None) -> Outcome:
    """Check, change, ack alerts and audit, in one transaction.

    One alert per account: the change applies to every live stall of the clicked stall's
    account (the reasons of its one alert), so "Resolve" on a ping resolves the alert, not
    one of its reasons. `apply(conn, stall_id, now)` changes one stall and says whether it
    did; `told(changed, row)` gives (text, audit action, audit detail) for the whole;
    `audited(conn, row, audit_id, now)` is called after each audit row."""
    team = services.team  # before the transaction: it may wait for Slack
    now = services.clock()
    with write_tx(services.engine) as conn:
        row, targets = alert_of(conn, services, op, stall_id, user, team=team)
        changed = [sid for sid in targets if apply(conn, sid, now)]
        if not changed:
            # Another change won the race (PostgreSQL: our guarded UPDATE waited for it, then
            # matched nothing): say what it did, as now committed.
            row = sql.subject_of(conn, stall_id) or row
        text, action, detail = told(len(changed), row)
        for sid in changed:
            sql.ack_alerts(conn, sid, user, now)
            audit_id = sql.audit(conn, now=now, actor=user, action=action, stall_id=sid,
                                 account_id=row.account_id, source=source, detail=detail)
            if audited is not None:
                audited(conn, row, audit_id, now)
        if changed and stall_id not in changed:
            sql.ack_alerts(conn, stall_id, user, now)  # the ping sits on the clicked (lead) stall
    return Outcome(stall_id, bool(changed), text, before_of(row, op, user) if changed else None)


def alert_of(conn: Connection, services: Services, op: Op, stall_id: int, user: str, *,
             team: frozenset[str] | None = None):
    """The clicked stall's row and the live stalls of its account's alert, once `user` may
    perform `op` on it. NotFound: no such stall; AlreadyResolved: nothing of the alert is
    live; NotAllowed: the user may not (the owner, an assignee of any of its stalls, a CS team
    member, an admin may). `team`: the CS team as resolved before the transaction."""
    row = sql.subject_of(conn, stall_id)
    if row is None:
        raise NotFound()
    live = sql.live_stalls_of(conn, row.account_id)
    if not live:
        # Read again: on PostgreSQL each statement sees what was committed when it began, so the
        # row read above may predate the resolve that emptied the alert.
        row = sql.subject_of(conn, stall_id) or row
        raise AlreadyResolved(row.resolved_by, row.status, at=row.resolved_at, resolution=row.resolution,
                              now=services.clock())
    assignee = row.assignee or next((s.assignee for s in live if s.assignee), None)
    check(op, user, Subject(stall_id=row.id, owner_slack_id=row.owner_slack_id, assignee=assignee), services.admins,
          services.team if team is None else team)
    return row, [s.id for s in live]
