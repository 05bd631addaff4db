"""Stripe does not order its webhooks (https://stripe.com/docs/webhooks/best-practices#event-ordering):
a subscription or invoice event may arrive before the customer event that names its account
(`metadata.account_id`) or the checkout session that links the customer to it. Whatever the
order, the account ends the same: held events are attributed, and their facts applied with
their own times, when the link arrives.

Payloads in Stripe's documented shapes: the Event object (https://docs.stripe.com/api/events/object),
Customer (https://docs.stripe.com/api/customers/object), Subscription
(https://docs.stripe.com/api/subscriptions/object), Invoice (https://docs.stripe.com/api/invoices/object),
Checkout Session (https://docs.stripe.com/api/checkout/sessions/object). Signed as Stripe signs
them (`Stripe-Signature: t=...,v1=hex HMAC-SHA256 of "t.body"`, tests/helpers.post_stripe).
"""

from __future__ import annotations

import itertools
import time
from datetime import datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.ingest import stripe as stripe_ingest
from bot.scheduler import Scheduler
from storage.ingest import PENDING, STRIPE_HOLD, expire_held_stripe
from storage.models import StripePending
from tests.factories import account_row, store
from tests.fuzz import examples
from tests.helpers import EVENT, account, count, dumps, live_stalls, one, post_stripe, rows

_ids = itertools.count()
assert PENDING is StripePending.__table__


def _customer(event_id: str, customer: str, account_id: str | None, created: int, *,
              event_type: str = "customer.created") -> dict:
    obj = {"id": customer, "object": "customer", "name": "Initech", "email": "billing@initech.example",
           "metadata": {"account_id": account_id} if account_id else {}}
    return {"id": event_id, "object": "event", "api_version": "2024-06-20", "type": event_type, "created": created,
            "livemode": False, "data": {"object": obj}}


def _subscription(event_id: str, customer: str, created: int, *, quantity: int = 7, status: str = "active",
                  event_type: str = "customer.subscription.created") -> dict:
    obj = {"id": f"sub_{customer}", "object": "subscription", "customer": customer, "status": status,
           "currency": "usd", "cancel_at_period_end": False, "current_period_end": created + 30 * 86400,
           "metadata": {},
           "items": {"object": "list", "data": [{
               "id": f"si_{customer}", "object": "subscription_item", "quantity": quantity,
               "price": {"id": "price_team", "object": "price", "nickname": "Team", "unit_amount": 10000,
                         "currency": "usd", "recurring": {"interval": "month", "interval_count": 1,
                                                          "usage_type": "licensed"}}}]}}
    return {"id": event_id, "object": "event", "api_version": "2024-06-20", "type": event_type, "created": created,
            "livemode": False, "data": {"object": obj}}


def _invoice(event_id: str, customer: str, created: int, *, event_type: str = "invoice.payment_failed") -> dict:
    failed = event_type == "invoice.payment_failed"
    obj = {"id": f"in_{event_id}", "object": "invoice", "customer": customer, "subscription": f"sub_{customer}",
           "status": "open" if failed else "paid", "currency": "usd", "amount_due": 70000,
           "amount_paid": 0 if failed else 70000, "attempt_count": 1, "billing_reason": "subscription_cycle"}
    return {"id": event_id, "object": "event", "api_version": "2024-06-20", "type": event_type, "created": created,
            "livemode": False, "data": {"object": obj}}


def _checkout(event_id: str, customer: str | None, created: int, *, reference: str | None = None,
              metadata_account: str | None = None) -> dict:
    """A completed subscription-mode Checkout Session (https://docs.stripe.com/checkout/fulfillment)."""
    obj = {"id": f"cs_test_{event_id}", "object": "checkout.session", "client_reference_id": reference,
           "customer": customer, "customer_email": None, "mode": "subscription", "payment_status": "paid",
           "status": "complete", "subscription": f"sub_{customer}", "amount_total": 70000, "currency": "usd",
           "metadata": {"account_id": metadata_account} if metadata_account else {}}
    return {"id": event_id, "object": "event", "api_version": "2024-06-20", "type": "checkout.session.completed",
            "created": created, "livemode": False, "data": {"object": obj}}


def _accepted(response) -> dict:
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (1, []), body
    return body


def _assert_linked(engine, aid: str, customer: str, event_ids: list[str], created: int) -> None:
    acme = account(engine, aid)
    assert (acme["name"], acme["domain"], acme["stripe_customer_id"]) == ("Initech", "initech.example", customer)
    assert acme["arr"] == 100 * 7 * 12  # $100 x 7 seats x 12 months
    assert acme["renewal_date"] is not None
    assert acme["status"] == "past_due"  # the failure (t+120) is newer than the subscription (t+60)
    payment_failed_at = acme["payment_failed_at"]
    payment_failed_at = payment_failed_at if payment_failed_at.tzinfo else payment_failed_at.replace(tzinfo=timezone.utc)
    assert payment_failed_at == datetime.fromtimestamp(created + 120, timezone.utc)
    assert {r["message_id"]: r["account_id"] for r in rows(engine, EVENT, EVENT.c.message_id.in_(event_ids))} == \
        dict.fromkeys(event_ids, aid)
    assert count(engine, PENDING, PENDING.c.customer_id == customer) == 0


@settings(max_examples=examples(24), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.permutations([0, 1, 2]))
def test_every_arrival_order_ends_the_same(client, engine, order):
    """customer.created (the account link), customer.subscription.created and
    invoice.payment_failed (neither names the account) in any order, through the route."""
    n = next(_ids)
    aid, customer, created = f"initech-{n}", f"cus_order{n}", int(time.time()) - 3600
    events = [_customer(f"evt_cus_{n}", customer, aid, created),
              _subscription(f"evt_sub_{n}", customer, created + 60),
              _invoice(f"evt_inv_{n}", customer, created + 120)]
    for i in order:
        _accepted(post_stripe(client, events[i]))
    _assert_linked(engine, aid, customer, [e["id"] for e in events], created)
    # The failed payment is evaluated when its account becomes known, not at the next scan.
    assert len(live_stalls(engine, aid, "payment_failed")) == 1


