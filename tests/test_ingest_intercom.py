"""/ingest/intercom through the real HTTP server: Intercom webhook notifications, signed as
Intercom signs them, stored as helpdesk tickets and evaluated before the answer.

Vendor documentation each payload shape follows:

- Setting up webhooks (endpoint URL over HTTPS, checked with a HEAD request when saved; topics):
  https://developers.intercom.com/docs/webhooks/setting-up-webhooks
- Webhook models: the notification object (`type: notification_event`, `topic`, `id`,
  `app_id`, `created_at`, `data: {type: notification_event_data, item}`), the topic list
  (conversation.user.created / .user.replied / .admin.replied / .admin.closed / .admin.opened /
  .admin.snoozed, conversation_part.tag.created, ...; item type Conversation), signed notifications:
  https://developers.intercom.com/docs/references/webhooks/webhook-models
- Signed notifications (`X-Hub-Signature: sha1=` + hex HMAC-SHA1 of the body, RFC 2104):
  https://developers.intercom.com/intercom-api-reference/v1.0/reference/signed-notifications
- Webhook notifications (error answers for days suspend the subscription, hence 200 for ignored topics):
  https://developers.intercom.com/docs/webhooks/webhook-notifications
- The Conversation object (API 2.x: `state` open/closed/snoozed, `priority` priority/not_priority,
  `source` {subject, body (HTML), author {type, email}}, `contacts` {type: contact.list, contacts:
  [{id, external_id}]}, `tags` {type: tag.list, tags: [{name}]}, unix `created_at`/`updated_at`):
  https://developers.intercom.com/docs/references/2.9/rest-api/api.intercom.io/Conversations/conversation/
- API 1.x Conversation (`conversation_message`, `user`) and the `ping` notification (`id: null`,
  item `{"type": "ping"}`): https://developers.intercom.com/docs/references/1.0/rest-api/conversations/conversation-model
"""

from __future__ import annotations

import hashlib
import hmac
import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings as hypothesis_settings
from hypothesis import strategies as st

from bot.app import create_app
from bot.ingest import intercom
from bot.settings import Settings
from tests.conftest import SEGMENT_SECRET, STRIPE_SECRET, TICKETS_SECRET, WRITE_KEY, LiveServer
from tests.fuzz import examples
from tests.helpers import (EVENT, STALL, TICKET, ago, all_rejected, count, counts, dumps, group_call, identify_call,
                           live_stalls, one, post_v1, rows)

CLIENT_SECRET = "intercom-client-secret"
NOTHING = {"event": 0, "account": 0, "contact": 0, "ticket": 0}


@pytest.fixture
def settings(db_url) -> Settings:
    """The suite's settings plus the Intercom app's client secret (overrides conftest's)."""
    return Settings(
        _env_file=None, DATABASE_URL=db_url, STALLWATCH_WRITE_KEY=WRITE_KEY, SEGMENT_SHARED_SECRET=SEGMENT_SECRET,
        STRIPE_WEBHOOK_SECRET=STRIPE_SECRET, TICKETS_SHARED_SECRET=TICKETS_SECRET,
        INTERCOM_CLIENT_SECRET=CLIENT_SECRET, SLACK_BOT_TOKEN=None, SLACK_SIGNING_SECRET=None,
    )


def hub_signature(body: bytes, secret: str = CLIENT_SECRET) -> str:
    """What Intercom sends: "sha1=" + the hex HMAC-SHA1 of the raw body keyed with the client
    secret (computed here with hmac/hashlib, independently of bot.ingest.intercom.sign)."""
    return "sha1=" + hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


def post_intercom(client: httpx.Client, notification=None, *, raw: bytes | None = None,
                  signature: str | None = None) -> httpx.Response:
    # Intercom posts the notification as JSON with its own User-Agent (signed-notifications page).
    body = raw if raw is not None else json.dumps(notification, indent=2).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "intercom-parrot-service-client/1.0",
               "X-Hub-Signature": signature if signature is not None else hub_signature(body)}
    return client.post("/ingest/intercom", content=body, headers=headers)


def unix(at) -> int:
    return int(at.timestamp())


