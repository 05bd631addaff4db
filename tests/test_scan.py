"""The stall scan (bot.scan) on real storage: events stored through store_events, a fixed `now`."""

from __future__ import annotations

import re
import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from bot.scan import evaluate_accounts, scan
from bot.settings import default_rules_text
from rules.config import parse_rules
from storage.ingest import rules_version

from factories import (
    ACCOUNT, ACTIVATION, DAY, HOUR, INTEGRATION, INVITE, PROJECT, STALL, T0,
    account_row, activated, audits, days_before, live_stalls, signup, stalls, store, stripe, ticket, track,
)


def assert_no_changes(report):
    assert (report.opened, report.updated, report.unsnoozed, report.auto_resolved, report.suppressed) == (0, 0, 0, 0, 0)


# ------------------------------------------------------------------ step stalls


def test_step_stall_opens_once_past_threshold_with_why_line(engine, rules):
    store(engine, rules, signup("acme", T0, arr=12000), now=T0)

    early = scan(engine, rules, T0 + 47 * HOUR)
    assert (early.candidates, early.opened) == (1, 0)  # new, so evaluated; not stalled yet
    assert_no_changes(early)
    assert stalls(engine) == []
    # Past the 48 h threshold but not yet confirmed (step_stall.confirm_hours = 6).
    assert_no_changes(scan(engine, rules, T0 + 53 * HOUR))
    assert stalls(engine) == []

    now = T0 + 55 * HOUR
    report = scan(engine, rules, now)
    assert report.opened == 1
    [stall] = stalls(engine)
    assert report.opened_ids == [stall.id]
    assert (stall.account_id, stall.rule, stall.step, stall.status) == ("acme", "step_stall", PROJECT, "open")
    assert stall.open_key == "acme|step_stall"
    assert stall.stalled_since == T0
    assert stall.threshold_at == T0 + 48 * HOUR
    assert stall.opened_at == now
    assert stall.stage == "Onboarding"
    assert stall.priority == "P1"
    assert stall.why == "2 days on 'Create a project' · P1 because $12K ARR, 7 hours past the 48 h threshold"


def test_second_scan_with_same_now_changes_nothing(engine, rules):
    now = T0 + 20 * DAY
    # "mover" made progress after its stall was opened: the next scan resolves and reopens.
    store(engine, rules, signup("mover", T0, arr=8000), now=T0)
    scan(engine, rules, T0 + 3 * DAY)
    store(engine, rules, [track("mover", PROJECT, T0 + 4 * DAY)], now=T0 + 4 * DAY)
    events = (
        signup("stuck", now - 3 * DAY, arr=50000)                      # step stall
        + signup("old", T0 + 4 * DAY, arr=3000)                        # step stall + not activated
        + activated("paying", T0 + 4 * DAY, arr=20000)
        + [stripe("paying", now - DAY, payment_failed=True, kind="invoice.payment_failed")]
        + activated("fine", T0 + 4 * DAY)
    )
    store(engine, rules, events, now=now - DAY)

    first = scan(engine, rules, now)
    assert first.opened > 0
    before = [tuple(r) for r in stalls(engine)]

    second = scan(engine, rules, now)
    assert second.candidates == 0  # nothing changed and no moment came due: nothing to look at
    assert_no_changes(second)
    assert second.opened_ids == [] and second.changed_ids == []
    assert [tuple(r) for r in stalls(engine)] == before

    forced = scan(engine, rules, now, full=True)  # evaluating everything again agrees
    assert forced.candidates > 0
    assert_no_changes(forced)
    assert [tuple(r) for r in stalls(engine)] == before


def test_late_event_with_earlier_time_auto_resolves_at_next_scan(engine, rules):
    store(engine, rules, signup("acme", T0, arr=5000), now=T0)
    opened_at = T0 + 55 * HOUR
    scan(engine, rules, opened_at)
    [stall] = live_stalls(engine, "acme")

    # The customer created a project at T0+30h; the event only arrives now.
    late = track("acme", PROJECT, T0 + 30 * HOUR)
    store(engine, rules, [late], now=opened_at + HOUR)

    report = scan(engine, rules, opened_at + 2 * HOUR)
    assert report.auto_resolved == 1 and report.opened == 0
    assert report.changed_ids == [stall.id]
    [row] = stalls(engine, "acme")
    assert row.id == stall.id
    assert row.status == "auto_resolved"
    assert row.open_key is None
    assert row.resolved_by == "system"
    assert row.resolved_at == opened_at + 2 * HOUR
    assert PROJECT in row.resolution
    [audit] = audits(engine, stall.id)
    assert audit.actor == "system"
    assert audit.action == "stall.auto_resolve"
    assert audit.account_id == "acme"
    assert audit.detail["rule"] == "step_stall"
    # Waiting on the next step since the late event: not stalled before T0+78h.
    assert account_row(engine, "acme").stalled_at == T0 + 78 * HOUR


