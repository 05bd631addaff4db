"""The durable Slack outbox: every outgoing Slack call is a row before it is a request.

DESIGN: "nothing is lost, nothing is sent twice". How:

- `enqueue` runs in the caller's transaction: the message exists exactly when the change
  that caused it committed. The row's `key` is unique, so enqueueing twice is a no-op.
- A sender claims a row with one atomic `UPDATE ... WHERE id = :id AND status = 'pending'`
  and sends only when that UPDATE changed one row (Grafana OnCall's claim): two senders,
  threads or processes, never both send a row.
- What no claim can cover is Slack accepting a post while we die (or lose the response)
  before recording it. Every post carries its key in the message `metadata`, and before a
  post that may already have reached Slack is tried again (a row left in 'sending' by a dead
  worker, or after a 5xx or dropped connection) the sender looks for the key in
  conversations.history (conversations.replies for thread replies). Found: recorded as sent.
- A row left in 'sending' is taken over once its claim is STUCK_AFTER old, or as soon as it
  is DEAD_CLAIM_GRACE old when its sender is known to be gone: a process of this machine (same
  kernel boot, same pid namespace: part of the worker id) that no longer exists. So a server
  restarted after kill -9 resumes its lane within seconds, not after minutes; a claim by a
  process elsewhere, or still alive, is waited out as before. (Claims, leases and backoff are
  bot.claims', shared with the mail sender and the scheduler leader: LEASE is this policy.)
- Lanes: the `channel` column orders delivery. A row is sent only when no earlier row of its
  lane is pending or sending, so a channel sees its messages in id order, an update never
  overtakes its post, and a 429 postpones that one lane (every pending row of it gets
  `next_attempt_at` = now + Retry-After) while other channels keep going. The lane is the
  Slack channel id, the user id for a "dm", "home:<user>" for views.publish, and for a row
  that refers to another row (`ts_from`, `thread_ts_from`) the lane of that row.
- Retries are the sender's, never the HTTP client's (it uses `blocking_retries=False`): a
  5xx or connection error backs the row off exponentially (1 s, 2 s, 4 s ... 5 min), a 429
  backs its lane off, a scope error is retried too (an operator can fix the app without
  losing messages), a revoked token pauses the sender with every row kept (bot.slack.health),
  and any other Slack error fails the row with the error logged.

Methods (`method`, then the payload: slack_sdk's keyword arguments, JSON-safe):
  chat.postMessage    {"channel", "text", "blocks", ...}; {"thread_ts_from": key} replies
                      in the thread of another row's post
  dm                  {"user", "text", "blocks", ...}: conversations.open, then a post
  chat.update         {"channel", "ts", ...} or {"ts_from": key, ...}: channel and ts come
                      from that row's result, once it is sent
  chat.postEphemeral  {"channel", "user", "text", ...}
  views.publish       {"user_id", "view"}
  files_upload_v2     {"channel", "filename", "content_b64", "title", "initial_comment", "alt_txt"}
                      (see `file_payload`)
  refresh             {"stall_id", "extra": [[channel, ts], ...]} (see `enqueue_refresh`): every
                      posted ping of the stall, and the extra messages, re-rendered from the
                      stall's state AT SEND TIME, each as what it was posted as (a follow-up,
                      a handoff, an escalation: bot.slack.queries.posted_messages), and edited
                      with chat.update. A queued refresh is never stale (a 429 only delays
                      it), and a newer refresh of a stall whose refresh is still pending is
                      merged into it: superseded edits of a message are dropped, not sent in
                      turn.

Ephemeral messages and file uploads cannot be looked up afterwards: after a 5xx or a crash
mid-call they are tried again and may, rarely, show twice. Updates and App Home publishes
are idempotent.

Whoever enqueues should set the sender's wake event after the transaction commits, so the
message goes out at once instead of at the next one-second poll.
"""

from __future__ import annotations

import base64
import logging
import threading
import uuid
from dataclasses import replace
from functools import lru_cache
from datetime import datetime, timedelta, timezone
from http.client import HTTPException
from typing import Any, Callable, NamedTuple, Sequence

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackRequestError
from sqlalchemy import Connection, Engine, and_, bindparam, func, not_, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from bot.claims import Lease, RowClaims, backoff, default_worker_id
from bot.slack.health import REVOKED_ERRORS, mark_revoked, revoked
from bot.slack.queries import Posted, lead_of, posted_messages
from bot.slack.render.escalation import posted_message
from bot.stalls.views import ping_view
from rules.config import Rules
from storage.db import read_tx, utcnow, write_tx
from storage.models import Alert, SlackOutbox
from storage.sql import insert_ignore

