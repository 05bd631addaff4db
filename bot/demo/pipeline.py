"""Running the synthetic company through the real pipeline, and what Slack would show.

The demo's clock: "now" is the latest digest moment (09:00 UTC with the default rules) at
least an hour before the real clock; Stallwatch is "connected" an hour before it.

1. Connected: the history up to then goes through the real ingest routes of the real app
   (`bot.app.create_app`) over an in-process ASGI transport: Segment batches to `/v1/batch`
   (write key), Stripe events to `/ingest/stripe` (signed), tickets to `/ingest/zendesk`
   (one Zendesk trigger webhook per ticket, signed as Zendesk signs), into a fresh SQLite
   database in the output folder; the accounts' ARR and owners come from the CRM: the real
   HubSpot sync against a simulated HubSpot (bot/demo/crm.py), run after the backfill and
   then as the scheduler runs it. During this backfill, event-driven evaluation waits for
   the first scan (evaluating an account whose history is half loaded would ping stalls the
   rest of it closes). Then the first scan runs and the
   real router (the scans' change hook, as in `serve`) turns what it opened into
   pings in the Slack outbox.
2. The scheduler's hour: every `scan_interval_minutes` a scan and the P0 escalation check;
   between them, each record at its arrival through its route, with event-driven
   evaluation at that moment (a ticket spike is pinged at once; a late event closes a stall
   and its ping is edited); the daily digest at "now"; then the scripted live records.
3. After every step the real outbox sender sends what is due: to Slack with a token, else
   to `bot.slack.simulated.SimulatedSlack`, so pings get a ts and later edits find them. The
   outbox rows are what Slack got: rendered in the terminal (bot/demo/show.py) and written
   as Block Kit JSON files with Block Kit Builder links.

4. The next days (not when posting: they run ahead of the real clock): the CRM reassigns the
   account the live ticket spike pinged (its HubSpot company gets another owner; the HubSpot
   sync takes it), the owner resolver's pass the sync woke maps the owners (the simulated Slack answers
   users.lookupByEmail) and moves the open ping; the new owner resolves it as known until a
   date through the use-case; two days of scheduled scans follow (`_next_days`).

No quiet hours fall in the demo's hour with the default rules, so the sender running on the
real clock sends each row when the demo's clock made it, as it would live.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import orjson
from sqlalchemy import func, select

from bot.demo.company import Company, Record, generate
from bot.slack.simulated import SimulatedSlack
from bot.demo.render import builder_link

log = logging.getLogger(__name__)
UTC = timezone.utc
SEGMENT_BATCH = 400  # messages per /v1/batch request (Segment's limit is 2,500 and 500 KB)
SEGMENT_BATCH_BYTES = 400 * 1024
TICKET_BATCH = 200
DEFAULT_ALERTS = "#stallwatch-alerts"
DEFAULT_DIGEST = "#stallwatch-digest"
# Stallwatch is "connected" this long before the digest moment: the history is backfilled and
# the first scan runs then; the scheduler runs from there on (outside quiet hours by default).
CONNECTED_BEFORE = timedelta(hours=1)


class DemoError(RuntimeError):
    """The demo cannot run: an unusable output folder, or the pipeline refused what the demo
    sent (a bug: the demo sends valid data)."""


@dataclass
class Message:
    """One outbox row: a Slack call Stallwatch made."""

    id: int
    key: str
    method: str
    kind: str  # ping, edit, thread reply, digest, chart, tracking issues, escalation
    channel: str | None
    text: str
    blocks: list[dict] | None
    when: datetime | None = None  # the demo time it was made at
    phase: str = ""  # first scan, first hour, digest, live
    status: str = "pending"
    error: str | None = None
    file: Path | None = None
    content_b64: str | None = None  # files_upload_v2: the file


@dataclass
class Step:
    """Something that happened on the demo's clock, and the Slack calls it made."""

    at: datetime
    what: str
    phase: str
    messages: list[Message] = field(default_factory=list)
    millis: float = 0.0


