"""Scheduler leader election (bot.leader): exactly one leader; a standby takes over."""

from __future__ import annotations

import time
from datetime import timedelta

from sqlalchemy import select, text, update

from bot.leader import LEASE, Leader
from bot.scheduler import Scheduler
from storage.db import make_engine, utcnow


def test_exactly_one_leads_and_the_other_takes_over_after_release(engine):
    a, b = Leader(engine), Leader(engine)
    try:
        assert a.try_acquire() is True
        assert b.try_acquire() is False
        assert a.try_acquire() is True  # keeping it is cheap and idempotent
        assert b.try_acquire() is False
        assert (a.is_leader, b.is_leader) == (True, False)

        a.release()
        assert a.is_leader is False
        assert b.try_acquire() is True
        assert a.try_acquire() is False
        assert (a.is_leader, b.is_leader) == (False, True)
    finally:
        a.release()
        b.release()


def test_leader_released_on_one_engine_is_free_for_another_process(db_url):
    # Two engines stand for two processes: each has its own connection pool.
    e1, e2 = make_engine(db_url), make_engine(db_url)
    a, b = Leader(e1), Leader(e2)
    try:
        assert a.try_acquire() is True
        assert b.try_acquire() is False
        a.release()
        assert b.try_acquire() is True
        assert a.try_acquire() is False
    finally:
        a.release()
        b.release()
        e1.dispose()
        e2.dispose()


def test_standby_takes_over_when_the_leader_dies(engine):
    a, b = Leader(engine), Leader(engine)
    try:
        assert a.try_acquire() is True
        assert b.try_acquire() is False
        if engine.dialect.name == "postgresql":
            # The leader's session ends (process killed, network gone): its lock goes with it.
            # (The timeout makes pg_terminate_backend wait until the backend is gone.)
            pid = a._conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            with engine.connect() as admin:
                assert admin.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid}).scalar() is True
        else:
            # The leader stopped renewing: its lease runs out.
            with engine.begin() as conn:
                conn.execute(update(LEASE).values(expires_at=utcnow() - timedelta(seconds=1)))
        assert b.try_acquire() is True
        # The old leader notices at its next attempt and stands by.
        assert a.try_acquire() is False
        assert (a.is_leader, b.is_leader) == (False, True)
        assert b.try_acquire() is True
    finally:
        a.release()
        b.release()


def test_a_lease_its_holder_stops_renewing_runs_out_and_a_standby_takes_over(engine):
    if engine.dialect.name == "postgresql":
        return  # advisory lock, no lease row
    ttl = timedelta(milliseconds=200)
    a, b = Leader(engine, lease_ttl=ttl), Leader(engine, lease_ttl=ttl)
    try:
        assert a.try_acquire() is True
        assert b.try_acquire() is False  # a's lease is still valid (a, alive, just stopped renewing)
        deadline = time.monotonic() + 10
        while not b.try_acquire():
            assert time.monotonic() < deadline, "the lease never ran out"
            time.sleep(0.05)
        assert a.try_acquire() is False
        assert (a.is_leader, b.is_leader) == (False, True)
    finally:
        a.release()
        b.release()


def test_lease_is_renewed_by_its_holder(engine):
    if engine.dialect.name == "postgresql":
        return  # advisory lock, no lease row
    a = Leader(engine)
    try:
        assert a.try_acquire()
        with engine.connect() as conn:
            first = conn.execute(select(LEASE.c.expires_at)).scalar_one()
        assert a.try_acquire()
        with engine.connect() as conn:
            holder, second = conn.execute(select(LEASE.c.holder, LEASE.c.expires_at)).one()
        assert holder == a.holder
        assert second >= first > utcnow()
        a.release()
        with engine.connect() as conn:
            assert conn.execute(select(LEASE)).all() == []
    finally:
        a.release()


def test_scheduler_status_follows_leadership(engine, settings, rules):
    s1, s2 = Scheduler(engine, settings, rules), Scheduler(engine, settings, rules)
    try:
        assert (s1.status(), s2.status()) == ("stopped", "stopped")
        s1.start()
        s2.start()  # each runs its first election right away, in its own thread
        deadline = time.monotonic() + 10
        while "leader" not in (s1.status(), s2.status()):
            assert time.monotonic() < deadline, "no scheduler became the leader"
            time.sleep(0.02)
        leader, standby = (s1, s2) if s1.status() == "leader" else (s2, s1)
        assert standby.leader.try_acquire() is False
        assert (leader.status(), standby.status()) == ("leader", "standby")

        leader.shutdown()
        assert leader.status() == "stopped"
        assert standby.leader.try_acquire() is True
        assert standby.status() == "leader"
    finally:
        s1.shutdown()
        s2.shutdown()