log = logging.getLogger(__name__)

OUTBOX = SlackOutbox.__table__
ALERT = Alert.__table__

PENDING, SENDING, SENT, FAILED = "pending", "sending", "sent", "failed"
REFRESH = "refresh"
METHODS = frozenset({"chat.postMessage", "dm", "chat.update", "chat.postEphemeral", "views.publish",
                     "files_upload_v2", REFRESH})
POSTS = frozenset({"chat.postMessage", "dm"})  # what metadata lets us find again
REFERENCES = (("ts_from", "ts"), ("thread_ts_from", "thread_ts"))  # payload key -> filled-in argument

METADATA_EVENT = "stallwatch_outbox"
METADATA_KEY_FIELD = "stallwatch_outbox_key"  # added to a caller's own metadata payload

STUCK_AFTER = timedelta(minutes=5)  # far beyond the longest send (10 s timeouts, no SDK retries)
# A dead sender's claim: long enough for the bytes it had already written to reach Slack.
DEAD_CLAIM_GRACE = timedelta(seconds=15)
LEASE = Lease(STUCK_AFTER, dead_holder_grace=DEAD_CLAIM_GRACE)
MAX_BACKOFF_SECONDS = 300
DEPENDENCY_RECHECK = timedelta(seconds=1)
POLL_SECONDS = 1.0
HISTORY_PAGE = 200
HISTORY_PAGES = 10  # up to 2,000 messages since the row was made: a rare recovery path
CLOCK_SKEW = timedelta(minutes=5)  # our created_at against Slack's ts, when searching history

# Slack errors that say "try again": transient (and possibly applied: "it's possible some
# aspect of the operation succeeded"), or fixable by an operator without losing messages.
TRANSIENT_ERRORS = frozenset({"internal_error", "fatal_error", "service_unavailable", "request_timeout"})
CONFIG_ERRORS = frozenset({"not_authed", "invalid_auth", "account_inactive", "token_revoked", "token_expired",
                           "missing_scope"})


# ----------------------------------------------------------------------------- enqueueing


def enqueue(conn: Connection, *, key: str, method: str, payload: dict, now: datetime, channel: str | None = None,
            alert_id: int | None = None, not_before: datetime | None = None) -> bool:
    """Store one Slack call in the caller's transaction. True if new, False if `key` exists.

    `channel` overrides the lane (see the module doc); `not_before` holds delivery (quiet
    hours). A row that refers to another (`ts_from`, `thread_ts_from`) needs that row
    enqueued first: it joins its lane, behind it, and is held as long as that row is.
    `now` is the caller's clock: the row's creation time, and the earliest it is sent.
    """
    if method not in METHODS:
        raise ValueError(f"unsupported outbox method {method!r}; one of {sorted(METHODS)}")
    payload = _jsonable(payload)
    _check_payload(method, payload)
    lane, held_with = _lane(conn, method, payload, channel)
    due = max(d for d in (not_before, held_with, now) if d is not None)
    stmt = insert_ignore(conn, OUTBOX, "key").values(
        key=key, method=method, channel=lane, payload=payload,
        status=PENDING, attempts=0, next_attempt_at=due,
        result={}, alert_id=alert_id, created_at=now,
    ).returning(OUTBOX.c.id)  # rowcount is -1 on PostgreSQL once RETURNING is implied: ask for it
    return conn.execute(stmt).first() is not None


