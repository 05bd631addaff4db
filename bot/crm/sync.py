"""`stallwatch sync hubspot` and its scheduled job: account facts from HubSpot companies.

Each run reads the companies modified since the cursor (the last `hs_lastmodifieddate` seen,
kept in storage.meta), oldest first, page by page (bot.crm.hubspot). HubSpot's search pages
through at most 10,000 results of one query: at that cap the query is made again from the
last modified date seen, and the companies already synced at exactly that moment (their ids
are kept with the cursor) are not taken twice.

A company maps to account facts (`company_facts`, pure): the account id from the configured
property, else the one existing account with the company's domain; `name`, `domain`, ARR
(`[hubspot] arr_property`, else `arr_fallback_property`), the owner's email (the company's
`hubspot_owner_id` looked up in the owners API) and the renewal date, each read with the rules
of `import-accounts` (bot.importer_csv.parse_cell) and the ingest window for renewal dates.
An empty property leaves what is known unchanged, as an empty CSV cell does. A company with a
bad value is skipped with a located reason (logged, counted, listed), never stopping the run;
an owner HubSpot does not know leaves the owner unchanged and is reported the same way.

The companies whose facts differ from what is stored go through
storage.ingest.apply_account_traits, the path of `import-accounts` and of a Segment group call
(source "hubspot"): an owner change clears the stored Slack owner and is audited there. The
Slack owner resolver is then woken (`Wakeups.slack_owners`) as ingest wakes it; the CLI runs its
pass itself, as `import-accounts` does. The cursor is stored after each page's facts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

import orjson
from sqlalchemy import Engine

from bot.crm.hubspot import HubSpotClient, HubSpotError
from bot.importer_csv import parse_cell
from bot.ingest.timewindow import renewal_problem
from rules.config import HubSpot, Rules
from storage.crm import account_facts, accounts_by_domain
from storage.db import utcnow
from storage.ingest import apply_account_traits
from storage.meta import get_meta, set_meta

log = logging.getLogger(__name__)
UTC = timezone.utc
CURSOR_KEY = "hubspot.companies.cursor"  # storage.meta: {"at": ms, "ids": [company ids synced at that ms]}
MAX_LISTED = 50  # skip reasons kept in the report (all are logged)


@dataclass
class Cursor:
    at_ms: int = 0  # hs_lastmodifieddate of the newest company synced (epoch ms)
    ids: set[str] = field(default_factory=set)  # the companies synced at exactly at_ms

    def text(self) -> str:
        if not self.at_ms:
            return "the beginning"
        return datetime.fromtimestamp(self.at_ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Mapped:
    """One company read: its facts, or why it was skipped (`skip`), and notes on what was left out."""

    company_id: str
    modified_ms: int | None
    account_id: str | None = None
    domain: str | None = None  # for the match by domain
    facts: dict[str, Any] = field(default_factory=dict)
    owner_id: str | None = None
    skip: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class SyncReport:
    read: int = 0  # companies HubSpot returned (not counting the ones synced before at the cursor)
    synced: int = 0  # companies whose facts were taken
    changed: int = 0  # of those, the ones whose facts differed from what was stored (or a new account)
    created: int = 0  # accounts created
    owners_changed: int = 0
    skipped: int = 0
    problems: list[str] = field(default_factory=list)  # located reasons, the first MAX_LISTED
    problem_count: int = 0
    queries: int = 0  # search queries (a new one at each 10,000-result cap)
    pages: int = 0
    cursor: str = "the beginning"

    def problem(self, message: str) -> None:
        self.problem_count += 1
        log.warning("hubspot sync: %s", message)
        if len(self.problems) < MAX_LISTED:
            self.problems.append(message)

    def summary(self) -> str:
        text = f"synced {self.synced} companies ({self.changed} changed) up to {self.cursor}"
        if self.skipped:
            text += f"; {self.skipped} skipped"
        return text


# --------------------------------------------------------------------------- the mapping (pure)


def parse_modified(value: Any) -> int | None:
    """`hs_lastmodifieddate` (ISO 8601, as the v3 API returns it, or epoch milliseconds) in epoch ms."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _date_of(value: str) -> date:
    """A HubSpot date property: `YYYY-MM-DD`, an ISO datetime, or epoch milliseconds (midnight UTC)."""
    if value.isdigit() and len(value) >= 10:
        try:
            return datetime.fromtimestamp(int(value) / 1000, UTC).date()
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"{value[:40]!r} is not a date") from None
    return parse_cell("renewal_date", value)


def _text(props: dict, name: str) -> str | None:
    value = props.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        value = str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        if value is None:
            raise ValueError("is not a string")
    value = value.strip()
    if "\x00" in value:
        raise ValueError("contains a NUL character")
    return value or None


def company_properties(config: HubSpot) -> list[str]:
    """The properties the search asks for."""
    names = ["name", "domain", "hubspot_owner_id", "hs_lastmodifieddate", config.account_id_property,
             config.arr_property, config.renewal_date_property]
    if config.arr_fallback_property:
        names.append(config.arr_fallback_property)
    return list(dict.fromkeys(names))


