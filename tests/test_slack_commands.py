"""Slash commands through the real app: signed requests to /slack/events on a live server,
Slack's Web API and response_url on the fake Slack (tests.fakes)."""

from __future__ import annotations

import json
import time


import pytest
from sqlalchemy import update

from bot.scan import scan
from bot.slack.listeners.commands import parse_funnel, parse_stalls
from storage.db import utcnow
from storage.lookup import forget_names

from factories import ACCOUNT, DAY, HOUR, INTEGRATION, PROJECT, STALL, T0, live_stalls, signup, store, ticket, track
from slack_signing import (
    SIGNING_SECRET, block_actions, event_callback, make_slack_harness, response_url, sign, slash_command,
)

pytest_plugins = ["tests.fakes.fixtures"]

OWNER = "U0OWNER"
OTHER = "U0OTHER"


@pytest.fixture
def slack(fake_slack, engine, db_url):
    forget_names()
    # Both CSMs are in the CS team: they see every account (tests/test_team.py: outsiders do not).
    with make_slack_harness(fake_slack, engine, db_url, STALLWATCH_TEAM=f"{OWNER},{OTHER}") as harness:
        yield harness


def seed(engine, rules):
    """Acme (owned by OWNER, two steps done, stalled on Integration, a ticket) and Acme
    Robotics and Globex (owned by OTHER), with step stalls; priorities set for the filters."""
    events = signup("acme", T0, arr=50000, name="Acme", domain="acme.com", owner_email="owner@x.com")
    events += [track("acme", PROJECT, T0 + HOUR), ticket("acme", T0 + 2 * HOUR, "TK-1", topic="sso")]
    events += signup("acmerobo", T0, arr=8000, name="Acme Robotics", domain="acmerobotics.io")
    events += signup("globex", T0, arr=120000, name="Globex", domain="globex.com")
    store(engine, rules, events, now=T0 + 2 * HOUR)
    scan(engine, rules, T0 + 3 * DAY)
    with engine.begin() as conn:
        conn.execute(update(ACCOUNT).where(ACCOUNT.c.id == "acme").values(owner_slack_id=OWNER))
        conn.execute(update(ACCOUNT).where(ACCOUNT.c.id.in_(["acmerobo", "globex"])).values(owner_slack_id=OTHER))
        conn.execute(update(STALL).where(STALL.c.account_id == "globex").values(priority="P0", score=99))
        conn.execute(update(STALL).where(STALL.c.account_id == "acme").values(priority="P1", score=50))
        conn.execute(update(STALL).where(STALL.c.account_id == "acmerobo").values(priority="P2", score=10))
    forget_names()


def texts(blocks) -> str:
    return json.dumps(blocks, ensure_ascii=False)


# ------------------------------------------------------------------ signatures


def test_forged_and_stale_signatures_get_401(slack):
    url = response_url(slack.fake)
    body, headers = slash_command("/stalls", "all", user_id=OWNER, response_url=url, secret="not-the-secret")
    assert slack.post((body, headers)).status_code == 401
    stale = int(time.time()) - 6 * 60
    assert slack.post(slash_command("/stalls", "all", user_id=OWNER, response_url=url, timestamp=stale)).status_code == 401
    # A valid signature over a different body (tampered after signing) fails too.
    body, headers = slash_command("/stalls", "all", user_id=OWNER, response_url=url)
    assert slack.post((body.replace(b"all", b"mine"), headers)).status_code == 401
    assert slack.http.post("/slack/events", content=body,
                           headers={"Content-Type": "application/x-www-form-urlencoded"}).status_code == 401
    fake_click = block_actions({"action_id": "stall_resolve", "block_id": "b", "type": "button",
                                "value": '{"stall_id":1}'}, user_id=OWNER, response_url=url, secret="forged")
    assert slack.post(fake_click).status_code == 401
    forged_event = event_callback({"type": "app_home_opened", "user": OWNER, "tab": "home"}, secret="x")
    assert slack.post(forged_event).status_code == 401
    time.sleep(0.2)
    assert [c for c in slack.fake.calls() if c.method != "auth.test"] == []


def test_signature_is_slacks_v0_scheme():
    import hashlib
    import hmac

    headers = sign(b"a=1", timestamp=1531420618)
    expected = hmac.new(SIGNING_SECRET.encode(), b"v0:1531420618:a=1", hashlib.sha256).hexdigest()
    assert headers == {"X-Slack-Request-Timestamp": "1531420618", "X-Slack-Signature": f"v0={expected}"}


# ------------------------------------------------------------------ /journey


