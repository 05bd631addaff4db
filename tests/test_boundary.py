"""The Slack listeners' boundary (bot/slack/boundary.py) without HTTP: how a module-level
listener is wrapped for Bolt, and what the user is told when it fails."""

from __future__ import annotations

import asyncio

import pytest

from bot.slack.boundary import BOLT_ARGS, after_ack, lazy, listener
from bot.stalls.errors import NotAllowed

SERVICES = object()  # the wrappers only hand it on


class Recorder:
    def __init__(self):
        self.calls = []

    async def __call__(self, **kwargs):
        self.calls.append(kwargs)


def run(wrapper, **given):
    args = {name: given.get(name) for name in BOLT_ARGS}
    return asyncio.run(wrapper(**args))


def test_a_listener_must_take_services_first_and_only_bolt_names():
    async def no_services(body):
        pass

    async def unknown(services, say):
        pass

    for func in (no_services, unknown):
        with pytest.raises(TypeError):
            listener(SERVICES, func)


def test_the_listener_gets_the_services_and_what_it_asks_for():
    seen = []

    async def on_event(services, event, client):
        seen.append((services, event, client))

    wrapped = listener(SERVICES, on_event)
    assert wrapped.__name__ == "on_event"
    run(wrapped, event={"type": "x"}, client="C", body={"ignored": True})
    assert seen == [(SERVICES, {"type": "x"}, "C")]


def test_a_domain_error_in_a_lazy_listener_is_told_ephemerally():
    async def refused(services, body):
        raise NotAllowed("Only the owner can do that.")

    respond = Recorder()
    run(lazy(SERVICES, refused), body={"response_url": "https://hooks.example/1"}, respond=respond,
        context={"user_id": "U1"})
    assert respond.calls == [{"text": "Only the owner can do that.", "response_type": "ephemeral",
                              "replace_original": False}]


def test_an_unexpected_error_after_ack_shows_an_error_id():
    async def broken(services):
        raise RuntimeError("boom")

    acks, respond = Recorder(), Recorder()
    run(after_ack(SERVICES, broken), ack=acks, body={"response_url": "https://hooks.example/1"}, respond=respond,
        context={})
    assert acks.calls == [{}]
    [told] = respond.calls
    assert "error id" in told["text"] and "boom" not in told["text"]


def test_no_response_url_means_only_a_log_line():
    async def refused(services):
        raise NotAllowed()

    respond = Recorder()
    run(lazy(SERVICES, refused), body={}, respond=respond, context={})
    assert respond.calls == []


def test_already_resolved_carries_who_and_status_and_only_the_slack_adapter_writes_the_mention():
    from pathlib import Path

    from bot.slack.boundary import error_text
    from bot.stalls.errors import AlreadyResolved

    by_person = AlreadyResolved("U0OWNER", "resolved")
    assert (by_person.by, by_person.status) == ("U0OWNER", "resolved")
    assert "<@" not in by_person.message  # the domain layer speaks no chat markup
    assert error_text(by_person) == "This stall was already resolved by <@U0OWNER>."
    assert error_text(AlreadyResolved("system", "auto_resolved")) == (
        "This stall was already resolved automatically (the account moved on).")
    assert error_text(AlreadyResolved("cli", "resolved")) == "This stall was already resolved."
    assert error_text(AlreadyResolved(None, "suppressed")).startswith("This stall was already closed")
    stalls = Path(__file__).resolve().parents[1] / "bot" / "stalls"
    marked = [f"{p.name}: {m}" for p in stalls.glob("*.py") for m in ("<@", "<!", "<#") if m in p.read_text()]
    assert marked == []  # mentions and special mentions are worded by the Slack adapter
