"""Stripe webhook verification and event parsing (bot/ingest/stripe.py)."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from datetime import date, datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.ingest.records import BadRequest, IncomingEvent, MessageError, Unauthorized
from bot.ingest.stripe import HANDLED_TYPES, parse_event, sign, subscription_arr, verify_signature
from tests.fuzz import examples

SECRET = "whsec_test_5Zq0t1Ue3kRr"
NOW = 1_717_000_000  # 2024-05-29T16:26:40Z
BODY = b'{"id":"evt_1","object":"event","type":"customer.created"}'


def _v1(payload: bytes, secret: str, t: int) -> str:
    return hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()


# --------------------------------------------------------------------------- signatures


def test_sign_matches_stripe_scheme():
    header = sign(BODY, SECRET, NOW)
    assert header == f"t={NOW},v1={_v1(BODY, SECRET, NOW)}"
    verify_signature(BODY, header, SECRET, now=NOW)


def test_stripe_library_agrees_both_ways():
    """Stripe's own library (stripe-python's WebhookSignature, https://docs.stripe.com/webhooks#verify-manually):
    the header it generates verifies here, and the header `sign` makes (the demo's) verifies there."""
    import stripe

    theirs = stripe.WebhookSignature.generate_signature_header(BODY.decode(), SECRET, NOW)
    verify_signature(BODY, theirs, SECRET, now=NOW)
    assert stripe.WebhookSignature.verify_header(BODY.decode(), sign(BODY, SECRET, NOW), SECRET, tolerance=None)
    with pytest.raises(Unauthorized):
        verify_signature(BODY, stripe.WebhookSignature.generate_signature_header(BODY.decode(), "whsec_x", NOW),
                         SECRET, now=NOW)


def test_valid_with_several_v1_and_other_schemes():
    good = _v1(BODY, SECRET, NOW)
    old = _v1(BODY, "whsec_old_secret", NOW)
    header = f"t={NOW},v1={old},v1={good},v0={'0' * 64},x9=whatever"
    verify_signature(BODY, header, SECRET, now=NOW)
    # the matching signature first, and whitespace around pairs
    verify_signature(BODY, f" t={NOW} , v1={good} , v1={old} ", SECRET, now=NOW)
    # upper-case hex is the same signature
    verify_signature(BODY, f"t={NOW},v1={good.upper()}", SECRET, now=NOW)


def test_within_tolerance_both_ways():
    header = sign(BODY, SECRET, NOW)
    verify_signature(BODY, header, SECRET, now=NOW + 300)
    verify_signature(BODY, header, SECRET, now=NOW - 300)
    verify_signature(BODY, header, SECRET, now=NOW + 10, tolerance=10)


def test_wrong_secret():
    header = sign(BODY, "whsec_someone_else", NOW)
    with pytest.raises(Unauthorized, match="no Stripe signature matches"):
        verify_signature(BODY, header, SECRET, now=NOW)


def test_tampered_body_one_byte():
    header = sign(BODY, SECRET, NOW)
    for i in (0, len(BODY) // 2, len(BODY) - 1):
        tampered = bytearray(BODY)
        tampered[i] ^= 0x01
        with pytest.raises(Unauthorized, match="no Stripe signature matches"):
            verify_signature(bytes(tampered), header, SECRET, now=NOW)
    with pytest.raises(Unauthorized):
        verify_signature(BODY + b" ", header, SECRET, now=NOW)


def test_signed_timestamp_cannot_be_swapped():
    good = _v1(BODY, SECRET, NOW)
    with pytest.raises(Unauthorized, match="no Stripe signature matches"):
        verify_signature(BODY, f"t={NOW + 1},v1={good}", SECRET, now=NOW)


@pytest.mark.parametrize("offset", [301, -301, 3600, -86400])
def test_stale_and_future_timestamps(offset):
    header = sign(BODY, SECRET, NOW)
    with pytest.raises(Unauthorized, match="outside the tolerance"):
        verify_signature(BODY, header, SECRET, now=NOW + offset)


@pytest.mark.parametrize(
    "header, message",
    [
        (None, "missing"),
        ("", "missing"),
        ("   ", "missing"),
        ("garbage", "malformed"),
        ("t=abc,v1=" + "0" * 64, "malformed"),
        ("t=-5,v1=" + "0" * 64, "malformed"),
        ("t=1.5,v1=" + "0" * 64, "malformed"),
        ("t=" + "9" * 400 + ",v1=" + "0" * 64, "malformed"),
        (f"t={NOW},t={NOW},v1=" + "0" * 64, "malformed"),
        ("v1=" + "0" * 64, "no timestamp"),
        (f"t={NOW}", "no v1"),
        (f"t={NOW},v0=" + "0" * 64, "no v1"),
        (f"t={NOW},v1=", "no Stripe signature matches"),
        (f"t={NOW},v1=zz", "no Stripe signature matches"),
        (f"t={NOW},v1=é" + "0" * 63, "no Stripe signature matches"),
        ("x" * 10_000, "too long"),
    ],
)
def test_malformed_headers(header, message):
    with pytest.raises(Unauthorized, match=message):
        verify_signature(BODY, header, SECRET, now=NOW)


def test_no_secret_configured_is_unauthorized():
    with pytest.raises(Unauthorized, match="not configured"):
        verify_signature(BODY, sign(BODY, "", NOW), "", now=NOW)


@settings(max_examples=examples(300), suppress_health_check=[HealthCheck.too_slow])
@given(
    header=st.one_of(
        st.none(),
        st.text(),
        st.lists(
            st.tuples(
                st.sampled_from(["t", "v1", "v0", "v2", "", " t", "v1 "]),
                st.one_of(st.text(max_size=80), st.integers().map(str), st.just(str(NOW))),
            ),
            max_size=6,
        ).map(lambda pairs: ",".join(f"{k}={v}" for k, v in pairs)),
    ),
    body=st.binary(max_size=200),
    now=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**62), 2**62)),
)
def test_any_header_only_raises_unauthorized(header, body, now):
    try:
        verify_signature(body, header, SECRET, now=now)
    except Unauthorized:
        pass
    else:  # accepting needs a real signature, which random text does not carry
        pytest.fail(f"accepted forged header {header!r}")


