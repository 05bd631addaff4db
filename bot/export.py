"""`stallwatch export`: accounts, stalls and the audit trail as CSV or JSON Lines, streamed.

For the QBR deck (a spreadsheet) and the warehouse (a loader): one row per record, a header
(CSV) or one object per line (JSONL), times in ISO 8601 UTC ("2026-11-22T09:00:00.123456Z"),
NULL as an empty cell (CSV) or null (JSONL). Rows are read in batches (storage.sql.stream_rows:
a server-side cursor on PostgreSQL, SQLite's stepping cursor), so an export of any size holds
one batch in memory.

Adding an export (e.g. `notes`): write a function `(since) -> Select` whose columns are
labelled with the names the file should carry, and add an `Exporter` to EXPORTERS. The CLI
offers every key of EXPORTERS; each column's CSV/JSON form follows from its SQL type.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import date, datetime, timezone
from itertools import chain
from typing import TYPE_CHECKING, Callable, TextIO

import orjson

if TYPE_CHECKING:
    from sqlalchemy import Connection, Select

# SQLAlchemy and the models are imported where used: the CLI imports this module for the names
# of EXPORTERS, and `stallwatch --help` should not pay for them.

UTC = timezone.utc

FORMATS = ("csv", "jsonl")
BATCH = 1000  # rows per fetch: what an export holds in memory (about 3 MB of Python heap at 1,000)

# A spreadsheet runs a cell starting with =, +, - or @ as a formula (=HYPERLINK(...), +cmd|...,
# @SUM(...)); OWASP adds tab and CR, which some spreadsheets skip before looking. Customer names
# and ticket text are hostile, so such a cell is prefixed with a quote (OWASP's advice).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

# Line breaks to some readers (Python's str.splitlines, some editors) that JSON leaves unescaped in
# strings: escaped, so one object is one line whatever splits the file. Only strings hold them.
LINE_BREAKS = (("\x85", "\\u0085"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029"))


@dataclass(frozen=True)
class Exporter:
    name: str  # the CLI word
    noun: tuple[str, str]  # one, many: the summary line's "1 stall" / "12,345 stalls written ..."
    since_means: str  # what --since filters on, for --help
    query: Callable[[datetime | None], Select]  # every row, or those changed at or after `since`


# ------------------------------------------------------------------ the queries


def _tables():
    from storage.models import Account, AuditEntry, Stall

    return Account.__table__, Stall.__table__, AuditEntry.__table__


def accounts_query(since: datetime | None) -> Select:
    """Every account with its live (open or snoozed) stalls counted and their top priority.

    --since: the account changed, or one of its stalls did (its open count or top priority may
    have moved without the account row changing), so an incremental load stays current."""
    from sqlalchemy import func, or_, select

    ACCOUNT, STALL, _ = _tables()
    live = (select(STALL.c.account_id, func.count().label("n"), func.min(STALL.c.priority).label("top"))
            .where(STALL.c.open_key.is_not(None)).group_by(STALL.c.account_id).subquery("live"))
    stmt = (select(
        ACCOUNT.c.id.label("account_id"), ACCOUNT.c.name, ACCOUNT.c.domain, ACCOUNT.c.plan, ACCOUNT.c.track,
        ACCOUNT.c.status.label("lifecycle_status"), ACCOUNT.c.arr, ACCOUNT.c.owner_email, ACCOUNT.c.renewal_date,
        ACCOUNT.c.stage, ACCOUNT.c.signup_at, ACCOUNT.c.activated_at,
        func.coalesce(live.c.n, 0).label("open_stalls"), live.c.top.label("top_priority"), ACCOUNT.c.updated_at)
        .select_from(ACCOUNT.outerjoin(live, live.c.account_id == ACCOUNT.c.id))
        .order_by(ACCOUNT.c.id))
    if since is not None:
        changed = select(STALL.c.account_id).where(STALL.c.updated_at >= since)
        stmt = stmt.where(or_(ACCOUNT.c.updated_at >= since, ACCOUNT.c.id.in_(changed)))
    return stmt


def stalls_query(since: datetime | None) -> Select:
    """Every stall, open or closed, with its account's name (empty if the account is gone)."""
    from sqlalchemy import or_, select

    ACCOUNT, STALL, _ = _tables()
    stmt = (select(
        STALL.c.id.label("stall_id"), STALL.c.account_id, ACCOUNT.c.name.label("account_name"), STALL.c.rule,
        STALL.c.step, STALL.c.status, STALL.c.priority, STALL.c.score, STALL.c.opened_at, STALL.c.threshold_at,
        STALL.c.resolved_at, STALL.c.resolution, STALL.c.resolved_by, STALL.c.assignee, STALL.c.snoozed_until,
        STALL.c.recovery_attempts, STALL.c.updated_at)
        .select_from(STALL.outerjoin(ACCOUNT, ACCOUNT.c.id == STALL.c.account_id))
        .order_by(STALL.c.id))
    if since is not None:
        # Every change to a stall (scan, Slack action, recovery email) sets updated_at.
        stmt = stmt.where(or_(STALL.c.opened_at >= since, STALL.c.updated_at >= since))
    return stmt


