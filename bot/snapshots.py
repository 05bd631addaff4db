"""Daily snapshots: each account's health, and the company's figures the digest charts.

`take_snapshot` runs once a day (a leader job, bot/scheduler.py, shortly before the digest)
and is idempotent per day: a re-run the same day replaces that day's rows. Per-account rows
are kept for HEALTH_DAYS_KEPT days (100k accounts x 90 days stays a few million narrow rows);
the company figures (one row a day) are kept.

The day is the local date in the digest's time zone, so the chart's days are the digest's.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Date, Engine, delete, func, insert, literal, select

from rules.config import PRIORITIES, TRACKS, Rules
from rules.plan import plan_for
from storage.db import read_tx, write_tx
from storage.models import Account, AccountHealthDay, DailySnapshot, Stall

log = logging.getLogger(__name__)

ACCOUNT = Account.__table__
STALL = Stall.__table__
HEALTH_DAY = AccountHealthDay.__table__
SNAPSHOT = DailySnapshot.__table__

HEALTH_DAYS_KEPT = 90
# The activation cohort: accounts whose day-N checkpoint passed in these last days (mature:
# each had its full checkpoint to activate), so the rate is not dragged down by accounts
# that still have time.
COHORT_DAYS = 28
# "A week ago": the latest snapshot between 7 and this many days back (a missed day or two
# still gives a trend).
TREND_LOOKBACK_DAYS = 10


@dataclass(frozen=True)
class CompanyFigures:
    """One day's company-level figures (a DailySnapshot row)."""

    day: date
    open_alerts: Mapping[str, int]  # priority -> accounts whose open alert has it
    arr_at_risk: Mapping[str, float]  # priority -> their ARR
    activation: Mapping[str, Mapping[str, float | int | None]] = field(default_factory=dict)
    # track -> {"rate": 0..1 or None, "accounts": cohort size}


@dataclass(frozen=True)
class SnapshotReport:
    day: date
    accounts: int  # per-account health rows written
    pruned: int  # per-account rows past the retention dropped
    figures: CompanyFigures


def snapshot_day(now: datetime, rules: Rules) -> date:
    """The local date in the digest's time zone."""
    return now.astimezone(ZoneInfo(rules.digest.timezone)).date()


def take_snapshot(engine: Engine, rules: Rules, now: datetime) -> SnapshotReport:
    """Write today's snapshot (replacing one already written today) and drop per-account
    rows older than HEALTH_DAYS_KEPT days. One transaction: a reader sees the old day or
    the new one, never half of it."""
    day = snapshot_day(now, rules)
    with read_tx(engine) as conn:
        figures = company_figures(conn, rules, now, day)
    with write_tx(engine) as conn:
        conn.execute(delete(HEALTH_DAY).where(HEALTH_DAY.c.day == day))
        conn.execute(insert(HEALTH_DAY).from_select(
            ["account_id", "day", "health"],
            select(ACCOUNT.c.id, literal(day, Date()), ACCOUNT.c.health).where(ACCOUNT.c.health.is_not(None)),
        ))
        # Counted, not the INSERT's rowcount: PostgreSQL's driver may answer -1 for INSERT ... SELECT.
        written = conn.execute(select(func.count()).select_from(HEALTH_DAY).where(HEALTH_DAY.c.day == day)).scalar_one()
        pruned = conn.execute(delete(HEALTH_DAY).where(
            HEALTH_DAY.c.day <= day - timedelta(days=HEALTH_DAYS_KEPT))).rowcount
        conn.execute(delete(SNAPSHOT).where(SNAPSHOT.c.day == day))
        conn.execute(insert(SNAPSHOT).values(
            day=day, open_alerts=dict(figures.open_alerts), arr_at_risk=dict(figures.arr_at_risk),
            activation={t: dict(v) for t, v in figures.activation.items()}, created_at=now))
    log.info("snapshot for %s: %d account health rows, %d old rows dropped", day, written, pruned)
    return SnapshotReport(day=day, accounts=int(written or 0), pruned=int(pruned or 0), figures=figures)