@settings(max_examples=examples(100), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_order_and_grouping_through_the_store(engine, rules, data):
    """Five events, any order, any split into stored batches (a batch may hold the link and
    the events it attributes): the same account at the end."""
    n = next(_ids)
    aid, customer, created = f"grouped-{n}", f"cus_grp{n}", int(time.time()) - 7200
    linker = data.draw(st.sampled_from(["customer", "checkout-reference", "checkout-metadata"]), label="linker")
    link = {"customer": _customer(f"evt_c{n}", customer, aid, created),
            "checkout-reference": _checkout(f"evt_k{n}", customer, created, reference=aid),
            "checkout-metadata": _checkout(f"evt_k{n}", customer, created, metadata_account=aid)}[linker]
    events = [link,
              _customer(f"evt_cu{n}", customer, None, created + 30, event_type="customer.updated"),
              _subscription(f"evt_s{n}", customer, created + 60, quantity=3),
              _subscription(f"evt_su{n}", customer, created + 90, event_type="customer.subscription.updated"),
              _invoice(f"evt_i{n}", customer, created + 120)]
    parsed = [stripe_ingest.parse_event(dumps(e)) for e in events]
    order = data.draw(st.permutations(parsed), label="order")
    cuts = sorted(data.draw(st.sets(st.integers(1, len(order) - 1), max_size=3), label="cuts"))
    now = datetime.fromtimestamp(created + 3600, timezone.utc)
    for start, end in zip([0, *cuts], [*cuts, len(order)]):
        store(engine, rules, list(order[start:end]), now=now)
    _assert_linked(engine, aid, customer, [e["id"] for e in events], created)
    assert account_row(engine, aid).name == "Initech"


def test_checkout_session_links_by_client_reference_id(client, engine):
    created = int(time.time()) - 600
    _accepted(post_stripe(client, _subscription("evt_sub_ck", "cus_ck", created + 60)))
    held = one(engine, PENDING, PENDING.c.message_id == "evt_sub_ck")
    assert held["customer_id"] == "cus_ck" and held["facts"]["traits"]["arr"] == 8400
    assert one(engine, EVENT, EVENT.c.message_id == "evt_sub_ck")["account_id"] is None

    _accepted(post_stripe(client, _checkout("evt_ck", "cus_ck", created + 90, reference="hooli")))
    hooli = account(engine, "hooli")
    assert (hooli["stripe_customer_id"], hooli["arr"], hooli["status"]) == ("cus_ck", 8400, "active")
    assert one(engine, EVENT, EVENT.c.message_id == "evt_sub_ck")["account_id"] == "hooli"
    stored = one(engine, EVENT, EVENT.c.message_id == "evt_ck")
    assert (stored["account_id"], stored["name"]) == ("hooli", "checkout.session.completed")
    assert stored["properties"]["session_id"] == "cs_test_evt_ck"
    assert count(engine, PENDING) == 0
    # Later events of the customer resolve through the stored link.
    _accepted(post_stripe(client, _invoice("evt_inv_ck", "cus_ck", created + 120)))
    assert account(engine, "hooli")["status"] == "past_due"


def test_checkout_session_metadata_account_wins_over_the_reference():
    event = _checkout("evt_both", "cus_both", int(time.time()), reference="cart-991", metadata_account="acme")
    parsed = stripe_ingest.parse_event(dumps(event))
    assert (parsed.account_id, parsed.stripe_customer_id) == ("acme", "cus_both")
    only_reference = stripe_ingest.parse_event(dumps(_checkout("evt_ref", None, int(time.time()), reference="acme")))
    assert (only_reference.account_id, only_reference.stripe_customer_id) == ("acme", None)
    assert "checkout.session.completed" in stripe_ingest.HANDLED_TYPES


def test_held_events_of_a_customer_never_linked_expire(engine, rules, settings):
    """A Stripe customer never linked to an account (another product's, a test customer) does
    not keep its events held for ever: past STRIPE_HOLD they are dropped by a daily leader job;
    younger ones stay held, and a later link still attributes them."""
    n = next(_ids)
    created = int(time.time()) - 3600
    at = datetime.fromtimestamp(created, timezone.utc)
    old, young = f"cus_old{n}", f"cus_young{n}"
    store(engine, rules, [stripe_ingest.parse_event(dumps(_subscription(f"evt_o{n}", old, created)))], now=at)
    later = at + STRIPE_HOLD - timedelta(days=2)
    store(engine, rules, [stripe_ingest.parse_event(dumps(_subscription(f"evt_y{n}", young, created)))], now=later)
    assert expire_held_stripe(engine, at + STRIPE_HOLD - timedelta(days=1)) == 0
    assert expire_held_stripe(engine, at + STRIPE_HOLD + timedelta(days=1)) == 1
    assert count(engine, PENDING, PENDING.c.customer_id == old) == 0
    assert one(engine, EVENT, EVENT.c.message_id == f"evt_o{n}")["account_id"] is None  # the event stays stored
    store(engine, rules, [stripe_ingest.parse_event(dumps(_customer(f"evt_c{n}", young, f"young-{n}", created)))],
          now=later + timedelta(days=3))
    assert account(engine, f"young-{n}")["arr"] == 100 * 7 * 12  # the held subscription, attributed
    assert "stripe_held_expiry" in {j.id for j in Scheduler(engine, settings, rules)._aps.get_jobs()}
