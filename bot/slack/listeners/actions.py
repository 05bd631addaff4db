"""Buttons and menus on stalls (block_actions): assign to me, snooze, resolve, view journey.

Flow of every click: ack at once; then, in a lazy listener, the use-case (bot.stalls.actions:
permission check, guarded change, alerts acknowledged and audit, in one transaction); then
every posted ping of the stall (and the clicked message, when it is one) is queued for
re-rendering in the Slack outbox (`enqueue_refresh`: rendered from the stall's state when
sent); a click in an ephemeral list answers ephemerally; a click in the App Home
re-publishes it.
"""

from __future__ import annotations

import asyncio

from slack_bolt.async_app import AsyncApp

from bot.slack.outbox import enqueue_refresh
from bot.slack.render import home_view, ping_text
from bot.slack.render.codec import Action, decode_action
from bot.slack.boundary import ack_only, lazy
from bot.slack.listeners.commands import account_journey
from bot.stalls import actions, reads, views
from bot.stalls.actions import Outcome
from bot.stalls.context import Services
from bot.stalls.errors import BadRequest
from bot.stalls.permissions import Op
from storage.db import write_tx

# What each action id (or menu option's op) asks for, as a domain operation.
ACTION_OPS: dict[Action, Op] = {
    Action.ASSIGN: Op.ASSIGN, Action.DIGEST_ASSIGN: Op.ASSIGN,
    Action.SNOOZE: Op.SNOOZE, Action.DIGEST_SNOOZE: Op.SNOOZE,
    Action.RESOLVE: Op.RESOLVE, Action.VIEW_JOURNEY: Op.VIEW,
    Action.DRAFT: Op.DRAFT, Action.DRAFT_REGENERATE: Op.REGENERATE,
    Action.DRAFT_DISCARD: Op.DISCARD, Action.DRAFT_APPROVE: Op.APPROVE,
}
# Every action id this module listens to (Action.DRAFT belongs to the drafting flow).
HANDLED = (Action.ASSIGN, Action.SNOOZE, Action.RESOLVE, Action.VIEW_JOURNEY, Action.ROW_MENU, Action.DIGEST_MENU)


def refresh_pings(services: Services, stall_id: int, extra: list[tuple[str, str]] = ()) -> None:
    """Queue the re-rendering of every posted ping of the stall (and the `extra` messages): the
    outbox renders them from the stall's state when it sends, so a later change is never
    overwritten by an earlier one. Wakes the sender."""
    with write_tx(services.engine) as conn:
        enqueue_refresh(conn, stall_id, now=services.clock(), extra=extra)
    services.wakeups.slack_outbox.set()


def ping_summary(services: Services, stall_id: int) -> str | None:
    """The stall's ping as one line of text (None once it is gone)."""
    with services.engine.connect() as conn:
        view = views.ping_view(conn, stall_id, services.rules, services.clock())
    return ping_text(view) if view is not None else None


def home_rows(services: Services, user: str):
    with services.engine.connect() as conn:
        return reads.stall_rows(conn, services.clock(), user=user, limit=60, rules=services.rules)


# --- listeners --------------------------------------------------------------------------------

def _clicked_ping(body: dict, stall_id: int) -> list[tuple[str, str]]:
    """The clicked message, when it is a posted (not ephemeral) ping of this stall."""
    container = body.get("container") or {}
    action = (body.get("actions") or [{}])[0]
    if container.get("type") != "message" or container.get("is_ephemeral"):
        return []
    if not str(action.get("block_id", "")).startswith(f"stall-{stall_id}-"):
        return []  # a digest or a list message: not a ping
    channel = container.get("channel_id") or (body.get("channel") or {}).get("id")
    ts = container.get("message_ts")
    return [(channel, ts)] if channel and ts else []


async def on_stall_action(services: Services, body, respond, context, client):
    """A click on a stall: decode it, run the use-case, show the result."""
    user = context["user_id"]
    action = (body.get("actions") or [{}])[0]
    try:
        clicked, ref = decode_action(action)
    except ValueError as e:
        raise BadRequest() from e
    op = ACTION_OPS.get(clicked)
    if op == Op.VIEW:
        account_id = await asyncio.to_thread(actions.view, services, ref.stall_id, user)
        answer = await asyncio.to_thread(account_journey, services, account_id)
        await respond(response_type="ephemeral", replace_original=False, **answer)
        return
    if op is None:
        raise BadRequest()
    outcome = await asyncio.to_thread(actions.change, services, op, ref.stall_id, user,
                                      source=str(action.get("action_id")), days=ref.days)
    await after_change(services, client, respond, body, user, outcome)


def register(app: AsyncApp, services: Services) -> None:
    for action_id in HANDLED:
        app.action(action_id.value)(ack=ack_only, lazy=[lazy(services, on_stall_action)])


async def after_change(services: Services, client, respond, body: dict, user: str, outcome: Outcome) -> None:
    """Show the change where it was made: the pings are edited in place for everyone; an
    ephemeral list gets an ephemeral note; the App Home is re-published."""
    clicked = _clicked_ping(body, outcome.stall_id)
    await asyncio.to_thread(refresh_pings, services, outcome.stall_id, clicked)
    container = (body.get("container") or {}).get("type")
    if container == "view":
        rows, total = await asyncio.to_thread(home_rows, services, user)
        await client.views_publish(user_id=user, view=home_view(rows, user, more=max(total - len(rows), 0)).to_dict())
    elif not clicked and body.get("response_url"):
        summary = await asyncio.to_thread(ping_summary, services, outcome.stall_id)
        await respond(response_type="ephemeral", replace_original=False,
                      text=f"{outcome.text} · {summary}" if summary else outcome.text)
    elif clicked and not outcome.changed:
        await respond(response_type="ephemeral", replace_original=False, text=outcome.text)

