"""pytest fixtures for the fakes; use with `pytest_plugins = ["tests.fakes.fixtures"]`."""

from __future__ import annotations

import pytest

from tests.fakes.slack_api import FakeSlack


@pytest.fixture
def fake_slack():
    """A fresh fake Slack Web API on a loopback port; `fake_slack.url` is the slack_sdk base_url."""
    with FakeSlack() as fake:
        yield fake