def test_progress_resolves_old_step_stall_then_opens_on_next_step(engine, rules):
    store(engine, rules, signup("acme", T0, arr=5000), now=T0)
    scan(engine, rules, T0 + 55 * HOUR)
    [old] = live_stalls(engine, "acme")
    assert old.step == PROJECT

    store(engine, rules, [track("acme", PROJECT, T0 + 60 * HOUR)], now=T0 + 60 * HOUR)
    report = scan(engine, rules, T0 + 61 * HOUR)
    assert (report.auto_resolved, report.opened) == (1, 0)
    assert live_stalls(engine, "acme") == []

    assert scan(engine, rules, T0 + 113 * HOUR).opened == 0  # 53 h on the new step: not confirmed yet
    report = scan(engine, rules, T0 + 115 * HOUR)
    assert report.opened == 1
    old_row, new = stalls(engine, "acme")
    assert old_row.id == old.id and old_row.status == "auto_resolved"
    assert (new.rule, new.step, new.status) == ("step_stall", INTEGRATION, "open")
    assert new.stalled_since == T0 + 60 * HOUR
    assert new.why.startswith("2 days on 'Connect integration' · ")


def test_moving_past_a_step_between_scans_resolves_and_reopens_in_one_scan(engine, rules):
    store(engine, rules, signup("acme", T0, arr=5000), now=T0)
    scan(engine, rules, T0 + 55 * HOUR)
    [old] = live_stalls(engine, "acme")
    store(engine, rules, [track("acme", PROJECT, T0 + 56 * HOUR)], now=T0 + 56 * HOUR)

    now = T0 + 111 * HOUR  # already 55 h on 'Connect integration', past its confirmation
    report = scan(engine, rules, now)
    assert (report.auto_resolved, report.opened) == (1, 1)
    old_row, new = stalls(engine, "acme")
    assert old_row.id == old.id
    assert old_row.status == "auto_resolved" and old_row.open_key is None
    assert old_row.resolution == f"moved past '{PROJECT}'"
    assert (new.step, new.status, new.open_key) == (INTEGRATION, "open", "acme|step_stall")
    assert report.opened_ids == [new.id]
    assert_no_changes(scan(engine, rules, now))


def test_activation_resolves_step_and_not_activated_stalls(engine, rules):
    store(engine, rules, signup("acme", T0, arr=5000), now=T0)
    report = scan(engine, rules, T0 + 15 * DAY)
    assert report.opened == 2
    assert sorted(s.rule for s in live_stalls(engine, "acme")) == ["not_activated", "step_stall"]

    store(engine, rules, [track("acme", ACTIVATION, T0 + 14 * DAY + 12 * HOUR)], now=T0 + 15 * DAY + HOUR)
    report = scan(engine, rules, T0 + 15 * DAY + 2 * HOUR)
    assert report.auto_resolved == 2 and report.opened == 0
    assert live_stalls(engine, "acme") == []
    assert {s.status for s in stalls(engine, "acme")} == {"auto_resolved"}
    row = account_row(engine, "acme")
    assert row.activated_at == T0 + 14 * DAY + 12 * HOUR
    assert row.stage == "Adoption"


def test_not_activated_at_day_14(engine, rules):
    events = signup("acme", T0, arr=5000) + [
        track("acme", step, T0 + i * HOUR) for i, step in enumerate((PROJECT, INTEGRATION, INVITE), start=1)
    ]
    store(engine, rules, events, now=T0 + 3 * HOUR)
    # Every step done: no step stall, only the day-14 checkpoint.
    assert scan(engine, rules, T0 + 5 * DAY).opened == 0
    assert scan(engine, rules, T0 + 14 * DAY - timedelta(minutes=1)).opened == 0

    report = scan(engine, rules, T0 + 14 * DAY)
    assert report.opened == 1
    [stall] = stalls(engine, "acme")
    assert (stall.rule, stall.step, stall.stage) == ("not_activated", None, "Activation")
    assert stall.stalled_since == T0
    assert stall.threshold_at == T0 + 14 * DAY
    assert stall.detail == "not activated 14 days after signup"


