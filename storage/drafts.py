"""The SQL of the recovery-email drafts (bot/stalls/drafts.py). Every change of a draft is
guarded by its status (a double click or a second process finds it changed and changes
nothing); each returns whether it changed the row."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, select, update

from storage.models import Account, Draft, Stall

DRAFT = Draft.__table__
STALL = Stall.__table__
ACCOUNT = Account.__table__
EDITABLE = ("drafting", "drafted")


def get(conn: Connection, draft_id: int):
    return conn.execute(select(DRAFT).where(DRAFT.c.id == draft_id)).first()


def stall_to_draft(conn: Connection, stall_id: int):
    """The stall with its account's lifecycle status (`lifecycle`), or None."""
    return conn.execute(select(STALL, ACCOUNT.c.status.label("lifecycle"))
                        .select_from(STALL.outerjoin(ACCOUNT, ACCOUNT.c.id == STALL.c.account_id))
                        .where(STALL.c.id == stall_id)).first()


def form_facts(conn: Connection, stall_id: int):
    """What the form shows about the stall: why, detail and the account's name (or None)."""
    return conn.execute(select(STALL.c.why, STALL.c.detail, ACCOUNT.c.name)
                        .select_from(STALL.outerjoin(ACCOUNT, ACCOUNT.c.id == STALL.c.account_id))
                        .where(STALL.c.id == stall_id)).first()


def insert_drafting(conn: Connection, stall, user: str, view_id: str | None, now: datetime) -> int:
    """A new draft for the stall's next recovery attempt, still being written."""
    return conn.execute(DRAFT.insert().values(
        stall_id=stall.id, account_id=stall.account_id, rule=stall.rule, step=stall.step,
        attempt=stall.recovery_attempts + 1, status="drafting", created_by=user, view_id=view_id,
        created_at=now, updated_at=now,
    ).returning(DRAFT.c.id)).scalar_one()


def set_text(conn: Connection, draft_id: int, *, subject: str, body: str, source: str, note: str | None,
             recipient: str | None, contact_id, now: datetime) -> bool:
    """The written (or rewritten) text, unless the draft was discarded or approved meanwhile."""
    return bool(conn.execute(update(DRAFT).where(DRAFT.c.id == draft_id, DRAFT.c.status.in_(EDITABLE)).values(
        status="drafted", subject=subject, body=body, generated_subject=subject, generated_body=body,
        source=source, note=note, recipient=recipient, contact_id=contact_id, updated_at=now)).rowcount)


def discard(conn: Connection, draft_id: int, now: datetime) -> bool:
    return bool(conn.execute(update(DRAFT).where(DRAFT.c.id == draft_id, DRAFT.c.status.in_(EDITABLE))
                             .values(status="discarded", updated_at=now)).rowcount)


def block(conn: Connection, draft_id: int, reason: str, now: datetime) -> bool:
    return bool(conn.execute(update(DRAFT).where(DRAFT.c.id == draft_id, DRAFT.c.status == "drafted")
                             .values(status="blocked", blocked_reason=reason, updated_at=now)).rowcount)


def approve(conn: Connection, draft_id: int, *, user: str, recipient: str, contact_id, subject: str, body: str,
            now: datetime) -> bool:
    return bool(conn.execute(update(DRAFT).where(DRAFT.c.id == draft_id, DRAFT.c.status == "drafted").values(
        status="approved", recipient=recipient, contact_id=contact_id, subject=subject, body=body,
        approved_by=user, approved_at=now, updated_at=now)).rowcount)


# --- the mail outcome (bot/mail/outbox.py, after SMTP answered) ----------------------------------

def record_sent(conn: Connection, draft_id: int, sent_at: datetime):
    """The draft was delivered: it is "sent", and its stall counts the recovery attempt (once
    per draft: a stall that already counts this attempt is left alone). Returns the draft row
    as it was before (None if it is gone)."""
    draft = get(conn, draft_id)
    conn.execute(update(DRAFT).where(DRAFT.c.id == draft_id).values(
        status="sent", sent_at=sent_at, blocked_reason=None, updated_at=sent_at))
    if draft is not None:
        conn.execute(update(STALL).where(STALL.c.id == draft.stall_id, STALL.c.recovery_attempts < draft.attempt)
                     .values(recovery_attempts=STALL.c.recovery_attempts + 1, last_recovery_at=sent_at,
                             updated_at=sent_at))
    return draft


def record_not_sent(conn: Connection, draft_id: int, reason: str, now: datetime) -> bool:
    """The approved draft did not go out (blocked by a check, refused, or unknown): it shows why."""
    return bool(conn.execute(update(DRAFT).where(DRAFT.c.id == draft_id, DRAFT.c.status.in_(("approved", "blocked")))
                             .values(status="blocked", blocked_reason=reason[:500], updated_at=now)).rowcount)