@settings(max_examples=examples(100))
@given(body=st.binary(max_size=300), t=st.integers(0, 2**40), skew=st.integers(-300, 300))
def test_any_body_signed_properly_verifies(body, t, skew):
    verify_signature(body, sign(body, SECRET, t), SECRET, now=t + skew)


# --------------------------------------------------------------------------- fixtures
# Modeled on the examples in Stripe's API reference (Event, Customer, Subscription,
# Invoice objects); trimmed to the fields that matter plus some realistic noise.

CREATED = 1_716_998_400  # 2024-05-29T16:00:00Z


def event(event_type: str, obj: dict, **extra) -> bytes:
    envelope = {
        "id": "evt_1PLgWf2eZvKYlo2C8cHV2W4g",
        "object": "event",
        "api_version": "2024-04-10",
        "created": CREATED,
        "data": {"object": obj, "previous_attributes": {}},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": "req_Kx9tq1yB7pAKLm", "idempotency_key": None},
        "type": event_type,
    }
    envelope.update(extra)
    return json.dumps(envelope).encode()


CUSTOMER = {
    "id": "cus_NffrFeUfNV2Hib",
    "object": "customer",
    "address": None,
    "balance": 0,
    "created": 1680893993,
    "currency": None,
    "default_source": None,
    "delinquent": False,
    "description": None,
    "email": "Billing@Acme-Corp.com",
    "invoice_prefix": "0759376C",
    "invoice_settings": {"custom_fields": None, "default_payment_method": None, "footer": None},
    "livemode": False,
    "metadata": {"account_id": "acct_acme"},
    "name": "Acme Corp",
    "phone": None,
    "preferred_locales": [],
    "shipping": None,
    "tax_exempt": "none",
    "test_clock": None,
}


