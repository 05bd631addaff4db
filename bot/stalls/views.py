"""The read models: what each surface shows, as plain dataclasses (no Slack here), and the one
builder of a stall's ping view that every path uses.

A ping is edited by the router (priority change, auto-resolution), by a click (assign, snooze,
resolve) and by a recovery email's progress; each edit re-renders the whole message from the
stall's current state. They all build the view with `ping_views`, so the message reads the same
whoever edited it last (the router once said "arrived late" where a click later said "no longer
stalled", and counted days past the resolution).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timezone
from typing import Literal

from sqlalchemy import Connection, func, select

from rules import wording
from rules.config import PRIORITIES, Rules
from rules.reconcile import LIVE  # the statuses of a live stall
from storage.models import Account, Draft, Stall, Ticket

STALL = Stall.__table__
ACCOUNT = Account.__table__
TICKET = Ticket.__table__
DRAFT = Draft.__table__

CLOSED_TICKETS = ("solved", "closed", "resolved")
SYSTEM = "system"  # Stall.resolved_by of a resolution by the scan
PRIORITY_RANK = {p: n for n, p in enumerate(PRIORITIES)}  # "P0" first


# --- the ping (and the escalation and win-back messages built from it) -----------------------

@dataclass(frozen=True)
class DraftLine:
    """The latest recovery email of a stall (a discarded one shows the one before)."""

    status: str  # drafting | drafted | approved | sent | blocked | ...
    actor: str | None  # who approved it, else who asked for it (a Slack user id)
    source: str  # "template" or "llm:<model>"
    attempt: int = 1
    recipient: str | None = None
    sent_at: datetime | None = None
    blocked_reason: str | None = None


@dataclass(frozen=True)
class ReasonLine:
    """One live stall of the account: one reason of the account's alert."""

    stall_id: int
    rule: str
    priority: str
    text: str  # the reason in words, from current facts ("4 days on 'Connect integration'")
    status: str = "open"


@dataclass(frozen=True)
class PingView:
    """Everything a ping (and an escalation) shows about one account's alert: the facts of
    its top reason, and every reason (the account's live stalls, ranked)."""

    stall_id: int
    account_name: str
    arr: float
    priority: str
    stage: str
    step: str | None  # the step's display name; None for rules not about a step
    days_stalled: float
    why: str
    owner: str | None = None  # CSM Slack user id, or email when not mapped
    last_activity: datetime | None = None
    open_tickets: int = 0
    status: str = "open"
    assignee: str | None = None  # Slack user id
    snoozed_until: datetime | None = None
    snoozed_by: str | None = None
    resolved_by: str | None = None  # Slack user id, or None when the system resolved it
    resolved_at: datetime | None = None
    resolution: str | None = None  # e.g. "Integration Connected arrived late (stall opened on stale data)"
    draft: DraftLine | None = None
    journey_url: str | None = None
    note: str | None = None  # e.g. "Priority raised from P1 to P0"
    reasons: tuple[ReasonLine, ...] = ()  # the account's live stalls, top first; () once all closed
    account_id: str | None = None


def ping_view(conn: Connection, stall_id: int, rules: Rules, now: datetime) -> PingView | None:
    """The ping of one stall from its current state (None: no such stall)."""
    return ping_views(conn, [stall_id], rules, now).get(stall_id)