def test_journey_exact_match_shows_the_account(slack):
    seed(slack.engine, slack.rules)
    res, method = slack.command("/journey", "acme.com", OWNER)
    assert res.status_code == 200
    assert res.text == ""  # a bare ack; the answer comes through response_url
    answer = slack.answer(method)
    assert answer["response_type"] == "ephemeral"
    body = texts(answer["blocks"])
    for expected in ("Acme", "$50,000", f"<@{OWNER}>", "Sign up", "Create a project", "Connect integration",
                     "Open stalls", "stall_resolve", "Recent tickets", "ticket TK-1", "Project Created"):
        assert expected in body, expected
    assert "✓ Sign up" in body and "✗ Invite a teammate" in body
    assert "stalled" in body  # the step the live stall is about is flagged


def test_journey_by_name_and_id(slack):
    seed(slack.engine, slack.rules)
    for query in ("Globex", "globex"):
        _, method = slack.command("/journey", query, OWNER)
        assert "Globex" in texts(slack.answer(method)["blocks"])


def test_journey_fuzzy_offers_did_you_mean_and_a_pick_opens_the_journey(slack):
    seed(slack.engine, slack.rules)
    _, method = slack.command("/journey", "acm", OWNER)  # prefix of two accounts
    answer = slack.answer(method)
    assert "Did you mean" in answer["text"]
    body = texts(answer["blocks"])
    assert "Acme Robotics" in body and "acme.com" in body.replace("\u2060", "")  # the joiner breaks the link
    buttons = next(b for b in answer["blocks"] if b["type"] == "actions")["elements"]
    pick = next(b for b in buttons if b["value"] == "acmerobo")
    _, method = slack.click({"action_id": pick["action_id"], "block_id": "journey-did-you-mean",
                             "type": "button", "value": pick["value"]}, OTHER,
                            container={"type": "message", "message_ts": "1.2", "is_ephemeral": True,
                                       "channel_id": "C0CS"})
    picked = slack.answer(method)
    assert picked["replace_original"] is True
    assert "Acme Robotics" in texts(picked["blocks"]) and "$8,000" in texts(picked["blocks"])

    _, method = slack.command("/journey", "globx", OWNER)  # a typo
    assert "Globex" in slack.answer(method)["text"]


def test_journey_empty_and_unknown(slack):
    seed(slack.engine, slack.rules)
    res, method = slack.command("/journey", "   ", OWNER)
    assert res.status_code == 200
    assert res.json()["response_type"] == "ephemeral" and "Usage" in res.json()["text"]
    _, method = slack.command("/journey", "zzzzqqqq", OWNER)
    answer = slack.answer(method)
    assert "No account matches" in answer["text"] and "Usage" in texts(answer["blocks"])


# ------------------------------------------------------------------ /stalls


def _listed(answer) -> list[str]:
    body = texts(answer["blocks"])
    return [name for name in ("Globex", "Acme Robotics", "*Acme*") if name in body]


def test_stalls_mine_all_and_priority(slack):
    seed(slack.engine, slack.rules)
    assert len(live_stalls(slack.engine)) == 3
    _, method = slack.command("/stalls", "", OWNER)  # mine by default
    assert _listed(slack.answer(method)) == ["*Acme*"]
    _, method = slack.command("/stalls", "mine", OTHER)
    answer = slack.answer(method)
    assert _listed(answer) == ["Globex", "Acme Robotics"]
    body = texts(answer["blocks"])
    assert body.index("Globex") < body.index("Acme Robotics")  # ranked
    _, method = slack.command("/stalls", "all", OWNER)
    assert _listed(slack.answer(method)) == ["Globex", "Acme Robotics", "*Acme*"]
    _, method = slack.command("/stalls", "all p0", OWNER)
    assert _listed(slack.answer(method)) == ["Globex"]
    _, method = slack.command("/stalls", "P1 p2 all", OWNER)
    assert _listed(slack.answer(method)) == ["Acme Robotics", "*Acme*"]
    _, method = slack.command("/stalls", "p0", OWNER)  # mine, P0: nothing
    assert "No open stalls match" in texts(slack.answer(method)["blocks"])


def test_stalls_mine_includes_stalls_assigned_to_me(slack):
    seed(slack.engine, slack.rules)
    with slack.engine.begin() as conn:
        conn.execute(update(STALL).where(STALL.c.account_id == "globex").values(assignee=OWNER))
    _, method = slack.command("/stalls", "mine", OWNER)
    assert _listed(slack.answer(method)) == ["Globex", "*Acme*"]


def test_stalls_unknown_words_get_usage(slack):
    res, _ = slack.command("/stalls", "everything p9", OWNER)
    assert "Usage" in res.json()["text"] and "/stalls [mine|all]" in res.json()["text"]


def test_parsers():
    assert parse_stalls("") == parse_stalls("mine")
    assert parse_stalls("all P0 p1").priorities == ("P0", "P1") and not parse_stalls("all").mine
    assert parse_stalls("urgent") is None
    assert parse_funnel("") == 30 and parse_funnel("90") == 90 and parse_funnel("14 days") == 14
    assert parse_funnel("0") is None and parse_funnel("lots") is None and parse_funnel("9999") is None


