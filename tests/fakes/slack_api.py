"""A fake Slack Web API served over real HTTP on loopback, for tests that use slack_sdk as-is.

    with FakeSlack() as slack:
        client = WebClient(token=slack.token, base_url=slack.url)
        client.chat_postMessage(channel="C1", text="hi")
        assert slack.calls("chat.postMessage")[0].body["text"] == "hi"

What it does like Slack: answers every method with HTTP 200 and `{"ok": false, "error": ...}`
on a logical error; takes form-encoded, JSON, multipart and GET query parameters (slack_sdk
sends JSON for chat.*/views.*, a form for the rest, and GET queries from the async client);
checks `Authorization: Bearer xoxb-...`; rejects Block Kit that breaks Slack's limits (50
blocks per message, 100 per view, section text 3,000, header 150, button text 75, value
2,000, ids 255, ~13,000 characters of block text per message); keeps messages per channel so
chat.update, conversations.history (with metadata) and chat.getPermalink see them; runs the
three-step files_upload_v2 flow. Every call is recorded with its parsed body and headers.

Faults: `fail_next` (the next n calls of a method answer 429 / 5xx / a Slack error),
`rate_limit_for` (everything, or one channel, answers 429 with Retry-After for a while),
`server_errors` (random or counted 5xx). With `deliver=True` a fault is answered *after* the
call took effect: the "Slack posted it but the response was lost" case.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import random
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import parse_qsl, urlsplit

from tests.fakes.loopback import LoopbackServer

# Slack's documented Block Kit limits (and the undocumented total checked as msg_blocks_too_long).
MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_SECTION_TEXT = 3000
MAX_FIELD_TEXT = 2000
MAX_FIELDS = 10
MAX_HEADER_TEXT = 150
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_ID = 255
MAX_URL = 3000
MAX_CONTEXT_ELEMENTS = 10
MAX_ACTIONS_ELEMENTS = 25
MAX_OPTIONS = 100
MAX_OPTION_TEXT = 75
MAX_OPTION_VALUE = 150
MAX_BLOCK_TEXT_TOTAL = 13_000
MAX_MESSAGE_TEXT = 40_000
MAX_VIEW_TITLE = 24
MAX_PRIVATE_METADATA = 3000

BLOCK_TYPES = {
    "section", "divider", "image", "actions", "context", "input", "header", "rich_text",
    "file", "video", "markdown",
}
TEXT_TYPES = {"plain_text", "mrkdwn"}
JSON_PARAMS = {"blocks", "attachments", "view", "metadata", "files"}
CHANNEL_ID = re.compile(r"[CDG][A-Z0-9]+")
USER_ID = re.compile(r"[UW][A-Z0-9]+")



TRIGGER_TTL = 3.0  # seconds a trigger_id may open a view


def _trigger_age(trigger: str) -> float:
    """Seconds since a trigger_id minted by tests.slack_signing.trigger_id ("n.<ms>.hex");
    0 for one that carries no time."""
    parts = str(trigger).split(".")
    try:
        born = int(parts[1]) / 1000 if len(parts) == 3 else None
    except ValueError:
        born = None
    if born is None or born < 10**9:  # not a time (e.g. "1.1234.abc"): never ages
        return 0.0
    return time.time() - born

class SlackError(Exception):
    """A logical Slack error: HTTP 200 with ok=false."""

    def __init__(self, error: str, *messages: str):
        super().__init__(error)
        self.error = error
        self.messages = list(messages)

    def body(self) -> dict:
        body: dict[str, Any] = {"ok": False, "error": self.error}
        if self.messages:
            body["response_metadata"] = {"messages": self.messages}
        return body


@dataclass
class Call:
    """One request as the fake received it."""

    method: str  # "chat.postMessage", or "files.upload_url" for the upload step
    body: dict[str, Any]  # query and body parameters; JSON-valued form fields decoded
    headers: dict[str, str]
    at: float  # time.time() when it arrived
    http_method: str = "POST"
    content_type: str = ""
    raw: bytes = b""
    status: int = 0
    response: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200 and bool(self.response and self.response.get("ok"))

    @property
    def is_json(self) -> bool:
        return self.content_type.startswith("application/json")


@dataclass
class _Fault:
    status: int
    retry_after: int = 1
    error: str | None = None
    deliver: bool = False
    method: str | None = None
    channel: str | None = None
    remaining: int | None = None  # None: until `until` or forever
    until: float | None = None  # time.monotonic() deadline
    probability: float = 1.0

    def matches(self, method: str, body: dict, now: float) -> bool:
        if self.until is not None and now >= self.until:
            return False
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.method is not None and self.method != method:
            return False
        if self.channel is not None and _channel_of(body) != self.channel:
            return False
        return True


def _channel_of(body: dict) -> str | None:
    return body.get("channel") or body.get("channel_id")


def _flag(value: Any) -> bool:
    return value is True or str(value).lower() in ("1", "true")


# ----------------------------------------------------------------------------- Block Kit checks


def _too_long(value: Any, limit: int, where: str) -> list[str]:
    if isinstance(value, str) and len(value) > limit:
        return [f"[ERROR] must be less than {limit + 1} characters [json-pointer:{where}]"]
    return []


def _text_object(obj: Any, limit: int, where: str, *, plain_only: bool = False) -> list[str]:
    if not isinstance(obj, dict) or obj.get("type") not in TEXT_TYPES or not isinstance(obj.get("text"), str):
        return [f"[ERROR] must be a text object [json-pointer:{where}]"]
    if plain_only and obj["type"] != "plain_text":
        return [f"[ERROR] must be plain_text [json-pointer:{where}]"]
    return _too_long(obj["text"], limit, f"{where}/text")


def _element(el: Any, where: str) -> list[str]:
    if not isinstance(el, dict) or not isinstance(el.get("type"), str):
        return [f"[ERROR] missing required field: type [json-pointer:{where}]"]
    problems = _too_long(el.get("action_id"), MAX_ID, f"{where}/action_id")
    kind = el["type"]
    if kind == "button":
        problems += _text_object(el.get("text"), MAX_BUTTON_TEXT, f"{where}/text", plain_only=True)
        problems += _too_long(el.get("value"), MAX_BUTTON_VALUE, f"{where}/value")
        problems += _too_long(el.get("url"), MAX_URL, f"{where}/url")
    if "placeholder" in el:
        problems += _text_object(el["placeholder"], 150, f"{where}/placeholder", plain_only=True)
    options = el.get("options")
    if isinstance(options, list):
        if len(options) > MAX_OPTIONS:
            problems.append(f"[ERROR] must be no more than {MAX_OPTIONS} items [json-pointer:{where}/options]")
        for i, opt in enumerate(options):
            if not isinstance(opt, dict):
                problems.append(f"[ERROR] must be an option object [json-pointer:{where}/options/{i}]")
                continue
            problems += _text_object(opt.get("text"), MAX_OPTION_TEXT, f"{where}/options/{i}/text")
            problems += _too_long(opt.get("value"), MAX_OPTION_VALUE, f"{where}/options/{i}/value")
    return problems


def _block(block: Any, where: str) -> list[str]:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        return [f"[ERROR] missing required field: type [json-pointer:{where}]"]
    kind = block["type"]
    if kind not in BLOCK_TYPES:
        return [f"[ERROR] unsupported type: {kind} [json-pointer:{where}/type]"]
    problems = _too_long(block.get("block_id"), MAX_ID, f"{where}/block_id")
    if kind == "section":
        if "text" not in block and "fields" not in block:
            problems.append(f"[ERROR] must provide text or fields [json-pointer:{where}]")
        if "text" in block:
            problems += _text_object(block["text"], MAX_SECTION_TEXT, f"{where}/text")
        fields = block.get("fields")
        if fields is not None:
            if not isinstance(fields, list) or len(fields) > MAX_FIELDS:
                problems.append(f"[ERROR] must be no more than {MAX_FIELDS} items [json-pointer:{where}/fields]")
            else:
                for i, f in enumerate(fields):
                    problems += _text_object(f, MAX_FIELD_TEXT, f"{where}/fields/{i}")
        if "accessory" in block:
            problems += _element(block["accessory"], f"{where}/accessory")
    elif kind == "header":
        problems += _text_object(block.get("text"), MAX_HEADER_TEXT, f"{where}/text", plain_only=True)
    elif kind in ("actions", "context"):
        limit = MAX_ACTIONS_ELEMENTS if kind == "actions" else MAX_CONTEXT_ELEMENTS
        elements = block.get("elements")
        if not isinstance(elements, list) or not elements or len(elements) > limit:
            problems.append(f"[ERROR] must have 1 to {limit} elements [json-pointer:{where}/elements]")
        else:
            for i, el in enumerate(elements):
                if kind == "actions":
                    problems += _element(el, f"{where}/elements/{i}")
                elif isinstance(el, dict) and el.get("type") in TEXT_TYPES:
                    problems += _text_object(el, MAX_SECTION_TEXT, f"{where}/elements/{i}")
                elif not (isinstance(el, dict) and el.get("type") == "image"):
                    problems.append(f"[ERROR] must be a text or image element [json-pointer:{where}/elements/{i}]")
    elif kind == "input":
        problems += _text_object(block.get("label"), 2000, f"{where}/label", plain_only=True)
        problems += _element(block.get("element"), f"{where}/element")
    return problems


def _text_length(node: Any) -> int:
    """Characters of text in every text object, the measure behind msg_blocks_too_long."""
    if isinstance(node, list):
        return sum(_text_length(n) for n in node)
    if not isinstance(node, dict):
        return 0
    own = len(node["text"]) if node.get("type") in TEXT_TYPES and isinstance(node.get("text"), str) else 0
    return own + sum(_text_length(v) for k, v in node.items() if isinstance(v, (dict, list)))


def check_blocks(blocks: Any, *, limit: int, where: str = "/blocks") -> list | None:
    """Validated blocks, raising SlackError like Slack does; None when absent."""
    if blocks is None:
        return None
    if isinstance(blocks, str):
        try:
            blocks = json.loads(blocks)
        except ValueError:
            raise SlackError("invalid_blocks_format", f"[ERROR] invalid JSON [json-pointer:{where}]")
    if not isinstance(blocks, list):
        raise SlackError("invalid_blocks_format", f"[ERROR] must be an array [json-pointer:{where}]")
    if len(blocks) > limit:
        raise SlackError("invalid_blocks", f"[ERROR] must be no more than {limit} items [json-pointer:{where}]")
    problems = [p for i, b in enumerate(blocks) for p in _block(b, f"{where}/{i}")]
    if problems:
        raise SlackError("invalid_blocks", *problems)
    return blocks


# ----------------------------------------------------------------------------- the fake


class FakeSlack(LoopbackServer):
    """The fake Web API. Use as a context manager; `url` is slack_sdk's `base_url`."""

    def __init__(self, token: str = "xoxb-test-token", *, team_id: str = "T0FAKE", bot_user_id: str = "U0BOT"):
        self.token = token
        self.tokens = {token}
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.bot_id = "B0BOT"
        self.latency = 0.0  # seconds added to every API call, outside the state lock
        self.missing_channels: set[str] = set()  # answer channel_not_found
        self.not_member_channels: set[str] = set()  # answer not_in_channel
        self.channel_names: dict[str, str] = {}  # channel id -> name (conversations.info)
        self.expired_triggers: set[str] = set()
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._calls: list[Call] = []
        self._faults: list[_Fault] = []
        self._random = random.Random(0)
        self._last_ts_us = 0
        self._ids = itertools.count(1)
        self.users: dict[str, dict] = {}  # user id -> users.info object
        self.usergroups: dict[str, dict] = {}  # user group id -> {"users": [...], "disabled": bool}
        self.channels: dict[str, list[dict]] = {}  # channel id -> messages in post order
        self.ephemerals: list[dict] = []
        self.views: dict[str, dict] = {}  # view id -> view
        self.homes: dict[str, str] = {}  # user id -> view id of the published Home tab
        self.files: dict[str, dict] = {}  # file id -> file (with "content" once uploaded)
        self._used_triggers: set[str] = set()
        self.url = ""

    # -- lifecycle

    thread_name = "fake-slack"  # lifecycle: tests.fakes.loopback

    def start(self) -> None:
        super().start()
        self.url = f"{self.base}/api/"

    # -- directory and inspection helpers

    def add_user(self, user_id: str, email: str | None = None, *, name: str | None = None,
                 real_name: str | None = None, tz: str = "America/New_York") -> dict:
        name = name or (email.split("@")[0] if email else user_id.lower())
        user = {
            "id": user_id, "team_id": self.team_id, "name": name, "real_name": real_name or name,
            "deleted": False, "is_bot": False, "tz": tz,
            "profile": {"email": email, "real_name": real_name or name, "display_name": name},
        }
        with self._lock:
            self.users[user_id] = user
        return user

    def add_usergroup(self, group_id: str, users, *, disabled: bool = False) -> None:
        """A user group (`S...`) and its members, as usergroups.users.list lists them."""
        with self._lock:
            self.usergroups[group_id] = {"users": list(users), "disabled": disabled}

    def calls(self, method: str | None = None) -> list[Call]:
        """Recorded calls, oldest first (a copy), optionally of one method."""
        with self._lock:
            return [c for c in self._calls if method is None or c.method == method]

    def clear_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    def messages(self, channel: str) -> list[dict]:
        """Every message in a channel, thread replies included, in post order (copies)."""
        with self._lock:
            return [dict(m) for m in self.channels.get(channel, [])]

    def all_messages(self) -> list[dict]:
        with self._lock:
            return [dict(m, channel=ch) for ch, msgs in self.channels.items() for m in msgs]

    def dm_channel(self, user_id: str) -> str:
        """The DM channel id conversations.open answers for a user."""
        return f"D{user_id}"

    def home(self, user_id: str) -> dict | None:
        with self._lock:
            view_id = self.homes.get(user_id)
            return self.views.get(view_id) if view_id else None

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Wait until `predicate()` (evaluated under the fake's lock after each call) holds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def wait_for_calls(self, method: str, count: int = 1, timeout: float = 5.0) -> list[Call]:
        if not self.wait_for(lambda: len(self.calls(method)) >= count, timeout):
            raise AssertionError(f"expected {count} {method} calls, got {len(self.calls(method))}")
        return self.calls(method)

    # -- fault injection

    def fail_next(self, method: str, status: int = 429, retry_after: int = 1, times: int = 1, *,
                  error: str | None = None, deliver: bool = False, channel: str | None = None) -> None:
        """The next `times` calls of `method` answer `status` (429 with Retry-After, 5xx, or 200
        with `error`). deliver=True: the call still takes effect before the error is answered."""
        with self._lock:
            self._faults.append(_Fault(status=status, retry_after=retry_after, error=error, deliver=deliver,
                                       method=method, channel=channel, remaining=times))

    def rate_limit_for(self, seconds: float, retry_after: int = 1, *, channel: str | None = None,
                       method: str | None = None) -> None:
        """Every call (or every call to one channel / method) answers 429 for `seconds`."""
        with self._lock:
            self._faults.append(_Fault(status=429, retry_after=retry_after, method=method, channel=channel,
                                       until=time.monotonic() + seconds))

    def server_errors(self, probability: float | None = None, count: int | None = None, *, status: int = 500,
                      method: str | None = None, deliver: bool = False, seed: int | None = None) -> None:
        """5xx answers: each call with `probability` (until clear_faults), or the next `count` calls."""
        if (probability is None) == (count is None):
            raise ValueError("give probability or count")
        with self._lock:
            if seed is not None:
                self._random.seed(seed)
            self._faults.append(_Fault(status=status, method=method, deliver=deliver, remaining=count,
                                       probability=1.0 if probability is None else probability))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, method: str, body: dict) -> _Fault | None:
        now = time.monotonic()
        self._faults = [f for f in self._faults if (f.remaining is None or f.remaining > 0)
                        and (f.until is None or f.until > now)]
        for fault in self._faults:
            if not fault.matches(method, body, now):
                continue
            if fault.probability < 1.0 and self._random.random() >= fault.probability:
                continue
            if fault.remaining is not None:
                fault.remaining -= 1
            return fault
        return None

    # -- request handling (called from the HTTP handler threads)

    def handle(self, verb: str, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict, bytes]:
        parts = urlsplit(path)
        lower = {k.lower(): v for k, v in headers.items()}
        content_type = lower.get("content-type", "")
        if parts.path.startswith("/upload/"):
            return self._handle_upload(parts.path.rsplit("/", 1)[-1], verb, headers, content_type, raw)
        if not parts.path.startswith("/api/"):
            return 404, {"Content-Type": "text/plain"}, b"not found"
        method = parts.path[len("/api/"):]
        try:
            body = _parse_params(parts.query, content_type, raw)
        except ValueError:
            body = {}
            bad_body = True
        else:
            bad_body = False
        call = Call(method=method, body=body, headers=dict(headers), at=time.time(), http_method=verb,
                    content_type=content_type, raw=raw)
        if self.latency:
            time.sleep(self.latency)
        with self._changed:
            status, extra, answer = self._answer(method, call, lower, bad_body)
            call.status = status
            call.response = answer if isinstance(answer, dict) else None
            self._calls.append(call)
            self._changed.notify_all()
        if isinstance(answer, dict):
            return status, {"Content-Type": "application/json; charset=utf-8", **extra}, json.dumps(answer).encode()
        return status, {"Content-Type": "text/html; charset=utf-8", **extra}, answer

    def _answer(self, method: str, call: Call, headers: dict, bad_body: bool) -> tuple[int, dict, Any]:
        auth = self._check_auth(headers, call.body)
        if auth is not None:
            return 200, {}, auth.body()
        if bad_body:
            return 200, {}, {"ok": False, "error": "invalid_json"}
        fault = self._take_fault(method, call.body)
        if fault is not None and not fault.deliver:
            return self._fault_answer(fault)
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            answer: dict = {"ok": False, "error": "unknown_method"}
        else:
            try:
                answer = {"ok": True, **handler(call.body)}
            except SlackError as e:
                answer = e.body()
            except (ValueError, TypeError, KeyError, AttributeError) as e:
                answer = SlackError("invalid_arguments", f"[ERROR] {e}").body()
        if fault is not None:
            return self._fault_answer(fault)
        return 200, {}, answer

    def _fault_answer(self, fault: _Fault) -> tuple[int, dict, Any]:
        if fault.status == 429:
            return 429, {"Retry-After": str(fault.retry_after)}, {"ok": False, "error": "ratelimited"}
        if fault.status >= 500:
            return fault.status, {}, b"<html><body><h1>Server Error</h1></body></html>"
        return fault.status, {}, {"ok": False, "error": fault.error or "fatal_error"}

    def _check_auth(self, headers: dict, body: dict) -> SlackError | None:
        value = headers.get("authorization", "")
        token = value[len("Bearer "):] if value.startswith("Bearer ") else body.get("token")
        if not token:
            return SlackError("not_authed")
        if not token.startswith("xoxb-") or token not in self.tokens:
            return SlackError("invalid_auth")
        return None

    def _handle_upload(self, file_id: str, verb: str, headers: dict, content_type: str,
                       raw: bytes) -> tuple[int, dict, bytes]:
        call = Call(method="files.upload_url", body={"file_id": file_id, "length": len(raw)}, headers=dict(headers),
                    at=time.time(), http_method=verb, content_type=content_type, raw=raw)
        with self._changed:
            fault = self._take_fault(call.method, call.body)
            found = self.files.get(file_id)
            if fault is not None and not fault.deliver:
                status, body = fault.status, b"upload failed"
            elif found is None:
                status, body = 404, b"no such upload"
            else:
                found["content"] = raw
                found["size"] = len(raw)
                status, body = (fault.status, b"upload failed") if fault else (200, f"OK - {len(raw)}".encode())
            call.status = status
            self._calls.append(call)
            self._changed.notify_all()
        return status, {"Content-Type": "text/plain; charset=utf-8"}, body

    # -- helpers for the methods (called with the lock held)

    def _next_ts(self) -> str:
        now_us = int(time.time() * 1_000_000)
        self._last_ts_us = max(now_us, self._last_ts_us + 1)
        return f"{self._last_ts_us // 1_000_000}.{self._last_ts_us % 1_000_000:06d}"

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):08d}"

    def _channel(self, body: dict, param: str = "channel") -> str:
        channel = body.get(param)
        if not channel:
            raise SlackError("channel_not_found")
        if not CHANNEL_ID.fullmatch(str(channel)) or channel in self.missing_channels:
            raise SlackError("channel_not_found")
        if channel in self.not_member_channels:
            raise SlackError("not_in_channel")
        return channel

    def _user(self, user_id: Any) -> str:
        if not user_id or not USER_ID.fullmatch(str(user_id)):
            raise SlackError("user_not_found")
        return user_id

    def _find(self, channel: str, ts: Any) -> dict:
        for message in self.channels.get(channel, []):
            if message["ts"] == ts:
                return message
        raise SlackError("message_not_found")

    def _message_content(self, body: dict, *, require: bool = True) -> dict:
        blocks = check_blocks(body.get("blocks"), limit=MAX_MESSAGE_BLOCKS)
        if blocks is not None and _text_length(blocks) > MAX_BLOCK_TEXT_TOTAL:
            raise SlackError("msg_blocks_too_long")
        text = body.get("text")
        if text is not None and len(str(text)) > MAX_MESSAGE_TEXT:
            raise SlackError("msg_too_long")
        if require and not text and not blocks and not body.get("attachments"):
            raise SlackError("no_text")
        content: dict[str, Any] = {"text": text or ""} if require or text is not None else {}
        if blocks is not None:
            content["blocks"] = blocks
        metadata = body.get("metadata")
        if metadata is not None:
            if not isinstance(metadata, dict) or not isinstance(metadata.get("event_type"), str) \
                    or not isinstance(metadata.get("event_payload"), dict):
                raise SlackError("invalid_metadata_format")
            content["metadata"] = metadata
        return content

    def _public(self, message: dict, *, with_metadata: bool) -> dict:
        out = {k: v for k, v in message.items() if k != "metadata" or with_metadata}
        return out

    # -- the methods (names: "_m_" + method with dots as underscores)

    def _m_api_test(self, body: dict) -> dict:
        return {"args": {k: f"({len(v)} bytes)" if isinstance(v, bytes) else v for k, v in body.items()}}

    def _m_auth_test(self, body: dict) -> dict:
        return {"url": "https://fake.slack.com/", "team": "Fake Team", "user": "stallwatch",
                "team_id": self.team_id, "user_id": self.bot_user_id, "bot_id": self.bot_id,
                "is_enterprise_install": False}

    def _m_chat_postMessage(self, body: dict) -> dict:
        channel = self._channel(body)
        message = {"type": "message", "ts": self._next_ts(), "user": self.bot_user_id, "bot_id": self.bot_id,
                   "team": self.team_id, **self._message_content(body)}
        thread_ts = body.get("thread_ts")
        if thread_ts:
            parent = self._find(channel, thread_ts)
            message["thread_ts"] = thread_ts
            parent.setdefault("thread_ts", thread_ts)
            parent["reply_count"] = parent.get("reply_count", 0) + 1
            if _flag(body.get("reply_broadcast")):
                message["subtype"] = "thread_broadcast"
        self.channels.setdefault(channel, []).append(message)
        return {"channel": channel, "ts": message["ts"], "message": self._public(message, with_metadata=True)}

    def _m_chat_update(self, body: dict) -> dict:
        channel = self._channel(body)
        message = self._find(channel, body.get("ts"))
        message.update(self._message_content(body, require=False))
        message["edited"] = {"user": self.bot_user_id, "ts": self._next_ts()}
        return {"channel": channel, "ts": message["ts"], "text": message["text"],
                "message": self._public(message, with_metadata=True)}

    def _m_chat_postEphemeral(self, body: dict) -> dict:
        channel = self._channel(body)
        user = self._user(body.get("user"))
        content = self._message_content(body)
        ts = self._next_ts()
        self.ephemerals.append({"channel": channel, "user": user, "ts": ts, **content})
        return {"message_ts": ts}

    def _m_chat_getPermalink(self, body: dict) -> dict:
        channel = self._channel(body)
        message = self._find(channel, body.get("message_ts"))
        return {"channel": channel,
                "permalink": f"https://fake.slack.com/archives/{channel}/p{message['ts'].replace('.', '')}"}

    def _m_conversations_open(self, body: dict) -> dict:
        users = body.get("users")
        if isinstance(users, list):
            users = ",".join(users)
        if body.get("channel"):
            return {"channel": {"id": self._channel(body)}}
        if not users:
            raise SlackError("users_list_not_supplied")
        ids = [self._user(u.strip()) for u in str(users).split(",")]
        if len(ids) != 1:
            raise SlackError("not_supported", "[ERROR] the fake opens one-to-one DMs only")
        channel = self.dm_channel(ids[0])
        already = channel in self.channels
        self.channels.setdefault(channel, [])
        return {"no_op": already, "already_open": already, "channel": {"id": channel}}

    def _m_conversations_info(self, body: dict) -> dict:
        """A channel the bot can see; `is_member` False for one in not_member_channels."""
        channel = body.get("channel")
        if not channel or not CHANNEL_ID.fullmatch(str(channel)) or channel in self.missing_channels:
            raise SlackError("channel_not_found")
        return {"channel": {"id": channel, "name": self.channel_names.get(channel, channel.lower()),
                            "is_channel": True, "is_private": False,
                            "is_member": channel not in self.not_member_channels}}

    def _history_window(self, body: dict, messages: list[dict]) -> list[dict]:
        oldest, latest = float(body.get("oldest") or 0), float(body.get("latest") or "inf")
        inclusive = _flag(body.get("inclusive"))
        return [m for m in messages
                if (oldest <= float(m["ts"]) if inclusive else oldest < float(m["ts"]))
                and (float(m["ts"]) <= latest if inclusive else float(m["ts"]) < latest)]

    def _page(self, body: dict, messages: list[dict]) -> dict:
        limit = max(1, min(int(body.get("limit") or 100), 999))
        cursor = body.get("cursor") or ""
        start = int(cursor.split(":", 1)[1]) if cursor.startswith("offset:") else 0
        page = messages[start:start + limit]
        more = start + limit < len(messages)
        with_metadata = _flag(body.get("include_all_metadata"))
        return {"messages": [self._public(m, with_metadata=with_metadata) for m in page], "has_more": more,
                "response_metadata": {"next_cursor": f"offset:{start + limit}" if more else ""}}

    def _m_conversations_history(self, body: dict) -> dict:
        channel = self._channel(body)
        top = [m for m in self.channels.get(channel, [])
               if m.get("thread_ts") in (None, m["ts"]) or m.get("subtype") == "thread_broadcast"]
        newest_first = list(reversed(self._history_window(body, top)))
        return {"pin_count": 0, **self._page(body, newest_first)}

    def _m_conversations_replies(self, body: dict) -> dict:
        channel = self._channel(body)
        try:
            parent = self._find(channel, body.get("ts"))
        except SlackError:
            raise SlackError("thread_not_found")
        thread = [m for m in self.channels[channel] if m is parent or m.get("thread_ts") == parent["ts"]]
        return self._page(body, [parent] + self._history_window(body, thread[1:]))

    def _m_users_lookupByEmail(self, body: dict) -> dict:
        email_ = str(body.get("email") or "").lower()
        for user in self.users.values():
            if (user["profile"].get("email") or "").lower() == email_ and email_:
                return {"user": user}
        raise SlackError("users_not_found")

    def _m_usergroups_users_list(self, body: dict) -> dict:
        """Slack's answer: `{"ok": true, "users": ["U060R4BJ4", ...]}`; `no_such_subteam` for an
        unknown group; a disabled group only with `include_disabled`."""
        if not body.get("usergroup"):
            raise SlackError("invalid_arguments")
        group = self.usergroups.get(str(body["usergroup"]))
        if group is None or (group["disabled"] and not _flag(body.get("include_disabled"))):
            raise SlackError("no_such_subteam")
        return {"users": list(group["users"])}

    def _m_users_info(self, body: dict) -> dict:
        user = self.users.get(body.get("user"))
        if user is None:
            raise SlackError("user_not_found")
        return {"user": user}

    def _checked_view(self, view: Any, *, home: bool) -> dict:
        if isinstance(view, str):
            try:
                view = json.loads(view)
            except ValueError:
                raise SlackError("invalid_arguments", "[ERROR] invalid JSON [json-pointer:/view]")
        if not isinstance(view, dict):
            raise SlackError("invalid_arguments", "[ERROR] must be an object [json-pointer:/view]")
        want = "home" if home else "modal"
        if view.get("type") != want:
            raise SlackError("invalid_arguments", f"[ERROR] type must be {want} [json-pointer:/view/type]")
        try:
            check_blocks(view.get("blocks", []), limit=MAX_VIEW_BLOCKS, where="/view/blocks")
        except SlackError as e:
            raise SlackError("invalid_arguments", *e.messages)
        problems = _too_long(view.get("private_metadata"), MAX_PRIVATE_METADATA, "/view/private_metadata")
        problems += _too_long(view.get("callback_id"), MAX_ID, "/view/callback_id")
        problems += _too_long(view.get("external_id"), MAX_ID, "/view/external_id")
        if not home:
            problems += _text_object(view.get("title"), MAX_VIEW_TITLE, "/view/title", plain_only=True)
            for button in ("submit", "close"):
                if button in view:
                    problems += _text_object(view[button], MAX_VIEW_TITLE, f"/view/{button}", plain_only=True)
        if problems:
            raise SlackError("invalid_arguments", *problems)
        return view

    def _store_view(self, view: dict, view_id: str | None = None, **extra) -> dict:
        stored = {"id": view_id or self._new_id("V"), "team_id": self.team_id, "blocks": [],
                  "private_metadata": "", "callback_id": "", "external_id": "", "state": {"values": {}},
                  **view, "hash": f"{time.time():.6f}.{next(self._ids)}", "app_id": "A0FAKE",
                  "bot_id": self.bot_id, **extra}
        self.views[stored["id"]] = stored
        return stored

    def _m_views_open(self, body: dict) -> dict:
        trigger = body.get("trigger_id")
        if not trigger:
            raise SlackError("invalid_arguments", "[ERROR] missing required field: trigger_id")
        if trigger in self.expired_triggers or trigger in self._used_triggers or _trigger_age(trigger) > TRIGGER_TTL:
            raise SlackError("expired_trigger_id")  # a trigger_id is good once, for 3 seconds
        self._used_triggers.add(trigger)
        view = self._checked_view(body.get("view"), home=False)
        if view.get("external_id") and any(v.get("external_id") == view["external_id"] for v in self.views.values()):
            raise SlackError("duplicate_external_id")
        return {"view": self._store_view(view)}

    def _m_views_update(self, body: dict) -> dict:
        view_id, external_id = body.get("view_id"), body.get("external_id")
        found = self.views.get(view_id) if view_id else next(
            (v for v in self.views.values() if external_id and v.get("external_id") == external_id), None)
        if found is None:
            raise SlackError("not_found")
        if body.get("hash") and body["hash"] != found["hash"]:
            raise SlackError("hash_conflict")
        view = self._checked_view(body.get("view"), home=found.get("type") == "home")
        view.setdefault("external_id", found.get("external_id", ""))  # kept unless replaced
        return {"view": self._store_view(view, found["id"])}

    def _m_views_publish(self, body: dict) -> dict:
        user = self._user(body.get("user_id"))
        view = self._checked_view(body.get("view"), home=True)
        current = self.homes.get(user)
        if body.get("hash") and current and body["hash"] != self.views[current]["hash"]:
            raise SlackError("hash_conflict")
        stored = self._store_view(view, current)
        self.homes[user] = stored["id"]
        return {"view": stored}

    def _m_files_getUploadURLExternal(self, body: dict) -> dict:
        filename, length = body.get("filename"), body.get("length")
        if not filename:
            raise SlackError("invalid_arguments", "[ERROR] missing required field: filename")
        try:
            length = int(length)
        except (TypeError, ValueError):
            raise SlackError("invalid_arguments", "[ERROR] missing required field: length")
        file_id = self._new_id("F")
        self.files[file_id] = {"id": file_id, "name": filename, "title": filename, "length": length,
                               "alt_txt": body.get("alt_txt"), "content": None, "shares": {}}
        return {"upload_url": f"{self.base}/upload/v1/{file_id}", "file_id": file_id}

    def _m_files_completeUploadExternal(self, body: dict) -> dict:
        items = body.get("files")
        if isinstance(items, str):
            items = json.loads(items)
        if not isinstance(items, list) or not items:
            raise SlackError("invalid_arguments", "[ERROR] missing required field: files")
        files = []
        for item in items:
            found = self.files.get(item.get("id"))
            if found is None or found["content"] is None:
                raise SlackError("file_not_found")
            if len(found["content"]) != found["length"]:
                raise SlackError("file_upload_size_mismatch")
            found["title"] = item.get("title") or found["name"]
            files.append(found)
        targets = [self._channel({"channel": c}) for c in
                   ([body["channel_id"]] if body.get("channel_id") else [])
                   + [c for c in str(body.get("channels") or "").split(",") if c]]
        for channel in targets:
            ts = self._next_ts()
            message = {"type": "message", "ts": ts, "user": self.bot_user_id, "bot_id": self.bot_id,
                       "text": body.get("initial_comment") or "", "files": [self._file_info(f) for f in files]}
            if body.get("thread_ts"):
                self._find(channel, body["thread_ts"])
                message["thread_ts"] = body["thread_ts"]
            self.channels.setdefault(channel, []).append(message)
            for f in files:
                f["shares"].setdefault(channel, []).append(ts)
        return {"files": [self._file_info(f) for f in files]}

    def _file_info(self, f: dict) -> dict:
        return {"id": f["id"], "name": f["name"], "title": f["title"], "size": f.get("size", f["length"]),
                "mimetype": "application/octet-stream", "url_private": f"{self.base}/files/{f['id']}",
                "permalink": f"https://fake.slack.com/files/{self.bot_user_id}/{f['id']}/{f['name']}",
                "shares": {"public": {ch: [{"ts": ts} for ts in tss] for ch, tss in f["shares"].items()}}}

    def _m_files_info(self, body: dict) -> dict:
        found = self.files.get(body.get("file"))
        if found is None:
            raise SlackError("file_not_found")
        return {"file": self._file_info(found)}


def _parse_params(query: str, content_type: str, raw: bytes) -> dict:
    """Query string plus body, the way Slack reads them; JSON-valued form fields decoded."""
    params: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
    if raw:
        if content_type.startswith("application/json"):
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("JSON body is not an object")
            params.update(body)
            return params
        if content_type.startswith("multipart/form-data"):
            params.update(_parse_multipart(content_type, raw))
        else:
            params.update(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
    for name in JSON_PARAMS & params.keys():
        if isinstance(params[name], str) and params[name][:1] in ("[", "{"):
            try:
                params[name] = json.loads(params[name])
            except ValueError:
                pass  # left as text; the method answers with its own error
    return params


def _parse_multipart(content_type: str, raw: bytes) -> dict:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
    out: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        out[name] = payload if part.get_filename() else payload.decode("utf-8")
    return out
