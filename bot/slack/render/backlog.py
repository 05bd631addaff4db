"""The backlog summary: the accounts that were already stalled when Stallwatch first saw them
(a first connect, a backfill), posted once per owner instead of one ping each."""

from __future__ import annotations

from collections.abc import Sequence

from slack_sdk.models.blocks import Block

from bot.slack.render.format import PRIORITY_EMOJI, join_lines, money, person
from bot.slack.render.limits import NAME_MAX, SECTION_TEXT_MAX, SHORT_MAX
from bot.slack.render.packing import check_message
from bot.slack.render.primitives import context_block, header_block, section_block
from bot.slack.text import md
from bot.stalls.views import PingView

EXPLAINER = ("These accounts were already stalled when Stallwatch first saw them. They are not pinged one "
             "by one; anything new on them will be. `/stalls mine` lists them with buttons.")


def backlog_text(items: Sequence[PingView], *, owner: str | None) -> str:
    """The notification line."""
    arr = sum(max(p.arr, 0.0) for p in items)
    n = len(items)
    return f"Backlog: {n} account{'s' if n != 1 else ''} already stalled ({money(arr)} ARR)"


def backlog_line(p: PingView) -> str:
    """One account: priority, name, ARR, its top reason and how many more."""
    reason = p.reasons[0].text if p.reasons else p.why
    more = f" (+{len(p.reasons) - 1})" if len(p.reasons) > 1 else ""
    return (f"{PRIORITY_EMOJI.get(p.priority, '⚪')} {p.priority} *{md(p.account_name, NAME_MAX)}* · "
            f"{money(p.arr)} ARR · {md(reason, SHORT_MAX)}{more}")


def backlog_blocks(items: Sequence[PingView], *, owner: str | None) -> list[Block]:
    """The summary: ranked (the caller's order), as many lines as fit, then "...and N more"."""
    blocks: list[Block] = [
        header_block(backlog_text(items, owner=owner)),
        context_block(f"For {person(owner)}. {EXPLAINER}"),
        section_block(join_lines([backlog_line(p) for p in items], SECTION_TEXT_MAX - 100, "more accounts")),
    ]
    check_message(blocks)
    return blocks
