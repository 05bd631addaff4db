"""bot.slack.render: every renderer builds Block Kit that slack_sdk accepts, within Slack's
message limits, with buttons chosen by status, safe payloads and escaped user text."""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from slack_sdk.models.blocks import DividerBlock, SectionBlock
from slack_sdk.models.views import View

from bot.slack.render import (
    digest_messages,
    digest_text,
    escalation_blocks,
    funnel_blocks,
    home_view,
    journey_blocks,
    ping_blocks,
    ping_text,
    priority_change_text,
    stalls_list_blocks,
)
from bot.slack.render.funnel import activation_line, funnel_summary
from bot.slack.render.codec import Action, StallRef, decode_action
from bot.slack.render.limits import MAX_BLOCKS, TEXT_BUDGET
from bot.slack.render.packing import block_text_length, check_message
from bot.slack.text import WJ, escape, md
from bot.stalls.views import (
    AckTime,
    DigestData,
    DraftLine,
    EventLine,
    FunnelData,
    FunnelStage,
    JourneyViewData,
    OwnerTotal,
    PingedLine,
    PingView,
    StallRow,
    StepLine,
    TicketLine,
    TrackingIssueLine,
    TrackRate,
    Trend,
)

UTC = timezone.utc
NOW = datetime(2025, 6, 16, 12, 0, tzinfo=UTC)
ZWSP = "\u200b"
LATE = "Integration Connected arrived late (stall opened on stale data)"
LIVE_ACTIONS = {"stall_draft", "stall_assign", "stall_assign_to", "stall_snooze", "stall_resolve", "stall_note",
                "stall_view_journey"}


# --- builders ------------------------------------------------------------------------------------

def ping(**kw) -> PingView:
    base = dict(stall_id=42, account_name="Acme Corp", arr=50_000, priority="P0", stage="Onboarding",
                step="Connect integration", days_stalled=3.4,
                why="P0: $50,000 ARR x 1.2: 3 days on 'Connect integration', 2 open tickets",
                owner="U0CSM1", last_activity=NOW - timedelta(days=3), open_tickets=2)
    return PingView(**{**base, **kw})


def row(i: int, owner: str | None = "U0CSM1", **kw) -> StallRow:
    base = dict(stall_id=i, account_name=f"Account {i}", priority=("P0", "P1", "P2", "P3")[i % 4],
                arr=100_000 - i, why=f"P2: ${100_000 - i:,} ARR x 1.1: 4 days on 'Invite a teammate'",
                days_stalled=4, owner=owner)
    return StallRow(**{**base, **kw})


def journey(**kw) -> JourneyViewData:
    base = dict(
        account_id="acc_1", name="Acme Corp", stage="Onboarding", arr=50_000, owner="jane@acme.com",
        track="high_touch", lifecycle="trialing", plan="enterprise", domain="acme.com",
        renewal_date=date(2026, 1, 1),
        steps=[StepLine("Sign up", "done", NOW - timedelta(days=6)),
               StepLine("Create a project", "done", NOW - timedelta(days=5)),
               StepLine("Connect integration", "stalled", NOW - timedelta(days=5)),
               StepLine("Invite a teammate", "todo"),
               StepLine("Share a report (activation)", "todo")],
        open_stalls=[row(1), row(2, status="snoozed", snoozed_until=NOW + timedelta(days=3))],
        events=[EventLine(NOW - timedelta(hours=h), "Project Created", "web") for h in range(15)],
        tickets=[TicketLine(f"t{i}", "open", NOW - timedelta(days=i), f"Cannot connect {i}", "integration")
                 for i in range(7)],
    )
    return JourneyViewData(**{**base, **kw})


def funnel(**kw) -> FunnelData:
    base = dict(days=30, stages=[FunnelStage("Onboarding", 120, 80, 2.5), FunnelStage("Activation", 80, 30, 6.0),
                                 FunnelStage("Adoption", 30, 25, None)],
                tracks=[TrackRate("high_touch", 20, 0.62, 0.1), TrackRate("standard", 60, 0.48, 0.2),
                        TrackRate("self_serve", 40, None, None)])
    return FunnelData(**{**base, **kw})


