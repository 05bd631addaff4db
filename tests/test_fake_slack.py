"""The loopback fake Slack Web API behaves like Slack where our code depends on it, through
slack_sdk's own clients (bot.slack.client) over real HTTP."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.settings import Settings
from bot.slack.client import async_web_client, web_client
from tests.fakes import FakeSlack

pytest_plugins = ["tests.fakes.fixtures"]


def section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def button(text: str = "Go", value: str = "v", action_id: str = "go") -> dict:
    return {"type": "actions", "elements": [
        {"type": "button", "text": {"type": "plain_text", "text": text}, "value": value, "action_id": action_id}]}


def slack_settings(fake: FakeSlack, token: str | None = None) -> Settings:
    return Settings(_env_file=None, SLACK_BOT_TOKEN=token or fake.token, SLACK_API_URL=fake.url)


@pytest.fixture
def slack(fake_slack) -> WebClient:
    """A client that never retries, so every answer of the fake is seen as it is."""
    return web_client(slack_settings(fake_slack), blocking_retries=False)


def error_of(call) -> str:
    with pytest.raises(SlackApiError) as info:
        call()
    return info.value.response["error"]


# ----------------------------------------------------------------------------- auth and recording


def test_url_is_a_base_url_and_auth_test_answers(fake_slack, slack):
    assert fake_slack.url.endswith("/api/")
    answer = slack.auth_test()
    assert answer["user_id"] == fake_slack.bot_user_id and answer["team_id"] == fake_slack.team_id


def test_missing_or_wrong_token_is_refused_like_slack(fake_slack):
    no_token = WebClient(base_url=fake_slack.url, retry_handlers=[])
    assert error_of(no_token.auth_test) == "not_authed"
    wrong = web_client(slack_settings(fake_slack, token="xoxb-someone-else"), blocking_retries=False)
    assert error_of(wrong.auth_test) == "invalid_auth"
    user_token = web_client(slack_settings(fake_slack, token="xoxp-user"), blocking_retries=False)
    assert error_of(user_token.auth_test) == "invalid_auth"
    # Slack answers logical errors with HTTP 200.
    assert {c.status for c in fake_slack.calls("auth.test")} == {200}


def test_every_call_is_recorded_with_body_headers_and_time(fake_slack, slack):
    before = time.time()
    blocks = [section("*hello*"), button()]
    slack.chat_postMessage(channel="C1", text="hello", blocks=blocks)
    (call,) = fake_slack.calls("chat.postMessage")
    assert call.is_json  # slack_sdk sends chat.postMessage as JSON
    assert call.body["blocks"] == blocks and call.body["channel"] == "C1"
    assert call.headers["Authorization"] == f"Bearer {fake_slack.token}"
    assert before <= call.at <= time.time()
    assert call.ok and call.response["channel"] == "C1"
    assert [c.method for c in fake_slack.calls()] == ["chat.postMessage"]


def test_form_and_multipart_bodies_are_parsed_and_json_fields_decoded(fake_slack, slack):
    blocks = [section("from a form")]
    slack.api_call("chat.postMessage", data={"channel": "C1", "text": "x", "blocks": json.dumps(blocks)})
    (call,) = fake_slack.calls("chat.postMessage")
    assert not call.is_json and call.content_type == "application/x-www-form-urlencoded"
    assert call.body["blocks"] == blocks
    assert [m["text"] for m in fake_slack.messages("C1")] == ["x"]

    slack.api_call("api.test", files={"file": b"\x00bytes"}, data={"note": "multipart"})
    (call,) = fake_slack.calls("api.test")
    assert call.content_type.startswith("multipart/form-data")
    assert call.body["note"] == "multipart" and call.body["file"] == b"\x00bytes"


def test_unknown_method_answers_unknown_method(slack):
    assert error_of(lambda: slack.api_call("chat.flyToTheMoon")) == "unknown_method"


# ----------------------------------------------------------------------------- messages


def test_post_returns_unique_increasing_ts_and_update_needs_an_existing_message(fake_slack, slack):
    stamps = [slack.chat_postMessage(channel="C1", text=str(i))["ts"] for i in range(20)]
    assert len(set(stamps)) == 20 and stamps == sorted(stamps, key=float)
    updated = slack.chat_update(channel="C1", ts=stamps[3], text="edited")
    assert updated["ts"] == stamps[3]
    assert fake_slack.messages("C1")[3]["text"] == "edited" and "edited" in fake_slack.messages("C1")[3]
    assert error_of(lambda: slack.chat_update(channel="C1", ts="1.000001", text="x")) == "message_not_found"
    assert error_of(lambda: slack.chat_update(channel="C2", ts=stamps[0], text="x")) == "message_not_found"


def test_channel_errors(fake_slack, slack):
    fake_slack.missing_channels.add("CGONE")
    fake_slack.not_member_channels.add("CPRIVATE")
    assert error_of(lambda: slack.chat_postMessage(channel="CGONE", text="x")) == "channel_not_found"
    assert error_of(lambda: slack.chat_postMessage(channel="#general", text="x")) == "channel_not_found"
    assert error_of(lambda: slack.chat_postMessage(channel="CPRIVATE", text="x")) == "not_in_channel"
    with pytest.warns(UserWarning, match="text"):  # slack_sdk warns too, and still sends it
        assert error_of(lambda: slack.chat_postMessage(channel="C1")) == "no_text"


def test_history_is_newest_first_paginated_and_carries_metadata_only_when_asked(fake_slack, slack):
    metadata = {"event_type": "stallwatch_outbox", "event_payload": {"key": "k1"}}
    first = slack.chat_postMessage(channel="C1", text="first", metadata=metadata)["ts"]
    for i in range(4):
        slack.chat_postMessage(channel="C1", text=f"m{i}")
    plain = slack.conversations_history(channel="C1")
    assert [m["text"] for m in plain["messages"]] == ["m3", "m2", "m1", "m0", "first"]
    assert all("metadata" not in m for m in plain["messages"])
    with_meta = slack.conversations_history(channel="C1", include_all_metadata=True)
    assert with_meta["messages"][-1]["metadata"] == metadata

    page1 = slack.conversations_history(channel="C1", limit=2)
    assert page1["has_more"] and len(page1["messages"]) == 2
    page2 = slack.conversations_history(channel="C1", limit=2, cursor=page1["response_metadata"]["next_cursor"])
    assert [m["text"] for m in page2["messages"]] == ["m1", "m0"]
    newer = slack.conversations_history(channel="C1", oldest=first)
    assert [m["text"] for m in newer["messages"]] == ["m3", "m2", "m1", "m0"]


def test_thread_replies_stay_out_of_history_and_show_in_replies(fake_slack, slack):
    parent = slack.chat_postMessage(channel="C1", text="parent")["ts"]
    slack.chat_postMessage(channel="C1", text="reply", thread_ts=parent,
                           metadata={"event_type": "x", "event_payload": {"n": 1}})
    assert [m["text"] for m in slack.conversations_history(channel="C1")["messages"]] == ["parent"]
    replies = slack.conversations_replies(channel="C1", ts=parent, include_all_metadata=True)["messages"]
    assert [m["text"] for m in replies] == ["parent", "reply"] and replies[1]["metadata"]["event_payload"] == {"n": 1}
    assert error_of(lambda: slack.chat_postMessage(channel="C1", text="x", thread_ts="1.5")) == "message_not_found"


def test_bad_metadata_is_refused(slack):
    assert error_of(lambda: slack.chat_postMessage(channel="C1", text="x",
                                                   metadata={"event_payload": {}})) == "invalid_metadata_format"


def test_ephemeral_is_not_in_history_and_permalink_needs_a_message(fake_slack, slack):
    answer = slack.chat_postEphemeral(channel="C1", user="U1", text="only you")
    assert answer["message_ts"] and fake_slack.ephemerals[0]["user"] == "U1"
    assert fake_slack.messages("C1") == []
    ts = slack.chat_postMessage(channel="C1", text="x")["ts"]
    link = slack.chat_getPermalink(channel="C1", message_ts=ts)["permalink"]
    assert link.endswith("/archives/C1/p" + ts.replace(".", ""))
    assert error_of(lambda: slack.chat_getPermalink(channel="C1", message_ts="2.000001")) == "message_not_found"


def test_dm_open_and_user_directory(fake_slack, slack):
    fake_slack.add_user("U1", "ana@example.com", real_name="Ana CSM")
    opened = slack.conversations_open(users="U1")["channel"]["id"]
    assert opened == fake_slack.dm_channel("U1") and opened.startswith("D")
    assert slack.conversations_open(users=["U1"])["channel"]["id"] == opened
    slack.chat_postMessage(channel=opened, text="psst")
    assert fake_slack.messages(opened)[0]["text"] == "psst"
    assert slack.users_lookupByEmail(email="ANA@example.com")["user"]["id"] == "U1"
    assert error_of(lambda: slack.users_lookupByEmail(email="nobody@example.com")) == "users_not_found"
    assert slack.users_info(user="U1")["user"]["real_name"] == "Ana CSM"
    assert error_of(lambda: slack.users_info(user="U404")) == "user_not_found"


# ----------------------------------------------------------------------------- Block Kit limits


def too_many_blocks():
    return [section(str(i)) for i in range(51)]


@pytest.mark.parametrize("blocks, error", [
    ({"type": "section"}, "invalid_blocks_format"),
    ("not json", "invalid_blocks_format"),
    ([{"text": {"type": "mrkdwn", "text": "no type"}}], "invalid_blocks"),
    (["a string"], "invalid_blocks"),
    ([{"type": "carousel"}], "invalid_blocks"),
    (too_many_blocks(), "invalid_blocks"),
    ([section("x" * 3001)], "invalid_blocks"),
    ([{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}], "invalid_blocks"),
    ([{"type": "header", "text": {"type": "mrkdwn", "text": "*bold*"}}], "invalid_blocks"),
    ([button(text="b" * 76)], "invalid_blocks"),
    ([button(value="v" * 2001)], "invalid_blocks"),
    ([button(action_id="a" * 256)], "invalid_blocks"),
    ([{**section("x"), "block_id": "b" * 256}], "invalid_blocks"),
    ([{"type": "section", "fields": [{"type": "mrkdwn", "text": "f"}] * 11}], "invalid_blocks"),
    ([section("x" * 2900) for _ in range(5)], "msg_blocks_too_long"),
])
def test_invalid_blocks_are_refused_as_slack_does(fake_slack, slack, blocks, error):
    assert error_of(lambda: slack.chat_postMessage(channel="C1", text="x", blocks=blocks)) == error
    assert fake_slack.calls("chat.postMessage")[0].status == 200  # an error in the body, not in HTTP
    assert fake_slack.messages("C1") == []


def test_blocks_at_the_limits_are_accepted(fake_slack, slack):
    slack.chat_postMessage(channel="C1", text="x", blocks=[section(str(i)) for i in range(50)])
    slack.chat_postMessage(channel="C1", text="x", blocks=[
        section("x" * 3000), {"type": "header", "text": {"type": "plain_text", "text": "h" * 150}},
        button(text="b" * 75, value="v" * 2000, action_id="a" * 255), {"type": "divider", "block_id": "d" * 255}])
    assert len(fake_slack.messages("C1")) == 2


def test_update_is_validated_too(slack):
    ts = slack.chat_postMessage(channel="C1", text="x")["ts"]
    assert error_of(lambda: slack.chat_update(channel="C1", ts=ts, text="x", blocks=too_many_blocks())) == "invalid_blocks"


# ----------------------------------------------------------------------------- views


def modal(blocks=None, **extra) -> dict:
    return {"type": "modal", "title": {"type": "plain_text", "text": "Draft"}, "blocks": blocks or [section("x")],
            **extra}


def test_views_open_update_and_publish(fake_slack, slack):
    opened = slack.views_open(trigger_id="T1", view=modal(external_id="draft-1"))["view"]
    assert opened["id"].startswith("V")
    assert error_of(lambda: slack.views_open(trigger_id="T1", view=modal())) == "expired_trigger_id"  # once only
    fake_slack.expired_triggers.add("T2")
    assert error_of(lambda: slack.views_open(trigger_id="T2", view=modal())) == "expired_trigger_id"

    updated = slack.views_update(view_id=opened["id"], view=modal([section("done")]))["view"]
    assert updated["id"] == opened["id"] and updated["blocks"][0]["text"]["text"] == "done"
    by_external = slack.views_update(external_id="draft-1", view=modal([section("again")]))["view"]
    assert by_external["id"] == opened["id"]
    assert error_of(lambda: slack.views_update(view_id="V404", view=modal())) == "not_found"
    assert error_of(lambda: slack.views_update(external_id="nope", view=modal())) == "not_found"
    assert error_of(lambda: slack.views_update(view_id=opened["id"], hash="stale", view=modal())) == "hash_conflict"

    home = {"type": "home", "blocks": [section("your queue")]}
    first = slack.views_publish(user_id="U1", view=home)["view"]
    again = slack.views_publish(user_id="U1", view=home)["view"]
    assert first["id"] == again["id"] and fake_slack.home("U1")["blocks"] == home["blocks"]


def test_view_limits(slack):
    blocks = [section(str(i)) for i in range(101)]
    assert error_of(lambda: slack.views_publish(user_id="U1", view={"type": "home", "blocks": blocks})) \
        == "invalid_arguments"
    slack.views_publish(user_id="U1", view={"type": "home", "blocks": blocks[:100]})  # 100 is fine in a view
    long_title = modal(title={"type": "plain_text", "text": "t" * 25})
    assert error_of(lambda: slack.views_open(trigger_id="T9", view=long_title)) == "invalid_arguments"
    assert error_of(lambda: slack.views_open(trigger_id="T10", view={"type": "home", "blocks": []})) \
        == "invalid_arguments"


# ----------------------------------------------------------------------------- files


def test_files_upload_v2_three_steps(fake_slack, slack):
    data = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 10
    answer = slack.files_upload_v2(channel="C1", file=data, filename="funnel.png", title="Funnel",
                                   initial_comment="Weekly funnel")
    assert [c.method for c in fake_slack.calls()] == [
        "files.getUploadURLExternal", "files.upload_url", "files.completeUploadExternal"]
    stored = fake_slack.files[answer["file"]["id"]]
    assert stored["content"] == data and stored["title"] == "Funnel"
    (message,) = fake_slack.messages("C1")
    assert message["text"] == "Weekly funnel" and message["files"][0]["name"] == "funnel.png"
    assert fake_slack.calls("files.upload_url")[0].raw == data


def test_files_upload_into_a_channel_the_bot_is_not_in(fake_slack, slack):
    fake_slack.not_member_channels.add("CPRIVATE")
    assert error_of(lambda: slack.files_upload_v2(channel="CPRIVATE", content="x", filename="x.txt")) \
        == "not_in_channel"


# ----------------------------------------------------------------------------- faults


def test_fail_next_answers_429_with_retry_after_then_recovers(fake_slack, slack):
    fake_slack.fail_next("chat.postMessage", status=429, retry_after=7, times=2)
    for _ in range(2):
        with pytest.raises(SlackApiError) as info:
            slack.chat_postMessage(channel="C1", text="x")
        assert info.value.response.status_code == 429
        assert info.value.response.headers["Retry-After"] == "7"
    slack.auth_test()  # other methods are not affected
    slack.chat_postMessage(channel="C1", text="x")
    assert [c.status for c in fake_slack.calls("chat.postMessage")] == [429, 429, 200]
    assert len(fake_slack.messages("C1")) == 1


def test_rate_limit_for_a_period_and_one_channel(fake_slack, slack):
    fake_slack.rate_limit_for(0.5, retry_after=1, channel="CSTORM")
    with pytest.raises(SlackApiError):
        slack.chat_postMessage(channel="CSTORM", text="x")
    slack.chat_postMessage(channel="CCALM", text="x")  # other channels go through
    time.sleep(0.6)
    slack.chat_postMessage(channel="CSTORM", text="x")
    fake_slack.rate_limit_for(0.3)
    with pytest.raises(SlackApiError):
        slack.auth_test()


def test_server_errors_by_count_and_probability(fake_slack, slack):
    fake_slack.server_errors(count=2, status=503)
    for _ in range(2):
        with pytest.raises(SlackApiError) as info:
            slack.auth_test()
        assert info.value.response.status_code == 503
    slack.auth_test()
    fake_slack.server_errors(probability=0.5, seed=1)
    outcomes = []
    for _ in range(40):
        try:
            slack.auth_test()
            outcomes.append(True)
        except SlackApiError:
            outcomes.append(False)
    assert 5 < outcomes.count(False) < 35
    fake_slack.clear_faults()
    slack.auth_test()


def test_deliver_then_fail_keeps_the_effect(fake_slack, slack):
    """The response is lost but Slack did post: what the outbox must not post again."""
    fake_slack.fail_next("chat.postMessage", status=500, deliver=True)
    with pytest.raises(SlackApiError):
        slack.chat_postMessage(channel="C1", text="lost answer")
    assert [m["text"] for m in fake_slack.messages("C1")] == ["lost answer"]


def test_fail_next_with_a_slack_error(fake_slack, slack):
    fake_slack.fail_next("chat.postMessage", status=200, error="fatal_error")
    assert error_of(lambda: slack.chat_postMessage(channel="C1", text="x")) == "fatal_error"


# ----------------------------------------------------------------------------- bot.slack.client


def test_blocking_client_waits_out_one_429(fake_slack):
    client = web_client(slack_settings(fake_slack))
    fake_slack.fail_next("chat.postMessage", status=429, retry_after=1)
    client.chat_postMessage(channel="C1", text="x")
    limited, sent = fake_slack.calls("chat.postMessage")
    assert (limited.status, sent.status) == (429, 200)
    assert sent.at - limited.at >= 1.0  # it slept for Retry-After: never on an ack path


def test_blocking_client_retries_server_errors_twice(fake_slack):
    client = web_client(slack_settings(fake_slack), backoff_factor=0.01)
    fake_slack.server_errors(count=2)
    assert client.auth_test()["ok"]
    fake_slack.server_errors(count=3)
    with pytest.raises(SlackApiError):
        client.auth_test()
    assert [c.status for c in fake_slack.calls("auth.test")] == [500, 500, 200, 500, 500, 500]


def test_non_blocking_client_never_retries(fake_slack, slack):
    fake_slack.fail_next("chat.postMessage", status=429, retry_after=30)
    with pytest.raises(SlackApiError):
        slack.chat_postMessage(channel="C1", text="x")
    assert len(fake_slack.calls()) == 1  # the 429 reached the caller, not a sleep and a retry
    fake_slack.server_errors(count=1)
    with pytest.raises(SlackApiError):
        slack.auth_test()
    assert len(fake_slack.calls()) == 2


def test_client_takes_base_url_without_trailing_slash(fake_slack):
    settings = Settings(_env_file=None, SLACK_BOT_TOKEN=fake_slack.token, SLACK_API_URL=fake_slack.url.rstrip("/"))
    assert web_client(settings).auth_test()["ok"]


def test_async_client_against_the_fake(fake_slack):
    fake_slack.add_user("U1", "ana@example.com")

    async def scenario():
        client = async_web_client(slack_settings(fake_slack))
        fake_slack.server_errors(count=1)  # retried by the async server-error handler
        await client.auth_test()
        await client.chat_postMessage(channel="C1", text="async", blocks=[section("x")])
        found = await client.users_lookupByEmail(email="ana@example.com")  # a GET with a query string
        history = await client.conversations_history(channel="C1")
        return found["user"]["id"], [m["text"] for m in history["messages"]]

    assert asyncio.run(scenario()) == ("U1", ["async"])
    assert fake_slack.calls("users.lookupByEmail")[0].http_method == "GET"
