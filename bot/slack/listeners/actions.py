"""Buttons and menus on stalls (block_actions): assign to me, assign to... (Slack's user
picker: inline on a ping, in a modal from a list row's menu), snooze, resolve, view journey.

Flow of every click: ack at once; then, in a lazy listener, the use-case (bot.stalls.actions:
permission check, guarded change, alerts acknowledged and audit, in one transaction); then
every posted ping of the stall (and the clicked message, when it is one) is queued for
re-rendering in the Slack outbox (`enqueue_refresh`: rendered from the stall's state when
sent); a click in an ephemeral list answers ephemerally; a click in the App Home
re-publishes it. "Assign to..." DMs the new assignee once (bot.slack.team.assigned_dm, queued
in the assignment's transaction).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace

from slack_bolt.async_app import AsyncApp

from bot.slack.outbox import enqueue_refresh
from bot.slack.render import home_view, ping_text
from bot.slack.render.codec import Action, StallRef, decode_action, decode_picker
from bot.slack.render.primitives import PICKER_BLOCK_ID, assign_view
from bot.slack.boundary import ack_only, error_text, lazy, listener
from bot.slack.listeners.commands import account_journey
from bot.slack.listeners.notes import open_note
from bot.slack.team import assigned_dm
from bot.stalls import actions, reads, views
from bot.stalls.actions import Outcome
from bot.stalls.context import Services
from bot.stalls.errors import BadRequest, StallwatchError
from bot.stalls.permissions import Op
from storage.db import write_tx

log = logging.getLogger(__name__)

# What each action id (or menu option's op) asks for, as a domain operation.
ACTION_OPS: dict[Action, Op] = {
    Action.ASSIGN: Op.ASSIGN, Action.DIGEST_ASSIGN: Op.ASSIGN, Action.ASSIGN_TO: Op.REASSIGN,
    Action.SNOOZE: Op.SNOOZE, Action.DIGEST_SNOOZE: Op.SNOOZE,
    Action.RESOLVE: Op.RESOLVE, Action.VIEW_JOURNEY: Op.VIEW,
    Action.DRAFT: Op.DRAFT, Action.DRAFT_REGENERATE: Op.REGENERATE,
    Action.DRAFT_DISCARD: Op.DISCARD, Action.DRAFT_APPROVE: Op.APPROVE,
    Action.NOTE: Op.NOTE,
}
# Every action id this module listens to (Action.DRAFT belongs to the drafting flow).
HANDLED = (Action.ASSIGN, Action.SNOOZE, Action.RESOLVE, Action.VIEW_JOURNEY, Action.ROW_MENU, Action.DIGEST_MENU,
           Action.ASSIGN_TO, Action.NOTE)


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
    if clicked == Action.ASSIGN_TO:  # a list row's menu: the picker opens in a modal
        await open_picker(services, body, client, user, ref)
        return
    if clicked == Action.NOTE:  # the ping's "Add note", or a row menu's: the note modal
        await open_note(services, body, client, user, stall_id=ref.stall_id)
        return
    op = ACTION_OPS.get(clicked)
    if op == Op.VIEW:
        account_id = await asyncio.to_thread(actions.view, services, ref.stall_id, user)
        answer = await asyncio.to_thread(account_journey, services, account_id, user)
        await respond(response_type="ephemeral", replace_original=False, **answer)
        return
    if op is None:
        raise BadRequest()
    outcome = await asyncio.to_thread(actions.change, services, op, ref.stall_id, user,
                                      source=str(action.get("action_id")), days=ref.days)
    await after_change(services, client, respond, body, user, outcome)


# --- "Assign to..." ----------------------------------------------------------------------------

async def on_assign_to(services: Services, body, respond, context, client):
    """A pick in a ping's "Assign to..." (users_select): assign the alert to that person."""
    action = (body.get("actions") or [{}])[0]
    try:
        ref, assignee = decode_picker(action)
    except ValueError as e:
        raise BadRequest() from e
    user = context["user_id"]
    outcome = await assign_to(services, user, ref.stall_id, assignee)
    await after_change(services, client, respond, body, user, outcome)