def digest(rows, **kw) -> DigestData:
    base = dict(day=date(2025, 6, 16), new_stalls=12, arr_at_risk=1_234_567.8,
                resolved_since_yesterday=4,
                activation_by_track={"high_touch": 0.62, "standard": 0.48, "self_serve": None},
                rows=rows, snoozed=7,
                tracking_issues=[TrackingIssueLine("missing_property", "Signed Up", "plan", 12),
                                 TrackingIssueLine("volume_drop", "Report Shared", count=0, detail="-80% vs last week")],
                funnel=funnel())
    return DigestData(**{**base, **kw})


# --- checking helpers: what Slack itself would reject ----------------------------------------------

def as_dicts(blocks) -> list[dict]:
    return [b.to_dict() for b in blocks]  # slack_sdk validation: SlackObjectFormationError


def assert_valid_message(blocks, max_blocks=MAX_BLOCKS, budget=TEXT_BUDGET) -> list[dict]:
    dicts = as_dicts(blocks)
    assert 1 <= len(dicts) <= max_blocks
    assert block_text_length(blocks) <= budget
    check_message(blocks, max_blocks=max_blocks, text_budget=budget)
    block_ids = [d["block_id"] for d in dicts if "block_id" in d]
    assert len(block_ids) == len(set(block_ids)), "duplicate block_id"
    for d in dicts:
        if d["type"] == "actions":
            ids = [e["action_id"] for e in d["elements"]]
            assert len(ids) == len(set(ids)), "duplicate action_id in one block"
        if d["type"] == "section":
            assert d.get("text") or d.get("fields"), "a section needs text or fields"
            if "text" in d:
                assert d["text"]["text"].strip()
    return dicts


def elements(dicts):
    """Every interactive element: action block elements and section accessories."""
    for d in dicts:
        for element in d.get("elements", []) if d["type"] == "actions" else []:
            yield element
        if "accessory" in d:
            yield d["accessory"]


def payloads(element) -> list[str]:
    if "options" in element:
        return [o["value"] for o in element["options"]]
    return [element["value"]] if "value" in element else []


def all_text(dicts) -> str:
    """The text as a reader sees it: without the invisible joiners that break links and mentions."""
    return json.dumps(dicts, ensure_ascii=False).replace(WJ, "")


def mrkdwn_texts(node) -> list[str]:
    if isinstance(node, dict):
        found = [node["text"]] if node.get("type") == "mrkdwn" else []
        return found + [t for v in node.values() for t in mrkdwn_texts(v)]
    if isinstance(node, list):
        return [t for v in node for t in mrkdwn_texts(v)]
    return []


# --- every renderer validates --------------------------------------------------------------------

@pytest.mark.parametrize("status, extra", [
    ("open", {}),
    ("open", {"assignee": "U0OTHER"}),
    ("snoozed", {"snoozed_until": NOW + timedelta(days=3), "snoozed_by": "U0CSM1"}),
    ("resolved", {"resolved_by": "U123", "resolved_at": NOW}),
    ("auto_resolved", {"resolution": LATE}),
    ("suppressed", {"resolution": "account churned"}),
])
def test_ping_and_escalation_validate_for_every_status(status, extra):
    p = ping(status=status, draft=DraftLine("drafted", "U0CSM1", "template"), note="Priority raised from P1 to P0", **extra)
    assert_valid_message(ping_blocks(p))
    assert_valid_message(escalation_blocks(p, minutes_unacked=61, ping_link="https://x.slack.com/archives/C1/p1"))
    assert ping_text(p)


def test_journey_stalls_funnel_home_and_digest_validate():
    assert_valid_message(journey_blocks(journey()))
    assert_valid_message(journey_blocks(journey(steps=[], open_stalls=[], events=[], tickets=[], owner=None)))
    assert_valid_message(stalls_list_blocks([row(i) for i in range(1, 11)], "all · P0", more=0))
    assert_valid_message(stalls_list_blocks([], "mine", more=0))
    assert_valid_message(funnel_blocks(funnel()))
    assert_valid_message(funnel_blocks(funnel(stages=[FunnelStage("Onboarding", 0, 0)], tracks=[])))
    view = home_view([row(i) for i in range(1, 6)], "U0CSM1")
    assert isinstance(view, View) and view.type == "home"
    assert view.to_dict()["type"] == "home"
    assert_valid_message(view.blocks, max_blocks=100, budget=40_000)
    assert home_view([], "U0CSM1").to_dict()
    for message in digest_messages(digest([row(i) for i in range(1, 13)])):
        assert_valid_message(message)
    for message in digest_messages(digest([], funnel=None, tracking_issues=[], activation_by_track={})):
        assert_valid_message(message)


# --- the ping ------------------------------------------------------------------------------------

