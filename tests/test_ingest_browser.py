"""The browser SDK routes (/v1/t, /v1/p, /v1/i, /v1/b) and the trust boundary between the
public client key and the server write key, through the real app on loopback.

Shapes, from the SDKs' sources:
- analytics.js (segmentio/analytics-next, packages/browser/src/plugins/segmentio/index.ts and
  fetch-dispatcher.ts): `POST {apiHost}/t` with `Content-Type: text/plain` (no CORS
  preflight) and the `writeKey` inside the JSON message; batching mode
  (batched-dispatcher.ts): `POST {apiHost}/b` with `{"writeKey", "batch": [...], "sentAt"}`.
- RudderStack JS SDK (rudderlabs/rudder-sdk-js, packages/analytics-js-plugins/src/xhrQueue):
  HTTP Basic with the write key as user name, JSON `{"batch": [...], "sentAt"}`, an
  `AnonymousId` header (base64 of the anonymous id), so the browser sends a preflight first.
"""

from __future__ import annotations

import base64
import uuid
from datetime import timedelta

import httpx
import pytest
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from bot.app import create_app
from bot.scan import evaluate_accounts
from tests.conftest import WRITE_KEY, LiveServer
from tests.helpers import (
    ACCOUNT, CONTACT, EVENT, STALL, account, ago, as_utc, basic, count, dumps, group_call, identify_call, iso, one,
    post_v1, rows, track, utc_now,
)

CLIENT_KEY = "test-client-key"
ORIGIN = "https://app.customer.example"
SIGNED_UP, PROJECT, INTEGRATION, INVITE, ACTIVATION = (
    "Signed Up", "Project Created", "Integration Connected", "Invite Sent", "Report Shared")
ACCOUNT_FACTS = ("name", "domain", "plan", "arr", "owner_email", "renewal_date", "employees", "seats")


@pytest.fixture
def settings(settings):
    return settings.model_copy(update={"client_key": CLIENT_KEY})


@pytest.fixture
def app(settings, engine):
    # No event-driven evaluation: each test runs the scan itself, at a moment it chooses.
    return create_app(settings, engine=engine, on_events_stored=lambda account_ids: None)


def browser_post(client: httpx.Client, path: str, payload, *, key: str | None = CLIENT_KEY,
                 basic_auth: bool = False) -> httpx.Response:
    """analytics.js style by default (writeKey in a text/plain body); RudderStack style
    (Basic auth, JSON) with `basic_auth`."""
    headers = {"Origin": ORIGIN}
    if basic_auth:
        headers.update({"Content-Type": "application/json", "Authorization": basic(key)})
    else:
        headers["Content-Type"] = "text/plain"
        if key is not None:
            payload = dict(payload, writeKey=key)
    return client.post(path, content=dumps(payload), headers=headers)


def stored(response: httpx.Response, *, accepted: int, rejected: int = 0) -> dict:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    assert (body["accepted"], len(body["rejected"])) == (accepted, rejected), body
    assert response.headers["access-control-allow-origin"] == "*"
    return body


def analytics_js(msg: dict, *, at=None) -> dict:
    """A message as analytics.js sends it (normalize.ts adds the metadata)."""
    at = at or utc_now()
    return {
        **msg, "messageId": f"ajs-next-{uuid.uuid4().hex}", "anonymousId": str(uuid.uuid4()),
        "timestamp": iso(at), "sentAt": iso(utc_now()), "integrations": {},
        "_metadata": {"bundled": ["Segment.io"], "unbundled": [], "bundledIds": []},
        "context": {**msg.get("context", {}), "library": {"name": "analytics.js", "version": "npm:next-1.70.0"},
                    "page": {"path": "/app", "url": f"{ORIGIN}/app"}, "userAgent": "Mozilla/5.0"},
    }


def server_setup(client: httpx.Client, account_id: str, *, arr: float = 50000) -> None:
    """Account facts and a contact, from a trusted server-side source (the write key)."""
    batch = [group_call(account_id, {"name": account_id.title(), "arr": arr, "plan": "enterprise",
                                     "owner_email": "csm@vendor.com", "renewal_date": (utc_now() + timedelta(days=200))
                                     .date().isoformat(), "employees": 120}, user=f"{account_id}-user"),
             identify_call(f"{account_id}-user", {"email": f"ada@{account_id}.com", "name": "Ada Lovelace"})]
    response = post_v1(client, "/v1/batch", {"batch": batch})
    assert response.status_code == 200 and response.json()["accepted"] == 2, response.text


