"""The ingest HTTP routes of the contract: Segment tracking API, Segment webhook, Stripe, tickets, Zendesk.

Every route verifies before it parses (raw bytes, constant-time comparisons), parses in a
worker thread (never on the event loop), stores the
whole batch in one transaction off the event loop, and answers 200 only once it is stored.
Event-driven rules (tickets, payments, progress on a stalled account) are evaluated right
after the store, so a ticket spike pings without waiting for the next scan.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import time
import zlib
from typing import Any, Callable

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot import metrics
from bot.ingest import intercom, segment, stripe, tickets, zendesk
from bot.ingest.records import (BadRequest, IncomingEvent, MessageError, TooLarge, Unauthorized, check_depth,
                                load_json)
from bot.ingest.timewindow import apply_window
from storage.db import utcnow
from storage.ingest import StoreResult

log = logging.getLogger(__name__)

MAX_RAW_BYTES = 600 * 1024  # a little over the largest batch, before or after gzip


async def read_body(request: Request, limit: int = MAX_RAW_BYTES) -> bytes:
    """The raw body, gunzipped if needed, refusing anything past `limit` without buffering it."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise TooLarge(f"body is larger than {limit} bytes")
        except ValueError:
            raise BadRequest("Content-Length is not a number") from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"body is larger than {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise BadRequest(f"unsupported Content-Encoding {encoding!r} (gzip or none)")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"body is not valid gzip: {exc}") from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise TooLarge(f"decompressed body is larger than {limit} bytes")
    if not inflater.eof:  # cut short: the CRC and length trailer were never checked
        raise BadRequest("body is not valid gzip: truncated stream")
    return data


# Every error body carries `code` (stable, for scripts) and `message` (what SDKs show; the
# RudderStack SDKs read both) besides `error`.
ERROR_CODES = {400: "bad_request", 401: "unauthorized", 413: "too_large"}


def error(status: int, message: str, code: str | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, "code": code or ERROR_CODES.get(status, "error"), "message": message,
                         **extra}, status_code=status)


def handles_errors(source: str) -> Callable:
    def wrap(handler):
        async def endpoint(request: Request) -> Response:
            started = time.perf_counter()
            try:
                response = await handler(request)
            except Unauthorized as exc:
                response = error(401, str(exc))
            except TooLarge as exc:
                response = error(413, str(exc))
            except (BadRequest, MessageError) as exc:
                response = error(400, str(exc))
            metrics.REQUESTS.labels(source, str(response.status_code)).inc()
            metrics.REQUEST_SECONDS.labels(source).observe(time.perf_counter() - started)
            return response

        endpoint.__name__ = handler.__name__
        return endpoint

    return wrap


async def _store(request: Request, events: list[IncomingEvent], rejected: list[dict], source: str) -> StoreResult:
    now = utcnow()
    events = [apply_window(ev, now) for ev in events]
    result = await asyncio.wrap_future(request.app.state.writer.submit(events, now))
    if result.owners:  # an owner changed: the Slack owner resolver maps them now (bot.slack.owners)
        request.app.state.wakeups.slack_owners.set()
    if result.failed:  # messages the database refused, found by storing one by one
        rejected.extend({"index": ev.position, "error": reason} for ev, reason in result.failed)
        rejected.sort(key=lambda entry: entry["index"])
    metrics.EVENTS.labels(source, "accepted").inc(result.accepted)
    metrics.EVENTS.labels(source, "duplicate").inc(result.duplicates)
    metrics.EVENTS.labels(source, "rejected").inc(len(rejected))
    return result


async def _answer(result: StoreResult, rejected: list[dict], request: Request, *, segment_style: bool,
                  urgent: bool) -> JSONResponse:
    body: dict[str, Any] = {"accepted": result.accepted, "duplicates": result.duplicates, "rejected": rejected}
    if rejected and not result.accepted and not result.duplicates:
        # Every message refused: a 400, so the sender's webhook log shows the failure (a
        # delivery with something stored, or only duplicates, is a 200 with its `rejected`).
        return error(400, f"every message was rejected ({len(rejected)}); first: {rejected[0]['error']}",
                     "rejected", **body)
    if segment_style:
        body = {"success": True, **body}
    task = None
    if result.evaluate:
        hook = request.app.state.on_events_stored
        if urgent:
            # Tickets and payments: evaluated before answering, so a spike pings at once
            # (in a worker thread: the event loop keeps serving other requests meanwhile).
            await run_in_threadpool(hook, result.evaluate)
        else:
            task = BackgroundTask(run_in_threadpool, hook, result.evaluate)
    return JSONResponse(body, background=task)