def test_ping_shows_the_facts():
    dicts = assert_valid_message(ping_blocks(ping()))
    text = all_text(dicts)
    for fact in ("Acme Corp", "$50,000 ARR", "Onboarding", "Connect integration", "3 days",
                 "2 open tickets", "<@U0CSM1>", "*Open tickets*\\n2", "<!date^"):
        assert fact in text, fact
    assert dicts[0]["type"] == "header" and "P0" in dicts[0]["text"]["text"]
    assert "Acme Corp" in ping_text(ping()) and "P0" in ping_text(ping())


def test_open_stall_shows_every_action():
    dicts = assert_valid_message(ping_blocks(ping()))
    [actions] = [d for d in dicts if d["type"] == "actions"]
    ids = {e["action_id"] for e in actions["elements"]}
    assert ids == LIVE_ACTIONS
    snooze = next(e for e in actions["elements"] if e["action_id"] == Action.SNOOZE)
    refs = [StallRef.decode(o["value"]) for o in snooze["options"]]
    assert [r.days for r in refs] == [1, 3, 7, 14, 30, None]  # up to 30 days, or "Until a date…"
    assert refs[-1].op == Action.SNOOZE_PICK and snooze["options"][-1]["text"]["text"] == "Until a date…"
    texts = {e["text"]["text"] for e in actions["elements"] if e["type"] == "button"}
    assert {"Draft recovery email", "Assign to me", "Resolve", "View journey"} <= texts
    picker = next(e for e in actions["elements"] if e["action_id"] == Action.ASSIGN_TO)
    assert picker["type"] == "users_select" and actions["block_id"] == "stall-42-actions"  # the picker's stall
    resolve = next(e for e in actions["elements"] if e["action_id"] == Action.RESOLVE)
    assert "confirm" not in resolve  # it asks why in a modal instead (bot/slack/render/decisions.py)


@pytest.mark.parametrize("status, extra, expected", [
    ("resolved", {"resolved_by": "U123", "resolved_at": NOW}, "Resolved by <@U123> at <!date^"),
    ("auto_resolved", {"resolution": LATE}, f"Auto-resolved: {LATE}"),
    ("suppressed", {}, "Suppressed"),
])
def test_closed_stalls_show_no_buttons_and_say_how_they_closed(status, extra, expected):
    dicts = assert_valid_message(ping_blocks(ping(status=status, **extra)))
    assert not [d for d in dicts if d["type"] == "actions"]
    assert not list(elements(dicts))
    context = " ".join(e["text"] for d in dicts if d["type"] == "context" for e in d["elements"])
    assert expected in context
    assert status.replace("_", "-") in ping_text(ping(status=status, **extra)).lower()


def test_assigned_and_snoozed_stalls_say_so_and_keep_their_actions():
    assigned = assert_valid_message(ping_blocks(ping(assignee="U0ABC")))
    assert "Assigned to <@U0ABC>" in all_text(assigned)
    assert {e["action_id"] for e in elements(assigned)} == LIVE_ACTIONS
    snoozed = assert_valid_message(ping_blocks(ping(status="snoozed", snoozed_until=NOW + timedelta(days=1),
                                                     snoozed_by="U0ABC")))
    assert "Snoozed until <!date^" in all_text(snoozed) and "by <@U0ABC>" in all_text(snoozed)
    assert {e["action_id"] for e in elements(snoozed)} == LIVE_ACTIONS


def test_owner_without_slack_user_shows_the_email_and_no_owner_says_so():
    assert "jane@acme.com" in all_text(as_dicts(ping_blocks(ping(owner="jane@acme.com"))))
    assert "no owner" in all_text(as_dicts(ping_blocks(ping(owner=None))))


def test_journey_button_is_a_link_when_there_is_a_url():
    dicts = as_dicts(ping_blocks(ping(journey_url="https://stallwatch.example.com/accounts/acc_1")))
    journey_button = next(e for e in elements(dicts) if e["action_id"] == Action.VIEW_JOURNEY)
    assert journey_button["url"] == "https://stallwatch.example.com/accounts/acc_1"
    # A nonsense URL is dropped, not sent to Slack to be rejected.
    dicts = as_dicts(ping_blocks(ping(journey_url="javascript:alert(1)")))
    assert "url" not in next(e for e in elements(dicts) if e["action_id"] == Action.VIEW_JOURNEY)


