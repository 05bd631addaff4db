"""A fake HubSpot CRM v3 API served over real HTTP on loopback, for the CRM sync's tests.

    with FakeHubSpot() as hub:
        hub.add_owner("101", "ann@acme.test")
        hub.add_company("1", modified=T0, name="Acme", domain="acme.test", arr="50000", hubspot_owner_id="101")
        client = HubSpotClient(hub.token, hub.url)

Payloads as HubSpot documents them:

- companies search, `POST /crm/v3/objects/companies/search`
  (https://developers.hubspot.com/docs/api/crm/search): a body of `filterGroups` (each
  `{"filters": [{"propertyName", "operator", "value"}]}`), `sorts`
  (`[{"propertyName", "direction": "ASCENDING"|"DESCENDING"}]`), `properties`, `limit` (at
  most 100 here; 400 past it), `after`; the answer `{"total", "results": [{"id", "properties",
  "createdAt", "updatedAt", "archived"}], "paging": {"next": {"after", "link"}}}`, `paging`
  left out on the last page. Property values are strings (null when unset), as HubSpot returns
  them; the default properties (`createdate`, `domain`, `hs_lastmodifieddate`, `hs_object_id`,
  `name`) always come. One query pages through at most `search_cap` results (10,000 at
  HubSpot): an `after` at or past it answers 400, as HubSpot does.
- owners, `GET /crm/v3/owners/{ownerId}`
  (https://developers.hubspot.com/docs/api-reference/crm-crm-owners-v3/guide):
  `{"id", "email", "type": "PERSON", "firstName", "lastName", "userId", "createdAt",
  "updatedAt", "archived"}`, 404 for an unknown id.
- notes, `POST /crm/v3/objects/notes`
  (https://developers.hubspot.com/docs/api-reference/crm-notes-v3/guide): `{"properties":
  {"hs_timestamp", "hs_note_body"}, "associations": [{"to": {"id"}, "types":
  [{"associationCategory", "associationTypeId"}]}]}`, answered 201 with the note object.
- notes search, `POST /crm/v3/objects/notes/search`: `CONTAINS_TOKEN` on `hs_note_body` (a
  whole word of the body); companies search also takes `EQ` filters on any property.
- errors: `{"status": "error", "message", "correlationId", "category"}`; 401 without
  `Authorization: Bearer <token>`; 429 with `Retry-After` (seconds) from `fail_next`.

Faults: `fail_next(path, status=429, retry_after=1, times=1, deliver=False)`: the next calls
whose path starts with `path` answer `status`; with `deliver=True` the call takes effect first
(the "HubSpot created it but the answer was lost" case).
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes.loopback import LoopbackServer

UTC = timezone.utc
DEFAULT_PROPERTIES = ("createdate", "domain", "hs_lastmodifieddate", "hs_object_id", "name")
MAX_LIMIT = 100
SEARCH_CAP = 10_000


def iso_ms(moment: datetime) -> str:
    """HubSpot's datetime property format: ISO 8601 in UTC with milliseconds and Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _epoch_ms(value: str) -> int:
    if value.isdigit():
        return int(value)
    return int(datetime.fromisoformat(value).timestamp() * 1000)


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    status: int = 0


@dataclass
class _Fault:
    path: str
    status: int
    retry_after: int | None
    times: int
    deliver: bool


@dataclass
class Company:
    id: str
    properties: dict[str, str | None]
    created_at: str
    modified_ms: int = 0


@dataclass
class Note:
    id: str
    properties: dict[str, Any]
    associations: list[dict] = field(default_factory=list)


class HubSpotHTTPError(Exception):
    def __init__(self, status: int, message: str, category: str = "VALIDATION_ERROR"):
        super().__init__(message)
        self.status, self.message, self.category = status, message, category


