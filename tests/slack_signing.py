"""Requests to /slack/events signed exactly as Slack signs them, with realistic payloads.

Slack's scheme (api.slack.com/authentication/verifying-requests-from-slack): the header
`X-Slack-Request-Timestamp: <unix seconds>` and `X-Slack-Signature: v0=<hex>`, where hex is
HMAC-SHA256(signing secret, "v0:{timestamp}:{raw body}"). Slash commands are form-encoded;
interactions are form-encoded with one `payload=<json>` field; events are JSON.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from urllib.parse import urlencode

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BOT_TOKEN = "xoxb-test-token"
TEAM_ID = "T0FAKE"
API_APP_ID = "A0STALLW"

_n = itertools.count(1)


def trigger_id() -> str:
    """A trigger_id as Slack mints it, carrying its birth time in milliseconds, which the fake
    Slack reads to refuse a views.open more than 3 seconds later (expired_trigger_id)."""
    return f"{next(_n)}.{int(time.time() * 1000)}.abcdef"


def sign(body: bytes, *, secret: str = SIGNING_SECRET, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    base = b"v0:" + ts.encode() + b":" + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


def signed(body: bytes, content_type: str, **kw) -> tuple[bytes, dict[str, str]]:
    return body, {"Content-Type": content_type, **sign(body, **kw)}


def response_url(fake, name: str = "cmd") -> str:
    """A response_url on the fake Slack: the fake records what is posted there as a call of
    the method `response.<name>.<n>` (it answers unknown_method, which nobody reads)."""
    return f"{fake.url}response.{name}.{next(_n)}"


def slash_command(command: str, text: str, *, user_id: str, response_url: str, channel_id: str = "C0CS",
                  **kw) -> tuple[bytes, dict[str, str]]:
    form = {
        "token": "deprecated-verification-token", "team_id": TEAM_ID, "team_domain": "fake",
        "channel_id": channel_id, "channel_name": "cs-team", "user_id": user_id, "user_name": user_id.lower(),
        "command": command, "text": text, "api_app_id": API_APP_ID, "is_enterprise_install": "false",
        "response_url": response_url, "trigger_id": trigger_id(),
    }
    return signed(urlencode(form).encode(), "application/x-www-form-urlencoded", **kw)


def block_actions(action: dict, *, user_id: str, response_url: str | None = None,
                  container: dict | None = None, channel_id: str | None = "C0ALERTS",
                  message: dict | None = None, view: dict | None = None, **kw) -> tuple[bytes, dict[str, str]]:
    """A block_actions interaction: one action (as Slack sends it: action_id, block_id, value
    or selected_option, type, action_ts) clicked by `user_id`."""
    payload: dict = {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_id.lower(), "name": user_id.lower(), "team_id": TEAM_ID},
        "api_app_id": API_APP_ID, "token": "deprecated-verification-token",
        "container": container or {"type": "message", "message_ts": "1.1", "channel_id": channel_id,
                                   "is_ephemeral": False},
        "trigger_id": trigger_id(),
        "team": {"id": TEAM_ID, "domain": "fake"},
        "enterprise": None, "is_enterprise_install": False,
        "actions": [{"action_ts": f"{time.time():.6f}", **action}],
    }
    if channel_id:
        payload["channel"] = {"id": channel_id, "name": "alerts"}
    if response_url:
        payload["response_url"] = response_url
    if message is not None:
        payload["message"] = message
    if view is not None:
        payload["view"] = view
    body = urlencode({"payload": json.dumps(payload)}).encode()
    return signed(body, "application/x-www-form-urlencoded", **kw)


def view_submission(view: dict, values: dict[str, str], *, user_id: str, **kw) -> tuple[bytes, dict[str, str]]:
    """The submission of a modal as Slack sends it: the view as stored (id, hash,
    private_metadata, callback_id, blocks) and the state of its inputs; `values` maps each
    input's block id (== its action id, as ours are) to the text typed."""
    state = {}
    for block in view.get("blocks", []):
        if block.get("type") != "input":
            continue
        element = block["element"]
        if element["type"] == "checkboxes":  # values: the ticked options' values (a list)
            ticked = values.get(block["block_id"]) or []
            state[block["block_id"]] = {element["action_id"]: {"type": "checkboxes", "selected_options": [
                o for o in element.get("options", []) if o["value"] in ticked]}}
            continue
        if element["type"] in ("radio_buttons", "static_select"):  # values: the chosen option's value
            chosen = [o for o in element.get("options", []) if o["value"] == values.get(block["block_id"])]
            state[block["block_id"]] = {element["action_id"]: {"type": element["type"],
                                                               "selected_option": chosen[0] if chosen else None}}
            continue
        if element["type"] == "datepicker":  # values: "YYYY-MM-DD" (None: no date picked)
            state[block["block_id"]] = {element["action_id"]: {"type": "datepicker",
                                                               "selected_date": values.get(block["block_id"])}}
            continue
        if element["type"] == "users_select":  # values: the picked user id
            state[block["block_id"]] = {element["action_id"]: {"type": "users_select",
                                                               "selected_user": values.get(block["block_id"])}}
            continue
        state[block["block_id"]] = {element["action_id"]: {"type": element["type"],
                                                           "value": values.get(block["block_id"])}}
    payload = {
        "type": "view_submission", "team": {"id": TEAM_ID, "domain": "fake"},
        "user": {"id": user_id, "username": user_id.lower(), "name": user_id.lower(), "team_id": TEAM_ID},
        "api_app_id": API_APP_ID, "token": "deprecated-verification-token", "trigger_id": trigger_id(),
        "view": {**view, "state": {"values": state}}, "response_urls": [], "is_enterprise_install": False,
        "enterprise": None,
    }
    body = urlencode({"payload": json.dumps(payload)}).encode()
    return signed(body, "application/x-www-form-urlencoded", **kw)


