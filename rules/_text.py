"""Wording shared by findings and the "why" line, so they read alike."""

from __future__ import annotations

from datetime import timedelta


def plural(count: float, unit: str) -> str:
    """"1 day", "3 days", "1.5 days": counts may be fractional (thresholds are floats)."""
    if type(count) is int:  # the common case, remembered per unit (ints only: 0 == -0.0 == False)
        texts = _PLURALS.get(unit)
        if texts is None:
            if len(_PLURALS) >= 64:
                _PLURALS.clear()
            texts = _PLURALS[unit] = {}
        text = texts.get(count)
        if text is None:
            if len(texts) >= 1024:
                texts.clear()
            text = texts[count] = f"{count:g} {unit}" if count == 1 else f"{count:g} {unit}s"
        return text
    return f"{count:g} {unit}" if count == 1 else f"{count:g} {unit}s"


_PLURALS: dict[str, dict[int, str]] = {}  # unit -> count -> text


def duration(delta: timedelta) -> str:
    """Whole days once past a day, else whole hours, else minutes (floored, never negative)."""
    seconds = max(delta.total_seconds(), 0.0)
    if seconds >= 86400:
        return plural(int(seconds // 86400), "day")
    if seconds >= 3600:
        return plural(int(seconds // 3600), "hour")
    if seconds >= 60:
        return plural(int(seconds // 60), "minute")
    return "less than a minute"


def renews_in(days_left: int) -> str:
    if days_left == 0:
        return "renews today"
    return f"renews in {plural(days_left, 'day')}"


def clip_label(text: str | None, limit: int = 80) -> str:
    """A user-supplied label (step name, ticket topic) cut to `limit` characters, so a stored
    detail stays short whatever it quotes. Plain text: no escaping here."""
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