def conversation(conversation_id: str, *, state: str = "open", created=None, updated=None, email: str | None = None,
                 author_type: str = "user", contact: dict | None = None, tags: tuple[str, ...] = (),
                 priority: str = "not_priority", subject: str = "", body: str = "<p>Hi</p>", **extra) -> dict:
    """A Conversation object as API 2.x webhooks carry it (the 2.9 conversation model)."""
    created = created or ago(hours=2)
    author = {"type": author_type, "id": "5bc8f7421ae2d96695c18a", "name": "Jane Doe"}
    if email is not None:
        author["email"] = email
    item = {
        "type": "conversation", "id": conversation_id, "title": None,
        "created_at": unix(created), "updated_at": unix(updated or created), "waiting_since": unix(created),
        "snoozed_until": None, "open": state != "closed", "state": state, "read": True, "priority": priority,
        "admin_assignee_id": None, "team_assignee_id": None,
        "tags": {"type": "tag.list", "tags": [{"type": "tag", "id": str(i), "name": name, "applied_at": unix(created),
                                               "applied_by": {"type": "admin", "id": "814860"}}
                                              for i, name in enumerate(tags)]},
        "source": {"type": "conversation", "id": "269650473", "delivered_as": "customer_initiated",
                   "subject": subject, "body": body, "author": author, "attachments": [], "url": None,
                   "redacted": False},
        "contacts": {"type": "contact.list", "contacts": [contact or {"type": "contact", "id": "5bc8f7ae2d96695c18a"}]},
        "teammates": {"type": "admin.list", "admins": []},
        "custom_attributes": {}, "first_contact_reply": None, "sla_applied": None, "statistics": None,
        "conversation_rating": None,
        "conversation_parts": {"type": "conversation_part.list", "conversation_parts": [], "total_count": 0},
    }
    item.update(extra)
    return item


def notification(topic: str, item: dict, *, notif_id: str = "notif_78c122d0-23ba-11e4-9464-79b01267cc2e",
                 attempts: int = 1) -> dict:
    """The webhook notification object wrapping `item` (webhook models page)."""
    return {"type": "notification_event", "app_id": "a86dr8yl",
            "data": {"type": "notification_event_data", "item": item}, "links": {}, "id": notif_id,
            "topic": topic, "delivery_status": "pending", "delivery_attempts": attempts, "delivered_at": 0,
            "first_sent_at": item.get("updated_at", 0), "created_at": item.get("updated_at", 0), "self": None}


def answer(response: httpx.Response, *, accepted: int, duplicates: int = 0, rejected: int = 0) -> dict:
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["duplicates"], len(body["rejected"])) == (accepted, duplicates, rejected), body
    return body


def refused(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]


def jane_at_initech(client) -> None:
    """A product user whose Segment identify gave her e-mail, grouped into the account initech."""
    answer(post_v1(client, "/v1/batch", {"batch": [
        identify_call("u-jane", {"email": "Jane@Initech.com", "name": "Jane"}),
        group_call("initech", {"name": "Initech", "arr": 50000}, user="u-jane"),
    ]}), accepted=2)


# --------------------------------------------------------------------------- topics


TOPIC_STATES = [  # (topic, the conversation's state then, the ticket status stored)
    ("conversation.user.created", "open", "open"),
    ("conversation.user.replied", "open", "open"),
    ("conversation.admin.replied", "open", "open"),
    ("conversation.admin.opened", "open", "open"),
    ("conversation.admin.snoozed", "snoozed", "snoozed"),
    ("conversation.admin.closed", "closed", "closed"),
    ("conversation_part.tag.created", "open", "open"),
]


@pytest.mark.parametrize("topic,state,status", TOPIC_STATES)
def test_each_conversation_topic_stores_the_ticket(client, engine, topic, state, status):
    jane_at_initech(client)
    item = conversation("1911149811", state=state, email="jane@initech.com", tags=("SSO", "urgent"),
                        subject="Login", priority="priority")
    answer(post_intercom(client, notification(topic, item)), accepted=1)
    ticket = one(engine, TICKET, TICKET.c.id == "intercom:1911149811")
    assert (ticket["account_id"], ticket["status"], ticket["topic"], ticket["subject"], ticket["priority"]) == (
        "initech", status, "SSO", "Login", "high")
    event = one(engine, EVENT, EVENT.c.source == "intercom")
    assert (event["kind"], event["name"], event["account_id"]) == ("ticket", f"Ticket {status}", "initech")
    assert event["properties"]["intercom_topic"] == topic


