from __future__ import annotations

import pytest

from rules.config import Rules
from rules.tracks import assign_track


@pytest.mark.parametrize(
    ("arr", "plan", "seats", "track"),
    [
        (50_000, None, None, "high_touch"),
        (25_000, None, None, "high_touch"),  # bounds are inclusive
        (24_999, None, None, "standard"),
        (None, "Enterprise", None, "high_touch"),  # plans ignore case
        (3_000, "enterprise", None, "high_touch"),  # first matching rule wins
        (3_000, None, None, "self_serve"),
        (5_000, None, None, "self_serve"),
        (5_001, None, None, "standard"),
        (None, " Starter ", None, "self_serve"),
        (12_000, "pro", 40, "standard"),
        (None, None, None, "standard"),
        (0, None, None, "standard"),  # 0 ARR is unknown, not "tiny": low confidence -> default
        (-5, None, None, "standard"),
        (None, "", None, "standard"),
    ],
)
def test_default_tracks(rules, arr, plan, seats, track):
    assert assign_track(arr, plan, seats, rules) == track


def _with_tracks(rules: Rules, track_rules: list[dict], default: str = "standard") -> Rules:
    data = rules.model_dump(by_alias=True)
    data["tracks"] = {"default": default, "rules": track_rules}
    return Rules.model_validate(data)


def test_all_conditions_of_a_rule_must_hold(rules):
    custom = _with_tracks(rules, [{"track": "high_touch", "min_arr": 10_000, "min_seats": 50, "plans": ["pro"]}])
    assert assign_track(20_000, "Pro", 60, custom) == "high_touch"
    assert assign_track(20_000, "Pro", 49, custom) == "standard"
    assert assign_track(20_000, "team", 60, custom) == "standard"
    assert assign_track(9_000, "pro", 60, custom) == "standard"


def test_condition_on_missing_value_does_not_hold(rules):
    custom = _with_tracks(rules, [{"track": "self_serve", "max_seats": 5}, {"track": "self_serve", "max_arr": 1000}],
                          default="high_touch")
    assert assign_track(None, None, None, custom) == "high_touch"
    assert assign_track(None, None, 3, custom) == "self_serve"
    assert assign_track(None, None, 6, custom) == "high_touch"
    assert assign_track(500, None, None, custom) == "self_serve"


def test_seat_bounds_are_inclusive(rules):
    custom = _with_tracks(rules, [{"track": "high_touch", "min_seats": 10, "max_seats": 20}])
    assert [assign_track(None, None, n, custom) for n in (9, 10, 20, 21)] == [
        "standard", "high_touch", "high_touch", "standard"]


def test_no_rules_means_default(rules):
    assert assign_track(1e9, "enterprise", 1000, _with_tracks(rules, [], default="self_serve")) == "self_serve"