def storable(event: IncomingEvent, nul_free: bool = False, depth_checked: bool = False) -> IncomingEvent:
    """Raise MessageError if a field stored in a text column holds a NUL character: PostgreSQL
    text cannot (the JSON `properties` can: a `json` column keeps the \\u0000 escape). Every
    source goes through here. Ids, names and traits are refused; a ticket's subject and body,
    the customer's free text, keep the message with U+FFFD for each NUL: a ticket must not be
    lost to one stray character, and changing an id instead would merge two identities.
    `nul_free`: the body the event came from holds no NUL at all (`no_nul`), nothing to look for.
    `depth_checked`: the parser checked the depth of the whole message, `properties` included
    (segment.parse_message: properties are a part of the message)."""
    if not depth_checked:
        check_depth(event.properties, "properties")
    if nul_free:
        return event
    if event.ticket is not None:
        for name in ("subject", "body"):
            if (text := getattr(event.ticket, name)) and "\x00" in text:
                setattr(event.ticket, name, text.replace("\x00", "\ufffd"))
    texts: list[Any] = [event.message_id, event.name, event.account_id, event.contact_id, event.requester_email,
                        event.stripe_customer_id]
    for traits in (event.account_traits, event.contact_traits):
        texts.extend((traits or {}).values())
    if event.ticket is not None:
        t = event.ticket
        texts.extend((t.id, t.status, t.topic, t.subject, t.priority, t.requester_email))
    if any(isinstance(value, str) and "\x00" in value for value in texts):
        raise MessageError("ids, names and traits must not contain NUL (\\u0000) characters")
    return event


# --- Segment HTTP Tracking API (/v1/*) -------------------------------------------------------

def _write_key(request: Request, payload: Any) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth[:6].lower() == "basic ":
        try:
            user = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8").split(":", 1)[0]
        except (ValueError, UnicodeDecodeError):
            raise Unauthorized("Authorization header is not valid Basic credentials") from None
        if user:
            return user
    if isinstance(payload, dict) and isinstance(payload.get("writeKey"), str):
        return payload["writeKey"]
    return None


async def _secured_body(request: Request, secret: str | None, variable: str) -> tuple[str, bytes]:
    """The route's secret (401 when the server has none: nothing is accepted anonymously)
    and the raw body, which every signature is computed over."""
    if not secret:
        raise Unauthorized(f"{variable} is not configured on this server")
    return secret, await read_body(request)


def no_nul(body: bytes) -> bool:
    """Whether no string of this JSON body can hold a NUL: JSON writes one only as the escape
    \\u0000 (a raw control character is invalid JSON), so a body without that text has none.
    Decided once per body at C speed instead of once per field of every message."""
    return b"\\u0000" not in body


def _sorted_out(parsed, nul_free: bool = False, depth_checked: bool = False) -> tuple[list[IncomingEvent], list[dict]]:
    """Split parse results (an IncomingEvent or a MessageError per message, in order) into
    the storable events and the `rejected` entries of the answer (`storable` for the flags)."""
    events: list[IncomingEvent] = []
    rejected: list[dict] = []
    for index, item in enumerate(parsed):
        try:
            if isinstance(item, MessageError):
                raise item
            item.position = index
            events.append(storable(item, nul_free, depth_checked))
        except MessageError as exc:
            rejected.append({"index": index, "error": str(exc)})
    return events, rejected


