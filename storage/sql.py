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


class FastMany:
    """A cached INSERT/UPDATE run as one DB-API executemany on SQLite, skipping SQLAlchemy's
    per-row parameter machinery (the hot ingest path spends most of its time there).

    Values are converted with the columns' own bind processors, so what is stored is exactly
    what SQLAlchemy would store; other dialects take the ordinary `conn.execute` path.
    """

    _cache: dict = {}

    def __init__(self, stmt, keys: tuple[str, ...], types: dict):
        self.stmt = stmt
        self.keys = keys
        self.types = types

    @classmethod
    def of(cls, conn: Connection, name: str, build, keys: tuple[str, ...], types: dict) -> "FastMany":
        """`build(conn)` makes the statement once per process and dialect; `keys` order the parameters."""
        key = (name, conn.dialect.name, keys)
        found = cls._cache.get(key)
        if found is None:
            found = cls._cache[key] = cls(build(conn), keys, types)
        return found

    def run(self, conn: Connection, rows: list[dict]) -> None:
        if not rows:
            return
        if conn.dialect.name != "sqlite":
            conn.execute(self.stmt, rows)
            return
        compiled, procs = self._compiled(conn)
        order = compiled.positiontup
        conv = [procs.get(k) for k in order]
        params = [tuple(v if (p is None or v is None) else p(v) for v, p in zip((r[k] for k in order), conv))
                  for r in rows]
        conn.exec_driver_sql(compiled.string, params)

    def _compiled(self, conn: Connection):
        key = ("compiled", id(self))
        found = self._cache.get(key)
        if found is None:
            if self.stmt.is_insert:  # only the given columns, not every column of the table
                compiled = self.stmt.compile(dialect=conn.dialect, column_keys=list(self.keys))
            else:
                compiled = self.stmt.compile(dialect=conn.dialect)
            procs = {}
            for name, type_ in self.types.items():
                proc = type_.dialect_impl(conn.dialect).bind_processor(conn.dialect)
                if proc is not None:
                    procs[name] = proc
            found = self._cache[key] = (compiled, procs)
        return found