def test_priority_change_thread_reply():
    assert priority_change_text(ping(priority="P0"), "P1").startswith("Priority raised from P1 to P0")
    assert priority_change_text(ping(priority="P2"), "P0").startswith("Priority lowered from P0 to P2")


# --- payloads ------------------------------------------------------------------------------------

def test_every_button_value_round_trips_to_a_stall_ref():
    surfaces = [
        ping_blocks(ping()),
        escalation_blocks(ping(), minutes_unacked=60),
        journey_blocks(journey()),
        stalls_list_blocks([row(i) for i in range(1, 6)], "all", 0),
        home_view([row(i) for i in range(1, 6)], "U0CSM1").blocks,
        *digest_messages(digest([row(i) for i in range(1, 6)])),
    ]
    seen = 0
    for blocks in surfaces:
        for element in elements(as_dicts(blocks)):
            if element["action_id"] == Action.ACCOUNT_NOTE:  # /journey's "Add note": on the account
                assert element["value"] == journey().account_id
                continue
            for value in payloads(element):
                assert len(value) <= 150  # fits even an option value
                ref = StallRef.decode(value)
                assert ref.encode() == value
                assert 1 <= ref.stall_id <= 42
                seen += 1
    assert seen > 30


def test_decode_action_for_buttons_selects_and_menus():
    dicts = as_dicts(ping_blocks(ping()))
    draft = next(e for e in elements(dicts) if e["action_id"] == Action.DRAFT)
    assert decode_action({"action_id": draft["action_id"], "value": draft["value"], "type": "button"}) == (
        Action.DRAFT, StallRef(stall_id=42))
    snooze = next(e for e in elements(dicts) if e["action_id"] == Action.SNOOZE)
    action, ref = decode_action({"action_id": snooze["action_id"], "type": "static_select",
                                 "selected_option": snooze["options"][2]})
    assert (action, ref.stall_id, ref.days) == (Action.SNOOZE, 42, 7)

    [digest_menu] = [e for e in elements(as_dicts(digest_messages(digest([row(9)]))[0]))]
    assert digest_menu["action_id"] == Action.DIGEST_MENU
    decoded = [decode_action({"action_id": digest_menu["action_id"], "selected_option": o})
               for o in digest_menu["options"]]
    assert [(a, r.days) for a, r in decoded] == [
        (Action.DIGEST_ASSIGN, None), (Action.ASSIGN_TO, None), (Action.SNOOZE_PICK, None), (Action.NOTE, None)]

    [list_menu] = list(elements(as_dicts(stalls_list_blocks([row(5)], "all", 0))))
    ops = [decode_action({"action_id": list_menu["action_id"], "selected_option": o})[0] for o in list_menu["options"]]
    assert ops == [Action.ASSIGN, Action.ASSIGN_TO, Action.SNOOZE_PICK, Action.RESOLVE, Action.NOTE]


@pytest.mark.parametrize("value", [
    "", "not json", "{}", '{"stall_id": 0}', '{"stall_id": -1}', '{"stall_id": 1, "v": 2}',
    '{"stall_id": 1, "admin": true}', '{"stall_id": 1, "days": 10000}', '{"stall_id": "1; drop"}',
    '{"stall_id": 1, "op": "rm_rf"}', "[1]",
])
def test_forged_payloads_are_rejected(value):
    with pytest.raises(ValidationError):
        StallRef.decode(value)


def test_decode_action_rejects_unknown_actions_and_missing_values():
    with pytest.raises(ValueError):
        decode_action({"action_id": "evil", "value": StallRef(stall_id=1).encode()})
    with pytest.raises(ValueError):
        decode_action({"action_id": Action.DRAFT.value})


# --- escaping and truncation ----------------------------------------------------------------------

NASTY = "<!channel> Acme & Sons *bold* _it_ ~strike~ `code` <https://evil.example|click> > quote"


