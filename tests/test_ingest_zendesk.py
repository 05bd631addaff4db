"""POST /ingest/zendesk through the real HTTP server: Zendesk webhooks as Zendesk sends them.

Signed as Zendesk documents it (https://developer.zendesk.com/documentation/webhooks/verifying/):
`X-Zendesk-Webhook-Signature` = base64(HMAC-SHA256(signing secret, timestamp + raw body)), with
the timestamp in `X-Zendesk-Webhook-Signature-Timestamp`. There is no official Python library:
`zendesk_signature` below is written from that page, independently of bot.ingest.zendesk.

Payload shapes:
- event-subscription webhooks, https://developer.zendesk.com/api-reference/webhooks/event-types/ticket-events/
  (`zen:event-type:ticket.*`, the ticket in `detail`: ids as strings, status and priority upper case);
- trigger / automation webhooks, the JSON body the admin writes with placeholders,
  https://support.zendesk.com/hc/en-us/articles/4408886858138 (Zendesk placeholders reference:
  `{{ticket.tags}}` renders the tags space-separated, `{{ticket.created_at_with_timestamp}}`
  ISO 8601 to the minute, e.g. `2013-12-12T05:35Z`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from hypothesis import HealthCheck, given, settings as hypothesis_settings
from hypothesis import strategies as st

from bot.app import create_app
from bot.ingest.zendesk import TRIGGER_BODY
from tests.conftest import LiveServer
from tests.fuzz import examples
from tests.helpers import (
    CONTACT, EVENT, STALL, TICKET, ago, count, counts, dumps, group_call, identify_call, live_stalls, one, post_v1,
    rows,
)

ZENDESK_SECRET = "dGhpcyBpcyBhIHplbmRlc2sgc2lnbmluZyBzZWNyZXQ"  # the shape of a Zendesk signing secret
NOTHING = {"event": 0, "account": 0, "contact": 0, "ticket": 0}
UTC = timezone.utc


@pytest.fixture
def settings(settings):
    return settings.model_copy(update={"zendesk_webhook_secret": ZENDESK_SECRET})


# --------------------------------------------------------------------------- signing, as Zendesk does


def zendesk_timestamp(at: datetime | None = None) -> str:
    """The header's format in Zendesk's deliveries: ISO 8601, UTC, to the second."""
    return (at or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def zendesk_signature(body: bytes, timestamp: str, secret: str = ZENDESK_SECRET) -> str:
    """base64(HMACSHA256(TIMESTAMP + BODY)) keyed with the webhook's signing secret."""
    digest = hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def post_zendesk(client: httpx.Client, payload=None, *, raw: bytes | None = None, timestamp: str | None = None,
                 signature: str | None = "valid", secret: str = ZENDESK_SECRET) -> httpx.Response:
    body = raw if raw is not None else dumps(payload)
    timestamp = zendesk_timestamp() if timestamp is None else timestamp
    headers = {"Content-Type": "application/json", "X-Zendesk-Webhook-Signature-Timestamp": timestamp}
    if signature == "valid":
        headers["X-Zendesk-Webhook-Signature"] = zendesk_signature(body, timestamp, secret)
    elif signature is not None:
        headers["X-Zendesk-Webhook-Signature"] = signature
    return client.post("/ingest/zendesk", content=body, headers=headers)


def answer(response: httpx.Response, *, accepted: int, duplicates: int = 0, rejected: int = 0) -> dict:
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["duplicates"], len(body["rejected"])) == (accepted, duplicates, rejected), body
    return body


def all_rejected(response: httpx.Response) -> str:
    """A delivery whose one ticket was rejected: 200 with `rejected: [{"index": 0, ...}]`, or
    (once a delivery with nothing accepted answers 4xx with `code` and `message`) that 4xx;
    either way, the error text."""
    body = response.json()
    if response.status_code == 200:
        assert (body["accepted"], body["duplicates"], len(body["rejected"])) == (0, 0, 1), body
        assert body["rejected"][0]["index"] == 0
        return body["rejected"][0]["error"]
    assert 400 <= response.status_code < 500 and response.status_code not in (401, 413), response.text
    assert body.get("code") and body.get("message"), body
    return json.dumps(body)