def price(price_id: str, unit_amount: int | None, interval: str, nickname: str | None = None, **recurring) -> dict:
    return {
        "id": price_id,
        "object": "price",
        "active": True,
        "billing_scheme": "per_unit",
        "created": 1679431181,
        "currency": "usd",
        "livemode": False,
        "lookup_key": None,
        "metadata": {},
        "nickname": nickname,
        "product": "prod_NjpI7DbZx6AlWQ",
        "recurring": {
            "aggregate_usage": None,
            "interval": interval,
            "interval_count": recurring.pop("interval_count", 1),
            "trial_period_days": None,
            "usage_type": recurring.pop("usage_type", "licensed"),
        },
        "tax_behavior": "unspecified",
        "tiers_mode": None,
        "transform_quantity": None,
        "type": "recurring",
        "unit_amount": unit_amount,
        "unit_amount_decimal": None if unit_amount is None else str(unit_amount),
    }


def sub_item(item_id: str, item_price: dict, quantity: int | None = 1) -> dict:
    return {
        "id": item_id,
        "object": "subscription_item",
        "billing_thresholds": None,
        "created": 1680126547,
        "metadata": {},
        "price": item_price,
        "quantity": quantity,
        "subscription": "sub_1MowQVLkdIwHu7ixeRlqHVzs",
        "tax_rates": [],
    }


SUBSCRIPTION = {
    "id": "sub_1MowQVLkdIwHu7ixeRlqHVzs",
    "object": "subscription",
    "application": None,
    "billing_cycle_anchor": 1679609767,
    "cancel_at": None,
    "cancel_at_period_end": False,
    "canceled_at": None,
    "collection_method": "charge_automatically",
    "created": 1679609767,
    "currency": "usd",
    "current_period_end": 1719792000,  # 2024-07-01T00:00:00Z
    "current_period_start": 1717200000,
    "customer": "cus_NffrFeUfNV2Hib",
    "days_until_due": None,
    "default_payment_method": None,
    "discount": None,
    "ended_at": None,
    "items": {
        "object": "list",
        "data": [
            sub_item("si_1", price("price_1MowQULkdIwHu7ixraBm864M", 4000, "month", "Growth (monthly)"), 10),
            sub_item("si_2", price("price_addon_sso", 50000, "year", "SSO add-on")),
        ],
        "has_more": False,
        "total_count": 2,
        "url": "/v1/subscription_items?subscription=sub_1MowQVLkdIwHu7ixeRlqHVzs",
    },
    "latest_invoice": "in_1MowQWLkdIwHu7ixuzkSPfKd",
    "livemode": False,
    "metadata": {"account_id": "acct_acme"},
    "pause_collection": None,
    "status": "active",
    "trial_end": None,
    "trial_start": None,
}


INVOICE = {
    "id": "in_1MtHbELkdIwHu7ixl4OzzPMv",
    "object": "invoice",
    "account_country": "US",
    "amount_due": 90000,
    "amount_paid": 0,
    "amount_remaining": 90000,
    "attempt_count": 2,
    "attempted": True,
    "billing_reason": "subscription_cycle",
    "collection_method": "charge_automatically",
    "created": 1680644467,
    "currency": "usd",
    "customer": "cus_NffrFeUfNV2Hib",
    "customer_email": "billing@acme-corp.com",
    "lines": {
        "object": "list",
        "data": [
            {
                "id": "il_1",
                "object": "line_item",
                "amount": 40000,
                "currency": "usd",
                "price": price("price_1MowQULkdIwHu7ixraBm864M", 4000, "month", "Growth (monthly)"),
                "quantity": 10,
            }
        ],
        "has_more": False,
    },
    "metadata": {},
    "next_payment_attempt": 1717257600,
    "paid": False,
    "status": "open",
    "subscription": "sub_1MowQVLkdIwHu7ixeRlqHVzs",
    "subscription_details": {"metadata": {"account_id": "acct_acme"}},
    "total": 90000,
}


