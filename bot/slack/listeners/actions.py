"""Buttons and menus on stalls (block_actions): assign to me, snooze, resolve, view journey.

Flow of every click: ack at once; then, in a lazy listener, one write transaction that
checks the permission (bot.slack.permissions), makes a guarded change (only a live stall
changes, so a double click or a race is harmless), acknowledges the stall's alerts and writes
the AuditEntry; then the message is updated from the stall's new state: every posted ping
of the stall (and the clicked message, when it is one) is re-rendered with `chat.update`; a
click in an ephemeral list answers ephemerally; a click in the App Home re-publishes it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from slack_bolt.async_app import AsyncApp
from sqlalchemy import update

from bot.slack import queries
from bot.slack.blocks import Action, StallRef, decode_action, home_view, ping_blocks, ping_text
from bot.slack.bolt_app import Deps, deps, lazy
from bot.slack.listeners.commands import account_journey
from bot.slack.permissions import AlreadyResolved, NotFound, StallwatchSlackError, check
from storage.db import utcnow, write_tx
from storage.models import Alert, AuditEntry, Stall

log = logging.getLogger(__name__)

STALL = Stall.__table__
ALERT = Alert.__table__
AUDIT = AuditEntry.__table__

DEFAULT_SNOOZE_DAYS = 1
ASSIGN_OPS = (Action.ASSIGN, Action.DIGEST_ASSIGN)
SNOOZE_OPS = (Action.SNOOZE, Action.DIGEST_SNOOZE)
# Every action id this module listens to (Action.DRAFT belongs to the drafting flow).
HANDLED = (Action.ASSIGN, Action.SNOOZE, Action.RESOLVE, Action.VIEW_JOURNEY, Action.ROW_MENU, Action.DIGEST_MENU)


class BadPayload(StallwatchSlackError):
    message = "That button is out of date; run the command again."


@dataclass
class Outcome:
    stall_id: int
    changed: bool
    text: str  # what the clicker is told when there is no message to update
    extra: dict = field(default_factory=dict)


# --- the change (blocking; one transaction) ------------------------------------------------------

def perform(d: Deps, op: Action, ref: StallRef, user: str, source: str, now: datetime | None = None) -> Outcome:
    """Check, change, ack alerts and audit, all in one transaction. Raises NotFound,
    AlreadyResolved (the stall is closed) or NotAllowed; nothing changes then."""
    now = now or utcnow()
    with write_tx(d.engine) as conn:
        row = queries.subject_of(conn, ref.stall_id)
        if row is None:
            raise NotFound()
        if row.open_key is None:
            raise AlreadyResolved(row.resolved_by, row.status)
        check(op, user, queries.as_subject(row), d.admins)
        live = (STALL.c.id == ref.stall_id) & STALL.c.open_key.is_not(None)
        detail: dict = {}
        if op in ASSIGN_OPS:
            result = conn.execute(update(STALL).where(live, (STALL.c.assignee.is_(None)) | (STALL.c.assignee != user))
                                  .values(assignee=user, updated_at=now))
            action, detail = "stall.assign", {"assignee": user, "previous": row.assignee}
            text = "Assigned to you." if result.rowcount else "It is already assigned to you."
        elif op in SNOOZE_OPS:
            days = ref.days or DEFAULT_SNOOZE_DAYS
            until = now + timedelta(days=days)
            result = conn.execute(update(STALL).where(live).values(
                status="snoozed", snoozed_until=until, snoozed_by=user, updated_at=now))
            action, detail = "stall.snooze", {"days": days, "until": until.isoformat()}
            text = f"Snoozed for {days} day{'s' if days != 1 else ''}."
        elif op == Action.RESOLVE:
            result = conn.execute(update(STALL).where(live).values(
                status="resolved", open_key=None, resolved_at=now, resolved_by=user,
                resolution="Resolved in Slack", updated_at=now))
            action, text = "stall.resolve", "Resolved."
        else:
            raise BadPayload()
        if result.rowcount == 0 and op == Action.RESOLVE:
            # Someone closed it between our read and our write (PostgreSQL: no lock was held).
            row = queries.subject_of(conn, ref.stall_id)
            raise AlreadyResolved(row.resolved_by if row else None, row.status if row else "resolved")
        if result.rowcount:
            conn.execute(update(ALERT).where(ALERT.c.stall_id == ref.stall_id, ALERT.c.acked_at.is_(None))
                         .values(acked_by=user, acked_at=now, updated_at=now))
            conn.execute(AUDIT.insert().values(at=now, actor=user, action=action, stall_id=ref.stall_id,
                                               account_id=row.account_id, source=source, detail=detail))
    return Outcome(ref.stall_id, bool(result.rowcount), text)


def check_view(d: Deps, ref: StallRef, user: str) -> str:
    """The account id of the stall, if `user` may view it from a button."""
    with d.engine.connect() as conn:
        row = queries.subject_of(conn, ref.stall_id)
    if row is None:
        raise NotFound()
    check(Action.VIEW_JOURNEY, user, queries.as_subject(row), d.admins)
    return row.account_id


def rendered_pings(d: Deps, stall_id: int, extra: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], dict | None]:
    """Where the stall's pings are and the message they now show."""
    with d.engine.connect() as conn:
        targets = queries.ping_messages(conn, stall_id)
        view = queries.ping_view(conn, stall_id, d.rules, utcnow())
    for t in extra:
        if t not in targets:
            targets.append(t)
    if view is None:
        return [], None
    return targets, {"text": ping_text(view), "blocks": [b.to_dict() for b in ping_blocks(view)]}


