"""Decisions that last (rules/decisions.py), through reconcile and the review: pure, `now` given."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from rules.decisions import (FALSE_POSITIVE, HANDLED, KNOWN, Decision, apply_decisions, check_until, describe,
                             quiet_until)
from rules.model import AccountFacts, Finding, JourneyState, OpenStall, Score, StallChange
from rules.reconcile import reconcile
from rules.review import next_review

UTC = timezone.utc
NOW = datetime(2025, 6, 16, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def found(rule="step_stall", step="Integration Connected", priority="P0"):
    f = Finding(rule=rule, step=step, stalled_since=NOW - 3 * DAY, threshold_at=NOW - DAY, detail="3 days")
    return f, Score(score=60_000.0, severity=1.2, priority=priority, why=f"{priority}: ...")


def decided(kind=HANDLED, rule="step_stall", step="Integration Connected", until=None, stall_id=7):
    return Decision(stall_id=stall_id, account_id="acc", rule=rule, step=step, kind=kind, resolved_at=NOW - DAY,
                    quiet_until=until)


def actions(changes: list[StallChange]) -> list[tuple[str, str]]:
    return [(c.action, c.rule) for c in changes]


@pytest.mark.parametrize("kind", [HANDLED, FALSE_POSITIVE])
def test_the_same_condition_does_not_reopen(kind):
    assert reconcile("acc", "active", [], [found()], NOW, [decided(kind)]) == []


@pytest.mark.parametrize("kind", [HANDLED, FALSE_POSITIVE])
def test_another_step_reopens_and_the_decision_lapses(kind):
    """The account reached the step it was resolved on, then stalled on the next one."""
    f, s = found(step="Invite Sent")
    changes = reconcile("acc", "active", [], [(f, s)], NOW, [decided(kind)])
    assert changes == [StallChange("lapse", "acc", "step_stall", stall_id=7, reason="now stalled on 'Invite Sent'"),
                       StallChange("open", "acc", "step_stall", finding=f, score=s)]


def test_the_condition_clearing_lapses_the_decision_so_its_return_reopens():
    d = decided()
    cleared = reconcile("acc", "active", [], [], NOW, [d])
    assert cleared == [StallChange("lapse", "acc", "step_stall", stall_id=7, reason="condition cleared")]
    # storage drops the lapsed decision: the condition's return opens a stall as usual
    assert actions(reconcile("acc", "active", [], [found()], NOW + DAY, [])) == [("open", "step_stall")]


def test_a_different_rule_opens_normally_beside_a_held_decision():
    changes = reconcile("acc", "active", [], [found(), found("payment_failed", None)], NOW, [decided()])
    assert actions(changes) == [("open", "payment_failed")]


def test_known_keeps_the_rule_quiet_until_the_date_whatever_the_step():
    d = decided(KNOWN, until=NOW + 10 * DAY)
    assert reconcile("acc", "active", [], [found(step="Invite Sent")], NOW, [d]) == []
    assert reconcile("acc", "active", [], [], NOW + 9 * DAY, [d]) == []  # cleared: still quiet, still held
    after = reconcile("acc", "active", [], [found()], NOW + 10 * DAY, [d])
    assert actions(after) == [("lapse", "step_stall"), ("open", "step_stall")]
    assert after[0].reason == "quiet period ended"


def test_a_live_stall_of_the_rule_supersedes_the_decision():
    live = OpenStall(id=3, account_id="acc", rule="step_stall", step="Integration Connected", status="open",
                     score=60_000.0, priority="P0")
    changes = reconcile("acc", "active", [live], [found()], NOW, [decided()])
    assert actions(changes) == [("lapse", "step_stall")]  # the live stall itself is left as it is


def test_the_latest_decision_of_a_rule_counts():
    older = decided(KNOWN, until=NOW + 30 * DAY, stall_id=1)
    newer = Decision(stall_id=2, account_id="acc", rule="step_stall", step="Integration Connected", kind=HANDLED,
                     resolved_at=NOW, quiet_until=None)
    kept, lapses = apply_decisions([newer, older], [found(step="Invite Sent")], set(), NOW)
    assert [f.step for f, _ in kept] == ["Invite Sent"] and [lapse.decision.stall_id for lapse in lapses] == [2]


def test_reconcile_is_idempotent_once_lapses_are_applied():
    f, s = found(step="Invite Sent")
    first = reconcile("acc", "active", [], [(f, s)], NOW, [decided()])
    opened = OpenStall(id=8, account_id="acc", rule="step_stall", step="Invite Sent", status="open",
                       score=s.score, priority=s.priority)
    assert actions(first) == [("lapse", "step_stall"), ("open", "step_stall")]
    assert reconcile("acc", "active", [opened], [(f, s)], NOW, []) == []


def test_a_cancelled_account_keeps_its_decisions_untouched():
    assert reconcile("acc", "cancelled", [], [found()], NOW, [decided()]) == []


def test_dates_after_today_and_within_the_limit():
    assert check_until(NOW.date(), NOW, 30) == "Pick a date after today."
    assert check_until(NOW.date() - DAY, NOW, 30) == "Pick a date after today."
    assert check_until(NOW.date() + DAY, NOW, 30) is None
    assert check_until(NOW.date() + 30 * DAY, NOW, 30) is None
    assert check_until(NOW.date() + 31 * DAY, NOW, 30) == "Pick a date at most 30 days ahead."
    assert check_until(NOW.date() + 90 * DAY, NOW, 90) is None
    assert quiet_until(date(2025, 7, 1)) == datetime(2025, 7, 1, tzinfo=UTC)


def test_the_decision_in_words():
    assert describe(FALSE_POSITIVE, "customer is on holiday") == "false positive — 'customer is on holiday'"
    assert describe(HANDLED) == "handled"
    assert describe(KNOWN, None, datetime(2025, 7, 1, tzinfo=UTC)) == "known, quiet until 2025-07-01"


def test_the_review_wakes_the_account_when_the_quiet_period_ends(rules):
    facts = AccountFacts(id="acc", name="Acme", arr=50_000.0, status="active", track="standard", plan="pro",
                         seats=5, signup_at=NOW - 40 * DAY, activated_at=NOW - 30 * DAY, renewal_date=None,
                         tickets=(), active_days_recent=0, active_days_previous=0, payment_failed_at=None)
    journey = JourneyState("Adoption", NOW - 40 * DAY, NOW - 30 * DAY, None, None, None, None, 4)
    ends = NOW + 3 * DAY + timedelta(hours=5)
    assert next_review(facts, journey, [], rules, NOW) > ends  # nothing else due before (MAX_WAIT)
    assert next_review(facts, journey, [], rules, NOW, quiet_until=[ends]) == ends
    assert next_review(facts, journey, [], rules, NOW, quiet_until=[NOW - DAY]) > ends  # a past end: ignored
