"""pytest fixtures for the fakes; use with `pytest_plugins = ["tests.fakes.fixtures"]`."""

from __future__ import annotations

import pytest

from tests.fakes.slack_api import FakeSlack


@pytest.fixture
def fake_slack():
    """A fresh fake Slack Web API on a loopback port; `fake_slack.url` is the slack_sdk base_url."""
    with FakeSlack() as fake:
        yield fake


@pytest.fixture
def fake_openai():
    """A fresh fake OpenAI-compatible API on a loopback port; `fake_openai.url` is the openai
    base_url and `fake_openai.api_key` the key it accepts."""
    from tests.fakes.openai_api import FakeOpenAI

    with FakeOpenAI() as fake:
        yield fake


# --- mail outbox (tests/fakes/smtp.py) ---
@pytest.fixture
def smtp_server():
    """A fresh real SMTP server (aiosmtpd) on a loopback port; `smtp_server.url` is an SMTP_URL."""
    from tests.fakes.smtp import FakeSMTP

    with FakeSMTP() as server:
        yield server
# --- end mail outbox ---


# --- HubSpot CRM sync (tests/fakes/hubspot_api.py) ---
@pytest.fixture
def fake_hubspot():
    """A fresh fake HubSpot CRM v3 API on a loopback port; `fake_hubspot.url` is HUBSPOT_API_URL."""
    from tests.fakes.hubspot_api import FakeHubSpot

    with FakeHubSpot() as fake:
        yield fake
# --- end HubSpot CRM sync ---
