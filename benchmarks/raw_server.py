"""The raw-stdlib floor of the ingest benchmark: the same server stack as Stallwatch's (uvicorn,
one worker, a Starlette route, the insert in a worker thread) but the JSON parsed with the
stdlib `json` module and the rows inserted with one raw `sqlite3` executemany, in one
transaction per request, into a table with the columns and indexes of our `event` table
(unique (source, message_id), the partial milestone index) in WAL mode with our pragmas and
our checkpointing (a thread beside the writer, as storage/db.py's _Checkpointer: SQLite's
automatic checkpoint inside a commit would make this floor slower than our own server).

No auth, no validation, no dedup answer, no accounts, no counters: the least a server can do
to store a batch durably on this stack. Stallwatch's ratio to it is the cost of everything else.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from datetime import datetime, timezone

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

PRODUCT_KINDS = frozenset({"track", "page", "screen"})
SCHEMA = """
CREATE TABLE IF NOT EXISTS event (
    id INTEGER PRIMARY KEY,
    source VARCHAR(20) NOT NULL,
    message_id VARCHAR(255) NOT NULL,
    kind VARCHAR(20) NOT NULL,
    name VARCHAR(200),
    account_id VARCHAR(255),
    contact_id VARCHAR(255),
    occurred_at DATETIME NOT NULL,
    received_at DATETIME NOT NULL,
    milestone BOOLEAN NOT NULL,
    properties JSON NOT NULL,
    CONSTRAINT uq_event_source_message UNIQUE (source, message_id)
);
CREATE INDEX IF NOT EXISTS ix_event_account_milestone ON event (account_id, occurred_at) WHERE milestone;
"""
INSERT = ("INSERT INTO event (source, message_id, kind, name, account_id, contact_id, occurred_at, received_at, "
          "milestone, properties) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")

path = os.environ.get("DATABASE_URL", "sqlite:///./raw.db").removeprefix("sqlite:///")
db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=30000", "temp_store=MEMORY",
               "cache_size=-65536", "wal_autocheckpoint=0"):
    db.execute(f"PRAGMA {pragma}")
db.executescript(SCHEMA)
lock = threading.Lock()


def checkpoint() -> None:
    conn = sqlite3.connect(path, timeout=0.05, check_same_thread=False)
    while True:
        time.sleep(1.0)
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            if os.path.getsize(path + "-wal") > 64 * 1024 * 1024:
                conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
        except (sqlite3.Error, OSError):
            pass


threading.Thread(target=checkpoint, name="checkpoint", daemon=True).start()


def insert(rows: list[tuple]) -> None:
    with lock:
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(INSERT, rows)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")


def parse(body: bytes) -> list[tuple]:
    now = datetime.now(timezone.utc).replace(tzinfo=None).isoformat(" ", "microseconds")
    return [
        ("segment", m.get("messageId"), m.get("type"), m.get("event"), (m.get("context") or {}).get("groupId"),
         m.get("userId"), m.get("timestamp"), now, m.get("type") not in PRODUCT_KINDS,
         json.dumps(m.get("properties") or m.get("traits") or {}))
        for m in json.loads(body)["batch"]
    ]


async def batch(request) -> Response:
    body = await request.body()
    await run_in_threadpool(lambda: insert(parse(body)))
    return JSONResponse({"success": True})


async def healthz(request) -> Response:
    return JSONResponse({"status": "ok"})


app = Starlette(routes=[Route("/v1/batch", batch, methods=["POST"]), Route("/healthz", healthz)])
