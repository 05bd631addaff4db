"""RudderStack's own Python SDK (rudder-sdk-python) against the real server.

The SDK posts `/v1/batch` with the write key as HTTP Basic user name (rudderstack/analytics/
request.py) and, on any non-200 answer, reads `code` and `message` from the JSON error body:
`APIError(res.status_code, payload['code'], payload['message'])`. A body without them raised
`KeyError('code')` inside its backoff loop, so the SDK retried a 401 eleven times and its
`on_error` callback never learnt why. Its consumer treats a 4xx other than 429 as fatal (no
retry): these tests show the callback gets the reason once.
"""

from __future__ import annotations

import time

import pytest
import rudderstack.analytics.client as rudder

from tests.conftest import WRITE_KEY
from tests.helpers import EVENT, count, events_by_message


def _client(server, key: str, errors: list) -> rudder.Client:
    return rudder.Client(write_key=key, host=server.url, gzip=True, upload_interval=0.05, max_retries=3,
                         on_error=lambda exc, batch: errors.append((exc, len(batch))))


def test_rudderstack_sdk_delivers(server, engine):
    errors: list = []
    client = _client(server, WRITE_KEY, errors)
    try:
        ids = [client.track(f"u-{i}", "Button Clicked", {"n": i}, context={"groupId": "acme"})[1]["messageId"]
               for i in range(30)]
        client.flush()
    finally:
        client.join()
    assert errors == []
    stored = events_by_message(engine)
    assert all(stored[i]["account_id"] == "acme" for i in ids)
    assert count(engine, EVENT) == 30


def test_rudderstack_sdk_hears_why_a_key_is_refused(server, engine):
    errors: list = []
    client = _client(server, "not-the-key", errors)
    started = time.monotonic()
    try:
        client.track("u-1", "Button Clicked", {}, context={"groupId": "acme"})
        client.flush()
    finally:
        client.join()
    assert len(errors) == 1, errors  # fatal at once: no retries of a 401
    exc, size = errors[0]
    assert (exc.status, exc.code, size) == (401, "unauthorized", 1)
    assert "write key" in exc.message
    assert time.monotonic() - started < 5
    assert count(engine, EVENT) == 0


@pytest.mark.parametrize("gzip", [True, False])
def test_rudderstack_sdk_hears_a_rejected_batch(server, engine, gzip):
    """A delivery whose every message is rejected is a 400 the SDK reports, with the reason."""
    from rudderstack.analytics.request import APIError, post

    with pytest.raises(APIError) as caught:
        post(WRITE_KEY, host=server.url, gzip=gzip,
             batch=[{"type": "track", "userId": "u-1", "messageId": "m-1"}])  # no event name
    assert caught.value.status == 400
    assert caught.value.code == "rejected"
    assert "event" in caught.value.message
    assert count(engine, EVENT) == 0
