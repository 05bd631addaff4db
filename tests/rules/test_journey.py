from __future__ import annotations

import importlib.resources
from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from rules.config import Rules, parse_rules
from rules.journey import compute_journey, merge_step_times, parse_step_times, to_utc
from rules.plan import plan_for

UTC = timezone.utc
T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
RULES = parse_rules(importlib.resources.files("rules").joinpath("default_rules.toml").read_text())
TRACKED = plan_for(RULES).tracked_events


def at(days: float = 0, hours: float = 0) -> datetime:
    return T0 + timedelta(days=days, hours=hours)


def journey(steps, **kw):
    return compute_journey(steps, RULES, **kw)


def test_nothing_known_waits_on_signup_without_dates():
    state = journey({})
    assert state.stage == "Onboarding"
    assert state.waiting_step == "Signed Up"
    assert (state.signup_at, state.waiting_since, state.stalled_at, state.checkpoint_at) == (None, None, None, None)
    assert state.steps_done == 0


def test_first_seen_stands_in_for_signup():
    state = journey({}, first_seen_at=at())
    assert state.signup_at == at()
    assert state.waiting_step == "Signed Up"
    assert state.waiting_since == at()
    assert state.stalled_at == at(hours=48)
    assert state.checkpoint_at == at(days=14)


def test_signup_event_wins_over_first_seen():
    state = journey({"Signed Up": at(1)}, first_seen_at=at())
    assert state.signup_at == at(1)
    assert state.checkpoint_at == at(15)


def test_signed_up_waits_on_next_step():
    state = journey({"Signed Up": at()})
    assert state.stage == "Onboarding"
    assert state.waiting_step == "Project Created"
    assert state.waiting_since == at()
    assert state.stalled_at == at(2)
    assert state.checkpoint_at == at(14)
    assert state.steps_done == 1


def test_out_of_order_steps_wait_on_first_missing_since_latest_progress():
    # Integration connected before any project: still waits on "Project Created", but the
    # clock restarts at the latest progress.
    state = journey({"Signed Up": at(), "Integration Connected": at(1)})
    assert state.waiting_step == "Project Created"
    assert state.waiting_since == at(1)
    assert state.stalled_at == at(3)
    assert state.steps_done == 2


def test_late_event_moves_waiting_since_forward():
    stored = merge_step_times({}, [("Signed Up", at())], TRACKED)
    before = journey(parse_step_times(stored))
    assert (before.waiting_step, before.waiting_since) == ("Project Created", at())
    # A "Project Created" that happened a day later arrives late.
    stored = merge_step_times(stored, [("Project Created", at(1))], TRACKED)
    after = journey(parse_step_times(stored))
    assert (after.waiting_step, after.waiting_since, after.stalled_at) == ("Integration Connected", at(1), at(3))


def test_late_earlier_event_moves_waiting_since_back():
    events = [("Signed Up", at()), ("Project Created", at(1)), ("Invite Sent", at(4))]
    stored = merge_step_times({}, events, TRACKED)
    before = journey(parse_step_times(stored))
    assert (before.waiting_step, before.waiting_since) == ("Integration Connected", at(4))
    # The invite really happened on day 2; its event only arrives now.
    stored = merge_step_times(stored, [("Invite Sent", at(2))], TRACKED)
    after = journey(parse_step_times(stored))
    assert (after.waiting_step, after.waiting_since, after.stalled_at) == ("Integration Connected", at(2), at(4))


def test_repeated_later_event_changes_nothing():
    stored = merge_step_times({}, [("Signed Up", at()), ("Project Created", at(1))], TRACKED)
    again = merge_step_times(stored, [("Project Created", at(5))], TRACKED)
    assert again == stored


def test_all_steps_done_waits_on_activation_without_step_stall():
    steps = {"Signed Up": at(), "Project Created": at(1), "Integration Connected": at(2), "Invite Sent": at(3)}
    state = journey(steps)
    assert state.stage == "Activation"
    assert state.waiting_step == "Report Shared"
    assert state.waiting_since == at(3)
    assert state.stalled_at is None  # the not_activated checkpoint covers it
    assert state.checkpoint_at == at(14)
    assert state.steps_done == 4


def test_activation_ends_onboarding():
    state = journey({"Signed Up": at(), "Report Shared": at(3)})
    assert state.stage == "Adoption"
    assert state.activated_at == at(3)
    assert (state.waiting_step, state.waiting_since, state.stalled_at, state.checkpoint_at) == (None,) * 4
    assert state.signup_at == at()
    assert state.steps_done == 1


def test_activation_hint_and_event_earliest_wins():
    assert journey({"Report Shared": at(5)}, activated_at_hint=at(3)).activated_at == at(3)
    assert journey({"Report Shared": at(2)}, activated_at_hint=at(3)).activated_at == at(2)
    assert journey({"Signed Up": at()}, activated_at_hint=at(3)).stage == "Adoption"


def test_untracked_events_are_ignored():
    state = journey({"Signed Up": at(), "Page Viewed": at(9)})
    assert state.waiting_since == at()
    assert state.steps_done == 1


