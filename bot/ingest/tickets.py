"""Helpdesk ticket webhooks: signature verification and parsing.

Pure functions, no I/O. The `/ingest/tickets` route calls
`verify_signature(raw_body, request.headers.get("X-Stallwatch-Signature"), secret)`
(raises `Unauthorized`), then `parse_tickets(raw_body)`, which raises `BadRequest` for a
body that is not a ticket delivery at all, or returns one entry per ticket, in order: an
`IncomingEvent` to store, or a `MessageError` to report as `{"index": i, "error": str(err)}`.

Signature: `X-Stallwatch-Signature: sha256=<hex HMAC-SHA256 of the raw body>` keyed with
`TICKETS_SHARED_SECRET` (the `sha256=` prefix and the hex digits are case-insensitive).

Body shapes (all three accepted):

- one ticket object: `{"id": ..., "status": ..., ...}`
- a JSON list of ticket objects: `[{...}, {...}]`
- an envelope: `{"tickets": [{...}, {...}]}` (an object whose `tickets` member is a list)

Anything else (not JSON, a scalar, an empty list, a list with no object in it) is a
`BadRequest`. In a list that holds at least one object, a non-object item is a
`MessageError` at its index; the others are still accepted.

Ticket fields:

| field | rule |
|---|---|
| `id` | required, string or integer, at most 190 characters |
| `status` | required, non-empty string (stored lower-cased: `Open` -> `open`), at most 64 characters |
| `created_at` | required, ISO 8601 (`Z` or an offset; no offset means UTC) |
| `updated_at` | optional, ISO 8601; the event's `occurred_at` is `updated_at` or else `created_at` |
| `account_id`, `requester_email` | at least one; `account_id` string or integer (<= 255); the e-mail must look like one and is lower-cased |
| `topic` / `tags` | `topic` (string), else the first of `tags` (a list of strings) |
| `subject` | optional string, at most 1,000 characters (longer is rejected, not truncated) |
| `body` / `description` | optional string: the customer's message; the first 4,000 characters are kept (recovery drafts quote it as untrusted text) |
| `priority` | optional string or integer, at most 64 characters |

`message_id` is `f"{id}:{sha256 of the item's canonical JSON}"`: an identical redelivery
is a duplicate, while any change (a new status, a new `updated_at`) is a new event. Extra
fields are kept in `properties` when they are small (scalars, strings up to 1,000
characters, lists of up to 50 scalars); nested objects and large values are dropped.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import datetime, timezone
from typing import Any

import orjson

from bot.ingest.records import BadRequest, IncomingEvent, MessageError, TicketUpdate, Unauthorized, load_json

__all__ = ["verify_signature", "sign", "parse_tickets", "parse_ticket"]

MAX_ID_LENGTH = 190  # leaves room for ":" + 64 hex digits within the 255-character message id
MAX_ACCOUNT_ID_LENGTH = 255
MAX_STATUS_LENGTH = 64
MAX_SUBJECT_LENGTH = 1000
MAX_BODY_KEPT = 4000  # a ticket body is the customer's free text: kept in part, never rejected for length
MAX_TOPIC_LENGTH = 200
MAX_PRIORITY_LENGTH = 64
MAX_EMAIL_LENGTH = 254
MAX_PROPERTY_TEXT = 1000
MAX_PROPERTY_LIST = 50
MAX_PROPERTIES = 50

_SIGNATURE_RE = re.compile(r"sha256=([0-9a-f]{64})", re.IGNORECASE)
_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


# --------------------------------------------------------------------------- signature


def sign(payload: bytes, secret: str) -> str:
    """A valid `X-Stallwatch-Signature` header value for `payload`."""
    mac = hmac.new(secret.encode("utf-8", "surrogatepass"), payload, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify_signature(payload: bytes, header: str | None, secret: str) -> None:
    """Raise `Unauthorized` unless `header` is the HMAC-SHA256 of `payload` with `secret`."""
    if not secret:
        raise Unauthorized("tickets shared secret is not configured")
    if header is None or not isinstance(header, str) or not header.strip():
        raise Unauthorized("missing X-Stallwatch-Signature header")
    match = _SIGNATURE_RE.fullmatch(header.strip())
    if match is None:
        raise Unauthorized("malformed X-Stallwatch-Signature header: expected sha256=<64 hex digits>")
    expected = sign(bytes(payload), secret).encode("ascii")
    given = b"sha256=" + match.group(1).lower().encode("ascii")
    if not hmac.compare_digest(expected, given):
        raise Unauthorized("X-Stallwatch-Signature does not match the body (wrong secret or altered body)")


# --------------------------------------------------------------------------- parsing


def parse_tickets(body: bytes) -> list[IncomingEvent | MessageError]:
    """Parse a ticket delivery into one `IncomingEvent` or `MessageError` per ticket."""
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise BadRequest("body must be bytes")
    data = load_json(body)

    if isinstance(data, dict) and isinstance(data.get("tickets"), list):
        items = data["tickets"]
    elif isinstance(data, dict):
        items = [data]
    elif isinstance(data, list):
        items = data
    else:
        raise BadRequest("body must be a ticket object, a list of tickets, or {\"tickets\": [...]}")
    if not items:
        raise BadRequest("no tickets in the body")
    if not any(isinstance(item, dict) for item in items):
        raise BadRequest("body must contain ticket objects")

    results: list[IncomingEvent | MessageError] = []
    for item in items:
        try:
            results.append(parse_ticket(item))
        except MessageError as exc:
            results.append(exc)
    return results


def parse_ticket(item: Any) -> IncomingEvent:
    """Validate and normalize one ticket object; raise `MessageError` if it is unusable."""
    if not isinstance(item, dict):
        raise MessageError(f"a ticket must be a JSON object, got {json_type(item)}")

    ticket_id = identifier_field(item.get("id"), "id", MAX_ID_LENGTH)
    if ticket_id is None:
        raise MessageError("id is required (a string or an integer)")

    status = string_field(item.get("status"), "status", MAX_STATUS_LENGTH)
    if status is None:
        raise MessageError("status is required (a non-empty string)")
    status = status.lower()
    if len(status) > MAX_STATUS_LENGTH:  # lower() can lengthen some characters
        raise MessageError(f"status is longer than {MAX_STATUS_LENGTH} characters")

    created_at = _timestamp(item.get("created_at"), "created_at")
    if created_at is None:
        raise MessageError("created_at is required (an ISO 8601 timestamp)")
    updated_at = _timestamp(item.get("updated_at"), "updated_at")

    account_id = identifier_field(item.get("account_id"), "account_id", MAX_ACCOUNT_ID_LENGTH)
    requester_email = email_field(item.get("requester_email"))
    if account_id is None and requester_email is None:
        raise MessageError("account_id or requester_email is required")

    topic = string_field(item.get("topic"), "topic", MAX_TOPIC_LENGTH)
    tags = _tags(item.get("tags"))
    if topic is None and tags:
        topic = tags[0]
        if len(topic) > MAX_TOPIC_LENGTH:
            raise MessageError(f"tags[0] is longer than {MAX_TOPIC_LENGTH} characters")

    subject = string_field(item.get("subject"), "subject", MAX_SUBJECT_LENGTH)
    body_field = "body" if item.get("body") is not None else "description"
    body = string_field(item.get(body_field), body_field, None)
    if body is not None:
        body = body[:MAX_BODY_KEPT]
    priority = identifier_field(item.get("priority"), "priority", MAX_PRIORITY_LENGTH)

    message_id = ticket_message_id(ticket_id, item)

    properties = small_properties(item)
    properties.update(
        {
            "id": ticket_id,
            "status": status,
            "topic": topic,
            "subject": subject,
            "priority": priority,
            "created_at": created_at.isoformat(),
        }
    )
    if updated_at is not None:
        properties["updated_at"] = updated_at.isoformat()
    if account_id is not None:
        properties["account_id"] = account_id
    if requester_email is not None:
        properties["requester_email"] = requester_email
    properties = {k: v for k, v in properties.items() if v is not None}

    return IncomingEvent(
        source="tickets",
        message_id=message_id,
        kind="ticket",
        name=f"Ticket {status}",
        occurred_at=updated_at or created_at,
        account_id=account_id,
        contact_id=None,
        properties=properties,
        ticket=TicketUpdate(
            id=ticket_id,
            status=status,
            created_at=created_at,
            topic=topic,
            subject=subject,
            body=body,
            priority=priority,
            requester_email=requester_email,
        ),
        requester_email=requester_email,
    )


# --------------------------------------------------------------------------- field helpers
# Public: the native helpdesk parsers (bot/ingest/intercom.py) build tickets with the same
# ids, bounds and error wording.


def ticket_message_id(ticket_id: str, item: Any) -> str:
    """`f"{ticket_id}:{sha256 of the item's canonical JSON}"`: an identical redelivery is a
    duplicate, any change to the item a new event."""
    try:
        canonical = orjson.dumps(item, option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:  # orjson.JSONEncodeError; only for dicts not decoded from JSON
        raise MessageError(f"ticket is not JSON-serializable: {exc}") from None
    return f"{ticket_id}:{hashlib.sha256(canonical).hexdigest()}"[:255]



def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def string_field(value: Any, field: str, limit: int | None) -> str | None:
    """An optional string field: None when absent, null or blank."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise MessageError(f"{field} must be a string, got {json_type(value)}")
    value = value.strip()
    if limit is not None and len(value) > limit:
        raise MessageError(f"{field} is longer than {limit} characters ({len(value)})")
    return value or None