@dataclass
class DemoResult:
    company: Company
    now: datetime  # the digest moment
    connected: datetime  # when Stallwatch was "connected": backfill and first scan
    out: Path
    db_path: Path
    channels: tuple[str, str]
    ingested: Counter = field(default_factory=Counter)
    ingest_seconds: float = 0.0
    first_scan: Any = None  # bot.scan.ScanReport
    crm_sync: Any = None  # bot.crm.sync.SyncReport: ARR and owners from the (simulated) HubSpot
    scans: int = 0
    stalls_by_priority: Counter = field(default_factory=Counter)
    stalls_by_rule: Counter = field(default_factory=Counter)
    overflowed: int = 0
    backlog_accounts: int = 0  # accounts summarised in a backlog summary instead of pinged
    stalled_accounts: int = 0  # accounts with a live stall
    tracking_issues: int = 0
    steps: list[Step] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    next_days: "NextDays | None" = None  # the scripted days after the live part (not when posting)
    posted: bool = False
    seconds: float = 0.0

    def phase(self, name: str) -> list[Step]:
        return [s for s in self.steps if s.phase == name]

    def messages_of(self, phase: str, kind: str | None = None) -> list[Message]:
        return [m for m in self.messages if m.phase == phase and (kind is None or m.kind == kind)]


@dataclass
class NextDays:
    """The scripted part after "Minutes later, live": the CRM reassigns the account the live
    ticket spike pinged, its new owner resolves it as known until a date, and two simulated
    days of scheduled scans follow. What the real code did, read back from the database."""

    account: str
    account_id: str
    stall_id: int  # the lead stall of its ping
    former_owner: str | None
    new_owner: str  # the email the CRM sent
    new_owner_id: str | None = None  # the Slack user the resolver mapped it to
    reassigned_at: datetime | None = None
    audit: dict | None = None  # the account.owner_changed entry's detail ({"from", "to"})
    mapped: int = 0  # owner emails the resolver pass mapped
    moved: int = 0  # open pings the pass moved
    resolved_at: datetime | None = None
    told: str = ""  # what the use-case answered the CSM
    resolution: str = ""  # the stall's resolution as stored
    kind: str = ""  # its resolution_kind
    quiet_until: datetime | None = None
    scans: int = 0
    days: int = 0
    until: datetime | None = None  # the end of the simulated days
    spike_tickets: int = 0  # the account's tickets still inside the spike window then
    window_days: float = 0.0  # the spike window (rules)
    evaluated: Any = None  # ScanReport of the account's evaluation at the end
    reopened: int = 0  # the account's stalls opened after the resolve
    pinged: int = 0  # Slack calls about the account after the resolve
    opened_elsewhere: int = 0  # stalls the scans opened on other accounts meanwhile
    messages_elsewhere: int = 0  # Slack calls for them


NEXT_DAYS = 2  # simulated days of scans after the resolve
QUIET_DAYS = 5  # "known: quiet until" this many days after the resolve
REASSIGN_AFTER = timedelta(minutes=20)  # after the digest moment: the CRM's reassignment
RESOLVE_AFTER = timedelta(minutes=30)  # the new owner resolves it


def demo_now(rules, real_now: datetime) -> datetime:
    """The demo's "now": the latest digest moment at least an hour before the real clock
    (09:00 UTC with the default rules), so pings go out outside quiet hours, the digest is
    the morning's, and the live part (minutes after it) is still in the past."""
    from rules.routing import next_digest_at

    limit = real_now - timedelta(hours=1)
    moment = next_digest_at(limit - timedelta(days=3), rules)
    while True:
        following = next_digest_at(moment, rules)
        if following > limit:
            return moment
        moment = following


def export_history(path: Path, *, seed: int, accounts: int | None, days: int, real_now: datetime,
                   shape: str = "saas") -> Company:
    from bot.backtest.history import write_history
    from bot.settings import load_rules

    company = generate(seed, accounts, days, end=demo_now(load_rules(), real_now), shape=shape)
    write_history(path, (r.record for r in company.records))
    return company


