from __future__ import annotations

import importlib.resources
from datetime import date, datetime, timedelta, timezone

import pytest

from rules.config import Rules, parse_rules
from rules.journey import compute_journey
from rules.model import AccountFacts, TicketFact
from rules.stalls import evaluate

UTC = timezone.utc
NOW = datetime(2025, 6, 16, 12, 0, tzinfo=UTC)
RULES = parse_rules(importlib.resources.files("rules").joinpath("default_rules.toml").read_text())
ACTIVATED = {"Signed Up": NOW - timedelta(days=90), "Report Shared": NOW - timedelta(days=80)}


def ago(days: float = 0, hours: float = 0) -> datetime:
    return NOW - timedelta(days=days, hours=hours)


def facts(**kw) -> AccountFacts:
    base = dict(id="acc", name="Acme", arr=50_000, status="active", track="high_touch")
    base.update(kw)
    return AccountFacts(**base)


def rules_of(findings) -> list[str]:
    return [f.rule for f in findings]


def with_rule(name: str, **settings) -> Rules:
    data = RULES.model_dump(by_alias=True)
    data["stall_rules"][name].update(settings)
    return Rules.model_validate(data)


def ticket(n: int, days_ago: float, topic: str | None = "billing", status="open", priority=None) -> TicketFact:
    return TicketFact(id=f"t{n}", created_at=ago(days_ago), status=status, topic=topic, priority=priority)


# --- step_stall ------------------------------------------------------------------------------

def test_step_stall_fires_at_threshold_with_readable_detail():
    account = facts(steps={"Signed Up": ago(5), "Project Created": ago(3)})
    [finding] = evaluate(account, RULES, NOW)
    assert finding.rule == "step_stall"
    assert finding.step == "Integration Connected"
    assert finding.stalled_since == ago(3)
    assert finding.threshold_at == ago(1)
    assert finding.detail == "3 days on 'Connect integration'"
    assert finding.stage == "Onboarding"


def test_step_stall_boundary_is_inclusive():
    # The default rules confirm a step stall 6 hours past its 48-hour threshold.
    account = facts(steps={"Signed Up": ago(hours=54)})
    [finding] = evaluate(account, RULES, NOW)
    assert finding.detail == "2 days on 'Create a project'"
    assert finding.threshold_at == ago(hours=6)
    assert evaluate(facts(steps={"Signed Up": ago(hours=53.9)}), RULES, NOW) == []


def _short_steps() -> Rules:
    data = RULES.model_dump(by_alias=True)
    data["journey"]["steps"][1]["stall_after_hours"] = 5
    data["journey"]["steps"][2]["stall_after_hours"] = 20
    data["stall_rules"]["step_stall"]["confirm_hours"] = 0  # these tests are about the thresholds
    return Rules.model_validate(data)


def test_step_stall_detail_in_hours_and_singular_day():
    short = _short_steps()
    [finding] = evaluate(facts(steps={"Signed Up": ago(hours=7)}), short, NOW)
    assert finding.detail == "7 hours on 'Create a project'"
    assert finding.threshold_at == ago(hours=2)
    [finding] = evaluate(facts(steps={"Signed Up": ago(3), "Project Created": ago(1, hours=1)}), short, NOW)
    assert finding.detail == "1 day on 'Connect integration'"
    assert evaluate(facts(steps={"Signed Up": ago(3), "Project Created": ago(hours=19)}), short, NOW) == []


def test_no_step_stall_when_waiting_on_activation_or_activated():
    done = {"Signed Up": ago(5), "Project Created": ago(5), "Integration Connected": ago(5), "Invite Sent": ago(5)}
    assert evaluate(facts(steps=done), RULES, NOW) == []
    assert evaluate(facts(steps={"Signed Up": ago(5), "Report Shared": ago(4)}), RULES, NOW) == []
    assert evaluate(facts(steps={"Signed Up": ago(5)}, activated_at=ago(4)), RULES, NOW) == []


def test_step_stall_disabled():
    assert evaluate(facts(steps={"Signed Up": ago(5)}), with_rule("step_stall", enabled=False), NOW) == []


# --- not_activated -------------------------------------------------------------------------

def test_not_activated_at_checkpoint():
    done = {"Signed Up": ago(16), "Project Created": ago(15), "Integration Connected": ago(15), "Invite Sent": ago(15)}
    [finding] = evaluate(facts(steps=done), RULES, NOW)
    assert finding.rule == "not_activated"
    assert finding.step is None
    assert finding.stalled_since == ago(16)
    assert finding.threshold_at == ago(2)
    assert finding.detail == "not activated 16 days after signup"
    assert finding.stage == "Activation"


