from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from rules.model import Finding, OpenStall, Score, StallChange
from rules.reconcile import reconcile, stall_open_key

UTC = timezone.utc
NOW = datetime(2025, 6, 16, 12, 0, tzinfo=UTC)


def found(rule="step_stall", step="Integration Connected", score=60_000.0, priority="P0"):
    f = Finding(rule=rule, step=step, stalled_since=NOW - timedelta(days=3), threshold_at=NOW - timedelta(days=1),
                detail="3 days on 'Connect integration'")
    return f, Score(score=score, severity=1.2, priority=priority, why=f"{priority}: ...")


def stall(id=1, rule="step_stall", step="Integration Connected", status="open", score=60_000.0, priority="P0",
          snoozed_until=None):
    return OpenStall(id=id, account_id="acc", rule=rule, step=step, status=status, score=score,
                     priority=priority, snoozed_until=snoozed_until)


def apply(stalls: list[OpenStall], changes: list[StallChange]) -> list[OpenStall]:
    """What storage would do with the changes (enough to rerun reconcile)."""
    by_id = {s.id: s for s in stalls}
    next_id = max(by_id, default=0) + 1
    for c in changes:
        if c.action in ("auto_resolve", "suppress"):
            del by_id[c.stall_id]
        elif c.action in ("update", "unsnooze"):
            old = by_id[c.stall_id]
            by_id[c.stall_id] = OpenStall(old.id, old.account_id, old.rule, old.step,
                                          "open" if c.action == "unsnooze" else old.status,
                                          c.score.score, c.score.priority,
                                          None if c.action == "unsnooze" else old.snoozed_until)
        elif c.action == "open":
            by_id[next_id] = OpenStall(next_id, c.account_id, c.rule, c.finding.step, "open", c.score.score,
                                       c.score.priority)
            next_id += 1
    return list(by_id.values())


def test_finding_without_stall_opens():
    f, s = found()
    assert reconcile("acc", "active", [], [(f, s)], NOW) == [StallChange("open", "acc", "step_stall", finding=f, score=s)]


def test_rerun_after_applying_changes_nothing():
    findings = [found(), found("ticket_spike", None, 5_000, "P2")]
    stalls = apply([], reconcile("acc", "active", [], findings, NOW))
    assert len(stalls) == 2
    assert reconcile("acc", "active", stalls, findings, NOW) == []


def test_small_score_drift_is_not_an_update():
    assert reconcile("acc", "active", [stall(score=60_000)], [found(score=63_000)], NOW) == []
    assert reconcile("acc", "active", [stall(score=60_000)], [found(score=57_000)], NOW) == []


def test_score_change_over_five_percent_updates():
    [change] = reconcile("acc", "active", [stall(score=60_000)], [found(score=63_001)], NOW)
    assert (change.action, change.stall_id, change.reason) == ("update", 1, "score changed")
    assert change.score.score == 63_001


def test_priority_change_updates_even_with_small_score_move():
    [change] = reconcile("acc", "active", [stall(score=10_100, priority="P1")], [found(score=9_990, priority="P2")], NOW)
    assert (change.action, change.reason) == ("update", "priority P1 -> P2")


def test_stall_without_finding_auto_resolves():
    changes = reconcile("acc", "active", [stall(), stall(2, "usage_drop", None, score=1.0, priority="P3")], [], NOW)
    assert [(c.action, c.stall_id, c.reason) for c in changes] == [
        ("auto_resolve", 1, "no longer stalled on 'Integration Connected'"),
        ("auto_resolve", 2, "condition cleared"),
    ]


def test_moved_to_another_step_resolves_old_and_opens_new():
    f, s = found(step="Invite Sent")
    changes = reconcile("acc", "active", [stall(step="Integration Connected")], [(f, s)], NOW)
    assert [(c.action, c.stall_id, c.reason) for c in changes] == [
        ("auto_resolve", 1, "moved past 'Integration Connected'"),
        ("open", None, None),
    ]
    assert changes[1].finding is f


@pytest.mark.parametrize("status", ["cancelled", "churned"])
def test_cancelled_or_churned_account_suppresses_everything(status):
    stalls = [stall(), stall(2, "payment_failed", None, status="snoozed", snoozed_until=NOW + timedelta(days=1))]
    changes = reconcile("acc", status, stalls, [found("payment_failed", None)], NOW)
    assert [(c.action, c.stall_id, c.reason) for c in changes] == [
        ("suppress", 1, f"account {status}"),
        ("suppress", 2, f"account {status}"),
    ]