@pytest.mark.parametrize("lifecycle", ["churned", "cancelled"])
def test_cancelled_or_churned_account_is_suppressed_and_gets_no_new_stalls(engine, rules, lifecycle):
    store(engine, rules, signup("acme", T0, arr=40000) + signup("quiet", T0, arr=40000), now=T0)
    scan(engine, rules, T0 + 3 * DAY)
    [stall] = live_stalls(engine, "acme")

    store(engine, rules, [stripe("acme", T0 + 3 * DAY + HOUR, lifecycle=lifecycle),
                          stripe("quiet", T0 + 3 * DAY + HOUR, lifecycle=lifecycle)], now=T0 + 3 * DAY + HOUR)
    assert live_stalls(engine, "quiet") != []  # still open until the scan
    report = scan(engine, rules, T0 + 3 * DAY + 2 * HOUR)
    assert report.suppressed == 2 and report.opened == 0
    row = next(s for s in stalls(engine, "acme") if s.id == stall.id)
    assert row.status == "suppressed"
    assert row.open_key is None
    assert row.resolution == f"account {lifecycle}"
    assert [a.action for a in audits(engine, stall.id)] == ["stall.suppress"]
    assert account_row(engine, "acme").status == lifecycle

    # Past every threshold (step, day-14 checkpoint), still nothing opens.
    later = scan(engine, rules, T0 + 30 * DAY)
    assert_no_changes(later)
    assert live_stalls(engine) == []
    assert len(stalls(engine)) == 2


def test_churned_before_any_stall_never_opens_one(engine, rules):
    store(engine, rules, signup("acme", T0, arr=40000) + [stripe("acme", T0 + HOUR, lifecycle="churned")],
          now=T0 + HOUR)
    assert_no_changes(scan(engine, rules, T0 + 20 * DAY))
    assert stalls(engine) == []


def _snooze(engine, stall_id, until):
    with engine.begin() as conn:
        conn.execute(update(STALL).where(STALL.c.id == stall_id).values(status="snoozed", snoozed_until=until))


def test_snoozed_stall_is_not_reopened_and_unsnoozes_after_snooze_ends(engine, rules):
    store(engine, rules, signup("acme", T0, arr=5000), now=T0)
    scan(engine, rules, T0 + 3 * DAY)
    [stall] = stalls(engine)
    _snooze(engine, stall.id, T0 + 5 * DAY)

    during = scan(engine, rules, T0 + 4 * DAY)
    assert during.opened == 0 and during.unsnoozed == 0
    [row] = stalls(engine)
    assert row.id == stall.id and row.status == "snoozed" and row.snoozed_until == T0 + 5 * DAY

    after = scan(engine, rules, T0 + 5 * DAY + HOUR)
    assert after.unsnoozed == 1 and after.opened == 0
    [row] = stalls(engine)
    assert row.id == stall.id
    assert (row.status, row.snoozed_until, row.open_key) == ("open", None, "acme|step_stall")
    assert row.why.startswith("5 days on 'Create a project' · ")
    assert [a.action for a in audits(engine, stall.id)] == ["stall.unsnooze"]
    assert [a.actor for a in audits(engine, stall.id)] == ["system"]
    assert_no_changes(scan(engine, rules, T0 + 5 * DAY + HOUR))


def test_snoozed_stall_without_end_stays_snoozed(engine, rules):
    store(engine, rules, signup("acme", T0, arr=5000), now=T0)
    scan(engine, rules, T0 + 3 * DAY)
    [stall] = stalls(engine)
    _snooze(engine, stall.id, None)
    report = scan(engine, rules, T0 + 15 * DAY)
    assert report.opened == 1  # not_activated is a different rule; no second step stall
    step_rows = stalls(engine, "acme", "step_stall")
    assert [(s.id, s.status) for s in step_rows] == [(stall.id, "snoozed")]


