from __future__ import annotations

import re
import tomllib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import importlib.resources

from rules.config import Routing, Rules, RulesError, parse_rules
from tests.fuzz import examples

DEFAULT = importlib.resources.files("rules").joinpath("default_rules.toml").read_text()
LINES = DEFAULT.splitlines()


def problems(text: str):
    with pytest.raises(RulesError) as caught:
        parse_rules(text)
    return caught.value.problems


def line_of(text: str, prefix: str, occurrence: int = 0) -> int:
    hits = [n + 1 for n, line in enumerate(text.splitlines()) if line.startswith(prefix)]
    return hits[occurrence]


def test_default_rules_parse_and_match_design(rules):
    assert [s.event for s in rules.journey.steps] == ["Signed Up", "Project Created", "Integration Connected", "Invite Sent"]
    assert rules.journey.activation_event == "Report Shared"
    assert {s.stall_after_hours for s in rules.journey.steps} == {48}
    assert rules.journey.checkpoint_days == 14
    assert rules.required_properties("Signed Up") == ["plan"]
    assert rules.routing.realtime == ["P0", "P1"]


# --- located errors ---------------------------------------------------------------------------

def test_missing_key_in_an_array_table_points_at_its_own_table():
    # Regression: the line finder used to run on into the next [[journey.steps]] table and
    # report the fourth step's `event =` line for a key missing from the third step.
    text = DEFAULT.replace('event = "Integration Connected"\n', "")
    [problem] = problems(text)
    assert problem.key == "journey.steps[2].event"
    assert problem.message == "required key is missing"
    assert problem.line == line_of(text, "[[journey.steps]]", 2)


def test_bad_value_in_an_array_table_points_at_the_value():
    text = re.sub(r'(event = "Integration Connected"\nname = "Connect integration"\nstall_after_hours = )48',
                  r"\g<1>-1", DEFAULT)
    [problem] = problems(text)
    assert problem.key == "journey.steps[2].stall_after_hours"
    assert problem.line == line_of(text, "stall_after_hours = -1")


def test_bad_value_in_a_nested_table_points_at_the_value():
    text = DEFAULT.replace("within_days = 60", 'within_days = "soon"')
    [problem] = problems(text)
    assert problem.key == "stall_rules.renewal_risk.within_days"
    assert problem.line == line_of(text, 'within_days = "soon"')


def test_key_not_in_the_table_points_at_the_table_header_not_a_later_table():
    # `weight` of [stall_rules.step_stall] is fine; a bad `enabled` in payment_failed must not
    # be reported at step_stall's `enabled` line.
    text = DEFAULT.replace("[stall_rules.payment_failed]\nenabled = true", '[stall_rules.payment_failed]\nenabled = "maybe"')
    [problem] = problems(text)
    assert problem.key == "stall_rules.payment_failed.enabled"
    assert problem.line == line_of(text, 'enabled = "maybe"')


def test_unknown_key_and_model_level_errors_are_located():
    text = DEFAULT.replace("P1 = 10000", "P1 = 100000\nP4 = 1")
    found = {p.key: p for p in problems(text)}
    assert found["priorities.P4"].line == line_of(text, "P4 = 1")
    assert "unknown key" in found["priorities.P4"].message
    text = DEFAULT.replace("P1 = 10000", "P1 = 100000")
    [problem] = problems(text)
    assert (problem.key, problem.line) == ("priorities", line_of(text, "[priorities]"))
    assert "P0 >= P1 >= P2" in problem.message


def test_invalid_toml_is_located():
    [problem] = problems(DEFAULT.replace("max_items = 150", "max_items = = 150"))
    assert problem.line == line_of(DEFAULT, "max_items = 150")
    assert problem.message.startswith("not valid TOML")


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("checkpoint_days = 14", "checkpoint_days = inf", "journey.checkpoint_days"),
        ("checkpoint_days = 14", "checkpoint_days = 1e300", "journey.checkpoint_days"),
        ("ratio = 0.5", "ratio = nan", "stall_rules.usage_drop.ratio"),
        ("weight = 1.5", "weight = inf", "stall_rules.renewal_risk.weight"),
        ('time = "09:00"', 'time = "09:00\\n"', "digest.time"),
        ('timezone = "UTC"', 'timezone = "Mars/Olympus"', "digest.timezone"),
        ('timezone = "UTC"', 'timezone = "zone.tab"', "digest.timezone"),
        ('timezone = "UTC"', 'timezone = "../../etc/passwd"', "digest.timezone"),
        ('max_arr = 5000', 'max_arr = 5000\nmin_arr = 6000', "tracks.rules[2]"),
    ],
)
def test_values_that_would_break_a_scan_are_rejected(old, new, key):
    assert old in DEFAULT
    [problem] = problems(DEFAULT.replace(old, new, 1))
    assert problem.key == key
    assert problem.message


def test_very_deep_timezone_path_is_an_error_not_a_crash():
    [problem] = problems(DEFAULT.replace('timezone = "UTC"', 'timezone = "' + "a/" * 3000 + 'b"'))
    assert problem.key == "digest.timezone"


def test_deeply_nested_toml_is_an_error_not_a_crash():
    [problem] = problems("a = " + "[" * 5000 + "]" * 5000)
    assert "nested too deeply" in problem.message


