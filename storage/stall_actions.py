"""The SQL of what a user does to a stall (bot/stalls/actions.py): its permission facts, the
guarded changes and the audit row. Every change is guarded by `open_key IS NOT NULL` (only a
live stall changes), so a double click or a race changes nothing the second time; each
returns whether it changed a row."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, select, update

from storage.models import Account, Alert, AuditEntry, Stall

STALL = Stall.__table__
ACCOUNT = Account.__table__
ALERT = Alert.__table__
AUDIT = AuditEntry.__table__


def subject_of(conn: Connection, stall_id: int):
    """The stall's live facts for a permission check and a guarded change (None: no such stall)."""
    return conn.execute(
        select(STALL.c.id, STALL.c.account_id, STALL.c.rule, STALL.c.status, STALL.c.open_key, STALL.c.assignee,
               STALL.c.resolved_by, STALL.c.snoozed_until, STALL.c.snoozed_by, STALL.c.resolved_at, STALL.c.resolution,
               ACCOUNT.c.owner_slack_id)
        .select_from(STALL.outerjoin(ACCOUNT, ACCOUNT.c.id == STALL.c.account_id))
        .where(STALL.c.id == stall_id)).first()


def live_stalls_of(conn: Connection, account_id: str) -> list:
    """The account's live (open or snoozed) stalls: the reasons of its one alert, which every
    action on the alert applies to. Ranked as the ping lists them."""
    return list(conn.execute(
        select(STALL.c.id, STALL.c.assignee, STALL.c.status, STALL.c.rule)
        .where(STALL.c.account_id == account_id, STALL.c.open_key.is_not(None))
        .order_by(STALL.c.status != "open", STALL.c.priority, STALL.c.score.desc(), STALL.c.id)))


def _live(stall_id: int):
    return (STALL.c.id == stall_id) & STALL.c.open_key.is_not(None)


def assign(conn: Connection, stall_id: int, user: str, now: datetime) -> bool:
    """Assign the live stall to `user` (no change when it already is)."""
    return bool(conn.execute(update(STALL).where(_live(stall_id), STALL.c.assignee.is_(None) | (STALL.c.assignee != user))
                             .values(assignee=user, updated_at=now)).rowcount)


def snooze(conn: Connection, stall_id: int, user: str, until: datetime, now: datetime) -> bool:
    return bool(conn.execute(update(STALL).where(_live(stall_id)).values(
        status="snoozed", snoozed_until=until, snoozed_by=user, updated_at=now)).rowcount)


def resolve(conn: Connection, stall_id: int, user: str, resolution: str, now: datetime, *,
            kind: str | None = None, quiet_until: datetime | None = None, account_id: str | None = None,
            decision_key: str | None = None) -> bool:
    """Close the live stall. With `decision_key` (its "<account>|<rule>") the decision holds
    from now on (rules.decisions): an older decision of the same rule no longer does."""
    changed = bool(conn.execute(update(STALL).where(_live(stall_id)).values(
        status="resolved", open_key=None, resolved_at=now, resolved_by=user, resolution=resolution,
        resolution_kind=kind, quiet_until=quiet_until, decision_key=decision_key, updated_at=now)).rowcount)
    if changed and decision_key is not None:
        conn.execute(update(STALL).where(STALL.c.account_id == account_id, STALL.c.decision_key == decision_key,
                                         STALL.c.id != stall_id)
                     .values(decision_key=None))
    return changed


def ack_alerts(conn: Connection, stall_id: int, user: str, now: datetime) -> None:
    """Someone acted on the stall: its unacknowledged alerts are acknowledged (no reminders)."""
    conn.execute(update(ALERT).where(ALERT.c.stall_id == stall_id, ALERT.c.acked_at.is_(None))
                 .values(acked_by=user, acked_at=now, updated_at=now))


def audit(conn: Connection, *, now: datetime, actor: str, action: str, stall_id: int, account_id: str,
          source: str, detail: dict) -> int:
    """Write one audit row; its id."""
    return conn.execute(AUDIT.insert().values(at=now, actor=actor, action=action, stall_id=stall_id,
                                              account_id=account_id, source=source,
                                              detail=detail)).inserted_primary_key[0]


def owner_of(conn: Connection, account_id: str) -> str | None:
    """The Slack user id of the account's owner (None: unmapped or no such account)."""
    return conn.execute(select(ACCOUNT.c.owner_slack_id).where(ACCOUNT.c.id == account_id)).scalar()
