"""The baseline for the ingest benchmark: the same stack (uvicorn, Starlette, orjson,
SQLAlchemy on SQLite in WAL mode) doing only the minimum: parse the JSON body and insert the
rows with one executemany. No auth, no validation, no dedup answer, no journeys."""

from __future__ import annotations

import os
from datetime import datetime, timezone

import orjson
from sqlalchemy import JSON, Column, DateTime, Integer, MetaData, String, Table
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from storage.db import make_engine, write_tx

metadata = MetaData()
events = Table(
    "bare_event", metadata,
    Column("id", Integer, primary_key=True),
    Column("message_id", String(255)),
    Column("type", String(20)),
    Column("name", String(200)),
    Column("user_id", String(255)),
    Column("account_id", String(255)),
    Column("timestamp", String(40)),
    Column("received_at", DateTime),
    Column("properties", JSON),
)
engine = make_engine(os.environ.get("DATABASE_URL", "sqlite:///./bare.db"))
metadata.create_all(engine)


def insert(rows: list[dict]) -> None:
    with write_tx(engine) as conn:
        conn.execute(events.insert(), rows)


async def batch(request) -> Response:
    payload = orjson.loads(await request.body())
    now = datetime.now(timezone.utc)
    rows = [
        {"message_id": m.get("messageId"), "type": m.get("type"), "name": m.get("event"), "user_id": m.get("userId"),
         "account_id": (m.get("context") or {}).get("groupId"), "timestamp": m.get("timestamp"), "received_at": now,
         "properties": m.get("properties") or {}}
        for m in payload["batch"]
    ]
    await run_in_threadpool(insert, rows)
    return JSONResponse({"success": True})


async def healthz(request) -> Response:
    return JSONResponse({"status": "ok"})


app = Starlette(routes=[Route("/v1/batch", batch, methods=["POST"]), Route("/healthz", healthz)])