def ping_views(conn: Connection, stall_ids: Iterable[int], rules: Rules, now: datetime) -> dict[int, PingView]:
    """The pings of many stalls in four statements (stalls, their accounts' other stalls, open
    tickets, latest drafts). One alert per account: each view shows its account's alert, the
    facts of the top live stall and every live stall as a reason; once none is live, how the
    last one closed."""
    ids = sorted(set(stall_ids))
    if not ids:
        return {}
    columns = (STALL, ACCOUNT.c.name.label("account_name"), ACCOUNT.c.arr.label("account_arr"),
               ACCOUNT.c.owner_slack_id, ACCOUNT.c.owner_email, ACCOUNT.c.last_seen_at, ACCOUNT.c.steps,
               ACCOUNT.c.renewal_date, ACCOUNT.c.payment_failed_at)
    joined = STALL.outerjoin(ACCOUNT, ACCOUNT.c.id == STALL.c.account_id)
    stalls = list(conn.execute(select(*columns).select_from(joined).where(STALL.c.id.in_(ids))))
    accounts = sorted({s.account_id for s in stalls})
    since = min((aware(s.opened_at) for s in stalls), default=now)
    siblings: dict[str, list] = {}
    for s in conn.execute(select(*columns).select_from(joined).where(
            STALL.c.account_id.in_(accounts), STALL.c.status.in_(LIVE) | (STALL.c.resolved_at >= since))):
        siblings.setdefault(s.account_id, []).append(s)
    tickets = open_tickets(conn, set(accounts))
    drafts = _latest_drafts(conn, ids)
    views = {}
    for s in stalls:
        own = _ping(s, rules, now, tickets.get(s.account_id, 0), drafts.get(s.id))
        views[s.id] = _account_alert(own, s, siblings.get(s.account_id, []), rules, now)
    return views


def _account_alert(own: PingView, lead, siblings: list, rules: Rules, now: datetime) -> PingView:
    """The account's alert as seen from one of its stalls (`lead`): the top live stall's
    facts and priority, every live stall as a reason; none live, how the last one closed."""
    live = sorted((s for s in siblings if s.status in LIVE),
                  key=lambda s: (s.status != "open", PRIORITY_RANK.get(s.priority, 9), -(s.score or 0.0), s.id))
    if not live:
        closed = [s for s in siblings if s.status not in LIVE and s.resolved_at is not None
                  and aware(s.opened_at) >= aware(lead.opened_at)]
        last = max(closed, key=lambda s: (aware(s.resolved_at), s.id), default=lead)
        if last.id == lead.id or lead.status in LIVE:
            return replace(own, account_id=lead.account_id)
        return replace(own, account_id=lead.account_id, status=last.status, resolved_at=aware(last.resolved_at),
                       resolved_by=last.resolved_by if last.resolved_by != SYSTEM else None,
                       resolution=resolution(last))
    top = live[0]
    step = rules.journey.step(top.step) if top.step else None
    snoozed = all(s.status == "snoozed" for s in live)
    return replace(
        own, account_id=lead.account_id, priority=top.priority, stage=top.stage, step=step.name if step else top.step,
        days_stalled=days_since(top.stalled_since, now), why=priority_text(top, rules, now, open_tickets=own.open_tickets),
        status="snoozed" if snoozed else "open",
        snoozed_until=max((aware(s.snoozed_until) for s in live if s.snoozed_until), default=None) if snoozed else None,
        snoozed_by=next((s.snoozed_by for s in live if s.snoozed_by), None) if snoozed else None,
        assignee=own.assignee or next((s.assignee for s in live if s.assignee), None),
        resolved_by=None, resolved_at=None, resolution=None,
        reasons=tuple(ReasonLine(stall_id=s.id, rule=s.rule, priority=s.priority, text=reason_text(s, rules, now),
                                 status=s.status) for s in live))


def reason_text(stall, rules: Rules, now: datetime) -> str:
    """One live stall as a reason of its account's alert, in words, as of `now` (never frozen
    at the last time the stall's score moved). `stall` needs the stall's and the account's
    columns (`renewal_date`)."""
    step = rules.journey.step(stall.step) if stall.step else None
    return wording.reason_text(stall.rule, step_name=step.name if step else stall.step, detail=stall.detail,
                               stalled_since=aware(stall.stalled_since), threshold_at=aware(stall.threshold_at),
                               renewal_date=stall.renewal_date, now=now)


