"""Two fixes to bot.leader for issue 6: the PostgreSQL advisory lock is per schema (two
installations, or two test runs, sharing one database elect a leader each), and on SQLite a
lease held by a killed process of this machine is taken over at once (a restarted server led
again only after the 45 s lease ran out: no scans, digests or escalations meanwhile)."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
from sqlalchemy import select, text, update

from bot.leader import ADVISORY_KEY, LEASE, Leader, advisory_key
from bot.claims import MACHINE
from storage.db import make_engine
from tests.proof.params import PG_URL


def test_keys_differ_per_schema_and_public_keeps_the_old_one():
    assert advisory_key("public") == advisory_key(None) == ADVISORY_KEY
    assert advisory_key("tenant_a") != advisory_key("tenant_b")
    assert advisory_key("tenant_a") == advisory_key("tenant_a")
    assert -2 ** 63 <= advisory_key("tenant_a") < 2 ** 63


@pytest.mark.skipif(not PG_URL, reason="needs PostgreSQL")
def test_one_leader_per_schema_on_one_database():
    admin = make_engine(PG_URL, pool_size=1)
    schemas = [f"lk_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    with admin.begin() as conn:
        for s in schemas:
            conn.execute(text(f'CREATE SCHEMA "{s}"'))
    sep = "&" if "?" in PG_URL else "?"
    engines = [make_engine(f"{PG_URL}{sep}options=-csearch_path%3D{s}") for s in schemas for _ in range(2)]
    leaders = [Leader(e) for e in engines]  # two processes on each schema
    try:
        got = [leader.try_acquire() for leader in leaders]
        assert got == [True, False, True, False]
    finally:
        for leader in leaders:
            leader.release()
        for e in engines:
            e.dispose()
        with admin.begin() as conn:
            for s in schemas:
                conn.execute(text(f'DROP SCHEMA "{s}" CASCADE'))
        admin.dispose()


def _dead_holder() -> str:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return f"host:{child.pid}:abcdef12@{MACHINE}"


@pytest.mark.skipif(MACHINE is None, reason="needs Linux /proc")
def test_a_lease_of_a_killed_process_is_taken_over_at_once(engine):
    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL uses a session lock: it goes with the session")
    a, b = Leader(engine), Leader(engine)
    try:
        assert a.try_acquire() and not b.try_acquire()
        with engine.begin() as conn:  # a was killed: its lease, still valid for 45 s, names a dead pid
            conn.execute(update(LEASE).values(holder=_dead_holder()))
        assert b.try_acquire() is True
        with engine.connect() as conn:
            assert conn.execute(select(LEASE.c.holder)).scalar() == b.holder
    finally:
        a.release()
        b.release()


def test_a_live_holders_lease_is_respected(engine):
    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL uses a session lock")
    a, b = Leader(engine), Leader(engine)
    try:
        assert a.try_acquire() and not b.try_acquire()
        with engine.begin() as conn:  # another machine's holder, or a live pid: wait for the TTL
            conn.execute(update(LEASE).values(holder="elsewhere:1:abcdef12@0123456789"))
        assert b.try_acquire() is False
    finally:
        a.release()
        b.release()