def run_demo(*, out: Path, seed: int = 7, accounts: int | None = None, days: int = 45, shape: str = "saas",
             slack_token: str | None = None,
             slack_api_url: str = "https://slack.com/api/", alerts_channel: str | None = None,
             digest_channel: str | None = None, ops_channel: str | None = None, real_now: datetime | None = None,
             status: Callable[[str], None] | None = None) -> DemoResult:
    """Run the demo; write the output folder; post to Slack when `slack_token` is given."""
    from bot.app import create_app
    from bot.backtest.history import write_history
    from bot.scan import evaluate_accounts, scan
    from bot.settings import Settings
    from bot.slack.digest import post_digest
    from bot.slack.router import Router
    from storage import migrate
    from storage.db import make_engine

    started = time.perf_counter()
    status = status or (lambda text: None)
    real_now = real_now or datetime.now(UTC)
    out = Path(out)
    _prepare(out)
    db_path = out / "stallwatch-demo.db"
    alerts = alerts_channel or DEFAULT_ALERTS
    digest = digest_channel or DEFAULT_DIGEST
    settings = Settings(
        _env_file=None, DATABASE_URL=f"sqlite:///{db_path}", STALLWATCH_RULES=None,
        STALLWATCH_WRITE_KEY=secrets.token_hex(16), SEGMENT_SHARED_SECRET=secrets.token_hex(16),
        STRIPE_WEBHOOK_SECRET="whsec_" + secrets.token_hex(16), TICKETS_SHARED_SECRET=secrets.token_hex(16),
        ZENDESK_WEBHOOK_SECRET=secrets.token_hex(16),
        SLACK_BOT_TOKEN=slack_token, SLACK_SIGNING_SECRET=None, SLACK_APP_TOKEN=None, SLACK_API_URL=slack_api_url,
        STALLWATCH_ALERTS_CHANNEL=alerts, STALLWATCH_DIGEST_CHANNEL=digest, STALLWATCH_OPS_CHANNEL=ops_channel,
        STALLWATCH_ADMINS="", OPENAI_API_KEY=None, SMTP_URL=None,
    )
    rules = settings.rules
    now = demo_now(rules, real_now)
    connect = now - CONNECTED_BEFORE
    status(f"generating the company (seed {seed}, {shape})")
    company = generate(seed, accounts, days, end=now, shape=shape)
    write_history(out / "events.jsonl", (r.record for r in company.records))
    result = DemoResult(company=company, now=now, connected=connect, out=out, db_path=db_path,
                        channels=(alerts, digest))

    engine = make_engine(settings.database_url)
    migrate.upgrade(engine)
    clock = _Clock()
    from bot.demo.crm import DemoCRM

    crm = DemoCRM(company, engine, rules, connect)  # ARR and owners: the HubSpot sync (bot/demo/crm.py)

    def on_events_stored(account_ids) -> None:
        if clock.live is None:
            return  # the backfill: the first scan evaluates every account
        try:
            evaluate_accounts(engine, rules, sorted(account_ids), now=clock.live, hooks=[router.handle])
        except Exception:  # as the app's own hook does: the next scan catches up
            log.exception("event-driven evaluation failed")

    # The app serves the ingest routes only (no /slack/events: the demo takes no clicks); the
    # router and the outbox sender get the Slack token, if any.
    app_settings = settings.model_copy(update={"slack_bot_token": None})
    app = create_app(app_settings, engine=engine, on_events_stored=on_events_stored)
    router = Router(engine, settings, rules)

    def routed_scan(engine, rules, now):
        return scan(engine, rules, now, hooks=[router.handle])

    sender = _sender(engine, settings, rules)
    seen = [0]

    def step(at: datetime, what: str, phase: str, millis: float = 0.0) -> Step:
        _drain(engine, sender, posting=bool(slack_token))
        messages = _read_outbox(engine, after=seen[0], when=at, phase=phase)
        seen[0] = max([seen[0], *(m.id for m in messages)])
        result.steps.append(Step(at=at, what=what, phase=phase, messages=messages, millis=millis))
        result.messages.extend(messages)
        return result.steps[-1]

    try:
        backfill = [r for r in company.records if r.at <= connect]
        status(f"sending {len(backfill):,} events through the real routes")
        t0 = time.perf_counter()
        result.ingested = asyncio.run(_backfill(app, settings, backfill))
        result.ingest_seconds = time.perf_counter() - t0
        status("the HubSpot sync: ARR and owners")
        result.crm_sync = crm.sync(connect)
        status("the first scan")
        report = routed_scan(engine, rules, connect)
        result.first_scan = report
        step(connect, f"first scan: {report.candidates} accounts evaluated, {report.opened} stalls opened",
             "first scan")
        status("the first hour, the digest, and live events")
        asyncio.run(_timeline(app, settings, [r for r in company.records if r.at > connect], clock, engine,
                              rules, router, connect, now, routed_scan, post_digest, step, result, crm=crm))
        _stall_counts(engine, result)
        if not slack_token:  # simulated days run ahead of the real clock: shown, never posted
            status("the next days: a reassignment, a resolve that lasts")
            result.next_days = asyncio.run(_next_days(app, settings, clock, engine, rules, router, now,
                                                      routed_scan, step, result, crm=crm))
    finally:
        app.state.writer.close()
        engine.dispose()
    result.posted = bool(slack_token)
    _write_files(result)
    result.seconds = time.perf_counter() - started
    return result