def facts(engine, account_id: str) -> dict:
    row = account(engine, account_id)
    return {key: row[key] for key in ACCOUNT_FACTS}


# --------------------------------------------------------------------------- routes and keys


def test_cors_preflight_allows_any_origin(client):
    for path in ("/v1/t", "/v1/p", "/v1/i", "/v1/b"):
        response = client.options(path, headers={
            "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, anonymousid"})
        assert response.status_code == 204, (path, response.text)
        assert response.headers["access-control-allow-origin"] == "*"
        assert response.headers["access-control-allow-methods"] == "POST, OPTIONS"
        allowed = {h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")}
        assert {"content-type", "authorization", "anonymousid"} <= allowed
        assert int(response.headers["access-control-max-age"]) > 0


def test_analytics_js_track_in_a_text_plain_body_is_stored(client, engine):
    at = ago(seconds=30)
    msg = analytics_js({"type": "track", "event": PROJECT, "userId": "u-ada",
                        "properties": {"account_id": "acme", "name": "p1"}}, at=at)
    stored(browser_post(client, "/v1/t", msg), accepted=1)
    event = one(engine, EVENT, EVENT.c.message_id == "browser:" + msg["messageId"])
    assert (event["kind"], event["name"], event["account_id"], event["contact_id"]) == (
        "track", PROJECT, "acme", "u-ada")
    assert as_utc(event["occurred_at"]) == at  # a recent time is the browser's own
    assert account(engine, "acme")["steps"].keys() == {PROJECT}
    page = analytics_js({"type": "page", "name": "Dashboard", "userId": "u-ada", "properties": {"account_id": "acme"}})
    stored(browser_post(client, "/v1/p", page), accepted=1)
    assert one(engine, EVENT, EVENT.c.message_id == "browser:" + page["messageId"])["name"] == "Dashboard"


def test_rudderstack_shaped_batch_with_basic_auth_is_stored(client, engine):
    anonymous = str(uuid.uuid4())
    batch = {"batch": [
        {"type": "page", "name": "Home", "anonymousId": anonymous, "userId": "u-ada", "channel": "web",
         "messageId": str(uuid.uuid4()), "originalTimestamp": iso(utc_now()), "rudderId": str(uuid.uuid4()),
         "properties": {"account_id": "acme"}, "context": {"library": {"name": "RudderLabs JavaScript SDK"}}},
        {"type": "track", "event": PROJECT, "anonymousId": anonymous, "userId": "u-ada", "channel": "web",
         "messageId": str(uuid.uuid4()), "originalTimestamp": iso(utc_now()), "properties": {},
         "context": {"groupId": "acme"}},
    ], "sentAt": iso(utc_now())}
    response = client.post("/v1/b", content=dumps(batch), headers={
        "Origin": ORIGIN, "Content-Type": "application/json;charset=UTF-8", "Authorization": basic(CLIENT_KEY),
        "AnonymousId": base64.b64encode(anonymous.encode()).decode()})
    stored(response, accepted=2)
    assert count(engine, EVENT, EVENT.c.account_id == "acme") == 2


@pytest.mark.parametrize("path", ["/v1/group", "/v1/batch", "/v1/identify", "/v1/track"])
def test_client_key_is_refused_on_the_server_routes(client, engine, path):
    msg = group_call("acme", {"arr": 1, "owner_email": "evil@attacker.example"})
    payload = {"batch": [msg]} if path == "/v1/batch" else msg
    if path == "/v1/identify":
        payload = identify_call("u1", {"email": "a@b.c"})
    elif path == "/v1/track":
        payload = track(PROJECT, group="acme")
    by_header = post_v1(client, path, payload, auth=basic(CLIENT_KEY))
    in_body = post_v1(client, path, {**payload, "writeKey": CLIENT_KEY}, auth=None)
    for response in (by_header, in_body):
        assert response.status_code == 401, response.text
        assert "write key" in response.json()["error"]
    assert count(engine, EVENT) == count(engine, ACCOUNT) == 0


def test_browser_routes_take_the_client_key_only(client, engine, server):
    # The write key has no business in a browser: refused there (it would grant nothing more).
    msg = analytics_js({"type": "track", "event": PROJECT, "userId": "u1", "properties": {"account_id": "acme"}})
    for response in (browser_post(client, "/v1/t", msg, key=WRITE_KEY),
                     browser_post(client, "/v1/t", msg, key=WRITE_KEY, basic_auth=True),
                     browser_post(client, "/v1/t", msg, key=None)):
        assert response.status_code == 401, response.text
        body = response.json()
        assert body["code"] == "unauthorized" and body["message"] == body["error"]
        assert "client key" in body["error"]
        assert response.headers["access-control-allow-origin"] == "*"  # the page can read why
    assert count(engine, EVENT) == 0


def test_write_key_is_not_needed_on_browser_routes(settings, engine):
    app = create_app(settings.model_copy(update={"write_key": None}), engine=engine,
                     on_events_stored=lambda ids: None)
    with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=30) as client:
        msg = analytics_js({"type": "track", "event": PROJECT, "userId": "u1", "properties": {"account_id": "acme"}})
        stored(browser_post(client, "/v1/t", msg), accepted=1)
        assert post_v1(client, "/v1/track", track(PROJECT, group="acme")).status_code == 401