def test_user_text_is_escaped_in_mrkdwn():
    dicts = as_dicts(ping_blocks(ping(account_name=NASTY, why=NASTY, step=NASTY, stage=NASTY, owner=NASTY,
                                      status="auto_resolved", resolution=NASTY, note=NASTY)))
    # (the draft line is checked in tests/test_ping_view.py)
    for text in mrkdwn_texts(dicts):
        # Our own tokens are mentions and dates; anything else in angle brackets came from a user.
        stripped = re.sub(r"<@U[0-9A-Z]+>|<!date\^\d+\^[^|>]*\|[^>]*>", "", text)
        assert "<" not in stripped and ">" not in stripped, text
        assert "&amp;" in text or "&" not in stripped.replace("&amp;", "").replace("&lt;", "").replace("&gt;", "")
    text = all_text(dicts)
    assert "&lt;!channel&gt;" in text and "Acme &amp; Sons" in text
    # Formatting characters cannot pair up: each is fenced by zero-width spaces.
    assert f"{ZWSP}*{ZWSP}bold{ZWSP}*{ZWSP}" in text
    assert f"{ZWSP}_{ZWSP}it{ZWSP}_{ZWSP}" in text
    assert f"{ZWSP}`{ZWSP}code{ZWSP}`{ZWSP}" in text
    # The header is plain text: shown literally, so not entity-escaped; links and mentions are broken.
    header = dicts[0]["text"]
    assert header["type"] == "plain_text" and f"<{WJ}!channel> Acme & Sons" in header["text"]
    assert "evil.example" not in header["text"] and f"https:{WJ}//evil.{WJ}example" in header["text"]
    assert "&lt;!channel&gt;" in ping_text(ping(account_name=NASTY))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), -5.0])
def test_bad_numbers_render_as_something_sensible(bad):
    p = ping(arr=bad, days_stalled=bad, open_tickets=-3)
    text = all_text(assert_valid_message(ping_blocks(p)))
    assert "$0 ARR" in text and "nan" not in text.lower() and "inf" not in text.lower()
    assert "less than a day" in ping_text(p)
    funnel_text = all_text(as_dicts(funnel_blocks(funnel(tracks=[TrackRate("standard", 1, bad, bad)]))))
    assert "nan" not in funnel_text.lower()
    for message in digest_messages(digest([row(1, arr=bad)], arr_at_risk=bad)):
        assert_valid_message(message)


def test_escape_basics():
    assert escape("a < b > c & d") == "a &lt; b &gt; c &amp; d"
    assert escape("2*3") == f"2{ZWSP}*{ZWSP}3"
    assert escape(None) == ""


def test_clipping_never_cuts_an_entity():
    for raw in ("&" * 5000, "<>" * 3000, "a&" * 4000, "*" * 9000, "é🙂" * 4000):
        out = md(raw, 100)
        assert len(out) <= 100 and out.endswith("…")
        body = out[:-1].replace("&amp;", "").replace("&lt;", "").replace("&gt;", "")
        assert "&" not in body and "<" not in body and ">" not in body
        assert not body.endswith(ZWSP + "*") and not body.startswith("*")  # fences stay whole
    assert md("short", 100) == "short"
    assert md("line\nbreak\tand  spaces", 100) == "line break and spaces"


LONG = ("Acme <&> *Enterprise* " * 500)[:10_000]


def test_long_names_and_why_lines_are_truncated_safely():
    p = ping(account_name=LONG, why=LONG, step=LONG, stage=LONG, resolution=LONG,
             draft=DraftLine("blocked", LONG, LONG, recipient=LONG, blocked_reason=LONG),
             note=LONG, owner=LONG, journey_url="https://x.example/" + "a" * 5000)
    for status in ("open", "resolved", "auto_resolved"):
        assert_valid_message(ping_blocks(PingView(**{**p.__dict__, "status": status})))
    assert_valid_message(escalation_blocks(p, minutes_unacked=10**9, ping_link="https://x/" + "b" * 9000))
    rows = [row(i, account_name=LONG, why=LONG, note=LONG, owner=LONG) for i in range(1, 120)]
    assert_valid_message(stalls_list_blocks(rows, LONG, more=10))
    assert_valid_message(home_view(rows, "U0CSM1").blocks, max_blocks=100, budget=40_000)
    j = journey(name=LONG, account_id=LONG[:255], domain=LONG, plan=LONG, stage=LONG, track=LONG,
                steps=[StepLine(LONG, "done", NOW)] * 60, open_stalls=rows,
                events=[EventLine(NOW, LONG, LONG)] * 30, tickets=[TicketLine(LONG, LONG, NOW, LONG, LONG)] * 30)
    assert_valid_message(journey_blocks(j))
    f = funnel(stages=[FunnelStage(LONG, 10, 5, 1.0)] * 60, tracks=[TrackRate(LONG, 1, 0.5, 0.5)] * 20)
    assert_valid_message(funnel_blocks(f))
    issues = [TrackingIssueLine(LONG, LONG, LONG, 10**12, LONG)] * 40
    for message in digest_messages(digest(rows, tracking_issues=issues, funnel=f,
                                          activation_by_track={LONG: 0.5, "x" * 50: 0.1})):
        assert_valid_message(message)


