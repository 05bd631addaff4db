"""Against noise (issue 12): stalls that would close by themselves within hours do not open.

- step_stall (and, if set, not_activated) opens only `confirm_hours` past its threshold;
- usage_drop, and renewal_risk's usage signal, open below `ratio` but hold until usage is back
  to `recover_ratio` (hysteresis);
- ticket_spike and payment_failed are urgent by design: never delayed.
"""

from __future__ import annotations

import importlib.resources
from datetime import datetime, timedelta, timezone

import pytest

from rules.config import Rules, RulesError, parse_rules
from rules.journey import compute_journey
from rules.model import AccountFacts, OpenStall, TicketFact
from rules.reconcile import reconcile
from rules.review import next_review
from rules.scoring import score
from rules.stalls import evaluate

UTC = timezone.utc
NOW = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
DEFAULT = importlib.resources.files("rules").joinpath("default_rules.toml").read_text()
RULES = parse_rules(DEFAULT)
ACTIVATED = {"Signed Up": NOW - timedelta(days=90), "Report Shared": NOW - timedelta(days=80)}


def facts(**kw) -> AccountFacts:
    base = dict(id="acc", name="Acme", arr=50_000, status="active", track="high_touch")
    base.update(kw)
    return AccountFacts(**base)


def signed_up(hours_ago: float, **kw) -> AccountFacts:
    """Signed up `hours_ago` hours before NOW and did nothing more: waiting on 'Project Created'."""
    return facts(steps={"Signed Up": NOW - hours_ago * HOUR}, **kw)


def usage(recent: int, previous: int, **kw) -> AccountFacts:
    return facts(steps=ACTIVATED, activated_at=ACTIVATED["Report Shared"], active_days_recent=recent,
                 active_days_previous=previous, **kw)


def live(rule: str, step: str | None = None, status: str = "open") -> OpenStall:
    return OpenStall(id=1, account_id="acc", rule=rule, step=step, status=status, score=1.0, priority="P1")


def with_settings(rule: str, **settings) -> Rules:
    data = RULES.model_dump(by_alias=True)
    data["stall_rules"][rule].update(settings)
    return Rules.model_validate(data)


def rules_of(findings) -> list[str]:
    return [f.rule for f in findings]


# --- the rules file ---------------------------------------------------------------------------


def test_the_default_rules_confirm_step_stalls_and_hold_usage_drops():
    sr = RULES.stall_rules
    assert sr.step_stall.confirm_hours == 6
    assert sr.not_activated.confirm_hours == 0
    assert sr.usage_drop.recover_ratio == 0.8


def test_a_file_without_the_new_keys_gets_the_same_defaults():
    text = DEFAULT.replace("confirm_hours = 6\n", "").replace("confirm_hours = 0\n", "").replace("recover_ratio = 0.8\n", "")
    assert "confirm_hours" not in text and "recover_ratio" not in text
    assert parse_rules(text).stall_rules == RULES.stall_rules


@pytest.mark.parametrize("old, new, key", [
    ("confirm_hours = 6", "confirm_hours = -1", "stall_rules.step_stall.confirm_hours"),
    ("confirm_hours = 6", "confirm_hours = nan", "stall_rules.step_stall.confirm_hours"),
    ("confirm_hours = 0", "confirm_hours = 1e9", "stall_rules.not_activated.confirm_hours"),
    ("recover_ratio = 0.8", "recover_ratio = 1.5", "stall_rules.usage_drop.recover_ratio"),
    ("recover_ratio = 0.8", "recover_ratio = 0.4", "stall_rules.usage_drop"),  # below ratio = 0.5
])
def test_bad_noise_settings_are_located_errors(old, new, key):
    with pytest.raises(RulesError) as err:
        parse_rules(DEFAULT.replace(old, new, 1))
    [problem] = err.value.problems
    assert problem.key == key
    assert problem.line is not None


def test_urgent_rules_take_no_confirmation():
    for rule in ("ticket_spike", "payment_failed"):
        text = DEFAULT.replace(f"[stall_rules.{rule}]\n", f"[stall_rules.{rule}]\nconfirm_hours = 6\n")
        with pytest.raises(RulesError) as err:
            parse_rules(text)
        assert err.value.problems[0].key == f"stall_rules.{rule}.confirm_hours"


def test_a_file_raising_ratio_above_the_default_recover_ratio_stays_valid():
    # Written before recover_ratio existed: the hysteresis then starts at `ratio` itself.
    rules = parse_rules(DEFAULT.replace("recover_ratio = 0.8\n", "").replace("ratio = 0.5", "ratio = 0.9"))
    assert rules_of(evaluate(usage(5, 6), rules, NOW)) == ["usage_drop"]  # 5 < 0.9 x 6
    assert evaluate(usage(6, 6), rules, NOW, open_stalls=[live("usage_drop")]) == []


# --- step_stall: the confirmation delay -------------------------------------------------------


