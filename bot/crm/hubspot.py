"""HubSpot's CRM v3 API over HTTP (httpx): the companies search, owners, notes.

Documented at developers.hubspot.com: the search (`POST /crm/v3/objects/companies/search`,
https://developers.hubspot.com/docs/api/crm/search: filterGroups, sorts, `limit` up to 100
results a page, `after` from `paging.next.after`, at most 10,000 results per query), the
owners (`GET /crm/v3/owners/{ownerId}`, https://developers.hubspot.com/docs/api-reference/crm-crm-owners-v3/guide)
and the notes (`POST /crm/v3/objects/notes`, https://developers.hubspot.com/docs/api-reference/crm-notes-v3/guide).
Auth: a private app's token, `Authorization: Bearer <HUBSPOT_TOKEN>`.

Retries: HubSpot answers 429 with `Retry-After` (seconds) past its per-second and per-10-second
limits; the call waits that long (at most MAX_RETRY_AFTER) and is made again. A 5xx or a
dropped connection is retried after the project's exponential backoff (bot.claims.backoff).
At most MAX_ATTEMPTS attempts in all, then `HubSpotError`. Any other answer is final. A call
that creates something (a note) is retried on 429 only: after a 5xx or a dropped connection
it may have been done, and the caller (bot.crm.notes) looks before making it again.
"""

from __future__ import annotations

import email.utils
import logging
import time
from datetime import datetime, timezone
from typing import Any, Callable

import httpx
import orjson

from bot.claims import backoff

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.hubapi.com"
SEARCH_CAP = 10_000  # results one search query can page through (HubSpot answers 400 past it)
PAGE_SIZE = 100  # the search's largest `limit`
MAX_ATTEMPTS = 5
FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 30.0
DEFAULT_RETRY_AFTER = 10.0  # a 429 without Retry-After: HubSpot's burst window is 10 seconds
MAX_RETRY_AFTER = 60.0
TIMEOUT_SECONDS = 20.0
MAX_RESPONSE_BYTES = 8 * 1024 * 1024  # a page of 100 companies is a few hundred KB at most
NOTE_TO_COMPANY = 190  # associationTypeId note -> company, HUBSPOT_DEFINED


