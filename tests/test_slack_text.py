"""Customer-controlled text in Slack (issue 10): an account name, contact name, ticket subject,
trait or SMTP error that carries mentions, links and bidi controls reaches every Slack surface
inert. Hostile data comes in through the real ingest routes; what Slack received is read back
from the fake Slack (tests/fakes/slack_api.py) and checked with tests.slack_inert."""

from __future__ import annotations

import itertools
import json
import re
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from bot.slack.mail_notices import mail_outcome
from bot.mail.outbox import MailSender
from bot.scan import scan
from bot.settings import default_rules_text
from bot.slack.render import (escalation_blocks, escalation_summary_blocks, escalation_text, winback_blocks,
                              winback_text)
from bot.slack.render.codec import Action
from bot.stalls.views import PingView
from bot.stalls.context import Services
from bot.slack.client import web_client
from bot.slack.digest import post_digest
from bot.slack.draft_views import BODY, RECIPIENT, SUBJECT
from bot.slack.outbox import OutboxSender
from bot.slack.router import Router
from bot.slack.text import WJ, ZWSP, escape, md, plain
from storage.db import utcnow
from storage.models import Account, Stall
from tests.conftest import SEGMENT_SECRET, TICKETS_SECRET, WRITE_KEY
from tests.helpers import group_call, identify_call, iso, post_tickets, post_v1, track
from tests.slack_inert import assert_all_inert, assert_inert, problems
from tests.slack_signing import ADMIN, event_callback, make_slack_harness

pytest_plugins = ["tests.fakes.fixtures"]

OWNER, EMAIL = "U0OWNER", "owner@ourco.example"
ALERTS, DIGEST = "C0ALERTS", "C0DIGEST"
STALL, ACCOUNT = Stall.__table__, Account.__table__

NAME = "<!channel> Acme <https://evil.example|click> @here www.evil.zip \u202eRTL <@U0EVIL> *bold*"
SUBJECT_TEXT = "Help <!here> reset at evil.example.com/reset or mailto:it@evil.example \u2066x\u2069 <!subteam^S0EVIL|t>"
TOPIC = "sso <@U0EVIL> @everyone evil.zip"
PLAN = "pro <https://evil.example|upgrade> @channel"
EVENT = "Clicked <!here> https://evil.example/x"
FIRST_NAME = "Ana <!channel> evil.example"
MARKERS = ("evil.example", "evil.zip")
USERS = (OWNER, ADMIN)
# How the name reads in mrkdwn: escaped once (no "&amp;lt;"), links and mentions broken by a
# joiner, the bidi override gone, the stars fenced.
NAME_MD = (f"&lt;!channel&gt; Acme &lt;https:{WJ}//evil.{WJ}example|click&gt; @{WJ}here www.{WJ}evil.{WJ}zip "
           f"RTL &lt;@{WJ}U0EVIL&gt; {ZWSP}*{ZWSP}bold{ZWSP}*{ZWSP}")
_ids = itertools.count(1)


def quiet_free_rules(tmp_path) -> str:
    """The default rules without quiet hours (results must not depend on the time of day)."""
    text = default_rules_text()
    text = re.sub(r'(?m)^quiet_hours_start = .*$', 'quiet_hours_start = "00:00"', text)
    text = re.sub(r'(?m)^quiet_hours_end = .*$', 'quiet_hours_end = "00:00"', text)
    path = tmp_path / "rules.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.fixture
def slack(fake_slack, smtp_server, engine, db_url, tmp_path):
    fake_slack.add_user(OWNER, EMAIL)
    with make_slack_harness(fake_slack, engine, db_url, STALLWATCH_WRITE_KEY=WRITE_KEY,
                            SEGMENT_SHARED_SECRET=SEGMENT_SECRET, TICKETS_SHARED_SECRET=TICKETS_SECRET,
                            STALLWATCH_RULES=quiet_free_rules(tmp_path), STALLWATCH_ALERTS_CHANNEL=ALERTS,
                            STALLWATCH_DIGEST_CHANNEL=DIGEST, SMTP_URL=smtp_server.url,
                            STALLWATCH_MAIL_FROM="Jane <jane@ourco.example>") as harness:
        harness.smtp = smtp_server
        yield harness


def deliver(slack) -> None:
    OutboxSender(slack.engine, lambda: web_client(slack.settings, blocking_retries=False),
                 rules=slack.settings.rules).run_once()


