"""Per-track routing and thresholds through the router and the fake Slack (issue 12, "Tracks route").

The packaged default makes self_serve digest-only; `[tracks.<track>]` overrides are read from
a rules file built here. Quiet hours are off (see tests/test_router.py).
"""

from __future__ import annotations

import pytest

from bot.scan import scan
from tests.factories import HOUR, live_stalls, signup, store
from tests.test_router import ALERTS, EMAIL, OWNER, Rig, make_settings, now_utc, posts, rules_file

pytest_plugins = ["tests.fakes.fixtures"]


@pytest.fixture
def make_rig(db_url, engine, fake_slack, tmp_path):
    fake_slack.add_user(OWNER, EMAIL)

    def make(extra: str = "") -> Rig:
        path = rules_file(tmp_path)
        with open(path, "a", encoding="utf-8") as f:
            f.write(extra)
        return Rig(engine, make_settings(db_url, fake_slack, path), fake_slack)

    return make


def stalled(rig: Rig, account: str, now, *, hours: float, arr: float, owner: str | None = EMAIL, **traits) -> None:
    """An account that signed up `hours` ago and never created a project."""
    if owner:
        traits["owner_email"] = owner
    at = now - hours * HOUR
    store(rig.engine, rig.rules, signup(account, at, arr=arr, **traits), now=at)


def test_a_self_serve_p0_pings_nobody_and_stays_for_the_digest(make_rig):
    rig = make_rig()
    now = now_utc()
    # A starter plan under the high-touch ARR bar is self_serve; five days past the threshold it is P0.
    stalled(rig, "starter", now, hours=48 + 5 * 24, arr=20000, plan="starter")
    scan(rig.engine, rig.rules, now, hooks=rig.hooks)
    rig.send()
    [stall] = live_stalls(rig.engine, "starter")
    assert stall.priority == "P0"
    assert rig.fake.calls("chat.postMessage") == []
    assert rig.fake.calls("conversations.open") == []
    assert rig.alerts() == [] and rig.outbox() == []
    # The safety net does not count it as owed a ping, routing it again changes nothing.
    assert rig.router.route_unrouted(now + 2 * HOUR) == 0
    assert rig.router.route_stalls([stall.id], now + 2 * HOUR).digest == 1
    rig.send()
    assert rig.fake.calls("chat.postMessage") == []


def test_an_unowned_stall_of_a_real_time_track_goes_to_the_channel_only(make_rig):
    rig = make_rig()
    now = now_utc()
    stalled(rig, "orphan", now, hours=55, arr=50000, owner=None)  # 48 h + 6 h to confirm, + 1
    stalled(rig, "tiny", now, hours=48 + 5 * 24, arr=20000, owner=None, plan="starter")
    scan(rig.engine, rig.rules, now, hooks=rig.hooks)
    rig.send()
    assert {s.account_id: s.priority for s in live_stalls(rig.engine)} == {"orphan": "P0", "tiny": "P0"}
    assert rig.fake.calls("conversations.open") == []
    [post] = rig.fake.calls("chat.postMessage")
    assert post.body["channel"] == ALERTS and post.body["text"].startswith("P0: Orphan")


def test_a_high_touch_override_of_72_hours_is_not_stalled_at_60(make_rig):
    rig = make_rig("\n[tracks.high_touch.thresholds]\nstall_after_hours = 72\n")
    now = now_utc()
    stalled(rig, "big", now, hours=60, arr=50000)
    stalled(rig, "mid", now, hours=60, arr=15000)  # standard: keeps the journey's 48 h
    scan(rig.engine, rig.rules, now, hooks=rig.hooks)
    rig.send()
    assert [s.account_id for s in live_stalls(rig.engine)] == ["mid"]
    assert [c.body["text"][:7] for c in posts(rig.fake, ALERTS)] == ["P1: Mid"]
    # Eighteen hours later the high-touch account is past its own threshold, confirmed, and pings.
    scan(rig.engine, rig.rules, now + 18 * HOUR, hooks=rig.hooks)
    rig.send(now + 18 * HOUR)
    assert sorted(s.account_id for s in live_stalls(rig.engine)) == ["big", "mid"]
    assert posts(rig.fake, ALERTS)[-1].body["text"].startswith("P0: Big")