async def assign_to(services: Services, user: str, stall_id: int, assignee: str) -> Outcome:
    """The use-case, with the new assignee's DM, worded for Slack."""
    outcome = await asyncio.to_thread(actions.assign, services, stall_id, user, assignee=assignee,
                                      source=Action.ASSIGN_TO.value, notify=assigned_dm(services))
    if assignee == user:
        return outcome
    return replace(outcome, text=f"Assigned to <@{assignee}>." if outcome.changed
                   else f"It is already assigned to <@{assignee}>.")


def picker_subject(services: Services, stall_id: int, user: str) -> str | None:
    """The account name for the picker, once `user` may hand the alert on (raises otherwise)."""
    actions.may(services, Op.REASSIGN, stall_id, user)
    with services.engine.connect() as conn:
        view = views.ping_view(conn, stall_id, services.rules, services.clock())
    return view.account_name if view else None


async def open_picker(services: Services, body: dict, client, user: str, ref: StallRef) -> None:
    """The picker modal of a list row. Refused (ephemerally) before it opens when the user may
    not hand the alert on; the modal remembers where the click came from, so the submission
    shows the change there (an ephemeral note, the App Home)."""
    name = await asyncio.to_thread(picker_subject, services, ref.stall_id, user)
    container = body.get("container") or {}
    origin = {"stall_id": ref.stall_id, "response_url": body.get("response_url"),
              "block_id": (body.get("actions") or [{}])[0].get("block_id"),
              "container": {k: container.get(k) for k in ("type", "channel_id", "message_ts", "is_ephemeral")
                            if container.get(k) is not None}}
    await client.views_open(trigger_id=body["trigger_id"], view=assign_view(json.dumps(origin), name).to_dict())


async def on_picker_submit(services: Services, ack, view, client, context):
    """The picker modal's submission: assign, then answer within Slack's 3 seconds (the modal
    closes, or shows why not on the picker); the change shows where the menu was clicked."""
    user = context["user_id"]
    try:
        origin = json.loads(view.get("private_metadata") or "")
        stall_id = StallRef(stall_id=origin["stall_id"]).stall_id
        picked = (((view.get("state") or {}).get("values") or {}).get(PICKER_BLOCK_ID) or {}).get(PICKER_BLOCK_ID) or {}
        assignee = picked.get("selected_user")
    except (ValueError, TypeError, KeyError, AttributeError):
        await ack(response_action="errors", errors={PICKER_BLOCK_ID: BadRequest.message})
        return
    if not assignee:
        await ack(response_action="errors", errors={PICKER_BLOCK_ID: "Pick someone."})
        return
    body = {"container": origin.get("container") or {}, "response_url": origin.get("response_url"),
            "actions": [{"block_id": origin.get("block_id") or ""}]}
    respond = _responder(origin.get("response_url"))
    try:
        outcome = await assign_to(services, user, stall_id, assignee)
    except StallwatchError as error:
        await ack(response_action="errors", errors={PICKER_BLOCK_ID: error_text(error)})
        return
    await ack()
    await after_change(services, client, respond, body, user, outcome)


def _responder(url: str | None):
    """`respond` for the click that opened the modal (its response_url lives 30 minutes)."""

    async def respond(**message):
        if not url:
            return
        from slack_sdk.webhook.async_client import AsyncWebhookClient

        try:
            await AsyncWebhookClient(url).send(**message)
        except Exception:  # noqa: BLE001 - a note only: the pings show the change anyway
            log.warning("could not answer the Assign to... click through its response_url", exc_info=True)

    return respond


def register(app: AsyncApp, services: Services) -> None:
    for action_id in HANDLED:
        if action_id == Action.ASSIGN_TO:
            app.action(action_id.value)(ack=ack_only, lazy=[lazy(services, on_assign_to)])
        else:
            app.action(action_id.value)(ack=ack_only, lazy=[lazy(services, on_stall_action)])
    app.view(Action.ASSIGN_TO_SUBMIT.value)(listener(services, on_picker_submit))


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

