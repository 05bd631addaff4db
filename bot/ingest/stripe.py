"""Stripe webhooks: signature verification and event parsing.

Pure functions, no I/O. The `/ingest/stripe` route calls, in this order:

1. `verify_signature(raw_body, request.headers.get("Stripe-Signature"), secret, now=time.time())`
   raises `Unauthorized` (401, store nothing) for a missing, malformed, stale or wrong signature.
2. `parse_event(raw_body)` returns one `IncomingEvent`, or None for an event type Stripe
   delivered but Stallwatch ignores (answer 200 with `accepted: 0`). It raises
   `BadRequest` (400) when the envelope itself is unusable (not JSON, not an object, no
   `id` / `type` / `created` / `data.object`), and `MessageError` (report it as
   `rejected: [{"index": 0, "error": str(exc)}]`) when a handled event carries an object
   Stallwatch cannot use (e.g. a customer event without a customer id). Nothing else.

Signature scheme (as Stripe documents it): the `Stripe-Signature` header is a comma
separated list of `key=value` pairs: one `t` (unix seconds) and one or more `v1` (hex
HMAC-SHA256, several during a secret roll); other schemes (`v0`, unknown keys) are ignored.
The signed payload is `f"{t}."` followed by the raw body bytes. A delivery is accepted
when any `v1` matches (constant-time compare) and `|now - t| <= tolerance`. As Stripe's own
libraries do, the signature is checked before the timestamp, so a forged request always
reads "no signature matches".

Lifecycle mapping (`IncomingEvent.lifecycle`), decided here:

| event / subscription status                      | lifecycle   |
|--------------------------------------------------|-------------|
| `trialing`                                       | `trialing`  |
| `active`                                         | `active`    |
| `active` or `trialing` with `cancel_at_period_end`| `cancelled` |
| `past_due`, `unpaid`, `incomplete`               | `past_due`  |
| `paused` (status or `customer.subscription.paused`) | `past_due` |
| `canceled`, `incomplete_expired`                 | `churned`   |
| `customer.subscription.deleted` (any status)     | `churned`   |
| `invoice.payment_failed`                         | `past_due` (and `payment_failed=True`) |
| `invoice.paid`, `invoice.payment_succeeded`      | unchanged   (`payment_failed=False`)  |
| `customer.*`                                     | unchanged   |
| unknown status                                   | unchanged   |

`paused` maps to `past_due`, not `cancelled`: Stripe pauses a subscription when a trial
ends without a payment method. The customer is not paying but has not decided to leave,
which is exactly when CS should act, so stalls stay open (a `cancelled`/`churned` account
has its stalls suppressed). `customer.deleted` does not set a lifecycle: Stripe cancels
the customer's subscriptions itself and sends `customer.subscription.deleted` for them.

Account facts (`account_traits`):

- subscriptions (not on `deleted`, not when canceled/incomplete_expired): `arr` in major
  currency units (dollars for USD) = sum over `items.data` of `unit_amount x quantity`,
  annualized by `recurring.interval` and `interval_count` (month x12, year x1, week x52,
  day x365). Falls back to the legacy `plan` object, and to `unit_amount_decimal`. Metered
  items are skipped (usage unknown); if a licensed item has no computable amount (tiered
  pricing), `arr` is omitted rather than understated. Discounts and taxes are ignored (list
  price). Zero-decimal currencies (JPY, KRW, ...) are not divided by 100, three-decimal
  ones (KWD, BHD, ...) by 1000. No currency conversion: the number is in the subscription's
  currency. `renewal_date` = `current_period_end` (or, on API versions >= 2025-03-31 where
  it moved to the items, the earliest item `current_period_end`) as a UTC date, when the
  status is `active` and the subscription is not set to cancel at period end.
- `customer.created` / `customer.updated`: `name` from the customer's `name`, `domain`
  from its `email` (lower-cased; skipped for free-mail domains such as gmail.com, which say
  nothing about the account).

The account is `metadata.account_id` of the object: the customer (customer events, or an
expanded `customer` object on subscriptions / invoices), the subscription, or on invoices
`subscription_details.metadata` (`parent.subscription_details.metadata` on API versions
>= 2025-03-31) then the invoice's own `metadata`. When none is set `account_id` is None and
the store resolves the account through `stripe_customer_id`.

`checkout.session.completed` (https://docs.stripe.com/api/checkout/sessions/object) names
the account by the session's `metadata.account_id`, else its `client_reference_id` (the
reference the integration passed when it created the session), and links the session's
`customer` to it. Stripe does not order its webhooks
(https://stripe.com/docs/webhooks/best-practices#event-ordering): a subscription or invoice event that
arrives before its customer is linked is stored without an account, its facts held
(storage.ingest), and attributed, facts applied with their own times, in the transaction
that first links the customer (a customer event's metadata, a checkout session, a
subscription's metadata).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from datetime import date, datetime, timezone
from typing import Any

from bot.ingest.records import BadRequest, IncomingEvent, MessageError, Unauthorized, load_json
from rules.domains import company_domain

__all__ = [
    "HANDLED_TYPES",
    "DEFAULT_TOLERANCE",
    "verify_signature",
    "sign",
    "parse_event",
    "subscription_lifecycle",
    "subscription_arr",
]

DEFAULT_TOLERANCE = 300
MAX_HEADER_LENGTH = 8192
MAX_ID_LENGTH = 255
MAX_PROPERTY_TEXT = 200

_CUSTOMER_TYPES = frozenset({"customer.created", "customer.updated", "customer.deleted"})
_SUBSCRIPTION_TYPES = frozenset(
    {
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "customer.subscription.paused",
        "customer.subscription.resumed",
        "customer.subscription.trial_will_end",
    }
)
_INVOICE_TYPES = frozenset({"invoice.paid", "invoice.payment_succeeded", "invoice.payment_failed"})
_CHECKOUT_TYPES = frozenset({"checkout.session.completed"})
HANDLED_TYPES = _CUSTOMER_TYPES | _SUBSCRIPTION_TYPES | _INVOICE_TYPES | _CHECKOUT_TYPES

_STATUS_LIFECYCLE = {
    "trialing": "trialing",
    "active": "active",
    "past_due": "past_due",
    "unpaid": "past_due",
    "incomplete": "past_due",
    "paused": "past_due",
    "canceled": "churned",
    "incomplete_expired": "churned",
}
_TERMINAL_STATUSES = frozenset({"canceled", "incomplete_expired"})

_INTERVALS_PER_YEAR = {"day": 365, "week": 52, "month": 12, "year": 1}

# https://docs.stripe.com/currencies#zero-decimal and #three-decimal
_ZERO_DECIMAL = frozenset(
    "bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split()
)
_THREE_DECIMAL = frozenset("bhd jod kwd omr tnd".split())


_TIMESTAMP_RE = re.compile(r"[0-9]{1,15}")
_HEX64_RE = re.compile(r"[0-9a-fA-F]{64}")


# --------------------------------------------------------------------------- signature


def _hmac_hex(payload: bytes, secret: str, timestamp: str) -> str:
    key = secret.encode("utf-8", "surrogatepass")
    mac = hmac.new(key, timestamp.encode("ascii") + b"." + payload, hashlib.sha256)
    return mac.hexdigest()


def sign(payload: bytes, secret: str, timestamp: int) -> str:
    """A valid `Stripe-Signature` header value for `payload` signed at `timestamp`."""
    t = str(int(timestamp))
    return f"t={t},v1={_hmac_hex(payload, secret, t)}"


def verify_signature(
    payload: bytes,
    header: str | None,
    secret: str,
    *,
    now: float,
    tolerance: int = DEFAULT_TOLERANCE,
) -> None:
    """Verify a `Stripe-Signature` header against the raw body; raise `Unauthorized` if not valid.

    Never raises anything but `Unauthorized`, whatever the header text.
    """
    if not secret:
        raise Unauthorized("Stripe webhook secret is not configured")
    if header is None or not isinstance(header, str) or not header.strip():
        raise Unauthorized("missing Stripe-Signature header")
    if len(header) > MAX_HEADER_LENGTH:
        raise Unauthorized("malformed Stripe-Signature header: too long")

    timestamp: str | None = None
    v1: list[str] = []
    for item in header.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise Unauthorized("malformed Stripe-Signature header: expected comma-separated key=value pairs")
        key = key.strip()
        value = value.strip()
        if key == "t":
            if timestamp is not None:
                raise Unauthorized("malformed Stripe-Signature header: more than one timestamp")
            if not _TIMESTAMP_RE.fullmatch(value):
                raise Unauthorized("malformed Stripe-Signature header: timestamp is not unix seconds")
            timestamp = value
        elif key == "v1":
            v1.append(value)
        # v0 and unknown schemes are ignored, as Stripe documents.
    if timestamp is None:
        raise Unauthorized("malformed Stripe-Signature header: no timestamp (t=)")
    if not v1:
        raise Unauthorized("no v1 signature in Stripe-Signature header")

    expected = _hmac_hex(payload if isinstance(payload, bytes) else bytes(payload), secret, timestamp).encode("ascii")
    matched = False
    for candidate in v1:
        if _HEX64_RE.fullmatch(candidate):
            # Compare every candidate (no early exit) in constant time.
            matched |= hmac.compare_digest(expected, candidate.lower().encode("ascii"))
    if not matched:
        raise Unauthorized("no Stripe signature matches the payload (wrong secret or altered body)")

    try:
        skew = abs(float(now) - int(timestamp))
    except (TypeError, ValueError, OverflowError):
        raise Unauthorized("Stripe-Signature timestamp cannot be checked") from None
    if not skew <= tolerance:  # also rejects NaN
        raise Unauthorized(
            f"Stripe-Signature timestamp is outside the tolerance ({int(skew)} s > {tolerance} s)"
        )


# --------------------------------------------------------------------------- helpers


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _items(value: Any) -> list[Any]:
    """`items.data` / `lines.data` of a Stripe list object (or a bare list)."""
    if isinstance(value, dict):
        value = value.get("data")
    return value if isinstance(value, list) else []


def _text(value: Any, limit: int = MAX_PROPERTY_TEXT) -> str | None:
    if isinstance(value, str):
        value = value.strip()
        return value[:limit] if value else None
    return None


def _number(value: Any) -> float | None:
    """A finite number from an int, a float, or a decimal string (`unit_amount_decimal`)."""
    if isinstance(value, bool):
        return None
    if not isinstance(value, (int, float)) and not (
        isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]{1,30}(\.[0-9]{1,30})?\s*", value)
    ):
        return None
    try:
        number = float(value)
    except (OverflowError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _id_of(value: Any, field: str) -> str | None:
    """A Stripe id: a string, or the `id` of an expanded object."""
    if isinstance(value, dict):
        value = value.get("id")
    return _bounded(value, field, "a Stripe id string")


def _bounded(value: Any, field: str, kind: str = "a string") -> str | None:
    """An id or account id as Stripe sends it: a string, trimmed, at most MAX_ID_LENGTH
    characters; None when absent or blank."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise MessageError(f"{field} must be {kind}, got {type(value).__name__}")
    value = value.strip()
    if len(value) > MAX_ID_LENGTH:
        raise MessageError(f"{field} is longer than {MAX_ID_LENGTH} characters")
    return value or None


