"""The modals that ask before a lasting change: "Resolve" (why: handled, false positive, known
and quiet until a date; an optional note) and "Snooze…" (1 to 30 days, or until a date).

Both carry where the click came from in `private_metadata` (bot/slack/listeners/actions.py),
and have fixed block ids (== action ids) so the submission is read back without guessing
(`resolve_values`, `snooze_values`). Dates are checked at submission (a datepicker has no
maximum): the use-cases refuse them too (bot/stalls/actions.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from slack_sdk.models.blocks import (DatePickerElement, InputBlock, Option, PlainTextInputElement, PlainTextObject,
                                     RadioButtonsElement, StaticSelectElement)
from slack_sdk.models.views import View

from bot.slack.render.codec import Action
from bot.slack.render.primitives import SNOOZE_DAYS, context_block, section_block
from bot.slack.text import md
from rules import decisions

REASON, QUIET_UNTIL, NOTE = "reason", "quiet_until", "note"  # the resolve modal's inputs
SNOOZE_FOR, SNOOZE_UNTIL = "snooze_for", "snooze_until"  # the snooze modal's inputs
UNTIL_DATE = "date"  # the SNOOZE_FOR option that means "until the date below"
REASON_LABELS = {
    decisions.HANDLED: "Handled",
    decisions.FALSE_POSITIVE: "False positive",
    decisions.KNOWN: "Known — quiet until the date below",
}


def _what(account_name: str | None) -> str:
    return f"*{md(account_name, 120)}*" if account_name else "this alert"


def resolve_view(private_metadata: str, account_name: str | None, today: date) -> View:
    """Why is it resolved? The decision lasts: the same condition does not reopen the alert."""
    return View(
        type="modal", callback_id=Action.RESOLVE_SUBMIT.value, private_metadata=private_metadata,
        title=PlainTextObject(text="Resolve"), submit=PlainTextObject(text="Resolve"),
        close=PlainTextObject(text="Cancel"),
        blocks=[
            section_block(f"Why is {_what(account_name)} resolved? It stays closed until the account's "
                          "situation changes (another step, another signal, or it clears and comes back)."),
            InputBlock(block_id=REASON, label=PlainTextObject(text="Reason"), element=RadioButtonsElement(
                action_id=REASON, options=[Option(value=k, text=PlainTextObject(text=v))
                                           for k, v in REASON_LABELS.items()])),
            InputBlock(block_id=QUIET_UNTIL, label=PlainTextObject(text="Quiet until"), optional=True,
                       hint=PlainTextObject(text=f"For “Known”: at most {decisions.MAX_QUIET_DAYS} days ahead."),
                       element=DatePickerElement(action_id=QUIET_UNTIL,
                                                 initial_date=(today + timedelta(days=14)).isoformat())),
            InputBlock(block_id=NOTE, label=PlainTextObject(text="Note"), optional=True,
                       element=PlainTextInputElement(action_id=NOTE, multiline=True, max_length=decisions.NOTE_MAX,
                                                     placeholder=PlainTextObject(text="e.g. customer is on holiday"))),
        ],
    )


def snooze_view(private_metadata: str, account_name: str | None, today: date, *, until_date: bool = False) -> View:
    """Snooze for 1 to 30 days, or until a date (at most 30 days ahead)."""
    options = [Option(value=str(d), text=PlainTextObject(text=f"{d} day" if d == 1 else f"{d} days"))
               for d in SNOOZE_DAYS]
    options.append(Option(value=UNTIL_DATE, text=PlainTextObject(text="Until the date below")))
    return View(
        type="modal", callback_id=Action.SNOOZE_SUBMIT.value, private_metadata=private_metadata,
        title=PlainTextObject(text="Snooze"), submit=PlainTextObject(text="Snooze"),
        close=PlainTextObject(text="Cancel"),
        blocks=[
            section_block(f"Snooze {_what(account_name)}: it leaves the queues and comes back when the snooze ends."),
            InputBlock(block_id=SNOOZE_FOR, label=PlainTextObject(text="For"), element=StaticSelectElement(
                action_id=SNOOZE_FOR, options=options, initial_option=options[-1] if until_date else options[0])),
            InputBlock(block_id=SNOOZE_UNTIL, label=PlainTextObject(text="Until"), optional=True,
                       hint=PlainTextObject(text=f"At most {decisions.MAX_SNOOZE_DAYS} days ahead."),
                       element=DatePickerElement(action_id=SNOOZE_UNTIL,
                                                 initial_date=(today + timedelta(days=7)).isoformat())),
            context_block("A snooze ends at the start of the day picked (UTC)."),
        ],
    )


@dataclass(frozen=True)
class Asked:
    """What a modal's submission asked for, or `errors` by block id (shown on the inputs)."""

    reason: str | None = None
    until: date | None = None
    note: str | None = None
    days: int | None = None
    errors: dict[str, str] | None = None


def _state(view: dict, block: str) -> dict:
    values = (view.get("state") or {}).get("values") or {}
    entry = (values.get(block) or {}).get(block) if isinstance(values, dict) else None
    return entry if isinstance(entry, dict) else {}


def _date(view: dict, block: str) -> date | None:
    raw = _state(view, block).get("selected_date")
    try:
        return date.fromisoformat(raw) if isinstance(raw, str) else None
    except ValueError:
        return None


def _option(view: dict, block: str) -> str | None:
    selected = _state(view, block).get("selected_option")
    value = selected.get("value") if isinstance(selected, dict) else None
    return value if isinstance(value, str) else None


def resolve_values(view: dict, now: datetime) -> Asked:
    """The resolve modal's answer: a reason; for "known", a date after today and at most 90
    days ahead; the note (at most NOTE_MAX characters)."""
    reason = _option(view, REASON)
    raw_note = _state(view, NOTE).get("value")
    note = raw_note.strip() if isinstance(raw_note, str) else ""
    if reason not in decisions.KINDS:
        return Asked(errors={REASON: "Pick why it is resolved."})
    if len(note) > decisions.NOTE_MAX:
        return Asked(errors={NOTE: f"At most {decisions.NOTE_MAX} characters."})
    until = None
    if reason == decisions.KNOWN:
        until = _date(view, QUIET_UNTIL)
        refused = "Pick the date until which it stays quiet." if until is None else \
            decisions.check_until(until, now, decisions.MAX_QUIET_DAYS)
        if refused:
            return Asked(errors={QUIET_UNTIL: refused})
    return Asked(reason=reason, until=until, note=note or None)


def snooze_values(view: dict, now: datetime) -> Asked:
    """The snooze modal's answer: days (1 to 30), or a date after today at most 30 days ahead."""
    chosen = _option(view, SNOOZE_FOR)
    if chosen == UNTIL_DATE:
        until = _date(view, SNOOZE_UNTIL)
        refused = "Pick a date." if until is None else decisions.check_until(until, now, decisions.MAX_SNOOZE_DAYS)
        return Asked(errors={SNOOZE_UNTIL: refused}) if refused else Asked(until=until)
    if chosen is None or not chosen.isdigit() or int(chosen) not in SNOOZE_DAYS:
        return Asked(errors={SNOOZE_FOR: "Pick how long."})
    return Asked(days=int(chosen))