@dataclass
class _Clock:
    live: datetime | None = None


MARKER = ".stallwatch-demo"


def _prepare(out: Path) -> None:
    """The output folder: created, or emptied of what an earlier demo wrote there. A folder
    that holds anything else and no demo marker is refused, never cleaned."""
    if out.exists() and not out.is_dir():
        raise DemoError(f"{out} is a file; choose a folder with --out")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise DemoError(f"{out} is not empty and was not made by `stallwatch demo`; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by `stallwatch demo`: its files are replaced on every run\n", encoding="utf-8")
    messages = out / "messages"
    if messages.is_dir():
        for f in messages.iterdir():
            if f.suffix in (".json", ".png"):
                f.unlink()
    for name in ("stallwatch-demo.db", "stallwatch-demo.db-wal", "stallwatch-demo.db-shm", "README.md",
                 "events.jsonl"):
        (out / name).unlink(missing_ok=True)
    messages.mkdir(exist_ok=True)


# ---------------------------------------------------------------------- through the routes


def _client(app):
    import httpx

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://stallwatch.demo", timeout=60)


async def _backfill(app, settings, records: list[Record]) -> Counter:
    counts: Counter = Counter()
    segment = [r.record["message"] for r in records if r.source == "segment"]
    stripe = [r.record["event"] for r in records if r.source == "stripe"]
    tickets = [r.record["ticket"] for r in records if r.source == "tickets"]
    async with _client(app) as client:
        batch: list[dict] = []
        size = 0
        for message in segment:
            raw = len(orjson.dumps(message))
            if batch and (len(batch) >= SEGMENT_BATCH or size + raw > SEGMENT_BATCH_BYTES):
                counts["segment"] += await _post_segment(client, settings, batch)
                batch, size = [], 0
            batch.append(message)
            size += raw
        if batch:
            counts["segment"] += await _post_segment(client, settings, batch)
        for event in stripe:
            counts["stripe"] += await _post_stripe(client, settings, event)
        for i in range(0, len(tickets), TICKET_BATCH):
            counts["tickets"] += await _post_tickets(client, settings, tickets[i:i + TICKET_BATCH])
    return counts


async def _post_segment(client, settings, messages: list[dict]) -> int:
    from bot.demo.crm import without_crm_traits  # ARR and owners come from the CRM (bot/demo/crm.py)

    body = orjson.dumps({"batch": [without_crm_traits(m) for m in messages]})
    auth = "Basic " + base64.b64encode(f"{settings.write_key}:".encode()).decode()
    response = await client.post("/v1/batch", content=body,
                                 headers={"Authorization": auth, "Content-Type": "application/json"})
    return _accepted(response, "/v1/batch")


async def _post_stripe(client, settings, event: dict) -> int:
    from bot.ingest.stripe import sign

    body = orjson.dumps(event)
    header = sign(body, settings.stripe_webhook_secret, int(time.time()))
    response = await client.post("/ingest/stripe", content=body,
                                 headers={"Stripe-Signature": header, "Content-Type": "application/json"})
    return _accepted(response, "/ingest/stripe")


async def _post_tickets(client, settings, tickets: list[dict]) -> int:
    """The tickets as Zendesk delivers them: one trigger webhook each, with the recommended
    body (bot.ingest.zendesk.TRIGGER_BODY) as Zendesk renders it, signed as Zendesk signs."""
    from bot.ingest.zendesk import sign

    accepted = 0
    for ticket in tickets:
        body = orjson.dumps({"ticket": _zendesk_trigger_body(ticket)})
        timestamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # the route checks it against the real clock
        response = await client.post("/ingest/zendesk", content=body, headers={
            "X-Zendesk-Webhook-Signature": sign(body, settings.zendesk_webhook_secret, timestamp),
            "X-Zendesk-Webhook-Signature-Timestamp": timestamp, "Content-Type": "application/json"})
        accepted += _accepted(response, "/ingest/zendesk")
    return accepted


