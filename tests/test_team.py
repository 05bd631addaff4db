"""The CS team (STALLWATCH_TEAM) and "Assign to...", through the real app: signed Slack
requests to /slack/events on a live server, the fake Slack's user groups and DMs.

- a team member (from a Slack user group, or listed by id) may claim, assign, snooze and
  resolve any alert; an outsider is refused and nothing changes;
- "Assign to..." (the ping's user picker, or the modal of a list row) records the assignee,
  audits the actor and the assignee, and DMs the assignee once;
- the user group is read once per TTL, and a Slack failure keeps the last known list;
- one visibility rule: "View journey", /journey, /stalls and the App Home agree.
"""

from __future__ import annotations

import contextlib
import json
import logging

import httpx
import pytest
from sqlalchemy import select, update

from bot.scan import scan
from bot.settings import Settings
from bot.slack.client import web_client
from bot.slack.render import ping_blocks, ping_text
from bot.slack.render.codec import Action, StallRef
from bot.slack.team import usergroup_reader
from bot.stalls.context import Services
from bot.stalls.permissions import PERMISSIONS, Op, Role
from bot.stalls.team import TeamRoster
from bot.stalls.views import ping_view
from storage.db import utcnow
from storage.lookup import forget_names
from storage.models import Alert, SlackOutbox

from factories import ACCOUNT, DAY, HOUR, PROJECT, STALL, T0, audits, signup, stalls, store, track
from slack_signing import ADMIN, SIGNING_SECRET, SlackHarness, event_callback

pytest_plugins = ["tests.fakes.fixtures"]

OWNER = "U0OWNER"
MATE = "U0MATE"  # in the CS team
MATE2 = "U0MATE2"
OUTSIDER = "U0OUTSIDER"
GROUP = "S0CSTEAM"
ALERTS = "C0ALERTS"
ALERT = Alert.__table__
OUTBOX = SlackOutbox.__table__


class Clock:
    """The roster's monotonic clock, moved by hand."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextlib.contextmanager
def harness(fake, engine, db_url, team: str, clock: Clock | None = None):
    """The live app with STALLWATCH_TEAM=`team` (its roster on `clock`)."""
    from bot.app import create_app
    from tests.conftest import LiveServer

    settings = Settings(_env_file=None, DATABASE_URL=db_url, SLACK_BOT_TOKEN=fake.token,
                        SLACK_SIGNING_SECRET=SIGNING_SECRET, SLACK_API_URL=fake.url, STALLWATCH_ADMINS=ADMIN,
                        STALLWATCH_TEAM=team)
    roster = TeamRoster.from_settings(settings, clock=clock or Clock())
    services = Services(engine=engine, settings=settings, rules=settings.rules, roster=roster)
    app = create_app(services=services, on_events_stored=lambda ids: None)
    with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=30) as http:
        h = SlackHarness(fake, http, engine, settings)
        h.roster = roster
        yield h


def post_ping(slack, account: str = "acme", name: str = "Acme", owner: str | None = OWNER):
    """The account with a live step stall and its ping posted in the alerts channel (as the
    router posts it). Returns (stall id, ts)."""
    store(slack.engine, slack.rules, signup(account, T0, arr=50000, name=name) + [track(account, PROJECT, T0 + HOUR)],
          now=T0 + HOUR)
    scan(slack.engine, slack.rules, T0 + 3 * DAY)
    with slack.engine.begin() as conn:
        conn.execute(update(ACCOUNT).where(ACCOUNT.c.id == account).values(owner_slack_id=owner))
    (stall,) = stalls(slack.engine, account)
    with slack.engine.connect() as conn:
        view = ping_view(conn, stall.id, slack.rules, utcnow())
    posted = web_client(slack.settings).chat_postMessage(channel=ALERTS, text=ping_text(view),
                                                         blocks=[b.to_dict() for b in ping_blocks(view)])
    now = utcnow()
    with slack.engine.begin() as conn:
        conn.execute(ALERT.insert().values(stall_id=stall.id, channel=ALERTS, ts=posted["ts"], kind="ping",
                                           priority=stall.priority, created_at=now, updated_at=now))
    slack.fake.clear_calls()
    return stall.id, posted["ts"]


def on_ping(slack, ts: str, action: dict, user: str):
    container = {"type": "message", "message_ts": ts, "channel_id": ALERTS, "is_ephemeral": False}
    return slack.click(action, user, container=container, channel_id=ALERTS)


def button(stall_id: int, action: Action) -> dict:
    return {"action_id": action.value, "block_id": f"stall-{stall_id}-actions", "type": "button",
            "value": StallRef(stall_id=stall_id).encode()}


def snooze(stall_id: int, days: int = 1) -> dict:
    return {"action_id": Action.SNOOZE.value, "block_id": f"stall-{stall_id}-actions", "type": "static_select",
            "selected_option": {"text": {"type": "plain_text", "text": "Snooze"},
                                "value": StallRef(stall_id=stall_id, days=days).encode()}}


def pick(stall_id: int, user: str) -> dict:
    """What Slack sends when someone is chosen in the ping's "Assign to..." picker."""
    return {"action_id": Action.ASSIGN_TO.value, "block_id": f"stall-{stall_id}-actions", "type": "users_select",
            "selected_user": user}


