"""The daily digest, for the rest and for what changed: the headline with the change since
yesterday and last week, the funnel and tracking issues, the accounts pinged today as one line
each, then every other stalled account grouped by owner (inline menus), triage, handoffs and
time to acknowledge, in at most three messages."""

from __future__ import annotations

import math
from collections.abc import Sequence

from slack_sdk.models.blocks import Block, DividerBlock, SectionBlock

from bot.slack.render.format import PRIORITY_EMOJI, join_lines, label, money, percent, person
from bot.slack.render.funnel import activation_line, funnel_summary
from bot.slack.render.notes import row_note_line
from bot.slack.render.limits import NAME_MAX, ROW_WHY_MAX, SECTION_TEXT_MAX, SHORT_MAX, TEXT_BUDGET
from bot.slack.render.packing import Packer, block_text_length, check_message
from bot.slack.render.primitives import context_block, header_block, section_block
from bot.slack.render.rows import row_block
from bot.slack.text import md
from bot.stalls.views import DigestData, OwnerTotal, PingedLine, StallRow, TrackingIssueLine, Trend

DIGEST_MAX_ISSUES = 10


def digest_text(d: DigestData) -> str:
    """The notification fallback of the digest's first message."""
    return (f"Stall digest for {d.day.isoformat()}: {d.new_stalls:,} new stalls, "
            f"{money(d.arr_at_risk)} ARR at risk, {d.resolved_since_yesterday:,} resolved since yesterday")


MAX_MESSAGES = 3  # a digest a manager reads: at most three Slack messages
FOOTER_CHARS = 400  # room kept for the footer in the last message
ROWS_PER_MESSAGE = 45  # rows of one block each, beside headings, under Slack's 50 blocks


