"""Decisions that last, snoozes up to 30 days, stale buttons: through the real app (signed
Slack requests against the fake Slack), the real scan and the backtest replay."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select, update

from bot.backtest.history import read_history
from bot.backtest.replay import Resolve, replay
from bot.scan import scan
from bot.settings import load_rules
from bot.slack.client import web_client
from bot.slack.queries import ESCALATION
from bot.slack.render import escalation_blocks
from bot.slack.render.codec import Action, StallRef
from bot.stalls import actions
from bot.stalls.context import Services
from bot.stalls.errors import BadRequest
from bot.stalls.views import ping_view
from storage.db import utcnow
from storage.models import Account, Alert

from factories import DAY, HOUR, INTEGRATION, INVITE, T0, audits, stalls, store, track
from slack_signing import ADMIN
from test_slack_actions import (ALERTS, OUTSIDER, OWNER, menu_action, ping, row_of, slack,  # noqa: F401 - fixtures
                                wait_for, wait_updated)
import test_backtest as bt

pytest_plugins = ["tests.fakes.fixtures"]

UTC = timezone.utc
ALERT = Alert.__table__
ACCOUNT = Account.__table__
MANAGERS = "C0MANAGERS"
NOTE = "customer is on holiday"


def today():
    return utcnow().date()


def open_modal(ping, action: dict, user: str, **kw) -> dict:
    """Click `action` on the ping; the modal the app opened (its view as stored)."""
    before = len(ping.slack.fake.calls("views.open"))
    ping.slack.click(action, user, container={"type": "message", "message_ts": ping.ts, "channel_id": ALERTS,
                                              "is_ephemeral": False}, **kw)
    return ping.slack.fake.wait_for_calls("views.open", before + 1, timeout=10)[-1].response["view"]


def resolve_button(ping) -> dict:
    return ping.action(Action.RESOLVE)


def resolve(ping, user: str, **values):
    view = open_modal(ping, resolve_button(ping), user)
    return ping.slack.submit(view, values, user)


def errors(res) -> dict:
    return res.json()["errors"] if res.content else {}


# ------------------------------------------------------------------ Resolve asks why


def test_resolve_opens_a_modal_that_asks_why(ping):
    view = open_modal(ping, resolve_button(ping), OWNER)
    assert view["callback_id"] == Action.RESOLVE_SUBMIT.value and json.loads(view["private_metadata"])["stall_id"] \
        == ping.stall_id
    blocks = {b["block_id"]: b for b in view["blocks"] if b["type"] == "input"}
    assert [o["value"] for o in blocks["reason"]["element"]["options"]] == ["handled", "false_positive", "known"]
    assert blocks["quiet_until"]["element"]["type"] == "datepicker" and blocks["quiet_until"]["optional"]
    assert blocks["note"]["element"]["max_length"] == 300 and blocks["note"]["optional"]
    assert "Acme" in json.dumps(view["blocks"])
    assert row_of(ping.slack.engine, ping.stall_id).status == "open"  # nothing happens before the submission


@pytest.mark.parametrize("reason, shown", [
    ("handled", f"handled — '{NOTE}'"),
    ("false_positive", f"false positive — '{NOTE}'"),
    ("known", "known, quiet until "),
])
def test_each_reason_is_stored_audited_and_shown_on_the_ping(ping, reason, shown):
    until = (today() + timedelta(days=20)).isoformat()
    res = resolve(ping, OWNER, reason=reason, quiet_until=until, note=f"  {NOTE} ")
    assert res.status_code == 200 and not res.content, res.content  # the modal closes
    body = wait_updated(ping, f"Resolved by <@{OWNER}>")
    assert shown in json.dumps(body["blocks"], ensure_ascii=False)
    row = row_of(ping.slack.engine, ping.stall_id)
    assert (row.status, row.resolved_by, row.resolution_kind) == ("resolved", OWNER, reason)
    assert row.decision_key == f"acme|{row.rule}" and row.open_key is None
    assert (row.quiet_until is not None) == (reason == "known")
    (entry,) = audits(ping.slack.engine, ping.stall_id)
    assert entry.action == "stall.resolve" and entry.detail["reason"] == reason
    assert entry.detail["note"] == (NOTE if reason != "known" else NOTE)


@pytest.mark.parametrize("values, field", [
    ({}, "reason"),
    ({"reason": "known"}, "quiet_until"),  # required for that choice
    ({"reason": "known", "quiet_until": "2020-01-01"}, "quiet_until"),  # in the past
    ({"reason": "known", "quiet_until": "TODAY+91"}, "quiet_until"),  # past 90 days
    ({"reason": "handled", "note": "x" * 301}, "note"),
])
def test_a_bad_answer_keeps_the_modal_open_and_changes_nothing(ping, values, field):
    if values.get("quiet_until") == "TODAY+91":
        values = {**values, "quiet_until": (today() + timedelta(days=91)).isoformat()}
    res = resolve(ping, OWNER, **values)
    assert field in errors(res)
    row = row_of(ping.slack.engine, ping.stall_id)
    assert row.status == "open" and row.resolution_kind is None
    assert audits(ping.slack.engine, ping.stall_id) == []


def test_resolve_from_a_list_row_asks_why_too(ping):
    view = open_modal(ping, menu_action(ping.stall_id, Action.RESOLVE), OWNER)
    assert view["callback_id"] == Action.RESOLVE_SUBMIT.value
    ping.slack.submit(view, {"reason": "false_positive"}, OWNER)
    wait_for(lambda: row_of(ping.slack.engine, ping.stall_id).resolution_kind == "false_positive")


def test_an_outsider_cannot_open_nor_submit_the_modal(ping):
    _, method = ping.slack.click(resolve_button(ping), OUTSIDER)
    assert "not allowed" in ping.slack.answer(method)["text"].lower() or "Only" in ping.slack.answer(method)["text"]
    assert ping.slack.fake.calls("views.open") == []
    view = open_modal(ping, resolve_button(ping), OWNER)  # the owner's modal, submitted by someone else
    res = ping.slack.submit(view, {"reason": "handled"}, OUTSIDER)
    assert errors(res)["reason"].startswith("Only")
    assert row_of(ping.slack.engine, ping.stall_id).status == "open"
    assert audits(ping.slack.engine, ping.stall_id) == []


# ------------------------------------------------------------------ the decision lasts


def test_a_resolved_alert_stays_closed_across_scans_while_the_condition_holds(ping):
    engine, rules = ping.slack.engine, ping.slack.rules
    resolve(ping, OWNER, reason="handled", note=NOTE)
    wait_for(lambda: row_of(engine, ping.stall_id).status == "resolved")
    for days in (4, 5, 8, 15):  # still stalled on the same step, day after day
        scan(engine, rules, T0 + days * DAY, full=True)
    reopened = [s.rule for s in stalls(engine, "acme")][1:]
    assert "step_stall" not in reopened  # (by day 15, "not activated" fires: another rule, it opens)
    assert row_of(engine, ping.stall_id).decision_key is not None  # still holds


def test_without_a_decision_the_same_condition_reopens(ping):
    """What the decision prevents: a resolve that records none (as before) reopens at the next scan."""
    engine, rules = ping.slack.engine, ping.slack.rules
    services = Services(engine=engine, settings=ping.slack.settings, rules=rules)
    actions.resolve(services, ping.stall_id, OWNER, source="test")
    assert scan(engine, rules, T0 + 4 * DAY, full=True).opened == 1


def test_reaching_the_step_then_stalling_on_the_next_reopens(ping):
    engine, rules = ping.slack.engine, ping.slack.rules
    resolve(ping, OWNER, reason="false_positive")
    wait_for(lambda: row_of(engine, ping.stall_id).status == "resolved")
    store(engine, rules, [track("acme", INTEGRATION, T0 + 4 * DAY)], now=T0 + 4 * DAY)
    assert scan(engine, rules, T0 + 4 * DAY + HOUR).opened == 0  # on its way: nothing to say
    decided = row_of(engine, ping.stall_id)
    assert decided.decision_key is None  # the condition went away: the decision lapsed
    assert [a.action for a in audits(engine, ping.stall_id)] == ["stall.resolve", "stall.lapse"]
    report = scan(engine, rules, T0 + 10 * DAY, full=True)  # stalled again, on the next step
    assert report.opened == 1
    latest = stalls(engine, "acme")[-1]
    assert latest.step == INVITE and latest.status == "open"


def test_known_stays_quiet_until_the_date_then_may_reopen(ping):
    engine, rules = ping.slack.engine, ping.slack.rules
    until = today() + timedelta(days=10)
    resolve(ping, OWNER, reason="known", quiet_until=until.isoformat())
    wait_for(lambda: row_of(engine, ping.stall_id).status == "resolved")
    quiet = datetime.combine(until, datetime.min.time(), UTC)
    scan(engine, rules, quiet - HOUR, full=True)
    assert [s.rule for s in stalls(engine, "acme")][1:] in ([], ["not_activated"])  # another rule may open
    with engine.connect() as conn:  # the review wakes the account when the quiet period ends
        due = conn.execute(select(ACCOUNT.c.next_eval_at).where(ACCOUNT.c.id == "acme")).scalar()
    assert due.replace(tzinfo=due.tzinfo or UTC) <= quiet
    scan(engine, rules, quiet + HOUR)  # due then: it reopens, the condition still holds
    assert [s.rule for s in stalls(engine, "acme", rule="step_stall")] == ["step_stall", "step_stall"]
    assert row_of(engine, ping.stall_id).decision_key is None


# ------------------------------------------------------------------ snooze up to 30 days or a date


@pytest.mark.parametrize("option, days", [(3, 14), (4, 30)])
def test_the_ping_snoozes_up_to_30_days(ping, option, days):
    before = utcnow()
    ping.click(Action.SNOOZE, OWNER, option=option)
    wait_updated(ping, "Snoozed until")
    row = row_of(ping.slack.engine, ping.stall_id)
    until = row.snoozed_until.replace(tzinfo=row.snoozed_until.tzinfo or UTC)
    assert abs((until - before).total_seconds() - days * 86400) < 60


def test_snooze_until_a_date_opens_a_modal(ping):
    view = open_modal(ping, ping.action(Action.SNOOZE, option=5), OWNER)  # "Until a date…"
    assert view["callback_id"] == Action.SNOOZE_SUBMIT.value
    select_block = next(b for b in view["blocks"] if b.get("block_id") == "snooze_for")
    assert select_block["element"]["initial_option"]["value"] == "date"
    for bad in ((today() + timedelta(days=31)).isoformat(), today().isoformat(), None):
        res = ping.slack.submit(view, {"snooze_for": "date", "snooze_until": bad}, OWNER)
        assert "snooze_until" in errors(res)
    assert row_of(ping.slack.engine, ping.stall_id).status == "open"
    day = today() + timedelta(days=30)
    res = ping.slack.submit(view, {"snooze_for": "date", "snooze_until": day.isoformat()}, OWNER)
    assert not res.content
    wait_for(lambda: row_of(ping.slack.engine, ping.stall_id).status == "snoozed")
    row = row_of(ping.slack.engine, ping.stall_id)
    assert row.snoozed_until.replace(tzinfo=row.snoozed_until.tzinfo or UTC) == datetime.combine(
        day, datetime.min.time(), UTC)
    (entry,) = audits(ping.slack.engine, ping.stall_id)
    assert entry.action == "stall.snooze" and entry.detail["until"].startswith(day.isoformat())


def test_a_row_menu_snoozes_through_the_modal(ping):
    view = open_modal(ping, menu_action(ping.stall_id, Action.SNOOZE_PICK), OWNER)
    assert ping.slack.submit(view, {"snooze_for": "30"}, OUTSIDER).json()["errors"]["snooze_for"].startswith("Only")
    assert row_of(ping.slack.engine, ping.stall_id).status == "open"
    ping.slack.submit(view, {"snooze_for": "30"}, OWNER)
    wait_for(lambda: row_of(ping.slack.engine, ping.stall_id).status == "snoozed")
    assert audits(ping.slack.engine, ping.stall_id)[0].detail["days"] == 30


def test_the_use_case_refuses_past_30_days_or_the_past(ping):
    services = Services(engine=ping.slack.engine, settings=ping.slack.settings, rules=ping.slack.rules)
    for kw in ({"days": 31}, {"until": today() + timedelta(days=31)}, {"until": today()}):
        with pytest.raises(BadRequest):
            actions.snooze(services, ping.stall_id, OWNER, source="test", **kw)
    with pytest.raises(BadRequest):
        actions.resolve(services, ping.stall_id, OWNER, source="test", reason="known")  # no date
    with pytest.raises(BadRequest):
        actions.resolve(services, ping.stall_id, OWNER, source="test", reason="snoozed")  # no such reason
    assert row_of(ping.slack.engine, ping.stall_id).status == "open"
    assert audits(ping.slack.engine, ping.stall_id) == []


# ------------------------------------------------------------------ stale buttons


@pytest.fixture
def resolved(ping):
    """The ping's alert, resolved by the owner as a false positive (and that edit sent)."""
    resolve(ping, OWNER, reason="false_positive", note=NOTE)
    wait_updated(ping, f"Resolved by <@{OWNER}>")
    ping.slack.fake.clear_calls()
    return ping


