"""Block Kit for every Stallwatch surface: pings, escalations, /journey, /stalls, /funnel, the
App Home and the daily digest.

Renderers are pure functions from the plain dataclasses below to `slack_sdk.models` blocks
(or a `View`), so Slack's limits are checked when a message is built, not when Slack rejects
it. Messages are rendered from state (Grafana OnCall's lesson): the buttons depend on the
stall's current status, and re-rendering after any change gives the whole new message.

Safety rules every renderer follows:
- customer text (account names, why lines, ticket subjects...) goes through `md` (mrkdwn)
  or `plain` (plain_text) of bot/slack/text.py exactly once: no mentions, links, formatting
  or bidi controls survive, and it is clipped to a fixed size without cutting an escape;
- multi-line sections are built from whole lines up to Slack's limit ("…and N more");
- every message passes `check_message` (50 blocks, ~12,000 characters of text); lists that
  would not fit end with "and N more" instead of failing.

Action ids are `Action`; every interactive element carries a `StallRef` as compact JSON in
its `value` (button) or option value (select, overflow menu). `decode_action` turns a Slack
`block_actions` action back into (Action, StallRef).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    MarkdownTextObject,
    Option,
    OverflowMenuElement,
    PlainTextObject,
    SectionBlock,
    StaticSelectElement,
)
from slack_sdk.models.views import View

# The text-safety functions live in bot.slack.text; re-exported here, where renderers use them.
from bot.slack.text import clip, escape, md, plain  # noqa: F401 - escape is re-exported

# --- Slack's limits (docs.slack.dev, Block Kit reference) -------------------------------------

MAX_BLOCKS = 50  # per message; slack_sdk does not check this one
MAX_VIEW_BLOCKS = 100  # per modal or Home tab
# Slack answers msg_blocks_too_long past roughly 13,000 characters of block text; keep margin.
TEXT_BUDGET = 12_000
# Views have no documented text limit short of the payload size; this only keeps Home sane.
VIEW_TEXT_BUDGET = 40_000
SECTION_TEXT_MAX = 3000
FIELD_TEXT_MAX = 2000
HEADER_TEXT_MAX = 150
CONTEXT_TEXT_MAX = 2000
BUTTON_VALUE_MAX = 2000
OPTION_VALUE_MAX = 150
URL_MAX = 3000

# Our own sizes for pieces of user text, chosen so composed texts stay far under the limits.
NAME_MAX = 120
WHY_MAX = 600
SHORT_MAX = 100
NOTE_MAX = 300
ROW_WHY_MAX = 240

SNOOZE_DAYS = (1, 3, 7)
LIST_MAX_ROWS = 40  # /stalls: rows in one ephemeral message, before "and N more"
JOURNEY_MAX_STALLS = 5
JOURNEY_MAX_EVENTS = 10
JOURNEY_MAX_TICKETS = 5
# Text sizes of the /journey sections: together they leave room for the open stalls.
JOURNEY_CHECKLIST_MAX = 2500
JOURNEY_HISTORY_MAX = 1500
DIGEST_MAX_ISSUES = 10

PRIORITY_EMOJI = {"P0": "🔴", "P1": "🟠", "P2": "🟡", "P3": "⚪"}
STATUS_LABEL = {
    "open": "Open",
    "snoozed": "Snoozed",
    "resolved": "Resolved",
    "auto_resolved": "Auto-resolved",
    "suppressed": "Suppressed",
}
CLOSED = frozenset({"resolved", "auto_resolved", "suppressed"})


# --- actions and their payloads ---------------------------------------------------------------

class Action(StrEnum):
    """Every action id Stallwatch puts in a message (Bolt listeners match on these)."""

    DRAFT = "stall_draft"  # button: draft a recovery email (opens the modal, bot/slack/draft_views.py)
    # In the recovery-email modal (their value is a DraftRef, not a StallRef): the modal's
    # submission is DRAFT_APPROVE ("Approve & send").
    DRAFT_REGENERATE = "draft_regenerate"
    DRAFT_DISCARD = "draft_discard"
    DRAFT_APPROVE = "draft_approve"
    ASSIGN = "stall_assign"  # button: assign to me
    SNOOZE = "stall_snooze"  # static select: 1, 3 or 7 days (StallRef.days)
    RESOLVE = "stall_resolve"  # button, with a confirmation
    VIEW_JOURNEY = "stall_view_journey"  # button (a link when the journey has a URL)
    # Overflow menu on a row of /stalls, /journey or the App Home; the chosen option's
    # StallRef.op says which of ASSIGN, SNOOZE (with days) or RESOLVE it is.
    ROW_MENU = "stall_row_menu"
    # Overflow menu on a digest row; the option's StallRef.op is DIGEST_ASSIGN or DIGEST_SNOOZE.
    # Separate from ROW_MENU so the listener knows it must update a digest, not a ping.
    DIGEST_MENU = "digest_row_menu"
    DIGEST_ASSIGN = "digest_assign"
    DIGEST_SNOOZE = "digest_snooze"


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


# --- text ----------------------------------------------------------------------------------------

def _join_lines(lines: Sequence[str], limit: int, more_label: str = "more") -> str:
    """Whole lines up to `limit` characters, then "…and N more" for the rest."""
    out: list[str] = []
    used = 0
    for i, line in enumerate(lines):
        tail = f"…and {len(lines) - i} {more_label}"
        extra = len(line) + (1 if out else 0)
        reserve = len(tail) + 1 if i < len(lines) - 1 else 0
        if used + extra + reserve > limit:
            out.append(tail)
            break
        out.append(line)
        used += extra
    return "\n".join(out)


def money(amount: float | None) -> str:
    if amount is None or not math.isfinite(amount) or amount < 0:  # bad data: show nothing at risk
        amount = 0.0
    return f"${amount:,.0f}"


def percent(rate: float | None) -> str:
    return "–" if rate is None or not math.isfinite(rate) else f"{rate * 100:.0f}%"


def days_text(days: float | None) -> str:
    if days is None or not math.isfinite(days) or days < 1:  # NaN, inf: bad data, not a crash
        return "less than a day"
    whole = int(days)
    return "1 day" if whole == 1 else f"{whole:,} days"


def person(who: str | None, *, nobody: str = "no owner") -> str:
    """A Slack user id as a mention, anything else (an email) as escaped text."""
    if not who:
        return f"_{nobody}_"
    if _is_user_id(who):
        return f"<@{who}>"
    return md(who, SHORT_MAX)


def _is_user_id(who: str) -> bool:
    return 3 <= len(who) <= 32 and who[0] in "UW" and who.isalnum() and who.isupper()


def when(moment: datetime | None) -> str:
    """A time every reader sees in their own time zone (Slack date token, UTC fallback)."""
    if moment is None:
        return "never"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    utc = moment.astimezone(timezone.utc)
    return f"<!date^{int(utc.timestamp())}^{{date_short_pretty}} {{time}}|{utc:%Y-%m-%d %H:%M} UTC>"


def _label(value: str | None) -> str:
    return md((value or "").replace("_", " ").capitalize(), SHORT_MAX) if value else "–"


# --- block building blocks ------------------------------------------------------------------

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


def _context(*texts: str, block_id: str | None = None) -> ContextBlock:
    elements = [MarkdownTextObject(text=clip(t, CONTEXT_TEXT_MAX)) for t in texts if t][:10]
    return ContextBlock(elements=elements or [MarkdownTextObject(text=" ")], block_id=block_id)


def header_block(text: str) -> HeaderBlock:
    return HeaderBlock(text=PlainTextObject(text=plain(text, HEADER_TEXT_MAX), emoji=True))


def _button(text: str, action: Action, ref: StallRef, *, style: str | None = None,
            url: str | None = None, confirm: ConfirmObject | None = None) -> ButtonElement:
    return ButtonElement(text=PlainTextObject(text=text, emoji=True), action_id=action.value,
                         value=ref.encode(), style=style, url=url, confirm=confirm)


def _option(text: str, ref: StallRef) -> Option:
    return Option(text=PlainTextObject(text=text, emoji=True), value=ref.encode())


def _snooze_select(stall_id: int) -> StaticSelectElement:
    return StaticSelectElement(
        placeholder=PlainTextObject(text="Snooze…"),
        action_id=Action.SNOOZE.value,
        options=[_option(_snooze_label(d), StallRef(stall_id=stall_id, days=d)) for d in SNOOZE_DAYS],
    )


def _snooze_label(days: int) -> str:
    return f"Snooze {days} day" if days == 1 else f"Snooze {days} days"


def _resolve_confirm() -> ConfirmObject:
    return ConfirmObject(title="Resolve this stall?",
                         text="It leaves every queue. A new stall opens if the account stalls again.",
                         confirm="Resolve", deny="Cancel")


def _safe_url(url: str | None, limit: int) -> bool:
    return bool(url) and len(url) <= limit and url.startswith(("https://", "http://"))


def _journey_button(stall_id: int, journey_url: str | None) -> ButtonElement:
    # A link when the journey has a page; otherwise the app answers with the /journey view.
    # Anything Slack would reject (too long, not http) is dropped rather than sent.
    url = journey_url if _safe_url(journey_url, URL_MAX) else None
    return _button("View journey", Action.VIEW_JOURNEY, StallRef(stall_id=stall_id), url=url)


def _stall_actions(stall_id: int, *, journey_url: str | None = None, with_journey: bool = True,
                   block_id: str | None = None) -> ActionsBlock:
    """The buttons of a live stall: Draft, Assign to me, Snooze, Resolve (and View journey)."""
    ref = StallRef(stall_id=stall_id)
    elements = [
        _button("Draft recovery email", Action.DRAFT, ref, style="primary"),
        _button("Assign to me", Action.ASSIGN, ref),
        _snooze_select(stall_id),
        _button("Resolve", Action.RESOLVE, ref, style="danger", confirm=_resolve_confirm()),
    ]
    if with_journey:
        elements.append(_journey_button(stall_id, journey_url))
    return ActionsBlock(elements=elements, block_id=block_id)


def _row_menu(stall_id: int, *, digest: bool) -> OverflowMenuElement:
    """The inline actions of a list row (at most 5 options in an overflow menu)."""
    if digest:
        assign, snooze, action = Action.DIGEST_ASSIGN, Action.DIGEST_SNOOZE, Action.DIGEST_MENU
    else:
        assign, snooze, action = Action.ASSIGN, Action.SNOOZE, Action.ROW_MENU
    options = [_option("Assign to me", StallRef(stall_id=stall_id, op=assign))]
    options += [_option(_snooze_label(d), StallRef(stall_id=stall_id, op=snooze, days=d)) for d in SNOOZE_DAYS]
    if not digest:
        options.append(_option("Resolve", StallRef(stall_id=stall_id, op=Action.RESOLVE)))
    return OverflowMenuElement(action_id=action.value, options=options)


# --- measuring and checking messages --------------------------------------------------------

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


class _Packer:
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


# --- the real-time ping ---------------------------------------------------------------------

@dataclass(frozen=True)
class PingView:
    """Everything a ping (and an escalation) shows about one stall."""

    stall_id: int
    account_name: str
    arr: float
    priority: str
    stage: str
    step: str | None  # the step's display name; None for rules not about a step
    days_stalled: float
    why: str
    owner: str | None = None  # CSM Slack user id, or email when not mapped
    last_activity: datetime | None = None
    open_tickets: int = 0
    status: str = "open"
    assignee: str | None = None  # Slack user id
    snoozed_until: datetime | None = None
    snoozed_by: str | None = None
    resolved_by: str | None = None  # Slack user id, or None when the system resolved it
    resolved_at: datetime | None = None
    resolution: str | None = None  # e.g. "Integration Connected arrived late (stall opened on stale data)"
    draft_state: str | None = None  # mrkdwn, escaped by its maker: "Recovery email sent by <@U1> at ..."
    journey_url: str | None = None
    note: str | None = None  # e.g. "Priority raised from P1 to P0"


def ping_blocks(p: PingView) -> list[Block]:
    """The ping: what is stalled, why, for whom; buttons only while the stall is live."""
    blocks: list[Block] = [header_block(_ping_title(p)), _ping_summary(p)]
    status_lines = _status_lines(p)
    if status_lines:
        blocks.append(_context(*status_lines, block_id=f"stall-{p.stall_id}-status"))
    if p.status not in CLOSED:
        blocks.append(_stall_actions(p.stall_id, journey_url=p.journey_url, block_id=f"stall-{p.stall_id}-actions"))
    check_message(blocks)
    return blocks


def ping_text(p: PingView) -> str:
    """The notification fallback (`text` of chat.postMessage): one line, no blocks needed."""
    where = f" on {md(p.step, SHORT_MAX)}" if p.step else ""
    line = (f"{p.priority}: {md(p.account_name, NAME_MAX)} stalled {days_text(p.days_stalled)}{where} "
            f"({money(p.arr)} ARR)")
    if p.status in CLOSED:
        line = f"{STATUS_LABEL.get(p.status, p.status)}: {line}"
    return line


def priority_change_text(p: PingView, previous: str) -> str:
    """The one thread reply that goes with an in-place edit after a priority change."""
    direction = "raised" if _rank(p.priority) < _rank(previous) else "lowered"
    return f"Priority {direction} from {previous} to {p.priority}: {md(p.why, WHY_MAX)}"


def _rank(priority: str) -> int:
    return {"P0": 0, "P1": 1, "P2": 2, "P3": 3}.get(priority, 9)


def _ping_title(p: PingView) -> str:
    if p.status in CLOSED:
        return f"✅ {STATUS_LABEL.get(p.status, p.status)} · {p.account_name}"
    return f"{PRIORITY_EMOJI.get(p.priority, '⚪')} {p.priority} · {p.account_name} stalled"


def _ping_summary(p: PingView) -> SectionBlock:
    where = f"{md(p.stage, SHORT_MAX)} → {md(p.step, SHORT_MAX)}" if p.step else md(p.stage, SHORT_MAX)
    text = (f"*{md(p.account_name, NAME_MAX)}* · {money(p.arr)} ARR · {where}\n"
            f"*Stalled {days_text(p.days_stalled)}* · {md(p.why, WHY_MAX)}")
    fields = [
        f"*Owner*\n{person(p.owner)}",
        f"*Last activity*\n{when(p.last_activity)}",
        f"*Open tickets*\n{max(p.open_tickets, 0):,}",
        f"*Status*\n{STATUS_LABEL.get(p.status, md(p.status, SHORT_MAX))}",
    ]
    return section_block(text, fields=fields, block_id=f"stall-{p.stall_id}-summary")


def _status_lines(p: PingView) -> list[str]:
    """Who did what to the stall, newest facts first; a closed stall says how it closed."""
    lines: list[str] = []
    if p.status == "resolved":
        by = f" by {person(p.resolved_by)}" if p.resolved_by else ""
        at = f" at {when(p.resolved_at)}" if p.resolved_at else ""
        detail = f": {md(p.resolution, NOTE_MAX)}" if p.resolution else ""
        lines.append(f"✅ Resolved{by}{at}{detail}")
    elif p.status == "auto_resolved":
        lines.append(f"✅ Auto-resolved: {md(p.resolution, NOTE_MAX)}" if p.resolution else "✅ Auto-resolved")
    elif p.status == "suppressed":
        lines.append(f"🔕 Suppressed: {md(p.resolution or 'the account cancelled or churned', NOTE_MAX)}")
    elif p.status == "snoozed" or p.snoozed_until:
        by = f" by {person(p.snoozed_by)}" if p.snoozed_by else ""
        until = f" until {when(p.snoozed_until)}" if p.snoozed_until else ""
        lines.append(f"💤 Snoozed{until}{by}")
    if p.assignee:
        lines.append(f"👤 Assigned to {person(p.assignee)}")
    if p.draft_state:
        lines.append(f"✉️ {clip(p.draft_state, NOTE_MAX)}")  # mrkdwn built (and escaped) by queries.draft_state
    if p.note:
        lines.append(md(p.note, NOTE_MAX))
    return lines


# --- escalation -----------------------------------------------------------------------------

def escalation_blocks(p: PingView, *, minutes_unacked: int, ping_link: str | None = None) -> list[Block]:
    """The managers' copy of an unacknowledged P0: the ping's facts and who was pinged when."""
    pinged = f"{person(p.owner)} was pinged {minutes_unacked:,} minutes ago and nobody has acted yet."
    if _safe_url(ping_link, 500) and not any(c in ping_link for c in "|<> "):  # inside <url|label>
        pinged += f" <{ping_link}|Open the ping>"
    blocks: list[Block] = [
        header_block(f"🚨 Unacknowledged {p.priority} · {p.account_name}"),
        _ping_summary(p),
        _context(pinged, block_id=f"stall-{p.stall_id}-escalation"),
    ]
    if p.status not in CLOSED:
        blocks.append(_stall_actions(p.stall_id, journey_url=p.journey_url, block_id=f"stall-{p.stall_id}-actions"))
    check_message(blocks)
    return blocks


def escalation_summary_blocks(views: Sequence[PingView], *, delay_minutes: float, max_lines: int = 10) -> list[Block]:
    """One message for the unacknowledged P0s beyond the ones escalated one by one (a first
    scan or an outage can make dozens due in the same minute: one post, not dozens)."""
    lines = [f"• *{md(p.account_name, NAME_MAX)}* · {money(p.arr)} ARR · {md(p.why, ROW_WHY_MAX)} · "
             f"{person(p.owner)}" for p in views]
    shown: list[str] = []
    for line in lines:
        if len(shown) == max_lines or sum(len(x) + 1 for x in shown) + len(line) > SECTION_TEXT_MAX - 100:
            break
        shown.append(line)
    more = len(lines) - len(shown)
    blocks: list[Block] = [
        header_block(f"🚨 {len(views):,} more unacknowledged P0 stalls"),
        section_block("\n".join(shown) + (f"\n…and {more:,} more" if more else "")),
        _context(f"Each was pinged over {delay_minutes:,.0f} minutes ago and nobody has acted yet. "
                 "They are in the digest and `/stalls all p0`."),
    ]
    check_message(blocks)
    return blocks


def escalation_text(p: PingView, *, minutes_unacked: int) -> str:
    return f"Unacknowledged {p.priority} for {minutes_unacked:,} minutes: {ping_text(p)}"


# --- after recovery emails: the follow-up alert and the win-back handoff ------------------------

def followup_note(attempt: int, last_sent: datetime) -> str:
    """The line a follow-up ping carries: why the stall is back."""
    return (f"Still stalled after recovery email {attempt - 1} (sent {last_sent:%Y-%m-%d}): "
            f"recovery attempt {attempt}")


def winback_blocks(p: PingView, *, attempts: int, last_sent: datetime) -> list[Block]:
    """The managers' handoff: recovery emails did not help; a person should step in."""
    ref = StallRef(stall_id=p.stall_id)
    blocks: list[Block] = [
        header_block(f"🔁 Win-back handoff · {p.account_name}"),
        _ping_summary(p),
        _context(f"{attempts} recovery email{'s' if attempts != 1 else ''} went out (the last on "
                 f"{last_sent:%Y-%m-%d}) and the account is still stuck. Owner: {person(p.owner)}. "
                 "Stallwatch sends no more emails for this stall.", block_id=f"stall-{p.stall_id}-winback"),
    ]
    if p.status not in CLOSED:
        blocks.append(ActionsBlock(block_id=f"stall-{p.stall_id}-actions", elements=[
            _button("Assign to me", Action.ASSIGN, ref),
            _button("Resolve", Action.RESOLVE, ref, style="danger", confirm=_resolve_confirm()),
            _journey_button(p.stall_id, p.journey_url),
        ]))
    check_message(blocks)
    return blocks