def company_facts(company: Any, config: HubSpot, now: datetime) -> Mapped:
    """A search result (`{"id", "properties": {...}, ...}`) as account facts, without the owner's
    email (`owner_id` says which owner to look up) and without the match by domain."""
    company_id = str(company.get("id")) if isinstance(company, dict) and company.get("id") is not None else "?"
    props = company.get("properties") if isinstance(company, dict) else None
    if not isinstance(props, dict):
        return Mapped(company_id, None, skip="no properties object")
    mapped = Mapped(company_id, parse_modified(props.get("hs_lastmodifieddate")))
    name_of = {"name": "name", "domain": "domain", config.arr_property: "arr",
               config.renewal_date_property: "renewal_date"}
    property_name = ""
    try:
        property_name = config.account_id_property
        raw_id = _text(props, property_name)
        if raw_id is not None:
            mapped.account_id = parse_cell("account_id", raw_id)
        for property_name in ("name", "domain", config.arr_property, config.renewal_date_property):
            raw = _text(props, property_name)
            column = name_of[property_name]
            if raw is None and column == "arr" and config.arr_fallback_property:
                property_name = config.arr_fallback_property
                raw = _text(props, property_name)
            if raw is None:
                continue
            if column == "renewal_date":
                day = _date_of(raw)
                problem = renewal_problem(day, now)
                if problem is not None:
                    raise ValueError(problem)
                mapped.facts[column] = day
            else:
                mapped.facts[column] = parse_cell(column, raw)
        property_name = "hubspot_owner_id"
        owner = _text(props, property_name)
        if owner is not None:
            if not owner.isdigit() or len(owner) > 20:
                raise ValueError(f"{owner[:40]!r} is not a HubSpot owner id")
            mapped.owner_id = owner
    except ValueError as exc:
        mapped.skip = f"{property_name}: {exc}"
        return mapped
    mapped.domain = mapped.facts.get("domain")
    if mapped.modified_ms is None:
        mapped.skip = f"hs_lastmodifieddate: {str(props.get('hs_lastmodifieddate'))[:40]!r} is not a date"
    return mapped


# --------------------------------------------------------------------------- the run


def load_cursor(engine: Engine) -> Cursor:
    raw = get_meta(engine, CURSOR_KEY)
    if not raw:
        return Cursor()
    try:
        data = orjson.loads(raw)
        return Cursor(int(data.get("at") or 0), {str(i) for i in data.get("ids") or []})
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        log.warning("hubspot sync: the stored cursor is unreadable; syncing every company again")
        return Cursor()


MAX_CURSOR_TEXT = 1900  # storage.meta values are at most 2,000 characters