def enqueue_refresh(conn: Connection, stall_id: int, *, now: datetime, extra: Sequence[tuple[str, str]] = (),
                    note: str | None = None, once: str | None = None) -> bool:
    """In the caller's transaction: re-render every posted ping of the stall's alert (the ping
    of its account, on the lead stall: `lead_of`) (and the `extra`
    (channel, ts) messages, e.g. the one clicked) from its current state when sent. `note` is
    shown on the ping ("Priority raised from P1 to P0") until the next refresh.

    A pending refresh of the stall is rendered at send time too, so it already covers this
    change: the extra messages (and the note) join it instead of a second row (a row being
    sent may have rendered before this change, so then a new one is queued behind it in the
    lane). With `once`, the refresh is queued once per stall and reason (the router's close,
    routed again by a later scan): False when it was already (the row it joined takes that
    reason's key). True otherwise."""
    sid = lead_of(conn, stall_id)  # one alert per account: its ping sits on the lead stall
    key = f"{REFRESH}:{sid}:{once}" if once else f"{REFRESH}:{sid}:{uuid.uuid4().hex}"
    if once and conn.execute(select(OUTBOX.c.id).where(OUTBOX.c.key == key)).first() is not None:
        return False
    extra = [[channel, ts] for channel, ts in extra]
    payload = {"stall_id": sid, "extra": extra, "note": note}
    pending = conn.execute(select(OUTBOX.c.id, OUTBOX.c.payload)
                           .where(OUTBOX.c.key.like(f"{REFRESH}:{sid}:%"), OUTBOX.c.status == PENDING)
                           .order_by(OUTBOX.c.id).limit(1)).first()
    if pending is not None:
        merged = list(pending.payload.get("extra") or [])
        merged += [t for t in extra if t not in merged]
        joined = {"payload": {**payload, "extra": merged}, **({"key": key} if once else {})}
        if conn.execute(update(OUTBOX).where(OUTBOX.c.id == pending.id, OUTBOX.c.status == PENDING)
                        .values(**joined)).rowcount == 1:
            return True
    return enqueue(conn, key=key, method=REFRESH, payload=payload, channel=_refresh_lane(conn, sid), now=now)


def _refresh_lane(conn: Connection, stall_id: int) -> str:
    """The lane of the stall's first ping (so a refresh never overtakes that post), or the
    stall's own lane when it has none."""
    first = conn.execute(select(ALERT.c.channel)
                         .where(ALERT.c.stall_id == stall_id,
                                (ALERT.c.kind == "ping") | ALERT.c.kind.like("attempt%"))
                         .order_by(ALERT.c.id).limit(1)).scalar()
    return first or f"stall:{int(stall_id)}"


def file_payload(content: bytes, *, channel: str, filename: str, title: str | None = None,
                 initial_comment: str | None = None, thread_ts: str | None = None, alt_txt: str | None = None) -> dict:
    """The payload of a files_upload_v2 row (the bytes travel base64-encoded in the JSON);
    `alt_txt`: an image's description for screen readers."""
    payload = {"channel": channel, "filename": filename, "content_b64": base64.b64encode(content).decode("ascii")}
    optional = {"title": title, "initial_comment": initial_comment, "thread_ts": thread_ts, "alt_txt": alt_txt}
    payload.update({k: v for k, v in optional.items() if v is not None})
    return payload


def outbox_metadata(key: str, metadata: dict | None = None) -> dict:
    """The message metadata a post carries so that it can be found again by its key."""
    if not metadata:
        return {"event_type": METADATA_EVENT, "event_payload": {"key": key}}
    return {"event_type": metadata["event_type"],
            "event_payload": {**(metadata.get("event_payload") or {}), METADATA_KEY_FIELD: key}}


def carries_key(message: dict, key: str) -> bool:
    metadata = message.get("metadata") or {}
    payload = metadata.get("event_payload") or {}
    if metadata.get("event_type") == METADATA_EVENT and payload.get("key") == key:
        return True
    return payload.get(METADATA_KEY_FIELD) == key


