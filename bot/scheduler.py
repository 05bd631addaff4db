"""Background jobs (APScheduler): scans now; digests, escalations and outboxes build on it.

Every process runs a scheduler, but only the elected leader (bot.leader) runs the jobs, so
scans and digests never run twice. Standbys keep trying for leadership every few seconds,
which bounds takeover after a leader dies to the lease TTL (SQLite) or one attempt (PostgreSQL).
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Callable, Sequence

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine

from bot.leader import Leader
from bot.settings import Settings
from bot.stalls.context import Wakeups
from rules.config import Rules

log = logging.getLogger(__name__)
ELECTION_SECONDS = 10
# The snapshot runs this long before the digest, so the digest's chart ends on today's
# snapshot (without it, the chart reads today's figures live).
SNAPSHOT_BEFORE_DIGEST_MINUTES = 15


class Scheduler:
    def __init__(self, engine: Engine, settings: Settings, rules: Rules, *, change_hooks: Sequence = (),
                 wakeups: Wakeups | None = None):
        self.engine = engine
        self.settings = settings
        self.rules = rules
        self.change_hooks = change_hooks  # called after a scan changed stalls (Services.change_hooks)
        self.wakeups = wakeups or Wakeups()  # Services.wakeups: the digest wakes the Slack outbox sender
        self.leader = Leader(engine)
        self._aps = BackgroundScheduler(timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1})
        self._aps.add_job(self.leader.try_acquire, IntervalTrigger(seconds=ELECTION_SECONDS), id="election",
                          next_run_time=_soon())
        self.add_leader_job(self._scan, IntervalTrigger(minutes=rules.routing.scan_interval_minutes), "scan")
        # --- daily digest (bot/slack/digest.py) ---
        clock = rules.digest.clock
        self.add_leader_job(self._digest, CronTrigger(hour=clock.hour, minute=clock.minute,
                                                      timezone=rules.digest.timezone), "digest")
        # --- end daily digest ---
        # --- morning DM per CSM (bot/slack/morning.py): only when the rules file turns it on ---
        if rules.digest.morning_dm:
            morning = rules.digest.morning_clock
            self.add_leader_job(self._morning, CronTrigger(hour=morning.hour, minute=morning.minute,
                                                           timezone=rules.digest.timezone), "morning_dm")
        # --- end morning DM ---
        # --- tracking health (bot/slack/tracking.py) ---
        from bot.slack.tracking import CHECK_MINUTES

        self.add_leader_job(self._tracking, IntervalTrigger(minutes=CHECK_MINUTES), "tracking_health")
        # --- end tracking health ---
        # --- daily snapshots (bot/snapshots.py): a quarter of an hour before the digest ---
        at = (clock.hour * 60 + clock.minute - SNAPSHOT_BEFORE_DIGEST_MINUTES) % (24 * 60)
        self.add_leader_job(self._snapshot, CronTrigger(hour=at // 60, minute=at % 60,
                                                        timezone=rules.digest.timezone), "snapshot")
        # --- end daily snapshots ---
        # --- held Stripe events of customers never linked: dropped after a year and a month ---
        self.add_leader_job(self._expire_held_stripe, CronTrigger(hour=3, minute=17, timezone="UTC"),
                            "stripe_held_expiry")
        # --- CRM sync (bot/crm/sync.py): only with HUBSPOT_TOKEN ---
        if settings.hubspot_token:
            self.add_leader_job(self._hubspot_sync, IntervalTrigger(minutes=rules.hubspot.interval_minutes),
                                "hubspot_sync")
            if rules.hubspot.notes:  # notes on the companies (bot/crm/notes.py)
                self.add_leader_job(self._hubspot_notes, IntervalTrigger(minutes=1), "hubspot_notes")
        # --- end CRM sync ---

    def add_leader_job(self, func: Callable[[], object], trigger, job_id: str) -> None:
        """A job that runs only while this process is the leader."""

        def guarded() -> None:
            if not self.leader.is_leader:
                return
            try:
                func()
            except Exception:
                log.exception("scheduled job %s failed", job_id)

        self._aps.add_job(guarded, trigger, id=job_id)

    # --- Slack real-time pings (bot/slack/router.py) -------------------------------------
    def add_router_jobs(self, router) -> None:
        """Escalate unacknowledged P0 pings, checked every minute, and follow up on recovery
        emails at the scan interval (leader only)."""
        self.add_leader_job(router.escalate_due, IntervalTrigger(minutes=1), "escalate_p0")
        self.add_leader_job(router.recovery_due, IntervalTrigger(minutes=self.rules.routing.scan_interval_minutes),
                            "recovery_followup")
        self.add_leader_job(router.route_unrouted, IntervalTrigger(minutes=self.rules.routing.scan_interval_minutes),
                            "route_unrouted")
    # --- end Slack real-time pings --------------------------------------------------------

    # --- owners in Slack (bot/slack/owners.py) ---
    def add_owner_jobs(self, owners) -> None:
        """Once a day, look up the owner emails still without a Slack user (those Slack did not
        know a day ago included) and move the open pings that follow (leader only)."""
        self.add_leader_job(owners.resolve_pending, IntervalTrigger(days=1), "resolve_owners")
    # --- end owners in Slack ---

    # --- daily digest (bot/slack/digest.py) ---
    def _digest(self) -> None:
        from bot.slack.digest import post_digest

        outcome = post_digest(self.engine, self.settings, self.rules, wakeups=self.wakeups)
        log.info("digest: %s", outcome.reason)
    # --- end daily digest ---

    # --- morning DM per CSM (bot/slack/morning.py) ---
    def _morning(self) -> None:
        from bot.slack.morning import send_morning

        log.info("morning DM: %s", send_morning(self.engine, self.rules, wakeups=self.wakeups).summary())
    # --- end morning DM ---

    # --- tracking health (bot/slack/tracking.py) ---
    def _tracking(self) -> None:
        from bot.slack.tracking import check_tracking

        log.info(check_tracking(self.engine, self.settings, self.rules, wakeups=self.wakeups).summary())
    # --- end tracking health ---
    # --- CRM sync (bot/crm/sync.py) ---
    def _hubspot_sync(self) -> None:
        from bot.crm.hubspot import HubSpotClient
        from bot.crm.sync import sync_hubspot

        with HubSpotClient.from_settings(self.settings) as client:
            sync_hubspot(self.engine, self.rules, client, wakeups=self.wakeups)  # logs what it did

    def _hubspot_notes(self) -> None:
        from bot.crm.hubspot import HubSpotClient
        from bot.crm.notes import run_notes

        with HubSpotClient.from_settings(self.settings) as client:
            run_notes(self.engine, self.rules, client)  # logs what it sent
    # --- end CRM sync ---

    def _expire_held_stripe(self) -> None:
        from storage.db import utcnow
        from storage.ingest import expire_held_stripe

        dropped = expire_held_stripe(self.engine, utcnow())
        if dropped:
            log.info("dropped %d held Stripe event(s) whose customer was never linked to an account", dropped)

    def _snapshot(self) -> None:
        from bot.snapshots import take_snapshot
        from storage.db import utcnow

        take_snapshot(self.engine, self.rules, utcnow())  # logs what it wrote

    def _scan(self) -> None:
        from bot.scan import scan

        log.info(scan(self.engine, self.rules, hooks=self.change_hooks).summary())

    def status(self) -> str:
        if not self._aps.running:
            return "stopped"
        return "leader" if self.leader.is_leader else "standby"

    def start(self) -> None:
        self._aps.start()

    def shutdown(self) -> None:
        if self._aps.running:
            self._aps.shutdown(wait=False)
        self.leader.release()

    def run_forever(self) -> None:
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        self.start()
        log.info("worker started; waiting for leadership")
        stop.wait()
        self.shutdown()


def _soon():
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)
