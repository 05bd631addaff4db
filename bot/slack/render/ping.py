"""The real-time ping of an account: its reasons (its live stalls), why it matters, for whom;
buttons only while it is live. Rendered from a `PingView` (bot/stalls/views.py), so every edit
shows the whole current state."""

from __future__ import annotations

from collections.abc import Sequence

from slack_sdk.models.blocks import Block, SectionBlock

from bot.slack.render.format import CLOSED, PRIORITY_EMOJI, STATUS_LABEL, days_text, join_lines, money, person, when
from bot.slack.render.limits import NAME_MAX, NOTE_MAX, SHORT_MAX, WHY_MAX
from bot.slack.render.packing import check_message
from bot.slack.render.primitives import context_block, header_block, section_block, stall_actions
from bot.slack.text import clip, md
from bot.stalls.views import PRIORITY_RANK, DraftLine, PingView, not_sent_phrase
from rules.wording import headline


def ping_blocks(p: PingView) -> list[Block]:
    """The ping: what is stalled, why, for whom; buttons only while the stall is live."""
    blocks: list[Block] = [header_block(_ping_title(p)), ping_summary(p)]
    status_lines = _status_lines(p)
    if status_lines:
        blocks.append(context_block(*status_lines, block_id=f"stall-{p.stall_id}-status"))
    if p.status not in CLOSED:
        blocks.append(stall_actions(p.stall_id, journey_url=p.journey_url, block_id=f"stall-{p.stall_id}-actions"))
    check_message(blocks)
    return blocks


def ping_text(p: PingView) -> str:
    """The notification fallback (`text` of chat.postMessage): one line, no blocks needed."""
    if p.reasons:
        more = len(p.reasons) - 1
        extra = f" (+{more} more reason{'s' if more > 1 else ''})" if more else ""
        line = (f"{p.priority}: {md(p.account_name, NAME_MAX)}: {md(p.reasons[0].text, SHORT_MAX)}{extra} "
                f"({money(p.arr)} ARR)")
        return f"{STATUS_LABEL['snoozed']}: {line}" if p.status == "snoozed" else line
    where = f" on {md(p.step, SHORT_MAX)}" if p.step else ""
    line = (f"{p.priority}: {md(p.account_name, NAME_MAX)} stalled {days_text(p.days_stalled)}{where} "
            f"({money(p.arr)} ARR)")
    if p.status in CLOSED:
        line = f"{STATUS_LABEL.get(p.status, p.status)}: {line}"
    return line


def priority_change_text(p: PingView, previous: str) -> str:
    """The one thread reply that goes with an in-place edit after a priority change."""
    direction = "raised" if PRIORITY_RANK.get(p.priority, 9) < PRIORITY_RANK.get(previous, 9) else "lowered"
    return f"Priority {direction} from {previous} to {p.priority}: {md(p.why, WHY_MAX)}"


def news_text(p: PingView, *, new_reasons: Sequence[int] = (), previous: str | None = None) -> str:
    """The one thread reply that goes with an in-place edit of an account's ping: its new
    reasons and, when it changed, its priority."""
    parts = []
    if previous is not None and previous != p.priority:
        direction = "raised" if PRIORITY_RANK.get(p.priority, 9) < PRIORITY_RANK.get(previous, 9) else "lowered"
        parts.append(f"Priority {direction} from {previous} to {p.priority}")
    added = [r for r in p.reasons if r.stall_id in set(new_reasons)]
    if added:
        parts.append("New: " + "; ".join(f"{r.priority} {md(r.text, SHORT_MAX)}" for r in added))
    if not parts:
        parts.append(f"Updated: {md(p.why, WHY_MAX)}")
    return clip(". ".join(parts), WHY_MAX)


def draft_text(d: DraftLine) -> str:
    """One mrkdwn line for the ping: the recovery email's state. Mentions are real; the
    recipient and reasons are escaped here."""
    who = person(d.actor) if d.actor else "a CSM"
    kind = "template" if d.source == "template" else "AI"
    attempt = f" (attempt {d.attempt})" if d.attempt > 1 else ""
    to = md(d.recipient, SHORT_MAX)
    if d.status == "drafting":
        return f"Recovery email being drafted by {who}{attempt}"
    if d.status == "drafted":
        return f"Recovery email drafted by {who} ({kind}), awaiting approval{attempt}"
    if d.status == "approved":
        return f"Recovery email approved by {who}, sending to {to}{attempt}"
    if d.status == "sent" and d.sent_at:
        return f"Recovery email sent by {who} at {d.sent_at:%Y-%m-%d %H:%M} UTC to {to}{attempt}"
    if d.status == "blocked":
        return f"Recovery email{attempt} {md(not_sent_phrase(d.blocked_reason), 200)}"
    return f"Recovery email {d.status}{attempt}"


def _ping_title(p: PingView) -> str:
    if p.status in CLOSED:
        return f"✅ {STATUS_LABEL.get(p.status, p.status)} · {p.account_name}"
    if p.reasons:
        n = len(p.reasons)
        what = f"{n} reasons" if n > 1 else headline(p.reasons[0].rule, step_name=p.step)
        return f"{PRIORITY_EMOJI.get(p.priority, '⚪')} {p.priority} · {p.account_name} · {what}"
    return f"{PRIORITY_EMOJI.get(p.priority, '⚪')} {p.priority} · {p.account_name} stalled"


def ping_summary(p: PingView) -> SectionBlock:
    """The account's facts and its reasons: the ping's first section, repeated in escalations
    and handoffs."""
    where = f"{md(p.stage, SHORT_MAX)} → {md(p.step, SHORT_MAX)}" if p.step else md(p.stage, SHORT_MAX)
    if p.reasons:
        reasons = "\n".join(f"• {PRIORITY_EMOJI.get(r.priority, '⚪')} {md(r.text, SHORT_MAX)}"
                            + (" (snoozed)" if r.status == "snoozed" else "") for r in p.reasons)
        text = (f"*{md(p.account_name, NAME_MAX)}* · {money(p.arr)} ARR · {md(p.stage, SHORT_MAX)}\n"
                f"{join_lines(reasons.split(chr(10)), WHY_MAX, 'more reasons')}\n{md(p.why, WHY_MAX)}")
    else:
        # Closed: what it was about as it stood when it closed (its stored reason and priority).
        text = f"*{md(p.account_name, NAME_MAX)}* · {money(p.arr)} ARR · {where}\n{md(p.why, WHY_MAX)}"
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
    if p.draft:
        lines.append(f"✉️ {clip(draft_text(p.draft), NOTE_MAX)}")
    if p.note:
        lines.append(md(p.note, NOTE_MAX))
    return lines
