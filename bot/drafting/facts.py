"""The facts a recovery draft is written from, read from the database for one stall.

`load_facts(conn, stall_id, rules, now)` reads the stall, its account, the account's contacts
(the recipient is `rules.outreach.pick_recipient`'s choice) and its recent tickets, and maps
step events to the display names of the rules file. Everything after this is pure.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from sqlalchemy import Connection, case, select

from rules.config import Rules
from rules.draft_text import CLOSED_TICKET, DraftFacts, DraftTicket
from rules.outreach import first_name, pick_recipient
from storage.models import Account, Stall, Ticket
from storage.outreach import contacts_of

ACCOUNT = Account.__table__
STALL = Stall.__table__
TICKET = Ticket.__table__

UTC = timezone.utc
TICKET_WINDOW = timedelta(days=30)
MAX_TICKETS = 5

# Mailbox names that are a team, not a person: no "Best, Support" sign-off.
_ROLE_MAILBOXES = frozenset({
    "support", "success", "cs", "csm", "team", "hello", "hi", "info", "help", "admin", "sales", "accounts",
    "account", "billing", "noreply", "no", "contact", "customers", "customer", "care", "onboarding", "ops",
    "service", "office", "mail", "am", "tam", "rep",
})


def csm_name(owner_email: str | None) -> str | None:
    """The CSM's first name from their email address: "jane.doe@x" -> "Jane"; None for team
    mailboxes ("support@x") and addresses that do not start with a name."""
    if not owner_email or "@" not in owner_email:
        return None
    local = owner_email.split("@", 1)[0].split("+", 1)[0]
    first = re.split(r"[._\-]", local, maxsplit=1)[0]
    if len(first) < 2 or not first.isalpha() or first.lower() in _ROLE_MAILBOXES:
        return None
    return first[:1].upper() + first[1:].lower()


def _time(value) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def load_facts(conn: Connection, stall_id: int, rules: Rules, now: datetime) -> DraftFacts | None:
    """Everything a draft for this stall may say, or None when there is no such stall."""
    stall = conn.execute(select(STALL).where(STALL.c.id == stall_id)).first()
    if stall is None:
        return None
    account = conn.execute(select(ACCOUNT).where(ACCOUNT.c.id == stall.account_id)).first()

    steps = (account.steps if account is not None else None) or {}
    done: list[tuple[str, datetime | None]] = []
    missing: list[str] = []
    for step in rules.journey.steps:
        at = _time(steps.get(step.event))
        if step.event in steps:
            done.append((step.name, at))
        else:
            missing.append(step.name)
    stalled_step = None
    if stall.step:
        known = rules.journey.step(stall.step)
        stalled_step = known.name if known is not None else stall.step

    owner_email = account.owner_email if account is not None else None
    recipient = pick_recipient(contacts_of(conn, stall.account_id), owner_email=owner_email)

    is_open = case((TICKET.c.status.in_(CLOSED_TICKET), 1), else_=0)
    rows = conn.execute(
        select(TICKET.c.topic, TICKET.c.subject, TICKET.c.body, TICKET.c.status, TICKET.c.created_at)
        .where(TICKET.c.account_id == stall.account_id, TICKET.c.created_at >= now - TICKET_WINDOW,
               TICKET.c.created_at <= now)
        .order_by(is_open, TICKET.c.created_at.desc(), TICKET.c.id)
        .limit(MAX_TICKETS)
    ).all()
    tickets = [DraftTicket(r.topic, r.subject, r.body, r.status or "open", _time(r.created_at)) for r in rows]

    since = _time(stall.stalled_since)
    days = max((now - since).total_seconds() / 86400, 0.0) if since is not None else 0.0
    return DraftFacts(
        account_name=(account.name if account is not None and account.name else stall.account_id),
        track=account.track if account is not None else "standard",
        stage=stall.stage or (account.stage if account is not None else ""),
        plan=account.plan if account is not None else None,
        arr=float(account.arr or 0) if account is not None else 0.0,
        contact_first_name=first_name(recipient),
        recipient_email=recipient.email if recipient is not None else None,
        recipient_contact_id=recipient.id if recipient is not None else None,
        steps_done=tuple(done),
        steps_missing=tuple(missing),
        stalled_step=stalled_step,
        rule=stall.rule,
        detail=stall.detail or "",
        days_stalled=days,
        last_seen_at=_time(account.last_seen_at) if account is not None else None,
        tickets=tuple(tickets),
        csm_name=csm_name(owner_email),
        own_emails=(owner_email,) if owner_email else (),
        help_url=rules.outreach.help_url,
        booking_url=rules.outreach.booking_url,
        attempt=(stall.recovery_attempts or 0) + 1,
        now=now,
        stall_id=stall.id,
    )
