"""/funnel: conversion and median time per stage, the weakest stage, rates per track; every rate
on a mature cohort, with its sample size, "–" when too few accounts to mean anything."""

from __future__ import annotations

from slack_sdk.models.blocks import Block

from bot.slack.render.format import days_text, join_lines, label, percent
from bot.slack.render.limits import SECTION_TEXT_MAX, SHORT_MAX
from bot.slack.render.packing import check_message
from bot.slack.render.primitives import context_block, header_block, section_block
from bot.slack.text import md
from bot.stalls.views import MIN_SAMPLE, FunnelData, FunnelStage, TrackRate, weakest_stage


def funnel_blocks(f: FunnelData) -> list[Block]:
    """/funnel: conversion and median time per stage, the weakest stage, rates per track."""
    blocks: list[Block] = [header_block(f"Funnel · last {f.days:,} days")]
    weakest = weakest_stage(f)
    if not any(s.entered for s in f.stages):
        blocks.append(section_block(f"No account had its time to move on a step in the last {f.days:,} days."))
    else:
        lines = [_stage_line(s, s is weakest) for s in f.stages]
        blocks.append(section_block("*Stage conversion*\n" + join_lines(lines, SECTION_TEXT_MAX - 30, "stages")))
        if weakest is not None:
            blocks.append(section_block(f"*Weakest stage:* {md(weakest.name, SHORT_MAX)}: only "
                                        f"{percent(weakest.conversion)} move on (n={weakest.entered:,})"))
    if f.tracks:
        blocks.append(section_block(f"*By track* · {md(f.activation_name, SHORT_MAX)}",
                                    fields=[_track_field(t) for t in f.tracks]))
    blocks.append(context_block(
        f"Mature cohorts only: a step counts an account once its time to move on (the next step's stall "
        f"threshold; for the last step, the checkpoint) ran out in the last {f.days:,} days; a track, once its "
        f"checkpoint passed in them. n: accounts counted; – under {MIN_SAMPLE}."))
    check_message(blocks)
    return blocks


def funnel_summary(f: FunnelData) -> str:
    """The funnel in one mrkdwn paragraph (the digest's)."""
    chain = " → ".join(f"{md(s.name, 40)} {rate_text(s.conversion, s.entered)}" for s in f.stages[:12])
    weakest = weakest_stage(f)
    tail = ""
    if weakest is not None:
        tail = (f"\nWeakest stage: *{md(weakest.name, SHORT_MAX)}* ({percent(weakest.conversion)} move on, "
                f"n={weakest.entered:,})")
    return f"*Funnel, last {f.days:,} days:* {chain}{tail}"


def activation_line(f: FunnelData) -> str:
    """"Activated (Report Shared) by day 14: High touch 62% (n=21) · Standard 48% (n=60) · ..."; a
    track whose checkpoint differs from the first one's says its own day."""
    if not f.tracks:
        return ""
    day = f.tracks[0].checkpoint_days
    rates = " · ".join(
        f"{label(t.track)} "
        f"{rate_text(t.activation_rate, t.accounts, own_day=None if t.checkpoint_days == day else t.checkpoint_days)}"
        for t in f.tracks)
    return f"{md(f.activation_name, SHORT_MAX)} by day {_day(day)}: {rates}"


def rate_text(rate: float | None, n: int, *, own_day: float | None = None) -> str:
    """"38% (n=21)"; "– (n=3)" under MIN_SAMPLE accounts; `own_day`: a track's own checkpoint too."""
    shown = percent(rate) if n >= MIN_SAMPLE else "–"
    own = f", by day {_day(own_day)}" if own_day is not None else ""
    return f"{shown} (n={n:,}{own})"


def _day(days: float) -> str:
    return f"{days:,.0f}" if float(days).is_integer() else f"{days:,.1f}"


def _stage_line(s: FunnelStage, weakest: bool) -> str:
    median = f" · median {days_text(s.median_days)}" if s.median_days is not None else ""
    flag = " ⚠️ *weakest*" if weakest else ""
    rate = percent(s.conversion) if s.entered >= MIN_SAMPLE else "–"
    return f"{md(s.name, SHORT_MAX)}: {s.entered:,} → {s.converted:,} ({rate}){median}{flag}"


def _track_field(t: TrackRate) -> str:
    def rate(r: float | None) -> str:
        return percent(r) if t.accounts >= MIN_SAMPLE else "–"
    return (f"*{label(t.track)}* (n={t.accounts:,})\n"
            f"activated by day {_day(t.checkpoint_days)}: {rate(t.activation_rate)} · stalled: {rate(t.stall_rate)}")
