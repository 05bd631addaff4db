"""Clock-skew correction of Segment message times, as Segment documents it
(https://segment.com/docs/connections/spec/common/#timestamps): `timestamp = receivedAt -
(sentAt - originalTimestamp)`. Client libraries send the device's `timestamp` and `sentAt`
(per message, or once per batch: https://segment.com/docs/connections/sources/catalog/libraries/server/http-api/#batch);
a message forwarded by Segment (webhook destination) carries the corrected `timestamp` with
`originalTimestamp`, `sentAt` and `receivedAt`, and is taken as is."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.ingest import segment
from bot.ingest.records import MessageError
from tests.fuzz import examples
from tests.helpers import (TRACKING, ago, as_utc, count, events_by_message, iso, post_segment_webhook, post_v1, track,
                           utc_now)

FAST = timedelta(hours=3)  # the device's clock runs 3 hours ahead
CLOSE = timedelta(seconds=5)  # the request's own latency, on a loaded test machine


def _stored_at(engine, message_id: str) -> datetime:
    return as_utc(events_by_message(engine)[message_id]["occurred_at"])


def _ok(response: httpx.Response, accepted: int) -> None:
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == accepted, response.text


def test_a_batch_from_a_device_3_hours_fast_lands_at_the_right_time(client, engine):
    happened = ago(minutes=10)
    messages = [track("Project Created", message_id="skewed-1", at=happened + FAST, group="acme"),
                track("Invite Sent", message_id="skewed-2", at=happened + timedelta(minutes=1) + FAST, group="acme")]
    _ok(post_v1(client, "/v1/batch", {"batch": messages, "sentAt": iso(utc_now() + FAST)}), 2)
    assert abs(_stored_at(engine, "skewed-1") - happened) < CLOSE
    assert abs(_stored_at(engine, "skewed-2") - (happened + timedelta(minutes=1))) < CLOSE
    # Corrected, not clamped: nothing "in the future" to report.
    assert count(engine, TRACKING, TRACKING.c.kind == "time_out_of_window") == 0


def test_a_single_message_carries_its_own_sent_at(client, engine):
    happened = ago(hours=2)
    msg = track("Project Created", message_id="slow-clock", at=happened - FAST, group="acme",
                sentAt=iso(utc_now() - FAST))  # a clock 3 hours slow: the same correction the other way
    _ok(post_v1(client, "/v1/track", msg), 1)
    assert abs(_stored_at(engine, "slow-clock") - happened) < CLOSE


def test_without_sent_at_the_time_is_taken_as_sent(client, engine):
    happened = ago(hours=1)
    _ok(post_v1(client, "/v1/batch", {"batch": [track("Project Created", message_id="plain", at=happened,
                                                      group="acme")]}), 1)
    assert _stored_at(engine, "plain") == happened
    # A healthy clock: the offset is latency (under SENT_AT_SLACK) and the time stays exact.
    _ok(post_v1(client, "/v1/track", track("Invite Sent", message_id="healthy", at=happened, group="acme",
                                           sentAt=iso(utc_now()))), 1)
    assert _stored_at(engine, "healthy") == happened


def test_a_message_forwarded_by_segment_keeps_its_corrected_timestamp(client, engine):
    corrected = ago(hours=4)
    msg = track("Project Created", message_id="forwarded", at=corrected, group="acme",
                originalTimestamp=iso(corrected + FAST), sentAt=iso(corrected + FAST + timedelta(seconds=3)),
                receivedAt=iso(corrected + timedelta(seconds=3)))
    _ok(post_segment_webhook(client, msg), 1)
    assert _stored_at(engine, "forwarded") == corrected


def test_the_correction_comes_before_the_future_clamp():
    """A time still in the future after the correction is the window's to clamp (timewindow)."""
    now = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
    msg = {"type": "track", "userId": "u1", "event": "x", "timestamp": iso(now + FAST + timedelta(days=1)),
           "sentAt": iso(now + FAST)}
    ev = segment.parse_message(msg, kind=None, received_at=now)
    assert ev.occurred_at == now + timedelta(days=1)


@settings(max_examples=examples(400), deadline=None)
@given(sent_at=st.one_of(st.none(), st.text(max_size=40), st.integers(-2**63, 2**63 - 1), st.floats(), st.booleans(),
                         st.datetimes(timezones=st.just(timezone.utc)).map(lambda d: d.isoformat())),
       timestamp=st.datetimes(timezones=st.just(timezone.utc)).map(lambda d: d.isoformat()))
def test_any_sent_at_is_read_or_ignored_never_a_crash(sent_at, timestamp):
    """sentAt is the client's text: unreadable or out of range, the time is taken as sent."""
    now = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
    msg = {"type": "track", "userId": "u1", "event": "x", "timestamp": timestamp, "sentAt": sent_at}
    try:
        ev = segment.parse_message(msg, kind=None, received_at=now)
    except MessageError:
        raise AssertionError("a valid timestamp was refused because of sentAt") from None
    assert ev.occurred_at.tzinfo is not None