def menu(stall_id: int, op: Action, *, digest: bool = False) -> dict:
    action_id = Action.DIGEST_MENU if digest else Action.ROW_MENU
    return {"action_id": action_id.value, "block_id": "row", "type": "overflow",
            "selected_option": {"text": {"type": "plain_text", "text": "x"},
                                "value": StallRef(stall_id=stall_id, op=op).encode()}}


def row(engine, stall_id: int):
    with engine.connect() as conn:
        return conn.execute(select(STALL).where(STALL.c.id == stall_id)).one()


def dms(engine) -> list:
    with engine.connect() as conn:
        return list(conn.execute(select(OUTBOX).where(OUTBOX.c.method == "dm").order_by(OUTBOX.c.id)))


def wait_audits(slack, stall_id: int, n: int) -> list:
    assert slack.fake.wait_for(lambda: len(audits(slack.engine, stall_id)) >= n, timeout=10), "no audit"
    return audits(slack.engine, stall_id)


# ------------------------------------------------------------------ the table


def test_the_table_gives_the_team_every_operation_and_outsiders_none():
    assert set(PERMISSIONS) == set(Op)
    assert all(Role.TEAM in roles for roles in PERMISSIONS.values())
    assert PERMISSIONS[Op.REASSIGN] == {Role.OWNER, Role.ASSIGNEE, Role.TEAM, Role.ADMIN}  # the assignee hands on


# ------------------------------------------------------------------ team members act on any alert


TEAMS = {"user group": GROUP, "listed ids": f"U0SOMEONE,{MATE}"}


@pytest.mark.parametrize("form", sorted(TEAMS))
def test_a_team_member_claims_assigns_snoozes_and_resolves(fake_slack, engine, db_url, form):
    fake_slack.add_usergroup(GROUP, [MATE, "U0OTHERMATE"])
    with harness(fake_slack, engine, db_url, TEAMS[form]) as slack:
        if form == "user group":  # read once when the app starts, in the background
            (read,) = fake_slack.wait_for_calls("usergroups.users.list", 1, timeout=10)
            assert read.body["usergroup"] == GROUP and read.ok
        sid, ts = post_ping(slack)  # (clears the fake's calls)
        on_ping(slack, ts, button(sid, Action.ASSIGN), MATE)  # claim (Assign to me)
        wait_audits(slack, sid, 1)
        assert row(engine, sid).assignee == MATE
        on_ping(slack, ts, pick(sid, MATE2), MATE)  # hand it on
        wait_audits(slack, sid, 2)
        assert row(engine, sid).assignee == MATE2
        on_ping(slack, ts, snooze(sid, 3), MATE)
        wait_audits(slack, sid, 3)
        assert row(engine, sid).status == "snoozed"
        on_ping(slack, ts, button(sid, Action.RESOLVE), MATE)  # asks why: a modal
        assert slack.submit_opened({"reason": "handled"}, MATE).status_code == 200
        entries = wait_audits(slack, sid, 4)
        assert row(engine, sid).status == "resolved"
        assert [(e.actor, e.action) for e in entries] == [
            (MATE, "stall.assign"), (MATE, "stall.assign"), (MATE, "stall.snooze"), (MATE, "stall.resolve")]
        assert fake_slack.calls("usergroups.users.list") == []  # not read again for four clicks


def test_a_team_member_claims_an_unowned_account(fake_slack, engine, db_url):
    fake_slack.add_usergroup(GROUP, [MATE])
    with harness(fake_slack, engine, db_url, GROUP) as slack:
        sid, ts = post_ping(slack, owner=None)
        on_ping(slack, ts, button(sid, Action.ASSIGN), MATE)
        wait_audits(slack, sid, 1)
        assert row(engine, sid).assignee == MATE
        slack.wait_delivered("chat.update", 1)
        assert f"Assigned to <@{MATE}>" in json.dumps(fake_slack.calls("chat.update")[0].body["blocks"])


