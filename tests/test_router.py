"""Real-time pings (bot/slack/router.py) end to end: scan -> router -> outbox -> fake Slack over HTTP.

Times are near the real clock (the outbox never holds a row before its creation time), and
the rules files set quiet hours explicitly so results do not depend on the time of day.
"""

from __future__ import annotations

import json
import re
import threading
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from sqlalchemy import insert, select, update

from bot.app import create_app
from bot.scan import scan
from bot.settings import Settings, default_rules_text
from bot.slack.client import web_client
from bot.slack.outbox import OutboxSender
from bot.slack.router import PING_LOCKS, Router
from bot.stalls.context import Services, Wakeups
from storage.db import lock_key, write_tx
from storage.models import Alert, SlackOutbox, Stall
from tests.conftest import SEGMENT_SECRET, STRIPE_SECRET, TICKETS_SECRET, WRITE_KEY, LiveServer
from tests.factories import DAY, HOUR, PROJECT, group, live_stalls, signup, stalls, store, track
from tests.helpers import group_call, iso, post_tickets, post_v1

pytest_plugins = ["tests.fakes.fixtures"]

UTC = timezone.utc
ALERT = Alert.__table__
OUTBOX = SlackOutbox.__table__
STALL = Stall.__table__
ALERTS, DIGEST = "C0ALERTS", "C0DIGEST"
OWNER, EMAIL = "U0JANE", "jane@stallwatch-test.com"


def rules_file(tmp_path, *, quiet: tuple[str, str] = ("00:00", "00:00"), budget: int = 6) -> str:
    """The default rules with these quiet hours ("00:00"-"00:00": none) and hourly budget."""
    text = default_rules_text()
    text = re.sub(r'(?m)^quiet_hours_start = .*$', f'quiet_hours_start = "{quiet[0]}"', text)
    text = re.sub(r'(?m)^quiet_hours_end = .*$', f'quiet_hours_end = "{quiet[1]}"', text)
    text = re.sub(r'(?m)^hourly_budget_per_csm = .*$', f"hourly_budget_per_csm = {budget}", text)
    path = tmp_path / "rules.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def make_settings(db_url, fake_slack, rules_path, *, alerts: str | None = ALERTS) -> Settings:
    return Settings(
        _env_file=None, DATABASE_URL=db_url, STALLWATCH_WRITE_KEY=WRITE_KEY, SEGMENT_SHARED_SECRET=SEGMENT_SECRET,
        STRIPE_WEBHOOK_SECRET=STRIPE_SECRET, TICKETS_SHARED_SECRET=TICKETS_SECRET,
        SLACK_BOT_TOKEN=fake_slack.token, SLACK_SIGNING_SECRET=None, SLACK_API_URL=fake_slack.url,
        STALLWATCH_ALERTS_CHANNEL=alerts, STALLWATCH_DIGEST_CHANNEL=DIGEST, STALLWATCH_RULES=rules_path,
    )


class Rig:
    """Settings, a router (the scans' change hook: `hooks`) and a deterministic sender against the fake Slack."""

    def __init__(self, engine, settings, fake):
        self.engine, self.settings, self.fake = engine, settings, fake
        self.rules = settings.rules
        self.wakeups = Wakeups()  # the process's (Services.wakeups)
        self.router = Router(engine, settings, self.rules, wakeups=self.wakeups)
        self.hooks = [self.router.handle]

    def send(self, at: datetime | None = None) -> int:
        """Run one sender pass, as of `at` (default: the real clock)."""
        sender = OutboxSender(self.engine, lambda: web_client(self.settings, blocking_retries=False),
                              clock=(lambda: at) if at else (lambda: datetime.now(UTC)), rules=self.rules)
        return sender.run_once()

    def outbox(self) -> list:
        with self.engine.connect() as conn:
            return list(conn.execute(select(OUTBOX).order_by(OUTBOX.c.id)))

    def alerts(self, kind: str | None = None) -> list:
        stmt = select(ALERT).order_by(ALERT.c.id)
        if kind:
            stmt = stmt.where(ALERT.c.kind == kind)
        with self.engine.connect() as conn:
            return list(conn.execute(stmt))


