"""The ASGI app: ingest routes, health and metrics (and, when configured, Slack at /slack/events)."""

from __future__ import annotations

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

from bot.ingest.routes import routes as ingest_routes
from bot.settings import Settings
from storage.db import make_engine
from storage.writer import BatchWriter

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, engine: Engine | None = None,
               on_events_stored: Callable[[Iterable[str]], None] | None = None,
               socket_mode: bool = False) -> Starlette:
    """Build the app. `engine` defaults to one for `settings.database_url` (already migrated)."""
    settings = settings or Settings()
    engine = engine or make_engine(settings.database_url)
    rules = settings.rules

    if on_events_stored is None:
        from bot.scan import evaluate_accounts

        def on_events_stored(account_ids: Iterable[str]) -> None:
            try:
                evaluate_accounts(engine, rules, sorted(account_ids))
            except Exception:  # the next scan catches up; never fail the stored request
                log.exception("event-driven evaluation failed")

    writer = BatchWriter(engine, rules)
    slack_routes, bolt = _slack_routes(settings, engine, rules, quiet=socket_mode)  # [slack-bolt] POST /slack/events

    socket_bolt = _socket_mode_bolt(settings, engine, rules) if socket_mode else None

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
    app.state.scheduler = None
    app.state.bolt = bolt
    app.state.socket_bolt = socket_bolt
    return app


# --- [slack-bolt] Slack's slash commands, buttons and App Home at POST /slack/events -----------

def _slack_routes(settings: Settings, engine: Engine, rules, quiet: bool = False) -> tuple[list[Route], object | None]:
    """The Bolt route when SLACK_SIGNING_SECRET and SLACK_BOT_TOKEN are both set; when only one
    is, say at start which one is missing (Bolt would otherwise fail every request)."""
    from bot.slack.bolt_app import EVENTS_PATH, build_bolt, missing_slack_settings, starlette_endpoint

    missing = missing_slack_settings(settings)
    if missing and not quiet:  # in Socket Mode no signing secret is needed
        log.error("Slack is only partly configured: %s missing, so /slack/events (slash commands, "
                  "buttons, App Home) is OFF. Set %s from the Slack app's settings (Basic Information "
                  "-> Signing Secret; OAuth & Permissions -> Bot User OAuth Token).",
                  " and ".join(missing) + (" is" if len(missing) == 1 else " are"), " and ".join(missing))
        return [], None
    if not (settings.slack_bot_token and settings.slack_signing_secret):
        return [], None
    bolt = build_bolt(settings, engine, rules)
    return [Route(EVENTS_PATH, starlette_endpoint(bolt), methods=["POST"])], bolt


def _socket_mode_bolt(settings: Settings, engine: Engine, rules):
    """Socket Mode (`serve --socket-mode`): the same listeners, reached over Slack's WebSocket
    instead of POST /slack/events, for workspaces that cannot expose a public URL. Built here,
    so missing tokens fail at start; connected when the server starts."""
    from bot.slack.bolt_app import build_bolt

    return build_bolt(settings, engine, rules, socket_mode=True)


async def healthz(request: Request) -> Response:
    state = request.app.state

    def ping_db() -> str:
        with state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return "ok"

    try:
        database = await run_in_threadpool(ping_db)
    except Exception as exc:  # report, don't crash: this is what monitors poll
        database = f"error: {type(exc).__name__}"
    scheduler = state.scheduler.status() if state.scheduler is not None else "off"
    body = {
        "status": "ok" if database == "ok" else "degraded",
        "database": database,
        "database_backend": state.engine.dialect.name,
        "scheduler": scheduler,
        "slack": "configured" if state.settings.slack_enabled else "not configured",
    }
    return JSONResponse(body, status_code=200 if database == "ok" else 503)


async def metrics_endpoint(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
