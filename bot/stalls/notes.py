"""Notes on accounts and their alerts: "spoke to them, integration lands next sprint".

A note belongs to an account; written from a stall (a ping, a /journey or App Home row) it
also names that stall (`stall_id`), from the account itself (/journey) it names none. Who may
write one is Op.NOTE of bot.stalls.permissions (the owner, the assignee of the account's alert,
a CS team member, an admin), checked before the modal opens (`target`) and again when it is
submitted (`add`); an outsider is refused and nothing is stored.

The text is stored as typed (only trimmed, and without NUL, which PostgreSQL refuses): it is a
customer's words as much as the CSM's, so it is made inert where it is shown (bot/slack/text.py's
`md`, at render time), never here.

`add` stores the note, its AuditEntry ("note.added") and whatever `notify` queues (the Slack
adapter's thread replies under the account's open pings) in ONE transaction; a submission
carries a `request_id` (the modal's view id): the same submission again stores and notifies
nothing. `since` yields notes for an export.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, func, select

from bot.stalls.actions import account_subject
from bot.stalls.context import Services
from bot.stalls.errors import BadRequest, NotFound
from bot.stalls.permissions import Op, Subject, check
from bot.stalls.views import NoteLine, aware
from storage import stall_actions as sql
from storage.db import read_tx, write_tx
from storage.models import Account, Note
from storage.sql import insert_ignore

NOTE = Note.__table__
ACCOUNT = Account.__table__

MAX_CHARS = 2000  # the modal's max_length and the column's size
ADDED = "note.added"  # the audit action


@dataclass(frozen=True)
class Target:
    """What a note is about: the account, the stall it was written from (None: the account
    itself), and the account's name for the modal."""

    account_id: str
    stall_id: int | None
    account_name: str


@dataclass(frozen=True)
class Noted:
    """A note just stored: what its notices need."""

    note_id: int
    account_id: str
    stall_id: int | None
    author: str
    text: str
    at: datetime


@dataclass(frozen=True)
class Added:
    note: Noted
    created: bool  # False: this submission had already been stored (a retry)
    account_name: str = ""


@dataclass(frozen=True)
class NoteRecord:
    """One note as exported (raw text: the exporter's format decides how to quote it)."""

    id: int
    account_id: str
    stall_id: int | None
    author: str
    text: str
    created_at: datetime


# Called inside the note's transaction (the Slack adapter queues the thread replies there, so
# they exist exactly when the note does).
Notify = Callable[[Connection, Noted], None]


# --- who may ------------------------------------------------------------------------------------

def _subject(conn: Connection, account_id: str | None, stall_id: int | None) -> tuple[Target, Subject]:
    """The note's target and its permission subject. NotFound when the stall or account is gone."""
    if stall_id is not None:
        row = sql.subject_of(conn, stall_id)
        if row is None:
            raise NotFound()
        account_id = row.account_id
    name = conn.execute(select(ACCOUNT.c.name).where(ACCOUNT.c.id == account_id)).first() if account_id else None
    if name is None:
        raise NotFound("That account no longer exists.")
    subject = account_subject(conn, account_id)  # its owner, and the assignee of its live stalls
    if stall_id is not None and row.assignee:  # a closed stall's assignee still speaks for it
        subject = Subject(stall_id=stall_id, owner_slack_id=subject.owner_slack_id,
                          assignee=subject.assignee or row.assignee)
    return Target(account_id=account_id, stall_id=stall_id, account_name=name[0] or account_id), subject


def target(services: Services, user: str, *, account_id: str | None = None, stall_id: int | None = None) -> Target:
    """What `user` would write a note about, once they may (raises NotFound, NotAllowed): the
    check made before the modal opens, so an outsider never sees it."""
    team = services.team  # may wait for Slack: before the connection
    with services.engine.connect() as conn:
        found, subject = _subject(conn, account_id, stall_id)
    check(Op.NOTE, user, subject, services.admins, team)
    return found


def clean_text(text: str | None) -> str:
    """The note as it is stored; BadRequest when empty or too long (Slack's max_length stops
    a person; this stops anything else)."""
    text = (text or "").replace("\x00", "").strip()
    if not text:
        raise BadRequest("Write a note first.")
    if len(text) > MAX_CHARS:
        raise BadRequest(f"A note holds at most {MAX_CHARS:,} characters ({len(text):,} typed).")
    return text


