"""Account health: a 0-100 score and the few reasons that cost it the most points.

Pure (facts and `now` in, a `Health` out). Each factor takes points off 100, weighted by the
rules file's `[health]` section; a live stall and the factor it is about (a step stall and
onboarding progress, a usage_drop stall and the usage trend, ...) count as one reason, in
the stall's words, so a reason is never said twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable, Sequence

from ._text import plural, renews_in
from .config import Health as HealthWeights

MAX_REASONS = 3
DAY_SECONDS = 86400.0
# Ticket priorities that count as escalations.
ESCALATED = frozenset({"urgent", "high"})
# Which factor a stall rule is about: its points and the factor's add up under one reason.
RULE_FACTOR = {"step_stall": "onboarding", "not_activated": "onboarding", "ticket_spike": "tickets",
               "usage_drop": "usage", "renewal_risk": "renewal", "payment_failed": "payment"}
# A stall in words (the duration follows): "onboarding stalled 4 days".
RULE_WORDS = {"step_stall": "onboarding stalled", "not_activated": "not activated, overdue",
              "ticket_spike": "ticket spike for", "usage_drop": "usage down for",
              "renewal_risk": "renewal at risk for", "payment_failed": "payment failing for"}


# Plain slotted dataclasses, not frozen: the scan builds one per account it evaluates, and a
# frozen dataclass's __init__ costs several times more.
@dataclass(slots=True)
class HealthStall:
    """One live stall (open or snoozed) of the account."""

    rule: str
    priority: str
    stalled_since: datetime


@dataclass(slots=True)
class HealthFacts:
    """What the score looks at for one account."""

    activated: bool
    steps_done: int = 0
    steps_total: int = 0
    stalls: Sequence[HealthStall] = ()
    active_days_recent: int = 0  # distinct active days in the last 7 complete days
    active_days_previous: int = 0  # ... and the 7 before
    open_tickets: int = 0
    escalated_tickets: int = 0  # of those, urgent or high priority
    payment_failed: bool = False
    renewal_days: int | None = None  # whole days to the renewal date (negative: passed)


@dataclass(frozen=True)
class Health:
    score: int  # 0..100, higher is healthier
    reasons: tuple[str, ...] = ()  # what cost the most points, most first (at most MAX_REASONS)

    @property
    def text(self) -> str:
        """"62 · onboarding stalled 4 days, 2 open tickets"."""
        return f"{self.score} · {', '.join(self.reasons)}" if self.reasons else str(self.score)


def account_health(facts: HealthFacts, weights: HealthWeights, now: datetime) -> Health:
    """The account's score (100 minus every factor's points, clamped to 0..100) and the
    reasons of the factors that took at least a point, heaviest first."""
    # A reason is worded only if it is shown (the scan scores every account it evaluates):
    # until then it is a function that returns its words.
    costs: dict[str, list] = {}  # factor -> see _add
    stall_points = {"P0": weights.stall_P0, "P1": weights.stall_P1, "P2": weights.stall_P2}
    max_day_points, per_day = weights.max_stall_day_points, weights.per_stall_day
    for factor, points, reason in _factors(facts, weights):
        _add(costs, factor, points, reason, stall=False)
    for stall in facts.stalls:
        days = max((now - stall.stalled_since).total_seconds() / DAY_SECONDS, 0.0)
        points = stall_points.get(stall.priority, weights.stall_P3) + min(max_day_points, per_day * days)
        _add(costs, RULE_FACTOR.get(stall.rule, stall.rule), points,
             lambda s=stall: f"{RULE_WORDS.get(s.rule, 'stalled')} {_days(now - s.stalled_since)}", stall=True)
    total = sum(cost[0] for cost in costs.values())
    score = max(0, min(100, math.floor(100 - total + 0.5)))  # half up: 46.5 is 47, as a reader rounds
    ranked = sorted(costs.values(), key=lambda c: -c[0])  # stable: ties keep the factor order
    return Health(score, tuple(cost[1]() for cost in ranked[:MAX_REASONS] if cost[0] >= 1))


def _days(delta: timedelta) -> str:
    """Whole days: the stored reasons (and so the account row) change at most once a day, not
    every hour a scan looks at the account."""
    days = int(max(delta.total_seconds(), 0.0) // DAY_SECONDS)
    return plural(days, "day") if days else "less than a day"


def _add(costs: dict[str, list], factor: str, points: float, reason: Callable[[], str], *, stall: bool) -> None:
    """Add a factor's points under one reason: a stall's words win over the factor's, and
    the weightier stall's over another's."""
    if points <= 0:
        return
    cost = costs.get(factor)  # [total points, reason, the reason's own points, from a stall]
    if cost is None:
        costs[factor] = [points, reason, points, stall]
        return
    if stall and (not cost[3] or points > cost[2]):
        cost[1:] = [reason, points, True]
    cost[0] += points


def _factors(f: HealthFacts, w: HealthWeights):
    """(factor, points, reason) of everything but the stalls."""
    if not f.activated and f.steps_total > 0:
        done = min(max(f.steps_done, 0), f.steps_total)
        yield "onboarding", w.onboarding * (1 - done / f.steps_total), \
            lambda: f"{done} of {plural(f.steps_total, 'onboarding step')} done"
    if f.activated:
        recent, previous = f.active_days_recent, f.active_days_previous
        if previous > 0 and recent < previous:
            yield "usage", w.usage_drop * (previous - recent) / previous, \
                lambda: f"active {plural(recent, 'day')} this week, {previous} the week before"
        elif recent == 0 and previous == 0:
            yield "usage", w.no_usage, lambda: "no activity in 2 weeks"
    if f.open_tickets > 0:
        escalated = min(f.escalated_tickets, f.open_tickets)
        points = min(w.max_ticket_points, w.per_open_ticket * f.open_tickets + w.per_escalated_ticket * escalated)
        urgent = f" ({escalated} urgent)" if escalated else ""
        yield "tickets", points, lambda: f"{plural(f.open_tickets, 'open ticket')}{urgent}"
    if f.payment_failed:
        yield "payment", w.payment_failed, lambda: "payment failed"
    days = f.renewal_days
    if days is not None and 0 <= days <= w.renewal_near_days:
        yield "renewal", w.renewal_near * (1 - days / w.renewal_near_days), lambda: renews_in(days)


def trend_words(score: int, week_ago: int | None) -> str:
    """"↓ from 71 last week", "↑ from 40 last week", "steady over the week"; "" without a score
    a week ago."""
    if week_ago is None:
        return ""
    if score == week_ago:
        return "steady over the week"
    return f"{'↑' if score > week_ago else '↓'} from {week_ago} last week"


def trend_mark(delta: int | None) -> str:
    """A week's change in a few characters: "↓9", "↑3", "" (none or unknown)."""
    if not delta:
        return ""
    return f"↑{delta}" if delta > 0 else f"↓{-delta}"


def escalated(priority: str | None) -> bool:
    return (priority or "").strip().lower() in ESCALATED
