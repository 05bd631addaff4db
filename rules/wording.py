"""The words of an alert, per rule, rendered from the stall's facts and `now`.

A stored "why" is written when a stall opens or its score moves, so any duration in it
freezes ("27 days on 'Connect integration'" a month later). These functions take the facts
(`stalled_since`, `threshold_at`, `renewal_date`, the stored `detail`) and `now`, so a
renderer can call them every time it draws a message and the words always match the day.

Texts are plain: escaping for Slack is the Slack layer's job. Nothing here raises on odd
input (a hostile step name or ticket topic, a detail stored by an older version): it just
ends up in the string.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime, timedelta, timezone

from ._text import clip_label, duration, plural, renews_in
from .journey import days_until

UTC = timezone.utc
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# A day this many days back or fewer is named by its weekday ("since Tuesday"), as people
# say it; further back it would be ambiguous, so it gets a date.
WEEKDAY_DAYS = 6
# Rules whose threshold is a delay the CSM can reason about ("past the 48 h threshold").
THRESHOLD_RULES = frozenset({"step_stall", "not_activated"})
# Rules with a duration worth heading the alert with ("4 days"). For the others the age
# is misleading: a renewal window or a rolling usage week is not "stalled for N days".
AGED_RULES = frozenset({"step_stall", "not_activated", "payment_failed"})
HEADLINES = {
    "not_activated": "not activated",
    "renewal_risk": "renewal at risk",
    "usage_drop": "usage dropping",
    "ticket_spike": "ticket spike",
    "payment_failed": "payment failed",
}

# "since Nov 28" as `day_text` writes it into a stored detail: the last one in a detail is
# the rule's own (any user text, such as a ticket topic, comes before it).
_SINCE = re.compile(r"\bsince (" + "|".join(MONTHS) + r") (\d{1,2})\b")
_RENEWS = re.compile(r"^(renews today|renews in \d+ days?)(, )?")


# --- small formatters --------------------------------------------------------------------------

def money_compact(amount: float | None) -> str:
    """"$950", "$69.5K", "$1.2M": ARR a CSM reads at a glance (no cents, one decimal at most)."""
    if type(amount) is not float:
        return _money_compact(amount)
    text = _MONEY.get(amount)  # the scan words the same ARR figures again and again
    if text is None:
        if len(_MONEY) >= 4096:
            _MONEY.clear()
        text = _MONEY[amount] = _money_compact(amount)
    return text


_MONEY: dict[float, str] = {}


def _money_compact(amount: float | None) -> str:
    if amount is None or not math.isfinite(amount) or amount <= 0:
        return "$0"
    if round(amount) < 1000:
        return f"${amount:,.0f}"
    # Rounded before choosing the unit, so $999,960 reads "$1M" rather than "$1,000K".
    for size, suffix in ((1e3, "K"), (1e6, "M")):
        if round(amount / size, 1) < 1000:
            return f"${_one_decimal(amount / size)}{suffix}"
    return f"${_one_decimal(amount / 1e9)}B"


def day_text(day: date, now: datetime | None = None) -> str:
    """"Nov 28" (with the year only when it is not `now`'s year)."""
    text = f"{MONTHS[day.month - 1]} {day.day}"
    if now is not None and day.year != _today(now).year:
        text += f", {day.year}"
    return text


def since_text(day: date, now: datetime) -> str:
    """"since today" / "since yesterday" / "since Tuesday" within the last WEEKDAY_DAYS days,
    else "since Nov 28"."""
    days = (_today(now) - day).days
    if days == 0:
        return "since today"
    if days == 1:
        return "since yesterday"
    if 1 < days <= WEEKDAY_DAYS:
        return f"since {WEEKDAYS[day.weekday()]}"
    return f"since {day_text(day, now)}"


def ago_text(delta: timedelta) -> str:
    """"2 days ago", "5 hours ago", "just now"."""
    text = duration(delta)
    return "just now" if text == "less than a minute" else f"{text} ago"


# --- per-rule texts ----------------------------------------------------------------------------

def reason_text(
    rule: str,
    *,
    step_name: str | None = None,
    detail: str | None = None,
    stalled_since: datetime | None = None,
    threshold_at: datetime | None = None,
    renewal_date: date | None = None,
    now: datetime,
) -> str:
    """The stall's reason in a CSM's words, as of `now`.

    Durations come from `stalled_since` and `now`, the days to renewal from `renewal_date`
    and `now`; counts and percentages (tickets, usage) come from the `detail` stored when the
    rule fired, with its "since <date>" re-read against `now` ("since Tuesday" while recent).
    `threshold_at` is accepted for symmetry with the other functions (unused today).
    """
    del threshold_at  # the reason says how long, the priority says how far past the threshold
    detail = (detail or "").strip()
    if rule == "step_stall":
        where = f"'{step_name}'" if step_name else "the next step"
        if stalled_since is None:
            return detail or f"stalled on {where}"
        return f"{duration(now - stalled_since)} on {where}"
    if rule == "not_activated":
        if stalled_since is None:
            return detail or "not activated"
        return f"not activated {duration(now - stalled_since)} after signup"
    if rule == "payment_failed":
        if stalled_since is None:
            return detail or "payment failed"
        return f"payment failed {ago_text(now - stalled_since)}"
    if rule == "renewal_risk":
        return _renewal_reason(detail, renewal_date, now)
    if rule in ("usage_drop", "ticket_spike"):
        return _resince(detail, now) or HEADLINES[rule]
    return detail or rule.replace("_", " ")


def headline(rule: str, *, step_name: str | None = None) -> str:
    """A message title per rule: "stalled on 'Connect integration'", "renewal at risk"...

    Only a step stall is "stalled"; the other rules say what they saw.
    """
    if rule == "step_stall":
        return f"stalled on '{step_name}'" if step_name else "stalled"
    return HEADLINES.get(rule, rule.replace("_", " "))


def age_text(rule: str, *, stalled_since: datetime | None, now: datetime) -> str | None:
    """How long, when a duration means something for the rule ("4 days" on a step, since
    signup, since the payment failed); None for renewal_risk, usage_drop and ticket_spike,
    whose reason already says when."""
    if rule not in AGED_RULES or stalled_since is None:
        return None
    return duration(now - stalled_since)


def priority_reason(
    priority: str,
    *,
    arr: float | None,
    rule: str,
    now: datetime,
    threshold_at: datetime | None = None,
    stalled_since: datetime | None = None,
    threshold_hours: float | None = None,
    open_tickets: int = 0,
    renewal_date: date | None = None,
    renewal_within_days: float | None = None,
    payment_failed: bool = False,
) -> str:
    """The priority in words: "P0 because $69.5K ARR, 27 days past the 48 h threshold,
    renewal in 30 days, 2 open tickets".

    The facts `scoring.score` weighs, in its order: ARR; how far past the threshold for
    step_stall / not_activated (`threshold_hours`, or else `threshold_at - stalled_since`,
    names the threshold); then the friction: the renewal (not passed and, when
    `renewal_within_days` is given, within it), a failed payment, open tickets. Like the
    score, a rule's own signal is not repeated (no renewal for renewal_risk, no payment for
    payment_failed): the reason text next to it already says it.
    """
    parts = [f"{money_compact(arr)} ARR" if arr and math.isfinite(arr) and arr > 0 else "no ARR on record"]
    if rule in THRESHOLD_RULES and threshold_at is not None:
        parts.append(_past_threshold(rule, now, threshold_at, stalled_since, threshold_hours))
    days_left = days_until(renewal_date, now)
    if rule != "renewal_risk" and days_left is not None and days_left >= 0 and (
            renewal_within_days is None or days_left <= renewal_within_days):
        parts.append("renewal today" if days_left == 0 else f"renewal in {plural(days_left, 'day')}")
    if payment_failed and rule != "payment_failed":
        parts.append("payment failed")
    if open_tickets and open_tickets > 0:
        parts.append(plural(open_tickets, "open ticket"))
    return f"{priority} because " + ", ".join(parts)


# --- details stored at finding time (rules/stalls.py) -------------------------------------------

def ticket_spike_detail(count: int, topic: str, first_at: datetime, total: int, window_days: float) -> str:
    """"3 SSO tickets since Nov 28", plus "(4 tickets in 7 days)" when other topics add to it."""
    label = clip_label(topic, 60)
    text = f"{plural(count, f'{label} ticket' if label else 'ticket')} since {day_text(_today(first_at))}"
    if total > count:
        text += f" ({plural(total, 'ticket')} in {plural(window_days, 'day')})"
    return text


def usage_drop_detail(recent: int, previous: int, since: datetime) -> str:
    """"active days down 60% since Nov 28" ("no active days since Nov 28" at zero)."""
    if recent <= 0:
        return f"no active days since {day_text(_today(since))}"
    return f"active days down {usage_drop_percent(recent, previous)}% since {day_text(_today(since))}"


def usage_drop_percent(recent: int, previous: int) -> int:
    return round(100 * (previous - recent) / previous) if previous > 0 else 0


def escalation_text(urgent: int, high: int) -> list[str]:
    """["1 urgent ticket", "2 high-priority tickets"]: the open escalations, by priority."""
    parts = []
    if urgent:
        parts.append(plural(urgent, "urgent ticket"))
    if high:
        parts.append(plural(high, "high-priority ticket"))
    return parts


# --- helpers -----------------------------------------------------------------------------------

def _renewal_reason(detail: str, renewal_date: date | None, now: datetime) -> str:
    """The stored "renews in N days, ..." with the days recounted from the date."""
    days_left = days_until(renewal_date, now)
    if days_left is None:
        return detail or "renewal at risk"
    if days_left >= 0:
        lead = renews_in(days_left)
    else:
        lead = f"renewal date passed {plural(-days_left, 'day')} ago"
    rest = _RENEWS.sub("", detail).strip()
    return f"{lead}, {rest}" if rest else lead


def _resince(detail: str, now: datetime) -> str:
    """The detail with its last "since Nov 28" re-read against `now` ("since Tuesday")."""
    matches = list(_SINCE.finditer(detail))
    if not matches:
        return detail
    last = matches[-1]
    day = _infer_day(MONTHS.index(last.group(1)) + 1, int(last.group(2)), now)
    if day is None:
        return detail
    return detail[: last.start()] + since_text(day, now) + detail[last.end():]


def _infer_day(month: int, day: int, now: datetime) -> date | None:
    """The date a yearless "Nov 28" in a past detail means: the latest one not after today
    (a day of slack for clocks). None if no such date exists (Feb 30)."""
    today = _today(now)
    for year in (today.year, today.year - 1, today.year - 2, today.year - 3, today.year - 4):
        try:
            candidate = date(year, month, day)
        except ValueError:
            continue  # Feb 29 outside a leap year: try the year before
        if candidate <= today + timedelta(days=1):
            return candidate
    return None


def _past_threshold(rule: str, now: datetime, threshold_at: datetime, stalled_since: datetime | None,
                    threshold_hours: float | None) -> str:
    """"27 days past the 48 h threshold", "2 days past the day-14 checkpoint"."""
    if threshold_hours is None and stalled_since is not None and threshold_at >= stalled_since:
        threshold_hours = (threshold_at - stalled_since).total_seconds() / 3600
    key = (rule == "not_activated", threshold_hours)
    what = _THRESHOLDS.get(key)  # a few thresholds, worded for every stall
    if what is None:
        if rule == "not_activated":
            what = f"the day-{_one_decimal(threshold_hours / 24)} checkpoint" if threshold_hours else "the checkpoint"
        else:
            what = f"the {_one_decimal(threshold_hours)} h threshold" if threshold_hours else "its threshold"
        if len(_THRESHOLDS) >= 1024:
            _THRESHOLDS.clear()
        _THRESHOLDS[key] = what
    past = now - threshold_at
    if past.total_seconds() < 60:
        return f"just past {what}"
    return f"{duration(past)} past {what}"


_THRESHOLDS: dict[tuple, str] = {}  # (not_activated?, hours) -> the threshold in words


def _one_decimal(value: float) -> str:
    """69.5 -> "69.5", 50.0 -> "50", 1234.0 -> "1,234": one decimal at most, no exponent."""
    return f"{value:,.1f}".rstrip("0").rstrip(".")


def _today(at: datetime) -> date:
    return at.astimezone(UTC).date() if at.tzinfo is not None else at.date()