def test_conversation_lifecycle_updates_one_ticket(client, engine):
    """created -> snoozed -> closed -> reopened: one ticket, its status following the state,
    an Intercom retry of a notification (delivery_attempts 2) a duplicate."""
    jane_at_initech(client)
    created = ago(days=2)
    steps = [("conversation.user.created", "open", ago(days=2)), ("conversation.admin.snoozed", "snoozed", ago(days=1)),
             ("conversation.admin.closed", "closed", ago(hours=5)), ("conversation.admin.opened", "open", ago(hours=1))]
    for topic, state, updated in steps:
        item = conversation("42", state=state, created=created, updated=updated, email="jane@initech.com")
        answer(post_intercom(client, notification(topic, item, notif_id=f"notif_{topic}")), accepted=1)
        assert one(engine, TICKET, TICKET.c.id == "intercom:42")["status"] == state
        retry = post_intercom(client, notification(topic, item, notif_id=f"notif_{topic}", attempts=2))
        answer(retry, accepted=0, duplicates=1)
    assert count(engine, TICKET) == 1 and count(engine, EVENT, EVENT.c.source == "intercom") == 4
    # A late notification of an older state does not roll the status back.
    stale = conversation("42", state="closed", created=created, updated=ago(hours=3), email="jane@initech.com")
    answer(post_intercom(client, notification("conversation.admin.closed", stale)), accepted=1)
    assert one(engine, TICKET, TICKET.c.id == "intercom:42")["status"] == "open"


def test_ticket_spike_from_intercom_opens_stall_before_the_answer(client, engine):
    jane_at_initech(client)
    for n, (tag, days) in enumerate([("SSO", 5), ("billing", 3)]):
        item = conversation(f"9{n}", created=ago(days=days), email="jane@initech.com", tags=(tag,))
        answer(post_intercom(client, notification("conversation.user.created", item)), accepted=1)
    assert live_stalls(engine, "initech", "ticket_spike") == []
    third = conversation("99", created=ago(days=1), email="jane@initech.com", tags=("sso",))
    answer(post_intercom(client, notification("conversation.user.created", third)), accepted=1)
    stalls = live_stalls(engine, "initech", "ticket_spike")  # no scan: evaluated before the answer
    assert len(stalls) == 1, rows(engine, STALL)


# --------------------------------------------------------------------------- ping and other topics


def test_ping_answers_200_and_stores_nothing(client, engine):
    ping = {"type": "notification_event", "app_id": "i6wc9ipe",
            "data": {"type": "notification_event_data", "item": {"type": "ping", "message": "something"}},
            "links": {}, "id": None, "topic": "ping", "delivery_status": None, "delivery_attempts": 1,
            "delivered_at": 0, "first_sent_at": 1553288147, "created_at": 1553288147, "self": None}
    response = post_intercom(client, ping)
    assert response.status_code == 200 and response.json() == {
        "accepted": 0, "duplicates": 0, "rejected": [], "ignored": "ping"}
    assert counts(engine) == NOTHING


@pytest.mark.parametrize("topic,item", [
    ("contact.user.created", {"type": "contact", "id": "5c9553cb", "role": "user", "email": "jane@initech.com"}),
    ("company.created", {"type": "company", "id": "531ee472cce572a6ec000006", "company_id": "initech"}),
    ("ticket.created", {"type": "ticket", "id": "22"}),
    ("conversation.deleted", {"type": "conversation", "id": "1911149811"}),  # a minimal payload
    ("conversation.admin.single.created", None),  # an admin's outbound message: not a customer's ticket
])
def test_topics_not_about_customer_conversations_are_ignored(client, engine, topic, item):
    item = item or conversation("5", author_type="admin", email="operator@vendor.test")
    response = post_intercom(client, notification(topic, item))
    assert response.status_code == 200 and response.json()["ignored"] == topic, response.text
    assert counts(engine) == NOTHING


def test_head_request_validates_the_endpoint_url(client):
    assert client.head("/ingest/intercom").status_code == 200


# --------------------------------------------------------------------------- mapping


def test_html_body_is_stripped_and_bounded(client, engine):
    jane_at_initech(client)
    body = ('<p>Hi team &amp; friends,</p><p>SSO <b>fails</b> with <code>&lt;saml:Assertion&gt;</code><br>since '
            'Monday.</p><script>alert("x")</script><style>p{color:red}</style><img src="x" onerror="alert(1)">'
            '<p>' + "word " * 2000 + '</p>')
    item = conversation("77", email="jane@initech.com", subject="<i>SSO</i> broken", body=body)
    answer(post_intercom(client, notification("conversation.user.created", item)), accepted=1)
    ticket = one(engine, TICKET, TICKET.c.id == "intercom:77")
    assert ticket["body"].startswith("Hi team & friends,\n\nSSO fails with <saml:Assertion>\nsince Monday.\n\nword")
    assert "alert" not in ticket["body"] and "<p>" not in ticket["body"] and "color" not in ticket["body"]
    assert len(ticket["body"]) == 4000
    assert ticket["subject"] == "SSO broken"


