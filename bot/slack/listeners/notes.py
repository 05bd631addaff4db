""""Add note": the modal, its submission, and the note shown in the account's open pings' threads.

The modal opens from a ping's button and a row's menu (Action.NOTE, through the stall actions'
listener: `open_note`) and from /journey (Action.ACCOUNT_NOTE, here). The permission is checked
before it opens (an outsider is told why, ephemerally, and sees no modal) and again on
submission (bot.stalls.notes.add). views.open runs at once after the check: a trigger_id lives
3 seconds.

The submission stores the note, its audit row and one thread reply per open ping of the
account (`thread_replies`: outbox rows keyed `note:{lead}:{dest}:{note id}`, replying with
`thread_ts_from` the ping's own key `ping:{lead}:{dest}`, so they wait for the ping and share
its lane) in one transaction; the modal's view id is the submission's request id, so the same
submission again stores and posts nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging

from slack_bolt.async_app import AsyncApp
from sqlalchemy import Connection, select

from bot.slack.boundary import ack_only, error_text, lazy, listener
from bot.slack.outbox import OUTBOX, enqueue
from bot.slack.queries import PING
from bot.slack.render.codec import Action, StallRef
from bot.slack.render.limits import NAME_MAX
from bot.slack.render.notes import NOTE_BLOCK_ID, note_reply_text, note_view
from bot.slack.router import ping_key
from bot.slack.text import md
from bot.stalls import notes
from bot.stalls.context import Services
from bot.stalls.errors import BadRequest, StallwatchError
from storage.models import Alert, Stall

log = logging.getLogger(__name__)

ALERT = Alert.__table__
STALL = Stall.__table__
ACCOUNT_ID_MAX = 255


def open_pings(conn: Connection, account_id: str) -> list[tuple[int, str]]:
    """(lead stall, destination) of every open ping of the account (kind "ping", not closed)."""
    return [(r.stall_id, r.channel) for r in conn.execute(
        select(ALERT.c.stall_id, ALERT.c.channel).select_from(ALERT.join(STALL, STALL.c.id == ALERT.c.stall_id))
        .where(STALL.c.account_id == account_id, ALERT.c.kind == PING, ALERT.c.closed_at.is_(None))
        .order_by(ALERT.c.id))]


def thread_replies(services: Services) -> notes.Notify:
    """The `notify` of bot.stalls.notes.add: "📝 @author: text" in the thread of each open ping
    of the account, queued once per note and ping in the note's transaction. A ping with no
    outbox post (none to reply under) is skipped."""

    def notify(conn: Connection, note: notes.Noted) -> None:
        for lead, dest in open_pings(conn, note.account_id):
            key = ping_key(lead, dest)
            if conn.execute(select(OUTBOX.c.id).where(OUTBOX.c.key == key)).first() is None:
                continue
            enqueue(conn, key=f"note:{lead}:{dest}:{note.note_id}", method="chat.postMessage", now=services.clock(),
                    payload={"thread_ts_from": key, "text": note_reply_text(note.author, note.text),
                             "unfurl_links": False, "unfurl_media": False})

    return notify


# --- opening the modal ----------------------------------------------------------------------------

async def open_note(services: Services, body: dict, client, user: str, *, stall_id: int | None = None,
                    account_id: str | None = None) -> None:
    """The note modal for the stall's account (or the account), once `user` may write one
    (raises otherwise, before anything opens)."""
    found = await asyncio.to_thread(notes.target, services, user, stall_id=stall_id, account_id=account_id)
    origin = {"account_id": found.account_id, "stall_id": found.stall_id, "response_url": body.get("response_url")}
    view = note_view(json.dumps(origin), found.account_name, on_stall=found.stall_id is not None)
    await client.views_open(trigger_id=body["trigger_id"], view=view.to_dict())


async def on_account_note(services: Services, body, context, client):
    """/journey's "Add note" (its value is the account id)."""
    value = ((body.get("actions") or [{}])[0]).get("value")
    if not isinstance(value, str) or not 0 < len(value) <= ACCOUNT_ID_MAX:
        raise BadRequest()
    await open_note(services, body, client, context["user_id"], account_id=value)


# --- the submission -------------------------------------------------------------------------------

def _origin(view: dict) -> tuple[str | None, int | None, str | None]:
    """(account id, stall id, response_url) from the modal's metadata; ValueError when foreign."""
    origin = json.loads(view.get("private_metadata") or "")
    stall_id = origin.get("stall_id")
    if stall_id is not None:
        stall_id = StallRef(stall_id=stall_id).stall_id
    account_id = origin.get("account_id")
    if not isinstance(account_id, str) or not account_id:
        raise ValueError("no account")
    return account_id, stall_id, origin.get("response_url")


def _typed(view: dict) -> str | None:
    values = ((view.get("state") or {}).get("values") or {}).get(NOTE_BLOCK_ID) or {}
    return (values.get(NOTE_BLOCK_ID) or {}).get("value")


async def on_note_submit(services: Services, ack, view, client, context):
    """Store the note, then answer within Slack's 3 seconds: the modal closes, or shows why not
    under the text; the click's conversation (a ping, /journey) gets an ephemeral word."""
    user = context["user_id"]
    try:
        account_id, stall_id, response_url = _origin(view)
    except (ValueError, TypeError, AttributeError):
        await ack(response_action="errors", errors={NOTE_BLOCK_ID: BadRequest.message})
        return
    try:
        added = await asyncio.to_thread(
            notes.add, services, user, _typed(view) or "", account_id=None if stall_id else account_id,
            stall_id=stall_id, source=Action.NOTE_SUBMIT.value, request_id=view.get("id"),
            notify=thread_replies(services))
    except StallwatchError as error:
        await ack(response_action="errors", errors={NOTE_BLOCK_ID: error_text(error)})
        return
    await ack()
    services.wakeups.slack_outbox.set()
    if added.created and response_url:
        await _tell(response_url, f"📝 Note added on *{md(added.account_name, NAME_MAX)}*: the team sees it in "
                                  "`/journey`, in the thread of its open ping and in the digest.")


async def _tell(url: str, text: str) -> None:
    """An ephemeral word where the modal was opened (its response_url lives 30 minutes)."""
    from slack_sdk.webhook.async_client import AsyncWebhookClient

    try:
        await AsyncWebhookClient(url).send(text=text, response_type="ephemeral", replace_original=False)
    except Exception:  # noqa: BLE001 - a courtesy only: /journey and the thread show the note
        log.warning("could not answer the note through its response_url", exc_info=True)


def register(app: AsyncApp, services: Services) -> None:
    app.action(Action.ACCOUNT_NOTE.value)(ack=ack_only, lazy=[lazy(services, on_account_note)])
    app.view(Action.NOTE_SUBMIT.value)(listener(services, on_note_submit))