def ingest(slack, account: str, *, name: str = NAME, subject: str = SUBJECT_TEXT, topic: str = TOPIC,
           plan: str = PLAN, event: str = EVENT, first_name: str = FIRST_NAME) -> None:
    """The account, a contact, an event and three tickets (a ticket spike), all through the
    ingest routes, with customer text in every field that reaches Slack."""
    http, now = slack.http, utcnow()
    user = f"{account}-user"
    r = post_v1(http, "/v1/group", group_call(account, {"name": name, "plan": plan, "arr": 15000,
                                                         "owner_email": EMAIL}, user=user))
    assert r.status_code == 200, r.text
    r = post_v1(http, "/v1/identify", identify_call(user, {"first_name": first_name,
                                                           "email": f"{account}@customer.example"}, group=account))
    assert r.status_code == 200, r.text
    assert post_v1(http, "/v1/track", track(event, user=user, group=account)).status_code == 200
    # Created hours ago: news. Days before the account was first seen would be a backfill's backlog.
    for n, (t, hours) in enumerate(((topic, 5), ("billing", 3), (topic, 1)), 1):
        r = post_tickets(http, {"id": f"{account}-T{n}", "status": "open", "subject": subject, "priority": "high",
                                "created_at": iso(now - timedelta(hours=hours)), "account_id": account, "topic": t})
        assert r.status_code == 200, r.text


def ping(slack, account: str) -> int:
    """Scan, route and send the account's stall; its id."""
    scan(slack.engine, slack.rules, utcnow(), only=[account])
    with slack.engine.connect() as conn:
        stall_id = conn.execute(select(STALL.c.id).where(STALL.c.account_id == account,
                                                         STALL.c.open_key.is_not(None))).scalar_one()
    Router(slack.engine, slack.settings, slack.rules).route_stalls([stall_id], utcnow())
    deliver(slack)
    return stall_id


def posts(fake, channel: str) -> list:
    return [c for c in fake.calls("chat.postMessage") if c.body.get("channel") == channel and c.ok]


def all_strings(body) -> str:
    return json.dumps(body, ensure_ascii=False)


# --- the text functions and the checker ------------------------------------------------------------

def test_escape_makes_every_trick_inert_and_reads_the_same():
    assert escape(NAME) == NAME_MD
    assert md(NAME, 500) == NAME_MD
    # Numbers keep their dots; only a dot before a letter (a possible domain) gets a joiner.
    assert escape("x 1.3, $2.5k, v2") == "x 1.3, $2.5k, v2"
    assert escape("Acme Inc. & co") == "Acme Inc. &amp; co"
    # Already-escaped input is shown as typed, escaped once more exactly once.
    assert escape("&lt;!here&gt;") == "&amp;lt;!here&amp;gt;"
    # Every control and format character goes, except newlines and the joiner of emoji.
    assert escape("a\u200eb\u200fc\u061cd\u2067e\u202af\u0007g\ufeffh\u200bi\u2060j👩\u200d💻") == "abcdefghij👩\u200d💻"
    assert escape("evil.\u200dcom") == f"evil.{WJ}com"  # a joiner outside an emoji is dropped like the rest
    # What a reader sees is the original text, minus the bidi control.
    assert plain(NAME, 500).replace(WJ, "") == NAME.replace("\u202e", "")
    assert md(NAME, 40).endswith("…") and len(md(NAME, 40)) <= 40


def test_plain_text_breaks_links_and_mentions_but_is_not_entity_escaped():
    out = plain(NAME, 150)
    assert out.startswith(f"<{WJ}!channel> Acme <{WJ}https:{WJ}//evil.{WJ}example|click>")
    assert "&" not in out and "\u202e" not in out
    assert plain("x" * 200, 150) == "x" * 149 + "…"
    assert len(plain("evil.example " * 40, 150)) <= 150


def test_the_checker_catches_raw_customer_text_and_accepts_our_own_markup():
    for raw in (NAME, SUBJECT_TEXT, TOPIC, PLAN, EVENT, "ping @Here now", "see https://localhost/x"):
        assert problems({"text": raw}, markers=MARKERS, users=USERS), raw
    ours = {"text": f"<@{OWNER}> at <!date^1700000000^{{date_short}}|2023-11-14> <https://ourco.example/j|journey>",
            "blocks": [{"type": "button", "url": "https://ourco.example/j", "value": NAME}]}
    assert_inert(ours, markers=MARKERS, users=USERS, links=("https://ourco.example/",))
    for safe in (md(NAME, 500), plain(NAME, 500), md(SUBJECT_TEXT, 500), plain(EVENT, 100)):
        assert_inert({"text": safe}, markers=MARKERS, users=USERS)