def test_snoozed_stall_is_not_reopened_while_snoozed():
    snoozed = stall(status="snoozed", snoozed_until=NOW + timedelta(hours=1))
    assert reconcile("acc", "active", [snoozed], [found()], NOW) == []
    # Changes are kept quietly up to date on the snoozed stall.
    [change] = reconcile("acc", "active", [snoozed], [found(score=200_000)], NOW)
    assert (change.action, change.stall_id) == ("update", 1)


def test_snooze_ending_unsnoozes_with_new_score():
    snoozed = stall(status="snoozed", snoozed_until=NOW)
    f, s = found(score=61_000)
    [change] = reconcile("acc", "active", [snoozed], [(f, s)], NOW)
    assert (change.action, change.stall_id, change.score, change.reason) == ("unsnooze", 1, s, "snooze ended")
    assert reconcile("acc", "active", apply([snoozed], [change]), [(f, s)], NOW) == []


def test_snooze_without_end_stays_snoozed():
    assert reconcile("acc", "active", [stall(status="snoozed")], [found()], NOW) == []


def test_snoozed_stall_resolves_when_condition_clears():
    [change] = reconcile("acc", "active", [stall(status="snoozed", snoozed_until=NOW + timedelta(days=2))], [], NOW)
    assert change.action == "auto_resolve"


def test_closed_stalls_passed_in_are_ignored():
    resolved = stall(status="resolved")
    f, s = found()
    assert [c.action for c in reconcile("acc", "active", [resolved], [(f, s)], NOW)] == ["open"]


def test_duplicate_live_stalls_are_healed():
    changes = reconcile("acc", "active", [stall(7), stall(3)], [found()], NOW)
    assert [(c.action, c.stall_id, c.reason) for c in changes] == [("auto_resolve", 7, "duplicate of stall 3")]


def test_one_stall_per_rule_even_with_duplicate_findings():
    changes = reconcile("acc", "active", [], [found(), found(step="Invite Sent")], NOW)
    assert [(c.action, c.finding.step) for c in changes] == [("open", "Integration Connected")]


def test_changes_come_in_rule_order():
    findings = [found("payment_failed", None), found("ticket_spike", None), found()]
    assert [c.rule for c in reconcile("acc", "active", [], findings, NOW)] == ["step_stall", "ticket_spike", "payment_failed"]


def test_stall_open_key():
    assert stall_open_key("acc-1", "step_stall") == "acc-1|step_stall"
    assert stall_open_key("a", "b") != stall_open_key("a", "c")


# --- the whole per-account pipeline: late events correct stalls on the next scan --------------

def _scan(stored_steps, stalls, now):
    import importlib.resources

    from rules.config import parse_rules
    from rules.journey import parse_step_times
    from rules.model import AccountFacts
    from rules.scoring import score
    from rules.stalls import evaluate

    rules = parse_rules(importlib.resources.files("rules").joinpath("default_rules.toml").read_text())
    facts = AccountFacts(id="acc", name="Acme", arr=50_000, status="active", track="high_touch",
                         steps=parse_step_times(stored_steps))
    findings = [(f, score(f, facts, rules, now)) for f in evaluate(facts, rules, now)]
    return reconcile("acc", "active", stalls, findings, now)


def test_late_event_closes_a_stall_opened_on_stale_knowledge():
    from rules.journey import merge_step_times

    tracked = {"Signed Up", "Project Created", "Integration Connected", "Invite Sent", "Report Shared"}
    stored = merge_step_times({}, [("Signed Up", NOW - timedelta(days=3))], tracked)
    first = _scan(stored, [], NOW)
    assert [(c.action, c.finding.step, c.finding.detail) for c in first] == [
        ("open", "Project Created", "3 days on 'Create a project'")]
    stalls = apply([], first)
    # The project was created a day ago; the event only arrives now.
    stored = merge_step_times(stored, [("Project Created", NOW - timedelta(days=1))], tracked)
    second = _scan(stored, stalls, NOW + timedelta(minutes=5))
    assert [(c.action, c.reason) for c in second] == [("auto_resolve", "no longer stalled on 'Project Created'")]
    assert _scan(stored, apply(stalls, second), NOW + timedelta(minutes=10)) == []


def test_late_event_moves_the_stall_to_the_next_step():
    from rules.journey import merge_step_times

    tracked = {"Signed Up", "Project Created", "Integration Connected", "Invite Sent", "Report Shared"}
    stored = merge_step_times({}, [("Signed Up", NOW - timedelta(days=6))], tracked)
    stalls = apply([], _scan(stored, [], NOW))
    stored = merge_step_times(stored, [("Project Created", NOW - timedelta(days=4))], tracked)
    changes = _scan(stored, stalls, NOW)
    assert [(c.action, c.reason, c.finding and c.finding.detail) for c in changes] == [
        ("auto_resolve", "moved past 'Project Created'", None),
        ("open", None, "4 days on 'Connect integration'"),
    ]
