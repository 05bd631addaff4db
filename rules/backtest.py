"""Backtest figures: what a replayed history did, per day. Pure: data in, figures out.

The replay (bot/backtest/replay.py) records what happened; this turns it into the report's
figures. Days are UTC calendar days, from the day of the first record to the day of the
last, every day listed (a quiet day is a row of zeros).

Definitions:

- **pings**: real-time pings sent that day (a ping held by quiet hours counts on the day it
  goes out; one cancelled before it went out, because the stall closed, does not count);
  one per stall, whatever the number of destinations. **max per CSM**: the most any one
  owner got that day (stalls without an owner count together as "(no owner)").
- **digest**: the open stalls the daily digest lists (at most `digest.max_items`), and how
  many were open in all.
- **opened**: stalls opened that day, by rule, stage, track and priority as they were when
  the stall opened.
- **detection delay**: from the moment the customer stalled to the moment the stall opened,
  `opened_at - threshold_at`, where `threshold_at` is when the rule's condition became true
  on everything known when it opened (late events included): the waiting step's time plus
  its `stall_after_hours` for `step_stall`, signup plus `checkpoint_days` for
  `not_activated`, the ticket that completed the spike for `ticket_spike`, the failed
  payment for `payment_failed`. `usage_drop` and `renewal_risk` are judged on calendar
  windows with no such moment and are left out. The median over the stalls opened that day.
- **noise**: stalls opened that day that closed by themselves (auto-resolved) within 24
  hours of opening.
- **ARR flagged**: the ARR of the distinct accounts with a stall opened that day (in the
  totals: of the distinct accounts with any stall opened).
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

DELAY_RULES = frozenset({"step_stall", "not_activated", "ticket_spike", "payment_failed"})
NOISE_WINDOW = timedelta(hours=24)
NO_OWNER = "(no owner)"


@dataclass(frozen=True)
class StallFact:
    """A stall the replay opened, as it was when it opened, and how it ended."""

    id: int
    account_id: str
    rule: str
    stage: str
    track: str
    priority: str
    owner: str | None
    arr: float
    opened_at: datetime
    threshold_at: datetime
    status: str = "open"  # at the end of the replay
    resolved_at: datetime | None = None

    @property
    def delay(self) -> timedelta | None:
        if self.rule not in DELAY_RULES:
            return None
        return max(self.opened_at - self.threshold_at, timedelta(0))

    @property
    def noise(self) -> bool:
        return (self.status == "auto_resolved" and self.resolved_at is not None
                and self.resolved_at - self.opened_at <= NOISE_WINDOW)


@dataclass(frozen=True)
class PingFact:
    stall_id: int
    owner: str | None
    at: datetime  # when it went out
    priority: str


@dataclass(frozen=True)
class DigestFact:
    at: datetime  # the digest moment
    listed: int
    open_total: int
    arr_at_risk: float = 0.0


@dataclass
class DayFigures:
    day: date
    pings: int = 0
    max_pings_per_csm: int = 0
    busiest_csm: str | None = None
    digest_items: int | None = None  # None: no digest that day
    digest_open: int | None = None
    opened: int = 0
    by_rule: dict[str, int] = field(default_factory=dict)
    by_stage: dict[str, int] = field(default_factory=dict)
    by_track: dict[str, int] = field(default_factory=dict)
    by_priority: dict[str, int] = field(default_factory=dict)
    median_delay_hours: float | None = None
    noise: int = 0
    arr_flagged: float = 0.0

    def as_dict(self) -> dict:
        return {
            "day": self.day.isoformat(), "pings": self.pings, "max_pings_per_csm": self.max_pings_per_csm,
            "busiest_csm": self.busiest_csm, "digest_items": self.digest_items, "digest_open": self.digest_open,
            "opened": self.opened, "opened_by_rule": self.by_rule, "opened_by_stage": self.by_stage,
            "opened_by_track": self.by_track, "opened_by_priority": self.by_priority,
            "median_detection_delay_hours": _round(self.median_delay_hours), "noise": self.noise,
            "arr_flagged": round(self.arr_flagged, 2),
        }


@dataclass
class Totals:
    days: int = 0
    pings: int = 0
    max_pings_per_csm_day: int = 0  # the most one owner got in one day
    pings_by_csm: dict[str, int] = field(default_factory=dict)
    digest_items_mean: float | None = None
    digest_items_max: int | None = None
    opened: int = 0
    by_rule: dict[str, int] = field(default_factory=dict)
    by_stage: dict[str, int] = field(default_factory=dict)
    by_track: dict[str, int] = field(default_factory=dict)
    by_priority: dict[str, int] = field(default_factory=dict)
    median_delay_hours: float | None = None
    noise: int = 0
    noise_by_rule: dict[str, int] = field(default_factory=dict)  # noise of each rule, every rule listed
    arr_flagged: float = 0.0
    accounts_flagged: int = 0

    @property
    def noise_rate(self) -> float | None:
        return self.noise / self.opened if self.opened else None

    def as_dict(self) -> dict:
        return {
            "days": self.days, "pings": self.pings, "max_pings_per_csm_day": self.max_pings_per_csm_day,
            "pings_by_csm": self.pings_by_csm, "digest_items_mean": _round(self.digest_items_mean),
            "digest_items_max": self.digest_items_max, "opened": self.opened, "opened_by_rule": self.by_rule,
            "opened_by_stage": self.by_stage, "opened_by_track": self.by_track,
            "opened_by_priority": self.by_priority,
            "median_detection_delay_hours": _round(self.median_delay_hours), "noise": self.noise,
            "noise_rate": _round(self.noise_rate, 3), "arr_flagged": round(self.arr_flagged, 2),
            "accounts_flagged": self.accounts_flagged, "noise_by_rule": self.noise_by_rule,
        }


@dataclass
class Summary:
    days: list[DayFigures]
    totals: Totals


def summarize(stalls: list[StallFact], pings: list[PingFact], digests: list[DigestFact],
              first: date | None, last: date | None) -> Summary:
    """Per-day figures for every day from `first` to `last` (UTC dates), and the totals.
    No days (an empty history): an empty summary."""
    if first is None or last is None or last < first:
        return Summary([], Totals())
    days = {first + timedelta(days=i): DayFigures(first + timedelta(days=i)) for i in range((last - first).days + 1)}

    per_csm: dict[date, Counter] = defaultdict(Counter)
    for p in pings:
        per_csm[_day(p.at)][p.owner or NO_OWNER] += 1
    for day, counts in per_csm.items():
        if day not in days:
            continue
        fig = days[day]
        fig.pings = sum(counts.values())
        fig.busiest_csm, fig.max_pings_per_csm = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))

    for d in digests:
        fig = days.get(_day(d.at))
        if fig is not None:
            fig.digest_items, fig.digest_open = d.listed, d.open_total

    by_day: dict[date, list[StallFact]] = defaultdict(list)
    for s in stalls:
        by_day[_day(s.opened_at)].append(s)
    for day, opened in by_day.items():
        fig = days.get(day)
        if fig is None:
            continue
        _fill(fig, opened)

    totals = Totals(days=len(days), pings=len(pings))
    csm_total: Counter = Counter(p.owner or NO_OWNER for p in pings)
    totals.pings_by_csm = dict(sorted(csm_total.items(), key=lambda kv: (-kv[1], kv[0])))
    totals.max_pings_per_csm_day = max((f.max_pings_per_csm for f in days.values()), default=0)
    listed = [f.digest_items for f in days.values() if f.digest_items is not None]
    if listed:
        totals.digest_items_mean = sum(listed) / len(listed)
        totals.digest_items_max = max(listed)
    in_range = [s for s in stalls if _day(s.opened_at) in days]
    totals.opened = len(in_range)
    totals.by_rule, totals.by_stage, totals.by_track, totals.by_priority = _breakdowns(in_range)
    totals.median_delay_hours = _median_hours(in_range)
    totals.noise = sum(s.noise for s in in_range)
    # Next to opened_by_rule, so each rule's noise rate reads off the two (0 for a quiet rule).
    totals.noise_by_rule = {rule: sum(s.noise for s in in_range if s.rule == rule) for rule in totals.by_rule}
    arr: dict[str, float] = {}
    for s in in_range:
        arr[s.account_id] = s.arr
    totals.arr_flagged = sum(arr.values())
    totals.accounts_flagged = len(arr)
    return Summary([days[d] for d in sorted(days)], totals)


def _fill(fig: DayFigures, opened: list[StallFact]) -> None:
    fig.opened = len(opened)
    fig.by_rule, fig.by_stage, fig.by_track, fig.by_priority = _breakdowns(opened)
    fig.median_delay_hours = _median_hours(opened)
    fig.noise = sum(s.noise for s in opened)
    arr: dict[str, float] = {}
    for s in opened:
        arr[s.account_id] = s.arr
    fig.arr_flagged = sum(arr.values())


def _breakdowns(stalls: list[StallFact]) -> tuple[dict, dict, dict, dict]:
    def count(key) -> dict[str, int]:
        return dict(sorted(Counter(key(s) for s in stalls).items()))

    return (count(lambda s: s.rule), count(lambda s: s.stage), count(lambda s: s.track),
            count(lambda s: s.priority))


def _median_hours(stalls: list[StallFact]) -> float | None:
    delays = [s.delay.total_seconds() / 3600 for s in stalls if s.delay is not None]
    return statistics.median(delays) if delays else None


def _day(at: datetime) -> date:
    from datetime import timezone

    return at.astimezone(timezone.utc).date()


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)
