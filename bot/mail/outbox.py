"""The mail outbox: approved recovery emails, delivered over SMTP exactly once (issue 4).

Nothing goes out without approval: the only way into the outbox is `enqueue_mail`, which the
approval calls in its own transaction (bot.stalls.drafts.approve), so a row exists exactly when
the approval committed. `draft_id` is unique: a double click enqueues nothing more.

Each row moves through

    pending -> sending -> transmitting -> sent
    pending -> blocked          the send checks said no (the Draft is blocked with the reason)
    sending -> pending          a transient error: backoff 30 s, 1, 2, 4 ... 30 min
    sending -> failed           a permanent SMTP error, or too many transient ones
    transmitting -> unknown     the sender died, or lost the server's answer, after the message

How it stays exactly once:

- A sender claims a row with one atomic `UPDATE ... WHERE id = :id AND status = 'pending'
  AND next_attempt_at <= now` and talks to SMTP only when that UPDATE changed the row: two
  senders (threads or processes) never both send it. In the claim's transaction it re-runs
  the send checks (`storage.outreach.send_check`: lifecycle, unsubscribed, the stall still
  open on the same step, attempts, another recovery email to the address within
  `min_days_between_emails`), so an email never goes out on facts older than that moment.
  The claim holds a per-recipient transaction lock (a PostgreSQL advisory lock; SQLite
  serializes writers anyway) and defers a row while another row to the same address is in
  flight: two drafts for one person approved together cannot both pass the frequency check.
- The crash window. An SMTP server delivers nothing before it has read the message's final
  "." (RFC 5321 4.1.1.4). The sender commits 'sending' before it connects, and 'transmitting'
  right before it writes that "."; it records 'sent' in the transaction right after the
  server's 250. So a row a dead worker left behind (claimed longer ago than the 5-minute
  lease; a delivery is cut off after 2 minutes) is:
    'sending'       nothing reached the server: back to 'pending', sent normally;
    'transmitting'  the server may or may not have accepted it. It is NEVER sent again (a
                    duplicate customer email is worse than a held one): the row becomes
                    'unknown', the Draft is blocked ("may or may not have been sent ... check
                    the mailbox before drafting again"), audited as mail.unknown, and the
                    outcome hook tells the CSM. A connection that breaks after the "."
                    without an answer is treated the same way at once.
  The window is thus one network round trip plus one database commit. A sender that did get
  the 250 keeps trying to record it for a while if the database is away, and may still
  record 'sent' over an 'unknown' it caused.
- Every 'unknown' to an address counts as a recovery email to it for the frequency check
  (as 'sent' does in storage.outreach): a maybe-sent email is not followed by another at once.
- A graceful stop (the stop event) is only looked at between emails: never mid-delivery.

Draft status on failure: DESIGN's Draft statuses are drafted, approved, sent, discarded and
blocked, and the pings and the modal already explain a "blocked" draft with its reason. So a
permanent failure, giving up, or an unknown outcome all leave the Draft "blocked" with a
reason saying which ("could not be delivered: ...", "may or may not have been sent ...");
the mail_outbox row keeps the precise status (failed / unknown), and the outcome hook gets
it too (`MailOutcome.status`).

No SMTP_URL or no STALLWATCH_MAIL_FROM: the sender does not start (`mail_configured` says
why) and approved emails stay pending, checked again when they are finally sent.

Whoever enqueues should set the sender's wake event (Services.wakeups.mail_outbox, bot/stalls/context.py) after the
transaction commits, so the email goes out at once rather than at the next poll.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, NamedTuple

from prometheus_client import Counter
from sqlalchemy import Connection, Engine, and_, func, select, update
from sqlalchemy.exc import SQLAlchemyError

from bot import metrics
from bot.claims import Lease, RowClaims, backoff, default_worker_id
from bot.mail.smtp import (DeliveryError, SmtpConfig, build_message, deliver, mail_domain, parse_mail_from,
                           parse_smtp_url)
from rules.outreach import Blocked
from storage.db import lock_key, read_tx, utcnow, write_tx
from storage import drafts
from storage.models import AuditEntry, MailOutbox
from storage.outreach import send_check
from storage.sql import insert_ignore

log = logging.getLogger(__name__)

MAIL = MailOutbox.__table__
AUDIT = AuditEntry.__table__

PENDING, SENDING, TRANSMITTING = "pending", "sending", "transmitting"
SENT, BLOCKED, FAILED, UNKNOWN = "sent", "blocked", "failed", "unknown"
IN_FLIGHT = (SENDING, TRANSMITTING)

# A claim older than this belongs to a dead worker. No shortcut for a holder known dead: what
# its row becomes is decided by how far it got ('sending' or 'transmitting'), not by when.
LEASE = Lease(timedelta(minutes=5))
MAX_ATTEMPTS = 12  # transient failures before giving up (about 4 hours of backoff)
FIRST_BACKOFF_SECONDS = 30
MAX_BACKOFF_SECONDS = 30 * 60
IN_FLIGHT_RECHECK = timedelta(seconds=5)  # another email to the same address is being sent
RECIPIENT_LOCKS = 1835100524  # storage.db.lock_key's space for claims per recipient address
RECORD_RETRIES = (0.5, 1, 2, 4, 8, 15, 30, 30, 30, 30)  # recording a sent email while the database is away
POLL_SECONDS = 1.0
FALLBACK_DOMAIN = "stallwatch.local"

UNKNOWN_REASON = ("may or may not have been sent (the sender stopped mid-delivery); "
                  "check the mailbox before drafting again")
LOST_ANSWER_REASON = ("may or may not have been sent (the connection to the mail server broke right after the "
                      "email was transmitted); check the mailbox before drafting again")

MAILS = Counter("stallwatch_mail_outbox_total", "Recovery emails by outcome "
                "(sent, blocked, failed, unknown; retried: a transient failure)", ["outcome"])


@dataclass(frozen=True)
class MailOutcome:
    """What became of an approved email; given to `on_outcome` inside the sender's transaction."""

    draft_id: int
    stall_id: int | None
    status: str  # sent | blocked | failed | unknown
    reason: str | None  # why it did not go out (None when sent), shown to the CSM as is
    sent_at: datetime | None
    approved_by: str | None
    recipient: str | None = None
    code: str | None = None  # blocked: the rules.outreach.Blocked code