def _jsonable(value: Any) -> Any:
    """slack_sdk model objects (blocks, views) become their dicts, checked against Slack's limits."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _check_payload(method: str, payload: dict) -> None:
    needs = {
        "chat.postMessage": ("channel", "thread_ts_from"),
        "dm": ("user",),
        "chat.update": ("ts", "ts_from"),
        "chat.postEphemeral": ("channel",),
        "views.publish": ("user_id",),
        "files_upload_v2": ("content_b64",),
        REFRESH: ("stall_id",),
    }[method]
    if not any(payload.get(field) for field in needs):
        raise ValueError(f"{method} payload needs {' or '.join(needs)}")
    if method == "chat.update" and not payload.get("ts_from") and not payload.get("channel"):
        raise ValueError("chat.update payload needs channel with ts")
    if method == "files_upload_v2" and not payload.get("filename"):
        raise ValueError("files_upload_v2 payload needs filename")


def _references(payload: dict) -> list[str]:
    return [payload[ref] for ref, _ in REFERENCES if payload.get(ref)]


def _lane(conn: Connection, method: str, payload: dict, channel: str | None) -> tuple[str | None, datetime | None]:
    """The row's lane, and until when it must wait because the row it refers to is held (a
    held row never tried does not hold up its lane: what depends on it must wait itself)."""
    refs = _references(payload)
    if refs:
        found = conn.execute(select(OUTBOX.c.channel, OUTBOX.c.status, OUTBOX.c.attempts, OUTBOX.c.next_attempt_at)
                             .where(OUTBOX.c.key == refs[0])).first()
        if found is None:
            raise ValueError(f"outbox row {refs[0]!r} does not exist: enqueue the post before what refers to it")
        held = found.next_attempt_at if found.status == PENDING and found.attempts == 0 else None
        return found.channel, held
    if channel:
        return channel, None
    if method == "dm":
        return payload["user"], None
    if method == "views.publish":
        return f"home:{payload['user_id']}", None
    return payload.get("channel"), None


# ----------------------------------------------------------------------------- sending


class _Row(NamedTuple):
    id: int
    key: str
    method: str
    channel: str | None
    payload: dict
    status: str
    attempts: int
    claimed_by: str | None
    claimed_at: datetime | None
    result: dict
    alert_id: int | None
    created_at: datetime


class _Wait(Exception):
    """The row refers to a row that is not sent yet."""


class _Failed(Exception):
    """The row cannot be sent (not a Slack error: e.g. the post it updates failed)."""


@lru_cache(maxsize=8)
def _due_statement(limit: int):
    """OutboxSender._due's statement, built once per limit (`now` and `stale_before` bound)."""
    t = OUTBOX
    now = bindparam("now", type_=t.c.next_attempt_at.type)
    # A row held for later and never tried (a ping held by quiet hours, an edit waiting for
    # its post) does not hold up its lane: a P0 posted after a held P1 goes at once.
    held = and_(t.c.status == PENDING, t.c.attempts == 0, t.c.next_attempt_at > now)
    heads = (select(func.min(t.c.id)).where(t.c.status.in_((PENDING, SENDING)), t.c.channel.is_not(None),
                                            not_(held))
             .group_by(t.c.channel))
    ready = or_(and_(t.c.status == PENDING, t.c.next_attempt_at <= now),
                and_(t.c.status == SENDING, t.c.claimed_at < bindparam("stale_before", type_=t.c.claimed_at.type)))
    return (select(*(t.c[name] for name in _Row._fields))
            .where(ready, or_(t.c.channel.is_(None), t.c.id.in_(heads)))
            .order_by(t.c.id).limit(limit))


