"""`serve --socket-mode`: the same Bolt listeners, over Slack's WebSocket instead of HTTP."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from bot.app import create_app
from bot.cli import main
from bot.slack.bolt_app import build_bolt
from bot.stalls.context import Services


def test_socket_mode_app_carries_the_listeners_and_needs_no_signing_secret(settings, engine, rules):
    socket_settings = settings.model_copy(update={"slack_bot_token": "xoxb-test", "slack_app_token": "xapp-test",
                                                  "slack_signing_secret": None})
    app = create_app(socket_settings, engine=engine, socket_mode=True)
    bolt = app.state.socket_bolt
    assert len(bolt._async_listeners) >= 10  # the commands, actions and events of the HTTP app
    assert app.state.bolt is None  # no signing secret: no POST /slack/events


def test_socket_mode_without_app_token_names_what_is_missing(settings, engine, rules):
    half = settings.model_copy(update={"slack_bot_token": "xoxb-test", "slack_app_token": None})
    with pytest.raises(ValueError, match="SLACK_APP_TOKEN"):
        build_bolt(Services(engine=engine, settings=half, rules=rules), socket_mode=True)


def test_serve_socket_mode_without_tokens_is_a_clean_error(db_url):
    result = CliRunner().invoke(main, ["serve", "--socket-mode", "--no-scheduler"],
                                env={"DATABASE_URL": db_url, "SLACK_APP_TOKEN": "", "SLACK_BOT_TOKEN": ""})
    assert result.exit_code == 1
    assert "--socket-mode needs SLACK_APP_TOKEN" in result.output
    assert "Traceback" not in result.output
