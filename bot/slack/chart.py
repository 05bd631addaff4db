"""The digest's chart: what a manager cannot read in the text. Eight weeks of open alerts and
ARR at risk by priority (stacked bars, one a day) and activation by track (lines), from the
daily snapshots (bot/snapshots.py); with less history, since its first day.

`chart_data` is the tested part (what is plotted); `chart_png` only draws it. The title and
the alt text (files_upload_v2's `alt_txt`) say what it shows and its figures.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from rules.config import PRIORITIES, TRACKS

CHART_WEEKS = 8
PRIORITY_COLORS = {"P0": "#d9534f", "P1": "#f0ad4e", "P2": "#f7d154", "P3": "#b0b0b0"}
TRACK_COLORS = {"high_touch": "#2c6fbb", "standard": "#5cb85c", "self_serve": "#9b59b6"}
ALT_MAX = 1000  # Slack's alt text is meant to be short


@dataclass(frozen=True)
class ChartData:
    """What the chart plots: one value per day and series, days oldest first."""

    days: tuple[date, ...]
    open_alerts: dict[str, tuple[int, ...]]  # priority -> accounts with an open alert of it
    arr_at_risk: dict[str, tuple[float, ...]]  # priority -> their ARR
    activation: dict[str, tuple[float | None, ...]]  # track -> mature-cohort activation rate (None: no cohort)
    weeks: int = CHART_WEEKS

    @property
    def since(self) -> date:
        return self.days[0]

    @property
    def full(self) -> bool:
        """Whether the history covers the whole span (else the chart says "since <date>")."""
        return self.days[0] <= self.days[-1] - timedelta(days=self.weeks * 7 - 1)


def chart_data(history: Sequence, weeks: int = CHART_WEEKS) -> ChartData | None:
    """The series of the last `weeks` weeks of `history` (bot.snapshots.CompanyFigures, any
    order); None without any day."""
    if not history:
        return None
    by_day = {h.day: h for h in history}
    last = max(by_day)
    days = tuple(sorted(d for d in by_day if d > last - timedelta(days=weeks * 7)))
    rows = [by_day[d] for d in days]
    tracks = [t for t in TRACKS if any(t in (r.activation or {}) for r in rows)]
    tracks += sorted({t for r in rows for t in (r.activation or {})} - set(tracks))
    return ChartData(
        days=days,
        open_alerts={p: tuple(int((r.open_alerts or {}).get(p, 0)) for r in rows) for p in PRIORITIES},
        arr_at_risk={p: tuple(float((r.arr_at_risk or {}).get(p, 0.0)) for r in rows) for p in PRIORITIES},
        activation={t: tuple(_rate(r, t) for r in rows) for t in tracks},
        weeks=weeks,
    )


def _rate(figures, track: str) -> float | None:
    entry = (figures.activation or {}).get(track) or {}
    rate = entry.get("rate")
    return None if rate is None else float(rate)


def chart_title(c: ChartData) -> str:
    span = f"last {c.weeks} weeks" if c.full else f"since {c.since:%d %b %Y}"
    return f"Open alerts and ARR at risk by priority, activation by track: {span}"


def alt_text(c: ChartData) -> str:
    """The figures in words, for readers who cannot see the image: today's alerts and ARR by
    priority with the change over the span, and today's activation by track."""
    first, last = 0, len(c.days) - 1
    alerts = [sum(v[i] for v in c.open_alerts.values()) for i in (first, last)]
    arr = [sum(v[i] for v in c.arr_at_risk.values()) for i in (first, last)]
    by_priority = ", ".join(f"{p} {c.open_alerts[p][last]}" for p in PRIORITIES)
    arr_by_priority = ", ".join(f"{p} {_money(c.arr_at_risk[p][last])}" for p in PRIORITIES)
    since = f"{c.since:%d %b}" if len(c.days) > 1 else None
    parts = [f"{chart_title(c)}, {len(c.days)} day{'s' if len(c.days) != 1 else ''} to {c.days[-1]:%d %b %Y}."]
    change = f" (from {alerts[0]} on {since})" if since else ""
    parts.append(f"Open alerts today: {alerts[1]}{change}: {by_priority}.")
    change = f" (from {_money(arr[0])} on {since})" if since else ""
    parts.append(f"ARR at risk today: {_money(arr[1])}{change}: {arr_by_priority}.")
    rates = [f"{_track(t)} {_percent(v[last])}" for t, v in c.activation.items()]
    parts.append(f"Activated by their checkpoint (mature cohort): {', '.join(rates)}." if rates
                 else "Activation: no mature cohort yet.")
    text = " ".join(parts)
    return text if len(text) <= ALT_MAX else text[:ALT_MAX - 1] + "…"


def chart_png(c: ChartData) -> bytes:
    """Three panels sharing the days: open alerts (stacked by priority), ARR at risk (stacked
    by priority), activation rate by track. No timestamp in the metadata: same data, same bytes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import dates as mdates
    from matplotlib.figure import Figure  # no pyplot: no global state, thread-safe

    fig = Figure(figsize=(9, 7.5), dpi=100)
    fig.suptitle(chart_title(c), fontsize=11)
    axes = fig.subplots(3, 1, sharex=True)
    x = list(c.days)
    _stacked(axes[0], x, c.open_alerts, "Open alerts (accounts)")
    _stacked(axes[1], x, {p: tuple(v / 1000 for v in vals) for p, vals in c.arr_at_risk.items()},
             "ARR at risk ($K)")
    ax = axes[2]
    for track, rates in c.activation.items():
        points = [(d, r * 100) for d, r in zip(x, rates) if r is not None]
        if points:
            ax.plot([d for d, _ in points], [r for _, r in points], marker="o" if len(points) < 3 else None,
                    label=_track(track), color=TRACK_COLORS.get(track))
    ax.set_ylim(0, 100)
    ax.set_ylabel("Activated by\ncheckpoint (%)")
    if c.activation:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    else:
        ax.text(0.5, 0.5, "no mature cohort yet", transform=ax.transAxes, ha="center", va="center", color="#888")
    # At least a week wide, so a few days of history read as days, not as hours.
    ax.set_xlim(mdates.date2num(min(x[0], x[-1] - timedelta(days=6))) - 0.6, mdates.date2num(x[-1]) + 0.6)
    if len(x) <= 14:
        ax.xaxis.set_major_locator(mdates.DayLocator())
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%d %b"))
    fig.autofmt_xdate()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _stacked(ax, x: list[date], series: dict[str, tuple[float, ...]], ylabel: str) -> None:
    bottom = [0.0] * len(x)
    for priority in PRIORITIES:
        values = series.get(priority, (0,) * len(x))
        ax.bar(x, values, bottom=bottom, width=0.8, label=priority, color=PRIORITY_COLORS[priority])
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_ylabel(ylabel)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)  # beside: never over a bar


def _money(amount: float) -> str:
    if amount >= 1_000_000:
        return f"${amount / 1_000_000:.1f}M"
    if amount >= 1_000:
        return f"${amount / 1_000:.0f}K"
    return f"${amount:,.0f}"


def _percent(rate: float | None) -> str:
    return "–" if rate is None else f"{rate * 100:.0f}%"


def _track(track: str) -> str:
    return track.replace("_", " ").capitalize()
