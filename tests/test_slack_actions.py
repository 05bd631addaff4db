"""Buttons and menus on stalls, and the App Home, through the real app: signed block_actions
to /slack/events on a live server; pings posted to and edited on the fake Slack."""

from __future__ import annotations

import json
import threading
import time
from datetime import timezone

import pytest
from sqlalchemy import select, update

from bot.scan import scan
from bot.slack.render import ping_blocks, ping_text
from bot.slack.render.codec import Action, StallRef
from bot.slack.client import web_client
from bot.slack.listeners.actions import ACTION_OPS, HANDLED
from bot.stalls.permissions import PERMISSIONS, Op
from bot.stalls.views import ping_view
from storage.db import utcnow
from storage.models import Alert

from factories import ACCOUNT, DAY, HOUR, PROJECT, STALL, T0, audits, signup, stalls, store, track
from slack_signing import ADMIN, event_callback, make_slack_harness

pytest_plugins = ["tests.fakes.fixtures"]

OWNER = "U0OWNER"
OUTSIDER = "U0OUTSIDER"
ALERTS = "C0ALERTS"
ALERT = Alert.__table__


@pytest.fixture
def slack(fake_slack, engine, db_url):
    with make_slack_harness(fake_slack, engine, db_url) as harness:
        yield harness


@pytest.fixture
def ping(slack):
    """Acme, owned by OWNER, with a live step stall and its ping posted in the alerts channel
    (as the router does: the message, and an Alert row with its ts)."""
    store(slack.engine, slack.rules, signup("acme", T0, arr=50000, name="Acme") + [track("acme", PROJECT, T0 + HOUR)],
          now=T0 + HOUR)
    scan(slack.engine, slack.rules, T0 + 3 * DAY)
    with slack.engine.begin() as conn:
        conn.execute(update(ACCOUNT).where(ACCOUNT.c.id == "acme").values(owner_slack_id=OWNER))
    (stall,) = stalls(slack.engine, "acme")
    with slack.engine.connect() as conn:
        view = ping_view(conn, stall.id, slack.rules, utcnow())
    blocks = [b.to_dict() for b in ping_blocks(view)]
    client = web_client(slack.settings)
    posted = client.chat_postMessage(channel=ALERTS, text=ping_text(view), blocks=blocks)
    now = utcnow()
    with slack.engine.begin() as conn:
        conn.execute(ALERT.insert().values(stall_id=stall.id, channel=ALERTS, ts=posted["ts"], kind="ping",
                                           priority=stall.priority, created_at=now, updated_at=now))
    slack.fake.clear_calls()
    return Ping(slack, stall.id, posted["ts"], blocks)


class Ping:
    def __init__(self, slack, stall_id: int, ts: str, blocks: list[dict]):
        self.slack, self.stall_id, self.ts, self.blocks = slack, stall_id, ts, blocks

    @property
    def actions_block(self) -> dict:
        return next(b for b in self.blocks if b["type"] == "actions")

    def element(self, action: Action) -> dict:
        return next(e for e in self.actions_block["elements"] if e["action_id"] == action.value)

    def action(self, action: Action, option: int | None = None) -> dict:
        """What Slack sends when this ping's button (or select option) is used."""
        el = self.element(action)
        out = {"action_id": el["action_id"], "block_id": self.actions_block["block_id"], "type": el["type"]}
        if option is None:
            out["value"] = el["value"]
        else:
            out["selected_option"] = el["options"][option]
        return out

    def click(self, action: Action, user: str, option: int | None = None):
        container = {"type": "message", "message_ts": self.ts, "channel_id": ALERTS, "is_ephemeral": False}
        return self.slack.click(self.action(action, option), user, container=container, channel_id=ALERTS)

    def message(self) -> dict:
        (m,) = [m for m in self.slack.fake.messages(ALERTS) if m["ts"] == self.ts]
        return m

    def resolve(self, user: str, reason: str = "handled", **values):
        """Resolve through the modal (Resolve asks why): click, then submit; the submission's
        HTTP response (its JSON: field errors, if any)."""
        opened = len(self.slack.fake.calls("views.open"))
        self.click(Action.RESOLVE, user)
        return self.slack.submit_opened({"reason": reason, **values}, user, opened + 1)


