"""The ASGI app: ingest routes, health and metrics (and, when configured, Slack at /slack/events)."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import Callable, Iterable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Engine, text
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.ingest.browser import routes as browser_routes
from bot.ingest.routes import routes as ingest_routes
from bot.settings import Settings
from bot.stalls.context import Services
from storage.db import make_engine
from storage.writer import BatchWriter

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, engine: Engine | None = None,
               on_events_stored: Callable[[Iterable[str]], None] | None = None,
               socket_mode: bool = False, services: Services | None = None) -> Starlette:
    """Build the app. `engine` defaults to one for `settings.database_url` (already migrated);
    `services` (the process's, shared with its senders) to new ones for them."""
    if services is None:
        settings = settings or Settings()
        engine = engine or make_engine(settings.database_url)
        services = Services(engine=engine, settings=settings, rules=settings.rules)
    settings, engine, rules = services.settings, services.engine, services.rules

    if on_events_stored is None:
        from bot.scan import evaluate_accounts

        def on_events_stored(account_ids: Iterable[str]) -> None:
            try:
                evaluate_accounts(engine, rules, sorted(account_ids), hooks=services.change_hooks)
            except Exception:  # the next scan catches up; never fail the stored request
                log.exception("event-driven evaluation failed")

    writer = BatchWriter(engine, rules)
    slack_routes, bolt = _slack_routes(services, quiet=socket_mode)  # [slack-bolt] POST /slack/events

    socket_bolt = _socket_mode_bolt(services) if socket_mode else None

    @asynccontextmanager
    async def lifespan(app: Starlette):
        socket = None
        if socket_bolt is not None:
            from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

            # Slack's events, commands and clicks over a WebSocket (made inside the event loop).
            socket = AsyncSocketModeHandler(socket_bolt, settings.slack_app_token)
            await socket.connect_async()
        yield
        if socket is not None:
            await socket.close_async()
        writer.close()
        engine.dispose()

    app = Starlette(
        routes=[
            *ingest_routes(),
            *browser_routes(),  # the public client key's routes (bot/ingest/browser.py)
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            *slack_routes,
        ],
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.rules = rules
    app.state.writer = writer
    app.state.on_events_stored = on_events_stored
    app.state.wakeups = services.wakeups  # ingest wakes the Slack owner resolver (bot.slack.owners)
    app.state.scheduler = None
    app.state.bolt = bolt
    app.state.socket_bolt = socket_bolt
    return app


# --- [slack-bolt] Slack's slash commands, buttons and App Home at POST /slack/events -----------

def _slack_routes(services: Services, quiet: bool = False) -> tuple[list[Route], object | None]:
    """The Bolt route when SLACK_SIGNING_SECRET and SLACK_BOT_TOKEN are both set; when only one
    is, say at start which one is missing (Bolt would otherwise fail every request)."""
    from bot.slack.bolt_app import EVENTS_PATH, build_bolt, missing_slack_settings, starlette_endpoint

    settings = services.settings
    missing = missing_slack_settings(settings)
    if missing and not quiet:  # in Socket Mode no signing secret is needed
        log.error("Slack is only partly configured: %s missing, so /slack/events (slash commands, "
                  "buttons, App Home) is OFF. Set %s from the Slack app's settings (Basic Information "
                  "-> Signing Secret; OAuth & Permissions -> Bot User OAuth Token).",
                  " and ".join(missing) + (" is" if len(missing) == 1 else " are"), " and ".join(missing))
        return [], None
    if not (settings.slack_bot_token and settings.slack_signing_secret):
        return [], None
    bolt = build_bolt(services)
    endpoint = _refuse_unreadable(starlette_endpoint(bolt, settings.slack_signing_secret), settings.slack_signing_secret)
    return [Route(EVENTS_PATH, endpoint, methods=["POST"])], bolt


# Slack's own requests are small: a slash command is ~1 KB, an interaction carries at most a
# message of 50 blocks or a modal's state (tens of KB as JSON). 256 KB leaves room for the
# largest while refusing, before it is buffered, a body that only wastes memory and time.
SLACK_MAX_BODY = 256 * 1024
SLACK_BODY_SECONDS = 10  # Slack sends its few KB at once


def _refuse_unreadable(endpoint, signing_secret: str):
    """The door in front of Bolt. The body is read to at most SLACK_MAX_BODY (413 past it, the
    rest never buffered) and its signature checked on the raw bytes before anything parses
    it (401). Then, off the event loop, the shape check: Bolt (1.30) indexes into fields,
    assuming Slack's shapes, so a signed body that is not shaped like Slack's (`payload=null`,
    `"user": 5`, `"actions": [null]`, a view without its callback_id...) would raise inside
    Bolt; it is answered 400 and no listener runs."""
    from slack_sdk.signature import SignatureVerifier

    from bot.ingest.records import BadRequest, TooLarge
    from bot.ingest.routes import read_body

    verifier = SignatureVerifier(signing_secret)

    def refuse(why: str) -> Response:
        log.warning("refused a signed Slack request that is not shaped like Slack's: %s", why)
        return JSONResponse({"error": f"not a Slack request this app can read: {why}"}, status_code=400)

    async def slack_events(request: Request) -> Response:
        if request.headers.get("content-encoding", "identity").strip().lower() not in ("", "identity"):
            # Slack never compresses, and its signature covers the bytes as sent
            return JSONResponse({"error": "Slack requests are not compressed"}, status_code=400)
        try:
            body = await asyncio.wait_for(read_body(request, SLACK_MAX_BODY), SLACK_BODY_SECONDS)
        except asyncio.TimeoutError:  # a client dripping its body would hold a connection for ever
            return JSONResponse({"error": f"body not received within {SLACK_BODY_SECONDS} s"}, status_code=408)
        except TooLarge as exc:
            return JSONResponse({"error": str(exc)}, status_code=413)
        except BadRequest as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        headers = dict(request.headers)
        if not await run_in_threadpool(_signed, verifier, headers, body):
            return JSONResponse({"error": "invalid request"}, status_code=401)
        why = await run_in_threadpool(_slack_shape_problem, body, headers.get("content-type", ""))
        if why:
            return refuse(why)
        try:
            return await endpoint(request, body)
        except Exception as exc:  # noqa: BLE001 - Bolt's own parsing, before any listener
            return refuse(f"{type(exc).__name__}: {exc}")

    return slack_events


def _signed(verifier, headers: dict, body: bytes) -> bool:
    try:
        return verifier.is_valid_request(body, headers)
    except (TypeError, ValueError):  # a timestamp that is not a number
        return False


_INTERACTIVE = ("block_actions", "view_submission", "view_closed", "shortcut", "message_action", "block_suggestion")
_OBJECT_FIELDS = ("user", "team", "channel", "container", "enterprise", "message", "view", "event")
_NULLABLE = ("team", "enterprise", "channel", "message")  # Slack sends some of these as null


def _slack_shape_problem(body: bytes, content_type: str) -> str | None:
    """What makes a body unlike any Slack sends, in the fields Bolt indexes without checking."""
    import json
    from urllib.parse import parse_qs

    try:
        text_body = body.decode("utf-8")
        if content_type.startswith("application/json"):
            payload = json.loads(text_body)
        else:
            form = parse_qs(text_body, keep_blank_values=True)
            if "payload" not in form:  # a slash command: flat string fields
                if "command" in form and not (form.get("user_id", [""])[0]
                                              and form.get("response_url", [""])[0].startswith("http")):
                    return "a slash command needs user_id and response_url"
                return None
            payload = json.loads(form["payload"][0])
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: JSON nested too deep
        return None  # Bolt answers what it cannot parse at all itself
    if not isinstance(payload, dict):
        return "the payload is not an object"
    for name in _OBJECT_FIELDS:
        if name in payload and not isinstance(payload[name], dict) \
                and (payload[name] is not None or name not in _NULLABLE):
            return f"{name} is not an object"
    kind = payload.get("type")
    user_id = (payload.get("user") or {}).get("id")
    if kind in _INTERACTIVE and not (isinstance(user_id, str) and user_id):
        return "user.id is missing"  # every listener acts as someone
    if payload.get("response_url") is not None and not isinstance(payload["response_url"], str):
        return "response_url is not a URL"
    if kind == "block_actions":
        actions = payload.get("actions")
        if not isinstance(actions, list) or not all(isinstance(a, dict) and isinstance(a.get("action_id"), str)
                                                    for a in actions):
            return "actions must be a list of objects with an action_id"
        for a in actions:
            if a.get("selected_option") is not None and not isinstance(a["selected_option"], dict):
                return "an action's selected_option is not an object"
            if a.get("value") is not None and not isinstance(a["value"], str):
                return "an action's value is not a string"
    if kind in ("view_submission", "view_closed"):
        if not isinstance((payload.get("view") or {}).get("callback_id"), str):
            return "view.callback_id is missing"
    if kind in ("shortcut", "message_action") and not isinstance(payload.get("callback_id"), str):
        return "callback_id is missing"
    if kind in ("block_suggestion",) and not isinstance(payload.get("action_id"), str):
        return "action_id is missing"
    if kind == "event_callback":
        event = payload.get("event") or {}
        if not isinstance(event.get("type"), str):
            return "event.type is missing"
        if event["type"] == "app_home_opened" and not isinstance(event.get("user"), str):
            return "event.user is missing"
    return None


def _socket_mode_bolt(services: Services):
    """Socket Mode (`serve --socket-mode`): the same listeners, reached over Slack's WebSocket
    instead of POST /slack/events, for workspaces that cannot expose a public URL. Built here,
    so missing tokens fail at start; connected when the server starts."""
    from bot.slack.bolt_app import build_bolt

    return build_bolt(services, socket_mode=True)


async def healthz(request: Request) -> Response:
    state = request.app.state

    def ping_db() -> str:
        with state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return "ok"

    def slack_health() -> dict:
        from bot.slack.health import health

        return health(state.engine, state.settings)

    try:
        database = await run_in_threadpool(ping_db)
    except Exception as exc:  # report, don't crash: this is what monitors poll
        database = f"error: {type(exc).__name__}"
    try:
        slack = await run_in_threadpool(slack_health)
    except Exception as exc:  # noqa: BLE001 - the database is away: said above
        slack = {"slack": f"unknown: {type(exc).__name__}"}
    scheduler = state.scheduler.status() if state.scheduler is not None else "off"
    body = {
        "status": "ok" if database == "ok" else "degraded",
        "database": database,
        "database_backend": state.engine.dialect.name,
        "scheduler": scheduler,
        **slack,  # "configured", "not configured" or "token revoked at ..."; channels the bot is not in
    }
    return JSONResponse(body, status_code=200 if database == "ok" else 503)


async def metrics_endpoint(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
