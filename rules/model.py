"""The plain data the domain functions take and return. Built by storage/ and bot/ from rows;
no ORM objects cross into rules/."""

from __future__ import annotations

from datetime import date, datetime
from types import MappingProxyType
from typing import Mapping, NamedTuple, Sequence

# All datetimes in the domain are timezone-aware UTC.

LIFECYCLE = ("trialing", "active", "past_due", "cancelled", "churned")
SUPPRESSING_STATUSES = frozenset({"cancelled", "churned"})
STALL_STATUSES = ("open", "snoozed", "resolved", "auto_resolved", "suppressed")
RULE_NAMES = ("step_stall", "not_activated", "ticket_spike", "usage_drop", "renewal_risk", "payment_failed")

NO_STEPS: Mapping = MappingProxyType({})  # an empty mapping no one can fill: a shared default

# The records below are NamedTuples: immutable and hashable like frozen dataclasses, built in
# C at a quarter of their cost. The scan builds several per account (100,000 accounts: a
# frozen AccountFacts alone cost ~1 us, 0.1 s of a scan, in Python).


class JourneyState(NamedTuple):
    """Where an account is on its journey, derived from its step times."""

    stage: str
    signup_at: datetime | None
    activated_at: datetime | None
    # The first step of the list not reached yet (event name), None once activated or done.
    waiting_step: str | None
    # Its latest progress: the latest reached step time, or signup.
    waiting_since: datetime | None
    # When the account counts as stalled on the waiting step (waiting_since + threshold).
    stalled_at: datetime | None
    # Day-N checkpoint: when a not-yet-activated account counts as "not activated".
    checkpoint_at: datetime | None
    steps_done: int = 0


class TicketFact(NamedTuple):
    id: str
    created_at: datetime
    status: str
    topic: str | None
    subject: str | None = None
    priority: str | None = None

    @property
    def is_open(self) -> bool:
        return self.status not in ("solved", "closed", "resolved")


class AccountFacts(NamedTuple):
    """Everything the stall rules look at for one account."""

    id: str
    name: str
    arr: float
    status: str  # lifecycle, one of LIFECYCLE
    track: str
    plan: str | None = None
    seats: int | None = None
    signup_at: datetime | None = None
    activated_at: datetime | None = None
    steps: Mapping[str, datetime] = NO_STEPS  # step event -> first reached
    last_seen_at: datetime | None = None
    renewal_date: date | None = None
    tickets: Sequence[TicketFact] = ()  # recent and open tickets
    active_days_recent: int = 0  # distinct active days in the 7 complete days before today (UTC)
    active_days_previous: int = 0  # ... and in the 7 days before those
    payment_failed_at: datetime | None = None
    # The journey stage to stamp on findings (one of config.STAGES). None: evaluate derives it
    # from the journey, the renewal date and the churn signals it finds itself.
    stage: str | None = None


class Finding(NamedTuple):
    """A rule's verdict that an account is stalled right now."""

    rule: str
    # Distinguishes stalls of one rule (the step for step_stall); part of the stall identity.
    step: str | None
    stalled_since: datetime
    # When the rule's threshold was crossed: severity grows with time past it.
    threshold_at: datetime
    # Short facts for the "why" line, e.g. "3 days on 'Connect integration'".
    detail: str
    stage: str = "Onboarding"


class Score(NamedTuple):
    score: float
    severity: float
    priority: str
    why: str


class OpenStall(NamedTuple):
    """A stall currently open or snoozed, as reconcile sees it."""

    id: int
    account_id: str
    rule: str
    step: str | None
    status: str
    score: float
    priority: str
    snoozed_until: datetime | None = None


class StallChange(NamedTuple):
    """One change reconcile decided: open, update, resolve or suppress."""

    action: str  # "open" | "update" | "auto_resolve" | "suppress" | "unsnooze" | "lapse" (a decision)
    account_id: str
    rule: str
    stall_id: int | None = None
    finding: Finding | None = None
    score: Score | None = None
    reason: str | None = None
