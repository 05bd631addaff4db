"""The daily digest (bot/slack/digest.py) end to end: SQL -> DigestRun + outbox -> fake Slack over HTTP,
on SQLite and (with STALLWATCH_TEST_POSTGRES_URL) PostgreSQL."""

from __future__ import annotations

import json
import re
import threading
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner
from sqlalchemy import func, insert, select

from benchmarks.digest import account_row, stall_row
from bot.cli import main
from bot.settings import Settings, default_rules_text
from bot.slack.client import web_client
from rules.routing import next_digest_at
from bot.slack.digest import build_digest, post_digest
from bot.slack.outbox import OutboxSender
from bot.slack.render.digest import digest_messages
from storage.models import Account, DigestRun, SlackOutbox, Stall, TrackingIssue
from tests.conftest import WRITE_KEY

pytest_plugins = ["tests.fakes.fixtures"]

UTC = timezone.utc
ACCOUNT, STALL = Account.__table__, Stall.__table__
RUN, OUTBOX, TRACKING = DigestRun.__table__, SlackOutbox.__table__, TrackingIssue.__table__
DIGEST, OPS = "C0DIGEST", "C0OPS"


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def rules_file(tmp_path, *, max_items: int = 40) -> str:
    text = re.sub(r"(?m)^max_items = .*$", f"max_items = {max_items}", default_rules_text())
    path = tmp_path / f"rules-{max_items}.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def make_settings(db_url, fake, rules_path, *, channel: str | None = DIGEST, ops: str | None = OPS) -> Settings:
    return Settings(_env_file=None, DATABASE_URL=db_url, STALLWATCH_WRITE_KEY=WRITE_KEY,
                    SLACK_BOT_TOKEN=fake.token, SLACK_API_URL=fake.url, STALLWATCH_DIGEST_CHANNEL=channel,
                    STALLWATCH_OPS_CHANNEL=ops, STALLWATCH_RULES=rules_path)


def seed(engine, now: datetime) -> None:
    """Two owners with ranked open stalls, one snoozed, one resolved today, one recent signup
    cohort for the funnel, and an unresolved tracking issue."""
    accounts = [
        account_row(1, now, owner="jane@example.com", arr=50_000, signup_days=5, steps_done=3, track="high_touch"),
        account_row(2, now, owner="jane@example.com", arr=2_400, signup_days=6, steps_done=2),
        account_row(3, now, owner="bob@example.com", arr=120_000, signup_days=4, steps_done=4, activated=True,
                    track="high_touch"),
        account_row(4, now, owner="bob@example.com", arr=12_000, signup_days=3, steps_done=1),
        account_row(5, now, owner="amy@example.com", arr=7_000, signup_days=2, steps_done=1, track="self_serve"),
        account_row(6, now, owner="amy@example.com", arr=9_000, signup_days=40, steps_done=4, activated=True),
    ]
    accounts[0]["name"] = "Acme Corp"
    stalls = [
        stall_row("acct-1", now, score=60_000, priority="P0", opened_days=0.5),
        stall_row("acct-2", now, score=2_000, priority="P3", opened_days=2),
        stall_row("acct-3", now, score=90_000, priority="P0", opened_days=0.2),
        stall_row("acct-4", now, score=10_000, priority="P2", opened_days=5),
        stall_row("acct-5", now, score=5_000, priority="P2", status="snoozed", opened_days=1.5),
        stall_row("acct-6", now, score=8_000, priority="P2", status="resolved", resolved_hours=3),
    ]
    with engine.begin() as conn:
        conn.execute(insert(ACCOUNT), accounts)
        conn.execute(insert(STALL), stalls)
        conn.execute(insert(TRACKING), [dict(
            kind="missing_property", event_name="Signed Up", property="plan", first_seen_at=now - timedelta(hours=5),
            last_seen_at=now, count=17, detail="")])


def send(engine, settings) -> int:
    sender = OutboxSender(engine, lambda: web_client(settings, blocking_retries=False), rules=settings.rules)
    total = 0
    while (n := sender.run_once()):
        total += n
    return total


