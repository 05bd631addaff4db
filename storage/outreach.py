"""What the recovery-email checks read from the database (the decisions are in rules/outreach.py).

`send_check` is called twice per email: when the CSM approves (in the approval transaction)
and by the mail sender right before it talks to SMTP (in the claim's transaction), so an
email never goes out on facts older than that moment.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, func, select

from rules.config import Outreach
from rules.outreach import Blocked, ContactFact, SendContext, send_blocker
from storage.models import Account, Contact, Draft, MailOutbox, Stall

ACCOUNT = Account.__table__
CONTACT = Contact.__table__
DRAFT = Draft.__table__
MAIL = MailOutbox.__table__
STALL = Stall.__table__

SENT, UNKNOWN = "sent", "unknown"  # bot.mail.outbox statuses


def contacts_of(conn: Connection, account_id: str) -> list[ContactFact]:
    rows = conn.execute(select(CONTACT).where(CONTACT.c.account_id == account_id).order_by(CONTACT.c.id))
    return [ContactFact(id=r.id, email=r.email, name=r.name, first_name=r.first_name,
                        unsubscribed=bool(r.unsubscribed), last_seen_at=r.last_seen_at, created_at=r.created_at)
            for r in rows]


def contact_id_for(conn: Connection, account_id: str, email: str) -> str | None:
    """The id of the account's contact with this address (case-insensitive), or None: the
    address is not a known contact of the account."""
    return conn.execute(select(CONTACT.c.id).where(
        CONTACT.c.account_id == account_id, func.lower(CONTACT.c.email) == email.strip().lower())
        .order_by(CONTACT.c.id).limit(1)).scalar()


def unsubscribed(conn: Connection, email: str) -> bool:
    """Whether any contact with this address (case-insensitive) opted out of email."""
    return bool(conn.execute(select(func.count()).select_from(CONTACT).where(
        func.lower(CONTACT.c.email) == email.strip().lower(), CONTACT.c.unsubscribed.is_(True))).scalar_one())


def last_email_to(conn: Connection, email: str, *, other_than_draft: int | None = None) -> datetime | None:
    """When a recovery email last reached this address (another draft's), if ever. One that
    may or may not have gone out (the sender died mid-delivery: "unknown") counts as sent."""
    stmt = select(func.max(func.coalesce(MAIL.c.sent_at, MAIL.c.claimed_at))).where(
        MAIL.c.status.in_((SENT, UNKNOWN)), func.lower(MAIL.c.recipient) == email.strip().lower())
    if other_than_draft is not None:
        stmt = stmt.where(MAIL.c.draft_id != other_than_draft)
    return conn.execute(stmt).scalar_one()


def send_context(conn: Connection, draft_id: int, *, recipient: str | None = None) -> SendContext | None:
    """The facts `rules.outreach.send_blocker` needs for this draft now (None: no such draft).
    `recipient` overrides the draft's (the address the CSM just typed in the modal)."""
    draft = conn.execute(select(DRAFT).where(DRAFT.c.id == draft_id)).first()
    if draft is None:
        return None
    stall = conn.execute(select(STALL).where(STALL.c.id == draft.stall_id)).first()
    lifecycle = conn.execute(select(ACCOUNT.c.status).where(ACCOUNT.c.id == draft.account_id)).scalar()
    address = (recipient if recipient is not None else draft.recipient) or None
    address = address.strip() if address else None
    return SendContext(
        recipient=address,
        recipient_unsubscribed=bool(address) and unsubscribed(conn, address),
        lifecycle=lifecycle,
        stall_status=stall.status if stall is not None else "resolved",
        stall_step=stall.step if stall is not None else None,
        draft_step=draft.step,
        stall_resolution=stall.resolution if stall is not None else "the stall was deleted",
        last_email_to_recipient_at=last_email_to(conn, address, other_than_draft=draft_id) if address else None,
        attempts=stall.recovery_attempts if stall is not None else 0,
        draft_attempt=draft.attempt,
    )


def send_check(conn: Connection, draft_id: int, now: datetime, outreach: Outreach, *,
               recipient: str | None = None) -> Blocked | None:
    """Why this draft must not be sent now, or None when it may."""
    ctx = send_context(conn, draft_id, recipient=recipient)
    if ctx is None:
        return Blocked("not_relevant", "the draft no longer exists")
    return send_blocker(ctx, now, outreach)
