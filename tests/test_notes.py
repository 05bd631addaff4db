"""Notes on accounts and their alerts, through the real app: signed Slack requests to
/slack/events on a live server, the ping routed by the real router and posted to the fake
Slack. "Add note" opens a modal from the ping, /journey, App Home and digest rows; the note is
stored, audited, shown in /journey, replied once in the ping's thread and shown on the digest
row; outsiders are refused with nothing stored; hostile text stays inert everywhere."""

from __future__ import annotations

import json
import re
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from bot.scan import scan
from bot.settings import default_rules_text
from bot.slack.digest import post_digest
from bot.slack.render.codec import Action
from bot.slack.render.notes import NOTE_BLOCK_ID
from bot.slack.router import Router
from bot.stalls import notes
from bot.stalls.notes import MAX_CHARS
from storage.db import utcnow
from storage.models import Alert, AuditEntry, Note

from factories import ACCOUNT, PROJECT, STALL, signup, store, track
from slack_inert import assert_inert
from slack_signing import ADMIN, event_callback, make_slack_harness

pytest_plugins = ["tests.fakes.fixtures"]

OWNER = "U0OWNER"
MATE = "U0MATE"  # in the CS team
OUTSIDER = "U0OUTSIDER"
ALERTS = "C0ALERTS"
DIGEST = "C0DIGEST"
NOTE = Note.__table__
AUDIT = AuditEntry.__table__
TEXT = "Spoke to them: the integration lands next sprint."
HOSTILE = ("<!channel> @here ping <@U0EVIL> see <https://evil.example.com|the fix> or www.evil.example.com "
           "*urgent* _now_ ~x~ `code` \u202eesrever\u202c &amp; mailto:ceo@evil.example.com")


def quiet_free_rules(tmp_path) -> str:
    """The default rules without quiet hours (a ping must not wait for the morning)."""
    text = default_rules_text()
    text = re.sub(r'(?m)^quiet_hours_start = .*$', 'quiet_hours_start = "00:00"', text)
    text = re.sub(r'(?m)^quiet_hours_end = .*$', 'quiet_hours_end = "00:00"', text)
    path = tmp_path / "rules.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.fixture
def slack(fake_slack, engine, db_url, tmp_path):
    with make_slack_harness(fake_slack, engine, db_url, STALLWATCH_RULES=quiet_free_rules(tmp_path),
                            STALLWATCH_ALERTS_CHANNEL=ALERTS, STALLWATCH_DIGEST_CHANNEL=DIGEST,
                            STALLWATCH_TEAM=MATE) as harness:
        yield harness


@pytest.fixture
def ping(slack):
    """Acme, owned by OWNER, stalled on its first project, pinged by the router in the alerts
    channel (the post goes through the outbox, as every ping does)."""
    now = utcnow()
    store(slack.engine, slack.rules, signup("acme", now - timedelta(days=4), arr=250000, name="Acme")
          + [track("acme", PROJECT, now - timedelta(days=4))], now=now - timedelta(days=4))
    scan(slack.engine, slack.rules, now, only=["acme"])
    with slack.engine.begin() as conn:
        conn.execute(update(ACCOUNT).where(ACCOUNT.c.id == "acme").values(owner_slack_id=OWNER))
        stall_id = conn.execute(select(STALL.c.id).where(STALL.c.account_id == "acme",
                                                         STALL.c.open_key.is_not(None))).scalar_one()
    Router(slack.engine, slack.settings, slack.rules).route_stalls([stall_id], now)
    slack.wait_delivered("chat.postMessage", 1)
    (message,) = [m for m in slack.fake.messages(ALERTS)]
    slack.fake.clear_calls()
    return stall_id, message


# --- helpers -------------------------------------------------------------------------------------

def button_of(blocks: list[dict], action_id: str) -> tuple[dict, str]:
    """(the element, its block id) of the first element with `action_id` in the blocks."""
    for block in blocks:
        for element in block.get("elements") or ([block["accessory"]] if block.get("accessory") else []):
            if element.get("action_id") == action_id:
                return element, block.get("block_id") or "b"
    raise AssertionError(f"no {action_id} in the blocks")


def click_button(element: dict, block_id: str) -> dict:
    return {"action_id": element["action_id"], "block_id": block_id, "type": "button", "value": element["value"]}


