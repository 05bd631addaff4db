"""Sizes and databases of the proof scenarios: short by default, full with STALLWATCH_PROOF=full."""

from __future__ import annotations

import json
import os

FULL = os.environ.get("STALLWATCH_PROOF", "").lower() == "full"
PG_URL = os.environ.get("STALLWATCH_TEST_POSTGRES_URL")


def size(module):
    """The scenario's FULL or SHORT parameters."""
    return module.FULL if FULL else module.SHORT


def one_backend() -> list[str]:
    """Short runs use one database (PostgreSQL when there is one); full runs both."""
    if FULL:
        return ["sqlite"] + (["postgresql"] if PG_URL else [])
    return ["postgresql" if PG_URL else "sqlite"]


def all_backends() -> list[str]:
    return ["sqlite"] + (["postgresql"] if PG_URL else [])


def report(result) -> str:
    """A scenario's figures and problems, for an assertion message."""
    return json.dumps({"problems": result.problems, "known_issues": result.known_issues,
                       "figures": result.figures}, indent=1, default=str)