class OutboxSender:
    """Claims due rows and sends them. Run any number of senders, in threads or processes;
    each one is used by one thread at a time."""

    def __init__(self, engine: Engine, client_factory: Callable[[], WebClient], *, worker_id: str | None = None,
                 clock: Callable[[], datetime] = utcnow, lease: Lease = LEASE, rules: Rules | None = None):
        self.engine = engine
        self.rules = rules  # what renders a refresh row's pings
        self.worker_id = worker_id or default_worker_id()
        self.clock = clock
        self.lease = lease
        self.claims = RowClaims(OUTBOX, self.worker_id, lease, pending=PENDING, claimed=SENDING)
        self._client_factory = client_factory
        self._client: WebClient | None = None
        self._dm_channels: dict[str, str] = {}  # user id -> DM channel id (conversations.open is stable)
        self._revoked_now = False

    @property
    def client(self) -> WebClient:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    # -- loop

    def run_once(self, limit: int = 50) -> int:
        """Send what is due now, up to `limit` rows; returns how many rows it tried. Nothing
        while the token is revoked (bot.slack.health): the rows wait, none fails."""
        if self.paused():
            return 0
        self._revoked_now = False
        tried: set[int] = set()
        while len(tried) < limit and not self._revoked_now:
            rows = [r for r in self._due(limit) if r.id not in tried]
            if not rows:
                break
            for row in rows[:limit - len(tried)]:
                if self._revoked_now:  # Slack just refused the token: the rest waits too
                    break
                tried.add(row.id)
                self._process(row)
        return len(tried)

    def paused(self) -> bool:
        return revoked(self.engine, self.client.token) is not None

    def run_forever(self, stop_event: threading.Event, wake_event: threading.Event | None = None,
                    *, poll_seconds: float = POLL_SECONDS) -> None:
        """Send until `stop_event` is set; wakes on `wake_event` or every `poll_seconds`."""
        wake = wake_event or threading.Event()
        while not stop_event.is_set():
            wake.clear()  # before looking, so a wake-up during run_once is not lost
            try:
                busy = self.run_once()
            except Exception:  # the database is away, say: keep the thread, try again
                log.exception("slack outbox: run failed")
                busy = 0
            if not busy:
                wake.wait(poll_seconds)

    def start(self, stop_event: threading.Event, wake_event: threading.Event | None = None) -> threading.Thread:
        thread = threading.Thread(target=self.run_forever, args=(stop_event, wake_event),
                                  name=f"slack-outbox-{self.worker_id}", daemon=True)
        thread.start()
        return thread

    # -- choosing and claiming rows

    def _due(self, limit: int) -> list[_Row]:
        """Due rows that head their lane: pending and due, or left 'sending' by a dead worker."""
        now = self.clock()
        with read_tx(self.engine) as conn:
            rows = [_Row(*r) for r in conn.execute(_due_statement(limit),
                                                   {"now": now, "stale_before": now - self.lease.shortest})]
        return [r for r in rows if r.status == PENDING or r.claimed_at < now - self.lease.stale_after(r.claimed_by)]

    def _claim(self, row: _Row, now: datetime) -> bool:
        """Take the row with one atomic UPDATE; only the sender whose UPDATE hit it may send."""
        attempt = {"attempts": OUTBOX.c.attempts + 1}
        with write_tx(self.engine) as conn:
            if row.status == PENDING:
                return self.claims.claim(conn, row.id, now, **attempt)
            # a dead worker's row: still the same claim as when we looked, and still stale
            return self.claims.take_over(conn, row.id, SENDING, row.claimed_by, now, **attempt)

    # -- one row

    def _process(self, row: _Row) -> None:
        now = self.clock()
        if not self._claim(row, now):
            return  # another sender won it
        if row.status == SENDING:
            log.warning("slack outbox: reclaiming %s from %s (stuck since %s)", row.key, row.claimed_by, row.claimed_at)
        # Could an earlier try have reached Slack? Then look before posting again.
        maybe_sent = row.status == SENDING or bool((row.result or {}).get("maybe_sent"))
        attempts = row.attempts + 1
        try:
            payload = self._resolve(row)
            result = self._find_post(row, payload) if maybe_sent and row.method in POSTS else None
            if result is None:
                result = self._send(row, payload)
        except _Wait as e:
            self._release(row, f"waiting for {e}")
        except _Failed as e:
            self._fail(row, str(e))
        except SlackApiError as e:
            self._on_slack_error(row, e, attempts, maybe_sent)
        except (OSError, HTTPException) as e:  # URLError, timeouts, resets: the request may have arrived
            self._retry(row, f"connection: {e}", attempts, maybe_sent=True)
        except SlackRequestError as e:
            if str(e).startswith("Failed to upload a file"):  # files_upload_v2's upload step
                self._retry(row, str(e), attempts, maybe_sent=True)
            else:
                self._fail(row, str(e))
        except SQLAlchemyError:
            raise  # the database, not the message: the row stays claimed and is retried once stale
        except Exception as e:  # a payload slack_sdk refuses, say: never retried forever
            log.exception("slack outbox: %s %s", row.method, row.key)
            self._fail(row, f"{type(e).__name__}: {e}")
        else:
            self._mark_sent(row, result)

    def _resolve(self, row: _Row) -> dict:
        """The call's arguments, with the channel and ts of the rows it refers to filled in."""
        payload = dict(row.payload)
        for ref, argument in REFERENCES:
            key = payload.pop(ref, None)
            if not key:
                continue
            with read_tx(self.engine) as conn:
                other = conn.execute(select(OUTBOX.c.status, OUTBOX.c.result, OUTBOX.c.error)
                                     .where(OUTBOX.c.key == key)).first()
            if other is None:
                raise _Failed(f"dependency_missing: {ref} {key}")
            if other.status in (PENDING, SENDING):
                raise _Wait(key)
            if other.status != SENT:
                raise _Failed(f"dependency_failed: {ref} {key}: {other.error}")
            payload[argument] = other.result["ts"]
            payload["channel"] = other.result["channel"]
        return payload

    # -- talking to Slack

    def _send(self, row: _Row, payload: dict) -> dict:
        return getattr(self, "_send_" + row.method.replace(".", "_"))(row, payload)

    def _send_chat_postMessage(self, row: _Row, payload: dict) -> dict:
        metadata = outbox_metadata(row.key, payload.pop("metadata", None))
        response = self.client.chat_postMessage(**payload, metadata=metadata)
        return {"channel": response["channel"], "ts": response["ts"]}

    def _send_dm(self, row: _Row, payload: dict) -> dict:
        user = payload.pop("user")
        payload["channel"] = self._open_dm(user)
        return {**self._send_chat_postMessage(row, payload), "user": user}

    def _send_chat_update(self, row: _Row, payload: dict) -> dict:
        response = self.client.chat_update(**payload)
        return {"channel": response["channel"], "ts": response["ts"]}

    def _send_chat_postEphemeral(self, row: _Row, payload: dict) -> dict:
        response = self.client.chat_postEphemeral(**payload)
        return {"channel": payload["channel"], "message_ts": response["message_ts"]}

    def _send_views_publish(self, row: _Row, payload: dict) -> dict:
        response = self.client.views_publish(**payload)
        return {"view_id": response["view"]["id"], "user_id": payload["user_id"]}

    def _send_files_upload_v2(self, row: _Row, payload: dict) -> dict:
        content = base64.b64decode(payload.pop("content_b64"))
        response = self.client.files_upload_v2(file=content, **payload)
        return {"file_id": response["file"]["id"], "channel": payload.get("channel")}

    def _send_refresh(self, row: _Row, payload: dict) -> dict:
        """Render the stall's messages now (`posted_messages`: its pings and follow-ups, and the
        extra ones) and edit each of them. A message Slack will not edit (deleted, archived
        channel) is skipped; anything retryable retries the whole row (edits are idempotent)."""
        if self.rules is None:
            raise _Failed("this sender has no rules to render a refresh with")
        stall_id = payload["stall_id"]
        now = self.clock()
        with read_tx(self.engine) as conn:
            unsent = self._unsent_ping(conn, stall_id, now)
            if unsent:  # it renders at enqueue time: edit it once it is out
                raise _Wait(unsent)
            view = ping_view(conn, stall_id, self.rules, now)
            if view is None:
                return {"updated": [], "skipped": []}
            targets = posted_messages(conn, stall_id, [tuple(t) for t in payload.get("extra") or []])
        if payload.get("note"):
            view = replace(view, note=payload["note"])
        # Each message as what it was posted as: a follow-up keeps its note, a handoff its header.
        messages = [(t.channel, t.ts, posted_message(view, t)) for t in targets]
        updated, skipped = [], []
        for channel, ts, message in messages:
            try:
                self.client.chat_update(channel=channel, ts=ts, **message)
                updated.append([channel, ts])
            except SlackApiError as e:
                if _retryable(e):
                    raise
                log.warning("slack outbox: ping of stall %s in %s not edited: %s", stall_id, channel,
                            e.response.get("error"))
                skipped.append([channel, ts])
        shown = messages[0][2] if messages else posted_message(view, Posted("", ""))
        return {"updated": updated, "skipped": skipped, **shown}  # what the first ping got (the demo shows it)

    @staticmethod
    def _unsent_ping(conn: Connection, stall_id: int, now: datetime) -> str | None:
        """The key of a ping post of the stall that is due (or being sent) but not out yet: in
        another lane (the alerts channel, the owner's DM), it could go out after this refresh
        with what it showed when queued. A post held for later (quiet hours) does not count:
        the router rewrites or cancels it."""
        alerts = select(ALERT.c.id).where(ALERT.c.stall_id == stall_id,
                                          (ALERT.c.kind == "ping") | ALERT.c.kind.like("attempt%"))
        held = and_(OUTBOX.c.status == PENDING, OUTBOX.c.attempts == 0, OUTBOX.c.next_attempt_at > now)
        return conn.execute(select(OUTBOX.c.key).where(
            OUTBOX.c.alert_id.in_(alerts), OUTBOX.c.method.in_(POSTS), OUTBOX.c.status.in_((PENDING, SENDING)),
            not_(held)).limit(1)).scalar()

    def _open_dm(self, user: str) -> str:
        channel = self._dm_channels.get(user)
        if channel is None:
            channel = self._dm_channels[user] = self.client.conversations_open(users=user)["channel"]["id"]
        return channel

    def _find_post(self, row: _Row, payload: dict) -> dict | None:
        """The result of an earlier try of this post that reached Slack, found by its key."""
        channel = self._open_dm(payload["user"]) if row.method == "dm" else payload["channel"]
        oldest = f"{(row.created_at - CLOCK_SKEW).timestamp():.6f}"
        args: dict[str, Any] = {"channel": channel, "oldest": oldest, "limit": HISTORY_PAGE,
                                "include_all_metadata": True}
        thread_ts = payload.get("thread_ts")
        read = self.client.conversations_replies if thread_ts else self.client.conversations_history
        if thread_ts:
            args["ts"] = thread_ts
        for _ in range(HISTORY_PAGES):
            page = read(**args)
            for message in page.get("messages") or []:
                if carries_key(message, row.key):
                    log.info("slack outbox: %s had reached Slack (ts %s); not posting again", row.key, message["ts"])
                    found = {"channel": channel, "ts": message["ts"]}
                    return {**found, "user": payload["user"]} if row.method == "dm" else found
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not page.get("has_more") or not cursor:
                break
            args["cursor"] = cursor
        return None

    # -- recording outcomes (each guarded by our claim: a row reclaimed from us is not ours)

    def _finish(self, conn: Connection, row: _Row, **values) -> bool:
        if conn.execute(update(OUTBOX).where(self.claims.ours(row.id)).values(**values)).rowcount == 1:
            return True
        log.warning("slack outbox: %s was reclaimed by another sender before %s recorded it", row.key, self.worker_id)
        return False

    def _mark_sent(self, row: _Row, result: dict) -> None:
        now = self.clock()
        with write_tx(self.engine) as conn:
            if self._finish(conn, row, status=SENT, sent_at=now, result=result, error=None) \
                    and row.alert_id is not None and row.method in POSTS:
                # The alert learns its message's ts in the same transaction: later edits need it.
                conn.execute(update(ALERT).where(ALERT.c.id == row.alert_id, ALERT.c.ts.is_(None))
                             .values(ts=result["ts"], updated_at=now))

    def _retry(self, row: _Row, error: str, attempts: int, *, maybe_sent: bool) -> None:
        delay = backoff(attempts, first=1, cap=MAX_BACKOFF_SECONDS)
        log.warning("slack outbox: %s %s failed (attempt %d), retrying in %gs: %s",
                    row.method, row.key, attempts, delay.total_seconds(), error)
        with write_tx(self.engine) as conn:
            self._finish(conn, row, status=PENDING, next_attempt_at=self.clock() + delay,
                         error=error[:1000], result={"maybe_sent": maybe_sent})

    def _release(self, row: _Row, reason: str, after: timedelta = DEPENDENCY_RECHECK) -> None:
        """Give the claim back without counting an attempt (the row is waiting, not failing)."""
        with write_tx(self.engine) as conn:
            self._finish(conn, row, status=PENDING, attempts=OUTBOX.c.attempts - 1, error=reason[:1000],
                         next_attempt_at=self.clock() + after)

    def _fail(self, row: _Row, error: str) -> None:
        log.error("slack outbox: %s %s failed for good: %s", row.method, row.key, error)
        with write_tx(self.engine) as conn:
            self._finish(conn, row, status=FAILED, error=error[:1000])

    def _back_off_lane(self, row: _Row, retry_after: int, maybe_sent: bool) -> None:
        """A 429: this row and every pending row of its lane wait for Retry-After; other lanes go on."""
        until = self.clock() + timedelta(seconds=retry_after)
        log.warning("slack outbox: rate limited on %s; holding the lane for %ss", row.channel or row.key, retry_after)
        t = OUTBOX
        with write_tx(self.engine) as conn:
            self._finish(conn, row, status=PENDING, next_attempt_at=until, error="ratelimited",
                         result={"maybe_sent": maybe_sent})
            if row.channel is not None:
                conn.execute(update(t).where(t.c.channel == row.channel, t.c.status == PENDING,
                                             t.c.next_attempt_at < until).values(next_attempt_at=until))

    def _on_slack_error(self, row: _Row, e: SlackApiError, attempts: int, maybe_sent: bool) -> None:
        response = e.response
        error = response.get("error") if isinstance(response.data, dict) else None
        if response.status_code == 429 or error == "ratelimited":
            self._back_off_lane(row, _retry_after(response.headers), maybe_sent)
        elif response.status_code >= 500 or error in TRANSIENT_ERRORS or not error \
                or error.startswith("Received a response in a non-JSON format"):
            self._retry(row, f"{response.status_code} {error or ''}".strip(), attempts, maybe_sent=True)
        elif error in REVOKED_ERRORS:  # the token will not work again: hold everything, fail nothing
            mark_revoked(self.engine, self.client.token, f"{error} from {row.method}")
            self._revoked_now = True
            self._release(row, error, after=timedelta(0))  # due, so it keeps the head of its lane
        elif error in CONFIG_ERRORS:
            self._retry(row, error, attempts, maybe_sent=maybe_sent)
        else:
            detail = (response.get("response_metadata") or {}).get("messages") or []
            self._fail(row, "; ".join([error, *detail]))


