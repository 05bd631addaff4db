"""The recovery-email flow in Slack: the "Draft recovery email" button, the modal's
Regenerate and Discard buttons, and its submission (Approve & send). The work is in the
use-cases (bot/stalls/drafts.py); here is only Slack's choreography and wording:

- the click opens the modal at once ("Drafting…": a trigger_id lives 3 seconds), then the
  draft is written off the event loop (the LLM may take seconds) and the modal is updated in
  place (`views.update` by view id);
- the submission is answered within Slack's 3 seconds with field errors (the modal stays
  open), or the modal's next state; the mail outbox is then woken;
- after every change the stall's pings are queued for re-rendering in the outbox (from the
  stall's state when sent), so the channel sees the draft's state.

Domain errors (not allowed, stall closed, cannot draft) are shown in the modal itself, where
the CSM is looking; anything unexpected shows an error id that is logged.
"""

from __future__ import annotations

import asyncio

from slack_bolt.async_app import AsyncApp

from bot.slack.render.codec import Action, decode_action
from bot.slack.boundary import after_ack, error_text, listener
from bot.slack.draft_views import (BODY, CALLBACK_ID, NEW_CONTACT, RECIPIENT, SUBJECT, DraftRef, drafting_view,
                                   form_view, notice_view, submitted_values)
from bot.slack.listeners.actions import refresh_pings
from bot.slack.text import md
from bot.stalls import drafts
from bot.stalls.context import Services
from bot.stalls.errors import BadRequest
from bot.stalls.views import not_sent_phrase

async def on_draft(services: Services, body, client, context):
    try:
        _, stall_ref = decode_action((body.get("actions") or [{}])[0])
    except ValueError:
        raise BadRequest() from None
    ref = DraftRef(stall_id=stall_ref.stall_id)
    opened = await client.views_open(trigger_id=body["trigger_id"], view=drafting_view(ref).to_dict())
    view_id = opened["view"]["id"]

    async def work():
        draft_id = await asyncio.to_thread(drafts.start_draft, services, ref.stall_id, context["user_id"],
                                           view_id=view_id, source=Action.DRAFT.value)
        return await asyncio.to_thread(drafts.write_draft, services, draft_id, context["user_id"],
                                       source=Action.DRAFT.value)

    await _fill(services, client, view_id, ref, work)


async def on_regenerate(services: Services, body, client, context):
    ref, view_id = _modal_ref(body)
    await client.views_update(view_id=view_id, view=drafting_view(ref, what="Rewriting").to_dict())

    async def work():
        return await asyncio.to_thread(drafts.write_draft, services, ref.draft_id, context["user_id"],
                                       source=Action.DRAFT_REGENERATE.value, regenerate=True)

    await _fill(services, client, view_id, ref, work)


async def on_discard(services: Services, body, client, context):
    ref, view_id = _modal_ref(body)
    try:
        await asyncio.to_thread(drafts.discard, services, ref.draft_id, context["user_id"],
                                source=Action.DRAFT_DISCARD.value)
        text = "Discarded. Nothing was sent."
    except Exception as error:  # noqa: BLE001 - shown in the modal
        text = modal_text(error)
    await client.views_update(view_id=view_id, view=notice_view(ref, text).to_dict())
    await asyncio.to_thread(refresh_pings, services, ref.stall_id)


async def on_submit(services: Services, ack, body, view, client, context):
    try:
        ref = DraftRef.decode(view.get("private_metadata") or "")
    except ValueError:
        await ack(response_action="update", view=notice_view(DraftRef(stall_id=1), "This draft is out of date.")
                  .to_dict())
        return
    if ref.draft_id is None:  # submitted while still "Drafting…" (that view has no submit button)
        await ack()
        return
    try:
        result = await asyncio.to_thread(drafts.approve, services, ref.draft_id, context["user_id"],
                                         edited_email(view), source=Action.DRAFT_APPROVE.value)
    except Exception as error:  # noqa: BLE001 - shown in the modal
        await ack(response_action="update", view=notice_view(ref, modal_text(error)).to_dict())
        return
    if result.errors:
        await ack(response_action="errors", errors={FIELDS[name]: text for name, text in result.errors.items()})
        return
    notice, detail = approval_notice(result)
    await ack(response_action="update", view=notice_view(ref, notice, detail=detail).to_dict())
    if result.approved:
        services.wakeups.mail_outbox.set()
    await asyncio.to_thread(refresh_pings, services, ref.stall_id)


def register(app: AsyncApp, services: Services) -> None:
    app.action(Action.DRAFT.value)(after_ack(services, on_draft))
    app.action(Action.DRAFT_REGENERATE.value)(after_ack(services, on_regenerate))
    app.action(Action.DRAFT_DISCARD.value)(after_ack(services, on_discard))
    app.view(CALLBACK_ID)(listener(services, on_submit))


async def _fill(services: Services, client, view_id: str, ref: DraftRef, work) -> None:
    """Run `work` (which returns the DraftForm) and show it, or why not, in the modal; then
    the pings show the draft's state."""
    try:
        view = form_view(await work())
    except Exception as error:  # noqa: BLE001 - the modal is where the CSM is looking
        view = notice_view(ref, modal_text(error))
    await client.views_update(view_id=view_id, view=view.to_dict())
    await asyncio.to_thread(refresh_pings, services, ref.stall_id)


# --- wording ---------------------------------------------------------------------------------------

FIELDS = {drafts.RECIPIENT: RECIPIENT, drafts.SUBJECT: SUBJECT, drafts.BODY: BODY}  # use-case field -> block id


def edited_email(view: dict) -> drafts.Edited:
    values = submitted_values(view)
    return drafts.Edited(recipient=values[RECIPIENT], subject=values[SUBJECT], body=values[BODY],
                         new_contact=values[NEW_CONTACT] == "yes")


def status_text(draft) -> str:
    """Why a draft can no longer be changed."""
    who = f" by <@{draft.approved_by}>" if draft.approved_by else ""
    return {
        "approved": f"This draft was already approved{who}; it is being sent.",
        "sent": f"This draft was already sent{who}.",
        "discarded": "This draft was discarded.",
        "blocked": f"This draft {md(not_sent_phrase(draft.blocked_reason), 600)}",
    }.get(draft.status, f"This draft is {draft.status}.")


def modal_text(error: BaseException) -> str:
    return status_text(error.draft) if isinstance(error, drafts.DraftClosed) else error_text(error)


def approval_notice(result: drafts.Approval) -> tuple[str, str | None]:
    """What the modal says after a submission without field errors (and its detail line)."""
    if result.closed is not None:
        return status_text(result.closed), None
    if result.blocked is not None:
        return f"Not sent: {md(result.blocked, 600)}", None
    if result.not_configured:
        return (f"Approved. It is queued but cannot go out yet: {md(result.not_configured, 600)}",
                "It will be checked again and sent as soon as email is configured.")
    return (f"Approved: sending to {md(result.recipient, 200)} now.",
            "If the customer moves on before it goes out, it is held and you are told why.")


def _modal_ref(body: dict) -> tuple[DraftRef, str]:
    view = body.get("view") or {}
    action = (body.get("actions") or [{}])[0]
    try:
        ref = DraftRef.decode(action.get("value") or view.get("private_metadata") or "")
    except ValueError:
        raise BadRequest("That draft is out of date.") from None
    if ref.draft_id is None or not view.get("id"):
        raise BadRequest("That draft is out of date.")
    return ref, view["id"]