def test_contact_email_resolves_the_account(client, engine):
    """The customer's e-mail (the author's, else the contact's) finds the contact Segment
    identified and so its account, like a relay ticket's requester_email."""
    jane_at_initech(client)
    by_author = conversation("1", email="JANE@initech.com")
    by_contact = conversation("2", contact={"type": "contact", "id": "c2", "email": "jane@initech.com"})
    admin_started = conversation("3", author_type="admin", email="operator@vendor.test",
                                 contact={"type": "contact", "id": "c3", "email": "jane@initech.com"})
    for item in (by_author, by_contact, admin_started):
        answer(post_intercom(client, notification("conversation.admin.replied", item)), accepted=1)
    for n in ("1", "2", "3"):
        ticket = one(engine, TICKET, TICKET.c.id == f"intercom:{n}")
        assert (ticket["account_id"], ticket["requester_email"]) == ("initech", "jane@initech.com"), n


def test_external_id_and_company_id_name_the_account(client, engine):
    jane_at_initech(client)
    by_user_id = conversation("11", contact={"type": "contact", "id": "c1", "external_id": "u-jane"})
    by_company = conversation("12", company={"type": "company", "id": "6a1f", "company_id": "globex"})
    for item in (by_user_id, by_company):
        answer(post_intercom(client, notification("conversation.user.created", item)), accepted=1)
    assert one(engine, TICKET, TICKET.c.id == "intercom:11")["account_id"] == "initech"
    assert one(engine, TICKET, TICKET.c.id == "intercom:12")["account_id"] == "globex"


def test_api_1_conversation_shape(client, engine):
    """Apps on API 1.x receive `conversation_message` and `user` instead of `source`/`contacts`."""
    jane_at_initech(client)
    item = {"type": "conversation", "id": "21321941764", "created_at": unix(ago(hours=3)),
            "updated_at": unix(ago(hours=3)), "user": {"type": "user", "id": "5c95", "user_id": "u-jane",
                                                         "email": "jane@initech.com"},
            "assignee": {"type": "nobody_admin", "id": None},
            "conversation_message": {"type": "conversation_message", "id": "331494375", "subject": "",
                                     "body": "<p>Hello everyone!</p>", "author": {"type": "user", "id": "5c95"}},
            "open": True, "state": "open", "read": True, "tags": {"type": "tag.list", "tags": []}}
    answer(post_intercom(client, notification("conversation.user.created", item)), accepted=1)
    ticket = one(engine, TICKET, TICKET.c.id == "intercom:21321941764")
    assert (ticket["account_id"], ticket["body"], ticket["status"]) == ("initech", "Hello everyone!", "open")


def test_unknown_account(client, engine):
    """No e-mail, company or external id (an anonymous visitor's chat, routine in Intercom): a 200
    that says why nothing was stored, never an error that would count towards Intercom pausing
    the subscription. An e-mail no contact has is stored like a relay ticket's: a ticket
    without an account."""
    anonymous = conversation("31", contact={"type": "contact", "id": "lead-1"})
    body = answer(post_intercom(client, notification("conversation.user.created", anonymous)), accepted=0)
    assert body["ignored"] == "conversation.user.created" and "anonymous visitor" in body["reason"]
    assert counts(engine) == NOTHING
    stranger = conversation("32", email="someone@unknown.test")
    answer(post_intercom(client, notification("conversation.user.created", stranger)), accepted=1)
    assert one(engine, TICKET, TICKET.c.id == "intercom:32")["account_id"] is None
    assert count(engine, STALL) == 0


def test_unusable_conversations_are_rejected(client, engine):
    for item, words in [(conversation("41", email="a@b.co", state="pending"), "state"),
                        (conversation("42", email="a@b.co", created_at="yesterday"), "created_at"),
                        (conversation("43", email="a@b.co", created_at=-5), "created_at"),
                        ({**conversation("44", email="a@b.co"), "id": None}, "id"),
                        ("not an object", "data.item")]:
        n = notification("conversation.user.replied", item) if isinstance(item, dict) else {
            "type": "notification_event", "topic": "conversation.user.replied", "data": {"item": item}}
        body = all_rejected(post_intercom(client, n), rejected=1)  # a 400: Intercom's log shows why
        assert words in body["rejected"][0]["error"], body
    assert counts(engine) == NOTHING


def test_an_author_type_of_another_json_type_is_not_a_customer(client, engine):
    """Found by the property test below: a list as source.author.type (unhashable) was looked
    up in a set and answered 500. It is not a customer's type: the contact's e-mail decides."""
    item = conversation("45", author_type=["user"], email="jane@initech.com",
                        contact={"type": "contact", "id": "c45", "email": "jane@initech.com"})
    response = post_intercom(client, notification("conversation.user.created", item))
    assert response.status_code in (200, 400), response.text[:300]
    assert isinstance(response.json(), dict)


