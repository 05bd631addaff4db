"""The drafter: asks an OpenAI-compatible model for a recovery email, checks the answer, and
falls back to the built-in template whenever it cannot use the model's draft.

    result = Drafter(settings, rules.outreach).draft(facts)   # never raises for LLM trouble

Time: the whole call, retries included, returns within `DEADLINE_S` (12 s): the CSM waits on
a "drafting…" modal, and a slow or failing model must still give a usable draft well within
15 s. Each request gets at most `REQUEST_TIMEOUT_S` (10 s) and no more than the time left;
quick failures (HTTP 429 / 5xx, refused connections) are retried twice with a short backoff
when the time left allows it (a `Retry-After` longer than that ends the attempt instead of
being slept through); a timeout is not retried. The SDK's own retries are off (they honour
Retry-After up to two minutes). The request runs in a daemon thread that the caller stops
waiting for at the deadline, so a server that trickles bytes, or a DNS lookup that hangs, cannot
hold the caller either.

Structured answer: `response_format` json_schema ({subject, body}, strict). A server that
rejects it (HTTP 400/422: older vLLM, Ollama, other gateways) is asked again with
json_object, then with no response_format (the prompt asks for JSON anyway); which one worked
is remembered per endpoint and model for later drafts. A 400 about `temperature` (reasoning
models accept only the default) is retried without it.

Checks: the model's subject and body pass `rules.draft_text.check_model_draft` or the
template is used, and `note` says why (shown in the modal).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

import openai

from bot.drafting.prompt import RESPONSE_SCHEMA, build_messages
from rules.draft_text import DraftFacts, DraftText, check_draft, check_model_draft, clip, template_draft

log = logging.getLogger(__name__)

DEADLINE_S = 12.0  # the whole draft, retries included
REQUEST_TIMEOUT_S = 10.0  # one request (connect, read, write)
MIN_ATTEMPT_S = 2.0  # no new request with less than this left
TRANSIENT_RETRIES = 2  # retries after a 429 / 5xx / refused connection
BACKOFF_S = (0.5, 1.0)
TEMPERATURE = 0.4
NOTE_CHARS = 480  # Draft.note holds 500
SOURCE_CHARS = 100  # Draft.source holds 100

FORMATS = ("json_schema", "json_object", "text")
_format_for: dict[tuple[str | None, str], int] = {}  # (base_url, model) -> index in FORMATS that worked
_format_lock = threading.Lock()


def forget_formats() -> None:
    """Forget which response_format each endpoint accepted (tests; a restart does the same)."""
    with _format_lock:
        _format_for.clear()


@dataclass(frozen=True)
class DraftResult:
    subject: str
    body: str
    source: str  # "llm:<model>" or "template"
    note: str | None = None  # why the template was used
    problems: list[str] = field(default_factory=list)  # what the model's draft failed, if it did

    @property
    def from_template(self) -> bool:
        return self.source == "template"


class _Failed(Exception):
    """The model's draft cannot be used; `note` tells the CSM why."""

    def __init__(self, note: str):
        super().__init__(note)
        self.note = note


@dataclass(frozen=True)
class _Answer:
    content: str | None
    finish_reason: str | None
    refusal: str | None


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 1 else f"{value:.1f} s"


def _status_note(exc: openai.APIStatusError) -> str:
    message = ""
    try:
        body = exc.response.json()
        error = body.get("error") if isinstance(body, dict) else None
        message = error.get("message", "") if isinstance(error, dict) else str(error or "")
    except Exception:  # noqa: BLE001 - any body; the status code is enough
        message = ""
    message = clip(" ".join(str(message).split()), 160)
    return f"HTTP {exc.status_code}" + (f": {message}" if message else "")


