"""Backtest figures: what a replayed history did, per day. Pure: data in, figures out.

The replay (bot/backtest/replay.py) records what happened; this turns it into the report's
figures. Days are UTC calendar days, from the day of the first record to the day of the
last, every day listed (a quiet day is a row of zeros).

Definitions:

- **pings**: real-time pings sent that day (a ping held by quiet hours counts on the day it
  goes out; one cancelled before it went out, because the stall closed, does not count);
  one per stall, whatever the number of destinations. **max per CSM**: the most any one
  owner got that day (stalls without an owner count together as "(no owner)").
- **per account** (alert fatigue as a CSM feels it): the distinct accounts pinged that day,
  those pinged two or more times that day ("pinged twice"), and the most pings one account
  got that day; in the totals, the distinct accounts pinged at all, the account-days pinged
  twice and the most one account got in one day. A ping's account is its stall's, so this
  holds whether the router pings per stall or once per account on a lead stall.
- **pings per CSM**: the mean over the owners (and "(no owner)") pinged at least once that
  day; in the totals, the mean over every such owner-day, and the max (max per CSM).
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
  hours of opening; the noise rate is their share of the stalls opened.
- **stalls per account**: stalls opened / the distinct accounts they were opened on.
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
    account_id: str | None = None  # the stall's account; None: unknown, the ping counts as its own account

    @property
    def account_key(self) -> str:
        return self.account_id if self.account_id is not None else f"(stall {self.stall_id})"


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
    accounts_pinged: int = 0
    accounts_pinged_twice: int = 0  # pinged two or more times that day
    max_pings_per_account: int = 0
    csms_pinged: int = 0  # owners (and "(no owner)") with at least one ping
    accounts_opened: int = 0  # distinct accounts with a stall opened that day
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

    @property
    def pings_per_csm_mean(self) -> float | None:
        return self.pings / self.csms_pinged if self.csms_pinged else None

    @property
    def stalls_per_account(self) -> float | None:
        return self.opened / self.accounts_opened if self.accounts_opened else None

    @property
    def noise_rate(self) -> float | None:
        return self.noise / self.opened if self.opened else None

    def as_dict(self) -> dict:
        return {
            "day": self.day.isoformat(), "pings": self.pings, "max_pings_per_csm": self.max_pings_per_csm,
            "busiest_csm": self.busiest_csm, "digest_items": self.digest_items, "digest_open": self.digest_open,
            "accounts_pinged": self.accounts_pinged, "accounts_pinged_twice": self.accounts_pinged_twice,
            "max_pings_per_account": self.max_pings_per_account,
            "pings_per_csm_mean": _round(self.pings_per_csm_mean), "stalls_per_account": _round(self.stalls_per_account),
            "noise_rate": _round(self.noise_rate, 3),
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
    accounts_pinged: int = 0  # distinct, over the whole history
    account_days_pinged: int = 0  # (account, day) pairs with at least one ping
    account_days_pinged_twice: int = 0  # (account, day) pairs with two or more
    max_pings_per_account_day: int = 0  # the most one account got in one day
    csm_days_pinged: int = 0  # (owner, day) pairs with at least one ping
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

    @property
    def pings_per_csm_day_mean(self) -> float | None:
        return self.pings / self.csm_days_pinged if self.csm_days_pinged else None

    @property
    def stalls_per_account(self) -> float | None:
        return self.opened / self.accounts_flagged if self.accounts_flagged else None

    def as_dict(self) -> dict:
        return {
            "days": self.days, "pings": self.pings, "max_pings_per_csm_day": self.max_pings_per_csm_day,
            "pings_by_csm": self.pings_by_csm, "digest_items_mean": _round(self.digest_items_mean),
            "accounts_pinged": self.accounts_pinged, "account_days_pinged": self.account_days_pinged,
            "account_days_pinged_twice": self.account_days_pinged_twice,
            "max_pings_per_account_day": self.max_pings_per_account_day,
            "pings_per_csm_day_mean": _round(self.pings_per_csm_day_mean),
            "stalls_per_account": _round(self.stalls_per_account),
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
        fig.csms_pinged = len(counts)
    per_account = _pings_per_account_day(pings)
    for day, counts in per_account.items():
        if day in days:
            _fill_accounts_pinged(days[day], counts)

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
        fig.accounts_opened = len({s.account_id for s in opened})

    totals = Totals(days=len(days), pings=len(pings))
    csm_total: Counter = Counter(p.owner or NO_OWNER for p in pings)
    totals.pings_by_csm = dict(sorted(csm_total.items(), key=lambda kv: (-kv[1], kv[0])))
    totals.max_pings_per_csm_day = max((f.max_pings_per_csm for f in days.values()), default=0)
    totals.csm_days_pinged = sum(f.csms_pinged for f in days.values())
    totals.accounts_pinged = len({p.account_key for p in pings if _day(p.at) in days})
    totals.account_days_pinged = sum(f.accounts_pinged for f in days.values())
    totals.account_days_pinged_twice = sum(f.accounts_pinged_twice for f in days.values())
    totals.max_pings_per_account_day = max((f.max_pings_per_account for f in days.values()), default=0)
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


def _pings_per_account_day(pings: list[PingFact]) -> dict[date, Counter]:
    """How many pings each account got, per day."""
    out: dict[date, Counter] = defaultdict(Counter)
    for p in pings:
        out[_day(p.at)][p.account_key] += 1
    return out


def _fill_accounts_pinged(fig: DayFigures, counts: Counter) -> None:
    fig.accounts_pinged = len(counts)
    fig.accounts_pinged_twice = sum(1 for n in counts.values() if n >= 2)
    fig.max_pings_per_account = max(counts.values(), default=0)


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
