"""Block Kit building blocks: sections, contexts, headers, and the buttons and menus of a stall.
Every text is clipped to Slack's limit for its place; every payload is a `StallRef`."""

from __future__ import annotations

from collections.abc import Sequence

from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    HeaderBlock,
    InputBlock,
    MarkdownTextObject,
    Option,
    OverflowMenuElement,
    PlainTextObject,
    SectionBlock,
    StaticSelectElement,
    UserSelectElement,
)
from slack_sdk.models.views import View

from bot.slack.render.codec import Action, StallRef, picker_block_id
from bot.slack.render.limits import CONTEXT_TEXT_MAX, FIELD_TEXT_MAX, HEADER_TEXT_MAX, SECTION_TEXT_MAX, URL_MAX
from bot.slack.text import clip, md, plain

SNOOZE_DAYS = (1, 3, 7, 14, 30)  # rules.decisions.MAX_SNOOZE_DAYS at most


def section_block(text: str | None, *, fields: Sequence[str] = (), accessory=None,
                  block_id: str | None = None) -> SectionBlock:
    # Slack rejects an empty text object: a section of fields only has no text at all.
    body = MarkdownTextObject(text=clip(text, SECTION_TEXT_MAX)) if text and text.strip() else None
    if body is None and not fields:
        body = MarkdownTextObject(text="–")
    return SectionBlock(
        text=body,
        fields=[MarkdownTextObject(text=clip(f, FIELD_TEXT_MAX)) for f in fields[:10]] or None,
        accessory=accessory,
        block_id=block_id,
    )


def context_block(*texts: str, block_id: str | None = None) -> ContextBlock:
    elements = [MarkdownTextObject(text=clip(t, CONTEXT_TEXT_MAX)) for t in texts if t][:10]
    return ContextBlock(elements=elements or [MarkdownTextObject(text=" ")], block_id=block_id)


def header_block(text: str) -> HeaderBlock:
    return HeaderBlock(text=PlainTextObject(text=plain(text, HEADER_TEXT_MAX), emoji=True))


def button(text: str, action: Action, ref: StallRef, *, style: str | None = None,
           url: str | None = None, confirm: ConfirmObject | None = None) -> ButtonElement:
    return ButtonElement(text=PlainTextObject(text=text, emoji=True), action_id=action.value,
                         value=ref.encode(), style=style, url=url, confirm=confirm)


def _option(text: str, ref: StallRef) -> Option:
    return Option(text=PlainTextObject(text=text, emoji=True), value=ref.encode())


def _snooze_select(stall_id: int) -> StaticSelectElement:
    return StaticSelectElement(
        placeholder=PlainTextObject(text="Snooze…"),
        action_id=Action.SNOOZE.value,
        options=[_option(_snooze_label(d), StallRef(stall_id=stall_id, days=d)) for d in SNOOZE_DAYS]
        + [_option("Until a date…", StallRef(stall_id=stall_id, op=Action.SNOOZE_PICK))],
    )


def _snooze_label(days: int) -> str:
    return f"Snooze {days} day" if days == 1 else f"Snooze {days} days"


def safe_url(url: str | None, limit: int) -> bool:
    return bool(url) and len(url) <= limit and url.startswith(("https://", "http://"))


def journey_button(stall_id: int, journey_url: str | None) -> ButtonElement:
    # A link when the journey has a page; otherwise the app answers with the /journey view.
    # Anything Slack would reject (too long, not http) is dropped rather than sent.
    url = journey_url if safe_url(journey_url, URL_MAX) else None
    return button("View journey", Action.VIEW_JOURNEY, StallRef(stall_id=stall_id), url=url)


def assign_picker(action_id: str = Action.ASSIGN_TO.value, *, initial_user: str | None = None) -> UserSelectElement:
    """Slack's user picker: "Assign to..." (on a ping, or in the picker modal)."""
    return UserSelectElement(placeholder=PlainTextObject(text="Assign to…"), action_id=action_id,
                             initial_user=initial_user)


def stall_actions(stall_id: int, *, journey_url: str | None = None, with_journey: bool = True,
                  with_note: bool = True, block_id: str | None = None) -> ActionsBlock:
    """The buttons of a live stall: Draft, Assign to me, Assign to..., Snooze, Resolve, Add note
    (and View journey). The block id names the stall (the "Assign to..." picker carries no value)."""
    ref = StallRef(stall_id=stall_id)
    elements = [
        button("Draft recovery email", Action.DRAFT, ref, style="primary"),
        button("Assign to me", Action.ASSIGN, ref),
        assign_picker(),
        _snooze_select(stall_id),
        button("Resolve", Action.RESOLVE, ref, style="danger"),  # asks why in a modal
    ]
    if with_note:
        elements.append(button("Add note", Action.NOTE, ref))
    if with_journey:
        elements.append(journey_button(stall_id, journey_url))
    return ActionsBlock(elements=elements, block_id=block_id or picker_block_id(stall_id))


def row_menu(stall_id: int, *, digest: bool) -> OverflowMenuElement:
    """The inline actions of a list row (at most 5 options in an overflow menu). "Assign to...",
    "Snooze…" (1 to 30 days or a date), "Resolve…" (why) and "Add note" open modals (a menu
    holds no input)."""
    assign, action = (Action.DIGEST_ASSIGN, Action.DIGEST_MENU) if digest else (Action.ASSIGN, Action.ROW_MENU)
    options = [_option("Assign to me", StallRef(stall_id=stall_id, op=assign)),
               _option("Assign to…", StallRef(stall_id=stall_id, op=Action.ASSIGN_TO)),
               _option("Snooze…", StallRef(stall_id=stall_id, op=Action.SNOOZE_PICK))]
    if not digest:
        options.append(_option("Resolve…", StallRef(stall_id=stall_id, op=Action.RESOLVE)))
    options.append(_option("Add note", StallRef(stall_id=stall_id, op=Action.NOTE)))
    return OverflowMenuElement(action_id=action.value, options=options)


PICKER_BLOCK_ID = "assignee"


def assign_view(private_metadata: str, account_name: str | None = None) -> View:
    """The "Assign to..." modal of a list row: Slack's user picker; `private_metadata` says
    which stall and where the click came from (bot/slack/listeners/actions.py)."""
    what = f"*{md(account_name, 120)}*" if account_name else "this alert"
    return View(
        type="modal", callback_id=Action.ASSIGN_TO_SUBMIT.value, private_metadata=private_metadata,
        title=PlainTextObject(text="Assign to…"), submit=PlainTextObject(text="Assign"),
        close=PlainTextObject(text="Cancel"),
        blocks=[section_block(f"Who takes {what}? They get a DM."),
                InputBlock(block_id=PICKER_BLOCK_ID, label=PlainTextObject(text="Assignee"),
                           element=assign_picker(PICKER_BLOCK_ID))],
    )
