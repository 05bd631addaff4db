"""The daily digest for CS managers (issue 3, item 4; DESIGN.md "Scoring and routing").

`build_digest` reads what the digest shows with a handful of batched SQL statements (no
per-row queries): the headline numbers, the ranked open stalls (snoozed ones counted, not
listed), unresolved tracking issues and the funnel of the last 14 days of signups.

`post_digest` posts it exactly once per (digest day, channel), across restarts, threads and
processes: the DigestRun row (unique (day, channel)) is inserted with ON CONFLICT DO NOTHING
and the outbox rows are enqueued in the SAME transaction; whoever's INSERT did not create the
row enqueues nothing. The outbox then sends each row exactly once (bot/slack/outbox.py).

Outbox keys: `digest:{day}:{channel}:{i}` per message, `digest:{day}:{channel}:chart` for the
chart PNG (files_upload_v2), `ops:{day}:{channel}` for the tracking issues posted to
STALLWATCH_OPS_CHANNEL (only when it differs from the digest channel, which already shows them).
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from typing import Callable

from sqlalchemy import Connection, Engine, func, select, update

from bot.slack.chart import alt_text, chart_data, chart_title
from bot.slack.chart import chart_png as draw_chart
from bot.slack.outbox import enqueue, file_payload
from bot.slack.render import digest_messages, digest_text, tracking_summary
from bot.slack.render.packing import check_message
from bot.slack.render.primitives import header_block, section_block
from bot.snapshots import chart_history
from bot.stalls.context import Wakeups
from bot.stalls.notes import latest_by_account
from bot.stalls.reads import funnel_data, stall_rows
from bot.stalls.views import AckTime, DigestData, OwnerTotal, PingedLine, StallRow, TrackingIssueLine, Trend
from rules.config import Rules
from rules.routing import budget_note, digest_day
from storage.db import read_tx, utcnow, write_tx
from storage.models import Account, Alert, DigestRun, Stall, TrackingIssue
from storage.sql import insert_ignore

log = logging.getLogger(__name__)

UTC = timezone.utc
ACCOUNT = Account.__table__
STALL = Stall.__table__
ALERT = Alert.__table__
DIGEST_RUN = DigestRun.__table__
TRACKING = TrackingIssue.__table__

DAY = timedelta(days=1)
ACTIVATION_DAYS = 14  # "activation rate by track over the last 14 days"
RESOLVED = ("resolved", "auto_resolved")
MAX_TRACKING_ISSUES = 50
LIVE = STALL.c.open_key.is_not(None)


@dataclass
class DigestOutcome:
    """What `post_digest` did."""

    posted: bool
    reason: str
    day: date | None = None
    channel: str | None = None
    messages: int = 0
    keys: list[str] = field(default_factory=list)
    text: str | None = None  # dry run: the rendered digest
    data: DigestData | None = None


def _aware(moment: datetime | None) -> datetime | None:
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


# --------------------------------------------------------------------------- building


def build_digest(engine: Engine, rules: Rules, now: datetime) -> DigestData:
    """What the digest shows, in a dozen batched statements: what changed (a day and a week
    ago), the accounts pinged in the last 24 hours as one line each, and the rest of the
    stalled accounts (one row each, ranked, grouped by owner, with every owner's totals so
    nothing is silently dropped), triage (no owner), backlog and handoffs, time to acknowledge."""
    now = _aware(now) or utcnow()
    day = digest_day(now, rules)
    max_items = rules.digest.max_items
    day_ago, week_ago = now - timedelta(days=1), now - timedelta(days=7)
    with read_tx(engine) as conn:
        since = _previous_digest_at(conn, day) or day_ago
        new_stalls = _count_stalls(conn, STALL.c.opened_at, since, now)
        resolved = _count_stalls(conn, STALL.c.resolved_at, day_ago, now, STALL.c.status.in_(RESOLVED))
        # A figure "a day ago" is known only if Stallwatch was running then (its first stall).
        running = _aware(conn.execute(select(func.min(STALL.c.opened_at))).scalar())

        def then(at: datetime, figure: Callable[[datetime], float]) -> float | None:
            return figure(at) if running is not None and running <= at - timedelta(days=1) else None

        stalled = Trend(_stalled_accounts(conn, now), then(day_ago, lambda t: _stalled_accounts(conn, t)),
                        then(week_ago, lambda t: _stalled_accounts(conn, t)))
        arr = Trend(_arr_at_risk(conn, now), then(day_ago, lambda t: _arr_at_risk(conn, t)),
                    then(week_ago, lambda t: _arr_at_risk(conn, t)))
        new_trend = Trend(new_stalls, then(day_ago, lambda t: _count_stalls(conn, STALL.c.opened_at, t - DAY, t)),
                          then(week_ago, lambda t: _count_stalls(conn, STALL.c.opened_at, t - DAY, t)))
        resolved_trend = Trend(resolved, then(day_ago, lambda t: _count_stalls(
            conn, STALL.c.resolved_at, t - DAY, t, STALL.c.status.in_(RESOLVED))))
        escalated_trend = Trend(_escalated(conn, now - DAY, now), then(day_ago, lambda t: _escalated(conn, t - DAY, t)))
        ping_alerts = _ping_alerts(conn, week_ago, now)  # the week's: the day's are the end of it
        pinged = _pinged(conn, ping_alerts, day_ago)
        pinged_today = _pinged_accounts(day_ago, now)
        open_accounts = select(STALL.c.account_id).where(LIVE, STALL.c.status == "open").distinct()
        total_open = conn.execute(select(func.count()).select_from(open_accounts.subquery())).scalar_one()
        snoozed = conn.execute(select(func.count(func.distinct(STALL.c.account_id))).where(
            LIVE, STALL.c.account_id.not_in(open_accounts))).scalar_one()
        rest = [STALL.c.account_id.not_in(pinged_today)]
        ranked, _ = stall_rows(conn, now, limit=max_items, rules=rules, where=rest)  # one row per account
        rows = _with_overflow_notes(conn, [r for r in ranked if r.status == "open"])
        rows = _with_latest_notes(conn, rows)
        totals = _owner_totals(conn, rest)
        backlog = conn.execute(select(func.count(func.distinct(STALL.c.account_id))).select_from(
            ALERT.join(STALL, STALL.c.id == ALERT.c.stall_id)).where(ALERT.c.kind == "backlog", LIVE)).scalar_one()
        handoffs = _handoffs(conn, week_ago, now)
        acks = _ack_times(ping_alerts)
        issues = [
            TrackingIssueLine(kind=t.kind, event_name=t.event_name, property=t.property or "", count=t.count,
                              detail=t.detail or "")
            for t in conn.execute(
                select(TRACKING.c.kind, TRACKING.c.event_name, TRACKING.c.property, TRACKING.c.count,
                       TRACKING.c.detail)
                .where(TRACKING.c.resolved_at.is_(None))
                .order_by(TRACKING.c.last_seen_at.desc(), TRACKING.c.id).limit(MAX_TRACKING_ISSUES))
        ]
        funnel = funnel_data(conn, rules, now, ACTIVATION_DAYS)
        history = chart_history(conn, rules, now)
    return DigestData(
        day=day, new_stalls=int(new_stalls), arr_at_risk=float(arr.now or 0.0),
        resolved_since_yesterday=int(resolved),
        activation_by_track={t.track: t.activation_rate for t in funnel.tracks},
        rows=rows, total_open=int(total_open), snoozed=int(snoozed), tracking_issues=issues, funnel=funnel,
        max_items=max_items, per_owner=rules.digest.per_owner, stalled=stalled, arr_trend=arr, new_trend=new_trend,
        resolved_trend=resolved_trend, escalated_trend=escalated_trend, pinged=pinged, owner_totals=totals,
        backlog_accounts=int(backlog), handoffs=handoffs, ack_times=acks, history=history,
    )


def _count_stalls(conn: Connection, column, start: datetime, end: datetime, *conds) -> int:
    return conn.execute(select(func.count()).select_from(STALL)
                        .where(column >= start, column <= end, *conds)).scalar_one()


def _live_at(at: datetime):
    """Stalls live at `at`: opened by then, not closed by then."""
    return (STALL.c.opened_at <= at) & (STALL.c.resolved_at.is_(None) | (STALL.c.resolved_at > at))


def _stalled_accounts(conn: Connection, at: datetime) -> int:
    return conn.execute(select(func.count(func.distinct(STALL.c.account_id))).where(_live_at(at))).scalar_one()


def _arr_at_risk(conn: Connection, at: datetime) -> float:
    """The ARR of the accounts stalled at `at` (today's ARR figures: ARR history is not kept)."""
    accounts = select(STALL.c.account_id).where(_live_at(at)).distinct()
    return float(conn.execute(select(func.coalesce(func.sum(ACCOUNT.c.arr), 0.0))
                              .where(ACCOUNT.c.id.in_(accounts))).scalar_one() or 0.0)


def _escalated(conn: Connection, start: datetime, end: datetime) -> int:
    return conn.execute(select(func.count(func.distinct(STALL.c.account_id))).select_from(
        ALERT.join(STALL, STALL.c.id == ALERT.c.stall_id)).where(
        ALERT.c.kind == "escalation", ALERT.c.created_at > start, ALERT.c.created_at <= end)).scalar_one()


def _pinged_accounts(start: datetime, end: datetime):
    """The accounts pinged in real time between `start` and `end` (a subquery)."""
    return (select(STALL.c.account_id).select_from(ALERT.join(STALL, STALL.c.id == ALERT.c.stall_id))
            .where(ALERT.c.kind == "ping", ALERT.c.created_at > start, ALERT.c.created_at <= end)
            .distinct())


def _ping_alerts(conn: Connection, start: datetime, end: datetime) -> list:
    """The ping alerts created between `start` and `end` (the week the ack times cover; the
    day's pinged lines are the end of it), read once for both, in the pinged lines' order."""
    return conn.execute(
        select(ALERT.c.stall_id, ALERT.c.priority, ALERT.c.created_at, ALERT.c.acked_by, ALERT.c.acked_at,
               ALERT.c.closed_at, STALL.c.account_id, ACCOUNT.c.name, ACCOUNT.c.arr, ACCOUNT.c.owner_slack_id,
               ACCOUNT.c.owner_email)
        .select_from(ALERT.join(STALL, STALL.c.id == ALERT.c.stall_id)
                     .outerjoin(ACCOUNT, ACCOUNT.c.id == STALL.c.account_id))
        .where(ALERT.c.kind == "ping", ALERT.c.created_at > start, ALERT.c.created_at <= end)
        .order_by(ALERT.c.priority, ACCOUNT.c.arr.desc(), ALERT.c.id)).all()


def _pinged(conn: Connection, alerts: list, since: datetime) -> list[PingedLine]:
    """One line per account pinged after `since` (of _ping_alerts' rows), with where its
    alert stands now."""
    lines: dict[str, PingedLine] = {}
    for r in alerts:
        if _aware(r.created_at) <= since:
            continue
        if r.account_id in lines:
            line = lines[r.account_id]
            if r.acked_by and line.status == "open":  # acknowledged on any of its destinations
                lines[r.account_id] = replace(line, status="acknowledged", by=r.acked_by)
            continue
        status = "closed" if r.closed_at else "acknowledged" if r.acked_at else "open"
        lines[r.account_id] = PingedLine(stall_id=r.stall_id, account_name=r.name or r.account_id,
                                         priority=r.priority, arr=float(r.arr or 0.0),
                                         owner=r.owner_slack_id or r.owner_email, status=status, by=r.acked_by,
                                         at=_aware(r.created_at), account_id=r.account_id)
    notes = latest_by_account(conn, list(lines)) if lines else {}
    return [replace(line, latest_note=notes.get(account)) for account, line in lines.items()]


def _owner_totals(conn: Connection, where) -> dict[str | None, OwnerTotal]:
    """Per owner, every open (not snoozed) stalled account the digest carries: how many, their
    ARR (each account once) and their top priorities."""
    top: dict[str, tuple] = {}
    for r in conn.execute(select(STALL.c.account_id, STALL.c.priority, ACCOUNT.c.arr, ACCOUNT.c.owner_slack_id,
                                 ACCOUNT.c.owner_email)
                          .select_from(STALL.join(ACCOUNT, ACCOUNT.c.id == STALL.c.account_id))
                          .where(LIVE, STALL.c.status == "open", *where)):
        best = top.get(r.account_id)
        if best is None or r.priority < best[0]:
            top[r.account_id] = (r.priority, float(r.arr or 0.0), r.owner_slack_id or r.owner_email)
    acc: dict[str | None, list] = {}
    for priority, arr, owner in top.values():
        n, total, by = acc.setdefault(owner, [0, 0.0, {}])
        by[priority] = by.get(priority, 0) + 1
        acc[owner][0], acc[owner][1] = n + 1, total + max(arr, 0.0)
    return {owner: OwnerTotal(n, total, dict(sorted(by.items()))) for owner, (n, total, by) in acc.items()}


def _handoffs(conn: Connection, start: datetime, end: datetime) -> list[StallRow]:
    rows = conn.execute(
        select(STALL.c.id, STALL.c.priority, STALL.c.recovery_attempts, ACCOUNT.c.name, ACCOUNT.c.arr,
               ACCOUNT.c.owner_slack_id, ACCOUNT.c.owner_email, STALL.c.account_id)
        .select_from(ALERT.join(STALL, STALL.c.id == ALERT.c.stall_id).outerjoin(ACCOUNT, ACCOUNT.c.id == STALL.c.account_id))
        .where(ALERT.c.kind == "winback", ALERT.c.created_at > start, ALERT.c.created_at <= end, LIVE)
        .order_by(ACCOUNT.c.arr.desc(), STALL.c.id).limit(20))
    return [StallRow(stall_id=r.id, account_name=r.name or r.account_id, priority=r.priority, arr=float(r.arr or 0),
                     why=f"{r.recovery_attempts} recovery emails, no progress: a win-back for the managers",
                     owner=r.owner_slack_id or r.owner_email) for r in rows]


def _ack_times(alerts: list) -> list[AckTime]:
    """Per CSM (the account's owner), the median time from a ping to its acknowledgement over
    the pings of _ping_alerts' rows (each account's ping once, its earliest acknowledgement)."""
    first: dict[int, tuple] = {}
    for r in alerts:
        acked = _aware(r.acked_at)
        seen = first.get(r.stall_id)
        if seen is None or (acked is not None and (seen[1] is None or acked < seen[1])):
            first[r.stall_id] = (_aware(r.created_at), acked, r.owner_slack_id or r.owner_email)
    per_owner: dict[str | None, list] = {}
    for pinged_at, acked, owner in first.values():
        waits = per_owner.setdefault(owner, [0, []])
        waits[0] += 1
        if acked is not None:
            waits[1].append(max((acked - pinged_at).total_seconds() / 60, 0.0))
    return sorted((AckTime(owner, statistics.median(w) if w else None, n, len(w))
                   for owner, (n, w) in per_owner.items()),
                  key=lambda a: (a.median_minutes is None, -(a.median_minutes or 0), str(a.owner)))


def _previous_digest_at(conn: Connection, day: date) -> datetime | None:
    """When the latest earlier digest was made (any channel): "new since the previous digest"."""
    return _aware(conn.execute(select(func.max(DIGEST_RUN.c.created_at)).where(DIGEST_RUN.c.day < day)).scalar())


def _with_overflow_notes(conn: Connection, rows: list[StallRow]) -> list[StallRow]:
    """Stalls the hourly budget pushed out of real time (router's Alert kind "overflow") say so."""
    if not rows:
        return rows
    overflowed = set(conn.execute(
        select(ALERT.c.stall_id).where(ALERT.c.kind == "overflow", ALERT.c.stall_id.in_([r.stall_id for r in rows]))
    ).scalars())
    if not overflowed:
        return rows
    return [replace(r, note=budget_note(r.owner)) if r.stall_id in overflowed and not r.note else r for r in rows]


def _with_latest_notes(conn: Connection, rows: list[StallRow]) -> list[StallRow]:
    """Each account's latest note (a person's, bot/stalls/notes.py) on its row."""
    latest = latest_by_account(conn, [r.account_id for r in rows if r.account_id])
    if not latest:
        return rows
    from dataclasses import replace

    return [replace(r, latest_note=latest[r.account_id]) if r.account_id in latest else r for r in rows]


# --------------------------------------------------------------------------- the chart


def chart_png(d: DigestData) -> bytes | None:
    """Eight weeks of open alerts and ARR at risk by priority and activation by track, from
    the daily snapshots (bot/slack/chart.py). None when there is no history to plot."""
    c = chart_data(d.history)
    return None if c is None else draw_chart(c)


# --------------------------------------------------------------------------- rendering


def render_text(d: DigestData) -> str:
    """The digest as plain text (dry run, CLI): the fallback line, then every block's text."""
    lines = [digest_text(d), ""]
    for i, message in enumerate(digest_messages(d)):
        if i:
            lines.append("----")
        for block in message:
            lines.extend(_block_text(block.to_dict()))
    return "\n".join(lines).rstrip() + "\n"


def _block_text(block: dict) -> list[str]:
    out: list[str] = []
    kind = block.get("type")
    if kind == "divider":
        return ["---"]
    if isinstance(block.get("text"), dict):
        out.append(block["text"].get("text", ""))
    for f in block.get("fields") or []:
        out.append(f.get("text", "").replace("\n", ": ", 1))
    for el in block.get("elements") or []:
        if isinstance(el, dict) and el.get("type") in ("mrkdwn", "plain_text"):
            out.append(el.get("text", ""))
    return out


def ops_blocks(d: DigestData) -> list:
    blocks = [header_block(f"Tracking issues · {d.day:%a %d %b %Y}"), section_block(tracking_summary(d.tracking_issues))]
    check_message(blocks)
    return blocks


# --------------------------------------------------------------------------- posting


def post_digest(engine: Engine, settings, rules: Rules, now: datetime | None = None, *, dry_run: bool = False,
                wakeups: Wakeups | None = None, clock: Callable[[], datetime] = utcnow) -> DigestOutcome:
    """Post today's digest to STALLWATCH_DIGEST_CHANNEL once (see the module doc). `now` is the
    digest's moment; `clock` what time it is (when its rows are enqueued)."""
    now = _aware(now) or utcnow()
    day = digest_day(now, rules)
    channel = settings.digest_channel
    if dry_run:
        d = build_digest(engine, rules, now)
        return DigestOutcome(posted=False, reason="dry run: nothing stored or posted", day=day, channel=channel,
                             messages=len(digest_messages(d)), text=render_text(d), data=d)
    if not channel:
        return DigestOutcome(posted=False, reason="STALLWATCH_DIGEST_CHANNEL is not set: no digest posted", day=day)
    if _already(engine, day, channel):  # cheap check first; the INSERT below is what decides
        return DigestOutcome(posted=False, reason=f"the digest for {day} was already posted to {channel}",
                             day=day, channel=channel)
    d = build_digest(engine, rules, now)
    messages = digest_messages(d)
    png = _safe_chart(d)
    ops = settings.ops_channel
    keys: list[str] = []
    with write_tx(engine) as conn:
        run_id = conn.execute(
            insert_ignore(conn, DIGEST_RUN, "day", "channel")
            .values(day=day, channel=channel, created_at=now, posted_at=None, items=len(d.rows))
            .returning(DIGEST_RUN.c.id)).scalar()
        if run_id is None:
            return DigestOutcome(posted=False, reason=f"the digest for {day} was already posted to {channel}",
                                 day=day, channel=channel)
        for i, blocks in enumerate(messages):
            key = f"digest:{day}:{channel}:{i}"
            text = digest_text(d) if i == 0 else f"Stall digest for {day} (continued, {i + 1}/{len(messages)})"
            enqueue(conn, key=key, method="chat.postMessage", now=clock(), payload={"channel": channel, "text": text,
                                                                                    "blocks": blocks})
            keys.append(key)
        if png is not None:
            key = f"digest:{day}:{channel}:chart"
            c = chart_data(d.history)
            enqueue(conn, key=key, method="files_upload_v2", now=clock(), payload=file_payload(
                png, channel=channel, filename=f"stallwatch-digest-{day}.png", title=chart_title(c),
                alt_txt=alt_text(c)))
            keys.append(key)
        if d.tracking_issues and ops and ops != channel:
            key = f"ops:{day}:{channel}"
            enqueue(conn, key=key, method="chat.postMessage", now=clock(), payload={
                "channel": ops, "text": f"{len(d.tracking_issues)} tracking issue(s) on {day}",
                "blocks": ops_blocks(d)})
            keys.append(key)
        if d.tracking_issues:
            conn.execute(update(TRACKING).where(TRACKING.c.resolved_at.is_(None), TRACKING.c.reported_at.is_(None))
                         .values(reported_at=now))
        conn.execute(update(DIGEST_RUN).where(DIGEST_RUN.c.id == run_id).values(posted_at=now))
    if wakeups is not None:
        wakeups.slack_outbox.set()
    log.info("digest for %s queued to %s: %d message(s)%s", day, channel, len(messages),
             ", chart" if png is not None else "")
    return DigestOutcome(posted=True, reason="queued", day=day, channel=channel, messages=len(messages), keys=keys,
                         data=d)


def _already(engine: Engine, day: date, channel: str) -> bool:
    with read_tx(engine) as conn:
        return conn.execute(select(DIGEST_RUN.c.id).where(DIGEST_RUN.c.day == day, DIGEST_RUN.c.channel == channel)
                            ).first() is not None


def _safe_chart(d: DigestData) -> bytes | None:
    try:
        return chart_png(d)
    except Exception:  # a chart is a nice-to-have: never lose the digest over it
        log.exception("digest: chart rendering failed")
        return None


__all__ = ["DigestOutcome", "build_digest", "post_digest", "chart_png", "render_text"]