def identifier_field(value: Any, field: str, limit: int) -> str | None:
    """An optional string-or-integer field, as a string."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise MessageError(f"{field} must be a string or an integer, got {json_type(value)}")
    return string_field(value, field, limit)


def email_field(value: Any, field: str = "requester_email") -> str | None:
    email = string_field(value, field, MAX_EMAIL_LENGTH)
    if email is None:
        return None
    if not _EMAIL_RE.fullmatch(email):
        raise MessageError(f"{field} {email[:100]!r} is not an e-mail address")
    return email.lower()


def _timestamp(value: Any, field: str) -> datetime | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise MessageError(f"{field} must be an ISO 8601 string, got {json_type(value)}")
    text = value.strip()
    try:
        if len(text) > 64:
            raise ValueError
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise MessageError(f"{field} {text[:64]!r} is not an ISO 8601 timestamp") from None


def _tags(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
        raise MessageError("tags must be a list of strings")
    return [tag.strip() for tag in value if tag.strip()]


def _small(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float)):
        return True
    if isinstance(value, str):
        return len(value) <= MAX_PROPERTY_TEXT
    if isinstance(value, list):
        return len(value) <= MAX_PROPERTY_LIST and all(
            not isinstance(v, (list, dict)) and _small(v) for v in value
        )
    return False


def small_properties(item: dict[str, Any]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for key, value in item.items():
        if len(kept) >= MAX_PROPERTIES:
            break
        if len(key) <= 100 and _small(value):
            kept[key] = value
    return kept
