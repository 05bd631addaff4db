"""One stall as a row of a ranked list (/stalls, /journey, App Home, digest), with its inline menu."""

from __future__ import annotations

from collections.abc import Sequence

from slack_sdk.models.blocks import SectionBlock

from bot.slack.render.format import CLOSED, PRIORITY_EMOJI, days_text, money, person, when
from bot.slack.render.limits import NAME_MAX, NOTE_MAX, ROW_WHY_MAX
from bot.slack.render.notes import row_note_line
from bot.slack.render.packing import Packer
from bot.slack.render.primitives import row_menu, section_block
from bot.slack.text import md
from bot.stalls.views import StallRow
from rules.health import trend_mark

ROW_PREFIX = "row-"  # a row's block id: never "stall-<id>-…", which names a ping's blocks
STALLS_ROW_PREFIX = "stalls:"  # a /stalls row: "stalls:<filter label>:<stall id>"


def row_text(r: StallRow, *, show_owner: bool, brief: bool = False) -> str:
    """An account's row: name and ARR, then its reasons, (unless `brief`, as in the digest)
    its priority in words, and who has it."""
    head = f"{PRIORITY_EMOJI.get(r.priority, '⚪')} *{md(r.account_name, NAME_MAX)}* · {money(r.arr)} ARR"
    if r.health is not None:
        head += f" · health {health_text(r.health, r.health_trend)}"
    facts = [md(r.why, ROW_WHY_MAX) or f"{r.priority}, stalled {days_text(r.days_stalled)}"]
    if r.because and not brief:
        facts.append(md(r.because, ROW_WHY_MAX))
    if show_owner:
        facts.append(f"owner {person(r.owner)}")
    if r.assignee:
        facts.append(f"assigned to {person(r.assignee)}")
    if r.status == "snoozed" or r.snoozed_until:
        facts.append(f"snoozed until {when(r.snoozed_until)}" if r.snoozed_until else "snoozed")
    if r.note:
        facts.append(f"_{md(r.note, NOTE_MAX)}_")
    text = head + "\n" + " · ".join(facts)
    # A person's latest note (the digest's rows) on a line of its own: the facts line keeps its layout.
    return (text + "\n" + row_note_line(r.latest_note)) if r.latest_note else text


def health_text(health: int, trend: int | None) -> str:
    """"62 ↓9": the score and its change over the week, when known."""
    mark = trend_mark(trend)
    return f"{health} {mark}" if mark else str(health)


def row_block(r: StallRow, *, show_owner: bool, digest: bool = False, block_prefix: str = ROW_PREFIX) -> SectionBlock:
    """The row, its block id `<block_prefix><stall id>` (a stale click finds the row, and the
    list it is in, by it: bot/slack/listeners/actions.py)."""
    menu = None if r.status in CLOSED else row_menu(r.stall_id, digest=digest)
    return section_block(row_text(r, show_owner=show_owner, brief=digest), accessory=menu,
                         block_id=f"{block_prefix}{r.stall_id}")


def fill_rows(packer: Packer, rows: Sequence[StallRow], *, show_owner: bool, footer_chars: int = 200,
              block_prefix: str = ROW_PREFIX) -> int:
    """Add rows while they fit (keeping room for a footer); return how many did not."""
    for i, row in enumerate(rows):
        if not packer.add_if_fits([row_block(row, show_owner=show_owner, block_prefix=block_prefix)], reserve_blocks=1,
                                  reserve_chars=footer_chars):
            return len(rows) - i
    return 0
