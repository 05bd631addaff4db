"""Intercom webhook notifications: signature verification and parsing (`/ingest/intercom`).

Pure functions, no I/O. The route calls
`verify_signature(raw_body, request.headers.get("X-Hub-Signature"), secret)` (raises
`Unauthorized`), then `parse_notification(raw_body)`, which raises `BadRequest` for a body
that is not a notification at all, or returns a `Notification`: its `entries` (one
`IncomingEvent` to store, or one `MessageError` to report at index 0) for a conversation
topic, none for `ping` and for the topics Stallwatch ignores (`ignored` says which).

Signature (Intercom's "Signed notifications"): `X-Hub-Signature: sha1=<hex HMAC-SHA1 of the
raw body>` keyed with the app's client secret (`INTERCOM_CLIENT_SECRET`). The prefix and the
hex digits are accepted in either case; the comparison is constant-time.

The notification object: `{"type": "notification_event", "id": "notif_...", "topic": ...,
"app_id": ..., "created_at": <unix>, "data": {"type": "notification_event_data", "item": {...}}}`.
For the conversation topics (`conversation.*`, `conversation_part.*`) `data.item` is a
Conversation, mapped to one ticket as `/ingest/tickets` stores it:

| ticket | from the conversation |
|---|---|
| `id` | `"intercom:" + id` (its own namespace: a relay ticket "123" is another ticket) |
| `status` | `state`: `open` and `snoozed` count as open tickets, `closed` as closed (else the `open` flag) |
| `created_at`, occurred at | `created_at`; the event's time is `updated_at`, else the notification's `created_at` |
| `topic` | the first of `tags.tags[].name` |
| `subject` | `source.subject` or `title` (API 1.x: `conversation_message.subject`), HTML stripped, cut at 1,000 |
| `body` | `source.body` (1.x: `conversation_message.body`), HTML stripped, the first 4,000 characters |
| `priority` | `priority` -> `high`, `not_priority` -> `normal` |
| `requester_email` | the customer's e-mail: `source.author.email` when the author is a user or lead (never an admin), else the first contact's `email` (1.x: `user.email`) |
| `account_id` | `company.company_id` (the id you gave the company, i.e. Segment's groupId), when present |
| contact | `contacts.contacts[0].external_id` (1.x: `user.user_id`): your user id, resolved to its account |

A conversation with none of the last three cannot belong to an account and is rejected.
`conversation.deleted` and `conversation.admin.single.created` (an admin's outbound message,
not a customer's request) are ignored, as is every other topic.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from html.parser import HTMLParser
from typing import Any

from bot.ingest.records import BadRequest, IncomingEvent, MessageError, TicketUpdate, Unauthorized, load_json
from bot.ingest.tickets import (MAX_ACCOUNT_ID_LENGTH, MAX_BODY_KEPT, MAX_ID_LENGTH, MAX_SUBJECT_LENGTH,
                                MAX_TOPIC_LENGTH, email_field, identifier_field, json_type, small_properties,
                                ticket_message_id)

__all__ = ["Notification", "sign", "verify_signature", "parse_notification", "parse_conversation", "html_text"]

SOURCE = "intercom"
ID_PREFIX = "intercom:"
MAX_TOPIC_NAME = 100  # a notification topic ("conversation.admin.closed"): far longer is not Intercom
MAX_HTML_PARSED = 10 * MAX_BODY_KEPT  # raw HTML read to find the first 4,000 characters of text
STATES = {"open": "open", "snoozed": "snoozed", "closed": "closed"}
PRIORITIES = {"priority": "high", "not_priority": "normal"}
CUSTOMER_AUTHORS = frozenset({"user", "lead", "contact"})
IGNORED_CONVERSATION_TOPICS = frozenset({"conversation.deleted", "conversation.admin.single.created"})
EARLIEST_UNIX, LATEST_UNIX = 0, 253402300799  # 1970-01-01 .. 9999-12-31T23:59:59Z

MAX_TAG = 1000  # characters of one tag, attributes included (an <a href> with a long URL fits)

_SIGNATURE_RE = re.compile(r"sha1=([0-9a-f]{40})", re.IGNORECASE)
_TAG = re.compile(r"<[^<>]{1,%d}>" % (MAX_TAG - 2))
_SPACES = re.compile(r"[ \t\r\f\v]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")


@dataclass
class Notification:
    topic: str
    entries: list[IncomingEvent | MessageError] = field(default_factory=list)
    ignored: bool = False  # ping, or a topic Stallwatch does not use: nothing to store
    reason: str | None = None  # why a conversation topic stored nothing


# An anonymous visitor's chat is routine in Intercom, not a failed delivery: answering it with
# an error would count towards Intercom pausing the whole subscription (1,000 errors in 15
# minutes), so it is a 200 that says why nothing was stored.
ANONYMOUS = ("an anonymous visitor's conversation: no customer e-mail, company_id or external_id "
             "to tie it to an account")


class Anonymous(Exception):
    """The conversation has nobody Stallwatch could tie to an account."""


# --------------------------------------------------------------------------- signature


def sign(payload: bytes, secret: str) -> str:
    """The `X-Hub-Signature` value Intercom sends with `payload`."""
    mac = hmac.new(secret.encode("utf-8", "surrogatepass"), payload, hashlib.sha1)
    return f"sha1={mac.hexdigest()}"


def verify_signature(payload: bytes, header: str | None, secret: str) -> None:
    """Raise `Unauthorized` unless `header` is the HMAC-SHA1 of `payload` with `secret`."""
    if not secret:
        raise Unauthorized("INTERCOM_CLIENT_SECRET is not configured on this server")
    if header is None or not isinstance(header, str) or not header.strip():
        raise Unauthorized("missing X-Hub-Signature header")
    match = _SIGNATURE_RE.fullmatch(header.strip())
    if match is None:
        raise Unauthorized("malformed X-Hub-Signature header: expected sha1=<40 hex digits>")
    expected = sign(bytes(payload), secret).encode("ascii")
    given = b"sha1=" + match.group(1).lower().encode("ascii")
    if not hmac.compare_digest(expected, given):
        raise Unauthorized("X-Hub-Signature does not match the body (wrong client secret or altered body)")


# --------------------------------------------------------------------------- parsing


def parse_notification(body: bytes) -> Notification:
    """A notification object: its conversation as one ticket entry, or nothing to store."""
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise BadRequest("body must be bytes")
    data = load_json(body)
    if not isinstance(data, dict):
        raise BadRequest("body must be an Intercom notification object")
    if data.get("type") not in (None, "notification_event"):
        raise BadRequest("type must be \"notification_event\"")
    topic = data.get("topic")
    if not isinstance(topic, str) or not topic.strip() or len(topic) > MAX_TOPIC_NAME:
        raise BadRequest(f"topic must be a non-empty string of at most {MAX_TOPIC_NAME} characters")
    topic = topic.strip()
    if not topic.startswith(("conversation.", "conversation_part.")) or topic in IGNORED_CONVERSATION_TOPICS:
        return Notification(topic, ignored=True)  # ping, contacts, companies, tickets, admins...
    try:
        wrapper = data.get("data")
        if not isinstance(wrapper, dict) or not isinstance(wrapper.get("item"), dict):
            raise MessageError(f"data.item must be an object (the conversation), got {_type_of(wrapper, 'item')}")
        return Notification(topic, [parse_conversation(wrapper["item"], topic, data)])
    except Anonymous:
        return Notification(topic, ignored=True, reason=ANONYMOUS)
    except MessageError as exc:
        return Notification(topic, [exc])


def parse_conversation(item: dict[str, Any], topic: str, notification: dict[str, Any]) -> IncomingEvent:
    """One Conversation object as a ticket event; `MessageError` when it is unusable."""
    if item.get("type") not in (None, "conversation"):
        raise MessageError(f"data.item.type must be \"conversation\" for {topic[:MAX_TOPIC_NAME]}")
    conversation_id = identifier_field(item.get("id"), "id", MAX_ID_LENGTH - len(ID_PREFIX))
    if conversation_id is None:
        raise MessageError("the conversation id is required (a string or an integer)")
    ticket_id = ID_PREFIX + conversation_id

    status = _status(item)
    created_at = _unix(item.get("created_at"), "created_at")
    if created_at is None:
        raise MessageError("the conversation's created_at is required (a Unix time)")
    updated_at = _unix(item.get("updated_at"), "updated_at") or _unix(notification.get("created_at"),
                                                                        "the notification's created_at")

    source = _object(item.get("source")) or _object(item.get("conversation_message"))  # API 2.x, 1.x
    author = _object(source.get("author"))
    contact = _first_contact(item)
    user = _object(item.get("user"))  # API 1.x
    email = None
    if isinstance(author.get("type"), str) and author["type"] in CUSTOMER_AUTHORS:  # (a list is not hashable)
        email = _optional_email(author.get("email"))
    email = email or _optional_email(contact.get("email")) or _optional_email(user.get("email"))
    account_id = identifier_field(_object(item.get("company")).get("company_id"), "company.company_id",
                                  MAX_ACCOUNT_ID_LENGTH)
    contact_id = (identifier_field(contact.get("external_id"), "contacts[0].external_id", MAX_ACCOUNT_ID_LENGTH)
                  or identifier_field(user.get("user_id"), "user.user_id", MAX_ACCOUNT_ID_LENGTH))
    if account_id is None and email is None and contact_id is None:
        raise Anonymous()

    topic_tag = _first_tag(item)
    subject = _text(source.get("subject"), "source.subject") or _text(item.get("title"), "title")
    if subject is not None:
        subject = subject[:MAX_SUBJECT_LENGTH]
    body = _text(source.get("body"), "source.body")
    if body is not None:
        body = body[:MAX_BODY_KEPT]
    priority = item.get("priority")
    priority = PRIORITIES.get(priority) if isinstance(priority, str) else None

    properties = small_properties(item)
    properties.update({
        "id": ticket_id, "status": status, "topic": topic_tag, "subject": subject, "priority": priority,
        "created_at": created_at.isoformat(), "updated_at": updated_at.isoformat() if updated_at else None,
        "account_id": account_id, "requester_email": email, "contact_id": contact_id,
        "conversation_id": conversation_id, "intercom_topic": topic[:MAX_TOPIC_NAME],
    })
    properties = {k: v for k, v in properties.items() if v is not None}
    return IncomingEvent(
        source=SOURCE,
        message_id=ticket_message_id(ticket_id, item),
        kind="ticket",
        name=f"Ticket {status}",
        occurred_at=updated_at or created_at,
        account_id=account_id,
        contact_id=contact_id,
        properties=properties,
        ticket=TicketUpdate(id=ticket_id, status=status, created_at=created_at, topic=topic_tag, subject=subject,
                            body=body, priority=priority, requester_email=email),
        requester_email=email,
    )


# --------------------------------------------------------------------------- HTML


class _TextOnly(HTMLParser):
    """The text of an HTML fragment: tags dropped, entities decoded, script/style skipped,
    block ends as line breaks; stops collecting past `limit` characters."""

    BREAKS = frozenset({"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre"})
    SKIPPED = frozenset({"script", "style", "head", "title", "template"})

    def __init__(self, limit: int):
        super().__init__(convert_charrefs=True)
        self.limit = limit
        self.parts: list[str] = []
        self.size = 0
        self.skipping = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIPPED:
            self.skipping += 1
        elif tag in self.BREAKS:
            self._add("\n")

    def handle_endtag(self, tag):
        if tag in self.SKIPPED:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self.BREAKS:
            self._add("\n")

    def handle_data(self, data):
        if not self.skipping:
            self._add(data)

    def _add(self, text: str) -> None:
        if self.size < self.limit:
            self.parts.append(text)
            self.size += len(text)


def html_text(fragment: str, limit: int = MAX_BODY_KEPT) -> str:
    """Plain text of an HTML fragment (customer text: hostile), at most `limit` characters.

    Only the first MAX_HTML_PARSED characters of markup are read, and html.parser only ever
    sees complete tags of at most MAX_TAG characters: every other `<` or `>` is escaped first
    (one linear pass). Fed raw, an unclosed tag makes html.parser rescan the rest of the input
    for each `<` ("<p <p <p ...": seconds for 8 KB on Python 3.11)."""
    parser = _TextOnly(limit)
    markup = fragment[:MAX_HTML_PARSED]
    pieces: list[str] = []
    position = 0
    for tag in _TAG.finditer(markup):
        pieces.append(_escape_angles(markup[position:tag.start()]))
        pieces.append(tag.group())
        position = tag.end()
    pieces.append(_escape_angles(markup[position:]))
    try:
        parser.feed("".join(pieces))
        parser.close()
    except (AssertionError, ValueError):  # malformed markup html.parser gives up on: keep what it read
        pass
    lines = (_SPACES.sub(" ", line).strip() for line in "".join(parser.parts).split("\n"))
    text = "\n".join(lines)
    return _BLANK_LINES.sub("\n\n", text).strip()[:limit]


def _escape_angles(text: str) -> str:
    return text.replace("<", "&lt;").replace(">", "&gt;")


# --------------------------------------------------------------------------- field helpers


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _type_of(wrapper: Any, key: str) -> str:
    return json_type(wrapper.get(key)) if isinstance(wrapper, dict) else json_type(wrapper)


def _status(item: dict[str, Any]) -> str:
    state = item.get("state")
    if isinstance(state, str) and state.strip().lower() in STATES:
        return STATES[state.strip().lower()]
    if state is None and isinstance(item.get("open"), bool):
        return "open" if item["open"] else "closed"
    raise MessageError("the conversation's state must be open, closed or snoozed")


def _unix(value: Any, name: str) -> datetime | None:
    """A Unix time (seconds) as an aware UTC datetime; None when absent or 0."""
    if value is None or value == 0:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise MessageError(f"{name} must be a Unix time (seconds), got {json_type(value)}")
    if not EARLIEST_UNIX <= value <= LATEST_UNIX:
        raise MessageError(f"{name} {value!r} is not a Unix time in 1970..9999")
    return datetime.fromtimestamp(value, timezone.utc)


def _first_contact(item: dict[str, Any]) -> dict[str, Any]:
    contacts = item.get("contacts")
    if isinstance(contacts, dict):  # API 2.x: {"type": "contact.list", "contacts": [...]}
        contacts = contacts.get("contacts")
    if isinstance(contacts, list):  # API 2.0-2.5 listed them directly
        return next((c for c in contacts if isinstance(c, dict)), {})
    return {}


def _first_tag(item: dict[str, Any]) -> str | None:
    tags = _object(item.get("tags")).get("tags")
    for tag in tags if isinstance(tags, list) else []:
        name = _object(tag).get("name")
        if isinstance(name, str) and name.strip():
            return name.strip()[:MAX_TOPIC_LENGTH]
    return None


def _optional_email(value: Any) -> str | None:
    """A contact's e-mail, or None when it is absent or not an address (a lead may have none)."""
    try:
        return email_field(value, "email")
    except MessageError:
        return None


def _text(value: Any, name: str) -> str | None:
    """An optional HTML string field as plain text (None when absent or blank)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise MessageError(f"{name} must be a string, got {json_type(value)}")
    return html_text(value, MAX_BODY_KEPT) or None