# --- each surface, through the real flows -----------------------------------------------------------

def test_ping_dm_channel_post_edit_and_thread_reply(slack):
    ingest(slack, "acme")
    ping(slack, "acme")
    fake = slack.fake
    dm, [post] = posts(fake, fake.dm_channel(OWNER)), posts(fake, ALERTS)
    assert len(dm) == 1
    for call in (dm[0], post):
        header, summary = call.body["blocks"][0], call.body["blocks"][1]
        assert header["text"]["text"].startswith(f"🟠 P1 · <{WJ}!channel> Acme <{WJ}https:{WJ}//evil.{WJ}example")
        assert f"*{NAME_MD}*" in summary["text"]["text"]
        assert call.body["text"].startswith(f"P1: {NAME_MD}: ")
    # A priority change edits the pings in place and replies in their threads.
    assert post_v1(slack.http, "/v1/group", group_call("acme", {"name": NAME, "arr": 90000},
                                                       user="acme-user")).status_code == 200
    ping(slack, "acme")
    assert fake.calls("chat.update") and [c for c in posts(fake, ALERTS) if c.body.get("thread_ts")]
    # Nobody acts on the P0: the managers' escalation in the digest channel.
    assert Router(slack.engine, slack.settings, slack.rules).escalate_due(utcnow() + timedelta(hours=3)) == 1
    deliver(slack)
    [escalation] = posts(fake, DIGEST)
    assert escalation.body["text"].startswith("Unacknowledged P0") and NAME_MD in escalation.body["text"]
    assert_all_inert(fake.calls(), markers=MARKERS, users=USERS)


def test_escalation_summary_and_win_back_renderers():
    view = PingView(stall_id=7, account_name=NAME, arr=9e4, priority="P0", stage=PLAN, step=TOPIC, days_stalled=3,
                    why=SUBJECT_TEXT, owner=OWNER, resolution=SUBJECT_TEXT, note=EVENT)
    bodies = [{"text": winback_text(view, attempts=2),
               "blocks": [b.to_dict() for b in winback_blocks(view, attempts=2, last_sent=utcnow())]},
              {"blocks": [b.to_dict() for b in escalation_summary_blocks([view] * 3, delay_minutes=60)]},
              {"text": escalation_text(view, minutes_unacked=61),
               "blocks": [b.to_dict() for b in escalation_blocks(view, minutes_unacked=61)]}]
    for body in bodies:
        assert NAME_MD in all_strings(body) or md(NAME, 120) in all_strings(body)
        assert_inert(body, markers=MARKERS, users=USERS)


def test_journey_stalls_funnel_and_app_home(slack):
    ingest(slack, "acme")
    ping(slack, "acme")
    fake = slack.fake
    _, method = slack.command("/journey", "acme", OWNER)
    journey = slack.answer(method)
    body = all_strings(journey)
    assert journey["text"] == f"Journey of {NAME_MD}"
    assert md(SUBJECT_TEXT, 100) in body and md(PLAN, 100) in body  # (only milestone events are listed)
    _, method = slack.command("/stalls", "all", OWNER)
    assert NAME_MD in all_strings(slack.answer(method))
    _, method = slack.command("/funnel", "30", OWNER)  # stage names come from the rules; checked all the same
    assert slack.answer(method)["response_type"] == "ephemeral"
    _, method = slack.command("/journey", "<!channel> Acme evil.example", OWNER)  # "did you mean" or no match
    slack.answer(method)
    before = len(fake.calls("views.publish"))
    assert slack.post(event_callback({"type": "app_home_opened", "user": OWNER, "tab": "home"})).status_code == 200
    [home] = fake.wait_for_calls("views.publish", before + 1)[before:]
    assert NAME_MD in all_strings(home.body)
    assert_all_inert(fake.calls(), markers=MARKERS, users=USERS)


def test_digest(slack):
    ingest(slack, "acme")
    ping(slack, "acme")
    outcome = post_digest(slack.engine, slack.settings, slack.rules, utcnow())
    assert outcome.posted
    deliver(slack)
    [digest] = posts(slack.fake, DIGEST)
    assert NAME_MD in all_strings(digest.body["blocks"])
    assert_all_inert(slack.fake.calls(), markers=MARKERS, users=USERS)


