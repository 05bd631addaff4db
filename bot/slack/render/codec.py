"""Action ids and their payloads: every interactive element carries a `StallRef` as compact JSON
in its `value` (button) or option value (select, overflow menu); `decode_action` turns a Slack
`block_actions` action back into (Action, StallRef)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bot.slack.render.limits import OPTION_VALUE_MAX


class Action(StrEnum):
    """Every action id Stallwatch puts in a message (Bolt listeners match on these)."""

    DRAFT = "stall_draft"  # button: draft a recovery email (opens the modal, bot/slack/draft_views.py)
    # In the recovery-email modal (their value is a DraftRef, not a StallRef): the modal's
    # submission is DRAFT_APPROVE ("Approve & send").
    DRAFT_REGENERATE = "draft_regenerate"
    DRAFT_DISCARD = "draft_discard"
    DRAFT_APPROVE = "draft_approve"
    ASSIGN = "stall_assign"  # button: assign to me
    # Users select "Assign to..." on a ping (a users_select carries no value: its stall is in
    # its block id, `stall-<id>-actions`); as a menu option's op, it opens the picker in a modal.
    ASSIGN_TO = "stall_assign_to"
    ASSIGN_TO_SUBMIT = "stall_assign_to_modal"  # the picker modal's callback id
    SNOOZE = "stall_snooze"  # static select: 1, 3, 7, 14 or 30 days (StallRef.days), or SNOOZE_PICK
    # As a select option's or a menu option's op: "Snooze…" / "Until a date…", the snooze
    # modal (bot/slack/render/decisions.py); SNOOZE_SUBMIT is its callback id.
    SNOOZE_PICK = "stall_snooze_pick"
    SNOOZE_SUBMIT = "stall_snooze_modal"
    RESOLVE = "stall_resolve"  # button (or a row menu's op): asks why in a modal first
    RESOLVE_SUBMIT = "stall_resolve_modal"  # the resolve modal's callback id
    VIEW_JOURNEY = "stall_view_journey"  # button (a link when the journey has a URL)
    # Overflow menu on a row of /stalls, /journey or the App Home; the chosen option's
    # StallRef.op says which of ASSIGN, SNOOZE (with days) or RESOLVE it is.
    ROW_MENU = "stall_row_menu"
    # Overflow menu on a digest row; the option's StallRef.op is DIGEST_ASSIGN, ASSIGN_TO or
    # SNOOZE_PICK (DIGEST_SNOOZE: digests posted before the snooze modal, still decoded).
    # Separate from ROW_MENU so the listener knows it must update a digest, not a ping.
    DIGEST_MENU = "digest_row_menu"
    DIGEST_ASSIGN = "digest_assign"
    DIGEST_SNOOZE = "digest_snooze"
    # "Add note": a button on a ping (its value a StallRef), an option of a row's menu (its op);
    # on /journey, ACCOUNT_NOTE's value is the account id (an account may have no stall). Both
    # open the note modal, whose submission is NOTE_SUBMIT (bot/slack/listeners/notes.py).
    NOTE = "stall_note"
    ACCOUNT_NOTE = "account_note"
    NOTE_SUBMIT = "note_modal"


class StallRef(BaseModel):
    """The typed payload of every interactive element: which stall, and for menus what to do."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stall_id: int = Field(ge=1)
    v: Literal[1] = 1  # payload version: old messages stay decodable when this grows
    op: Action | None = None  # set on menu options, where one action id carries several ops
    days: int | None = Field(default=None, ge=1, le=365)  # snooze length

    def encode(self) -> str:
        """Compact JSON (no spaces, no nulls): always far under the 150-char option value limit."""
        value = self.model_dump_json(exclude_none=True)
        if len(value) > OPTION_VALUE_MAX:  # cannot happen with these fields; guards future ones
            raise ValueError(f"StallRef payload is {len(value)} characters")
        return value

    @classmethod
    def decode(cls, value: str) -> "StallRef":
        """Parse a payload; raises pydantic.ValidationError on anything forged or foreign."""
        return cls.model_validate_json(value)


PICKER_BLOCK = re.compile(r"^stall-(\d{1,18})-actions$")


def picker_block_id(stall_id: int) -> str:
    """The block id of a stall's actions: where its "Assign to..." picker says which stall."""
    return f"stall-{int(stall_id)}-actions"


def decode_picker(action: Mapping[str, Any]) -> tuple[StallRef, str]:
    """(which stall, whom) from an "Assign to..." users_select action. Raises ValueError on a
    block id or a user that is not ours or not Slack's."""
    found = PICKER_BLOCK.match(str(action.get("block_id") or ""))
    user = action.get("selected_user")
    if found is None or not isinstance(user, str) or not USER_ID.match(user):
        raise ValueError("not an Assign to... pick")
    return StallRef(stall_id=int(found.group(1))), user


USER_ID = re.compile(r"^[UW][A-Z0-9]{1,40}$")


def decode_action(action: Mapping[str, Any]) -> tuple[Action, StallRef]:
    """(what to do, on which stall) from one entry of a block_actions payload's `actions`.

    Buttons carry the payload in `value`; selects and overflow menus in `selected_option.value`.
    For menus the payload's `op` is the action; otherwise the action id is. Raises ValueError
    (pydantic's ValidationError is one) on unknown action ids or malformed payloads.
    """
    selected = action.get("selected_option") or {}
    raw = selected.get("value") if selected else action.get("value")
    if not isinstance(raw, str):
        raise ValueError("action carries no value")
    ref = StallRef.decode(raw)
    return (ref.op or Action(action.get("action_id"))), ref
