"""The per-CSM morning DM (bot/slack/morning.py) end to end: events stored and scanned through the
real store and scan, the leader's job (or `stallwatch digest --morning`) enqueues one "dm" per
CSM, the outbox sends it to the fake Slack over HTTP."""

from __future__ import annotations

import json
import re
import threading
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import func, insert, select, update

from bot.cli import main
from bot.scan import scan
from bot.scheduler import Scheduler
from bot.settings import Settings, default_rules_text
from bot.slack.client import web_client
from bot.slack.morning import send_morning
from bot.slack.outbox import OutboxSender
from bot.stalls.context import Wakeups
from storage.db import utcnow
from storage.models import Alert, Note, SlackOutbox
from tests.conftest import WRITE_KEY

from factories import ACCOUNT, PROJECT, STALL, signup, store, track
from slack_inert import assert_all_inert

pytest_plugins = ["tests.fakes.fixtures"]

JANE, BOB, MATE = "U0JANE", "U0BOB", "U0MATE"
ALERT, NOTE, OUTBOX = Alert.__table__, Note.__table__, SlackOutbox.__table__
HOSTILE = ("<!channel> @here <@U0EVIL> <https://evil.example.com|fix> www.evil.example.com "
           "*b* \u202eesrever\u202c &amp; mailto:ceo@evil.example.com")


def rules_file(tmp_path, *, on: bool = True) -> str:
    text = default_rules_text()
    if on:
        text = re.sub(r"(?m)^morning_dm = .*$", "morning_dm = true", text)
    path = tmp_path / f"rules-{on}.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def make_settings(db_url, fake, rules_path) -> Settings:
    return Settings(_env_file=None, DATABASE_URL=db_url, STALLWATCH_WRITE_KEY=WRITE_KEY, SLACK_BOT_TOKEN=fake.token,
                    SLACK_API_URL=fake.url, STALLWATCH_RULES=rules_path)


def send(engine, settings) -> int:
    sender = OutboxSender(engine, lambda: web_client(settings, blocking_retries=False), rules=settings.rules)
    total = 0
    while (n := sender.run_once()):
        total += n
    return total


def dms(fake, user: str) -> list:
    return [c for c in fake.calls("chat.postMessage") if c.body.get("channel") == fake.dm_channel(user) and c.ok]


def stalled(engine, rules, account: str, *, signed_up, scanned, arr: float, name: str | None = None) -> None:
    """An account that signed up at `signed_up` and never created a project, scanned at `scanned`
    (stalled on its first step once it waited 54 hours)."""
    store(engine, rules, signup(account, signed_up, arr=arr, name=name or account.title()), now=signed_up)
    scan(engine, rules, scanned, only=[account])


def own(engine, account: str, user: str) -> None:
    with engine.begin() as conn:  # what bot/slack/owners.py resolves from the owner's email
        conn.execute(update(ACCOUNT).where(ACCOUNT.c.id == account).values(owner_slack_id=user))


def live_stall(engine, account: str) -> int:
    with engine.connect() as conn:
        return conn.execute(select(STALL.c.id).where(STALL.c.account_id == account,
                                                     STALL.c.open_key.is_not(None))).scalar_one()


@pytest.fixture
def world(db_url, engine, fake_slack, tmp_path):
    """Jane's queue: acme (stalled two days ago, escalated and noted by a teammate today),
    globex (stalled today: new), hooli (Bob's account, assigned to her); initech was hers and
    resolved this morning. Bob owns umbrella and hooli. Carol (a Slack user too) has nothing live."""
    settings = make_settings(db_url, fake_slack, rules_file(tmp_path))
    rules = settings.rules
    now = utcnow().replace(microsecond=0)
    # The tests run the morning again up to 30 minutes later "the same day": never from the
    # day's last hour (the next day's run would be a new one; this failed from 23:30 UTC).
    if outcome_day(rules, now + timedelta(hours=1)) != outcome_day(rules, now):
        now -= timedelta(hours=1)
    two_days_ago = now - timedelta(days=2)
    stalled(engine, rules, "acme", signed_up=now - timedelta(days=6), scanned=two_days_ago, arr=250_000, name="Acme")
    stalled(engine, rules, "initech", signed_up=now - timedelta(days=6), scanned=two_days_ago, arr=90_000,
            name="Initech")
    stalled(engine, rules, "globex", signed_up=now - timedelta(days=4), scanned=now, arr=1_000, name="Globex")
    stalled(engine, rules, "umbrella", signed_up=now - timedelta(days=5), scanned=now, arr=500_000, name="Umbrella")
    stalled(engine, rules, "hooli", signed_up=now - timedelta(days=5), scanned=now, arr=40_000, name="Hooli")
    store(engine, rules, signup("carol-co", now - timedelta(hours=5), arr=10, name="Carol Co"), now=now)
    # initech creates its project this morning: the scan resolves its stall
    store(engine, rules, [track("initech", PROJECT, now - timedelta(hours=3))], now=now - timedelta(hours=3))
    scan(engine, rules, now - timedelta(hours=3), only=["initech"])
    for account, user in (("acme", JANE), ("initech", JANE), ("globex", JANE), ("umbrella", BOB),
                          ("hooli", BOB), ("carol-co", "U0CAROL")):
        own(engine, account, user)
    acme = live_stall(engine, "acme")
    with engine.begin() as conn:
        conn.execute(update(STALL).where(STALL.c.id == live_stall(engine, "hooli")).values(assignee=JANE))
        conn.execute(insert(ALERT).values(stall_id=acme, channel="C0MANAGERS", kind="escalation", priority="P0",
                                          created_at=now - timedelta(hours=1), updated_at=now - timedelta(hours=1)))
        conn.execute(insert(NOTE), [
            dict(account_id="acme", author=MATE, text="called them", created_at=now - timedelta(hours=2)),
            dict(account_id="acme", author=JANE, text="my own", created_at=now - timedelta(hours=2)),
            dict(account_id="acme", author=MATE, text="last week", created_at=now - timedelta(days=3)),
        ])
    return engine, settings, rules, now


