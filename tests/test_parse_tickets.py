"""Helpdesk ticket webhooks: signature and parsing (bot/ingest/tickets.py)."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.ingest.records import BadRequest, IncomingEvent, MessageError, TicketUpdate, Unauthorized
from bot.ingest.tickets import parse_tickets, sign, verify_signature
from tests.fuzz import examples

SECRET = "tickets-secret"
BODY = b'{"id": 1}'

TICKET = {
    "id": "T-1001",
    "account_id": "acct_acme",
    "requester_email": "Jane@Acme.com",
    "status": "open",
    "topic": "integration",
    "subject": "Salesforce sync fails",
    "priority": "high",
    "created_at": "2024-05-20T09:30:00Z",
}


def body(value) -> bytes:
    return json.dumps(value).encode()


# --------------------------------------------------------------------------- signature


def test_sign_and_verify():
    header = sign(BODY, SECRET)
    assert header == "sha256=" + hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    verify_signature(BODY, header, SECRET)
    verify_signature(BODY, "  " + header.upper().replace("SHA256=", "sha256=") + " ", SECRET)
    verify_signature(BODY, "SHA256=" + header[7:], SECRET)


def test_wrong_secret_and_tampered_body():
    with pytest.raises(Unauthorized, match="does not match"):
        verify_signature(BODY, sign(BODY, "other"), SECRET)
    tampered = bytearray(BODY)
    tampered[3] ^= 0x20
    with pytest.raises(Unauthorized, match="does not match"):
        verify_signature(bytes(tampered), sign(BODY, SECRET), SECRET)


@pytest.mark.parametrize(
    "header, message",
    [
        (None, "missing"),
        ("", "missing"),
        (" ", "missing"),
        ("deadbeef", "malformed"),
        ("sha1=" + "0" * 40, "malformed"),
        ("sha256=" + "0" * 63, "malformed"),
        ("sha256=" + "g" * 64, "malformed"),
        ("sha256=" + "0" * 64 + ",sha256=" + "0" * 64, "malformed"),
        ("sha256=" + "0" * 64, "does not match"),
    ],
)
def test_bad_headers(header, message):
    with pytest.raises(Unauthorized, match=message):
        verify_signature(BODY, header, SECRET)


def test_no_secret_is_unauthorized():
    with pytest.raises(Unauthorized, match="not configured"):
        verify_signature(BODY, sign(BODY, ""), "")


@settings(max_examples=examples(300))
@given(header=st.one_of(st.none(), st.text(), st.text(alphabet="0123456789abcdef", max_size=70).map(lambda h: "sha256=" + h)), payload=st.binary(max_size=100))
def test_any_header_only_unauthorized(header, payload):
    with pytest.raises(Unauthorized):
        verify_signature(payload, header, SECRET)


# --------------------------------------------------------------------------- parsing


def test_single_ticket():
    [ev] = parse_tickets(body(TICKET))
    assert isinstance(ev, IncomingEvent)
    assert ev.source == "tickets"
    assert ev.kind == "ticket"
    assert ev.name == "Ticket open"
    assert ev.account_id == "acct_acme"
    assert ev.contact_id is None
    assert ev.requester_email == "jane@acme.com"
    assert ev.occurred_at == datetime(2024, 5, 20, 9, 30, tzinfo=timezone.utc)
    assert ev.ticket == TicketUpdate(
        id="T-1001",
        status="open",
        created_at=datetime(2024, 5, 20, 9, 30, tzinfo=timezone.utc),
        topic="integration",
        subject="Salesforce sync fails",
        priority="high",
        requester_email="jane@acme.com",
    )
    assert ev.message_id.startswith("T-1001:")
    assert len(ev.message_id) == len("T-1001:") + 64
    assert ev.properties["subject"] == "Salesforce sync fails"
    assert ev.properties["status"] == "open"
    json.dumps(ev.properties)


def test_three_body_shapes_are_equivalent():
    second = dict(TICKET, id=42, status="Pending", topic=None, tags=["billing", "urgent"])
    for payload in ([TICKET, second], {"tickets": [TICKET, second]}):
        results = parse_tickets(body(payload))
        assert [r.ticket.id for r in results] == ["T-1001", "42"]
        assert results[1].name == "Ticket pending"
        assert results[1].ticket.topic == "billing"
    assert parse_tickets(body(TICKET))[0].message_id == parse_tickets(body([TICKET]))[0].message_id


def test_redelivery_is_same_id_status_change_is_new():
    first = parse_tickets(body(TICKET))[0].message_id
    again = parse_tickets(json.dumps(TICKET, indent=2, sort_keys=True).encode())[0].message_id
    assert again == first  # canonical JSON: formatting and key order do not matter
    solved = parse_tickets(body(dict(TICKET, status="solved", updated_at="2024-05-21T10:00:00Z")))[0]
    assert solved.message_id != first
    assert solved.message_id.startswith("T-1001:")
    assert solved.occurred_at == datetime(2024, 5, 21, 10, tzinfo=timezone.utc)
    assert solved.ticket.created_at == datetime(2024, 5, 20, 9, 30, tzinfo=timezone.utc)


def test_timestamps_are_normalized_to_utc():
    ev = parse_tickets(body(dict(TICKET, created_at="2024-05-20T11:30:00+02:00")))[0]
    assert ev.occurred_at == datetime(2024, 5, 20, 9, 30, tzinfo=timezone.utc)
    assert ev.occurred_at.utcoffset() == timedelta(0)
    naive = parse_tickets(body(dict(TICKET, created_at="2024-05-20T09:30:00")))[0]
    assert naive.occurred_at == datetime(2024, 5, 20, 9, 30, tzinfo=timezone.utc)
    frac = parse_tickets(body(dict(TICKET, created_at="2024-05-20T09:30:00.123456Z")))[0]
    assert frac.occurred_at.microsecond == 123456


def test_requester_email_without_account():
    item = {k: v for k, v in TICKET.items() if k != "account_id"}
    ev = parse_tickets(body(item))[0]
    assert ev.account_id is None
    assert ev.requester_email == "jane@acme.com"
    assert ev.ticket.requester_email == "jane@acme.com"


def test_integer_ids_and_priority_become_strings():
    ev = parse_tickets(body(dict(TICKET, id=987654, account_id=12, priority=1)))[0]
    assert ev.ticket.id == "987654"
    assert ev.account_id == "12"
    assert ev.ticket.priority == "1"
    assert ev.message_id.startswith("987654:")


def test_properties_drop_huge_values():
    item = dict(TICKET, custom={"nested": {"deep": 1}}, description="x" * 5000, channel="email", tags=["a"] * 60)
    ev = parse_tickets(body(item))[0]
    assert ev.properties["channel"] == "email"
    assert "custom" not in ev.properties
    assert "description" not in ev.properties
    assert "tags" not in ev.properties
    assert ev.ticket.topic == "integration"  # topic wins over tags


@pytest.mark.parametrize(
    "change, error",
    [
        ({"id": None}, "id is required"),
        ({"id": ""}, "id is required"),
        ({"id": 1.5}, "id must be a string or an integer"),
        ({"id": True}, "id must be a string or an integer"),
        ({"id": "x" * 191}, "id is longer than 190"),
        ({"status": None}, "status is required"),
        ({"status": ""}, "status is required"),
        ({"status": 3}, "status must be a string"),
        ({"created_at": None}, "created_at is required"),
        ({"created_at": "yesterday"}, "created_at 'yesterday' is not an ISO 8601"),
        ({"created_at": 1716198600}, "created_at must be an ISO 8601 string"),
        ({"created_at": "2024-13-01T00:00:00Z"}, "not an ISO 8601"),
        ({"updated_at": "soon"}, "updated_at 'soon' is not an ISO 8601"),
        ({"account_id": None, "requester_email": None}, "account_id or requester_email is required"),
        ({"account_id": {"id": 1}}, "account_id must be a string or an integer"),
        ({"requester_email": "not-an-email"}, "is not an e-mail address"),
        ({"subject": "s" * 1001}, "subject is longer than 1000 characters"),
        ({"subject": ["list"]}, "subject must be a string"),
        ({"topic": 5}, "topic must be a string"),
        ({"topic": None, "tags": "billing"}, "tags must be a list of strings"),
        ({"topic": None, "tags": ["ok", 3]}, "tags must be a list of strings"),
    ],
)
def test_invalid_items_become_message_errors_in_place(change, error):
    bad = dict(TICKET, **change)
    results = parse_tickets(body([TICKET, bad, dict(TICKET, id="T-3")]))
    assert len(results) == 3
    assert isinstance(results[0], IncomingEvent)
    assert isinstance(results[1], MessageError)
    assert error in str(results[1])
    assert isinstance(results[2], IncomingEvent)


def test_subject_at_limit_is_kept_whole():
    ev = parse_tickets(body(dict(TICKET, subject="s" * 1000)))[0]
    assert ev.ticket.subject == "s" * 1000


def test_non_object_items_in_a_batch():
    results = parse_tickets(body([TICKET, 5, "x", None]))
    assert isinstance(results[0], IncomingEvent)
    assert all(isinstance(r, MessageError) for r in results[1:])
    assert "must be a JSON object" in str(results[1])


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"\x00\x01", "not valid JSON"),
        (b"[]", "no tickets"),
        (b'{"tickets": []}', "no tickets"),
        (b"5", "must be a ticket object"),
        (b'"ticket"', "must be a ticket object"),
        (b"null", "must be a ticket object"),
        (b"[1, 2]", "must contain ticket objects"),
        (b"[[]]", "must contain ticket objects"),
    ],
)
def test_bad_bodies(raw, message):
    with pytest.raises(BadRequest, match=message):
        parse_tickets(raw)


def test_envelope_with_non_list_tickets_is_a_single_ticket():
    # {"tickets": "x"} is not an envelope; as a ticket it misses its fields.
    [result] = parse_tickets(b'{"tickets": "x"}')
    assert isinstance(result, MessageError)


def _check(raw: bytes) -> None:
    try:
        results = parse_tickets(raw)
    except BadRequest:
        return
    assert isinstance(results, list) and results
    for r in results:
        assert isinstance(r, (IncomingEvent, MessageError))
        if isinstance(r, IncomingEvent):
            assert len(r.message_id) <= 255
            assert r.occurred_at.tzinfo is not None
            assert r.ticket is not None and r.ticket.created_at.tzinfo is not None
            assert r.account_id or r.requester_email
            json.dumps(r.properties)


@settings(max_examples=examples(300))
@given(st.binary(max_size=300))
def test_any_bytes(raw):
    _check(raw)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)
ticket_keys = st.sampled_from(
    ["id", "account_id", "requester_email", "status", "topic", "tags", "subject", "priority", "created_at", "updated_at", "tickets"]
)
field_values = st.one_of(
    json_values,
    st.sampled_from(["2024-05-20T09:30:00Z", "2024-05-20", "0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00", "a@b.co"]),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.emails(),
)
ticket_like = st.dictionaries(ticket_keys, field_values, max_size=10)


@settings(max_examples=examples(300), suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(json_values, ticket_like, st.lists(st.one_of(ticket_like, json_values), max_size=5), st.builds(lambda t: {"tickets": t}, st.lists(ticket_like, max_size=4))))
def test_any_json_value(value):
    _check(json.dumps(value).encode())


@settings(max_examples=examples(200))
@given(
    ticket_id=st.one_of(st.integers(min_value=0, max_value=2**53), st.text(min_size=1, max_size=190).filter(str.strip)),
    status=st.text(min_size=1, max_size=64).filter(lambda s: s.strip() and len(s.strip().lower()) <= 64),
    created=st.datetimes(
        min_value=datetime(1970, 1, 2),
        max_value=datetime(2100, 1, 1),
        timezones=st.integers(-23 * 60, 23 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes))),
    ),
    subject=st.text(max_size=1000),
)
def test_generated_valid_tickets_are_accepted(ticket_id, status, created, subject):
    item = {"id": ticket_id, "account_id": "a", "status": status, "created_at": created.isoformat(), "subject": subject}
    [ev] = parse_tickets(body(item))
    assert isinstance(ev, IncomingEvent), ev
    assert ev.occurred_at == created
    assert ev.ticket.status == status.strip().lower()
    assert ev.ticket.id == str(ticket_id).strip()
