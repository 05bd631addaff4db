"""The recovery-email modal, one renderer per state (rendered from the Draft, like the pings):

- `drafting_view`: opened at once on the click (a trigger_id lives 3 s), "Drafting…";
- `form_view`: the editable draft (recipient, subject, body) with Approve & send (the submit
  button), Regenerate and Discard, and where it came from (the model, or the template and why);
- `notice_view`: a final word (queued, discarded, cannot draft and why).

Every view carries a `DraftRef` in `private_metadata`; inputs have fixed block and action ids
(`RECIPIENT`, `SUBJECT`, `BODY`) so the submission is read back without guessing.
"""

from __future__ import annotations


from pydantic import BaseModel, ConfigDict, Field
from slack_sdk.models.blocks import (ActionsBlock, Block, ButtonElement, CheckboxesElement, ConfirmObject,
                                     EmailInputElement, InputBlock, Option, PlainTextInputElement, PlainTextObject)
from slack_sdk.models.views import View

from bot.slack.render.codec import Action
from bot.slack.render.limits import MAX_VIEW_BLOCKS, VIEW_TEXT_BUDGET
from bot.slack.render.packing import check_message
from bot.slack.render.primitives import context_block, section_block
from bot.slack.text import clip, md
from bot.stalls.drafts import DraftForm

CALLBACK_ID = "recovery_draft"  # the modal's callback_id: its submission is the approval
TITLE = "Recovery email"
SUBJECT_MAX = 150
BODY_MAX = 3000

RECIPIENT, SUBJECT, BODY = "recipient", "subject", "body"  # block id == action id of each input
NEW_CONTACT = "new_contact"  # the checkbox confirming an address that is not a contact yet ("yes" when ticked)


class DraftRef(BaseModel):
    """The modal's typed `private_metadata` (and the Regenerate/Discard buttons' value)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stall_id: int = Field(ge=1)
    draft_id: int | None = Field(default=None, ge=1)
    v: int = 1

    def encode(self) -> str:
        return self.model_dump_json(exclude_none=True)

    @classmethod
    def decode(cls, value: str) -> "DraftRef":
        return cls.model_validate_json(value)


def _modal(ref: DraftRef, blocks: list[Block], *, submit: str | None = None, close: str = "Close") -> View:
    check_message(blocks, max_blocks=MAX_VIEW_BLOCKS, text_budget=VIEW_TEXT_BUDGET)
    return View(type="modal", callback_id=CALLBACK_ID, title=PlainTextObject(text=TITLE),
                submit=PlainTextObject(text=submit) if submit else None, close=PlainTextObject(text=close),
                blocks=blocks, private_metadata=ref.encode())


def drafting_view(ref: DraftRef, *, account_name: str | None = None, what: str = "Drafting") -> View:
    who = f" to *{md(account_name, 120)}*" if account_name else ""
    return _modal(ref, [section_block(f":hourglass_flowing_sand: {what} a recovery email{who}…"),
                        context_block("This takes a few seconds. You will review and edit it before anything is sent.")])


def notice_view(ref: DraftRef, text: str, *, detail: str | None = None) -> View:
    """A final word. `text` and `detail` are mrkdwn written by Stallwatch (an error's message,
    an approval notice) whose customer parts were escaped by their maker, like the same
    message in an ephemeral answer: escaping them again here would show `&amp;lt;`."""
    blocks: list[Block] = [section_block(clip(text, 2500))]
    if detail:
        blocks.append(context_block(clip(detail, 1500)))
    return _modal(ref, blocks)


def form_view(f: DraftForm) -> View:
    ref = DraftRef(stall_id=f.stall_id, draft_id=f.draft_id)
    if f.source == "template":
        origin = ":memo: *Template draft*" + (f": {md(f.note, 300)}" if f.note else "")
    else:
        origin = f":sparkles: Drafted by `{md(f.source.removeprefix('llm:'), 80)}` from the account's facts. Check it before sending."
    attempt = f" · recovery attempt {f.attempt}" if f.attempt > 1 else ""
    blocks: list[Block] = [
        section_block(f"*{md(f.account_name, 120)}*{attempt}\n{md(f.why, 600)}"),
        context_block(origin),
    ]
    if f.warning:
        blocks.append(context_block(f":warning: {md(f.warning, 600)}"))
    blocks += [
        InputBlock(block_id=RECIPIENT, label=PlainTextObject(text="To"),
                   element=EmailInputElement(action_id=RECIPIENT, initial_value=f.recipient or None,
                                             placeholder=PlainTextObject(text="name@customer.com")),
                   hint=PlainTextObject(text="One address: the account's primary contact; change it if someone else "
                                             "should get it.")),
        InputBlock(block_id=NEW_CONTACT, label=PlainTextObject(text="New contact"), optional=True,
                   element=CheckboxesElement(action_id=NEW_CONTACT, options=[Option(
                       value="yes", label="This is a new contact: send to this address anyway")]),
                   hint=PlainTextObject(text="Needed when the address is not one of the account's contacts; "
                                             "it is recorded in the audit log.")),
        InputBlock(block_id=SUBJECT, label=PlainTextObject(text="Subject"),
                   element=PlainTextInputElement(action_id=SUBJECT, initial_value=f.subject[:SUBJECT_MAX] or None,
                                                 max_length=SUBJECT_MAX)),
        InputBlock(block_id=BODY, label=PlainTextObject(text="Message"),
                   element=PlainTextInputElement(action_id=BODY, multiline=True,
                                                 initial_value=f.body[:BODY_MAX] or None, max_length=BODY_MAX)),
        ActionsBlock(block_id="draft-actions", elements=[
            ButtonElement(text=PlainTextObject(text="Regenerate"), action_id=Action.DRAFT_REGENERATE.value,
                          value=ref.encode()),
            ButtonElement(text=PlainTextObject(text="Discard"), action_id=Action.DRAFT_DISCARD.value,
                          value=ref.encode(), style="danger",
                          confirm=ConfirmObject(title="Discard this draft?", text="Nothing will be sent.",
                                                confirm="Discard", deny="Keep")),
        ]),
        context_block("Approve & send queues it for delivery; Stallwatch checks again right before sending that "
                 "the customer is still stuck here, has not opted out or cancelled, and was not emailed recently."),
    ]
    return _modal(ref, blocks, submit="Approve & send", close="Cancel")


def submitted_values(view: dict) -> dict[str, str]:
    """(recipient, subject, body) from a view_submission's state, stripped ('' when absent), and
    NEW_CONTACT: "yes" when the box is ticked."""
    values = (view.get("state") or {}).get("values") or {}
    box = values.get(NEW_CONTACT) if isinstance(values, dict) else None
    box = box.get(NEW_CONTACT) if isinstance(box, dict) else None
    selected = box.get("selected_options") if isinstance(box, dict) else None
    out = {NEW_CONTACT: "yes" if isinstance(selected, list) and any(
        isinstance(o, dict) and o.get("value") == "yes" for o in selected) else ""}
    for key in (RECIPIENT, SUBJECT, BODY):
        entry = (values.get(key) or {}).get(key) or {}
        raw = entry.get("value")
        out[key] = raw.strip() if isinstance(raw, str) else ""
    return out