def texts(call) -> str:
    return json.dumps(call.body["blocks"], ensure_ascii=False).replace("\u2060", "")


def test_one_dm_per_csm_with_their_ranked_queue_and_what_changed(world, fake_slack):
    engine, settings, rules, now = world
    assert live_stall(engine, "acme") and not [s for s in _stalls(engine, "initech") if s.open_key]  # as set up
    outcome = send_morning(engine, rules, now)
    assert sorted(outcome.sent) == [BOB, JANE]  # Carol has nothing live: nothing for her
    send(engine, settings)

    [jane] = dms(fake_slack, JANE)
    body = texts(jane)
    # only her queue: her accounts and the one assigned to her, ranked (ARR decides here)
    assert "Umbrella" not in body and "Carol Co" not in body
    rows = [b for b in jane.body["blocks"] if str(b.get("block_id", "")).startswith("morning-")]
    names = [re.search(r"\*(.+?)\*", b["text"]["text"]).group(1) for b in rows]
    assert names == ["Acme", "Hooli", "Globex"]
    assert "assigned to <@U0JANE>" in body
    assert jane.body["text"] == "Good morning: 3 stalled accounts in your queue (2 new since yesterday)"
    # what changed since yesterday, in one context line
    [line] = [e["text"] for b in jane.body["blocks"] if b["type"] == "context" for e in b["elements"]
              if e["text"].startswith("Since yesterday")]
    assert line == ("Since yesterday: 2 new (Globex, Hooli) · 1 resolved (Initech) · 1 escalated (Acme)"
                    " · 1 note by others on Acme")

    [bob] = dms(fake_slack, BOB)
    assert "Umbrella" in texts(bob) and "Hooli" in texts(bob) and "Acme" not in texts(bob)
    assert fake_slack.calls("conversations.open") and not dms(fake_slack, "U0CAROL")


def test_a_second_run_the_same_day_sends_nothing(world, fake_slack):
    engine, settings, rules, now = world
    assert len(send_morning(engine, rules, now).sent) == 2
    again = send_morning(engine, rules, now + timedelta(minutes=30))  # a restart, another process
    assert again.sent == [] and sorted(again.already) == [BOB, JANE]
    send(engine, settings)
    assert len(dms(fake_slack, JANE)) == 1 and len(dms(fake_slack, BOB)) == 1
    with engine.connect() as conn:
        keys = sorted(conn.execute(select(OUTBOX.c.key).where(OUTBOX.c.key.like("morning:%"))).scalars())
    assert keys == [f"morning:{outcome_day(rules, now)}:{BOB}", f"morning:{outcome_day(rules, now)}:{JANE}"]
    # the next day: one more each, and nothing changed in between
    assert sorted(send_morning(engine, rules, now + timedelta(days=1)).sent) == [BOB, JANE]
    send(engine, settings)
    _, jane = dms(fake_slack, JANE)
    assert "Since yesterday: no change in your queue." in texts(jane)


def test_two_threads_at_once_send_one_dm_each(world, fake_slack):
    engine, settings, rules, now = world
    barrier = threading.Barrier(4)
    outcomes, errors = [], []

    def run():
        try:
            barrier.wait(timeout=10)
            outcomes.append(send_morning(engine, rules, now))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert sorted(u for o in outcomes for u in o.sent) == [BOB, JANE]
    send(engine, settings)
    assert len(dms(fake_slack, JANE)) == 1 and len(dms(fake_slack, BOB)) == 1


