"""Hostile input through the real ingest routes: one bad message never stops the product.

Times outside the sane window (bot/ingest/timewindow.py) are clamped or dropped and reported
as tracking issues; a message nested too deep or one the database refuses is rejected with
its index while the rest of its batch is stored; a NUL in a ticket's text keeps the ticket.
"""

from __future__ import annotations

import logging
import time
from datetime import date, datetime, timedelta, timezone

import httpx
from hypothesis import HealthCheck, example, given, settings, strategies as st
from sqlalchemy import text

from bot.ingest.timewindow import EARLIEST, renewal_window
from bot.scan import scan
from storage.db import make_engine
from tests.helpers import (
    EVENT, TICKET, TRACKING, account, ago, all_rejected, as_utc, count, events_by_message, group_call, iso, one,
    post_segment_webhook, post_stripe, post_tickets, post_v1, rows, track, utc_now,
)

UTC = timezone.utc
YEAR_9999 = 253402300799  # 9999-12-31T23:59:59Z in unix seconds


def answer(response: httpx.Response, *, accepted: int, rejected: int = 0) -> dict:
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], len(body["rejected"])) == (accepted, rejected), body
    return body


def time_issues(engine) -> dict[tuple[str, str], dict]:
    return {(r["event_name"], r["property"]): r
            for r in rows(engine, TRACKING, TRACKING.c.kind == "time_out_of_window")}


def nested(levels: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


# --------------------------------------------------------------------------- the time window


def test_year_one_renewal_is_dropped_and_reported_and_every_later_scan_works(client, engine, rules):
    answer(post_v1(client, "/v1/group", group_call("acme", {"name": "Acme", "renewal_date": "0001-01-01"})),
           accepted=1)
    acme = account(engine, "acme")
    assert (acme["name"], acme["renewal_date"]) == ("Acme", None)  # the rest of the message is stored
    issue = time_issues(engine)[("group", "renewal_date")]
    assert issue["count"] == 1 and "0001-01-01" in issue["detail"] and "not stored" in issue["detail"]
    # Dates inside the window stay facts; a later bad one leaves the good one in place.
    soon = (utc_now() + timedelta(days=90)).date()
    answer(post_v1(client, "/v1/group", group_call("acme", {"renewal_date": soon.isoformat()})), accepted=1)
    answer(post_v1(client, "/v1/group", group_call("acme", {"renewal_date": "9999-12-31"})), accepted=1)
    assert account(engine, "acme")["renewal_date"] == soon
    assert time_issues(engine)[("group", "renewal_date")]["count"] == 2
    assert scan(engine, rules).failed == 0


def test_event_times_outside_the_window_are_stored_as_received_and_reported(client, engine):
    future_skew = utc_now() + timedelta(minutes=1)
    batch = [
        track("Year One", message_id="y1", group="acme", timestamp="0001-01-01T00:00:00Z"),
        track("Nineties", message_id="y1999", group="acme", timestamp="1999-12-31T23:59:59Z"),
        track("Far Future", message_id="y9999", group="acme", timestamp="9999-12-31T23:59:59Z"),
        track("Skewed", message_id="skew", group="acme", at=future_skew),
        track("Fine", message_id="fine", group="acme", timestamp="2000-01-01T00:00:00Z"),
    ]
    answer(post_v1(client, "/v1/batch", {"batch": batch}), accepted=5)
    stored = events_by_message(engine)
    for message_id in ("y1", "y1999", "y9999", "skew"):
        assert as_utc(stored[message_id]["occurred_at"]) == as_utc(stored[message_id]["received_at"]), message_id
    assert as_utc(stored["fine"]["occurred_at"]) == EARLIEST
    # A client clock a minute fast is clamped silently; the rest are tracking issues.
    assert set(time_issues(engine)) == {("Year One", "timestamp"), ("Nineties", "timestamp"),
                                        ("Far Future", "timestamp")}
    # The account's first activity is the earliest sane time, not year 1 ("739,953 days" in Slack).
    assert as_utc(account(engine, "acme")["first_seen_at"]) == EARLIEST


def test_stripe_event_from_year_9999_is_clamped_and_its_renewal_dropped(client, engine):
    event = {
        "id": "evt_9999", "object": "event", "type": "customer.subscription.updated", "created": YEAR_9999,
        "data": {"object": {
            "id": "sub_1", "object": "subscription", "customer": "cus_1", "status": "active", "currency": "usd",
            "cancel_at_period_end": False, "current_period_end": YEAR_9999, "trial_end": YEAR_9999,
            "metadata": {"account_id": "acme"},
            "items": {"object": "list", "data": [{"id": "si_1", "quantity": 2, "price": {
                "id": "price_pro", "unit_amount": 10000, "currency": "usd", "recurring": {"interval": "month"}}}]},
        }},
    }
    answer(post_stripe(client, event), accepted=1)
    stored = events_by_message(engine, "stripe")["evt_9999"]
    assert as_utc(stored["occurred_at"]) == as_utc(stored["received_at"])
    acme = account(engine, "acme")
    assert (acme["status"], acme["arr"], acme["renewal_date"]) == ("active", 2400.0, None)
    assert set(time_issues(engine)) == {("customer.subscription.updated", "created"),
                                        ("customer.subscription.updated", "renewal_date")}


def test_ticket_updated_in_year_9999_can_still_close(client, engine):
    created = ago(hours=3)
    ticket = {"id": "T-1", "account_id": "acme", "status": "open", "subject": "Help", "created_at": iso(created)}
    answer(post_tickets(client, {**ticket, "updated_at": "9999-12-31T23:59:59Z"}), accepted=1)
    answer(post_tickets(client, {**ticket, "status": "closed", "updated_at": iso(utc_now())}), accepted=1)
    stored = one(engine, TICKET, TICKET.c.id == "T-1")
    assert stored["status"] == "closed"
    assert as_utc(stored["created_at"]) == created
    # A ticket created in year 1 (no updated_at) is reported once, as its created_at.
    answer(post_tickets(client, {"id": "T-2", "account_id": "acme", "status": "open",
                                 "created_at": "0001-01-01T00:00:00Z"}), accepted=1)
    assert as_utc(one(engine, TICKET, TICKET.c.id == "T-2")["created_at"]).year == utc_now().year
    assert set(time_issues(engine)) == {("Ticket open", "updated_at"), ("Ticket open", "created_at")}


_OFFSETS = st.sampled_from([UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12))])


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(moment=st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59), timezones=_OFFSETS),
       renewal=st.dates(), created=st.integers(-2 ** 40, 2 ** 40))
