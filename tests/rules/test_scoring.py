from __future__ import annotations

import importlib.resources
from datetime import datetime, timedelta, timezone

import pytest

from rules.config import Rules, parse_rules
from rules.model import AccountFacts, Finding, TicketFact
from rules.scoring import score
from rules.stalls import evaluate

UTC = timezone.utc
NOW = datetime(2025, 6, 16, 12, 0, tzinfo=UTC)
RULES = parse_rules(importlib.resources.files("rules").joinpath("default_rules.toml").read_text())


def ago(days: float = 0, hours: float = 0) -> datetime:
    return NOW - timedelta(days=days, hours=hours)


def facts(arr=50_000, **kw) -> AccountFacts:
    return AccountFacts(id="acc", name="Acme", arr=arr, status="active", track="standard", **kw)


def finding(rule="step_stall", past_days=0.0, stage="Onboarding", detail="x") -> Finding:
    return Finding(rule=rule, step=None, stalled_since=ago(past_days + 2), threshold_at=ago(past_days),
                   detail=detail, stage=stage)


def open_ticket(n: int) -> TicketFact:
    return TicketFact(id=f"t{n}", created_at=ago(30), status="open", topic=f"topic {n}")


# --- the field examples (DESIGN.md) ------------------------------------------------------------

def test_big_account_three_days_on_a_step_is_p0_realtime():
    account = facts(50_000, steps={"Signed Up": ago(5), "Project Created": ago(3)},
                    tickets=[open_ticket(1), open_ticket(2)])
    [stall] = evaluate(account, RULES, NOW)
    result = score(stall, account, RULES, NOW)
    assert result.priority == "P0"
    assert result.priority in RULES.routing.realtime
    assert result.why == ("3 days on 'Connect integration' · P0 because $50K ARR, 1 day past the 48 h threshold, "
                          "2 open tickets")
    assert result.severity == 1.21
    assert result.score == 60_500.0


def test_big_account_without_friction_is_still_p0():
    account = facts(50_000, steps={"Signed Up": ago(3)})
    result = score(evaluate(account, RULES, NOW)[0], account, RULES, NOW)
    assert (result.priority, result.severity, result.score) == ("P0", 1.1, 55_000.0)


def test_small_account_seven_days_on_a_step_is_digest_only():
    account = facts(2_400, steps={"Signed Up": ago(7)})  # $200 MRR
    [stall] = evaluate(account, RULES, NOW)
    result = score(stall, account, RULES, NOW)
    assert result.priority in ("P2", "P3")
    assert result.priority not in RULES.routing.realtime
    assert result.why == "7 days on 'Create a project' · P2 because $2.4K ARR, 5 days past the 48 h threshold"


# --- the parts of severity -----------------------------------------------------------------------

def test_time_factor_grows_per_fractional_day_and_is_capped():
    assert score(finding(past_days=0), facts(1000), RULES, NOW).severity == 1.0
    assert score(finding(past_days=2.5), facts(1000), RULES, NOW).severity == 1.25
    assert score(finding(past_days=20), facts(1000), RULES, NOW).severity == 3.0
    assert score(finding(past_days=200), facts(1000), RULES, NOW).severity == 3.0
    # A threshold in the future (clock skew) never lowers severity below the base.
    assert score(finding(past_days=-3), facts(1000), RULES, NOW).severity == 1.0


@pytest.mark.parametrize(("stage", "weight"), [("Onboarding", 1.0), ("Adoption", 0.9), ("Renewal", 1.2),
                                               ("Churn risk", 1.2), ("Expansion", 0.8), ("Unknown", 1.0)])
def test_stage_weight(stage, weight):
    assert score(finding(stage=stage), facts(1000), RULES, NOW).severity == weight


def test_rule_weight():
    assert score(finding(rule="renewal_risk"), facts(1000), RULES, NOW).severity == 1.5
    assert score(finding(rule="payment_failed"), facts(1000), RULES, NOW).severity == 1.2


