"""The daily digest as one or more messages: the headline, the funnel and tracking issues, then
the ranked open stalls grouped by owner (with inline Assign/Snooze)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from slack_sdk.models.blocks import Block, DividerBlock, SectionBlock

from bot.slack.render.format import join_lines, label, money, percent, person
from bot.slack.render.funnel import funnel_summary
from bot.slack.render.limits import SECTION_TEXT_MAX, SHORT_MAX, TEXT_BUDGET
from bot.slack.render.packing import Packer, check_message
from bot.slack.render.primitives import context_block, header_block, section_block
from bot.slack.render.rows import row_block
from bot.slack.text import md
from bot.stalls.views import DigestData, StallRow, TrackingIssueLine

DIGEST_MAX_ISSUES = 10


def digest_text(d: DigestData) -> str:
    """The notification fallback of the digest's first message."""
    return (f"Stall digest for {d.day.isoformat()}: {d.new_stalls:,} new stalls, "
            f"{money(d.arr_at_risk)} ARR at risk, {d.resolved_since_yesterday:,} resolved since yesterday")


def digest_messages(d: DigestData, *, text_budget: int = TEXT_BUDGET) -> list[list[Block]]:
    """The digest as one or more messages, each within 50 blocks and the text budget: the
    headline, the funnel and tracking issues, then up to `max_items` ranked stalls grouped
    by owner (with inline Assign/Snooze), and a last line with "and N more" and the snoozed
    count."""
    packer = Packer(text_budget=text_budget)
    for unit in _digest_overview(d):
        packer.add(unit)
    shown = list(d.rows[: max(d.max_items, 0)])
    if shown:
        packer.add([DividerBlock(), section_block("*Stalled accounts by owner*, most at risk first")])
        for owner, rows in _group_by_owner(shown):
            _add_group(packer, owner, rows)
    packer.add([context_block(_digest_footer(d, len(shown)))])
    for message in packer.messages:
        check_message(message, text_budget=text_budget)
    return packer.messages


def _digest_overview(d: DigestData) -> list[list[Block]]:
    total = d.total_open if d.total_open is not None else len(d.rows)
    head: list[Block] = [
        header_block(f"Daily stall digest · {d.day:%a %d %b %Y}"),
        section_block(None, fields=[
            f"*New stalls*\n{d.new_stalls:,}",
            f"*ARR at risk*\n{money(d.arr_at_risk)}",
            f"*Resolved since yesterday*\n{d.resolved_since_yesterday:,}",
            f"*Stalled accounts*\n{total:,} ({d.snoozed:,} snoozed)",
        ]),
    ]
    if d.activation_by_track:
        rates = " · ".join(f"{label(track)} {percent(rate)}" for track, rate in d.activation_by_track.items())
        head.append(context_block(f"Activation rate, last 14 days: {rates}"))
    units = [head]
    if d.funnel is not None and any(s.entered for s in d.funnel.stages):
        units.append([section_block(funnel_summary(d.funnel))])
    if d.tracking_issues:
        units.append([section_block(tracking_summary(d.tracking_issues))])
    return units


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


def _owner_heading(owner: str | None, rows: Sequence[StallRow], *, continued: bool = False) -> SectionBlock:
    if continued:
        return section_block(f"*{person(owner)}* (continued)")
    at_risk = sum(r.arr for r in rows if math.isfinite(r.arr) and r.arr > 0)
    count = "1 account" if len(rows) == 1 else f"{len(rows):,} accounts"
    return section_block(f"*{person(owner)}* · {count} · {money(at_risk)} ARR")


def _add_group(packer: Packer, owner: str | None, rows: Sequence[StallRow]) -> None:
    """An owner's heading and rows; a heading never ends a message alone, and a group that
    spills into the next message is re-introduced there."""
    heading = _owner_heading(owner, rows)
    for i, row in enumerate(rows):
        block = row_block(row, show_owner=False, digest=True)
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
        return f"No stalled accounts. 🎉 · {snoozed}"
    return f"That is every stalled account · {snoozed}"
