"""A fake OpenAI-compatible chat completions API served over real HTTP on loopback, for tests
that use the `openai` package as-is.

    with FakeOpenAI() as llm:
        client = openai.OpenAI(api_key=llm.api_key, base_url=llm.url)
        llm.reply(subject="Hi", body="Hello Dana, ...")
        client.chat.completions.create(model="gpt-4o-mini", messages=[...])
        assert llm.requests()[0].body["messages"][0]["role"] == "system"

What it does like the API: `POST /v1/chat/completions` answers the chat.completion shape (id,
object, created, model, choices[0].message.content / refusal, finish_reason, usage); checks
`Authorization: Bearer <api_key>` (401 otherwise); validates the request like OpenAI does
(model and messages required; a json_schema response_format needs a name and a schema; a
json_object one needs the word "json" somewhere in the messages); errors are
`{"error": {"message", "type", "param", "code"}}`. Every request is recorded with its parsed
body, headers, arrival time and the status answered.

Behaviours (each call replaces the default answer; `then` queues one-off behaviours first):
- `reply(subject=, body=)` / `reply_content(text)`: the answer (JSON of the two, or raw text:
  malformed JSON, fenced JSON...);
- `delay(seconds)`: every request waits this long before answering (wakes up on stop);
- `fail_next(status, times=, retry_after=)`: HTTP 500 / 429 / 400 ... for the next requests;
- `fail_always(status)`: every request fails;
- `reject_response_format("json_schema")`: 400 for requests using that response_format type,
  as servers without structured outputs do;
- `compromised()`: a model that obeys instructions it finds in the prompt: when any message
  says "ignore previous instructions", it answers an email offering a 90% discount with a
  link to http://evil.example (or the email given to it);
- `trickle(interval)`: headers at once, then the body one byte every `interval` seconds.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tests.fakes.loopback import FakeHandler, LoopbackServer

INJECTION_MARKER = "ignore previous instructions"
EVIL_SUBJECT = "A special offer for you"
EVIL_BODY = ("Hi there,\n\nAs requested, we're giving you a 90% discount on your next renewal. "
             "Claim it here: http://evil.example/claim\n\nBest,\nThe team")
DEFAULT_SUBJECT = "Quick check-in"
DEFAULT_BODY = ("Hi there,\n\nI wanted to check in and see how the setup is going. If anything is in the way, "
                "just reply and I'll help.\n\nBest,\nJane")


@dataclass
class Request:
    """One request as the fake received it."""

    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    at: float  # time.monotonic() when it arrived
    raw: bytes = b""
    status: int = 0
    response: dict[str, Any] | None = None

    @property
    def messages(self) -> list[dict]:
        return list(self.body.get("messages") or [])

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)

    def message(self, role: str) -> str:
        """The content of the first message with this role ("" if none)."""
        return next((m.get("content") or "" for m in self.messages if m.get("role") == role), "")

    @property
    def response_format(self) -> str | None:
        fmt = self.body.get("response_format")
        return fmt.get("type") if isinstance(fmt, dict) else None


@dataclass
class _Behaviour:
    kind: str  # "content" | "fail" | "trickle"
    content: str = ""
    status: int = 200
    retry_after: float | None = None
    message: str = ""
    finish_reason: str = "stop"
    refusal: str | None = None
    interval: float = 0.0


class _ApiError(Exception):
    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _content(subject: str, body: str) -> str:
    return json.dumps({"subject": subject, "body": body})


class FakeOpenAI(LoopbackServer):
    thread_name = "fake-openai"

    def __init__(self, *, api_key: str = "sk-test-fake", model: str = "fake-model"):
        self.api_key = api_key
        self.model = model
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._requests: list[Request] = []
        self._queue: list[_Behaviour] = []  # one-off behaviours, used first
        self._default = _Behaviour("content", content=_content(DEFAULT_SUBJECT, DEFAULT_BODY))
        self._delay = 0.0
        self._rejected_formats: set[str] = set()
        self._compromised = False
        self._evil = _content(EVIL_SUBJECT, EVIL_BODY)
        self._ids = itertools.count(1)
        self.url = ""

    # -- lifecycle (tests.fakes.loopback)

    def start(self) -> None:
        super().start()
        self.url = f"{self.base}/v1"  # the openai base_url

    def stop(self) -> None:
        self._stopping.set()  # wakes delayed and trickling answers
        super().stop()

    # -- programming it

    def reply(self, subject: str = DEFAULT_SUBJECT, body: str = DEFAULT_BODY) -> None:
        """Every request is answered with this email (as the JSON the prompt asks for)."""
        self.reply_content(_content(subject, body))

    def reply_content(self, content: str, *, finish_reason: str = "stop", refusal: str | None = None) -> None:
        """Every request is answered with this raw message content."""
        with self._lock:
            self._default = _Behaviour("content", content=content, finish_reason=finish_reason, refusal=refusal)

    def then(self, *, subject: str | None = None, body: str | None = None, content: str | None = None,
             status: int = 200, retry_after: float | None = None, message: str = "") -> None:
        """Queue one answer (content or an HTTP error) for the next request."""
        with self._lock:
            if status != 200:
                self._queue.append(_Behaviour("fail", status=status, retry_after=retry_after, message=message))
            else:
                text = content if content is not None else _content(subject or DEFAULT_SUBJECT, body or DEFAULT_BODY)
                self._queue.append(_Behaviour("content", content=text))

    def fail_next(self, status: int = 500, *, times: int = 1, retry_after: float | None = None,
                  message: str = "") -> None:
        for _ in range(times):
            self.then(status=status, retry_after=retry_after, message=message)

    def fail_always(self, status: int = 500, *, retry_after: float | None = None, message: str = "") -> None:
        with self._lock:
            self._default = _Behaviour("fail", status=status, retry_after=retry_after, message=message)

    def delay(self, seconds: float) -> None:
        with self._lock:
            self._delay = seconds

    def trickle(self, interval: float, content: str | None = None) -> None:
        """Answer 200 at once, then send the body one byte every `interval` seconds."""
        with self._lock:
            self._default = _Behaviour("trickle", content=content or _content(DEFAULT_SUBJECT, DEFAULT_BODY),
                                       interval=interval)

    def reject_response_format(self, *types: str) -> None:
        with self._lock:
            self._rejected_formats.update(types or ("json_schema",))

    def compromised(self, on: bool = True, *, subject: str = EVIL_SUBJECT, body: str = EVIL_BODY) -> None:
        """Obey injections: a prompt saying "ignore previous instructions" gets this email."""
        with self._lock:
            self._compromised = on
            self._evil = _content(subject, body)

    # -- inspection

    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    def wait_for_requests(self, count: int = 1, timeout: float = 5.0) -> list[Request]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {count} requests, got {len(self._requests)}")
                self._changed.wait(left)
            return list(self._requests)

    # -- request handling (called from the HTTP handler threads)

    def handle(self, verb: str, path: str, headers: dict[str, str],
               raw: bytes) -> tuple[int, dict, Any, _Behaviour | None]:
        """(status, headers, JSON answer, behaviour). A "trickle" behaviour is streamed by the handler."""
        lower = {k.lower(): v for k, v in headers.items()}
        request = Request(path=urlsplit(path).path, body={}, headers=dict(headers), at=time.monotonic(), raw=raw)
        try:
            request.body = json.loads(raw) if raw else {}
        except ValueError:
            request.body = {}
            error: _ApiError | None = _ApiError(400, "We could not parse the JSON body of your request.")
        else:
            error = None
        with self._lock:
            delay = self._delay
        if delay and self._stopping.wait(delay):
            error = _ApiError(503, "the server is shutting down", type_="server_error")
        behaviour = None
        with self._changed:
            try:
                if error is not None:
                    raise error
                behaviour = self._behaviour_for(verb, request, lower)
                status, answer = 200, self._completion(request, behaviour)
                extra: dict = {}
            except _ApiError as exc:
                status, answer, extra, behaviour = exc.status, exc.body(), exc.headers, None
            request.status, request.response = status, answer
            self._requests.append(request)
            self._changed.notify_all()
        return status, {"Content-Type": "application/json", **extra}, answer, behaviour

    def _behaviour_for(self, verb: str, request: Request, headers: dict) -> _Behaviour:
        if verb != "POST" or request.path.rstrip("/") != "/v1/chat/completions":
            raise _ApiError(404, f"Invalid URL ({verb} {request.path})")
        if headers.get("authorization") != f"Bearer {self.api_key}":
            raise _ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
        self._validate(request.body)
        if self._queue:
            behaviour = self._queue.pop(0)
        else:
            behaviour = self._default
        if behaviour.kind == "fail":
            raise self._failure(behaviour)
        fmt = request.response_format
        if fmt in self._rejected_formats:
            raise _ApiError(400, f"Invalid parameter: 'response_format' of type '{fmt}' is not supported with "
                                 "this model.", param="response_format")
        if self._compromised and any(INJECTION_MARKER in str(m.get("content", "")).lower() for m in request.messages):
            return _Behaviour("content", content=self._evil)
        return behaviour

    @staticmethod
    def _failure(behaviour: _Behaviour) -> _ApiError:
        headers = {"Retry-After": f"{behaviour.retry_after:g}"} if behaviour.retry_after is not None else {}
        status = behaviour.status
        if status == 429:
            return _ApiError(429, behaviour.message or "Rate limit reached for requests", type_="requests",
                             code="rate_limit_exceeded", headers=headers)
        if status >= 500:
            return _ApiError(status, behaviour.message or "The server had an error while processing your request.",
                             type_="server_error", headers=headers)
        return _ApiError(status, behaviour.message or "Bad request", headers=headers)

    @staticmethod
    def _validate(body: dict) -> None:
        if not body.get("model"):
            raise _ApiError(400, "you must provide a model parameter", param="model")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _ApiError(400, "'messages' must be a non-empty array", param="messages")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user", "assistant", "tool"):
                raise _ApiError(400, f"Invalid value for 'messages[{i}].role'", param=f"messages[{i}].role")
        fmt = body.get("response_format")
        if fmt is None:
            return
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind == "json_schema":
            spec = fmt.get("json_schema")
            if not isinstance(spec, dict) or not spec.get("name") or not isinstance(spec.get("schema"), dict):
                raise _ApiError(400, "Missing required parameter: 'response_format.json_schema'.",
                                param="response_format.json_schema")
        elif kind == "json_object":
            if not any("json" in str(m.get("content", "")).lower() for m in messages):
                raise _ApiError(400, "'messages' must contain the word 'json' in some form, to use 'response_format' "
                                     "of type 'json_object'.", param="messages")
        elif kind != "text":
            raise _ApiError(400, f"Invalid value: '{kind}'. Supported values are: 'json_object', 'json_schema', "
                                 "and 'text'.", param="response_format.type")

    def _completion(self, request: Request, behaviour: _Behaviour) -> dict:
        prompt_tokens = sum(len(str(m.get("content", ""))) for m in request.messages) // 4
        completion_tokens = len(behaviour.content) // 4
        return {
            "id": f"chatcmpl-fake{next(self._ids):06d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.body.get("model", self.model),
            "system_fingerprint": "fp_fake",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": behaviour.content, "refusal": behaviour.refusal},
                "logprobs": None,
                "finish_reason": behaviour.finish_reason,
            }],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopping; True when the fake is stopping."""
        return self._stopping.wait(seconds)


class _Handler(FakeHandler):
    """The shared handler, but the fake answers JSON with its behaviour (a trickle writes the
    body a byte at a time) and a client that gives up is not an error."""

    fake: FakeOpenAI

    def handle(self) -> None:
        try:
            super().handle()
        except OSError:  # the client reset the connection (it gave up waiting): not an error here
            self.close_connection = True

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        status, headers, answer, behaviour = self.fake.handle(self.command, self.path, dict(self.headers.items()), raw)
        body = json.dumps(answer).encode()
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if behaviour is not None and behaviour.kind == "trickle":
                self.wfile.flush()
                for i in range(len(body)):
                    if self.fake._sleep(behaviour.interval):
                        break
                    self.wfile.write(body[i:i + 1])
                    self.wfile.flush()
            else:
                self.wfile.write(body)
        except OSError:  # the client gave up (timed out) and closed the connection
            self.close_connection = True



FakeOpenAI.handler_class = _Handler  # (defined after the fake it serves)
