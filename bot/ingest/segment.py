"""Segment / RudderStack messages (HTTP Tracking API spec) -> `IncomingEvent`.

Used by the `/v1/*` routes (Segment's and RudderStack's own libraries point `host` here) and
by the `/ingest/segment` webhook destination: both are the one source "segment", so a
`messageId` seen on either is a duplicate on the other.

Trust: the server routes and the signed webhook are `trusted` (they may set account facts).
The browser routes (bot/ingest/browser.py) hold only the public client key, which anyone can
read out of a web page, so their messages are parsed with `trusted=False`: product events
and a contact's own name and email only, opting out but never back in, times clamped to the
receive time, message ids in their own namespace.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

import orjson

from bot.ingest.records import (BadRequest, IncomingEvent, MessageError, TooLarge, Unauthorized, check_depth,
                                parse_date)

MAX_EVENT_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
MAX_BATCH_EVENTS = 2500
MAX_ID = 255
MAX_NAME = 200
MAX_COUNT = 2 ** 31 - 1  # employees / seats are INTEGER columns
TYPES = frozenset({"track", "identify", "group", "page", "screen", "alias"})
# What a browser (the public client key) may send: product events and identify.
BROWSER_TYPES = frozenset({"track", "page", "screen", "identify"})
# A browser clock may lag this much before its timestamp is replaced by the receive time.
BROWSER_SKEW = timedelta(minutes=10)
# A sending device's offset (receivedAt - sentAt) under this is network latency as much as
# clock skew: the time is kept exactly as sent (a healthy server's timestamps stay exact).
SENT_AT_SLACK = timedelta(seconds=2)
# Browser message ids live apart from server ones: a page could otherwise claim the id of a
# server-side call before it arrives, and the real call would be dropped as a duplicate.
BROWSER_ID_PREFIX = "browser:"
ACCOUNT_TRAITS = ("name", "domain", "website", "plan", "arr", "mrr", "owner_email", "renewal_date", "employees", "seats")


def verify_signature(payload: bytes, header: str | None, secret: str) -> None:
    """Segment's webhook destination signs the raw body: `X-Signature` = hex HMAC-SHA1."""
    given = (header or "").strip().lower()
    expected = hmac.new(secret.encode(), payload, hashlib.sha1).hexdigest()
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized("missing or wrong X-Signature (hex HMAC-SHA1 of the raw body)")


def batch_messages(payload: Any, body_size: int) -> tuple[list[Any], dict]:
    """The messages of a `/v1/batch` or webhook body, and the batch-level fields.

    Accepts `{"batch": [...]}` (with optional `context`, `integrations`, `writeKey`,
    `sentAt`, merged Segment-style into each message) or, for the webhook, one message.
    """
    if not isinstance(payload, dict):
        raise BadRequest("body must be a JSON object: a message or {\"batch\": [...]}")
    if "batch" not in payload:
        if body_size > MAX_EVENT_BYTES:
            raise TooLarge(f"a single message is limited to {MAX_EVENT_BYTES} bytes")
        return [payload], {}
    batch = payload["batch"]
    if not isinstance(batch, list):
        raise BadRequest("\"batch\" must be a list of messages")
    if body_size > MAX_BATCH_BYTES:
        raise TooLarge(f"a batch is limited to {MAX_BATCH_BYTES} bytes")
    if len(batch) > MAX_BATCH_EVENTS:
        raise TooLarge(f"a batch is limited to {MAX_BATCH_EVENTS} messages")
    return batch, payload


