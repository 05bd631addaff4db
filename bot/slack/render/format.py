"""Values as mrkdwn: money, rates, durations, people, times, labels, and whole lines up to a size.
Customer text inside goes through bot.slack.text's `md` exactly once."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timezone

from bot.slack.render.limits import SHORT_MAX
from bot.slack.text import md

PRIORITY_EMOJI = {"P0": "🔴", "P1": "🟠", "P2": "🟡", "P3": "⚪"}
STATUS_LABEL = {
    "open": "Open",
    "snoozed": "Snoozed",
    "resolved": "Resolved",
    "auto_resolved": "Auto-resolved",
    "suppressed": "Suppressed",
}
CLOSED = frozenset({"resolved", "auto_resolved", "suppressed"})


def join_lines(lines: Sequence[str], limit: int, more_label: str = "more") -> str:
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
    if is_user_id(who):
        return f"<@{who}>"
    return md(who, SHORT_MAX)


def is_user_id(who: str) -> bool:
    """Whether `who` looks like a Slack user id (U… or W…), not an email or a name."""
    return 3 <= len(who) <= 32 and who[0] in "UW" and who.isalnum() and who.isupper()


def when(moment: datetime | None) -> str:
    """A time every reader sees in their own time zone (Slack date token, UTC fallback)."""
    if moment is None:
        return "never"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    utc = moment.astimezone(timezone.utc)
    return f"<!date^{int(utc.timestamp())}^{{date_short_pretty}} {{time}}|{utc:%Y-%m-%d %H:%M} UTC>"


def label(value: str | None) -> str:
    """A code ("self_serve") as words ("Self serve"); "–" when absent."""
    return md((value or "").replace("_", " ").capitalize(), SHORT_MAX) if value else "–"