# ----------------------------------------------------------------------------- configuration


def mail_configured(settings) -> str | None:
    """None when approved emails can be sent; else why not, as a sentence for the CSM."""
    if not settings.smtp_url:
        return "SMTP_URL is not set: approved emails stay queued until it is"
    try:
        parse_smtp_url(settings.smtp_url)
    except ValueError as e:
        return f"SMTP_URL is invalid ({e}): approved emails stay queued until it is fixed"
    if not settings.mail_from:
        return "STALLWATCH_MAIL_FROM (the From address of recovery emails) is not set: approved emails stay queued until it is"
    try:
        parse_mail_from(settings.mail_from)
    except ValueError as e:
        return f"{e}: approved emails stay queued until it is fixed"
    return None


# ----------------------------------------------------------------------------- enqueueing


def new_message_id(draft_id: int, mail_from: str | None) -> str:
    """An RFC 5322 Message-ID, unique per email, on the From address's domain."""
    return f"<stallwatch.draft-{draft_id}.{secrets.token_hex(8)}@{mail_domain(mail_from) or FALLBACK_DOMAIN}>"


def enqueue_mail(conn: Connection, *, draft_id: int, recipient: str, subject: str, body: str, now: datetime,
                 mail_from: str | None = None) -> bool:
    """Put an approved email in the outbox, in the CALLER's (the approval's) transaction.
    True if new; False if this draft is already there (a double click: nothing more is sent).

    `mail_from` (STALLWATCH_MAIL_FROM) names the Message-ID's domain; by default it is read
    from the process settings. ValueError for a recipient or subject that cannot go in a
    header (CR/LF): the caller validates the text before approving it."""
    if not recipient or "@" not in recipient or any(c in recipient for c in "\r\n"):
        raise ValueError("the recipient must be one email address")
    if "\r" in subject or "\n" in subject:
        raise ValueError("the subject must be a single line (no line breaks)")
    if mail_from is None:
        mail_from = _settings_mail_from()
    stmt = insert_ignore(conn, MAIL, "draft_id").values(
        draft_id=draft_id, recipient=recipient, subject=subject, body=body,
        message_id=new_message_id(draft_id, mail_from), status=PENDING, attempts=0,
        next_attempt_at=now, created_at=now,
    ).returning(MAIL.c.id)  # rowcount is -1 on PostgreSQL with RETURNING: ask for the row
    return conn.execute(stmt).first() is not None


