"""The demo company's CRM: its accounts' ARR and owners come from HubSpot, through the real
sync (bot.crm.sync) against a simulated HubSpot (bot.crm.simulated), as they would with
HUBSPOT_TOKEN set; the Segment `group` calls carry the rest (name, domain, plan, seats, renewal).

Each account is a HubSpot company with `stallwatch_account_id` = the account id, its ARR in
the `arr` property and its CSM as the company owner; the company was last modified when the
account's group call reached Stallwatch, so the scheduled sync (every `[hubspot]
interval_minutes`) picks it up as a live one would. Its ARR is the CRM's as billing keeps it
current: the subscription's ARR from the Stripe events that reached Stallwatch by the first
sync, when they are newer than the sales figure (as the stored ARR followed them before the
CRM sync existed: the demo's figures are unchanged). A reassignment in the CRM is a change of
the company's owner, taken by the next sync.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from bot.crm.hubspot import HubSpotClient
from bot.crm.simulated import SimulatedHubSpot
from bot.crm.sync import SyncReport, sync_hubspot
from bot.demo.company import Company
from bot.ingest.stripe import parse_event

CRM_TRAITS = ("arr", "owner_email")  # what the CRM (HubSpot) tells, not the product's group calls


def without_crm_traits(message: dict[str, Any]) -> dict[str, Any]:
    """A Segment message as the demo sends it: a group call without the facts HubSpot holds."""
    traits = message.get("traits")
    if message.get("type") != "group" or not isinstance(traits, dict) or not any(k in traits for k in CRM_TRAITS):
        return message
    return {**message, "traits": {k: v for k, v in traits.items() if k not in CRM_TRAITS}}


def _arr_by_account(company: Company, known: dict[str, datetime], sales: dict[str, datetime],
                    first_sync: datetime) -> dict[str, float]:
    """Each account's ARR at its first sync: the sales figure, or the newer one of its Stripe
    subscription (the later `occurred_at` wins, as stored facts do)."""
    latest: dict[str, tuple[datetime, float]] = {}
    for record in company.records:
        if record.source != "stripe":
            continue
        event = parse_event(orjson.dumps(record.record["event"]))
        arr = (event.account_traits or {}).get("arr") if event is not None else None
        if arr is None or record.at > max(first_sync, known.get(event.account_id, first_sync)):
            continue
        if event.account_id in sales and event.occurred_at < sales[event.account_id]:
            continue  # older than the sales figure: the group call's ARR stood
        if event.account_id not in latest or event.occurred_at >= latest[event.account_id][0]:
            latest[event.account_id] = (event.occurred_at, float(arr))
    return {aid: arr for aid, (_, arr) in latest.items()}


class DemoCRM:
    def __init__(self, company: Company, engine, rules, first_sync: datetime):
        self.engine, self.rules = engine, rules
        self.now: datetime | None = None
        self.hub = SimulatedHubSpot(clock=lambda: self.now)
        known: dict[str, datetime] = {}  # account -> when its group call arrived
        sales: dict[str, datetime] = {}  # account -> the group call's own time
        for record in company.records:
            message = record.record.get("message") if record.source == "segment" else None
            if message and message.get("type") == "group" and message.get("groupId") not in known:
                known[message.get("groupId")] = record.at
                sales[message.get("groupId")] = datetime.fromisoformat(message["timestamp"])
        billing = _arr_by_account(company, known, sales, first_sync)
        self.company_ids: dict[str, str] = {}
        for number, acc in enumerate(company.accounts, start=1):
            if acc.id not in known:
                continue
            company_id = str(1000 + number)
            self.company_ids[acc.id] = company_id
            owner = self.hub.owner_id(acc.owner_email) if acc.owner_email else None
            arr = billing.get(acc.id, float(acc.arr))
            self.hub.set_company(company_id, known[acc.id], name=acc.name, domain=acc.domain,
                                 stallwatch_account_id=acc.id, arr=repr(float(arr)), hubspot_owner_id=owner)

    def sync(self, now: datetime, *, wakeups=None) -> SyncReport:
        """One scheduled sync at the demo's `now` (the CRM shows what it knew by then)."""
        self.now = now
        with HubSpotClient(self.hub.token, self.hub.url, transport=self.hub.transport(),
                           sleep=lambda _: None) as client:
            return sync_hubspot(self.engine, self.rules, client, now, wakeups=wakeups)

    def reassign(self, account_id: str, owner_email: str, at: datetime) -> None:
        """The CSM team gives the account's company to another owner in HubSpot."""
        self.hub.set_company(self.company_ids[account_id], at, hubspot_owner_id=self.hub.owner_id(owner_email))