STALE = f"Already resolved by <@{OWNER}> less than a minute ago: false positive — '{NOTE}'."


def test_a_stale_click_on_the_ping_says_what_happened_and_refreshes_it(resolved):
    _, method = resolved.click(Action.ASSIGN, ADMIN)
    assert resolved.slack.answer(method)["text"] == STALE
    (edit,) = resolved.slack.wait_delivered("chat.update", 1)
    assert edit.body["ts"] == resolved.ts and "Resolved by" in json.dumps(edit.body["blocks"])
    assert resolved.slack.fake.calls("views.open") == []  # Resolve again: no modal either
    _, method = resolved.click(Action.RESOLVE, ADMIN)
    assert resolved.slack.answer(method)["text"] == STALE
    assert [a.action for a in audits(resolved.slack.engine, resolved.stall_id)] == ["stall.resolve"]


def test_a_stale_click_on_an_escalation_refreshes_it_as_an_escalation(resolved):
    slack = resolved.slack
    with slack.engine.connect() as conn:
        view = ping_view(conn, resolved.stall_id, slack.rules, utcnow())
    live = view.__class__(**{**view.__dict__, "status": "open"})  # as it was posted, before the resolve
    blocks = [b.to_dict() for b in escalation_blocks(live, minutes_unacked=30)]
    posted = web_client(slack.settings).chat_postMessage(channel=MANAGERS, text="Unacknowledged", blocks=blocks)
    now = utcnow()
    with slack.engine.begin() as conn:
        conn.execute(ALERT.insert().values(stall_id=resolved.stall_id, channel=MANAGERS, ts=posted["ts"],
                                           kind=ESCALATION, priority="P0", created_at=now, updated_at=now))
    slack.fake.clear_calls()
    actions_block = next(b for b in blocks if b["type"] == "actions")
    snooze = next(e for e in actions_block["elements"] if e["action_id"] == Action.SNOOZE.value)
    _, method = slack.click({"action_id": Action.SNOOZE.value, "block_id": actions_block["block_id"],
                             "type": "static_select", "selected_option": snooze["options"][0]}, ADMIN,
                            container={"type": "message", "message_ts": posted["ts"], "channel_id": MANAGERS,
                                       "is_ephemeral": False}, channel_id=MANAGERS)
    assert slack.answer(method)["text"] == STALE
    edits = slack.wait_delivered("chat.update", 2)  # the ping and the escalation
    (edit,) = [e for e in edits if e.body["ts"] == posted["ts"]]
    shown = json.dumps(edit.body["blocks"], ensure_ascii=False)
    assert "Unacknowledged" in shown and "*Status*\\nResolved" in shown and '"actions"' not in shown


