"""Account owners in Slack: each owner email mapped to a Slack user id (`users.lookupByEmail`),
stored on the account (Account.owner_slack_id), and open pings following a change of owner.

Ownership decides who is DMed, who may act on an alert and whose `/stalls mine` and App Home
list the account, so the mapping must be there before any ping and must follow the CRM:

- ingest and `import-accounts` clear `owner_slack_id` in the same UPDATE that changes
  `owner_email` (or set it from another account already mapped to that email:
  storage.ingest._owner_changes) and audit the reassignment;
- `OwnerResolver.resolve_pending` looks up every distinct owner email still unmapped. It runs
  at the start of `serve`/`worker` in a background thread (so every CSM is mapped before any
  ping), when ingest changed an owner (`Wakeups.slack_owners`: the request only sets the
  event), and daily as a leader-only job for the emails Slack did not know;
- `OwnerResolver.slack_id` is the router's lookup of one owner at ping time: the same call,
  stored the same way, never sleeping (it runs in the ingest request path);
- after each pass, `move_open_pings` moves an open ping whose owner changed: the former
  owner's DM is edited to say it was reassigned (no buttons) and the new owner gets the ping
  by DM (the router's Alert row and outbox key, `ping:{lead}:{user}`: once).

Slack's limits: users.lookupByEmail is tier 3 (about 50 calls a minute, short bursts
tolerated). Calls are paced by a token bucket shared by the passes and the router; the pass
uses the project's blocking client (its 429 handler sleeps Retry-After once) and, on a 429
that still comes through, waits Retry-After itself and tries the same email again. An email
Slack does not know (users_not_found) is remembered in the database (storage.meta, keyed by a
hash of the email) and not looked up again for NOT_FOUND_RETRY; any other failure (a 5xx, a
timeout) for TRANSIENT_RETRY, in this process.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlalchemy import Engine, delete, func, select, update

from bot.settings import Settings
from bot.slack.outbox import OUTBOX, PENDING, SENDING, SENT, enqueue, enqueue_refresh
from bot.slack.queries import PING, REASON
from bot.slack.render import ping_blocks, ping_text
from bot.slack.render.format import is_user_id, person
from bot.slack.render.limits import NAME_MAX
from bot.slack.render.primitives import section_block
from bot.slack.text import md
from bot.stalls.context import Wakeups
from bot.stalls.views import ping_views
from rules.config import Rules
from rules.routing import quiet_hours_end
from storage.db import read_tx, retry_conflicts, utcnow, write_tx
from storage.models import Account, Alert, AuditEntry, Meta, Stall
from storage.sql import chunks, insert_ignore, upsert

log = logging.getLogger(__name__)

UTC = timezone.utc
ACCOUNT = Account.__table__
ALERT = Alert.__table__
AUDIT = AuditEntry.__table__
META = Meta.__table__
STALL = Stall.__table__

MOVED = "moved"  # Alert.kind of a DM ping whose account went to another owner (its message says so)
OWNER_CHANGED = "account.owner_changed"  # the audit action storage.ingest writes

PER_MINUTE = 50  # users.lookupByEmail is a tier 3 method
BURST = 10  # calls allowed at once before the pace applies
MAX_RATE_LIMITED = 5  # 429s in a row before a pass gives up (the next wake or the daily job goes on)
# An email Slack does not know is looked up again after this: a little under a day, so the
# daily job retries it every day whatever the minute it last ran.
NOT_FOUND_RETRY = timedelta(hours=23)
TRANSIENT_RETRY = timedelta(minutes=10)  # a 5xx, a timeout: the router pings the channel meanwhile
UNKNOWN_PREFIX = "slack_owner_unknown:"  # Meta key prefix, + a hash of the email
WAKE_POLL_SECONDS = 1.0  # how often the background thread looks at its stop event


def unknown_key(email: str) -> str:
    """The Meta key remembering that Slack did not know this email (no email in the key)."""
    return UNKNOWN_PREFIX + hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass
class ResolveStats:
    """What one `resolve_pending` pass did (logs and tests)."""

    pending: int = 0  # distinct unmapped owner emails found
    looked_up: int = 0  # users.lookupByEmail calls that answered (found or not)
    resolved: int = 0
    not_found: int = 0
    skipped: int = 0  # remembered as unknown, or failed a moment ago
    failed: int = 0
    rate_limited: int = 0  # 429s waited out
    moved: int = 0  # open pings moved to a new owner

    def summary(self) -> str:
        return (f"slack owners: {self.pending} unmapped email(s), {self.resolved} mapped, {self.not_found} unknown to "
                f"Slack, {self.skipped} skipped, {self.failed} failed, {self.rate_limited} rate-limited wait(s), "
                f"{self.moved} open ping(s) moved")


class _Pace:
    """A token bucket: at most `per_minute` calls a minute after a burst of `burst`."""

    def __init__(self, per_minute: int, burst: int, monotonic: Callable[[], float]):
        self.rate = per_minute / 60.0
        self.capacity = float(burst)
        self.tokens = float(burst)
        self.monotonic = monotonic
        self.at = monotonic()
        self.lock = threading.Lock()

    def take(self) -> float:
        """Take a call's token; returns how long to wait before making the call (0: now)."""
        with self.lock:
            self._refill()
            self.tokens -= 1.0
            return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def hold(self, seconds: float) -> None:
        """Slack said 429: the next call waits `seconds` at least (the bucket emptied that far)."""
        with self.lock:
            self._refill()
            self.tokens = min(self.tokens, 0.0) + 1.0 - seconds * self.rate

    def _refill(self) -> None:
        now = self.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now


