"""The backtest report: a table per day for people, JSON for machines.

With two rules files (`--against`), every figure shows both runs: `A → B` in the tables,
one entry per run in the JSON.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Sequence

from bot.backtest.history import History
from bot.backtest.replay import ReplayResult
from rules.backtest import DayFigures, Summary, Totals

SCHEMA = "stallwatch.backtest/1"
PRIORITIES = ("P0", "P1", "P2", "P3")


# ---------------------------------------------------------------------- JSON


def as_json(history: History, runs: Sequence[ReplayResult], labels: Sequence[str],
            rules_files: Sequence[str | None], max_problems: int = 1000) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "input": {
            "path": history.path,
            "records": history.records,
            "used": len(history.entries),
            "skipped": len(history.problems),
            "ignored": history.ignored,
            "problems": [{"line": p.line, "error": p.message} for p in history.problems[:max_problems]],
            "start": _iso(history.start),
            "end": _iso(history.end),
        },
        "runs": [_run_json(run, label, path) for run, label, path in zip(runs, labels, rules_files)],
    }


def _run_json(run: ReplayResult, label: str, rules_file: str | None) -> dict[str, Any]:
    summary = run.summary()
    return {
        "label": label,
        "rules": rules_file,
        "seconds": round(run.seconds, 2),
        "simulated": {"start": _iso(run.start), "end": _iso(run.end)},
        "events_stored": run.stored,
        "duplicates": run.duplicates,
        "store_failures": [{"line": line, "error": error} for line, error in run.store_failures],
        "scans": run.scans,
        "scans_skipped": run.scans_skipped,
        "scan_failures": run.scan_failures,
        "evaluations": run.evaluations,
        "days": [d.as_dict() for d in summary.days],
        "totals": summary.totals.as_dict(),
    }


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


# ---------------------------------------------------------------------- text


def money(amount: float) -> str:
    if not math.isfinite(amount) or amount <= 0:
        return "$0"
    if amount >= 1_000_000:
        return f"${amount / 1_000_000:.1f}M"
    if amount >= 10_000:
        return f"${amount / 1000:.0f}K"
    if amount >= 1000:
        return f"${amount / 1000:.1f}K"
    return f"${amount:.0f}"


def hours(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1 / 60:
        return "<1m"
    if value < 1:
        return f"{value * 60:.0f}m"
    if value < 48:
        return f"{value:.1f}h"
    return f"{value / 24:.1f}d"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], *, left: int = 1) -> list[str]:
    """Columns padded to their widest cell; the first `left` columns left-aligned, the rest right."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [str(c).ljust(w) if i < left else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(parts).rstrip()

    return [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


def _pair(values: Sequence[Any], fmt=str) -> str:
    shown = [fmt(v) for v in values]
    if len(shown) == 1:
        return shown[0]
    return shown[0] if shown[0] == shown[1] else f"{shown[0]} → {shown[1]}"


def _digest_cell(d: DayFigures) -> str:
    if d.digest_items is None:
        return "-"
    if d.digest_open is not None and d.digest_open > d.digest_items:
        return f"{d.digest_items}/{d.digest_open}"
    return str(d.digest_items)


def _csm_cell(d: DayFigures) -> str:
    return str(d.max_pings_per_csm) if d.pings else "0"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _noise_cell(noise: int, rate: float | None) -> str:
    return f"{noise} ({rate * 100:.0f}%)" if noise and rate is not None else str(noise)


def render_text(history: History, runs: Sequence[ReplayResult], labels: Sequence[str],
                interval_minutes: float, *, tracks: Sequence[Sequence[str]] = ()) -> str:
    """The report for people. `tracks`: per run, how its rules route and tune each track
    (rules.tracks.describe_tracks), shown under the run's line."""
    summaries: list[Summary] = [r.summary() for r in runs]
    out: list[str] = []
    span = ""
    if history.start is not None and history.end is not None:
        span = f", {history.start:%Y-%m-%d %H:%M} → {history.end:%Y-%m-%d %H:%M} UTC"
    skipped = f", {len(history.problems):,} skipped (see above)" if history.problems else ""
    ignored = f", {history.ignored:,} Stripe events of types Stallwatch ignores" if history.ignored else ""
    out.append(f"Backtest of {history.path}: {history.records:,} records, {len(history.entries):,} replayed"
               f"{skipped}{ignored}{span}; scans every {interval_minutes:g} min (simulated clock)")
    for label, run in zip(labels, runs):
        failures = ""
        if run.store_failures or run.scan_failures:
            failures = f"; {len(run.store_failures)} record(s) failed to store, {run.scan_failures} scan(s) failed"
        out.append(f"  {label}: {run.scans:,} scans ({run.scans_skipped:,} skipped: nothing due), "
                   f"{run.evaluations:,} event-driven evaluations, {run.duplicates:,} duplicates{failures}; "
                   f"replayed in {run.seconds:.1f} s")
        for line in (tracks[labels.index(label)] if len(tracks) > labels.index(label) else ()):
            out.append(f"    {line}")
    if not summaries or not summaries[0].days:
        out.append("")
        out.append("Nothing to report: the history has no usable records.")
        return "\n".join(out) + "\n"
    if len(runs) == 2:
        out.append(f"  Figures read A → B where the two differ (A: {labels[0]}, B: {labels[1]}).")
    out.append("")

    header = ["day", "pings", "accts", "2+", "max/acct", "avg/CSM", "max/CSM", "digest", "opened", "per acct",
              *PRIORITIES, "delay", "noise", "ARR flagged"]
    rows = []
    for days in zip(*(s.days for s in summaries)):
        d0 = days[0]
        rows.append([
            f"{d0.day:%a %Y-%m-%d}",
            _pair([d.pings for d in days]),
            _pair([d.accounts_pinged for d in days]),
            _pair([d.accounts_pinged_twice for d in days]),
            _pair([d.max_pings_per_account for d in days]),
            _pair([d.pings_per_csm_mean for d in days], _ratio),
            _pair([_csm_cell(d) for d in days]),
            _pair([_digest_cell(d) for d in days]),
            _pair([d.opened for d in days]),
            _pair([d.stalls_per_account for d in days], _ratio),
            *(_pair([d.by_priority.get(p, 0) for d in days]) for p in PRIORITIES),
            _pair([d.median_delay_hours for d in days], hours),
            _pair([_noise_cell(d.noise, d.noise_rate) for d in days]),
            _pair([d.arr_flagged for d in days], money),
        ])
    totals = [s.totals for s in summaries]
    rows.append(["total", _pair([t.pings for t in totals]), _pair([t.accounts_pinged for t in totals]),
                 _pair([t.account_days_pinged_twice for t in totals]),
                 _pair([t.max_pings_per_account_day for t in totals]),
                 _pair([t.pings_per_csm_day_mean for t in totals], _ratio),
                 _pair([t.max_pings_per_csm_day for t in totals]),
                 _pair([t.digest_items_mean for t in totals], lambda v: "-" if v is None else f"{v:.0f} avg"),
                 _pair([t.opened for t in totals]), _pair([t.stalls_per_account for t in totals], _ratio),
                 *(_pair([t.by_priority.get(p, 0) for t in totals]) for p in PRIORITIES),
                 _pair([t.median_delay_hours for t in totals], hours),
                 _pair([_noise_cell(t.noise, t.noise_rate) for t in totals]),
                 _pair([t.arr_flagged for t in totals], money)])
    table = _table(header, rows)
    out.extend(table[:-1])
    out.append(table[1])
    out.append(table[-1])
    out.append("")
    out.append("pings: real-time pings that went out (quiet hours and the hourly budget applied); accts: distinct "
               "accounts pinged (total: over the whole history); 2+: accounts pinged two or more times that day "
               "(total: such account-days); max/acct: the most pings one account got; avg/CSM, max/CSM: pings per "
               "owner pinged that day, mean and most; digest: stalls the digest lists (/ open in all); opened: "
               "stalls opened, by priority at opening; per acct: stalls opened per account they opened on; delay: "
               "median time from the moment a customer stalled to the stall opening; noise: stalls that closed by "
               "themselves within 24 h (share of those opened); ARR flagged: ARR of the accounts with a stall opened.")
    out.append("")
    out.extend(_breakdown("Stalls opened by rule", [t.by_rule for t in totals], labels, totals))
    out.append("")
    out.extend(_breakdown("by stage", [t.by_stage for t in totals], labels, totals))
    out.append("")
    out.extend(_breakdown("by track", [t.by_track for t in totals], labels, totals))
    out.append("")
    out.extend(_summary_lines(totals, labels))
    return "\n".join(out) + "\n"


def _breakdown(title: str, counts: Sequence[dict[str, int]], labels: Sequence[str],
               totals: Sequence[Totals]) -> list[str]:
    keys = sorted(set().union(*counts), key=lambda k: (-max(c.get(k, 0) for c in counts), k))
    if not keys:
        return [f"{title}: none"]
    if len(counts) == 1:
        header = [title, "stalls", "share"]
        rows = [[k, str(counts[0].get(k, 0)), _share(counts[0].get(k, 0), totals[0].opened)] for k in keys]
    else:
        header = [title, "A", "B", "change"]
        rows = [[k, str(counts[0].get(k, 0)), str(counts[1].get(k, 0)),
                 _change(counts[0].get(k, 0), counts[1].get(k, 0))] for k in keys]
    return _table(header, rows)


def _share(n: int, total: int) -> str:
    return f"{n / total * 100:.0f}%" if total else "-"


def _change(a: float, b: float) -> str:
    if a == b:
        return "="
    if a == 0:
        return "new"
    return f"{(b - a) / a * 100:+.0f}%"


def _summary_lines(totals: Sequence[Totals], labels: Sequence[str]) -> list[str]:
    def noise(t: Totals) -> str:
        return f"{t.noise} ({t.noise_rate * 100:.0f}%)" if t.noise_rate is not None else "0"

    def busiest(t: Totals) -> str:
        if not t.pings_by_csm:
            return "-"
        name, n = next(iter(t.pings_by_csm.items()))
        return f"{name} ({n})"

    rows = [
        ("real-time pings", [str(t.pings) for t in totals], [t.pings for t in totals]),
        ("pings per day (avg)", [f"{t.pings / t.days:.1f}" if t.days else "0" for t in totals],
         [t.pings / t.days if t.days else 0 for t in totals]),
        ("most pings one CSM got in a day", [str(t.max_pings_per_csm_day) for t in totals],
         [t.max_pings_per_csm_day for t in totals]),
        ("pings per CSM per day (mean, days pinged)", [_ratio(t.pings_per_csm_day_mean) for t in totals],
         [t.pings_per_csm_day_mean or 0 for t in totals]),
        ("accounts pinged (distinct)", [str(t.accounts_pinged) for t in totals], [t.accounts_pinged for t in totals]),
        ("accounts pinged 2+ times the same day (account-days)",
         [f"{t.account_days_pinged_twice} of {t.account_days_pinged}" for t in totals],
         [t.account_days_pinged_twice for t in totals]),
        ("most pings one account got in a day", [str(t.max_pings_per_account_day) for t in totals],
         [t.max_pings_per_account_day for t in totals]),
        ("most pinged CSM overall", [busiest(t) for t in totals], None),
        ("digest length (avg / max)", [f"{t.digest_items_mean or 0:.0f} / {t.digest_items_max or 0}" for t in totals],
         [t.digest_items_mean or 0 for t in totals]),
        ("stalls opened", [str(t.opened) for t in totals], [t.opened for t in totals]),
        ("stalls opened per account", [_ratio(t.stalls_per_account) for t in totals],
         [t.stalls_per_account or 0 for t in totals]),
        ("median detection delay", [hours(t.median_delay_hours) for t in totals],
         [t.median_delay_hours or 0 for t in totals]),
        ("noise: closed by themselves within 24 h", [noise(t) for t in totals], [t.noise for t in totals]),
        ("accounts flagged / their ARR", [f"{t.accounts_flagged} / {money(t.arr_flagged)}" for t in totals],
         [t.arr_flagged for t in totals]),
    ]
    if len(totals) == 1:
        return _table(["Summary", labels[0]], [[name, values[0]] for name, values, _ in rows])
    return _table(["Summary", f"A: {labels[0]}", f"B: {labels[1]}", "change"],
                  [[name, values[0], values[1], _change(*raw) if raw else ""] for name, values, raw in rows])
