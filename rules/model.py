"""The plain data the domain functions take and return. Built by storage/ and bot/ from rows;
no ORM objects cross into rules/."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from datetime import date, datetime
from typing import Mapping, Sequence

# All datetimes in the domain are timezone-aware UTC.

LIFECYCLE = ("trialing", "active", "past_due", "cancelled", "churned")
SUPPRESSING_STATUSES = frozenset({"cancelled", "churned"})
STALL_STATUSES = ("open", "snoozed", "resolved", "auto_resolved", "suppressed")
RULE_NAMES = ("step_stall", "not_activated", "ticket_spike", "usage_drop", "renewal_risk", "payment_failed")

_NO_VALUE = object()  # a field with a default factory that was not given


def quick_init(cls):
    """Give a frozen dataclass an `__init__` that sets all its fields at once (the instance's
    `__dict__`) instead of one `object.__setattr__` call per field: the same parameters,
    defaults and resulting object, at a fraction of the cost (the scan builds several of
    these per account; a frozen AccountFacts cost ~3 us). For plain frozen dataclasses only
    (no slots, no __post_init__, no keyword-only or init=False fields)."""
    params = cls.__dataclass_params__
    assert params.frozen and "__slots__" not in cls.__dict__ and not hasattr(cls, "__post_init__")
    env: dict = {"_set": object.__setattr__, "_NO_VALUE": _NO_VALUE}
    args, items = [], []
    for f in fields(cls):
        assert f.init and not f.kw_only, f.name
        if f.default is not MISSING:
            env[f"_default_{f.name}"] = f.default
            args.append(f"{f.name}=_default_{f.name}")
            items.append(f"{f.name!r}: {f.name}")
        elif f.default_factory is not MISSING:
            env[f"_factory_{f.name}"] = f.default_factory
            args.append(f"{f.name}=_NO_VALUE")
            items.append(f"{f.name!r}: _factory_{f.name}() if {f.name} is _NO_VALUE else {f.name}")
        else:
            args.append(f.name)
            items.append(f"{f.name!r}: {f.name}")
    exec(f"def __init__(self, {', '.join(args)}):\n    _set(self, '__dict__', {{{', '.join(items)}}})\n", env)
    init = env["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = init
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