def priority_text(stall, rules: Rules, now: datetime, *, open_tickets: int) -> str:
    """Why the stall has its priority, in words, as of `now` ("P0 because $69.5K ARR, ...")."""
    return wording.priority_reason(
        stall.priority, arr=float(stall.account_arr or 0.0), rule=stall.rule, now=now,
        threshold_at=aware(stall.threshold_at), stalled_since=aware(stall.stalled_since), open_tickets=open_tickets,
        renewal_date=stall.renewal_date, renewal_within_days=rules.stall_rules.renewal_risk.within_days,
        payment_failed=stall.payment_failed_at is not None)


def _ping(s, rules: Rules, now: datetime, open_tickets: int, draft: DraftLine | None) -> PingView:
    resolved_at = aware(s.resolved_at)
    step = rules.journey.step(s.step) if s.step else None
    return PingView(
        stall_id=s.id, account_name=s.account_name or s.account_id, arr=float(s.account_arr or 0.0),
        priority=s.priority, stage=s.stage, step=step.name if step else s.step,
        # A closed stall stopped stalling when it closed: its days stay what they were then.
        days_stalled=days_since(s.stalled_since, resolved_at or now), why=s.why or s.detail or "",
        owner=s.owner_slack_id or s.owner_email, last_activity=aware(s.last_seen_at), open_tickets=open_tickets,
        status=s.status, assignee=s.assignee, snoozed_until=aware(s.snoozed_until), snoozed_by=s.snoozed_by,
        resolved_by=s.resolved_by if s.resolved_by != SYSTEM else None, resolved_at=resolved_at,
        resolution=resolution(s), draft=draft,
    )


def resolution(stall) -> str | None:
    """How the stall closed, in words: a step stall whose step turns out to have been reached
    before the stall opened was opened on stale data (the event arrived late). `stall` needs
    the stall's columns and the account's `steps`."""
    if stall.status == "auto_resolved" and stall.rule == "step_stall" and stall.step:
        reached_at = parse_time((stall.steps or {}).get(stall.step))
        if reached_at is not None and reached_at <= aware(stall.opened_at):
            return f"{stall.step} arrived late (done {reached_at:%Y-%m-%d %H:%M} UTC, before the stall opened)"
        if reached_at is not None:
            return f"{stall.step} done {reached_at:%Y-%m-%d %H:%M} UTC"
    return stall.resolution


def open_tickets(conn: Connection, account_ids: set[str]) -> dict[str, int]:
    """Open tickets per account."""
    if not account_ids:
        return {}
    return dict(conn.execute(
        select(TICKET.c.account_id, func.count())
        .where(TICKET.c.account_id.in_(sorted(account_ids)), func.lower(TICKET.c.status).not_in(CLOSED_TICKETS))
        .group_by(TICKET.c.account_id)).all())


def _latest_drafts(conn: Connection, stall_ids: list[int]) -> dict[int, DraftLine]:
    latest = (select(func.max(DRAFT.c.id)).where(DRAFT.c.stall_id.in_(stall_ids), DRAFT.c.status != "discarded")
              .group_by(DRAFT.c.stall_id))
    return {d.stall_id: DraftLine(status=d.status, actor=d.approved_by or d.created_by, source=d.source,
                                  attempt=d.attempt, recipient=d.recipient, sent_at=aware(d.sent_at),
                                  blocked_reason=d.blocked_reason)
            for d in conn.execute(select(DRAFT).where(DRAFT.c.id.in_(latest)))}


def not_sent_phrase(reason: str | None) -> str:
    """A blocked draft's reason as a predicate: "not sent: the account has churned", or the
    reason itself when it already says what happened ("could not be delivered: ...",
    "may or may not have been sent ...")."""
    reason = reason or "blocked"
    if reason.startswith(("could not be delivered", "may or may not have been sent")):
        return reason
    return f"not sent: {reason}"


# --- times ------------------------------------------------------------------------------------

