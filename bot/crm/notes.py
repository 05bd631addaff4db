"""Notes on HubSpot companies (`[hubspot] notes = true`): one for each recovery email sent and
each alert resolved, with its reason, on the account's company timeline.

Durable: the source is the audit log. A recovery email sent (`mail.sent`) and an alert
resolved (`stall.resolve`) are audited in the transaction that does them, so nothing can
happen without its entry. `enqueue_notes` copies the new entries into the
`hubspot_note_outbox` table (storage.models.HubspotNoteOutbox), keyed by the entry
(`audit:<id>`, unique): a pass that sees an entry again (each pass looks back OVERLAP ids,
since PostgreSQL may commit a lower id after a higher one was read) enqueues nothing more.
Only entries after the moment notes were turned on are noted (storage.meta FLOOR_KEY).

Not duplicated: `send_notes` claims a row with one atomic UPDATE (pending -> sending) and
creates the note (`POST /crm/v3/objects/notes`, associated to the company with
associationTypeId 190, HUBSPOT_DEFINED). That call is never retried blindly: on a 429 it was
not done; after a 5xx, a dropped connection, or a sender that died mid-call (a 'sending' row
older than STALE_CLAIM) it may have been, so the row is marked `maybe_sent`, and its next
attempt first looks for the note by the unique word its body carries (`marker`, with the
notes search's CONTAINS_TOKEN) and creates it only if it is not there. Retries back off
(bot.claims.backoff) up to MAX_ATTEMPTS, then the row is 'failed' with the reason.

The company: the one whose `[hubspot] account_id_property` is the account id, else (with
`match_by_domain`) the one with the account's domain; none yet is retried later.

Both run as one leader job every minute (bot/scheduler.py) and at the end of `stallwatch sync
hubspot`.
"""

from __future__ import annotations

import hashlib
import html
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, func, select, update

from bot.claims import backoff
from bot.crm.hubspot import HubSpotClient, HubSpotError
from rules import decisions
from rules.config import Rules
from storage.db import utcnow, write_tx
from storage.meta import get_meta, set_meta
from storage.models import Account, AuditEntry, HubspotNoteOutbox
from storage.sql import insert_ignore

log = logging.getLogger(__name__)
ACCOUNT = Account.__table__
AUDIT = AuditEntry.__table__
NOTES = HubspotNoteOutbox.__table__

ACTIONS = ("mail.sent", "stall.resolve")
FLOOR_KEY = "hubspot.notes.floor"  # audit entries after this id are noted (set when notes are turned on)
SEEN_KEY = "hubspot.notes.seen"  # the highest audit id enqueued from
OVERLAP = 200
SCAN_BATCH = 2000
SEND_BATCH = 50
MAX_ATTEMPTS = 8
FIRST_BACKOFF_SECONDS = 30.0
MAX_BACKOFF_SECONDS = 3600.0
STALE_CLAIM = timedelta(minutes=5)
MAX_BODY = 60_000  # HubSpot keeps 65,536 characters of a note


@dataclass
class NoteStats:
    enqueued: int = 0
    sent: int = 0
    found: int = 0  # notes an earlier attempt had created after all
    retried: int = 0
    failed: int = 0

    def summary(self) -> str:
        return (f"hubspot notes: {self.enqueued} enqueued, {self.sent} sent ({self.found} found already there), "
                f"{self.retried} to retry, {self.failed} failed")


def marker(key: str) -> str:
    """The word a note's body carries to be found again: letters and digits only (one token)."""
    return "stallwatchnote" + hashlib.sha256(key.encode()).hexdigest()[:20]


def note_body(action: str, actor: str | None, stall_id: int | None, detail: dict, key: str) -> str:
    """The note's HTML (HubSpot renders hs_note_body as HTML): every value escaped, once, here."""
    e = html.escape
    if action == "mail.sent":
        text = (f"Stallwatch sent a recovery email to {e(str(detail.get('recipient') or 'the contact'))}: "
                f"“{e(str(detail.get('subject') or ''))}”.")
    else:
        reason = detail.get("reason")
        label = decisions.LABELS.get(reason, "") if isinstance(reason, str) else ""
        text = f"Stallwatch alert #{stall_id} resolved" + (f" as {e(label)}" if label else "")
        if actor and actor != "system":
            text += f" by Slack user {e(str(actor))}"
        text += "."
        if detail.get("note"):
            text += f" Note: {e(str(detail['note']))}"
        if detail.get("quiet_until"):
            text += f" Quiet until {e(str(detail['quiet_until'])[:10])}."
    return f"<p>{text[:MAX_BODY - 100]}</p><p><small>ref {marker(key)}</small></p>"