def test_without_a_client_key_the_browser_routes_answer_401(settings, engine):
    app = create_app(settings.model_copy(update={"client_key": None}), engine=engine,
                     on_events_stored=lambda ids: None)
    with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=30) as client:
        msg = analytics_js({"type": "track", "event": PROJECT, "userId": "u1", "properties": {"account_id": "acme"}})
        for path in ("/v1/t", "/v1/p", "/v1/i", "/v1/b"):
            payload = {"batch": [msg]} if path == "/v1/b" else msg
            for response in (browser_post(client, path, payload, key=CLIENT_KEY),
                             browser_post(client, path, payload, key="", basic_auth=True)):
                assert response.status_code == 401, (path, response.text)
                assert "STALLWATCH_CLIENT_KEY" in response.json()["message"]
        assert count(engine, EVENT) == 0


def test_browser_routes_keep_the_size_limits(client):
    big = analytics_js({"type": "track", "event": PROJECT, "userId": "u1", "properties": {"blob": "x" * 40_000}})
    response = browser_post(client, "/v1/t", big)
    assert response.status_code == 413 and response.json()["code"] == "too_large"
    response = client.post("/v1/t", content=b"{not json", headers={"Authorization": basic(CLIENT_KEY)})
    assert response.status_code == 400 and response.json()["code"] == "bad_request"


# --------------------------------------------------------------------------- what the client key may set


def test_group_call_in_a_browser_batch_is_rejected_with_its_index(client, engine):
    batch = {"batch": [
        analytics_js({"type": "track", "event": PROJECT, "userId": "u1", "properties": {"account_id": "acme"}}),
        analytics_js({"type": "group", "groupId": "acme", "userId": "u1",
                      "traits": {"name": "Pwned", "arr": 9_999_999, "owner_email": "evil@attacker.example"}}),
        analytics_js({"type": "alias", "previousId": "anon", "userId": "u1"}),
    ]}
    body = stored(browser_post(client, "/v1/b", batch), accepted=1, rejected=2)
    assert [r["index"] for r in body["rejected"]] == [1, 2]
    assert "server write key" in body["rejected"][0]["error"]
    assert count(engine, EVENT) == 1
    acme = facts(engine, "acme")  # the row the track made, with nothing of the group call
    assert (acme["name"], acme["arr"], acme["owner_email"]) == ("acme", 0, None)


def test_identify_with_account_traits_changes_no_account_fact(client, engine):
    server_setup(client, "acme")
    server_setup(client, "globex")
    before = {a: facts(engine, a) for a in ("acme", "globex")}
    traits = {"email": "Ada.New@Acme.com", "name": "Ada King", "arr": 1, "mrr": 1, "plan": "free",
              "owner_email": "evil@attacker.example", "renewal_date": "2020-01-01", "domain": "attacker.example",
              "employees": 1, "account_id": "globex"}
    msg = analytics_js({"type": "identify", "userId": "acme-user", "traits": traits,
                        "context": {"groupId": "globex"}})
    stored(browser_post(client, "/v1/i", msg), accepted=1)
    assert {a: facts(engine, a) for a in ("acme", "globex")} == before
    contact = one(engine, CONTACT, CONTACT.c.id == "acme-user")
    assert (contact["email"], contact["name"], contact["first_name"]) == ("ada.new@acme.com", "Ada King", "Ada")
    assert contact["account_id"] == "acme"  # membership comes from trusted sources only
    event = one(engine, EVENT, EVENT.c.message_id == "browser:" + msg["messageId"])
    assert event["properties"]["owner_email"] == "evil@attacker.example"  # a property, never a fact
    assert event["account_id"] == "acme"  # the contact's own account, not the one the page named