text_st = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=4000)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=text_st, why=text_st, arr=st.floats(), days=st.floats())
def test_renderers_never_raise_on_any_text(name, why, arr, days):
    p = ping(account_name=name, why=why, step=name or None, arr=arr, days_stalled=days, resolution=why)
    for status in ("open", "auto_resolved"):
        assert_valid_message(ping_blocks(PingView(**{**p.__dict__, "status": status})))
    rows = [row(i, account_name=name, why=why, arr=arr) for i in range(1, 4)]
    assert_valid_message(stalls_list_blocks(rows, name, 0))
    for message in digest_messages(digest(rows)):
        assert_valid_message(message)
    assert_valid_message(journey_blocks(journey(name=name, open_stalls=rows)))


# --- lists and their limits ------------------------------------------------------------------------

def test_stalls_list_ends_with_and_n_more():
    rows = [row(i) for i in range(1, 201)]
    dicts = assert_valid_message(stalls_list_blocks(rows, "all", more=300))
    shown = sum(1 for d in dicts if d["type"] == "section" and "accessory" in d)
    last = dicts[-1]["elements"][0]["text"]
    match = re.search(r"and ([\d,]+) more", last)
    assert match and int(match.group(1).replace(",", "")) == 500 - shown
    assert "No open stalls" in all_text(as_dicts(stalls_list_blocks([], "mine · P0", 0)))


def test_home_view_holds_at_most_100_blocks():
    rows = [row(i) for i in range(1, 1001)]
    view = home_view(rows, "U0CSM1")
    dicts = view.to_dict()["blocks"]
    assert len(dicts) <= 100
    shown = sum(1 for d in dicts if "accessory" in d)
    match = re.search(r"and ([\d,]+) more", dicts[-1]["elements"][0]["text"])
    assert match and int(match.group(1).replace(",", "")) == 1000 - shown
    assert "Nothing in your queue" in all_text(home_view([], "U0CSM1").to_dict())


def test_funnel_shows_conversion_medians_weakest_and_tracks():
    text = all_text(as_dicts(funnel_blocks(funnel())))
    assert "Onboarding: 120 → 80 (67%)" in text and "median 2 days" in text
    assert "*Weakest stage:* Activation: only 38% move on" in text
    assert "*Weakest stage:* Activation: only 38% move on (n=80)" in text
    assert "*By track* · Activated" in text
    assert "*High touch* (n=20)\\nactivated by day 14: 62% · stalled: 10%" in text
    assert text.index("*High touch*") < text.index("*Standard*") < text.index("*Self serve*")
    explicit = all_text(as_dicts(funnel_blocks(funnel(weakest="Adoption"))))
    assert "*Weakest stage:* Adoption" in explicit


def test_funnel_rates_show_their_sample_and_hide_below_five():
    """Every rate carries its n; under five accounts it is "–", and such a stage is never the weakest."""
    f = funnel(stages=[FunnelStage("Sign up", 40, 30, 1.0), FunnelStage("Create a project", 4, 0, None)],
               tracks=[TrackRate("high_touch", 21, 0.619, 0.1, checkpoint_days=21),
                       TrackRate("standard", 60, 0.48, 0.2), TrackRate("self_serve", 3, 1 / 3, 0.0)],
               activation_name="Activated (Report Shared)")
    dicts = assert_valid_message(funnel_blocks(f))
    text = all_text(dicts)
    assert "Create a project: 4 → 0 (–)" in text and "Sign up: 40 → 30 (75%)" in text
    assert "*Weakest stage:* Sign up: only 75% move on (n=40)" in text  # not the 0 of 4
    assert "*Self serve* (n=3)\\nactivated by day 14: – · stalled: –" in text
    assert "*High touch* (n=21)\\nactivated by day 21: 62%" in text
    assert activation_line(f) == ("Activated (Report Shared) by day 21: High touch 62% (n=21) · "
                                  "Standard 48% (n=60, by day 14) · Self serve – (n=3, by day 14)")
    assert funnel_summary(f) == ("*Funnel, last 30 days:* Sign up 75% (n=40) → Create a project – (n=4)\n"
                                 "Weakest stage: *Sign up* (75% move on, n=40)")
    same = funnel(tracks=[TrackRate("high_touch", 21, 0.619, 0.1), TrackRate("standard", 0, None, None)])
    assert activation_line(same) == "Activated by day 14: High touch 62% (n=21) · Standard – (n=0)"
    digest_text = all_text(as_dicts(digest_messages(digest([row(1)], funnel=f))[0]))
    assert "Activated (Report Shared) by day 21: High touch 62% (n=21) ·" in digest_text
    assert "Activation rate" not in digest_text


