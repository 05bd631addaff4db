"""POST /slack/events against hostile input, through a live server: the body is bounded while
it streams (413), its signature is checked on the raw bytes before anything parses it (401),
the other routes keep answering meanwhile, and slash commands whose fields contain the
substring "payload" (which Bolt mistakes for an interaction) work."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from bot.app import SLACK_MAX_BODY
from bot.scan import scan
from sqlalchemy import update
from storage.models import Account
from storage.lookup import forget_names

from factories import DAY, T0, signup, store
from slack_signing import API_APP_ID, TEAM_ID, make_slack_harness, response_url, signed, trigger_id

pytest_plugins = ["tests.fakes.fixtures"]

OWNER = "U0OWNER"


@pytest.fixture
def slack(fake_slack, engine, db_url):
    forget_names()
    with make_slack_harness(fake_slack, engine, db_url) as harness:
        yield harness


def _port(slack) -> int:
    return int(str(slack.http.base_url).rstrip("/").rsplit(":", 1)[1])


def _status_line(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0]


def test_a_declared_oversized_body_gets_413_before_it_is_sent(slack):
    """A 400 MB unsigned post is refused on its Content-Length; the server never reads it."""
    with socket.create_connection(("127.0.0.1", _port(slack))) as sock:
        sock.sendall(b"POST /slack/events HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\n"
                     + f"Content-Length: {400 * 1024 * 1024}\r\n\r\n".encode() + b"a" * 65536)
        assert slack.http.get("/healthz").status_code == 200  # while the post is open
        assert _status_line(sock) == b"HTTP/1.1 413 Request Entity Too Large"


def test_a_streamed_oversized_body_is_cut_at_the_limit_and_other_routes_answer_meanwhile(slack):
    """Chunked (no Content-Length): read up to SLACK_MAX_BODY, then 413, the rest never read."""
    chunk = b"a" * 65536
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    with socket.create_connection(("127.0.0.1", _port(slack))) as sock:
        sock.sendall(b"POST /slack/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\n\r\n")
        for _ in range(SLACK_MAX_BODY // len(chunk)):  # up to the limit: still reading
            sock.sendall(framed)
            assert slack.http.get("/healthz").status_code == 200
            assert slack.http.get("/metrics").status_code == 200
        sock.sendall(framed)  # one byte too many
        assert _status_line(sock) == b"HTTP/1.1 413 Request Entity Too Large"


def test_an_unsigned_body_is_refused_before_it_is_parsed(slack):
    """JSON nested 100,000 deep makes json.loads raise RecursionError: it used to be parsed
    (a 500) before its signature was looked at. Unsigned, it is a 401 now; signed, a 400."""
    deep = b'{"payload": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    res = slack.http.post("/slack/events", content=deep, headers={"Content-Type": "application/json"})
    assert res.status_code == 401
    body, headers = signed(deep, "application/json")
    assert slack.post((body, headers)).status_code == 400


def test_compressed_bodies_are_refused(slack):
    body, headers = signed(b"a=1", "application/x-www-form-urlencoded")
    res = slack.http.post("/slack/events", content=body, headers={**headers, "Content-Encoding": "gzip"})
    assert res.status_code == 400


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=2048),
       content_type=st.sampled_from(["application/json", "application/x-www-form-urlencoded", "text/plain", ""]))
def test_any_unsigned_body_gets_401(slack, body, content_type):
    res = slack.http.post("/slack/events", content=body, headers={"Content-Type": content_type})
    assert res.status_code == 401


# ------------------------------------------------------------------ the "payload" substring

def _command(fake, text: str, *, channel_name: str = "cs-team", user_name: str = "owner"):
    url = response_url(fake, "journey")
    form = {
        "token": "deprecated-verification-token", "team_id": TEAM_ID, "team_domain": "fake",
        "channel_id": "C0CS", "channel_name": channel_name, "user_id": OWNER, "user_name": user_name,
        "command": "/journey", "text": text, "api_app_id": API_APP_ID, "is_enterprise_install": "false",
        "response_url": url, "trigger_id": trigger_id(),
    }
    return signed(urlencode(form).encode(), "application/x-www-form-urlencoded"), url.rsplit("/", 1)[-1]


@pytest.mark.parametrize("text, channel_name, user_name, shown", [
    ("payload", "cs-team", "owner", "payload"),               # the account is called "payload"
    ("acme.com", "payload-team", "owner", "Acme"),             # a channel named payload-team
    ("acme.com", "cs-team", "payload", "Acme"),                # a user named payload
])
def test_slash_commands_with_payload_in_a_field_are_answered(slack, text, channel_name, user_name, shown):
    store(slack.engine, slack.rules, signup("acme", T0, name="Acme", domain="acme.com")
          + signup("payload", T0, name="payload", domain="payload.io"), now=T0)
    with slack.engine.begin() as conn:  # the caller owns both: /journey shows an account to who may see it
        conn.execute(update(Account.__table__).values(owner_slack_id=OWNER))
    scan(slack.engine, slack.rules, T0 + DAY)
    forget_names()
    request, method = _command(slack.fake, text, channel_name=channel_name, user_name=user_name)
    res = slack.post(request)
    assert res.status_code == 200, res.text  # Bolt answered 404 "unhandled request"
    answer = slack.answer(method)
    assert shown in answer["text"] + str(answer.get("blocks"))


@hsettings(max_examples=200, deadline=None)
@given(fields=st.dictionaries(st.sampled_from(["text", "channel_name", "user_name", "command"]),
                              st.text(alphabet=st.sampled_from(list("payloadP%&=+ é{")), max_size=30)))
def test_the_payload_workaround_keeps_every_field_and_a_valid_signature(fields):
    from urllib.parse import parse_qs

    from slack_sdk.signature import SignatureVerifier

    from bot.slack.bolt_app import without_payload_trap
    from slack_bolt.request.internals import parse_body
    from slack_signing import SIGNING_SECRET

    raw = urlencode({"token": "t", **fields}).encode()
    body, headers = signed(raw, "application/x-www-form-urlencoded")
    headers = {k.lower(): v for k, v in headers.items()}
    new_body, new_headers = without_payload_trap(body, headers, SIGNING_SECRET)
    assert parse_qs(new_body.decode(), keep_blank_values=True) == parse_qs(raw.decode(), keep_blank_values=True)
    assert SignatureVerifier(SIGNING_SECRET).is_valid_request(new_body, new_headers)
    assert parse_body(new_body.decode(), "application/x-www-form-urlencoded")["token"] == "t"  # Bolt sees the form


def test_a_dripped_body_is_cut_off(slack, monkeypatch):
    import bot.app

    monkeypatch.setattr(bot.app, "SLACK_BODY_SECONDS", 0.5)
    with socket.create_connection(("127.0.0.1", _port(slack))) as sock:
        sock.sendall(b"POST /slack/events HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\n\r\na=")
        assert _status_line(sock) == b"HTTP/1.1 408 Request Timeout"
