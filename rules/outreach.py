"""Recovery outreach decisions: who a recovery email goes to, whether it may go out now, and
what happens after it was sent. Pure: no I/O, no clock (DESIGN.md "Domain", issue 4).

Three questions, three functions:

- `pick_recipient`: the account's primary contact among several;
- `send_blocker`: asked when the CSM approves AND again right before the mail outbox sends
  (the "every email at once" bug: a customer who moved on must not get a stale email);
- `followup`: after a sent recovery, the stall waits `recheck_days`; still open, it alerts
  again as the next attempt; after `max_recovery_attempts` it is handed to the managers for
  win-back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable, Literal

from .config import Outreach

# Lifecycle states in which no recovery email may reach the customer, and why.
NO_EMAIL_LIFECYCLE = {
    "cancelled": "the account has cancelled",
    "churned": "the account has churned",
    "past_due": "the account is past due on payment (billing talks to them first)",
}
LIVE_STALL = ("open", "snoozed")


@dataclass(frozen=True)
class ContactFact:
    id: str
    email: str | None
    name: str | None = None
    first_name: str | None = None
    unsubscribed: bool = False
    last_seen_at: datetime | None = None
    created_at: datetime | None = None


def _domain(email: str | None) -> str:
    return email.rsplit("@", 1)[-1].strip().lower() if email and "@" in email else ""


def pick_recipient(contacts: Iterable[ContactFact], *, owner_email: str | None = None) -> ContactFact | None:
    """The contact a recovery email should go to, or None when nobody may get one.

    Usable: has an email address, has not unsubscribed, and is not one of our own people (same
    email domain as the owning CSM: teammates get added to customer accounts for support).
    Among usable contacts, the one most recently active in the product (they are who is
    stuck), then the earliest created (the person who signed up), then the id, for a
    deterministic answer.
    """
    ours = _domain(owner_email)
    usable = [c for c in contacts
              if c.email and "@" in c.email and not c.unsubscribed and not (ours and _domain(c.email) == ours)]
    if not usable:
        return None
    def rank(c: ContactFact):
        seen = -c.last_seen_at.timestamp() if c.last_seen_at else float("inf")
        created = c.created_at.timestamp() if c.created_at else float("inf")
        return (seen, created, c.id)

    return min(usable, key=rank)


def first_name(contact: ContactFact | None) -> str | None:
    """How to greet the contact: their first name, else the first word of their name."""
    if contact is None:
        return None
    if contact.first_name and contact.first_name.strip():
        return contact.first_name.strip()
    if contact.name and contact.name.strip():
        return contact.name.strip().split()[0]
    return None


# --- who may it go to? ------------------------------------------------------------------------

# One plain address (addr-spec), nothing else: no display name, no list, no comments, no spaces.
_LOCAL = r"[\w!#$%&'*+/=?^`{|}~-]+(?:\.[\w!#$%&'*+/=?^`{|}~-]+)*"
_DOMAIN = r"(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+[^\W\d_](?:[\w-]{0,61}[^\W_])?"
_ADDRESS = re.compile(f"{_LOCAL}@{_DOMAIN}")
ADDRESS_MAX = 254  # RFC 5321's limit on a path


def address_problem(value: str | None) -> str | None:
    """Why `value` cannot be the To of a recovery email (shown on the modal's To field), or
    None when it is exactly one plain address. What a header injection or a second recipient
    needs (line breaks, ",", ";", "Name <address>") is refused with its own reason."""
    value = value or ""
    if not value.strip():
        return "Enter the email address to send it to."
    if any(c in value for c in "\r\n") or any(ord(c) < 32 or ord(c) == 127 for c in value):
        return "The address must be on one line (no line breaks or control characters)."
    if "," in value or ";" in value:
        return "One recipient only: enter a single email address (no \",\" or \";\")."
    if any(c in value for c in "<>\"()"):
        return "Enter just the address (e.g. bob@example.com), without a name or brackets."
    if any(c.isspace() for c in value.strip()):
        return "An email address has no spaces."
    address = value.strip()
    if len(address) > ADDRESS_MAX or not _ADDRESS.fullmatch(address):
        return f"“{address[:80]}” is not a valid email address."
    return None


def recipient_problem(address: str, *, known: bool, confirmed_new: bool) -> str | None:
    """Why the CSM may not send to `address` as typed, or None. It must be one plain address
    and either a known contact of the account or confirmed by the CSM as a new contact: an
    address planted by a prompt injection, or a typo, does not slip through."""
    problem = address_problem(address)
    if problem is not None:
        return problem
    if not known and not confirmed_new:
        return (f"{address.strip()} is not a contact of this account. Check it, or tick “This is a new "
                "contact” to send to it anyway.")
    return None


# --- may it go out? ---------------------------------------------------------------------------

BlockCode = Literal["no_recipient", "bad_recipient", "lifecycle", "unsubscribed", "not_relevant", "duplicate", "too_soon", "attempts"]


@dataclass(frozen=True)
class Blocked:
    code: BlockCode
    reason: str  # shown to the CSM as is


@dataclass(frozen=True)
class SendContext:
    """Everything `send_blocker` looks at, read from storage at the moment of the check."""

    recipient: str | None  # the address the email would go to (as edited by the CSM)
    recipient_unsubscribed: bool  # a contact with this address has opted out
    lifecycle: str | None  # the account's lifecycle status now
    stall_status: str  # the stall's status now ("open", "snoozed", "resolved", ...)
    stall_step: str | None  # the step the stall is on now (None for rules not about a step)
    draft_step: str | None  # the step the stall was on when the email was drafted
    stall_resolution: str | None = None
    # When a recovery email (another draft) last reached this address, if ever.
    last_email_to_recipient_at: datetime | None = None
    attempts: int = 0  # recovery emails already sent for this stall
    # Which attempt the draft was written as (the stall's attempts + 1 at drafting time): two
    # drafts of one stall approved together must not both go out as the same attempt.
    draft_attempt: int | None = None


def send_blocker(ctx: SendContext, now: datetime, outreach: Outreach) -> Blocked | None:
    """Why this email must not go out now, or None when it may. Checked in the order a CSM
    would want to hear it: nobody to send to, the customer's state, then our own pacing."""
    if not ctx.recipient or "@" not in ctx.recipient:
        return Blocked("no_recipient", "there is no recipient email address")
    if address_problem(ctx.recipient) is not None:  # the last line of defence before SMTP
        return Blocked("bad_recipient", f"{ctx.recipient[:100]!r} is not one plain email address")
    if ctx.lifecycle in NO_EMAIL_LIFECYCLE:
        return Blocked("lifecycle", f"{NO_EMAIL_LIFECYCLE[ctx.lifecycle]}")
    if ctx.recipient_unsubscribed:
        return Blocked("unsubscribed", f"{ctx.recipient} has unsubscribed from email")
    if ctx.stall_status not in LIVE_STALL:
        how = f" ({ctx.stall_resolution})" if ctx.stall_resolution else ""
        return Blocked("not_relevant", f"the stall is no longer open{how}")
    if ctx.draft_step != ctx.stall_step:
        moved = (f"the account moved on from '{ctx.draft_step}' to '{ctx.stall_step}'"
                 if ctx.draft_step and ctx.stall_step else "the stall changed since the draft")
        return Blocked("not_relevant", f"{moved}; draft a new email")
    if ctx.draft_attempt is not None and ctx.attempts >= ctx.draft_attempt:
        return Blocked("duplicate", f"recovery email #{ctx.draft_attempt} for this stall already went out "
                                    "(another draft); draft a new one if a follow-up is needed")
    if ctx.attempts >= outreach.max_recovery_attempts:
        return Blocked("attempts", f"{ctx.attempts} recovery email(s) already went out for this stall "
                                   f"(the limit is {outreach.max_recovery_attempts}); it is a win-back handoff now")
    if ctx.last_email_to_recipient_at is not None and outreach.min_days_between_emails > 0:
        next_allowed = ctx.last_email_to_recipient_at + timedelta(days=outreach.min_days_between_emails)
        if now < next_allowed:
            return Blocked("too_soon", f"{ctx.recipient} got a recovery email on "
                                       f"{ctx.last_email_to_recipient_at:%Y-%m-%d}; the next one may go "
                                       f"from {next_allowed:%Y-%m-%d} (min_days_between_emails = "
                                       f"{outreach.min_days_between_emails:g})")
    return None


# --- after a sent recovery --------------------------------------------------------------------

FollowupKind = Literal["none", "wait", "realert", "winback"]


@dataclass(frozen=True)
class Followup:
    kind: FollowupKind
    attempt: int = 0  # "realert": the attempt the new alert asks for; "winback": attempts made
    due_at: datetime | None = None  # "wait": when to look again


def followup(*, stall_status: str, attempts: int, last_recovery_at: datetime | None, handled_attempt: int,
             now: datetime, outreach: Outreach) -> Followup:
    """What to do about a stall after its recovery emails.

    `attempts`: recovery emails sent for the stall; `handled_attempt`: the highest attempt
    whose re-check already led to a re-alert or a win-back (so each happens once)."""
    if stall_status not in LIVE_STALL or attempts <= 0 or last_recovery_at is None:
        return Followup("none")
    if handled_attempt >= attempts:
        return Followup("none")
    due = last_recovery_at + timedelta(days=outreach.recheck_days)
    if now < due:
        return Followup("wait", due_at=due)
    if attempts < outreach.max_recovery_attempts:
        return Followup("realert", attempt=attempts + 1)
    return Followup("winback", attempt=attempts)