def note_option(blocks: list[dict], stall_id: int, menu: Action) -> dict:
    """The "Add note" option of the stall's row menu, as Slack sends it when chosen."""
    for block in blocks:
        accessory = block.get("accessory") or {}
        if accessory.get("action_id") != menu.value:
            continue
        for option in accessory["options"]:
            if option["text"]["text"] == "Add note" and json.loads(option["value"])["stall_id"] == stall_id:
                return {"action_id": menu.value, "block_id": block.get("block_id") or "row", "type": "overflow",
                        "selected_option": option}
    raise AssertionError("no Add note option")


def opened_view(slack, count: int = 1) -> dict:
    """The modal the app opened last (as Slack stores it: with its id)."""
    calls = slack.fake.wait_for_calls("views.open", count, timeout=10)
    assert calls[-1].ok, calls[-1].response
    return calls[-1].response["view"]


def on_ping(slack, message: dict) -> dict:
    """Click the ping's "Add note" as its channel shows it; the modal it opened."""
    element, block_id = button_of(message["blocks"], Action.NOTE.value)
    slack.click(click_button(element, block_id), OWNER, channel_id=ALERTS,
                container={"type": "message", "message_ts": message["ts"], "channel_id": ALERTS,
                           "is_ephemeral": False})
    return opened_view(slack)


