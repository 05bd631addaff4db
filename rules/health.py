"""Account health: a 0-100 score and the few reasons that cost it the most points.

Pure (facts and `now` in, a `Health` out). Each factor takes points off 100, weighted by the
rules file's `[health]` section; a live stall and the factor it is about (a step stall and
onboarding progress, a usage_drop stall and the usage trend, ...) count as one reason, in
the stall's words, so a reason is never said twice.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import NamedTuple, Sequence

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


# NamedTuples, as rules.model's records: the scan builds them for every account it evaluates.
class HealthStall(NamedTuple):
    """One live stall (open or snoozed) of the account."""

    rule: str
    priority: str
    stalled_since: datetime


class HealthFacts(NamedTuple):
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


class Health(NamedTuple):
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
    # until then it is a fixed text, a tuple of what its words are made of, or the stall
    # (see _words).
    costs: dict[str, list] = {}  # factor -> [total points, reason, the reason's own points, from a stall]
    f, w = facts, weights
    # Everything but the stalls: one factor each, in this order.
    if not f.activated:
        if f.steps_total > 0:
            done = min(max(f.steps_done, 0), f.steps_total)
            points = w.onboarding * (1 - done / f.steps_total)
            if points > 0:
                costs["onboarding"] = [points, ("onboarding", done, f.steps_total), points, False]
    else:
        recent, previous = f.active_days_recent, f.active_days_previous
        if previous > 0 and recent < previous:
            points = w.usage_drop * (previous - recent) / previous
            if points > 0:
                costs["usage"] = [points, ("usage", recent, previous), points, False]
        elif recent == 0 and previous == 0:
            points = w.no_usage
            if points > 0:
                costs["usage"] = [points, "no activity in 2 weeks", points, False]
    if f.open_tickets > 0:
        escalated = min(f.escalated_tickets, f.open_tickets)
        points = min(w.max_ticket_points, w.per_open_ticket * f.open_tickets + w.per_escalated_ticket * escalated)
        if points > 0:
            costs["tickets"] = [points, ("tickets", f.open_tickets, escalated), points, False]
    if f.payment_failed:
        points = w.payment_failed
        if points > 0:
            costs["payment"] = [points, "payment failed", points, False]
    days = f.renewal_days
    if days is not None and 0 <= days <= w.renewal_near_days:
        points = w.renewal_near * (1 - days / w.renewal_near_days)
        if points > 0:
            costs["renewal"] = [points, ("renewal", days), points, False]
    if f.stalls:
        stall_points, p3, max_day_points, per_day = _stall_weights(w)
        for stall in f.stalls:
            days = max((now - stall.stalled_since).total_seconds() / DAY_SECONDS, 0.0)
            points = stall_points.get(stall.priority, p3) + min(max_day_points, per_day * days)
            if points <= 0:
                continue
            factor = RULE_FACTOR.get(stall.rule, stall.rule)
            cost = costs.get(factor)
            if cost is None:
                costs[factor] = [points, stall, points, True]
                continue
            # A stall's words win over the factor's, and the weightier stall's over another's.
            if not cost[3] or points > cost[2]:
                cost[1:] = [stall, points, True]
            cost[0] += points
    if not costs:
        return Health(100, ())
    total = 0
    for cost in costs.values():  # in the factors' order, as the points were added
        total += cost[0]
    score = max(0, min(100, math.floor(100 - total + 0.5)))  # half up: 46.5 is 47, as a reader rounds
    if len(costs) == 1:
        [cost] = costs.values()
        return Health(score, (_words(cost[1], now),) if cost[0] >= 1 else ())
    ranked = sorted(costs.values(), key=_heaviest)  # stable: ties keep the factor order
    return Health(score, tuple([_words(cost[1], now) for cost in ranked[:MAX_REASONS] if cost[0] >= 1]))


def _heaviest(cost: list) -> float:
    return -cost[0]


def _words(reason, now: datetime) -> str:
    """A reason's words: a live stall's, or a factor's (see account_health)."""
    if type(reason) is str:
        return reason
    if type(reason) is not tuple:  # a stall (a HealthStall: a NamedTuple, so not exactly a tuple)
        return f"{RULE_WORDS.get(reason.rule, 'stalled')} {_days(now - reason.stalled_since)}"
    kind = reason[0]
    if kind == "onboarding":
        return f"{reason[1]} of {plural(reason[2], 'onboarding step')} done"
    if kind == "usage":
        return f"active {plural(reason[1], 'day')} this week, {reason[2]} the week before"
    if kind == "tickets":
        urgent = f" ({reason[2]} urgent)" if reason[2] else ""
        return f"{plural(reason[1], 'open ticket')}{urgent}"
    return renews_in(reason[1])


_STALL_WEIGHTS: dict[int, tuple] = {}


def _stall_weights(w: HealthWeights) -> tuple:
    """(points per priority, P3's points, max_stall_day_points, per_stall_day), once per weights
    object (keyed on its id, holding it: the id cannot be reused while the entry lives)."""
    found = _STALL_WEIGHTS.get(id(w))
    if found is None or found[0] is not w:
        if len(_STALL_WEIGHTS) >= 16:
            _STALL_WEIGHTS.clear()
        found = _STALL_WEIGHTS[id(w)] = (w, ({"P0": w.stall_P0, "P1": w.stall_P1, "P2": w.stall_P2}, w.stall_P3,
                                             w.max_stall_day_points, w.per_stall_day))
    return found[1]


def _days(delta: timedelta) -> str:
    """Whole days: the stored reasons (and so the account row) change at most once a day, not
    every hour a scan looks at the account."""
    days = int(max(delta.total_seconds(), 0.0) // DAY_SECONDS)
    return plural(days, "day") if days else "less than a day"


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
