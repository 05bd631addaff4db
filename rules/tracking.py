"""Tracking health: is an event, or a whole source, arriving far less than it usually does?

Pure: counts in, findings out; the caller reads the hourly counters (storage.models
EventVolumeHour) and passes `now`.

A subject is (source, event name), or (source, "") for everything a source sends. Its series
maps the start of each UTC hour to the events received in that hour. The detector compares
the trailing window ending `now` with the same hours of the day on each of the previous
`baseline_days` days, so a product that is quiet at night is compared with earlier nights,
not with its afternoons. Partial hours count pro rata.

What a window is compared with is a quiet day's count: the second lowest of the baseline
days. The lowest alone would let one past outage (a zero) switch detection off for a week;
the median would flag every weekend of a B2B product as a drop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Mapping

from rules._text import duration
from rules.config import Tracking

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
MAX_WINDOW_HOURS = 24  # a drop is judged on at most the last day
MIN_DAYS = 3  # fewer comparable days than this: too little history to call anything unusual
# A source is "usually not quiet" in those hours when a quiet day still brought this many
# events: the chance of a silent window by bad luck is then below 1% (Poisson, e^-5).
QUIET_MIN_EXPECTED = 5

Subject = tuple[str, str]  # (source, event name); the name "" is the whole source
Series = Mapping[datetime, int]  # start of the UTC hour -> events received in that hour


@dataclass(frozen=True)
class VolumeFinding:
    """One subject arriving far below its baseline (an event) or not at all (a source)."""

    source: str
    name: str  # the event name, "" for a source gone quiet
    hours: float  # the window judged, ending now
    seen: float  # events received in the window
    expected: float  # a quiet day's count for the same hours

    @property
    def quiet_source(self) -> bool:
        return self.name == ""

    @property
    def detail(self) -> str:
        """One line for Slack (the caller escapes it)."""
        window = duration(timedelta(hours=self.hours))
        if self.quiet_source:
            return (f"no events from {self.source} for {window}; a quiet day of the last week "
                    f"brought {_round(self.expected)} in those hours")
        drop = 1 - self.seen / self.expected if self.expected else 1.0
        return (f"{_round(self.seen)} in the last {window}, against {_round(self.expected)} on a quiet "
                f"day of the last week (-{drop:.0%})")


def volume_findings(series: Mapping[Subject, Series], now: datetime, cfg: Tracking, *,
                    history_from: datetime | None, open_since: Mapping[Subject, datetime] | None = None,
                    ) -> list[VolumeFinding]:
    """Every subject whose volume dropped (`volume_drop_ratio`) or whose source went quiet
    (`quiet_source_hours`), ordered by source and name.

    `history_from`: when counting began (the oldest counter); earlier days are not evidence.
    `open_since`: subjects with an open drop and when it began. Their baseline is taken from
    days before the drop, so a drop is not forgotten once its own days fill the baseline; an
    event that came back (or one whose drop outlived the history) is judged by whether it
    arrives at all (`min_window_events` in the last day). An event of a quiet source is not
    reported on its own: the source's finding covers it.
    """
    open_since = open_since or {}
    findings: list[VolumeFinding] = []
    quiet: set[str] = set()
    for (source, name), counts in sorted(series.items()):
        if name:
            continue
        found = _quiet_source(source, counts, now, cfg, history_from, open_since.get((source, "")))
        if found:
            quiet.add(source)
            findings.append(found)
    for (source, name), counts in sorted(series.items()):
        if name and source not in quiet:
            found = _dropped(source, name, counts, now, cfg, history_from, open_since.get((source, name)))
            if found:
                findings.append(found)
    return findings


def _dropped(source: str, name: str, counts: Series, now: datetime, cfg: Tracking,
             history_from: datetime | None, since: datetime | None) -> VolumeFinding | None:
    days = _baseline_days(now, MAX_WINDOW_HOURS, cfg.baseline_days, history_from, since)
    if len(days) < MIN_DAYS:
        if since is None:
            return None
        # An open drop without days left to compare with: open until it arrives again.
        seen = window_count(counts, now - MAX_WINDOW_HOURS * HOUR, now)
        return VolumeFinding(source, name, MAX_WINDOW_HOURS, seen, cfg.min_window_events) \
            if seen < cfg.min_window_events else None
    daily = sorted(window_count(counts, now - d * DAY - DAY, now - d * DAY) for d in days)
    if daily[len(daily) // 2] < cfg.min_baseline:  # the median day: too small an event to judge
        return None
    for hours in range(1, MAX_WINDOW_HOURS + 1):
        # The shortest window a quiet day fills with `min_window_events`: short for busy events
        # (a stop is seen within the hour), long enough for the rest not to flag chance.
        expected = _quiet_day(counts, now, hours, days)
        if expected >= cfg.min_window_events:
            seen = window_count(counts, now - hours * HOUR, now)
            if seen < cfg.volume_drop_ratio * expected:
                return VolumeFinding(source, name, hours, seen, expected)
            return None
    return None


def _quiet_source(source: str, counts: Series, now: datetime, cfg: Tracking, history_from: datetime | None,
                  since: datetime | None) -> VolumeFinding | None:
    hours = cfg.quiet_source_hours
    if window_count(counts, now - hours * HOUR, now) > 0:
        return None
    days = _baseline_days(now, hours, cfg.baseline_days, history_from, since)
    if len(days) < MIN_DAYS:
        # Already reported and nothing to compare with any more: still quiet is still quiet.
        return VolumeFinding(source, "", hours, 0, 0) if since is not None else None
    expected = _quiet_day(counts, now, hours, days)
    return VolumeFinding(source, "", hours, 0, expected) if expected >= QUIET_MIN_EXPECTED else None


def _baseline_days(now: datetime, hours: float, wanted: int, history_from: datetime | None,
                   before: datetime | None) -> list[int]:
    """The days back (1, 2, ...) to compare with: `wanted` of them, each window entirely
    within the history and, for an open drop, ending before the drop began."""
    days: list[int] = []
    back = 1
    if before is not None:
        back = max(1, math.ceil((now - before) / DAY))
    while len(days) < wanted:
        start = now - back * DAY - hours * HOUR
        if history_from is None or start < history_from:
            break
        days.append(back)
        back += 1
    return days


def _quiet_day(counts: Series, now: datetime, hours: float, days: list[int]) -> float:
    """The second lowest count of the same hours over those days (see the module doc)."""
    values = sorted(window_count(counts, now - d * DAY - hours * HOUR, now - d * DAY) for d in days)
    return values[1] if len(values) > 1 else values[0]


def window_count(counts: Series, start: datetime, end: datetime) -> float:
    """Events received in [start, end): whole hours, and partial ones pro rata."""
    total = 0.0
    hour = _floor_hour(start)
    while hour < end:
        n = counts.get(hour, 0)
        if n:
            overlap = min(end, hour + HOUR) - max(start, hour)
            total += n * (overlap / HOUR)
        hour += HOUR
    return total


def _floor_hour(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def _round(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:,.1f}"
