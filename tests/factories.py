"""Builders for IncomingEvent batches, stored through the real storage path (store_events).

Times are explicit everywhere: tests pass a fixed `now` to store_events and to the scan.
"""

from __future__ import annotations

import itertools
from datetime import date, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Engine, select

from bot.ingest.records import IncomingEvent, TicketUpdate
from storage.ingest import StoreResult, store_events
from storage.models import Account, AuditEntry, Stall

UTC = timezone.utc
T0 = datetime(2026, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

ACCOUNT = Account.__table__
STALL = Stall.__table__
AUDIT = AuditEntry.__table__

# The packaged default journey (DESIGN.md "Interfaces").
SIGNED_UP = "Signed Up"
PROJECT = "Project Created"
INTEGRATION = "Integration Connected"
INVITE = "Invite Sent"
ACTIVATION = "Report Shared"
STEPS = (SIGNED_UP, PROJECT, INTEGRATION, INVITE)

_ids = itertools.count(1)


def _mid(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


def track(account: str, name: str, at: datetime, *, user: str | None = None,
          properties: dict[str, Any] | None = None, message_id: str | None = None) -> IncomingEvent:
    props = dict(properties or {})
    if name == SIGNED_UP:
        props.setdefault("plan", "pro")  # the default schema requires it
    return IncomingEvent(
        source="segment", message_id=message_id or _mid("trk"), kind="track", name=name, occurred_at=at,
        account_id=account, contact_id=user or f"{account}-user", properties=props,
    )


def group(account: str, at: datetime, **traits: Any) -> IncomingEvent:
    """A Segment group call setting account facts (name, arr, plan, owner_email, renewal_date...)."""
    traits.setdefault("name", account.title())
    return IncomingEvent(
        source="segment", message_id=_mid("grp"), kind="group", name=None, occurred_at=at,
        account_id=account, contact_id=None, account_traits=traits,
    )


def stripe(account: str, at: datetime, *, lifecycle: str | None = None,
           payment_failed: bool | None = None, kind: str = "customer.subscription.updated",
           traits: dict[str, Any] | None = None) -> IncomingEvent:
    return IncomingEvent(
        source="stripe", message_id=_mid("evt"), kind="stripe", name=kind, occurred_at=at, account_id=account,
        contact_id=None, lifecycle=lifecycle, payment_failed=payment_failed, account_traits=traits,
    )


def ticket(account: str, at: datetime, ticket_id: str, *, status: str = "open", priority: str | None = None,
           topic: str | None = None, created_at: datetime | None = None) -> IncomingEvent:
    return IncomingEvent(
        source="tickets", message_id=_mid("tkt"), kind="ticket", name=f"ticket {status}", occurred_at=at,
        account_id=account, contact_id=None,
        ticket=TicketUpdate(id=ticket_id, status=status, created_at=created_at or at, topic=topic,
                            subject=f"ticket {ticket_id}", priority=priority),
    )


def signup(account: str, at: datetime, *, arr: float | None = None, **traits: Any) -> list[IncomingEvent]:
    """An account that signed up at `at` (and, with `arr`, whose ARR is known)."""
    events = []
    if arr is not None or traits:
        if arr is not None:
            traits["arr"] = arr
        events.append(group(account, at, **traits))
    events.append(track(account, SIGNED_UP, at))
    return events


def activated(account: str, at: datetime, *, arr: float | None = None, **traits: Any) -> list[IncomingEvent]:
    """An account that did every step and activated, all at `at`."""
    return signup(account, at, arr=arr, **traits) + [
        track(account, name, at) for name in (PROJECT, INTEGRATION, INVITE, ACTIVATION)
    ]


def store(engine: Engine, rules, events: list[IncomingEvent], now: datetime) -> StoreResult:
    return store_events(engine, events, rules, now)


# ------------------------------------------------------------------ reading back


def stalls(engine: Engine, account: str | None = None, rule: str | None = None) -> list:
    stmt = select(STALL).order_by(STALL.c.id)
    if account is not None:
        stmt = stmt.where(STALL.c.account_id == account)
    if rule is not None:
        stmt = stmt.where(STALL.c.rule == rule)
    with engine.connect() as conn:
        return list(conn.execute(stmt))


def live_stalls(engine: Engine, account: str | None = None) -> list:
    return [s for s in stalls(engine, account) if s.open_key is not None]


def account_row(engine: Engine, account: str):
    with engine.connect() as conn:
        return conn.execute(select(ACCOUNT).where(ACCOUNT.c.id == account)).one()


def audits(engine: Engine, stall_id: int) -> list:
    with engine.connect() as conn:
        return list(conn.execute(select(AUDIT).where(AUDIT.c.stall_id == stall_id).order_by(AUDIT.c.id)))


def days_before(now: datetime, n: int) -> datetime:
    """Noon UTC `n` calendar days before `now`'s date."""
    day: date = now.date() - timedelta(days=n)
    return datetime(day.year, day.month, day.day, 12, tzinfo=UTC)


def identify(account: str, user: str, at: datetime, **traits: Any) -> IncomingEvent:
    """A Segment identify call: the contact `user` of `account` (email, first_name, unsubscribed...)."""
    return IncomingEvent(
        source="segment", message_id=_mid("idt"), kind="identify", name=None, occurred_at=at,
        account_id=account, contact_id=user, contact_traits=traits,
    )


def ticket_text(account: str, at: datetime, ticket_id: str, *, subject: str, body: str,
                topic: str | None = None) -> IncomingEvent:
    """A ticket carrying the customer's own words."""
    return IncomingEvent(
        source="tickets", message_id=_mid("tkt"), kind="ticket", name="ticket open", occurred_at=at,
        account_id=account, contact_id=None,
        ticket=TicketUpdate(id=ticket_id, status="open", created_at=at, topic=topic, subject=subject, body=body),
    )
