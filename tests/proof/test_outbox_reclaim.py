"""A row left 'sending' by a sender that was killed (kill -9) is taken over within seconds
when that sender was a process of this machine that no longer exists; a live or remote
sender's claim is still waited out for STUCK_AFTER (bot.slack.outbox, fixed for issue 6:
a crash used to hold the row, and every later row of its Slack channel, for 5 minutes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from bot.slack import outbox
from bot.slack.client import web_client
from bot.claims import MACHINE, holder_is_gone
from bot.slack.outbox import DEAD_CLAIM_GRACE, OutboxSender, enqueue
from storage.db import read_tx, utcnow, write_tx
from storage.models import SlackOutbox

pytest_plugins = ["tests.fakes.fixtures"]
OUTBOX = SlackOutbox.__table__
needs_proc = pytest.mark.skipif(MACHINE is None, reason="needs Linux /proc to tell this machine's processes apart")


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def worker_of(pid: int, machine: str | None = MACHINE) -> str:
    return f"host:{pid}:abcdef12@{machine}"


@needs_proc
def test_a_claim_is_gone_only_when_its_process_here_is_gone():
    assert holder_is_gone(worker_of(dead_pid()))
    assert not holder_is_gone(worker_of(os.getpid()))  # ourselves
    assert not holder_is_gone(worker_of(1))  # alive (init)
    assert not holder_is_gone(worker_of(dead_pid(), machine="0123456789"))  # another machine
    for odd in (None, "", "dead-worker", "w1", "host:notapid:x@" + MACHINE, "a@" + MACHINE):
        assert not holder_is_gone(odd)


@needs_proc
def test_a_killed_but_not_yet_reaped_child_counts_as_gone():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert not holder_is_gone(worker_of(child.pid))
        child.send_signal(signal.SIGKILL)
        import time

        time.sleep(0.3)  # a zombie now: killed, not waited for
        assert holder_is_gone(worker_of(child.pid))
    finally:
        child.wait()


def test_default_worker_ids_say_where_they_run():
    sender = OutboxSender(None, lambda: None)
    assert sender.worker_id.split(":")[1] == str(os.getpid())
    assert sender.worker_id.endswith(f"@{MACHINE}") == (MACHINE is not None)
    assert len(sender.worker_id) <= 100  # the claimed_by column


@pytest.fixture
def sender(engine, settings, fake_slack):
    slack = settings.model_copy(update={"slack_bot_token": fake_slack.token, "slack_api_url": fake_slack.url})
    return OutboxSender(engine, lambda: web_client(slack, blocking_retries=False))


def stuck(engine, key: str, claimed_by: str, seconds_ago: float) -> None:
    with write_tx(engine) as conn:
        enqueue(conn, key=key, method="chat.postMessage", payload={"channel": "C1", "text": key}, now=utcnow())
        conn.execute(update(OUTBOX).where(OUTBOX.c.key == key).values(
            status="sending", claimed_by=claimed_by, claimed_at=utcnow() - timedelta(seconds=seconds_ago), attempts=1))


def status(engine) -> dict:
    with read_tx(engine) as conn:
        return {r.key: r.status for r in conn.execute(select(OUTBOX.c.key, OUTBOX.c.status))}


@needs_proc
def test_a_dead_senders_row_resumes_after_the_grace_not_after_minutes(engine, sender, fake_slack):
    grace = DEAD_CLAIM_GRACE.total_seconds()
    stuck(engine, "dead-old", worker_of(dead_pid()), grace + 5)
    stuck(engine, "dead-new", worker_of(dead_pid()), grace - 10)  # its bytes may still be on the way
    stuck(engine, "alive-old", worker_of(1), grace + 5)  # a live sender: maybe just slow
    stuck(engine, "remote-old", worker_of(dead_pid(), machine="0123456789"), grace + 5)
    sender.run_once()
    assert status(engine) == {"dead-old": "sent", "dead-new": "sending", "alive-old": "sending",
                              "remote-old": "sending"}
    # The claim is taken over the way any stale claim is: the post is looked for first.
    assert [c.method for c in fake_slack.calls()] == ["conversations.history", "chat.postMessage"]


@needs_proc
def test_a_dead_senders_post_that_reached_slack_is_not_posted_again(engine, sender, fake_slack):
    from slack_sdk import WebClient

    WebClient(token=fake_slack.token, base_url=fake_slack.url).chat_postMessage(
        channel="C1", text="k", metadata=outbox.outbox_metadata("k"))  # it had posted, then died
    stuck(engine, "k", worker_of(dead_pid()), DEAD_CLAIM_GRACE.total_seconds() + 1)
    sender.run_once()
    assert status(engine) == {"k": "sent"}
    assert len(fake_slack.messages("C1")) == 1