def refused(response: httpx.Response, status: int, context: object = "") -> dict:
    assert response.status_code == status, f"{context}: {response.status_code} {response.text}"
    body = response.json()
    assert isinstance(body.get("error"), str) and body["error"]
    return body


# --------------------------------------------------------------------------- payloads


def zendesk_time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ticket_event(event_type: str, ticket_id: str, *, status: str = "OPEN", created: datetime, updated=None,
                 tags=("sso",), priority: str | None = "NORMAL", event: dict | None = None, at: datetime | None = None,
                 **detail) -> dict:
    """An event-subscription webhook body, as in Zendesk's example payloads (ticket-events page):
    ids as strings, status and priority upper case, tags a list."""
    return {
        "account_id": 22129848,
        "detail": {
            "actor_id": "8447388090494", "assignee_id": "8447388090494", "brand_id": "8447346621310",
            "created_at": zendesk_time(created), "custom_status": "8447320465790",
            "description": "We cannot log in with SSO since this morning.", "external_id": None,
            "form_id": "8646151517822", "group_id": "8447320466430", "id": ticket_id, "is_public": True,
            "organization_id": "8447346622462", "priority": priority, "requester_id": "8447388090494",
            "status": status, "subject": "SSO login fails", "submitter_id": "8447388090494", "tags": list(tags),
            "type": "INCIDENT", "updated_at": zendesk_time(updated or created), "via": {"channel": "web_service"},
            **detail,
        },
        "event": event or {},
        "id": f"cbe4028c-7239-495d-b020-{ticket_id:0>12}",
        "subject": f"zen:ticket:{ticket_id}",
        "time": (at or updated or created).astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "type": f"zen:event-type:{event_type}",
        "zendesk_event_version": "2022-11-06",
    }


def rendered(**values: str) -> bytes:
    """The recommended trigger body (bot.ingest.zendesk.TRIGGER_BODY) as Zendesk renders it:
    each placeholder replaced by its text (blank when the ticket has none)."""
    body = TRIGGER_BODY
    for name, value in {
        "ticket.id": "", "ticket.status": "Open", "ticket.title": "", "ticket.description": "", "ticket.tags": "",
        "ticket.priority": "", "ticket.requester.email": "", "ticket.organization.external_id": "",
        "ticket.created_at_with_timestamp": "", "ticket.updated_at_with_timestamp": "", **values,
    }.items():
        body = body.replace("{{" + name + "}}", json.dumps(value)[1:-1])
    assert "{{" not in body
    return body.encode()