def test_snoozed_stall_is_still_resolved_when_the_step_is_reached(engine, rules):
    store(engine, rules, signup("acme", T0, arr=5000), now=T0)
    scan(engine, rules, T0 + 3 * DAY)
    [stall] = stalls(engine)
    _snooze(engine, stall.id, T0 + 10 * DAY)
    store(engine, rules, [track("acme", PROJECT, T0 + 3 * DAY + HOUR)], now=T0 + 3 * DAY + HOUR)
    report = scan(engine, rules, T0 + 3 * DAY + 2 * HOUR)
    assert report.auto_resolved == 1
    [row] = stalls(engine)
    assert row.status == "auto_resolved" and row.open_key is None


# ------------------------------------------------------------------ other rules


def test_usage_drop_after_activation(engine, rules):
    now = T0 + 30 * DAY
    events = activated("drop", days_before(now, 20), arr=30000) + activated("steady", days_before(now, 20), arr=30000)
    for n in (13, 12, 11, 10, 9):  # last week: 5 active days
        events += [track("drop", "Feature Used", days_before(now, n)), track("steady", "Feature Used", days_before(now, n))]
    events.append(track("drop", "Feature Used", days_before(now, 2)))  # this week: 1 day
    events += [track("steady", "Feature Used", days_before(now, n)) for n in (5, 3, 1)]  # 3 days: not under half
    store(engine, rules, events, now=now - HOUR)

    report = scan(engine, rules, now)
    assert report.opened == 1
    [stall] = stalls(engine)
    assert (stall.account_id, stall.rule, stall.step) == ("drop", "usage_drop", None)
    assert stall.detail == "active days down 80% since Jan 24"
    assert stall.stage == "Churn risk"
    assert account_row(engine, "drop").stage == "Churn risk"
    assert account_row(engine, "steady").stage == "Adoption"
    assert_no_changes(scan(engine, rules, now))


def test_renewal_risk_with_urgent_open_ticket(engine, rules):
    now = T0 + 30 * DAY
    renewal = (now + 30 * DAY).date()
    events = (activated("risky", now - 40 * DAY, arr=40000, renewal_date=renewal)
              + activated("calm", now - 40 * DAY, arr=40000, renewal_date=renewal)
              + [ticket("risky", now - DAY, "T-1", priority="urgent", topic="billing")])
    store(engine, rules, events, now=now - HOUR)

    report = scan(engine, rules, now)
    assert report.opened == 1
    [stall] = stalls(engine)
    assert (stall.account_id, stall.rule) == ("risky", "renewal_risk")
    assert stall.detail == "renews in 30 days, 1 urgent ticket"
    assert "1 open ticket" in stall.why
    assert account_row(engine, "risky").renewal_date == renewal

    # Solving the ticket clears the risk at the next scan.
    store(engine, rules, [ticket("risky", now + HOUR, "T-1", status="solved", priority="urgent",
                                 created_at=now - DAY)], now=now + HOUR)
    report = scan(engine, rules, now + 2 * HOUR)
    assert report.auto_resolved == 1
    assert live_stalls(engine) == []


def test_payment_failed_then_paid_auto_resolves(engine, rules):
    store(engine, rules, activated("acme", T0, arr=20000), now=T0)
    failed_at = T0 + 10 * DAY
    store(engine, rules, [stripe("acme", failed_at, payment_failed=True, lifecycle="past_due",
                                 kind="invoice.payment_failed")], now=failed_at)
    report = scan(engine, rules, failed_at + HOUR)
    assert report.opened == 1
    [stall] = stalls(engine)
    assert (stall.rule, stall.stalled_since, stall.detail) == ("payment_failed", failed_at, "payment failed 1 hour ago")
    assert account_row(engine, "acme").payment_failed_at == failed_at

    store(engine, rules, [stripe("acme", failed_at + DAY, payment_failed=False, kind="invoice.paid")],
          now=failed_at + DAY)
    assert account_row(engine, "acme").payment_failed_at is None
    report = scan(engine, rules, failed_at + DAY + HOUR)
    assert report.auto_resolved == 1
    [row] = stalls(engine)
    assert row.id == stall.id and row.status == "auto_resolved" and row.open_key is None
    assert [a.action for a in audits(engine, stall.id)] == ["stall.auto_resolve"]


# ------------------------------------------------------------------ scoring over time


