"""Item 5: a sustained 1,000 events/s with stable memory and no error
(benchmarks/proof/soak.py; 24 s here, 10 minutes with STALLWATCH_PROOF=full)."""

from __future__ import annotations

import pytest

from benchmarks.proof import soak
from tests.proof.params import FULL, PG_URL, one_backend, report, size

pytestmark = pytest.mark.timeout(1500 if FULL else 240)


@pytest.mark.parametrize("backend", one_backend())
def test_soak_at_1000_events_per_second_keeps_memory_flat_and_errors_at_zero(backend, tmp_path):
    result = soak.run(backend, PG_URL, tmp_path, size(soak), log=print)
    assert not result.problems, report(result)