def test_off_by_default(db_url, engine, fake_slack, tmp_path, world):
    _, _, _, now = world
    settings = make_settings(db_url, fake_slack, rules_file(tmp_path, on=False))
    assert settings.rules.digest.morning_dm is False and settings.rules.digest.morning_time == "08:30"
    assert Scheduler(engine, settings, settings.rules)._aps.get_job("morning_dm") is None
    outcome = send_morning(engine, settings.rules, now)
    assert outcome.sent == [] and "off" in outcome.summary()
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(OUTBOX)).scalar_one() == 0


def test_the_leader_job_runs_at_morning_time_and_wakes_the_sender(world, fake_slack):
    engine, settings, rules, now = world
    wakeups = Wakeups()
    scheduler = Scheduler(engine, settings, rules, wakeups=wakeups)
    job = scheduler._aps.get_job("morning_dm")
    fields = {f.name: str(f) for f in job.trigger.fields}
    assert (fields["hour"], fields["minute"]) == ("8", "30") and str(job.trigger.timezone) == rules.digest.timezone
    scheduler._morning()
    assert wakeups.slack_outbox.is_set()
    scheduler._morning()  # fired twice (a new leader the same morning): still one DM each
    send(engine, settings)
    assert len(dms(fake_slack, JANE)) == 1 and len(dms(fake_slack, BOB)) == 1


def test_a_long_queue_ends_with_and_n_more_and_stays_in_block_kit_limits(db_url, engine, fake_slack, tmp_path):
    now = utcnow().replace(microsecond=0)
    settings = make_settings(db_url, fake_slack, rules_file(tmp_path))
    rules = settings.rules
    names = [f"Acct {i:02d} " + "x" * 100 for i in range(20)]
    for i, name in enumerate(names):
        stalled(engine, rules, f"a{i}", signed_up=now - timedelta(days=5), scanned=now, arr=1_000 * (i + 1),
                name=name)
        own(engine, f"a{i}", JANE)
    send_morning(engine, rules, now)
    send(engine, settings)
    [dm] = dms(fake_slack, JANE)
    blocks = dm.body["blocks"]
    assert len(blocks) <= 50 and len(json.dumps(blocks)) < 40_000
    assert "…and 5 more: `/stalls mine`" in texts(dm)
    rows = [b["text"]["text"] for b in blocks if b["type"] == "section"]
    assert [int(re.search(r"Acct (\d+)", r).group(1)) for r in rows] == list(range(19, 4, -1))  # top 15 by ARR


def test_hostile_account_names_are_inert(db_url, engine, fake_slack, tmp_path):
    now = utcnow().replace(microsecond=0)
    settings = make_settings(db_url, fake_slack, rules_file(tmp_path))
    rules = settings.rules
    stalled(engine, rules, "evil", signed_up=now - timedelta(days=6), scanned=now - timedelta(days=2), arr=5,
            name=HOSTILE)
    stalled(engine, rules, "evil2", signed_up=now - timedelta(days=4), scanned=now, arr=5, name=HOSTILE + " 2")
    own(engine, "evil", JANE)
    own(engine, "evil2", JANE)
    send_morning(engine, rules, now)
    send(engine, settings)
    [dm] = dms(fake_slack, JANE)
    assert "esreve" in texts(dm) and "evil" in texts(dm)  # the names are there, made harmless
    assert assert_all_inert([dm], markers=["evil.example.com"], users=[JANE]) == 1


def test_cli_digest_morning_dry_run_then_once(world, db_url):
    engine, settings, rules, now = world
    env = {"DATABASE_URL": db_url, "STALLWATCH_RULES": rules_file_path(settings), "SLACK_BOT_TOKEN": None}
    dry = CliRunner().invoke(main, ["digest", "--morning", "--dry-run"], env=env, catch_exceptions=True)
    assert dry.exit_code == 0, dry.output
    assert f"== {JANE}" in dry.output and "Since yesterday: 2 new" in dry.output
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(OUTBOX)).scalar_one() == 0
    first = CliRunner().invoke(main, ["digest", "--morning"], env=env, catch_exceptions=True)
    assert first.exit_code == 0 and "2 queued" in first.output, first.output
    second = CliRunner().invoke(main, ["digest", "--morning"], env=env, catch_exceptions=True)
    assert second.exit_code == 0 and "0 queued, 2 already sent today" in second.output, second.output


# --- helpers ---------------------------------------------------------------------------------------

def _stalls(engine, account: str) -> list:
    with engine.connect() as conn:
        return list(conn.execute(select(STALL).where(STALL.c.account_id == account)))


def outcome_day(rules, now):
    from bot.slack.morning import morning_day

    return morning_day(now, rules)


def rules_file_path(settings) -> str:
    return settings.rules_path
