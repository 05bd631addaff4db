"""Per-track overrides (`[tracks.<track>]`): routing (realtime) and thresholds, and their errors."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from rules.config import RulesError, parse_rules
from rules.journey import compute_journey
from rules.model import AccountFacts
from rules.routing import StallView, route
from rules.stalls import evaluate
from tests.rules.conftest import default_rules_text

UTC = timezone.utc
NOW = datetime(2025, 6, 16, 12, 0, tzinfo=UTC)  # a Monday noon: outside quiet hours
DEFAULT = default_rules_text()
# The default without the new keys: what every rules file written before them looks like.
OLD_STYLE = DEFAULT.replace("[tracks.self_serve]\nrealtime = false\n", "")
HIGH_TOUCH_72 = DEFAULT + "\n[tracks.high_touch.thresholds]\nstall_after_hours = 72\ncheckpoint_days = 21\n"


def problems(text: str):
    with pytest.raises(RulesError) as caught:
        parse_rules(text)
    return caught.value.problems


def view(track: str | None, priority: str = "P0", **kw) -> StallView:
    return StallView(**{"id": 1, "priority": priority, "status": "open", "owner": "jane@acme.com", "track": track, **kw})


def waiting(track: str, hours: float) -> AccountFacts:
    """An account `hours` after creating its project, waiting on the integration."""
    steps = {"Signed Up": NOW - timedelta(hours=hours + 1), "Project Created": NOW - timedelta(hours=hours)}
    return AccountFacts(id="a", name="Acme", arr=50_000, status="active", track=track, steps=steps)


def test_old_style_file_keeps_every_track_real_time_and_the_journey_thresholds():
    rules = parse_rules(OLD_STYLE)
    assert OLD_STYLE != DEFAULT
    assert all(rules.tracks.pings_realtime(t) is (t != "self_serve") for t in ("high_touch", "standard", "self_serve"))
    assert rules.journey_fingerprint() == parse_rules(DEFAULT).journey_fingerprint()
    journey = compute_journey(waiting("high_touch", 60).steps, rules, track="high_touch")
    assert journey.stalled_at == NOW - timedelta(hours=60) + timedelta(hours=48)


def test_packaged_default_routes_self_serve_to_the_digest_and_the_others_in_real_time():
    rules = parse_rules(DEFAULT)
    assert route(view("self_serve"), owner_pings_last_hour=0, now=NOW, rules=rules).kind == "digest"
    assert route(view("self_serve", owner=None), owner_pings_last_hour=0, now=NOW, rules=rules).kind == "digest"
    assert route(view("high_touch"), owner_pings_last_hour=0, now=NOW, rules=rules).kind == "ping"
    assert route(view("standard"), owner_pings_last_hour=0, now=NOW, rules=rules).kind == "ping"
    assert route(view(None), owner_pings_last_hour=0, now=NOW, rules=rules).kind == "ping"


def test_a_track_can_be_made_real_time_or_digest_only():
    text = DEFAULT.replace("[tracks.self_serve]\nrealtime = false", "[tracks.self_serve]\nrealtime = true")
    text += "\n[tracks.standard]\nrealtime = false\n"
    rules = parse_rules(text)
    assert route(view("self_serve"), owner_pings_last_hour=0, now=NOW, rules=rules).kind == "ping"
    assert route(view("standard"), owner_pings_last_hour=0, now=NOW, rules=rules).kind == "digest"


def test_a_stall_pinged_before_its_track_went_digest_only_is_still_updated_in_place():
    rules = parse_rules(DEFAULT)
    decision = route(view("self_serve", already_pinged_priority="P1"), owner_pings_last_hour=0, now=NOW, rules=rules)
    assert decision.kind == "update"


def test_high_touch_threshold_override_applies_to_that_track_only():
    rules = parse_rules(HIGH_TOUCH_72)
    assert evaluate(waiting("high_touch", 60), rules, NOW) == []
    # Found once confirmed: the default 6 hours past the track's 72-hour threshold.
    assert evaluate(waiting("high_touch", 77), rules, NOW) == []
    assert [f.rule for f in evaluate(waiting("high_touch", 78), rules, NOW)] == ["step_stall"]
    assert [f.rule for f in evaluate(waiting("standard", 60), rules, NOW)] == ["step_stall"]
    [finding] = evaluate(waiting("high_touch", 80), rules, NOW)
    assert finding.threshold_at == NOW - timedelta(hours=8)


def test_checkpoint_override_moves_the_not_activated_checkpoint():
    rules = parse_rules(HIGH_TOUCH_72)
    steps = {"Signed Up": NOW - timedelta(days=15)}
    assert compute_journey(steps, rules, track="high_touch").checkpoint_at == NOW + timedelta(days=6)
    assert compute_journey(steps, rules, track="standard").checkpoint_at == NOW - timedelta(days=1)


def test_threshold_overrides_change_the_journey_fingerprint():
    # Stored journey state (stalled_at, checkpoint_at) is recomputed when the fingerprint changes.
    assert parse_rules(HIGH_TOUCH_72).journey_fingerprint() != parse_rules(DEFAULT).journey_fingerprint()


# --- rules check: located errors --------------------------------------------------------------

@pytest.mark.parametrize(("snippet", "key", "prefix"), [
    ("[tracks.high_touch.thresholds]\nstall_after_hours = 0\n", "tracks.high_touch.thresholds.stall_after_hours",
     "stall_after_hours = 0"),
    ("[tracks.high_touch.thresholds]\ncheckpoint_days = 1e300\n", "tracks.high_touch.thresholds.checkpoint_days",
     "checkpoint_days = 1e300"),
    ('[tracks.standard]\nrealtime = "yes"\n', "tracks.standard.realtime", 'realtime = "yes"'),
    ("[tracks.standard]\nrealtim = true\n", "tracks.standard.realtim", "realtim = true"),
    ("[tracks.enterprise]\nrealtime = true\n", "tracks.enterprise", "[tracks.enterprise]"),
    ("[tracks.standard.thresholds]\nstall_after = 72\n", "tracks.standard.thresholds.stall_after",
     "stall_after = 72"),
])
def test_bad_track_overrides_are_located_errors(snippet, key, prefix):
    text = DEFAULT + "\n" + snippet
    [problem] = problems(text)
    assert problem.key == key
    lines = text.splitlines()
    assert problem.line == max(n + 1 for n, line in enumerate(lines) if line.startswith(prefix))
