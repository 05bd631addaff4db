"""Real-time Slack pings: from the scan's changes to outbox rows (DESIGN.md "Scoring and routing",
"One account, one alert").

`Router.handle` is a scan change hook (Services.change_hooks, passed to `bot.scan.scan`):
after a scan (or the event-driven evaluation of a ticket spike) commits, the accounts of
every opened or changed stall are routed, top account first. The unit is the ACCOUNT: its
live stalls are the reasons of one alert, whose priority is the highest of theirs.

- no open ping: the account is routed as its top open stall (`rules.routing.route`):
  - "ping":    one Alert row of kind "ping" per destination (the owner's DM,
               `STALLWATCH_ALERTS_CHANNEL`) on the top stall, the lead, and one of kind
               "reason" for each other live stall, with one outbox post each
               (`ping:{lead}:{dest}`), in ONE transaction; the post lists every reason;
  - "hold":    quiet hours: the same rows, enqueued with `not_before` = their end;
  - "backlog": every reason was already old when Stallwatch first saw the account (a first
               connect, a backfill: `rules.routing.is_backlog`): no ping; the account goes in
               its owner's one backlog summary (DM, else the alerts channel), each stall
               marked "backlog" so it is summarised once and never escalated;
  - "digest":  nothing to send (P2/P3, a digest-only track, a backlog already summarised); an
               overflow of the hourly budget is recorded (kind "overflow", channel "digest");
- an open ping: a stall that joined the account since (a new "reason" row) or a new account
  priority edits the ping in place (`enqueue_refresh`, rendered when sent) with ONE thread
  reply (`news:...`, held by quiet hours unless P0); a reason that closed drops off the ping
  silently; once no stall is live the ping says how it ended (`closed_at` set, once), or,
  still held in the outbox, is cancelled. A later stall opens a new alert.

An account is never pinged twice while its alert is open: Alert rows are unique per (stall,
channel, kind), only the transaction that inserted them enqueues, outbox keys are unique,
and the pinging transaction re-reads the account's open ping.

`escalate_due` (a leader-only scheduler job, every minute) posts one escalation per
unacknowledged open P0 ping to `STALLWATCH_DIGEST_CHANNEL` (Alert kind "escalation"); a
backlog is never escalated (it has no ping), and acting on the alert (a button, a draft)
acknowledges it.

The router never calls Slack to post: the outbox sender does, woken through the services'
`wakeups.slack_outbox`. The one Web API call here is `users.lookupByEmail` for an owner not
mapped yet, made and stored by bot.slack.owners (which maps every owner at start and after a
change of owner). An account with no owner is never DMed (there is
nobody): it pings the alerts channel only, when its track pings in real time.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field, replace
from functools import lru_cache
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable

from slack_sdk import WebClient
from sqlalchemy import Engine, bindparam, func, select, update

from bot.slack.outbox import OUTBOX, PENDING, enqueue, enqueue_refresh
from bot.slack.owners import OwnerResolver
from bot.slack.queries import BACKLOG, ESCALATION, FOLLOWUP, OVERFLOW, PING, REASON, WINBACK  # the Alert kinds
from bot.slack.render import (backlog_blocks, backlog_text, escalation_blocks, escalation_summary_blocks,
                              escalation_text, followup_note, news_text, ping_blocks, ping_text, winback_blocks,
                              winback_text)
from bot.stalls.context import Wakeups
from bot.stalls.views import PRIORITY_RANK, PingView, ping_views
from rules.config import TRACKS, Rules
from rules.outreach import followup
from rules.reconcile import LIVE  # the statuses of a live stall
from rules.routing import StallView, escalation_due, is_backlog, quiet_hours_end, route
from storage.db import lock_key, read_tx, utcnow, write_tx
from storage.models import Account, Alert, Stall
from storage.sql import insert_ignore

log = logging.getLogger(__name__)

UTC = timezone.utc
STALL = Stall.__table__
ACCOUNT = Account.__table__
ALERT = Alert.__table__

DIGEST_CHANNEL_MARK = "digest"  # Alert.channel of an "overflow" record
PING_LOCKS = 1885957735  # storage.db.lock_key's space for pinging an account (one router at a time)
# Unacknowledged P0s escalated one message each per run; more due at once (a first scan, an
# outage of the team) go in one summary message.
ESCALATE_EACH = 5
# A stall this old with no ping or overflow record was never routed (see route_unrouted).
UNROUTED_SETTLE = timedelta(seconds=5)


def ping_key(stall_id: int, dest: str) -> str:
    return f"ping:{stall_id}:{dest}"


def is_ping(kind: str) -> bool:
    """A real-time message about the stall that is edited as it changes: the first ping, or a
    follow-up ping after a recovery email."""
    return kind == PING or kind.startswith(FOLLOWUP)


def alert_key(stall_id: int, kind: str, dest: str) -> str:
    """The outbox key of the post behind an Alert (what edits refer to with `ts_from`)."""
    return ping_key(stall_id, dest) if kind == PING else f"{kind}:{stall_id}:{dest}"


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass
class RouteStats:
    """What one `route_stalls` call did (for logs, tests and the benchmark)."""

    pinged: int = 0
    updated: int = 0
    held: int = 0
    digest: int = 0
    closed: int = 0
    backlog: int = 0  # accounts put in a backlog summary
    backlog_summaries: int = 0
    enqueued: int = 0


@dataclass
class _AccountAlert:
    """What routing an account needs: its owner and track, its live stalls (top first) and
    the stalls being routed, and the Alert rows of all its stalls."""

    account_id: str
    owner_email: str | None
    owner_slack_id: str | None
    track: str | None
    created_at: datetime | None  # when Stallwatch first saw the account
    stalls: list = field(default_factory=list)
    live: list = field(default_factory=list)
    alerts: list = field(default_factory=list)


@lru_cache(maxsize=None)
def _load_statements():
    """_load_accounts' three statements, built once (the stall ids an expanding parameter)."""
    ids = bindparam("ids", expanding=True)
    account_ids = select(STALL.c.account_id).where(STALL.c.id.in_(ids)).distinct().scalar_subquery()
    accounts = (select(ACCOUNT.c.id, ACCOUNT.c.owner_email, ACCOUNT.c.owner_slack_id, ACCOUNT.c.track,
                       ACCOUNT.c.created_at)
                .where(ACCOUNT.c.id.in_(account_ids)))
    stalls = select(STALL).where(STALL.c.account_id.in_(account_ids), STALL.c.status.in_(LIVE) | STALL.c.id.in_(ids))
    alerts = (select(ALERT, STALL.c.account_id.label("of_account"))
              .select_from(ALERT.join(STALL, STALL.c.id == ALERT.c.stall_id))
              .where(STALL.c.account_id.in_(account_ids)))
    return accounts, stalls, alerts