def audit_query(since: datetime | None) -> Select:
    from sqlalchemy import select

    _, _, AUDIT = _tables()
    stmt = (select(
        AUDIT.c.id.label("audit_id"), AUDIT.c.at, AUDIT.c.actor, AUDIT.c.action, AUDIT.c.stall_id,
        AUDIT.c.account_id, AUDIT.c.source, AUDIT.c.detail)
        .order_by(AUDIT.c.id))
    if since is not None:
        stmt = stmt.where(AUDIT.c.at >= since)
    return stmt


def notes_query(since: datetime | None) -> Select:
    """Every note people wrote on accounts and alerts (bot/stalls/notes.py), oldest first."""
    from sqlalchemy import select

    from storage.models import Account, Note

    NOTE, ACCOUNT = Note.__table__, Account.__table__
    stmt = (select(
        NOTE.c.id.label("note_id"), NOTE.c.created_at, NOTE.c.account_id, ACCOUNT.c.name.label("account_name"),
        NOTE.c.stall_id, NOTE.c.author, NOTE.c.text)
        .select_from(NOTE.outerjoin(ACCOUNT, ACCOUNT.c.id == NOTE.c.account_id))
        .order_by(NOTE.c.created_at, NOTE.c.id))
    if since is not None:
        stmt = stmt.where(NOTE.c.created_at >= since)
    return stmt


EXPORTERS: dict[str, Exporter] = {
    e.name: e for e in (
        Exporter("accounts", ("account", "accounts"), "the account or one of its stalls changed", accounts_query),
        Exporter("stalls", ("stall", "stalls"), "opened or changed", stalls_query),
        Exporter("audit", ("audit entry", "audit entries"), "recorded", audit_query),
        Exporter("notes", ("note", "notes"), "written", notes_query),
    )
}


# ------------------------------------------------------------------ values


def counted(exporter: Exporter, count: int) -> str:
    """"1 stall", "12,345 stalls"."""
    return f"{count:,} {exporter.noun[0] if count == 1 else exporter.noun[1]}"


def parse_since(text: str) -> datetime:
    """An ISO 8601 date (midnight UTC) or time (UTC unless it carries an offset); ValueError."""
    value = datetime.fromisoformat(text.strip())
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def iso_time(value: datetime) -> str:
    """ISO 8601 in UTC with a Z; PostgreSQL hands timestamptz back in the session's zone."""
    if value.tzinfo is not UTC:
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.isoformat()[:-6] + "Z"  # "+00:00" -> "Z"


