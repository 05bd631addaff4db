"""The proof scenarios of issue 6 (benchmarks/proof; figures in benchmarks/REPORT.md).

Not in the default `pytest` run (pyproject's norecursedirs): `pytest tests/proof`, a step of
.ci/run of its own, runs each scenario at a size that takes seconds. `STALLWATCH_PROOF=full`
runs the full sizes of the report (20,000 events, a 10-minute soak, 30 s of 429s...):
`STALLWATCH_PROOF=full pytest tests/proof`. Wall-clock assertions belong here (and in
benchmarks/), not in the rest of tests/.
"""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config, items):
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.proof)
