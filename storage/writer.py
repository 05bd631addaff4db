"""Group commit for ingest: one writer thread stores the batches of concurrent requests
together, in one transaction, and answers each request when its batch is committed.

SQLite allows one writer at a time and a commit costs the same whether it carries one batch
or eight, so under concurrent load this multiplies throughput; with a single client it adds
nothing but a queue hop. If a grouped transaction fails, each batch is retried alone, so one
bad batch never fails the others.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from rules.config import Rules
from storage.ingest import StoreResult, store_batches

if TYPE_CHECKING:
    from bot.ingest.records import IncomingEvent

log = logging.getLogger(__name__)
MAX_GROUP = 16
MAX_GROUP_EVENTS = 5000


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
        while True:
            item = self._queue.get()
            if item is None:
                return
            group = [item]
            size = len(item[0])
            while len(group) < MAX_GROUP and size < MAX_GROUP_EVENTS:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                group.append(nxt)
                size += len(nxt[0])
            self._store(group)

    def _store(self, group: list) -> None:
        now = max(now for _, now, _ in group)
        try:
            results = store_batches(self.engine, [events for events, _, _ in group], self.rules, now)
        except Exception:
            if len(group) == 1:
                _, _, future = group[0]
                log.exception("storing a batch failed")
                future.set_exception(_current_exception())
                return
            for item in group:  # isolate the failing batch
                self._store([item])
            return
        for (_, _, future), result in zip(group, results):
            future.set_result(result)


def _current_exception() -> BaseException:
    import sys

    return sys.exc_info()[1]