def posts(fake, channel: str) -> list:
    return [c for c in fake.calls("chat.postMessage") if c.body.get("channel") == channel and c.ok]


def count(engine, table, *where) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


@pytest.fixture
def rig(db_url, engine, fake_slack, tmp_path):
    now = now_utc()
    seed(engine, now)
    settings = make_settings(db_url, fake_slack, rules_file(tmp_path))
    return engine, settings, settings.rules, now


# ------------------------------------------------------------------ content


def test_build_digest_numbers(rig):
    engine, settings, rules, now = rig
    d = build_digest(engine, rules, now)
    assert d.new_stalls == 2  # opened in the last 24 h: acct-1, acct-3
    assert d.arr_at_risk == 50_000 + 2_400 + 120_000 + 12_000 + 7_000  # live stalls (snoozed included)
    assert d.resolved_since_yesterday == 1
    assert (d.total_open, d.snoozed) == (4, 1)
    assert [r.account_name for r in d.rows] == ["Account 3", "Acme Corp", "Account 4", "Account 2"]  # ranked
    assert all(r.status == "open" for r in d.rows)
    # Mature cohorts only: acct-1..5 are short of day 14, acct-6 passed it before the 14-day window.
    assert d.activation_by_track == {"high_touch": None, "standard": None, "self_serve": None}
    assert [(t.track, t.accounts) for t in d.funnel.tracks] == [("high_touch", 0), ("standard", 0), ("self_serve", 0)]
    assert [i.event_name for i in d.tracking_issues] == ["Signed Up"]
    assert d.funnel is not None and d.funnel.days == 14


def test_digest_activation_line_counts_mature_cohorts_with_their_size(rig):
    """Accounts past day 14 that signed up in the 14 days before it; the young ones of the seed are left out."""
    engine, settings, rules, now = rig
    mature = [account_row(10 + i, now, owner=None, arr=60_000, signup_days=20, steps_done=4, activated=i < 3,
                          track="high_touch") for i in range(5)]
    mature += [account_row(20 + i, now, owner=None, arr=9_000, signup_days=16, activated=i == 0) for i in range(2)]
    with engine.begin() as conn:
        conn.execute(insert(ACCOUNT), mature)
    d = build_digest(engine, rules, now)
    assert d.activation_by_track == {"high_touch": 3 / 5, "standard": 1 / 2, "self_serve": None}
    blocks = json.dumps([b.to_dict() for b in digest_messages(d)[0]], ensure_ascii=False)
    assert ("Activated (Report Shared) by day 14: High touch 60% (n=5) · Standard – (n=2) · Self serve – (n=0)"
            in blocks)


# ------------------------------------------------------------------ posting once


def test_digest_posts_once_with_chart_and_ops(rig, fake_slack):
    engine, settings, rules, now = rig
    outcome = post_digest(engine, settings, rules, now)
    assert outcome.posted and outcome.messages == 1
    day = outcome.day
    assert outcome.keys == [f"digest:{day}:{DIGEST}:0", f"digest:{day}:{DIGEST}:chart", f"ops:{day}:{DIGEST}"]
    send(engine, settings)

    [digest] = posts(fake_slack, DIGEST)
    assert digest.body["text"].startswith(f"Stall digest for {day}: 2 new stalls, $191,400 ARR at risk")
    body = json.dumps(digest.body["blocks"]).replace("\\u2060", "")  # as read: no link-breaking joiners
    assert "Daily stall digest" in body and "ARR at risk" in body
    assert "jane@example.com" in body and "bob@example.com" in body  # owner groups
    assert body.index("bob@example.com") < body.index("jane@example.com")  # bob has the top stall
    assert "1 snoozed not listed" in body and "Account 5" not in body
    assert "Weakest stage" in body and "Tracking issues" in body
    assert "digest_row_menu" in body  # inline Assign/Snooze

    # The chart: files.getUploadURLExternal -> upload -> files.completeUploadExternal
    [get_url] = fake_slack.calls("files.getUploadURLExternal")
    [upload] = fake_slack.calls("files.upload_url")
    [complete] = fake_slack.calls("files.completeUploadExternal")
    assert get_url.ok and upload.status == 200 and complete.ok
    assert complete.body.get("channel_id") == DIGEST
    [f] = fake_slack.files.values()
    assert f["content"][:8] == b"\x89PNG\r\n\x1a\n"
    # What it shows, in its title and for screen readers (no snapshot yet: today's figures).
    assert f["title"].startswith("Open alerts and ARR at risk by priority, activation by track: since ")
    assert "Open alerts today: " in f["alt_txt"] and "ARR at risk today: " in f["alt_txt"]

    [ops] = posts(fake_slack, OPS)
    assert "Signed Up" in json.dumps(ops.body["blocks"]) and "plan" in json.dumps(ops.body["blocks"])
    with engine.connect() as conn:
        run = conn.execute(select(RUN)).one()
        assert (run.day, run.channel, run.items) == (day, DIGEST, 4) and run.posted_at is not None
        assert conn.execute(select(TRACKING.c.reported_at)).scalar_one() is not None

    # Again the same day (a restart, a manual `stallwatch digest`): nothing more.
    # (later, but well before the next digest moment and its early grace, whatever the time of day)
    later = max(now, min(now + timedelta(hours=3), next_digest_at(now, rules) - timedelta(minutes=10)))
    again = post_digest(engine, settings, rules, later)
    assert not again.posted and "already posted" in again.reason
    assert send(engine, settings) == 0
    assert len(posts(fake_slack, DIGEST)) == 1
    assert len(fake_slack.calls("files.completeUploadExternal")) == 1