def test_client_key_may_opt_out_but_never_back_in(client, engine):
    post_v1(client, "/v1/identify", identify_call("opted-out", {"email": "o@acme.com", "unsubscribed": True}))
    post_v1(client, "/v1/identify", identify_call("subscribed", {"email": "s@acme.com", "unsubscribed": False}))
    for value in (False, "false", 0):
        msg = analytics_js({"type": "identify", "userId": "opted-out", "traits": {"unsubscribed": value}})
        stored(browser_post(client, "/v1/i", msg), accepted=1)
        assert one(engine, CONTACT, CONTACT.c.id == "opted-out")["unsubscribed"] is True
    msg = analytics_js({"type": "identify", "userId": "subscribed", "traits": {"unsubscribed": True}})
    stored(browser_post(client, "/v1/i", msg), accepted=1)
    assert one(engine, CONTACT, CONTACT.c.id == "subscribed")["unsubscribed"] is True
    # The write key still may (a trusted source re-subscribing someone who asked).
    post_v1(client, "/v1/identify", identify_call("subscribed", {"unsubscribed": False}))
    assert one(engine, CONTACT, CONTACT.c.id == "subscribed")["unsubscribed"] is False


def test_browser_message_ids_cannot_claim_a_server_call(client, engine):
    claimed = analytics_js({"type": "track", "event": PROJECT, "userId": "u1", "properties": {"account_id": "acme"}})
    stored(browser_post(client, "/v1/t", {**claimed, "messageId": "server-group-1"}), accepted=1)
    response = post_v1(client, "/v1/group", group_call("acme", {"arr": 50000}, message_id="server-group-1"))
    assert response.json()["accepted"] == 1, response.text  # not a duplicate of the browser's
    assert account(engine, "acme")["arr"] == 50000


# --------------------------------------------------------------------------- times are not trusted


def _stalled_on_integration(client, engine, rules, account_id: str) -> dict:
    """An account waiting on 'Integration Connected' since 4 days, its stall opened by a scan."""
    server_setup(client, account_id)
    steps = [track(SIGNED_UP, user=f"{account_id}-user", group=account_id, at=ago(days=5),
                   properties={"plan": "enterprise"}),
             track(PROJECT, user=f"{account_id}-user", group=account_id, at=ago(days=4))]
    assert post_v1(client, "/v1/batch", {"batch": steps}).json()["accepted"] == 2
    evaluate_accounts(engine, rules, [account_id], utc_now())
    (stall,) = rows(engine, STALL, STALL.c.account_id == account_id, STALL.c.open_key.is_not(None))
    assert (stall["rule"], stall["step"]) == ("step_stall", INTEGRATION)
    return stall


def test_backdated_step_via_the_client_key_is_reached_at_receive_time(client, engine, rules):
    """A browser says 'Integration Connected' happened 3 days ago, before the stall opened. It
    is stored as reached when received: the stall closes as progress made now (a step reached
    now is real progress), the account waits on the next step since now, and no history is
    rewritten. The same message with the write key is believed: the step dates 3 days back."""
    backdated = ago(days=3)
    stall = _stalled_on_integration(client, engine, rules, "acme")
    sent_at = utc_now()
    msg = analytics_js({"type": "track", "event": INTEGRATION, "userId": "acme-user",
                        "context": {"groupId": "acme"}}, at=backdated)
    stored(browser_post(client, "/v1/t", msg), accepted=1)
    event = one(engine, EVENT, EVENT.c.message_id == "browser:" + msg["messageId"])
    assert as_utc(event["occurred_at"]) >= sent_at > as_utc(stall["opened_at"])
    acme = account(engine, "acme")
    assert as_utc(acme["steps"][INTEGRATION]) >= sent_at
    assert acme["waiting_step"] == INVITE and as_utc(acme["waiting_since"]) >= sent_at
    evaluate_accounts(engine, rules, ["acme"], utc_now())
    assert rows(engine, STALL, STALL.c.account_id == "acme", STALL.c.open_key.is_not(None)) == []

    _stalled_on_integration(client, engine, rules, "globex")
    post_v1(client, "/v1/track", track(INTEGRATION, user="globex-user", group="globex", at=backdated))
    globex = account(engine, "globex")
    assert as_utc(globex["steps"][INTEGRATION]) == backdated
    assert as_utc(globex["waiting_since"]) == backdated
    evaluate_accounts(engine, rules, ["globex"], utc_now())
    (moved_on,) = rows(engine, STALL, STALL.c.account_id == "globex", STALL.c.open_key.is_not(None))
    assert moved_on["step"] == INVITE and as_utc(moved_on["stalled_since"]) == backdated