def test_draft_modal_and_the_could_not_be_delivered_dm(slack):
    ingest(slack, "acme")
    ping(slack, "acme")
    fake = slack.fake
    message = posts(fake, ALERTS)[0]
    actions = next(b for b in message.body["blocks"] if b["type"] == "actions")
    draft = next(e for e in actions["elements"] if e["action_id"] == Action.DRAFT.value)
    res, _ = slack.click({"action_id": draft["action_id"], "block_id": actions["block_id"], "type": "button",
                          "value": draft["value"]}, ADMIN,
                         container={"type": "message", "message_ts": message.response["ts"], "channel_id": ALERTS,
                                    "is_ephemeral": False})
    assert res.status_code == 200
    fake.wait_for_calls("views.update", 1, timeout=20)
    view = fake.views[fake.calls("views.open")[-1].response["view"]["id"]]
    assert f"*{md(NAME, 120)}*" in all_strings(view["blocks"])

    # Approve; the mail server refuses with a reply that tries mentions and links.
    values = {key: next(b for b in view["blocks"] if b.get("block_id") == key)["element"].get("initial_value") or ""
              for key in (RECIPIENT, SUBJECT, BODY)}
    answer = slack.submit(view, values, ADMIN)
    assert answer.status_code == 200 and "sending to" in answer.text
    slack.smtp.fail("rcpt", "550 5.1.1 <!channel> see https://evil.example/help or evil.zip \u202e@here")
    d = Services(settings=slack.settings, engine=slack.engine, rules=slack.rules)
    MailSender(slack.engine, d.settings, d.rules,
               on_outcome=lambda conn, outcome: mail_outcome(d, conn, outcome)).run_once()
    deliver(slack)
    [dm] = [c for c in fake.calls("chat.postMessage") if c.body.get("channel") == fake.dm_channel(ADMIN)]
    assert dm.body["text"].startswith(f":warning: The recovery email for {md(NAME, 120)} to ")
    assert f"could not be delivered: the mail server refused the recipient (550 5.1.1 &lt;!channel&gt; see " \
           f"https:{WJ}//evil.{WJ}example/help" in dm.body["text"]
    edits = [c for c in fake.calls("chat.update") if "could not be delivered" in all_strings(c.body)]
    assert edits
    assert_all_inert(fake.calls(), markers=MARKERS, users=USERS)


# --- hostile text of every shape through ingest, scan, digest and /journey ---------------------------

FRAGMENTS = ["<!channel>", "<!here>", "<!everyone>", "<!subteam^S0EVIL|team>", "<@U0EVIL>", "<#C0EVIL>", "@channel",
             "@here", "@everyone", "<https://evil.example|click>", "<mailto:x@evil.example>", "evil.example",
             "www.evil.zip", "https://evil.zip/x", "mailto:a@evil.example", "x@evil.example", "\u202e", "\u2066",
             "\u2069", "\u200e", "\u200f", "\u061c", "&lt;!here&gt;", "&amp;", "*b*", "_i_", "`c`", "~s~", "\u200b",
             "\u2060", "\n", "> ", "|", "<", ">", "&", "evil.example．com", "evil。zip"]
hostile = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(alphabet="ab .@:/<>!&|", max_size=6)),
                   min_size=1, max_size=8).map(" ".join).filter(lambda s: s.strip())


@settings(derandomize=True, max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(name=hostile, subject=hostile, topic=hostile, plan=hostile, event=hostile)
def test_hostile_text_through_ingest_scan_digest_and_journey_reaches_slack_inert(slack, name, subject, topic, plan,
                                                                                  event):
    n = next(_ids)
    account = f"hx{n}"
    slack.fake.clear_calls()
    ingest(slack, account, name=name, subject=subject, topic=topic, plan=plan, event=event, first_name=name)
    ping(slack, account)
    post_digest(slack.engine, slack.settings.model_copy(update={"digest_channel": f"C0DIG{n}"}), slack.rules,
                utcnow())
    deliver(slack)
    _, method = slack.command("/journey", account, OWNER)
    slack.answer(method)
    checked = assert_all_inert(slack.fake.calls(), markers=MARKERS, users=USERS)
    assert checked >= 4  # at least the pings, the digest and the /journey answer