def winback_text(p: PingView, *, attempts: int) -> str:
    return f"Win-back handoff after {attempts} recovery emails: {ping_text(p)}"


# --- list rows (/stalls, /journey, App Home, digest) --------------------------------------------

@dataclass(frozen=True)
class StallRow:
    """One stall in a ranked list."""

    stall_id: int
    account_name: str
    priority: str
    arr: float
    why: str
    days_stalled: float = 0.0
    owner: str | None = None
    status: str = "open"
    assignee: str | None = None
    snoozed_until: datetime | None = None
    note: str | None = None  # e.g. routing's "over @jane's hourly ping budget"


def _row_text(r: StallRow, *, show_owner: bool) -> str:
    head = f"{PRIORITY_EMOJI.get(r.priority, '⚪')} *{md(r.account_name, NAME_MAX)}* · {money(r.arr)} ARR"
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


def _row_block(r: StallRow, *, show_owner: bool, digest: bool = False) -> SectionBlock:
    menu = None if r.status in CLOSED else _row_menu(r.stall_id, digest=digest)
    return section_block(_row_text(r, show_owner=show_owner), accessory=menu)


def _fill_rows(packer: _Packer, rows: Sequence[StallRow], *, show_owner: bool, footer_chars: int = 200) -> int:
    """Add rows while they fit (keeping room for a footer); return how many did not."""
    for i, row in enumerate(rows):
        if not packer.add_if_fits([_row_block(row, show_owner=show_owner)], reserve_blocks=1,
                                  reserve_chars=footer_chars):
            return len(rows) - i
    return 0