def stored(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(select(NOTE).order_by(NOTE.c.id)).all()


def note_audits(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(select(AUDIT).where(AUDIT.c.action == notes.ADDED).order_by(AUDIT.c.id)).all()


def thread_replies(slack, ts: str) -> list:
    return [c for c in slack.fake.calls("chat.postMessage") if c.ok and c.body.get("thread_ts") == ts]


def journey(slack, user: str = OWNER) -> dict:
    _, method = slack.command("/journey", "acme", user)
    return slack.answer(method)


# --- the note, from the ping to every surface --------------------------------------------------------

def test_a_note_from_the_ping_is_stored_audited_and_shown_everywhere_once(slack, ping):
    stall_id, message = ping
    view = on_ping(slack, message)
    (field,) = [b for b in view["blocks"] if b["type"] == "input"]
    assert field["element"]["type"] == "plain_text_input" and field["element"]["multiline"] is True
    assert field["element"]["max_length"] == MAX_CHARS and "Acme" in json.dumps(view["blocks"])

    res = slack.submit(view, {NOTE_BLOCK_ID: TEXT}, OWNER)
    assert res.status_code == 200 and not res.text  # the modal closes
    (note,) = stored(slack.engine)
    assert (note.account_id, note.stall_id, note.author, note.text) == ("acme", stall_id, OWNER, TEXT)
    (entry,) = note_audits(slack.engine)
    assert (entry.actor, entry.stall_id, entry.account_id, entry.detail["note_id"]) == (OWNER, stall_id, "acme", note.id)

    # Once in the ping's thread, even when Slack sends the same submission again.
    assert slack.submit(view, {NOTE_BLOCK_ID: TEXT}, OWNER).status_code == 200
    assert len(stored(slack.engine)) == 1 and len(note_audits(slack.engine)) == 1
    slack.wait_delivered("chat.postMessage", 1)
    for _ in range(3):
        slack.deliver()
    (reply,) = thread_replies(slack, message["ts"])
    assert reply.body["channel"] == ALERTS and reply.body["text"] == f"📝 <@{OWNER}>: Spoke to them: the integration lands next sprint."

    # /journey: the latest notes, with author and time.
    blocks = json.dumps(journey(slack)["blocks"], ensure_ascii=False)
    assert "*Notes*" in blocks and f"<@{OWNER}>: Spoke to them" in blocks and "<!date^" in blocks

    # The digest row of the account: its latest note, under the row's facts.
    assert post_digest(slack.engine, slack.settings, slack.rules, utcnow()).posted
    slack.wait_delivered("chat.postMessage", 2)
    digest = [c for c in slack.fake.calls("chat.postMessage") if c.body.get("channel") == DIGEST]
    rows = [b["text"]["text"] for c in digest for b in c.body["blocks"]
            if b["type"] == "section" and "Acme" in (b.get("text") or {}).get("text", "")]
    (row,) = [r for r in rows if "ARR" in r]
    assert row.split("\n")[-1] == f"📝 <@{OWNER}>: Spoke to them: the integration lands next sprint."
    # Pinged today, the account is one line of "Pinged in the last 24 h", its note under it.
    assert row.split("\n")[-2].startswith(("🔴", "🟠", "🟡", "⚪")) and "Acme" in row.split("\n")[-2]


def test_journey_lists_notes_newest_first_and_notes_on_the_account_itself(slack, ping):
    _, message = ping
    slack.submit(on_ping(slack, message), {NOTE_BLOCK_ID: "first call"}, OWNER)
    answer = journey(slack, MATE)  # a teammate sees the account and may write on it
    element, block_id = button_of(answer["blocks"], Action.ACCOUNT_NOTE.value)
    _, method = slack.click(click_button(element, block_id), MATE, channel_id="C0CS",
                            container={"type": "message", "message_ts": "7.7", "channel_id": "C0CS",
                                       "is_ephemeral": True})
    res = slack.submit(opened_view(slack, 2), {NOTE_BLOCK_ID: "second call"}, MATE)
    assert res.status_code == 200 and not res.text
    told = slack.answer(method)  # where the modal was opened from, ephemerally
    assert told["response_type"] == "ephemeral" and told["text"].startswith("📝 Note added on *Acme*")
    first, second = stored(slack.engine)
    assert (second.author, second.stall_id, second.account_id) == (MATE, None, "acme")  # on the account
    blocks = json.dumps(journey(slack)["blocks"], ensure_ascii=False)
    assert blocks.index("second call") < blocks.index("first call")
    assert f"<@{MATE}>: second call" in blocks
    # Its thread reply too: a note on the account is a note on its open alert.
    slack.wait_delivered("chat.postMessage", 2)
    for _ in range(3):
        slack.deliver()
    assert [c.body["text"] for c in thread_replies(slack, message["ts"])] == [
        f"📝 <@{OWNER}>: first call", f"📝 <@{MATE}>: second call"]


@pytest.mark.parametrize("surface", ["app home", "digest row", "stalls list"])
def test_the_modal_opens_from_list_rows(slack, ping, surface):
    stall_id, _ = ping
    if surface == "app home":
        slack.post(event_callback({"type": "app_home_opened", "user": OWNER, "tab": "home"}))
        (home,) = slack.fake.wait_for_calls("views.publish", 1, timeout=10)
        action = note_option(home.body["view"]["blocks"], stall_id, Action.ROW_MENU)
        slack.click(action, OWNER, channel_id=None, container={"type": "view", "view_id": home.response["view"]["id"]})
    elif surface == "digest row":
        with slack.engine.begin() as conn:  # pinged two days ago: today it is one of "the rest", with a row
            conn.execute(update(Alert.__table__).values(created_at=utcnow() - timedelta(days=2)))
        post_digest(slack.engine, slack.settings, slack.rules, utcnow())
        slack.wait_delivered("chat.postMessage", 1)
        (digest,) = [c for c in slack.fake.calls("chat.postMessage") if c.body.get("channel") == DIGEST]
        action = note_option(digest.body["blocks"], stall_id, Action.DIGEST_MENU)
        slack.click(action, ADMIN, channel_id=DIGEST, container={
            "type": "message", "message_ts": digest.response["ts"], "channel_id": DIGEST, "is_ephemeral": False})
    else:
        _, method = slack.command("/stalls", "all", OWNER)
        action = note_option(slack.answer(method)["blocks"], stall_id, Action.ROW_MENU)
        slack.click(action, OWNER, channel_id="C0CS",
                    container={"type": "message", "message_ts": "8.8", "channel_id": "C0CS", "is_ephemeral": True})
    view = opened_view(slack)
    user = ADMIN if surface == "digest row" else OWNER
    assert slack.submit(view, {NOTE_BLOCK_ID: f"from the {surface}"}, user).status_code == 200
    (note,) = stored(slack.engine)
    assert (note.text, note.stall_id, note.author) == (f"from the {surface}", stall_id, user)


# --- who may -------------------------------------------------------------------------------------------

def test_an_outsider_is_refused_and_nothing_is_stored(slack, ping):
    stall_id, message = ping
    element, block_id = button_of(message["blocks"], Action.NOTE.value)
    _, method = slack.click(click_button(element, block_id), OUTSIDER, channel_id=ALERTS,
                            container={"type": "message", "message_ts": message["ts"], "channel_id": ALERTS,
                                       "is_ephemeral": False})
    answer = slack.answer(method)
    assert answer["response_type"] == "ephemeral" and answer["text"].startswith("Only ")
    _, method = slack.click({"action_id": Action.ACCOUNT_NOTE.value, "block_id": "notes", "type": "button",
                             "value": "acme"}, OUTSIDER, channel_id="C0CS")
    assert slack.answer(method)["text"].startswith("Only ")
    assert slack.fake.calls("views.open") == []  # no modal opens for them

    # A modal opened for the owner, submitted by someone else: refused in the modal, nothing stored.
    view = on_ping(slack, message)
    res = slack.submit(view, {NOTE_BLOCK_ID: "let me in"}, OUTSIDER)
    assert res.json()["response_action"] == "errors"
    assert res.json()["errors"][NOTE_BLOCK_ID].startswith("Only ")
    assert stored(slack.engine) == [] and note_audits(slack.engine) == []
    time.sleep(0.2)
    slack.deliver()
    assert thread_replies(slack, message["ts"]) == []


@pytest.mark.parametrize("typed, error", [("   \n ", "Write a note first."),
                                          ("x" * (MAX_CHARS + 1), "at most 2,000 characters")])
def test_an_empty_or_oversized_note_is_refused_in_the_modal(slack, ping, typed, error):
    _, message = ping
    res = slack.submit(on_ping(slack, message), {NOTE_BLOCK_ID: typed}, OWNER)
    assert res.json()["response_action"] == "errors" and error in res.json()["errors"][NOTE_BLOCK_ID]
    assert stored(slack.engine) == [] and note_audits(slack.engine) == []


# --- hostile text -----------------------------------------------------------------------------------------

def test_hostile_text_is_stored_as_typed_and_inert_wherever_shown(slack, ping):
    _, message = ping
    slack.submit(on_ping(slack, message), {NOTE_BLOCK_ID: HOSTILE + "\nsecond line"}, OWNER)
    (note,) = stored(slack.engine)
    assert note.text == HOSTILE + "\nsecond line"  # escaping happens where it is shown, not in the database

    slack.wait_delivered("chat.postMessage", 1)
    for _ in range(3):
        slack.deliver()
    (reply,) = thread_replies(slack, message["ts"])
    answer = journey(slack)
    post_digest(slack.engine, slack.settings, slack.rules, utcnow())
    slack.wait_delivered("chat.postMessage", 2)
    digest = [c.body for c in slack.fake.calls("chat.postMessage") if c.body.get("channel") == DIGEST]
    shown = [reply.body, answer, *digest]
    for body in shown:
        assert_inert(body, markers=["evil.example.com", "www.evil"], users=[OWNER])
    assert "esrever" in reply.body["text"] and "second line" in reply.body["text"]  # still reads as typed
    assert "esrever" in json.dumps(answer["blocks"], ensure_ascii=False)
    assert any(f"📝 <@{OWNER}>: &lt;!channel&gt; @" in json.dumps(b["blocks"], ensure_ascii=False) for b in digest)


# --- the export ----------------------------------------------------------------------------------------------

def test_since_yields_every_note_from_a_date_oldest_first(slack, ping):
    stall_id, _ = ping
    now = utcnow()
    with slack.engine.begin() as conn:
        for i, days in enumerate((9, 3, 2, 2, 1)):
            conn.execute(NOTE.insert().values(account_id="acme", stall_id=stall_id if i % 2 else None, author=OWNER,
                                              text=f"note {i}", created_at=now - timedelta(days=days)))
    got = list(notes.since(slack.engine, now - timedelta(days=5), batch=2))  # pages of two
    assert [n.text for n in got] == ["note 1", "note 2", "note 3", "note 4"]
    assert [n.stall_id for n in got] == [stall_id, None, stall_id, None]
    assert all(n.created_at.tzinfo is not None and n.author == OWNER for n in got)
    assert list(notes.since(slack.engine, now)) == []
