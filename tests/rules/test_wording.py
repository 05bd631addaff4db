"""The words of an alert per rule (rules/wording.py), rendered from the stall's facts and `now`:
findings come from the real rules (`evaluate`), then are rendered later, as a renderer would."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from rules.config import parse_rules
from rules.model import AccountFacts, Finding, TicketFact
from rules.scoring import score
from rules.stalls import evaluate
from rules.wording import (age_text, day_text, headline, money_compact, priority_reason, reason_text,
                           since_text)
from tests.rules.conftest import default_rules_text

UTC = timezone.utc
NOW = datetime(2025, 6, 16, 12, 0, tzinfo=UTC)  # a Monday
RULES = parse_rules(default_rules_text())
ACTIVATED = {"Signed Up": NOW - timedelta(days=90), "Report Shared": NOW - timedelta(days=80)}
HOSTILE = "<!channel> *bold* <@U0BOSS> & <https://evil.example|click> `x` 'quoted'"


def ago(days: float = 0, hours: float = 0) -> datetime:
    return NOW - timedelta(days=days, hours=hours)


def facts(**kw) -> AccountFacts:
    return AccountFacts(**{"id": "acc", "name": "Acme", "arr": 69_500, "status": "active", "track": "standard", **kw})


def ticket(n: int, days_ago: float, topic: str | None = "SSO", priority: str | None = None,
           status: str = "open") -> TicketFact:
    return TicketFact(id=f"t{n}", created_at=ago(days_ago), status=status, topic=topic, priority=priority)


def only(account: AccountFacts, rule: str) -> Finding:
    [finding] = [f for f in evaluate(account, RULES, NOW) if f.rule == rule]
    return finding


def render(finding: Finding, now: datetime, *, step_name: str | None = None,
           renewal_date: date | None = None) -> str:
    return reason_text(finding.rule, step_name=step_name, detail=finding.detail, stalled_since=finding.stalled_since,
                       threshold_at=finding.threshold_at, renewal_date=renewal_date, now=now)


# --- reason text, per rule ---------------------------------------------------------------------

def test_step_stall_counts_from_the_last_progress_at_render_time():
    stall = only(facts(steps={"Signed Up": ago(5), "Project Created": ago(4)}), "step_stall")
    assert stall.detail == "4 days on 'Connect integration'"
    assert render(stall, NOW, step_name="Connect integration") == "4 days on 'Connect integration'"
    assert render(stall, NOW + timedelta(days=3), step_name="Connect integration") == "7 days on 'Connect integration'"
    assert render(stall, NOW, step_name=None) == "4 days on the next step"


def test_not_activated_counts_from_signup():
    done = {"Signed Up": ago(16), "Project Created": ago(15), "Integration Connected": ago(15), "Invite Sent": ago(15)}
    stall = only(facts(steps=done), "not_activated")
    assert render(stall, NOW) == stall.detail == "not activated 16 days after signup"
    assert render(stall, NOW + timedelta(days=5)) == "not activated 21 days after signup"


def test_renewal_risk_recounts_the_days_and_keeps_the_stored_signals():
    renewal = NOW.date() + timedelta(days=30)
    account = facts(steps=ACTIVATED, renewal_date=renewal, tickets=[ticket(1, 20, priority="Urgent")])
    stall = only(account, "renewal_risk")
    assert stall.detail == "renews in 30 days, 1 urgent ticket"
    assert render(stall, NOW, renewal_date=renewal) == "renews in 30 days, 1 urgent ticket"
    assert render(stall, NOW + timedelta(days=29), renewal_date=renewal) == "renews in 1 day, 1 urgent ticket"
    assert render(stall, NOW + timedelta(days=30), renewal_date=renewal) == "renews today, 1 urgent ticket"
    assert render(stall, NOW + timedelta(days=32), renewal_date=renewal) == "renewal date passed 2 days ago, 1 urgent ticket"
    # Without the date, the stored words are all there is.
    assert render(stall, NOW + timedelta(days=5)) == "renews in 30 days, 1 urgent ticket"


def test_renewal_risk_counts_escalations_by_priority_and_names_the_usage_drop():
    renewal = NOW.date() + timedelta(days=10)
    tickets = [ticket(1, 3, priority="urgent"), ticket(2, 3, priority="urgent"), ticket(3, 3, priority="high"),
               ticket(4, 3, priority="low"), ticket(5, 3, priority="urgent", status="solved")]
    account = facts(steps=ACTIVATED, renewal_date=renewal, tickets=tickets, active_days_recent=2, active_days_previous=5)
    stall = only(account, "renewal_risk")
    assert stall.detail == "renews in 10 days, usage down 60%, 2 urgent tickets, 1 high-priority ticket"


def test_renewal_detail_stored_by_an_older_version_is_recounted_too():
    renewal = NOW.date() + timedelta(days=12)
    assert reason_text("renewal_risk", detail="renews in 41 days, urgent ticket open", renewal_date=renewal,
                       now=NOW) == "renews in 12 days, urgent ticket open"
    assert reason_text("renewal_risk", detail="renews today", renewal_date=renewal, now=NOW) == "renews in 12 days"


def test_usage_drop_says_how_much_and_since_when():
    stall = only(facts(steps=ACTIVATED, active_days_recent=2, active_days_previous=5), "usage_drop")
    assert stall.detail == "active days down 60% since Jun 9"
    assert render(stall, NOW) == "active days down 60% since Jun 9"
    assert render(stall, NOW + timedelta(days=20)) == "active days down 60% since Jun 9"
    none = only(facts(steps=ACTIVATED, active_days_recent=0, active_days_previous=4), "usage_drop")
    assert none.detail == "no active days since Jun 9"


def test_ticket_spike_names_the_topic_and_a_weekday_while_recent():
    tickets = [ticket(1, 6, "SSO"), ticket(2, 4, "sso "), ticket(3, 2, "SSO")]  # from Tuesday Jun 10
    stall = only(facts(steps=ACTIVATED, tickets=tickets), "ticket_spike")
    assert stall.detail == "3 SSO tickets since Jun 10"  # stored with a date: true whenever read
    assert render(stall, NOW) == "3 SSO tickets since Tuesday"
    assert render(stall, NOW + timedelta(days=1)) == "3 SSO tickets since Jun 10"  # 7 days back: a date


def test_ticket_spike_with_other_topics_gives_the_total():
    tickets = [ticket(1, 3, "Billing"), ticket(2, 2, "login"), ticket(3, 1, "billing"), ticket(4, 1, "export")]
    stall = only(facts(steps=ACTIVATED, tickets=tickets), "ticket_spike")
    assert stall.detail == "2 Billing tickets since Jun 13 (4 tickets in 7 days)"
    assert render(stall, NOW) == "2 Billing tickets since Friday (4 tickets in 7 days)"


def test_payment_failed_says_how_long_ago():
    stall = only(facts(steps=ACTIVATED, payment_failed_at=ago(2, hours=3)), "payment_failed")
    assert render(stall, NOW) == stall.detail == "payment failed 2 days ago"
    assert render(stall, NOW - timedelta(days=2)) == "payment failed 3 hours ago"
    assert render(stall, NOW - timedelta(days=2, hours=3)) == "payment failed just now"


def test_singular_and_plural():
    assert reason_text("step_stall", step_name="Invite", stalled_since=ago(1), now=NOW) == "1 day on 'Invite'"
    assert reason_text("step_stall", step_name="Invite", stalled_since=ago(hours=1), now=NOW) == "1 hour on 'Invite'"
    assert reason_text("payment_failed", stalled_since=ago(1), now=NOW) == "payment failed 1 day ago"
    one = only(facts(steps=ACTIVATED, renewal_date=NOW.date() + timedelta(days=1),
                     tickets=[ticket(1, 3, priority="high")]), "renewal_risk")
    assert one.detail == "renews in 1 day, 1 high-priority ticket"
    assert priority_reason("P1", arr=950, rule="step_stall", now=NOW, threshold_at=ago(1), stalled_since=ago(3),
                           open_tickets=1) == "P1 because $950 ARR, 1 day past the 48 h threshold, 1 open ticket"


@pytest.mark.parametrize(("days_back", "text"), [
    (0, "since today"), (1, "since yesterday"), (2, "since Saturday"), (6, "since Tuesday"), (7, "since Jun 9"),
    (200, "since Nov 28, 2024"),
])
def test_weekday_within_six_days_else_a_date(days_back, text):
    assert since_text(NOW.date() - timedelta(days=days_back), NOW) == text


def test_a_stored_date_is_read_in_the_right_year():
    # Written on Jan 2 about Dec 30: read the same week, and two months later.
    new_year = datetime(2026, 1, 2, 9, tzinfo=UTC)
    detail = "3 SSO tickets since Dec 30"
    assert reason_text("ticket_spike", detail=detail, now=new_year) == "3 SSO tickets since Tuesday"
    assert reason_text("ticket_spike", detail=detail, now=new_year + timedelta(days=60)) == "3 SSO tickets since Dec 30, 2025"
    assert day_text(date(2025, 12, 30)) == "Dec 30"


# --- headline and age ------------------------------------------------------------------------

def test_only_a_step_stall_is_headed_stalled():
    assert headline("step_stall", step_name="Connect integration") == "stalled on 'Connect integration'"
    expected = {"not_activated": "not activated", "renewal_risk": "renewal at risk", "usage_drop": "usage dropping",
                "ticket_spike": "ticket spike", "payment_failed": "payment failed"}
    for rule, text in expected.items():
        assert headline(rule, step_name="ignored") == text
        assert "stalled" not in text


def test_age_only_where_a_duration_means_something():
    assert age_text("step_stall", stalled_since=ago(4), now=NOW) == "4 days"
    assert age_text("not_activated", stalled_since=ago(16), now=NOW) == "16 days"
    assert age_text("payment_failed", stalled_since=ago(hours=5), now=NOW) == "5 hours"
    for rule in ("renewal_risk", "usage_drop", "ticket_spike"):
        assert age_text(rule, stalled_since=ago(30), now=NOW) is None
    assert age_text("step_stall", stalled_since=None, now=NOW) is None


# --- priority in words ---------------------------------------------------------------------------

@pytest.mark.parametrize(("arr", "text"), [
    (950, "$950"), (999.4, "$999"), (999.6, "$1K"), (2_400, "$2.4K"), (50_000, "$50K"), (69_500, "$69.5K"),
    (123_456.78, "$123.5K"), (999_960, "$1M"), (1_200_000, "$1.2M"), (2.5e9, "$2.5B"), (0, "$0"), (-5, "$0"),
    (float("nan"), "$0"), (float("inf"), "$0"),
])
def test_money_compact(arr, text):
    assert money_compact(arr) == text


def test_priority_reason_example():
    text = priority_reason("P0", arr=69_500, rule="step_stall", now=NOW, threshold_at=ago(27), stalled_since=ago(29),
                           open_tickets=2, renewal_date=NOW.date() + timedelta(days=30), renewal_within_days=60)
    assert text == "P0 because $69.5K ARR, 27 days past the 48 h threshold, renewal in 30 days, 2 open tickets"


def test_priority_reason_threshold_per_rule_and_track():
    track_72 = parse_rules(default_rules_text() + "\n[tracks.high_touch.thresholds]\nstall_after_hours = 72\n"
                           "checkpoint_days = 21\n")
    account = facts(track="high_touch", steps={"Signed Up": ago(6), "Project Created": ago(5)})
    [stall] = evaluate(account, track_72, NOW)
    result = score(stall, account, track_72, NOW)
    assert result.why == "5 days on 'Connect integration' · P0 because $69.5K ARR, 2 days past the 72 h threshold"
    # An explicit threshold wins over the one derived from the stall's dates.
    assert priority_reason("P1", arr=10_000, rule="not_activated", now=NOW, threshold_at=ago(2), stalled_since=ago(16),
                           payment_failed=True) == "P1 because $10K ARR, 2 days past the day-14 checkpoint, payment failed"
    assert priority_reason("P1", arr=10_000, rule="step_stall", now=NOW, threshold_at=ago(hours=5),
                           threshold_hours=24) == "P1 because $10K ARR, 5 hours past the 24 h threshold"
    assert priority_reason("P2", arr=0, rule="step_stall", now=NOW, threshold_at=NOW) == \
        "P2 because no ARR on record, just past its threshold"


def test_priority_reason_does_not_repeat_the_rules_own_signal():
    renewal = NOW.date() + timedelta(days=30)
    assert priority_reason("P1", arr=12_000, rule="renewal_risk", now=NOW, threshold_at=ago(30), open_tickets=1,
                           renewal_date=renewal) == "P1 because $12K ARR, 1 open ticket"
    assert priority_reason("P1", arr=12_000, rule="payment_failed", now=NOW, threshold_at=ago(2),
                           payment_failed=True) == "P1 because $12K ARR"
    # A renewal outside the window is no reason; a passed one neither.
    far = priority_reason("P1", arr=12_000, rule="usage_drop", now=NOW, renewal_date=NOW.date() + timedelta(days=61),
                          renewal_within_days=60)
    passed = priority_reason("P1", arr=12_000, rule="usage_drop", now=NOW, renewal_date=NOW.date() - timedelta(days=1))
    assert far == passed == "P1 because $12K ARR"


def test_the_words_keep_growing_after_the_time_factor_caps():
    account = facts(steps={"Signed Up": ago(42), "Project Created": ago(41)})
    early = only(account, "step_stall")
    later_now = NOW + timedelta(days=19)
    later_stall = evaluate(account, RULES, later_now)[0]
    early_score, later_score = score(early, account, RULES, NOW), score(later_stall, account, RULES, later_now)
    assert early_score.severity == later_score.severity  # capped: the score no longer moves...
    assert early_score.why != later_score.why  # ...but a fresh why says so
    # The stored why is rewritten only when the score moves: rendering from facts keeps up.
    kw = dict(arr=account.arr, rule="step_stall", threshold_at=early.threshold_at, stalled_since=early.stalled_since)
    assert priority_reason("P0", now=NOW, **kw) == "P0 because $69.5K ARR, 39 days past the 48 h threshold"
    assert priority_reason("P0", now=later_now, **kw) == "P0 because $69.5K ARR, 58 days past the 48 h threshold"
    assert render(early, later_now, step_name="Connect integration") == "60 days on 'Connect integration'"
    assert age_text("step_stall", stalled_since=early.stalled_since, now=later_now) == "60 days"


# --- hostile and odd input ---------------------------------------------------------------------

def test_hostile_text_stays_a_plain_string_and_details_stay_short():
    tickets = [ticket(1, 3, HOSTILE * 5), ticket(2, 2, HOSTILE * 5), ticket(3, 1, HOSTILE * 5)]
    stall = only(facts(steps=ACTIVATED, tickets=tickets), "ticket_spike")
    assert len(stall.detail) < 200
    assert stall.detail.startswith("3 <!channel> *bold* <@U0BOSS> &")  # not escaped here: Slack does it
    assert render(stall, NOW).endswith("tickets since Friday")
    assert headline("step_stall", step_name=HOSTILE) == f"stalled on '{HOSTILE}'"
    text = reason_text("step_stall", step_name=HOSTILE, stalled_since=ago(4), now=NOW)
    assert text == f"4 days on '{HOSTILE}'"
    # A topic that itself reads "since Nov 3" does not fool the re-dating: the rule's own date is last.
    tricky = [ticket(n, 2, "since Nov 3") for n in range(3)]
    assert render(only(facts(steps=ACTIVATED, tickets=tricky), "ticket_spike"), NOW) == \
        "3 since Nov 3 tickets since Saturday"


@pytest.mark.parametrize("rule", ["step_stall", "not_activated", "ticket_spike", "usage_drop", "renewal_risk",
                                  "payment_failed", "some_future_rule"])
def test_missing_facts_still_give_words(rule):
    for detail in (None, "", "since Feb 30", HOSTILE):
        text = reason_text(rule, detail=detail, now=NOW)
        assert isinstance(text, str) and text
    assert isinstance(headline(rule), str) and headline(rule)
    assert priority_reason("P3", arr=None, rule=rule, now=NOW).startswith("P3 because no ARR on record")
