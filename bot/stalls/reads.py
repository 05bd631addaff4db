"""The read side of /stalls, the App Home, /journey, /funnel and the digest: ranked stall lists,
an account's journey and the signup funnel, as the read models of bot/stalls/views.py.

Plain blocking SQLAlchemy Core (listeners call these through asyncio.to_thread); each view
is a handful of batched statements, never one per row.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import Connection, case, func, or_, select, text

from bot.stalls.views import (
    EventLine,
    FunnelData,
    FunnelStage,
    JourneyViewData,
    StallRow,
    StepLine,
    TicketLine,
    TrackRate,
    aware,
    days_since,
    open_tickets,
    parse_time,
    priority_text,
    reason_text,
)
from bot.stalls import notes
from bot.snapshots import health_week_ago
from rules.config import TRACKS, Rules
from rules.plan import plan_for
from storage.models import Account, Event, Stall, Ticket

ACCOUNT = Account.__table__
STALL = Stall.__table__
EVENT = Event.__table__
TICKET = Ticket.__table__

LIVE = STALL.c.open_key.is_not(None)
JOURNEY_NOTES = 5  # /journey's latest notes


# --- ranked stall lists (/stalls, App Home, /journey's open stalls) ---------------------------

_ROW_COLS = (
    STALL.c.id, STALL.c.priority, STALL.c.why, STALL.c.stalled_since, STALL.c.status, STALL.c.assignee,
    STALL.c.snoozed_until, STALL.c.rule, STALL.c.step, STALL.c.detail, STALL.c.threshold_at, STALL.c.score,
    ACCOUNT.c.name, ACCOUNT.c.id.label("account_id"), ACCOUNT.c.arr, ACCOUNT.c.arr.label("account_arr"),
    ACCOUNT.c.owner_slack_id, ACCOUNT.c.owner_email, ACCOUNT.c.renewal_date, ACCOUNT.c.payment_failed_at,
    ACCOUNT.c.health,
)
SNOOZED_LAST = case((STALL.c.status == "snoozed", 1), else_=0)


def _row(r, now: datetime, rules: Rules | None = None, others: Sequence = (), open_tickets: int = 0,
         week_ago: int | None = None) -> StallRow:
    why, because = r.why or "", None
    if rules is not None:  # the reasons and the priority in words, as of now
        why = " + ".join(reason_text(x, rules, now) for x in (r, *others))
        because = priority_text(r, rules, now, open_tickets=open_tickets)
    return StallRow(
        stall_id=r.id, account_name=r.name or r.account_id, priority=r.priority, arr=float(r.arr or 0.0),
        why=why, days_stalled=days_since(r.stalled_since, now),
        owner=r.owner_slack_id or r.owner_email, status=r.status, assignee=r.assignee,
        snoozed_until=aware(r.snoozed_until), reasons=len(others) + 1, because=because, account_id=r.account_id,
        health=r.health,
        health_trend=r.health - week_ago if r.health is not None and week_ago is not None else None,
    )


def stall_rows(conn: Connection, now: datetime, *, user: str | None = None,
               priorities: Sequence[str] = (), account_id: str | None = None,
               limit: int = 40, rules: Rules | None = None, where: Sequence = ()) -> tuple[list[StallRow], int]:
    """Live stalls (open first, then snoozed), ranked by score; with `user`, only those whose
    account the user owns or that are assigned to the user. Returns (rows, total matching).

    With `rules`, one row per account (one alert per account): its top stall's row naming
    every reason, accounts ranked by their top stall, and the total counts accounts; the
    words are rendered from current facts. Without, one row per stall (an account's own
    list in /journey). `where`: more conditions on the stall (the digest leaves out the
    accounts pinged today)."""
    conds = [LIVE, *where]
    if user is not None:
        conds.append(or_(ACCOUNT.c.owner_slack_id == user, STALL.c.assignee == user))
    if priorities:
        conds.append(STALL.c.priority.in_(list(priorities)))
    if account_id is not None:
        conds.append(STALL.c.account_id == account_id)
    joined = STALL.join(ACCOUNT, ACCOUNT.c.id == STALL.c.account_id)
    if rules is not None:
        return _account_rows(conn, now, rules, joined, conds, limit)
    stmt = (select(*_ROW_COLS).select_from(joined).where(*conds)
            .order_by(SNOOZED_LAST, STALL.c.score.desc(), STALL.c.id)
            .limit(limit))
    rows = [_row(r, now) for r in conn.execute(stmt)]
    total = len(rows)
    if len(rows) >= limit:
        total = conn.execute(select(func.count()).select_from(joined).where(*conds)).scalar_one()
    return rows, total


def _account_rows(conn: Connection, now: datetime, rules: Rules, joined, conds: list, limit: int):
    """One row per account, ranked by its top stall (open before snoozed): the top `limit`
    accounts in SQL, then their matching stalls (three statements)."""
    ranked = (select(STALL.c.account_id, func.min(SNOOZED_LAST).label("snoozed"),
                     func.max(STALL.c.score).label("best"))
              .select_from(joined).where(*conds).group_by(STALL.c.account_id))
    top = [r.account_id for r in conn.execute(ranked.order_by("snoozed", text("best DESC"), STALL.c.account_id)
                                              .limit(limit))]
    if not top:
        return [], 0
    total = len(top)
    if total >= limit:
        total = conn.execute(select(func.count(func.distinct(STALL.c.account_id))).select_from(joined)
                             .where(*conds)).scalar_one()
    by_account: dict[str, list] = defaultdict(list)
    for r in conn.execute(select(*_ROW_COLS).select_from(joined).where(*conds, STALL.c.account_id.in_(top))
                          .order_by(SNOOZED_LAST, STALL.c.priority, STALL.c.score.desc(), STALL.c.id)):
        by_account[r.account_id].append(r)
    tickets = open_tickets(conn, set(top))
    week_ago = health_week_ago(conn, top, now.date())
    rows = [_row(by_account[a][0], now, rules, by_account[a][1:], tickets.get(a, 0), week_ago.get(a))
            for a in top if by_account[a]]
    return rows, total


# --- /journey ---------------------------------------------------------------------------------

def journey_data(conn: Connection, account_id: str, rules: Rules, now: datetime) -> JourneyViewData | None:
    acc = conn.execute(select(ACCOUNT).where(ACCOUNT.c.id == account_id)).first()
    if acc is None:
        return None
    open_stalls, _ = stall_rows(conn, now, account_id=account_id, limit=20)
    stalled_steps = {r.step for r in conn.execute(
        select(STALL.c.step).where(LIVE, STALL.c.account_id == account_id, STALL.c.step.is_not(None)))}
    reached = acc.steps or {}
    steps: list[StepLine] = []
    for step in rules.journey.steps:
        at = parse_time(reached.get(step.event))
        if at is not None:
            steps.append(StepLine(step.name, "done", at))
        elif acc.waiting_step == step.event:
            state = "stalled" if step.event in stalled_steps else "waiting"
            steps.append(StepLine(step.name, state, aware(acc.waiting_since)))
        else:
            steps.append(StepLine(step.name, "todo"))
    activation = rules.journey.activation_event
    activated = aware(acc.activated_at) or parse_time(reached.get(activation))
    if activated is not None:
        steps.append(StepLine(activation_name(rules), "done", activated))
    elif acc.waiting_step == activation:
        steps.append(StepLine(activation_name(rules), "waiting", aware(acc.waiting_since)))
    else:
        steps.append(StepLine(activation_name(rules), "todo"))

    # The milestone timeline through its partial index (the predicate must read "milestone").
    events = [
        EventLine(at=aware(e.occurred_at), name=e.name or e.kind,
                  detail=None if e.source == "segment" and e.kind == "track" else e.source)
        for e in conn.execute(
            select(EVENT.c.occurred_at, EVENT.c.name, EVENT.c.kind, EVENT.c.source)
            .where(EVENT.c.account_id == account_id, text("event.milestone"))
            .order_by(EVENT.c.occurred_at.desc()).limit(10))
    ]
    tickets = [
        TicketLine(id=t.id, status=t.status, created_at=aware(t.created_at), subject=t.subject, topic=t.topic)
        for t in conn.execute(
            select(TICKET.c.id, TICKET.c.status, TICKET.c.created_at, TICKET.c.subject, TICKET.c.topic)
            .where(TICKET.c.account_id == account_id).order_by(TICKET.c.created_at.desc()).limit(5))
    ]
    return JourneyViewData(
        account_id=acc.id, name=acc.name or acc.id, stage=acc.stage, arr=float(acc.arr or 0.0),
        owner=acc.owner_slack_id or acc.owner_email, track=acc.track, lifecycle=acc.status, plan=acc.plan,
        domain=acc.domain, renewal_date=acc.renewal_date, steps=steps, open_stalls=open_stalls,
        events=events, tickets=tickets, notes=notes.latest(conn, account_id, JOURNEY_NOTES),
        health=acc.health, health_reasons=tuple(acc.health_reasons or ()),
        health_week_ago=health_week_ago(conn, [acc.id], now.date()).get(acc.id),
    )


# --- /funnel ----------------------------------------------------------------------------------

# How far before the window (and the longest checkpoint) signups are read: an account that
# reaches a step later than that after signing up is left out, so the read stays one query
# bounded on signup_at.
FUNNEL_LOOKBACK = timedelta(days=90)


def activation_name(rules: Rules) -> str:
    """The activation milestone as /journey and /funnel name it: "Activated (Report Shared)"."""
    return f"Activated ({rules.journey.activation_event})"


def funnel_data(conn: Connection, rules: Rules, now: datetime, days: int) -> FunnelData:
    """Rates on mature cohorts only, so that accounts still within their time do not drag them down.

    Per track: of the accounts whose checkpoint (signup + the track's checkpoint_days) passed in
    the last `days`, the share activated by it and the share with any stall. Per step: of the
    accounts that reached it and whose time to move on ran out in the last `days` (the next
    step's stall_after_hours, as the step_stall rule waits; for the last step, whose next is
    activation, the checkpoint), how many reached the next one, and the median time between."""
    plan = plan_for(rules)
    start = now - timedelta(days=days)
    earliest = start - max(plan.checkpoint_for(t) for t in TRACKS) - FUNNEL_LOOKBACK
    accounts = conn.execute(
        select(ACCOUNT.c.id, ACCOUNT.c.steps, ACCOUNT.c.track, ACCOUNT.c.signup_at, ACCOUNT.c.activated_at)
        .where(ACCOUNT.c.signup_at >= earliest, ACCOUNT.c.signup_at <= now)).all()
    stalled = {r[0] for r in conn.execute(select(STALL.c.account_id).where(
        STALL.c.account_id.in_(select(ACCOUNT.c.id).where(ACCOUNT.c.signup_at >= earliest))).distinct())}

    events = plan.step_events
    entered = [0] * len(events)
    converted = [0] * len(events)
    durations: list[list[float]] = [[] for _ in events]
    per_track: dict[str, list[int]] = {t: [0, 0, 0] for t in TRACKS}  # accounts, activated, stalled
    for acc in accounts:
        track = acc.track or plan.default_track
        signup_at = aware(acc.signup_at)
        checkpoint_at = signup_at + plan.checkpoint_for(track)
        reached = acc.steps or {}
        times = [parse_time(reached.get(e)) for e in events]
        if times[0] is None:
            times[0] = signup_at  # signed up is implied by signup_at
        done = aware(acc.activated_at) or parse_time(reached.get(plan.activation_event))
        # When each step's time to move on runs out: the next step's threshold, then the checkpoint.
        allowance = plan.stall_after_for(track)[1:]
        nxt = times[1:] + [done]
        for i, (t, n) in enumerate(zip(times, nxt)):
            if t is None:
                continue
            ripe_at = t + allowance[i] if i < len(allowance) else max(checkpoint_at, t)
            if not start < ripe_at <= now:
                continue
            entered[i] += 1
            if n is not None:
                converted[i] += 1
                durations[i].append(max((n - t).total_seconds() / 86400, 0.0))
        if start < checkpoint_at <= now:
            counts = per_track.setdefault(track, [0, 0, 0])
            counts[0] += 1
            counts[1] += done is not None and done <= checkpoint_at
            counts[2] += acc.id in stalled
    stages = [
        FunnelStage(name=plan.step_names[events[i]], entered=entered[i], converted=converted[i],
                    median_days=statistics.median(durations[i]) if durations[i] else None)
        for i in range(len(events))
    ]
    order = list(TRACKS) + sorted(t for t in per_track if t not in TRACKS)  # the natural order
    tracks = [TrackRate(track=t, accounts=per_track[t][0], checkpoint_days=plan.checkpoint_for(t) / timedelta(days=1),
                        activation_rate=per_track[t][1] / per_track[t][0] if per_track[t][0] else None,
                        stall_rate=per_track[t][2] / per_track[t][0] if per_track[t][0] else None)
              for t in order]
    return FunnelData(days=days, stages=stages, tracks=tracks, activation_name=activation_name(rules))