def test_a_stale_click_on_a_digest_row_shows_the_row_closed(resolved):
    slack = resolved.slack
    row = {"type": "section", "block_id": f"row-{resolved.stall_id}",
           "text": {"type": "mrkdwn", "text": "🟠 *Acme* · $50K ARR"},
           "accessory": {"type": "overflow", "action_id": Action.DIGEST_MENU.value, "options": []}}
    message = {"type": "message", "ts": "5.5", "text": "Daily digest",
               "blocks": [{"type": "header", "block_id": "h", "text": {"type": "plain_text", "text": "Digest"}}, row]}
    action = {**menu_action(resolved.stall_id, Action.DIGEST_ASSIGN, digest=True), "block_id": row["block_id"]}
    _, method = slack.click(action, ADMIN, message=message,
                            container={"type": "message", "message_ts": "5.5", "channel_id": "C0DIGEST",
                                       "is_ephemeral": False}, channel_id="C0DIGEST")
    replaced, told = [c.body for c in slack.fake.wait_for_calls(method, 2, timeout=10)]
    assert replaced["replace_original"] is True and len(replaced["blocks"]) == 2
    closed = replaced["blocks"][1]
    assert "accessory" not in closed and "Acme" in closed["text"]["text"] and STALE in closed["text"]["text"]
    assert told == {"text": STALE, "response_type": "ephemeral", "replace_original": False}