def test_journey_shows_checklist_stalls_events_and_tickets():
    dicts = assert_valid_message(journey_blocks(journey()))
    text = all_text(dicts)
    assert "✓ Sign up" in text and "⏳ Connect integration" in text and "*stalled*" in text
    assert "✗ Invite a teammate" in text
    assert "jane@acme.com" in text and "$50,000" in text and "High touch" in text
    assert "Cannot connect 0" in text and "Project Created" in text
    assert text.count("Project Created") == 10  # recent events are capped
    actions = [d for d in dicts if d["type"] == "actions"]
    assert len(actions) == 2  # one row of buttons per open stall


# --- the digest -------------------------------------------------------------------------------------

def digest_rows(n: int) -> list[StallRow]:
    owners = [f"U0CSM{k}" for k in range(25)] + [None, "pat@acme.com"]
    return [row(i, owner=owners[i % len(owners)], note="over @jane's hourly ping budget" if i % 7 == 0 else None)
            for i in range(1, n + 1)]


@pytest.mark.parametrize("max_items", [40, 500])
def test_digest_of_5000_stalls_fits_three_messages_and_ends_with_and_n_more(max_items):
    rows = digest_rows(5000)
    messages = digest_messages(digest(rows, max_items=max_items, per_owner=max_items))
    for message in messages:
        assert_valid_message(message)
    assert len(messages) <= 3  # a digest a manager reads
    dicts = [as_dicts(m) for m in messages]
    # Every shown account exactly once, the top ones of each owner's ranked rows.
    shown = [StallRef.decode(d["accessory"]["options"][0]["value"]).stall_id
             for message in dicts for d in message if "accessory" in d]
    assert len(shown) == len(set(shown)) and 0 < len(shown) <= max_items
    last = dicts[-1][-1]
    assert last["type"] == "context"
    assert f"and {5000 - len(shown):,} more" in last["elements"][0]["text"]
    assert "/stalls" in last["elements"][0]["text"] and "7 snoozed" in last["elements"][0]["text"]
    # No message ends on an owner heading with its stalls in the next one.
    for message in dicts[:-1]:
        assert "accessory" in message[-1]


def test_digest_counts_each_owners_accounts_past_the_per_owner_limit():
    rows = [row(i, owner="U0ONE") for i in range(1, 13)]
    totals = {"U0ONE": OwnerTotal(accounts=12, arr=1_000_000, by_priority={"P0": 3, "P1": 3, "P2": 3, "P3": 3})}
    [message] = digest_messages(digest(rows, per_owner=4, owner_totals=totals, total_open=12))
    text = all_text([as_dicts(message)])
    assert "*<@U0ONE>* · 12 accounts · $1,000,000 ARR" in text
    shown = [d for d in as_dicts(message) if "accessory" in d]
    assert len(shown) == 4
    assert "…and 8 more (P0 2 · P1 2 · P2 2 · P3 2)" in text  # rows 1-4 are P1, P2, P3, P0


def test_digest_names_the_accounts_pinged_today_once_with_their_status():
    pinged = [PingedLine(stall_id=9, account_name="Northwind", priority="P0", arr=84000, owner="U0MAYA",
                         status="acknowledged", by="U0MAYA"),
              PingedLine(stall_id=8, account_name="Falcon", priority="P0", arr=71600, owner="U0PRIYA", status="open")]
    [message] = digest_messages(digest([row(1)], pinged=pinged, total_open=3))
    text = all_text([as_dicts(message)])
    assert "Pinged in the last 24 h* (2, not repeated below)" in text
    assert "Northwind* · $84,000 ARR · <@U0MAYA> · 👀 acknowledged by <@U0MAYA>" in text
    assert "not acknowledged yet" in text
    assert "3 stalled accounts: 2 pinged today, 1 listed: that is every stalled account" in text