def test_not_activated_boundary_and_alongside_step_stall():
    assert rules_of(evaluate(facts(steps={"Signed Up": ago(14)}), RULES, NOW)) == ["step_stall", "not_activated"]
    assert rules_of(evaluate(facts(steps={"Signed Up": ago(13.99)}), RULES, NOW)) == ["step_stall"]
    assert rules_of(evaluate(facts(steps={"Signed Up": ago(30), "Report Shared": ago(20)}), RULES, NOW)) == []


def test_not_activated_uses_first_seen_when_signup_event_missing():
    findings = evaluate(facts(signup_at=ago(20)), with_rule("step_stall", enabled=False), NOW)
    assert [(f.rule, f.stalled_since) for f in findings] == [("not_activated", ago(20))]


# --- ticket_spike --------------------------------------------------------------------------

def test_ticket_spike_dates_from_the_ticket_that_completed_it():
    tickets = [ticket(1, 6, "Billing"), ticket(2, 4, "login"), ticket(3, 2, " billing "), ticket(4, 1, "export")]
    [finding] = evaluate(facts(steps=ACTIVATED, tickets=tickets), RULES, NOW)
    assert finding.rule == "ticket_spike"
    assert finding.stalled_since == finding.threshold_at == ago(2)
    assert finding.detail == "2 Billing tickets since Jun 10 (4 tickets in 7 days)"  # the first Billing ticket


def test_ticket_spike_needs_count_and_same_topic():
    three_topics = [ticket(1, 1, "a"), ticket(2, 1, "b"), ticket(3, 1, "c")]
    assert evaluate(facts(steps=ACTIVATED, tickets=three_topics), RULES, NOW) == []
    two = [ticket(1, 1), ticket(2, 2)]
    assert evaluate(facts(steps=ACTIVATED, tickets=two), RULES, NOW) == []
    no_topics = [ticket(1, 1, None), ticket(2, 1, ""), ticket(3, 1, "  ")]
    assert evaluate(facts(steps=ACTIVATED, tickets=no_topics), RULES, NOW) == []


def test_ticket_spike_counts_closed_tickets_but_only_inside_the_window():
    tickets = [ticket(1, 7, status="closed"), ticket(2, 3), ticket(3, 0, topic="x")]
    [finding] = evaluate(facts(steps=ACTIVATED, tickets=tickets), RULES, NOW)
    assert finding.stalled_since == NOW  # the third ticket completed it
    outside = [ticket(1, 7.01), ticket(2, 3), ticket(3, 0, topic="x")]
    assert evaluate(facts(steps=ACTIVATED, tickets=outside), RULES, NOW) == []
    future = [ticket(1, 1), ticket(2, 1), ticket(3, -1)]
    assert evaluate(facts(steps=ACTIVATED, tickets=future), RULES, NOW) == []


def test_ticket_spike_topic_tie_is_stable():
    tickets = [ticket(1, 3, "zeta"), ticket(2, 3, "alpha"), ticket(3, 2, "zeta"), ticket(4, 1, "alpha")]
    [finding] = evaluate(facts(steps=ACTIVATED, tickets=tickets), RULES, NOW)
    assert finding.detail == "2 alpha tickets since Jun 13 (4 tickets in 7 days)"
    [again] = evaluate(facts(steps=ACTIVATED, tickets=list(reversed(tickets))), RULES, NOW)
    assert again == finding


# --- usage_drop ----------------------------------------------------------------------------

def test_usage_drop_after_activation():
    [finding] = evaluate(facts(steps=ACTIVATED, active_days_recent=1, active_days_previous=5), RULES, NOW)
    assert finding.rule == "usage_drop"
    assert finding.stalled_since == finding.threshold_at == ago(7)
    assert finding.detail == "active days down 80% since Jun 9"
    assert finding.stage == "Churn risk"


@pytest.mark.parametrize(
    ("recent", "previous", "fires"),
    [(0, 2, True), (1, 2, False), (2, 4, False), (1, 4, True), (0, 1, False), (3, 7, True), (4, 7, False)],
)
def test_usage_drop_thresholds(recent, previous, fires):
    account = facts(steps=ACTIVATED, active_days_recent=recent, active_days_previous=previous)
    assert rules_of(evaluate(account, RULES, NOW)) == (["usage_drop"] if fires else [])


def test_usage_drop_needs_activation():
    account = facts(steps={"Signed Up": ago(1)}, active_days_recent=0, active_days_previous=5)
    assert evaluate(account, RULES, NOW) == []


# --- renewal_risk --------------------------------------------------------------------------

def test_renewal_risk_with_usage_down():
    renewal = NOW.date() + timedelta(days=41)
    account = facts(steps=ACTIVATED, renewal_date=renewal, active_days_recent=1, active_days_previous=5)
    findings = evaluate(account, RULES, NOW)
    assert rules_of(findings) == ["usage_drop", "renewal_risk"]
    risk = findings[1]
    window_start = datetime.combine(renewal, datetime.min.time(), UTC) - timedelta(days=60)
    assert risk.stalled_since == risk.threshold_at == window_start
    assert risk.detail == "renews in 41 days, usage down 80%"


