"""Zendesk webhooks, as Zendesk sends them: signature verification and parsing.

Pure functions, no I/O, no clock (the route passes `now`). The `/ingest/zendesk` route calls
`verify_signature(raw_body, signature_header, timestamp_header, secret, now=time.time())`
(raises `Unauthorized`), then `parse_delivery(raw_body)`, which raises `BadRequest` for a
body that is not a Zendesk delivery at all, or returns one entry per ticket (zero or one):
an `IncomingEvent` to store, or a `MessageError` to report at index 0.

Signature (https://developer.zendesk.com/documentation/webhooks/verifying/): every webhook
request carries `X-Zendesk-Webhook-Signature`, `base64(HMAC-SHA256(secret, timestamp + body))`,
and `X-Zendesk-Webhook-Signature-Timestamp`, the `timestamp` signed (Zendesk sends ISO 8601,
`2024-05-01T10:00:00Z`; unix seconds are accepted too). The secret is the webhook's
"signing secret" (Admin Center > Apps and integrations > Webhooks > the webhook > Reveal
secret). The signature is compared in constant time first; then the timestamp must be within
`DEFAULT_TOLERANCE` (5 minutes) of `now`, as Stripe's and Slack's libraries do: a captured
request replayed later is refused, while Zendesk's own retries (re-signed at each attempt)
and ordinary clock drift pass. Within those 5 minutes a replay is an identical body, hence
the same message id: a duplicate, which stores nothing.

Two body shapes (both produce the same ticket, so they can be mixed):

1. Event-subscription webhooks
   (https://developer.zendesk.com/api-reference/webhooks/event-types/ticket-events/):
   `{"type": "zen:event-type:ticket.<event>", "detail": {ticket fields}, "event": {...},
   "time": ..., "id": ..., "account_id": ...}`. The detail carries the ticket's `id`,
   `status` (upper case: `OPEN`), `subject`, `description`, `priority`, `tags` (a list),
   `created_at`, `updated_at`, and Zendesk's numeric `requester_id` / `organization_id`, but
   no e-mail and no organization external id: Stallwatch cannot tell the account from those
   ids, so such a ticket is rejected (`rejected[0]` says to use the trigger body below) unless
   the detail also holds `organization_external_id` or `requester_email`. For
   `ticket.status_changed` the status is `event.current`; `ticket.soft_deleted` and
   `ticket.permanently_deleted` mean `deleted`, `ticket.marked_as_spam` means `spam`,
   `ticket.merged` means `closed`. Events of other domains (`zen:event-type:user.*`,
   `organization.*`, ...) are valid deliveries with nothing to store.
2. Trigger / automation webhooks: a JSON body the admin writes with placeholders
   (https://support.zendesk.com/hc/en-us/articles/4408886858138). `TRIGGER_BODY` is the
   recommended one. Accepted as that object or wrapped as `{"ticket": {...}}`. Lenient:
   `tags` is a list or the space-separated string `{{ticket.tags}}` renders; ids may be
   numbers; blank values, `-` and unrendered `{{...}}` placeholders (the Admin Center's
   "Test webhook" button sends the template as typed) count as absent; timestamps are ISO
   8601 including Zendesk's minute precision (`2013-12-12T05:35Z`), `2024/05/01 10:00:00 +0200`,
   `2024-05-01 10:00:00 UTC`, or unix seconds.

Mapping (then exactly as `/ingest/tickets`: `bot.ingest.tickets.parse_ticket` builds the
event, with its message id scheme, bounds and 4,000-character body cut):

| Zendesk | Stallwatch |
|---|---|
| `id` | ticket id (the same for both shapes: `"123"`) |
| `organization_external_id` (`{{ticket.organization.external_id}}`) | `account_id` |
| `requester_email` (`{{ticket.requester.email}}`) | `requester_email`, resolved to the account of a known contact |
| `status` new/open/pending/hold/solved/closed | the same, lower-cased (`On-hold` -> `hold`) |
| `deleted`, `spam` (and the events above) | `closed`: no longer open friction; `zendesk_status` keeps the original |
| `subject` / `title` | `subject` |
| `description` | `body` |
| `tags` | `tags`; the first is the topic (unless a `topic` is given) |
| `priority` | `priority`, lower-cased (`-` or blank: none) |
| `created_at`, `updated_at` | the same (event webhooks: `updated_at` is the later of the detail's and the event's `time`) |

Not mapped: assignee, group, brand, form, custom fields, comments after the first.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import datetime, timezone
from typing import Any

from bot.ingest.records import BadRequest, IncomingEvent, MessageError, Unauthorized, load_json
from bot.ingest.tickets import parse_ticket

__all__ = ["DEFAULT_TOLERANCE", "TRIGGER_BODY", "sign", "verify_signature", "parse_delivery", "normalize"]

DEFAULT_TOLERANCE = 300  # seconds between the signed timestamp and now
MAX_HEADER_LENGTH = 512
EVENT_PREFIX = "zen:event-type:"

# The recommended JSON body of a trigger's "Notify webhook" action (README, Zendesk recipe).
TRIGGER_BODY = """{
  "ticket": {
    "id": "{{ticket.id}}",
    "status": "{{ticket.status}}",
    "subject": "{{ticket.title}}",
    "description": "{{ticket.description}}",
    "tags": "{{ticket.tags}}",
    "priority": "{{ticket.priority}}",
    "requester_email": "{{ticket.requester.email}}",
    "organization_external_id": "{{ticket.organization.external_id}}",
    "created_at": "{{ticket.created_at_with_timestamp}}",
    "updated_at": "{{ticket.updated_at_with_timestamp}}"
  }
}
"""

# Status of the ticket an event leaves (None: the detail's own status).
EVENT_STATUS = {
    "ticket.soft_deleted": "deleted",
    "ticket.permanently_deleted": "deleted",
    "ticket.marked_as_spam": "spam",
    "ticket.merged": "closed",
}
STATUS_ALIASES = {"on-hold": "hold", "on hold": "hold", "onhold": "hold"}
# Gone from Zendesk's queues: stored as `closed`, which every open-ticket count leaves out.
DISCARDED = frozenset({"deleted", "spam"})

_PLACEHOLDER_RE = re.compile(r"\{\{.*\}\}", re.DOTALL)
_BASE64_RE = re.compile(r"[A-Za-z0-9+/]{43}=")
_UNIX_RE = re.compile(r"\d{1,12}")
_TIME_FORMATS = ("%Y/%m/%d %H:%M:%S %z", "%Y-%m-%d %H:%M:%S %z", "%Y-%m-%d %H:%M:%S UTC", "%Y/%m/%d %H:%M:%S UTC")


# --------------------------------------------------------------------------- signature


def sign(payload: bytes, secret: str, timestamp: str) -> str:
    """The `X-Zendesk-Webhook-Signature` Zendesk sends with `payload` signed at `timestamp`."""
    mac = hmac.new(secret.encode("utf-8", "surrogatepass"), timestamp.encode("utf-8", "surrogatepass") + bytes(payload),
                   hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("ascii")


def verify_signature(payload: bytes, signature: str | None, timestamp: str | None, secret: str, *, now: float,
                     tolerance: int = DEFAULT_TOLERANCE) -> None:
    """Raise `Unauthorized` unless `signature` signs `timestamp + payload` with `secret` and
    `timestamp` is within `tolerance` seconds of `now`. Never raises anything else."""
    if not secret:
        raise Unauthorized("Zendesk webhook secret is not configured")
    if not isinstance(signature, str) or not signature.strip():
        raise Unauthorized("missing X-Zendesk-Webhook-Signature header")
    if not isinstance(timestamp, str) or not timestamp.strip():
        raise Unauthorized("missing X-Zendesk-Webhook-Signature-Timestamp header")
    if len(signature) > MAX_HEADER_LENGTH or len(timestamp) > MAX_HEADER_LENGTH:
        raise Unauthorized("malformed Zendesk signature headers: too long")
    given = signature.strip()
    if not _BASE64_RE.fullmatch(given):
        raise Unauthorized("malformed X-Zendesk-Webhook-Signature header: expected base64 of an HMAC-SHA256")
    try:
        expected = sign(payload, secret, timestamp)
    except UnicodeEncodeError:  # a header with lone surrogates cannot have been signed
        raise Unauthorized("X-Zendesk-Webhook-Signature does not match the body") from None
    if not hmac.compare_digest(expected.encode("ascii"), given.encode("ascii")):
        raise Unauthorized("X-Zendesk-Webhook-Signature does not match the body (wrong secret or altered body)")
    moment = _signed_at(timestamp.strip())
    if moment is None:
        raise Unauthorized("X-Zendesk-Webhook-Signature-Timestamp is not a time (ISO 8601 or unix seconds)")
    skew = abs(float(now) - moment)
    if not skew <= tolerance:  # also refuses NaN
        raise Unauthorized(f"X-Zendesk-Webhook-Signature-Timestamp is outside the tolerance "
                           f"({int(min(skew, 10 ** 12))} s > {tolerance} s): a replayed or delayed request")


def _signed_at(text: str) -> float | None:
    if _UNIX_RE.fullmatch(text):
        return float(text)
    moment = _moment(text)
    return moment.timestamp() if moment is not None else None


# --------------------------------------------------------------------------- parsing


def parse_delivery(body: bytes) -> list[IncomingEvent | MessageError]:
    """One Zendesk delivery: [] (an event Stallwatch ignores), or one IncomingEvent or MessageError."""
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise BadRequest("body must be bytes")
    data = load_json(body)
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object: a Zendesk event, or the trigger body {\"ticket\": {...}}")
    try:
        item = normalize(data)
    except MessageError as exc:
        return [exc]
    if item is None:
        return []
    try:
        return [parse_ticket(item)]
    except MessageError as exc:
        return [exc]


def normalize(data: dict[str, Any]) -> dict[str, Any] | None:
    """The `/ingest/tickets` ticket object a Zendesk body stands for; None for an event that
    is not about a ticket. Raises BadRequest for a body of neither shape, MessageError for a
    ticket Stallwatch cannot use."""
    kind = data.get("type")
    if isinstance(kind, str) and kind.startswith(EVENT_PREFIX):
        return _from_event(kind[len(EVENT_PREFIX):], data)
    ticket = data.get("ticket") if isinstance(data.get("ticket"), dict) else data
    if not any(key in ticket for key in ("id", "status", "created_at")):
        raise BadRequest("not a Zendesk delivery: expected an event (\"type\": \"zen:event-type:...\") "
                         "or the trigger body {\"ticket\": {\"id\": ..., \"status\": ...}}")
    return _from_trigger(ticket)


def _from_event(event_type: str, data: dict[str, Any]) -> dict[str, Any] | None:
    if not event_type.startswith("ticket."):
        return None
    detail = data.get("detail")
    if not isinstance(detail, dict):
        raise MessageError(f"zen:event-type:{event_type[:100]} has no detail object")
    status = EVENT_STATUS.get(event_type)
    change = data.get("event")
    if status is None and event_type == "ticket.status_changed" and isinstance(change, dict):
        status = _text(change.get("current"))
    item = _ticket_item(detail, status=status)
    occurred = _text(data.get("time"))
    if occurred is not None and (_moment(occurred) or _NEVER) > (_moment(item.get("updated_at")) or _NEVER):
        item["updated_at"] = _iso(_moment(occurred))
    if item.get("account_id") is None and item.get("requester_email") is None:
        raise MessageError(
            "no account: this Zendesk event names only Zendesk's requester_id / organization_id; send tickets with "
            "the trigger body (organization external id or requester e-mail) to map them to accounts")
    for key in ("organization_id", "requester_id"):
        if isinstance(detail.get(key), (str, int)) and not isinstance(detail.get(key), bool):
            item[f"zendesk_{key}"] = detail[key]
    return item


def _from_trigger(ticket: dict[str, Any]) -> dict[str, Any]:
    item = _ticket_item(ticket, status=None)
    if item.get("account_id") is None and item.get("requester_email") is None:
        raise MessageError("no account: organization_external_id ({{ticket.organization.external_id}}) "
                           "or requester_email ({{ticket.requester.email}}) is required")
    return item


_NEVER = datetime.min.replace(tzinfo=timezone.utc)


def _ticket_item(src: dict[str, Any], *, status: str | None) -> dict[str, Any]:
    """The relay ticket object for a Zendesk ticket (event detail or trigger body)."""
    item: dict[str, Any] = {"id": _value(src.get("id"))}
    raw_status = status if status is not None else _value(src.get("status"))
    if isinstance(raw_status, str):
        lowered = raw_status.strip().lower()
        lowered = STATUS_ALIASES.get(lowered, lowered)
        if lowered in DISCARDED:
            item["zendesk_status"] = lowered
            lowered = "closed"
        raw_status = lowered
    item["status"] = raw_status
    item["created_at"] = _time(src.get("created_at"), "created_at")
    item["updated_at"] = _time(src.get("updated_at"), "updated_at")
    account = _value(src.get("organization_external_id"))
    if account is None:
        account = _value(src.get("account_id"))
    item["account_id"] = account
    item["requester_email"] = _value(src.get("requester_email"))
    item["subject"] = _value(src.get("subject")) if src.get("subject") is not None else _value(src.get("title"))
    item["description"] = _value(src.get("description"))
    priority = _value(src.get("priority"))
    item["priority"] = priority.lower() if isinstance(priority, str) else priority
    item["topic"] = _value(src.get("topic"))
    tags = src.get("tags")
    if isinstance(tags, str):
        tags = [] if _absent(tags) else tags.split()
    elif isinstance(tags, list):
        tags = [tag for tag in tags if not (isinstance(tag, str) and _absent(tag))]
    item["tags"] = tags
    return {key: value for key, value in item.items() if value is not None}


def _absent(text: str) -> bool:
    stripped = text.strip()
    return not stripped or stripped == "-" or bool(_PLACEHOLDER_RE.fullmatch(stripped))


def _value(value: Any) -> Any:
    """A field as given, with blank, "-" and unrendered placeholders as None."""
    if isinstance(value, str) and _absent(value):
        return None
    return value


def _text(value: Any) -> str | None:
    value = _value(value)
    return value if isinstance(value, str) else None


def _time(value: Any, field: str) -> Any:
    """An ISO 8601 string for parse_ticket: Zendesk's other renderings converted; anything
    unusable is passed on as it is, for parse_ticket to reject with its own message."""
    value = _value(value)
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return _iso(datetime.fromtimestamp(value, timezone.utc))
        except (OverflowError, OSError, ValueError):
            raise MessageError(f"{field} {value} is not a time") from None
    if isinstance(value, str):
        moment = _moment(value)
        return _iso(moment) if moment is not None else value
    return value


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def _moment(text: Any) -> datetime | None:
    if not isinstance(text, str) or len(text) > 64:
        return None
    text = text.strip()
    if _UNIX_RE.fullmatch(text):
        try:
            return datetime.fromtimestamp(int(text), timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
        for fmt in _TIME_FORMATS:
            try:
                moment = datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    try:
        return moment.astimezone(timezone.utc)
    except (OverflowError, ValueError):
        return None