# --- /stalls --------------------------------------------------------------------------------

def stalls_list_blocks(rows: Sequence[StallRow], filter_label: str, more: int = 0) -> list[Block]:
    """/stalls: the ranked list for a filter ("mine · P0"), one row per stall with inline
    actions; rows past what one message holds, plus `more` not loaded, become "and N more"."""
    title = f"*Open stalls* · {md(filter_label, SHORT_MAX)}"
    if not rows:
        blocks: list[Block] = [section_block(f"{title}\nNo open stalls match. 🎉")]
        check_message(blocks)
        return blocks
    packer = _Packer()
    packer.add([section_block(f"{title} · ranked by ARR at risk and severity")])
    left = _fill_rows(packer, rows[:LIST_MAX_ROWS], show_owner=True)
    left += max(len(rows) - LIST_MAX_ROWS, 0) + max(more, 0)
    if left:
        packer.add([_context(f"…and {left:,} more. Narrow the list, e.g. `/stalls mine p0`.")])
    blocks = packer.messages[0]
    check_message(blocks)
    return blocks


# --- App Home -------------------------------------------------------------------------------

def home_view(rows: Sequence[StallRow], viewer: str, *, more: int = 0) -> View:
    """The viewer's own queue (owned or assigned stalls), ranked, as a Home tab view."""
    packer = _Packer(max_blocks=MAX_VIEW_BLOCKS, text_budget=VIEW_TEXT_BUDGET)
    packer.add([
        header_block("Your stall queue"),
        _context(f"Stalls {person(viewer)} owns or is assigned, ranked by ARR at risk and severity. "
                 "Use `/stalls all` for the whole team."),
    ])
    if not rows:
        packer.add([section_block("Nothing in your queue. 🎉")])
    else:
        left = _fill_rows(packer, rows, show_owner=False) + max(more, 0)
        if left:
            packer.add([_context(f"…and {left:,} more: see `/stalls mine`.")])
    blocks = packer.messages[0]
    check_message(blocks, max_blocks=MAX_VIEW_BLOCKS, text_budget=VIEW_TEXT_BUDGET)
    return View(type="home", blocks=blocks)