def test_priority_rises_as_days_pass_updating_the_same_row(engine, rules):
    store(engine, rules, signup("acme", T0, arr=12000), now=T0)
    first = scan(engine, rules, T0 + 55 * HOUR)
    [stall] = stalls(engine)
    assert stall.priority == "P1"
    assert first.opened_ids == [stall.id]

    report = scan(engine, rules, T0 + 4 * DAY)  # 2 days past the threshold: score +19%, still P1
    assert report.updated == 1 and report.opened == 0
    [row] = stalls(engine)
    assert row.id == stall.id and row.priority == "P1"
    assert row.score == pytest.approx(12000 * 1.2)
    assert row.updated_at == T0 + 4 * DAY

    report = scan(engine, rules, T0 + 13 * DAY)  # 11 days past: severity 2.1 -> P0
    assert report.updated == 1 and report.opened == 0
    assert report.changed_ids == [stall.id]
    [row] = stalls(engine)
    assert row.id == stall.id
    assert row.priority == "P0"
    assert row.score == pytest.approx(12000 * 2.1)
    assert row.opened_at == T0 + 55 * HOUR
    assert row.why == "13 days on 'Create a project' · P0 because $12K ARR, 11 days past the 48 h threshold"
    assert row.open_key == "acme|step_stall"


def test_field_example_big_account_p0_small_account_digest(engine, rules):
    now = T0 + 10 * DAY
    store(engine, rules, signup("big", now - 3 * DAY, arr=50000) + signup("small", now - 7 * DAY, arr=2400),
          now=now - 3 * DAY)
    scan(engine, rules, now)
    big = stalls(engine, "big", "step_stall")[0]
    small = stalls(engine, "small", "step_stall")[0]
    assert big.priority == "P0"
    assert big.priority in rules.routing.realtime
    assert big.why == "3 days on 'Create a project' · P0 because $50K ARR, 1 day past the 48 h threshold"
    assert small.priority in ("P2", "P3")
    assert small.priority not in rules.routing.realtime
    assert small.why.startswith("7 days on 'Create a project' · ")


def test_evaluate_accounts_only_touches_given_accounts(engine, rules):
    store(engine, rules, signup("a", T0, arr=5000) + signup("b", T0, arr=5000), now=T0)
    report = evaluate_accounts(engine, rules, ["a"], T0 + 3 * DAY)
    assert report.candidates == 1
    assert report.opened == 1
    assert [s.account_id for s in stalls(engine)] == ["a"]
    # b is untouched by the targeted evaluation, and found by the full scan.
    assert scan(engine, rules, T0 + 3 * DAY).opened == 1
    assert sorted(s.account_id for s in stalls(engine)) == ["a", "b"]


def test_rules_change_refreshes_stored_journey_state(engine, rules):
    store(engine, rules, signup("acme", T0, arr=5000), now=T0)
    assert account_row(engine, "acme").stalled_at == T0 + 48 * HOUR

    text, n = re.subn(r'(event = "Project Created"\nname = "[^"]+"\nstall_after_hours = )48', r"\g<1>24",
                      default_rules_text())
    assert n == 1
    faster = parse_rules(text, "faster.toml")
    assert rules_version(faster) != rules_version(rules)

    assert scan(engine, rules, T0 + 30 * HOUR).opened == 0  # 48 h threshold: not yet
    report = scan(engine, faster, T0 + 30 * HOUR)
    assert report.journeys_refreshed == 1
    assert report.opened == 1
    row = account_row(engine, "acme")
    assert row.stalled_at == T0 + 24 * HOUR
    assert row.journey_version == rules_version(faster)
    [stall] = stalls(engine)
    assert stall.threshold_at == T0 + 24 * HOUR

    again = scan(engine, faster, T0 + 30 * HOUR)
    assert again.journeys_refreshed == 0
    assert_no_changes(again)


# ------------------------------------------------------------------ concurrency