def save_cursor(engine: Engine, cursor: Cursor) -> None:
    """The cursor, with as many of the ids at its moment as fit (one left out is taken again by
    the next run, its facts unchanged: synced, not changed)."""
    ids = sorted(cursor.ids, key=lambda i: (len(i), i))
    text = orjson.dumps({"at": cursor.at_ms, "ids": ids}).decode()
    while len(text) > MAX_CURSOR_TEXT and ids:
        ids = ids[: len(ids) // 2]
        text = orjson.dumps({"at": cursor.at_ms, "ids": ids}).decode()
    set_meta(engine, CURSOR_KEY, text)


def sync_hubspot(engine: Engine, rules: Rules, client: HubSpotClient, now: datetime | None = None, *,
                 wakeups=None) -> SyncReport:
    """One incremental sync (the module doc). `wakeups`: the process's Wakeups, whose owner
    resolver is woken when an owner changed."""
    now = now or utcnow()
    config = rules.hubspot
    properties = company_properties(config)
    cursor = load_cursor(engine)
    report = SyncReport(cursor=cursor.text())
    while True:
        report.queries += 1
        since = cursor.at_ms
        progressed = False
        after: str | None = None
        while True:
            page = client.search_companies(properties, modified_since_ms=since, after=after)
            report.pages += 1
            fresh = _take_page(engine, rules, client, page["results"], cursor, since, now, report)
            progressed = progressed or fresh
            save_cursor(engine, cursor)
            report.cursor = cursor.text()
            after = _next_after(page)
            if after is None:
                break
            if _past_cap(after, client.search_cap):
                break  # HubSpot refuses to page past the cap: query again from the cursor
        if after is None:
            break
        if not progressed and cursor.at_ms == since:
            # More companies share one modified time than a query can page through.
            report.problem(f"more than {client.search_cap} companies were modified at {cursor.text()}; "
                           "the rest of that moment is skipped")
            cursor = Cursor(since + 1)
            save_cursor(engine, cursor)
    if report.owners_changed and wakeups is not None:
        wakeups.slack_owners.set()  # the owner resolver maps the new owners now (bot.slack.owners)
    log.info("hubspot sync: %s (%d queries, %d pages, %d calls)", report.summary(), report.queries, report.pages,
             client.calls)
    return report


def _next_after(page: dict) -> str | None:
    paging = page.get("paging")
    nxt = paging.get("next") if isinstance(paging, dict) else None
    after = nxt.get("after") if isinstance(nxt, dict) else None
    return str(after) if after not in (None, "") else None


def _past_cap(after: str, cap: int) -> bool:
    try:
        return int(after) >= cap
    except ValueError:
        return False


def _take_page(engine: Engine, rules: Rules, client: HubSpotClient, results: list, cursor: Cursor, since: int,
               now: datetime, report: SyncReport) -> bool:
    """Map, resolve and store one page's companies; move the cursor. Whether any was new."""
    config = rules.hubspot
    taken: list[Mapped] = []
    for company in results:
        mapped = company_facts(company, config, now)
        if mapped.modified_ms is not None and mapped.modified_ms == since and mapped.company_id in cursor.ids:
            continue  # synced by an earlier query or run at exactly the cursor's moment
        report.read += 1
        if mapped.modified_ms is not None:
            if mapped.modified_ms > cursor.at_ms:
                cursor.at_ms, cursor.ids = mapped.modified_ms, set()
            if mapped.modified_ms == cursor.at_ms:
                cursor.ids.add(mapped.company_id)
        taken.append(mapped)
    if not taken:
        return False
    _resolve_owners(client, taken)
    _match_domains(engine, config, taken)
    traits: dict[str, dict[str, Any]] = {}
    for mapped in taken:
        where = f"company {mapped.company_id}"
        for note in mapped.notes:
            report.problem(f"{where}: {note}")
        if mapped.skip is not None:
            report.skipped += 1
            report.problem(f"{where}: {mapped.skip}; skipped")
            continue
        report.synced += 1
        traits[mapped.account_id] = {**traits.get(mapped.account_id, {}), **mapped.facts}  # the newer wins
    stored = account_facts(engine, list(traits))
    changed = {aid: facts for aid, facts in traits.items() if _differs(stored.get(aid), facts)}
    report.changed += len(changed)
    report.owners_changed += sum(1 for aid, facts in changed.items() if aid in stored and "owner_email" in facts
                                 and (stored[aid]["owner_email"] or "").lower() != facts["owner_email"].lower())
    if changed:
        created, _ = apply_account_traits(engine, changed, rules, now, source="hubspot")
        report.created += created
    return True


def _resolve_owners(client: HubSpotClient, taken: list[Mapped]) -> None:
    """The owners' emails, from the owners API (cached by the client)."""
    for mapped in taken:
        if mapped.skip is not None or mapped.owner_id is None:
            continue
        try:
            email = client.owner_email(mapped.owner_id)
            if email is None:
                mapped.notes.append(f"hubspot_owner_id: owner {mapped.owner_id} is unknown to HubSpot; "
                                    "the owner is left unchanged")
                continue
            mapped.facts["owner_email"] = parse_cell("owner_email", email.strip())
        except ValueError as exc:
            mapped.notes.append(f"hubspot_owner_id: owner {mapped.owner_id}'s email {exc}; the owner is left unchanged")
        except HubSpotError as exc:
            if exc.status in (401, 403):
                raise
            mapped.notes.append(f"hubspot_owner_id: owner {mapped.owner_id}: {exc}; the owner is left unchanged")


def _match_domains(engine: Engine, config: HubSpot, taken: list[Mapped]) -> None:
    """The account of each company without the account id property: the one with its domain."""
    unmatched = [m for m in taken if m.skip is None and m.account_id is None]
    if not unmatched:
        return
    by_domain = accounts_by_domain(engine, [m.domain for m in unmatched if m.domain]) if config.match_by_domain else {}
    for mapped in unmatched:
        ids = by_domain.get(mapped.domain or "", [])
        if len(ids) == 1:
            mapped.account_id = ids[0]
        elif len(ids) > 1:
            mapped.skip = (f"{config.account_id_property}: empty, and {len(ids)} accounts have the domain "
                           f"{mapped.domain} ({', '.join(ids[:3])}); set {config.account_id_property} in HubSpot")
        elif config.match_by_domain and mapped.domain:
            mapped.skip = f"{config.account_id_property}: empty, and no account has the domain {mapped.domain}"
        else:
            mapped.skip = f"{config.account_id_property}: empty" + (
                "" if config.match_by_domain else " (match_by_domain is off)") + ", so no account to update"


def _differs(stored: dict | None, facts: dict[str, Any]) -> bool:
    if stored is None:
        return True
    for key, value in facts.items():
        old = stored.get(key)
        if key in ("owner_email", "domain"):
            if (old or "").lower() != (value or "").lower():
                return True
        elif key == "arr":
            if old is None or abs(float(old) - float(value)) > 1e-6:
                return True
        elif key == "renewal_date":
            if old is None or str(old.isoformat() if hasattr(old, "isoformat") else old)[:10] != value.isoformat():
                return True
        elif old != value:
            return True
    return False
