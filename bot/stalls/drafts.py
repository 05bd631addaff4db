"""Recovery-email use-cases (issue 4), from the CSM's request to the mail outbox. Blocking
functions; the Slack adapter (bot/slack/listeners/drafts.py) runs them in threads and says
what happened in the modal.

    draft            ->  start_draft  (Draft row "drafting", audit)
                     ->  write_draft  (facts -> LLM or template -> Draft "drafted")
    regenerate       ->  write_draft again (audit "draft.regenerated")
    discard          ->  discard      (Draft "discarded")
    approve          ->  approve      (checks, Draft "approved", mail outbox row, audit with how
                                       much the CSM edited: ONE transaction)

Every change is guarded by the draft's status (a double click or a second process finds it
changed and does nothing: DraftClosed, or a Closed outcome) and checked against the
permission table (bot.stalls.permissions). The send checks (`storage.outreach.send_check`) run
at approval, in the approval's transaction, and again in the sender right before SMTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from rapidfuzz.distance import Levenshtein
from sqlalchemy import Connection

from bot.stalls.actions import alert_of, checked
from bot.stalls.context import Services
from bot.stalls.errors import CannotDraft, NotFound, StallwatchError
from bot.stalls.permissions import Op
from rules.outreach import NO_EMAIL_LIFECYCLE, address_problem, recipient_problem
from storage import drafts as sql
from storage.db import read_tx, write_tx
from storage.outreach import contact_id_for, send_check
from storage.stall_actions import ack_alerts, audit

# The form's fields, as approve() names them in its errors.
RECIPIENT, SUBJECT, BODY = "recipient", "subject", "body"
# Blocks the CSM can fix in the form (another recipient, later): shown on the recipient field.
RECIPIENT_BLOCKS = ("no_recipient", "bad_recipient", "unsubscribed", "too_soon")


class DraftClosed(StallwatchError):
    """The draft was approved, sent, discarded or blocked meanwhile: nothing changed. The
    adapter says which from `draft` (its row)."""

    def __init__(self, draft):
        self.draft = draft
        super().__init__(f"This draft is {draft.status}.")


@dataclass(frozen=True)
class DraftForm:
    """What the form shows (built from the Draft row and its stall)."""

    draft_id: int
    stall_id: int
    account_name: str
    why: str
    recipient: str | None
    subject: str
    body: str
    source: str  # "template" or "llm:<model>"
    note: str | None = None  # why the template was used, or other notes from the drafter
    warning: str | None = None  # a check that would block sending now (e.g. unsubscribed)
    attempt: int = 1


@dataclass(frozen=True)
class Edited:
    """What the CSM submits: the email as edited, and whether they confirmed a new contact."""

    recipient: str
    subject: str
    body: str
    new_contact: bool = False


@dataclass(frozen=True)
class Approval:
    """What approve() did: field errors (nothing changed; the form stays open), the draft closed
    meanwhile (`closed`, its row), blocked by a send check (`blocked`, the reason), or approved
    (`not_configured`: why it cannot go out yet, when mail is not configured)."""

    errors: dict[str, str] | None = None
    closed: object | None = None
    blocked: str | None = None
    approved: bool = False
    recipient: str | None = None
    not_configured: str | None = None
    stall_id: int | None = None


# --- drafting ---------------------------------------------------------------------------------

def start_draft(services: Services, stall_id: int, user: str, *, view_id: str | None, source: str,
                now: datetime | None = None) -> int:
    """Check that `user` may draft for this live stall and that an email could go out at all;
    store the Draft as "drafting". Raises a StallwatchError to show instead."""
    now = now or services.clock()
    team = services.team  # before the transaction: it may wait for Slack
    with write_tx(services.engine) as conn:
        # One alert per account: the ping's button names its lead stall; once that one closed,
        # the email is about the alert's top live reason.
        _, targets = alert_of(conn, services, Op.DRAFT, stall_id, user, team=team)
        clicked = stall_id
        if stall_id not in targets:
            stall_id = targets[0]
        stall = sql.stall_to_draft(conn, stall_id)
        if stall.lifecycle in NO_EMAIL_LIFECYCLE:
            raise CannotDraft(f"No recovery email: {NO_EMAIL_LIFECYCLE[stall.lifecycle]}.")
        limit = services.rules.outreach.max_recovery_attempts
        if stall.recovery_attempts >= limit:
            raise CannotDraft(f"{stall.recovery_attempts} recovery emails already went out for this stall (the "
                              f"limit is {limit}): it is a win-back handoff for the managers now.")
        draft_id = sql.insert_drafting(conn, stall, user, view_id, now)
        # Drafting is acting on the alert: no escalation for it.
        for sid in {clicked, *targets}:
            ack_alerts(conn, sid, user, now)
        audit(conn, now=now, actor=user, action="draft.requested", stall_id=stall_id, account_id=stall.account_id,
              source=source, detail={"draft_id": draft_id, "attempt": stall.recovery_attempts + 1})
    return draft_id


def write_draft(services: Services, draft_id: int, user: str, *, source: str, regenerate: bool = False,
                now: datetime | None = None) -> DraftForm:
    """Write the draft's text (the LLM, or the template when it cannot) and return the form.
    Slow (the LLM; the drafter caps it): never call it on the event loop."""
    from bot.drafting.facts import load_facts
    from bot.drafting.llm import Drafter

    now = now or services.clock()
    with read_tx(services.engine) as conn:
        draft = _draft(conn, draft_id)
        if regenerate:
            checked(conn, services, Op.REGENERATE, draft.stall_id, user)
        if draft.status not in sql.EDITABLE:
            raise DraftClosed(draft)
        facts = load_facts(conn, draft.stall_id, services.rules, now)
    if facts is None:
        raise NotFound()
    result = Drafter(services.settings, services.rules.outreach).draft(facts)
    written = services.clock()  # the LLM took a while
    with write_tx(services.engine) as conn:
        changed = sql.set_text(conn, draft_id, subject=result.subject, body=result.body, source=result.source,
                               note=result.note, recipient=facts.recipient_email,
                               contact_id=facts.recipient_contact_id, now=written)
        draft = _draft(conn, draft_id)
        if not changed:  # discarded or approved meanwhile (another click)
            raise DraftClosed(draft)
        audit(conn, now=written, actor=user, action="draft.regenerated" if regenerate else "draft.created",
              stall_id=draft.stall_id, account_id=draft.account_id, source=source,
              detail={"draft_id": draft_id, "source": result.source, "note": result.note,
                      "subject": result.subject, "body": result.body, "recipient": facts.recipient_email})
        return form_of(conn, services, draft_id, now)


def form_of(conn: Connection, services: Services, draft_id: int, now: datetime) -> DraftForm:
    draft = _draft(conn, draft_id)
    stall = sql.form_facts(conn, draft.stall_id)
    blocked = send_check(conn, draft_id, now, services.rules.outreach)
    return DraftForm(draft_id=draft.id, stall_id=draft.stall_id,
                     account_name=(stall.name if stall else None) or draft.account_id,
                     why=(stall.why or stall.detail) if stall else "", recipient=draft.recipient,
                     subject=draft.subject, body=draft.body, source=draft.source, note=draft.note,
                     warning=blocked.reason if blocked else None, attempt=draft.attempt)


def discard(services: Services, draft_id: int, user: str, *, source: str, now: datetime | None = None) -> None:
    """Discard the draft; DraftClosed when it was approved, sent or discarded meanwhile."""
    now = now or services.clock()
    team = services.team  # before the transaction: it may wait for Slack
    with write_tx(services.engine) as conn:
        draft = _draft(conn, draft_id)
        # Works once the stall closed too (the draft then goes nowhere anyway).
        checked(conn, services, Op.DISCARD, draft.stall_id, user, live=False, team=team)
        if not sql.discard(conn, draft_id, now):
            raise DraftClosed(_draft(conn, draft_id))
        audit(conn, now=now, actor=user, action="draft.discarded", stall_id=draft.stall_id,
              account_id=draft.account_id, source=source, detail={"draft_id": draft_id})


# --- approval ---------------------------------------------------------------------------------

def field_errors(edited: Edited, outreach) -> dict[str, str]:
    """What is wrong with the edited email itself (no database needed)."""
    from rules.draft_text import DraftText, check_draft

    errors: dict[str, str] = {}
    bad_address = address_problem(edited.recipient)  # a list, a display name, CR/LF: refused here, not at send time
    if bad_address:
        errors[RECIPIENT] = bad_address
    problems = check_draft(DraftText(subject=edited.subject, body=edited.body),
                           allowed_urls=[u for u in (outreach.help_url, outreach.booking_url) if u])
    for field, found in ((SUBJECT, [p for p in problems if "subject" in p]),
                         (BODY, [p for p in problems if "subject" not in p])):
        if found:
            errors[field] = "; ".join(found)[:300]
    return errors


def approve(services: Services, draft_id: int, user: str, edited: Edited, *, source: str,
            now: datetime | None = None) -> Approval:
    """The CSM's approval: check the edited email, then, in ONE transaction, approve the draft,
    put it in the mail outbox and audit it. Field problems change nothing."""
    from bot.mail.outbox import enqueue_mail, mail_configured

    now = now or services.clock()
    edited = Edited(*(v.strip() for v in (edited.recipient, edited.subject, edited.body)), edited.new_contact)
    recipient, subject, body = edited.recipient, edited.subject, edited.body
    errors = field_errors(edited, services.rules.outreach)
    if errors:
        return Approval(errors=errors)
    team = services.team  # before the transaction: it may wait for Slack
    with write_tx(services.engine) as conn:
        draft = _draft(conn, draft_id)
        if draft.status != "drafted":
            return Approval(closed=draft, stall_id=draft.stall_id)
        checked(conn, services, Op.APPROVE, draft.stall_id, user, live=False, team=team)  # the send check says why a closed one cannot go
        # Only a known contact of the account, or an address the CSM confirmed as a new contact.
        contact_id = contact_id_for(conn, draft.account_id, recipient)
        confirmed_new = contact_id is None and edited.new_contact
        unknown = recipient_problem(recipient, known=contact_id is not None, confirmed_new=confirmed_new)
        if unknown:
            return Approval(errors={RECIPIENT: unknown[:300]})
        blocked = send_check(conn, draft_id, now, services.rules.outreach, recipient=recipient)
        if blocked is not None and blocked.code in RECIPIENT_BLOCKS:
            return Approval(errors={RECIPIENT: blocked.reason[:300]})

        def audited(action: str, detail: dict) -> None:
            audit(conn, now=now, actor=user, action=action, stall_id=draft.stall_id, account_id=draft.account_id,
                  source=source, detail={"draft_id": draft_id, **detail})

        if blocked is not None:
            sql.block(conn, draft_id, blocked.reason, now)
            audited("draft.blocked", {"code": blocked.code, "reason": blocked.reason})
            return Approval(blocked=blocked.reason, stall_id=draft.stall_id)
        if not sql.approve(conn, draft_id, user=user, recipient=recipient, contact_id=contact_id, subject=subject,
                           body=body, now=now):  # another process approved it between our read and our write
            return Approval(closed=_draft(conn, draft_id), stall_id=draft.stall_id)
        enqueue_mail(conn, draft_id=draft_id, recipient=recipient, subject=subject, body=body, now=now,
                     mail_from=services.settings.mail_from)
        if confirmed_new:
            audited("draft.new_contact_confirmed",
                    {"recipient": recipient, "why": "not a contact of the account; the CSM confirmed it as new"})
        audited("draft.approved", {"recipient": recipient, "subject": subject, "body": body, "source": draft.source,
                                   "contact_id": contact_id, "new_contact_confirmed": confirmed_new,
                                   **edit_summary(draft, recipient, subject, body)})
    return Approval(approved=True, recipient=recipient, not_configured=mail_configured(services.settings),
                    stall_id=draft.stall_id)


def edit_summary(draft, recipient: str, subject: str, body: str) -> dict:
    """How much the CSM changed the generated draft (for the audit)."""
    generated = draft.generated_body or ""
    return {
        "recipient_changed": (draft.recipient or "").lower() != recipient.lower(),
        "subject_changed": (draft.generated_subject or "") != subject,
        "body_edit_distance": Levenshtein.distance(generated, body),
        "body_similarity": round(Levenshtein.normalized_similarity(generated, body), 3),
    }


def _draft(conn: Connection, draft_id: int):
    row = sql.get(conn, draft_id)
    if row is None:
        raise NotFound("That draft no longer exists.")
    return row
