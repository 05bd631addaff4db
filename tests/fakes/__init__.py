"""Loopback fakes of the services Stallwatch talks to (real HTTP servers, not mocks)."""

from tests.fakes.slack_api import Call, FakeSlack

__all__ = ["Call", "FakeSlack"]
