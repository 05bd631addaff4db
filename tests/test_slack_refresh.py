"""Edits of a stall's pings go through the outbox as `refresh` rows (bot.slack.outbox.enqueue_refresh),
rendered from the stall's state when sent: a scan pings, the state changes, the fake Slack (over
HTTP) sees what the stall is NOW, never what it was when the edit was queued."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from sqlalchemy import select, update

from bot.scan import scan
from bot.slack.client import web_client
from bot.slack.outbox import OutboxSender, enqueue_refresh
from storage.db import write_tx
from storage.models import SlackOutbox, Stall
from tests.factories import HOUR, PROJECT, live_stalls, store, track
from tests.test_router import ALERTS, OWNER, make_rig, now_utc, stall_step_account  # noqa: F401 - fixture

pytest_plugins = ["tests.fakes.fixtures"]

UTC = timezone.utc
STALL = Stall.__table__
OUTBOX = SlackOutbox.__table__
BOB, CAROL = "U0BOB", "U0CAROL"


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def pinged_stall(rig, clock: Clock) -> int:
    """A P0 step stall whose pings (owner DM, alerts channel) are posted."""
    now = now_utc()
    stall_step_account(rig, "acme", now - HOUR, arr=50000)
    scan(rig.engine, rig.rules, now - HOUR, hooks=rig.hooks)
    [stall] = live_stalls(rig.engine, "acme")
    clock.now = datetime.now(UTC) + timedelta(seconds=1)  # the router stamped its rows with the real clock
    sender(rig, clock).run_once()
    assert len(rig.fake.calls("chat.postMessage")) == 2
    rig.fake.clear_calls()
    return stall.id


def sender(rig, clock: Clock) -> OutboxSender:
    return OutboxSender(rig.engine, lambda: web_client(rig.settings, blocking_retries=False),
                        clock=clock, rules=rig.rules)


def change(rig, stall_id: int, clock: Clock, *, extra=(), **values) -> None:
    """What a use-case does: change the stall and queue the refresh in one transaction."""
    with write_tx(rig.engine) as conn:
        conn.execute(update(STALL).where(STALL.c.id == stall_id).values(**values))
        enqueue_refresh(conn, stall_id, now=clock.now, extra=extra)


def refresh_rows(rig) -> list:
    with rig.engine.connect() as conn:
        return list(conn.execute(select(OUTBOX).where(OUTBOX.c.method == "refresh").order_by(OUTBOX.c.id)))


def shown(call) -> str:
    return call.body["text"] + json.dumps(call.body.get("blocks"))


def test_a_refresh_edits_every_ping_with_the_state_at_send_time(make_rig):
    rig = make_rig()
    clock = Clock(now_utc() + timedelta(seconds=1))
    stall_id = pinged_stall(rig, clock)

    change(rig, stall_id, clock, assignee=BOB)
    change(rig, stall_id, clock, assignee=CAROL)  # before anything is sent: merged, not queued twice
    assert len(refresh_rows(rig)) == 1
    sender(rig, clock).run_once()

    edits = rig.fake.calls("chat.update")
    assert {c.body["channel"] for c in edits} == {rig.fake.dm_channel(OWNER), ALERTS}
    for edit in edits:
        assert CAROL in shown(edit) and BOB not in shown(edit)
    [row] = refresh_rows(rig)
    assert row.status == "sent" and len(row.result["updated"]) == 2


def test_a_refresh_delayed_by_a_429_never_shows_stale_content(make_rig):
    """The edit for "assigned to Bob" is refused with a 429; the stall is then resolved. When the
    lane opens, the message shows the resolution: the delayed edit is not replayed over it."""
    rig = make_rig()
    clock = Clock(now_utc() + timedelta(seconds=1))
    stall_id = pinged_stall(rig, clock)

    change(rig, stall_id, clock, assignee=BOB)
    rig.fake.fail_next("chat.update", 429, retry_after=30)
    sender(rig, clock).run_once()
    [refused] = rig.fake.calls("chat.update")
    assert not refused.ok and BOB in shown(refused)

    change(rig, stall_id, clock, status="resolved", resolved_by=CAROL, resolved_at=clock.now)
    rig.fake.clear_calls()
    sender(rig, clock).run_once()
    assert rig.fake.calls("chat.update") == []  # the lane waits out Retry-After
    clock.now += timedelta(seconds=31)
    sender(rig, clock).run_once()

    edits = rig.fake.calls("chat.update")
    assert len(edits) == 2 and all(c.ok for c in edits)  # one edit per message, none superseded sent
    for edit in edits:
        assert edit.body["text"].startswith("Resolved:")
    for channel in (ALERTS, rig.fake.dm_channel(OWNER)):
        [message] = rig.fake.messages(channel)
        assert message["text"].startswith("Resolved:")
    assert [r.status for r in refresh_rows(rig)] == ["sent"]


def test_a_message_slack_will_not_edit_is_skipped_and_the_others_are_edited(make_rig):
    rig = make_rig()
    clock = Clock(now_utc() + timedelta(seconds=1))
    stall_id = pinged_stall(rig, clock)

    change(rig, stall_id, clock, extra=[(ALERTS, "1.000001")], assignee=BOB)  # no such message
    sender(rig, clock).run_once()

    [row] = refresh_rows(rig)
    assert row.status == "sent"
    assert row.result["skipped"] == [[ALERTS, "1.000001"]] and len(row.result["updated"]) == 2


def test_a_sender_without_rules_fails_the_refresh_loudly(make_rig):
    rig = make_rig()
    clock = Clock(now_utc() + timedelta(seconds=1))
    stall_id = pinged_stall(rig, clock)
    change(rig, stall_id, clock, assignee=BOB)
    OutboxSender(rig.engine, lambda: web_client(rig.settings, blocking_retries=False), clock=clock).run_once()
    [row] = refresh_rows(rig)
    assert row.status == "failed" and "rules" in row.error


def test_a_refresh_waits_for_a_ping_still_on_its_way_in_another_lane(make_rig):
    """The channel post is held by a 429 while the owner's DM is out; a refresh (in the DM's
    lane) must not skip the channel ping, which would then show what it was queued with."""
    rig = make_rig()
    clock = Clock(now_utc() + timedelta(seconds=1))
    now = now_utc()
    stall_step_account(rig, "acme", now - HOUR, arr=50000)
    scan(rig.engine, rig.rules, now - HOUR, hooks=rig.hooks)
    [stall] = live_stalls(rig.engine, "acme")
    clock.now = datetime.now(UTC) + timedelta(seconds=1)
    rig.fake.rate_limit_for(2.0, retry_after=30, channel=ALERTS)
    sender(rig, clock).run_once()
    assert [c.body["channel"] for c in rig.fake.calls("chat.postMessage") if c.ok] == [rig.fake.dm_channel(OWNER)]
    rig.fake.clear_faults()

    change(rig, stall.id, clock, assignee=BOB)
    sender(rig, clock).run_once()
    assert rig.fake.calls("chat.update") == []  # waiting for the channel's ping
    clock.now += timedelta(seconds=31)
    for _ in range(3):
        sender(rig, clock).run_once()
        clock.now += timedelta(seconds=2)

    [message] = rig.fake.messages(ALERTS)
    assert BOB in json.dumps(message["blocks"])
    assert {c.body["channel"] for c in rig.fake.calls("chat.update")} == {ALERTS, rig.fake.dm_channel(OWNER)}
    assert [r.status for r in refresh_rows(rig)] == ["sent"]


def test_the_routers_close_joins_a_refresh_held_by_a_429_and_is_sent_once(make_rig):
    """A click's refresh is refused with a 429; the stall then auto-resolves (a late event) and
    the router queues its close: it joins the held refresh, so each message is edited once,
    to the closed state, when the lane opens; routing the stall again edits nothing more."""
    rig = make_rig()
    clock = Clock(now_utc() + timedelta(seconds=1))
    stall_id = pinged_stall(rig, clock)
    change(rig, stall_id, clock, assignee=BOB)
    rig.fake.fail_next("chat.update", 429, retry_after=30)
    sender(rig, clock).run_once()

    now = now_utc()
    store(rig.engine, rig.rules, [track("acme", PROJECT, now - 20 * HOUR)], now=now)
    assert scan(rig.engine, rig.rules, now, hooks=rig.hooks).auto_resolved == 1
    [row] = refresh_rows(rig)
    assert row.key == f"refresh:{stall_id}:close" and row.status == "pending"
    rig.fake.clear_calls()
    clock.now = datetime.now(UTC) + timedelta(seconds=31)
    sender(rig, clock).run_once()

    edits = rig.fake.calls("chat.update")
    assert sorted(c.body["channel"] for c in edits) == sorted([ALERTS, rig.fake.dm_channel(OWNER)])
    assert all(c.ok and c.body["text"].startswith("Auto-resolved:") for c in edits)
    rig.fake.clear_calls()
    rig.router.route_stalls([stall_id], now)
    sender(rig, clock).run_once()
    assert rig.fake.calls() == [] and len(refresh_rows(rig)) == 1