def _metadata_account(holder: Any) -> str | None:
    """`holder.metadata.account_id` (Stripe metadata values are strings; ints tolerated)."""
    value = _obj(_obj(holder).get("metadata")).get("account_id")
    if isinstance(value, bool) or value is None:
        return None
    return _bounded(str(value) if isinstance(value, int) else value, "metadata.account_id")


def _reference_account(session: dict[str, Any]) -> str | None:
    """A Checkout Session's account: `metadata.account_id`, else `client_reference_id`."""
    account = _metadata_account(session)
    if account:
        return account
    return _bounded(session.get("client_reference_id"), "client_reference_id")


def _first_account(*holders: Any) -> str | None:
    for holder in holders:
        account = _metadata_account(holder)
        if account:
            return account
    return None


def _minor_unit_divisor(currency: Any) -> int:
    code = currency.lower() if isinstance(currency, str) else ""
    if code in _ZERO_DECIMAL:
        return 1
    if code in _THREE_DECIMAL:
        return 1000
    return 100


def _major(amount: Any, currency: Any) -> float | None:
    number = _number(amount)
    if number is None:
        return None
    return round(number / _minor_unit_divisor(currency), 2)


def _utc_from_unix(value: Any) -> datetime | None:
    number = _number(value) if not isinstance(value, str) else None
    if number is None:
        return None
    try:
        return datetime.fromtimestamp(number, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None




def _price_of(item: dict[str, Any]) -> dict[str, Any]:
    """The item's `price`, or the legacy `plan` shaped like a price."""
    price = item.get("price")
    if isinstance(price, dict):
        return price
    plan = _obj(item.get("plan"))
    if not plan:
        return {}
    return {
        "id": plan.get("id"),
        "nickname": plan.get("nickname"),
        "currency": plan.get("currency"),
        "unit_amount": plan.get("amount"),
        "unit_amount_decimal": plan.get("amount_decimal"),
        "recurring": {
            "interval": plan.get("interval"),
            "interval_count": plan.get("interval_count"),
            "usage_type": plan.get("usage_type"),
        },
    }


# --------------------------------------------------------------------------- subscriptions


def subscription_lifecycle(event_type: str, subscription: dict[str, Any]) -> str | None:
    """The lifecycle status a subscription event implies (see the module table)."""
    if event_type == "customer.subscription.deleted":
        return "churned"
    if event_type == "customer.subscription.paused":
        return "past_due"
    status = subscription.get("status")
    lifecycle = _STATUS_LIFECYCLE.get(status) if isinstance(status, str) else None
    if lifecycle in ("active", "trialing") and subscription.get("cancel_at_period_end") is True:
        return "cancelled"
    return lifecycle


def subscription_arr(subscription: dict[str, Any]) -> float | None:
    """Annual recurring revenue of a subscription's items, in major currency units."""
    total = 0.0
    counted = 0
    for raw in _items(subscription.get("items")):
        item = _obj(raw)
        price = _price_of(item)
        recurring = _obj(price.get("recurring"))
        if recurring.get("usage_type") == "metered":
            continue  # billed on usage: no fixed amount to annualize
        per_year = _INTERVALS_PER_YEAR.get(recurring.get("interval"))  # type: ignore[arg-type]
        count = _number(recurring.get("interval_count"))
        if count is None:
            count = 1.0
        unit = _number(price.get("unit_amount"))
        if unit is None:
            unit = _number(price.get("unit_amount_decimal"))
        quantity = _number(item.get("quantity")) if item.get("quantity") is not None else 1.0
        if per_year is None or unit is None or quantity is None or count <= 0 or unit < 0 or quantity < 0:
            return None  # a licensed item we cannot price: omit ARR rather than understate it
        currency = price.get("currency") or subscription.get("currency")
        total += unit * quantity * per_year / count / _minor_unit_divisor(currency)
        counted += 1
    if not counted or not math.isfinite(total):
        return None
    return round(total, 2)


def _period_end(subscription: dict[str, Any]) -> date | None:
    moment = _utc_from_unix(subscription.get("current_period_end"))
    if moment is None:
        ends = [
            m
            for m in (_utc_from_unix(_obj(i).get("current_period_end")) for i in _items(subscription.get("items")))
            if m is not None
        ]
        moment = min(ends) if ends else None
    return moment.date() if moment else None


def _plan_label(items: list[Any]) -> str | None:
    for raw in items:
        price = _price_of(_obj(raw))
        label = _text(price.get("nickname")) or _text(price.get("lookup_key")) or _text(price.get("id"))
        if label:
            return label
    return None


def _parse_subscription(event_type: str, sub: dict[str, Any]) -> dict[str, Any]:
    status = _text(sub.get("status"), 40)
    items = _items(sub.get("items"))
    currency = _text(sub.get("currency"), 10)
    if currency is None:
        for raw in items:
            currency = _text(_price_of(_obj(raw)).get("currency"), 10)
            if currency:
                break
    cancel_at_period_end = sub.get("cancel_at_period_end") is True

    traits: dict[str, Any] = {}
    arr = None
    if event_type != "customer.subscription.deleted" and status not in _TERMINAL_STATUSES:
        arr = subscription_arr(sub)
        if arr is not None:
            traits["arr"] = arr
        if status == "active" and not cancel_at_period_end:
            renewal = _period_end(sub)
            if renewal is not None:
                traits["renewal_date"] = renewal

    amount_minor = 0.0
    amount_known = bool(items)
    for raw in items:
        item = _obj(raw)
        unit = _number(_price_of(item).get("unit_amount"))
        quantity = _number(item.get("quantity")) if item.get("quantity") is not None else 1.0
        if unit is None or quantity is None:
            amount_known = False
            break
        amount_minor += unit * quantity

    properties: dict[str, Any] = {
        "subscription_id": _id_of(sub.get("id"), "subscription id"),
        "status": status,
        "plan": _plan_label(items),
        "amount": round(amount_minor / _minor_unit_divisor(currency), 2)
        if amount_known and math.isfinite(amount_minor)
        else None,
        "currency": currency,
        "interval": _text(_obj(_price_of(_obj(items[0])).get("recurring")).get("interval"), 20) if items else None,
        "cancel_at_period_end": cancel_at_period_end,
        "arr": arr,
    }
    trial_end = _utc_from_unix(sub.get("trial_end"))
    if trial_end is not None:
        properties["trial_end"] = trial_end.isoformat()
    return {
        "account_id": _first_account(sub, sub.get("customer")),
        "stripe_customer_id": _id_of(sub.get("customer"), "subscription customer"),
        "lifecycle": subscription_lifecycle(event_type, sub),
        "account_traits": traits or None,
        "properties": properties,
    }


# --------------------------------------------------------------------------- customers, invoices


def _parse_customer(event_type: str, customer: dict[str, Any]) -> dict[str, Any]:
    customer_id = _id_of(customer.get("id"), "customer id")
    if customer_id is None:
        raise MessageError(f"{event_type}: the customer object has no id")
    name = _text(customer.get("name"), 255)
    domain = company_domain(customer.get("email"))
    traits: dict[str, Any] = {}
    if event_type != "customer.deleted":
        if name:
            traits["name"] = name
        if domain:
            traits["domain"] = domain
    properties: dict[str, Any] = {"name": name, "domain": domain}
    if event_type == "customer.deleted":
        properties["deleted"] = True
    return {
        "account_id": _metadata_account(customer),
        "stripe_customer_id": customer_id,
        "account_traits": traits or None,
        "properties": properties,
    }


def _parse_invoice(event_type: str, invoice: dict[str, Any]) -> dict[str, Any]:
    failed = event_type == "invoice.payment_failed"
    currency = _text(invoice.get("currency"), 10)
    parent = _obj(invoice.get("parent"))
    subscription_details = _obj(invoice.get("subscription_details")) or _obj(parent.get("subscription_details"))
    subscription = invoice.get("subscription")
    if subscription is None:
        subscription = subscription_details.get("subscription")
    amount = invoice.get("amount_due") if failed else invoice.get("amount_paid")
    plan = None
    for raw in _items(invoice.get("lines")):
        line = _obj(raw)
        price = _obj(line.get("price")) or _obj(line.get("plan"))
        plan = _text(price.get("nickname")) or _text(price.get("id"))
        if plan is None:
            details = _obj(_obj(line.get("pricing")).get("price_details"))
            plan = _text(details.get("price"))
        if plan:
            break
    properties = {
        "invoice_id": _id_of(invoice.get("id"), "invoice id"),
        "subscription_id": _id_of(subscription, "invoice subscription"),
        "status": _text(invoice.get("status"), 40),
        "plan": plan,
        "amount": _major(amount, currency),
        "currency": currency,
        "billing_reason": _text(invoice.get("billing_reason"), 60),
        "attempt_count": invoice.get("attempt_count")
        if isinstance(invoice.get("attempt_count"), int) and not isinstance(invoice.get("attempt_count"), bool)
        else None,
    }
    next_attempt = _utc_from_unix(invoice.get("next_payment_attempt"))
    if failed and next_attempt is not None:
        properties["next_payment_attempt"] = next_attempt.isoformat()
    return {
        "account_id": _first_account(subscription_details, invoice, invoice.get("customer"), subscription),
        "stripe_customer_id": _id_of(invoice.get("customer"), "invoice customer"),
        "lifecycle": "past_due" if failed else None,
        "payment_failed": failed,
        "properties": properties,
    }


def _parse_checkout(session: dict[str, Any]) -> dict[str, Any]:
    """`checkout.session.completed`: it links the session's customer to an account (the
    customer Checkout created, or the one it was given), nothing more. The subscription it
    started sends its own events, and those carry the facts."""
    currency = _text(session.get("currency"), 10)
    properties = {
        "session_id": _id_of(session.get("id"), "checkout session id"),
        "mode": _text(session.get("mode"), 40),
        "payment_status": _text(session.get("payment_status"), 40),
        "subscription_id": _id_of(session.get("subscription"), "checkout session subscription"),
        "amount": _major(session.get("amount_total"), currency),
        "currency": currency,
    }
    return {
        "account_id": _reference_account(session),
        "stripe_customer_id": _id_of(session.get("customer"), "checkout session customer"),
        "properties": properties,
    }


# --------------------------------------------------------------------------- events


def parse_event(body: bytes) -> IncomingEvent | None:
    """Parse a (verified) Stripe Event body. See the module docstring for the contract."""
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise BadRequest("body must be bytes")
    event = load_json(body)
    if not isinstance(event, dict):
        raise BadRequest("body is not a Stripe event object")

    event_id = event.get("id")
    event_type = event.get("type")
    if not isinstance(event_id, str) or not event_id.strip():
        raise BadRequest("Stripe event has no id")
    if not isinstance(event_type, str) or not event_type.strip():
        raise BadRequest("Stripe event has no type")
    event_id = event_id.strip()
    event_type = event_type.strip()
    if len(event_id) > MAX_ID_LENGTH:
        raise BadRequest(f"Stripe event id is longer than {MAX_ID_LENGTH} characters")
    if event_type not in HANDLED_TYPES:
        return None

    created = event.get("created")
    occurred_at = _utc_from_unix(created) if not isinstance(created, bool) else None
    if occurred_at is None:
        raise BadRequest("Stripe event has no valid `created` timestamp (unix seconds)")
    obj = _obj(event.get("data")).get("object")
    if not isinstance(obj, dict):
        raise BadRequest("Stripe event has no data.object")

    if event_type in _CUSTOMER_TYPES:
        fields = _parse_customer(event_type, obj)
    elif event_type in _SUBSCRIPTION_TYPES:
        fields = _parse_subscription(event_type, obj)
    elif event_type in _CHECKOUT_TYPES:
        fields = _parse_checkout(obj)
    else:
        fields = _parse_invoice(event_type, obj)

    properties = {k: v for k, v in fields.pop("properties").items() if v is not None}
    if isinstance(event.get("livemode"), bool):
        properties["livemode"] = event["livemode"]
    return IncomingEvent(
        source="stripe",
        message_id=event_id,
        kind="stripe",
        name=event_type,
        occurred_at=occurred_at,
        account_id=fields.get("account_id"),
        contact_id=None,
        properties=properties,
        account_traits=fields.get("account_traits"),
        lifecycle=fields.get("lifecycle"),
        payment_failed=fields.get("payment_failed"),
        stripe_customer_id=fields.get("stripe_customer_id"),
    )
