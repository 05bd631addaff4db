"""The Segment tracking API routes (/v1/*) through the real HTTP server: Segment's own
library, auth, answers and limits, idempotency (also under concurrency), journey state."""

from __future__ import annotations

import contextlib
import random
import threading
from datetime import timedelta

import httpx
import pytest
import segment.analytics as analytics

from bot.app import create_app
from storage.db import make_engine
from tests.conftest import WRITE_KEY, LiveServer
from tests.helpers import (
    ACCOUNT, CONTACT, EVENT, TRACKING, account, ago, all_rejected, as_utc, basic, count, counts, dumps, events_by_message, gz,
    group_call, identify_call, one, post_segment_webhook, post_v1, rows, track, utc_now,
)

SIGNED_UP, PROJECT, INTEGRATION, INVITE, ACTIVATION = (
    "Signed Up", "Project Created", "Integration Connected", "Invite Sent", "Report Shared")
NOTHING = {"event": 0, "account": 0, "contact": 0, "ticket": 0}


def ok(response: httpx.Response, *, accepted: int, duplicates: int = 0, rejected: int = 0) -> dict:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    assert (body["accepted"], body["duplicates"], len(body["rejected"])) == (accepted, duplicates, rejected), body
    return body


def refused(response: httpx.Response, status: int, context: object = "") -> dict:
    assert response.status_code == status, f"{context}: {response.status_code} {response.text}"
    body = response.json()
    assert isinstance(body.get("error"), str) and body["error"]
    # Segment-compatible clients read `code` and `message` (RudderStack's SDKs raise without them).
    assert isinstance(body.get("code"), str) and body["code"] and body["message"] == body["error"], body
    return body


# --------------------------------------------------------------------------- Segment's own library


def _library_calls(client: analytics.Client) -> dict:
    t0, t1, t2 = ago(days=3), ago(days=2, hours=20), ago(days=1)
    sent = {}
    _, sent["identify"] = client.identify("u-ada", {"email": "Ada@Acme.com", "name": "Ada Lovelace"})
    _, sent["group_acme"] = client.group("u-ada", "acme", {
        "name": "Acme Inc", "arr": 50000, "owner_email": "CSM@Vendor.com", "plan": "enterprise",
        "website": "https://www.acme.com/pricing", "employees": 120})
    _, sent["group_globex"] = client.group("u-bob", "globex", {"name": "Globex", "mrr": 250, "plan": "starter"})
    _, sent["signup"] = client.track("u-ada", SIGNED_UP, {"plan": "enterprise"}, context={"groupId": "acme"},
                                     timestamp=t0)
    _, sent["project"] = client.track("u-ada", PROJECT, {"name": "p1"}, context={"groupId": "acme"}, timestamp=t1)
    _, sent["globex_signup"] = client.track("u-bob", SIGNED_UP, {"plan": "starter", "account_id": "globex"},
                                            timestamp=t2)
    _, sent["page"] = client.page("u-ada", name="Dashboard", properties={"account_id": "acme"}, timestamp=t1)
    return {"t0": t0, "t1": t1, "t2": t2, "sent": sent}


