"""The database engine: SQLite (WAL, busy timeout) by default, PostgreSQL through DATABASE_URL."""

from __future__ import annotations

import sqlite3
import threading
import time
import weakref
from pathlib import Path
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone
from typing import Iterator

import orjson
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url

DEFAULT_URL = "sqlite:///./stallwatch.db"


def utcnow() -> datetime:
    """Aware UTC now: the one clock the process reads (rules/ never does)."""
    return datetime.now(timezone.utc)


def _json_dumps(value) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def is_sqlite(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "sqlite"


def _as_tuple(value) -> tuple:
    """A URL query value: absent, one string, or a tuple of them (given several times)."""
    return () if value is None else (value,) if isinstance(value, str) else tuple(value)


def make_engine(url: str | None = None, *, pool_size: int = 10, scratch: bool = False,
                checkpoints: bool = True) -> Engine:
    """The engine of `url`. `scratch` (SQLite only: a throw-away database, the backtest's):
    nothing needs to survive a crash, so commits are not synced and the WAL is checkpointed
    by the committing connection (SQLite's default) rather than by a background thread.
    `checkpoints=False` (SQLite): no background checkpoint thread of its own, for a second
    engine on a file that another engine of the process checkpoints (a split scan's)."""
    url = url or DEFAULT_URL
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(
            url,
            hide_parameters=True,  # SQL errors in the logs must never carry customer text
            connect_args={"check_same_thread": False, "timeout": 30},
            json_serializer=_json_dumps,
            json_deserializer=orjson.loads,
        )
        _configure_sqlite(engine, scratch=scratch)
        if parsed.database and parsed.database != ":memory:" and not scratch and checkpoints:
            _Checkpointer.start(engine, parsed.database)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in ("", "psycopg2"):
        # The contract's URL is postgresql+psycopg://; accept a plain postgresql:// too.
        parsed = parsed.set(drivername="postgresql+psycopg")
    return create_engine(
        parsed,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        hide_parameters=True,
        # No JIT: our queries are short index look-ups, and after a large write (a full scan
        # rewrites every account) stale statistics made the planner compile the scheduled
        # scan's query for 1.2 s of a 2.8 s run (benchmarks/scale.py, 1,000,000 accounts).
        # (Added to the URL's own `options`, such as a search_path: connect_args replaces them.)
        connect_args={"options": " ".join([*_as_tuple(parsed.query.get("options")), "-c jit=off"])},
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
    )


def _configure_sqlite(engine: Engine, scratch: bool = False) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # Let SQLAlchemy, not pysqlite, emit BEGIN, so writers can take the lock up front.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL mode
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA temp_store=MEMORY")
        cur.execute("PRAGMA cache_size=-65536")
        # Checkpoints run in a background thread (see _Checkpointer), not in the committing
        # writer: copying WAL pages back and syncing the file is most of a commit's cost.
        cur.execute("PRAGMA wal_autocheckpoint=0")
        cur.execute("PRAGMA journal_size_limit=67108864")  # shrink the WAL file after a restart
        if scratch:
            cur.execute("PRAGMA synchronous=OFF")
            cur.execute("PRAGMA wal_autocheckpoint=1000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # A write transaction takes the write lock at BEGIN: upgrading a read lock later can
        # fail with SQLITE_BUSY without waiting for the busy timeout.
        sql = "BEGIN IMMEDIATE" if conn.get_execution_options().get("sqlite_immediate") else "BEGIN"
        # On the DB-API connection itself: the same statement as conn.exec_driver_sql, without
        # SQLAlchemy's per-execution work (one BEGIN per transaction adds up); errors as its.
        try:
            conn.connection.driver_connection.execute(sql).close()
        except sqlite3.Error as exc:
            from sqlalchemy.exc import DBAPIError

            raise DBAPIError.instance(sql, (), exc, sqlite3.Error, hide_parameters=True, dialect=conn.dialect) from exc


def lock_key(conn: Connection, space: int, key: str) -> None:
    """Serialize the write transactions that name `key` (in the lock space `space`, a 32-bit
    int per purpose) until commit: a PostgreSQL transaction-level advisory lock, per schema.
    SQLite's writers are serial already (write_tx takes the write lock at BEGIN)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:space, hashtext(current_schema() || ':' || :key))"),
                     {"space": space, "key": key})


class _Checkpointer(threading.Thread):
    """Backfills the SQLite WAL into the database file every second, beside the writers.

    A PASSIVE checkpoint never blocks a writer and, running in C without the GIL, takes the
    other core. Under sustained writes it may never catch up completely, so once the WAL
    passes RESTART_BYTES a RESTART checkpoint (which waits for the current writer, then
    holds writers off while it copies what PASSIVE left) lets the next commit start the WAL
    file over. Only when PASSIVE left at most RESTART_LEFT_FRAMES: what it could not copy
    because of a long reader (a scan's snapshot) a RESTART cannot copy either while that
    reader lasts, and once the reader is gone it would copy all of it, and sync, with every
    writer held off (0.37 s at the end of a 100,000-account scan). The next second's PASSIVE
    copies it without blocking anyone. Stops when its engine is garbage-collected or the
    file is gone.
    """

    INTERVAL = 1.0
    RESTART_BYTES = 64 * 1024 * 1024
    RESTART_LEFT_FRAMES = 2048  # pages (8 MB at 4 KB): a short hold of the writers

    def __init__(self, engine: Engine, path: str):
        super().__init__(name="sqlite-checkpoint", daemon=True)
        self._engine = weakref.ref(engine)
        self._path = path

    @classmethod
    def start(cls, engine: Engine, path: str) -> None:
        super(cls, cls(engine, path)).start()

    def run(self) -> None:
        conn = None
        try:
            while True:
                time.sleep(self.INTERVAL)
                if self._engine() is None or not Path(self._path).exists():
                    return
                if conn is None:
                    # A short busy timeout: a RESTART checkpoint holds new writers off while it
                    # waits, so it must give up quickly when a long reader (a scan) is active.
                    conn = sqlite3.connect(self._path, timeout=0.05, check_same_thread=False)
                try:
                    _busy, logged, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    wal = Path(self._path + "-wal")
                    if (0 <= logged - copied <= self.RESTART_LEFT_FRAMES and wal.exists()
                            and wal.stat().st_size > self.RESTART_BYTES):
                        conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
                except sqlite3.Error:
                    pass  # busy or not yet a WAL database: next second
        finally:
            if conn is not None:
                conn.close()


_write_locks: dict[int, threading.Lock] = {}


def _writer_lock(engine: Engine):
    # SQLite has one writer at a time; queueing this process's writers on a lock is cheaper
    # and fairer than letting them poll SQLite's busy handler.
    if not is_sqlite(engine):
        return nullcontext()
    return _write_locks.setdefault(id(engine.pool), threading.Lock())


@contextmanager
def write_tx(engine: Engine) -> Iterator[Connection]:
    """A write transaction: BEGIN IMMEDIATE on SQLite, a plain transaction elsewhere."""
    with _writer_lock(engine), engine.connect() as conn:
        conn.execution_options(sqlite_immediate=True)
        with conn.begin():
            yield conn


@contextmanager
def read_tx(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn:
        with conn.begin():
            yield conn


# PostgreSQL's answers that mean "another transaction got in the way, run it again": a
# deadlock (one of the two is aborted) and a serialization failure.
CONFLICT_STATES = frozenset({"40P01", "40001"})


def is_conflict(exc: BaseException) -> bool:
    """Whether `exc` is a transaction conflict that a retry of the whole transaction resolves."""
    orig = getattr(exc, "orig", exc)
    return getattr(orig, "sqlstate", None) in CONFLICT_STATES


def retry_conflicts(run, *, attempts: int = 4, log=None, what: str = "a transaction"):
    """`run()` (one whole write transaction), run again when PostgreSQL aborts it as a deadlock
    or a serialization failure; other errors, and the last conflict, are raised."""
    for attempt in range(1, attempts + 1):
        try:
            return run()
        except Exception as exc:  # noqa: BLE001 - re-raised unless a conflict to retry
            if attempt == attempts or not is_conflict(exc):
                raise
            if log is not None:
                log.warning("%s conflicted with another (%s); retrying (%d)", what, type(getattr(exc, "orig", exc)).__name__,
                            attempt)
            time.sleep(0.02 * attempt)