def enqueue_notes(engine: Engine, now: datetime | None = None) -> int:
    """Copy the audit entries noted since the last pass into the outbox; returns the new rows."""
    now = now or utcnow()
    floor = get_meta(engine, FLOOR_KEY)
    if floor is None:
        with engine.connect() as conn:
            top = conn.execute(select(func.max(AUDIT.c.id))).scalar() or 0
        set_meta(engine, FLOOR_KEY, str(top))  # turned on now: what happened before is not noted
        set_meta(engine, SEEN_KEY, str(top))
        return 0
    seen = int(get_meta(engine, SEEN_KEY) or floor)
    start = max(int(floor), seen - OVERLAP)
    with write_tx(engine) as conn:
        entries = conn.execute(select(AUDIT).where(AUDIT.c.id > start, AUDIT.c.action.in_(ACTIONS),
                                                   AUDIT.c.account_id.is_not(None))
                               .order_by(AUDIT.c.id).limit(SCAN_BATCH)).all()
        if not entries:
            return 0
        rows = [{"key": f"audit:{e.id}", "account_id": e.account_id, "at": e.at, "status": "pending",
                 "body": note_body(e.action, e.actor, e.stall_id, e.detail or {}, f"audit:{e.id}"),
                 "attempts": 0, "maybe_sent": False, "next_attempt_at": now, "created_at": now} for e in entries]
        before = conn.execute(select(func.count()).select_from(NOTES)).scalar_one()
        conn.execute(insert_ignore(conn, NOTES, "key"), rows)
        added = conn.execute(select(func.count()).select_from(NOTES)).scalar_one() - before
    set_meta(engine, SEEN_KEY, str(max(seen, entries[-1].id)))
    return added


def send_notes(engine: Engine, rules: Rules, client: HubSpotClient, now: datetime | None = None) -> NoteStats:
    """Send the due notes (the module doc); a pass ends early if HubSpot refuses the token."""
    now = now or utcnow()
    stats = NoteStats()
    with write_tx(engine) as conn:  # a sender that died mid-call: the note may exist
        conn.execute(update(NOTES).where(NOTES.c.status == "sending", NOTES.c.claimed_at < now - STALE_CLAIM)
                     .values(status="pending", maybe_sent=True, next_attempt_at=now))
    with engine.connect() as conn:
        due = conn.execute(select(NOTES).where(NOTES.c.status == "pending", NOTES.c.next_attempt_at <= now)
                           .order_by(NOTES.c.id).limit(SEND_BATCH)).all()
    companies: dict[str, str | None] = {}
    for row in due:
        with write_tx(engine) as conn:
            claimed = conn.execute(update(NOTES).where(NOTES.c.id == row.id, NOTES.c.status == "pending")
                                   .values(status="sending", claimed_at=now, attempts=NOTES.c.attempts + 1)).rowcount
        if claimed != 1:
            continue
        attempts = row.attempts + 1
        try:
            if row.account_id not in companies:
                companies[row.account_id] = _company_of(engine, rules, client, row.account_id)
            company = companies[row.account_id]
            if company is None:
                _retry(engine, row.id, attempts, now, stats, "no HubSpot company for this account yet", maybe=False)
                continue
            note_id = client.find_note(marker(row.key)) if row.maybe_sent else None
            if note_id is not None:
                stats.found += 1
            else:
                note_id = client.create_note(company, row.body, row.at)
            with write_tx(engine) as conn:
                conn.execute(update(NOTES).where(NOTES.c.id == row.id)
                             .values(status="sent", note_id=note_id[:64], sent_at=now, error=None))
            stats.sent += 1
        except HubSpotError as exc:
            maybe = exc.status is None or exc.status >= 500
            if exc.status in (400, 404, 409, 422) and not row.maybe_sent:
                _fail(engine, row.id, str(exc), stats)
                continue
            _retry(engine, row.id, attempts, now, stats, str(exc), maybe=maybe)
            if exc.status in (401, 403):
                log.error("hubspot notes: HubSpot refused the token (%s); the pass stops", exc)
                break
    if stats.sent or stats.failed or stats.retried:
        log.info("%s", stats.summary())
    return stats


def _company_of(engine: Engine, rules: Rules, client: HubSpotClient, account_id: str) -> str | None:
    config = rules.hubspot
    found = client.find_company(config.account_id_property, account_id)
    if not found and config.match_by_domain:
        with engine.connect() as conn:
            domain = conn.execute(select(ACCOUNT.c.domain).where(ACCOUNT.c.id == account_id)).scalar()
        if domain:
            found = client.find_company("domain", domain)
    return found[0] if len(found) == 1 else None


def _retry(engine: Engine, row_id: int, attempts: int, now: datetime, stats: NoteStats, error: str, *,
           maybe: bool) -> None:
    if attempts >= MAX_ATTEMPTS:
        _fail(engine, row_id, f"gave up after {attempts} attempts: {error}", stats, maybe=maybe)
        return
    stats.retried += 1
    log.warning("hubspot notes: note %s not sent (%s); trying again later", row_id, error)
    values = {"status": "pending", "error": error[:1000],
              "next_attempt_at": now + backoff(attempts, first=FIRST_BACKOFF_SECONDS, cap=MAX_BACKOFF_SECONDS)}
    if maybe:
        values["maybe_sent"] = True
    with write_tx(engine) as conn:
        conn.execute(update(NOTES).where(NOTES.c.id == row_id).values(**values))


def _fail(engine: Engine, row_id: int, error: str, stats: NoteStats, *, maybe: bool = False) -> None:
    stats.failed += 1
    log.error("hubspot notes: note %s failed: %s", row_id, error)
    values = {"status": "failed", "error": error[:1000]}
    if maybe:
        values["maybe_sent"] = True
    with write_tx(engine) as conn:
        conn.execute(update(NOTES).where(NOTES.c.id == row_id).values(**values))


def run_notes(engine: Engine, rules: Rules, client: HubSpotClient, now: datetime | None = None) -> NoteStats:
    """One pass: enqueue what happened, send what is due."""
    added = enqueue_notes(engine, now)
    stats = send_notes(engine, rules, client, now)
    stats.enqueued = added
    return stats