def _check_library_delivery(engine, calls: dict) -> None:
    t0, t1, t2, sent = calls["t0"], calls["t1"], calls["t2"], calls["sent"]
    events = events_by_message(engine)
    assert set(events) == {m["messageId"] for m in sent.values()}

    contact = one(engine, CONTACT, CONTACT.c.id == "u-ada")
    assert contact["email"] == "ada@acme.com"
    assert contact["name"] == "Ada Lovelace"
    assert contact["first_name"] == "Ada"
    assert contact["account_id"] == "acme"  # linked by the group call
    assert one(engine, CONTACT, CONTACT.c.id == "u-bob")["account_id"] == "globex"

    acme = account(engine, "acme")
    assert acme["name"] == "Acme Inc"
    assert acme["arr"] == 50000
    assert acme["owner_email"] == "csm@vendor.com"
    assert acme["plan"] == "enterprise"
    assert acme["domain"] == "acme.com"
    assert acme["employees"] == 120
    assert acme["track"] == "high_touch"

    globex = account(engine, "globex")
    assert globex["name"] == "Globex"
    assert globex["arr"] == 250 * 12
    assert globex["plan"] == "starter"
    assert globex["track"] == "self_serve"

    signup = events[sent["signup"]["messageId"]]
    assert (signup["kind"], signup["name"], signup["account_id"], signup["contact_id"]) == (
        "track", SIGNED_UP, "acme", "u-ada")
    assert as_utc(signup["occurred_at"]) == t0
    assert signup["properties"] == {"plan": "enterprise"}
    assert events[sent["project"]["messageId"]]["account_id"] == "acme"  # context.groupId
    globex_signup = events[sent["globex_signup"]["messageId"]]
    assert globex_signup["account_id"] == "globex"  # properties.account_id
    assert as_utc(globex_signup["occurred_at"]) == t2
    assert events[sent["page"]["messageId"]]["kind"] == "page"
    assert events[sent["page"]["messageId"]]["name"] == "Dashboard"
    assert events[sent["group_acme"]["messageId"]]["account_id"] == "acme"

    # The journey columns: signed up at t0, project at t1, now waiting on the integration.
    assert as_utc(acme["signup_at"]) == t0
    assert acme["steps_done"] == 2
    assert acme["waiting_step"] == INTEGRATION
    assert as_utc(acme["waiting_since"]) == t1
    assert as_utc(acme["stalled_at"]) == t1 + timedelta(hours=48)
    assert as_utc(acme["checkpoint_at"]) == t0 + timedelta(days=14)
    assert acme["activated_at"] is None
    assert acme["stage"] == "Onboarding"
    assert {k: as_utc(v) for k, v in acme["steps"].items()} == {SIGNED_UP: t0, PROJECT: t1}
    assert as_utc(acme["first_seen_at"]) == t0
    assert t0 <= as_utc(acme["last_seen_at"]) <= t1  # storage keeps it coarse (once a day)

    assert as_utc(globex["signup_at"]) == t2
    assert globex["waiting_step"] == PROJECT
    assert as_utc(globex["waiting_since"]) == t2
    assert count(engine, TRACKING) == 0  # every Signed Up carried its plan


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
def test_segment_library_sync_mode(server, engine, gzip):
    client = analytics.Client(write_key=WRITE_KEY, host=server.url, sync_mode=True, gzip=gzip)
    calls = _library_calls(client)  # sync mode raises APIError on any non-2xx answer
    _check_library_delivery(engine, calls)


def test_segment_library_batches_with_flush(server, engine):
    errors: list = []
    client = analytics.Client(write_key=WRITE_KEY, host=server.url, gzip=True, upload_interval=0.05,
                              upload_size=25, max_retries=1, on_error=lambda e, batch: errors.append(e))
    try:
        calls = _library_calls(client)
        ids = [client.track(f"u-{i}", "Button Clicked", {"n": i}, context={"groupId": "acme"})[1]["messageId"]
               for i in range(40)]
        client.flush()
    finally:
        client.join()
    assert errors == []
    stored = events_by_message(engine)
    assert all(stored[i]["account_id"] == "acme" and stored[i]["name"] == "Button Clicked" for i in ids)
    assert count(engine, EVENT) == 40 + len(calls["sent"])
    for i in ids:
        del stored[i]
    assert set(stored) == {m["messageId"] for m in calls["sent"].values()}


# --------------------------------------------------------------------------- auth


ROUTES = {
    "/v1/batch": {"batch": [track("Button Clicked", message_id="m-batch", group="acme")]},
    "/v1/track": track("Button Clicked", message_id="m-track", group="acme"),
    "/v1/identify": identify_call("u1", {"email": "a@acme.com"}, message_id="m-identify", group="acme"),
    "/v1/group": group_call("acme", {"name": "Acme"}, message_id="m-group"),
    "/v1/page": {"type": "page", "userId": "u1", "name": "Home", "messageId": "m-page",
                 "properties": {"account_id": "acme"}},
}


def test_auth_refusals_store_nothing(client, engine):
    for path, payload in ROUTES.items():
        refused(post_v1(client, path, payload, auth=None), 401, path)
        refused(post_v1(client, path, payload, auth=basic("wrong-key")), 401, path)
        refused(post_v1(client, path, payload, auth=basic("", WRITE_KEY)), 401, path)  # the key is the user name
        refused(post_v1(client, path, payload, auth="Basic !!!not-base64!!!"), 401, path)
        refused(post_v1(client, path, payload, auth=f"Bearer {WRITE_KEY}"), 401, path)
        refused(post_v1(client, path, {**payload, "writeKey": "wrong-key"}, auth=None), 401, path)
        refused(post_v1(client, path, payload, auth=None, gzip=True), 401, path)
        # A wrong key in the header is refused before the body is even parsed.
        refused(post_v1(client, path, raw=b"not json", auth=basic("wrong-key")), 401, path)
        refused(post_v1(client, path, raw=b"[1]", auth=basic("wrong-key")), 401, path)
    assert counts(engine) == NOTHING
    for path, payload in ROUTES.items():
        ok(post_v1(client, path, payload), accepted=1)
    assert count(engine, EVENT) == len(ROUTES)