def parse_message(msg: Any, *, kind: str | None, received_at: datetime, batch: dict | None = None,
                  check_size: bool = False, trusted: bool = True) -> IncomingEvent:
    """Validate one Segment message; raise MessageError naming the offending field.

    `trusted=False` (the browser routes): group and alias calls are refused; an identify
    sets only the contact's own email and name (and may opt out, never back in) and does not
    link the contact to an account; account-trait fields are kept as plain properties.
    """
    if not isinstance(msg, dict):
        raise MessageError("a message must be a JSON object")
    encoded = check_depth(msg, "message")  # before anything else encodes it (the derived id)
    if check_size and len(encoded) > MAX_EVENT_BYTES:
        raise MessageError(f"message is larger than {MAX_EVENT_BYTES} bytes")
    mtype = msg.get("type", kind)
    if kind is not None and mtype != kind:
        raise MessageError(f"type {mtype!r} does not match the /v1/{kind} route")
    if not isinstance(mtype, str) or mtype not in TYPES:
        raise MessageError(f"type must be one of {', '.join(sorted(TYPES))}")
    if not trusted and mtype not in BROWSER_TYPES:
        raise MessageError(f"{mtype} calls need the server write key: the client key sends "
                           f"{', '.join(sorted(BROWSER_TYPES))} only")
    user_id = _optional_id(msg, "userId")
    anonymous_id = _optional_id(msg, "anonymousId")
    if user_id is None and anonymous_id is None:
        raise MessageError("userId or anonymousId is required")
    context = msg.get("context")
    if context is None and batch:
        context = batch.get("context")
    if context is not None and not isinstance(context, dict):
        raise MessageError("context must be an object")
    context = context or {}

    name: str | None = None
    properties: Any = {}
    account_traits = contact_traits = None
    account_id = _as_id(context.get("groupId"), "context.groupId")
    if mtype == "track":
        name = msg.get("event")
        if not isinstance(name, str) or not name.strip():
            raise MessageError("event (the track call's name) is required")
        if len(name) > MAX_NAME:
            raise MessageError(f"event name is longer than {MAX_NAME} characters")
        properties = _object(msg, "properties")
        account_id = account_id or _as_id(properties.get("account_id"), "properties.account_id")
    elif mtype in ("page", "screen"):
        name = msg.get("name")
        if name is not None and not isinstance(name, str):
            raise MessageError("name must be a string")
        name = (name or "")[:MAX_NAME] or None
        properties = _object(msg, "properties")
        account_id = account_id or _as_id(properties.get("account_id"), "properties.account_id")
    elif mtype == "identify":
        traits = _object(msg, "traits") or _object(context, "traits")
        properties = traits
        contact_traits = _contact_traits(traits, trusted)
        account_id = account_id or _as_id(traits.get("account_id"), "traits.account_id")
        if not trusted:
            # Which account a contact belongs to decides who gets its recovery emails.
            account_id = None
    elif mtype == "group":
        account_id = _as_id(msg.get("groupId"), "groupId")
        if account_id is None:
            raise MessageError("groupId is required for a group call")
        traits = _object(msg, "traits")
        properties = traits
        account_traits = _account_traits(traits)
    # alias: only stored; it carries nothing Stallwatch reads.

    message_id = _optional_id(msg, "messageId")
    if message_id is None:
        # No id: derive one from the content, so a redelivery is still a duplicate.
        message_id = "sha1:" + hashlib.sha1(orjson.dumps(msg, option=orjson.OPT_SORT_KEYS)).hexdigest()
    if not trusted:
        message_id = BROWSER_ID_PREFIX + message_id
        if len(message_id) > MAX_ID:
            raise MessageError(f"messageId is longer than {MAX_ID - len(BROWSER_ID_PREFIX)} characters")
    occurred_at = _timestamp(msg, received_at, (batch or {}).get("sentAt"))
    if not trusted and occurred_at < received_at - BROWSER_SKEW:
        # A browser's clock is the user's to set: a step "reached" days ago would rewrite
        # the journey (close a stall as if it never was, fill a quiet usage week).
        occurred_at = received_at
    if properties and properties is not msg.get("traits") and properties is not msg.get("properties"):
        # Traits from a context (possibly the batch's, outside the message checked above):
        # their depth is checked here, so the routes need not check the properties again.
        check_depth(properties, "properties")
    return IncomingEvent(
        source="segment",
        message_id=message_id,
        kind=mtype,
        name=name,
        occurred_at=occurred_at,
        account_id=account_id,
        contact_id=user_id,
        properties=properties,
        account_traits=account_traits,
        contact_traits=contact_traits,
    )


def _optional_id(msg: dict, key: str) -> str | None:
    return _as_id(msg.get(key), key)


def _as_id(value: Any, key: str) -> str | None:
    if type(value) is str:  # the common case first (four ids per message)
        if len(value) > MAX_ID:
            raise MessageError(f"{key} is longer than {MAX_ID} characters")
        return value or None
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise MessageError(f"{key} must be a string")
    value = str(value)
    if len(value) > MAX_ID:
        raise MessageError(f"{key} is longer than {MAX_ID} characters")
    return value


def _object(msg: dict, key: str) -> dict:
    value = msg.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MessageError(f"{key} must be an object")
    return value