def digest_messages(d: DigestData, *, text_budget: int = TEXT_BUDGET) -> list[list[Block]]:
    """The digest, in at most MAX_MESSAGES messages within Slack's limits: what changed, the
    funnel and tracking issues, the accounts pinged in the last 24 h (one line each), then the
    rest of the stalled accounts grouped by owner (one row each, inline menu), at most
    `per_owner` per owner, the others counted by priority; triage (no owner), backlog and
    handoffs, time to acknowledge, and a footer that accounts for every stalled account.
    When it would take more messages, fewer rows per owner are listed."""
    # Start from what three messages can hold (about 40 rows each) shared among the owners,
    # so that the usual digest renders once or twice.
    groups = _group_by_owner(d.rows[: max(d.max_items, 0)])
    capacity = ROWS_PER_MESSAGE * MAX_MESSAGES
    limit = max(d.per_owner, 1)
    if sum(min(len(rows), limit) for _, rows in groups) > capacity:
        limit = max(1, min(limit, capacity // (len(groups) or 1)))
    while True:
        messages, complete = _render(d, limit, text_budget)
        if complete or limit == 1:
            return messages
        limit = max(1, limit * 2 // 3)


def _render(d: DigestData, per_owner: int, text_budget: int) -> tuple[list[list[Block]], bool]:
    """The messages with at most `per_owner` rows per owner; complete: every owner's group fit."""
    packer = Packer(text_budget=text_budget)
    for unit in _digest_overview(d):
        packer.add(unit)
    if d.pinged:
        packer.add([DividerBlock(), section_block(_pinged_text(d.pinged))])
    shown = list(d.rows[: max(d.max_items, 0)])
    groups = _group_by_owner(shown)
    owned = [(o, r) for o, r in groups if o is not None]
    unowned = [(o, r) for o, r in groups if o is None]
    complete = True
    listed = 0
    if owned:
        packer.add([DividerBlock(), section_block("*The rest, by owner* · stalled accounts not pinged today, most at "
                                                  "risk first")])
    for owner, rows in owned + unowned:
        unit_rows = rows[:per_owner]
        if not _add_group(packer, owner, unit_rows, d.owner_totals.get(owner), text_budget):
            complete = False
            break
        listed += len(unit_rows)
    for unit in _closing_units(d):
        if not _fits_within(packer, unit):
            complete = False
            break
        packer.add(unit)
    packer.add([context_block(_digest_footer(d, listed))])
    for message in packer.messages:
        check_message(message, text_budget=text_budget)
    return packer.messages, complete and len(packer.messages) <= MAX_MESSAGES


def _fits_within(packer: Packer, unit: Sequence[Block]) -> bool:
    """Whether `unit` fits in the current message, or in a new one that is still within MAX_MESSAGES."""
    if packer.add_if_fits([], reserve_blocks=len(unit) + 1, reserve_chars=block_text_length(unit) + FOOTER_CHARS):
        return True
    return len(packer.messages) < MAX_MESSAGES


def _digest_overview(d: DigestData) -> list[list[Block]]:
    total = d.total_open if d.total_open is not None else len(d.rows)
    head: list[Block] = [
        header_block(f"Daily stall digest · {d.day:%a %d %b %Y}"),
        section_block(None, fields=[
            f"*Stalled accounts*\n{total:,} ({d.snoozed:,} snoozed){_delta(d.stalled)}",
            f"*ARR at risk*\n{money(d.arr_at_risk)}{_delta(d.arr_trend, as_money=True)}",
            f"*New stalls*\n{d.new_stalls:,}{_delta(d.new_trend)}",
            f"*Resolved since yesterday*\n{d.resolved_since_yesterday:,}{_delta(d.resolved_trend)}",
        ]),
    ]
    context = []
    if d.escalated_trend is not None and (d.escalated_trend.now or d.escalated_trend.day_ago):
        context.append(f"Escalated today: {d.escalated_trend.now:,.0f}{_delta(d.escalated_trend, inline=True)}")
    if d.funnel is not None and d.funnel.tracks:  # the mature cohort, with sample sizes
        context.append(activation_line(d.funnel))
    elif d.activation_by_track:
        rates = " · ".join(f"{label(track)} {percent(rate)}" for track, rate in d.activation_by_track.items())
        context.append(f"Activation rate, last 14 days: {rates}")
    if context:
        head.append(context_block(*context))
    units = [head]
    if d.funnel is not None and any(s.entered for s in d.funnel.stages):
        units.append([section_block(funnel_summary(d.funnel))])
    if d.tracking_issues:
        units.append([section_block(tracking_summary(d.tracking_issues))])
    return units


def _delta(t: Trend | None, *, as_money: bool = False, inline: bool = False) -> str:
    """"+3 since yesterday, -5 since last week" on a line of its own (`inline`: in brackets):
    only the parts known (Stallwatch was running then) and non-zero."""
    if t is None:
        return ""
    parts = []
    for then, since in ((t.day_ago, "yesterday"), (t.week_ago, "last week")):
        if then is None or not math.isfinite(then) or not math.isfinite(t.now):
            continue
        change = t.now - then
        if change:
            sign = "+" if change > 0 else "-"
            amount = money(abs(change)) if as_money else f"{abs(change):,.0f}"
            parts.append(f"{sign}{amount} since {since}")
    if not parts:
        return ""
    return f" ({', '.join(parts)})" if inline else f"\n_{', '.join(parts)}_"


STATUS_WORDS = {"open": "⏳ not acknowledged yet", "acknowledged": "👀 acknowledged", "closed": "✅ closed"}


def _pinged_text(pinged: Sequence[PingedLine]) -> str:
    lines = []
    for p in pinged:
        status = STATUS_WORDS.get(p.status, md(p.status, SHORT_MAX))
        if p.status == "acknowledged" and p.by:
            status += f" by {person(p.by)}"
        line = (f"{PRIORITY_EMOJI.get(p.priority, '⚪')} *{md(p.account_name, NAME_MAX)}* · {money(p.arr)} ARR · "
                f"{person(p.owner)} · {status}")
        if p.latest_note is not None:
            line += "\n" + row_note_line(p.latest_note)
        lines.append(line)
    return (f"*Pinged in the last 24 h* ({len(pinged):,}, not repeated below)\n"
            + join_lines(lines, SECTION_TEXT_MAX - 80, "more accounts"))


def _closing_units(d: DigestData) -> list[list[Block]]:
    units: list[list[Block]] = []
    if d.handoffs:
        lines = [f"{PRIORITY_EMOJI.get(r.priority, '⚪')} *{md(r.account_name, NAME_MAX)}* · {money(r.arr)} ARR · "
                 f"{person(r.owner)} · {md(r.why, ROW_WHY_MAX)}" for r in d.handoffs]
        units.append([section_block("*Win-back handoffs* (last 7 days)\n"
                                    + join_lines(lines, SECTION_TEXT_MAX - 60, "more"))])
    notes = []
    if d.backlog_accounts:
        notes.append(f"Backlog: {d.backlog_accounts:,} stalled account(s) were already stalled when Stallwatch first "
                     "saw them (summarised once to their owners; listed above with the rest)")
    if d.ack_times:
        acks = " · ".join(f"{person(a.owner)} {_minutes(a.median_minutes)} ({a.acknowledged}/{a.pings})"
                          for a in d.ack_times[:8])
        notes.append(f"Time to acknowledge a ping, last 7 days (median, acknowledged/pinged): {acks}")
    if notes:
        units.append([context_block(*notes)])
    return units


def _minutes(value: float | None) -> str:
    if value is None:
        return "none yet"
    if value < 60:
        return f"{value:.0f} min"
    return f"{value / 60:.1f} h" if value < 48 * 60 else f"{value / 1440:.0f} days"


def tracking_summary(issues: Sequence[TrackingIssueLine]) -> str:
    lines = [_issue_line(i) for i in issues[:DIGEST_MAX_ISSUES]]
    if len(issues) > DIGEST_MAX_ISSUES:
        lines.append(f"…and {len(issues) - DIGEST_MAX_ISSUES:,} more")
    return f"*Tracking issues* ({len(issues):,})\n" + join_lines(lines, SECTION_TEXT_MAX - 40, "issues")


def _issue_line(i: TrackingIssueLine) -> str:
    event = md(i.event_name, SHORT_MAX)
    if i.kind == "missing_property":
        what = f"`{event}` arrives without `{md(i.property, SHORT_MAX)}`"
    elif i.kind == "volume_drop":
        # bot.slack.tracking: an event's drop names its source; a quiet source has no property.
        what = f"`{event}` volume dropped" if i.property else f"source `{event}` went quiet"
    else:
        what = f"`{event}`: {md(i.kind.replace('_', ' '), SHORT_MAX)}"
    detail = f" · {md(i.detail, 200)}" if i.detail else ""
    return f"• {what} ({i.count:,} events){detail}"


def _group_by_owner(rows: Sequence[StallRow]) -> list[tuple[str | None, list[StallRow]]]:
    """Owners in the order of their most important account; each owner's accounts stay ranked."""
    groups: dict[str | None, list[StallRow]] = {}
    for row in rows:
        groups.setdefault(row.owner, []).append(row)
    return list(groups.items())


def _owner_heading(owner: str | None, rows: Sequence[StallRow], total: OwnerTotal | None, *,
                   continued: bool = False) -> SectionBlock:
    who = f"*{person(owner)}*" if owner is not None else "*Triage: no owner* (claim one with Assign to me)"
    if continued:
        return section_block(f"{who} (continued)")
    accounts = total.accounts if total is not None else len(rows)
    at_risk = total.arr if total is not None else sum(r.arr for r in rows if math.isfinite(r.arr) and r.arr > 0)
    count = "1 account" if accounts == 1 else f"{accounts:,} accounts"
    return section_block(f"{who} · {count} · {money(at_risk)} ARR")


def _add_group(packer: Packer, owner: str | None, rows: Sequence[StallRow], total: OwnerTotal | None,
               text_budget: int) -> bool:
    """An owner's heading, rows and "and N more" line; a heading never ends a message alone,
    and a group that spills into the next message is re-introduced there. False (nothing
    more added) when it would need a message past MAX_MESSAGES."""
    heading = _owner_heading(owner, rows, total)
    blocks = [row_block(row, show_owner=False, digest=True) for row in rows]
    more = _more_line(rows, total)
    tail = [context_block(more)] if more else []
    for i, block in enumerate(blocks):
        unit = [heading, block] if i == 0 else [block]
        if i == len(blocks) - 1:
            unit = unit + tail
        last = len(packer.messages) >= MAX_MESSAGES  # keep room for the closing lines and the footer
        if not packer.add_if_fits(unit, reserve_blocks=3 if last else 0, reserve_chars=3 * FOOTER_CHARS if last else 0):
            if len(packer.messages) >= MAX_MESSAGES:
                return False
            packer.new_message()
            packer.add([_owner_heading(owner, rows, total, continued=True), *unit] if i > 0 else unit)
    return True


def _more_line(rows: Sequence[StallRow], total: OwnerTotal | None) -> str | None:
    """The owner's accounts not listed, by priority (never silently dropped)."""
    if total is None or total.accounts <= len(rows):
        return None
    left = dict(total.by_priority)
    for r in rows:
        if left.get(r.priority):
            left[r.priority] -= 1
    parts = " · ".join(f"{p} {n}" for p, n in sorted(left.items()) if n > 0)
    return f"…and {total.accounts - len(rows):,} more ({parts}): `/stalls all`"


def _digest_footer(d: DigestData, listed: int) -> str:
    total = d.total_open if d.total_open is not None else len(d.rows)
    pinged = len(d.pinged)
    snoozed = f"{d.snoozed:,} snoozed not listed" if d.snoozed else "none snoozed"
    if not total and not pinged:
        return f"No stalled accounts. 🎉 · {snoozed}"
    rest = max(total - pinged - listed, 0)
    named = f"{total:,} stalled accounts: {pinged:,} pinged today, {listed:,} listed"
    if not rest:
        return f"{named}: that is every stalled account · {snoozed}"
    counted = " (counted by owner above)" if d.owner_totals else ""
    return f"{named} · …and {rest:,} more{counted}: see `/stalls all` · {snoozed}"