def tracking_route(kind: str | None, *, trusted: bool = True):
    """A Segment tracking API route. `trusted`: the server routes, under the write key;
    otherwise the browser routes (bot/ingest/browser.py), under the public client key only."""
    source, key_name, variable = ("segment", "write key", "STALLWATCH_WRITE_KEY") if trusted else (
        "browser", "client key", "STALLWATCH_CLIENT_KEY")

    @handles_errors(source)
    async def tracking_api(request: Request) -> Response:
        settings = request.app.state.settings
        secret = settings.write_key if trusted else settings.client_key
        expected, body = await _secured_body(request, secret, variable)
        # A key in the Authorization header is checked before the body is parsed; only a
        # request without one has to be parsed first, for its writeKey.
        key, payload = _write_key(request, None), None
        if key is None:
            payload = await run_in_threadpool(load_json, body)
            key = _write_key(request, payload)
        if key is None or not hmac.compare_digest(key.encode(), expected.encode()):
            raise Unauthorized(f"missing or wrong {key_name} (HTTP Basic user name, or writeKey in the body)")
        events, rejected = await run_in_threadpool(_parse_tracking, body, payload, kind, trusted)
        result = await _store(request, events, rejected, source)
        return await _answer(result, rejected, request, segment_style=True, urgent=False)

    tracking_api.__name__ = f"v1_{kind or 'batch'}"
    return tracking_api


def _parse_tracking(body: bytes, payload: Any, kind: str | None, trusted: bool) -> tuple[list[IncomingEvent], list[dict]]:
    """A tracking API body, parsed (in a worker thread: up to 500 KB and 2,500 messages must not
    hold the event loop)."""
    if payload is None:
        payload = load_json(body)
    now = utcnow()
    if kind is None:
        messages, batch = segment.batch_messages(payload, len(body))
        return _parse_segment(messages, batch, now, len(body) > segment.MAX_EVENT_BYTES, trusted, no_nul(body))
    if len(body) > segment.MAX_EVENT_BYTES:
        raise TooLarge(f"a single message is limited to {segment.MAX_EVENT_BYTES} bytes")
    return _parse_one(payload, kind, now, trusted)


def _parse_one(payload: Any, kind: str | None, now, trusted: bool = True) -> tuple[list[IncomingEvent], list[dict]]:
    """A body that is one message: not a JSON object is a 400 (not a message at all); an
    invalid message is reported at index 0, as in a batch, and nothing is stored."""
    if not isinstance(payload, dict):
        raise BadRequest("body must be a JSON object (one message)")
    return _sorted_out([_attempt(segment.parse_message, payload, kind=kind, received_at=now, trusted=trusted)],
                       depth_checked=True)


def _parse_segment(messages: list, batch: dict, now, check_size: bool,
                   trusted: bool = True, nul_free: bool = False) -> tuple[list[IncomingEvent], list[dict]]:
    parse = segment.parse_message

    def each():  # _attempt, without its per-message argument packing
        for msg in messages:
            try:
                yield parse(msg, kind=None, received_at=now, batch=batch, check_size=check_size, trusted=trusted)
            except MessageError as exc:
                yield exc

    return _sorted_out(each(), nul_free, depth_checked=True)


def _attempt(parse, *args, **kwargs):
    """A parser's result, or the MessageError it raised."""
    try:
        return parse(*args, **kwargs)
    except MessageError as exc:
        return exc


# --- Segment webhook destination ------------------------------------------------------------

@handles_errors("segment_webhook")
async def ingest_segment(request: Request) -> Response:
    secret, body = await _secured_body(request, request.app.state.settings.segment_shared_secret,
                                       "SEGMENT_SHARED_SECRET")
    segment.verify_signature(body, request.headers.get("x-signature"), secret)
    events, rejected = await run_in_threadpool(_parse_webhook, body)
    result = await _store(request, events, rejected, "segment")
    return await _answer(result, rejected, request, segment_style=False, urgent=False)


def _parse_webhook(body: bytes) -> tuple[list[IncomingEvent], list[dict]]:
    """One Segment message or {"batch": [...]} (in a worker thread, as every parse)."""
    payload = load_json(body)
    messages, batch = segment.batch_messages(payload, len(body))
    now = utcnow()
    if "batch" not in payload:
        return _parse_one(payload, None, now)
    return _parse_segment(messages, batch, now, len(body) > segment.MAX_EVENT_BYTES, nul_free=no_nul(body))


