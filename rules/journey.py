"""Journey state: where an account is between signup and activation, and its lifecycle stage.

Semantics (DESIGN.md, "Rules file"): customers do steps in any order and events arrive late.
A step is reached at the earliest event time seen for it. The account waits on the first
step of the list it has not reached, since its latest progress (the latest reached step, or
signup). Everything here is a function of the earliest time per event, which is what
`merge_step_times` keeps: so the state does not depend on the order events arrive in.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from datetime import date, datetime, timezone

from .config import Rules
from .model import JourneyState
from .plan import RulePlan, plan_for

UTC = timezone.utc


def compute_journey(
    steps: Mapping[str, datetime],
    rules: Rules | RulePlan,
    *,
    first_seen_at: datetime | None = None,
    activated_at_hint: datetime | None = None,
    renewal_date: date | None = None,
    now: datetime | None = None,
    churn_risk: bool = False,
    track: str | None = None,
) -> JourneyState:
    """Derive the journey state from the earliest time seen per event.

    `steps` maps event name -> earliest time (it may hold the activation event and events the
    rules do not track; those are ignored). `first_seen_at` stands in for signup when the
    first step was never seen. `activated_at_hint` is an activation time known from elsewhere
    (e.g. stored on the account); the earlier of it and the activation event wins.
    `renewal_date` and `now` only decide the Renewal stage; `churn_risk` (the caller knows of
    an open usage_drop / renewal_risk / payment_failed stall) overrides the stage. `track`
    picks that track's thresholds when the rules set some (`[tracks.<track>.thresholds]`).
    """
    plan = plan_for(rules)
    reached = [steps.get(event) for event in plan.step_events]
    steps_done = sum(t is not None for t in reached)
    signup_at = reached[0] if reached[0] is not None else first_seen_at
    activated_at = _earliest(steps.get(plan.activation_event), activated_at_hint)

    if activated_at is not None:
        stage = journey_stage(plan, activated=True, all_steps_done=True, renewal_date=renewal_date,
                              now=now, churn_risk=churn_risk)
        return JourneyState(stage, signup_at, activated_at, None, None, None, None, steps_done)

    progress = [t for t in reached if t is not None]
    if signup_at is not None:
        progress.append(signup_at)
    waiting_since = max(progress) if progress else None
    checkpoint_at = signup_at + plan.checkpoint_for(track) if signup_at is not None else None

    if steps_done < len(reached):
        index = reached.index(None)
        waiting_step = plan.step_events[index]
        stalled_at = waiting_since + plan.stall_after_for(track)[index] if waiting_since is not None else None
    else:
        # Every step done but no activation: the account waits on activation itself. That has
        # no step threshold of its own; the not_activated checkpoint covers it, so no step
        # stall date is set here.
        waiting_step = plan.activation_event
        stalled_at = None
    stage = journey_stage(plan, activated=False, all_steps_done=steps_done == len(reached),
                          renewal_date=renewal_date, now=now, churn_risk=churn_risk)
    return JourneyState(stage, signup_at, None, waiting_step, waiting_since, stalled_at, checkpoint_at, steps_done)


def journey_stage(
    rules: Rules | RulePlan,
    *,
    activated: bool,
    all_steps_done: bool,
    renewal_date: date | None = None,
    now: datetime | None = None,
    churn_risk: bool = False,
) -> str:
    """The lifecycle stage (one of config.STAGES).

    "Expansion" is a stage of the rules file but nothing signals it yet (no seat or plan
    growth events are tracked), so no account is put there.
    """
    if churn_risk:
        return "Churn risk"
    if not activated:
        return "Activation" if all_steps_done else "Onboarding"
    plan = plan_for(rules)
    days_left = days_until(renewal_date, now)
    if days_left is not None and 0 <= days_left <= plan.renewal_window_days:
        return "Renewal"
    return "Adoption"


def days_until(renewal_date: date | None, now: datetime | None) -> int | None:
    """Whole calendar days (UTC) from now to the renewal date; negative once it has passed."""
    if renewal_date is None or now is None:
        return None
    return (renewal_date - utc_date(now)).days


_LAST_DATE: tuple = (None, None)  # (now, its UTC date) of the last call


def utc_date(now: datetime) -> date:
    """`now`'s calendar day in UTC. Remembered for the last `now` object: a scan asks several
    times per account with the one `now` (held here, so its id cannot be reused meanwhile)."""
    global _LAST_DATE
    last = _LAST_DATE
    if last[0] is now:
        return last[1]
    day = now.astimezone(UTC).date()
    _LAST_DATE = (now, day)
    return day


def merge_step_times(
    existing: Mapping[str, str | datetime],
    new: Iterable[tuple[str, datetime]],
    tracked_events: Container[str],
) -> dict[str, str]:
    """Fold new (event, time) pairs into stored step times, keeping the earliest per event.

    Only tracked events (the step events and the activation event, `RulePlan.tracked_events`)
    are added; entries already stored are kept even if the rules stopped tracking them, so a
    rules change that is rolled back loses nothing. Values are stored as ISO strings (JSON),
    normalised to UTC; both strings and datetimes are accepted. Naive values are taken as
    UTC (some databases drop the offset). Because "earliest" is a min, any order or batching
    of the same events gives the same result.
    """
    merged = {event: to_utc(value) for event, value in existing.items()}
    for event, at in new:
        if event not in tracked_events:
            continue
        at = to_utc(at)
        current = merged.get(event)
        if current is None or at < current:
            merged[event] = at
    return {event: at.isoformat() for event, at in merged.items()}


def parse_step_times(stored: Mapping[str, str | datetime]) -> dict[str, datetime]:
    """Stored step times (ISO strings) as aware UTC datetimes, for `compute_journey`."""
    return {event: to_utc(value) for event, value in stored.items()}


def to_utc(value: str | datetime) -> datetime:
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    if at.tzinfo is None:
        return at.replace(tzinfo=UTC)
    return at.astimezone(UTC)


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)