def test_a_stale_click_on_a_stalls_row_lists_again(resolved):
    slack = resolved.slack
    action = {**menu_action(resolved.stall_id, Action.ASSIGN), "block_id": f"stalls:mine · P0:{resolved.stall_id}"}
    _, method = slack.click(action, OWNER, container={"type": "message", "message_ts": "9.9", "channel_id": "C0CS",
                                                      "is_ephemeral": True}, channel_id="C0CS")
    relisted, told = [c.body for c in slack.fake.wait_for_calls(method, 2, timeout=10)]
    assert relisted["replace_original"] is True and "mine · P0" in json.dumps(relisted["blocks"], ensure_ascii=False)
    assert "No open stalls match" in json.dumps(relisted["blocks"])
    assert told["text"] == STALE


def test_a_stale_click_in_the_app_home_republishes_it_with_the_answer(resolved):
    slack = resolved.slack
    slack.click(menu_action(resolved.stall_id, Action.SNOOZE_PICK), OWNER, channel_id=None,
                container={"type": "view", "view_id": "V1"})
    (published,) = slack.fake.wait_for_calls("views.publish", 1, timeout=10)
    shown = json.dumps(published.body["view"], ensure_ascii=False)
    assert published.body["user_id"] == OWNER and STALE.replace("'", "\\'") not in shown
    assert "Already resolved by" in shown and NOTE in shown and "Nothing in your queue" in shown
    assert slack.fake.calls("views.open") == []