OUTSIDER_CLICKS = {
    "claim": lambda sid: button(sid, Action.ASSIGN),
    "assign to": lambda sid: pick(sid, OUTSIDER),
    "snooze": lambda sid: snooze(sid),
    "resolve": lambda sid: button(sid, Action.RESOLVE),
    "row menu assign to": lambda sid: menu(sid, Action.ASSIGN_TO),
    "digest menu assign to": lambda sid: menu(sid, Action.ASSIGN_TO, digest=True),
}


@pytest.mark.parametrize("click", sorted(OUTSIDER_CLICKS))
def test_an_outsider_is_refused_and_nothing_changes(fake_slack, engine, db_url, click):
    fake_slack.add_usergroup(GROUP, [MATE])
    with harness(fake_slack, engine, db_url, GROUP) as slack:
        sid, ts = post_ping(slack)
        before = row(engine, sid)
        _, method = on_ping(slack, ts, OUTSIDER_CLICKS[click](sid), OUTSIDER)
        answer = slack.answer(method)
        assert answer["text"].startswith("Only ") and "a CS team member" in answer["text"]
        assert row(engine, sid) == before and audits(engine, sid) == [] and dms(engine) == []
        assert fake_slack.calls("views.open") == [] and fake_slack.calls("chat.update") == []


# ------------------------------------------------------------------ Assign to...


def test_assign_to_records_audits_and_dms_the_assignee_once(fake_slack, engine, db_url):
    with harness(fake_slack, engine, db_url, "") as slack:
        sid, ts = post_ping(slack)
        on_ping(slack, ts, pick(sid, MATE), OWNER)
        (entry,) = wait_audits(slack, sid, 1)
        assert row(engine, sid).assignee == MATE
        assert (entry.actor, entry.action, entry.source) == (OWNER, "stall.assign", "stall_assign_to")
        assert entry.detail["assignee"] == MATE and entry.detail["by"] == OWNER
        _, method = on_ping(slack, ts, pick(sid, MATE), OWNER)  # a double pick
        assert slack.answer(method)["text"] == f"It is already assigned to <@{MATE}>."
        assert len(audits(engine, sid)) == 1
        (dm,) = dms(engine)
        assert dm.payload["user"] == MATE and dm.key == f"assigned:{entry.id}:dm"
        slack.wait_delivered("chat.postMessage", 1)
        (sent,) = [m for m in fake_slack.messages(fake_slack.dm_channel(MATE))]
        assert sent["text"].startswith(f"<@{OWNER}> assigned you Acme: ")
        assert "Create a project" in sent["text"] or "Connect" in sent["text"]  # the alert's top reason
        assert f"Assigned to <@{MATE}>" in json.dumps(slack.fake.calls("chat.update")[-1].body["blocks"])


def test_assigning_to_yourself_sends_no_dm_and_the_assignee_may_hand_it_on(fake_slack, engine, db_url):
    with harness(fake_slack, engine, db_url, "") as slack:  # no team: owner, assignee, admins only
        sid, ts = post_ping(slack)
        on_ping(slack, ts, pick(sid, OWNER), OWNER)
        wait_audits(slack, sid, 1)
        assert row(engine, sid).assignee == OWNER and dms(engine) == []
        on_ping(slack, ts, pick(sid, MATE), OWNER)
        wait_audits(slack, sid, 2)
        on_ping(slack, ts, pick(sid, MATE2), MATE)  # the assignee passes it on
        entries = wait_audits(slack, sid, 3)
        assert row(engine, sid).assignee == MATE2 and entries[-1].actor == MATE
        assert [d.payload["user"] for d in dms(engine)] == [MATE, MATE2]
        _, method = on_ping(slack, ts, pick(sid, OUTSIDER), MATE)  # no longer the assignee
        assert slack.answer(method)["text"].startswith("Only ")
        assert row(engine, sid).assignee == MATE2