@pytest.fixture
def make_rig(db_url, engine, fake_slack, tmp_path):
    fake_slack.add_user(OWNER, EMAIL)

    def make(**rules_kw) -> Rig:
        settings = make_settings(db_url, fake_slack, rules_file(tmp_path, **rules_kw))
        return Rig(engine, settings, fake_slack)

    return make


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def posts(fake, channel: str, *, replies: bool | None = False) -> list:
    found = [c for c in fake.calls("chat.postMessage") if c.body.get("channel") == channel and c.ok]
    if replies is None:
        return found
    return [c for c in found if bool(c.body.get("thread_ts")) == replies]


def blocks_text(call) -> str:
    return json.dumps(call.body.get("blocks"))


def ticket(ticket_id: str, account: str, topic: str, created: datetime) -> dict:
    return {"id": ticket_id, "status": "open", "subject": f"Help with {topic}", "priority": "high",
            "created_at": iso(created), "account_id": account, "topic": topic}


def stall_step_account(rig: Rig, account: str, now: datetime, *, arr: float, owner: str | None = EMAIL,
                       hours: int = 55) -> None:
    """An account that signed up `hours` ago and never created a project (a step stall, past
    its 48 h threshold and the 6 h confirmation)."""
    traits = {"owner_email": owner} if owner else {}
    store(rig.engine, rig.rules, signup(account, now - hours * HOUR, arr=arr, **traits), now=now - hours * HOUR)


# --------------------------------------------------------------------------- through the live app


def test_ticket_spike_through_ingest_pings_owner_and_channel_once_then_edits_on_priority_change(make_rig):
    rig = make_rig()
    fake = rig.fake
    app = create_app(services=Services(engine=rig.engine, settings=rig.settings, rules=rig.rules, change_hooks=rig.hooks))
    with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=30) as client:
        assert post_v1(client, "/v1/group", group_call(
            "acme", {"name": "Acme", "arr": 15000, "owner_email": EMAIL})).status_code == 200
        for n, (topic, days) in enumerate((("SSO", 5), ("billing", 3), ("sso", 1)), 1):
            r = post_tickets(client, ticket(f"T-{n}", "acme", topic, now_utc() - days * HOUR))
            assert r.status_code == 200, r.text
        assert rig.wakeups.slack_outbox.is_set()  # the sender is woken as soon as the rows commit
        [stall] = live_stalls(rig.engine, "acme")
        assert stall.rule == "ticket_spike" and stall.priority == "P1", stall
        rig.send()

        # One DM to the owner, found by email (and remembered), one post in the alerts channel.
        assert len(fake.calls("users.lookupByEmail")) == 1
        dm = fake.dm_channel(OWNER)
        [dm_post], [channel_post] = posts(fake, dm), posts(fake, ALERTS)
        assert stall.why and stall.why.endswith(" · P1 because $15K ARR, 3 open tickets")
        for call in (dm_post, channel_post):
            assert "P1 because $15K ARR, 3 open tickets" in blocks_text(call)  # rendered from current facts
            assert "Acme" in call.body["text"]
        assert len(fake.calls("chat.postMessage")) == 2
        with rig.engine.connect() as conn:
            owner_id = conn.execute(select(Alert.__table__.c.channel)
                                    .where(ALERT.c.kind == "ping").order_by(ALERT.c.id)).scalars().all()
        assert owner_id == [OWNER, ALERTS]
        assert all(a.ts for a in rig.alerts("ping"))  # the sender recorded each message's ts

        # A second scan changes nothing: no new rows, no new calls.
        fake.clear_calls()
        rows_before = len(rig.outbox())
        scan(rig.engine, rig.rules, full=True, hooks=rig.hooks)
        rig.router.route_stalls([stall.id])
        rig.send()
        assert fake.calls() == [] and len(rig.outbox()) == rows_before

        # The ARR goes up: P1 -> P0. The messages are edited in place, one thread reply each.
        assert post_v1(client, "/v1/group", group_call("acme", {"name": "Acme", "arr": 50000})).status_code == 200
        scan(rig.engine, rig.rules, only=["acme"], hooks=rig.hooks)
        rig.router.route_stalls([stall.id])  # again: harmless
        rig.send()
        [stall] = live_stalls(rig.engine, "acme")
        assert stall.priority == "P0"
        assert fake.calls("chat.postMessage") == [c for c in fake.calls("chat.postMessage") if c.body.get("thread_ts")]
        for channel, original in ((dm, dm_post), (ALERTS, channel_post)):
            ts = original.response["ts"]
            [edit] = [c for c in fake.calls("chat.update") if c.body["channel"] == channel]
            assert edit.body["ts"] == ts
            assert "P0" in edit.body["text"] and "Priority raised from P1 to P0" in blocks_text(edit)
            [reply] = posts(fake, channel, replies=True)
            assert reply.body["thread_ts"] == ts
            assert reply.body["text"].startswith("Priority raised from P1 to P0")
            assert len(fake.messages(channel)) == 2  # the ping and its one reply
        assert {a.priority for a in rig.alerts("ping")} == {"P0"}


