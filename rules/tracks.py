"""Track assignment: which playbook (high_touch / standard / self_serve) an account follows."""

from __future__ import annotations

from .config import Rules
from .plan import RulePlan, TrackCondition, plan_for


def assign_track(arr: float | None, plan: str | None, seats: int | None, rules: Rules | RulePlan) -> str:
    """The track of the first rule whose conditions all hold, else the default track.

    A condition on a value we do not know (ARR missing or 0, no plan, no seats) does not hold:
    an account with too little data is low confidence and falls to the default rather than
    being pushed into a track by a guess. Bounds are inclusive; plans compare ignoring case
    and surrounding spaces.
    """
    compiled = plan_for(rules)
    known_arr = arr if arr is not None and arr > 0 else None  # 0 means "never told", not "free"
    plan_key = (plan or "").strip().casefold() or None
    for condition in compiled.track_conditions:
        if _holds(condition, known_arr, plan_key, seats):
            return condition.track
    return compiled.default_track


def _holds(c: TrackCondition, arr: float | None, plan: str | None, seats: int | None) -> bool:
    if c.min_arr is not None and (arr is None or arr < c.min_arr):
        return False
    if c.max_arr is not None and (arr is None or arr > c.max_arr):
        return False
    if c.plans is not None and (plan is None or plan not in c.plans):
        return False
    if c.min_seats is not None and (seats is None or seats < c.min_seats):
        return False
    if c.max_seats is not None and (seats is None or seats > c.max_seats):
        return False
    return True


def describe_tracks(rules: Rules) -> list[str]:
    """How each track is routed and tuned, one line each, in words (`rules check`, `backtest`):
    "self_serve: digest only (no ping); stalled after 48 h on a step, not activated at day 14"."""
    from .config import TRACKS

    journey = rules.journey
    hours = sorted({s.stall_after_hours for s in journey.steps})
    steps = f"{hours[0]:g} h" if len(hours) == 1 else f"{hours[0]:g}-{hours[-1]:g} h (per step)"
    lines = []
    for track in TRACKS:
        own = rules.tracks.settings(track).thresholds
        stall = f"{own.stall_after_hours:g} h" if own.stall_after_hours is not None else steps
        checkpoint = own.checkpoint_days if own.checkpoint_days is not None else journey.checkpoint_days
        routing = "pings in real time" if rules.tracks.pings_realtime(track) else "digest only (no ping)"
        lines.append(f"{track}: {routing}; stalled after {stall} on a step, not activated at day {checkpoint:g}")
    return lines