def _retryable(e: SlackApiError) -> bool:
    """Whether the sender's row-level handling should see this error (rate limit, server,
    token or scope trouble) rather than it being about one message alone."""
    response = e.response
    error = response.get("error") if isinstance(response.data, dict) else None
    return (response.status_code == 429 or response.status_code >= 500 or not error
            or error in {"ratelimited", *TRANSIENT_ERRORS, *REVOKED_ERRORS, *CONFIG_ERRORS})


def _retry_after(headers: dict) -> int:
    for name, value in (headers or {}).items():
        if name.lower() == "retry-after":
            value = value[0] if isinstance(value, list) else value
            try:
                return max(1, int(float(value)))
            except (TypeError, ValueError):
                break
    return 1


# ----------------------------------------------------------------------------- one-shot sending


def last_row_id(engine: Engine) -> int:
    """The newest row's id (0 when empty): what `drain` sends after."""
    with read_tx(engine) as conn:
        return conn.execute(select(func.max(OUTBOX.c.id))).scalar() or 0


def drain(sender: OutboxSender, after_id: int, *, timeout: float = 30.0) -> dict[str, int]:
    """Send the rows enqueued after `after_id` (a one-shot command's, such as `stallwatch
    scan`, with no sender thread behind it), and whatever goes before them in their lanes,
    for at most `timeout` seconds. Rows held past that (quiet hours, a long Retry-After) stay
    for a running sender. Returns how many of those rows are sent, failed and waiting."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        busy = sender.run_once()
        left = max(deadline - time.monotonic(), 0)
        counts = _statuses_after(sender.engine, after_id, sender.clock() + timedelta(seconds=left))
        if not counts["due"] or not left or sender.paused():
            return counts
        if not busy:
            time.sleep(0.2)  # a row backing off for a second or two


def _statuses_after(engine: Engine, after_id: int, until: datetime) -> dict[str, int]:
    """sent, failed, waiting (pending or sending) and, of those waiting, due by `until`."""
    counts = {SENT: 0, FAILED: 0, "waiting": 0, "due": 0}
    with read_tx(engine) as conn:
        for status, next_at in conn.execute(select(OUTBOX.c.status, OUTBOX.c.next_attempt_at)
                                            .where(OUTBOX.c.id > after_id)):
            if status in (SENT, FAILED):
                counts[status] += 1
                continue
            counts["waiting"] += 1
            if status == SENDING or _naive(next_at) <= _naive(until):
                counts["due"] += 1
    return counts


def _naive(value: datetime) -> datetime:
    """Comparable across backends (SQLite returns naive UTC, PostgreSQL aware)."""
    return value.replace(tzinfo=None) if value.tzinfo is None else value.astimezone(timezone.utc).replace(tzinfo=None)
