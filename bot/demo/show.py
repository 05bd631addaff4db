"""The demo's terminal output: what happened, and each Slack message as Slack would show it."""

from __future__ import annotations

import os
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Callable

import click

from bot.demo.pipeline import DemoResult, Message
from bot.demo.render import render_message

PRIORITIES = ("P0", "P1", "P2", "P3")
METHOD_WORDS = {"chat.postMessage": "post", "chat.update": "edit", "dm": "DM", "files_upload_v2": "file"}


def _rel(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def _title(m: Message) -> str:
    verb = "thread reply" if m.kind == "thread reply" else METHOD_WORDS.get(m.method, m.method)
    when = f" · {m.when:%H:%M} UTC" if m.when else ""
    return f"{m.channel or ''} · {verb}{when}"


def _payload(m: Message) -> dict:
    return {"blocks": m.blocks} if m.blocks else {"text": m.text}


def _day(at: datetime | None) -> str:
    return f"{at:%b} {at.day}" if at else "?"


def _next_days(result: DemoResult, echo: Callable[[str], None], rule, message) -> None:
    """The scripted days after the live part: a reassignment that moves the open ping, a
    resolve with a reason, and two days of scans that do not reopen it."""
    nd = result.next_days
    steps = result.phase("next days")
    shown: list[dict] = []

    def once(m: Message) -> None:  # a refresh edits every copy of a ping alike: each copy shown once
        if _payload(m) in shown:
            echo(f"[{_title(m)}: shows the same]")
        else:
            shown.append(_payload(m))
            message(m)

    reassign, resolve, *days = steps
    who = f"@{nd.new_owner_id}" if nd.new_owner_id else nd.new_owner
    echo(rule(f"The next days: {nd.account} changes hands, and a decision that lasts"))
    echo(f"{reassign.at:%H:%M}  {reassign.what} → {_n(len(reassign.messages), 'Slack call')}")
    audit = nd.audit or {}
    echo(f"       audit account.owner_changed: {audit.get('from') or 'nobody'} → {audit.get('to') or 'nobody'}. "
         f"The route woke the owner resolver (bot/slack/owners.py); no Slack token, so the simulated Slack answered "
         f"users.lookupByEmail: {_n(nd.mapped, 'owner email')} mapped to Slack users, "
         f"{_n(nd.moved, 'open ping')} moved: {who} gets it by DM and the ping now shows owner {who}.")
    for m in reassign.messages:
        once(m)
    echo(f"{resolve.at:%H:%M}  {resolve.what} → {_n(len(resolve.messages), 'Slack call')}")
    echo(f"       bot.stalls.actions.resolve answered \"{nd.told}\"; stored: {nd.resolution}")
    for m in resolve.messages:
        once(m)
    held = (f"{nd.account}: resolved as {nd.kind} until {_day(nd.quiet_until)} by {who}; {nd.days} days and "
            f"{nd.scans} scans later ({nd.until:%a %H:%M} UTC): ")
    evaluated = nd.evaluated
    if nd.reopened == 0 and nd.pinged == 0:
        held += (f"still closed, no ping. {_n(nd.spike_tickets, 'ticket')} still inside its {nd.window_days:g}-day "
                 f"spike window, and evaluated again then ({evaluated.candidates} account, {evaluated.opened} stalls opened) the "
                 f"decision holds it until {_day(nd.quiet_until)}.")
    else:
        held += f"reopened: {_n(nd.reopened, 'stall')}, {_n(nd.pinged, 'Slack call')} about it."
    echo(held)
    echo(f"Meanwhile the synthetic company sends no more events, so other accounts stall as time passes: "
         f"{_n(nd.opened_elsewhere, 'stall')} opened on them, {_n(nd.messages_elsewhere, 'Slack call')} "
         f"(every one in {_rel(result.out / 'README.md')}).")
    echo("")


def show(result: DemoResult, echo: Callable[[str], None], *, color: bool = True, pings_shown: int = 10) -> None:
    c = result.company
    tracks = Counter(a.track for a in c.accounts)
    bold = (lambda text: click.style(text, bold=True)) if color else (lambda text: text)
    rule = (lambda text: click.style(f"━━ {text}", fg="yellow", bold=True)) if color else (lambda text: f"== {text}")

    def message(m: Message) -> None:
        if m.method == "files_upload_v2":
            echo(f"[{m.channel} · file · {m.text}: saved as {_rel(m.file) if m.file else 'a PNG'}]")
        else:
            echo(render_message(_title(m), _payload(m), color=color))

    kind = "SaaS" if c.shape == "saas" else c.shape  # bot/demo/company.py SHAPES
    echo(bold("Stallwatch demo") + f": a synthetic B2B {kind} company through the real pipeline (ingest routes, "
         "scan, router, outbox, digest); no Slack workspace needed.")
    echo("")
    echo(f"  Company    {len(c.accounts)} accounts ({tracks['high_touch']} high-touch, {tracks['standard']} standard, "
         f"{tracks['self_serve']} self-serve), {len(c.csms())} CSMs, {(c.end - c.start).days} days of history "
         f"(seed {c.seed}, {c.shape} shape)")
    ingested = result.ingested
    echo(f"  Connected  {result.connected:%a %d %b %H:%M} UTC: {sum(ingested.values()):,} events backfilled through the "
         f"real routes in {result.ingest_seconds:.1f} s ({ingested['segment']:,} Segment to /v1/batch, "
         f"{ingested['stripe']:,} Stripe to /ingest/stripe, {ingested['tickets']:,} tickets to /ingest/zendesk)")
    first = result.first_scan
    by_p = " · ".join(f"{p} {result.stalls_by_priority.get(p, 0)}" for p in PRIORITIES)
    by_rule = ", ".join(f"{n} {r.replace('_', ' ')}" for r, n in result.stalls_by_rule.most_common())
    echo(f"  Stalls     {sum(result.stalls_by_priority.values())} open now ({by_p}): {by_rule}")
    if result.tracking_issues:
        start, end = c.incident
        echo(f"  Tracking   'Signed Up' arrived without its required 'plan' from {start:%a %H:%M} to "
             f"{end:%a %H:%M} UTC (a broken deploy): reported in the digest")
    echo("")

    pings = result.messages_of("first scan", "ping")
    backlog = result.messages_of("first scan", "backlog summary")
    overflow = (f"; {result.overflowed} more P0/P1 wait in the digest: a CSM gets at most 6 pings an hour"
                if result.overflowed else "")
    opened = first.opened if first else 0
    echo(rule(f"{result.connected:%H:%M} UTC, the first scan: {_n(opened, 'stall')} opened; one alert per "
              f"account: {_n(len(pings), 'real-time ping')} to {result.channels[0]} for what is news, "
              f"{len(backlog)} backlog {'summary' if len(backlog) == 1 else 'summaries'} (one per CSM) for the "
              f"{_n(result.backlog_accounts, 'account')} already stalled before Stallwatch was connected{overflow}"))
    shown = pings[:pings_shown]
    for m in shown:
        message(m)
    if len(pings) > len(shown):
        echo(f"… and {len(pings) - len(shown)} more pings (highest priority first), every one in "
             f"{_rel(result.out / 'README.md')}")
    for m in backlog[:1]:
        message(m)
    if len(backlog) > 1:
        echo(f"… and {len(backlog) - 1} more backlog summaries, one per CSM: never escalated one by one; "
             f"only what changes on those accounts is news")
    echo("")

    hour = [s for s in result.phase("first hour")]
    hour_msgs = [m for s in hour for m in s.messages]
    scans = sum(s.what.startswith("scheduled scan") for s in hour)
    events = len(hour) - scans
    echo(rule(f"{result.connected:%H:%M}–{result.now:%H:%M} UTC: {scans} scheduled scans, {events} events as they "
              f"arrived, {len(hour_msgs)} Slack message(s)"))
    for s in hour:
        shown_here = [m for m in s.messages if m.kind != "escalation"]
        if s.messages:
            echo(f"{s.at:%H:%M}  {s.what}")
            for m in shown_here:
                message(m)
    echo("")

    digest = result.messages_of("digest")
    escalations = [m for m in result.messages if m.kind == "escalation"]
    summaries = [m for m in result.messages if m.kind == "escalation summary"]
    if escalations:
        rest = " one by one, the rest in one summary (first and summary shown)" if summaries else " (one shown)"
        echo(rule(f"{escalations[0].when:%H:%M} UTC: P0 pings nobody acknowledged for an hour escalate to "
                  f"{result.channels[1]}: the top {len(escalations)}{rest}"))
        message(escalations[0])
        for m in summaries[:1]:
            message(m)
        echo("")
    echo(rule(f"{result.now:%H:%M} UTC: the daily digest to {result.channels[1]}"))
    for m in digest:
        message(m)
    echo("")

    live = result.phase("live")
    if live:
        echo(rule("Minutes later, live"))
        for s in live:
            calls = f" → {len(s.messages)} Slack call(s), {s.millis:.0f} ms after it arrived" if s.messages else \
                ": nothing new for Slack"
            echo(f"{s.at:%H:%M}  {s.what}{calls}")
            for m in s.messages:
                message(m)
        echo("")

    if result.next_days is not None:
        _next_days(result, echo, rule, message)

    if result.posted:
        sent = sum(m.status == "sent" for m in result.messages)
        echo(bold(f"Posted to Slack: {sent} of {len(result.messages)} calls sent."))
        for m in [m for m in result.messages if m.status != "sent"][:10]:
            echo(f"  not sent: {m.kind} to {m.channel}: {m.status} {m.error or ''}")
    echo(f"Every message as Block Kit JSON, with a Block Kit Builder link: {_rel(result.out / 'README.md')}")
    echo(f"Tune the rules on this history:  stallwatch backtest {_rel(result.out / 'events.jsonl')}")
    echo(f"Look around its database:        DATABASE_URL=sqlite:///{_rel(result.db_path)} stallwatch digest "
         f"--dry-run --now {result.now:%Y-%m-%dT%H:%M}Z")
    echo(f"Done in {result.seconds:.1f} s.")