def test_auth_accepted(client, engine):
    for path, payload in ROUTES.items():
        ok(post_v1(client, path, {**payload, "writeKey": WRITE_KEY}, auth=None), accepted=1)
        ok(post_v1(client, path, payload, auth=basic(WRITE_KEY, "any-password")), duplicates=1, accepted=0)
        ok(post_v1(client, path, payload, auth=basic(WRITE_KEY)), duplicates=1, accepted=0)
    assert count(engine, EVENT) == len(ROUTES)


def test_write_key_unset_refuses_everything(settings, engine):
    app = create_app(settings.model_copy(update={"write_key": None}), engine=engine)
    with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=30) as c:
        for path, payload in ROUTES.items():
            refused(post_v1(c, path, payload), 401)
            refused(post_v1(c, path, {**payload, "writeKey": WRITE_KEY}, auth=None), 401)
            refused(post_v1(c, path, {**payload, "writeKey": ""}, auth=basic("")), 401)
    assert counts(engine) == NOTHING


# --------------------------------------------------------------------------- answers


def test_success_answer_shape(client, engine):
    r = post_v1(client, "/v1/track", track("Button Clicked", message_id="m1", group="acme"))
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {"success": True, "accepted": 1, "duplicates": 0, "rejected": []}
    assert count(engine, EVENT) == 1


def test_not_a_message_is_400(client, engine):
    for path in ("/v1/batch", "/v1/track", "/v1/identify", "/v1/group", "/v1/page"):
        for raw in (b"not json", b"{\"batch\": [", b"", b"[]", b"[{\"type\": \"track\", \"userId\": \"u\"}]",
                    b"\"a string\"", b"42", b"null", b"true", b"\xff\xfe{}"):
            refused(post_v1(client, path, raw=raw), 400, (path, raw))
    for batch in ({"type": "track", "userId": "u", "event": "E"}, "x", 3, None):
        refused(post_v1(client, "/v1/batch", {"batch": batch}), 400, batch)
    assert counts(engine) == NOTHING


def test_bad_messages_rejected_others_stored(client, engine):
    good = [track("Button Clicked", message_id=f"good-{i}", group="acme", at=ago(hours=i)) for i in range(3)]
    batch = [
        good[0],
        {"type": "track", "event": "Button Clicked", "messageId": "bad-1"},  # no userId / anonymousId
        {"type": "track", "userId": "u1", "messageId": "bad-2", "properties": {}},  # track without event
        track("Button Clicked", message_id="bad-3", timestamp="yesterday at noon"),  # bad timestamp
        good[1],
        track("Button Clicked", message_id="bad-5", timestamp=1717000000),  # not an ISO string
        {"type": "bogus", "userId": "u1", "messageId": "bad-6"},
        "not an object",
        {**track("Button Clicked", message_id="bad-8"), "properties": ["not", "an", "object"]},
        {"type": "group", "userId": "u1", "messageId": "bad-9", "traits": {}},  # group without groupId
        track("Button Clicked", message_id="bad-10", userId={"id": 1}),
        {"type": "track", "anonymousId": "anon-1", "event": "Button Clicked", "messageId": "good-2-anon"},
        good[2],
    ]
    body = ok(post_v1(client, "/v1/batch", {"batch": batch}), accepted=4, rejected=9)
    assert [r["index"] for r in body["rejected"]] == [1, 2, 3, 5, 6, 7, 8, 9, 10]
    errors = {r["index"]: r["error"] for r in body["rejected"]}
    assert "userId" in errors[1]
    assert "event" in errors[2]
    assert "timestamp" in errors[3] and "timestamp" in errors[5]
    assert "properties" in errors[8]
    assert "groupId" in errors[9]
    assert set(events_by_message(engine)) == {"good-0", "good-1", "good-2", "good-2-anon"}
    anon = events_by_message(engine)["good-2-anon"]
    assert anon["contact_id"] is None and anon["account_id"] is None


