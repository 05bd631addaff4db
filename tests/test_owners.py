"""Owners stay current (bot/slack/owners.py): a change of owner_email clears and re-resolves
the Slack owner, every CSM is mapped at start, users.lookupByEmail is paced and backs off on
429, an email Slack does not know is retried daily, and an open ping follows its account to
the new owner. Through the real store, the live app and the fake Slack on loopback."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from sqlalchemy import select

from bot.app import create_app
from bot.scan import scan
from bot.slack.owners import MOVED, OwnerResolver, unknown_key
from bot.stalls.context import Services, Wakeups
from storage.models import Account, Alert, AuditEntry, Meta, SlackOutbox
from tests.conftest import LiveServer
from tests.factories import DAY, T0, group, signup, store
from tests.helpers import group_call, post_v1
from tests.test_router import ALERTS, EMAIL, OWNER, make_settings, now_utc, rules_file, stall_step_account

pytest_plugins = ["tests.fakes.fixtures"]

UTC = timezone.utc
ACCOUNT = Account.__table__
ALERT = Alert.__table__
AUDIT = AuditEntry.__table__
META = Meta.__table__
OUTBOX = SlackOutbox.__table__
BOB, BOB_EMAIL = "U0BOB", "bob@stallwatch-test.com"
GHOST = "ghost@stallwatch-test.com"  # no Slack user


@pytest.fixture
def settings_(db_url, fake_slack, tmp_path):
    fake_slack.add_user(OWNER, EMAIL)
    fake_slack.add_user(BOB, BOB_EMAIL)
    return make_settings(db_url, fake_slack, rules_file(tmp_path))


def owner_of(engine, account: str):
    with engine.connect() as conn:
        return conn.execute(select(ACCOUNT.c.owner_email, ACCOUNT.c.owner_slack_id)
                            .where(ACCOUNT.c.id == account)).first()


def owner_audits(engine) -> list:
    with engine.connect() as conn:
        return list(conn.execute(select(AUDIT).where(AUDIT.c.action == "account.owner_changed").order_by(AUDIT.c.id)))


def lookups(fake) -> list[str]:
    return [c.body.get("email") for c in fake.calls("users.lookupByEmail")]


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


# --------------------------------------------------------------------------- writers clear it


def test_a_new_owner_email_clears_the_slack_owner_in_the_same_write_and_is_audited(engine, settings_, fake_slack):
    rules = settings_.rules
    store(engine, rules, [group("acme", T0, owner_email=EMAIL), group("globex", T0, owner_email=BOB_EMAIL)], now=T0)
    resolver = OwnerResolver(engine, settings_, rules)
    assert resolver.resolve_pending().resolved == 2
    assert owner_of(engine, "acme").owner_slack_id == OWNER
    assert owner_audits(engine) == []  # a first owner is no reassignment

    # Reassigned to an email no account maps yet: cleared, audited with both emails only.
    store(engine, rules, [group("acme", T0 + DAY, owner_email="carol@stallwatch-test.com")], now=T0 + DAY)
    assert tuple(owner_of(engine, "acme")) == ("carol@stallwatch-test.com", None)
    [entry] = owner_audits(engine)
    assert (entry.actor, entry.account_id, entry.source) == ("system", "acme", "segment")
    assert entry.detail == {"from": EMAIL, "to": "carol@stallwatch-test.com"}

    # Reassigned to an email another account already maps: set at once, no lookup.
    fake_slack.clear_calls()
    store(engine, rules, [group("acme", T0 + 2 * DAY, owner_email=BOB_EMAIL)], now=T0 + 2 * DAY)
    assert owner_of(engine, "acme").owner_slack_id == BOB
    assert len(owner_audits(engine)) == 2
    # The same owner again (whatever the case) and other traits change nothing of it.
    store(engine, rules, [group("acme", T0 + 3 * DAY, owner_email=BOB_EMAIL.upper(), arr=9000)], now=T0 + 3 * DAY)
    assert owner_of(engine, "acme").owner_slack_id == BOB and len(owner_audits(engine)) == 2
    assert resolver.resolve_pending().pending == 0 and lookups(fake_slack) == []


def test_owner_change_through_v1_group_wakes_the_resolver_which_maps_the_new_owner(engine, settings_, fake_slack):
    wakeups = Wakeups()
    services = Services(engine=engine, settings=settings_, rules=settings_.rules, wakeups=wakeups)
    resolver = OwnerResolver(engine, settings_, settings_.rules, wakeups=wakeups)
    stop = threading.Event()
    app = create_app(services=services, on_events_stored=lambda ids: None)
    with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=30) as client:
        thread = resolver.start(stop)
        try:
            assert post_v1(client, "/v1/group", group_call("acme", {"name": "Acme", "owner_email": EMAIL})).status_code == 200
            assert wait_until(lambda: owner_of(engine, "acme").owner_slack_id == OWNER)
            assert post_v1(client, "/v1/group", group_call("acme", {"owner_email": BOB_EMAIL})).status_code == 200
            assert wait_until(lambda: owner_of(engine, "acme").owner_slack_id == BOB)
        finally:
            stop.set()
            thread.join(timeout=10)
    assert not thread.is_alive()
    assert lookups(fake_slack) == [EMAIL, BOB_EMAIL]  # each owner looked up once
    [entry] = owner_audits(engine)
    assert entry.detail == {"from": EMAIL, "to": BOB_EMAIL}


def test_import_accounts_clears_and_re_resolves_the_owner(db_url, engine, settings_, fake_slack, tmp_path):
    from click.testing import CliRunner

    from bot.cli import main

    store(engine, settings_.rules, [group("acme", T0, owner_email=EMAIL)], now=T0)
    OwnerResolver(engine, settings_, settings_.rules).resolve_pending()
    assert owner_of(engine, "acme").owner_slack_id == OWNER
    path = tmp_path / "accounts.csv"
    path.write_text("account_id,name,domain,plan,arr,owner_email,renewal_date\n"
                    "acme,Acme,,,,Bob@stallwatch-test.com,\n", encoding="utf-8")
    env = {"DATABASE_URL": db_url, "STALLWATCH_RULES": None, "SLACK_BOT_TOKEN": fake_slack.token,
           "SLACK_API_URL": fake_slack.url}
    result = CliRunner().invoke(main, ["import-accounts", str(path)], env=env, catch_exceptions=True)
    assert result.exit_code == 0, result.output
    assert "1 mapped" in result.output
    assert tuple(owner_of(engine, "acme")) == (BOB_EMAIL, BOB)
    [entry] = owner_audits(engine)
    assert (entry.source, entry.detail) == ("import", {"from": EMAIL, "to": BOB_EMAIL})
    assert lookups(fake_slack) == [EMAIL, BOB_EMAIL]


# --------------------------------------------------------------------------- mapped at start


def test_stalls_mine_and_app_home_list_a_csms_accounts_after_the_start_up_mapping_before_any_ping(fake_slack, engine, db_url):
    from bot.cli import _start_slack, _stop_slack
    from slack_signing import event_callback, make_slack_harness

    with make_slack_harness(fake_slack, engine, db_url) as slack:
        store(engine, slack.rules, signup("acme", T0, arr=50000, name="Acme", owner_email="owner@x.com"), now=T0)
        scan(engine, slack.rules, T0 + 3 * DAY)  # stalls opened; no router: no ping, no lookup
        fake_slack.add_user("U0OWNER", "owner@x.com")
        _, method = slack.command("/stalls", "mine", "U0OWNER")
        assert "Acme" not in json.dumps(slack.answer(method))  # not mapped yet: nothing is theirs
        fake_slack.clear_calls()

        services = Services(engine=engine, settings=slack.settings, rules=slack.rules)
        router, stop, wake, thread = _start_slack(services, None)  # what `serve` does at start
        try:
            assert wait_until(lambda: owner_of(engine, "acme").owner_slack_id == "U0OWNER")
        finally:
            _stop_slack(services, router, stop, wake, thread)
        assert not router.owners.thread.is_alive()
        _, method = slack.command("/stalls", "mine", "U0OWNER")
        assert "Acme" in json.dumps(slack.answer(method))
        # App Home too.
        slack.post(event_callback({"type": "app_home_opened", "user": "U0OWNER", "tab": "home", "event_ts": "1.0"}))
        [home] = fake_slack.wait_for_calls("views.publish", 1, timeout=10)
        assert "*Acme*" in json.dumps(home.body["view"], ensure_ascii=False)
        assert fake_slack.calls("chat.postMessage") == []  # mapped without any ping


# --------------------------------------------------------------------------- Slack's limits


def test_a_429_is_waited_out_with_retry_after_and_the_lookup_tried_again(engine, settings_, fake_slack):
    store(engine, settings_.rules, [group("acme", T0, owner_email=EMAIL)], now=T0)
    sleeps: list[float] = []
    resolver = OwnerResolver(engine, settings_, settings_.rules, sleep=sleeps.append)
    # The client's own handler waits out the first 429; the resolver the second.
    fake_slack.fail_next("users.lookupByEmail", status=429, retry_after=1, times=2)
    stats = resolver.resolve_pending()
    assert (stats.rate_limited, stats.resolved) == (1, 1)
    assert sleeps == [pytest.approx(1.0, abs=0.2)]  # Retry-After
    assert [c.status for c in fake_slack.calls("users.lookupByEmail")] == [429, 429, 200]
    assert owner_of(engine, "acme").owner_slack_id == OWNER


def test_lookups_are_paced_to_the_rate_limit_after_a_burst(engine, settings_, fake_slack):
    emails = [f"csm{i}@stallwatch-test.com" for i in range(5)]
    for i, email in enumerate(emails):
        fake_slack.add_user(f"U0CSM{i}", email)
    store(engine, settings_.rules, [group(f"acct-{i}", T0, owner_email=e) for i, e in enumerate(emails)], now=T0)
    clock = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock[0] += seconds

    resolver = OwnerResolver(engine, settings_, settings_.rules, sleep=sleep, monotonic=lambda: clock[0],
                             per_minute=60, burst=2)
    assert resolver.resolve_pending().resolved == 5
    assert len(sleeps) == 3 and sum(sleeps) == pytest.approx(3.0)  # 2 at once, then one a second


def test_an_email_slack_does_not_know_is_remembered_and_retried_daily(engine, settings_, fake_slack):
    rules = settings_.rules
    store(engine, rules, [group("haunted", T0, owner_email=GHOST), group("acme", T0, owner_email=EMAIL)], now=T0)
    now = [datetime.now(UTC)]
    resolver = OwnerResolver(engine, settings_, rules, clock=lambda: now[0])
    stats = resolver.resolve_pending()
    assert (stats.resolved, stats.not_found) == (1, 1)
    with engine.connect() as conn:
        [mark] = conn.execute(select(META).where(META.c.key.like("slack_owner_unknown:%"))).all()
    assert mark.key == unknown_key(GHOST) and "ghost" not in mark.key + mark.value  # no email stored

    # Every minute after: neither a pass nor the router's ping-time lookup asks Slack again.
    fake_slack.clear_calls()
    now[0] += timedelta(minutes=1)
    assert resolver.resolve_pending().skipped == 1
    assert resolver.slack_id(GHOST) is None
    now[0] += timedelta(hours=12)
    assert resolver.resolve_pending().skipped == 1
    assert lookups(fake_slack) == []

    # A day later (the daily job) it is asked again; once Slack knows it, it is mapped.
    fake_slack.add_user("U0GHOST", GHOST)
    now[0] += timedelta(hours=12)
    assert resolver.resolve_pending().resolved == 1
    assert lookups(fake_slack) == [GHOST]
    assert owner_of(engine, "haunted").owner_slack_id == "U0GHOST"
    with engine.connect() as conn:
        assert conn.execute(select(META).where(META.c.key == unknown_key(GHOST))).first() is None


def test_the_daily_job_is_registered_leader_only(engine, settings_):
    from bot.scheduler import Scheduler

    scheduler = Scheduler(engine, settings_, settings_.rules)
    resolver = OwnerResolver(engine, settings_, settings_.rules)
    scheduler.add_owner_jobs(resolver)
    job = scheduler._aps.get_job("resolve_owners")
    assert job is not None and job.trigger.interval == timedelta(days=1)
    store(engine, settings_.rules, [group("acme", T0, owner_email=EMAIL)], now=T0)
    job.func()  # not the leader: nothing looked up
    assert owner_of(engine, "acme").owner_slack_id is None
    scheduler.leader.is_leader = True
    job.func()
    assert owner_of(engine, "acme").owner_slack_id == OWNER


# --------------------------------------------------------------------------- the open ping moves


def test_an_open_ping_moves_to_the_new_owner_once(engine, settings_, fake_slack):
    from tests.test_router import Rig, blocks_text, posts

    rig = Rig(engine, settings_, fake_slack)
    now = now_utc()
    stall_step_account(rig, "acme", now, arr=50000)
    scan(engine, rig.rules, now, hooks=rig.hooks)
    rig.send()
    jane_dm, bob_dm = fake_slack.dm_channel(OWNER), fake_slack.dm_channel(BOB)
    [first] = posts(fake_slack, jane_dm)
    [ping] = [a for a in rig.alerts("ping") if a.channel == OWNER]
    fake_slack.clear_calls()

    store(engine, rig.rules, [group("acme", now, name="Acme", owner_email=BOB_EMAIL)], now=now)
    stats = rig.router.owners.resolve_pending()
    assert (stats.resolved, stats.moved) == (1, 1)
    rig.send()

    # Jane's DM now says who has it, with no buttons.
    [edit] = [c for c in fake_slack.calls("chat.update") if c.body["channel"] == jane_dm]
    assert edit.body["ts"] == first.response["ts"]
    assert f"reassigned to <@{BOB}>" in edit.body["text"]
    assert "actions" not in blocks_text(edit) and "stall_resolve" not in blocks_text(edit)
    # Bob gets the ping in a DM, with its buttons; the alerts channel's ping names him.
    [bob_post] = posts(fake_slack, bob_dm)
    assert "stall_resolve" in blocks_text(bob_post)
    [channel_edit] = [c for c in fake_slack.calls("chat.update") if c.body["channel"] == ALERTS]
    assert f"<@{BOB}>" in blocks_text(channel_edit)
    with engine.connect() as conn:
        rows = {(a.channel, a.kind): a for a in conn.execute(select(ALERT).where(ALERT.c.stall_id == ping.stall_id))}
        keys = [r.key for r in conn.execute(select(OUTBOX.c.key).where(OUTBOX.c.key.like(f"ping:{ping.stall_id}:%")))]
    assert rows[(OWNER, MOVED)].closed_at is not None
    assert rows[(BOB, "ping")].closed_at is None and rows[(BOB, "ping")].ts == bob_post.response["ts"]
    assert rows[(BOB, "ping")].created_at == ping.created_at  # the alert's age (its escalation) is kept
    assert sorted(keys) == sorted([f"ping:{ping.stall_id}:{OWNER}", f"ping:{ping.stall_id}:{ALERTS}",
                                   f"ping:{ping.stall_id}:{BOB}"])

    # Once: another pass, another scan and routing move and post nothing more.
    fake_slack.clear_calls()
    outbox_rows = len(rig.outbox())
    assert rig.router.owners.resolve_pending().moved == 0
    assert rig.router.owners.move_open_pings() == 0
    scan(engine, rig.rules, full=True, hooks=rig.hooks)
    rig.router.route_stalls([ping.stall_id])
    rig.send()
    assert fake_slack.calls("chat.postMessage") == [] and len(rig.outbox()) == outbox_rows


def test_a_ping_reassigned_to_someone_not_in_slack_tells_the_former_owner_then_reaches_the_new_one(
        engine, settings_, fake_slack):
    from tests.test_router import Rig, posts

    rig = Rig(engine, settings_, fake_slack)
    now = now_utc()
    stall_step_account(rig, "acme", now, arr=50000)
    scan(engine, rig.rules, now, hooks=rig.hooks)
    rig.send()
    [ping] = [a for a in rig.alerts("ping") if a.channel == OWNER]
    fake_slack.clear_calls()

    store(engine, rig.rules, [group("acme", now, name="Acme", owner_email=GHOST)], now=now)
    clock = [datetime.now(UTC)]
    resolver = OwnerResolver(engine, settings_, rig.rules, clock=lambda: clock[0])
    stats = resolver.resolve_pending()
    assert (stats.not_found, stats.moved) == (1, 1)
    rig.send()
    [edit] = fake_slack.calls("chat.update")[:1]
    assert edit.body["channel"] == fake_slack.dm_channel(OWNER)
    assert "reassigned to ghost@" in edit.body["text"].replace("\u2060", "")
    assert fake_slack.calls("conversations.open") == []  # nobody to DM yet

    # The next day the new owner is in Slack: the daily pass maps them and they get the ping.
    fake_slack.add_user("U0GHOST", GHOST)
    clock[0] += timedelta(days=1)
    assert resolver.resolve_pending().moved == 1
    rig.send(clock[0])  # the resolver's clock: the row is due then
    [dm] = posts(fake_slack, fake_slack.dm_channel("U0GHOST"))
    assert "Acme" in dm.body["text"]
    assert resolver.resolve_pending().moved == 0
    with engine.connect() as conn:
        kinds = {(a.channel, a.kind) for a in conn.execute(select(ALERT).where(ALERT.c.stall_id == ping.stall_id))}
    assert {(OWNER, MOVED), ("U0GHOST", "ping"), (ALERTS, "ping")} <= kinds
