"""Facts carry the time of the message they came from: an older message arriving late (a
redelivery, Stripe's unordered webhooks, a queued Segment client) never overwrites a newer one."""

from __future__ import annotations

import itertools
import json
from datetime import date, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.factories import DAY, HOUR, T0, account_row, group, store, stripe
from tests.fuzz import examples


def test_an_older_subscription_event_does_not_undo_a_newer_one(engine, rules):
    store(engine, rules, [stripe("acme", T0 + 2 * HOUR, lifecycle="active")], now=T0 + 2 * HOUR)
    store(engine, rules, [stripe("acme", T0 + HOUR, lifecycle="past_due")], now=T0 + 3 * HOUR)
    assert account_row(engine, "acme").status == "active"

    store(engine, rules, [stripe("acme", T0 + DAY, lifecycle="churned")], now=T0 + DAY)
    assert account_row(engine, "acme").status == "churned"


def test_a_late_payment_failure_does_not_reopen_a_paid_invoice(engine, rules):
    paid = stripe("acme", T0 + 2 * HOUR, payment_failed=False, kind="invoice.paid")
    failed = stripe("acme", T0 + HOUR, payment_failed=True, kind="invoice.payment_failed")
    store(engine, rules, [paid], now=T0 + 2 * HOUR)
    store(engine, rules, [failed], now=T0 + 3 * HOUR)
    assert account_row(engine, "acme").payment_failed_at is None


def test_older_traits_do_not_overwrite_newer_ones(engine, rules):
    store(engine, rules, [group("acme", T0 + DAY, name="Acme Inc", arr=60000)], now=T0 + DAY)
    store(engine, rules, [group("acme", T0, name="Acme (old name)", arr=1000)], now=T0 + DAY)
    row = account_row(engine, "acme")
    assert (row.name, row.arr, row.track) == ("Acme Inc", 60000, "high_touch")

    store(engine, rules, [group("acme", T0 + 2 * DAY, name="Acme Corp", arr=80000)], now=T0 + 2 * DAY)
    assert account_row(engine, "acme").name == "Acme Corp"


# --------------------------------------------------------------------------- each fact its own time

SECOND = timedelta(seconds=1)


def test_a_name_only_group_call_does_not_block_an_older_subscription(engine, rules):
    """The field case: the product's group call (name only) lands seconds after a Stripe
    subscription event it postdates by 5 s; the subscription's ARR and renewal still count."""
    renewal = date(2026, 12, 1)
    store(engine, rules, [group("acme", T0 + 5 * SECOND, name="Acme Inc")], now=T0 + 6 * SECOND)
    store(engine, rules, [stripe("acme", T0, lifecycle="active", kind="customer.subscription.created",
                                 traits={"arr": 8400.0, "renewal_date": renewal})], now=T0 + 7 * SECOND)
    row = account_row(engine, "acme")
    assert (row.name, row.arr, row.renewal_date, row.status) == ("Acme Inc", 8400, renewal, "active")
    assert set(row.fact_times) == {"name", "arr", "renewal_date"}
    assert datetime.fromisoformat(row.fact_times["arr"]) == T0
    assert datetime.fromisoformat(row.fact_times["name"]) == T0 + 5 * SECOND


def test_the_reverse_order_ends_the_same(engine, rules):
    renewal = date(2026, 12, 1)
    store(engine, rules, [stripe("acme", T0, lifecycle="active", kind="customer.subscription.created",
                                 traits={"arr": 8400.0, "renewal_date": renewal})], now=T0 + SECOND)
    store(engine, rules, [group("acme", T0 + 5 * SECOND, name="Acme Inc")], now=T0 + 6 * SECOND)
    row = account_row(engine, "acme")
    assert (row.name, row.arr, row.renewal_date, row.status) == ("Acme Inc", 8400, renewal, "active")


def test_an_older_message_still_loses_the_facts_a_newer_one_set(engine, rules):
    store(engine, rules, [group("acme", T0 + HOUR, name="Acme Inc", arr=12000)], now=T0 + HOUR)
    store(engine, rules, [group("acme", T0, name="Old name", arr=6000, plan="pro")], now=T0 + 2 * HOUR)
    row = account_row(engine, "acme")
    assert (row.name, row.arr, row.plan) == ("Acme Inc", 12000, "pro")  # plan had no time yet