def _retry_after(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds < 3600 else None


def _sender_address(mail_from: str | None) -> str | None:
    """The address of STALLWATCH_MAIL_FROM, or None when it is unset or unusable."""
    from bot.mail.smtp import parse_mail_from

    try:
        return parse_mail_from(mail_from)[1]
    except ValueError:
        return None


def parse_answer(content: str | None, finish_reason: str | None = None) -> DraftText:
    """The model's JSON answer as subject and body, or `_Failed` saying what was wrong with it."""
    text = (content or "").strip()
    if not text:
        raise _Failed("the model's answer was empty")
    fenced = re.fullmatch(r"```(?:json|JSON)?\s*(.*?)\s*```", text, re.DOTALL)
    if fenced:
        text = fenced.group(1)
    try:
        data = json.loads(text)
    except ValueError:
        start, end = text.find("{"), text.rfind("}")
        try:
            data = json.loads(text[start:end + 1]) if 0 <= start < end else None
        except ValueError:
            data = None
        if data is None:
            cut = " (it was cut off)" if finish_reason == "length" else ""
            raise _Failed(f"the model's answer was not valid JSON{cut}") from None
    if not isinstance(data, dict) or not isinstance(data.get("subject"), str) or not isinstance(data.get("body"), str):
        raise _Failed("the model's answer did not have a subject and a body")
    subject = " ".join(data["subject"].split())
    body = data["body"].replace("\r\n", "\n").replace("\r", "\n")
    if "\n" not in body and "\\n" in body:  # a model that escaped its line breaks twice
        body = body.replace("\\n", "\n")
    body = "\n".join(line.rstrip() for line in body.split("\n"))
    body = re.sub(r"\n{3,}", "\n\n", body).strip()
    return DraftText(subject=subject, body=body)


class Drafter:
    """Writes recovery drafts: the model when configured and well-behaved, else the template."""

    def __init__(self, settings, outreach=None, *, deadline: float = DEADLINE_S,
                 request_timeout: float = REQUEST_TIMEOUT_S, min_attempt: float = MIN_ATTEMPT_S,
                 backoff: tuple[float, ...] = BACKOFF_S):
        # The timings are parameters so that tests can check the mechanism in milliseconds;
        # production uses the defaults (tests/proof checks those in real time).
        self.settings = settings
        self.outreach = outreach
        self.deadline = deadline
        self.request_timeout = min(request_timeout, deadline)
        self.min_attempt = min_attempt
        self.backoff = backoff
        self.model = settings.llm_model

    @property
    def source(self) -> str:
        return clip(f"llm:{self.model}", SOURCE_CHARS)

    def draft(self, facts: DraftFacts) -> DraftResult:
        if self.outreach is not None:  # the links allowed are the configured ones, now
            facts = replace(facts, help_url=self.outreach.help_url or "", booking_url=self.outreach.booking_url or "")
        sender = _sender_address(self.settings.mail_from)
        if sender:  # the From address may appear in the draft's signature, like the CSM's own
            facts = replace(facts, own_emails=(*facts.own_emails, sender))
        if not self.settings.openai_api_key:
            return self._template(facts, "no OPENAI_API_KEY set", log_it=False)
        started = time.monotonic()
        try:
            answer = self._ask(build_messages(facts))
            if answer.refusal:
                raise _Failed(f"the model declined to write it: {clip(' '.join(answer.refusal.split()), 160)}")
            text = parse_answer(answer.content, answer.finish_reason)
        except _Failed as failed:
            return self._template(facts, failed.note)
        except Exception:  # noqa: BLE001 - never fail the CSM's click for a model problem
            log.exception("recovery draft for stall %s: the model call failed", facts.stall_id)
            return self._template(facts, "the model call failed unexpectedly (details in the logs)")
        problems = check_model_draft(text, facts)
        if problems:
            return self._template(facts, "the model's draft failed checks: " + "; ".join(problems), problems)
        log.info("recovery draft for stall %s written by %s in %.1f s", facts.stall_id, self.model,
                 time.monotonic() - started)
        return DraftResult(subject=text.subject, body=text.body, source=self.source)

    # -- the template

    def _template(self, facts: DraftFacts, note: str, problems: list[str] | None = None, *,
                  log_it: bool = True) -> DraftResult:
        if log_it:
            log.warning("recovery draft for stall %s: using the template: %s", facts.stall_id, note)
        text = template_draft(facts)
        own = check_draft(text, allowed_urls=facts.allowed_urls)
        if own:  # a bug in the template: say so loudly, the CSM still gets a draft to edit
            log.error("recovery draft for stall %s: the template fails its own checks: %s", facts.stall_id, own)
        return DraftResult(subject=text.subject, body=text.body, source="template", note=clip(note, NOTE_CHARS),
                           problems=list(problems or []))

    # -- the model

    def _ask(self, messages: list[dict]) -> _Answer:
        """The model's answer, or `_Failed`; returns by the deadline whatever the server does."""
        deadline = time.monotonic() + self.deadline
        cancel = threading.Event()
        done = threading.Event()
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["answer"] = self._ask_with_retries(messages, deadline, cancel, box)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                box["error"] = exc
            finally:
                done.set()

        threading.Thread(target=run, name="llm-draft", daemon=True).start()
        if not done.wait(max(deadline - time.monotonic(), 0.0)):
            cancel.set()  # the worker gives up at its next step...
            client = box.get("client")
            if client is not None:  # ...and its connection is closed under it (a trickling server)
                try:
                    client.close()
                except Exception:  # noqa: BLE001 - best effort; the request times out on its own
                    log.debug("closing the model client after the deadline failed", exc_info=True)
            raise _Failed(f"the model did not answer within {_seconds(self.deadline)}")
        if "error" in box:
            raise box["error"]
        return box["answer"]

    def _client(self) -> openai.OpenAI:
        return openai.OpenAI(api_key=self.settings.openai_api_key, base_url=self.settings.openai_base_url,
                             timeout=self.request_timeout, max_retries=0)

    def _ask_with_retries(self, messages: list[dict], deadline: float, cancel: threading.Event,
                          box: dict) -> _Answer:
        key = (self.settings.openai_base_url, self.model)
        with _format_lock:
            mode = _format_for.get(key, 0)
        temperature: float | None = TEMPERATURE
        transient = 0
        with self._client() as client:
            box["client"] = client
            while True:
                left = deadline - time.monotonic()
                if cancel.is_set() or left < self.min_attempt:
                    raise _Failed(f"the model did not answer within {_seconds(self.deadline)}")
                timeout = min(self.request_timeout, left)
                try:
                    response = client.chat.completions.create(**self._request(messages, mode, temperature),
                                                              timeout=timeout)
                except openai.APITimeoutError:
                    raise _Failed(f"the model did not answer within {_seconds(timeout)}") from None
                except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
                    detail = _status_note(exc)
                    if temperature is not None and "temperature" in detail.lower():
                        temperature = None
                        log.info("model %s rejects temperature; asking again without it", self.model)
                        continue
                    if mode + 1 < len(FORMATS):
                        log.info("model endpoint rejected response_format %s (%s); trying %s",
                                 FORMATS[mode], detail, FORMATS[mode + 1])
                        mode += 1
                        continue
                    raise _Failed(f"the model endpoint rejected the request ({detail})") from None
                except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
                    raise _Failed(f"the model endpoint refused OPENAI_API_KEY ({_status_note(exc)})") from None
                except openai.NotFoundError as exc:
                    raise _Failed(f"the model endpoint does not know model '{self.model}' or OPENAI_BASE_URL is "
                                  f"wrong ({_status_note(exc)})") from None
                except (openai.APIConnectionError, openai.APIStatusError) as exc:
                    status = getattr(exc, "status_code", None)
                    if isinstance(exc, openai.APIStatusError) and not (status in (408, 409, 429) or status >= 500):
                        raise _Failed(f"the model endpoint answered {_status_note(exc)}") from None
                    what = ("the model endpoint could not be reached" if status is None
                            else "the model endpoint is rate limited" if status == 429
                            else f"the model endpoint failed ({_status_note(exc)})")
                    transient += 1
                    if transient > TRANSIENT_RETRIES:
                        raise _Failed(f"{what} ({transient} tries)") from None
                    wait = _retry_after(exc)
                    wait = self.backoff[min(transient, len(self.backoff)) - 1] if wait is None else wait
                    if time.monotonic() + wait + self.min_attempt > deadline:
                        later = f"; it asked to retry after {_seconds(wait)}" if status == 429 else ""
                        raise _Failed(f"{what}{later}") from None
                    log.info("%s; retrying in %.1f s", what, wait)
                    if cancel.wait(wait):
                        raise _Failed(f"the model did not answer within {_seconds(self.deadline)}") from None
                    continue
                if mode != _format_for.get(key, 0):
                    with _format_lock:
                        _format_for[key] = mode
                return self._answer(response)

    def _request(self, messages: list[dict], mode: int, temperature: float | None) -> dict:
        request: dict[str, Any] = {"model": self.model, "messages": messages}
        if temperature is not None:
            request["temperature"] = temperature
        if FORMATS[mode] == "json_schema":
            request["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "recovery_email", "strict": True, "schema": RESPONSE_SCHEMA}}
        elif FORMATS[mode] == "json_object":
            request["response_format"] = {"type": "json_object"}
        return request

    @staticmethod
    def _answer(response) -> _Answer:
        choices = getattr(response, "choices", None) or []
        if not choices:
            raise _Failed("the model's answer was empty")
        choice = choices[0]
        message = getattr(choice, "message", None)
        if message is None:
            raise _Failed("the model's answer was empty")
        return _Answer(content=getattr(message, "content", None), finish_reason=getattr(choice, "finish_reason", None),
                       refusal=getattr(message, "refusal", None))