# --------------------------------------------------------------------------- scans and the router


def test_late_event_auto_resolves_and_edits_the_ping(make_rig):
    rig = make_rig()
    now = now_utc()
    stall_step_account(rig, "acme", now - HOUR, arr=50000)
    scan(rig.engine, rig.rules, now - HOUR, hooks=rig.hooks)
    [stall] = live_stalls(rig.engine, "acme")
    assert stall.priority == "P0"
    rig.send()
    [channel_post] = posts(rig.fake, ALERTS)
    rig.fake.clear_calls()

    # The project was created 30 h after signup; the event arrives only now.
    store(rig.engine, rig.rules, [track("acme", PROJECT, now - 20 * HOUR)], now=now)
    report = scan(rig.engine, rig.rules, now, hooks=rig.hooks)
    assert report.auto_resolved == 1
    rig.send()
    assert rig.fake.calls("chat.postMessage") == []  # no new post
    edits = {c.body["channel"]: c for c in rig.fake.calls("chat.update")}
    assert set(edits) == {ALERTS, rig.fake.dm_channel(OWNER)}
    edit = edits[ALERTS]
    assert edit.body["ts"] == channel_post.response["ts"]
    assert "Auto-resolved" in edit.body["text"]
    assert "Auto-resolved: Project Created arrived late" in blocks_text(edit)
    assert '"actions"' not in blocks_text(edit)  # no buttons on a closed stall
    # Routing it again edits nothing more.
    rig.fake.clear_calls()
    rig.router.route_stalls([stall.id], now)
    rig.send()
    assert rig.fake.calls() == []


def test_quiet_hours_hold_a_p1_while_a_p0_goes_through(make_rig):
    now = now_utc()
    start, end = now - HOUR, now + HOUR
    rig = make_rig(quiet=(f"{start:%H:%M}", f"{end:%H:%M}"))
    stall_step_account(rig, "big", now, arr=50000)
    stall_step_account(rig, "mid", now, arr=15000)
    scan(rig.engine, rig.rules, now, hooks=rig.hooks)
    prio = {s.account_id: s.priority for s in live_stalls(rig.engine)}
    assert prio == {"big": "P0", "mid": "P1"}
    rig.send()
    texts = [c.body["text"] for c in posts(rig.fake, ALERTS)]
    assert len(texts) == 1 and texts[0].startswith("P0: Big")

    held = [r for r in rig.outbox() if r.status == "pending"]
    assert len(held) == 2  # the P1's DM and channel post, held to the end of quiet hours
    end_at = end.replace(second=0)
    assert all(abs((r.next_attempt_at.replace(tzinfo=UTC) - end_at).total_seconds()) < 1 for r in held)
    # Routing again does not add a second ping; at the end of quiet hours the P1 goes out.
    rig.router.route_stalls([s.id for s in live_stalls(rig.engine)], now)
    assert len(rig.outbox()) == 4
    rig.send(end_at + timedelta(seconds=1))
    texts = [c.body["text"] for c in posts(rig.fake, ALERTS)]
    assert len(texts) == 2 and texts[1].startswith("P1: Mid")


def test_over_budget_stall_goes_to_the_digest_with_a_note(make_rig):
    rig = make_rig(budget=1)
    now = now_utc()
    stall_step_account(rig, "first", now, arr=90000)
    stall_step_account(rig, "second", now, arr=60000)
    scan(rig.engine, rig.rules, now, hooks=rig.hooks)
    rig.send()
    texts = [c.body["text"] for c in posts(rig.fake, ALERTS)]
    assert len(texts) == 1 and texts[0].startswith("P0: First")  # the budget goes to the top stall
    second = stalls(rig.engine, "second")[0]
    [overflow] = rig.alerts("overflow")
    assert (overflow.stall_id, overflow.priority) == (second.id, "P0")
    assert not [a for a in rig.alerts("ping") if a.stall_id == second.id]
    # It stays in the digest: no late ping once the hour has passed.
    rig.fake.clear_calls()
    rig.router.route_stalls([second.id], now + 2 * HOUR)
    rig.send()
    assert rig.fake.calls() == []