def kind_of(sql_type) -> str:
    """How a column is written: time, date, int, float, bool, json or text."""
    from sqlalchemy import JSON, Boolean, Date, DateTime, Float, Integer, Numeric

    impl = getattr(sql_type, "impl", sql_type)
    for kind, types in (("time", DateTime), ("date", Date), ("bool", Boolean), ("int", Integer),
                        ("float", (Float, Numeric)), ("json", JSON)):
        if isinstance(impl, types):
            return kind
    return "text"


def defuse(text: str) -> str:
    """The cell as a spreadsheet shows it, never runs it."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _json_text(value) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, default=_json_default).decode()


def _json_default(value):
    """What orjson cannot write itself: a Decimal (a NUMERIC column) as a number."""
    from decimal import Decimal

    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


# Converters by kind, applied to non-NULL values only. The csv module writes the rest itself:
# None as an empty cell, ints as digits, floats as their shortest round-tripping text (repr).
CSV_CONVERT = {"time": iso_time, "date": date.isoformat, "bool": lambda v: "true" if v else "false",
               "json": lambda v: defuse(_json_text(v))}
JSON_CONVERT = {"time": iso_time, "date": date.isoformat}  # orjson writes numbers, text, objects


# ------------------------------------------------------------------ writing


def write(conn: Connection, exporter: Exporter, out: TextIO, *, fmt: str = "csv", since: datetime | None = None,
          batch: int = BATCH, progress: Callable[[int], None] | None = None) -> int:
    """Write the exporter's rows to `out` (a text stream opened with newline=""); the row count.

    `progress(rows_so_far)` is called after each batch. Run it in one read transaction: the
    file is then one consistent snapshot, and PostgreSQL needs one for its server-side cursor."""
    from storage.sql import stream_rows

    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    stmt = exporter.query(since)
    columns = list(stmt.selected_columns)
    names = [c.key for c in columns]
    kinds = [kind_of(c.type) for c in columns]
    batches = stream_rows(conn, stmt, batch)
    first = next(batches, [])  # the query runs before the header: an error leaves no half file
    write_rows = (_csv_writer if fmt == "csv" else _jsonl_writer)(out, names, kinds)
    count = 0
    for rows in chain([first], batches):
        write_rows(rows)
        count += len(rows)
        if progress is not None:
            progress(count)
    return count


def _csv_writer(out: TextIO, names: list[str], kinds: list[str]) -> Callable[[list], None]:
    """Writes the header now; the returned function writes a batch of rows."""
    writer = csv.writer(out)  # RFC 4180: CRLF, quotes doubled, cells with , " or newlines quoted
    writer.writerow(names)
    texts = [i for i, k in enumerate(kinds) if k == "text"]
    convert = [(i, CSV_CONVERT[k]) for i, k in enumerate(kinds) if k in CSV_CONVERT]

    def write_rows(rows: list) -> None:
        lines = []
        for row in rows:  # inlined: this loop runs for every cell of every row
            cells = list(row)
            for i in texts:
                v = cells[i]
                if v is not None:
                    cells[i] = defuse(v if isinstance(v, str) else str(v))
            for i, conv in convert:
                v = cells[i]
                if v is not None:
                    cells[i] = conv(v)
            lines.append(cells)
        writer.writerows(lines)

    return write_rows


def _jsonl_writer(out: TextIO, names: list[str], kinds: list[str]) -> Callable[[list], None]:
    convert = [(name, JSON_CONVERT[k]) for name, k in zip(names, kinds) if k in JSON_CONVERT]
    option = orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE

    def line(row) -> str:
        obj = dict(zip(names, row))
        for name, conv in convert:
            v = obj[name]
            if v is not None:
                obj[name] = conv(v)
        # Decoded one by one: orjson's bytes carry a few KB of spare capacity each, which a
        # batch of them would hold at once.
        return orjson.dumps(obj, option=option, default=_json_default).decode()

    def write_rows(rows: list) -> None:
        text = "".join([line(row) for row in rows])
        for raw, escaped in LINE_BREAKS:
            if raw in text:
                text = text.replace(raw, escaped)
        out.write(text)

    return write_rows