@dataclass(frozen=True)
class _Lookup:
    outcome: str  # "found" | "not_found" | "rate_limited" | "failed"
    user_id: str | None = None
    retry_after: float = 0.0


class OwnerResolver:
    """Maps owner emails to Slack users (see the module doc). One per process, shared by the
    router, the background thread and the scheduler's daily job, so they share the pace."""

    def __init__(self, engine: Engine, settings: Settings, rules: Rules, *,
                 client_factory: Callable[[], WebClient] | None = None, wakeups: Wakeups | None = None,
                 clock: Callable[[], datetime] = utcnow, sleep: Callable[[float], object] | None = None,
                 monotonic: Callable[[], float] = time.monotonic, per_minute: int = PER_MINUTE, burst: int = BURST):
        self.engine = engine
        self.settings = settings
        self.rules = rules
        self.wakeups = wakeups or Wakeups()
        self.clock = clock
        self.monotonic = monotonic
        self._stop = threading.Event()  # set: a pass stops between lookups (the thread's stop event)
        self.sleep = sleep or self._wait
        if client_factory is None:
            from bot.slack.client import web_client

            def client_factory() -> WebClient:  # the blocking retries: a background pass may wait
                return web_client(settings)
        self._client_factory = client_factory
        self._client: WebClient | None = None
        self._pace = _Pace(per_minute, burst, monotonic)
        self._failed: dict[str, float] = {}  # email -> monotonic time of a transient failure
        self._lock = threading.Lock()
        self._pass_lock = threading.Lock()  # one pass at a time (the thread, the daily job)
        self.thread: threading.Thread | None = None  # the background thread, once started

    def _wait(self, seconds: float) -> None:
        """Wait out a rate limit, or less when the process stops."""
        self._stop.wait(seconds)

    @property
    def client(self) -> WebClient:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    # ------------------------------------------------------------------ one owner (the router)

    def slack_id(self, email: str | None, *, client: Callable[[], WebClient] | None = None) -> str | None:
        """The Slack user of this owner email, looked up now and stored on every account it
        owns; None when there is nobody to look up, Slack does not know the email (remembered),
        or the lookup failed. Never waits: the router calls it while routing a ping, with its
        own client (`client`: made only when a call is made)."""
        email = (email or "").strip()
        if not email or not self.settings.slack_enabled:
            return None  # no token (the demo, a dry run): no lookup, channel only
        now = self.clock()
        if self._recently_failed(email) or self._remembered_unknown([email], now):
            return None
        self._pace.take()  # counted against the pace of the passes, never waited for here
        found = self._lookup(email, client() if client is not None else self.client)
        self._record(email, found, now)
        if found.outcome != "found":
            log.info("slack owners: no Slack user for %s (%s); pinging the channel only", email, found.outcome)
        return found.user_id

    # ------------------------------------------------------------------ every owner (a pass)

    def resolve_pending(self, now: datetime | None = None) -> ResolveStats:
        """Look up every distinct owner email no account has a Slack user for (but those Slack
        did not know less than NOT_FOUND_RETRY ago), paced and backing off on 429; then move
        the open pings whose owner changed. Returns what it did."""
        stats = ResolveStats()
        if not self.settings.slack_enabled:
            return stats
        with self._pass_lock:
            now = _aware(now) or self.clock()
            emails = self._pending_emails()
            stats.pending = len(emails)
            unknown = self._remembered_unknown(emails, now)
            for email in emails:
                if self._stop.is_set():
                    break
                if email in unknown or self._recently_failed(email):
                    stats.skipped += 1
                    continue
                if not self._still_unmapped(email):  # another process mapped it meanwhile
                    continue
                found = self._paced_lookup(email, stats)
                if found is None:  # stopping, or Slack kept answering 429: the next pass goes on
                    break
                self._record(email, found, now)
                stats.looked_up += found.outcome in ("found", "not_found")
                stats.resolved += found.outcome == "found"
                stats.not_found += found.outcome == "not_found"
                stats.failed += found.outcome == "failed"
            stats.moved = self.move_open_pings(now)
        (log.info if stats.pending or stats.moved else log.debug)("%s", stats.summary())
        return stats

    def start(self, stop_event: threading.Event) -> threading.Thread:
        """The background thread: a pass at once (every CSM mapped at start), then one each
        time `wakeups.slack_owners` is set (ingest changed an owner), until `stop_event`."""
        wake = self.wakeups.slack_owners
        self._stop = stop_event  # stopping the process ends a pass's wait on a rate limit at once

        def run() -> None:
            first = True
            while not stop_event.is_set():
                if first or wake.wait(WAKE_POLL_SECONDS):
                    first = False
                    wake.clear()
                    try:
                        self.resolve_pending()
                    except Exception:  # the database away: the next wake or the daily job retries
                        log.exception("slack owners: resolving owners failed")

        self.thread = threading.Thread(target=run, name="slack-owners", daemon=True)
        self.thread.start()
        return self.thread

    def _paced_lookup(self, email: str, stats: ResolveStats) -> _Lookup | None:
        """One lookup within the pace; a 429 is waited out (Retry-After) and tried again, up to
        MAX_RATE_LIMITED times in a row (None then)."""
        for _ in range(MAX_RATE_LIMITED + 1):
            wait = self._pace.take()
            if wait > 0:
                self.sleep(wait)
            if self._stop.is_set():
                return None
            found = self._lookup(email, self.client)
            if found.outcome != "rate_limited":
                return found
            stats.rate_limited += 1
            log.info("slack owners: users.lookupByEmail rate-limited; waiting %.0f s", found.retry_after)
            self._pace.hold(found.retry_after)  # the next take() waits it out (the router's calls too)
        log.warning("slack owners: Slack answered 429 %d times in a row; the rest waits for the next pass",
                    MAX_RATE_LIMITED + 1)
        return None

    # ------------------------------------------------------------------ Slack and the store

    @staticmethod
    def _lookup(email: str, client: WebClient) -> _Lookup:
        """The one call of users.lookupByEmail."""
        try:
            return _Lookup("found", client.users_lookupByEmail(email=email)["user"]["id"])
        except SlackApiError as exc:
            response = exc.response
            if response is not None and response.status_code == 429:
                try:
                    retry_after = float(response.headers.get("Retry-After", 1))
                except (TypeError, ValueError):
                    retry_after = 1.0
                return _Lookup("rate_limited", retry_after=max(retry_after, 1.0))
            error = response.get("error") if response is not None else None
            if error == "users_not_found":
                return _Lookup("not_found")
            log.warning("slack owners: users.lookupByEmail failed: %s", error or exc)
            return _Lookup("failed")
        except Exception as exc:  # a timeout, a dropped connection: Slack away
            log.warning("slack owners: users.lookupByEmail failed: %s", exc)
            return _Lookup("failed")

    def _record(self, email: str, found: _Lookup, now: datetime) -> None:
        """Store what a lookup said: the user on every unmapped account of the email (the
        unknown mark dropped), or the email remembered as unknown to Slack, or failed."""
        key = email.lower()
        if found.outcome == "found":
            with self._lock:
                self._failed.pop(key, None)
            def store() -> None:
                with write_tx(self.engine) as conn:
                    conn.execute(update(ACCOUNT).where(func.lower(ACCOUNT.c.owner_email) == key,
                                                       ACCOUNT.c.owner_slack_id.is_(None))
                                 .values(owner_slack_id=found.user_id))
                    conn.execute(delete(META).where(META.c.key == unknown_key(email)))

            # Every account of the owner in one UPDATE: on PostgreSQL it can deadlock with the
            # ingest writer updating some of the same rows in another order; run it again then.
            retry_conflicts(store, log=log, what="mapping an owner's accounts")
        elif found.outcome == "not_found":
            with write_tx(self.engine) as conn:
                stmt = upsert(conn, META)
                conn.execute(stmt.on_conflict_do_update(index_elements=["key"], set_={"value": stmt.excluded.value}),
                             {"key": unknown_key(email), "value": now.astimezone(UTC).isoformat()})
        else:
            with self._lock:
                self._failed[key] = self.monotonic()

    def _recently_failed(self, email: str) -> bool:
        with self._lock:
            failed = self._failed.get(email.lower())
        return failed is not None and self.monotonic() - failed < TRANSIENT_RETRY.total_seconds()

    def _remembered_unknown(self, emails: Iterable[str], now: datetime) -> set[str]:
        """Of these emails, the ones Slack did not know less than NOT_FOUND_RETRY ago."""
        by_key = {unknown_key(e): e for e in emails}
        found: set[str] = set()
        with read_tx(self.engine) as conn:
            for chunk in chunks(sorted(by_key)):
                for key, value in conn.execute(select(META.c.key, META.c.value).where(META.c.key.in_(chunk))):
                    try:
                        at = _aware(datetime.fromisoformat(value))
                    except ValueError:
                        continue
                    if now - at < NOT_FOUND_RETRY:
                        found.add(by_key[key])
        return found

    def _pending_emails(self) -> list[str]:
        """Distinct owner emails with an unmapped account, those owning most accounts first."""
        owner = func.lower(ACCOUNT.c.owner_email)
        with read_tx(self.engine) as conn:
            rows = conn.execute(select(owner.label("email"), func.count().label("n"))
                                .where(ACCOUNT.c.owner_email.is_not(None), ACCOUNT.c.owner_email != "",
                                       ACCOUNT.c.owner_slack_id.is_(None))
                                .group_by(owner).order_by(func.count().desc(), owner))
            return [r.email for r in rows if r.email]

    def _still_unmapped(self, email: str) -> bool:
        with read_tx(self.engine) as conn:
            return conn.execute(select(ACCOUNT.c.id).where(func.lower(ACCOUNT.c.owner_email) == email.lower(),
                                                           ACCOUNT.c.owner_slack_id.is_(None)).limit(1)).first() is not None

    # ------------------------------------------------------------------ open pings follow the owner

    def move_open_pings(self, now: datetime | None = None) -> int:
        """Move each open ping whose account changed owner: the former owner's DM is edited to
        say so (or, not posted yet, cancelled) and the new owner is DMed the ping, once.
        Returns how many accounts' pings moved. Idempotent: a moved ping is the new owner's."""
        now = _aware(now) or self.clock()
        with read_tx(self.engine) as conn:
            rows = list(conn.execute(
                select(ALERT.c.id, ALERT.c.stall_id, ALERT.c.channel, ALERT.c.created_at, ALERT.c.updated_at,
                       STALL.c.account_id, ACCOUNT.c.owner_email, ACCOUNT.c.owner_slack_id)
                .select_from(ALERT.join(STALL, STALL.c.id == ALERT.c.stall_id)
                             .join(ACCOUNT, ACCOUNT.c.id == STALL.c.account_id))
                .where(ALERT.c.kind == PING, ALERT.c.closed_at.is_(None))))
        by_account = defaultdict(list)
        for r in rows:
            by_account[r.account_id].append(r)
        unknown = self._remembered_unknown({r.owner_email for r in rows if r.owner_email and not r.owner_slack_id}, now)
        todo: dict[str, tuple[int, str | None]] = {}  # account -> (lead stall, the new owner's user id)
        quiet: dict[str, datetime] = {}  # accounts pinged with no DM at all: since when
        for account_id, pings in by_account.items():
            lead = max(p.stall_id for p in pings)  # the router's lead (several only in old data)
            owner = pings[0].owner_slack_id
            dms = [p for p in pings if p.stall_id == lead and is_user_id(p.channel)]
            stale = [p for p in dms if p.channel != owner]
            if owner and stale and not any(p.channel == owner for p in dms):
                todo[account_id] = (lead, owner)
            elif owner and not dms:  # the former owner was not in Slack: moved if the owner changed since
                quiet[account_id] = min(min(_aware(p.created_at), _aware(p.updated_at)) for p in pings)
            elif stale and not owner and pings[0].owner_email in unknown:
                todo[account_id] = (lead, None)  # the new owner is not in Slack: the former one is told
        for account_id in self._changed_owner_since(quiet):
            pings = by_account[account_id]
            todo[account_id] = (max(p.stall_id for p in pings), pings[0].owner_slack_id)
        moved = 0
        for account_id, (lead, owner) in sorted(todo.items()):
            try:
                moved += self._move(account_id, lead, owner, now)
            except Exception:
                log.exception("slack owners: moving the ping of account %r", account_id)
        if moved:
            self.wakeups.slack_outbox.set()
        return moved

    def _changed_owner_since(self, since: dict[str, datetime]) -> list[str]:
        """Of these accounts, those reassigned (audited) after the given moment."""
        if not since:
            return []
        with read_tx(self.engine) as conn:
            latest = dict(conn.execute(select(AUDIT.c.account_id, func.max(AUDIT.c.at))
                                       .where(AUDIT.c.action == OWNER_CHANGED, AUDIT.c.account_id.in_(sorted(since)))
                                       .group_by(AUDIT.c.account_id)).all())
        return [a for a, at in latest.items() if at is not None and _aware(at) >= since[a]]

    def _move(self, account_id: str, lead: int, owner: str | None, now: datetime) -> int:
        """One account: in one transaction, its DM pings to anyone but `owner` are retired
        (kind MOVED, closed) and `owner` gets the ping (their own former ping back, if the
        account was theirs before, else a new DM)."""
        with read_tx(self.engine) as conn:
            view = ping_views(conn, [lead], self.rules, now).get(lead)
        if view is None:
            return 0
        clock = self.clock()
        with write_tx(self.engine) as conn:
            # Read again under the write lock: another process may have moved it already.
            pings = list(conn.execute(select(ALERT).where(ALERT.c.stall_id == lead, ALERT.c.kind == PING,
                                                          ALERT.c.closed_at.is_(None))))
            current = conn.execute(select(ACCOUNT.c.owner_slack_id, ACCOUNT.c.owner_email, ACCOUNT.c.name)
                                   .where(ACCOUNT.c.id == account_id)).first()
            if not pings or current is None or current.owner_slack_id != owner:
                return 0
            stale = [p for p in pings if is_user_id(p.channel) and p.channel != owner]
            has_owner = any(p.channel == owner for p in pings)
            if not stale and (owner is None or has_owner):
                return 0
            to = owner or current.owner_email
            for alert in stale:
                self._retire(conn, lead, alert, to, current.name or account_id, now, clock)
            restored = bool(owner and not has_owner and self._give(conn, lead, owner, pings, stale, view, now, clock))
            if restored or any(p.ts and not is_user_id(p.channel) for p in pings):
                # Every posted ping left (the alerts channel, a ping given back) shows the new owner.
                enqueue_refresh(conn, lead, now=clock)
        log.info("slack owners: the open ping of account %r moved to %s", account_id, to)
        return 1

    def _retire(self, conn, lead: int, alert, to: str | None, name: str, now: datetime, clock: datetime) -> None:
        """The former owner's DM: not theirs any more. Posted: edited to say so; still queued:
        cancelled with what was queued behind it."""
        conn.execute(delete(ALERT).where(ALERT.c.stall_id == lead, ALERT.c.channel == alert.channel,
                                         ALERT.c.kind == MOVED))  # an older move to the same user
        if not conn.execute(update(ALERT).where(ALERT.c.id == alert.id, ALERT.c.kind == PING)
                            .values(kind=MOVED, closed_at=now, updated_at=now)).rowcount:
            return
        key = f"ping:{lead}:{alert.channel}"
        if conn.execute(update(OUTBOX).where(OUTBOX.c.key == key, OUTBOX.c.status == PENDING)
                        .values(status="failed", error="cancelled: the account was reassigned")).rowcount:
            conn.execute(update(OUTBOX).where(OUTBOX.c.status == PENDING,
                                              OUTBOX.c.key.like(f"%:{lead}:{alert.channel}:%"))
                         .values(status="failed", error="cancelled: the account was reassigned"))
            return
        status = conn.execute(select(OUTBOX.c.status).where(OUTBOX.c.key == key)).scalar()
        if status not in (SENDING, SENT):
            return  # never posted: nothing to edit
        text, blocks = reassigned_message(name, to)
        enqueue(conn, key=f"reassigned:{alert.id}:{now.astimezone(UTC):%Y%m%dT%H%M%S%f}", method="chat.update",
                now=clock, payload={"ts_from": key, "text": text, "blocks": blocks})

    def _give(self, conn, lead: int, owner: str, pings: list, stale: list, view, now: datetime, clock: datetime) -> bool:
        """The new owner's DM: their own former ping of this alert back (to be re-rendered as the
        live ping: True, with a thread reply that notifies), else a new ping with the alert's
        reasons, its age and its acknowledgement."""
        before = conn.execute(select(ALERT.c.id, ALERT.c.ts).where(
            ALERT.c.stall_id == lead, ALERT.c.channel == owner, ALERT.c.kind == MOVED)).first()
        key = f"ping:{lead}:{owner}"
        if before is not None and before.ts:
            conn.execute(update(ALERT).where(ALERT.c.id == before.id)
                         .values(kind=PING, closed_at=None, priority=view.priority, updated_at=now))
            enqueue(conn, key=f"reassigned-back:{before.id}:{now.astimezone(UTC):%Y%m%dT%H%M%S%f}",
                    method="chat.postMessage", now=clock,
                    payload={"thread_ts_from": key, "text": "Reassigned to you again: this alert is yours."})
            return True
        if before is not None:
            conn.execute(delete(ALERT).where(ALERT.c.id == before.id))
        first = min(pings, key=lambda p: p.id)
        acked = next((p for p in stale if p.acked_at is not None), None)
        alert_id = conn.execute(insert_ignore(conn, ALERT, "stall_id", "channel", "kind").values(
            stall_id=lead, channel=owner, kind=PING, priority=view.priority, lead_stall_id=lead,
            created_at=first.created_at, updated_at=now,  # the alert's age: its escalation stays due when it was
            acked_by=acked.acked_by if acked else None, acked_at=acked.acked_at if acked else None,
        ).returning(ALERT.c.id)).scalar()
        if alert_id is None:
            return False
        for reason in conn.execute(select(ALERT.c.stall_id, ALERT.c.priority).where(
                ALERT.c.lead_stall_id == lead, ALERT.c.kind == REASON).distinct()).all():
            conn.execute(insert_ignore(conn, ALERT, "stall_id", "channel", "kind").values(
                stall_id=reason.stall_id, channel=owner, kind=REASON, priority=reason.priority, lead_stall_id=lead,
                created_at=now, updated_at=now))
        not_before = None if view.priority == "P0" else quiet_hours_end(now, self.rules)
        if not enqueue(conn, key=key, method="dm", alert_id=alert_id, not_before=not_before, now=clock,
                       payload={"user": owner, "text": ping_text(view), "blocks": ping_blocks(view),
                                "unfurl_links": False}):
            log.warning("slack owners: the ping of stall %s was DMed to %s before; not again", lead, owner)
        return False


def reassigned_message(account_name: str, to: str | None) -> tuple[str, list]:
    """What the former owner's DM becomes: who has the account now, and no buttons."""
    who = person(to, nobody="nobody")
    name = md(account_name, NAME_MAX)
    text = f"{name} was reassigned to {who}"
    return text, [section_block(f":arrow_right: *{name}* was reassigned to {who}: this alert is theirs now.")]
