"""Small dialect helpers so the hot paths stay one statement on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import Connection, Table, func
from sqlalchemy.dialects import postgresql, sqlite


def upsert(conn: Connection, table: Table):
    """The dialect's INSERT supporting ON CONFLICT (SQLite and PostgreSQL share the syntax)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def insert_ignore(conn: Connection, table: Table, *index_elements: str):
    return upsert(conn, table).on_conflict_do_nothing(index_elements=list(index_elements) or None)


def least(conn: Connection, *args):
    return func.least(*args) if conn.dialect.name == "postgresql" else func.min(*args)


def greatest(conn: Connection, *args):
    return func.greatest(*args) if conn.dialect.name == "postgresql" else func.max(*args)


def for_update(conn: Connection, stmt):
    """Row locks where the database has them; SQLite's BEGIN IMMEDIATE already serializes writers."""
    return stmt.with_for_update() if conn.dialect.name == "postgresql" else stmt


def chunks(items: list, size: int = 500):
    for start in range(0, len(items), size):
        yield items[start:start + size]