def _settings_mail_from() -> str | None:
    try:
        from bot.settings import Settings

        return Settings().mail_from
    except Exception:  # a broken environment elsewhere must not break approving
        return os.environ.get("STALLWATCH_MAIL_FROM")


# ----------------------------------------------------------------------------- sending


class _Row(NamedTuple):
    id: int
    draft_id: int
    recipient: str
    subject: str
    body: str
    message_id: str
    status: str
    attempts: int
    claimed_by: str | None
    claimed_at: datetime | None


class _LostClaim(Exception):
    """Our claim on the row is gone (another sender took it over): do not send."""


class MailSender:
    """Claims due rows of the mail outbox and sends them. Run any number, in threads or
    processes; each instance is used by one thread at a time."""

    def __init__(self, engine: Engine, settings, rules, *,
                 on_outcome: Callable[[Connection, MailOutcome], None] | None = None,
                 worker_id: str | None = None, clock: Callable[[], datetime] = utcnow, lease: Lease = LEASE,
                 max_attempts: int = MAX_ATTEMPTS, ssl_context: ssl.SSLContext | None = None):
        reason = mail_configured(settings)
        if reason:
            raise ValueError(reason)
        self.engine = engine
        self.config: SmtpConfig = parse_smtp_url(settings.smtp_url)
        self.from_header, self.envelope_from = parse_mail_from(settings.mail_from)
        self.outreach = rules.outreach
        self.on_outcome = on_outcome
        self.worker_id = worker_id or default_worker_id()
        self.clock = clock
        self.lease = lease
        self.claims = RowClaims(MAIL, self.worker_id, lease, pending=PENDING, claimed=SENDING)
        self.max_attempts = max_attempts
        self.ssl_context = ssl_context
        self.local_hostname = socket.getfqdn()  # once: smtplib would look it up for every email
        self._stop: threading.Event | None = None

    # -- loop

    def run_once(self, limit: int = 20) -> int:
        """Recover rows of dead workers, then send what is due, up to `limit` rows; returns
        how many rows it handled."""
        handled = self._recover_stale(self.clock())
        for row in self._due(limit):
            if self._stop is not None and self._stop.is_set():
                break  # between emails, never in the middle of one
            self._process(row)
            handled += 1
        self._gauge()
        return handled

    def run_forever(self, stop_event: threading.Event, wake_event: threading.Event | None = None,
                    poll: float = POLL_SECONDS) -> None:
        """Send until `stop_event` is set (the email in hand is finished first); wakes on
        `wake_event` or every `poll` seconds."""
        self._stop = stop_event
        wake = wake_event or threading.Event()
        log.info("mail sender %s: sending through %s as %s", self.worker_id, self.config.describe(), self.from_header)
        while not stop_event.is_set():
            wake.clear()  # before looking, so a wake-up during run_once is not lost
            try:
                busy = self.run_once()
            except Exception:  # the database is away, say: keep the thread, try again
                log.exception("mail outbox: run failed")
                busy = 0
            if not busy and not stop_event.is_set():
                wake.wait(poll)

    def start(self, stop_event: threading.Event, wake_event: threading.Event | None = None) -> threading.Thread:
        """The sender in a daemon thread. On shutdown set `stop_event` and join the thread
        (it finishes the email in hand: at most the 2-minute delivery deadline)."""
        thread = threading.Thread(target=self.run_forever, args=(stop_event, wake_event),
                                  name=f"mail-outbox-{self.worker_id}", daemon=True)
        thread.start()
        return thread

    # -- reading rows

    def _select(self):
        return select(*(MAIL.c[name] for name in _Row._fields))

    def _due(self, limit: int) -> list[_Row]:
        now = self.clock()
        stmt = (self._select().where(MAIL.c.status == PENDING, MAIL.c.next_attempt_at <= now)
                .order_by(MAIL.c.next_attempt_at, MAIL.c.id).limit(limit))
        with read_tx(self.engine) as conn:
            return [_Row(*r) for r in conn.execute(stmt)]

    def _gauge(self) -> None:
        with read_tx(self.engine) as conn:
            pending = conn.execute(select(func.count()).select_from(MAIL).where(MAIL.c.status == PENDING)).scalar_one()
        metrics.OUTBOX_PENDING.labels("mail").set(pending)

    # -- one row

    def _process(self, row: _Row) -> None:
        now = self.clock()
        if not self._claim(row, now):
            return
        try:
            message = build_message(mail_from=self.from_header, recipient=row.recipient, subject=row.subject,
                                    body=row.body, message_id=row.message_id, draft_id=row.draft_id, date=now)
        except ValueError as e:
            self._give_up(row, FAILED, f"could not be delivered: {e}", "mail.failed")
            return
        try:
            reply = deliver(self.config, message, envelope_from=self.envelope_from, recipient=row.recipient,
                            before_final_dot=lambda: self._mark_transmitting(row), ssl_context=self.ssl_context,
                            local_hostname=self.local_hostname)
        except DeliveryError as e:
            self._on_error(row, e)
        except (_LostClaim, SQLAlchemyError) as e:
            # Recording 'transmitting' failed before the final ".": nothing was delivered.
            log.warning("mail outbox: draft %s not sent (could not record the delivery): %s", row.draft_id, e)
            if not isinstance(e, _LostClaim):
                self._release(row, f"database: {type(e).__name__}")
        else:
            self._record_sent(row, reply)

    def _claim(self, row: _Row, now: datetime) -> bool:
        """Claim the row and re-check it may go out, in one transaction: True to send it now."""
        with write_tx(self.engine) as conn:
            self._lock_recipient(conn, row.recipient)
            if not self.claims.claim(conn, row.id, now):
                return False  # another sender won it
            draft = drafts.get(conn, row.draft_id)
            if draft is None or draft.status != "approved":
                what = "no longer exists" if draft is None else f"is {draft.status}, not approved"
                self._finish_blocked(conn, row, draft, Blocked("not_relevant", f"the draft {what}"),
                                     now, touch_draft=False)
                return False
            # (an "unknown" email to this address counts as sent: storage.outreach.last_email_to)
            blocked = send_check(conn, row.draft_id, now, self.outreach, recipient=row.recipient)
            if blocked is not None:
                self._finish_blocked(conn, row, draft, blocked, now, touch_draft=True)
                return False
            if self._in_flight(conn, row):
                conn.execute(update(MAIL).where(MAIL.c.id == row.id).values(
                    status=PENDING, next_attempt_at=now + IN_FLIGHT_RECHECK,
                    error="waiting: another email to this address is being sent"))
                return False
            conn.execute(update(MAIL).where(MAIL.c.id == row.id).values(attempts=MAIL.c.attempts + 1, error=None))
        return True

    def _lock_recipient(self, conn: Connection, recipient: str) -> None:
        """Serialize claims to one address until commit (SQLite's writers are serial already).
        Its lock space is apart from the scheduler leader's one-key lock and the router's."""
        lock_key(conn, RECIPIENT_LOCKS, recipient.strip().lower())

    def _same_address(self, row: _Row):
        return and_(func.lower(MAIL.c.recipient) == row.recipient.strip().lower(), MAIL.c.id != row.id)

    def _in_flight(self, conn: Connection, row: _Row) -> bool:
        return conn.execute(select(MAIL.c.id).where(MAIL.c.status.in_(IN_FLIGHT), self._same_address(row))
                            .limit(1)).first() is not None

    def _mark_transmitting(self, row: _Row) -> None:
        """Right before the message's final ".": from here on it may have been delivered."""
        with write_tx(self.engine) as conn:
            claimed = self.claims.ours(row.id, SENDING)
            if conn.execute(update(MAIL).where(claimed).values(status=TRANSMITTING)).rowcount != 1:
                raise _LostClaim(f"draft {row.draft_id}")

    # -- outcomes

    def _record_sent(self, row: _Row, reply: str) -> None:
        """The server took the email: record it (retrying while the database is away: the
        alternative is an 'unknown' for an email we know was sent)."""
        sent_at = self.clock()
        for delay in (*RECORD_RETRIES, None):
            try:
                self._write_sent(row, reply, sent_at)
                return
            except SQLAlchemyError:
                if delay is None:
                    log.exception("mail outbox: draft %s was SENT but could not be recorded; it will show as "
                                  "'unknown'", row.draft_id)
                    return
                log.warning("mail outbox: draft %s was sent; recording it failed, again in %ss",
                            row.draft_id, delay, exc_info=True)
                time.sleep(delay)

    def _write_sent(self, row: _Row, reply: str, sent_at: datetime) -> None:
        with write_tx(self.engine) as conn:
            done = conn.execute(update(MAIL).where(self.claims.ours(row.id, TRANSMITTING, UNKNOWN))
                                .values(status=SENT, sent_at=sent_at, error=None)).rowcount
            if done != 1:
                log.error("mail outbox: draft %s was sent but its row is no longer ours to record", row.draft_id)
                return
            draft = drafts.record_sent(conn, row.draft_id, sent_at)
            attempts = conn.execute(select(MAIL.c.attempts).where(MAIL.c.id == row.id)).scalar_one()
            self._audit(conn, draft, sent_at, (draft.approved_by if draft is not None else None) or "system",
                        "mail.sent", {
                            "draft_id": row.draft_id, "recipient": row.recipient, "subject": row.subject,
                            "body": row.body, "message_id": row.message_id, "from": self.from_header,
                            "sent_at": sent_at.isoformat(), "smtp_reply": reply, "attempts": attempts,
                        })
            self._notify(conn, MailOutcome(draft_id=row.draft_id, stall_id=draft.stall_id if draft else None,
                                           status=SENT, reason=None, sent_at=sent_at,
                                           approved_by=draft.approved_by if draft else None, recipient=row.recipient))
        MAILS.labels(SENT).inc()
        log.info("mail outbox: draft %s sent to %s (%s)", row.draft_id, row.recipient, reply)

    def _finish_blocked(self, conn: Connection, row: _Row, draft, blocked: Blocked, now: datetime, *,
                        touch_draft: bool) -> None:
        conn.execute(update(MAIL).where(MAIL.c.id == row.id).values(status=BLOCKED, error=blocked.reason[:1000]))
        self._block_draft(conn, row, draft, now, "mail.blocked", BLOCKED, blocked.reason, touch_draft=touch_draft,
                          code=blocked.code)
        log.info("mail outbox: draft %s blocked: %s", row.draft_id, blocked.reason)

    def _block_draft(self, conn: Connection, row: _Row, draft, now: datetime, action: str, status: str,
                     reason: str, *, touch_draft: bool = True, code: str | None = None) -> None:
        """The Draft shows why it did not go out; audit; the outcome hook; all in `conn`."""
        if touch_draft:
            drafts.record_not_sent(conn, row.draft_id, reason, now)
        detail = {"draft_id": row.draft_id, "recipient": row.recipient, "reason": reason,
                  "message_id": row.message_id}
        if code:
            detail["code"] = code
        self._audit(conn, draft, now, "system", action, detail)
        self._notify(conn, MailOutcome(draft_id=row.draft_id, stall_id=draft.stall_id if draft else None,
                                       status=status, reason=reason, sent_at=None,
                                       approved_by=draft.approved_by if draft else None, recipient=row.recipient,
                                       code=code))
        MAILS.labels(status).inc()  # counted even if the commit fails: rare, and only a metric

    def _on_error(self, row: _Row, e: DeliveryError) -> None:
        if e.kind == "maybe_sent":
            log.error("mail outbox: draft %s: %s", row.draft_id, e.message)
            self._give_up(row, UNKNOWN, LOST_ANSWER_REASON, "mail.unknown", error=e.message)
        elif e.kind == "permanent":
            log.warning("mail outbox: draft %s cannot be delivered: %s", row.draft_id, e.message)
            self._give_up(row, FAILED, f"could not be delivered: {e.message}", "mail.failed", error=e.message)
        else:
            self._retry(row, e)

    def _retry(self, row: _Row, e: DeliveryError) -> None:
        now = self.clock()
        with write_tx(self.engine) as conn:
            attempts = conn.execute(select(MAIL.c.attempts).where(MAIL.c.id == row.id)).scalar_one()
            if e.kind == "transient" and attempts >= self.max_attempts:
                reason = f"could not be delivered after {attempts} attempts: {e.message}"
                self._give_up(row, FAILED, reason, "mail.failed", error=e.message, conn=conn)
                return
            # Configuration errors (credentials, TLS) are retried without a limit: an operator
            # fixes them and nothing is lost meanwhile (the checks run again before sending).
            delay = backoff(attempts, first=FIRST_BACKOFF_SECONDS, cap=MAX_BACKOFF_SECONDS)
            conn.execute(update(MAIL).where(self.claims.ours(row.id, SENDING, TRANSMITTING)).values(
                status=PENDING, next_attempt_at=now + delay, error=e.message[:1000]))
        (log.error if e.kind == "config" else log.warning)(
            "mail outbox: draft %s not sent (attempt %d, %s), again in %gs: %s",
            row.draft_id, attempts, e.kind, delay.total_seconds(), e.message)
        MAILS.labels("retried").inc()

    def _release(self, row: _Row, error: str) -> None:
        """Nothing was sent: give the row back (if the database lets us; else the lease does)."""
        try:
            with write_tx(self.engine) as conn:
                conn.execute(update(MAIL).where(self.claims.ours(row.id, SENDING)).values(
                    status=PENDING, next_attempt_at=self.clock() + timedelta(seconds=FIRST_BACKOFF_SECONDS),
                    error=error[:1000]))
        except SQLAlchemyError:
            log.warning("mail outbox: could not release draft %s; it is retried after the lease", row.draft_id)

    def _give_up(self, row: _Row, status: str, reason: str, action: str, *, error: str | None = None,
                 conn: Connection | None = None) -> None:
        """failed / unknown: the row and the Draft say why, audited, the hook told."""
        if conn is None:
            with write_tx(self.engine) as conn:
                self._give_up(row, status, reason, action, error=error, conn=conn)
            return
        now = self.clock()
        if conn.execute(update(MAIL).where(self.claims.ours(row.id, SENDING, TRANSMITTING))
                        .values(status=status, error=(error or reason)[:1000])).rowcount != 1:
            return
        draft = drafts.get(conn, row.draft_id)
        self._block_draft(conn, row, draft, now, action, status, reason)

    def _recover_stale(self, now: datetime) -> int:
        """Rows left 'sending' or 'transmitting' by a dead worker (claimed before the lease)."""
        stale_before = now - self.lease.shortest
        with read_tx(self.engine) as conn:
            rows = [_Row(*r) for r in conn.execute(self._select().where(
                MAIL.c.status.in_(IN_FLIGHT), MAIL.c.claimed_at < stale_before).order_by(MAIL.c.id))]
        for row in rows:
            with write_tx(self.engine) as conn:
                still = self.claims.still_stale(row.id, row.status, row.claimed_by, now)
                if row.status == SENDING and row.attempts < self.max_attempts:
                    # It never reached the end of the message: nothing was delivered. Send it again.
                    if conn.execute(update(MAIL).where(still).values(
                            status=PENDING, next_attempt_at=now,
                            error="the sender stopped before transmitting it; nothing was sent")).rowcount:
                        log.warning("mail outbox: draft %s: %s stopped before transmitting it; retrying",
                                    row.draft_id, row.claimed_by)
                    continue
                if row.status == SENDING:
                    status, reason, action = FAILED, (f"could not be delivered: the sender stopped {row.attempts} "
                                                      "times while trying"), "mail.failed"
                else:
                    status, reason, action = UNKNOWN, UNKNOWN_REASON, "mail.unknown"
                if conn.execute(update(MAIL).where(still).values(status=status, error=reason)).rowcount != 1:
                    continue
                log.error("mail outbox: draft %s left %s by %s: %s", row.draft_id, row.status, row.claimed_by, reason)
                draft = drafts.get(conn, row.draft_id)
                self._block_draft(conn, row, draft, now, action, status, reason)
        return len(rows)

    # -- shared

    def _audit(self, conn: Connection, draft, at: datetime, actor: str, action: str, detail: dict) -> None:
        conn.execute(AUDIT.insert().values(
            at=at, actor=actor[:64], action=action, stall_id=draft.stall_id if draft is not None else None,
            account_id=draft.account_id if draft is not None else None, source="mail_outbox", detail=detail))

    def _notify(self, conn: Connection, outcome: MailOutcome) -> None:
        """The hook runs in our transaction, under a savepoint: if it fails, what happened to
        the email is still recorded (the Slack update is lost; logged)."""
        if self.on_outcome is None:
            return
        try:
            with conn.begin_nested():
                self.on_outcome(conn, outcome)
        except Exception:
            log.exception("mail outbox: the outcome hook failed for draft %s (%s)", outcome.draft_id, outcome.status)


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value
