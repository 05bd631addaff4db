"""Routing: what to do, right now, about one stall in Slack. Pure: no I/O, no clock, no Slack.

The scheduler (bot/) calls `route` for each live stall on every scan and acts on the answer:

- "ping":   first real-time alert (owner DM and alerts channel), counted against the owner's
            hourly budget;
- "update": the stall was pinged and its priority changed since: edit the message in place
            and add one thread reply (updates are not counted against the budget, they are
            not new notifications);
- "hold":   quiet hours: do nothing before `not_before`, then route again;
- "digest": no real-time alert; the stall shows in the daily digest (with `note` when it was
            pushed there by the hourly budget);
- "backlog": the stall (for an account's alert: every one of its stalls) was already old when
            Stallwatch first saw the account (`is_backlog`): it goes once into its owner's backlog
            summary, never pinged or escalated one by one; afterwards it is "digest";
- "none":   nothing to do (already pinged at this priority, closed, or snoozed after a ping).

A stall is never pinged twice: once `already_pinged_priority` is set, the only outcomes are
"update", "hold" (an update waiting for the end of quiet hours) and "none".

Quiet hours and the digest are read in the rules' digest time zone (`digest.timezone`),
so "20:00-08:00" means the team's evening, whatever the server's zone, and stays right
across daylight-saving changes. All datetimes in and out are aware UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Literal
from zoneinfo import ZoneInfo

from .config import Rules
from .plan import RulePlan

UTC = timezone.utc
CLOSED = frozenset({"resolved", "auto_resolved", "suppressed"})
# The scheduler may fire a little early (clock skew between hosts): a digest run within this
# much before the digest moment still belongs to that moment's day.
DIGEST_EARLY_GRACE = timedelta(minutes=5)

RouteKind = Literal["ping", "update", "hold", "digest", "backlog", "none"]
# A stall that crossed its threshold more than this before Stallwatch first saw its account
# (the first connect, a backfill) is backlog, not news.
BACKLOG_GRACE = timedelta(hours=24)


@dataclass(frozen=True)
class StallView:
    """What routing needs to know about a stall (built by bot/ from the Stall and its Alert)."""

    id: int
    priority: str  # "P0".."P3", current
    status: str  # one of model.STALL_STATUSES
    snoozed_until: datetime | None = None
    # The priority the real-time alert was sent (or last edited) with; None: never pinged.
    already_pinged_priority: str | None = None
    owner: str | None = None  # the CSM: Slack user id or email
    # The priority at which the hourly budget last pushed this stall to the digest, if the caller
    # records it: the stall then stays in the digest (no late ping an hour later) until its
    # priority changes. None: never overflowed, or not recorded.
    overflowed_priority: str | None = None
    # The account's track: a track whose routing is digest-only (`[tracks.<track>] realtime =
    # false`; self_serve by default) never pings. None: routed as a real-time track.
    track: str | None = None
    # Already stalled when Stallwatch first saw the account (`is_backlog`), and whether it was
    # put in a backlog summary already.
    backlog: bool = False
    backlog_recorded: bool = False


def is_backlog(threshold_at: datetime | None, first_seen_at: datetime | None) -> bool:
    """Whether a stall is backlog: its threshold passed more than BACKLOG_GRACE before
    Stallwatch first heard of its account (the account's row was created), so it is old news
    to everyone but Stallwatch."""
    if threshold_at is None or first_seen_at is None:
        return False
    return threshold_at < first_seen_at - BACKLOG_GRACE


@dataclass(frozen=True)
class RouteDecision:
    kind: RouteKind
    reason: str  # for logs and tests: why this kind
    not_before: datetime | None = None  # "hold": route again at this time (aware UTC)
    note: str | None = None  # "digest": shown beside the stall, e.g. the budget overflow

    @property
    def realtime(self) -> bool:
        """Whether Slack must be called now."""
        return self.kind in ("ping", "update")


def route(stall: StallView, *, owner_pings_last_hour: int, now: datetime, rules: Rules | RulePlan) -> RouteDecision:
    """Decide what to do about `stall` at `now`.

    `owner_pings_last_hour` counts the real-time pings sent to the stall's owner in the hour
    before `now` (for a stall with no owner: to unowned stalls). Callers route stalls in rank
    order, so the budget goes to the most important stalls first.
    """
    cfg = _rules(rules)
    if stall.status in CLOSED:
        # Closing edits an existing ping (bot/ does that when it closes the stall); never a new one.
        return RouteDecision("none", f"stall is {stall.status}")
    if is_snoozed(stall, now):
        if stall.already_pinged_priority is not None:
            # A snooze asks for silence: priority changes catch up once the snooze ends.
            return RouteDecision("none", "snoozed after its ping")
        return RouteDecision("digest", "snoozed")

    if stall.already_pinged_priority is not None:
        if stall.already_pinged_priority == stall.priority:
            return RouteDecision("none", f"already pinged at {stall.priority}")
        return _quiet_hold("update", stall.priority, now, cfg) or RouteDecision(
            "update", f"priority changed from {stall.already_pinged_priority} to {stall.priority}")

    if stall.priority not in cfg.routing.realtime:
        return RouteDecision("digest", f"{stall.priority} is not a real-time priority")
    if not cfg.tracks.pings_realtime(stall.track):
        return RouteDecision("digest", f"the {stall.track} track is digest-only")
    if stall.backlog:
        if stall.backlog_recorded:
            return RouteDecision("digest", "in a backlog summary already")
        return RouteDecision("backlog", "already stalled when Stallwatch first saw the account")
    if stall.overflowed_priority == stall.priority:
        return RouteDecision("digest", "sent to the digest by the hourly budget", note=budget_note(stall.owner))
    # Quiet hours come before the budget: the budget is spent when the ping actually goes out.
    held = _quiet_hold("ping", stall.priority, now, cfg)
    if held is not None:
        return held
    if owner_pings_last_hour >= cfg.routing.hourly_budget_per_csm:
        return RouteDecision(
            "digest",
            f"owner already had {owner_pings_last_hour} pings this hour "
            f"(budget {cfg.routing.hourly_budget_per_csm})",
            note=budget_note(stall.owner),
        )
    return RouteDecision("ping", f"{stall.priority} is a real-time priority")


def is_snoozed(stall: StallView, now: datetime) -> bool:
    """Snoozed until a time still ahead, or snoozed with no end. An expired snooze counts as
    open even before the scan flips its status back (reconcile's "unsnooze")."""
    if stall.snoozed_until is not None:
        return stall.snoozed_until > now
    return stall.status == "snoozed"


def budget_note(owner: str | None) -> str:
    """The digest note for a stall pushed out of real time by the hourly budget."""
    if not owner:
        return "over the hourly ping budget for stalls with no owner"
    handle = owner.split("@", 1)[0] if "@" in owner else owner  # an email reads as its name
    return f"over @{handle}'s hourly ping budget"


def quiet_hours_end(now: datetime, rules: Rules | RulePlan) -> datetime | None:
    """If `now` falls in quiet hours, the moment they end (aware UTC); else None."""
    cfg = _rules(rules)
    routing = cfg.routing
    zone = _zone(cfg)
    local = now.astimezone(zone)
    if not routing.in_quiet_hours(local.time()):
        return None
    end = _clock(routing.quiet_hours_end)
    # The next local occurrence of the end time: today's if still ahead, else tomorrow's.
    for offset in range(0, 3):
        candidate = _at_local(local.date() + timedelta(days=offset), end, zone)
        if candidate > now:
            return candidate
    raise AssertionError("unreachable: a local time of day recurs within two days")


def escalation_due(
    pinged_at: datetime,
    acked: bool,
    priority: str,
    now: datetime,
    rules: Rules | RulePlan,
    *,
    already_escalated: bool = False,
) -> bool:
    """Whether an unacknowledged P0 ping must escalate now: once, `escalate_p0_after_minutes`
    after it was sent (inclusive). Quiet hours do not apply: P0 ignores them."""
    if priority != "P0" or acked or already_escalated:
        return False
    delay = timedelta(minutes=_rules(rules).routing.escalate_p0_after_minutes)
    return now >= pinged_at + delay


def next_digest_at(now: datetime, rules: Rules | RulePlan) -> datetime:
    """The first digest moment strictly after `now`: `digest.time` in `digest.timezone`, as
    aware UTC. Daylight-saving safe: a local time skipped by the spring change resolves to the
    same wall time shifted forward, one repeated in autumn to its first occurrence."""
    cfg = _rules(rules)
    zone, clock = _zone(cfg), cfg.digest.clock
    today = now.astimezone(zone).date()
    for offset in range(-1, 3):
        moment = _at_local(today + timedelta(days=offset), clock, zone)
        if moment > now:
            return moment
    raise AssertionError("unreachable: a local time of day recurs within two days")


def digest_day(now: datetime, rules: Rules | RulePlan, *, early: timedelta = DIGEST_EARLY_GRACE) -> date:
    """The local date of the digest a run at `now` posts: the day of the latest digest moment
    at or before `now` (+ `early`). Used with the channel as the digest_run unique key, so a
    scheduler firing late, a restart, a second process or a manual `stallwatch digest` later
    the same day all claim the same (day, channel) and only one posts."""
    cfg = _rules(rules)
    zone, clock = _zone(cfg), cfg.digest.clock
    moment_now = now + early
    today = moment_now.astimezone(zone).date()
    for offset in range(0, 3):
        day = today - timedelta(days=offset)
        if _at_local(day, clock, zone) <= moment_now:
            return day
    raise AssertionError("unreachable: a local time of day recurs within two days")


def _quiet_hold(what: str, priority: str, now: datetime, cfg: Rules) -> RouteDecision | None:
    """A "hold" until quiet hours end, or None when `what` may go out now (P0 always may)."""
    if priority == "P0":
        return None
    end = quiet_hours_end(now, cfg)
    if end is None:
        return None
    return RouteDecision("hold", f"quiet hours: {what} held until they end", not_before=end)


def _at_local(day: date, clock: time, zone: ZoneInfo) -> datetime:
    # fold=0: an ambiguous wall time (autumn) is its first occurrence; a skipped one (spring)
    # takes the pre-change offset, i.e. lands just after the gap. Both are what people expect.
    return datetime.combine(day, clock, tzinfo=zone).astimezone(UTC)


def _clock(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def _zone(cfg: Rules) -> ZoneInfo:
    return ZoneInfo(cfg.digest.timezone)  # ZoneInfo caches instances by key


def _rules(rules: Rules | RulePlan) -> Rules:
    return rules.rules if isinstance(rules, RulePlan) else rules