# --- Stripe -----------------------------------------------------------------------------------

@handles_errors("stripe")
async def ingest_stripe(request: Request) -> Response:
    secret, body = await _secured_body(request, request.app.state.settings.stripe_webhook_secret,
                                       "STRIPE_WEBHOOK_SECRET")
    stripe.verify_signature(body, request.headers.get("stripe-signature"), secret, now=time.time())
    # A handled event Stallwatch cannot use is reported at index 0 (a retry would not help);
    # an event type Stallwatch ignores (None) is a valid delivery with nothing to store.
    event = await run_in_threadpool(_attempt, stripe.parse_event, body)
    events, rejected = _sorted_out([event] if event is not None else [])
    result = await _store(request, events, rejected, "stripe")
    return await _answer(result, rejected, request, segment_style=False, urgent=True)


# --- Helpdesk tickets -------------------------------------------------------------------------

@handles_errors("tickets")
async def ingest_tickets(request: Request) -> Response:
    secret, body = await _secured_body(request, request.app.state.settings.tickets_shared_secret,
                                       "TICKETS_SHARED_SECRET")
    tickets.verify_signature(body, request.headers.get("x-stallwatch-signature"), secret)
    events, rejected = await run_in_threadpool(lambda: _sorted_out(tickets.parse_tickets(body)))
    result = await _store(request, events, rejected, "tickets")
    return await _answer(result, rejected, request, segment_style=False, urgent=True)


# --- Zendesk (webhooks as Zendesk sends them: bot/ingest/zendesk.py) -------------------------

@handles_errors("zendesk")
async def ingest_zendesk(request: Request) -> Response:
    secret, body = await _secured_body(request, request.app.state.settings.zendesk_webhook_secret,
                                       "ZENDESK_WEBHOOK_SECRET")
    zendesk.verify_signature(body, request.headers.get("x-zendesk-webhook-signature"),
                             request.headers.get("x-zendesk-webhook-signature-timestamp"), secret, now=time.time())
    events, rejected = await run_in_threadpool(lambda: _sorted_out(zendesk.parse_delivery(body)))
    result = await _store(request, events, rejected, "zendesk")
    return await _answer(result, rejected, request, segment_style=False, urgent=True)


# --- Intercom ---------------------------------------------------------------------------------

@handles_errors("intercom")
async def ingest_intercom(request: Request) -> Response:
    secret = request.app.state.settings.intercom_client_secret
    if request.method == "HEAD":  # Intercom checks the endpoint URL with a HEAD request when it is saved
        if not secret:
            raise Unauthorized("INTERCOM_CLIENT_SECRET is not configured on this server")
        return Response(status_code=200)
    secret, body = await _secured_body(request, secret, "INTERCOM_CLIENT_SECRET")
    intercom.verify_signature(body, request.headers.get("x-hub-signature"), secret)
    notification = await run_in_threadpool(intercom.parse_notification, body)
    if notification.ignored:  # ping, or a topic Stallwatch does not use: a 200, so Intercom keeps sending
        ignored = {"ignored": notification.topic, **({"reason": notification.reason} if notification.reason else {})}
        return JSONResponse({"accepted": 0, "duplicates": 0, "rejected": [], **ignored})
    events, rejected = _sorted_out(notification.entries)
    result = await _store(request, events, rejected, "intercom")
    return await _answer(result, rejected, request, segment_style=False, urgent=True)


def routes() -> list[Route]:
    v1 = [Route("/v1/batch", tracking_route(None), methods=["POST"])]
    v1 += [Route(f"/v1/{kind}", tracking_route(kind), methods=["POST"])
           for kind in ("track", "identify", "group", "page", "screen", "alias")]
    return v1 + [
        Route("/ingest/segment", ingest_segment, methods=["POST"]),
        Route("/ingest/stripe", ingest_stripe, methods=["POST"]),
        Route("/ingest/tickets", ingest_tickets, methods=["POST"]),
        Route("/ingest/zendesk", ingest_zendesk, methods=["POST"]),
        Route("/ingest/intercom", ingest_intercom, methods=["POST", "HEAD"]),
    ]
