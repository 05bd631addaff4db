"""Tracking health in real time (issue 14): volume drops posted as they happen, tracking
issues cleared after a clean period, both to the ops channel (STALLWATCH_OPS_CHANNEL, else
the digest channel).

`check_tracking` is the leader's job, every CHECK_MINUTES:

1. Reads the hourly counters (storage.models.EventVolumeHour, written by ingest) and runs
   rules.tracking's detector over them.
2. Records each finding as a `volume_drop` tracking issue, one per event (property: its
   source) or quiet source (event_name: the source, property ""). A finding already open
   only has its `last_seen_at`, count and detail refreshed: it is not posted again while open.
3. Posts each volume-drop issue not posted yet, once: key `tracking:{id}:open:{stamp}`
   (stamp: its `reported_at`, set in the same transaction, so a reopened issue is a new post).
4. Clears every open tracking issue of any kind with no occurrence for `clear_after_hours`
   (for a volume drop: not found by the detector for that long): `resolved_at` is set by an
   UPDATE that re-checks both conditions, so an occurrence stored meanwhile by ingest keeps it
   open, and whoever's UPDATE cleared it enqueues the ONE clearing post (key
   `tracking:{id}:cleared:{stamp}`). The clearing is a reply in the thread of the issue's own
   post when it has one: the original stays as it was said (what dropped, by how much) with
   the outcome under it, and the reply shows up as a new message in the ops channel's thread
   list, where an edit in place would go unnoticed. Issues only ever listed in a digest
   (missing properties, times out of window) have no post of their own: their clearing is a
   message in the ops channel. An issue never reported to anyone is cleared without a post.
5. Prunes counters older than RETENTION_DAYS.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy import Connection, Engine, delete, func, insert, select, update

from bot.slack.outbox import enqueue
from bot.slack.render.primitives import section_block
from bot.slack.text import md
from bot.stalls.context import Wakeups
from rules._text import duration
from rules.config import Rules
from rules.tracking import Subject, VolumeFinding, volume_findings
from storage.db import read_tx, utcnow, write_tx
from storage.models import EventVolumeHour, SlackOutbox, TrackingIssue

log = logging.getLogger(__name__)

UTC = timezone.utc
HOURS = EventVolumeHour.__table__
TRACKING = TrackingIssue.__table__
OUTBOX = SlackOutbox.__table__

CHECK_MINUTES = 15
# baseline_days (at most 28), the day each window may span, and a week of an open drop's
# own days: its baseline is taken from before it began (rules.tracking).
RETENTION_DAYS = 37
VOLUME_DROP = "volume_drop"
NAME_MAX = 120  # of an event name in a post


@dataclass
class TrackingOutcome:
    """What one `check_tracking` did."""

    findings: list[VolumeFinding] = field(default_factory=list)
    opened: list[int] = field(default_factory=list)  # volume-drop issues new or reopened
    cleared: list[int] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # outbox rows enqueued

    def summary(self) -> str:
        return (f"tracking: {len(self.findings)} finding(s), {len(self.opened)} new issue(s), "
                f"{len(self.cleared)} cleared, {len(self.keys)} post(s)")


def check_tracking(engine: Engine, settings, rules: Rules, now: datetime | None = None, *,
                   wakeups: Wakeups | None = None) -> TrackingOutcome:
    """Detect, record, post and clear (see the module doc). Leader only: one run at a time."""
    now = _aware(now) or utcnow()
    cfg = rules.tracking
    ops = settings.ops_channel
    out = TrackingOutcome()
    with read_tx(engine) as conn:
        open_drops = _open_drops(conn)
        series, history_from = _read_series(conn, now, cfg.baseline_days, [since for _, since in open_drops.values()])
    out.findings = volume_findings(series, now, cfg, history_from=history_from,
                                   open_since={s: since for s, (_, since) in open_drops.items()})
    with write_tx(engine) as conn:
        out.opened = _record(conn, out.findings, open_drops, now)
        if ops:
            out.keys += _post_new(conn, ops, now)
        cleared, keys = _clear(conn, ops, now - timedelta(hours=cfg.clear_after_hours), now)
        out.cleared, out.keys = cleared, out.keys + keys
        conn.execute(delete(HOURS).where(HOURS.c.hour < now - timedelta(days=RETENTION_DAYS)))
    if out.keys and wakeups is not None:
        wakeups.slack_outbox.set()
    return out


# --------------------------------------------------------------------------- reading


def _subject(event_name: str, prop: str) -> Subject:
    """A volume_drop row's subject: an event (property: its source) or a source (property "")."""
    return (prop, event_name) if prop else (event_name, "")


def _row_key(subject: Subject) -> tuple[str, str]:
    source, name = subject
    return (name, source) if name else (source, "")


def _open_drops(conn: Connection) -> dict[Subject, tuple[int, datetime]]:
    rows = conn.execute(select(TRACKING.c.id, TRACKING.c.event_name, TRACKING.c.property, TRACKING.c.first_seen_at)
                        .where(TRACKING.c.kind == VOLUME_DROP, TRACKING.c.resolved_at.is_(None)))
    return {_subject(r.event_name, r.property or ""): (r.id, _aware(r.first_seen_at)) for r in rows}


