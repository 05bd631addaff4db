"""Recovery emails, from the CSM's click to the mail outbox (issue 4). Blocking functions,
called from the Slack listeners (bot/slack/listeners/drafts.py) through threads.

    click "Draft recovery email"  ->  start_draft  (Draft row "drafting", audit)
                                  ->  write_draft  (facts -> LLM or template -> Draft "drafted")
    Regenerate                    ->  write_draft again (audit "draft.regenerated")
    Discard                       ->  discard      (Draft "discarded")
    Approve & send (the submit)   ->  approve      (checks, Draft "approved", mail outbox row,
                                                    audit with how much the CSM edited: ONE
                                                    transaction)
    the mail sender (bot/mail)    ->  mail_outcome (pings show "sent by @csm", or the CSM is
                                                    told why it was blocked)

Every change is guarded by the draft's status (a double click or a second process finds it
changed and does nothing) and checked against the permission table (bot.slack.permissions).
The send checks (`storage.outreach.send_check`) run at approval, in the approval's
transaction, and again in the sender right before SMTP.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from rapidfuzz.distance import Levenshtein
from sqlalchemy import Connection, select, update

from bot.slack import queries
from bot.slack.render.codec import Action
from bot.slack.draft_views import BODY, NEW_CONTACT, RECIPIENT, SUBJECT, DraftForm
from bot.slack.outbox import enqueue
from bot.slack.text import md
from bot.slack.router import alert_key, is_ping
from bot.stalls import views
from bot.stalls.errors import AlreadyResolved, CannotDraft, NotFound, StallwatchError
from bot.stalls.permissions import Op, check
from rules.outreach import NO_EMAIL_LIFECYCLE, address_problem, recipient_problem
from storage.db import read_tx, utcnow, write_tx
from storage.models import Account, Alert, AuditEntry, Draft, Stall
from storage.outreach import contact_id_for, send_check

log = logging.getLogger(__name__)

DRAFT = Draft.__table__
STALL = Stall.__table__
ACCOUNT = Account.__table__
ALERT = Alert.__table__
AUDIT = AuditEntry.__table__

# Blocks the CSM can fix in the modal (another recipient, later): shown on the recipient field.
RECIPIENT_BLOCKS = ("no_recipient", "bad_recipient", "unsubscribed", "too_soon")
OPS = {Action.DRAFT: Op.DRAFT, Action.DRAFT_REGENERATE: Op.REGENERATE, Action.DRAFT_DISCARD: Op.DISCARD,
       Action.DRAFT_APPROVE: Op.APPROVE}


@dataclass(frozen=True)
class Approval:
    """What the approval modal shows next: field errors (the modal stays open), or a notice."""

    errors: dict[str, str] | None = None
    notice: str | None = None
    detail: str | None = None
    approved: bool = False
    stall_id: int | None = None


# --- drafting ---------------------------------------------------------------------------------

def _subject(conn: Connection, stall_id: int, user: str, action: Action, admins):
    row = queries.subject_of(conn, stall_id)
    if row is None:
        raise NotFound()
    if row.open_key is None:
        raise AlreadyResolved(row.resolved_by, row.status)
    check(OPS[action], user, queries.as_subject(row), admins)
    return row


def start_draft(d, stall_id: int, user: str, *, view_id: str | None, now: datetime | None = None) -> int:
    """Check that `user` may draft for this live stall and that an email could go out at all;
    store the Draft as "drafting". Raises a StallwatchError to show instead."""
    now = now or utcnow()
    with write_tx(d.engine) as conn:
        _subject(conn, stall_id, user, Action.DRAFT, d.admins)
        stall = conn.execute(select(STALL).where(STALL.c.id == stall_id)).one()
        lifecycle = conn.execute(select(ACCOUNT.c.status).where(ACCOUNT.c.id == stall.account_id)).scalar()
        if lifecycle in NO_EMAIL_LIFECYCLE:
            raise CannotDraft(f"No recovery email: {NO_EMAIL_LIFECYCLE[lifecycle]}.")
        limit = d.rules.outreach.max_recovery_attempts
        if stall.recovery_attempts >= limit:
            raise CannotDraft(f"{stall.recovery_attempts} recovery emails already went out for this stall (the "
                              f"limit is {limit}): it is a win-back handoff for the managers now.")
        draft_id = conn.execute(DRAFT.insert().values(
            stall_id=stall_id, account_id=stall.account_id, rule=stall.rule, step=stall.step,
            attempt=stall.recovery_attempts + 1, status="drafting", created_by=user, view_id=view_id,
            created_at=now, updated_at=now,
        ).returning(DRAFT.c.id)).scalar_one()
        _audit(conn, now, user, "draft.requested", stall_id, stall.account_id, Action.DRAFT,
               {"draft_id": draft_id, "attempt": stall.recovery_attempts + 1})
    return draft_id


def write_draft(d, draft_id: int, user: str, *, regenerate: bool = False, now: datetime | None = None) -> DraftForm:
    """Write the draft's text (the LLM, or the template when it cannot) and return the form.
    Slow (the LLM; the drafter caps it): never call it on the event loop."""
    from bot.drafting.facts import load_facts
    from bot.drafting.llm import Drafter

    now = now or utcnow()
    with read_tx(d.engine) as conn:
        draft = _draft(conn, draft_id)
        if regenerate:
            _subject(conn, draft.stall_id, user, Action.DRAFT_REGENERATE, d.admins)
        if draft.status not in ("drafting", "drafted"):
            raise StallwatchError(_status_text(draft))
        facts = load_facts(conn, draft.stall_id, d.rules, now)
    if facts is None:
        raise NotFound()
    result = Drafter(d.settings, d.rules.outreach).draft(facts)
    with write_tx(d.engine) as conn:
        changed = conn.execute(update(DRAFT).where(DRAFT.c.id == draft_id, DRAFT.c.status.in_(("drafting", "drafted")))
                               .values(status="drafted", subject=result.subject, body=result.body,
                                       generated_subject=result.subject, generated_body=result.body,
                                       source=result.source, note=result.note,
                                       recipient=facts.recipient_email, contact_id=facts.recipient_contact_id,
                                       updated_at=utcnow())).rowcount
        draft = _draft(conn, draft_id)
        if not changed:  # discarded or approved meanwhile (another click)
            raise StallwatchError(_status_text(draft))
        _audit(conn, utcnow(), user, "draft.regenerated" if regenerate else "draft.created", draft.stall_id,
               draft.account_id, Action.DRAFT_REGENERATE if regenerate else Action.DRAFT,
               {"draft_id": draft_id, "source": result.source, "note": result.note,
                "subject": result.subject, "body": result.body, "recipient": facts.recipient_email})
        return form_of(conn, d, draft_id, now)


def form_of(conn: Connection, d, draft_id: int, now: datetime) -> DraftForm:
    draft = _draft(conn, draft_id)
    stall = conn.execute(select(STALL.c.why, STALL.c.detail, ACCOUNT.c.name)
                         .select_from(STALL.outerjoin(ACCOUNT, ACCOUNT.c.id == STALL.c.account_id))
                         .where(STALL.c.id == draft.stall_id)).first()
    blocked = send_check(conn, draft_id, now, d.rules.outreach)
    return DraftForm(draft_id=draft.id, stall_id=draft.stall_id,
                     account_name=(stall.name if stall else None) or draft.account_id,
                     why=(stall.why or stall.detail) if stall else "", recipient=draft.recipient,
                     subject=draft.subject, body=draft.body, source=draft.source, note=draft.note,
                     warning=blocked.reason if blocked else None, attempt=draft.attempt)


def discard(d, draft_id: int, user: str, now: datetime | None = None) -> str:
    now = now or utcnow()
    with write_tx(d.engine) as conn:
        draft = _draft(conn, draft_id)
        _subject_any(conn, draft.stall_id, user, Action.DRAFT_DISCARD, d.admins)
        changed = conn.execute(update(DRAFT).where(DRAFT.c.id == draft_id, DRAFT.c.status.in_(("drafting", "drafted")))
                               .values(status="discarded", updated_at=now)).rowcount
        if not changed:
            return _status_text(_draft(conn, draft_id))
        _audit(conn, now, user, "draft.discarded", draft.stall_id, draft.account_id, Action.DRAFT_DISCARD,
               {"draft_id": draft_id})
    return "Discarded. Nothing was sent."


# --- approval ---------------------------------------------------------------------------------

def approve(d, draft_id: int, user: str, values: dict[str, str], now: datetime | None = None) -> Approval:
    """The modal's submission: check the edited email, then, in ONE transaction, approve the
    draft, put it in the mail outbox and audit it. Field problems keep the modal open."""
    from bot.mail.outbox import enqueue_mail, mail_configured
    from rules.draft_text import DraftText, check_draft

    now = now or utcnow()
    recipient, subject, body = (values.get(k, "").strip() for k in (RECIPIENT, SUBJECT, BODY))
    outreach = d.rules.outreach
    errors: dict[str, str] = {}
    bad_address = address_problem(recipient)  # a list, a display name, CR/LF: refused here, not at send time
    if bad_address:
        errors[RECIPIENT] = bad_address
    problems = check_draft(DraftText(subject=subject, body=body),
                           allowed_urls=[u for u in (outreach.help_url, outreach.booking_url) if u])
    for field, found in ((SUBJECT, [p for p in problems if "subject" in p]),
                         (BODY, [p for p in problems if "subject" not in p])):
        if found:
            errors[field] = "; ".join(found)[:300]
    if errors:
        return Approval(errors=errors)
    with write_tx(d.engine) as conn:
        draft = _draft(conn, draft_id)
        if draft.status != "drafted":
            return Approval(notice=_status_text(draft), stall_id=draft.stall_id)
        _subject_any(conn, draft.stall_id, user, Action.DRAFT_APPROVE, d.admins)
        # Only a known contact of the account, or an address the CSM confirmed as a new contact.
        contact_id = contact_id_for(conn, draft.account_id, recipient)
        confirmed_new = contact_id is None and values.get(NEW_CONTACT) == "yes"
        unknown = recipient_problem(recipient, known=contact_id is not None, confirmed_new=confirmed_new)
        if unknown:
            return Approval(errors={RECIPIENT: unknown[:300]})
        blocked = send_check(conn, draft_id, now, outreach, recipient=recipient)
        if blocked is not None and blocked.code in RECIPIENT_BLOCKS:
            return Approval(errors={RECIPIENT: blocked.reason[:300]})
        if blocked is not None:
            conn.execute(update(DRAFT).where(DRAFT.c.id == draft_id, DRAFT.c.status == "drafted")
                         .values(status="blocked", blocked_reason=blocked.reason, updated_at=now))
            _audit(conn, now, user, "draft.blocked", draft.stall_id, draft.account_id, Action.DRAFT_APPROVE,
                   {"draft_id": draft_id, "code": blocked.code, "reason": blocked.reason})
            return Approval(notice=f"Not sent: {md(blocked.reason, 600)}",
                            stall_id=draft.stall_id)
        changed = conn.execute(update(DRAFT).where(DRAFT.c.id == draft_id, DRAFT.c.status == "drafted").values(
            status="approved", recipient=recipient, contact_id=contact_id, subject=subject, body=body,
            approved_by=user, approved_at=now, updated_at=now)).rowcount
        if not changed:  # another process approved it between our read and our write
            return Approval(notice=_status_text(_draft(conn, draft_id)), stall_id=draft.stall_id)
        enqueue_mail(conn, draft_id=draft_id, recipient=recipient, subject=subject, body=body, now=now,
                     mail_from=d.settings.mail_from)
        if confirmed_new:
            _audit(conn, now, user, "draft.new_contact_confirmed", draft.stall_id, draft.account_id,
                   Action.DRAFT_APPROVE, {"draft_id": draft_id, "recipient": recipient,
                                          "why": "not a contact of the account; the CSM confirmed it as new"})
        _audit(conn, now, user, "draft.approved", draft.stall_id, draft.account_id, Action.DRAFT_APPROVE,
               {"draft_id": draft_id, "recipient": recipient, "subject": subject, "body": body,
                "source": draft.source, "contact_id": contact_id, "new_contact_confirmed": confirmed_new,
                **edit_summary(draft, recipient, subject, body)})
    not_configured = mail_configured(d.settings)
    if not_configured:
        return Approval(approved=True, stall_id=draft.stall_id,
                        notice=f"Approved. It is queued but cannot go out yet: {md(not_configured, 600)}",
                        detail="It will be checked again and sent as soon as email is configured.")
    return Approval(approved=True, stall_id=draft.stall_id, notice=f"Approved: sending to {md(recipient, 200)} now.",
                    detail="If the customer moves on before it goes out, it is held and you are told why.")


def edit_summary(draft, recipient: str, subject: str, body: str) -> dict:
    """How much the CSM changed the generated draft (for the audit)."""
    generated = draft.generated_body or ""
    return {
        "recipient_changed": (draft.recipient or "").lower() != recipient.lower(),
        "subject_changed": (draft.generated_subject or "") != subject,
        "body_edit_distance": Levenshtein.distance(generated, body),
        "body_similarity": round(Levenshtein.normalized_similarity(generated, body), 3),
    }


# --- after the mail sender ------------------------------------------------------------------------

def mail_outcome(d, conn: Connection, outcome) -> None:
    """The mail sender's hook, inside its transaction: re-render the stall's pings (their
    "✉️" line now says sent / blocked) and tell the approver when it did not go out."""
    if not d.settings.slack_enabled:
        return
    now = utcnow()
    view = views.ping_view(conn, outcome.stall_id, d.rules, now)
    if view is not None:
        from bot.slack.render import ping_blocks, ping_text

        message = {"text": ping_text(view), "blocks": [b.to_dict() for b in ping_blocks(view)]}
        for alert in conn.execute(select(ALERT.c.id, ALERT.c.kind, ALERT.c.channel, ALERT.c.ts).where(
                ALERT.c.stall_id == outcome.stall_id)):
            if not is_ping(alert.kind):
                continue
            # The outbox finds the message (a DM's channel included) from the post's own row.
            where = {"ts_from": alert_key(outcome.stall_id, alert.kind, alert.channel)}
            enqueue(conn, key=f"mail:{outcome.draft_id}:{outcome.status}:{alert.kind}:{alert.channel}",
                    method="chat.update",
                    alert_id=alert.id, payload={**where, **message})
    if outcome.status != "sent" and outcome.approved_by:
        enqueue(conn, key=f"mail:{outcome.draft_id}:{outcome.status}:dm", method="dm",
                payload={"user": outcome.approved_by,
                         "text": f":warning: The recovery email for {md(view.account_name, 120) if view else 'the account'} "
                                 f"to {md(outcome.recipient, 200) or 'the customer'} "
                                 f"{md(views.not_sent_phrase(outcome.reason), 600)}"})
    d.wakeups.slack_outbox.set()


# --- helpers ------------------------------------------------------------------------------------

def _draft(conn: Connection, draft_id: int):
    row = conn.execute(select(DRAFT).where(DRAFT.c.id == draft_id)).first()
    if row is None:
        raise NotFound("That draft no longer exists.")
    return row


def _subject_any(conn: Connection, stall_id: int, user: str, action: Action, admins):
    """Permission check that also works once the stall closed (the send check then says why)."""
    row = queries.subject_of(conn, stall_id)
    if row is None:
        raise NotFound()
    check(OPS[action], user, queries.as_subject(row), admins)
    return row


def _status_text(draft) -> str:
    who = f" by <@{draft.approved_by}>" if draft.approved_by else ""
    return {
        "approved": f"This draft was already approved{who}; it is being sent.",
        "sent": f"This draft was already sent{who}.",
        "discarded": "This draft was discarded.",
        "blocked": f"This draft {md(views.not_sent_phrase(draft.blocked_reason), 600)}",
    }.get(draft.status, f"This draft is {draft.status}.")


def _audit(conn: Connection, now: datetime, actor: str, action: str, stall_id: int, account_id: str,
           source: Action, detail: dict) -> None:
    conn.execute(AUDIT.insert().values(at=now, actor=actor, action=action, stall_id=stall_id,
                                       account_id=account_id, source=source.value, detail=detail))