# --------------------------------------------------------------------------- parsing


def test_subscription_updated_maps_lifecycle_arr_and_renewal():
    ev = parse_event(event("customer.subscription.updated", SUBSCRIPTION))
    assert isinstance(ev, IncomingEvent)
    assert ev.source == "stripe"
    assert ev.kind == "stripe"
    assert ev.message_id == "evt_1PLgWf2eZvKYlo2C8cHV2W4g"
    assert ev.name == "customer.subscription.updated"
    assert ev.occurred_at == datetime(2024, 5, 29, 16, 0, tzinfo=timezone.utc)
    assert ev.occurred_at.tzinfo is not None
    assert ev.account_id == "acct_acme"
    assert ev.contact_id is None
    assert ev.stripe_customer_id == "cus_NffrFeUfNV2Hib"
    assert ev.lifecycle == "active"
    assert ev.payment_failed is None
    # 10 seats x $40/month x 12 + $500/year
    assert ev.account_traits == {"arr": 5300.0, "renewal_date": date(2024, 7, 1)}
    assert ev.properties["status"] == "active"
    assert ev.properties["plan"] == "Growth (monthly)"
    assert ev.properties["currency"] == "usd"
    assert ev.properties["cancel_at_period_end"] is False
    assert ev.properties["subscription_id"] == "sub_1MowQVLkdIwHu7ixeRlqHVzs"
    assert ev.properties["arr"] == 5300.0
    json.dumps(ev.properties)  # storable as JSON


@pytest.mark.parametrize(
    "status, cancel_at_period_end, lifecycle",
    [
        ("trialing", False, "trialing"),
        ("active", False, "active"),
        ("active", True, "cancelled"),
        ("trialing", True, "cancelled"),
        ("past_due", False, "past_due"),
        ("unpaid", False, "past_due"),
        ("incomplete", False, "past_due"),
        ("paused", False, "past_due"),
        ("canceled", False, "churned"),
        ("incomplete_expired", False, "churned"),
        ("some_future_status", False, None),
    ],
)
def test_subscription_status_mapping(status, cancel_at_period_end, lifecycle):
    sub = dict(SUBSCRIPTION, status=status, cancel_at_period_end=cancel_at_period_end)
    ev = parse_event(event("customer.subscription.updated", sub))
    assert ev.lifecycle == lifecycle


def test_renewal_only_when_active_and_not_cancelling():
    trialing = parse_event(event("customer.subscription.created", dict(SUBSCRIPTION, status="trialing")))
    assert trialing.account_traits == {"arr": 5300.0}
    cancelling = parse_event(event("customer.subscription.updated", dict(SUBSCRIPTION, cancel_at_period_end=True)))
    assert cancelling.lifecycle == "cancelled"
    assert "renewal_date" not in cancelling.account_traits


def test_subscription_deleted_is_churned_without_arr():
    ev = parse_event(event("customer.subscription.deleted", dict(SUBSCRIPTION, status="canceled")))
    assert ev.lifecycle == "churned"
    assert ev.account_traits is None
    # even if Stripe still reports another status on the object
    assert parse_event(event("customer.subscription.deleted", SUBSCRIPTION)).lifecycle == "churned"


def test_paused_and_resumed_events():
    assert parse_event(event("customer.subscription.paused", dict(SUBSCRIPTION, status="paused"))).lifecycle == "past_due"
    assert parse_event(event("customer.subscription.resumed", SUBSCRIPTION)).lifecycle == "active"
    trial = parse_event(event("customer.subscription.trial_will_end", dict(SUBSCRIPTION, status="trialing", trial_end=1717804800)))
    assert trial.lifecycle == "trialing"
    assert trial.properties["trial_end"] == "2024-06-08T00:00:00+00:00"