def test_every_rejected_entry_names_index_and_error(client):
    batch = [track("A", message_id="a"), {"type": "track", "messageId": "b"}, track("C", message_id="c")]
    body = ok(post_v1(client, "/v1/batch", {"batch": batch}), accepted=2, rejected=1)
    assert body["rejected"] == [{"index": 1, "error": body["rejected"][0]["error"]}]
    assert isinstance(body["rejected"][0]["error"], str) and body["rejected"][0]["error"]


def test_single_route_bad_message_is_reported_not_stored(client, engine):
    for path, message, word in [
        ("/v1/track", identify_call("u1", {"email": "a@b.co"}, message_id="mismatch"), "type"),
        ("/v1/identify", track("Button Clicked", message_id="mismatch"), "type"),
        ("/v1/group", {"type": "page", "userId": "u1", "messageId": "mismatch"}, "type"),
        ("/v1/track", {"type": "track", "userId": "u1", "messageId": "mismatch"}, "event"),
        ("/v1/track", track("Button Clicked", message_id="mismatch", timestamp="not a time"), "timestamp"),
        ("/v1/track", {"type": "track", "event": "E", "messageId": "mismatch"}, "userId"),
    ]:
        body = all_rejected(post_v1(client, path, message), rejected=1)
        assert body["rejected"][0]["index"] == 0
        assert word in body["rejected"][0]["error"], (path, body)
    assert counts(engine) == NOTHING


def test_single_route_takes_type_from_route(client, engine):
    msg = {"userId": "u1", "event": "Button Clicked", "messageId": "typed-by-route", "context": {"groupId": "acme"}}
    ok(post_v1(client, "/v1/track", msg), accepted=1)
    row = events_by_message(engine)["typed-by-route"]
    assert (row["kind"], row["name"], row["account_id"]) == ("track", "Button Clicked", "acme")


def test_batch_level_context_applies_to_messages(client, engine):
    payload = {"batch": [track("Button Clicked", message_id="ctx-1"), track("Button Clicked", message_id="ctx-2",
                                                                            group="own")],
               "context": {"groupId": "batch-acct"}}
    ok(post_v1(client, "/v1/batch", payload), accepted=2)
    stored = events_by_message(engine)
    assert stored["ctx-1"]["account_id"] == "batch-acct"
    assert stored["ctx-2"]["account_id"] == "own"