def test_a_modal_submitted_after_someone_else_resolved_says_so(ping):
    view = open_modal(ping, resolve_button(ping), ADMIN)  # opened while the alert was live
    resolve(ping, OWNER, reason="false_positive", note=NOTE)
    wait_for(lambda: row_of(ping.slack.engine, ping.stall_id).status == "resolved")
    res = ping.slack.submit(view, {"reason": "handled"}, ADMIN)
    assert errors(res)["reason"] == STALE
    row = row_of(ping.slack.engine, ping.stall_id)
    assert (row.resolved_by, row.resolution_kind) == (OWNER, "false_positive")


# ------------------------------------------------------------------ the backtest honours decisions


BT_MON = bt.MON


def _stuck(tmp_path, days: int = 8):
    """Signed up Monday and nothing more (step stall opened Wednesday 16:00), the history
    running `days` more days (another account's page view)."""
    return read_history(bt.write(tmp_path / "h.jsonl", [*bt.signup("big", BT_MON, arr=60000),
                                                        bt.page("other", BT_MON + days * DAY)]))


def test_backtest_a_resolved_with_reason_stall_stays_closed_across_days(tmp_path):
    rules = load_rules()
    history = _stuck(tmp_path)
    decided = replay(history, rules, resolves=[Resolve(BT_MON + 55 * HOUR, "big", "handled")])
    assert [(s.rule, s.status) for s in decided.stalls] == [("step_stall", "resolved")]
    assert len(decided.pings) == 1
    undecided = replay(history, rules, resolves=[Resolve(BT_MON + 55 * HOUR, "big")])  # no reason: as before
    assert len(undecided.stalls) >= 2 and undecided.stalls[1].opened_at <= BT_MON + 56 * HOUR + DAY