@example(moment=datetime(1, 1, 1, tzinfo=UTC), renewal=date(1, 1, 1), created=0)
@example(moment=datetime(9999, 12, 31, 23, 59, tzinfo=UTC), renewal=date(9999, 12, 31), created=YEAR_9999)
def test_any_date_is_stored_inside_the_window_and_scans_never_fail(client, engine, rules, moment, renewal, created):
    tag = f"{moment.isoformat()}|{renewal}|{created}"
    batch = [group_call("acme", {"renewal_date": renewal.isoformat()}, message_id=f"g{tag}"),
             track("Signed Up", message_id=f"t{tag}", group="acme", properties={"plan": "pro"},
                   timestamp=moment.isoformat())]
    body = post_v1(client, "/v1/batch", {"batch": batch}).json()
    # Year 1 at +14:00 is before year 1 in UTC: not a time at all, the one refusal allowed.
    assert all("timestamp" in r["error"] and r["index"] == 1 for r in body["rejected"]), body
    event = {"id": f"evt{tag}"[:255], "object": "event", "type": "invoice.payment_failed", "created": created,
             "data": {"object": {"id": "in_1", "customer": "cus_1", "subscription_details": {
                 "metadata": {"account_id": "acme"}}}}}
    response = post_stripe(client, event)
    assert response.status_code in (200, 400), response.text  # 400: `created` no time at all
    received = utc_now()
    for stored in rows(engine, EVENT):
        assert EARLIEST <= as_utc(stored["occurred_at"]) <= as_utc(stored["received_at"]) <= received
    low, high = renewal_window(received)
    renewal_date = account(engine, "acme")["renewal_date"]
    assert renewal_date is None or low - timedelta(days=1) <= renewal_date <= high
    assert scan(engine, rules).failed == 0


