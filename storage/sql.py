"""Small dialect helpers so the hot paths stay one statement on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timezone
from operator import itemgetter

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
        self.run_params(conn, self.params(conn, rows))

    def params(self, conn: Connection, rows: list[dict]) -> list:
        """What `run` passes the driver for `rows` (SQLite: tuples, converted with the bind
        processors; elsewhere the dicts themselves), so a caller can build them before it
        takes a write lock and hold the lock only for `run_params`."""
        if not rows or conn.dialect.name != "sqlite":
            return rows
        compiled, procs = self._compiled(conn)
        order = compiled.positiontup
        pick = itemgetter(*order) if len(order) > 1 else (lambda r, k=order[0]: (r[k],))
        convert = [(i, procs[k]) for i, k in enumerate(order) if k in procs]
        if not convert:
            return [pick(r) for r in rows]
        params = []
        for r in rows:
            values = list(pick(r))
            for i, proc in convert:
                if values[i] is not None:
                    values[i] = proc(values[i])
            params.append(tuple(values))
        return params

    def run_params(self, conn: Connection, params: list) -> int:
        """Run with what `params` built (on the same dialect); returns the number of rows
        changed (-1 when the driver cannot tell)."""
        if not params:
            return 0
        if conn.dialect.name != "sqlite":
            return conn.execute(self.stmt, params).rowcount
        return driver_many(conn, self._compiled(conn)[0].string, params)

    def sqlite_params(self, conn: Connection) -> tuple[dict, bool]:
        """For callers that build the DB-API parameters themselves (the hottest inserts): the
        bind processors by column name, and whether the statement takes its parameters in
        `keys` order (else `run_tuples` cannot be used)."""
        compiled, procs = self._compiled(conn)
        return procs, tuple(compiled.positiontup) == tuple(self.keys)

    def run_tuples(self, conn: Connection, params: list[tuple]) -> int:
        """SQLite only: run with rows already converted (bind processors applied) and in
        `keys` order, as `sqlite_params` allows; saves building a dict per row to pick from.
        Returns the number of rows changed (-1 when the driver cannot tell)."""
        if not params:
            return 0
        return driver_many(conn, self._compiled(conn)[0].string, params)

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
                proc = _sqlite_datetime_bind(type_) or type_.dialect_impl(conn.dialect).bind_processor(conn.dialect)
                proc = _sqlite_date_bind(type_, proc)
                if proc is not None:
                    procs[name] = proc
            found = self._cache[key] = (compiled, procs)
        return found


_UTC = timezone.utc


def _sqlite_datetime_bind(type_):
    """SQLAlchemy's own SQLite DATETIME format ("YYYY-MM-DD HH:MM:SS.ffffff", UTC), written
    by isoformat instead of SQLAlchemy's %-formatting: same text, a fraction of the cost."""
    from sqlalchemy import DateTime

    impl = getattr(type_, "impl", type_)
    if not isinstance(impl, DateTime):
        return None
    return sqlite_datetime_text


def _sqlite_date_bind(type_, proc):
    """SQLAlchemy's SQLite DATE format is "YYYY-MM-DD" (a 4-digit year), which is what
    date.isoformat writes, at a fraction of the cost; anything but a plain date (a datetime
    passed for a date column) keeps SQLAlchemy's own processor."""
    from datetime import date

    from sqlalchemy import Date, DateTime

    impl = getattr(type_, "impl", type_)
    if proc is None or not isinstance(impl, Date) or isinstance(impl, DateTime):
        return proc

    def process(value, iso=date.isoformat):
        return iso(value) if type(value) is date else proc(value)

    return process


_type_converters: dict = {}  # column type -> its SQLite converter (_sqlite_converter)
_last_datetime: tuple = (None, "")  # the last value converted and its text (one tuple: swapped at once)


