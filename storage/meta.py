"""Small process-wide facts kept in the database (e.g. the rules of the last full scan)."""

from __future__ import annotations

from sqlalchemy import Engine, select

from storage.db import write_tx
from storage.models import Meta
from storage.sql import upsert

META = Meta.__table__


def get_meta(engine: Engine, key: str) -> str | None:
    with engine.connect() as conn:
        return conn.execute(select(META.c.value).where(META.c.key == key)).scalar()


def set_meta(engine: Engine, key: str, value: str) -> None:
    with write_tx(engine) as conn:
        stmt = upsert(conn, META)
        conn.execute(stmt.on_conflict_do_update(index_elements=["key"], set_={"value": stmt.excluded.value}),
                     {"key": key, "value": value})