def test_subscription_without_metadata_falls_back_to_customer_id():
    sub = dict(SUBSCRIPTION, metadata={})
    ev = parse_event(event("customer.subscription.created", sub))
    assert ev.account_id is None
    assert ev.stripe_customer_id == "cus_NffrFeUfNV2Hib"


def test_subscription_with_expanded_customer():
    sub = dict(SUBSCRIPTION, metadata={}, customer=CUSTOMER)
    ev = parse_event(event("customer.subscription.updated", sub))
    assert ev.account_id == "acct_acme"
    assert ev.stripe_customer_id == "cus_NffrFeUfNV2Hib"


@pytest.mark.parametrize(
    "interval, count, amount, quantity, expected",
    [
        ("month", 1, 10000, 1, 1200.0),
        ("year", 1, 1200000, 1, 12000.0),
        ("week", 1, 1000, 2, 1040.0),
        ("day", 1, 100, 1, 365.0),
        ("month", 3, 30000, 1, 1200.0),  # quarterly
        ("month", 1, 4999, 3, 1799.64),
    ],
)
def test_arr_normalization(interval, count, amount, quantity, expected):
    sub = {"items": {"data": [sub_item("si", price("p", amount, interval, interval_count=count), quantity)]}}
    assert subscription_arr(sub) == expected


def test_arr_edge_cases():
    metered = price("p_metered", 5, "month", usage_type="metered")
    seats = price("p_seats", 1000, "month")
    sub = {"items": {"data": [sub_item("a", metered, None), sub_item("b", seats, 5)]}}
    assert subscription_arr(sub) == 600.0  # metered usage is unknown, skipped
    assert subscription_arr({"items": {"data": [sub_item("a", metered, None)]}}) is None
    tiered = price("p_tiered", None, "month")
    assert subscription_arr({"items": {"data": [sub_item("a", tiered), sub_item("b", seats)]}}) is None
    assert subscription_arr({"items": {"data": []}}) is None
    assert subscription_arr({}) is None
    # quantity missing counts as 1; legacy `plan` object without `price`
    legacy = {"id": "si", "plan": {"id": "gold", "amount": 2000, "currency": "usd", "interval": "month", "interval_count": 1}}
    assert subscription_arr({"items": {"data": [legacy]}}) == 240.0
    # zero-decimal currency: 5000 JPY a month
    yen = price("p_yen", 5000, "month")
    yen["currency"] = "jpy"
    assert subscription_arr({"items": {"data": [sub_item("a", yen)]}}) == 60000.0
    # decimal unit amounts
    dec = price("p_dec", None, "month")
    dec["unit_amount_decimal"] = "1250.5"
    assert subscription_arr({"items": {"data": [sub_item("a", dec, 2)]}}) == 300.12


def test_renewal_date_from_items_on_newer_api_versions():
    sub = copy.deepcopy(SUBSCRIPTION)
    del sub["current_period_end"]
    sub["items"]["data"][0]["current_period_end"] = 1722470400  # 2024-08-01
    sub["items"]["data"][1]["current_period_end"] = 1719792000  # 2024-07-01
    ev = parse_event(event("customer.subscription.updated", sub))
    assert ev.account_traits["renewal_date"] == date(2024, 7, 1)


def test_invoice_payment_failed():
    ev = parse_event(event("invoice.payment_failed", INVOICE))
    assert ev.name == "invoice.payment_failed"
    assert ev.payment_failed is True
    assert ev.lifecycle == "past_due"
    assert ev.account_id == "acct_acme"
    assert ev.stripe_customer_id == "cus_NffrFeUfNV2Hib"
    assert ev.account_traits is None
    assert ev.properties["amount"] == 900.0
    assert ev.properties["currency"] == "usd"
    assert ev.properties["attempt_count"] == 2
    assert ev.properties["invoice_id"] == "in_1MtHbELkdIwHu7ixl4OzzPMv"
    assert ev.properties["subscription_id"] == "sub_1MowQVLkdIwHu7ixeRlqHVzs"
    assert ev.properties["plan"] == "Growth (monthly)"
    assert ev.properties["next_payment_attempt"] == "2024-06-01T16:00:00+00:00"