def _zendesk_trigger_body(ticket: dict) -> dict:
    """A demo ticket as Zendesk renders the trigger body's placeholders: every value a string
    (blank when the ticket has none), the tags space-separated, status and priority by their
    titles; the organization's external id is the account id."""
    tags = ticket.get("tags") or ([ticket["topic"]] if ticket.get("topic") else [])
    return {
        "id": str(ticket["id"]),
        "status": str(ticket["status"]).capitalize(),
        "subject": ticket.get("subject") or "",
        "description": ticket.get("body") or "",
        "tags": " ".join(tags),
        "priority": str(ticket.get("priority") or "").capitalize(),
        "requester_email": ticket.get("requester_email") or "",
        "organization_external_id": ticket.get("account_id") or "",
        "created_at": ticket["created_at"],
        "updated_at": ticket.get("updated_at") or "",
    }


def _accepted(response, route: str) -> int:
    if response.status_code != 200:
        raise DemoError(f"{route} answered {response.status_code}: {response.text[:300]}")
    body = response.json()
    if body.get("rejected"):
        raise DemoError(f"{route} rejected {body['rejected'][:3]}")
    return int(body.get("accepted", 0)) + int(body.get("duplicates", 0))


async def _timeline(app, settings, records: list[Record], clock: _Clock, engine, rules, router, connect: datetime,
                    now: datetime, scan, post_digest, step, result: DemoResult, *, crm=None) -> None:
    """From the first scan on, as the scheduler runs it: every `scan_interval_minutes` a scan
    and the escalation check, the digest at its time; between them, the records at their
    arrival through the routes (tickets and payments evaluated at once)."""
    from bot.demo.company import LATE_STORY, SPIKE_STORY

    interval = timedelta(minutes=rules.routing.scan_interval_minutes)
    tick = connect + interval
    next_sync = connect + timedelta(minutes=rules.hubspot.interval_minutes)
    last = max([now, *(r.at for r in records)])
    pending = list(records)
    async with _client(app) as client:
        while tick <= last + interval:
            while pending and pending[0].at <= tick:
                record = pending.pop(0)
                clock.live = record.at
                phase = "live" if record.at > now else "first hour"
                t0 = time.perf_counter()
                if record.source == "segment":
                    msg = record.record["message"]
                    await _post_segment(client, settings, [msg])
                    what = f"Segment: {msg.get('type')} {msg.get('event') or msg.get('name') or ''}".rstrip()
                    if record.at > now:
                        what = (f"a late '{msg.get('event')}' from {LATE_STORY}: done {msg.get('timestamp', '')[:16]} "
                                f"UTC, it reaches Stallwatch only now")
                elif record.source == "tickets":
                    t = record.record["ticket"]
                    await _post_tickets(client, settings, [t])
                    what = f"helpdesk: ticket {t.get('id')} ({t.get('status')}, '{t.get('topic')}')"
                    if record.at > now:
                        what = (f"helpdesk: a third '{t.get('topic')}' ticket this week from {SPIKE_STORY}: "
                                f"\"{t.get('subject')}\"")
                else:
                    event = record.record["event"]
                    await _post_stripe(client, settings, event)
                    what = f"Stripe: {event.get('type')}"
                step(record.at, what, phase, (time.perf_counter() - t0) * 1000)
            clock.live = tick
            phase = "live" if tick > now else "first hour"
            if crm is not None and tick >= next_sync:  # the scheduler's HubSpot sync job
                next_sync = tick + timedelta(minutes=rules.hubspot.interval_minutes)
                await asyncio.to_thread(crm.sync, tick)
            t0 = time.perf_counter()
            report = await asyncio.to_thread(scan, engine, rules, tick)
            escalated = router.escalate_due(tick)
            what = f"scheduled scan: {report.candidates} account(s) due, {report.opened} stall(s) opened"
            if escalated:
                what += f"; {escalated} unacknowledged P0 ping(s) escalated"
            result.scans += 1
            step(tick, what, phase, (time.perf_counter() - t0) * 1000)
            if tick == now:
                t0 = time.perf_counter()
                outcome = post_digest(engine, settings, rules, now)
                step(now, f"daily digest: {outcome.reason}", "digest", (time.perf_counter() - t0) * 1000)
            tick += interval