def minute(at: datetime) -> str:
    """`{{ticket.created_at_with_timestamp}}`: ISO 8601 to the minute, `2013-12-12T05:35Z`."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


# --------------------------------------------------------------------------- trigger webhooks


def test_trigger_body_maps_a_ticket(client, engine):
    created = ago(days=2)
    body = rendered(**{"ticket.id": "4021", "ticket.status": "Open", "ticket.title": "Webhook deliveries failing",
                       "ticket.description": "Since Monday \"every\" delivery fails.\nPlease help.",
                       "ticket.tags": "integration vip webhooks", "ticket.priority": "High",
                       "ticket.organization.external_id": "acme", "ticket.requester.email": "Jane@Acme.com",
                       "ticket.created_at_with_timestamp": minute(created),
                       "ticket.updated_at_with_timestamp": minute(created + timedelta(minutes=5))})
    answer(post_zendesk(client, raw=body), accepted=1)
    ticket = one(engine, TICKET, TICKET.c.id == "4021")
    assert (ticket["account_id"], ticket["status"], ticket["topic"], ticket["priority"], ticket["subject"]) == (
        "acme", "open", "integration", "high", "Webhook deliveries failing")
    assert ticket["body"] == "Since Monday \"every\" delivery fails.\nPlease help."
    assert ticket["requester_email"] == "jane@acme.com"
    event = one(engine, EVENT, EVENT.c.source == "tickets")
    assert event["account_id"] == "acme" and event["kind"] == "ticket"
    assert event["properties"]["tags"] == ["integration", "vip", "webhooks"]
    # Redelivered as is: a duplicate. Solved later: a new event, the ticket follows.
    answer(post_zendesk(client, raw=body), accepted=0, duplicates=1)
    solved = rendered(**{"ticket.id": "4021", "ticket.status": "Solved", "ticket.tags": "integration",
                         "ticket.organization.external_id": "acme", "ticket.created_at_with_timestamp": minute(created),
                         "ticket.updated_at_with_timestamp": minute(ago(hours=1))})
    answer(post_zendesk(client, raw=solved), accepted=1)
    ticket = one(engine, TICKET, TICKET.c.id == "4021")
    assert ticket["status"] == "solved"
    assert ticket["subject"] == "Webhook deliveries failing"  # a blank placeholder keeps what was known


def test_trigger_body_is_lenient(client, engine):
    """Flat or wrapped in "ticket"; numbers unquoted; tags a list or a string; "-" and blank
    priorities; Zendesk's other time renderings; a long description cut to 4,000 characters."""
    created = ago(days=1).replace(microsecond=0)
    answer(post_zendesk(client, {"id": 7001, "status": "pending", "tags": ["Billing", "vip"], "priority": "-",
                                 "organization_external_id": "acme", "created_at": int(created.timestamp()),
                                 "description": "x" * 5000}), accepted=1)
    answer(post_zendesk(client, {"ticket": {"id": "7002", "status": "On-hold", "tags": "  sso   login ",
                                            "organization_external_id": "acme",
                                            "created_at": created.strftime("%Y/%m/%d %H:%M:%S +0000")}}), accepted=1)
    answer(post_zendesk(client, {"ticket": {"id": "7003", "status": "NEW", "tags": "",
                                            "organization_external_id": "acme",
                                            "created_at": created.strftime("%Y-%m-%d %H:%M:%S UTC")}}), accepted=1)
    stored = {r["id"]: r for r in rows(engine, TICKET)}
    assert {k: (v["status"], v["topic"], v["priority"]) for k, v in stored.items()} == {
        "7001": ("pending", "Billing", None), "7002": ("hold", "sso", None), "7003": ("new", None, None)}
    assert len(stored["7001"]["body"]) == 4000
    assert {v["created_at"].replace(tzinfo=UTC) if v["created_at"].tzinfo is None else v["created_at"]
            for v in stored.values()} == {created}


def test_requester_email_resolves_the_account(client, engine):
    answer(post_v1(client, "/v1/batch", {"batch": [
        identify_call("u-jane", {"email": "jane@initech.com", "name": "Jane"}),
        group_call("initech", {"name": "Initech"}, user="u-jane"),
    ]}), accepted=2)
    assert one(engine, CONTACT, CONTACT.c.id == "u-jane")["account_id"] == "initech"
    answer(post_zendesk(client, raw=rendered(**{
        "ticket.id": "88", "ticket.requester.email": "JANE@initech.com", "ticket.tags": "login",
        "ticket.created_at_with_timestamp": minute(ago(hours=3))})), accepted=1)
    assert one(engine, TICKET, TICKET.c.id == "88")["account_id"] == "initech"


