"""Helpers for the ingest-route tests: signed posts against the live server, row queries."""

from __future__ import annotations

import base64
import gzip as gzip_module
import hashlib
import hmac
import json
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import stripe as stripe_sdk
from sqlalchemy import Engine, func, select

from bot.ingest import stripe as stripe_ingest
from bot.ingest import tickets as tickets_ingest
from storage.models import Account, Contact, Event, Stall, Ticket, TrackingIssue
from tests.conftest import SEGMENT_SECRET, STRIPE_SECRET, TICKETS_SECRET, WRITE_KEY

ACCOUNT = Account.__table__
CONTACT = Contact.__table__
EVENT = Event.__table__
STALL = Stall.__table__
TICKET = Ticket.__table__
TRACKING = TrackingIssue.__table__

UTC = timezone.utc
INGEST_TABLES = (EVENT, ACCOUNT, CONTACT, TICKET)


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


def ago(**kwargs) -> datetime:
    """A moment in the past, to the millisecond (what Segment timestamps carry)."""
    at = utc_now() - timedelta(**kwargs)
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


def as_utc(value: datetime | str | None) -> datetime | None:
    """A stored datetime (naive on some backends, or an ISO string in JSON) as aware UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# --------------------------------------------------------------------------- bodies and auth


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def basic(key: str = WRITE_KEY, password: str = "") -> str:
    return "Basic " + base64.b64encode(f"{key}:{password}".encode()).decode()


def gz(data: bytes) -> bytes:
    return gzip_module.compress(data)


def segment_signature(body: bytes, secret: str = SEGMENT_SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


def post_v1(client: httpx.Client, path: str, payload: Any = None, *, raw: bytes | None = None,
            auth: str | None = "basic", gzip: bool = False, headers: dict | None = None) -> httpx.Response:
    """POST to a /v1/* route. `auth="basic"` sends the write key as the Basic user name."""
    body = raw if raw is not None else dumps(payload)
    hdrs = {"Content-Type": "application/json"}
    if auth == "basic":
        hdrs["Authorization"] = basic()
    elif auth is not None:
        hdrs["Authorization"] = auth
    if gzip:
        body = gz(body)
        hdrs["Content-Encoding"] = "gzip"
    hdrs.update(headers or {})
    return client.post(path, content=body, headers=hdrs)


def post_segment_webhook(client: httpx.Client, payload: Any = None, *, raw: bytes | None = None,
                         signature: str | None = "valid") -> httpx.Response:
    body = raw if raw is not None else dumps(payload)
    hdrs = {"Content-Type": "application/json"}
    if signature == "valid":
        hdrs["X-Signature"] = segment_signature(body)
    elif signature is not None:
        hdrs["X-Signature"] = signature
    return client.post("/ingest/segment", content=body, headers=hdrs)


def stripe_signature(body: bytes, timestamp: int, secret: str = STRIPE_SECRET) -> str:
    """The `Stripe-Signature` header, made by Stripe's own library (its
    `WebhookSignature.generate_signature_header`, "useful for signing payloads in unit tests").
    Stripe only ever sends UTF-8 JSON; a fuzzed body that is not UTF-8 is signed the same way
    over its bytes (bot.ingest.stripe.sign)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return stripe_ingest.sign(body, secret, timestamp)
    return stripe_sdk.WebhookSignature.generate_signature_header(text, secret, timestamp)


def post_stripe(client: httpx.Client, event: Any = None, *, raw: bytes | None = None,
                timestamp: float | None = None, signature: str | None = None) -> httpx.Response:
    body = raw if raw is not None else dumps(event)
    header = signature if signature is not None else stripe_signature(
        body, int(timestamp if timestamp is not None else time.time()))
    return client.post("/ingest/stripe", content=body,
                       headers={"Content-Type": "application/json", "Stripe-Signature": header})


def post_tickets(client: httpx.Client, payload: Any = None, *, raw: bytes | None = None,
                 signature: str | None = None) -> httpx.Response:
    body = raw if raw is not None else dumps(payload)
    header = signature if signature is not None else tickets_ingest.sign(body, TICKETS_SECRET)
    return client.post("/ingest/tickets", content=body,
                       headers={"Content-Type": "application/json", "X-Stallwatch-Signature": header})


def all_rejected(response: httpx.Response, *, rejected: int) -> dict:
    """The answer to a delivery where every message is refused: a 400 (so the sender's
    webhook log shows it) with `code` "rejected", `message` = `error`, and the `rejected` list."""
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "rejected" and body["message"] == body["error"] and "success" not in body, body
    assert (body["accepted"], body["duplicates"], len(body["rejected"])) == (0, 0, rejected), body
    return body


# --------------------------------------------------------------------------- messages


def track(event: str, *, user: str = "u1", message_id: str | None = None, at: datetime | None = None,
          group: str | None = None, properties: dict | None = None, **extra) -> dict:
    msg: dict[str, Any] = {"type": "track", "userId": user, "event": event, "properties": dict(properties or {})}
    if message_id is not None:
        msg["messageId"] = message_id
    if at is not None:
        msg["timestamp"] = iso(at)
    if group is not None:
        msg["context"] = {"groupId": group}
    msg.update(extra)
    return msg


def group_call(account: str, traits: dict, *, user: str = "u1", message_id: str | None = None,
               at: datetime | None = None) -> dict:
    msg: dict[str, Any] = {"type": "group", "userId": user, "groupId": account, "traits": traits}
    if message_id is not None:
        msg["messageId"] = message_id
    if at is not None:
        msg["timestamp"] = iso(at)
    return msg


def identify_call(user: str, traits: dict, *, message_id: str | None = None, group: str | None = None) -> dict:
    msg: dict[str, Any] = {"type": "identify", "userId": user, "traits": traits}
    if message_id is not None:
        msg["messageId"] = message_id
    if group is not None:
        msg["context"] = {"groupId": group}
    return msg


# --------------------------------------------------------------------------- database


def count(engine: Engine, table, *where) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


def counts(engine: Engine, tables=INGEST_TABLES) -> dict[str, int]:
    with engine.connect() as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one() for t in tables}


def rows(engine: Engine, table, *where, order_by=None) -> list[dict]:
    stmt = select(table).where(*where)
    if order_by is not None:
        stmt = stmt.order_by(order_by)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(stmt)]


def one(engine: Engine, table, *where) -> dict:
    found = rows(engine, table, *where)
    assert len(found) == 1, f"expected one {table.name} row, found {len(found)}: {found}"
    return found[0]


def account(engine: Engine, account_id: str) -> dict:
    return one(engine, ACCOUNT, ACCOUNT.c.id == account_id)


def events_by_message(engine: Engine, source: str = "segment") -> dict[str, dict]:
    found = rows(engine, EVENT, EVENT.c.source == source)
    by_id = {r["message_id"]: r for r in found}
    assert len(by_id) == len(found), "one row per (source, message_id)"
    return by_id


def live_stalls(engine: Engine, account_id: str, rule: str | None = None) -> list[dict]:
    where = [STALL.c.account_id == account_id, STALL.c.open_key.is_not(None)]
    if rule is not None:
        where.append(STALL.c.rule == rule)
    return rows(engine, STALL, *where)