def test_backtest_a_condition_that_clears_and_returns_reopens(tmp_path):
    """A ticket spike resolved as handled stays closed while the tickets are recent; once they
    age out of the window the condition has cleared, and a new spike opens a new stall."""
    rules = load_rules()
    base = BT_MON + timedelta(minutes=1)
    spike = [bt.ticket("acme", f"T{i}", base + i * HOUR, "sso") for i in range(3)]
    again = [bt.ticket("acme", f"T{i}", base + 20 * DAY + i * HOUR, "sso") for i in range(3, 6)]
    records = [*bt.signup("acme", BT_MON - 30 * DAY, arr=40000), bt.step("acme", "Report Shared", BT_MON - 29 * DAY),
               *spike, *again, bt.page("other", BT_MON + 24 * DAY)]
    history = read_history(bt.write(tmp_path / "h.jsonl", records))
    result = replay(history, rules, resolves=[Resolve(base + 3 * HOUR, "acme", "handled")])
    spikes = [s for s in result.stalls if s.rule == "ticket_spike"]
    assert len(spikes) == 2
    assert spikes[0].status == "resolved" and spikes[1].opened_at >= base + 20 * DAY
    undecided = replay(history, rules, resolves=[Resolve(base + 3 * HOUR, "acme")])  # no reason: reopens at once
    reopened = [s for s in undecided.stalls if s.rule == "ticket_spike"]
    assert len(reopened) == 3 and reopened[1].opened_at < base + 2 * DAY
    held = replay(history, rules, resolves=[Resolve(base + 3 * HOUR, "acme", "known", until=(base + 25 * DAY).date())])
    assert [s.status for s in held.stalls if s.rule == "ticket_spike"] == ["resolved"]  # quiet through the return


def test_a_click_replacing_someone_elses_snooze_or_assignment_says_so(ping):
    ping.click(Action.SNOOZE, OWNER, option=0)
    wait_for(lambda: row_of(ping.slack.engine, ping.stall_id).status == "snoozed")
    _, method = ping.click(Action.SNOOZE, ADMIN, option=2)  # from a message that did not show the snooze yet
    answer = ping.slack.answer(method)["text"]
    assert answer.startswith("Snoozed for 7 days. (Before this click, it was snoozed by <@U0OWNER> until <!date^")
    ping.click(Action.ASSIGN, OWNER)
    wait_for(lambda: row_of(ping.slack.engine, ping.stall_id).assignee == OWNER)
    _, method = ping.slack.click(menu_action(ping.stall_id, Action.DIGEST_ASSIGN, digest=True), ADMIN,
                                 container={"type": "message", "message_ts": "5.5", "channel_id": "C0DIGEST",
                                            "is_ephemeral": False}, channel_id="C0DIGEST")
    answer = ping.slack.answer(method)["text"]
    assert answer.startswith(f"Assigned to you. (Before this click, it was assigned to <@{OWNER}>.) · ")
    assert row_of(ping.slack.engine, ping.stall_id).assignee == ADMIN
    _, method = ping.click(Action.ASSIGN, ADMIN)  # nothing replaced: nothing more to say than before
    assert ping.slack.answer(method)["text"] == "It is already assigned to you."


def test_a_stale_click_in_a_journey_shows_it_again(resolved):
    slack = resolved.slack
    action = {"action_id": Action.ASSIGN.value, "block_id": f"stall-{resolved.stall_id}-actions", "type": "button",
              "value": StallRef(stall_id=resolved.stall_id).encode()}
    _, method = slack.click(action, OWNER, container={"type": "message", "message_ts": "9.9", "channel_id": "C0CS",
                                                      "is_ephemeral": True}, channel_id="C0CS")
    again, told = [c.body for c in slack.fake.wait_for_calls(method, 2, timeout=10)]
    assert again["replace_original"] is True and again["text"].startswith("Journey of Acme")
    assert told["text"] == STALE
