"""Notes (bot/stalls/notes.py) in Slack: the "Add note" modal, the reply in a ping's thread, a
line of /journey and of a digest row. A note's text is a person's words about a customer, often
pasted from the customer: it goes through `md` like any customer text (no mention, no link, no
formatting), once, here; the author is Stallwatch's own `<@U…>` of a stored Slack id."""

from __future__ import annotations

from slack_sdk.models.blocks import ButtonElement, InputBlock, PlainTextInputElement, PlainTextObject
from slack_sdk.models.views import View

from bot.slack.render.codec import Action
from bot.slack.render.format import person, when
from bot.slack.render.limits import NAME_MAX
from bot.slack.render.primitives import section_block
from bot.slack.text import md
from bot.stalls.notes import MAX_CHARS
from bot.stalls.views import NoteLine

NOTE_BLOCK_ID = "note_text"  # the modal's input (block id == action id)
REPLY_MAX = 2000  # a whole note fits in its thread reply
JOURNEY_NOTE_MAX = 280  # one note's text on /journey
ROW_NOTE_MAX = 150  # the latest note on a digest row


def note_view(private_metadata: str, account_name: str, *, on_stall: bool) -> View:
    """The "Add note" modal: a multi-line text of at most MAX_CHARS; `private_metadata` says
    what the note is about and where the click came from (bot/slack/listeners/notes.py)."""
    what = "this account's alert" if on_stall else "this account"
    return View(
        type="modal", callback_id=Action.NOTE_SUBMIT.value, private_metadata=private_metadata,
        title=PlainTextObject(text="Add note"), submit=PlainTextObject(text="Save note"),
        close=PlainTextObject(text="Cancel"),
        blocks=[section_block(f"A note on {what}, *{md(account_name, NAME_MAX)}*. The team sees it in `/journey`, "
                              "in the thread of its open ping and in the digest."),
                InputBlock(block_id=NOTE_BLOCK_ID, label=PlainTextObject(text="Note"),
                           element=PlainTextInputElement(action_id=NOTE_BLOCK_ID, multiline=True,
                                                         max_length=MAX_CHARS,
                                                         placeholder="Spoke to them: the integration lands next sprint."))],
    )


def account_note_button(account_id: str) -> ButtonElement:
    """/journey's "Add note" (on the account: it may have no stall to carry a StallRef)."""
    return ButtonElement(text=PlainTextObject(text="Add note", emoji=True), action_id=Action.ACCOUNT_NOTE.value,
                         value=account_id)


def note_reply_text(author: str, text: str) -> str:
    """The reply under the account's open ping: "📝 @author: text" (line breaks kept)."""
    return f"📝 {person(author)}: {md(text, REPLY_MAX, single_line=False)}"


def journey_note_line(n: NoteLine) -> str:
    return f"• {when(n.at)} {person(n.author)}: {md(n.text, JOURNEY_NOTE_MAX)}"


def row_note_line(n: NoteLine) -> str:
    """The latest note under a digest row's facts, clipped."""
    return f"📝 {person(n.author)}: {md(n.text, ROW_NOTE_MAX)}"