# --- writing ------------------------------------------------------------------------------------

def add(services: Services, user: str, text: str, *, account_id: str | None = None, stall_id: int | None = None,
        source: str, request_id: str | None = None, notify: Notify | None = None) -> Added:
    """Store `user`'s note on the account (or on the stall's account, naming the stall), audit
    it and call `notify`, in one transaction; nothing at all when `user` may not (NotAllowed)
    or when `request_id` was already stored (`created` False, the stored note returned)."""
    text = clean_text(text)
    team = services.team  # before the transaction: it may wait for Slack
    now = services.clock()
    with write_tx(services.engine) as conn:
        found, subject = _subject(conn, account_id, stall_id)
        check(Op.NOTE, user, subject, services.admins, team)
        values = dict(account_id=found.account_id, stall_id=found.stall_id, author=user, text=text,
                      request_id=request_id, created_at=now)
        stmt = (insert_ignore(conn, NOTE, "request_id") if request_id else NOTE.insert()).values(**values)
        note_id = conn.execute(stmt.returning(NOTE.c.id)).scalar()
        if note_id is None:  # this submission was stored already: show what was stored, change nothing
            stored = conn.execute(select(NOTE).where(NOTE.c.request_id == request_id)).one()
            return Added(_noted(stored), created=False, account_name=found.account_name)
        sql.audit(conn, now=now, actor=user, action=ADDED, stall_id=found.stall_id, account_id=found.account_id,
                  source=source, detail={"note_id": note_id, "chars": len(text)})
        noted = Noted(note_id=note_id, account_id=found.account_id, stall_id=found.stall_id, author=user,
                      text=text, at=now)
        if notify is not None:
            notify(conn, noted)
    return Added(noted, created=True, account_name=found.account_name)


def _noted(row) -> Noted:
    return Noted(note_id=row.id, account_id=row.account_id, stall_id=row.stall_id, author=row.author,
                 text=row.text, at=aware(row.created_at))


# --- reading ------------------------------------------------------------------------------------

def latest(conn: Connection, account_id: str, limit: int = 5) -> list[NoteLine]:
    """The account's latest notes, newest first (/journey)."""
    rows = conn.execute(select(NOTE.c.author, NOTE.c.text, NOTE.c.created_at)
                        .where(NOTE.c.account_id == account_id)
                        .order_by(NOTE.c.created_at.desc(), NOTE.c.id.desc()).limit(limit))
    return [NoteLine(author=r.author, text=r.text, at=aware(r.created_at)) for r in rows]


def latest_by_account(conn: Connection, account_ids: Iterable[str]) -> dict[str, NoteLine]:
    """Each account's latest note (the digest's rows), in one statement."""
    ids = sorted(set(account_ids))
    if not ids:
        return {}
    rank = func.row_number().over(partition_by=NOTE.c.account_id,
                                  order_by=(NOTE.c.created_at.desc(), NOTE.c.id.desc())).label("rank")
    ranked = (select(NOTE.c.account_id, NOTE.c.author, NOTE.c.text, NOTE.c.created_at, rank)
              .where(NOTE.c.account_id.in_(ids)).subquery())
    return {r.account_id: NoteLine(author=r.author, text=r.text, at=aware(r.created_at))
            for r in conn.execute(select(ranked).where(ranked.c.rank == 1))}


def since(engine: Engine, start: datetime, *, batch: int = 500) -> Iterator[NoteRecord]:
    """Every note written at or after `start`, oldest first, read `batch` at a time (keyset
    paging: a long export holds no transaction open between batches)."""
    after: tuple[datetime, int] | None = None
    while True:
        stmt = select(NOTE).where(NOTE.c.created_at >= start)
        if after is not None:
            stmt = stmt.where((NOTE.c.created_at > after[0]) | ((NOTE.c.created_at == after[0]) & (NOTE.c.id > after[1])))
        with read_tx(engine) as conn:
            rows = conn.execute(stmt.order_by(NOTE.c.created_at, NOTE.c.id).limit(batch)).all()
        for r in rows:
            yield NoteRecord(id=r.id, account_id=r.account_id, stall_id=r.stall_id, author=r.author, text=r.text,
                             created_at=aware(r.created_at))
        if len(rows) < batch:
            return
        after = (rows[-1].created_at, rows[-1].id)