def test_unknown_account_and_unusable_tickets_are_rejected(client, engine):
    """No organization external id and no requester e-mail: the account cannot be known, the
    entry is rejected (index 0) and nothing is stored. The Admin Center's "Test webhook"
    sends the template unrendered: every placeholder counts as missing."""
    created = minute(ago(hours=2))
    no_account = all_rejected(post_zendesk(client, raw=rendered(**{"ticket.id": "90",
                                                                   "ticket.created_at_with_timestamp": created})))
    assert "organization" in no_account
    all_rejected(post_zendesk(client, raw=TRIGGER_BODY.encode()))
    all_rejected(post_zendesk(client, raw=rendered(**{"ticket.id": "91", "ticket.organization.external_id": "acme",
                                                      "ticket.created_at_with_timestamp": "yesterday"})))
    all_rejected(post_zendesk(client, raw=rendered(**{"ticket.organization.external_id": "acme",
                                                      "ticket.created_at_with_timestamp": created})))
    # An event webhook names only Zendesk's own ids: rejected, with the way out in the message.
    event = ticket_event("ticket.created", "92", created=ago(hours=1))
    assert "trigger" in all_rejected(post_zendesk(client, event))
    assert counts(engine) == NOTHING
    # Not a Zendesk delivery at all: 400.
    for raw in (b"not json", b"[1, 2]", b"42", b"{}", dumps({"hello": "world"})):
        refused(post_zendesk(client, raw=raw), 400, raw)
    assert counts(engine) == NOTHING


# --------------------------------------------------------------------------- event webhooks


def test_event_webhooks_follow_a_ticket(client, engine):
    """ticket.created, then ticket.status_changed (the new status in event.current), then
    ticket.tags_changed: one ticket, three events, the latest state wins."""
    created = ago(days=1)
    answer(post_zendesk(client, ticket_event("ticket.created", "5158", created=created, tags=["SSO", "login"],
                                             priority="URGENT", organization_external_id="acme")), accepted=1)
    ticket = one(engine, TICKET, TICKET.c.id == "5158")
    assert (ticket["account_id"], ticket["status"], ticket["topic"], ticket["priority"], ticket["subject"]) == (
        "acme", "open", "SSO", "urgent", "SSO login fails")
    assert ticket["body"] == "We cannot log in with SSO since this morning."
    changed = ticket_event("ticket.status_changed", "5158", status="OPEN", created=created,
                           updated=created + timedelta(hours=2), event={"current": "PENDING", "previous": "OPEN"},
                           organization_external_id="acme")
    answer(post_zendesk(client, changed), accepted=1)
    answer(post_zendesk(client, changed), accepted=0, duplicates=1)  # Zendesk's retry of the same event
    assert one(engine, TICKET, TICKET.c.id == "5158")["status"] == "pending"
    answer(post_zendesk(client, ticket_event("ticket.tags_changed", "5158", status="PENDING", created=created,
                                             updated=created + timedelta(hours=3), tags=["billing"],
                                             event={"added": ["billing"], "removed": ["SSO", "login"]},
                                             organization_external_id="acme")), accepted=1)
    ticket = one(engine, TICKET, TICKET.c.id == "5158")
    assert (ticket["status"], ticket["topic"]) == ("pending", "billing")
    assert count(engine, EVENT, EVENT.c.source == "tickets") == 3
    assert all(r["properties"]["zendesk_organization_id"] == "8447346622462" for r in rows(engine, EVENT))


def test_other_event_types_store_nothing(client, engine):
    user_event = {"type": "zen:event-type:user.created", "detail": {"id": "1", "email": "x@y.co"}, "event": {},
                  "id": "u1", "time": zendesk_time(ago(minutes=1)), "account_id": 1}
    answer(post_zendesk(client, user_event), accepted=0)
    assert counts(engine) == NOTHING


@pytest.mark.parametrize("status, stored", [
    ("NEW", "new"), ("OPEN", "open"), ("PENDING", "pending"), ("HOLD", "hold"), ("SOLVED", "solved"),
    ("CLOSED", "closed"), ("DELETED", "closed"), ("spam", "closed"),
])
def test_statuses(client, engine, status, stored):
    answer(post_zendesk(client, ticket_event("ticket.created", "300", status=status, created=ago(hours=5),
                                             organization_external_id="acme")), accepted=1)
    ticket = one(engine, TICKET, TICKET.c.id == "300")
    assert ticket["status"] == stored
    props = one(engine, EVENT)["properties"]
    assert props.get("zendesk_status") == (status.lower() if status.lower() in ("deleted", "spam") else None)