# --- /journey -------------------------------------------------------------------------------

StepState = Literal["done", "waiting", "stalled", "todo"]
# ✓ reached, ⏳ the step the account waits on (flagged when past its threshold), ✗ not yet.
STEP_ICON = {"done": "✓", "waiting": "⏳", "stalled": "⏳", "todo": "✗"}


@dataclass(frozen=True)
class StepLine:
    name: str  # display name
    state: StepState
    at: datetime | None = None  # reached at ("done"), or waiting since ("waiting", "stalled")


@dataclass(frozen=True)
class EventLine:
    at: datetime
    name: str
    detail: str | None = None


@dataclass(frozen=True)
class TicketLine:
    id: str
    status: str
    created_at: datetime
    subject: str | None = None
    topic: str | None = None


@dataclass(frozen=True)
class JourneyViewData:
    account_id: str
    name: str
    stage: str
    arr: float
    owner: str | None = None
    track: str | None = None
    lifecycle: str | None = None
    plan: str | None = None
    domain: str | None = None
    renewal_date: date | None = None
    steps: Sequence[StepLine] = ()  # the onboarding steps, then activation, in order
    open_stalls: Sequence[StallRow] = ()  # ranked
    events: Sequence[EventLine] = ()  # newest first
    tickets: Sequence[TicketLine] = ()  # newest first
    journey_url: str | None = None


