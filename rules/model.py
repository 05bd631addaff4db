"""The plain data the domain functions take and return. Built by storage/ and bot/ from rows;
no ORM objects cross into rules/."""

from __future__ import annotations

import inspect
from dataclasses import MISSING, dataclass, field, fields
from datetime import date, datetime
from typing import Mapping, Sequence

# All datetimes in the domain are timezone-aware UTC.

LIFECYCLE = ("trialing", "active", "past_due", "cancelled", "churned")
SUPPRESSING_STATUSES = frozenset({"cancelled", "churned"})
STALL_STATUSES = ("open", "snoozed", "resolved", "auto_resolved", "suppressed")
RULE_NAMES = ("step_stall", "not_activated", "ticket_spike", "usage_drop", "renewal_risk", "payment_failed")

def quick_init(cls):
    """Give a frozen dataclass an `__init__` that sets all its fields at once (the instance's
    `__dict__`) instead of one `object.__setattr__` call per field: the same parameters,
    defaults and resulting object, at a fraction of the cost (the scan builds several of
    these per account; a frozen AccountFacts cost ~3 us). For plain frozen dataclasses only
    (no slots, no __post_init__, no keyword-only or init=False fields). A call it cannot bind
    by the simple rules (an unknown, repeated or missing argument) goes to dataclasses' own
    `__init__`, which raises its usual TypeError."""
    params = cls.__dataclass_params__
    assert params.frozen and "__slots__" not in cls.__dict__ and not hasattr(cls, "__post_init__")
    spec = fields(cls)
    assert all(f.init and not f.kw_only for f in spec)
    names = tuple(f.name for f in spec)
    known = frozenset(names)
    defaults = tuple((f.name, f.default) for f in spec if f.default is not MISSING)
    factories = tuple((f.name, f.default_factory) for f in spec if f.default_factory is not MISSING)
    general = cls.__init__  # dataclasses' own
    count = len(names)

    def bind(self, args, kwargs):
        if len(args) > count or (kwargs and not (kwargs.keys() <= known and
                                                 kwargs.keys().isdisjoint(names[:len(args)]))):
            return general(self, *args, **kwargs)
        values = dict(zip(names, args))
        values.update(kwargs)
        if len(values) < count:
            for name, default in defaults:
                values.setdefault(name, default)
            for name, factory in factories:
                if name not in values:
                    values[name] = factory()
            if len(values) < count:  # a required argument is missing
                return general(self, *args, **kwargs)
        self.__dict__.update(values)

    def __init__(self, *args, **kwargs):
        if kwargs or len(args) != count:
            return bind(self, args, kwargs)
        # Every field given by position (the scan's calls): the instance's own, still empty,
        # __dict__ filled in one call (reading it is allowed on a frozen dataclass).
        self.__dict__.update(zip(names, args))

    __init__.__signature__ = inspect.signature(general)
    __init__.__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = __init__
    return cls


@quick_init
@dataclass(frozen=True)
class JourneyState:
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


@quick_init
@dataclass(frozen=True)
class TicketFact:
    id: str
    created_at: datetime
    status: str
    topic: str | None
    subject: str | None = None
    priority: str | None = None

    @property
    def is_open(self) -> bool:
        return self.status not in ("solved", "closed", "resolved")


@quick_init
@dataclass(frozen=True)
class AccountFacts:
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
    steps: Mapping[str, datetime] = field(default_factory=dict)  # step event -> first reached
    last_seen_at: datetime | None = None
    renewal_date: date | None = None
    tickets: Sequence[TicketFact] = ()  # recent and open tickets
    active_days_recent: int = 0  # distinct active days in the 7 complete days before today (UTC)
    active_days_previous: int = 0  # ... and in the 7 days before those
    payment_failed_at: datetime | None = None
    # The journey stage to stamp on findings (one of config.STAGES). None: evaluate derives it
    # from the journey, the renewal date and the churn signals it finds itself.
    stage: str | None = None


@quick_init
@dataclass(frozen=True)
class Finding:
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


@quick_init
@dataclass(frozen=True)
class Score:
    score: float
    severity: float
    priority: str
    why: str


@quick_init
@dataclass(frozen=True)
class OpenStall:
    """A stall currently open or snoozed, as reconcile sees it."""

    id: int
    account_id: str
    rule: str
    step: str | None
    status: str
    score: float
    priority: str
    snoozed_until: datetime | None = None


@quick_init
@dataclass(frozen=True)
class StallChange:
    """One change reconcile decided: open, update, resolve or suppress."""

    action: str  # "open" | "update" | "auto_resolve" | "suppress" | "unsnooze" | "lapse" (a decision)
    account_id: str
    rule: str
    stall_id: int | None = None
    finding: Finding | None = None
    score: Score | None = None
    reason: str | None = None
