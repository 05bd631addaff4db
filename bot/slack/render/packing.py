"""Measuring and checking messages, and filling them under Slack's block and text limits."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from slack_sdk.models.blocks import Block

from bot.slack.render.limits import MAX_BLOCKS, TEXT_BUDGET


def _as_dict(block: Block | Mapping[str, Any]) -> Mapping[str, Any]:
    return block if isinstance(block, Mapping) else block.to_dict()  # to_dict validates limits


def _text_chars(node: Any) -> int:
    if isinstance(node, Mapping):
        total = 0
        for key, value in node.items():
            if key == "text" and isinstance(value, str):
                total += len(value)
            elif isinstance(value, (Mapping, list)):
                total += _text_chars(value)
        return total
    if isinstance(node, list):
        return sum(_text_chars(item) for item in node)
    return 0


def block_text_length(blocks: Iterable[Block | Mapping[str, Any]]) -> int:
    """Characters of text in the blocks (every text object, field, button and option label):
    what Slack's msg_blocks_too_long limit is about. Payload values are not counted."""
    return sum(_text_chars(_as_dict(b)) for b in blocks)


def check_message(blocks: Sequence[Block], *, max_blocks: int = MAX_BLOCKS, text_budget: int = TEXT_BUDGET) -> None:
    """Raise ValueError unless the blocks make a message Slack accepts: every block valid
    (slack_sdk's own checks: their SlackObjectFormationError propagates), at most
    `max_blocks` blocks and `text_budget` characters of text."""
    if not blocks:
        raise ValueError("a message needs at least one block")
    if len(blocks) > max_blocks:
        raise ValueError(f"{len(blocks)} blocks, over the limit of {max_blocks}")
    length = block_text_length(blocks)
    if length > text_budget:
        raise ValueError(f"{length} characters of block text, over the budget of {text_budget}")


class Packer:
    """Fills messages with units of blocks (a unit never splits) under the block and text limits."""

    def __init__(self, max_blocks: int = MAX_BLOCKS, text_budget: int = TEXT_BUDGET):
        self.max_blocks, self.text_budget = max_blocks, text_budget
        self.messages: list[list[Block]] = [[]]
        self._chars = [0]

    def add_if_fits(self, unit: Sequence[Block], *, reserve_blocks: int = 0, reserve_chars: int = 0) -> bool:
        """Add `unit` to the current message if it fits with room to spare; else add nothing."""
        chars = block_text_length(unit)
        if (len(self.messages[-1]) + len(unit) + reserve_blocks > self.max_blocks
                or self._chars[-1] + chars + reserve_chars > self.text_budget):
            return False
        self.messages[-1].extend(unit)
        self._chars[-1] += chars
        return True

    def add(self, unit: Sequence[Block]) -> None:
        """Add `unit` to the current message, or to a new one when it does not fit."""
        if not self.add_if_fits(unit):
            self.new_message()
            if not self.add_if_fits(unit):
                raise ValueError("one unit of blocks does not fit in a message")

    def new_message(self) -> None:
        if self.messages[-1]:
            self.messages.append([])
            self._chars.append(0)