def company_figures(conn: Connection, rules: Rules, now: datetime, day: date) -> CompanyFigures:
    """Open alerts and ARR at risk by priority (one alert per account: its top open stall's
    priority; priorities sort as text), and activation of the mature cohort by track."""
    top = (select(STALL.c.account_id, func.min(STALL.c.priority).label("priority"))
           .where(STALL.c.open_key.is_not(None), STALL.c.status == "open").group_by(STALL.c.account_id).subquery())
    alerts = {p: 0 for p in PRIORITIES}
    arr = {p: 0.0 for p in PRIORITIES}
    for priority, count, total in conn.execute(
            select(top.c.priority, func.count(), func.coalesce(func.sum(ACCOUNT.c.arr), 0.0))
            .select_from(top.join(ACCOUNT, ACCOUNT.c.id == top.c.account_id)).group_by(top.c.priority)):
        if priority in alerts:
            alerts[priority], arr[priority] = int(count), round(float(total or 0.0), 2)
    return CompanyFigures(day=day, open_alerts=alerts, arr_at_risk=arr, activation=_activation(conn, rules, now))


def _activation(conn: Connection, rules: Rules, now: datetime) -> dict[str, dict]:
    """Per track, in the tracks' natural order: of the accounts whose checkpoint passed in the
    last COHORT_DAYS days, the share activated by their checkpoint."""
    plan = plan_for(rules)
    checkpoints = {t: plan.checkpoint_for(t) for t in TRACKS}
    earliest = now - max(checkpoints.values()) - timedelta(days=COHORT_DAYS)
    latest = now - min(checkpoints.values())
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for track, signup, activated in conn.execute(
            select(ACCOUNT.c.track, ACCOUNT.c.signup_at, ACCOUNT.c.activated_at)
            .where(ACCOUNT.c.signup_at >= earliest, ACCOUNT.c.signup_at <= latest)):
        checkpoint_at = _aware(signup) + checkpoints.get(track, plan.checkpoint)
        if not (now - timedelta(days=COHORT_DAYS) < checkpoint_at <= now):
            continue
        c = counts[track]
        c[0] += 1
        c[1] += activated is not None and _aware(activated) <= checkpoint_at
    order = [t for t in TRACKS if t in counts] + sorted(t for t in counts if t not in TRACKS)
    return {t: {"rate": round(counts[t][1] / counts[t][0], 4), "accounts": counts[t][0]} for t in order}


# --------------------------------------------------------------------------- reading back


def health_week_ago(conn: Connection, account_ids: Iterable[str], today: date) -> dict[str, int]:
    """Each account's health a week before `today`: its latest snapshot 7 to
    TREND_LOOKBACK_DAYS days back (none: not in the result)."""
    ids = sorted(set(account_ids))
    if not ids:
        return {}
    out: dict[str, tuple[date, int]] = {}
    for aid, day, health in conn.execute(
            select(HEALTH_DAY.c.account_id, HEALTH_DAY.c.day, HEALTH_DAY.c.health)
            .where(HEALTH_DAY.c.account_id.in_(ids),
                   HEALTH_DAY.c.day.between(today - timedelta(days=TREND_LOOKBACK_DAYS), today - timedelta(days=7)))):
        if aid not in out or day > out[aid][0]:
            out[aid] = (day, int(health))
    return {aid: health for aid, (_, health) in out.items()}


def chart_history(conn: Connection, rules: Rules, now: datetime, weeks: int = 8) -> list[CompanyFigures]:
    """The company figures of the last `weeks` weeks, oldest first, ending today: today's
    snapshot, or today's live figures when the job has not written it yet."""
    today = snapshot_day(now, rules)
    since = today - timedelta(days=weeks * 7 - 1)
    rows = [CompanyFigures(day=r.day, open_alerts=r.open_alerts or {}, arr_at_risk=r.arr_at_risk or {},
                           activation=r.activation or {})
            for r in conn.execute(select(SNAPSHOT).where(SNAPSHOT.c.day.between(since, today))
                                  .order_by(SNAPSHOT.c.day))]
    if not rows or rows[-1].day != today:
        rows.append(company_figures(conn, rules, now, today))
    return rows


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


__all__ = ["CompanyFigures", "SnapshotReport", "take_snapshot", "company_figures", "chart_history",
           "health_week_ago", "snapshot_day", "HEALTH_DAYS_KEPT"]