async def _next_days(app, settings, clock: _Clock, engine, rules, router, now: datetime, scan, step,
                     result: DemoResult, *, crm) -> "NextDays | None":
    """After the live part: the account the ticket spike pinged is reassigned in the CRM (its
    HubSpot company gets another owner, taken by the HubSpot sync: bot/demo/crm.py); the owner
    resolver runs as the sync's wake-up makes it run (bot.slack.owners: it maps the owner emails with
    users.lookupByEmail, here the simulated Slack's, and moves the open ping); the new owner
    resolves the alert as known until a date (bot.stalls.actions.resolve, then the pings are
    re-rendered as the Slack listener does); then the scheduler's scans run for two simulated
    days, and the account is evaluated once more at the end, as any new event of it would."""
    from bot.demo.company import SPIKE_STORY
    from bot.scan import evaluate_accounts
    from bot.slack.listeners.actions import refresh_pings
    from bot.slack.owners import OWNER_CHANGED, OwnerResolver
    from bot.slack.queries import PING
    from bot.stalls import actions
    from bot.stalls.context import Services
    from storage.db import read_tx
    from storage.models import Account, Alert, AuditEntry, Stall
    from storage.stalls import tickets_by_account

    account = next((a for a in result.company.accounts if a.name == SPIKE_STORY), None)
    alert, stall, audit, acct = Alert.__table__, Stall.__table__, AuditEntry.__table__, Account.__table__
    if account is None:
        return None
    with read_tx(engine) as conn:
        lead = conn.execute(select(func.max(alert.c.stall_id)).select_from(alert.join(stall, stall.c.id == alert.c.stall_id))
                            .where(stall.c.account_id == account.id, alert.c.kind == PING,
                                   alert.c.closed_at.is_(None))).scalar()
    others = [e for e in result.company.csms() if e != account.owner_email]
    if lead is None or not others:
        return None  # the spike was not pinged (a company too small for its story)
    new_owner = others[0]
    story = NextDays(account=account.name, account_id=account.id, stall_id=lead, former_owner=account.owner_email,
                     new_owner=new_owner)

    # 1. The CRM reassigns the account: its HubSpot company's owner, taken by the next sync.
    at = now + REASSIGN_AFTER
    clock.live = at
    t0 = time.perf_counter()
    crm.reassign(account.id, new_owner, at)
    await asyncio.to_thread(crm.sync, at, wakeups=app.state.wakeups)
    story.reassigned_at = at
    with read_tx(engine) as conn:
        entry = conn.execute(select(audit.c.detail).where(audit.c.account_id == account.id,
                                                          audit.c.action == OWNER_CHANGED)
                             .order_by(audit.c.id.desc()).limit(1)).scalar()
    story.audit = dict(entry) if entry else None
    # The sync set the owner resolver's wake-up (as in `serve`); its pass runs now. There is
    # no Slack token: the simulated Slack answers users.lookupByEmail (bot.slack.simulated).
    woken = app.state.wakeups.slack_owners.is_set()
    app.state.wakeups.slack_owners.clear()
    if woken:
        lookup = SimulatedSlack()
        owners = OwnerResolver(engine, settings.model_copy(update={"slack_bot_token": SimulatedSlack.token}), rules,
                               client_factory=lambda: lookup, clock=lambda: at)
        stats = owners.resolve_pending(at)
        story.mapped, story.moved = stats.resolved, stats.moved
    with read_tx(engine) as conn:
        story.new_owner_id = conn.execute(select(acct.c.owner_slack_id).where(acct.c.id == account.id)).scalar()
    step(at, f"the CRM reassigns {account.name} to {new_owner} (HubSpot company owner, taken by the sync)", "next days",
         (time.perf_counter() - t0) * 1000)

    # 2. The new owner resolves it: known, quiet until a date, with a note.
    at = now + RESOLVE_AFTER
    services = Services(engine, settings, rules, clock=lambda: at)
    until = (at + timedelta(days=QUIET_DAYS)).date()
    user = story.new_owner_id or new_owner
    t0 = time.perf_counter()
    outcome = actions.resolve(services, lead, user, reason="known", until=until, source="demo",
                              note=f"SSO fix ships {until:%b} {until.day}; the EU team signs in with passwords until then")
    refresh_pings(services, lead)  # what the Slack listener does after the use-case
    story.resolved_at, story.told = at, outcome.text
    with read_tx(engine) as conn:
        row = conn.execute(select(stall.c.resolution, stall.c.resolution_kind, stall.c.quiet_until)
                           .where(stall.c.id == lead)).first()
    story.resolution, story.kind = row.resolution or "", row.resolution_kind or ""
    story.quiet_until = row.quiet_until
    step(at, f"{user} resolves {account.name}: known, quiet until {until:%a %d %b}", "next days",
         (time.perf_counter() - t0) * 1000)
    mark = len(result.messages)

    # 3. The scheduler's next two days: a scan (and the P0 escalation check) every interval.
    interval = timedelta(minutes=rules.routing.scan_interval_minutes)
    end = at + timedelta(days=NEXT_DAYS)
    tick = at + interval
    while tick <= end:
        clock.live = tick
        report = scan(engine, rules, tick)  # nothing arrives meanwhile: no thread needed
        escalated = router.escalate_due(tick)
        story.scans += 1
        if report.opened or report.changed_ids or escalated:
            step(tick, f"scheduled scan: {report.candidates} account(s) due, {report.opened} stall(s) opened",
                 "next days")
        tick += interval
    # The account once more at the end, as a new event of it would have it evaluated.
    story.days, story.until = NEXT_DAYS, end
    story.evaluated = evaluate_accounts(engine, rules, [account.id], now=end, hooks=[router.handle])
    step(end, f"{account.name} evaluated again", "next days")
    with read_tx(engine) as conn:
        story.window_days = rules.stall_rules.ticket_spike.window_days
        window = timedelta(days=story.window_days)
        story.spike_tickets = sum(t.created_at >= end - window
                                  for t in tickets_by_account(conn, [account.id], end).get(account.id, ()))
        opened_after = select(stall.c.account_id).where(stall.c.opened_at > story.resolved_at)
        reopened = [a for (a,) in conn.execute(opened_after)]
    story.reopened = sum(a == account.id for a in reopened)
    story.opened_elsewhere = len(reopened) - story.reopened
    later = result.messages[mark:]
    story.pinged = sum(account.name in m.text for m in later)
    story.messages_elsewhere = len(later) - story.pinged
    return story