def test_quiet_hours_window_wraps_midnight():
    from datetime import time
    routing = Routing()
    assert routing.in_quiet_hours(time(23, 0)) and routing.in_quiet_hours(time(7, 59))
    assert not routing.in_quiet_hours(time(8, 0)) and not routing.in_quiet_hours(time(19, 59))


# --- fuzzing: only RulesError, always with a message ------------------------------------------

def check_only_rules_error(text: str) -> None:
    try:
        parsed = parse_rules(text)
    except RulesError as exc:
        assert exc.problems
        line_count = max(len(text.splitlines()), 1)
        for problem in exc.problems:
            assert problem.message.strip()
            assert str(problem).strip()
            assert problem.line is None or 1 <= problem.line <= line_count + 1
    else:
        assert isinstance(parsed, Rules)


@settings(max_examples=examples(300), deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_raises_only_rules_error(text):
    check_only_rules_error(text)


@settings(max_examples=examples(200), deadline=None)
@given(st.text(alphabet="[]{}=\"'.,# \n\tabc123-_:", max_size=200))
def test_toml_like_text_raises_only_rules_error(text):
    check_only_rules_error(text)


TOML_VALUES = st.one_of(
    st.integers(min_value=-10**20, max_value=10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),  # repr gives TOML's inf / nan too
    st.sampled_from(["true", "false", "inf", "-inf", "nan", "[]", "{}", "0", "-1", "1e400", "2025-01-01",
                     "08:00:00", '"08:00"', '"25:00"', '"Europe/Paris"', '"P0"', '["P0", "P9"]', '[1, "a"]',
                     '{ a = 1 }', '""', '"high_touch"', '"nope"', '[[1]]']),
    st.text(max_size=20).map(lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'),
)


@st.composite
def mutated_default(draw) -> str:
    lines = list(LINES)
    for _ in range(draw(st.integers(1, 6))):
        n = draw(st.integers(0, len(lines) - 1))
        line = lines[n]
        kind = draw(st.sampled_from(["delete", "value", "rename", "header", "duplicate"]))
        if kind == "delete":
            del lines[n]
        elif kind == "value" and "=" in line and not line.lstrip().startswith("#"):
            key = line.split("=", 1)[0]
            lines[n] = f"{key}= {draw(TOML_VALUES)}"
        elif kind == "rename" and "=" in line:
            key = draw(st.sampled_from(["enabled", "weight", "event", "name", "track", "P0", "x", "schema_", "steps"]))
            lines[n] = f"{key} = {line.split('=', 1)[1]}"
        elif kind == "header":
            header = draw(st.sampled_from(["[journey]", "[[journey.steps]]", "[tracks]", "[[tracks.rules]]",
                                           "[stall_rules.nope]", "[scoring.stage_weights]", "[schema]",
                                           "[[priorities]]", "[journey.steps]", "[routing.realtime]"]))
            lines.insert(n, header)
        elif kind == "duplicate":
            lines.insert(n, line)
        if not lines:
            break
    return "\n".join(lines)


@settings(max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_default())
def test_mutated_default_raises_only_rules_error(text):
    check_only_rules_error(text)


def _drop_or_retype(data, draw, depth=0):
    """Walk the parsed default and randomly delete keys or replace values with other types."""
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            action = draw(st.sampled_from(["keep"] * 6 + ["drop", "retype"]))
            if action == "drop":
                continue
            out[key] = draw(_ANY) if action == "retype" else _drop_or_retype(value, draw, depth + 1)
        return out
    if isinstance(data, list):
        return [_drop_or_retype(v, draw, depth + 1) for v in data]
    return data


_ANY = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def _to_toml(data: dict) -> str:
    """A tiny TOML writer (inline tables only), enough to round-trip mutated rules."""
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)  # TOML spells inf, -inf and nan as Python's repr does
        if isinstance(v, str):
            return _quote(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{key(k)} = {value(x)}" for k, x in v.items()) + "}"
        raise TypeError(v)

    key = _quote

    return "\n".join(f"{key(k)} = {value(v)}" for k, v in data.items() if v is not None) + "\n"


@settings(max_examples=examples(120), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_structurally_mutated_default_raises_only_rules_error(data):
    mutated = _drop_or_retype(tomllib.loads(DEFAULT), data.draw)
    mutated = _strip_none(mutated)
    try:
        text = _to_toml(mutated)
        tomllib.loads(text)
    except (TypeError, tomllib.TOMLDecodeError):
        return  # our tiny writer cannot express it; the text-level fuzzing covers odd text
    check_only_rules_error(text)


def _quote(text: str) -> str:
    """A TOML basic string: printable ASCII as is, everything else as a \\UXXXXXXXX escape."""
    return '"' + "".join(c if " " <= c <= "~" and c not in '"\\' else f"\\U{ord(c):08X}" for c in text) + '"'


def _strip_none(v):
    if isinstance(v, dict):
        return {k: _strip_none(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_strip_none(x) for x in v if x is not None]
    return v


def test_tiny_writer_round_trips_the_default():
    assert tomllib.loads(_to_toml(tomllib.loads(DEFAULT))) == tomllib.loads(DEFAULT)
    parse_rules(_to_toml(tomllib.loads(DEFAULT)))
