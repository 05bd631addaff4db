"""storage.sql's DB-API fast path (driver_rows / driver_many) raises the SQLAlchemy exception
classes `exec_driver_sql` raises: storage.writer tells a transient failure (OperationalError,
InterfaceError: the request fails and is retried) from bad data (the batch is stored message by
message) by those classes."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from storage.db import make_engine, write_tx
from storage.sql import driver_many, driver_rows


@pytest.fixture()
def engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'driver.db'}")
    with write_tx(engine) as conn:
        conn.exec_driver_sql("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
    yield engine
    engine.dispose()


def test_rows_and_changes_as_the_driver_gives_them(engine):
    with write_tx(engine) as conn:
        assert driver_many(conn, "INSERT INTO t (k, v) VALUES (?, ?)", [("a", 1), ("b", 2)]) == 2
        assert driver_many(conn, "INSERT INTO t (k, v) VALUES (?, ?) ON CONFLICT DO NOTHING", [("a", 9)]) == 0
        assert driver_rows(conn, "SELECT k, v FROM t WHERE k IN (?, ?) ORDER BY k", ("a", "b")) == [("a", 1), ("b", 2)]
    with engine.connect() as conn:  # outside a transaction: the ordinary path, same rows
        assert driver_rows(conn, "SELECT k, v FROM t ORDER BY k") == [("a", 1), ("b", 2)]


def test_a_constraint_violation_is_sqlalchemys_integrity_error(engine):
    with pytest.raises(IntegrityError) as caught, write_tx(engine) as conn:
        driver_many(conn, "INSERT INTO t (k, v) VALUES (?, ?)", [("a", 1), ("a", 2)])
    assert "[parameters" not in str(caught.value)  # customer data never in the message
    with engine.connect() as conn:  # the transaction was rolled back
        assert driver_rows(conn, "SELECT count(*) FROM t") == [(0,)]


def test_a_database_failure_is_sqlalchemys_operational_error(engine):
    with pytest.raises(OperationalError), write_tx(engine) as conn:
        driver_rows(conn, "SELECT * FROM no_such_table WHERE k = ?", ("secret",))
    with pytest.raises(OperationalError), write_tx(engine) as conn:
        driver_many(conn, "INSERT INTO no_such_table (k) VALUES (?)", [("secret",)])