def _read_series(conn: Connection, now: datetime, baseline_days: int, open_since: list[datetime]):
    """The hourly counts the detector needs (the baseline days before the oldest open drop
    included), per subject and per source, and when counting began."""
    history_from = _aware(conn.execute(select(func.min(HOURS.c.hour))).scalar())
    start = min([now, *open_since]) - timedelta(days=baseline_days + 2)
    series: dict[Subject, dict[datetime, int]] = {}
    for hour, source, name, n in conn.execute(select(HOURS.c.hour, HOURS.c.source, HOURS.c.name, HOURS.c.count)
                                              .where(HOURS.c.hour >= start)):
        hour = _aware(hour)
        if name:
            by_hour = series.setdefault((source, name), {})
            by_hour[hour] = by_hour.get(hour, 0) + n
        whole = series.setdefault((source, ""), {})
        whole[hour] = whole.get(hour, 0) + n
    return series, history_from


# --------------------------------------------------------------------------- recording


def _record(conn: Connection, findings: list[VolumeFinding], open_drops: dict[Subject, tuple[int, datetime]],
            now: datetime) -> list[int]:
    """Store the findings as volume_drop issues; return the ids of those new or reopened."""
    opened: list[int] = []
    for f in findings:
        event_name, prop = _row_key((f.source, f.name))
        values = {"last_seen_at": now, "count": round(f.seen), "detail": f.detail[:1000]}
        if (f.source, f.name) in open_drops:
            conn.execute(update(TRACKING).where(TRACKING.c.id == open_drops[(f.source, f.name)][0]).values(**values))
            continue
        found = conn.execute(select(TRACKING.c.id).where(
            TRACKING.c.kind == VOLUME_DROP, TRACKING.c.event_name == event_name, TRACKING.c.property == prop)).scalar()
        episode = {**values, "first_seen_at": now, "reported_at": None, "resolved_at": None}
        if found is None:
            found = conn.execute(insert(TRACKING).values(kind=VOLUME_DROP, event_name=event_name, property=prop,
                                                         **episode).returning(TRACKING.c.id)).scalar_one()
        else:  # a drop that had cleared is back: a new episode, posted again
            conn.execute(update(TRACKING).where(TRACKING.c.id == found).values(**episode))
        opened.append(found)
    return opened


def _post_new(conn: Connection, ops: str, now: datetime) -> list[str]:
    """Post every open volume drop not posted yet, once (reported_at marks it posted)."""
    keys = []
    rows = conn.execute(select(TRACKING).where(TRACKING.c.kind == VOLUME_DROP, TRACKING.c.resolved_at.is_(None),
                                               TRACKING.c.reported_at.is_(None)).order_by(TRACKING.c.id)).all()
    for row in rows:
        key = _open_key(row.id, now)
        text = f":warning: {_what(row)}: {md(row.detail, 400)}"
        enqueue(conn, key=key, method="chat.postMessage", now=now,
                payload={"channel": ops, "text": text, "blocks": [section_block(text)]})
        conn.execute(update(TRACKING).where(TRACKING.c.id == row.id).values(reported_at=now))
        keys.append(key)
    return keys


def _clear(conn: Connection, ops: str | None, cutoff: datetime, now: datetime) -> tuple[list[int], list[str]]:
    """Resolve the open issues last seen before `cutoff`; post each clearing once."""
    cleared, keys = [], []
    due = conn.execute(select(TRACKING).where(TRACKING.c.resolved_at.is_(None), TRACKING.c.last_seen_at <= cutoff)
                       .order_by(TRACKING.c.id)).all()
    for row in due:
        # Re-checked in the UPDATE: an occurrence stored since the SELECT keeps the issue open.
        done = conn.execute(update(TRACKING).where(TRACKING.c.id == row.id, TRACKING.c.resolved_at.is_(None),
                                                   TRACKING.c.last_seen_at <= cutoff)
                            .values(resolved_at=now)).rowcount
        if done != 1:
            continue
        cleared.append(row.id)
        if not ops or row.reported_at is None:
            continue  # nobody was told about it: nothing to take back
        key = f"tracking:{row.id}:cleared:{_stamp(now)}"
        text = f":white_check_mark: Cleared: {_cleared(row, duration(now - _aware(row.last_seen_at)))}"
        payload: dict = {"text": text, "blocks": [section_block(text)]}
        thread = _open_key(row.id, _aware(row.reported_at)) if row.kind == VOLUME_DROP else None
        if thread and conn.execute(select(OUTBOX.c.id).where(OUTBOX.c.key == thread)).first() is not None:
            payload["thread_ts_from"] = thread
        else:
            payload["channel"] = ops
        enqueue(conn, key=key, method="chat.postMessage", now=now, payload=payload)
        keys.append(key)
    return cleared, keys


# --------------------------------------------------------------------------- wording


def _what(row) -> str:
    """The issue in a few words (names are customer text: escaped)."""
    name = md(row.event_name, NAME_MAX)
    if row.kind == VOLUME_DROP:
        return f"source `{name}` went quiet" if not row.property else f"`{name}` volume dropped"
    if row.kind == "missing_property":
        return f"`{name}` arrives without `{md(row.property, NAME_MAX)}`"
    if row.kind == "time_out_of_window":
        return f"`{name}` arrives with `{md(row.property, NAME_MAX)}` out of the time window"
    return f"`{name}`: {md(row.kind.replace('_', ' '), 60)}"


def _cleared(row, clean: str) -> str:
    """What the clearing says: the issue has not occurred for `clean` (e.g. "1 day")."""
    name = md(row.event_name, NAME_MAX)
    if row.kind == VOLUME_DROP:
        if not row.property:
            return f"source `{name}` is sending again (no quiet spell for {clean})."
        return f"`{name}` volume is back (no drop for {clean})."
    return f"{_what(row)}: not seen for {clean}."


def _open_key(issue_id: int, reported_at: datetime) -> str:
    return f"tracking:{issue_id}:open:{_stamp(reported_at)}"


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive UTC."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


__all__ = ["CHECK_MINUTES", "TrackingOutcome", "check_tracking"]