def _timestamp(msg: dict, received_at: datetime, batch_sent_at: Any = None) -> datetime:
    """The message's time, corrected for the sending device's clock skew as Segment does
    (https://segment.com/docs/connections/spec/common/#timestamps):
    `timestamp = receivedAt - (sentAt - originalTimestamp)`, where `originalTimestamp` is
    the device's time of the call (the `timestamp` a library sends) and `sentAt` the
    device's time of sending (per message, else the batch's). A device clock 3 hours fast
    shifts both alike, and the difference is what counts. Without `sentAt`, or with an offset
    under SENT_AT_SLACK (latency, not skew), the time is taken as sent. A message that carries `receivedAt`, or both `timestamp` and
    `originalTimestamp`, has been through a Segment-compatible pipeline (the webhook
    destination, a replay): its `timestamp` is corrected already and stays as is."""
    raw = msg.get("timestamp") or msg.get("originalTimestamp")
    if raw is None:
        return received_at
    ts = _moment(raw, "timestamp")
    corrected = "receivedAt" in msg or ("timestamp" in msg and "originalTimestamp" in msg)
    sent_raw = msg.get("sentAt") or batch_sent_at
    if not corrected and isinstance(sent_raw, str):
        try:
            offset = received_at - _sent_moment(sent_raw)
            if abs(offset) >= SENT_AT_SLACK:
                ts = ts + offset  # = receivedAt - (sentAt - originalTimestamp)
        except (MessageError, OverflowError):
            pass  # an unreadable sentAt: the time is taken as sent (as without one)
    # A time in the future or far in the past is clamped (and reported) by the ingest time
    # window, bot/ingest/timewindow.py, the same for every source: after this correction.
    return ts


@lru_cache(maxsize=64)
def _sent_moment(raw: str) -> datetime:
    """A `sentAt`: usually the batch's, the same for each of its messages, so parsed once."""
    return _moment(raw, "sentAt")


def _moment(raw: Any, name: str) -> datetime:
    if not isinstance(raw, str):
        raise MessageError(f"{name} must be an ISO 8601 string")
    try:
        ts = datetime.fromisoformat(raw)
        # astimezone overflows for moments at the ends of the range (e.g. year 1 at +01:00).
        return ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise MessageError(f"{name} {raw[:40]!r} is not an ISO 8601 time in range") from None


def _text(traits: dict, key: str, limit: int) -> str | None:
    value = traits.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise MessageError(f"traits.{key} must be a string")
    return str(value).strip()[:limit] or None


def _number(traits: dict, key: str) -> float | None:
    value = traits.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = float(value.replace(",", "").lstrip("$"))
        except ValueError:
            raise MessageError(f"traits.{key} {value[:40]!r} is not a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0 or value > 1e12:
        raise MessageError(f"traits.{key} must be a non-negative number")
    return float(value)


def _domain(value: str | None) -> str | None:
    if not value:
        return None
    text = value.lower().split("://", 1)[-1]
    return text.split("/", 1)[0].removeprefix("www.")[:255] or None


def _account_traits(traits: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if (name := _text(traits, "name", 255)) is not None:
        out["name"] = name
    domain = _domain(_text(traits, "domain", 500) or _text(traits, "website", 500))
    if domain:
        out["domain"] = domain
    if (plan := _text(traits, "plan", 100)) is not None:
        out["plan"] = plan
    arr = _number(traits, "arr")
    if arr is None and (mrr := _number(traits, "mrr")) is not None:
        arr = mrr * 12
    if arr is not None:
        out["arr"] = arr
    if (owner := _text(traits, "owner_email", 320)) is not None:
        if "@" not in owner:
            raise MessageError(f"traits.owner_email {owner[:40]!r} is not an email address")
        out["owner_email"] = owner.lower()
    if "renewal_date" in traits:
        try:
            renewal = parse_date(traits.get("renewal_date"))
        except MessageError as exc:
            raise MessageError(f"traits.{exc}") from None
        if renewal is not None:
            out["renewal_date"] = renewal
    for key in ("employees", "seats"):
        if (count := _number(traits, key)) is not None:
            if count > MAX_COUNT:
                raise MessageError(f"traits.{key} must be at most {MAX_COUNT}")
            out[key] = int(count)
    return out


def _contact_traits(traits: dict, trusted: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if (email := _text(traits, "email", 320)) is not None:
        out["email"] = email.lower()
    name = _text(traits, "name", 255)
    first = _text(traits, "first_name", 255) or _text(traits, "firstName", 255)
    if name:
        out["name"] = name
    if first or name:
        out["first_name"] = first or name.split()[0]
    if "unsubscribed" in traits:
        value = traits["unsubscribed"]
        if isinstance(value, str):
            value = value.strip().lower() in ("true", "1", "yes")
        # Opting out is always safe; opting a contact back in takes a trusted source.
        if trusted or value:
            out["unsubscribed"] = bool(value)
    return out