# A fact update: (seconds after T0, source, facts). Times are distinct (within one second
# two values of a fact have no order to keep), so per fact the newest value is well defined.
_FACT_VALUES = {
    "name": st.sampled_from(["Acme", "Acme Inc", "ACME Corp"]),
    "arr": st.sampled_from([0.0, 2400.0, 8400.0, 60000.0]),
    "plan": st.sampled_from(["free", "pro", "enterprise"]),
    "owner_email": st.sampled_from(["ana@cs.example", "bo@cs.example"]),
    "renewal_date": st.sampled_from([date(2026, 6, 1), date(2026, 12, 1)]),
    "seats": st.integers(1, 500),
}
_update = st.tuples(
    st.sampled_from(["segment", "stripe"]),
    st.fixed_dictionaries({}, optional=_FACT_VALUES),
    st.sampled_from([None, "trialing", "active", "past_due", "churned"]),
    st.sampled_from([None, True, False]),
)
_accounts = itertools.count()


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(updates=st.lists(_update, min_size=1, max_size=7), data=st.data())
def test_any_arrival_order_ends_at_the_same_account(engine, rules, updates, data):
    """Whatever the order and grouping in which a set of fact updates arrives, each fact ends
    at its newest value (and the account at what that implies: track, lifecycle)."""
    aid = f"perm-{next(_accounts)}"
    times = [T0 + (i + 1) * 7 * SECOND for i in range(len(updates))]
    events = []
    for at, (source, facts, lifecycle, failed) in zip(times, updates):
        if source == "segment" or not (facts or lifecycle or failed is not None):
            events.append(group(aid, at, **facts) if facts else group(aid, at))
        else:
            events.append(stripe(aid, at, lifecycle=lifecycle, payment_failed=failed, traits=facts or None))
    order = data.draw(st.permutations(events), label="order")
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(order) - 1)), max_size=3), label="cuts"))
    now = times[-1] + HOUR
    for start, end in zip([0, *cuts], [*cuts, len(order)]):
        if order[start:end]:
            store(engine, rules, list(order[start:end]), now=now)

    expected: dict = {}
    status, failed_last = "trialing", None
    for ev in sorted(events, key=lambda e: e.occurred_at):
        expected.update(ev.account_traits or {})
        status = ev.lifecycle or status
        failed_last = failed_last if ev.payment_failed is None else ev.payment_failed
    row = account_row(engine, aid)
    got = {key: getattr(row, key) for key in expected}
    assert got == expected
    assert row.status == status
    assert (row.payment_failed_at is not None) == bool(failed_last)


def test_migration_gives_each_stored_fact_the_old_traits_time(tmp_path):
    """0008 backfills fact_times from traits_at, for the facts that hold a value only: a fact
    never set has no time, so a late message may still set it."""
    from sqlalchemy import text

    from storage import migrate
    from storage.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    migrate.upgrade(engine, "0007_health")
    columns = ("id, name, name_lower, arr, track, status, steps, stage, steps_done, journey_version, traits_at, "
               "created_at, updated_at, owner_email")
    with engine.begin() as conn:
        conn.execute(text(f"INSERT INTO account ({columns}) VALUES "
                          "('acme', 'Acme Inc', 'acme inc', 0, 'standard', 'trialing', '{}', 'Onboarding', 0, '', "
                          "'2026-01-01 00:00:05.000000', '2026-01-01 00:00:00', '2026-01-01 00:00:00', 'ana@cs.example'), "
                          "('bare', 'bare', 'bare', 0, 'standard', 'trialing', '{}', 'Onboarding', 0, '', NULL, "
                          "'2026-01-01 00:00:00', '2026-01-01 00:00:00', NULL)"))
    migrate.upgrade(engine)
    with engine.connect() as conn:
        times = dict(conn.execute(text("SELECT id, fact_times FROM account")).all())
    engine.dispose()
    stamp = (T0 + 5 * SECOND).isoformat()
    assert json.loads(times["acme"]) == {"name": stamp, "owner_email": stamp}  # ARR 0: never set
    assert times["bare"] is None
