"""What the ingest routes answer (DESIGN.md "Ingest answers"): every error body carries `code`
and `message` besides `error` (Segment-compatible clients read them: RudderStack's Python SDK
raises KeyError('code') without), and a delivery whose every message is refused is a 400 that
still lists them, so the sender's webhook log shows the failure. Duplicates are not refusals."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.helpers import (all_rejected, dumps, post_segment_webhook, post_stripe, post_tickets, post_v1, track)

CODES = {400: "bad_request", 401: "unauthorized", 413: "too_large"}


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == CODES[status] and body["message"] == body["error"] and body["error"], body
    return body


@pytest.mark.parametrize("post", [
    lambda c: post_v1(c, "/v1/batch", {"batch": []}, auth="Basic d3Jvbmc6"),  # user name "wrong"
    lambda c: post_v1(c, "/v1/track", track("A"), auth=None),
    lambda c: post_segment_webhook(c, track("A"), signature="0" * 40),
    lambda c: post_stripe(c, raw=b"{}", signature="t=1,v1=" + "0" * 64),
    lambda c: post_tickets(c, raw=b"[]", signature="sha256=" + "0" * 64),
], ids=["v1-batch", "v1-track", "segment", "stripe", "tickets"])
def test_401_bodies_carry_code_and_message(client, post):
    _error(post(client), 401)


def test_400_and_413_bodies_carry_code_and_message(client):
    _error(post_v1(client, "/v1/batch", raw=b"not json"), 400)
    _error(post_segment_webhook(client, raw=b"[1, 2"), 400)
    _error(post_v1(client, "/v1/batch", raw=dumps({"batch": [track("A", properties={"x": "y" * 600_000})]})), 413)


def test_every_message_refused_is_a_400_listing_them(client):
    body = all_rejected(post_v1(client, "/v1/batch", {"batch": [{"type": "track", "userId": "u1"},
                                                               {"type": "nope", "userId": "u1"}]}), rejected=2)
    assert [r["index"] for r in body["rejected"]] == [0, 1]
    assert "every message was rejected (2)" in body["message"]
    all_rejected(post_tickets(client, [{"id": "T-1"}]), rejected=1)  # no status, no account


def test_some_stored_some_refused_stays_200(client):
    response = post_v1(client, "/v1/batch", {"batch": [track("A", message_id="kept", group="acme"),
                                                       {"type": "track", "userId": "u1"}]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["success"], body["accepted"], [r["index"] for r in body["rejected"]]) == (True, 1, [1])


def test_duplicates_are_not_refusals(client):
    batch = {"batch": [track("A", message_id="dup-1", group="acme")]}
    assert post_v1(client, "/v1/batch", batch).status_code == 200
    again = post_v1(client, "/v1/batch", batch)  # every message a duplicate
    assert again.status_code == 200 and again.json()["duplicates"] == 1
    mixed = post_v1(client, "/v1/batch", {"batch": [*batch["batch"], {"type": "track", "userId": "u1"}]})
    assert mixed.status_code == 200, mixed.text  # a duplicate and a refusal: not every message refused
    assert (mixed.json()["duplicates"], len(mixed.json()["rejected"])) == (1, 1)


def test_an_ignored_stripe_event_type_is_a_200(client):
    event = {"id": "evt_ignored", "object": "event", "type": "charge.succeeded", "created": int(time.time()),
             "data": {"object": {"id": "ch_1", "object": "charge"}}}
    response = post_stripe(client, event)
    assert response.status_code == 200 and response.json() == {"accepted": 0, "duplicates": 0, "rejected": []}