def journey_blocks(j: JourneyViewData) -> list[Block]:
    """/journey: where the account is, its checklist, its open stalls with their buttons, and
    what happened lately. Stalls are added while they fit; the recent history always shows."""
    head: list[Block] = [header_block(j.name or j.account_id), section_block(_journey_facts(j), fields=_journey_fields(j))]
    if j.steps:
        checklist = _join_lines([_step_line(s) for s in j.steps], JOURNEY_CHECKLIST_MAX, "steps")
        head.append(section_block("*Journey*\n" + checklist))
    head.append(DividerBlock())
    history: list[Block] = []
    if j.events:
        lines = [_event_line(e) for e in j.events[:JOURNEY_MAX_EVENTS]]
        history.append(section_block("*Recent events*\n" + _join_lines(lines, JOURNEY_HISTORY_MAX, "events")))
    if j.tickets:
        lines = [_ticket_line(t) for t in j.tickets[:JOURNEY_MAX_TICKETS]]
        history.append(section_block("*Recent tickets*\n" + _join_lines(lines, JOURNEY_HISTORY_MAX, "tickets")))

    packer = _Packer()
    packer.add(head)
    if not j.open_stalls:
        packer.add([section_block("*Open stalls*\nNone. 🎉")])
    else:
        packer.add([section_block(f"*Open stalls* ({len(j.open_stalls):,})")])
        reserve = block_text_length(history) + 200  # room for the history and an "and N more"
        shown = 0
        for row in j.open_stalls[:JOURNEY_MAX_STALLS]:
            unit: list[Block] = [section_block(_row_text(row, show_owner=False))]
            if row.status not in CLOSED:
                unit.append(_stall_actions(row.stall_id, with_journey=False))
            if not packer.add_if_fits(unit, reserve_blocks=len(history) + 1, reserve_chars=reserve):
                break
            shown += 1
        if len(j.open_stalls) > shown:
            packer.add([_context(f"…and {len(j.open_stalls) - shown:,} more: see `/stalls all`.")])
    packer.add(history)
    blocks = packer.messages[0]
    check_message(blocks)
    return blocks


