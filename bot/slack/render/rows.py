"""One stall as a row of a ranked list (/stalls, /journey, App Home, digest), with its inline menu."""

from __future__ import annotations

from collections.abc import Sequence

from slack_sdk.models.blocks import SectionBlock

from bot.slack.render.format import CLOSED, PRIORITY_EMOJI, days_text, money, person, when
from bot.slack.render.limits import NAME_MAX, NOTE_MAX, ROW_WHY_MAX
from bot.slack.render.packing import Packer
from bot.slack.render.primitives import row_menu, section_block
from bot.slack.text import md
from bot.stalls.views import StallRow
from rules.health import trend_mark


def row_text(r: StallRow, *, show_owner: bool) -> str:
    head = f"{PRIORITY_EMOJI.get(r.priority, '⚪')} *{md(r.account_name, NAME_MAX)}* · {money(r.arr)} ARR"
    if r.health is not None:
        head += f" · health {health_text(r.health, r.health_trend)}"
    facts = [md(r.why, ROW_WHY_MAX) or f"{r.priority}, stalled {days_text(r.days_stalled)}"]
    if show_owner:
        facts.append(f"owner {person(r.owner)}")
    if r.assignee:
        facts.append(f"assigned to {person(r.assignee)}")
    if r.status == "snoozed" or r.snoozed_until:
        facts.append(f"snoozed until {when(r.snoozed_until)}" if r.snoozed_until else "snoozed")
    if r.note:
        facts.append(f"_{md(r.note, NOTE_MAX)}_")
    return head + "\n" + " · ".join(facts)


def health_text(health: int, trend: int | None) -> str:
    """"62 ↓9": the score and its change over the week, when known."""
    mark = trend_mark(trend)
    return f"{health} {mark}" if mark else str(health)


def row_block(r: StallRow, *, show_owner: bool, digest: bool = False) -> SectionBlock:
    menu = None if r.status in CLOSED else row_menu(r.stall_id, digest=digest)
    return section_block(row_text(r, show_owner=show_owner), accessory=menu)


def fill_rows(packer: Packer, rows: Sequence[StallRow], *, show_owner: bool, footer_chars: int = 200) -> int:
    """Add rows while they fit (keeping room for a footer); return how many did not."""
    for i, row in enumerate(rows):
        if not packer.add_if_fits([row_block(row, show_owner=show_owner)], reserve_blocks=1,
                                  reserve_chars=footer_chars):
            return len(rows) - i
    return 0
