"""rules.tracking: volume drops against the same hours of earlier days, and quiet sources."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Callable

import pytest

from rules.config import RulesError, Tracking, parse_rules
from rules.tracking import volume_findings, window_count

UTC = timezone.utc
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
NOW = datetime(2026, 12, 4, 14, 30, tzinfo=UTC)
CFG = Tracking()
EVENT = ("segment", "Report Viewed")


def series(per_hour: Callable[[datetime], float], *, days: int = 10, now: datetime = NOW) -> dict[datetime, int]:
    """Hourly counts from `days` before `now` up to the current (partial) hour."""
    start = (now - days * DAY).replace(minute=0)
    out = {}
    hour = start
    while hour <= now:
        n = per_hour(hour)
        if n:
            out[hour] = int(n)
        hour += HOUR
    return out


def find(data, now: datetime = NOW, cfg: Tracking = CFG, **kw):
    history = min(h for s in data.values() for h in s) if data else None
    return volume_findings(data, now, cfg, history_from=kw.pop("history_from", history), **kw)


def business_hours(busy: float, night: float) -> Callable[[datetime], float]:
    return lambda h: busy if 9 <= h.hour < 18 else night


def test_an_event_that_stops_is_found_within_the_hour():
    steady = series(lambda h: 100)
    assert find({EVENT: steady}) == []
    # Nothing since 13:00: at 14:30 the last hour is empty.
    stopped = {h: n for h, n in steady.items() if h < NOW - timedelta(minutes=90)}
    [f] = find({EVENT: stopped})
    assert (f.source, f.name, f.hours) == EVENT + (1,)  # 100/h: one hour is enough to judge
    assert (f.seen, f.expected) == (0, pytest.approx(100))
    assert f.detail == "0 in the last 1 hour, against 100 on a quiet day of the last week (-100%)"
    # Nothing since 14:00, at 14:50 (partial hours count pro rata): the last 10 minutes of
    # 13:00's 100 are in the window, a sixth of what it should hold.
    since_14 = {**stopped, NOW.replace(hour=13, minute=0): 100}
    [f] = find({EVENT: since_14}, NOW + timedelta(minutes=20))
    assert f.seen == pytest.approx(100 * 10 / 60) and f.hours == 1
    assert find({EVENT: since_14}, NOW + timedelta(minutes=5)) == []  # 25 minutes of it: not yet


def test_a_partial_drop_above_the_ratio_is_not_a_finding():
    recent = NOW - 3 * HOUR
    assert find({EVENT: series(lambda h: 25 if h >= recent else 100)}) == []  # 25% > 20%
    [f] = find({EVENT: series(lambda h: 15 if h >= recent else 100)})
    assert f.seen < 0.2 * f.expected


def test_quiet_nights_are_compared_with_earlier_nights():
    # Busy by day, near silent at night: a night is no drop, a silent afternoon is.
    night = NOW.replace(hour=3, minute=10)
    data = {EVENT: series(business_hours(200, 3), now=night)}
    assert find(data, night) == []
    # Against the whole day's average (~77 an hour) the night would read as a 96% drop; the
    # window judged is the last 7 hours, the same hours on earlier days bring 21.
    assert window_count(data[EVENT], night - 7 * HOUR, night) == pytest.approx(21)
    # The same shape with the afternoon gone:
    gone = series(lambda h: 0 if h >= NOW - 2 * HOUR else business_hours(200, 3)(h))
    [f] = find({EVENT: gone})
    assert f.hours == 1 and f.expected == pytest.approx(200)


def test_weekends_are_not_drops():
    # A B2B product: a tenth of the volume on Saturdays and Sundays. NOW is a Friday; on the
    # Saturday after, the quiet day of the last week is last Sunday.
    weekly = lambda h: 10 if h.weekday() >= 5 else 100  # noqa: E731
    saturday = NOW + DAY
    assert find({EVENT: series(weekly, now=saturday, days=12)}, saturday) == []


def test_one_past_outage_does_not_switch_detection_off():
    outage = NOW - 3 * DAY
    data = series(lambda h: 0 if outage - 6 * HOUR <= h < outage + 6 * HOUR else 100)
    stopped = {h: n for h, n in data.items() if h < NOW - 2 * HOUR}
    [f] = find({EVENT: stopped})
    assert f.name == EVENT[1]


def test_small_events_are_not_judged():
    # Under min_baseline (50) a day: a day without them is chance, not a tracking problem.
    small = series(lambda h: 2 if h.hour % 12 == 0 else 1)  # 26 a day
    assert find({EVENT: {h: n for h, n in small.items() if h < NOW - 12 * HOUR}}) == []
    # 60 a day is judged, on a window long enough for a quiet day to bring 20 events.
    bigger = series(lambda h: 5 if h.hour % 2 == 0 else 0)
    [f] = find({EVENT: {h: n for h, n in bigger.items() if h < NOW - 12 * HOUR}})
    assert f.expected >= 20 and f.hours == 8


def test_too_little_history_finds_nothing():
    data = series(lambda h: 100, days=2)
    stopped = {h: n for h, n in data.items() if h < NOW - 3 * HOUR}
    assert find({EVENT: stopped}) == []


def test_a_source_that_goes_quiet():
    billing = series(lambda h: 3)
    silent = {h: n for h, n in billing.items() if h < NOW - 7 * HOUR}
    assert find({("stripe", ""): billing}) == []
    [f] = find({("stripe", ""): silent})
    assert (f.source, f.name, f.quiet_source, f.hours, f.seen) == ("stripe", "", True, 6, 0)
    assert f.expected == pytest.approx(18)
    assert f.detail == "no events from stripe for 6 hours; a quiet day of the last week brought 18 in those hours"
    # Still sending, if little: not quiet.
    assert find({("stripe", ""): {**silent, NOW.replace(minute=0): 1}}) == []


def test_a_source_quiet_at_those_hours_anyway_is_not_reported():
    # Tickets come in business hours only: a silent night is what it always is.
    night = NOW.replace(hour=4)
    tickets = series(business_hours(4, 0), now=night)
    assert find({("tickets", ""): tickets}, night) == []


def test_a_quiet_source_covers_its_events():
    data = {("segment", ""): series(lambda h: 300), EVENT: series(lambda h: 100)}
    silent = {k: {h: n for h, n in s.items() if h < NOW - 7 * HOUR} for k, s in data.items()}
    assert [(f.source, f.name) for f in find(silent)] == [("segment", "")]


def test_an_open_drop_is_judged_against_the_days_before_it():
    # Dead for three days: those days would make the baseline zero; the days before it do not.
    began = (NOW - 3 * DAY).replace(minute=0)
    dead = series(lambda h: 0 if h >= began else 100, days=14)
    assert find({EVENT: dead}) == []  # a new look: the last week's quiet day is zero
    [f] = find({EVENT: dead}, open_since={EVENT: began})
    assert f.expected == pytest.approx(100)
    back = {**dead, NOW.replace(minute=0): 100, NOW.replace(minute=0) - HOUR: 100}
    assert find({EVENT: back}, open_since={EVENT: began}) == []


def test_an_open_drop_past_its_history_stays_open_until_events_arrive():
    began = (NOW - 10 * DAY).replace(minute=0)
    dead = series(lambda h: 0 if h >= began else 100, days=12)  # two days left from before it
    [f] = find({EVENT: dead}, open_since={EVENT: began})
    assert f.seen == 0
    arriving = {**dead, **{NOW.replace(minute=0) - i * HOUR: 10 for i in range(3)}}
    assert find({EVENT: arriving}, open_since={EVENT: began}) == []


def test_tracking_settings_parse_and_are_validated(default_text):
    rules = parse_rules(default_text)
    assert rules.tracking == Tracking()
    assert (rules.tracking.volume_drop_ratio, rules.tracking.min_baseline, rules.tracking.quiet_source_hours,
            rules.tracking.clear_after_hours) == (0.2, 50, 6, 24)
    custom = parse_rules(default_text.replace("clear_after_hours = 24", "clear_after_hours = 2"))
    assert custom.tracking.clear_after_hours == 2
    for bad in ("volume_drop_ratio = 1.5", "baseline_days = 2", "quiet_source_hours = 0", "min_baseline = 0"):
        key = bad.split(" = ")[0]
        text = "\n".join(bad if line.startswith(f"{key} = ") else line for line in default_text.splitlines())
        with pytest.raises(RulesError) as caught:
            parse_rules(text)
        assert f"tracking.{key}" in str(caught.value)