def _journey_facts(j: JourneyViewData) -> str:
    domain = f" · {md(j.domain, SHORT_MAX)}" if j.domain else ""
    return f"*{md(j.name or j.account_id, NAME_MAX)}*{domain} · `{md(j.account_id, SHORT_MAX)}`"


def _journey_fields(j: JourneyViewData) -> list[str]:
    fields = [f"*Stage*\n{md(j.stage, SHORT_MAX)}", f"*ARR*\n{money(j.arr)}", f"*Owner*\n{person(j.owner)}"]
    if j.track:
        fields.append(f"*Track*\n{_label(j.track)}")
    if j.lifecycle:
        fields.append(f"*Status*\n{_label(j.lifecycle)}")
    if j.plan:
        fields.append(f"*Plan*\n{md(j.plan, SHORT_MAX)}")
    if j.renewal_date:
        fields.append(f"*Renewal*\n{j.renewal_date.isoformat()}")
    return fields


def _step_line(s: StepLine) -> str:
    line = f"{STEP_ICON.get(s.state, '✗')} {md(s.name, SHORT_MAX)}"
    if s.state == "done":
        return f"{line} · {when(s.at)}" if s.at else line
    if s.state in ("waiting", "stalled"):
        since = f" · waiting since {when(s.at)}" if s.at else ""
        flag = " · *stalled*" if s.state == "stalled" else ""
        return f"{line}{since}{flag}"
    return line