@pytest.mark.parametrize("event_type", ["invoice.paid", "invoice.payment_succeeded"])
def test_invoice_paid(event_type):
    paid = dict(INVOICE, amount_paid=90000, amount_remaining=0, paid=True, status="paid")
    ev = parse_event(event(event_type, paid))
    assert ev.payment_failed is False
    assert ev.lifecycle is None
    assert ev.properties["amount"] == 900.0
    assert ev.properties["status"] == "paid"


def test_invoice_account_sources():
    base = dict(INVOICE, subscription_details=None, metadata={})
    assert parse_event(event("invoice.paid", base)).account_id is None
    assert parse_event(event("invoice.paid", dict(base, metadata={"account_id": "from_invoice"}))).account_id == "from_invoice"
    expanded = dict(base, customer=dict(CUSTOMER, metadata={"account_id": "from_customer"}))
    ev = parse_event(event("invoice.paid", expanded))
    assert ev.account_id == "from_customer"
    assert ev.stripe_customer_id == "cus_NffrFeUfNV2Hib"
    # API >= 2025-03-31 (basil): parent.subscription_details
    basil = dict(
        base,
        subscription=None,
        parent={
            "type": "subscription_details",
            "subscription_details": {"metadata": {"account_id": "from_parent"}, "subscription": "sub_basil"},
        },
    )
    ev = parse_event(event("invoice.payment_failed", basil))
    assert ev.account_id == "from_parent"
    assert ev.properties["subscription_id"] == "sub_basil"
    # subscription_details wins over the invoice's own metadata
    both = dict(INVOICE, metadata={"account_id": "other"})
    assert parse_event(event("invoice.paid", both)).account_id == "acct_acme"


def test_customer_events():
    ev = parse_event(event("customer.created", CUSTOMER))
    assert ev.account_id == "acct_acme"
    assert ev.stripe_customer_id == "cus_NffrFeUfNV2Hib"
    assert ev.account_traits == {"name": "Acme Corp", "domain": "acme-corp.com"}
    assert ev.lifecycle is None
    assert ev.payment_failed is None

    gmail = parse_event(event("customer.updated", dict(CUSTOMER, email="jane@gmail.com", name=None)))
    assert gmail.account_traits is None

    deleted = parse_event(event("customer.deleted", dict(CUSTOMER, deleted=True)))
    assert deleted.account_traits is None
    assert deleted.lifecycle is None
    assert deleted.properties["deleted"] is True
    assert deleted.stripe_customer_id == "cus_NffrFeUfNV2Hib"


def test_customer_without_id_is_a_message_error():
    with pytest.raises(MessageError, match="no id"):
        parse_event(event("customer.created", dict(CUSTOMER, id=None)))


def test_non_string_account_id_metadata():
    with pytest.raises(MessageError, match="account_id"):
        parse_event(event("customer.created", dict(CUSTOMER, metadata={"account_id": ["x"]})))
    ev = parse_event(event("customer.created", dict(CUSTOMER, metadata={"account_id": 42})))
    assert ev.account_id == "42"
    assert parse_event(event("customer.created", dict(CUSTOMER, metadata={"account_id": "  "}))).account_id is None


@pytest.mark.parametrize(
    "event_type", ["charge.succeeded", "payment_intent.created", "invoice.created", "invoice.finalized", "customer.source.created"]
)
def test_ignored_event_types(event_type):
    assert parse_event(event(event_type, {"id": "ch_1", "object": "charge"})) is None