def home_rows(d: Deps, user: str):
    with d.engine.connect() as conn:
        return queries.stall_rows(conn, utcnow(), user=user, limit=60)


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


def register(app: AsyncApp) -> None:
    d = deps(app)

    async def ack_only(ack):
        await ack()

    @lazy
    async def on_stall_action(body, respond, context, client):
        user = context["user_id"]
        action = (body.get("actions") or [{}])[0]
        try:
            op, ref = decode_action(action)
        except ValueError as e:
            raise BadPayload() from e
        if op == Action.VIEW_JOURNEY:
            account_id = await asyncio.to_thread(check_view, d, ref, user)
            answer = await asyncio.to_thread(account_journey, d, account_id)
            await respond(response_type="ephemeral", replace_original=False, **answer)
            return
        outcome = await asyncio.to_thread(perform, d, op, ref, user, str(action.get("action_id")))
        await after_change(d, client, respond, body, user, outcome)

    for action_id in HANDLED:
        app.action(action_id.value)(ack=ack_only, lazy=[on_stall_action])


async def after_change(d: Deps, client, respond, body: dict, user: str, outcome: Outcome) -> None:
    """Show the change where it was made: the pings are edited in place for everyone; an
    ephemeral list gets an ephemeral note; the App Home is re-published."""
    clicked = _clicked_ping(body, outcome.stall_id)
    targets, message = await asyncio.to_thread(rendered_pings, d, outcome.stall_id, clicked)
    if message is not None:
        for channel, ts in targets:
            try:
                await client.chat_update(channel=channel, ts=ts, **message)
            except Exception:  # one stale message must not hide the others or the answer
                log.exception("could not update the ping of stall %s in %s", outcome.stall_id, channel)
    container = (body.get("container") or {}).get("type")
    if container == "view":
        rows, total = await asyncio.to_thread(home_rows, d, user)
        await client.views_publish(user_id=user, view=home_view(rows, user, more=max(total - len(rows), 0)).to_dict())
    elif not clicked and body.get("response_url"):
        await respond(response_type="ephemeral", replace_original=False,
                      text=f"{outcome.text} · {message['text']}" if message else outcome.text)
    elif clicked and not outcome.changed:
        await respond(response_type="ephemeral", replace_original=False, text=outcome.text)