# --------------------------------------------------------------------------- nesting, NUL, refusals


def test_a_deeply_nested_message_is_rejected_alone(client, engine):
    batch = [track("A", message_id="ok-1"),
             track("A", message_id="deep", properties={"p": nested(300)}),
             track("A", message_id="ok-2", properties={"p": nested(30)}),
             {"type": "identify", "userId": "u1", "context": nested(400)}]  # deep outside properties, no id
    body = answer(post_v1(client, "/v1/batch", {"batch": batch}), accepted=2, rejected=2)
    assert [r["index"] for r in body["rejected"]] == [1, 3]
    assert all("nested deeper than" in r["error"] for r in body["rejected"])
    assert set(events_by_message(engine)) == {"ok-1", "ok-2"}
    body = all_rejected(post_segment_webhook(client, track("A", message_id="deep-2", properties=nested(200))),
                        rejected=1)
    assert body["rejected"][0]["index"] == 0


def test_nul_in_a_ticket_body_keeps_the_ticket(client, engine):
    created = ago(hours=2)
    answer(post_tickets(client, [
        {"id": "T-1", "account_id": "acme", "status": "open", "created_at": iso(created),
         "subject": "Login\x00broken", "body": "It says\x00 error", "note": "raw\x00"},
        {"id": "T-2", "account_id": "acme", "status": "open", "created_at": iso(created), "topic": "sso\x00"},
    ]), accepted=1, rejected=1)
    stored = one(engine, TICKET, TICKET.c.id == "T-1")
    assert (stored["subject"], stored["body"]) == ("Login\ufffdbroken", "It says\ufffd error")


def _refuse_message_id(engine, message_id: str) -> None:
    """Make the database itself refuse one message id, as it would a value it cannot hold."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text(f"CREATE TRIGGER refuse BEFORE INSERT ON event WHEN NEW.message_id = '{message_id}' "
                              "BEGIN SELECT RAISE(ABORT, 'refused'); END"))
        else:
            conn.execute(text(f"ALTER TABLE event ADD CONSTRAINT refuse CHECK (message_id <> '{message_id}')"))


def test_a_message_the_database_refuses_is_rejected_alone_and_never_logged(client, engine, caplog):
    _refuse_message_id(engine, "poison")
    batch = [group_call("acme", {"name": "Acme"}, message_id="g1"),
             track("A", message_id="poison", group="acme", properties={"email": "jane@customer.com"}),
             track("A", message_id="t2", user="u1")]  # resolved through g1's user link, stored before it
    with caplog.at_level(logging.INFO):
        body = answer(post_v1(client, "/v1/batch", {"batch": batch}), accepted=2, rejected=1)
    assert body["rejected"][0]["index"] == 1
    assert body["rejected"][0]["error"].startswith("the database refused this message (IntegrityError")
    stored = events_by_message(engine)
    assert set(stored) == {"g1", "t2"} and stored["t2"]["account_id"] == "acme"
    assert "jane@customer.com" not in caplog.text and "poison" not in caplog.text
    # A redelivery of the whole batch: duplicates and the same refusal, nothing stored twice.
    body = post_v1(client, "/v1/batch", {"batch": batch}).json()
    assert (body["accepted"], body["duplicates"], [r["index"] for r in body["rejected"]]) == (0, 2, [1])
    assert count(engine, EVENT) == 2


def test_sql_errors_never_carry_their_parameters(db_url):
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT * FROM no_such_table WHERE x = :secret"), {"secret": "jane@customer.com"})
    except Exception as exc:  # noqa: BLE001 - any database error will do
        assert "jane@customer.com" not in str(exc) and "hidden" in str(exc)
    else:
        raise AssertionError("the query should have failed")
    finally:
        engine.dispose()


def test_stripe_signature_time_is_not_the_event_time(client, engine):
    """The window clamps `created`, never the signature's own (recent) timestamp check."""
    event = {"id": "evt_old", "object": "event", "type": "invoice.paid", "created": 0,
             "data": {"object": {"id": "in_1", "customer": "cus_1"}}}
    answer(post_stripe(client, event, timestamp=time.time()), accepted=1)
    assert set(time_issues(engine)) == {("invoice.paid", "created")}