def menu_action(stall_id: int, op: Action, days: int | None = None, *, digest: bool = False) -> dict:
    ref = StallRef(stall_id=stall_id, op=op, days=days)
    action_id = Action.DIGEST_MENU if digest else Action.ROW_MENU
    return {"action_id": action_id.value, "block_id": "row", "type": "overflow",
            "selected_option": {"text": {"type": "plain_text", "text": op.value}, "value": ref.encode()}}


def button_action(stall_id: int, action: Action) -> dict:
    return {"action_id": action.value, "block_id": f"stall-{stall_id}-actions", "type": "button",
            "value": StallRef(stall_id=stall_id).encode()}


def row_of(engine, stall_id: int):
    with engine.connect() as conn:
        return conn.execute(select(STALL).where(STALL.c.id == stall_id)).one()


def wait_for(predicate, timeout: float = 10.0) -> None:
    """Poll until a lazy listener's work shows in the database."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def wait_updated(ping: Ping, expected: str) -> dict:
    ping.slack.wait_delivered("chat.update", 1, timeout=10)
    update_call = ping.slack.fake.calls("chat.update")[0]
    assert update_call.body["channel"] == ALERTS and update_call.body["ts"] == ping.ts
    assert expected in json.dumps(update_call.body["blocks"], ensure_ascii=False)
    assert expected in json.dumps(ping.message()["blocks"], ensure_ascii=False)  # the channel sees it
    return update_call.body


# ------------------------------------------------------------------ the owner acts


def test_owner_resolves_from_the_ping(ping):
    res = ping.resolve(OWNER)
    assert res.status_code == 200 and not res.content  # the modal closes
    body = wait_updated(ping, f"Resolved by <@{OWNER}>")
    assert not any(b["type"] == "actions" for b in body["blocks"])  # no buttons on a closed stall
    row = row_of(ping.slack.engine, ping.stall_id)
    assert (row.status, row.open_key, row.resolved_by) == ("resolved", None, OWNER)
    (entry,) = audits(ping.slack.engine, ping.stall_id)
    assert (entry.actor, entry.action, entry.source, entry.account_id) == (OWNER, "stall.resolve", "stall_resolve", "acme")
    with ping.slack.engine.connect() as conn:
        alert = conn.execute(select(ALERT).where(ALERT.c.stall_id == ping.stall_id)).one()
    assert alert.acked_by == OWNER and alert.acked_at is not None


def test_owner_assigns_to_self(ping):
    ping.click(Action.ASSIGN, OWNER)
    wait_updated(ping, f"Assigned to <@{OWNER}>")
    row = row_of(ping.slack.engine, ping.stall_id)
    assert (row.assignee, row.status) == (OWNER, "open")
    assert [a.action for a in audits(ping.slack.engine, ping.stall_id)] == ["stall.assign"]


@pytest.mark.parametrize("option, days", [(0, 1), (1, 3), (2, 7)])
def test_owner_snoozes(ping, option, days):
    before = utcnow()
    ping.click(Action.SNOOZE, OWNER, option=option)
    wait_updated(ping, "Snoozed until")
    row = row_of(ping.slack.engine, ping.stall_id)
    assert (row.status, row.snoozed_by) == ("snoozed", OWNER) and row.open_key is not None
    until = row.snoozed_until.replace(tzinfo=row.snoozed_until.tzinfo or timezone.utc)
    assert abs((until - before).total_seconds() - days * 86400) < 60
    (entry,) = audits(ping.slack.engine, ping.stall_id)
    assert entry.action == "stall.snooze" and entry.detail["days"] == days


def test_view_journey_answers_ephemerally(ping):
    _, method = ping.click(Action.VIEW_JOURNEY, OWNER)
    answer = ping.slack.answer(method)
    assert answer["response_type"] == "ephemeral" and answer.get("replace_original") is False
    assert "Acme" in json.dumps(answer["blocks"]) and "Create a project" in json.dumps(answer["blocks"])
    assert ping.slack.fake.calls("chat.update") == []
    assert audits(ping.slack.engine, ping.stall_id) == []


def test_admin_and_assignee_may_act(ping):
    with ping.slack.engine.begin() as conn:
        conn.execute(update(STALL).where(STALL.c.id == ping.stall_id).values(assignee="U0HELPER"))
    ping.click(Action.SNOOZE, "U0HELPER", option=0)
    wait_updated(ping, "Snoozed")
    ping.slack.fake.clear_calls()
    ping.resolve(ADMIN)
    wait_updated(ping, f"Resolved by <@{ADMIN}>")
    assert [a.actor for a in audits(ping.slack.engine, ping.stall_id)] == ["U0HELPER", ADMIN]


def test_row_menu_in_an_ephemeral_list_answers_there_and_edits_the_ping(ping):
    _, method = ping.slack.click(menu_action(ping.stall_id, Action.SNOOZE, 3), OWNER,
                                 container={"type": "message", "message_ts": "9.9", "channel_id": "C0CS",
                                            "is_ephemeral": True}, channel_id="C0CS")
    answer = ping.slack.answer(method)
    assert answer["text"].startswith("Snoozed for 3 days") and answer["replace_original"] is False
    wait_updated(ping, "Snoozed until")
    assert row_of(ping.slack.engine, ping.stall_id).status == "snoozed"


def test_action_in_the_app_home_republishes_it(ping):
    ping.slack.click(menu_action(ping.stall_id, Action.ASSIGN), OWNER, channel_id=None,
                     container={"type": "view", "view_id": "V1"})
    calls = ping.slack.fake.wait_for_calls("views.publish", 1, timeout=10)
    assert calls[0].body["user_id"] == OWNER
    assert f"assigned to <@{OWNER}>" in json.dumps(calls[0].body["view"])
    wait_updated(ping, f"Assigned to <@{OWNER}>")


# ------------------------------------------------------------------ outsiders are refused

# Every action a user can take on a stall, as the messages carry it (the drafting flow's
# actions are clicked by outsiders in tests/test_recovery_flow.py).
DRAFT_FLOW = {Op.DRAFT, Op.REGENERATE, Op.DISCARD, Op.APPROVE}
CLICKS = {
    "assign button": lambda sid: button_action(sid, Action.ASSIGN),
    "resolve button": lambda sid: button_action(sid, Action.RESOLVE),
    "view journey button": lambda sid: button_action(sid, Action.VIEW_JOURNEY),
    "snooze select": lambda sid: {"action_id": Action.SNOOZE.value, "block_id": f"stall-{sid}-actions",
                                  "type": "static_select", "selected_option": {
                                      "text": {"type": "plain_text", "text": "Snooze 3 days"},
                                      "value": StallRef(stall_id=sid, days=3).encode()}},
    "row menu assign": lambda sid: menu_action(sid, Action.ASSIGN),
    "row menu snooze": lambda sid: menu_action(sid, Action.SNOOZE, 7),
    "row menu resolve": lambda sid: menu_action(sid, Action.RESOLVE),
    "digest menu assign": lambda sid: menu_action(sid, Action.DIGEST_ASSIGN, digest=True),
    "digest menu snooze": lambda sid: menu_action(sid, Action.DIGEST_SNOOZE, 1, digest=True),
    "assign to picker": lambda sid: {"action_id": Action.ASSIGN_TO.value, "block_id": f"stall-{sid}-actions",
                                     "type": "users_select", "selected_user": "U0SOMEONE"},
    "row menu assign to": lambda sid: menu_action(sid, Action.ASSIGN_TO),
    "digest menu assign to": lambda sid: menu_action(sid, Action.ASSIGN_TO, digest=True),
    "add note button": lambda sid: button_action(sid, Action.NOTE),
    "row menu add note": lambda sid: menu_action(sid, Action.NOTE),
    "digest menu add note": lambda sid: menu_action(sid, Action.NOTE, digest=True),
}


def op_of(action: dict) -> Op:
    """The operation a click asks for (a users_select carries no value: its action id says)."""
    from bot.slack.render.codec import decode_action

    if action["type"] == "users_select":
        return ACTION_OPS[Action(action["action_id"])]
    return ACTION_OPS[decode_action(action)[0]]


def test_every_declared_action_is_clicked_by_an_outsider():
    covered = {op_of(make(1)) for make in CLICKS.values()}
    assert covered == set(PERMISSIONS) - DRAFT_FLOW
    assert {json.loads(json.dumps(make(1)))["action_id"] for make in CLICKS.values()} == {a.value for a in HANDLED}


@pytest.mark.parametrize("click", sorted(CLICKS))
def test_outsider_is_refused_and_nothing_changes(ping, click):
    before = row_of(ping.slack.engine, ping.stall_id)
    _, method = ping.slack.click(CLICKS[click](ping.stall_id), OUTSIDER,
                                 container={"type": "message", "message_ts": ping.ts, "channel_id": ALERTS,
                                            "is_ephemeral": False})
    answer = ping.slack.answer(method)
    assert answer["response_type"] == "ephemeral" and answer["replace_original"] is False
    assert answer["text"].startswith("Only ") and "owner" in answer["text"]
    assert row_of(ping.slack.engine, ping.stall_id) == before
    assert audits(ping.slack.engine, ping.stall_id) == []
    assert ping.slack.fake.calls("chat.update") == [] and ping.slack.fake.calls("views.publish") == []
    assert ping.slack.fake.calls("views.open") == []  # the picker never opens for them
    assert "blocks" not in answer


# ------------------------------------------------------------------ double clicks, races, re-detection


def test_an_edit_queued_before_a_later_click_shows_the_later_state(ping):
    """The clicks' edits go through the outbox and are rendered when sent: the assignment's
    edit, sent after the stall was resolved, shows it resolved (never an older state)."""
    ping.click(Action.ASSIGN, OWNER)
    wait_for(lambda: [a.action for a in audits(ping.slack.engine, ping.stall_id)] == ["stall.assign"])
    ping.resolve(OWNER)
    wait_for(lambda: len(audits(ping.slack.engine, ping.stall_id)) == 2)
    edits = ping.slack.wait_delivered("chat.update", 1)
    assert all(f"Resolved by <@{OWNER}>" in json.dumps(e.body["blocks"]) for e in edits)
    assert f"Resolved by <@{OWNER}>" in json.dumps(ping.message()["blocks"])



def test_double_resolve_is_harmless_and_the_second_says_who(ping):
    ping.resolve(OWNER)
    wait_updated(ping, f"Resolved by <@{OWNER}>")
    _, method = ping.click(Action.RESOLVE, OWNER)
    assert ping.slack.answer(method)["text"] == f"Already resolved by <@{OWNER}> less than a minute ago: handled."
    _, method = ping.click(Action.SNOOZE, ADMIN, option=0)  # anyone, any action on a closed stall
    assert "Already resolved by" in ping.slack.answer(method)["text"]
    assert [a.action for a in audits(ping.slack.engine, ping.stall_id)] == ["stall.resolve"]
    assert len(ping.slack.fake.calls("views.open")) == 1  # no modal for a closed alert
    ping.slack.wait_delivered("chat.update", 2)  # the stale clicks refreshed the ping (one edit: they merge)


def test_concurrent_resolves_resolve_once(ping):
    for n, who in enumerate((OWNER, ADMIN, OWNER)):  # three modals open at once
        ping.click(Action.RESOLVE, who)
        ping.slack.fake.wait_for_calls("views.open", n + 1, timeout=10)
    opened = [(c.response["view"], c.body) for c in ping.slack.fake.calls("views.open")]
    users = (OWNER, ADMIN, OWNER)
    results = [None] * 3

    def submit(i):
        results[i] = ping.slack.submit(opened[i][0], {"reason": "handled"}, users[i])

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (entry,) = audits(ping.slack.engine, ping.stall_id)
    row = row_of(ping.slack.engine, ping.stall_id)
    assert row.resolved_by == entry.actor and row.status == "resolved"
    refused = [r.json()["errors"]["reason"] for r in results if r.content]
    assert len(refused) == 2
    assert all(t.startswith(f"Already resolved by <@{entry.actor}>") for t in refused), refused


def test_double_assign_is_harmless(ping):
    ping.click(Action.ASSIGN, OWNER)
    wait_updated(ping, "Assigned to")
    _, method = ping.click(Action.ASSIGN, OWNER)
    assert ping.slack.answer(method)["text"] == "It is already assigned to you."
    assert [a.action for a in audits(ping.slack.engine, ping.stall_id)] == ["stall.assign"]


def test_snooze_survives_a_rescan_of_the_same_stall(ping):
    ping.click(Action.SNOOZE, OWNER, option=2)
    wait_updated(ping, "Snoozed")
    snoozed = row_of(ping.slack.engine, ping.stall_id)
    report = scan(ping.slack.engine, ping.slack.rules, T0 + 6 * DAY, full=True)  # still stalled, re-detected
    assert report.opened == 0
    after = row_of(ping.slack.engine, ping.stall_id)
    assert (after.status, after.snoozed_until, after.snoozed_by, after.open_key) == (
        "snoozed", snoozed.snoozed_until, OWNER, snoozed.open_key)
    assert len(stalls(ping.slack.engine, "acme")) == 1


def test_a_forged_stall_id_is_answered_not_crashed(ping):
    _, method = ping.slack.click(button_action(99999, Action.RESOLVE), OWNER)
    assert ping.slack.answer(method)["text"] == "That stall no longer exists."
    _, method = ping.slack.click({"action_id": Action.RESOLVE.value, "block_id": "x", "type": "button",
                                  "value": "not json"}, OWNER)
    assert "out of date" in ping.slack.answer(method)["text"]


# ------------------------------------------------------------------ App Home


def test_app_home_opened_publishes_the_viewers_queue(ping):
    slack = ping.slack
    store(slack.engine, slack.rules, signup("globex", T0, arr=90000, name="Globex"), now=T0 + HOUR)
    scan(slack.engine, slack.rules, T0 + 3 * DAY)
    with slack.engine.begin() as conn:  # Globex is someone else's
        conn.execute(update(ACCOUNT).where(ACCOUNT.c.id == "globex").values(owner_slack_id="U0SOMEONE"))
    res = slack.post(event_callback({"type": "app_home_opened", "user": OWNER, "channel": "D0HOME", "tab": "home",
                                     "event_ts": "1.0"}))
    assert res.status_code == 200
    (call,) = slack.fake.wait_for_calls("views.publish", 1, timeout=10)
    assert call.body["user_id"] == OWNER
    view = json.dumps(call.body["view"], ensure_ascii=False)
    assert "Your stall queue" in view and "*Acme*" in view and "Globex" not in view
    assert json.loads(json.dumps(slack.fake.home(OWNER)))["type"] == "home"

    slack.post(event_callback({"type": "app_home_opened", "user": "U0NOBODY", "tab": "home", "event_ts": "2.0"}))
    calls = slack.fake.wait_for_calls("views.publish", 2, timeout=10)
    assert "Nothing in your queue" in json.dumps(calls[1].body["view"])

