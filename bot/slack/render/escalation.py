"""The managers' messages about a stall: the escalation of an unacknowledged P0 (one by one, or
many in one summary), the follow-up note of a re-alert, and the win-back handoff; and
`posted_message`, which re-renders any posted message of a stall as what it was posted as."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from slack_sdk.models.blocks import ActionsBlock, Block

from bot.slack.render.codec import Action, StallRef
from bot.slack.render.format import CLOSED, money, person
from bot.slack.render.limits import NAME_MAX, ROW_WHY_MAX, SECTION_TEXT_MAX
from bot.slack.render.packing import check_message
from bot.slack.queries import ESCALATION, FOLLOWUP, WINBACK, Posted
from bot.slack.render.ping import ping_blocks, ping_summary, ping_text
from bot.slack.render.primitives import (button, context_block, header_block, journey_button,
                                         safe_url, section_block, stall_actions)
from bot.slack.text import md
from bot.stalls.views import PingView


def escalation_blocks(p: PingView, *, minutes_unacked: int, ping_link: str | None = None) -> list[Block]:
    """The managers' copy of an unacknowledged P0: the ping's facts and who was pinged when."""
    pinged = f"{person(p.owner)} was pinged {minutes_unacked:,} minutes ago and nobody has acted yet."
    if safe_url(ping_link, 500) and not any(c in ping_link for c in "|<> "):  # inside <url|label>
        pinged += f" <{ping_link}|Open the ping>"
    blocks: list[Block] = [
        header_block(f"🚨 Unacknowledged {p.priority} · {p.account_name}"),
        ping_summary(p),
        context_block(pinged, block_id=f"stall-{p.stall_id}-escalation"),
    ]
    if p.status not in CLOSED:
        blocks.append(stall_actions(p.stall_id, journey_url=p.journey_url, block_id=f"stall-{p.stall_id}-actions"))
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
        context_block(f"Each was pinged over {delay_minutes:,.0f} minutes ago and nobody has acted yet. "
                      "They are in the digest and `/stalls all p0`."),
    ]
    check_message(blocks)
    return blocks


def escalation_text(p: PingView, *, minutes_unacked: int) -> str:
    return f"Unacknowledged {p.priority} for {minutes_unacked:,} minutes: {ping_text(p)}"


def followup_note(attempt: int, last_sent: datetime) -> str:
    """The line a follow-up ping carries: why the stall is back."""
    return (f"Still stalled after recovery email {attempt - 1} (sent {last_sent:%Y-%m-%d}): "
            f"recovery attempt {attempt}")


def winback_blocks(p: PingView, *, attempts: int, last_sent: datetime) -> list[Block]:
    """The managers' handoff: recovery emails did not help; a person should step in."""
    ref = StallRef(stall_id=p.stall_id)
    blocks: list[Block] = [
        header_block(f"🔁 Win-back handoff · {p.account_name}"),
        ping_summary(p),
        context_block(f"{attempts} recovery email{'s' if attempts != 1 else ''} went out (the last on "
                      f"{last_sent:%Y-%m-%d}) and the account is still stuck. Owner: {person(p.owner)}. "
                      "Stallwatch sends no more emails for this stall.", block_id=f"stall-{p.stall_id}-winback"),
    ]
    if p.status not in CLOSED:
        blocks.append(ActionsBlock(block_id=f"stall-{p.stall_id}-actions", elements=[
            button("Assign to me", Action.ASSIGN, ref),
            button("Resolve", Action.RESOLVE, ref, style="danger"),  # asks why in a modal
            journey_button(p.stall_id, p.journey_url),
        ]))
    check_message(blocks)
    return blocks


def winback_text(p: PingView, *, attempts: int) -> str:
    return f"Win-back handoff after {attempts} recovery emails: {ping_text(p)}"


def posted_message(p: PingView, posted: Posted) -> dict:
    """{"text", "blocks"} for chat.update: the stall's current view rendered as the message was
    posted (a refresh must not turn a follow-up, a handoff or an escalation into a plain ping).
    `p.note` (a refresh's "Priority raised…") shows on pings and follow-ups, as when posted."""
    if posted.kind == WINBACK and posted.last_sent is not None:
        text = winback_text(p, attempts=posted.attempt)
        blocks = winback_blocks(p, attempts=posted.attempt, last_sent=posted.last_sent)
    elif posted.kind == ESCALATION:
        text = escalation_text(p, minutes_unacked=posted.minutes_unacked)
        blocks = escalation_blocks(p, minutes_unacked=posted.minutes_unacked)
    elif posted.kind.startswith(FOLLOWUP) and posted.last_sent is not None:
        note = followup_note(posted.attempt, posted.last_sent)
        text = f"{note}: {ping_text(p)}"
        blocks = ping_blocks(replace(p, note=f"{note} · {p.note}" if p.note else note))
    else:
        text, blocks = ping_text(p), ping_blocks(p)
    return {"text": text, "blocks": [b.to_dict() for b in blocks]}
