"""Buttons and menus on stalls (block_actions): assign to me, assign to... (Slack's user
picker: inline on a ping, in a modal from a list row's menu), snooze (1 to 30 days; "until a
date…" and a row's "Snooze…" in a modal), resolve (always asks why in a modal: the decision
lasts, rules/decisions.py), view journey.

Flow of every click: ack at once; then, in a lazy listener, the use-case (bot.stalls.actions:
permission check, guarded change, alerts acknowledged and audit, in one transaction); then
every posted ping of the stall (and the clicked message, when it is one) is queued for
re-rendering in the Slack outbox (`enqueue_refresh`: rendered from the stall's state when
sent); a click in an ephemeral list answers ephemerally; a click in the App Home
re-publishes it. "Assign to..." DMs the new assignee once (bot.slack.team.assigned_dm, queued
in the assignment's transaction).

A stale click (the alert was closed elsewhere meanwhile) is answered with what happened ("Already
resolved by @x 5 minutes ago: handled") and the clicked surface is refreshed: a ping or an
escalation is re-rendered from the state, a /stalls list is listed again, a digest row shows it
closed, the App Home is re-published with the answer on top (`answer_stale`).
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
from bot.slack.render.format import person, when
from bot.slack.render.decisions import REASON, SNOOZE_FOR, resolve_values, resolve_view, snooze_values, snooze_view
from bot.slack.render.primitives import PICKER_BLOCK_ID, assign_view, section_block
from bot.slack.render.rows import STALLS_ROW_PREFIX
from bot.slack.boundary import ack_only, error_text, lazy, listener
from bot.slack.listeners.commands import account_journey, parse_stalls, stalls_answer
from bot.slack.listeners.notes import open_note
from bot.slack.team import assigned_dm
from bot.stalls import actions, reads, views
from bot.stalls.actions import Outcome
from bot.stalls.context import Services
from bot.stalls.errors import AlreadyResolved, BadRequest, StallwatchError
from bot.stalls.permissions import Op
from storage.db import write_tx

log = logging.getLogger(__name__)

# What each action id (or menu option's op) asks for, as a domain operation.
ACTION_OPS: dict[Action, Op] = {
    Action.ASSIGN: Op.ASSIGN, Action.DIGEST_ASSIGN: Op.ASSIGN, Action.ASSIGN_TO: Op.REASSIGN,
    Action.SNOOZE: Op.SNOOZE, Action.DIGEST_SNOOZE: Op.SNOOZE, Action.SNOOZE_PICK: Op.SNOOZE,
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
    try:
        await _on_stall_action(services, body, respond, client, user, clicked, ref, action)
    except AlreadyResolved as stale:
        await answer_stale(services, client, respond, body, user, ref.stall_id, stale)


async def _on_stall_action(services: Services, body, respond, client, user: str, clicked: Action, ref: StallRef,
                           action: dict) -> None:
    if clicked in MODALS:  # asks first (a list row's "Assign to...", "Snooze…", every Resolve)
        await open_modal(services, body, client, user, ref, clicked)
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


def modal_subject(services: Services, op: Op, stall_id: int, user: str) -> str | None:
    """The account name for a modal, once `user` may perform `op` on the alert (raises
    otherwise: NotAllowed, AlreadyResolved...)."""
    actions.may(services, op, stall_id, user)
    with services.engine.connect() as conn:
        view = views.ping_view(conn, stall_id, services.rules, services.clock())
    return view.account_name if view else None


# The clicks that open a modal first: what they ask permission for, and the modal.
MODALS = {
    Action.ASSIGN_TO: Op.REASSIGN,
    Action.SNOOZE_PICK: Op.SNOOZE,
    Action.RESOLVE: Op.RESOLVE,
}


async def open_modal(services: Services, body: dict, client, user: str, ref: StallRef, clicked: Action) -> None:
    """The modal of a click: the picker, the snooze or the resolve modal. Refused (ephemerally)
    before it opens when the user may not (or the alert is closed: a stale click); the modal
    remembers where the click came from, so the submission shows the change there (the
    pings, an ephemeral note, the App Home). Opened within the trigger_id's 3 seconds: one
    indexed read, the CS team being read in the background (bot/stalls/team.py)."""
    name = await asyncio.to_thread(modal_subject, services, MODALS[clicked], ref.stall_id, user)
    container = body.get("container") or {}
    origin = json.dumps({
        "stall_id": ref.stall_id, "response_url": body.get("response_url"),
        "block_id": (body.get("actions") or [{}])[0].get("block_id"),
        "container": {k: container.get(k) for k in ("type", "channel_id", "message_ts", "is_ephemeral")
                      if container.get(k) is not None}})
    today = services.clock().date()
    if clicked == Action.ASSIGN_TO:
        view = assign_view(origin, name)
    elif clicked == Action.RESOLVE:
        view = resolve_view(origin, name, today)
    else:  # from the ping's select, "Until a date…": the date is what they asked for
        from_select = (body.get("actions") or [{}])[0].get("type") == "static_select"
        view = snooze_view(origin, name, today, until_date=from_select)
    await client.views_open(trigger_id=body["trigger_id"], view=view.to_dict())


def _origin(view: dict) -> tuple[int, dict]:
    """(the stall, a stand-in for the click's body) from a modal's private_metadata. Raises
    ValueError (and friends) on anything that is not ours."""
    origin = json.loads(view.get("private_metadata") or "")
    stall_id = StallRef(stall_id=origin["stall_id"]).stall_id
    body = {"container": origin.get("container") or {}, "response_url": origin.get("response_url"),
            "actions": [{"block_id": origin.get("block_id") or ""}]}
    return stall_id, body


async def on_picker_submit(services: Services, ack, view, client, context):
    """The picker modal's submission: assign, then answer within Slack's 3 seconds (the modal
    closes, or shows why not on the picker); the change shows where the menu was clicked."""
    user = context["user_id"]
    try:
        stall_id, body = _origin(view)
        picked = (((view.get("state") or {}).get("values") or {}).get(PICKER_BLOCK_ID) or {}).get(PICKER_BLOCK_ID) or {}
        assignee = picked.get("selected_user")
    except (ValueError, TypeError, KeyError, AttributeError):
        await ack(response_action="errors", errors={PICKER_BLOCK_ID: BadRequest.message})
        return
    if not assignee:
        await ack(response_action="errors", errors={PICKER_BLOCK_ID: "Pick someone."})
        return
    await _submit(services, ack, client, user, stall_id, body, PICKER_BLOCK_ID,
                  lambda: assign_to(services, user, stall_id, assignee))


async def on_resolve_submit(services: Services, ack, view, client, context):
    """The resolve modal's submission: why (and until when, and a note), checked; then the
    alert is resolved with that decision (bot.stalls.actions.resolve) and shown where it was
    clicked. Field errors keep the modal open."""
    user = context["user_id"]
    origin = await _checked_origin(view, ack, REASON)
    if origin is None:
        return
    stall_id, body = origin
    asked = resolve_values(view, services.clock())
    if asked.errors:
        await ack(response_action="errors", errors=asked.errors)
        return
    await _submit(services, ack, client, user, stall_id, body, REASON, lambda: asyncio.to_thread(
        actions.resolve, services, stall_id, user, reason=asked.reason, until=asked.until, note=asked.note,
        source=Action.RESOLVE.value))


async def on_snooze_submit(services: Services, ack, view, client, context):
    """The snooze modal's submission: 1 to 30 days, or until a date (at most 30 days ahead)."""
    user = context["user_id"]
    origin = await _checked_origin(view, ack, SNOOZE_FOR)
    if origin is None:
        return
    stall_id, body = origin
    asked = snooze_values(view, services.clock())
    if asked.errors:
        await ack(response_action="errors", errors=asked.errors)
        return
    await _submit(services, ack, client, user, stall_id, body, SNOOZE_FOR, lambda: asyncio.to_thread(
        actions.snooze, services, stall_id, user, asked.days, until=asked.until, source=Action.SNOOZE.value))


async def _checked_origin(view, ack, field: str) -> tuple[int, dict] | None:
    """The stall and the click a modal was opened from (its private metadata); None, with the
    modal told why on `field`, when the metadata is not ours."""
    try:
        return _origin(view)
    except (ValueError, TypeError, KeyError, AttributeError):
        await ack(response_action="errors", errors={field: BadRequest.message})
        return None


async def _submit(services: Services, ack, client, user: str, stall_id: int, body: dict, field: str, run) -> None:
    """Run a modal's use-case (`run`, awaitable) and answer within Slack's 3 seconds: the modal
    closes, or shows why not on `field`; the change (or, when the alert was closed meanwhile,
    what happened) shows where the click came from."""
    respond = _responder(body.get("response_url"))
    try:
        outcome = await run()
    except AlreadyResolved as stale:
        await ack(response_action="errors", errors={field: error_text(stale)})
        await answer_stale(services, client, respond, body, user, stall_id, stale, tell=False)
        return
    except StallwatchError as error:
        await ack(response_action="errors", errors={field: error_text(error)})
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
            log.warning("could not answer a modal's click through its response_url", exc_info=True)

    return respond


def register(app: AsyncApp, services: Services) -> None:
    for action_id in HANDLED:
        if action_id == Action.ASSIGN_TO:
            app.action(action_id.value)(ack=ack_only, lazy=[lazy(services, on_assign_to)])
        else:
            app.action(action_id.value)(ack=ack_only, lazy=[lazy(services, on_stall_action)])
    app.view(Action.ASSIGN_TO_SUBMIT.value)(listener(services, on_picker_submit))
    app.view(Action.RESOLVE_SUBMIT.value)(listener(services, on_resolve_submit))
    app.view(Action.SNOOZE_SUBMIT.value)(listener(services, on_snooze_submit))


async def after_change(services: Services, client, respond, body: dict, user: str, outcome: Outcome) -> None:
    """Show the change where it was made: the pings are edited in place for everyone; an
    ephemeral list gets an ephemeral note; the App Home is re-published. When the change
    replaced someone else's assignment or snooze (a stale message), the clicker is told."""
    clicked = _clicked_ping(body, outcome.stall_id)
    await asyncio.to_thread(refresh_pings, services, outcome.stall_id, clicked)
    container = (body.get("container") or {}).get("type")
    told = told_text(outcome)
    if container == "view":
        rows, total = await asyncio.to_thread(home_rows, services, user)
        await client.views_publish(user_id=user, view=home_view(rows, user, more=max(total - len(rows), 0),
                                                                notice=told if outcome.before else None).to_dict())
    elif not clicked and body.get("response_url"):
        summary = await asyncio.to_thread(ping_summary, services, outcome.stall_id)
        await respond(response_type="ephemeral", replace_original=False,
                      text=f"{told} · {summary}" if summary else told)
    elif clicked and (not outcome.changed or outcome.before):
        await respond(response_type="ephemeral", replace_original=False, text=told)


def told_text(outcome: Outcome) -> str:
    """What the clicker is told: the outcome, and whose assignment or snooze it replaced."""
    b = outcome.before
    if b is None:
        return outcome.text
    if b.what == "assigned":
        was = f"it was assigned to {person(b.by)}"
    else:
        was = f"it was snoozed by {person(b.by)}" + (f" until {when(b.until)}" if b.until else "")
    return f"{outcome.text} (Before this click, {was}.)"


# --- stale clicks ----------------------------------------------------------------------------------

async def answer_stale(services: Services, client, respond, body: dict, user: str, stall_id: int,
                       stale: AlreadyResolved, *, tell: bool = True) -> None:
    """A click on an alert closed elsewhere: tell the clicker what happened (ephemerally, unless
    `tell` is False: a modal already shows it) and refresh what they clicked so it shows the
    current state: a ping or an escalation is re-rendered (outbox), a /journey or /stalls
    answer is given again, a digest row shows the alert closed, the App Home is re-published
    with the answer."""
    text = error_text(stale)
    container = body.get("container") or {}
    block_id = str((body.get("actions") or [{}])[0].get("block_id") or "")
    clicked = _clicked_ping(body, stall_id)
    if clicked:
        await asyncio.to_thread(refresh_pings, services, stall_id, clicked)
    elif container.get("type") == "view":
        rows, total = await asyncio.to_thread(home_rows, services, user)
        await client.views_publish(user_id=user, view=home_view(rows, user, more=max(total - len(rows), 0),
                                                                notice=text).to_dict())
        return
    elif container.get("is_ephemeral") and block_id.startswith(f"stall-{stall_id}-"):  # /journey: show it again
        account_id = await asyncio.to_thread(actions.view, services, stall_id, user)
        answer = await asyncio.to_thread(account_journey, services, account_id, user)
        await respond(response_type="ephemeral", replace_original=True, **answer)
    elif block_id.startswith(STALLS_ROW_PREFIX):  # a /stalls list (ephemeral): list it again
        query = parse_stalls(block_id[len(STALLS_ROW_PREFIX):].rpartition(":")[0].replace("·", " "))
        if query is not None:
            answer = await asyncio.to_thread(stalls_answer, services, query, user)
            await respond(response_type="ephemeral", replace_original=True, **answer)
    elif (body.get("message") or {}).get("blocks"):  # a digest: the clicked row shows it closed
        await respond(replace_original=True, **_closed_row(body["message"], block_id, text))
    if tell:
        await respond(response_type="ephemeral", replace_original=False, text=text)


def _closed_row(message: dict, block_id: str, text: str) -> dict:
    """The clicked list message with the clicked row's menu gone and what happened under it."""
    blocks = []
    for block in message.get("blocks") or []:
        if block.get("block_id") == block_id and block.get("type") == "section":
            shown = ((block.get("text") or {}).get("text") or "").rstrip()
            block = section_block(f"{shown}\n✅ {text}", block_id=block_id).to_dict()
        blocks.append(block)
    return {"text": message.get("text") or "Stallwatch digest", "blocks": blocks}