def test_a_step_stall_opens_only_once_confirmed_and_still_dates_from_its_threshold():
    assert evaluate(signed_up(48), RULES, NOW) == []  # at the threshold
    assert evaluate(signed_up(53.9), RULES, NOW) == []  # not yet confirmed
    [finding] = evaluate(signed_up(54), RULES, NOW)
    assert (finding.rule, finding.step) == ("step_stall", "Project Created")
    assert finding.threshold_at == NOW - 6 * HOUR  # severity and detection delay count from here
    assert finding.stalled_since == NOW - 54 * HOUR


def test_a_step_done_within_the_confirmation_never_opens_a_stall():
    """The noise this removes: past 48 h at 12:00, the step done (or its late event arriving)
    at 15:00. Scanned every hour, nothing ever opens."""
    signup = NOW - 48 * HOUR
    for minutes in range(0, 6 * 60, 60):
        now = NOW + timedelta(minutes=minutes)
        steps = {"Signed Up": signup} if minutes < 180 else {"Signed Up": signup, "Project Created": NOW + 3 * HOUR}
        assert evaluate(facts(steps=steps), RULES, now) == []


def test_a_live_step_stall_holds_from_the_threshold_itself():
    # Opened before the confirmation existed (or before it was raised): it is not closed for it.
    for status in ("open", "snoozed"):
        [finding] = evaluate(signed_up(49), RULES, NOW, open_stalls=[live("step_stall", "Project Created", status)])
        assert finding.step == "Project Created"


def test_a_live_stall_on_an_earlier_step_does_not_skip_the_next_steps_confirmation():
    moved_on = facts(steps={"Signed Up": NOW - 100 * HOUR, "Project Created": NOW - 50 * HOUR})
    stale = live("step_stall", "Project Created")
    assert evaluate(moved_on, RULES, NOW, open_stalls=[stale]) == []
    # ... so reconcile closes the old step's stall and opens nothing yet.
    changes = reconcile("acc", "active", [stale], [], NOW)
    assert [c.action for c in changes] == ["auto_resolve"]
    # Resolved stalls are history, not live: they waive nothing.
    assert evaluate(signed_up(50), RULES, NOW, open_stalls=[live("step_stall", "Project Created", "resolved")]) == []


def test_confirm_hours_zero_opens_at_the_threshold_as_before():
    rules = with_settings("step_stall", confirm_hours=0)
    assert evaluate(signed_up(47.9), rules, NOW) == []
    [finding] = evaluate(signed_up(48), rules, NOW)
    assert finding.threshold_at == NOW


def test_the_confirmation_counts_from_a_tracks_own_threshold():
    rules = parse_rules(DEFAULT + "\n[tracks.high_touch.thresholds]\nstall_after_hours = 72\n")
    assert evaluate(signed_up(77.9), rules, NOW) == []
    assert rules_of(evaluate(signed_up(78), rules, NOW)) == ["step_stall"]
    assert rules_of(evaluate(signed_up(54, track="standard"), rules, NOW)) == ["step_stall"]


def test_not_activated_can_be_confirmed_too():
    rules = with_settings("not_activated", confirm_hours=12)
    # 14 days after signup and the first step done: only not_activated is in question.
    at_checkpoint = facts(steps={"Signed Up": NOW - timedelta(days=14), "Project Created": NOW - HOUR})
    assert evaluate(at_checkpoint, RULES, NOW)[0].rule == "not_activated"  # default: no delay
    assert evaluate(at_checkpoint, rules, NOW) == []
    assert evaluate(at_checkpoint, rules, NOW, open_stalls=[live("not_activated")])[0].rule == "not_activated"
    [finding] = evaluate(at_checkpoint, rules, NOW + 12 * HOUR)
    assert finding.rule == "not_activated" and finding.threshold_at == NOW


def test_urgent_rules_are_never_delayed():
    rules = with_settings("step_stall", confirm_hours=48)
    tickets = tuple(TicketFact(f"t{n}", NOW - n * HOUR, "open", "sso") for n in range(3))
    spiking = facts(steps=ACTIVATED, activated_at=ACTIVATED["Report Shared"], tickets=tickets)
    [spike] = evaluate(spiking, rules, NOW)
    assert spike.rule == "ticket_spike" and spike.threshold_at == NOW  # the third ticket: at once
    failed = facts(steps=ACTIVATED, activated_at=ACTIVATED["Report Shared"], payment_failed_at=NOW)
    assert rules_of(evaluate(failed, rules, NOW)) == ["payment_failed"]


# --- the review schedules the confirmation ----------------------------------------------------


