"""One account, one alert (DESIGN.md): scan -> router -> outbox -> fake Slack over HTTP.

An account's open stalls are the reasons of one ping per destination: a new reason edits it
in place with one thread reply, a reason that closes drops off silently, the alert closes
with its last stall. Stalls already old when Stallwatch first saw the account are a backlog:
one summary per owner, never pinged or escalated one by one.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from bot.scan import scan
from bot.stalls import actions
from bot.stalls.context import Services
from storage.models import Alert
from tests.factories import DAY, HOUR, PROJECT, live_stalls, signup, store, ticket, track
from tests.test_router import ALERTS, EMAIL, OWNER, blocks_text, make_rig, now_utc, posts, stall_step_account  # noqa: F401

pytest_plugins = ["tests.fakes.fixtures"]
ALERT = Alert.__table__


def spike(rig, account: str, now, *, topic: str = "sso", hours_ago=(5, 3, 1)) -> None:
    """Three tickets on one topic within hours: a ticket spike, news."""
    store(rig.engine, rig.rules, [ticket(account, now - h * HOUR, f"{account}-T{h}", topic=topic, priority="high")
                                  for h in hours_ago], now=now)


def kinds(rig) -> list[tuple[int, str, str]]:
    with rig.engine.connect() as conn:
        return [(a.stall_id, a.channel, a.kind) for a in conn.execute(select(ALERT).order_by(ALERT.c.id))]


def test_a_new_reason_edits_the_accounts_one_ping_with_one_thread_reply(make_rig):
    rig = make_rig()
    now = now_utc()
    stall_step_account(rig, "acme", now - HOUR, arr=15000)
    scan(rig.engine, rig.rules, now - HOUR, hooks=rig.hooks)
    rig.send()
    dm = rig.fake.dm_channel(OWNER)
    [dm_post], [channel_post] = posts(rig.fake, dm), posts(rig.fake, ALERTS)
    [step] = live_stalls(rig.engine, "acme")
    rig.fake.clear_calls()

    spike(rig, "acme", now)
    scan(rig.engine, rig.rules, now, only=["acme"], hooks=rig.hooks)
    rig.send()
    assert {s.rule for s in live_stalls(rig.engine, "acme")} == {"step_stall", "ticket_spike"}
    assert posts(rig.fake, dm) == [] and posts(rig.fake, ALERTS) == []  # no second ping
    for channel, original in ((dm, dm_post), (ALERTS, channel_post)):
        [edit] = [c for c in rig.fake.calls("chat.update") if c.body["channel"] == channel]
        assert edit.body["ts"] == original.response["ts"]
        shown = blocks_text(edit)
        assert "2 reasons" in shown and "on 'Create a project'" in shown and "SSO tickets" in shown.replace("sso", "SSO")
        [reply] = posts(rig.fake, channel, replies=True)
        assert reply.body["thread_ts"] == original.response["ts"]
        assert reply.body["text"].startswith("New: ")
        assert len(rig.fake.messages(channel)) == 2  # the ping and its one reply
    spiked = next(s for s in live_stalls(rig.engine, "acme") if s.rule == "ticket_spike")
    assert sorted(kinds(rig)) == sorted([(step.id, OWNER, "ping"), (step.id, ALERTS, "ping"),
                                         (spiked.id, OWNER, "reason"), (spiked.id, ALERTS, "reason")])

    # Routing again, or the unrouted safety net, sends nothing more.
    rig.fake.clear_calls()
    rig.router.route_stalls([step.id, spiked.id], now)
    assert rig.router.route_unrouted(now + HOUR) == 0
    rig.send()
    assert rig.fake.calls() == []


def test_two_stalls_opened_together_are_one_ping(make_rig):
    rig = make_rig()
    now = now_utc()
    # Signed up 15 days ago (seen since then): stalled on the first step and not activated at day 14.
    store(rig.engine, rig.rules, signup("acme", now - 15 * DAY, arr=50000, owner_email=EMAIL), now=now - 15 * DAY)
    report = scan(rig.engine, rig.rules, now, hooks=rig.hooks)
    assert report.opened == 2
    rig.send()
    [ping] = posts(rig.fake, ALERTS)
    assert "2 reasons" in blocks_text(ping) and "not activated" in blocks_text(ping)
    assert [k for _, _, k in kinds(rig)].count("ping") == 2  # the DM and the channel, on the lead stall only


def test_a_reason_that_closes_drops_off_silently_and_the_alert_closes_with_its_last(make_rig):
    rig = make_rig()
    now = now_utc()
    stall_step_account(rig, "acme", now - 2 * HOUR, arr=15000)
    scan(rig.engine, rig.rules, now - 2 * HOUR, hooks=rig.hooks)
    spike(rig, "acme", now - HOUR)
    scan(rig.engine, rig.rules, now - HOUR, only=["acme"], hooks=rig.hooks)
    rig.send()
    [post] = posts(rig.fake, ALERTS)
    rig.fake.clear_calls()

    # The project arrives: the step stall (the lead) closes, the spike is still live.
    store(rig.engine, rig.rules, [track("acme", PROJECT, now - 30 * HOUR)], now=now)
    scan(rig.engine, rig.rules, now, only=["acme"], hooks=rig.hooks)
    rig.send()
    assert [s.rule for s in live_stalls(rig.engine, "acme")] == ["ticket_spike"]
    assert rig.fake.calls("chat.postMessage") == []  # silent: no reply, no new ping
    edit = next(c for c in rig.fake.calls("chat.update") if c.body["channel"] == ALERTS)
    assert edit.body["ts"] == post.response["ts"] and "Create a project" not in blocks_text(edit)
    assert "Resolve" in blocks_text(edit)  # still live: buttons stay

    # Resolving from the ping resolves the alert: every live stall of the account.
    services = Services(engine=rig.engine, settings=rig.settings, rules=rig.rules)
    [lead] = [sid for sid, channel, kind in kinds(rig) if kind == "ping" and channel == ALERTS]
    outcome = actions.resolve(services, lead, OWNER, source="test")
    assert outcome.changed and live_stalls(rig.engine, "acme") == []
    rig.fake.clear_calls()
    rig.router.route_stalls([lead], now)
    rig.send()
    edit = next(c for c in rig.fake.calls("chat.update") if c.body["channel"] == ALERTS)
    assert edit.body["text"].startswith("Resolved") and '"actions"' not in blocks_text(edit)


def test_backlog_is_one_summary_per_owner_never_pinged_nor_escalated(make_rig):
    rig = make_rig()
    now = now_utc()
    # First seen now, with a history that says both have been stuck for weeks (a first connect).
    for account, arr in (("acme", 60000), ("globex", 20000)):
        store(rig.engine, rig.rules, signup(account, now - 20 * DAY, arr=arr, owner_email=EMAIL), now=now)
    report = scan(rig.engine, rig.rules, now, hooks=rig.hooks)
    assert report.opened == 4
    rig.send()
    dm = rig.fake.dm_channel(OWNER)
    [summary] = posts(rig.fake, dm)
    assert posts(rig.fake, ALERTS) == []
    shown = blocks_text(summary)
    assert summary.body["text"].startswith("Backlog: 2 accounts already stalled")
    assert 0 < shown.index("Acme") < shown.index("Globex")  # ranked: the bigger account first
    assert f"For <@{OWNER}>" in shown
    assert {k for _, _, k in kinds(rig)} == {"backlog"}

    # Nothing more on a second routing, the unrouted net, or the escalation check.
    rig.fake.clear_calls()
    rig.router.route_stalls([s.id for s in live_stalls(rig.engine)], now)
    assert rig.router.route_unrouted(now + HOUR) == 0
    assert rig.router.escalate_due(now + 3 * HOUR) == 0
    rig.send()
    assert rig.fake.calls() == []

    # Something new on one of them is news: one ping, with every reason.
    spike(rig, "acme", now + HOUR, hours_ago=(3, 2, 1))
    scan(rig.engine, rig.rules, now + HOUR, only=["acme"], hooks=rig.hooks)
    rig.send(now + HOUR)
    [ping] = posts(rig.fake, ALERTS)
    assert "3 reasons" in blocks_text(ping)


def test_unowned_backlog_goes_to_the_alerts_channel_once(make_rig):
    rig = make_rig()
    now = now_utc()
    store(rig.engine, rig.rules, signup("acme", now - 20 * DAY, arr=60000), now=now)
    scan(rig.engine, rig.rules, now, hooks=rig.hooks)
    rig.send()
    [summary] = posts(rig.fake, ALERTS)
    assert "no owner" in blocks_text(summary)


def test_drafting_from_the_ping_acknowledges_the_alert(make_rig):
    from bot.stalls.drafts import start_draft

    rig = make_rig()
    now = now_utc()
    stall_step_account(rig, "acme", now - HOUR, arr=50000)
    scan(rig.engine, rig.rules, now - HOUR, hooks=rig.hooks)
    rig.send()
    [lead] = {sid for sid, _, kind in kinds(rig) if kind == "ping"}
    services = Services(engine=rig.engine, settings=rig.settings, rules=rig.rules)
    start_draft(services, lead, OWNER, view_id=None, source="test")
    delay = timedelta(minutes=rig.rules.routing.escalate_p0_after_minutes)
    assert rig.router.escalate_due(now + delay + HOUR) == 0
