"""Exactly one scheduler leader across processes, elected through the database.

PostgreSQL: a session-level advisory lock held on a dedicated connection; if the leader dies,
its session ends, the lock is freed and a standby takes over at its next attempt. The lock
key is per schema (`advisory_key`): advisory locks are scoped to a database, and installations
(or test runs) that share one database in separate schemas must not elect one leader together.
SQLite (one machine): a lease row with an expiry that the leader keeps renewing. A lease
whose holder is a process of this machine that no longer exists (killed, then restarted by
its supervisor) is taken over at once instead of after LEASE_TTL: its holder id names the
machine (bot.claims.holder_is_gone; the lease row is bot.claims.take_named, the same claim
mechanism as the outbox senders').
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timedelta
from typing import Callable

from sqlalchemy import Engine

from bot.claims import Lease, default_worker_id, take_named
from storage.db import utcnow, write_tx
from storage.models import Lease as LeaseRow

log = logging.getLogger(__name__)
LEASE = LeaseRow.__table__
ADVISORY_KEY = 727300002
LEASE_TTL = timedelta(seconds=45)


def advisory_key(schema: str | None) -> int:
    """The advisory lock key of the scheduler leader for the tables in `schema`.

    `public` (the usual deployment) keeps the historical key, so processes of an older
    version and of this one still elect a single leader during a rolling upgrade; any other
    schema gets its own signed 64-bit key.
    """
    if not schema or schema == "public":
        return ADVISORY_KEY
    digest = hashlib.sha1(f"stallwatch-scheduler:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class Leader:
    def __init__(self, engine: Engine, name: str = "scheduler", *, lease_ttl: timedelta = LEASE_TTL,
                 clock: Callable[[], datetime] = utcnow):
        self.engine = engine
        self.name = name
        # SQLite; the TTL a parameter so that tests see a lease run out in milliseconds. A
        # holder known dead is replaced at once: it renews every few seconds when alive.
        self.lease = Lease(lease_ttl, dead_holder_grace=timedelta(0))
        self.clock = clock
        self.holder = default_worker_id()  # host:pid:random@machine
        self.is_leader = False
        self._conn = None
        self._key: int | None = None  # PostgreSQL: advisory_key of the connection's schema

    def try_acquire(self) -> bool:
        """Take or keep leadership; cheap enough to call every few seconds."""
        try:
            held = self._try_pg() if self.engine.dialect.name == "postgresql" else self._try_lease()
        except Exception:
            log.exception("leader election failed; acting as standby")
            self._drop_pg()
            held = False
        if held != self.is_leader:
            log.info("scheduler %s: %s", self.holder, "now the leader" if held else "standby")
        self.is_leader = held
        return held

    def release(self) -> None:
        if self.engine.dialect.name == "postgresql":
            if self._conn is not None:
                try:
                    # Unlock first: closing the session frees the lock only once the server
                    # has noticed, so a standby trying right away could still find it taken.
                    self._conn.exec_driver_sql(f"SELECT pg_advisory_unlock({self._key})")
                    self._conn.commit()
                except Exception:
                    pass
            self._drop_pg()
        elif self.is_leader:
            with write_tx(self.engine) as conn:
                conn.execute(LEASE.delete().where(LEASE.c.name == self.name, LEASE.c.holder == self.holder))
        self.is_leader = False

    def _try_pg(self) -> bool:
        if self._conn is not None:
            self._conn.exec_driver_sql("SELECT 1")  # still connected means still holding the lock
            return True
        conn = self.engine.connect()
        try:
            if self._key is None:
                self._key = advisory_key(conn.exec_driver_sql("SELECT current_schema()").scalar())
            got = conn.exec_driver_sql(f"SELECT pg_try_advisory_lock({self._key})").scalar()
            conn.commit()
        except Exception:
            conn.close()
            raise
        if got:
            self._conn = conn
            return True
        conn.close()
        return False

    def _drop_pg(self) -> None:
        if self._conn is not None:
            try:
                # End the session, not just return it to the pool (where it would keep
                # holding the lock): the lock goes with it.
                self._conn.invalidate()
                self._conn.close()
            except Exception:
                pass
            self._conn = None

    def _try_lease(self) -> bool:
        with write_tx(self.engine) as conn:
            return take_named(conn, LEASE, self.name, self.holder, self.clock(), self.lease)