# ---------------------------------------------------------------------- the outbox


def _kind(key: str, method: str) -> str:
    prefix = key.split(":", 1)[0]
    return {"ping": "ping", "refresh": "edit", "reprio": "thread reply", "news": "thread reply",
            "backlog": "backlog summary", "escalation": "escalation",
            "escalation-summary": "escalation summary", "winback": "win-back",
            "ops": "tracking issues"}.get(prefix, "chart" if method == "files_upload_v2" else
                                          "digest" if prefix == "digest" else prefix)


def _read_outbox(engine, *, after: int, when: datetime, phase: str) -> list[Message]:
    from bot.slack.outbox import OUTBOX, REFRESH
    from storage.db import read_tx

    with read_tx(engine) as conn:
        rows = conn.execute(select(OUTBOX).where(OUTBOX.c.id > after).order_by(OUTBOX.c.id)).all()
    out: list[Message] = []
    for r in rows:
        if r.method == REFRESH:
            out.extend(_refresh_messages(r, when=when, phase=phase))
            continue
        payload: dict[str, Any] = r.payload or {}
        channel = payload.get("channel") or payload.get("user") or (r.result or {}).get("channel") or r.channel
        blocks = payload.get("blocks") if isinstance(payload.get("blocks"), list) else None
        m = Message(id=r.id, key=r.key, method=r.method, kind=_kind(r.key, r.method), channel=channel,
                    text=payload.get("text") or "", blocks=blocks, when=when, phase=phase, status=r.status,
                    error=r.error)
        if r.method == "files_upload_v2":
            m.text = payload.get("title") or payload.get("filename") or "chart"
            m.content_b64 = payload.get("content_b64")
        out.append(m)
    return out


def _refresh_messages(r, *, when: datetime, phase: str) -> list[Message]:
    """A refresh row as the edits it made: one per message, showing what it was rendered to
    when sent (recorded in its result)."""
    result: dict[str, Any] = r.result or {}
    blocks = result.get("blocks") if isinstance(result.get("blocks"), list) else None
    return [Message(id=r.id, key=r.key, method="chat.update", kind="edit", channel=channel,
                    text=result.get("text") or "", blocks=blocks, when=when, phase=phase, status=r.status,
                    error=r.error)
            for channel, _ts in result.get("updated") or [[None, None]]]


