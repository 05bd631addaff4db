"""A revoked Slack token and channels the bot is not in (bot/slack/health.py), through the
live app's /slack/events and /healthz, the outbox sender and the fake Slack."""

from __future__ import annotations

import logging
import time

import pytest
from sqlalchemy import select

from bot.slack.client import web_client
from bot.slack.health import check_at_start
from bot.slack.outbox import OUTBOX, OutboxSender, enqueue
from storage.db import utcnow, write_tx

from slack_signing import event_callback, make_slack_harness

pytest_plugins = ["tests.fakes.fixtures"]

ALERTS, DIGEST = "C0ALERTS", "C0DIGEST"


@pytest.fixture
def slack(fake_slack, engine, db_url):
    with make_slack_harness(fake_slack, engine, db_url, STALLWATCH_ALERTS_CHANNEL=ALERTS,
                            STALLWATCH_DIGEST_CHANNEL=DIGEST) as harness:
        yield harness


def _queue(engine, key: str) -> None:
    with write_tx(engine) as conn:
        enqueue(conn, key=key, method="chat.postMessage", payload={"channel": ALERTS, "text": key}, now=utcnow())



def _statuses(engine) -> dict[str, tuple[str, int]]:
    with engine.connect() as conn:
        return {r.key: (r.status, r.attempts) for r in conn.execute(select(OUTBOX))}


def _posts(fake) -> list:
    return [c for c in fake.calls("chat.postMessage") if c.ok]


@pytest.mark.parametrize("event", [
    {"type": "app_uninstalled"},
    {"type": "tokens_revoked", "tokens": {"oauth": [], "bot": ["U0BOT"]}},
])
def test_uninstall_or_revocation_holds_every_message_until_a_token_works(slack, event, caplog):
    sender = OutboxSender(slack.engine, lambda: web_client(slack.settings, blocking_retries=False))
    with caplog.at_level(logging.ERROR, logger="stallwatch.slack"):
        assert slack.post(event_callback(event)).status_code == 200
        for _ in range(100):  # the listener runs after Bolt's ack
            if "token revoked" in slack.http.get("/healthz").json()["slack"]:
                break
            time.sleep(0.05)
    health = slack.http.get("/healthz")
    assert health.status_code == 200 and health.json()["slack"].startswith("token revoked at ")
    assert "Slack token revoked at" in caplog.text

    _queue(slack.engine, "held")
    assert sender.run_once() == 0
    assert _statuses(slack.engine) == {"held": ("pending", 0)} and _posts(slack.fake) == []

    check_at_start(slack.engine, slack.settings, web_client(slack.settings))  # a restart with a working token
    assert slack.http.get("/healthz").json()["slack"] == "configured"
    assert sender.run_once() == 1
    assert _statuses(slack.engine) == {"held": ("sent", 1)} and len(_posts(slack.fake)) == 1


def test_revoking_only_user_tokens_changes_nothing(slack):
    event = {"type": "tokens_revoked", "tokens": {"oauth": ["U0SOMEONE"], "bot": []}}
    assert slack.post(event_callback(event)).status_code == 200
    _queue(slack.engine, "k")
    sender = OutboxSender(slack.engine, lambda: web_client(slack.settings, blocking_retries=False))
    assert sender.run_once() == 1 and _statuses(slack.engine)["k"] == ("sent", 1)
    assert slack.http.get("/healthz").json()["slack"] == "configured"


def test_a_token_slack_refuses_pauses_the_sender_with_no_message_failed(slack):
    _queue(slack.engine, "first")
    _queue(slack.engine, "second")
    slack.fake.tokens.clear()  # Slack now answers invalid_auth
    sender = OutboxSender(slack.engine, lambda: web_client(slack.settings, blocking_retries=False))
    sender.run_once()
    assert len(slack.fake.calls("chat.postMessage")) == 1  # the first refusal stops the sender
    assert _statuses(slack.engine) == {"first": ("pending", 0), "second": ("pending", 0)}
    assert slack.http.get("/healthz").json()["slack"].startswith("token revoked at ")
    assert sender.run_once() == 0 and len(slack.fake.calls("chat.postMessage")) == 1
    # A process started with another (working) token is not held by the old token's mark.
    slack.fake.tokens.add("xoxb-new-token")
    other = slack.settings.model_copy(update={"slack_bot_token": "xoxb-new-token"})
    resumed = OutboxSender(slack.engine, lambda: web_client(other, blocking_retries=False))
    for _ in range(50):  # the held row is due again a second after it was held
        resumed.run_once()
        if {status for status, _ in _statuses(slack.engine).values()} == {"sent"}:
            break
        time.sleep(0.1)
    assert [m["text"] for m in slack.fake.messages(ALERTS)] == ["first", "second"]


def test_channels_the_bot_is_not_in_are_named_at_start_and_in_healthz(slack, caplog):
    slack.fake.not_member_channels.add(DIGEST)
    slack.fake.channel_names[DIGEST] = "cs-digest"
    with caplog.at_level(logging.WARNING, logger="stallwatch.slack"):
        check_at_start(slack.engine, slack.settings, web_client(slack.settings))
    assert "invite @Stallwatch to #cs-digest" in caplog.text
    channels = slack.http.get("/healthz").json()["slack_channels"]
    assert channels == {ALERTS: "ok", DIGEST: "not a member: invite @Stallwatch to #cs-digest"}