def event_callback(event: dict, **kw) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({
        "token": "deprecated-verification-token", "team_id": TEAM_ID, "api_app_id": API_APP_ID,
        "event": event, "type": "event_callback", "event_id": f"Ev{next(_n):08d}",
        "event_time": int(time.time()), "authorizations": [
            {"team_id": TEAM_ID, "user_id": "U0BOT", "is_bot": True, "is_enterprise_install": False}],
    }).encode()
    return signed(body, "application/json", **kw)


def button(element: dict, block_id: str) -> dict:
    """The action Slack sends for a clicked button or chosen option of a rendered element."""
    action = {"action_id": element["action_id"], "block_id": block_id, "type": element["type"]}
    if element["type"] == "button":
        action["value"] = element["value"]
        action["text"] = element["text"]
    return action


def choose(element: dict, block_id: str, option_index: int) -> dict:
    option = element["options"][option_index]
    return {"action_id": element["action_id"], "block_id": block_id, "type": element["type"],
            "selected_option": option}


# --- the harness: the real app on loopback, Slack pointed at the fake ---------------------------

ADMIN = "U0ADMIN"


class SlackHarness:
    """Sends signed requests to the live app's /slack/events and reads the fake Slack."""

    def __init__(self, fake, http, engine, settings):
        self.fake, self.http, self.engine, self.settings = fake, http, engine, settings

    @property
    def rules(self):
        return self.settings.rules

    def post(self, signed_request):
        body, headers = signed_request
        return self.http.post("/slack/events", content=body, headers=headers)

    def command(self, command: str, text: str, user: str):
        """Run a slash command; returns (HTTP response, the response_url's method name)."""
        url = response_url(self.fake, command.strip("/"))
        res = self.post(slash_command(command, text, user_id=user, response_url=url))
        return res, url.rsplit("/", 1)[-1]

    def click(self, action: dict, user: str, **kw):
        """Click; returns (HTTP response, the response_url's method name)."""
        url = response_url(self.fake, "action")
        res = self.post(block_actions(action, user_id=user, response_url=url, **kw))
        return res, url.rsplit("/", 1)[-1]

    def submit(self, view: dict, values: dict[str, str], user: str):
        """Submit a modal; returns the HTTP response (its JSON is the ack: errors, update...)."""
        return self.post(view_submission(view, values, user_id=user))

    def submit_opened(self, values: dict[str, str], user: str, count: int = 1):
        """Submit the modal the app opened last, once it opened `count` modals (views.open)."""
        opened = self.fake.wait_for_calls("views.open", count, timeout=10)[-1]
        return self.submit(opened.response["view"], values, user)

    def answer(self, method: str, timeout: float = 10.0) -> dict:
        """What the app posted to a response_url (waits for the lazy listener)."""
        return self.fake.wait_for_calls(method, 1, timeout=timeout)[0].body

    def deliver(self) -> int:
        """One pass of the Slack outbox sender (listeners queue their edits there)."""
        from bot.slack.client import web_client
        from bot.slack.outbox import OutboxSender

        return OutboxSender(self.engine, lambda: web_client(self.settings, blocking_retries=False),
                            rules=self.rules).run_once()

    def wait_delivered(self, method: str, count: int = 1, timeout: float = 10.0) -> list:
        """Run the outbox sender until the fake Slack saw `count` calls of `method` (a lazy
        listener queues its edits a moment after the click is acked)."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            self.deliver()  # outside the fake's lock: the sender calls the fake
            if len(self.fake.calls(method)) >= count:
                return self.fake.calls(method)
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} {method} calls, got {len(self.fake.calls(method))}")
            time.sleep(0.05)


def make_slack_harness(fake, engine, db_url, **settings_extra):
    """Context manager yielding a SlackHarness (used by the `slack` fixtures); `settings_extra`
    adds settings by their environment names (OPENAI_BASE_URL=..., SMTP_URL=...)."""
    import contextlib

    import httpx

    from bot.app import create_app
    from bot.settings import Settings
    from tests.conftest import LiveServer

    @contextlib.contextmanager
    def run():
        settings = Settings(
            _env_file=None, DATABASE_URL=db_url, SLACK_BOT_TOKEN=fake.token, SLACK_SIGNING_SECRET=SIGNING_SECRET,
            SLACK_API_URL=fake.url, STALLWATCH_ADMINS=ADMIN, **settings_extra,
        )
        app = create_app(settings, engine=engine, on_events_stored=lambda ids: None)
        with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=30) as http:
            yield SlackHarness(fake, http, engine, settings)

    return run()