# --------------------------------------------------------------------------- signature


def test_signature(client, engine):
    item = conversation("50", email="jane@initech.com")
    body = dumps(notification("conversation.user.created", item))
    good = hub_signature(body)
    assert intercom.sign(body, CLIENT_SECRET) == good
    for bad in (None, "", "sha1=", good[5:], "sha256=" + good[5:], "sha1=" + "0" * 40, good + "0",
                hub_signature(body, "other-secret"), hub_signature(body + b" ")):
        headers = {} if bad is None else {"X-Hub-Signature": bad}
        refused(client.post("/ingest/intercom", content=body, headers=headers), 401)
    refused(post_intercom(client, raw=body + b" ", signature=good), 401)  # altered after signing
    refused(post_intercom(client, raw=b"not json", signature="sha1=" + "1" * 40), 401)  # verified before parsed
    assert counts(engine) == NOTHING
    answer(post_intercom(client, raw=body, signature="SHA1=" + good[5:].upper()), accepted=1)
    refused(post_intercom(client, raw=b"not json"), 400)
    refused(post_intercom(client, raw=b"[1, 2]"), 400)
    refused(post_intercom(client, {"type": "notification_event"}), 400)  # no topic
    refused(post_intercom(client, {"type": "something_else", "topic": "ping"}), 400)
    assert count(engine, EVENT) == 1


def test_unset_client_secret_answers_401(settings, engine):
    body = dumps(notification("conversation.user.created", conversation("60", email="jane@initech.com")))
    unset = settings.model_copy(update={"intercom_client_secret": None})
    with LiveServer(create_app(unset, engine=engine)) as live, httpx.Client(base_url=live.url, timeout=30) as c:
        refused(post_intercom(c, raw=body), 401)
        assert c.head("/ingest/intercom").status_code == 401  # the Developer Hub says so when the URL is saved
    assert counts(engine) == NOTHING


# --------------------------------------------------------------------------- property


SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(2 ** 70), max_value=2 ** 70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
           | st.sampled_from(["open", "closed", "snoozed", "priority", "not_priority", "user", "admin", "lead",
                              "conversation", "jane@initech.com", "@", "<p>x", "<p <p <p", "&#0;", "\x00", "",
                              "x" * 300]))
KEYS = st.sampled_from(["type", "id", "topic", "data", "item", "state", "open", "created_at", "updated_at", "source",
                        "body", "subject", "title", "author", "email", "contacts", "external_id", "tags", "name",
                        "priority", "company", "company_id", "user", "user_id", "conversation_message"])
ODD = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=5),
                   max_leaves=20)
TOPICS = st.sampled_from([t for t, _, _ in TOPIC_STATES] + ["ping", "conversation.deleted", "contact.created"]) | (
    st.text(max_size=12) | SCALARS)


@st.composite
def signed_notification(draw):
    """A notification built from the valid shape with any subset of fields replaced by odd
    values, or any JSON at all."""
    item = conversation(draw(st.text(min_size=1, max_size=8)), email=draw(st.sampled_from(
        ["jane@initech.com", "nobody"])))
    for key in draw(st.lists(st.sampled_from(["author", "body", "subject"]), max_size=2, unique=True)):
        item["source"][key] = draw(ODD)
    for key in draw(st.lists(st.sampled_from(sorted(item)), max_size=4, unique=True)):
        item[key] = draw(ODD)
    body = notification(draw(TOPICS), item)
    for key in draw(st.lists(st.sampled_from(["type", "data", "created_at", "id"]), max_size=2, unique=True)):
        body[key] = draw(ODD)
    return draw(st.just(body) | ODD)


def test_arbitrary_signed_json_never_answers_5xx(client, engine):
    seen: set[int] = set()

    @hypothesis_settings(max_examples=examples(400), deadline=None,
                         suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(payload=signed_notification())
    def check(payload):
        before = counts(engine)
        response = post_intercom(client, raw=json.dumps(payload).encode())
        seen.add(response.status_code)
        assert response.status_code in (200, 400), (response.status_code, response.text[:300])
        assert isinstance(response.json(), dict)
        if response.status_code != 200:
            assert counts(engine) == before

    check()
    assert {200, 400} <= seen, seen
    assert count(engine, EVENT, EVENT.c.source == "intercom") > 0  # valid-shaped examples were stored