def test_unknown_owner_pings_the_channel_only_with_the_email(make_rig):
    rig = make_rig()
    now = now_utc()
    stall_step_account(rig, "acme", now, arr=50000, owner="nobody@stallwatch-test.com")
    scan(rig.engine, rig.rules, now, hooks=rig.hooks)
    rig.send()
    assert len(rig.fake.calls("users.lookupByEmail")) == 1
    assert rig.fake.calls("conversations.open") == []
    [post] = rig.fake.calls("chat.postMessage")
    assert post.body["channel"] == ALERTS
    assert "nobody@stallwatch-test.com" in blocks_text(post).replace("\\u2060", "")  # no mailto link


def test_unacknowledged_p0_escalates_once_to_the_digest_channel(make_rig):
    rig = make_rig()
    now = now_utc()
    stall_step_account(rig, "big", now, arr=50000)
    stall_step_account(rig, "acked", now, arr=60000, owner=None)
    scan(rig.engine, rig.rules, now, hooks=rig.hooks)
    rig.send()
    acked = stalls(rig.engine, "acked")[0]
    with rig.engine.begin() as conn:
        conn.execute(update(ALERT).where(ALERT.c.stall_id == acked.id).values(acked_at=now, acked_by=OWNER))
    delay = timedelta(minutes=rig.rules.routing.escalate_p0_after_minutes)
    assert rig.router.escalate_due(now + delay - timedelta(minutes=1)) == 0
    assert rig.router.escalate_due(now + delay) == 1
    assert rig.router.escalate_due(now + delay + HOUR) == 0  # once
    rig.send()
    [post] = posts(rig.fake, DIGEST)
    assert post.body["text"].startswith("Unacknowledged P0 for 60 minutes")
    assert "Big" in post.body["text"]
    [alert] = rig.alerts("escalation")
    assert alert.channel == DIGEST and alert.ts == post.response["ts"]


def test_many_unacknowledged_p0s_escalate_in_one_summary_beyond_the_first_few(make_rig):
    from bot.slack.router import ESCALATE_EACH

    rig = make_rig(budget=100)
    now = now_utc()
    n = ESCALATE_EACH + 7
    for i in range(n):
        stall_step_account(rig, f"big{i:02d}", now, arr=50000 + 1000 * i)
    scan(rig.engine, rig.rules, now, hooks=rig.hooks)
    rig.send()
    delay = timedelta(minutes=rig.rules.routing.escalate_p0_after_minutes)
    assert rig.router.escalate_due(now + delay) == ESCALATE_EACH + 1
    assert rig.router.escalate_due(now + delay + HOUR) == 0  # every one of them escalated, once
    rig.send()
    escalations = posts(rig.fake, DIGEST)
    assert len(escalations) == ESCALATE_EACH + 1
    summary = escalations[-1]
    assert summary.body["text"] == "7 more unacknowledged P0 stalls"
    assert "Big00" in blocks_text(summary) and "Big11" not in blocks_text(summary)  # the top ones went alone
    assert len(rig.alerts("escalation")) == n


def test_closed_before_delivery_cancels_the_held_ping(make_rig):
    now = now_utc()
    rig = make_rig(quiet=(f"{now - HOUR:%H:%M}", f"{now + HOUR:%H:%M}"))
    stall_step_account(rig, "mid", now, arr=15000)
    scan(rig.engine, rig.rules, now, hooks=rig.hooks)
    assert {r.status for r in rig.outbox()} == {"pending"}
    store(rig.engine, rig.rules, [track("mid", PROJECT, now - HOUR)], now=now)
    scan(rig.engine, rig.rules, now, hooks=rig.hooks)
    assert {r.status for r in rig.outbox()} == {"failed"}
    rig.send(now + 3 * HOUR)
    assert rig.fake.calls("chat.postMessage") == [] and rig.fake.calls("chat.update") == []