def test_digest_shows_what_changed_since_yesterday_and_last_week_when_known():
    d = digest([row(1)], stalled=Trend(12, 10, 15), arr_trend=Trend(50_000, 40_000, None),
               new_trend=Trend(3, None, None), escalated_trend=Trend(2, 1, None))
    text = all_text([as_dicts(m) for m in digest_messages(d)])
    assert "+2 since yesterday, -3 since last week" in text
    assert "+$10,000 since yesterday" in text and "$50,000 since last week" not in text
    assert "Escalated today: 2 (+1 since yesterday)" in text


def test_digest_lists_triage_handoffs_backlog_and_time_to_acknowledge():
    d = digest([row(1, owner=None), row(2)], handoffs=[row(7, why="2 recovery emails, no progress")],
               backlog_accounts=5, ack_times=[AckTime("U0CSM1", 42.0, 3, 2), AckTime("U0CSM2", None, 1, 0)])
    text = all_text([as_dicts(m) for m in digest_messages(d)])
    assert "Triage: no owner" in text and "Win-back handoffs" in text and "Backlog: 5 stalled" in text
    assert "<@U0CSM1> 42 min (2/3)" in text and "<@U0CSM2> none yet (0/1)" in text


def test_digest_headline_and_sections():
    messages = digest_messages(digest(digest_rows(30)))
    text = all_text([as_dicts(m) for m in messages])
    assert "*New stalls*\\n12" in text and "*ARR at risk*\\n$1,234,568" in text
    assert "*Resolved since yesterday*\\n4" in text
    assert "High touch 62%" in text and "Standard 48%" in text and "Self serve –" in text
    assert "Weakest stage: *Activation*" in text
    assert "Signed Up" in text and "plan" in text and "Tracking issues" in text
    assert "over @jane's hourly ping budget" in text
    assert "<@U0CSM1>" in text and "pat@acme.com" in text and "no owner" in text
    assert "that is every stalled account" in text
    assert "12 new stalls" in digest_text(digest([]))


def test_digest_groups_stalls_by_owner_in_rank_order():
    rows = [row(1, owner="U0A"), row(2, owner="U0B"), row(3, owner="U0A"), row(4, owner="U0B")]
    [message] = digest_messages(digest(rows, funnel=None, tracking_issues=[]))
    sections = [d for d in as_dicts(message) if d["type"] == "section" and "text" in d]
    order = [s["text"]["text"].split("\n")[0] for s in sections if "<@U0" in s["text"]["text"] and "accessory" not in s]
    assert order[0].startswith("*<@U0A>* · 2 accounts") and order[1].startswith("*<@U0B>* · 2 accounts")
    ids = [StallRef.decode(d["accessory"]["options"][0]["value"]).stall_id for d in sections if "accessory" in d]
    assert ids == [1, 3, 2, 4]


def test_digest_continues_an_owner_group_across_messages():
    rows = [row(i, owner="U0ONE") for i in range(1, 200)]
    messages = [as_dicts(m) for m in digest_messages(digest(rows, max_items=199, per_owner=199))]
    assert len(messages) > 1
    assert "(continued)" in messages[1][0]["text"]["text"]


def test_digest_with_a_small_text_budget_still_fits():
    rows = digest_rows(100)
    messages = digest_messages(digest(rows, max_items=100), text_budget=4000)
    for message in messages:
        assert_valid_message(message, budget=4000)


def test_digest_of_10000_stalls_lists_the_first_40_and_counts_the_rest():
    """Its speed is measured by benchmarks/digest.py; here, what it renders."""
    messages = digest_messages(digest(digest_rows(10_000), max_items=40, total_open=10_000))
    for message in messages:
        assert_valid_message(message)
    last = as_dicts(messages[-1])[-1]
    assert f"and {10_000 - 40:,} more" in last["elements"][0]["text"]


# --- the checks themselves ------------------------------------------------------------------------------

def test_check_message_rejects_too_many_blocks_or_too_much_text():
    check_message([DividerBlock()] * 50)
    with pytest.raises(ValueError, match="51 blocks"):
        check_message([DividerBlock()] * 51)
    big = [SectionBlock(text="x" * 2900) for _ in range(5)]
    assert block_text_length(big) == 14_500
    with pytest.raises(ValueError, match="budget"):
        check_message(big)
    with pytest.raises(ValueError):
        check_message([])


def test_block_text_length_counts_every_text():
    blocks = as_dicts(ping_blocks(ping()))
    assert block_text_length(blocks) == block_text_length(ping_blocks(ping()))
    assert block_text_length([{"type": "section", "text": {"type": "mrkdwn", "text": "abc"},
                               "fields": [{"type": "mrkdwn", "text": "de"}]}]) == 5
