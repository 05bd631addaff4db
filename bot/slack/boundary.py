"""What every Slack listener goes through: the services it works with, and the one error
boundary (domain errors become friendly ephemeral text; anything else gets an error id that
is logged with the traceback and shown to the user).

Listeners (bot/slack/listeners) are module-level functions whose first parameter is
`services`; `listener`, `lazy` and `after_ack` wrap them for Bolt, which injects arguments by
the names of a function's positional parameters: the wrappers take a fixed set of Bolt's
names (BOLT_ARGS) and hand the function the ones it asks for. The services are passed
explicitly, not through Bolt's context: that context is deep-copied for lazy listeners.
bolt_app imports the listeners and the listeners import this module: one direction.
"""

from __future__ import annotations

import inspect
import logging
import uuid
from typing import Any, Awaitable, Callable

from bot.stalls.context import Services
from bot.slack.render.format import person
from bot.slack.text import md
from bot.stalls.errors import AlreadyResolved, StallwatchError

log = logging.getLogger(__name__)

BOLT_ARGS = ("ack", "body", "respond", "context", "client", "event", "command", "view")
Listener = Callable[..., Awaitable[Any]]


def error_text(error: BaseException) -> str:
    """What the user sees: a domain error's own message (worded for Slack where it names a
    person), or a logged error id."""
    if isinstance(error, AlreadyResolved):
        return error.wording(person(error.by) if error.by_person else None, escape=lambda t: md(t, 400))
    if isinstance(error, StallwatchError):
        return error.message
    error_id = uuid.uuid4().hex[:8]
    log.error("slack listener failed (error id %s)", error_id, exc_info=error)
    return f":warning: Something went wrong on our side (error id `{error_id}`). Please try again or report the id."


async def handle_error(error: BaseException, *, body: dict | None, respond, user_id: str | None) -> None:
    """The one error handler: tell the user ephemerally (through response_url when there is
    one; a home-tab click has none, so it is only logged)."""
    text = error_text(error)
    if isinstance(error, StallwatchError):
        log.info("slack action refused for %s: %s", user_id, text)
    has_response_url = bool((body or {}).get("response_url")) or bool(
        (body or {}).get("response_urls"))
    if respond is None or not has_response_url:
        return
    try:
        await respond(text=text, response_type="ephemeral", replace_original=False)
    except Exception:  # the user cannot be told; the log has it
        log.exception("could not report an error to the user")


def _wanted(func: Listener) -> list[str]:
    names = list(inspect.signature(func).parameters)
    if not names or names[0] != "services":
        raise TypeError(f"listener {func.__name__} must take `services` first")
    unknown = set(names[1:]) - set(BOLT_ARGS)
    if unknown:
        raise TypeError(f"listener {func.__name__} asks for {sorted(unknown)}; it may use {BOLT_ARGS}")
    return names[1:]


def _named(wrapper, func: Listener):
    wrapper.__name__ = wrapper.__qualname__ = func.__name__  # Bolt names lazy runs after it
    return wrapper


def listener(services: Services, func: Listener) -> Listener:
    """`func` for Bolt, with the services; its errors go to the app's error handler."""
    wanted = _wanted(func)

    async def wrapper(ack, body, respond, context, client, event, command, view):
        given = locals()
        return await func(services, **{n: given[n] for n in wanted})

    return _named(wrapper, func)


def lazy(services: Services, func: Listener) -> Listener:
    """`func` as a lazy listener: Bolt runs those as bare tasks whose exceptions reach no
    error handler, so they are routed to handle_error here."""
    wanted = _wanted(func)

    async def wrapper(ack, body, respond, context, client, event, command, view):
        given = locals()
        try:
            return await func(services, **{n: given[n] for n in wanted})
        except Exception as error:  # noqa: BLE001 - this is the error boundary
            await handle_error(error, body=body, respond=respond, user_id=(context or {}).get("user_id"))

    return _named(wrapper, func)


def after_ack(services: Services, func: Listener) -> Listener:
    """ack() at once, then `func`. The work runs inside Bolt's ack listener: an exception there
    would make Bolt drop the ack it already has (Slack then sees a 500 or a timeout), so errors
    go to the one error handler instead."""
    wanted = _wanted(func)

    async def wrapper(ack, body, respond, context, client, event, command, view):
        given = locals()
        await ack()
        try:
            await func(services, **{n: given[n] for n in wanted})
        except Exception as error:  # noqa: BLE001 - the error boundary of these listeners
            await handle_error(error, body=body, respond=respond, user_id=(context or {}).get("user_id"))

    return _named(wrapper, func)


async def ack_only(ack) -> None:
    await ack()