def _load_accounts(conn, ids: list[int]) -> list[_AccountAlert]:
    """The accounts of these stalls, each with its live stalls and its Alert rows (3 statements)."""
    accounts_stmt, stalls_stmt, alerts_stmt = _load_statements()
    params = {"ids": list(ids)}
    accounts = {a.id: _AccountAlert(a.id, a.owner_email, a.owner_slack_id, a.track, a.created_at)
                for a in conn.execute(accounts_stmt, params)}
    stalls = conn.execute(stalls_stmt, params)
    for s in stalls:
        account = accounts.setdefault(s.account_id, _AccountAlert(s.account_id, None, None, None, None))
        account.stalls.append(s)
        if s.status in LIVE:
            account.live.append(s)
    for a in conn.execute(alerts_stmt, params):
        if a.of_account in accounts:
            accounts[a.of_account].alerts.append(a)
    for account in accounts.values():
        account.live.sort(key=lambda s: (s.status != "open", PRIORITY_RANK.get(s.priority, 9), -(s.score or 0.0), s.id))
    return [a for a in accounts.values() if a.stalls]


class Router:
    def __init__(self, engine: Engine, settings, rules: Rules, *, wakeups: Wakeups | None = None,
                 client_factory: Callable[[], WebClient] | None = None,
                 clock: Callable[[], datetime] = utcnow, owners: OwnerResolver | None = None):
        self.engine = engine
        self.settings = settings
        self.rules = rules
        self.clock = clock  # what time it is: when rows are enqueued, and `now` when none is given
        self.wakeups = wakeups or Wakeups()  # Services.wakeups; none given: set with no sender, harmless
        if client_factory is None:
            from bot.slack.client import web_client

            # No blocking retries: this runs in the ingest request path; a failed lookup means
            # "channel only" for this ping, never a stalled request.
            def client_factory() -> WebClient:
                return web_client(settings, blocking_retries=False, timeout=5)
        self._client_factory = client_factory
        self._client: WebClient | None = None
        # The owners' Slack users (shared with the process's resolver thread when given).
        self.owners = owners or OwnerResolver(engine, settings, rules, wakeups=self.wakeups, clock=clock)

    @property
    def client(self) -> WebClient:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    # ------------------------------------------------------------------ entry points

    def handle(self, report) -> None:
        """The scan change hook: route what the scan opened or changed."""
        ids = list(dict.fromkeys([*report.opened_ids, *report.changed_ids]))
        if not ids:
            return
        try:
            self.route_stalls(ids, report.now)
        except Exception:  # never fail the scan or the ingest request; the stall stays in the digest
            log.exception("slack router: routing %d stall(s) failed", len(ids))

    def route_stalls(self, stall_ids: Iterable[int], now: datetime | None = None) -> RouteStats:
        """Route the accounts of these stalls: one alert per account (see the module doc)."""
        now = _aware(now) or self.clock()
        stats = RouteStats()
        ids = sorted(set(stall_ids))
        if not ids:
            return stats
        with read_tx(self.engine) as conn:
            accounts = _load_accounts(conn, ids)
        # The budget goes to the top accounts first.
        accounts.sort(key=lambda a: (-max((s.score or 0.0) for s in a.stalls), a.account_id))
        budget: dict[str | None, int] = {}
        backlog: dict[str | None, list[_AccountAlert]] = defaultdict(list)
        for account in accounts:
            try:
                self._route_account(account, ids, now, budget, backlog, stats)
            except Exception:
                log.exception("slack router: account %r", account.account_id)
        for owner_key, items in backlog.items():
            try:
                stats.enqueued += self._post_backlog(items, now, stats)
            except Exception:
                log.exception("slack router: the backlog summary of %s", owner_key or "unowned accounts")
        if stats.enqueued:
            self.wakeups.slack_outbox.set()
        return stats

    # ------------------------------------------------------------------ one account

    def _route_account(self, account: "_AccountAlert", ids: list[int], now: datetime, budget: dict,
                       backlog: dict, stats: RouteStats) -> None:
        open_pings = [a for a in account.alerts if a.kind == PING and a.closed_at is None]
        if open_pings:
            lead_id = max(a.stall_id for a in open_pings)  # several only in data from before one alert per account
            for stale in sorted({a.stall_id for a in open_pings} - {lead_id}):
                stats.enqueued += self._close(stale, [a for a in open_pings if a.stall_id == stale], now)
            pings = [a for a in open_pings if a.stall_id == lead_id]
            if not account.live:
                stats.closed += 1
                stats.enqueued += self._close(lead_id, pings, now)
            else:
                self._update(account, lead_id, pings, ids, now, stats)
            return
        candidates = [s for s in account.live if s.status == "open"]
        if not candidates:
            return  # snoozed, or all closed: nothing to say
        top = candidates[0]
        owner_key = (account.owner_email or "").lower() or None
        marks = {a.stall_id: a for a in account.alerts if a.kind == BACKLOG}
        overflow = next((a for a in account.alerts if a.kind == OVERFLOW and a.stall_id == top.id), None)
        view = StallView(
            id=top.id, priority=top.priority, status="open", owner=account.owner_slack_id or account.owner_email,
            overflowed_priority=overflow.priority if overflow is not None else None, track=account.track,
            backlog=all(is_backlog(_aware(s.threshold_at), _first_seen(account, s)) for s in candidates),
            backlog_recorded=all(s.id in marks for s in candidates),
        )
        if owner_key not in budget:
            budget[owner_key] = self._pings_last_hour(owner_key, now)
        decision = route(view, owner_pings_last_hour=budget[owner_key], now=now, rules=self.rules)
        log.debug("slack router: account %r: %s (%s)", account.account_id, decision.kind, decision.reason)
        if decision.kind == "backlog":
            backlog[owner_key].append(account)
            stats.backlog += 1
        elif decision.kind == "digest":
            stats.digest += 1
            if decision.note:
                self._record_overflow(top, now)
        elif decision.kind in ("ping", "hold"):
            not_before = decision.not_before if decision.kind == "hold" else None
            n = self._ping(account, top, now, not_before)
            if n:
                budget[owner_key] += 1
                stats.pinged += 1
            stats.held += bool(n) and not_before is not None
            stats.enqueued += n

    def _destinations(self, account: "_AccountAlert") -> list[tuple[str, str]]:
        """(Alert.channel, outbox method) of a ping: the owner's DM, the alerts channel."""
        owner_id = self._owner_slack_id(account)
        dests = [(owner_id, "dm")] if owner_id else []
        if self.settings.alerts_channel:
            dests.append((self.settings.alerts_channel, "chat.postMessage"))
        return dests

    def _ping(self, account: "_AccountAlert", top, now: datetime, not_before: datetime | None) -> int:
        """The account's one ping, on its top stall (the lead); its other live stalls are reasons."""
        dests = self._destinations(account)
        if not dests:
            log.info("slack router: account %r is %s but there is nowhere to ping", account.account_id, top.priority)
            return 0
        view = self._view(top, now)
        others = [s for s in account.live if s.id != top.id]
        sent_at = not_before or now  # when the ping goes out: what the hourly budget counts
        enqueued = 0
        with write_tx(self.engine) as conn:
            # Two routers may ping the same account at once (a scan and an event-driven
            # evaluation, each with its own new stall as the top): one at a time per account,
            # so the second reads the first's ping (PostgreSQL reads what committed before
            # each statement; SQLite's writers are serial already).
            lock_key(conn, PING_LOCKS, account.account_id)
            if _open_ping_of(conn, account.account_id) not in (None, top.id):
                return 0  # another router pinged the account meanwhile: its next routing updates that ping
            for dest, method in dests:
                alert_id = conn.execute(insert_ignore(conn, ALERT, "stall_id", "channel", "kind").values(
                    stall_id=top.id, channel=dest, kind=PING, priority=view.priority, lead_stall_id=top.id,
                    created_at=sent_at, updated_at=now,
                ).returning(ALERT.c.id)).scalar()
                if alert_id is None:
                    continue  # another router pinged this destination already
                for other in others:
                    conn.execute(insert_ignore(conn, ALERT, "stall_id", "channel", "kind").values(
                        stall_id=other.id, channel=dest, kind=REASON, priority=other.priority, lead_stall_id=top.id,
                        created_at=sent_at, updated_at=now))
                target = {"user": dest} if method == "dm" else {"channel": dest}
                enqueued += enqueue(conn, key=ping_key(top.id, dest), method=method, alert_id=alert_id,
                                    not_before=not_before, now=self.clock(),
                                    payload={**target, "text": ping_text(view), "blocks": ping_blocks(view),
                                             "unfurl_links": False})
        return enqueued

    def _update(self, account: "_AccountAlert", lead_id: int, pings: list, ids: list[int], now: datetime,
                stats: RouteStats) -> None:
        """The account's ping is open: a new reason or a new priority edits it in place, with
        one thread reply; any other change of its stalls (one closed, a priority within) edits
        it silently."""
        live_open = [s for s in account.live if s.status == "open"]
        attached = defaultdict(set)  # dest -> stalls the ping at dest has announced
        for a in account.alerts:
            if (a.kind == PING and a.stall_id == lead_id) or (a.kind == REASON and a.lead_stall_id == lead_id):
                attached[a.channel].add(a.stall_id)
        # A stall of the alert that closed (routed now, not live): the ping drops it, silently.
        gone = [s.id for s in account.stalls if s.id in ids and s.status not in LIVE
                and any(s.id in stalls for stalls in attached.values())]
        if not gone and not self._news_possible(account, pings, attached, bool(live_open)):
            return  # nothing joined, the priority did not move, nothing closed: no write, no rendering
        lead = next((s for s in account.stalls if s.id == lead_id), None)
        view = self._view(lead or account.live[0], now)
        enqueued = 0
        news = False
        with write_tx(self.engine) as conn:
            for alert in pings:
                new = [s for s in account.live if s.id not in attached[alert.channel]]
                added = [s.id for s in new if conn.execute(insert_ignore(conn, ALERT, "stall_id", "channel", "kind").values(
                    stall_id=s.id, channel=alert.channel, kind=REASON, priority=s.priority, lead_stall_id=lead_id,
                    created_at=now, updated_at=now).returning(ALERT.c.id)).scalar() is not None]
                previous = alert.priority
                current = view.priority if live_open else previous  # all snoozed: the priority waits
                decision = route(StallView(id=lead_id, priority=current, status="open", already_pinged_priority=previous,
                                           owner=account.owner_slack_id or account.owner_email, track=account.track),
                                 owner_pings_last_hour=0, now=now, rules=self.rules)
                raised = previous != current and conn.execute(
                    update(ALERT).where(ALERT.c.id == alert.id, ALERT.c.priority == previous)
                    .values(priority=current, updated_at=now)).rowcount == 1
                if not added and not raised:
                    continue
                key = ping_key(lead_id, alert.channel)
                held = conn.execute(select(OUTBOX.c.payload).where(OUTBOX.c.key == key, OUTBOX.c.status == PENDING)).first()
                not_before = decision.not_before if decision.kind == "hold" else None
                if held is not None:
                    # Not posted yet (held by quiet hours): post the new version instead, when it
                    # may go out (a P0 at once), rather than post and then edit.
                    payload = {**held.payload, "text": ping_text(view), "blocks": [b.to_dict() for b in ping_blocks(view)]}
                    if conn.execute(update(OUTBOX).where(OUTBOX.c.key == key, OUTBOX.c.status == PENDING)
                                    .values(payload=payload, next_attempt_at=not_before or self.clock())).rowcount:
                        conn.execute(update(ALERT).where(ALERT.c.id == alert.id).values(created_at=not_before or now))
                        enqueued += 1
                        continue
                news = True
                reply = news_text(view, new_reasons=added, previous=previous if raised else None)
                enqueued += enqueue(conn, key=f"news:{lead_id}:{alert.channel}:{min(added, default=0)}:{current}",
                                    now=self.clock(), method="chat.postMessage", alert_id=alert.id,
                                    not_before=not_before if current != "P0" else None,
                                    payload={"thread_ts_from": key, "text": reply})
            if news:
                # Every ping of the account, rendered when sent. At once even in quiet hours: an
                # edit makes no sound; the thread reply that does is what waits.
                note = _change_note(pings[0].priority, view.priority) if pings[0].priority != view.priority else None
                enqueued += enqueue_refresh(conn, lead_id, now=self.clock(), note=note)
            elif gone:
                enqueued += enqueue_refresh(conn, lead_id, now=self.clock(), once=f"closed-{min(gone)}")
        stats.updated += bool(news)
        stats.enqueued += enqueued

    @staticmethod
    def _news_possible(account: "_AccountAlert", pings: list, attached: dict, live_open: bool) -> bool:
        """Whether _update may have something to write for one of these pings: a live stall
        its ping has not announced, or a new priority. The alert's priority is its top live
        stall's (account.live is ranked as the ping view ranks it, ping_views)."""
        top = account.live[0].priority
        for alert in pings:
            if any(s.id not in attached[alert.channel] for s in account.live):
                return True
            if live_open and alert.priority != top:
                return True
        return False

    def _close(self, lead_id: int, pings: list, now: datetime) -> int:
        """None of the alert's stalls is live: its pings say how it ended (or, still held in
        the outbox by quiet hours, are cancelled); the alert is closed, once."""
        enqueued = 0
        posted = False
        with write_tx(self.engine) as conn:
            for alert in pings:
                if not conn.execute(update(ALERT).where(ALERT.c.id == alert.id, ALERT.c.closed_at.is_(None))
                                    .values(closed_at=now, updated_at=now)).rowcount:
                    continue  # another router closed it
                key = alert_key(lead_id, alert.kind, alert.channel)
                cancelled = conn.execute(
                    update(OUTBOX).where(OUTBOX.c.key == key, OUTBOX.c.status == PENDING)
                    .values(status="failed", error="cancelled: the account's stalls closed before delivery")).rowcount
                if cancelled:
                    # and so are the edits and replies queued behind it
                    conn.execute(update(OUTBOX).where(OUTBOX.c.status == PENDING,
                                                      OUTBOX.c.key.like(f"%:{lead_id}:{alert.channel}:%"))
                                 .values(status="failed", error="cancelled: the ping was cancelled"))
                    continue
                posted = True
            if posted:
                enqueued += enqueue_refresh(conn, lead_id, now=self.clock(), once="close")
        return enqueued

    def _post_backlog(self, accounts: list["_AccountAlert"], now: datetime, stats: RouteStats) -> int:
        """One summary of an owner's backlog (accounts already stalled when Stallwatch first saw
        them), ranked, in their DM (else the alerts channel); each stall is marked so that it is
        summarised once and never pinged or escalated one by one."""
        first = accounts[0]
        dests = self._destinations(first)
        dest, method = dests[0] if dests else (DIGEST_CHANNEL_MARK, None)
        views = self._views([a.live[0].id for a in accounts], now)
        with write_tx(self.engine) as conn:
            listed, marks = [], []
            for account in accounts:
                fresh = [conn.execute(insert_ignore(conn, ALERT, "stall_id", "channel", "kind").values(
                    stall_id=s.id, channel=dest, kind=BACKLOG, priority=s.priority, lead_stall_id=account.live[0].id,
                    created_at=now, updated_at=now).returning(ALERT.c.id)).scalar() for s in account.live
                    if s.status == "open"]
                marks += [m for m in fresh if m is not None]
                if any(m is not None for m in fresh) and account.live[0].id in views:
                    listed.append(views[account.live[0].id])
            if not listed or method is None:
                return 0
            listed.sort(key=lambda v: (PRIORITY_RANK.get(v.priority, 9), -v.arr, v.account_name))
            target = {"user": dest} if method == "dm" else {"channel": dest}
            owner = dest if method == "dm" else first.owner_slack_id or first.owner_email
            stats.backlog_summaries += 1
            return enqueue(conn, key=f"backlog:{dest}:{min(marks)}", method=method, now=self.clock(),
                           not_before=quiet_hours_end(now, self.rules),
                           payload={**target, "text": backlog_text(listed, owner=owner),
                                    "blocks": backlog_blocks(listed, owner=owner), "unfurl_links": False})

    def _record_overflow(self, stall, now: datetime) -> None:
        with write_tx(self.engine) as conn:
            inserted = conn.execute(insert_ignore(conn, ALERT, "stall_id", "channel", "kind").values(
                stall_id=stall.id, channel=DIGEST_CHANNEL_MARK, kind=OVERFLOW, priority=stall.priority,
                created_at=now, updated_at=now).returning(ALERT.c.id)).scalar()
            if inserted is None:
                conn.execute(update(ALERT).where(ALERT.c.stall_id == stall.id, ALERT.c.kind == OVERFLOW)
                             .values(priority=stall.priority, updated_at=now))

    # ------------------------------------------------------------------ the safety net

    def route_unrouted(self, now: datetime | None = None) -> int:
        """Route live stalls owed a real-time ping that no router has looked at: the scan
        commits a stall and the router enqueues its pings in later transactions, so a process
        killed in between leaves a P0/P1 stall with neither a ping nor an overflow record.
        A leader job at the scan interval; returns how many stalls it routed. Routing twice is
        harmless (Alert rows are unique per stall, destination and kind)."""
        now = _aware(now) or self.clock()
        # Stalls of a digest-only track are owed nothing: left out, they cannot crowd the batch.
        digest_only = [t for t in TRACKS if not self.rules.tracks.pings_realtime(t)]
        owed = (select(STALL.c.id).where(
            STALL.c.open_key.is_not(None), STALL.c.status == "open",
            STALL.c.priority.in_(list(self.rules.routing.realtime)), STALL.c.updated_at <= now - UNROUTED_SETTLE,
            ~STALL.c.account_id.in_(select(ACCOUNT.c.id).where(ACCOUNT.c.track.in_(digest_only))),
            ~select(ALERT.c.id).where(ALERT.c.stall_id == STALL.c.id,
                                      ALERT.c.kind.in_((PING, OVERFLOW, REASON, BACKLOG))).exists()))
        with read_tx(self.engine) as conn:
            ids = list(conn.execute(owed.limit(500)).scalars())
        if ids:
            stats = self.route_stalls(ids, now)
            # (a stall with nowhere to ping, no owner in Slack and no alerts channel, stays owed: quietly)
            (log.info if stats.enqueued else log.debug)(
                "slack router: %d stall(s) were never routed (a process stopped mid-way?): %d message(s) enqueued",
                len(ids), stats.enqueued)
        return len(ids)

    # ------------------------------------------------------------------ escalation

    def escalate_due(self, now: datetime | None = None) -> int:
        """Enqueue one escalation to the digest channel per unacknowledged P0 ping that is
        `escalate_p0_after_minutes` old; returns how many were enqueued."""
        channel = self.settings.digest_channel
        if not channel:
            return 0
        now = _aware(now) or self.clock()
        delay = timedelta(minutes=self.rules.routing.escalate_p0_after_minutes)
        escalated = select(ALERT.c.stall_id).where(ALERT.c.kind == ESCALATION)
        # One alert per account: its ping (on the lead stall) is open at P0 while some stall of
        # the account is an open P0, whichever stall that is now.
        other = STALL.alias("other")
        live_p0 = select(other.c.id).where(other.c.account_id == STALL.c.account_id, other.c.status == "open",
                                           other.c.priority == "P0").exists()
        with read_tx(self.engine) as conn:
            rows = list(conn.execute(
                select(ALERT.c.stall_id, func.min(ALERT.c.created_at).label("pinged_at"),
                       func.max(ALERT.c.acked_at).label("acked_at"))
                .select_from(ALERT.join(STALL, STALL.c.id == ALERT.c.stall_id))
                .where(ALERT.c.kind == PING, ALERT.c.priority == "P0", ALERT.c.closed_at.is_(None), live_p0,
                       ALERT.c.created_at <= now - delay, ALERT.c.stall_id.not_in(escalated))
                .group_by(ALERT.c.stall_id)))
        due = [r for r in rows if escalation_due(_aware(r.pinged_at), r.acked_at is not None, "P0", now, self.rules)]
        if not due:
            return 0
        with read_tx(self.engine) as conn:
            stalls = {s.id: s for s in conn.execute(
                select(STALL, ACCOUNT.c.name.label("account_name"), ACCOUNT.c.arr.label("account_arr"),
                       ACCOUNT.c.owner_email, ACCOUNT.c.owner_slack_id, ACCOUNT.c.last_seen_at, ACCOUNT.c.steps)
                .select_from(STALL.join(ACCOUNT, ACCOUNT.c.id == STALL.c.account_id, isouter=True))
                .where(STALL.c.id.in_([r.stall_id for r in due])))}
        enqueued = 0
        due = sorted((r for r in due if r.stall_id in stalls), key=lambda r: (-(stalls[r.stall_id].score or 0), r.stall_id))
        views = self._views([r.stall_id for r in due[:ESCALATE_EACH]], now)
        for r in due[:ESCALATE_EACH]:
            stall = stalls[r.stall_id]
            minutes = int((now - _aware(r.pinged_at)).total_seconds() // 60)
            view = views.get(stall.id)
            if view is None:  # deleted since it was read
                continue
            with write_tx(self.engine) as conn:
                alert_id = conn.execute(insert_ignore(conn, ALERT, "stall_id", "channel", "kind").values(
                    stall_id=stall.id, channel=channel, kind=ESCALATION, priority=stall.priority,
                    created_at=now, updated_at=now).returning(ALERT.c.id)).scalar()
                if alert_id is None:
                    continue
                enqueued += enqueue(conn, key=f"escalation:{stall.id}", method="chat.postMessage", alert_id=alert_id,
                                    now=self.clock(),
                                    payload={"channel": channel,
                                             "text": escalation_text(view, minutes_unacked=minutes),
                                             "blocks": escalation_blocks(view, minutes_unacked=minutes)})
        enqueued += self._escalate_together([stalls[r.stall_id] for r in due[ESCALATE_EACH:]], channel, now)
        if enqueued:
            self.wakeups.slack_outbox.set()
        return enqueued

    def _escalate_together(self, stalls: list, channel: str, now: datetime) -> int:
        """One summary post for many unacknowledged P0s (each still gets its escalation Alert,
        so none escalates again)."""
        if not stalls:
            return 0
        views = self._views([s.id for s in stalls], now)
        with write_tx(self.engine) as conn:
            fresh = [s for s in stalls if conn.execute(insert_ignore(conn, ALERT, "stall_id", "channel", "kind").values(
                stall_id=s.id, channel=channel, kind=ESCALATION, priority=s.priority, created_at=now,
                updated_at=now).returning(ALERT.c.id)).scalar() is not None]
            if not fresh:
                return 0
            delay = self.rules.routing.escalate_p0_after_minutes
            return enqueue(conn, key=f"escalation-summary:{min(s.id for s in fresh)}:{now:%Y%m%d%H%M}",
                           method="chat.postMessage", now=self.clock(),
                           payload={"channel": channel,
                                    "text": f"{len(fresh)} more unacknowledged P0 stalls",
                                    "blocks": escalation_summary_blocks([views[s.id] for s in fresh],
                                                                        delay_minutes=delay)})

    # ------------------------------------------------------------------ after recovery emails

    def recovery_due(self, now: datetime | None = None) -> int:
        """Follow up on recovery emails (`rules.outreach.followup`): a stall still live
        `recheck_days` after its last recovery email is pinged again as the next attempt, or,
        after the last attempt, handed to the managers (win-back, in the digest channel).
        Each happens once (Alert kinds "attempt<n>" and "winback" are unique per stall and
        destination). A leader-only scheduler job; returns how many rows were enqueued."""
        now = _aware(now) or self.clock()
        outreach = self.rules.outreach
        with read_tx(self.engine) as conn:
            stalls = list(conn.execute(
                select(STALL, ACCOUNT.c.name.label("account_name"), ACCOUNT.c.arr.label("account_arr"),
                       ACCOUNT.c.owner_email, ACCOUNT.c.owner_slack_id, ACCOUNT.c.last_seen_at, ACCOUNT.c.steps)
                .select_from(STALL.join(ACCOUNT, ACCOUNT.c.id == STALL.c.account_id, isouter=True))
                .where(STALL.c.open_key.is_not(None), STALL.c.recovery_attempts > 0,
                       STALL.c.last_recovery_at <= now - timedelta(days=outreach.recheck_days))))
            handled: dict[int, int] = defaultdict(int)
            if stalls:
                for a in conn.execute(select(ALERT.c.stall_id, ALERT.c.kind).where(
                        ALERT.c.stall_id.in_([s.id for s in stalls]),
                        ALERT.c.kind.like(f"{FOLLOWUP}%") | (ALERT.c.kind == WINBACK))):
                    n = 10**6 if a.kind == WINBACK else int(a.kind.removeprefix(FOLLOWUP) or 0) - 1
                    handled[a.stall_id] = max(handled[a.stall_id], n)
        enqueued = 0
        for stall in stalls:
            if stall.snoozed_until is not None and _aware(stall.snoozed_until) > now:
                continue  # a snooze asks for silence; the follow-up comes when it ends
            decision = followup(stall_status=stall.status, attempts=stall.recovery_attempts,
                                last_recovery_at=_aware(stall.last_recovery_at), handled_attempt=handled[stall.id],
                                now=now, outreach=outreach)
            try:
                if decision.kind == "realert":
                    enqueued += self._follow_up(stall, decision.attempt, now)
                elif decision.kind == "winback":
                    enqueued += self._win_back(stall, decision.attempt, now)
            except Exception:
                log.exception("slack router: recovery follow-up of stall %s", stall.id)
        if enqueued:
            self.wakeups.slack_outbox.set()
        return enqueued

    def _follow_up(self, stall, attempt: int, now: datetime) -> int:
        owner_id = self._owner_slack_id(stall)
        note = followup_note(attempt, _aware(stall.last_recovery_at))
        view = self._view(stall, now, note=note)
        dests = ([(owner_id, "dm")] if owner_id else []) + (
            [(self.settings.alerts_channel, "chat.postMessage")] if self.settings.alerts_channel else [])
        # Quiet hours hold it like a ping (a P0 goes at once).
        not_before = None if stall.priority == "P0" else quiet_hours_end(now, self.rules)
        kind = f"{FOLLOWUP}{attempt}"
        enqueued = 0
        with write_tx(self.engine) as conn:
            for dest, method in dests:
                alert_id = conn.execute(insert_ignore(conn, ALERT, "stall_id", "channel", "kind").values(
                    stall_id=stall.id, channel=dest, kind=kind, priority=stall.priority,
                    created_at=not_before or now, updated_at=now).returning(ALERT.c.id)).scalar()
                if alert_id is None:
                    continue
                target = {"user": dest} if method == "dm" else {"channel": dest}
                enqueued += enqueue(conn, key=alert_key(stall.id, kind, dest), method=method, alert_id=alert_id,
                                    not_before=not_before, now=self.clock(),
                                    payload={**target, "text": f"{note}: {ping_text(view)}",
                                             "blocks": ping_blocks(view), "unfurl_links": False})
        return enqueued

    def _win_back(self, stall, attempts: int, now: datetime) -> int:
        channel = self.settings.digest_channel
        if not channel:
            log.info("slack router: stall %s is a win-back handoff but STALLWATCH_DIGEST_CHANNEL is not set", stall.id)
            channel = DIGEST_CHANNEL_MARK  # recorded, so the digest can show it; nothing to post
        view = self._view(stall, now)
        last_sent = _aware(stall.last_recovery_at)
        with write_tx(self.engine) as conn:
            alert_id = conn.execute(insert_ignore(conn, ALERT, "stall_id", "channel", "kind").values(
                stall_id=stall.id, channel=channel, kind=WINBACK, priority=stall.priority,
                created_at=now, updated_at=now).returning(ALERT.c.id)).scalar()
            if alert_id is None or channel == DIGEST_CHANNEL_MARK:
                return 0
            return enqueue(conn, key=f"winback:{stall.id}", method="chat.postMessage", alert_id=alert_id,
                           now=self.clock(),
                           payload={"channel": channel, "text": winback_text(view, attempts=attempts),
                                    "blocks": winback_blocks(view, attempts=attempts, last_sent=last_sent)})

    # ------------------------------------------------------------------ helpers

    def _pings_last_hour(self, owner_email: str | None, now: datetime) -> int:
        """Stalls pinged in real time to this owner (None: to unowned stalls) in the last hour."""
        params = {"since": now - timedelta(hours=1), "now": now}
        if owner_email:
            params["owner"] = owner_email
        with read_tx(self.engine) as conn:
            return conn.execute(_pings_last_hour_statement(bool(owner_email)), params).scalar_one()

    def _owner_slack_id(self, stall) -> str | None:
        """The owner's Slack user id: stored on the account, else looked up by email (and stored)."""
        if stall.owner_slack_id:
            return stall.owner_slack_id
        # No blocking retries (self.client): a failed lookup means "channel only" for this ping.
        return self.owners.slack_id(stall.owner_email, client=lambda: self.client)

    def _views(self, stall_ids: Iterable[int], now: datetime) -> dict[int, PingView]:
        """The pings of these stalls as every other path renders them (one builder)."""
        with read_tx(self.engine) as conn:
            return ping_views(conn, stall_ids, self.rules, now)

    def _view(self, stall, now: datetime, *, note: str | None = None) -> PingView:
        view = self._views([stall.id], now)[stall.id]
        return replace(view, note=note) if note else view


@lru_cache(maxsize=None)
def _pings_last_hour_statement(owned: bool):
    """Router._pings_last_hour's statement, built once per kind (an owner's, the unowned)."""
    owner = func.lower(ACCOUNT.c.owner_email)
    created = ALERT.c.created_at
    return (select(func.count(func.distinct(ALERT.c.stall_id)))
            .select_from(ALERT.join(STALL, STALL.c.id == ALERT.c.stall_id)
                         .join(ACCOUNT, ACCOUNT.c.id == STALL.c.account_id))
            .where(ALERT.c.kind == PING, created > bindparam("since", type_=created.type),
                   created <= bindparam("now", type_=created.type),
                   owner == bindparam("owner", type_=ACCOUNT.c.owner_email.type) if owned
                   else ACCOUNT.c.owner_email.is_(None)))


def _first_seen(account: _AccountAlert, stall) -> datetime | None:
    """When Stallwatch first saw the account, as far as this stall can tell: the account row's
    creation, or the stall's opening if earlier (a clock that is not the wall clock: the demo
    stores with the real clock and scans with its own)."""
    times = [t for t in (_aware(account.created_at), _aware(stall.opened_at)) if t is not None]
    return min(times) if times else None


def _open_ping_of(conn, account_id: str) -> int | None:
    """The lead stall of the account's open ping, if any (read inside the pinging transaction)."""
    return conn.execute(select(ALERT.c.stall_id).select_from(ALERT.join(STALL, STALL.c.id == ALERT.c.stall_id))
                        .where(STALL.c.account_id == account_id, ALERT.c.kind == PING, ALERT.c.closed_at.is_(None))
                        .order_by(ALERT.c.id.desc()).limit(1)).scalar()


def _change_note(previous: str, current: str) -> str:
    direction = "raised" if current < previous else "lowered"  # "P0" < "P1": higher priority
    return f"Priority {direction} from {previous} to {current}"