def _batch_of_size(target: int, n: int = 20) -> dict:
    pad = "x" * (target // n)
    return {"batch": [track("Button Clicked", message_id=f"big-{i}", properties={"pad": pad}) for i in range(n)]}


def test_batch_over_500kb_is_413(client, engine):
    for target in (510 * 1024, 700 * 1024):
        payload = _batch_of_size(target)
        assert len(dumps(payload)) > 500 * 1024
        refused(post_v1(client, "/v1/batch", payload), 413, target)
        refused(post_v1(client, "/v1/batch", payload, gzip=True), 413, target)  # the limit is on the decoded body
    assert counts(engine) == NOTHING


def test_batch_just_under_500kb_is_accepted(client, engine):
    payload = _batch_of_size(480 * 1024)
    assert 470 * 1024 < len(dumps(payload)) < 500 * 1024
    ok(post_v1(client, "/v1/batch", payload, gzip=True), accepted=20)


def test_batch_event_count_limit(client, engine):
    def payload(n):
        return {"batch": [{"type": "track", "userId": "u", "event": "E", "messageId": f"n{i}"} for i in range(n)]}

    refused(post_v1(client, "/v1/batch", payload(2501)), 413)
    assert counts(engine) == NOTHING
    ok(post_v1(client, "/v1/batch", payload(2500)), accepted=2500)
    assert count(engine, EVENT) == 2500


def test_single_track_over_32kb_is_413(client, engine):
    big = track("Button Clicked", message_id="huge", properties={"pad": "x" * (33 * 1024)})
    refused(post_v1(client, "/v1/track", big), 413)
    refused(post_v1(client, "/v1/track", big, gzip=True), 413)
    assert counts(engine) == NOTHING
    ok(post_v1(client, "/v1/track", track("Button Clicked", properties={"pad": "x" * (31 * 1024)})), accepted=1)


def test_oversized_message_in_batch_is_rejected_alone(client, engine):
    batch = [track("A", message_id="small-0"), track("A", message_id="huge", properties={"pad": "x" * 33000}),
             track("A", message_id="small-2")]
    body = ok(post_v1(client, "/v1/batch", {"batch": batch}), accepted=2, rejected=1)
    assert body["rejected"][0]["index"] == 1
    assert set(events_by_message(engine)) == {"small-0", "small-2"}


def test_gzip_body_accepted(client, engine):
    payload = {"batch": [track("Button Clicked", message_id=f"gz-{i}", group="acme") for i in range(5)]}
    ok(post_v1(client, "/v1/batch", payload, gzip=True), accepted=5)
    ok(post_v1(client, "/v1/track", track("Button Clicked", message_id="gz-single"), gzip=True), accepted=1)
    r = post_v1(client, "/v1/track", raw=gz(dumps(track("Y", message_id="gz-caps"))),
                headers={"Content-Encoding": "GZIP"})
    ok(r, accepted=1)
    assert count(engine, EVENT) == 7


def test_invalid_gzip_is_400(client, engine):
    payload = dumps({"batch": [track("Button Clicked", message_id="gz-bad")]})
    compressed = gz(payload)
    for body in (payload, b"\x1f\x8b\x08\x00garbage", compressed[: len(compressed) // 2], compressed[:-8],
                 compressed[:-4] + b"\0\0\0\0"):
        refused(post_v1(client, "/v1/batch", raw=body, headers={"Content-Encoding": "gzip"}), 400)
    assert counts(engine) == NOTHING


def test_gzip_bomb_is_413(client, engine):
    bomb = gz(b'{"batch": [' + b" " * (2 * 1024 * 1024) + b"]}")
    assert len(bomb) < 10 * 1024
    refused(post_v1(client, "/v1/batch", raw=bomb, headers={"Content-Encoding": "gzip"}), 413)
    assert counts(engine) == NOTHING


def test_unknown_content_encoding_is_400(client, engine):
    for encoding in ("br", "deflate", "compress", "gzip, br", "x-unknown"):
        refused(post_v1(client, "/v1/track", track("A", message_id="enc"), headers={"Content-Encoding": encoding}),
                400, encoding)
    assert counts(engine) == NOTHING


# --------------------------------------------------------------------------- idempotency


def test_redelivered_message_id_is_a_duplicate(client, engine):
    msg = track(SIGNED_UP, message_id="dup-1", group="acme", at=ago(days=1), properties={"plan": "pro"})
    ok(post_v1(client, "/v1/track", msg), accepted=1)
    before = account(engine, "acme")
    ok(post_v1(client, "/v1/track", msg), accepted=0, duplicates=1)
    ok(post_v1(client, "/v1/batch", {"batch": [msg]}), accepted=0, duplicates=1)
    # Same id, different content: still the same message.
    ok(post_v1(client, "/v1/track", {**msg, "event": "Something Else"}), accepted=0, duplicates=1)
    assert count(engine, EVENT) == 1
    assert events_by_message(engine)["dup-1"]["name"] == SIGNED_UP
    after = account(engine, "acme")
    assert after["steps"] == before["steps"] and after["signup_at"] == before["signup_at"]


def test_v1_and_webhook_are_one_source(client, engine):
    msg = track("Button Clicked", message_id="shared-1", group="acme")
    ok(post_v1(client, "/v1/batch", {"batch": [msg]}), accepted=1)
    r = post_segment_webhook(client, msg)
    assert r.status_code == 200, r.text
    assert (r.json()["accepted"], r.json()["duplicates"]) == (0, 1)
    r = post_segment_webhook(client, {"batch": [track("Button Clicked", message_id="shared-2")]})
    assert r.json()["accepted"] == 1
    ok(post_v1(client, "/v1/track", track("Button Clicked", message_id="shared-2")), accepted=0, duplicates=1)
    stored = rows(engine, EVENT)
    assert sorted(r["message_id"] for r in stored) == ["shared-1", "shared-2"]
    assert {r["source"] for r in stored} == {"segment"}


def test_redelivery_within_one_batch(client, engine):
    a = track("Button Clicked", message_id="in-batch-a")
    b = track("Button Clicked", message_id="in-batch-b")
    ok(post_v1(client, "/v1/batch", {"batch": [a, b, a, a]}), accepted=2, duplicates=2)
    ok(post_v1(client, "/v1/batch", {"batch": [b, a]}), accepted=0, duplicates=2)
    assert count(engine, EVENT) == 2


def test_message_without_id_redelivered_identically(client, engine):
    msg = track("Button Clicked", group="acme", at=ago(hours=2), properties={"button": "save"})
    assert "messageId" not in msg
    ok(post_v1(client, "/v1/track", msg), accepted=1)
    ok(post_v1(client, "/v1/track", msg), accepted=0, duplicates=1)
    ok(post_v1(client, "/v1/batch", {"batch": [msg]}), accepted=0, duplicates=1)
    assert post_segment_webhook(client, msg).json()["duplicates"] == 1
    assert count(engine, EVENT) == 1
    # A different message without an id is a different event.
    ok(post_v1(client, "/v1/track", {**msg, "properties": {"button": "cancel"}}), accepted=1)
    assert count(engine, EVENT) == 2


def test_concurrent_overlapping_batches(server, settings, engine):
    """8 threads, half on a second server process-alike (its own app and engine, as with
    several `serve` processes behind a load balancer), redelivering each other's messages."""
    threads_n, batches_per_thread, batch_size = 8, 5, 40
    rng = random.Random(1234)
    plans: list[list[list[dict]]] = []
    for t in range(threads_n):
        plans.append([])
        for b in range(batches_per_thread):
            plans[t].append([track("Button Clicked", message_id=f"t{t}-b{b}-{i}", user=f"u{t}",
                                   group=f"acct-{rng.randrange(24)}", at=ago(minutes=i))
                             for i in range(int(batch_size * 0.8))])
    everything = [m for plan in plans for batch in plan for m in batch]
    for plan in plans:
        for batch in plan:  # 20% redeliveries, of messages other threads are posting too
            batch.extend(rng.sample(everything, batch_size - len(batch)))
            rng.shuffle(batch)
    answers: list[dict] = []
    failures: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(threads_n)

    def worker(plan, url):
        with httpx.Client(base_url=url, timeout=60) as c:
            start.wait()
            for batch in plan:
                r = post_v1(c, "/v1/batch", {"batch": batch})
                with lock:
                    if r.status_code != 200:
                        failures.append(f"{r.status_code} {r.text}")
                    else:
                        answers.append(r.json())

    with contextlib.ExitStack() as stack:
        urls = [server.url] + [stack.enter_context(LiveServer(create_app(settings, engine=make_engine(settings.database_url)))).url
                               for _ in range(3)]
        threads = [threading.Thread(target=worker, args=(plan, urls[n % len(urls)]))
                   for n, plan in enumerate(plans)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    assert failures == []
    distinct = {m["messageId"] for m in everything}
    posted = sum(len(batch) for plan in plans for batch in plan)
    assert sum(a["accepted"] for a in answers) == len(distinct)
    assert sum(a["accepted"] + a["duplicates"] for a in answers) == posted
    assert all(a["rejected"] == [] for a in answers)
    stored = events_by_message(engine)
    assert set(stored) == distinct
    assert count(engine, EVENT) == len(distinct)
    assert count(engine, ACCOUNT) == len({m["context"]["groupId"] for m in everything})


# --------------------------------------------------------------------------- journey from events


def test_out_of_order_steps(client, engine):
    t0, t1, t2 = ago(days=5), ago(days=4), ago(days=3)
    ok(post_v1(client, "/v1/batch", {"batch": [
        track(SIGNED_UP, message_id="s", group="acme", at=t0, properties={"plan": "pro"}),
        track(INTEGRATION, message_id="i", group="acme", at=t2),
    ]}), accepted=2)
    acme = account(engine, "acme")
    assert acme["waiting_step"] == PROJECT  # the first step not reached
    assert as_utc(acme["waiting_since"]) == t2  # since the latest progress
    assert as_utc(acme["stalled_at"]) == t2 + timedelta(hours=48)
    assert acme["steps_done"] == 2

    # Project Created (done before the integration) arrives late.
    ok(post_v1(client, "/v1/track", track(PROJECT, message_id="p", group="acme", at=t1)), accepted=1)
    acme = account(engine, "acme")
    assert acme["steps_done"] == 3
    assert acme["waiting_step"] == INVITE
    assert as_utc(acme["waiting_since"]) == t2
    assert as_utc(acme["signup_at"]) == t0
    assert {k: as_utc(v) for k, v in acme["steps"].items()} == {SIGNED_UP: t0, PROJECT: t1, INTEGRATION: t2}


def test_late_signup_moves_signup_back_and_earliest_step_wins(client, engine):
    t_early, t_late = ago(days=10), ago(days=2)
    ok(post_v1(client, "/v1/track", track(SIGNED_UP, message_id="s-late", group="acme", at=t_late,
                                          properties={"plan": "pro"})), accepted=1)
    acme = account(engine, "acme")
    assert as_utc(acme["signup_at"]) == t_late
    assert as_utc(acme["checkpoint_at"]) == t_late + timedelta(days=14)

    ok(post_v1(client, "/v1/track", track(SIGNED_UP, message_id="s-early", group="acme", at=t_early,
                                          properties={"plan": "pro"})), accepted=1)
    acme = account(engine, "acme")
    assert as_utc(acme["signup_at"]) == t_early
    assert as_utc(acme["checkpoint_at"]) == t_early + timedelta(days=14)
    assert as_utc(acme["waiting_since"]) == t_early
    assert as_utc(acme["first_seen_at"]) == t_early
    assert as_utc(acme["last_seen_at"]) == t_late

    # A repeated step: the earliest time wins, whatever the arrival order.
    p_first, p_second = ago(days=6), ago(days=8)
    ok(post_v1(client, "/v1/track", track(PROJECT, message_id="p1", group="acme", at=p_first)), accepted=1)
    ok(post_v1(client, "/v1/track", track(PROJECT, message_id="p2", group="acme", at=p_second)), accepted=1)
    ok(post_v1(client, "/v1/track", track(PROJECT, message_id="p3", group="acme", at=ago(days=1))), accepted=1)
    acme = account(engine, "acme")
    assert as_utc(acme["steps"][PROJECT]) == p_second
    assert as_utc(acme["waiting_since"]) == p_second
    assert acme["waiting_step"] == INTEGRATION
    assert count(engine, EVENT, EVENT.c.account_id == "acme") == 5


def test_future_timestamp_is_clamped_to_receive_time(client, engine):
    before = utc_now()
    future = before + timedelta(days=3)
    ok(post_v1(client, "/v1/track", track(SIGNED_UP, message_id="future", group="acme", at=future,
                                          properties={"plan": "pro"})), accepted=1)
    stored = as_utc(events_by_message(engine)["future"]["occurred_at"])
    assert before - timedelta(seconds=1) <= stored <= utc_now()
    assert as_utc(account(engine, "acme")["signup_at"]) == stored


def test_activation_clears_waiting(client, engine):
    t0 = ago(days=4)
    ok(post_v1(client, "/v1/batch", {"batch": [
        track(SIGNED_UP, message_id="s", group="acme", at=t0, properties={"plan": "pro"}),
        track(PROJECT, message_id="p", group="acme", at=t0 + timedelta(hours=1)),
    ]}), accepted=2)
    assert account(engine, "acme")["waiting_step"] == INTEGRATION
    t_act = ago(days=1)
    ok(post_v1(client, "/v1/track", track(ACTIVATION, message_id="a", group="acme", at=t_act)), accepted=1)
    acme = account(engine, "acme")
    assert as_utc(acme["activated_at"]) == t_act
    assert acme["waiting_step"] is None
    assert acme["waiting_since"] is None
    assert acme["stalled_at"] is None
    assert acme["checkpoint_at"] is None
    assert acme["stage"] == "Adoption"
    assert as_utc(acme["signup_at"]) == t0


def test_missing_required_property_is_stored_and_reported(client, engine):
    def issue():
        return one(engine, TRACKING, TRACKING.c.event_name == SIGNED_UP, TRACKING.c.property == "plan")

    bad = track(SIGNED_UP, message_id="noplan-1", group="acme", at=ago(days=2), properties={"source": "web"})
    ok(post_v1(client, "/v1/track", bad), accepted=1)
    stored = events_by_message(engine)["noplan-1"]
    assert stored["name"] == SIGNED_UP and stored["properties"] == {"source": "web"}
    first = issue()
    assert first["kind"] == "missing_property"
    assert first["count"] == 1
    assert first["example_message_id"] == "noplan-1"
    # The step still counts: the event is stored, not dropped.
    assert account(engine, "acme")["steps_done"] == 1

    ok(post_v1(client, "/v1/track", bad), accepted=0, duplicates=1)  # a redelivery is not a new violation
    assert issue()["count"] == 1
    ok(post_v1(client, "/v1/batch", {"batch": [
        bad,
        track(SIGNED_UP, message_id="noplan-2", group="globex", properties={"plan": ""}),
        track(SIGNED_UP, message_id="noplan-3", group="initech"),
        track(SIGNED_UP, message_id="hasplan", group="hooli", properties={"plan": "pro"}),
        track(PROJECT, message_id="no-schema", group="hooli"),
    ]}), accepted=4, duplicates=1)
    assert issue()["count"] == 3
    assert count(engine, TRACKING) == 1
    assert count(engine, EVENT) == 5


def test_identify_and_group_update_contact_and_account(client, engine):
    ok(post_v1(client, "/v1/identify", identify_call("u9", {"email": "Zed@Initech.com", "first_name": "Zed",
                                                            "account_id": "initech"})), accepted=1)
    contact = one(engine, CONTACT, CONTACT.c.id == "u9")
    assert (contact["email"], contact["first_name"], contact["account_id"]) == ("zed@initech.com", "Zed", "initech")
    ok(post_v1(client, "/v1/group", group_call("initech", {"arr": "12,000", "renewal_date": "2031-05-01"},
                                               user="u9")), accepted=1)
    initech = account(engine, "initech")
    assert initech["arr"] == 12000
    assert str(initech["renewal_date"]) == "2031-05-01"
    # A later identify that omits a trait keeps what was known.
    ok(post_v1(client, "/v1/identify", identify_call("u9", {"name": "Zed Z"})), accepted=1)
    contact = one(engine, CONTACT, CONTACT.c.id == "u9")
    assert (contact["email"], contact["name"], contact["account_id"]) == ("zed@initech.com", "Zed Z", "initech")
    # A track naming only the user lands on the user's account.
    ok(post_v1(client, "/v1/track", track("Button Clicked", user="u9", message_id="by-user")), accepted=1)
    assert events_by_message(engine)["by-user"]["account_id"] == "initech"


def test_edge_values_are_rejected_not_server_errors(client, engine):
    """Values past what the database can hold are reported per message, never a 5xx."""
    def group(traits):
        return group_call("acme", traits)

    batch = [
        track("A", timestamp="0001-01-01T00:00:00+01:00"),  # before year 1 in UTC
        track("A", timestamp="9999-12-31T23:59:59-05:00"),  # after year 9999 in UTC
        track("A", originalTimestamp="0001-01-01T00:30:00+14:00"),
        track("A", userId="u\x00"),
        track("A", messageId="m\x00"),
        track("Signed\x00Up"),
        track("A", context={"groupId": "\x00"}),
        track("A", properties={"account_id": "acme\x00"}),
        group({"name": "Acme\x00"}),
        identify_call("u1", {"email": "a\x00@b.co"}),
        {"type": "page", "userId": "u1", "name": "Home\x00"},
        group({"employees": 2 ** 31}),
        group({"seats": 10 ** 12}),
        # Accepted: the largest count an INTEGER holds, a NUL inside the JSON properties or in
        # an anonymousId (stored nowhere), and the earliest moment that is still in range.
        group({"employees": 2 ** 31 - 1, "seats": 0}),
        {"type": "track", "anonymousId": "\x00", "event": "A", "messageId": "anon-nul"},
        track("A", message_id="nul-in-json", properties={"note": "a\x00b"}),
        track("A", message_id="year-one", timestamp="0001-01-01T00:00:00+00:00"),
    ]
    body = ok(post_v1(client, "/v1/batch", {"batch": batch}), accepted=4, rejected=13)
    assert [r["index"] for r in body["rejected"]] == list(range(13))
    assert account(engine, "acme")["employees"] == 2 ** 31 - 1
    stored = events_by_message(engine)
    assert stored["nul-in-json"]["properties"] == {"note": "a\x00b"}
    # In range for Python, not a sane time: stored as the time received (bot/ingest/timewindow.py).
    assert as_utc(stored["year-one"]["occurred_at"]) == as_utc(stored["year-one"]["received_at"])
    for path, message in [("/v1/track", track("A", timestamp="9999-12-31T23:59:59-05:00")),
                          ("/v1/identify", identify_call("u\x00", {})),
                          ("/v1/group", group({"employees": 10 ** 10}))]:
        all_rejected(post_v1(client, path, message), rejected=1)
    assert count(engine, EVENT) == 4
