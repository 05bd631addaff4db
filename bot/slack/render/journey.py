"""/journey: where the account is, its checklist, its open stalls with their buttons, and what
happened lately."""

from __future__ import annotations

from slack_sdk.models.blocks import Block, DividerBlock, SectionBlock

from bot.slack.render.format import CLOSED, join_lines, label, money, person, when
from bot.slack.render.limits import NAME_MAX, SHORT_MAX
from bot.slack.render.notes import account_note_button, journey_note_line
from bot.slack.render.packing import Packer, block_text_length, check_message
from bot.slack.render.primitives import context_block, header_block, section_block, stall_actions
from bot.slack.render.rows import row_text
from bot.slack.text import md
from bot.stalls.views import EventLine, JourneyViewData, StepLine, TicketLine
from rules.health import trend_words

JOURNEY_MAX_STALLS = 5
JOURNEY_MAX_EVENTS = 10
JOURNEY_MAX_TICKETS = 5
# Text sizes of the /journey sections: together they leave room for the open stalls.
JOURNEY_CHECKLIST_MAX = 2500
JOURNEY_HISTORY_MAX = 1500
JOURNEY_NOTES_MAX = 1500
JOURNEY_MAX_NOTES = 5
# ✓ reached, ⏳ the step the account waits on (flagged when past its threshold), ✗ not yet.
STEP_ICON = {"done": "✓", "waiting": "⏳", "stalled": "⏳", "todo": "✗"}


def journey_blocks(j: JourneyViewData) -> list[Block]:
    """/journey: where the account is, its checklist, its open stalls with their buttons, and
    what happened lately. Stalls are added while they fit; the recent history always shows."""
    head: list[Block] = [header_block(j.name or j.account_id), section_block(_journey_facts(j), fields=_journey_fields(j))]
    if j.health is not None:
        head.append(section_block(health_line(j)))
    if j.steps:
        checklist = join_lines([_step_line(s) for s in j.steps], JOURNEY_CHECKLIST_MAX, "steps")
        head.append(section_block("*Journey*\n" + checklist))
    head.append(_notes_block(j))
    head.append(DividerBlock())
    history: list[Block] = []
    if j.events:
        lines = [_event_line(e) for e in j.events[:JOURNEY_MAX_EVENTS]]
        history.append(section_block("*Recent events*\n" + join_lines(lines, JOURNEY_HISTORY_MAX, "events")))
    if j.tickets:
        lines = [_ticket_line(t) for t in j.tickets[:JOURNEY_MAX_TICKETS]]
        history.append(section_block("*Recent tickets*\n" + join_lines(lines, JOURNEY_HISTORY_MAX, "tickets")))

    packer = Packer()
    packer.add(head)
    if not j.open_stalls:
        packer.add([section_block("*Open stalls*\nNone. 🎉")])
    else:
        packer.add([section_block(f"*Open stalls* ({len(j.open_stalls):,})")])
        reserve = block_text_length(history) + 200  # room for the history and an "and N more"
        shown = 0
        for row in j.open_stalls[:JOURNEY_MAX_STALLS]:
            unit: list[Block] = [section_block(row_text(row, show_owner=False))]
            if row.status not in CLOSED:
                unit.append(stall_actions(row.stall_id, with_journey=False, with_note=False))  # the account's
            if not packer.add_if_fits(unit, reserve_blocks=len(history) + 1, reserve_chars=reserve):
                break
            shown += 1
        if len(j.open_stalls) > shown:
            packer.add([context_block(f"…and {len(j.open_stalls) - shown:,} more: see `/stalls all`.")])
    packer.add(history)
    blocks = packer.messages[0]
    check_message(blocks)
    return blocks


def _notes_block(j: JourneyViewData) -> SectionBlock:
    """The latest notes, newest first, with "Add note" beside them (a note is on the account)."""
    lines = [journey_note_line(n) for n in j.notes[:JOURNEY_MAX_NOTES]]
    text = join_lines(lines, JOURNEY_NOTES_MAX, "notes") if lines else "None yet."
    return section_block("*Notes*\n" + text, accessory=account_note_button(j.account_id))


def _journey_facts(j: JourneyViewData) -> str:
    domain = f" · {md(j.domain, SHORT_MAX)}" if j.domain else ""
    return f"*{md(j.name or j.account_id, NAME_MAX)}*{domain} · `{md(j.account_id, SHORT_MAX)}`"


def health_line(j: JourneyViewData) -> str:
    """"*Health 62* ↓ from 71 last week · onboarding stalled 4 days, 2 open tickets"."""
    line = f"*Health {j.health}*"
    trend = trend_words(j.health, j.health_week_ago)
    if trend:
        line += f" {trend}"
    if j.health_reasons:
        line += " · " + md(", ".join(j.health_reasons), SHORT_MAX * 3)
    return line


def _journey_fields(j: JourneyViewData) -> list[str]:
    fields = [f"*Stage*\n{md(j.stage, SHORT_MAX)}", f"*ARR*\n{money(j.arr)}", f"*Owner*\n{person(j.owner)}"]
    if j.track:
        fields.append(f"*Track*\n{label(j.track)}")
    if j.lifecycle:
        fields.append(f"*Status*\n{label(j.lifecycle)}")
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
