"""Hypothesis example counts of the slowest property tests.

The default `pytest` runs a quarter of each count (at least 25 examples), to keep the README's
test command quick; `STALLWATCH_FUZZ=full` runs the full counts, as CI does in its fuzz step
(.ci/run). Under CI (CI=true) the examples are drawn from a fixed seed (tests/conftest.py).
"""

from __future__ import annotations

import os

FULL = os.environ.get("STALLWATCH_FUZZ", "").lower() == "full"


def examples(full: int) -> int:
    """`full` with STALLWATCH_FUZZ=full, else a quarter of it (at least 25)."""
    return full if FULL else max(25, full // 4)