def test_handled_types_are_the_documented_ones():
    assert HANDLED_TYPES == {
        "customer.created",
        "customer.updated",
        "customer.deleted",
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "customer.subscription.paused",
        "customer.subscription.resumed",
        "customer.subscription.trial_will_end",
        "invoice.paid",
        "invoice.payment_succeeded",
        "invoice.payment_failed",
        "checkout.session.completed",
    }


@pytest.mark.parametrize(
    "body, message",
    [
        (b"", "not valid JSON"),
        (b"not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[]", "not a Stripe event"),
        (b'"evt_1"', "not a Stripe event"),
        (b'{"type": "customer.created"}', "no id"),
        (b'{"id": "", "type": "customer.created"}', "no id"),
        (b'{"id": 5, "type": "customer.created"}', "no id"),
        (b'{"id": "evt_1"}', "no type"),
        (b'{"id": "evt_1", "type": "customer.created", "data": {"object": {"id": "cus_1"}}}', "created"),
        (b'{"id": "evt_1", "type": "customer.created", "created": "yesterday", "data": {"object": {}}}', "created"),
        (b'{"id": "evt_1", "type": "customer.created", "created": 1e300, "data": {"object": {}}}', "created"),
        (b'{"id": "evt_1", "type": "customer.created", "created": 1716998400}', "data.object"),
        (b'{"id": "evt_1", "type": "customer.created", "created": 1716998400, "data": {"object": []}}', "data.object"),
    ],
)
def test_bad_bodies(body, message):
    with pytest.raises(BadRequest, match=message):
        parse_event(body)


def test_bom_prefixed_body_is_accepted():
    ev = parse_event(b"\xef\xbb\xbf" + event("customer.created", CUSTOMER))
    assert ev.stripe_customer_id == "cus_NffrFeUfNV2Hib"


def _check(body: bytes) -> None:
    try:
        result = parse_event(body)
    except (BadRequest, MessageError):
        return
    assert result is None or isinstance(result, IncomingEvent)
    if result is not None:
        assert result.occurred_at.tzinfo is not None
        assert result.lifecycle in (None, "trialing", "active", "past_due", "cancelled", "churned")
        json.dumps(result.properties)


@settings(max_examples=examples(300))
@given(st.binary(max_size=400))
def test_any_bytes_only_bad_request(body):
    _check(body)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=25,
)
stripe_keys = st.sampled_from(
    [
        "id", "customer", "metadata", "account_id", "status", "items", "data", "price", "plan", "quantity",
        "recurring", "interval", "interval_count", "unit_amount", "unit_amount_decimal", "usage_type",
        "current_period_end", "cancel_at_period_end", "currency", "email", "name", "subscription_details",
        "parent", "lines", "amount_due", "amount_paid", "attempt_count", "subscription", "trial_end",
        "next_payment_attempt", "nickname",
    ]
)
stripe_like = st.recursive(
    json_values,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(stripe_keys, children, max_size=6),
    max_leaves=40,
)


@settings(max_examples=examples(400), suppress_health_check=[HealthCheck.too_slow])
@given(
    event_type=st.sampled_from(sorted(HANDLED_TYPES)),
    obj=stripe_like,
    created=st.one_of(st.integers(-(2**63), 2**63), st.floats(), st.text(max_size=5), st.none()),
    base=st.sampled_from([CUSTOMER, SUBSCRIPTION, INVOICE]),
    mutate=st.dictionaries(stripe_keys, stripe_like, max_size=4),
)
def test_handled_events_with_arbitrary_objects(event_type, obj, created, base, mutate):
    for candidate in (obj, {**base, **mutate}):
        envelope = {"id": "evt_x", "type": event_type, "created": created, "data": {"object": candidate}}
        try:
            body = json.dumps(envelope, allow_nan=True).encode()
        except (ValueError, OverflowError):
            continue
        _check(body)