@pytest.mark.parametrize("event_type", ["ticket.soft_deleted", "ticket.marked_as_spam",
                                        "ticket.permanently_deleted"])
def test_a_deleted_or_spam_ticket_stops_being_open_friction(client, engine, event_type):
    """An open urgent ticket of an account renewing soon is a renewal risk; once Zendesk
    deletes it or marks it as spam, it is no longer open: the risk closes at once (tickets are
    evaluated before the answer)."""
    renewal = (datetime.now(UTC) + timedelta(days=10)).date().isoformat()
    answer(post_v1(client, "/v1/group", group_call("acme", {"name": "Acme", "arr": 60000,
                                                            "renewal_date": renewal})), accepted=1)
    created = ago(hours=6)
    answer(post_zendesk(client, ticket_event("ticket.created", "400", created=created, priority="URGENT",
                                             organization_external_id="acme")), accepted=1)
    risks = live_stalls(engine, "acme", "renewal_risk")
    assert len(risks) == 1 and "urgent" in risks[0]["detail"], rows(engine, STALL)
    # The event's detail still says OPEN: the event type decides.
    answer(post_zendesk(client, ticket_event(event_type, "400", created=created, priority="URGENT",
                                             at=ago(minutes=1), organization_external_id="acme")), accepted=1)
    assert one(engine, TICKET, TICKET.c.id == "400")["status"] == "closed"
    assert live_stalls(engine, "acme", "renewal_risk") == []


def test_ticket_spike_through_zendesk_is_evaluated_at_once(client, engine):
    answer(post_v1(client, "/v1/group", group_call("acme", {"name": "Acme", "arr": 50000})), accepted=1)
    for n, days in enumerate((5, 3, 1)):
        answer(post_zendesk(client, raw=rendered(**{
            "ticket.id": f"50{n}", "ticket.tags": "sso", "ticket.organization.external_id": "acme",
            "ticket.priority": "Normal", "ticket.created_at_with_timestamp": minute(ago(days=days))})), accepted=1)
    assert len(live_stalls(engine, "acme", "ticket_spike")) == 1


# --------------------------------------------------------------------------- signature


def test_signature(client, engine):
    body = rendered(**{"ticket.id": "600", "ticket.organization.external_id": "acme",
                       "ticket.created_at_with_timestamp": minute(ago(hours=1))})
    stamp = zendesk_timestamp()
    good = zendesk_signature(body, stamp)
    for bad in ("", "nope", good[:-2], zendesk_signature(body, stamp, "other-secret"),
                zendesk_signature(body + b" ", stamp), zendesk_signature(body, zendesk_timestamp(ago(seconds=1))),
                base64.b64encode(hmac.new(ZENDESK_SECRET.encode(), body, hashlib.sha256).digest()).decode(),
                hmac.new(ZENDESK_SECRET.encode(), stamp.encode() + body, hashlib.sha256).hexdigest()):
        refused(post_zendesk(client, raw=body, timestamp=stamp, signature=bad), 401, bad)
    refused(post_zendesk(client, raw=body, signature=None), 401)  # no signature header
    refused(client.post("/ingest/zendesk", content=body, headers={"X-Zendesk-Webhook-Signature": good}), 401)
    refused(post_zendesk(client, raw=body + b" ", timestamp=stamp, signature=good), 401)  # altered after signing
    refused(post_zendesk(client, raw=b"not json", signature="bm9wZQ=="), 401)  # verified before parsed
    assert counts(engine) == NOTHING
    answer(post_zendesk(client, raw=body, timestamp=stamp, signature=good), accepted=1)


