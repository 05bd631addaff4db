"""rules.routing: real-time ping decisions, quiet hours, budgets, escalation, digest timing."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.config import Digest, Routing, Rules
from rules.plan import compile_rules
from rules.routing import (
    StallView,
    digest_day,
    escalation_due,
    next_digest_at,
    quiet_hours_end,
    route,
)

UTC = timezone.utc
PARIS = ZoneInfo("Europe/Paris")


def at(y, mo, d, h=0, mi=0, s=0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=UTC)


def with_zone(rules: Rules, zone: str, digest_time: str = "09:00", **routing) -> Rules:
    update = {"digest": Digest(time=digest_time, timezone=zone)}
    if routing:
        update["routing"] = Routing(**{**rules.routing.model_dump(), **routing})
    return rules.model_copy(update=update)


def stall(priority="P1", status="open", pinged=None, snoozed_until=None, owner="jane@acme.com", **kw) -> StallView:
    return StallView(id=7, priority=priority, status=status, snoozed_until=snoozed_until,
                     already_pinged_priority=pinged, owner=owner, **kw)


# --- quiet hours (default 20:00-08:00, digest zone UTC) ------------------------------------------

@pytest.mark.parametrize("now, end", [
    (at(2025, 6, 16, 23, 0), at(2025, 6, 17, 8, 0)),   # evening: tomorrow morning
    (at(2025, 6, 16, 3, 0), at(2025, 6, 16, 8, 0)),    # after midnight: this morning
    (at(2025, 6, 16, 20, 0), at(2025, 6, 17, 8, 0)),   # the start is inside
    (at(2025, 6, 16, 7, 59, 59), at(2025, 6, 16, 8, 0)),
])
def test_quiet_hours_wrapping_midnight_hold_until_they_end(rules, now, end):
    decision = route(stall("P1"), owner_pings_last_hour=0, now=now, rules=rules)
    assert decision.kind == "hold"
    assert decision.not_before == end
    assert decision.not_before.tzinfo is not None


@pytest.mark.parametrize("now", [at(2025, 6, 16, 8, 0), at(2025, 6, 16, 12, 0), at(2025, 6, 16, 19, 59, 59)])
def test_outside_quiet_hours_p1_pings(rules, now):
    assert route(stall("P1"), owner_pings_last_hour=0, now=now, rules=rules).kind == "ping"
    assert quiet_hours_end(now, rules) is None


def test_p0_ignores_quiet_hours(rules):
    decision = route(stall("P0"), owner_pings_last_hour=0, now=at(2025, 6, 16, 23, 0), rules=rules)
    assert decision.kind == "ping"


def test_quiet_hours_disabled(rules):
    quiet_free = with_zone(rules, "UTC", quiet_hours_start=None, quiet_hours_end=None)
    assert route(stall("P1"), owner_pings_last_hour=0, now=at(2025, 6, 16, 23), rules=quiet_free).kind == "ping"


def test_quiet_hours_in_paris_across_spring_dst_change(rules):
    paris = with_zone(rules, "Europe/Paris")
    # Saturday 2025-03-29 21:30 CET; clocks go forward that night (01:00 UTC), so 08:00 on
    # Sunday is CEST, 06:00 UTC, not 07:00 UTC.
    decision = route(stall("P1"), owner_pings_last_hour=0, now=at(2025, 3, 29, 20, 30), rules=paris)
    assert decision.kind == "hold"
    assert decision.not_before == at(2025, 3, 30, 6, 0)
    assert decision.not_before.astimezone(PARIS).hour == 8
    # The night before, 08:00 was still CET.
    assert quiet_hours_end(at(2025, 3, 28, 22, 0), paris) == at(2025, 3, 29, 7, 0)
    # Sunday 06:30 UTC is 08:30 CEST: quiet hours are over (a fixed +1 offset would still hold).
    assert route(stall("P1"), owner_pings_last_hour=0, now=at(2025, 3, 30, 6, 30), rules=paris).kind == "ping"
    # And they start at 20:00 CEST = 18:00 UTC that Sunday.
    assert route(stall("P1"), owner_pings_last_hour=0, now=at(2025, 3, 30, 17, 59), rules=paris).kind == "ping"
    assert route(stall("P1"), owner_pings_last_hour=0, now=at(2025, 3, 30, 18, 0), rules=paris).kind == "hold"


def test_quiet_hours_in_paris_across_autumn_dst_change(rules):
    paris = with_zone(rules, "Europe/Paris")
    # Saturday 2025-10-25 23:00 CEST; clocks go back that night, 08:00 Sunday is CET = 07:00 UTC.
    assert quiet_hours_end(at(2025, 10, 25, 21, 0), paris) == at(2025, 10, 26, 7, 0)
    # 2025-10-26 00:30 UTC is 02:30 CEST, the first of the repeated hour: still quiet.
    assert quiet_hours_end(at(2025, 10, 26, 0, 30), paris) == at(2025, 10, 26, 7, 0)


def test_p0_ignores_quiet_hours_in_another_zone(rules):
    paris = with_zone(rules, "Europe/Paris")
    assert route(stall("P0"), owner_pings_last_hour=0, now=at(2025, 3, 29, 23), rules=paris).kind == "ping"


# --- budget ------------------------------------------------------------------------------------

def test_budget_overflow_goes_to_the_digest_with_a_note(rules):
    noon = at(2025, 6, 16, 12)
    budget = rules.routing.hourly_budget_per_csm
    assert route(stall("P1"), owner_pings_last_hour=budget - 1, now=noon, rules=rules).kind == "ping"
    over = route(stall("P1"), owner_pings_last_hour=budget, now=noon, rules=rules)
    assert over.kind == "digest"
    assert over.note == "over @jane's hourly ping budget"
    slack_owner = route(stall("P0", owner="U123ABC"), owner_pings_last_hour=budget + 3, now=noon, rules=rules)
    assert (slack_owner.kind, slack_owner.note) == ("digest", "over @U123ABC's hourly ping budget")
    nobody = route(stall("P1", owner=None), owner_pings_last_hour=budget, now=noon, rules=rules)
    assert nobody.kind == "digest" and "no owner" in nobody.note


def test_quiet_hours_hold_before_the_budget_is_looked_at(rules):
    decision = route(stall("P1"), owner_pings_last_hour=99, now=at(2025, 6, 16, 23), rules=rules)
    assert decision.kind == "hold"


def test_a_budget_overflow_stays_in_the_digest_until_the_priority_changes(rules):
    noon = at(2025, 6, 16, 12)
    overflowed = stall("P1", overflowed_priority="P1")
    decision = route(overflowed, owner_pings_last_hour=0, now=noon, rules=rules)
    assert decision.kind == "digest" and decision.note
    raised = stall("P0", overflowed_priority="P1")
    assert route(raised, owner_pings_last_hour=0, now=noon, rules=rules).kind == "ping"


# --- priorities, pings, updates ----------------------------------------------------------------

@pytest.mark.parametrize("priority", ["P2", "P3"])
def test_non_realtime_priorities_go_to_the_digest(rules, priority):
    decision = route(stall(priority), owner_pings_last_hour=0, now=at(2025, 6, 16, 12), rules=rules)
    assert decision.kind == "digest" and decision.note is None


def test_priority_change_on_a_pinged_stall_is_an_update(rules):
    noon = at(2025, 6, 16, 12)
    assert route(stall("P0", pinged="P1"), owner_pings_last_hour=0, now=noon, rules=rules).kind == "update"
    # Down to a digest-only priority: the ping is edited too, so it does not overstate.
    assert route(stall("P2", pinged="P1"), owner_pings_last_hour=0, now=noon, rules=rules).kind == "update"
    # Updates are not new notifications: the budget does not apply.
    assert route(stall("P0", pinged="P1"), owner_pings_last_hour=99, now=noon, rules=rules).kind == "update"


def test_same_priority_on_a_pinged_stall_is_none(rules):
    decision = route(stall("P1", pinged="P1"), owner_pings_last_hour=0, now=at(2025, 6, 16, 12), rules=rules)
    assert decision.kind == "none"


def test_updates_respect_quiet_hours_except_to_p0(rules):
    night = at(2025, 6, 16, 23)
    held = route(stall("P1", pinged="P0"), owner_pings_last_hour=0, now=night, rules=rules)
    assert held.kind == "hold" and held.not_before == at(2025, 6, 17, 8)
    assert route(stall("P0", pinged="P1"), owner_pings_last_hour=0, now=night, rules=rules).kind == "update"


def test_a_stall_is_never_pinged_twice(rules):
    pinged: str | None = None
    pings = 0
    now = at(2025, 6, 16, 0)
    for hour in range(72):
        priority = ("P1", "P0", "P1", "P2")[hour // 18]
        view = stall(priority, pinged=pinged)
        decision = route(view, owner_pings_last_hour=hour % 8, now=now + timedelta(hours=hour), rules=rules)
        if decision.kind == "ping":
            pings += 1
            pinged = priority
        elif decision.kind == "update":
            pinged = priority
    assert pings == 1


@pytest.mark.parametrize("status", ["resolved", "auto_resolved", "suppressed"])
def test_closed_stalls_route_nowhere(rules, status):
    for pinged in (None, "P0"):
        decision = route(stall("P0", status=status, pinged=pinged), owner_pings_last_hour=0,
                         now=at(2025, 6, 16, 12), rules=rules)
        assert decision.kind == "none"


# --- snoozes -----------------------------------------------------------------------------------

def test_snoozed_stalls_are_not_pinged(rules):
    noon = at(2025, 6, 16, 12)
    until = noon + timedelta(days=3)
    assert route(stall("P0", status="snoozed", snoozed_until=until), owner_pings_last_hour=0,
                 now=noon, rules=rules).kind == "digest"
    # Snoozed after its ping: stay silent, even on a priority change.
    assert route(stall("P0", status="snoozed", snoozed_until=until, pinged="P1"), owner_pings_last_hour=0,
                 now=noon, rules=rules).kind == "none"
    # A snooze with no end.
    assert route(stall("P0", status="snoozed"), owner_pings_last_hour=0, now=noon, rules=rules).kind == "digest"


def test_an_ended_snooze_routes_like_an_open_stall(rules):
    noon = at(2025, 6, 16, 12)
    ended = noon - timedelta(seconds=1)
    assert route(stall("P0", status="snoozed", snoozed_until=ended), owner_pings_last_hour=0,
                 now=noon, rules=rules).kind == "ping"
    # The priority moved during the snooze: the ping catches up now.
    assert route(stall("P0", status="snoozed", snoozed_until=ended, pinged="P1"), owner_pings_last_hour=0,
                 now=noon, rules=rules).kind == "update"
    # Exactly at the end, the snooze is over.
    assert route(stall("P0", status="snoozed", snoozed_until=noon), owner_pings_last_hour=0,
                 now=noon, rules=rules).kind == "ping"


# --- escalation --------------------------------------------------------------------------------

def test_escalation_timing_boundaries(rules):
    sent = at(2025, 6, 16, 12)
    delay = timedelta(minutes=rules.routing.escalate_p0_after_minutes)
    assert not escalation_due(sent, False, "P0", sent + delay - timedelta(seconds=1), rules)
    assert escalation_due(sent, False, "P0", sent + delay, rules)
    assert escalation_due(sent, False, "P0", sent + delay + timedelta(hours=5), rules)


def test_escalation_only_for_unacknowledged_p0_and_only_once(rules):
    sent = at(2025, 6, 16, 12)
    late = sent + timedelta(hours=3)
    assert not escalation_due(sent, True, "P0", late, rules)
    assert not escalation_due(sent, False, "P1", late, rules)
    assert not escalation_due(sent, False, "P0", late, rules, already_escalated=True)


def test_escalation_ignores_quiet_hours_and_uses_the_configured_delay(rules):
    quick = with_zone(rules, "UTC", escalate_p0_after_minutes=15)
    sent = at(2025, 6, 16, 23, 0)
    assert not escalation_due(sent, False, "P0", sent + timedelta(minutes=14, seconds=59), quick)
    assert escalation_due(sent, False, "P0", sent + timedelta(minutes=15), quick)


# --- digest timing -----------------------------------------------------------------------------

def test_next_digest_at_in_utc(rules):
    assert next_digest_at(at(2025, 6, 16, 8, 59), rules) == at(2025, 6, 16, 9)
    assert next_digest_at(at(2025, 6, 16, 9, 0), rules) == at(2025, 6, 17, 9)  # strictly after
    assert next_digest_at(at(2025, 12, 31, 23, 0), rules) == at(2026, 1, 1, 9)


def test_next_digest_at_across_dst_in_paris(rules):
    paris = with_zone(rules, "Europe/Paris")
    # Saturday 09:00 CET = 08:00 UTC; Sunday 09:00 CEST = 07:00 UTC.
    assert next_digest_at(at(2025, 3, 29, 7, 30), paris) == at(2025, 3, 29, 8, 0)
    assert next_digest_at(at(2025, 3, 29, 10, 0), paris) == at(2025, 3, 30, 7, 0)
    # Autumn: Saturday 09:00 CEST = 07:00 UTC; Sunday 09:00 CET = 08:00 UTC.
    assert next_digest_at(at(2025, 10, 25, 6, 0), paris) == at(2025, 10, 25, 7, 0)
    assert next_digest_at(at(2025, 10, 25, 8, 0), paris) == at(2025, 10, 26, 8, 0)


def test_next_digest_at_a_skipped_or_repeated_local_time(rules):
    # 02:30 does not exist in Paris on 2025-03-30: the digest goes at 03:30 CEST (01:30 UTC).
    skipped = with_zone(rules, "Europe/Paris", digest_time="02:30")
    assert next_digest_at(at(2025, 3, 29, 12), skipped) == at(2025, 3, 30, 1, 30)
    # 02:30 happens twice on 2025-10-26: the digest goes once, at the first (00:30 UTC).
    repeated = with_zone(rules, "Europe/Paris", digest_time="02:30")
    first = next_digest_at(at(2025, 10, 25, 12), repeated)
    assert first == at(2025, 10, 26, 0, 30)
    assert next_digest_at(first, repeated) == at(2025, 10, 27, 1, 30)


def test_next_digest_at_west_of_utc(rules):
    new_york = with_zone(rules, "America/New_York")
    # 2025-03-09: US clocks go forward. 09:00 EST = 14:00 UTC, 09:00 EDT = 13:00 UTC.
    assert next_digest_at(at(2025, 3, 8, 15), new_york) == at(2025, 3, 9, 13)
    assert next_digest_at(at(2025, 3, 8, 13), new_york) == at(2025, 3, 8, 14)


def test_digest_day_is_the_local_date_of_the_current_digest(rules):
    paris = with_zone(rules, "Europe/Paris")
    moment = at(2025, 3, 30, 7, 0)  # Sunday 09:00 CEST
    assert digest_day(moment, paris) == date(2025, 3, 30)
    assert digest_day(moment - timedelta(minutes=2), paris) == date(2025, 3, 30)  # scheduler fired early
    assert digest_day(moment - timedelta(minutes=30), paris) == date(2025, 3, 29)  # before it: yesterday's
    assert digest_day(moment + timedelta(hours=14), paris) == date(2025, 3, 30)  # a late manual run
    # 01:30 local on Monday: still Sunday's digest period.
    assert digest_day(at(2025, 3, 30, 23, 30), paris) == date(2025, 3, 30)


def test_digest_day_east_of_utc_differs_from_the_utc_date(rules):
    tokyo = with_zone(rules, "Asia/Tokyo", digest_time="08:00")
    # 2025-06-16 23:30 UTC = 2025-06-17 08:30 JST.
    assert digest_day(at(2025, 6, 16, 23, 30), tokyo) == date(2025, 6, 17)


def test_rule_plans_are_accepted_too(rules):
    plan = compile_rules(rules)
    now = at(2025, 6, 16, 23)
    assert route(stall("P1"), owner_pings_last_hour=0, now=now, rules=plan).kind == "hold"
    assert next_digest_at(now, plan) == next_digest_at(now, rules)
    assert escalation_due(now, False, "P0", now + timedelta(hours=1), plan)


ZONES = ["UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "America/Santiago"]


@settings(max_examples=300, deadline=None)
@given(
    now=st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)),
    zone=st.sampled_from(ZONES),
    clock=st.sampled_from(["00:00", "00:30", "02:30", "09:00", "23:45"]),
)
def test_digest_schedule_properties(rules, now, zone, clock):
    cfg = with_zone(rules, zone, digest_time=clock)
    nxt = next_digest_at(now, cfg)
    assert now < nxt <= now + timedelta(hours=27)
    assert nxt.tzinfo is not None and nxt.utcoffset() == timedelta(0)
    # The day a run at the digest moment claims is the local date of that moment, and every
    # moment has its own day (no two digests share a day, none is skipped).
    assert digest_day(nxt, cfg) == nxt.astimezone(ZoneInfo(zone)).date()
    after = next_digest_at(nxt, cfg)
    assert digest_day(after, cfg) == digest_day(nxt, cfg) + timedelta(days=1)


@settings(max_examples=300, deadline=None)
@given(
    now=st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)),
    zone=st.sampled_from(ZONES),
)
def test_hold_always_ends_in_the_future_outside_quiet_hours(rules, now, zone):
    cfg = with_zone(rules, zone)
    end = quiet_hours_end(now, cfg)
    if end is not None:
        assert now < end <= now + timedelta(hours=13)
        assert quiet_hours_end(end, cfg) is None


# --- backlog: stalls already old when Stallwatch first saw the account -------------------------

def test_a_stall_is_backlog_only_when_its_threshold_passed_a_day_before_first_sight():
    from rules.routing import BACKLOG_GRACE, is_backlog

    seen = at(2025, 6, 16, 9)
    assert is_backlog(seen - BACKLOG_GRACE - timedelta(minutes=1), seen)
    assert not is_backlog(seen - BACKLOG_GRACE, seen)
    assert not is_backlog(seen + timedelta(days=3), seen)  # became a stall after we saw the account: news
    assert not is_backlog(None, seen) and not is_backlog(seen, None)


def test_a_backlog_stall_goes_to_the_summary_once_then_stays_in_the_digest(rules):
    now = at(2025, 6, 16, 10)
    fresh = replace(stall("P0"), backlog=True)
    assert route(fresh, owner_pings_last_hour=0, now=now, rules=rules).kind == "backlog"
    summarised = replace(fresh, backlog_recorded=True)
    assert route(summarised, owner_pings_last_hour=0, now=now, rules=rules).kind == "digest"
    # Digest-only tracks and non-real-time priorities never reach a CSM's backlog summary either.
    assert route(replace(fresh, priority="P2"), owner_pings_last_hour=0, now=now, rules=rules).kind == "digest"
    assert route(replace(fresh, track="self_serve"), owner_pings_last_hour=0, now=now, rules=rules).kind == "digest"