def _usage_dropped(client, engine, rules, account_id: str) -> None:
    """An activated account active on 6 days of the week before last, on none of the last 7."""
    server_setup(client, account_id)
    user = f"{account_id}-user"
    history = [track(SIGNED_UP, user=user, group=account_id, at=ago(days=30), properties={"plan": "enterprise"}),
               track(ACTIVATION, user=user, group=account_id, at=ago(days=29))]
    history += [track("Button Clicked", user=user, group=account_id, at=ago(days=d)) for d in range(8, 14)]
    assert post_v1(client, "/v1/batch", {"batch": history}).json()["accepted"] == len(history)
    evaluate_accounts(engine, rules, [account_id], utc_now())
    assert [s["rule"] for s in rows(engine, STALL, STALL.c.account_id == account_id,
                                    STALL.c.open_key.is_not(None))] == ["usage_drop"]


def test_backdated_activity_via_the_client_key_cannot_close_a_usage_drop(client, engine, rules):
    """Five clicks 'from' the last five days would fill the quiet week and auto-resolve the
    usage-drop stall. From a browser they all land on today (not a complete day yet): the
    stall stays open. With the write key the same clicks are believed and close it."""
    clicks = [track("Button Clicked", user="x", at=ago(days=d)) for d in range(1, 6)]
    _usage_dropped(client, engine, rules, "acme")
    batch = {"batch": [analytics_js({**c, "userId": "acme-user", "context": {"groupId": "acme"}},
                                    at=as_utc(c["timestamp"])) for c in clicks]}
    stored(browser_post(client, "/v1/b", batch), accepted=5)
    evaluate_accounts(engine, rules, ["acme"], utc_now())
    (still,) = rows(engine, STALL, STALL.c.account_id == "acme", STALL.c.open_key.is_not(None))
    assert still["rule"] == "usage_drop"

    _usage_dropped(client, engine, rules, "globex")
    batch = {"batch": [{**c, "userId": "globex-user", "context": {"groupId": "globex"}} for c in clicks]}
    assert post_v1(client, "/v1/batch", batch).json()["accepted"] == 5
    evaluate_accounts(engine, rules, ["globex"], utc_now())
    assert rows(engine, STALL, STALL.c.account_id == "globex", STALL.c.open_key.is_not(None)) == []
    (closed,) = rows(engine, STALL, STALL.c.account_id == "globex")
    assert closed["status"] == "auto_resolved"


# --------------------------------------------------------------------------- property: no account fact, ever

_text = st.one_of(st.text(max_size=30), st.integers(-5, 10**7), st.floats(allow_nan=True), st.booleans(), st.none())
_traits = st.dictionaries(st.sampled_from(ACCOUNT_FACTS + ("mrr", "website", "email", "account_id", "unsubscribed")),
                          _text, max_size=8)
_message = st.fixed_dictionaries({
    "type": st.sampled_from(["track", "page", "screen", "identify", "group", "alias"]),
    "userId": st.sampled_from(["acme-user", "u2", "anyone"]),
    "event": st.sampled_from([SIGNED_UP, PROJECT, INTEGRATION, "Plan Changed"]),
    "groupId": st.sampled_from(["acme", "globex"]),
    "traits": _traits,
    "properties": _traits,
    "context": st.fixed_dictionaries({"groupId": st.sampled_from(["acme", "globex"]), "traits": _traits}),
})


@hypothesis_settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=st.lists(_message, min_size=1, max_size=6), path=st.sampled_from(["/v1/t", "/v1/p", "/v1/i", "/v1/b"]))
def test_nothing_sent_with_the_client_key_changes_an_account_fact(client, engine, messages, path):
    if count(engine, ACCOUNT, ACCOUNT.c.id == "acme") == 0:
        server_setup(client, "acme")
    before = facts(engine, "acme")
    globex = facts(engine, "globex") if count(engine, ACCOUNT, ACCOUNT.c.id == "globex") else None
    for msg in messages:
        msg["messageId"] = uuid.uuid4().hex
    payload = {"batch": messages} if path == "/v1/b" else messages[0]
    for response in (browser_post(client, path, payload), browser_post(client, path, payload, basic_auth=True)):
        assert response.status_code in (200, 400), response.text
    assert facts(engine, "acme") == before
    if globex is not None:
        assert facts(engine, "globex") == globex
    elif count(engine, ACCOUNT, ACCOUNT.c.id == "globex"):  # made by a product event: no facts
        assert {k: v for k, v in facts(engine, "globex").items() if v} == {"name": "globex"}