def test_two_threads_same_day_post_once(rig, fake_slack):
    engine, settings, rules, now = rig
    barrier = threading.Barrier(4)
    outcomes, errors = [], []

    def run():
        try:
            barrier.wait(timeout=10)
            outcomes.append(post_digest(engine, settings, rules, now))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert sum(o.posted for o in outcomes) == 1
    assert count(engine, RUN) == 1
    assert count(engine, OUTBOX, OUTBOX.c.key.like("digest:%")) == 2  # one message + the chart
    send(engine, settings)
    assert len(posts(fake_slack, DIGEST)) == 1


def test_next_day_posts_again(rig, fake_slack):
    engine, settings, rules, now = rig
    first = post_digest(engine, settings, rules, now)
    second = post_digest(engine, settings, rules, now + timedelta(days=1))
    assert first.posted and second.posted and second.day == first.day + timedelta(days=1)
    # "new since the previous digest": nothing opened between the two runs
    assert second.data.new_stalls == 0
    send(engine, settings)
    texts = [p.body["text"] for p in posts(fake_slack, DIGEST)]
    assert len(texts) == 2
    assert texts[0].startswith(f"Stall digest for {first.day}: 2 new stalls")
    assert texts[1].startswith(f"Stall digest for {second.day}: 0 new stalls")
    assert count(engine, RUN) == 2


def test_and_n_more_past_max_items(db_url, engine, fake_slack, tmp_path):
    now = now_utc()
    seed(engine, now)
    settings = make_settings(db_url, fake_slack, rules_file(tmp_path, max_items=2))
    outcome = post_digest(engine, settings, settings.rules, now)
    assert outcome.posted and len(outcome.data.rows) == 2
    send(engine, settings)
    [digest] = posts(fake_slack, DIGEST)
    body = json.dumps(digest.body["blocks"])
    assert "and 2 more" in body and "/stalls all" in body
    assert "Account 3" in body and "Acme Corp" in body and "Account 4" not in body


def test_no_digest_channel_posts_nothing(db_url, engine, fake_slack, tmp_path):
    now = now_utc()
    seed(engine, now)
    settings = make_settings(db_url, fake_slack, rules_file(tmp_path), channel=None, ops=None)
    outcome = post_digest(engine, settings, settings.rules, now)
    assert not outcome.posted and "STALLWATCH_DIGEST_CHANNEL" in outcome.reason
    assert count(engine, RUN) == 0 and count(engine, OUTBOX) == 0


