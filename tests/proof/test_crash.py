"""Item 3: kill -9 of the server during sustained ingest and Slack delivery: every
acknowledged event is stored, the outbox resumes and posts nothing twice
(benchmarks/proof/crash.py)."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from benchmarks.proof import checks, crash
from benchmarks.proof.harness import ALERTS, Database, Stack, rules_text, send_all, wait_until
from benchmarks.proof.workload import SteadyStream, csm_email, csm_user
from tests.proof.params import FULL, PG_URL, all_backends, report, size

pytestmark = pytest.mark.timeout(1200 if FULL else 240)


@pytest.mark.parametrize("backend", all_backends())
def test_kill_9_loses_no_acknowledged_event_and_sends_nothing_twice(backend, tmp_path):
    result = crash.run(backend, PG_URL, tmp_path, size(crash), log=print)
    assert not result.problems, report(result)
    assert result.figures["acknowledged_but_missing"] == 0
    assert result.figures["slack_keys_posted_twice"] == 0


def test_a_stall_opened_just_before_a_crash_is_still_pinged(tmp_path):
    db = Database.create("sqlite", tmp_path, None)
    with Stack(tmp_path, db, rules=rules_text(scan_minutes=0.1)) as stack:
        stack.fake.add_user(csm_user(0), csm_email(0))
        stack.fake.latency = 3.0  # the owner lookup in the router takes 3 s: the window to crash in
        srv = stack.serve("serve").start()
        stream = SteadyStream("lost", accounts=1, csms=1)
        account, unit = stream.spike_account()
        *first, last = unit
        assert all(o.ok for o in send_all([srv.url], first, concurrency=1).outcomes)
        sent = send_all([srv.url], [last], concurrency=1, timeout=1.0)  # its evaluation waits on the lookup
        wait_until(lambda: db.scalar("SELECT count(*) FROM stall WHERE account_id = :a", a=account) == 1, 10,
                   what="the stall opened")
        srv.kill9()
        stack.fake.latency = 0.0
        srv.start()
        send_all([srv.url], [last], concurrency=1)  # the helpdesk redelivers what got no answer
        # The leader's safety net (route_unrouted, every scan interval: 6 s here) routes it, once the
        # restarted process is the leader again (SQLite: after the dead one's 45 s lease).
        wait_until(lambda: any(k.startswith("ping:") for k in checks.outbox_state(db).keys), 75,
                   what="the stall's ping")
        pings = [k for k in checks.outbox_state(db).keys if k.startswith("ping:")]
        assert sent.outcomes and pings, f"the P0 stall of {account} was never pinged"