class FakeHubSpot(LoopbackServer):
    def __init__(self, token: str = "pat-na1-test-token", *, search_cap: int = SEARCH_CAP):
        self.token = token
        self.search_cap = search_cap
        self.companies: dict[str, Company] = {}
        self.owners: dict[str, dict] = {}
        self.notes: list[Note] = []
        self._calls: list[Call] = []
        self._faults: list[_Fault] = []
        self._ids = itertools.count(900001)
        self._lock = threading.RLock()
        self.url = ""

    # -- lifecycle (tests.fakes.loopback)

    thread_name = "fake-hubspot"

    def start(self) -> None:
        super().start()
        self.url = self.base

    # -- the CRM's content

    def add_owner(self, owner_id: str, email: str, *, first: str = "Casey", last: str = "Owner") -> dict:
        owner = {"id": owner_id, "email": email, "type": "PERSON", "firstName": first, "lastName": last,
                 "userId": int(owner_id) + 7000, "userIdIncludingInactive": int(owner_id) + 7000,
                 "createdAt": "2024-01-10T09:00:00.000Z", "updatedAt": "2024-01-10T09:00:00.000Z", "archived": False}
        with self._lock:
            self.owners[owner_id] = owner
        return owner

    def add_company(self, company_id: str, *, modified: datetime, **properties: str | None) -> Company:
        """Create or update a company; `modified` becomes its hs_lastmodifieddate."""
        with self._lock:
            company = self.companies.get(company_id)
            if company is None:
                company = Company(company_id, {}, iso_ms(modified))
                self.companies[company_id] = company
            company.properties.update(properties)
            company.properties["hs_object_id"] = company_id
            company.properties["createdate"] = company.created_at
            company.properties["hs_lastmodifieddate"] = iso_ms(modified)
            company.modified_ms = int(modified.timestamp() * 1000)
            return company

    def calls(self, path: str | None = None) -> list[Call]:
        with self._lock:
            return [c for c in self._calls if path is None or c.path.startswith(path)]

    def searches(self) -> list[Call]:
        return self.calls("/crm/v3/objects/companies/search")

    def fail_next(self, path: str, status: int = 429, *, retry_after: int | None = 1, times: int = 1,
                  deliver: bool = False) -> None:
        with self._lock:
            self._faults.append(_Fault(path, status, retry_after, times, deliver))

    # -- HTTP

    def handle(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict, bytes]:
        parts = urlsplit(target)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        call = Call(method, parts.path, parse_qs(parts.query), headers, body)
        with self._lock:
            self._calls.append(call)
            fault = next((f for f in self._faults if parts.path.startswith(f.path) and f.times > 0), None)
            if fault is not None:
                fault.times -= 1
        try:
            if headers.get("Authorization") != f"Bearer {self.token}":
                raise HubSpotHTTPError(401, "Authentication credentials not found.", "INVALID_AUTHENTICATION")
            if fault is not None and not fault.deliver:
                raise HubSpotHTTPError(fault.status, "You have reached your secondly limit." if fault.status == 429
                                       else "Internal error", "RATE_LIMITS" if fault.status == 429 else "INTERNAL_ERROR")
            status, answer = self._route(method, parts.path, body)
            if fault is not None:
                raise HubSpotHTTPError(fault.status, "Internal error", "INTERNAL_ERROR")
        except HubSpotHTTPError as exc:
            status = exc.status
            answer = {"status": "error", "message": exc.message, "correlationId": str(uuid.uuid4()),
                      "category": exc.category}
        call.status = status
        out = {"Content-Type": "application/json;charset=utf-8"}
        if status == 429 and fault is not None and fault.retry_after is not None:
            out["Retry-After"] = str(fault.retry_after)
        return status, out, json.dumps(answer).encode()

    def _route(self, method: str, path: str, body: Any) -> tuple[int, dict]:
        if method == "POST" and path == "/crm/v3/objects/companies/search":
            return 200, self._search(body)
        if method == "GET" and path.startswith("/crm/v3/owners/"):
            owner = self.owners.get(path.rsplit("/", 1)[1])
            if owner is None:
                raise HubSpotHTTPError(404, "Owner not found", "OBJECT_NOT_FOUND")
            return 200, owner
        if method == "POST" and path == "/crm/v3/objects/notes":
            return 201, self._create_note(body)
        if method == "POST" and path == "/crm/v3/objects/notes/search":
            return 200, self._search_notes(body)
        raise HubSpotHTTPError(404, f"No route for {method} {path}", "OBJECT_NOT_FOUND")

    def _search(self, body: Any) -> dict:
        if not isinstance(body, dict):
            raise HubSpotHTTPError(400, "Invalid input JSON")
        limit = body.get("limit", 10)
        if not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise HubSpotHTTPError(400, f"limit must be between 1 and {MAX_LIMIT}")
        try:
            after = int(body.get("after") or 0)
        except (TypeError, ValueError):
            raise HubSpotHTTPError(400, "after must be an integer") from None
        if after >= self.search_cap:
            raise HubSpotHTTPError(400, f"The search can only page through {self.search_cap} results.")
        with self._lock:
            found = [c for c in self.companies.values() if self._matches(c, body.get("filterGroups") or [])]
            for sort in reversed(body.get("sorts") or []):
                if sort.get("propertyName") != "hs_lastmodifieddate":
                    raise HubSpotHTTPError(400, "this fake sorts by hs_lastmodifieddate only")
                found.sort(key=lambda c: (c.modified_ms, int(c.id)), reverse=sort.get("direction") == "DESCENDING")
            wanted = list(dict.fromkeys([*DEFAULT_PROPERTIES, *(body.get("properties") or [])]))
            page = found[after:min(after + limit, self.search_cap)]
            results = [{"id": c.id, "properties": {name: c.properties.get(name) for name in wanted},
                        "createdAt": c.created_at, "updatedAt": c.properties["hs_lastmodifieddate"],
                        "archived": False} for c in page]
        answer: dict[str, Any] = {"total": len(found), "results": results}
        if after + limit < len(found):
            nxt = str(after + limit)
            answer["paging"] = {"next": {"after": nxt, "link": f"{self.url}/crm/v3/objects/companies/search?after={nxt}"}}
        return answer

    @staticmethod
    def _matches(company: Company, groups: list) -> bool:
        if not groups:
            return True
        for group in groups:  # groups are ORed, the filters of a group ANDed
            ok = True
            for f in group.get("filters") or []:
                if f.get("operator") == "EQ":  # string properties compare case-insensitively at HubSpot
                    ok = ok and str(company.properties.get(f.get("propertyName")) or "").lower() == str(f.get("value")).lower()
                    continue
                if f.get("propertyName") != "hs_lastmodifieddate" or f.get("operator") not in ("GTE", "GT"):
                    raise HubSpotHTTPError(400, "this fake filters on EQ, and hs_lastmodifieddate GTE/GT")
                bound = _epoch_ms(str(f.get("value")))
                ok = ok and (company.modified_ms >= bound if f["operator"] == "GTE" else company.modified_ms > bound)
            if ok:
                return True
        return False

    def _search_notes(self, body: Any) -> dict:
        """The notes search, CONTAINS_TOKEN on hs_note_body: a whole word of the body."""
        if not isinstance(body, dict):
            raise HubSpotHTTPError(400, "Invalid input JSON")
        tokens = [f.get("value") for g in body.get("filterGroups") or [] for f in g.get("filters") or []
                  if f.get("propertyName") == "hs_note_body" and f.get("operator") == "CONTAINS_TOKEN"]
        with self._lock:
            found = [n for n in self.notes
                     if all(t in re.findall(r"[A-Za-z0-9]+", str(n.properties.get("hs_note_body") or "")) for t in tokens)]
        limit = int(body.get("limit") or 10)
        return {"total": len(found), "results": [{"id": n.id, "properties": {"hs_note_body": n.properties.get("hs_note_body"),
                                                                             "hs_object_id": n.id},
                                                  "archived": False} for n in found[:limit]]}

    def _create_note(self, body: Any) -> dict:
        if not isinstance(body, dict) or not isinstance(body.get("properties"), dict):
            raise HubSpotHTTPError(400, "Invalid input JSON: properties is required")
        props = body["properties"]
        if not props.get("hs_timestamp"):
            raise HubSpotHTTPError(400, "Property values were not valid: hs_timestamp is required")
        for assoc in body.get("associations") or []:
            company = str((assoc.get("to") or {}).get("id"))
            if company not in self.companies:
                raise HubSpotHTTPError(400, f"No company {company} to associate", "VALIDATION_ERROR")
            if not any(t.get("associationTypeId") == 190 and t.get("associationCategory") == "HUBSPOT_DEFINED"
                       for t in assoc.get("types") or []):
                raise HubSpotHTTPError(400, "note -> company association type must be 190 HUBSPOT_DEFINED")
        with self._lock:
            note = Note(str(next(self._ids)), dict(props), list(body.get("associations") or []))
            self.notes.append(note)
        now = iso_ms(datetime.now(UTC))
        return {"id": note.id, "properties": {**props, "hs_object_id": note.id, "hs_createdate": now},
                "createdAt": now, "updatedAt": now, "archived": False}
