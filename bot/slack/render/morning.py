"""The per-CSM morning DM (bot/slack/morning.py): the CSM's own queue, one row per account in
rank order, and what changed for them since yesterday in one context line.

One message only: rows are added while they fit under Slack's limits (and at most
`MorningData.max_rows`), the rest are counted ("and N more: /stalls mine").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

from slack_sdk.models.blocks import Block

from bot.slack.render.packing import Packer, check_message
from bot.slack.render.primitives import context_block, header_block
from bot.slack.render.rows import row_block
from bot.slack.text import md
from bot.stalls.views import StallRow
from rules._text import plural

NAMES_SHOWN = 3  # account names per kind of change; the rest counted ("+2")
CHANGE_NAME_MAX = 40  # an account name in the changes line, clipped: the line stays short
MORE_RESERVE = 200  # characters kept for the "and N more" line
MORNING_ROW_PREFIX = "morning-"  # a row's block id: a digest-like list, the stale click marks the row


@dataclass(frozen=True)
class MorningChanges:
    """What changed for one CSM since yesterday, as account names."""

    new: Sequence[str] = ()
    resolved: Sequence[str] = ()
    escalated: Sequence[str] = ()
    notes: int = 0  # notes added by others on their accounts
    noted: Sequence[str] = ()  # the accounts those notes are on

    @property
    def empty(self) -> bool:
        return not (self.new or self.resolved or self.escalated or self.notes)


@dataclass(frozen=True)
class MorningData:
    """One CSM's morning DM: their queue ranked (the first `max_rows` accounts), how many
    accounts it holds in all, and the changes since yesterday."""

    user: str
    day: date
    rows: Sequence[StallRow]
    total: int
    changes: MorningChanges = field(default_factory=MorningChanges)
    max_rows: int = 15


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(md(n, CHANGE_NAME_MAX) for n in names[:NAMES_SHOWN])
    rest = len(names) - NAMES_SHOWN
    return f"{shown} +{rest}" if rest > 0 else shown


def changes_text(c: MorningChanges) -> str:
    """"Since yesterday: 2 new (Acme, Globex) · 1 resolved (Initech) · ..." on one line."""
    if c.empty:
        return "Since yesterday: no change in your queue."
    parts = [f"{len(names)} {what} ({_names(names)})"
             for what, names in (("new", c.new), ("resolved", c.resolved), ("escalated", c.escalated)) if names]
    if c.notes:
        on = f" on {_names(c.noted)}" if c.noted else ""
        parts.append(f"{plural(c.notes, 'note')} by others{on}")
    return "Since yesterday: " + " · ".join(parts)


def morning_text(d: MorningData) -> str:
    """The notification text (and the fallback of the blocks)."""
    text = f"Good morning: {plural(d.total, 'stalled account')} in your queue"
    return text + (f" ({len(d.changes.new)} new since yesterday)" if d.changes.new else "")


def morning_blocks(d: MorningData) -> list[Block]:
    """The DM's blocks: a header, the changes line, the ranked rows that fit, "and N more"."""
    packer = Packer()
    packer.add([header_block(f"Your queue · {d.day:%a %d %b}"),
                context_block(f"{morning_text(d)}, ranked.", changes_text(d.changes))])
    shown = 0
    for row in d.rows[:d.max_rows]:
        unit = [row_block(row, show_owner=False, digest=True, block_prefix=MORNING_ROW_PREFIX)]
        if not packer.add_if_fits(unit, reserve_blocks=1, reserve_chars=MORE_RESERVE):
            break
        shown += 1
    left = max(d.total - shown, 0)
    if left:
        packer.add_if_fits([context_block(f"…and {left:,} more: `/stalls mine`")])
    [blocks] = packer.messages  # one message: the rows stop where it is full
    check_message(blocks)
    return blocks


def blocks_text(blocks: Sequence[Block]) -> list[str]:
    """Every text of the blocks, one per line (the dry run's print-out)."""
    out: list[str] = []
    for block in (b.to_dict() for b in blocks):
        if isinstance(block.get("text"), dict):
            out.append(block["text"].get("text", ""))
        out += [el.get("text", "") for el in block.get("elements") or [] if el.get("type") in ("mrkdwn", "plain_text")]
    return out
