"""Account health (rules/health.py): each factor moves the score the right way, the score stays
in 0..100, the reasons are the heaviest factors in words, and `[health]` is validated."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from rules.config import Health as Weights
from rules.config import RulesError, parse_rules
from rules.health import HealthFacts, HealthStall, account_health, trend_mark, trend_words

NOW = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)
W = Weights()
# A healthy activated account: steady usage, nothing open.
HEALTHY = HealthFacts(activated=True, steps_done=4, steps_total=4, active_days_recent=5, active_days_previous=5)


def health(facts: HealthFacts, weights: Weights = W):
    return account_health(facts, weights, NOW)


def stall(rule: str = "step_stall", priority: str = "P2", days: float = 4) -> HealthStall:
    return HealthStall(rule, priority, NOW - timedelta(days=days))


def test_a_healthy_account_scores_100_with_no_reasons():
    h = health(HEALTHY)
    assert (h.score, h.reasons, h.text) == (100, (), "100")


def test_the_brief_example_reads_as_score_then_reasons():
    facts = HealthFacts(activated=False, steps_done=2, steps_total=4, stalls=(stall("step_stall", "P2", 4),),
                        open_tickets=2)
    h = health(facts)
    # 100 - (15 for a P2 + 4 days + 7.5 for half the steps) - 10 for two tickets
    assert h.score == 64
    assert h.text == "64 · onboarding stalled 4 days, 2 open tickets"


@pytest.mark.parametrize("worse", [
    pytest.param(HEALTHY._replace(stalls=(stall(priority="P3"),)), id="a stall"),
    pytest.param(HEALTHY._replace(active_days_recent=2), id="usage down"),
    pytest.param(HEALTHY._replace(active_days_recent=0, active_days_previous=0), id="no usage"),
    pytest.param(HEALTHY._replace(open_tickets=1), id="an open ticket"),
    pytest.param(HEALTHY._replace(payment_failed=True), id="payment failed"),
    pytest.param(HEALTHY._replace(renewal_days=10), id="renewal near"),
    pytest.param(HEALTHY._replace(activated=False, steps_done=3), id="not activated"),
])
def test_each_factor_lowers_the_score_and_names_itself(worse):
    h = health(worse)
    assert h.score < 100 and len(h.reasons) == 1


def test_each_factor_grows_the_right_way():
    # A higher priority, a longer stall, more lost usage, more and escalated tickets, a
    # nearer renewal, fewer steps done: each costs more.
    assert health(HEALTHY._replace(stalls=(stall(priority="P0"),))).score \
        < health(HEALTHY._replace(stalls=(stall(priority="P1"),))).score \
        < health(HEALTHY._replace(stalls=(stall(priority="P2"),))).score \
        < health(HEALTHY._replace(stalls=(stall(priority="P3"),))).score
    assert health(HEALTHY._replace(stalls=(stall(days=9),))).score < health(HEALTHY._replace(stalls=(stall(days=2),))).score
    assert health(HEALTHY._replace(active_days_recent=1)).score < health(HEALTHY._replace(active_days_recent=4)).score
    assert health(HEALTHY._replace(active_days_recent=6)).score == 100  # more usage is not a risk
    assert health(HEALTHY._replace(open_tickets=3)).score < health(HEALTHY._replace(open_tickets=1)).score
    assert health(HEALTHY._replace(open_tickets=2, escalated_tickets=1)).score \
        < health(HEALTHY._replace(open_tickets=2)).score
    assert health(HEALTHY._replace(renewal_days=5)).score < health(HEALTHY._replace(renewal_days=40)).score
    assert health(HEALTHY._replace(renewal_days=-3)).score == 100  # passed: the renewal rule's business
    assert health(HEALTHY._replace(renewal_days=200)).score == 100  # far off
    onboarding = HealthFacts(activated=False, steps_total=4)
    assert health(onboarding._replace(steps_done=1)).score < health(onboarding._replace(steps_done=3)).score


def test_the_score_stays_within_0_and_100():
    worst = HealthFacts(
        activated=True, stalls=tuple(stall(rule, "P0", 30) for rule in ("usage_drop", "payment_failed", "ticket_spike",
                                                                            "renewal_risk")),
        active_days_recent=0, active_days_previous=7, open_tickets=40, escalated_tickets=40, payment_failed=True,
        renewal_days=0)
    assert health(worst).score == 0
    assert health(worst).reasons  # still says why
    generous = Weights(stall_P0=0, stall_P1=0, stall_P2=0, stall_P3=0, per_stall_day=0, onboarding=0, usage_drop=0,
                       no_usage=0, per_open_ticket=0, per_escalated_ticket=0, payment_failed=0, renewal_near=0)
    assert health(worst, generous) == health(HEALTHY)


def test_reasons_are_ordered_by_weight_and_capped_at_three():
    facts = HEALTHY._replace(open_tickets=1, payment_failed=True, renewal_days=30, active_days_recent=1,
                    stalls=(stall("ticket_spike", "P1", 2),))
    h = health(facts)
    # ticket spike P1 (25 + 2 + 5 for the ticket) > payment (20) > usage (20 x 4/5 = 16) > renewal (5)
    assert h.reasons == ("ticket spike for 2 days", "payment failed", "active 1 day this week, 5 the week before")
    heavier_usage = Weights(usage_drop=60)
    assert health(facts, heavier_usage).reasons[0] == "active 1 day this week, 5 the week before"


def test_a_stall_and_its_factor_make_one_reason_in_the_stall_words():
    facts = HEALTHY._replace(payment_failed=True, stalls=(stall("payment_failed", "P1", 3),))
    h = health(facts)
    assert h.reasons == ("payment failing for 3 days",)
    assert h.score == 100 - 20 - 25 - 3
    # Two onboarding stalls: the weightier one speaks for both.
    both = HealthFacts(activated=False, steps_done=1, steps_total=4,
                       stalls=(stall("step_stall", "P3", 2), stall("not_activated", "P1", 1)))
    assert health(both).reasons == ("not activated, overdue 1 day",)


def test_factors_worth_less_than_a_point_give_no_reason():
    h = health(HEALTHY._replace(renewal_days=59))  # 10 x 1/60 of a point
    assert h.score == 100 and h.reasons == ()


def test_trend_words():
    assert trend_words(62, 71) == "↓ from 71 last week"
    assert trend_words(80, 71) == "↑ from 71 last week"
    assert trend_words(71, 71) == "steady over the week"
    assert trend_words(71, None) == ""
    assert (trend_mark(-9), trend_mark(3), trend_mark(0), trend_mark(None)) == ("↓9", "↑3", "", "")


# ------------------------------------------------------------------ the rules file


def test_default_rules_carry_the_default_weights(rules):
    assert rules.health == Weights()


def test_an_older_rules_file_without_health_is_still_valid(default_text):
    older = default_text[:default_text.index("# Account health")]
    assert "[health]" not in older
    assert parse_rules(older).health == Weights()


def test_health_weights_are_validated_and_located(default_text):
    with pytest.raises(RulesError) as err:
        parse_rules(default_text.replace("stall_P1 = 25", "stall_P1 = -1"))
    [problem] = err.value.problems
    assert problem.key == "health.stall_P1" and problem.line is not None
    with pytest.raises(RulesError) as err:
        parse_rules(default_text.replace("stall_P1 = 25", "stall_P1 = 50"))
    assert "stall_P0 >= stall_P1" in str(err.value)
    with pytest.raises(RulesError) as err:
        parse_rules(default_text.replace("no_usage = 15", "no_usage = 15\nsurprise = 1"))
    assert "health.surprise" in str(err.value)
    tuned = parse_rules(default_text.replace("payment_failed = 20", "payment_failed = 40"))
    assert tuned.health.payment_failed == 40


def test_reasons_count_whole_days_so_they_change_at_most_daily():
    young = health(HEALTHY._replace(stalls=(stall("usage_drop", "P2", 0.5),)))
    assert young.reasons == ("usage down for less than a day",)
    assert health(HEALTHY._replace(stalls=(stall("usage_drop", "P2", 1.9),))).reasons == ("usage down for 1 day",)
