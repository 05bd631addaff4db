"""The scheduler's advisory lock is per schema (bot.leader, fixed for issue 6): two
installations, or two test runs, sharing one PostgreSQL database elect a leader each."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from bot.leader import ADVISORY_KEY, Leader, advisory_key
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