def _sender(engine, settings, rules):
    from bot.slack.client import web_client
    from bot.slack.outbox import OutboxSender

    if settings.slack_enabled:
        return OutboxSender(engine, lambda: web_client(settings, blocking_retries=False), rules=rules)
    slack = SimulatedSlack()
    return OutboxSender(engine, lambda: slack, worker_id="stallwatch-demo", rules=rules)


def _drain(engine, sender, *, posting: bool, timeout: float = 120.0) -> None:
    """Send what is due now. Against real Slack, wait for rows a 429 or a dependency holds."""
    from bot.slack.outbox import OUTBOX
    from storage.db import read_tx

    deadline = time.monotonic() + timeout
    while True:
        if sender.run_once(limit=500):
            continue
        if not posting or time.monotonic() > deadline:
            return
        with read_tx(engine) as conn:
            waiting = conn.execute(select(func.count()).select_from(OUTBOX)
                                   .where(OUTBOX.c.status.in_(("pending", "sending")))).scalar_one()
        if not waiting:
            return
        time.sleep(0.5)


def _stall_counts(engine, result: DemoResult) -> None:
    from storage.db import read_tx
    from storage.models import Alert, Stall, TrackingIssue

    stall, alert, tracking = Stall.__table__, Alert.__table__, TrackingIssue.__table__
    with read_tx(engine) as conn:
        live = stall.c.open_key.is_not(None)
        result.stalls_by_priority = Counter(dict(conn.execute(
            select(stall.c.priority, func.count()).where(live).group_by(stall.c.priority)).all()))
        result.stalls_by_rule = Counter(dict(conn.execute(
            select(stall.c.rule, func.count()).where(live).group_by(stall.c.rule)).all()))
        result.overflowed = conn.execute(select(func.count()).select_from(alert)
                                         .where(alert.c.kind == "overflow")).scalar_one()
        result.backlog_accounts = conn.execute(
            select(func.count(func.distinct(stall.c.account_id)))
            .select_from(alert.join(stall, stall.c.id == alert.c.stall_id)).where(alert.c.kind == "backlog")).scalar_one()
        result.stalled_accounts = conn.execute(
            select(func.count(func.distinct(stall.c.account_id))).where(live)).scalar_one()
        result.tracking_issues = conn.execute(select(func.count()).select_from(tracking)
                                              .where(tracking.c.resolved_at.is_(None))).scalar_one()


# ---------------------------------------------------------------------- the output folder


def _slug(text: str, limit: int = 40) -> str:
    keep = "".join(c.lower() if c.isalnum() else "-" for c in text)
    return "-".join(p for p in keep.split("-") if p)[:limit].strip("-") or "message"


def _write_files(result: DemoResult) -> None:
    folder = result.out / "messages"
    lines = [
        "# Stallwatch demo: what Slack would show",
        "",
        f"A synthetic company of {len(result.company.accounts)} accounts over "
        f"{(result.company.end - result.company.start).days} days (seed {result.company.seed}, {result.company.shape} shape), run through "
        f"the real ingest routes, scan, router and digest at {result.now:%Y-%m-%d %H:%M} UTC.",
        "Each JSON file holds one message's Block Kit (`{\"blocks\": [...]}`); the link opens it in "
        "Slack's Block Kit Builder.",
        "",
        f"Replay the company's history against your own rules: `stallwatch backtest {result.out / 'events.jsonl'} "
        "--rules my_rules.toml`.",
        "",
        "| # | time (UTC) | where | what | file | preview |",
        "|---|---|---|---|---|---|",
    ]
    for n, m in enumerate(result.messages, 1):
        name = f"{n:02d}-{m.kind.replace(' ', '-')}-{_slug(m.text)}"
        if m.method == "files_upload_v2":
            data = m.content_b64
            m.file = folder / f"{name}.png"
            if data:
                m.file.write_bytes(base64.b64decode(data))
            link = ""
        else:
            m.file = folder / f"{name}.json"
            doc = {"blocks": m.blocks} if m.blocks else {"text": m.text}
            m.file.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
            link = f"[Block Kit Builder]({builder_link(m.blocks)})" if m.blocks else "(text only)"
        when = f"{m.when:%H:%M}" if m.when else ""
        what = f"{m.kind}: {m.text}".replace("|", "\\|")
        lines.append(f"| {n} | {when} | {m.channel or ''} | {what} | [{m.file.name}](messages/{m.file.name}) | {link} |")
    (result.out / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