def sqlite_datetime_text(value) -> str:
    """An aware datetime as SQLAlchemy stores it on SQLite: "YYYY-MM-DD HH:MM:SS.ffffff", UTC.
    The same value given again in a row (`now` as each row's updated_at) is converted once;
    no dict of seen values: hashing an aware datetime costs half as much as formatting it,
    and a scan's stall and review times are nearly all different."""
    global _last_datetime
    last = _last_datetime
    if value is last[0]:
        return last[1]
    tz = value.tzinfo
    if tz is _UTC:  # every parsed time is UTC already: cut the "+00:00" off instead of converting
        text = value.isoformat(" ", "microseconds")[:-6]
    elif tz is None:
        raise ValueError("datetimes must be timezone-aware")
    else:
        text = value.astimezone(_UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    _last_datetime = (value, text)
    return text


def _sqlite_converter(type_):
    """How SQLite's stored text becomes the Python value SQLAlchemy would return (worked out
    once per column type: the hot look-ups ask for every column of every call)."""
    found = _type_converters.get(id(type_))
    if found is None or found[0] is not type_:
        found = _type_converters[id(type_)] = (type_, _make_sqlite_converter(type_))
    return found[1]


def _make_sqlite_converter(type_):
    from datetime import date, datetime, timezone

    import orjson
    from sqlalchemy import JSON, Date, DateTime

    impl = getattr(type_, "impl", type_)
    if isinstance(impl, DateTime):
        utc = timezone.utc
        parse = datetime.fromisoformat

        def to_datetime(v):
            # SQLAlchemy's text has no offset: parsed with "+00:00" it is the same aware UTC
            # value (tzinfo is timezone.utc), several times faster than .replace(tzinfo=...).
            try:
                return parse(v + "+00:00")
            except ValueError:
                return parse(v).replace(tzinfo=utc)

        return to_datetime
    if isinstance(impl, Date):
        return date.fromisoformat
    if isinstance(impl, JSON):
        return orjson.loads
    return None


def stream_rows(conn: Connection, stmt, batch: int = 5000, keep_text: tuple[str, ...] = ()):
    """Yield lists of rows (named tuples) of a SELECT, `batch` at a time.

    On SQLite the statement runs through the DB-API cursor and only the columns that need it
    are converted, with the same results SQLAlchemy's type machinery would give at a fraction
    of its per-value cost (the scan reads ~10 values for each of 100,000 accounts). The
    columns named in `keep_text` stay as SQLite stores them (a datetime's text), for a
    caller that only writes them back as they were.
    """
    from collections import namedtuple

    if conn.dialect.name != "sqlite":
        result = conn.execution_options(yield_per=batch).execute(stmt)
        for part in result.partitions(batch):
            yield list(part)
        return
    columns = list(stmt.selected_columns)
    Row = namedtuple("Row", [c.key for c in columns])
    converters = [(i, conv) for i, c in enumerate(columns)
                  if c.key not in keep_text and (conv := _sqlite_converter(c.type)) is not None]
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.construct_params()
    args = tuple(params[name] for name in compiled.positiontup)
    processors = compiled._bind_processors
    args = tuple(processors[name](v) if name in processors and v is not None else v
                 for name, v in zip(compiled.positiontup, args))
    cursor = conn.exec_driver_sql(compiled.string, args)
    make = Row._make
    while True:
        raw = cursor.fetchmany(batch)
        if not raw:
            return
        yield _convert(raw, converters, make)


def driver_rows(conn: Connection, sql: str, params: tuple = ()) -> list[tuple]:
    """SQLite: the rows of a SELECT as the DB-API returns them (plain tuples), run on the
    connection's own DB-API connection: no SQLAlchemy result or Row objects (the ingest
    look-ups read every account of a batch). A database error is raised as SQLAlchemy's
    exception class, as `conn.exec_driver_sql` would (storage.writer tells a transient
    failure from bad data by those classes). Outside a transaction (nothing to join), or
    elsewhere than SQLite, it is an ordinary `exec_driver_sql`."""
    if conn.dialect.name != "sqlite" or not conn.in_transaction():
        return [tuple(r) for r in conn.exec_driver_sql(sql, params)]
    try:
        return conn.connection.dbapi_connection.execute(sql, params).fetchall()
    except conn.dialect.loaded_dbapi.Error as exc:
        raise _wrapped(conn, sql, exc) from exc


def driver_many(conn: Connection, sql: str, params: list[tuple]) -> int:
    """SQLite: one DB-API executemany on the connection itself (see driver_rows); returns the
    number of rows changed (-1 when the driver cannot tell)."""
    if conn.dialect.name != "sqlite" or not conn.in_transaction():
        return conn.exec_driver_sql(sql, params).rowcount
    try:
        return conn.connection.dbapi_connection.executemany(sql, params).rowcount
    except conn.dialect.loaded_dbapi.Error as exc:
        raise _wrapped(conn, sql, exc) from exc


def _wrapped(conn: Connection, sql: str, exc: Exception) -> Exception:
    """A DB-API error as the SQLAlchemy exception `exec_driver_sql` raises for it (the same
    class: OperationalError, IntegrityError, ...; the parameters never in its text). Other
    exceptions (an OverflowError binding a huge int) pass through unwrapped, as there."""
    from sqlalchemy.exc import DBAPIError

    return DBAPIError.instance(sql, None, exc, conn.dialect.loaded_dbapi.Error, hide_parameters=True,
                               dialect=conn.dialect)


_row_types: dict = {}


def select_in(conn: Connection, table: Table, columns: tuple[str, ...], key: str, values: list,
              where: str = "", raw: bool = False, keep_text: tuple[str, ...] = ()) -> list:
    """Rows of `table` whose `key` is in `values` (named tuples of `columns`).

    The hot-path look-up of ingest and scan. On SQLite the SQL text is built directly (an
    IN list of a new length would otherwise cost a fresh statement compile every call) and
    only the columns that need it are converted; elsewhere it is an ordinary SELECT.
    `where` is an extra, constant SQL condition (no parameters). `raw` skips the conversion
    on SQLite (datetimes stay "YYYY-MM-DD HH:MM:SS.ffffff" UTC text) for callers that only
    compare them; `keep_text` does so for the columns it names.
    """
    from collections import namedtuple

    if not values:
        return []
    Row = _row_types.get(columns)
    if Row is None:
        Row = _row_types[columns] = namedtuple("Row", columns)
    cols = [table.c[c] for c in columns]
    out: list = []
    if conn.dialect.name != "sqlite":
        from sqlalchemy import select, text

        for chunk in chunks(list(values), 1000):
            stmt = select(*cols).where(table.c[key].in_(chunk))
            if where:
                stmt = stmt.where(text(where))
            out.extend(Row._make(r) for r in conn.execute(stmt))
        return out
    converters = [] if raw else _converters(table, columns, keep_text)
    head = f'SELECT {", ".join(columns)} FROM "{table.name}" WHERE {key} IN '
    tail = f" AND ({where})" if where else ""
    for chunk in chunks(list(values), 900):
        sql = head + "(" + ",".join("?" * len(chunk)) + ")" + tail
        out.extend(_convert(driver_rows(conn, sql, tuple(chunk)), converters, Row._make))
    return out


_converters_of: dict = {}


def _converters(table: Table, columns: tuple[str, ...], keep_text: tuple[str, ...] = ()) -> list:
    """select_in's column converters, worked out once per table and columns (hot path)."""
    key = (table.name, columns, keep_text)
    found = _converters_of.get(key)
    if found is None:
        found = _converters_of[key] = [(i, conv) for i, name in enumerate(columns) if name not in keep_text
                                       and (conv := _sqlite_converter(table.c[name].type)) is not None]
    return found


def _convert(raw: list, converters: list, make) -> list:
    """Apply the column converters to the non-NULL values of DB-API rows (NULLs are common)."""
    if not converters:
        return [make(r) for r in raw]
    out = []
    for r in raw:
        r = list(r)
        for i, conv in converters:
            if r[i] is not None:
                r[i] = conv(r[i])
        out.append(make(r))
    return out


class FastSelect:
    """A SELECT built once, with one expanding IN parameter (`in_name`), run per call with new
    values. On SQLite it is compiled once and run as plain DB-API (binds with the columns'
    own bind processors, results converted as `select_in` does: the same values SQLAlchemy
    returns); elsewhere the cached statement goes through `conn.execute`. Rows are tuples
    in the statement's column order, `in_values` split in chunks of 900."""

    _cache: dict = {}

    def __init__(self, stmt, in_name: str):
        self.stmt = stmt
        self.in_name = in_name
        self._compiled: dict = {}

    @classmethod
    def of(cls, name: str, build, in_name: str) -> "FastSelect":
        """`build()` makes the statement once per process."""
        found = cls._cache.get(name)
        if found is None:
            found = cls._cache[name] = cls(build(), in_name)
        return found

    def rows(self, conn: Connection, in_values: list, params: dict) -> list:
        out: list = []
        if not in_values:
            return out
        if conn.dialect.name != "sqlite":
            for chunk in chunks(list(in_values), 900):
                out.extend(conn.execute(self.stmt, {**params, self.in_name: chunk}))
            return out
        sql, order, static, procs, converters = self._sqlite(conn)
        token = f"__[POSTCOMPILE_{self.in_name}]"
        for chunk in chunks(list(in_values), 900):
            args: list = []
            for name in order:
                if name == self.in_name:
                    args.extend(chunk)
                    continue
                value = params[name] if name in params else static[name]
                proc = procs.get(name)
                args.append(proc(value) if proc is not None and value is not None else value)
            text_ = sql.replace(token, ", ".join("?" * len(chunk)))
            out.extend(_convert(driver_rows(conn, text_, tuple(args)), converters, tuple))
        return out

    def _sqlite(self, conn: Connection):
        found = self._compiled.get("sqlite")
        if found is None:
            compiled = self.stmt.compile(dialect=conn.dialect)
            order = tuple(compiled.positiontup)
            static = {name: compiled.binds[name].effective_value for name in order
                      if name != self.in_name and not compiled.binds[name].required}
            procs = {name: p for name, p in compiled._bind_processors.items() if name != self.in_name}
            columns = list(self.stmt.selected_columns)
            converters = [(i, conv) for i, c in enumerate(columns) if (conv := _sqlite_converter(c.type)) is not None]
            found = self._compiled["sqlite"] = (compiled.string, order, static, procs, converters)
        return found