# ------------------------------------------------------------------ /funnel


def test_funnel_conversion_weakest_step_and_tracks(slack):
    now = utcnow()
    start = now - 10 * DAY
    rules = slack.rules
    events = []
    for i in range(5):  # all sign up; 3 create a project; 1 connects the integration
        events += signup(f"f{i}", start, arr=50000 if i < 2 else 1000)
    for i in range(3):
        events.append(track(f"f{i}", PROJECT, start + (i + 1) * DAY))
    events.append(track("f0", INTEGRATION, start + 4 * DAY))
    events += signup("fresh", now - HOUR)  # not yet due to create a project: left out
    events += signup("mature", now - 20 * DAY, arr=50000)  # past day 14: the one account a track rate counts
    events += signup("old", now - 200 * DAY)  # outside the window
    store(slack.engine, rules, events, now=now)
    scan(slack.engine, rules, now)

    _, method = slack.command("/funnel", "", OWNER)
    answer = slack.answer(method)
    body = texts(answer["blocks"])
    assert "Funnel · last 30 days" in body
    assert "Sign up: 6 → 3 (50%)" in body and "median 2 days" in body
    assert "Create a project: 3 → 1 (–)" in body  # too few to rate
    assert "Weakest stage:* Sign up: only 50% move on (n=6)" in body
    assert "*By track* · Activated (Report Shared)" in body
    assert "*High touch* (n=1)\\nactivated by day 14: – · stalled: –" in body
    assert "*Standard* (n=0)" in body and "*Self serve* (n=0)" in body
    assert body.index("*High touch*") < body.index("*Standard*") < body.index("*Self serve*")

    res, _ = slack.command("/funnel", "forever", OWNER)
    assert "Usage" in res.json()["text"]
    _, method = slack.command("/funnel", "365", OWNER)
    assert "Sign up: 7 →" in texts(slack.answer(method)["blocks"])


def test_unexpected_errors_show_an_error_id(slack, monkeypatch, caplog):
    from bot.stalls import reads

    def broken(*a, **k):
        raise RuntimeError("database on fire")

    monkeypatch.setattr(reads, "funnel_data", broken)
    _, method = slack.command("/funnel", "", OWNER)
    answer = slack.answer(method)
    assert "error id" in answer["text"] and "fire" not in answer["text"]
    error_id = answer["text"].split("`")[1]
    assert any(error_id in r.getMessage() for r in caplog.records)





# ------------------------------------------------------------------ the manifest


def test_manifest_matches_the_app():
    from pathlib import Path

    yaml = pytest.importorskip("yaml")  # PyYAML: a test-only convenience

    manifest = yaml.safe_load((Path(__file__).parent.parent / "manifest.yml").read_text())
    commands = {c["command"]: c for c in manifest["features"]["slash_commands"]}
    assert set(commands) == {"/journey", "/stalls", "/funnel"}
    assert all(c["url"].endswith("/slack/events") and c["usage_hint"] for c in commands.values())
    settings = manifest["settings"]
    assert settings["interactivity"]["is_enabled"] and settings["interactivity"]["request_url"].endswith("/slack/events")
    assert settings["event_subscriptions"]["request_url"].endswith("/slack/events")
    assert settings["event_subscriptions"]["bot_events"] == ["app_home_opened", "app_uninstalled", "tokens_revoked"]
    assert settings["socket_mode_enabled"] is False and manifest["features"]["app_home"]["home_tab_enabled"]
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"chat:write", "commands", "users:read", "users:read.email", "im:write", "files:write"} <= scopes


@pytest.mark.parametrize("given, missing", [
    ({"SLACK_BOT_TOKEN": "xoxb-1"}, "SLACK_SIGNING_SECRET"),
    ({"SLACK_SIGNING_SECRET": "s3cret"}, "SLACK_BOT_TOKEN"),
])
def test_half_configured_slack_says_what_is_missing_at_start(db_url, engine, caplog, given, missing):
    from bot.app import create_app
    from bot.settings import Settings

    settings = Settings(_env_file=None, DATABASE_URL=db_url, **given)
    app = create_app(settings, engine=engine, on_events_stored=lambda ids: None)
    assert "/slack/events" not in [r.path for r in app.routes]
    assert any(missing in r.getMessage() and "OFF" in r.getMessage() for r in caplog.records)
    both = Settings(_env_file=None, DATABASE_URL=db_url, SLACK_BOT_TOKEN="xoxb-1", SLACK_SIGNING_SECRET="s")
    assert "/slack/events" in [r.path for r in create_app(both, engine=engine, on_events_stored=lambda ids: None).routes]