def test_ops_channel_defaults_to_digest_channel_without_duplicate(db_url, engine, fake_slack, tmp_path):
    now = now_utc()
    seed(engine, now)
    settings = make_settings(db_url, fake_slack, rules_file(tmp_path), ops=None)
    outcome = post_digest(engine, settings, settings.rules, now)
    assert not any(k.startswith("ops:") for k in outcome.keys)  # already in the digest itself
    send(engine, settings)
    [digest] = posts(fake_slack, DIGEST)
    assert "Tracking issues" in json.dumps(digest.body["blocks"])


def test_dry_run_stores_nothing(rig, fake_slack):
    engine, settings, rules, now = rig
    outcome = post_digest(engine, settings, rules, now, dry_run=True)
    assert not outcome.posted and outcome.text
    assert "2 new stalls" in outcome.text and "bob@example.com" in outcome.text.replace("\u2060", "")
    assert count(engine, RUN) == 0 and count(engine, OUTBOX) == 0
    assert send(engine, settings) == 0 and fake_slack.calls("chat.postMessage") == []


def test_empty_database_digest(db_url, engine, fake_slack, tmp_path):
    settings = make_settings(db_url, fake_slack, rules_file(tmp_path))
    outcome = post_digest(engine, settings, settings.rules, now_utc())
    assert outcome.posted
    send(engine, settings)
    [digest] = posts(fake_slack, DIGEST)
    assert "No stalled accounts" in json.dumps(digest.body["blocks"])


# ------------------------------------------------------------------ CLI


def test_cli_digest_dry_run_prints_it(db_url, engine, tmp_path):
    seed(engine, now_utc())
    result = CliRunner().invoke(main, ["digest", "--dry-run"], catch_exceptions=True,
                                env={"DATABASE_URL": db_url, "STALLWATCH_RULES": None,
                                     "STALLWATCH_DIGEST_CHANNEL": DIGEST, "SLACK_BOT_TOKEN": None})
    assert result.exit_code == 0, result.output
    assert "Stall digest for" in result.output and "ARR at risk" in result.output
    assert "Acme Corp" in result.output and "jane@example.com" in result.output.replace("\u2060", "")
    assert count(engine, RUN) == 0 and count(engine, OUTBOX) == 0


def test_cli_digest_posts_once(db_url, engine, tmp_path):
    seed(engine, now_utc())
    env = {"DATABASE_URL": db_url, "STALLWATCH_RULES": None, "STALLWATCH_DIGEST_CHANNEL": DIGEST,
           "SLACK_BOT_TOKEN": None}
    first = CliRunner().invoke(main, ["digest"], env=env, catch_exceptions=True)
    assert first.exit_code == 0, first.output
    assert "queued to C0DIGEST" in first.output
    second = CliRunner().invoke(main, ["digest"], env=env, catch_exceptions=True)
    assert second.exit_code == 0 and "already posted" in second.output
    assert count(engine, RUN) == 1


def test_cli_digest_without_channel(db_url):
    result = CliRunner().invoke(main, ["digest"], catch_exceptions=True,
                                env={"DATABASE_URL": db_url, "STALLWATCH_RULES": None,
                                     "STALLWATCH_DIGEST_CHANNEL": None})
    assert result.exit_code == 0, result.output
    assert "STALLWATCH_DIGEST_CHANNEL is not set" in result.output


def test_scheduler_has_the_digest_cron_job(engine, settings, rules):
    from bot.scheduler import Scheduler

    s = Scheduler(engine, settings, rules)
    job = s._aps.get_job("digest")
    assert job is not None
    fields = {f.name: str(f) for f in job.trigger.fields}
    assert (fields["hour"], fields["minute"]) == (str(rules.digest.clock.hour), str(rules.digest.clock.minute))
    assert str(job.trigger.timezone) == rules.digest.timezone


def test_the_scheduled_digest_wakes_the_slack_sender_through_the_services_wakeups(rig):
    from bot.scheduler import Scheduler
    from bot.stalls.context import Wakeups

    engine, settings, rules, now = rig
    wakeups = Wakeups()
    Scheduler(engine, settings, rules, wakeups=wakeups)._digest()  # the leader's cron job
    assert wakeups.slack_outbox.is_set()  # its rows go out at once, not at the sender's next poll
    assert not wakeups.mail_outbox.is_set()
