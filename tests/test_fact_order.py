"""Facts carry the time of the message they came from: an older message arriving late (a
redelivery, Stripe's unordered webhooks, a queued Segment client) never overwrites a newer one."""

from __future__ import annotations

from tests.factories import DAY, HOUR, T0, account_row, group, store, stripe


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