class HubSpotError(RuntimeError):
    """HubSpot refused the call or stayed unreachable; `status` is the HTTP status (None: no answer)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def retry_after_seconds(value: str | None, now: Callable[[], datetime] | None = None) -> float:
    """A Retry-After header (seconds, or an HTTP date) as seconds to wait, within 0 .. MAX_RETRY_AFTER."""
    if value is None or not value.strip():
        return DEFAULT_RETRY_AFTER
    try:
        seconds = float(value.strip())
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return DEFAULT_RETRY_AFTER
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - (now or (lambda: datetime.now(timezone.utc)))()).total_seconds()
    if seconds != seconds:  # NaN
        return DEFAULT_RETRY_AFTER
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


class HubSpotClient:
    """One HubSpot account's API. `sleep`, `backoff_first` and `search_cap` are parameters for
    tests; `transport` serves a simulated HubSpot in-process (bot.crm.simulated, the demo)."""

    def __init__(self, token: str, base_url: str = DEFAULT_API_URL, *, timeout: float = TIMEOUT_SECONDS,
                 sleep: Callable[[float], object] = time.sleep, max_attempts: int = MAX_ATTEMPTS,
                 backoff_first: float = FIRST_BACKOFF_SECONDS, search_cap: int = SEARCH_CAP,
                 page_size: int = PAGE_SIZE, transport: httpx.BaseTransport | None = None):
        self.base_url = (base_url or DEFAULT_API_URL).strip().rstrip("/") or DEFAULT_API_URL
        self.sleep = sleep
        self.max_attempts = max(1, max_attempts)
        self.backoff_first = backoff_first
        self.search_cap = search_cap
        self.page_size = min(max(1, page_size), PAGE_SIZE)
        self.calls = 0  # HTTP requests made (retries included)
        self.retries = 0
        self._owners: dict[str, str | None] = {}
        self._http = httpx.Client(timeout=timeout, transport=transport, headers={
            "Authorization": f"Bearer {token}", "Accept": "application/json", "User-Agent": "stallwatch"})

    @classmethod
    def from_settings(cls, settings, **kwargs) -> "HubSpotClient":
        if not settings.hubspot_token:
            raise HubSpotError("HUBSPOT_TOKEN is not set: create a HubSpot private app and set its token")
        return cls(settings.hubspot_token, settings.hubspot_api_url, **kwargs)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "HubSpotClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ the endpoints

    def search_companies(self, properties: list[str], *, modified_since_ms: int, after: str | None = None) -> dict:
        """One page of the companies modified at or after `modified_since_ms`, oldest first."""
        body: dict[str, Any] = {
            "filterGroups": [{"filters": [{"propertyName": "hs_lastmodifieddate", "operator": "GTE",
                                           "value": str(modified_since_ms)}]}],
            "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
            "properties": properties,
            "limit": self.page_size,
        }
        if after is not None:
            body["after"] = after
        page = self.request("POST", "/crm/v3/objects/companies/search", json=body)
        if not isinstance(page.get("results"), list):
            raise HubSpotError("the companies search answered without a results list")
        return page

    def owner_email(self, owner_id: str) -> str | None:
        """The email of a HubSpot owner (cached for the client's life); None: no such owner."""
        if owner_id in self._owners:
            return self._owners[owner_id]
        try:
            owner = self.request("GET", f"/crm/v3/owners/{owner_id}", params={"idProperty": "id"})
        except HubSpotError as exc:
            if exc.status != 404:
                raise
            owner = {}
        email = owner.get("email") if isinstance(owner.get("email"), str) else None
        self._owners[owner_id] = email
        return email

    def find_company(self, property_name: str, value: str) -> list[str]:
        """The ids of the companies whose property equals `value` (at most two: one is wanted)."""
        body = {"filterGroups": [{"filters": [{"propertyName": property_name, "operator": "EQ", "value": value}]}],
                "properties": ["hs_object_id"], "limit": 2}
        page = self.request("POST", "/crm/v3/objects/companies/search", json=body)
        return [str(r.get("id")) for r in page.get("results") or [] if isinstance(r, dict) and r.get("id")]

    def find_note(self, token: str) -> str | None:
        """The id of a note whose body holds the word `token` (how a note whose creation may or
        may not have happened is found again)."""
        body = {"filterGroups": [{"filters": [{"propertyName": "hs_note_body", "operator": "CONTAINS_TOKEN",
                                               "value": token}]}],
                "properties": ["hs_note_body"], "limit": 1}
        page = self.request("POST", "/crm/v3/objects/notes/search", json=body)
        found = [r for r in page.get("results") or [] if isinstance(r, dict) and r.get("id")]
        return str(found[0]["id"]) if found else None

    def create_note(self, company_id: str, body: str, at: datetime) -> str:
        """A note on a company's timeline; returns the note's id. Retried on 429 only."""
        payload = {
            "properties": {"hs_timestamp": at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
                           "hs_note_body": body},
            "associations": [{"to": {"id": company_id},
                              "types": [{"associationCategory": "HUBSPOT_DEFINED",
                                         "associationTypeId": NOTE_TO_COMPANY}]}],
        }
        note = self.request("POST", "/crm/v3/objects/notes", json=payload, once=True)
        return str(note.get("id") or "")

    # ------------------------------------------------------------------ HTTP

    def request(self, method: str, path: str, *, json: Any = None, params: dict | None = None,
                once: bool = False) -> dict:
        """One API call with the retries of the module doc; the JSON object it answered.
        `once`: a call that must not be made twice (retried on 429 only)."""
        url = self.base_url + path
        content = orjson.dumps(json) if json is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else {}
        for attempt in range(1, self.max_attempts + 1):
            self.calls += 1
            last = attempt == self.max_attempts
            try:
                status, retry_after, raw = self._send(method, url, content, headers, params)
            except httpx.TransportError as exc:
                if last or once:
                    raise HubSpotError(f"HubSpot unreachable ({method} {path}): {type(exc).__name__}") from None
                self._wait(backoff(attempt, first=self.backoff_first, cap=MAX_BACKOFF_SECONDS).total_seconds(),
                           f"{method} {path}: {type(exc).__name__}")
                continue
            if status == 429 and not last:
                self._wait(retry_after_seconds(retry_after), f"{method} {path}: 429, Retry-After {retry_after}")
                continue
            if status >= 500 and not last and not once:
                self._wait(backoff(attempt, first=self.backoff_first, cap=MAX_BACKOFF_SECONDS).total_seconds(),
                           f"{method} {path}: {status}")
                continue
            if status >= 400:
                raise HubSpotError(f"HubSpot answered {status} to {method} {path}: {_message(raw)}", status)
            try:
                answer = orjson.loads(raw) if raw else {}
            except orjson.JSONDecodeError:
                raise HubSpotError(f"HubSpot answered {method} {path} with a body that is not JSON", status) from None
            if not isinstance(answer, dict):
                raise HubSpotError(f"HubSpot answered {method} {path} with JSON that is not an object", status)
            return answer
        raise AssertionError("unreachable")  # the last attempt returns or raises

    def _send(self, method: str, url: str, content: bytes | None, headers: dict,
              params: dict | None) -> tuple[int, str | None, bytes]:
        """The status, Retry-After and body (read up to MAX_RESPONSE_BYTES) of one request."""
        request = self._http.build_request(method, url, content=content, headers=headers, params=params)
        response = self._http.send(request, stream=True)
        try:
            body = bytearray()
            for part in response.iter_bytes():
                body.extend(part)
                if len(body) > MAX_RESPONSE_BYTES:
                    raise HubSpotError(f"HubSpot answered {request.method} {request.url.path} with more than "
                                       f"{MAX_RESPONSE_BYTES} bytes", response.status_code)
            return response.status_code, response.headers.get("Retry-After"), bytes(body)
        finally:
            response.close()

    def _wait(self, seconds: float, why: str) -> None:
        self.retries += 1
        log.warning("hubspot: %s; trying again in %.1f s", why, seconds)
        self.sleep(seconds)


def _message(raw: bytes) -> str:
    """HubSpot's error `message` (its documented error body), bounded, or the start of the body."""
    try:
        answer = orjson.loads(raw)
        text = answer.get("message") if isinstance(answer, dict) else None
    except orjson.JSONDecodeError:
        text = None
    text = text if isinstance(text, str) else raw[:200].decode("utf-8", "replace")
    return text[:300]