def test_ticket_friction_is_capped_and_counts_open_tickets_only():
    closed = TicketFact(id="c", created_at=ago(1), status="closed", topic="x")
    assert score(finding(), facts(1000, tickets=[open_ticket(1), closed]), RULES, NOW).severity == 1.05
    many = [open_ticket(n) for n in range(30)]
    assert score(finding(), facts(1000, tickets=many), RULES, NOW).severity == 1.5


def test_payment_and_renewal_friction_not_counted_twice():
    account = facts(1000, payment_failed_at=ago(1), renewal_date=NOW.date() + timedelta(days=20))
    assert score(finding("step_stall"), account, RULES, NOW).severity == pytest.approx(1.45)
    assert score(finding("payment_failed"), account, RULES, NOW).severity == pytest.approx(1.2 * 1.2)
    assert score(finding("renewal_risk"), account, RULES, NOW).severity == pytest.approx(1.5 * 1.25)
    far = facts(1000, renewal_date=NOW.date() + timedelta(days=61))
    assert score(finding(), far, RULES, NOW).severity == 1.0
    passed = facts(1000, renewal_date=NOW.date() - timedelta(days=1))
    assert score(finding(), passed, RULES, NOW).severity == 1.0


def test_why_line_lists_friction_facts_in_order():
    account = facts(123_456.78, tickets=[open_ticket(1)], payment_failed_at=ago(1),
                    renewal_date=NOW.date() + timedelta(days=1))
    result = score(finding(detail="3 days on 'Connect integration'"), account, RULES, NOW)
    assert result.why == ("3 days on 'Connect integration' · P0 because $123.5K ARR, just past the 48 h threshold, "
                          "renewal in 1 day, payment failed, 1 open ticket")
    today = facts(1000, renewal_date=NOW.date())
    assert score(finding(detail="d"), today, RULES, NOW).why == ("d · P3 because $1K ARR, just past the 48 h threshold, "
                                                                       "renewal today")


def test_priority_bands_and_rounding():
    assert score(finding(), facts(25_000), RULES, NOW).priority == "P0"
    assert score(finding(), facts(24_999.99), RULES, NOW).priority == "P1"
    assert score(finding(), facts(10_000), RULES, NOW).priority == "P1"
    assert score(finding(), facts(2_000), RULES, NOW).priority == "P2"
    assert score(finding(), facts(1_999), RULES, NOW).priority == "P3"
    result = score(finding(past_days=1 / 3), facts(1000), RULES, NOW)
    assert result.severity == 1.033
    assert result.score == 1033.33


def test_unknown_or_zero_arr_scores_zero():
    result = score(finding(detail="d"), facts(0), RULES, NOW)
    assert (result.score, result.priority, result.why) == (0.0, "P3", "d · P3 because no ARR on record, just past the 48 h threshold")


def test_custom_bands_and_weights():
    data = RULES.model_dump(by_alias=True)
    data["priorities"] = {"P0": 100, "P1": 50, "P2": 10}
    data["scoring"]["per_day_past_threshold"] = 0
    data["stall_rules"]["step_stall"]["weight"] = 2
    custom = Rules.model_validate(data)
    result = score(finding(past_days=10), facts(40), custom, NOW)
    assert (result.severity, result.score, result.priority) == (2.0, 80.0, "P1")


def test_compiled_bands_agree_with_priorities():
    from rules.plan import plan_for
    plan = plan_for(RULES)
    for value in (0, 1_999.99, 2_000, 9_999, 10_000, 24_999.99, 25_000, 1e9):
        assert plan.band(value) == RULES.priorities.band(value)


def test_plan_is_compiled_once_per_rules_object():
    from rules.plan import plan_for
    assert plan_for(RULES) is plan_for(RULES)
    assert plan_for(plan_for(RULES)) is plan_for(RULES)
    other = Rules.model_validate(RULES.model_dump(by_alias=True))
    assert plan_for(other) is not plan_for(RULES)
    assert plan_for(other).rules is other