def test_the_review_wakes_the_account_when_its_stall_is_confirmed():
    for confirm in (0, 6, 30):
        rules = with_settings("step_stall", confirm_hours=confirm)
        account = signed_up(49)  # stalled an hour ago
        journey = compute_journey(account.steps, rules, track=account.track)
        findings = evaluate(account, rules, NOW)
        scored = [(f, score(f, account, rules, NOW)) for f in findings]
        due = next_review(account, journey, scored, rules, NOW)
        confirmed_at = journey.stalled_at + confirm * HOUR
        if confirmed_at > NOW:
            assert findings == [] and due == confirmed_at
            assert rules_of(evaluate(account, rules, due)) == ["step_stall"]
            assert evaluate(account, rules, due - timedelta(seconds=1)) == []
        else:
            assert rules_of(findings) == ["step_stall"]


def test_the_review_wakes_the_account_when_not_activated_is_confirmed():
    rules = with_settings("not_activated", confirm_hours=12)
    account = facts(steps={"Signed Up": NOW - timedelta(days=14, hours=1), "Project Created": NOW - HOUR})
    journey = compute_journey(account.steps, rules, track=account.track)
    assert evaluate(account, rules, NOW) == []
    assert next_review(account, journey, [], rules, NOW) == journey.checkpoint_at + 12 * HOUR


# --- usage: hysteresis ------------------------------------------------------------------------


def test_usage_drop_opens_below_ratio_and_holds_until_usage_recovers():
    assert rules_of(evaluate(usage(2, 5), RULES, NOW)) == ["usage_drop"]  # 0.4 < 0.5: opens
    assert evaluate(usage(3, 5), RULES, NOW) == []  # 0.6: not enough to open ...
    held = [live("usage_drop")]
    assert rules_of(evaluate(usage(3, 5), RULES, NOW, open_stalls=held)) == ["usage_drop"]  # ... nor to close
    assert rules_of(evaluate(usage(3, 4), RULES, NOW, open_stalls=held)) == ["usage_drop"]  # 0.75 < 0.8
    assert evaluate(usage(4, 5), RULES, NOW, open_stalls=held) == []  # back to 0.8: recovered
    assert evaluate(usage(2, 2), RULES, NOW, open_stalls=held) == []  # level again


def test_a_usage_drop_to_nothing_holds_and_two_empty_weeks_clear_it():
    held = [live("usage_drop")]
    # The week before fell under min_previous_days (1 < 2), but the account did not recover.
    assert rules_of(evaluate(usage(0, 1), RULES, NOW, open_stalls=held)) == ["usage_drop"]
    assert evaluate(usage(0, 1), RULES, NOW) == []  # too little activity to open on
    assert evaluate(usage(0, 0), RULES, NOW, open_stalls=held) == []  # nothing left to compare


def test_renewal_risk_usage_signal_has_the_same_hysteresis():
    renewing = dict(renewal_date=(NOW + timedelta(days=30)).date())
    [finding] = evaluate(usage(2, 5, **renewing), with_settings("usage_drop", enabled=False), NOW)
    assert finding.rule == "renewal_risk" and "usage down" in finding.detail
    rules = with_settings("usage_drop", enabled=False)
    assert evaluate(usage(3, 4, **renewing), rules, NOW) == []
    [held] = evaluate(usage(3, 4, **renewing), rules, NOW, open_stalls=[live("renewal_risk")])
    assert held.rule == "renewal_risk" and "usage down" in held.detail
    assert evaluate(usage(4, 4, **renewing), rules, NOW, open_stalls=[live("renewal_risk")]) == []
    # A live usage_drop stall does not hold a renewal risk that is not live, nor the reverse.
    assert rules_of(evaluate(usage(3, 4, **renewing), RULES, NOW, open_stalls=[live("usage_drop")])) == ["usage_drop"]


def _replay_usage(days: list[tuple[int, int]], rules: Rules) -> tuple[int, int]:
    """(opened, auto_resolved) over daily (recent, previous) windows, evaluate + reconcile as
    the scan does."""
    stalls: list[OpenStall] = []
    opened = closed = 0
    for n, (recent, previous) in enumerate(days):
        now = NOW + timedelta(days=n)
        account = usage(recent, previous)
        scored = [(f, score(f, account, rules, now)) for f in evaluate(account, rules, now, open_stalls=stalls)]
        for change in reconcile("acc", "active", stalls, scored, now):
            if change.action == "open":
                opened += 1
                stalls = [OpenStall(n, "acc", change.rule, None, "open", change.score.score, change.score.priority)]
            elif change.action == "auto_resolve":
                closed += 1
                stalls = []
    return opened, closed


def test_a_flapping_week_opens_one_stall_instead_of_three():
    """Seen in the demo's backtest: a 5-days-a-week customer whose active days hover around
    half of the week before, one day either way."""
    flapping = [(2, 5), (3, 4), (2, 5), (3, 5), (2, 5), (3, 4), (4, 4), (5, 4)]
    no_hysteresis = with_settings("usage_drop", recover_ratio=0.5)
    assert _replay_usage(flapping, no_hysteresis) == (3, 3)  # open, close, open, close, ...
    assert _replay_usage(flapping, RULES) == (1, 1)  # opened once, closed once usage is back

