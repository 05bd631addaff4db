"""/funnel: conversion and median time per stage, the weakest stage, rates per track."""

from __future__ import annotations

from slack_sdk.models.blocks import Block

from bot.slack.render.format import days_text, join_lines, label, percent
from bot.slack.render.limits import SECTION_TEXT_MAX, SHORT_MAX
from bot.slack.render.packing import check_message
from bot.slack.render.primitives import header_block, section_block
from bot.slack.text import md
from bot.stalls.views import FunnelData, FunnelStage, TrackRate, weakest_stage


def funnel_blocks(f: FunnelData) -> list[Block]:
    """/funnel: conversion and median time per stage, the weakest stage, rates per track."""
    blocks: list[Block] = [header_block(f"Funnel · last {f.days:,} days")]
    weakest = weakest_stage(f)
    if not any(s.entered for s in f.stages):
        blocks.append(section_block(f"No accounts moved through the journey in the last {f.days:,} days."))
    else:
        lines = [_stage_line(s, s is weakest) for s in f.stages]
        blocks.append(section_block("*Stage conversion*\n" + join_lines(lines, SECTION_TEXT_MAX - 30, "stages")))
        if weakest is not None:
            blocks.append(section_block(f"*Weakest stage:* {md(weakest.name, SHORT_MAX)}: only "
                                        f"{percent(weakest.conversion)} move on"))
    if f.tracks:
        blocks.append(section_block("*By track*", fields=[_track_field(t) for t in f.tracks]))
    check_message(blocks)
    return blocks


def funnel_summary(f: FunnelData) -> str:
    """The funnel in one mrkdwn paragraph (the digest's)."""
    chain = " → ".join(f"{md(s.name, 40)} {percent(s.conversion)}" for s in f.stages[:12])
    weakest = weakest_stage(f)
    tail = ""
    if weakest is not None:
        tail = f"\nWeakest stage: *{md(weakest.name, SHORT_MAX)}* ({percent(weakest.conversion)} move on)"
    return f"*Funnel, last {f.days:,} days:* {chain}{tail}"


def _stage_line(s: FunnelStage, weakest: bool) -> str:
    median = f" · median {days_text(s.median_days)}" if s.median_days is not None else ""
    flag = " ⚠️ *weakest*" if weakest else ""
    return f"{md(s.name, SHORT_MAX)}: {s.entered:,} → {s.converted:,} ({percent(s.conversion)}){median}{flag}"


def _track_field(t: TrackRate) -> str:
    return (f"*{label(t.track)}* ({t.accounts:,} accounts)\n"
            f"activation {percent(t.activation_rate)} · stall rate {percent(t.stall_rate)}")