@pytest.mark.parametrize("digest", [False, True])
def test_assign_to_from_a_list_row_opens_the_picker_and_assigns(fake_slack, engine, db_url, digest):
    with harness(fake_slack, engine, db_url, "") as slack:
        sid, _ = post_ping(slack)
        container = {"type": "message", "message_ts": "5.5", "channel_id": "C0CS", "is_ephemeral": not digest}
        slack.click(menu(sid, Action.ASSIGN_TO, digest=digest), OWNER, container=container, channel_id="C0CS")
        (opened,) = fake_slack.wait_for_calls("views.open", 1, timeout=10)
        assert opened.ok and "Acme" in json.dumps(opened.body["view"])
        view = opened.response["view"]
        res = slack.submit(view, {"assignee": MATE}, OWNER)
        assert res.status_code == 200 and not res.text  # the modal closes
        (entry,) = audits(engine, sid)
        assert (entry.actor, entry.detail["assignee"], row(engine, sid).assignee) == (OWNER, MATE, MATE)
        assert [d.payload["user"] for d in dms(engine)] == [MATE]
        slack.wait_delivered("chat.update", 1)  # the ping shows it
        assert f"Assigned to <@{MATE}>" in json.dumps(fake_slack.calls("chat.update")[0].body["blocks"])
        note = fake_slack.wait_for(lambda: any(c.method.startswith("response.") for c in fake_slack.calls()))
        assert note  # the list where the menu was clicked is answered ephemerally
        (answer,) = [c for c in fake_slack.calls() if c.method.startswith("response.")]
        assert answer.body["text"].startswith(f"Assigned to <@{MATE}>")


def test_the_picker_refuses_at_submission_when_the_right_is_gone(fake_slack, engine, db_url):
    with harness(fake_slack, engine, db_url, "") as slack:
        sid, _ = post_ping(slack)
        with engine.begin() as conn:
            conn.execute(update(STALL).where(STALL.c.id == sid).values(assignee=MATE))
        slack.click(menu(sid, Action.ASSIGN_TO), MATE, container={"type": "view", "view_id": "V0HOME"},
                    channel_id=None)
        (opened,) = fake_slack.wait_for_calls("views.open", 1, timeout=10)
        with engine.begin() as conn:  # handed on meanwhile
            conn.execute(update(STALL).where(STALL.c.id == sid).values(assignee=MATE2))
        res = slack.submit(opened.response["view"], {"assignee": OUTSIDER}, MATE)
        assert res.json()["response_action"] == "errors" and res.json()["errors"]["assignee"].startswith("Only ")
        assert row(engine, sid).assignee == MATE2 and audits(engine, sid) == [] and dms(engine) == []


# ------------------------------------------------------------------ the user group's cache


def test_the_user_group_is_read_once_per_ttl_and_a_failure_keeps_the_last_list(fake_slack, caplog):
    fake_slack.add_usergroup(GROUP, [MATE])
    settings = Settings(_env_file=None, SLACK_BOT_TOKEN=fake_slack.token, SLACK_API_URL=fake_slack.url,
                        STALLWATCH_TEAM=f"{GROUP},U0LISTED")
    clock = Clock()
    roster = TeamRoster.from_settings(settings, ttl=600, retry_after=60, clock=clock)
    assert roster.members() == {"U0LISTED"}  # not connected to Slack yet: nobody from the group
    roster.install(usergroup_reader(settings))
    assert roster.members() == {MATE, "U0LISTED"}
    clock.now += 599
    assert roster.members() == {MATE, "U0LISTED"}
    assert len(fake_slack.calls("usergroups.users.list")) == 1

    fake_slack.add_usergroup(GROUP, [MATE, MATE2])
    clock.now += 2  # past the TTL
    assert roster.members() == {MATE, MATE2, "U0LISTED"}
    assert len(fake_slack.calls("usergroups.users.list")) == 2

    clock.now += 601
    fake_slack.fail_next("usergroups.users.list", status=503)
    with caplog.at_level(logging.WARNING, logger="bot.stalls.team"):
        assert roster.members() == {MATE, MATE2, "U0LISTED"}  # the last known list
    assert "using the last known list (2 members)" in caplog.text
    clock.now += 30
    assert roster.members() == {MATE, MATE2, "U0LISTED"}
    assert len(fake_slack.calls("usergroups.users.list")) == 3  # not asked again before retry_after
    fake_slack.fail_next("usergroups.users.list", error="ratelimited", status=200)
    clock.now += 31
    assert roster.members() == {MATE, MATE2, "U0LISTED"}
    clock.now += 61
    fake_slack.add_usergroup(GROUP, [MATE2])
    assert roster.members() == {MATE2, "U0LISTED"}  # Slack is back: the new list
    assert len(fake_slack.calls("usergroups.users.list")) == 5


def test_an_unknown_group_grants_nobody(fake_slack):
    settings = Settings(_env_file=None, SLACK_BOT_TOKEN=fake_slack.token, SLACK_API_URL=fake_slack.url,
                        STALLWATCH_TEAM="S0NOSUCH")
    roster = TeamRoster.from_settings(settings)
    roster.install(usergroup_reader(settings))
    assert roster.members() == frozenset()
    assert fake_slack.calls("usergroups.users.list")[0].response["error"] == "no_such_subteam"


