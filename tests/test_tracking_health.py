"""Tracking health end to end (bot/slack/tracking.py): events stored by ingest -> hourly counters
-> the leader's job -> tracking issues and the ops channel of the fake Slack, over HTTP."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from bot.settings import Settings, default_rules_text
from bot.slack.client import web_client
from bot.slack.digest import build_digest, post_digest
from bot.slack.outbox import OutboxSender
from bot.slack.tracking import check_tracking
from storage.models import EventVolumeHour, TrackingIssue
from tests.conftest import WRITE_KEY
from tests.factories import SIGNED_UP, store, track

pytest_plugins = ["tests.fakes.fixtures"]

UTC = timezone.utc
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
TRACKING, HOURS = TrackingIssue.__table__, EventVolumeHour.__table__
DIGEST, OPS = "C0DIGEST", "C0OPS"
START = datetime(2026, 11, 20, 0, 5, tzinfo=UTC)
DROPPING, STEADY = "Report Viewed", "Dashboard Viewed"


def make_settings(db_url, fake, tmp_path) -> Settings:
    # Small volumes keep the test fast: 4 events an hour is a judged event with these settings.
    text = default_rules_text()
    for key, value in (("min_baseline", 20), ("min_window_events", 4)):
        text = re.sub(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
    path = tmp_path / "rules.toml"
    path.write_text(text, encoding="utf-8")
    return Settings(_env_file=None, DATABASE_URL=db_url, STALLWATCH_WRITE_KEY=WRITE_KEY,
                    SLACK_BOT_TOKEN=fake.token, SLACK_API_URL=fake.url, STALLWATCH_DIGEST_CHANNEL=DIGEST,
                    STALLWATCH_OPS_CHANNEL=OPS, STALLWATCH_RULES=str(path))


def hour_of_traffic(engine, rules, at: datetime, names=(DROPPING, STEADY)) -> None:
    """What the product sends in an hour: 4 of each event, stored as ingest stores them at `at`."""
    store(engine, rules, [track(f"acct-{i}", name, at) for name in names for i in range(4)], at)


def send(engine, settings, at: datetime) -> int:
    sender = OutboxSender(engine, lambda: web_client(settings, blocking_retries=False), clock=lambda: at,
                          rules=settings.rules)
    return sender.run_once()


def ops_posts(fake) -> list:
    return [c for c in fake.calls("chat.postMessage") if c.ok and c.body.get("channel") == OPS]


def issues(engine, kind: str | None = None) -> list:
    stmt = select(TRACKING).order_by(TRACKING.c.id)
    if kind:
        stmt = stmt.where(TRACKING.c.kind == kind)
    with engine.connect() as conn:
        return list(conn.execute(stmt))


def test_a_volume_drop_is_posted_once_and_its_clearing_once(db_url, engine, fake_slack, tmp_path):
    settings = make_settings(db_url, fake_slack, tmp_path)
    rules = settings.rules
    at = START
    while at < START + 8 * DAY:  # a week of history, every hour
        hour_of_traffic(engine, rules, at)
        at += HOUR
    assert check_tracking(engine, settings, rules, at).findings == []
    # `Report Viewed` stops arriving; the rest of Segment's traffic goes on.
    drop_began = at
    for _ in range(2):
        hour_of_traffic(engine, rules, at, names=(STEADY,))
        at += HOUR
    first = check_tracking(engine, settings, rules, at)
    assert [(f.source, f.name) for f in first.findings] == [("segment", DROPPING)]
    [issue] = issues(engine)
    assert (issue.kind, issue.event_name, issue.property, issue.count) == ("volume_drop", DROPPING, "segment", 0)
    assert issue.reported_at is not None and issue.resolved_at is None
    assert send(engine, settings, at) == 1
    [post] = ops_posts(fake_slack)
    assert DROPPING in post.body["text"] and "-100%" in post.body["text"]

    # Still down 15 minutes later and for hours after: the issue is kept current, not posted again.
    hour_of_traffic(engine, rules, at, names=(STEADY,))
    for _ in range(3):
        at += timedelta(minutes=15)
        again = check_tracking(engine, settings, rules, at)
        assert len(again.findings) == 1 and again.opened == [] and again.keys == []
    send(engine, settings, at)
    assert len(ops_posts(fake_slack)) == 1

    # Back: the detector no longer finds it; the issue clears after clear_after_hours (24) clean.
    at = at.replace(minute=5) + HOUR
    recovered, cleared_at = None, None
    while at < drop_began + 2 * DAY:
        hour_of_traffic(engine, rules, at)
        outcome = check_tracking(engine, settings, rules, at + timedelta(minutes=30))
        if recovered is None and not outcome.findings:
            recovered = at
        if outcome.cleared:
            assert cleared_at is None, "cleared twice"
            cleared_at = at
        send(engine, settings, at + timedelta(minutes=30))
        at += HOUR
    assert recovered is not None and cleared_at is not None
    assert timedelta(hours=23) <= cleared_at - recovered <= timedelta(hours=25)
    [issue] = issues(engine)
    assert issue.resolved_at is not None
    posts = ops_posts(fake_slack)
    assert len(posts) == 2
    reply = posts[1]
    assert reply.body.get("thread_ts") == post.response["ts"]  # under the drop's own post
    assert reply.body["text"] == ":white_check_mark: Cleared: `Report Viewed` volume is back (no drop for 1 day)."
    # The digest lists open issues only.
    assert build_digest(engine, rules, at).tracking_issues == []


def test_a_quiet_source_is_reported_as_the_source(db_url, engine, fake_slack, tmp_path):
    settings = make_settings(db_url, fake_slack, tmp_path)
    rules = settings.rules
    at = START
    while at < START + 5 * DAY:
        hour_of_traffic(engine, rules, at)
        at += HOUR
    at += 7 * HOUR  # Segment sends nothing for seven hours
    outcome = check_tracking(engine, settings, rules, at)
    assert [(f.source, f.name) for f in outcome.findings] == [("segment", "")]  # not each of its events
    [issue] = issues(engine)
    assert (issue.event_name, issue.property) == ("segment", "")
    send(engine, settings, at)
    [post] = ops_posts(fake_slack)
    assert post.body["text"] == (":warning: source `segment` went quiet: no events from segment for 6 hours; "
                                 "a quiet day of the last week brought 48 in those hours")


def test_a_missing_property_issue_clears_after_a_clean_day(db_url, engine, fake_slack, tmp_path):
    settings = make_settings(db_url, fake_slack, tmp_path)
    rules = settings.rules
    at = START
    store(engine, rules, [track("acme", SIGNED_UP, at, properties={"plan": ""})], at)
    [issue] = issues(engine, "missing_property")
    assert post_digest(engine, settings, rules, at + HOUR, clock=lambda: at + HOUR).posted  # reports it
    send(engine, settings, at + HOUR)
    before = len(ops_posts(fake_slack))

    # Another occurrence 20 hours on restarts the clean period.
    store(engine, rules, [track("beta", SIGNED_UP, at + 20 * HOUR, properties={"plan": None})], at + 20 * HOUR)
    assert check_tracking(engine, settings, rules, at + 25 * HOUR).cleared == []
    assert check_tracking(engine, settings, rules, at + 43 * HOUR).cleared == []
    done = check_tracking(engine, settings, rules, at + 44 * HOUR + timedelta(minutes=1))
    assert done.cleared == [issue.id] and len(done.keys) == 1
    assert check_tracking(engine, settings, rules, at + 45 * HOUR).cleared == []  # once
    send(engine, settings, at + 45 * HOUR)
    posts = ops_posts(fake_slack)[before:]
    assert len(posts) == 1
    assert not posts[0].body.get("thread_ts")  # it had no post of its own: a message in the channel
    assert posts[0].body["text"] == (":white_check_mark: Cleared: `Signed Up` arrives without `plan`: "
                                     "not seen for 1 day.")
    [issue] = issues(engine, "missing_property")
    assert issue.resolved_at is not None
    assert build_digest(engine, rules, at + 46 * HOUR).tracking_issues == []

    # It comes back: open again (ingest reopens it) and listed by the digest.
    store(engine, rules, [track("acme", SIGNED_UP, at + 50 * HOUR, properties={"plan": ""})], at + 50 * HOUR)
    assert [i.event_name for i in build_digest(engine, rules, at + 50 * HOUR).tracking_issues] == [SIGNED_UP]


def test_an_issue_nobody_was_told_about_clears_without_a_post(db_url, engine, fake_slack, tmp_path):
    settings = make_settings(db_url, fake_slack, tmp_path)
    rules = settings.rules
    store(engine, rules, [track("acme", SIGNED_UP, START, properties={"plan": ""})], START)
    done = check_tracking(engine, settings, rules, START + 25 * HOUR)
    assert len(done.cleared) == 1 and done.keys == []


def test_counters_are_by_hour_source_and_event_and_pruned(db_url, engine, fake_slack, tmp_path):
    settings = make_settings(db_url, fake_slack, tmp_path)
    rules = settings.rules
    at = START.replace(minute=40)
    store(engine, rules, [track("acme", STEADY, at), track("acme", STEADY, at)], at)
    store(engine, rules, [track("acme", STEADY, at)], at + timedelta(minutes=10))  # the same hour
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(select(HOURS.c.source, HOURS.c.name, HOURS.c.count))]
    assert rows == [("segment", STEADY, 3)]
    check_tracking(engine, settings, rules, at + 40 * DAY)
    with engine.connect() as conn:
        assert conn.execute(select(HOURS)).all() == []


def test_the_leader_runs_it_every_15_minutes_and_wakes_the_slack_sender(db_url, engine, fake_slack, tmp_path):
    from bot.scheduler import Scheduler
    from bot.stalls.context import Wakeups

    settings = make_settings(db_url, fake_slack, tmp_path)
    rules = settings.rules
    wakeups = Wakeups()
    scheduler = Scheduler(engine, settings, rules, wakeups=wakeups)
    job = scheduler._aps.get_job("tracking_health")
    assert job is not None and job.trigger.interval == timedelta(minutes=15)
    then = datetime.now(UTC) - 2 * DAY  # the job reads the real clock
    store(engine, rules, [track("acme", SIGNED_UP, then, properties={"plan": ""})], then)
    post_digest(engine, settings, rules, then + HOUR, clock=lambda: then + HOUR)
    scheduler._tracking()
    [issue] = issues(engine, "missing_property")
    assert issue.resolved_at is not None
    assert wakeups.slack_outbox.is_set()
