"""`stallwatch scan` from the command line routes and sends its pings (click's CliRunner,
the fake Slack), as the scheduler's scans do: a deployment with `serve --no-scheduler` and
an external cron running `stallwatch scan` pings too."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from bot.cli import main
from bot.settings import Settings
from storage.models import Alert, SlackOutbox

from factories import HOUR, signup, store
from test_router import ALERTS, DIGEST, EMAIL, OWNER, rules_file

pytest_plugins = ["tests.fakes.fixtures"]

UTC = timezone.utc
ALERT, OUTBOX = Alert.__table__, SlackOutbox.__table__


@pytest.fixture
def cli(db_url, fake_slack, tmp_path):
    fake_slack.add_user(OWNER, EMAIL)
    rules_path = rules_file(tmp_path)  # no quiet hours
    runner = CliRunner()

    def run(*args: str, **env: str | None):
        environment = {"DATABASE_URL": db_url, "STALLWATCH_RULES": rules_path, "SLACK_BOT_TOKEN": fake_slack.token,
                       "SLACK_API_URL": fake_slack.url, "STALLWATCH_ALERTS_CHANNEL": ALERTS,
                       "STALLWATCH_DIGEST_CHANNEL": DIGEST, **env}
        return runner.invoke(main, list(args), env=environment, catch_exceptions=False)

    run.rules = Settings(_env_file=None, DATABASE_URL=db_url, STALLWATCH_RULES=rules_path).rules
    return run


def _stalled(engine, rules, account: str, now: datetime, arr: float = 50000) -> None:
    """Signed up 49 h ago, never created a project: a P0 step stall at this ARR."""
    store(engine, rules, signup(account, now - 55 * HOUR, arr=arr, owner_email=EMAIL), now=now - 55 * HOUR)


def test_cli_scan_posts_the_pings_before_it_exits(cli, engine, fake_slack):
    now = datetime.now(UTC).replace(microsecond=0)
    _stalled(engine, cli.rules, "acme", now)
    result = cli("scan")
    assert result.exit_code == 0, result.output
    assert "1 opened" in result.output
    assert "slack: 2 message(s) enqueued (0 escalation(s)): 2 sent, 0 failed" in result.output
    posted = {c.body["channel"] for c in fake_slack.calls("chat.postMessage") if c.ok}
    assert posted == {ALERTS, fake_slack.dm_channel(OWNER)}  # the owner's DM and the alerts channel
    with engine.connect() as conn:
        assert {r.status for r in conn.execute(select(OUTBOX))} == {"sent"}
    # A second scan changes nothing and posts nothing.
    fake_slack.clear_calls()
    result = cli("scan")
    assert "slack: 0 message(s) enqueued" in result.output
    assert fake_slack.calls("chat.postMessage") == []


def test_cli_scan_escalates_an_unacknowledged_p0(cli, engine, fake_slack):
    now = datetime.now(UTC).replace(microsecond=0)
    _stalled(engine, cli.rules, "acme", now)
    assert cli("scan").exit_code == 0
    with engine.begin() as conn:  # the ping went out long enough ago, and nobody acted on it
        conn.execute(update(ALERT).values(created_at=now - timedelta(hours=3)))
    fake_slack.clear_calls()
    result = cli("scan")
    assert "(1 escalation(s)): 1 sent" in result.output, result.output
    [post] = [c for c in fake_slack.calls("chat.postMessage") if c.ok]
    assert post.body["channel"] == DIGEST and post.body["text"].startswith("Unacknowledged P0")


def test_cli_scan_without_slack_says_so(cli, engine):
    now = datetime.now(UTC).replace(microsecond=0)
    _stalled(engine, cli.rules, "acme", now)
    result = cli("scan", SLACK_BOT_TOKEN=None)
    assert result.exit_code == 0 and "1 opened" in result.output
    assert "SLACK_BOT_TOKEN is not set, no pings routed" in result.output