def _event_line(e: EventLine) -> str:
    detail = f" · {md(e.detail, SHORT_MAX)}" if e.detail else ""
    return f"• {when(e.at)} {md(e.name, SHORT_MAX)}{detail}"


def _ticket_line(t: TicketLine) -> str:
    topic = f" [{md(t.topic, 40)}]" if t.topic else ""
    subject = md(t.subject, SHORT_MAX) if t.subject else "(no subject)"
    return f"• {when(t.created_at)} {subject}{topic} · {md(t.status, 20)}"


# --- /funnel --------------------------------------------------------------------------------

@dataclass(frozen=True)
class FunnelStage:
    name: str
    entered: int
    converted: int  # of those, how many reached the next stage
    median_days: float | None = None  # median time spent in the stage

    @property
    def conversion(self) -> float | None:
        return self.converted / self.entered if self.entered > 0 else None


@dataclass(frozen=True)
class TrackRate:
    track: str
    accounts: int
    activation_rate: float | None  # 0..1
    stall_rate: float | None  # 0..1


@dataclass(frozen=True)
class FunnelData:
    days: int
    stages: Sequence[FunnelStage]
    tracks: Sequence[TrackRate] = ()
    weakest: str | None = None  # None: the stage with the lowest conversion


def weakest_stage(f: FunnelData) -> FunnelStage | None:
    if f.weakest is not None:
        return next((s for s in f.stages if s.name == f.weakest), None)
    measured = [s for s in f.stages if s.conversion is not None]
    return min(measured, key=lambda s: s.conversion) if measured else None


def funnel_blocks(f: FunnelData) -> list[Block]:
    """/funnel: conversion and median time per stage, the weakest stage, rates per track."""
    blocks: list[Block] = [header_block(f"Funnel · last {f.days:,} days")]
    weakest = weakest_stage(f)
    if not any(s.entered for s in f.stages):
        blocks.append(section_block(f"No accounts moved through the journey in the last {f.days:,} days."))
    else:
        lines = [_stage_line(s, s is weakest) for s in f.stages]
        blocks.append(section_block("*Stage conversion*\n" + _join_lines(lines, SECTION_TEXT_MAX - 30, "stages")))
        if weakest is not None:
            blocks.append(section_block(f"*Weakest stage:* {md(weakest.name, SHORT_MAX)}: only "
                                   f"{percent(weakest.conversion)} move on"))
    if f.tracks:
        blocks.append(section_block("*By track*", fields=[_track_field(t) for t in f.tracks]))
    check_message(blocks)
    return blocks


def _stage_line(s: FunnelStage, weakest: bool) -> str:
    median = f" · median {days_text(s.median_days)}" if s.median_days is not None else ""
    flag = " ⚠️ *weakest*" if weakest else ""
    return f"{md(s.name, SHORT_MAX)}: {s.entered:,} → {s.converted:,} ({percent(s.conversion)}){median}{flag}"


def _track_field(t: TrackRate) -> str:
    return (f"*{_label(t.track)}* ({t.accounts:,} accounts)\n"
            f"activation {percent(t.activation_rate)} · stall rate {percent(t.stall_rate)}")


# --- the daily digest -----------------------------------------------------------------------

@dataclass(frozen=True)
class TrackingIssueLine:
    kind: str  # missing_property | volume_drop
    event_name: str
    property: str = ""
    count: int = 1
    detail: str = ""


@dataclass(frozen=True)
class DigestData:
    day: date
    new_stalls: int
    arr_at_risk: float
    resolved_since_yesterday: int
    activation_by_track: Mapping[str, float | None]  # last 14 days, 0..1
    rows: Sequence[StallRow]  # open, not snoozed, ranked best first (may be only the top slice)
    total_open: int | None = None  # all open stalls (None: len(rows))
    snoozed: int = 0
    tracking_issues: Sequence[TrackingIssueLine] = ()
    funnel: FunnelData | None = None
    max_items: int = 40  # rules.digest.max_items
    text_budget: int = TEXT_BUDGET


def digest_text(d: DigestData) -> str:
    """The notification fallback of the digest's first message."""
    return (f"Stall digest for {d.day.isoformat()}: {d.new_stalls:,} new stalls, "
            f"{money(d.arr_at_risk)} ARR at risk, {d.resolved_since_yesterday:,} resolved since yesterday")


def digest_messages(d: DigestData) -> list[list[Block]]:
    """The digest as one or more messages, each within 50 blocks and the text budget: the
    headline, the funnel and tracking issues, then up to `max_items` ranked stalls grouped
    by owner (with inline Assign/Snooze), and a last line with "and N more" and the snoozed
    count."""
    packer = _Packer(text_budget=d.text_budget)
    for unit in _digest_overview(d):
        packer.add(unit)
    shown = list(d.rows[: max(d.max_items, 0)])
    if shown:
        packer.add([DividerBlock(), section_block("*Open stalls by owner*, most at risk first")])
        for owner, rows in _group_by_owner(shown):
            _add_group(packer, owner, rows)
    packer.add([_context(_digest_footer(d, len(shown)))])
    for message in packer.messages:
        check_message(message, text_budget=d.text_budget)
    return packer.messages