def aware(moment: datetime | None) -> datetime | None:
    """A stored time as aware UTC (SQLite gives naive datetimes back)."""
    if moment is None:
        return None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def parse_time(value) -> datetime | None:
    """A time stored in JSON (an ISO string) or a column; None when it is neither."""
    if isinstance(value, datetime):
        return aware(value)
    if isinstance(value, str) and value:
        try:
            return aware(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return None
    return None


def days_since(since: datetime | None, now: datetime) -> float:
    since = aware(since)
    return max((now - since).total_seconds() / 86400, 0.0) if since else 0.0


# --- list rows (/stalls, /journey, App Home, digest) -----------------------------------------

@dataclass(frozen=True)
class StallRow:
    """One stall in a ranked list."""

    stall_id: int
    account_name: str
    priority: str
    arr: float
    why: str
    days_stalled: float = 0.0
    owner: str | None = None
    status: str = "open"
    assignee: str | None = None
    snoozed_until: datetime | None = None
    note: str | None = None  # e.g. routing's "over @jane's hourly ping budget"
    reasons: int = 1  # an account's row: how many live stalls its one alert has
    because: str | None = None  # the priority in words ("P0 because $69.5K ARR, ..."), shown beside `why`
    account_id: str | None = None
    latest_note: "NoteLine | None" = None  # a person's latest note on the account (the digest shows it)
    health: int | None = None  # the account's health, 0..100 (None: not scored yet)
    health_trend: int | None = None  # its change over the last week (None: no snapshot then)


@dataclass(frozen=True)
class NoteLine:
    """A person's note on an account (bot/stalls/notes.py): customer words as much as theirs,
    escaped where shown."""

    author: str  # Slack user id
    text: str
    at: datetime


# --- /journey ---------------------------------------------------------------------------------

StepState = Literal["done", "waiting", "stalled", "todo"]


@dataclass(frozen=True)
class StepLine:
    name: str  # display name
    state: StepState
    at: datetime | None = None  # reached at ("done"), or waiting since ("waiting", "stalled")


@dataclass(frozen=True)
class EventLine:
    at: datetime
    name: str
    detail: str | None = None


@dataclass(frozen=True)
class TicketLine:
    id: str
    status: str
    created_at: datetime
    subject: str | None = None
    topic: str | None = None


@dataclass(frozen=True)
class JourneyViewData:
    account_id: str
    name: str
    stage: str
    arr: float
    owner: str | None = None
    track: str | None = None
    lifecycle: str | None = None
    plan: str | None = None
    domain: str | None = None
    renewal_date: date | None = None
    steps: Sequence[StepLine] = ()  # the onboarding steps, then activation, in order
    open_stalls: Sequence[StallRow] = ()  # ranked
    events: Sequence[EventLine] = ()  # newest first
    tickets: Sequence[TicketLine] = ()  # newest first
    journey_url: str | None = None
    notes: Sequence[NoteLine] = ()  # people's latest notes on the account, newest first
    health: int | None = None  # 0..100 (None: not scored yet)
    health_reasons: Sequence[str] = ()  # heaviest first
    health_week_ago: int | None = None  # from the daily snapshots


# --- /funnel ----------------------------------------------------------------------------------

# A rate on fewer accounts than this is shown as "–" (with its n): one account more or less
# would swing it by 20 points or more.
MIN_SAMPLE = 5


@dataclass(frozen=True)
class FunnelStage:
    name: str
    entered: int  # accounts that reached the stage and had their time to move on (the rate's n)
    converted: int  # of those, how many reached the next stage
    median_days: float | None = None  # median time spent in the stage

    @property
    def conversion(self) -> float | None:
        return self.converted / self.entered if self.entered > 0 else None


@dataclass(frozen=True)
class TrackRate:
    track: str
    accounts: int  # the mature cohort: accounts whose checkpoint passed in the window (the rates' n)
    activation_rate: float | None  # 0..1, activated by the checkpoint
    stall_rate: float | None  # 0..1, any stall opened
    checkpoint_days: float = 14  # the track's checkpoint (its own threshold or the journey's)


@dataclass(frozen=True)
class FunnelData:
    days: int
    stages: Sequence[FunnelStage]
    tracks: Sequence[TrackRate] = ()  # in the tracks' natural order (rules.config.TRACKS)
    weakest: str | None = None  # None: the stage with the lowest conversion
    activation_name: str = "Activated"  # "Activated (Report Shared)"


def weakest_stage(f: FunnelData) -> FunnelStage | None:
    """The named weakest stage, else the lowest conversion among stages with MIN_SAMPLE accounts."""
    if f.weakest is not None:
        return next((s for s in f.stages if s.name == f.weakest), None)
    measured = [s for s in f.stages if s.conversion is not None and s.entered >= MIN_SAMPLE]
    return min(measured, key=lambda s: s.conversion) if measured else None


# --- the daily digest -------------------------------------------------------------------------

@dataclass(frozen=True)
class TrackingIssueLine:
    kind: str  # missing_property | volume_drop
    event_name: str
    property: str = ""
    count: int = 1
    detail: str = ""


@dataclass(frozen=True)
class Trend:
    """A figure now, a day ago and a week ago (None: not known then)."""

    now: float
    day_ago: float | None = None
    week_ago: float | None = None


@dataclass(frozen=True)
class PingedLine:
    """An account pinged in real time in the last 24 hours, as one line with its status."""

    stall_id: int
    account_name: str
    priority: str
    arr: float
    owner: str | None
    status: str  # "open" | "acknowledged" | "closed"
    by: str | None = None  # who acknowledged it
    at: datetime | None = None  # when it was pinged
    account_id: str | None = None
    latest_note: "NoteLine | None" = None


@dataclass(frozen=True)
class OwnerTotal:
    """Every stalled account of one owner that the digest carries (not pinged today, not
    snoozed), listed or not: the figures behind "and N more"."""

    accounts: int
    arr: float
    by_priority: Mapping[str, int]


@dataclass(frozen=True)
class AckTime:
    owner: str | None
    median_minutes: float | None  # None: none acknowledged
    pings: int
    acknowledged: int


@dataclass(frozen=True)
class DigestData:
    day: date
    new_stalls: int
    arr_at_risk: float
    resolved_since_yesterday: int
    activation_by_track: Mapping[str, float | None]  # mature cohort (funnel.tracks), 0..1
    rows: Sequence[StallRow]  # the rest: stalled accounts not pinged today, not snoozed, ranked (may be a slice)
    total_open: int | None = None  # all open (stalled, not snoozed) accounts (None: len(rows))
    snoozed: int = 0
    tracking_issues: Sequence[TrackingIssueLine] = ()
    funnel: FunnelData | None = None
    max_items: int = 40  # rules.digest.max_items
    per_owner: int = 25  # rules.digest.per_owner: rows per owner before "and N more"
    # What changed: stalled accounts, ARR at risk, new stalls, resolved and escalated (a day ago, a week ago).
    stalled: Trend | None = None
    arr_trend: Trend | None = None
    new_trend: Trend | None = None
    resolved_trend: Trend | None = None
    escalated_trend: Trend | None = None
    pinged: Sequence[PingedLine] = ()  # accounts pinged in the last 24 h (not repeated in `rows`)
    owner_totals: Mapping[str | None, OwnerTotal] = field(default_factory=dict)
    backlog_accounts: int = 0  # live accounts that went into a backlog summary
    handoffs: Sequence[StallRow] = ()  # win-back handoffs of the last 7 days
    ack_times: Sequence[AckTime] = ()  # per CSM, pings of the last 7 days
    # The chart's history: bot.snapshots.CompanyFigures of the last weeks, oldest first.
    history: Sequence = ()