def test_held_p1_that_becomes_p0_goes_out_at_once_as_p0(make_rig):
    now = now_utc()
    rig = make_rig(quiet=(f"{now - HOUR:%H:%M}", f"{now + HOUR:%H:%M}"))
    stall_step_account(rig, "mid", now, arr=15000)
    scan(rig.engine, rig.rules, now, hooks=rig.hooks)
    rig.send()
    assert rig.fake.calls("chat.postMessage") == []  # held
    store(rig.engine, rig.rules, [group("mid", now, arr=50000)], now=now)
    scan(rig.engine, rig.rules, now + timedelta(minutes=1), hooks=rig.hooks)
    assert live_stalls(rig.engine, "mid")[0].priority == "P0"
    rig.send()
    sent = rig.fake.calls("chat.postMessage")
    assert len(sent) == 2 and all(c.body["text"].startswith("P0: Mid") for c in sent)
    assert not any(c.body.get("thread_ts") for c in sent)
    assert rig.fake.calls("chat.update") == []  # posted once, already as P0
    assert {a.priority for a in rig.alerts("ping")} == {"P0"}


def test_serve_wiring_starts_and_stops_the_sender_and_the_listener(make_rig):
    from bot.cli import _start_slack, _stop_slack

    rig = make_rig()
    now = now_utc()
    services = Services(engine=rig.engine, settings=rig.settings, rules=rig.rules)
    router, stop, wake, thread = _start_slack(services, None)
    try:
        assert services.change_hooks == [router.handle] and thread.is_alive()
        stall_step_account(rig, "acme", now, arr=50000)
        # both routers see it: still one ping per destination
        scan(rig.engine, rig.rules, now, hooks=[*rig.hooks, *services.change_hooks])
        assert len(rig.fake.wait_for_calls("chat.postMessage", 2)) == 2
    finally:
        _stop_slack(services, router, stop, wake, thread)
    assert services.change_hooks == [] and not thread.is_alive()
    assert len(rig.fake.calls("chat.postMessage")) == 2


def test_a_stall_left_unrouted_is_routed_by_the_safety_net(make_rig):
    """A process killed between the scan's commit and the router's enqueue leaves a live P0
    with no ping: the leader's sweep routes it, once."""
    rig = make_rig()
    now = now_utc()
    stall_step_account(rig, "lost", now, arr=50000)
    scan(rig.engine, rig.rules, now)  # no hook: as if the process died before routing
    assert rig.outbox() == []
    assert rig.router.route_unrouted(now + timedelta(seconds=1)) == 0  # too fresh: a router may be on it
    assert rig.router.route_unrouted(now + timedelta(minutes=1)) == 1
    assert rig.router.route_unrouted(now + timedelta(minutes=2)) == 0
    rig.send()
    assert [c.body["text"] for c in posts(rig.fake, ALERTS)][0].startswith("P0: Lost")


def test_two_routers_pinging_one_account_at_once_send_one_ping(make_rig):
    """A scan and an event-driven evaluation may each open a stall of the same account and
    route it at the same moment, each with its own stall as the top. The pinging transaction
    holds the account's ping lock: the router that comes second waits, then reads the first
    one's open ping and posts nothing of its own. (The first router is played here by a
    transaction that holds the lock and writes a ping on another stall of the account; without
    the lock, PostgreSQL let the second router read "no open ping" and post a second one.)"""
    rig = make_rig()
    now = now_utc()
    stall_step_account(rig, "acme", now, arr=60_000)
    [lead] = scan(rig.engine, rig.rules, now).opened_ids  # no hooks: nothing routed yet
    result: dict = {}
    with write_tx(rig.engine) as conn:
        lock_key(conn, PING_LOCKS, "acme")
        row = dict(conn.execute(select(STALL).where(STALL.c.id == lead)).mappings().one())
        row.pop("id")
        other = conn.execute(insert(STALL).values({**row, "rule": "ticket_spike", "open_key": "acme|ticket_spike"})
                             .returning(STALL.c.id)).scalar_one()
        conn.execute(insert(ALERT).values(stall_id=other, channel=ALERTS, kind="ping", priority="P1",
                                          lead_stall_id=other, created_at=now, updated_at=now))
        router = threading.Thread(target=lambda: result.update(stats=rig.router.route_stalls([lead], now)))
        router.start()
        router.join(0.5)
        assert router.is_alive()  # waiting for the account's ping (PostgreSQL: its lock; SQLite: the write lock)
    router.join(30)
    assert not router.is_alive() and result["stats"].pinged == 0
    assert [(a.stall_id, a.closed_at) for a in rig.alerts("ping")] == [(other, None)]  # one open ping, the first
    assert not [r for r in rig.outbox() if r.method in ("chat.postMessage", "dm")]