def _digest_overview(d: DigestData) -> list[list[Block]]:
    total = d.total_open if d.total_open is not None else len(d.rows)
    head: list[Block] = [
        header_block(f"Daily stall digest · {d.day:%a %d %b %Y}"),
        section_block(None, fields=[
            f"*New stalls*\n{d.new_stalls:,}",
            f"*ARR at risk*\n{money(d.arr_at_risk)}",
            f"*Resolved since yesterday*\n{d.resolved_since_yesterday:,}",
            f"*Open stalls*\n{total:,} ({d.snoozed:,} snoozed)",
        ]),
    ]
    if d.activation_by_track:
        rates = " · ".join(f"{_label(track)} {percent(rate)}" for track, rate in d.activation_by_track.items())
        head.append(_context(f"Activation rate, last 14 days: {rates}"))
    units = [head]
    if d.funnel is not None and any(s.entered for s in d.funnel.stages):
        units.append([section_block(_funnel_summary(d.funnel))])
    if d.tracking_issues:
        units.append([section_block(tracking_summary(d.tracking_issues))])
    return units


def _funnel_summary(f: FunnelData) -> str:
    chain = " → ".join(f"{md(s.name, 40)} {percent(s.conversion)}" for s in f.stages[:12])
    weakest = weakest_stage(f)
    tail = ""
    if weakest is not None:
        tail = f"\nWeakest stage: *{md(weakest.name, SHORT_MAX)}* ({percent(weakest.conversion)} move on)"
    return f"*Funnel, last {f.days:,} days:* {chain}{tail}"


def tracking_summary(issues: Sequence[TrackingIssueLine]) -> str:
    lines = [_issue_line(i) for i in issues[:DIGEST_MAX_ISSUES]]
    if len(issues) > DIGEST_MAX_ISSUES:
        lines.append(f"…and {len(issues) - DIGEST_MAX_ISSUES:,} more")
    return f"*Tracking issues* ({len(issues):,})\n" + _join_lines(lines, SECTION_TEXT_MAX - 40, "issues")


def _issue_line(i: TrackingIssueLine) -> str:
    event = md(i.event_name, SHORT_MAX)
    if i.kind == "missing_property":
        what = f"`{event}` arrives without `{md(i.property, SHORT_MAX)}`"
    elif i.kind == "volume_drop":
        what = f"`{event}` volume dropped"
    else:
        what = f"`{event}`: {md(i.kind.replace('_', ' '), SHORT_MAX)}"
    detail = f" · {md(i.detail, 200)}" if i.detail else ""
    return f"• {what} ({i.count:,} events){detail}"


def _group_by_owner(rows: Sequence[StallRow]) -> list[tuple[str | None, list[StallRow]]]:
    """Owners in the order of their most important stall; each owner's stalls stay ranked."""
    groups: dict[str | None, list[StallRow]] = {}
    for row in rows:
        groups.setdefault(row.owner, []).append(row)
    return list(groups.items())


def _owner_heading(owner: str | None, rows: Sequence[StallRow], *, continued: bool = False) -> SectionBlock:
    if continued:
        return section_block(f"*{person(owner)}* (continued)")
    at_risk = sum(r.arr for r in rows if math.isfinite(r.arr) and r.arr > 0)
    count = "1 stall" if len(rows) == 1 else f"{len(rows):,} stalls"
    return section_block(f"*{person(owner)}* · {count} · {money(at_risk)} ARR")


def _add_group(packer: _Packer, owner: str | None, rows: Sequence[StallRow]) -> None:
    """An owner's heading and rows; a heading never ends a message alone, and a group that
    spills into the next message is re-introduced there."""
    heading = _owner_heading(owner, rows)
    for i, row in enumerate(rows):
        block = _row_block(row, show_owner=False, digest=True)
        unit = [heading, block] if i == 0 else [block]
        if not packer.add_if_fits(unit):
            packer.new_message()
            packer.add([_owner_heading(owner, rows, continued=True), block] if i > 0 else unit)


def _digest_footer(d: DigestData, shown: int) -> str:
    total = d.total_open if d.total_open is not None else len(d.rows)
    left = max(total - shown, 0)
    snoozed = f"{d.snoozed:,} snoozed not listed" if d.snoozed else "none snoozed"
    if left:
        return f"…and {left:,} more — see `/stalls all` · {snoozed}"
    if not shown:
        return f"No open stalls. 🎉 · {snoozed}"
    return f"That is every open stall · {snoozed}"
