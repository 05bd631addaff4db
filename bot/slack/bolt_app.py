"""The Bolt app: slash commands, buttons and the App Home, served at POST /slack/events.

- `AsyncApp` behind Starlette (`AsyncSlackRequestHandler`): the sync handler would run
  dispatch on the event loop and block it. Blocking database work goes through
  `asyncio.to_thread`.
- Bolt's own request verification is on (v0 HMAC of the raw body, 5-minute replay window):
  a forged or stale signature gets 401 before any listener runs.
- `process_before_response=False`: ack() answers Slack at once; the slow part of a command
  runs in a lazy listener and answers through `response_url`.
- Every Web API call goes through `async_web_client` (base_url from SLACK_API_URL, retry
  handlers for 429 and 5xx).
- One error handler (bot.slack.boundary.handle_error) for every listener, lazy ones
  included: domain errors (NotAllowed, NotFound, AlreadyResolved) become friendly ephemeral
  text; anything else gets an error id that is logged with the traceback and shown to the user.

Listeners live in bot.slack.listeners (commands, actions, drafts, events), registered once
by `register_all(app, services)`; they get the process's Services (bot.stalls.context)
through bot.slack.boundary, never from this module (no import cycle).
"""

from __future__ import annotations

import hashlib
import hmac

from slack_bolt.async_app import AsyncApp

from bot.settings import Settings
from bot.slack.boundary import handle_error
from bot.slack.client import async_web_client
from bot.slack.listeners import register_all
from bot.slack.team import connect_team
from bot.stalls.context import Services

EVENTS_PATH = "/slack/events"


def missing_slack_settings(settings: Settings) -> list[str]:
    """The Slack variables still needed for /slack/events, when only some are set."""
    have = {"SLACK_BOT_TOKEN": settings.slack_bot_token, "SLACK_SIGNING_SECRET": settings.slack_signing_secret}
    if not any(have.values()):
        return []
    return [name for name, value in have.items() if not value]


def build_bolt(services: Services, *, socket_mode: bool = False) -> AsyncApp:
    """The AsyncApp with every listener registered once. Needs SLACK_BOT_TOKEN and
    SLACK_SIGNING_SECRET (SLACK_APP_TOKEN instead of the secret in Socket Mode, where Slack
    does not sign: the app-level token authenticates the socket); raises ValueError naming
    what is missing (an empty signing secret would start fine and then fail every request)."""
    settings = services.settings
    needed = [("SLACK_BOT_TOKEN", settings.slack_bot_token)]
    needed.append(("SLACK_APP_TOKEN", settings.slack_app_token) if socket_mode
                  else ("SLACK_SIGNING_SECRET", settings.slack_signing_secret))
    missing = [n for n, v in needed if not v]
    if missing:
        raise ValueError(f"Slack is not fully configured: set {' and '.join(missing)}")
    app = AsyncApp(
        client=async_web_client(settings),  # carries SLACK_BOT_TOKEN and SLACK_API_URL
        signing_secret=settings.slack_signing_secret or "",
        process_before_response=False,
        request_verification_enabled=not socket_mode,
        raise_error_for_unhandled_request=False,
    )

    @app.error
    async def on_error(error: Exception, body: dict, respond, context) -> None:
        await handle_error(error, body=body, respond=respond, user_id=context.get("user_id"))

    register_all(app, services)
    connect_team(services)  # STALLWATCH_TEAM's user groups are read from Slack
    return app


# --- mounting -----------------------------------------------------------------------------

def starlette_endpoint(app: AsyncApp, signing_secret: str):
    """A Starlette endpoint serving Bolt, called as `endpoint(request, body)` with the body
    already read (bounded) and its signature verified (bot.app._refuse_unreadable). Bolt
    parses the body when its request is built: that runs in a worker thread, not on the
    event loop. Bolt's own verification stays on."""
    from slack_bolt.adapter.starlette.async_handler import to_starlette_response
    from slack_bolt.async_app import AsyncBoltRequest
    from starlette.concurrency import run_in_threadpool

    def bolt_request(request, body: bytes) -> AsyncBoltRequest:
        headers = dict(request.headers)
        body, headers = without_payload_trap(body, headers, signing_secret)
        return AsyncBoltRequest(body=body.decode("utf-8"), query=str(request.query_params), headers=headers)

    async def slack_events(request, body: bytes):
        return to_starlette_response(await app.async_dispatch(await run_in_threadpool(bolt_request, request, body)))

    return slack_events


def without_payload_trap(body: bytes, headers: dict[str, str], signing_secret: str) -> tuple[bytes, dict[str, str]]:
    """Bolt (slack_bolt.request.internals.parse_body, 1.30) takes any form body containing
    the substring "payload" for an interaction and looks for a `payload` field: a slash
    command such as `/journey payload`, or one from a channel or user named "payload-...",
    parses as {} and answers 404. No upstream issue was found for it (searched the
    slackapi/bolt-python issues, 2026-12). A verified form body without a `payload` field but
    with the substring gets its "p" percent-encoded ("%70ayload" decodes to the same fields)
    and is signed again with the same timestamp and secret, so Bolt's own verification still
    passes and nothing else changes."""
    from urllib.parse import parse_qs

    text = body.decode("utf-8", errors="replace")
    is_json = headers.get("content-type", "").split(";")[0].strip() == "application/json" or text.startswith("{")
    if is_json or b"payload" not in body or "payload" in parse_qs(text, keep_blank_values=True):
        return body, headers
    body = body.replace(b"payload", b"%70ayload")
    timestamp = headers.get("x-slack-request-timestamp", "")
    base = b"v0:" + timestamp.encode() + b":" + body
    signature = "v0=" + hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()
    return body, {**headers, "x-slack-signature": signature}