def test_a_click_while_slack_is_away_uses_the_last_list(fake_slack, engine, db_url):
    fake_slack.add_usergroup(GROUP, [MATE])
    clock = Clock()
    with harness(fake_slack, engine, db_url, GROUP, clock) as slack:
        fake_slack.wait_for_calls("usergroups.users.list", 1, timeout=10)
        sid, ts = post_ping(slack)  # (clears the fake's calls)
        on_ping(slack, ts, button(sid, Action.ASSIGN), MATE)
        wait_audits(slack, sid, 1)
        clock.now += 3600
        fake_slack.fail_next("usergroups.users.list", status=500)
        on_ping(slack, ts, button(sid, Action.RESOLVE), MATE)  # asks why: a modal
        slack.submit_opened({"reason": "handled"}, MATE)
        wait_audits(slack, sid, 2)
        assert row(engine, sid).status == "resolved"
        assert [c.status for c in fake_slack.calls("usergroups.users.list")] == [500]  # asked once past the TTL


# ------------------------------------------------------------------ one visibility rule


def seed_two(slack):
    """Acme (OWNER's, pinged) and Globex (nobody's)."""
    sid, ts = post_ping(slack)
    store(slack.engine, slack.rules, signup("globex", T0, arr=90000, name="Globex"), now=T0 + HOUR)
    scan(slack.engine, slack.rules, T0 + 3 * DAY)
    return sid, ts


def test_view_journey_and_journey_follow_the_same_rule(fake_slack, engine, db_url):
    fake_slack.add_usergroup(GROUP, [MATE])
    with harness(fake_slack, engine, db_url, GROUP) as slack:
        sid, ts = seed_two(slack)
        for who, sees in ((OWNER, True), (MATE, True), (ADMIN, True), (OUTSIDER, False)):
            _, method = on_ping(slack, ts, button(sid, Action.VIEW_JOURNEY), who)
            viewed = slack.answer(method)
            _, method = slack.command("/journey", "acme", who)
            typed = slack.answer(method)
            for answer in (viewed, typed):
                if sees:
                    assert "Create a project" in json.dumps(answer["blocks"]), who
                else:
                    assert answer["text"].startswith("Only ") and "see this account" in answer["text"]
                    assert "blocks" not in answer
        _, method = slack.command("/journey", "globex", OWNER)  # not OWNER's: refused too
        assert slack.answer(method)["text"].startswith("Only ")
        _, method = slack.command("/journey", "globex", MATE)
        assert "Globex" in json.dumps(slack.answer(method)["blocks"])


def test_an_outsider_gets_no_suggestions_or_picks_of_accounts_they_cannot_see(fake_slack, engine, db_url):
    with harness(fake_slack, engine, db_url, "") as slack:
        seed_two(slack)
        forget_names()  # the name index is per process: one an earlier test filled would be stale
        _, method = slack.command("/journey", "globx", OUTSIDER)  # a typo: would suggest Globex
        answer = slack.answer(method)
        assert "No account matches" in answer["text"] and "Globex" not in json.dumps(answer)
        _, method = slack.command("/journey", "globx", ADMIN)
        assert "Did you mean" in slack.answer(method)["text"]  # an admin is offered it
        _, method = slack.click({"action_id": "journey_pick:0", "block_id": "journey-did-you-mean",
                                 "type": "button", "value": "globex"}, OUTSIDER)  # forged pick
        assert slack.answer(method)["text"].startswith("Only ")


def test_stalls_all_and_the_app_home_follow_the_rule(fake_slack, engine, db_url):
    fake_slack.add_usergroup(GROUP, [MATE])
    with harness(fake_slack, engine, db_url, GROUP) as slack:
        seed_two(slack)
        _, method = slack.command("/stalls", "all", MATE)
        body = json.dumps(slack.answer(method)["blocks"])
        assert "Globex" in body and "*Acme*" in body and "You see only" not in body
        _, method = slack.command("/stalls", "all", OWNER)  # not in the team: their own only, said so
        body = json.dumps(slack.answer(method)["blocks"])
        assert "*Acme*" in body and "Globex" not in body and "You see only the accounts you own" in body
        _, method = slack.command("/stalls", "all", OUTSIDER)
        body = json.dumps(slack.answer(method)["blocks"])
        assert "Acme" not in body and "Globex" not in body and "No open stalls match" in body
        for user, shown in ((OWNER, "*Acme*"), (OUTSIDER, "Nothing in your queue")):
            slack.post(event_callback({"type": "app_home_opened", "user": user, "tab": "home", "event_ts": "1.0"}))
            fake_slack.wait_for(lambda: fake_slack.home(user) is not None, timeout=10)
            home = json.dumps(fake_slack.home(user))
            assert shown in home and "Globex" not in home
