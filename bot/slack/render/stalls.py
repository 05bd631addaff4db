"""/stalls (the ranked list for a filter) and the App Home (the viewer's own queue)."""

from __future__ import annotations

from collections.abc import Sequence

from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

from bot.slack.render.format import person
from bot.slack.render.limits import MAX_VIEW_BLOCKS, SHORT_MAX, VIEW_TEXT_BUDGET
from bot.slack.render.packing import Packer, check_message
from bot.slack.render.primitives import context_block, header_block, section_block
from bot.slack.render.rows import STALLS_ROW_PREFIX, fill_rows
from bot.slack.text import md
from bot.stalls.views import StallRow

LIST_MAX_ROWS = 40  # /stalls: rows in one ephemeral message, before "and N more"


def stalls_list_blocks(rows: Sequence[StallRow], filter_label: str, more: int = 0) -> list[Block]:
    """/stalls: the ranked list for a filter ("mine · P0"), one row per account (its alert's
    reasons on it) with inline
    actions; rows past what one message holds, plus `more` not loaded, become "and N more"."""
    title = f"*Open stalls* · {md(filter_label, SHORT_MAX)}"
    if not rows:
        blocks: list[Block] = [section_block(f"{title}\nNo open stalls match. 🎉")]
        check_message(blocks)
        return blocks
    packer = Packer()
    packer.add([section_block(f"{title} · one row per account, ranked by ARR at risk and severity")])
    left = fill_rows(packer, rows[:LIST_MAX_ROWS], show_owner=True,
                     block_prefix=f"{STALLS_ROW_PREFIX}{filter_label[:200]}:")
    left += max(len(rows) - LIST_MAX_ROWS, 0) + max(more, 0)
    if left:
        packer.add([context_block(f"…and {left:,} more. Narrow the list, e.g. `/stalls mine p0`.")])
    blocks = packer.messages[0]
    check_message(blocks)
    return blocks


def home_view(rows: Sequence[StallRow], viewer: str, *, more: int = 0, notice: str | None = None) -> View:
    """The viewer's own queue (owned or assigned stalls), ranked, as a Home tab view. `notice`
    (mrkdwn, already escaped): what happened to what they clicked (the Home has no ephemeral)."""
    packer = Packer(max_blocks=MAX_VIEW_BLOCKS, text_budget=VIEW_TEXT_BUDGET)
    if notice:
        packer.add([context_block(f":information_source: {notice}", block_id="home-notice")])
    packer.add([
        header_block("Your stall queue"),
        context_block(f"Accounts {person(viewer)} owns or is assigned, with their stalls, ranked by ARR at risk "
                      "and severity. "
                      "Use `/stalls all` for the whole team."),
    ])
    if not rows:
        packer.add([section_block("Nothing in your queue. 🎉")])
    else:
        left = fill_rows(packer, rows, show_owner=False) + max(more, 0)
        if left:
            packer.add([context_block(f"…and {left:,} more: see `/stalls mine`.")])
    blocks = packer.messages[0]
    check_message(blocks, max_blocks=MAX_VIEW_BLOCKS, text_budget=VIEW_TEXT_BUDGET)
    return View(type="home", blocks=blocks)
