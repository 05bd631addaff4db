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
- One error handler (`handle_error`) for every listener, lazy ones included: domain errors
  (NotAllowed, NotFound, AlreadyResolved) become friendly ephemeral text; anything else gets
  an error id that is logged with the traceback and shown to the user.

Listeners live in bot.slack.listeners (commands, actions, events; each with `register(app)`)
and reach the engine, settings and rules through `deps(app)`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import uuid
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from slack_bolt.async_app import AsyncApp
from sqlalchemy import Engine

from bot.settings import Settings
from bot.slack.client import async_web_client
from bot.slack.permissions import StallwatchSlackError
from rules.config import Rules

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"


@dataclass(frozen=True)
class Deps:
    settings: Settings
    engine: Engine
    rules: Rules

    @property
    def admins(self) -> frozenset[str]:
        return self.settings.admin_ids


_DEPS_ATTR = "_stallwatch_deps"


def deps(app: AsyncApp) -> Deps:
    """The process's dependencies for listeners registered on `app` (set by build_bolt).
    Kept on the app, not in Bolt's context: the context is deep-copied for lazy listeners."""
    return getattr(app, _DEPS_ATTR)


def missing_slack_settings(settings: Settings) -> list[str]:
    """The Slack variables still needed for /slack/events, when only some are set."""
    have = {"SLACK_BOT_TOKEN": settings.slack_bot_token, "SLACK_SIGNING_SECRET": settings.slack_signing_secret}
    if not any(have.values()):
        return []
    return [name for name, value in have.items() if not value]


def build_bolt(settings: Settings, engine: Engine, rules: Rules, *, socket_mode: bool = False) -> AsyncApp:
    """The AsyncApp with every listener registered once. Needs SLACK_BOT_TOKEN and
    SLACK_SIGNING_SECRET (SLACK_APP_TOKEN instead of the secret in Socket Mode, where Slack
    does not sign: the app-level token authenticates the socket); raises ValueError naming
    what is missing (an empty signing secret would start fine and then fail every request)."""
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
    setattr(app, _DEPS_ATTR, Deps(settings=settings, engine=engine, rules=rules))

    @app.error
    async def on_error(error: Exception, body: dict, respond, context) -> None:
        await handle_error(error, body=body, respond=respond, user_id=context.get("user_id"))

    from bot.slack.listeners import register_listeners

    register_listeners(app)
    return app


# --- errors ---------------------------------------------------------------------------------

def error_text(error: BaseException) -> str:
    """What the user sees: a domain error's own message, or a logged error id."""
    if isinstance(error, StallwatchSlackError):
        return error.message
    error_id = uuid.uuid4().hex[:8]
    log.error("slack listener failed (error id %s)", error_id, exc_info=error)
    return f":warning: Something went wrong on our side (error id `{error_id}`). Please try again or report the id."


async def handle_error(error: BaseException, *, body: dict | None, respond, user_id: str | None) -> None:
    """The one error handler: tell the user ephemerally (through response_url when there is
    one; a home-tab click has none, so it is only logged)."""
    text = error_text(error)
    if isinstance(error, StallwatchSlackError):
        log.info("slack action refused for %s: %s", user_id, text)
    has_response_url = bool((body or {}).get("response_url")) or bool(
        (body or {}).get("response_urls"))
    if respond is None or not has_response_url:
        return
    try:
        await respond(text=text, response_type="ephemeral", replace_original=False)
    except Exception:  # the user cannot be told; the log has it
        log.exception("could not report an error to the user")


LAZY_ARGS = ("body", "respond", "context", "client")


def lazy(func: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Route a lazy listener's errors to handle_error: Bolt runs lazy listeners as bare tasks
    whose exceptions reach no error handler. Bolt injects arguments by the names of a
    function's positional parameters, so the wrapper takes a fixed set (LAZY_ARGS) and hands
    `func` the ones it asks for."""
    import inspect

    wanted = [n for n in inspect.signature(func).parameters]
    unknown = set(wanted) - set(LAZY_ARGS)
    if unknown:
        raise TypeError(f"lazy listener {func.__name__} asks for {sorted(unknown)}; it may use {LAZY_ARGS}")

    async def wrapper(body, respond, context, client):
        given = {"body": body, "respond": respond, "context": context, "client": client}
        try:
            return await func(**{n: given[n] for n in wanted})
        except Exception as error:  # noqa: BLE001 - this is the error boundary
            await handle_error(error, body=body, respond=respond, user_id=(context or {}).get("user_id"))

    wrapper.__name__ = wrapper.__qualname__ = func.__name__  # Bolt names lazy runs after it
    return wrapper


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
