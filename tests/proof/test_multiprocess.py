"""Item 2: two `serve` and one `worker` on one PostgreSQL database; redelivered events sent
concurrently to both servers are stored once, stalls open once, pings and the digest are
posted once, and exactly one scheduler leads, with a takeover after kill -9 of the leader
(benchmarks/proof/multiprocess.py)."""

from __future__ import annotations

import pytest

from benchmarks.proof import multiprocess
from tests.proof.params import FULL, PG_URL, report, size

pytestmark = [pytest.mark.skipif(not PG_URL, reason="needs PostgreSQL (STALLWATCH_TEST_POSTGRES_URL)"),
              pytest.mark.timeout(900 if FULL else 240)]


def test_two_servers_and_a_worker_store_open_and_post_everything_once(tmp_path):
    result = multiprocess.run(PG_URL, tmp_path, size(multiprocess), log=print)
    assert not result.problems, report(result)
    assert result.figures["takeover_seconds"] < 60