def test_renewal_risk_with_open_escalation():
    renewal = NOW.date() + timedelta(days=10)
    tickets = [ticket(1, 20, priority="High"), ticket(2, 30, priority="urgent")]
    [finding] = evaluate(facts(steps=ACTIVATED, renewal_date=renewal, tickets=tickets), RULES, NOW)
    assert finding.detail == "renews in 10 days, 1 urgent ticket, 1 high-priority ticket"
    assert finding.stage == "Churn risk"


def test_renewal_risk_negatives_and_boundaries():
    escalation = [ticket(1, 20, priority="urgent")]
    today = NOW.date()
    def fires(renewal: date, tickets=escalation) -> bool:
        return "renewal_risk" in rules_of(evaluate(facts(steps=ACTIVATED, renewal_date=renewal, tickets=tickets), RULES, NOW))
    assert fires(today)
    assert fires(today + timedelta(days=60))
    assert not fires(today + timedelta(days=61))
    assert not fires(today - timedelta(days=1))  # renewal passed
    assert not fires(today + timedelta(days=5), [ticket(1, 20, priority="low")])
    assert not fires(today + timedelta(days=5), [ticket(1, 20, priority="urgent", status="solved")])
    assert not fires(today + timedelta(days=5), [])


def test_renewal_today_wording():
    [finding] = evaluate(facts(steps=ACTIVATED, renewal_date=NOW.date(), tickets=[ticket(1, 20, priority="high")]),
                         RULES, NOW)
    assert finding.detail == "renews today, 1 high-priority ticket"


def test_renewal_risk_uses_usage_signal_even_with_usage_drop_rule_off():
    account = facts(steps=ACTIVATED, renewal_date=NOW.date() + timedelta(days=3), active_days_recent=0,
                    active_days_previous=4)
    assert rules_of(evaluate(account, with_rule("usage_drop", enabled=False), NOW)) == ["renewal_risk"]


# --- payment_failed -------------------------------------------------------------------------

def test_payment_failed():
    [finding] = evaluate(facts(steps=ACTIVATED, payment_failed_at=ago(2, hours=3)), RULES, NOW)
    assert finding.rule == "payment_failed"
    assert finding.stalled_since == finding.threshold_at == ago(2, hours=3)
    assert finding.detail == "payment failed 2 days ago"
    assert evaluate(facts(steps=ACTIVATED, payment_failed_at=ago(hours=5)), RULES, NOW)[0].detail == "payment failed 5 hours ago"
    assert evaluate(facts(steps=ACTIVATED, payment_failed_at=NOW), RULES, NOW)[0].detail == "payment failed just now"
    assert evaluate(facts(steps=ACTIVATED), RULES, NOW) == []
    assert evaluate(facts(steps=ACTIVATED, payment_failed_at=ago(1)), with_rule("payment_failed", enabled=False), NOW) == []


# --- across rules ---------------------------------------------------------------------------

@pytest.mark.parametrize("status", ["cancelled", "churned"])
def test_suppressed_accounts_get_no_findings(status):
    account = facts(status=status, steps={"Signed Up": ago(30)}, payment_failed_at=ago(1))
    assert evaluate(account, RULES, NOW) == []


def test_trialing_and_past_due_accounts_are_evaluated():
    for status in ("trialing", "past_due"):
        assert rules_of(evaluate(facts(status=status, steps={"Signed Up": ago(3)}), RULES, NOW)) == ["step_stall"]


def test_caller_given_stage_is_used():
    account = facts(steps={"Signed Up": ago(3)}, stage="Expansion")
    assert [f.stage for f in evaluate(account, RULES, NOW)] == ["Expansion"]


def test_churn_signal_sets_stage_of_all_findings():
    account = facts(steps={"Signed Up": ago(3)}, payment_failed_at=ago(1))
    findings = evaluate(account, RULES, NOW)
    assert rules_of(findings) == ["step_stall", "payment_failed"]
    assert {f.stage for f in findings} == {"Churn risk"}


def test_renewal_stage_on_activated_account():
    account = facts(steps=ACTIVATED, renewal_date=NOW.date() + timedelta(days=30), tickets=[
        ticket(1, 1, "a"), ticket(2, 1, "a"), ticket(3, 1, "b")])
    [finding] = evaluate(account, RULES, NOW)
    assert (finding.rule, finding.stage) == ("ticket_spike", "Renewal")


def test_given_journey_is_used_instead_of_recomputing():
    account = facts(steps={"Signed Up": ago(3)})
    journey = compute_journey({"Signed Up": ago(3), "Report Shared": ago(2)}, RULES)
    assert evaluate(account, RULES, NOW, journey=journey) == []
    assert evaluate(account, RULES, NOW) != []