def test_concurrent_scans_never_open_two_live_stalls_for_one_account_and_rule(engine, rules):
    n = 40
    events = []
    for i in range(n):
        events += signup(f"acct-{i:02d}", T0, arr=1000 * (i + 1))
    store(engine, rules, events, now=T0)

    for round_, now in enumerate((T0 + 3 * DAY, T0 + 15 * DAY)):
        barrier = threading.Barrier(2)
        reports, errors = [], []

        def run():
            try:
                barrier.wait(timeout=10)
                reports.append(scan(engine, rules, now))
            except Exception as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert errors == []
        assert len(reports) == 2
        # day 3: a step stall each; day 15: a not_activated stall each on top
        assert sum(r.opened for r in reports) == n
        with engine.connect() as conn:
            dupes = conn.execute(
                select(STALL.c.account_id, STALL.c.rule, func.count())
                .where(STALL.c.open_key.is_not(None)).group_by(STALL.c.account_id, STALL.c.rule)
                .having(func.count() > 1)
            ).all()
        assert dupes == []
        assert len(live_stalls(engine)) == n * (round_ + 1)
        assert len(stalls(engine)) == n * (round_ + 1)
        assert_no_changes(scan(engine, rules, now))


# ------------------------------------------------------------------ one bad account


def _corrupt(engine, account_id, **values):
    """Write values straight into the database, past every ingest check."""
    with engine.begin() as conn:
        conn.execute(update(ACCOUNT).where(ACCOUNT.c.id == account_id).values(**values))


def test_one_corrupt_account_never_stops_the_scan(engine, rules, caplog):
    from datetime import date, datetime, timezone

    from bot import metrics
    from bot.scan import RETRY_FAILED

    store(engine, rules, signup("acme", T0, arr=12000) + signup("globex", T0, arr=12000)
          + signup("bad", T0, arr=12000, name="Bad Customer Inc"), now=T0)
    # Values ingest now refuses (a year-1 renewal, a payment failed in year 9999).
    _corrupt(engine, "bad", renewal_date=date(1, 1, 1),
             payment_failed_at=datetime(9999, 12, 31, 23, 59, tzinfo=timezone.utc))
    failures = metrics.SCAN_ACCOUNT_FAILURES._value.get()
    now = T0 + 55 * HOUR
    report = scan(engine, rules, now)
    assert (report.opened, report.failed) == (2, 1)
    assert {s.account_id for s in live_stalls(engine)} == {"acme", "globex"}
    assert metrics.SCAN_ACCOUNT_FAILURES._value.get() == failures + 1
    assert "1 failed (retried later)" in report.summary()
    [line] = [r.getMessage() for r in caplog.records if "'bad'" in r.getMessage()]
    assert "OverflowError" in line and "Bad Customer" not in line
    assert account_row(engine, "bad").next_eval_at == now + RETRY_FAILED
    # Not retried in a hot loop: skipped by the next scans until its retry time comes.
    assert scan(engine, rules, now + HOUR / 2).failed == 0
    assert scan(engine, rules, now + RETRY_FAILED).failed == 1


def test_a_journey_that_cannot_be_refreshed_is_skipped_not_looped_on(engine, rules):
    store(engine, rules, signup("acme", T0, arr=12000) + signup("bad", T0, arr=12000), now=T0)
    _corrupt(engine, "bad", steps={"Signed Up": "not a time"}, journey_version="older rules")
    _corrupt(engine, "acme", journey_version="older rules")
    report = scan(engine, rules, T0 + 55 * HOUR)
    assert (report.journeys_refreshed, report.failed) == (1, 1)
    # "bad" keeps the journey stored before and is still evaluated on it.
    assert {s.account_id for s in live_stalls(engine)} == {"acme", "bad"}
    assert account_row(engine, "bad").journey_version == rules_version(rules)


def _plan(engine, sql: str, args: tuple = ()) -> list[str]:
    with engine.connect() as conn:
        return [row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, args)]


def test_due_accounts_are_looked_up_in_the_next_review_index_on_sqlite(engine):
    """A scheduled scan (and each tick of a backtest) finds the due accounts through
    ix_account_next_eval: asked for rows in id order with the plain condition, SQLite walked
    every account along the primary key. (PostgreSQL keeps the plain condition.)"""
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's query plan")
    from bot.backtest.replay import _due_sql
    from storage.stalls import due_accounts

    query = select(ACCOUNT.c.id).where(due_accounts(T0)).order_by(ACCOUNT.c.id)
    plan = _plan(engine, str(query.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})))
    assert any("ix_account_next_eval" in step for step in plan) and "SCAN account" not in plan, plan
    sql, order, _ = _due_sql(engine)
    plan = _plan(engine, sql, tuple("2026-01-01 00:00:00.000000" if name == "now" else "v" for name in order))
    assert "SCAN account" not in plan and any("ix_account_journey_version" in step for step in plan), plan
