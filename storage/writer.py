"""Group commit for ingest: one writer thread stores the batches of concurrent requests
together, in one transaction, and answers each request when its batch is committed.

SQLite allows one writer at a time and a commit costs the same whether it carries one batch
or eight, so under concurrent load this multiplies throughput; with a single client it adds
nothing but a queue hop. If a grouped transaction fails, each batch is retried alone, so one
bad batch never fails the others; if a batch alone fails, its messages are stored one by one
and only the ones the database refuses are rejected (StoreResult.failed), so one bad message
never loses the good ones. A database that is down or busy still fails the request (the
client retries it later), rather than rejecting every message.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from concurrent.futures import Future
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError, TimeoutError

from rules.config import Rules
from storage.db import retry_conflicts
from storage.ingest import StoreResult, store_batches

if TYPE_CHECKING:
    from storage.records import IncomingEvent

log = logging.getLogger(__name__)
MAX_GROUP = 16
MAX_GROUP_EVENTS = 5000
GROUP_WAIT = 0.003  # seconds a group may wait for more batches under concurrent load (see _run)


class BatchWriter:
    def __init__(self, engine: Engine, rules: Rules):
        self.engine = engine
        self.rules = rules
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, events: list["IncomingEvent"], now: datetime) -> "Future[StoreResult]":
        future: Future[StoreResult] = Future()
        self._ensure_thread()
        self._queue.put((events, now, future))
        return future

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    def _ensure_thread(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="ingest-writer", daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        recent: collections.deque[int] = collections.deque([1], maxlen=32)  # sizes of the last groups
        while True:
            item = self._queue.get()
            if item is None:
                return
            group = [item]
            size = len(item[0])
            # Under concurrent load the other clients' batches are usually a parse away: wait up
            # to GROUP_WAIT for as many as the largest recent group, then take whatever else is
            # queued. A transaction costs about the same whatever it carries (an account seen in
            # four batches is read and written once, pages shared by them are written once), so
            # fuller groups cost less CPU per event. A lone client (recent groups of one) never waits.
            target, deadline = max(recent), time.monotonic() + GROUP_WAIT
            while len(group) < MAX_GROUP and size < MAX_GROUP_EVENTS:
                wait = deadline - time.monotonic() if len(group) < target else 0.0
                try:
                    nxt = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                group.append(nxt)
                size += len(nxt[0])
            recent.append(len(group))
            self._store(group)

    def _store(self, group: list) -> None:
        now = max(now for _, now, _ in group)
        try:
            # A deadlock with a concurrent writer or scan (PostgreSQL) is run again, whole.
            results = retry_conflicts(lambda: store_batches(self.engine, [events for events, _, _ in group],
                                                            self.rules, now), log=log, what="storing a batch")
        except Exception as exc:
            if len(group) > 1:
                for item in group:  # isolate the failing batch
                    self._store([item])
                return
            events, now, future = group[0]
            if _transient(exc):
                log.error("storing a batch of %d messages failed: %s", len(events), describe(exc))
                future.set_exception(exc)
                return
            try:
                future.set_result(self._one_by_one(events, now))
            except Exception as again:
                log.error("storing a batch of %d messages failed: %s", len(events), describe(again))
                future.set_exception(again)
            return
        for (_, _, future), result in zip(group, results):
            future.set_result(result)

    def _one_by_one(self, events: list["IncomingEvent"], now: datetime) -> StoreResult:
        """Store each message in its own transaction, in order (a group call stored first still
        links the user of a later track); reject the ones the database refuses. A transient
        failure (the database went away) is raised: the whole request fails and is retried."""
        total = StoreResult()
        for ev in events:
            try:
                [result] = store_batches(self.engine, [[ev]], self.rules, now)
            except Exception as exc:
                if _transient(exc):
                    raise
                # The reason names the error class only: a database's message can quote the data.
                log.error("message %d of a batch was refused by the database: %s", ev.position, describe(exc))
                total.failed.append((ev, f"the database refused this message ({describe(exc)})"))
                continue
            total.accepted += result.accepted
            total.duplicates += result.duplicates
            total.accounts |= result.accounts
            total.evaluate |= result.evaluate
            total.owners |= result.owners
            total.missing_properties += result.missing_properties
        return total


def _transient(exc: BaseException) -> bool:
    """A failure of the database itself (connection lost, lock timeout, pool exhausted), not
    of the data."""
    return isinstance(exc, (OperationalError, InterfaceError, DisconnectionError, TimeoutError))


def describe(exc: BaseException) -> str:
    """An error's class (and the driver's, for a database error), never its message: those
    quote SQL parameters or the offending data, i.e. customer text."""
    name = type(exc).__name__
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        name += f"/{type(exc.orig).__name__}"
    return name
