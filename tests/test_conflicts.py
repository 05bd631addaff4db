"""Transaction conflicts (PostgreSQL deadlocks, serialization failures) are run again whole;
anything else is raised at once (storage.db.retry_conflicts, used by the scan and the writer)."""

import pytest
from sqlalchemy.exc import OperationalError

from storage.db import is_conflict, retry_conflicts


class _DriverError(Exception):
    def __init__(self, sqlstate: str):
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def conflict(state: str = "40P01") -> OperationalError:
    return OperationalError("UPDATE account ...", {}, _DriverError(state))


def test_a_deadlock_is_run_again_until_it_goes_through():
    calls = []

    def run():
        calls.append(1)
        if len(calls) < 3:
            raise conflict()
        return "stored"

    assert retry_conflicts(run) == "stored" and len(calls) == 3


def test_other_errors_and_the_last_conflict_are_raised():
    assert is_conflict(conflict("40001")) and not is_conflict(conflict("23505")) and not is_conflict(ValueError())
    calls = []

    def refused():
        calls.append(1)
        raise conflict("23505")  # a unique violation: running it again would not help

    with pytest.raises(OperationalError):
        retry_conflicts(refused)
    assert len(calls) == 1
    with pytest.raises(OperationalError):
        retry_conflicts(lambda: (_ for _ in ()).throw(conflict()), attempts=2)
