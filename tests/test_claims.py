"""The claim/lease/backoff base (bot.claims) shared by the Slack outbox sender, the mail sender
and the scheduler leader, on the real tables (SQLite and PostgreSQL), with the clock passed in."""

from __future__ import annotations

import os
import threading
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from bot.claims import MACHINE, Lease, RowClaims, backoff, default_worker_id, holder_is_gone, take_named
from bot.slack.outbox import enqueue
from storage.db import read_tx, utcnow, write_tx
from storage.models import Lease as LeaseRow
from storage.models import SlackOutbox

OUTBOX = SlackOutbox.__table__
LEASES = LeaseRow.__table__
TTL = timedelta(minutes=5)


def dead_holder() -> str:
    """The worker id of a process of this machine that has exited (or of nobody, without /proc)."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return f"host:{pid}:abcdef12@{MACHINE}"


def one_row(engine, now) -> int:
    with write_tx(engine) as conn:
        enqueue(conn, key="k", method="chat.postMessage", payload={"channel": "C1", "text": "hi"}, now=now)
        return conn.execute(select(OUTBOX.c.id)).scalar_one()


def test_backoff_doubles_up_to_its_cap():
    assert [backoff(n, first=1, cap=300).total_seconds() for n in (1, 2, 3, 9, 10)] == [1, 2, 4, 256, 300]
    assert [backoff(n, first=30, cap=1800).total_seconds() for n in (1, 2, 6, 7)] == [30, 60, 960, 1800]


def test_a_lease_is_shorter_only_for_a_holder_known_dead():
    slack = Lease(TTL, dead_holder_grace=timedelta(seconds=15))
    mail = Lease(TTL)
    alive = default_worker_id()  # this process
    assert slack.stale_after(alive) == mail.stale_after(alive) == TTL
    assert slack.stale_after("elsewhere:1:abcdef12@0123456789") == TTL  # another machine: waited out
    assert mail.stale_after(dead_holder()) == TTL
    if MACHINE is not None:
        assert holder_is_gone(dead_holder())
        assert slack.stale_after(dead_holder()) == timedelta(seconds=15)
    assert slack.shortest == timedelta(seconds=15) and mail.shortest == TTL


def test_of_many_workers_exactly_one_claims_a_row(engine):
    now = utcnow()
    row_id = one_row(engine, now)
    won, barrier = [], threading.Barrier(8)

    def worker(n: int) -> None:
        claims = RowClaims(OUTBOX, f"w{n}", Lease(TTL))
        barrier.wait()
        with write_tx(engine) as conn:
            if claims.claim(conn, row_id, now):
                won.append(n)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    with read_tx(engine) as conn:
        row = conn.execute(select(OUTBOX)).one()
    assert (row.status, row.claimed_by) == ("sending", f"w{won[0]}")


def test_a_claim_is_taken_over_only_once_stale_and_only_by_one(engine):
    now = utcnow()
    row_id = one_row(engine, now)
    a, b, c = (RowClaims(OUTBOX, w, Lease(TTL)) for w in ("a", "b", "c"))
    with write_tx(engine) as conn:
        assert a.claim(conn, row_id, now)
        assert not b.claim(conn, row_id, now)  # not pending any more
        assert not b.take_over(conn, row_id, "sending", "a", now + TTL - timedelta(seconds=1))  # not stale yet
        assert conn.execute(update(OUTBOX).where(a.ours(row_id)).values(error="mine")).rowcount == 1
    later = now + TTL + timedelta(seconds=1)
    with write_tx(engine) as conn:
        assert b.take_over(conn, row_id, "sending", "a", later)
        assert not c.take_over(conn, row_id, "sending", "a", later)  # b's claim now, not a's
        assert conn.execute(update(OUTBOX).where(a.ours(row_id)).values(error="late")).rowcount == 0
        assert conn.execute(update(OUTBOX).where(b.ours(row_id)).values(error="b")).rowcount == 1


def test_a_row_not_due_is_not_claimed(engine):
    now = utcnow()
    with write_tx(engine) as conn:
        enqueue(conn, key="later", method="chat.postMessage", payload={"channel": "C1", "text": "hi"}, now=now,
                not_before=now + timedelta(hours=1))
        row_id = conn.execute(select(OUTBOX.c.id)).scalar_one()
        assert not RowClaims(OUTBOX, "a", Lease(TTL)).claim(conn, row_id, now)
        assert RowClaims(OUTBOX, "a", Lease(TTL)).claim(conn, row_id, now + timedelta(hours=1))


def test_a_named_lease_is_held_renewed_and_taken_when_run_out(engine):
    lease = Lease(timedelta(seconds=45), dead_holder_grace=timedelta(0))
    now = utcnow()
    with write_tx(engine) as conn:
        assert take_named(conn, LEASES, "job", "a", now, lease)
        assert not take_named(conn, LEASES, "job", "b", now + timedelta(seconds=44), lease)
        assert take_named(conn, LEASES, "job", "a", now + timedelta(seconds=44), lease)  # renewed
        assert not take_named(conn, LEASES, "job", "b", now + timedelta(seconds=88), lease)
        assert take_named(conn, LEASES, "job", "b", now + timedelta(seconds=90), lease)


def test_a_named_lease_of_a_dead_holder_is_taken_at_once(engine):
    if MACHINE is None:
        pytest.skip("needs Linux /proc to know a holder is dead")
    now = utcnow()
    with write_tx(engine) as conn:
        assert take_named(conn, LEASES, "job", dead_holder(), now, Lease(timedelta(seconds=45)))
        # without a dead-holder grace it is waited out; with one it is not
        assert not take_named(conn, LEASES, "job", "b", now + timedelta(seconds=1), Lease(timedelta(seconds=45)))
        assert take_named(conn, LEASES, "job", "b", now + timedelta(seconds=1),
                          Lease(timedelta(seconds=45), dead_holder_grace=timedelta(0)))