def test_renewal_stage_needs_now_activation_and_window():
    steps = {"Signed Up": at(), "Report Shared": at(1)}
    now = at(100)
    today = now.date()
    assert journey(steps, renewal_date=today + timedelta(days=60), now=now).stage == "Renewal"
    assert journey(steps, renewal_date=today, now=now).stage == "Renewal"
    assert journey(steps, renewal_date=today + timedelta(days=61), now=now).stage == "Adoption"
    assert journey(steps, renewal_date=today - timedelta(days=1), now=now).stage == "Adoption"
    assert journey(steps, renewal_date=today + timedelta(days=10)).stage == "Adoption"  # no now
    # Not activated: still onboarding, whatever the renewal date.
    assert journey({"Signed Up": at()}, renewal_date=today, now=now).stage == "Onboarding"


def test_churn_risk_overrides_stage():
    assert journey({"Signed Up": at(), "Report Shared": at(1)}, churn_risk=True).stage == "Churn risk"
    assert journey({"Signed Up": at()}, churn_risk=True).stage == "Churn risk"


def test_each_step_uses_its_own_threshold():
    data = RULES.model_dump(by_alias=True)
    data["journey"]["steps"][2]["stall_after_hours"] = 6
    custom = Rules.model_validate(data)
    state = compute_journey({"Signed Up": at(), "Project Created": at(1)}, custom)
    assert state.waiting_step == "Integration Connected"
    assert state.stalled_at == at(1, hours=6)
    assert custom.journey.checkpoint_days == 14


def test_merge_keeps_earliest_and_only_tracked_events():
    merged = merge_step_times(
        {"Signed Up": at(1).isoformat()},
        [("Signed Up", at(2)), ("Signed Up", at()), ("Page Viewed", at()), ("Report Shared", at(3))],
        TRACKED,
    )
    assert merged == {"Signed Up": at().isoformat(), "Report Shared": at(3).isoformat()}


def test_merge_accepts_strings_and_datetimes_and_normalises_to_utc():
    paris = timezone(timedelta(hours=1))
    merged = merge_step_times(
        {"Signed Up": datetime(2025, 3, 1, 10, 0, tzinfo=paris), "Project Created": "2025-03-02T09:00:00Z"},
        [("Project Created", datetime(2025, 3, 2, 9, 30))],  # naive: taken as UTC
        TRACKED,
    )
    assert merged == {"Signed Up": "2025-03-01T09:00:00+00:00", "Project Created": "2025-03-02T09:00:00+00:00"}
    assert parse_step_times(merged) == {"Signed Up": at(), "Project Created": at(1)}


def test_merge_compares_times_not_strings():
    # "+05:00" sorts after "+00:00" as text but is the earlier instant here.
    east = "2025-03-01T12:00:00+05:00"  # 07:00 UTC
    merged = merge_step_times({"Signed Up": at().isoformat()}, [("Signed Up", to_utc(east))], TRACKED)
    assert merged["Signed Up"] == "2025-03-01T07:00:00+00:00"


def test_merge_keeps_stored_entries_of_untracked_events():
    merged = merge_step_times({"Old Step": at().isoformat()}, [("Old Step", at(-1))], TRACKED)
    assert merged == {"Old Step": at().isoformat()}


# --- order and batching independence -------------------------------------------------------

EVENTS = st.sampled_from([*plan_for(RULES).step_events, "Report Shared", "Page Viewed"])
TIMES = st.integers(min_value=0, max_value=60 * 24 * 30).map(lambda m: T0 + timedelta(minutes=m))
EVENT_LISTS = st.lists(st.tuples(EVENTS, TIMES), max_size=25)


def _fold(batches, first_seen):
    stored: dict[str, str] = {}
    for batch in batches:
        stored = merge_step_times(stored, batch, TRACKED)
    return stored, compute_journey(parse_step_times(stored), RULES, first_seen_at=first_seen)


@settings(max_examples=300, deadline=None)
@given(events=EVENT_LISTS, data=st.data(), first_seen=st.none() | TIMES)
def test_any_order_and_batching_gives_the_same_journey(events, data, first_seen):
    reference = _fold([events], first_seen)
    shuffled = data.draw(st.permutations(events))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(shuffled)), max_size=5)))
    bounds = [0, *cuts, len(shuffled)]
    batches = [shuffled[a:b] for a, b in zip(bounds, bounds[1:])]
    assert _fold(batches, first_seen) == reference


@settings(max_examples=300, deadline=None)
@given(events=EVENT_LISTS, first_seen=st.none() | TIMES)
def test_journey_invariants(events, first_seen):
    stored, state = _fold([events], first_seen)
    steps = parse_step_times(stored)
    reached = [steps[e] for e in plan_for(RULES).step_events if e in steps]
    assert state.steps_done == len(reached)
    if state.activated_at is not None:
        assert state.stage == "Adoption"
        assert state.waiting_step is None and state.stalled_at is None and state.checkpoint_at is None
        return
    assert state.waiting_step is not None
    if state.waiting_since is not None:
        assert all(t <= state.waiting_since for t in reached)
        assert state.waiting_since in [*reached, state.signup_at]
    if state.stalled_at is not None:
        assert state.stalled_at - state.waiting_since == timedelta(hours=48)
    if state.signup_at is not None:
        assert state.checkpoint_at == state.signup_at + timedelta(days=14)
