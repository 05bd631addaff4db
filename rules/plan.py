"""A compiled, flat view of `Rules` for the per-account hot path.

`Rules` is a frozen pydantic model but not hashable (it holds lists and dicts), and the scan
calls the domain functions for tens of thousands of accounts: the lookups they need (step
order, thresholds as timedeltas, lower-cased plan sets, weights) are built once per `Rules`
object here. Every public domain function accepts either `Rules` or a `RulePlan`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from ._text import clip_label
from .config import STAGES, TRACKS, Rules
from .model import RULE_NAMES


@dataclass(frozen=True, slots=True)
class TrackCondition:
    track: str
    min_arr: float | None
    max_arr: float | None
    plans: frozenset[str] | None  # case-folded
    min_seats: int | None
    max_seats: int | None


@dataclass(frozen=True, slots=True, eq=False)
class RulePlan:
    rules: Rules
    # Journey
    step_events: tuple[str, ...]
    step_index: dict[str, int]
    step_names: dict[str, str]  # event -> display name
    step_labels: dict[str, str]  # event -> display name as a finding quotes it (clip_label)
    stall_after: tuple[timedelta, ...]
    activation_event: str
    tracked_events: frozenset[str]  # step events and the activation event
    checkpoint: timedelta
    renewal_window_days: float
    # Tracks
    track_conditions: tuple[TrackCondition, ...]
    default_track: str
    # Per-track thresholds (`[tracks.<track>.thresholds]`), only for tracks that set some.
    track_stall_after: dict[str, tuple[timedelta, ...]]
    track_checkpoint: dict[str, timedelta]
    # Stall rules
    enabled: frozenset[str]
    weights: dict[str, float]
    spike_window: timedelta
    spike_window_days: float
    spike_min_tickets: int
    spike_min_same_topic: int
    usage_ratio: float
    usage_min_previous: int
    usage_recover_ratio: float  # never below usage_ratio
    # Confirmation delays: how long past its threshold a stall must last before it opens.
    step_confirm: timedelta
    not_activated_confirm: timedelta
    renewal_within_days: float
    renewal_within: timedelta  # renewal_within_days as a timedelta
    renewal_window: timedelta  # journey.renewal_window_days as a timedelta
    renewal_lead: timedelta  # the larger of the two: how long before a renewal its first moment is
    # Scoring
    per_day_past_threshold: float
    max_time_factor: float
    per_open_ticket: float
    max_ticket_factor: float
    payment_failed_friction: float
    renewal_near_friction: float
    stage_weights: dict[str, float]
    bands: tuple[tuple[float, str], ...]  # (lowest score, priority), highest band first
    band_floors: tuple[float, ...]  # the bands' lowest scores, ascending

    def stall_after_for(self, track: str | None) -> tuple[timedelta, ...]:
        return self.track_stall_after.get(track, self.stall_after)

    def checkpoint_for(self, track: str | None) -> timedelta:
        return self.track_checkpoint.get(track, self.checkpoint)

    def band(self, score: float) -> str:
        """Same as `Priorities.band`, without the pydantic attribute walk."""
        for lowest, priority in self.bands:
            if score >= lowest:
                return priority
        return "P3"


def compile_rules(rules: Rules) -> RulePlan:
    journey, stall_rules, scoring = rules.journey, rules.stall_rules, rules.scoring
    by_rule = {name: getattr(stall_rules, name) for name in RULE_NAMES}
    return RulePlan(
        rules=rules,
        step_events=tuple(s.event for s in journey.steps),
        step_index={s.event: i for i, s in enumerate(journey.steps)},
        step_names={s.event: s.name for s in journey.steps},
        step_labels={s.event: clip_label(s.name) for s in journey.steps},
        stall_after=tuple(timedelta(hours=s.stall_after_hours) for s in journey.steps),
        activation_event=journey.activation_event,
        tracked_events=frozenset([*(s.event for s in journey.steps), journey.activation_event]),
        checkpoint=timedelta(days=journey.checkpoint_days),
        renewal_window_days=journey.renewal_window_days,
        track_conditions=tuple(
            TrackCondition(
                track=r.track,
                min_arr=r.min_arr,
                max_arr=r.max_arr,
                plans=None if r.plans is None else frozenset(p.strip().casefold() for p in r.plans),
                min_seats=r.min_seats,
                max_seats=r.max_seats,
            )
            for r in rules.tracks.rules
        ),
        default_track=rules.tracks.default,
        track_stall_after={
            t: tuple(timedelta(hours=th.stall_after_hours) for _ in journey.steps)
            for t, th in _track_thresholds(rules) if th.stall_after_hours is not None
        },
        track_checkpoint={
            t: timedelta(days=th.checkpoint_days) for t, th in _track_thresholds(rules) if th.checkpoint_days is not None
        },
        enabled=frozenset(name for name, rule in by_rule.items() if rule.enabled),
        weights={name: rule.weight for name, rule in by_rule.items()},
        spike_window=timedelta(days=stall_rules.ticket_spike.window_days),
        spike_window_days=stall_rules.ticket_spike.window_days,
        spike_min_tickets=stall_rules.ticket_spike.min_tickets,
        spike_min_same_topic=stall_rules.ticket_spike.min_same_topic,
        usage_ratio=stall_rules.usage_drop.ratio,
        usage_min_previous=stall_rules.usage_drop.min_previous_days,
        usage_recover_ratio=max(stall_rules.usage_drop.recover_ratio, stall_rules.usage_drop.ratio),
        step_confirm=timedelta(hours=stall_rules.step_stall.confirm_hours),
        not_activated_confirm=timedelta(hours=stall_rules.not_activated.confirm_hours),
        renewal_within_days=stall_rules.renewal_risk.within_days,
        renewal_within=timedelta(days=stall_rules.renewal_risk.within_days),
        renewal_window=timedelta(days=journey.renewal_window_days),
        renewal_lead=max(timedelta(days=stall_rules.renewal_risk.within_days),
                         timedelta(days=journey.renewal_window_days)),
        per_day_past_threshold=scoring.per_day_past_threshold,
        max_time_factor=scoring.max_time_factor,
        per_open_ticket=scoring.per_open_ticket,
        max_ticket_factor=scoring.max_ticket_factor,
        payment_failed_friction=scoring.payment_failed,
        renewal_near_friction=scoring.renewal_near,
        stage_weights={stage: scoring.stage_weights.get(stage, 1.0) for stage in STAGES},
        bands=((rules.priorities.P0, "P0"), (rules.priorities.P1, "P1"), (rules.priorities.P2, "P2")),
        band_floors=tuple(sorted((rules.priorities.P0, rules.priorities.P1, rules.priorities.P2))),
    )


def _track_thresholds(rules: Rules):
    return [(t, rules.tracks.settings(t).thresholds) for t in TRACKS]


# Keyed on id(): the cached plan holds a strong reference to its Rules, so the id cannot be
# reused by another object while the entry lives. Rules change rarely (a reload, a backtest),
# so a tiny cache that is simply cleared when full is enough.
_CACHE: dict[int, RulePlan] = {}
_CACHE_SIZE = 16


def plan_for(rules: Rules | RulePlan) -> RulePlan:
    # Called once per domain function call: the scan passes its plan, others a cached Rules.
    if type(rules) is RulePlan:
        return rules
    plan = _CACHE.get(id(rules))
    if plan is not None and plan.rules is rules:
        return plan
    plan = compile_rules(rules)
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.clear()
    _CACHE[id(rules)] = plan
    return plan
