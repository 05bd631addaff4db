"""A stand-in for HubSpot's CRM v3 API when there is no HubSpot (the demo), as
bot.slack.simulated stands in for Slack: served in-process as an httpx transport, so the real
client (bot.crm.hubspot) and the real sync (bot.crm.sync) run against it unchanged.

It answers what the sync calls, shaped as HubSpot documents it: the companies search
(`POST /crm/v3/objects/companies/search`: the `hs_lastmodifieddate` GTE filter, ascending sort,
`limit`, `after`, `paging.next.after`), an owner (`GET /crm/v3/owners/{id}`) and a new note
(`POST /crm/v3/objects/notes`). Its `clock` hides the companies modified after it: the demo's
CRM does not know what its timeline has not reached yet.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timezone
from typing import Any, Callable

import httpx
import orjson

UTC = timezone.utc
DEFAULT_PROPERTIES = ("createdate", "domain", "hs_lastmodifieddate", "hs_object_id", "name")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class SimulatedHubSpot:
    token = "simulated"
    url = "https://api.hubapi.com"

    def __init__(self, clock: Callable[[], datetime] | None = None):
        self.clock = clock
        self.companies: dict[str, tuple[int, dict[str, str | None]]] = {}  # id -> (modified ms, properties)
        self.owners: dict[str, str] = {}  # owner id -> email
        self.notes: list[dict] = []
        self.calls = 0
        self._owner_ids = itertools.count(70001)

    def owner_id(self, email: str) -> str:
        """The owner id of a HubSpot user with this email (one created at first use)."""
        for owner_id, known in self.owners.items():
            if known == email:
                return owner_id
        owner_id = str(next(self._owner_ids))
        self.owners[owner_id] = email
        return owner_id

    def set_company(self, company_id: str, modified: datetime, **properties: str | None) -> None:
        _, props = self.companies.get(company_id, (0, {}))
        props = {**props, **properties, "hs_object_id": company_id, "hs_lastmodifieddate": _iso(modified)}
        props.setdefault("createdate", _iso(modified))
        self.companies[company_id] = (int(modified.timestamp() * 1000), props)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._handle)

    # ------------------------------------------------------------------ the API

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return self._error(401, "Authentication credentials not found.", "INVALID_AUTHENTICATION")
        path = request.url.path
        try:
            body = orjson.loads(request.content) if request.content else {}
        except orjson.JSONDecodeError:
            return self._error(400, "Invalid input JSON")
        if request.method == "POST" and path == "/crm/v3/objects/companies/search":
            return httpx.Response(200, json=self._search(body))
        if request.method == "GET" and path.startswith("/crm/v3/owners/"):
            owner_id = path.rsplit("/", 1)[1]
            if owner_id not in self.owners:
                return self._error(404, "Owner not found", "OBJECT_NOT_FOUND")
            return httpx.Response(200, json={"id": owner_id, "email": self.owners[owner_id], "type": "PERSON",
                                             "archived": False})
        if request.method == "POST" and path == "/crm/v3/objects/notes":
            note = {"id": str(len(self.notes) + 1), "properties": body.get("properties") or {},
                    "associations": body.get("associations") or []}
            self.notes.append(note)
            return httpx.Response(201, json={"id": note["id"], "properties": note["properties"], "archived": False})
        return self._error(404, f"No route for {request.method} {path}", "OBJECT_NOT_FOUND")

    def _search(self, body: dict[str, Any]) -> dict:
        since = 0
        for group in body.get("filterGroups") or []:
            for f in group.get("filters") or []:
                if f.get("propertyName") == "hs_lastmodifieddate" and f.get("operator") == "GTE":
                    since = int(f.get("value") or 0)
        horizon = int(self.clock().timestamp() * 1000) if self.clock is not None else None
        found = sorted(((ms, cid) for cid, (ms, _) in self.companies.items()
                        if ms >= since and (horizon is None or ms <= horizon)), key=lambda t: (t[0], t[1]))
        after = int(body.get("after") or 0)
        limit = int(body.get("limit") or 10)
        wanted = list(dict.fromkeys([*DEFAULT_PROPERTIES, *(body.get("properties") or [])]))
        results = []
        for _, cid in found[after:after + limit]:
            props = self.companies[cid][1]
            results.append({"id": cid, "properties": {name: props.get(name) for name in wanted},
                            "createdAt": props["createdate"], "updatedAt": props["hs_lastmodifieddate"],
                            "archived": False})
        answer: dict[str, Any] = {"total": len(found), "results": results}
        if after + limit < len(found):
            answer["paging"] = {"next": {"after": str(after + limit)}}
        return answer

    @staticmethod
    def _error(status: int, message: str, category: str = "VALIDATION_ERROR") -> httpx.Response:
        return httpx.Response(status, json={"status": "error", "message": message, "category": category})
