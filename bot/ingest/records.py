"""The normalized shape every ingest source produces, and the errors they raise."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any


class BadRequest(Exception):
    """The body as a whole is unusable (not JSON, not a message): HTTP 400."""


class Unauthorized(Exception):
    """Missing or wrong signature or key: HTTP 401, nothing stored."""


class TooLarge(Exception):
    """Over the documented size limits: HTTP 413."""


class MessageError(ValueError):
    """One message of a batch is invalid; the others are still stored. Reported as
    `{"index": i, "error": str(exc)}`."""


@dataclass(slots=True)
class TicketUpdate:
    id: str
    status: str
    created_at: datetime
    topic: str | None = None
    subject: str | None = None
    body: str | None = None  # the customer's text, first 4,000 characters
    priority: str | None = None
    requester_email: str | None = None


@dataclass(slots=True)
class IncomingEvent:
    """One message, validated and normalized. All datetimes are aware UTC."""

    source: str  # idempotency namespace: "segment" (both /v1/* and /ingest/segment), "stripe", "tickets"
    message_id: str
    kind: str  # track | identify | group | page | screen | alias | stripe event type | ticket
    name: str | None  # track event name, page name, stripe type, "ticket <status>"
    occurred_at: datetime
    account_id: str | None
    contact_id: str | None
    properties: dict[str, Any] = field(default_factory=dict)
    # Facts the message carries about its account or contact, applied with the event:
    account_traits: dict[str, Any] | None = None  # name, domain, plan, arr, owner_email, renewal_date(date), employees, seats
    contact_traits: dict[str, Any] | None = None  # email, name, first_name, unsubscribed(bool)
    lifecycle: str | None = None  # Stripe: trialing | active | past_due | cancelled | churned
    payment_failed: bool | None = None  # Stripe invoice: True failed, False paid
    stripe_customer_id: str | None = None
    ticket: TicketUpdate | None = None
    requester_email: str | None = None  # tickets without account_id: resolved through contacts
    # Set by the store when the message is a known event missing a required property.
    missing_properties: list[str] = field(default_factory=list)
    # (field, detail) for each time outside the ingest window (bot/ingest/timewindow.py):
    # clamped or dropped before storing, recorded by the store as tracking issues.
    time_issues: list[tuple[str, str]] = field(default_factory=list)
    position: int = 0  # the message's index in its request, for the `rejected` answer


def load_json(body: bytes) -> Any:
    """A JSON body (a UTF-8 byte-order mark tolerated); BadRequest when it is not JSON."""
    import orjson

    raw = bytes(body)
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None


def parse_date(value: Any) -> date | None:
    """A renewal date from an ISO date or datetime string; None when absent."""
    if value in (None, ""):
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            return date.fromisoformat(text[:10])
        except ValueError:
            raise MessageError(f"renewal_date {value!r} is not an ISO date (YYYY-MM-DD)") from None
    raise MessageError(f"renewal_date must be a string, got {type(value).__name__}")



MAX_DEPTH = 32  # nesting levels of a message: far past real use, far below the encoder's 254


def check_depth(value: Any, where: str) -> None:
    """MessageError when `value` nests objects or lists deeper than MAX_DEPTH levels (the
    JSON encoder would fail on it while storing, taking the batch's good messages along)."""
    import orjson

    try:
        encoded = orjson.dumps(value)
    except orjson.JSONEncodeError:  # for decoded JSON, only past the encoder's depth limit
        raise MessageError(f"{where} is nested deeper than {MAX_DEPTH} levels") from None
    if encoded.count(b"{") + encoded.count(b"[") <= MAX_DEPTH:
        return  # the common case, decided at C speed: too few containers to nest that deep
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > MAX_DEPTH:
            raise MessageError(f"{where} is nested deeper than {MAX_DEPTH} levels")
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))

