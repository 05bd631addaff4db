"""History files: what `stallwatch demo --export` writes and `stallwatch backtest` replays.

JSON Lines, one record per line, each holding a message in the wire format of the ingest
route that would receive it, so an export of real traffic replays exactly as live ingestion
(the records go through the routes' own parsers):

    {"source": "segment", "message": {...}}   a Segment / RudderStack message (track, identify,
                                             group, page, screen, alias), as /v1/* or
                                             /ingest/segment accept it
    {"source": "stripe", "event": {...}}      a Stripe Event object, as /ingest/stripe receives it
    {"source": "tickets", "ticket": {...}}    one helpdesk ticket, as /ingest/tickets accepts it

An optional `"received_at"` (ISO 8601) says when the record reached Stallwatch, for events
that arrive late; without it, a Segment message's own `receivedAt` is used, else the
event's time (`timestamp`, Stripe's `created`, the ticket's `updated_at` or `created_at`).
The replay follows arrival order; the journey uses the events' own times, as live.
Blank lines and lines starting with `#` are skipped.

A record that cannot be used is a `Problem` located by file and line
(`events.jsonl:17: not JSON (...)`); the reader either collects them and goes on, or
(`strict`) raises `HistoryError` at the first one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import orjson

from bot.ingest import segment, stripe, tickets
from bot.ingest.records import BadRequest, IncomingEvent, MessageError, TooLarge
from bot.ingest.routes import storable  # the routes' own last check (no NUL in text columns)
from bot.ingest.timewindow import apply_window

UTC = timezone.utc
SOURCES = ("segment", "stripe", "tickets")
PAYLOAD_KEY = {"segment": "message", "stripe": "event", "tickets": "ticket"}
MAX_LINE_BYTES = 64 * 1024  # one message is limited to 32 KB by the routes; leave room for the envelope
PROGRESS_BYTES = 256 * 1024
# The simulated clock runs between these (arrival times outside are located errors).
EARLIEST = datetime(1990, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Problem:
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class HistoryError(Exception):
    """A record that cannot be used, in strict mode."""

    def __init__(self, problem: Problem):
        super().__init__(str(problem))
        self.problem = problem


class RecordError(ValueError):
    """Why one record cannot be used (located by the reader)."""


@dataclass(frozen=True)
class Entry:
    """One usable record: when it arrived and the event the routes' parser made of it."""

    at: datetime
    line: int
    event: IncomingEvent


@dataclass
class History:
    path: str
    entries: list[Entry] = field(default_factory=list)  # in arrival order
    problems: list[Problem] = field(default_factory=list)
    records: int = 0  # non-blank lines read
    ignored: int = 0  # valid Stripe events of a type Stallwatch does not use (as the route answers)

    @property
    def start(self) -> datetime | None:
        return self.entries[0].at if self.entries else None

    @property
    def end(self) -> datetime | None:
        return self.entries[-1].at if self.entries else None


def dump_record(record: dict[str, Any]) -> bytes:
    """One line of a history file."""
    return orjson.dumps(record) + b"\n"


def write_history(path: str | Path, records: Iterable[dict[str, Any]]) -> int:
    count = 0
    with open(path, "wb") as out:
        for record in records:
            out.write(dump_record(record))
            count += 1
    return count


def read_history(path: str | Path, *, strict: bool = False,
                 progress: Callable[[int], None] | None = None) -> History:
    """Read and parse every record; sort the usable ones by arrival. `progress` gets the
    number of bytes read since its last call."""
    name = str(path)
    history = History(path=name)
    unreported = 0
    with open(path, "rb") as lines:
        for number, raw in enumerate(lines, 1):
            unreported += len(raw)
            if progress is not None and unreported >= PROGRESS_BYTES:
                progress(unreported)
                unreported = 0
            text = raw.strip()
            if not text or text.startswith(b"#"):
                continue
            history.records += 1
            try:
                entry = parse_line(text, number)
            except RecordError as exc:
                problem = Problem(name, number, str(exc))
                if strict:
                    raise HistoryError(problem) from None
                history.problems.append(problem)
                continue
            if entry is None:
                history.ignored += 1
            else:
                history.entries.append(entry)
    if progress is not None and unreported:
        progress(unreported)
    history.entries.sort(key=lambda e: (e.at, e.line))
    return history


def parse_line(text: bytes, number: int = 0) -> Entry | None:
    """The entry for one line; None for a Stripe event type Stallwatch ignores."""
    if len(text) > MAX_LINE_BYTES:
        raise RecordError(f"line is longer than {MAX_LINE_BYTES} bytes")
    try:
        record = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise RecordError(f"not JSON ({exc})") from None
    return parse_record(record, number)


def parse_record(record: Any, number: int = 0) -> Entry | None:
    if not isinstance(record, dict):
        raise RecordError('a record must be a JSON object like {"source": "segment", "message": {...}}')
    source = record.get("source")
    if source not in SOURCES:
        raise RecordError(f"source must be one of {', '.join(SOURCES)} (got {_short(source)})")
    key = PAYLOAD_KEY[source]
    if key not in record:
        raise RecordError(f'a {source} record needs "{key}"')
    received = _time(record.get("received_at"), "received_at")
    payload = record[key]
    try:
        if source == "segment":
            event, arrival = _segment(payload, received)
        elif source == "stripe":
            event, arrival = _stripe(payload), received
        else:
            event, arrival = tickets.parse_ticket(payload), received
        if event is None:
            return None
        # The routes' own time window, with the record's arrival as the time received.
        event = apply_window(storable(event), arrival or event.occurred_at)
    except (MessageError, BadRequest, TooLarge, RecordError) as exc:
        raise RecordError(f"{source} {key}: {exc}") from None
    except Exception as exc:  # a parser's unexpected failure: still this record's problem, located
        raise RecordError(f"{source} {key}: cannot be parsed ({type(exc).__name__}: {exc})") from None
    at = max(arrival or event.occurred_at, event.occurred_at)
    if not EARLIEST <= at < LATEST:
        raise RecordError(f"arrival time {at.isoformat()} is outside what a backtest replays "
                          f"({EARLIEST.year}-{LATEST.year})")
    return Entry(at=at, line=number, event=event)


def _segment(message: Any, received: datetime | None) -> tuple[IncomingEvent, datetime]:
    if not isinstance(message, dict):
        raise MessageError("a message must be a JSON object")
    arrival = received or _time(message.get("receivedAt"), "receivedAt")
    if arrival is None:
        arrival = _time(message.get("timestamp") or message.get("originalTimestamp"), "timestamp")
    if arrival is None:
        raise MessageError("no timestamp (a history needs each message's time: timestamp, receivedAt or received_at)")
    return segment.parse_message(message, kind=None, received_at=arrival, check_size=True), arrival


def _stripe(event: Any) -> IncomingEvent | None:
    if not isinstance(event, dict):
        raise BadRequest("a Stripe event must be a JSON object")
    return stripe.parse_event(orjson.dumps(event))


def _time(value: Any, name: str) -> datetime | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise RecordError(f"{name} must be an ISO 8601 time, e.g. 2026-11-22T09:00:00Z")
    try:
        at = datetime.fromisoformat(value.strip())
        return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    except (ValueError, OverflowError):
        raise RecordError(f"{name} {value[:40]!r} is not an ISO 8601 time") from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