def test_stale_or_future_timestamp_is_refused(client, engine):
    """A signed request replayed more than 5 minutes later is refused, as is one dated ahead;
    within the tolerance the same request is a duplicate."""
    body = rendered(**{"ticket.id": "700", "ticket.organization.external_id": "acme",
                       "ticket.created_at_with_timestamp": minute(ago(hours=1))})
    for at in (ago(minutes=6), ago(days=2), datetime.now(UTC) + timedelta(minutes=6)):
        refused(post_zendesk(client, raw=body, timestamp=zendesk_timestamp(at)), 401, at)
    refused(post_zendesk(client, raw=body, timestamp="yesterday"), 401)
    assert counts(engine) == NOTHING
    answer(post_zendesk(client, raw=body, timestamp=zendesk_timestamp(ago(minutes=4))), accepted=1)
    answer(post_zendesk(client, raw=body, timestamp=str(int(time.time()))), accepted=0, duplicates=1)


def test_unset_secret_answers_401(settings, engine):
    body = rendered(**{"ticket.id": "800", "ticket.organization.external_id": "acme",
                       "ticket.created_at_with_timestamp": minute(ago(hours=1))})
    unset = settings.model_copy(update={"zendesk_webhook_secret": None})
    with LiveServer(create_app(unset, engine=engine)) as live, httpx.Client(base_url=live.url, timeout=30) as c:
        refused(post_zendesk(c, raw=body), 401)
    assert counts(engine) == NOTHING


# --------------------------------------------------------------------------- property test

SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(2 ** 70), max_value=2 ** 70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
           | st.sampled_from(["", "-", "{{ticket.id}}", "OPEN", "spam", "deleted", "On-hold", "2013-12-12T05:35Z",
                              "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-05:00", "2024/05/01 10:00:00 +0200",
                              "2024-05-01 10:00:00 UTC", "99999999999", "a\x00b", "x" * 300, "jane@acme.com",
                              "zen:event-type:ticket.created", "zen:event-type:ticket.status_changed",
                              "zen:event-type:ticket.soft_deleted", "zen:event-type:user.created"]))
KEYS = st.sampled_from(["id", "status", "subject", "title", "description", "tags", "priority", "requester_email",
                        "organization_external_id", "account_id", "created_at", "updated_at", "topic", "ticket",
                        "type", "detail", "event", "current", "time"])
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS | st.text(max_size=6),
                                                                                         inner, max_size=8),
                    max_leaves=30)


@st.composite
def zendesk_like(draw):
    """A body near one of the two shapes, with odd values."""
    ticket = draw(st.fixed_dictionaries({}, optional={
        "id": st.integers(0, 10 ** 20) | SCALARS, "status": SCALARS, "subject": SCALARS, "description": SCALARS,
        "tags": SCALARS | st.lists(SCALARS, max_size=3), "priority": SCALARS, "requester_email": SCALARS,
        "organization_external_id": SCALARS, "created_at": SCALARS, "updated_at": SCALARS, "extra": JSON}))
    shape = draw(st.integers(0, 3))
    if shape == 0:
        return ticket
    if shape == 1:
        return {"ticket": ticket}
    return {"type": draw(SCALARS), "detail": ticket if shape == 2 else draw(JSON),
            "event": draw(st.fixed_dictionaries({}, optional={"current": SCALARS}) | JSON), "time": draw(SCALARS)}


FUZZ = hypothesis_settings(max_examples=examples(400), deadline=None,
                           suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(payload=zendesk_like() | JSON)
def test_any_signed_json_body_never_gets_a_5xx(client, engine, payload):
    before = counts(engine)
    response = post_zendesk(client, raw=json.dumps(payload).encode())
    # 200, 400 (not a Zendesk body), or the 4xx of a delivery whose every item was rejected.
    assert response.status_code == 200 or 400 <= response.status_code < 500, response.text
    assert response.status_code not in (401, 413), response.text
    body = response.json()
    if response.status_code == 200:
        assert body["accepted"] + body["duplicates"] + len(body["rejected"]) <= 1
        assert all(isinstance(r["error"], str) for r in body["rejected"])
    else:
        assert counts(engine) == before
