"""Storing incoming events: idempotent, in one transaction per batch, journey state included.

A batch is stored as a whole or not at all. Events are inserted with ON CONFLICT DO NOTHING
on (source, message_id), so a redelivery is a no-op even when two processes receive it at
once; only the events that were actually new update accounts, contacts, tickets and
tracking issues, and those updates are commutative (earliest step time, latest last-seen),
so late and out-of-order events land where their own timestamps put them.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, bindparam, delete, func, null, select, text, update

from rules.config import Rules
from rules.domains import company_domain
from rules.model import JourneyState
from rules.journey import compute_journey, merge_step_times, parse_step_times
from rules.plan import RulePlan, plan_for
from rules.tracks import assign_track
from storage.db import write_tx
from storage.models import (Account, ActiveDay, AuditEntry, Contact, Event, EventVolume, EventVolumeHour, Stall,
                            StripePending, Ticket, TrackingIssue)
from storage.sql import FastMany, chunks, driver_rows, insert_ignore, select_in, sqlite_datetime_text, upsert

if TYPE_CHECKING:
    from storage.records import IncomingEvent

ACCOUNT = Account.__table__
CONTACT = Contact.__table__
EVENT = Event.__table__
ACTIVE_DAY = ActiveDay.__table__
TICKET = Ticket.__table__
STALL = Stall.__table__
TRACKING = TrackingIssue.__table__
VOLUME = EventVolume.__table__
VOLUME_HOUR = EventVolumeHour.__table__
AUDIT = AuditEntry.__table__
PENDING = StripePending.__table__

PRODUCT_KINDS = frozenset({"track", "page", "screen"})
ACCOUNT_FIELDS = ("name", "domain", "plan", "arr", "owner_email", "renewal_date", "employees", "seats")


@dataclass
class StoreResult:
    accepted: int = 0
    duplicates: int = 0
    accounts: set[str] = field(default_factory=set)  # accounts touched by new events
    evaluate: set[str] = field(default_factory=set)  # accounts whose stalls to re-evaluate now
    missing_properties: int = 0
    # Accounts whose owner_email changed (or was first set): their Slack owner is to be
    # (re-)resolved (bot.slack.owners), so whoever stores them wakes the resolver.
    owners: set[str] = field(default_factory=set)
    # Messages the database refused when stored one by one (storage.writer), with the reason.
    failed: list[tuple["IncomingEvent", str]] = field(default_factory=list)


class _AccountDelta:
    """What a batch's new events say about one account.

    One is made per account per transaction (most of them only see activity), so it is a
    plain class whose fields default at class level: nothing is set or allocated until an
    event says something (`steps`, `traits` and `trait_times` are None until then)."""

    steps: list[tuple[str, datetime]] | None = None
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    traits: dict[str, Any] | None = None
    trait_times: dict[str, datetime] | None = None  # each fact's own time
    lifecycle: tuple[datetime, str] | None = None
    payment: tuple[datetime, bool] | None = None
    stripe_customer_id: str | None = None
    event_driven: bool = False
    progressed: bool = False

    def __init__(self, traits: dict[str, Any] | None = None, trait_times: dict[str, datetime] | None = None):
        if traits:
            self.traits, self.trait_times = traits, trait_times

    def step(self, name: str, at: datetime) -> None:
        if self.steps is None:
            self.steps = []
        self.steps.append((name, at))
        self.progressed = True

    def take_facts(self, at: datetime, traits: dict[str, Any] | None, lifecycle: str | None,
                   payment_failed: bool | None) -> None:
        """Fold in the facts one message carries, each only if it is not older than what
        the batch already says about that fact."""
        if traits:
            if self.traits is None:
                self.traits, self.trait_times = {}, {}
            for key, value in traits.items():
                known = self.trait_times.get(key)
                if known is None or at >= known:
                    self.traits[key] = value
                    self.trait_times[key] = at
        if lifecycle and (self.lifecycle is None or at >= self.lifecycle[0]):
            self.lifecycle = (at, lifecycle)
        if payment_failed is not None and (self.payment is None or at >= self.payment[0]):
            self.payment = (at, payment_failed)

    def seen(self, at: datetime) -> None:
        first = self.first_seen
        if first is None:
            self.first_seen = self.last_seen = at
        elif at < first:
            self.first_seen = at
        elif at > self.last_seen:
            self.last_seen = at


def store_events(engine: Engine, events: list["IncomingEvent"], rules: Rules, now: datetime) -> StoreResult:
    """Store a batch of validated events; return what was new. All or nothing."""
    return store_batches(engine, [events], rules, now)[0]


def store_batches(engine: Engine, batches: list[list["IncomingEvent"]], rules: Rules, now: datetime) -> list[StoreResult]:
    """Store several batches in one transaction (group commit); one result per batch.

    Within the group, a message id in two batches counts for the first one and is a
    duplicate in the later one, exactly as if they had been stored one after the other.
    """
    owner: dict[tuple[str, str], int] = {}
    unique: list["IncomingEvent"] = []
    for index, events in enumerate(batches):
        for ev in events:
            key = (ev.source, ev.message_id)
            if key not in owner:
                owner[key] = index
                unique.append(ev)
    results = [StoreResult() for _ in batches]
    if not unique:
        for result, events in zip(results, batches):
            result.duplicates = len(events)
        return results
    combined = StoreResult()
    with write_tx(engine) as conn:
        _resolve_accounts(conn, unique)
        fresh = _insert_events(conn, unique, now, plan_for(rules).tracked_events)
        if fresh:
            _apply(conn, fresh, rules, now, combined)
    for ev in fresh:
        result = results[owner[(ev.source, ev.message_id)]]
        result.accepted += 1
        if ev.account_id in combined.accounts:
            result.accounts.add(ev.account_id)
        if ev.account_id in combined.evaluate:
            result.evaluate.add(ev.account_id)
        if ev.account_id in combined.owners:
            result.owners.add(ev.account_id)
        result.missing_properties += len(ev.missing_properties)
    for result, events in zip(results, batches):
        result.duplicates = len(events) - result.accepted
    return results


def _resolve_accounts(conn, batch: list["IncomingEvent"]) -> None:
    """Fill in the account of events that name only a user, a requester email or a Stripe customer."""
    links = {ev.contact_id: ev.account_id for ev in batch if ev.kind == "group" and ev.contact_id}
    unknown_users = {ev.contact_id for ev in batch if ev.account_id is None and ev.contact_id} - links.keys()
    if unknown_users:
        for chunk in chunks(sorted(unknown_users)):
            rows = conn.execute(select(CONTACT.c.id, CONTACT.c.account_id).where(CONTACT.c.id.in_(chunk)))
            links.update({cid: aid for cid, aid in rows if aid})
    emails = {ev.requester_email for ev in batch if ev.account_id is None and ev.requester_email}
    by_email: dict[str, str] = {}
    if emails:
        rows = conn.execute(
            select(CONTACT.c.email, CONTACT.c.account_id)
            .where(CONTACT.c.email.in_(sorted(emails)), CONTACT.c.account_id.is_not(None))
        )
        by_email = {email: aid for email, aid in rows}
    by_email.update(_accounts_by_domain(conn, emails - by_email.keys()))
    billing = [ev for ev in batch if ev.stripe_customer_id]
    by_customer: dict[str, str] = {}
    if billing:
        _lock_customers(conn, billing)
        # A customer the batch itself links to an account (its customer event, a checkout
        # session) resolves the batch's other events of that customer, whatever their order.
        batch_links = {ev.stripe_customer_id: ev.account_id for ev in billing if ev.account_id}
        customers = {ev.stripe_customer_id for ev in billing if ev.account_id is None} - batch_links.keys()
        if customers:
            rows = conn.execute(
                select(ACCOUNT.c.stripe_customer_id, ACCOUNT.c.id).where(ACCOUNT.c.stripe_customer_id.in_(sorted(customers)))
            )
            by_customer = {cust: aid for cust, aid in rows}
        by_customer.update(batch_links)
    for ev in batch:
        if ev.account_id is None:
            ev.account_id = (
                links.get(ev.contact_id)
                or by_email.get(ev.requester_email or "")
                or by_customer.get(ev.stripe_customer_id or "")
            )


def _accounts_by_domain(conn, emails: set[str]) -> dict[str, str]:
    """A requester no contact matches, tied to the one account with their company's domain
    (`ops@acme.com` -> the account whose domain is acme.com). Free-mail addresses say nothing
    about the company, and a domain two accounts share is ambiguous: neither is guessed."""
    domains = {email: d for email in emails if (d := company_domain(email))}
    owners = accounts_with_domains(conn, list(domains.values()))
    return {email: owners[d][0] for email, d in domains.items() if len(owners.get(d, ())) == 1}


def accounts_with_domains(conn, domains: list[str]) -> dict[str, list[str]]:
    """The ids of the accounts with each of these domains (stored normalized, lower-case:
    the index on account.domain answers)."""
    found: dict[str, list[str]] = {}
    for chunk in chunks(sorted({d.lower() for d in domains if d})):
        for domain, aid in conn.execute(select(ACCOUNT.c.domain, ACCOUNT.c.id)
                                        .where(ACCOUNT.c.domain.in_(chunk)).order_by(ACCOUNT.c.id)):
            found.setdefault(domain, []).append(aid)
    return found


def _lock_customers(conn, billing: list["IncomingEvent"]) -> None:
    """PostgreSQL: serialize the transactions that touch one Stripe customer (a few per
    webhook, never a Segment batch), so an event stored as unattributed and the link that
    would attribute it cannot pass each other unseen; SQLite's writers are serial already.
    The two-key advisory lock space is apart from the scheduler leader's one-key lock."""
    if conn.dialect.name != "postgresql":
        return
    for customer in sorted({ev.stripe_customer_id for ev in billing}):
        conn.execute(text("SELECT pg_advisory_xact_lock(1937010544, hashtext(current_schema() || ':' || :c))"),
                     {"c": customer})


def _hold_unattributed(conn, events: list["IncomingEvent"], now: datetime) -> None:
    """Keep the facts of Stripe events whose customer has no account yet, until it has one."""
    rows = [{"message_id": ev.message_id, "customer_id": ev.stripe_customer_id, "occurred_at": ev.occurred_at,
             "facts": {"traits": {k: v.isoformat() if isinstance(v, date) else v
                                  for k, v in (ev.account_traits or {}).items()},
                       "lifecycle": ev.lifecycle, "payment_failed": ev.payment_failed},
             "created_at": now} for ev in events]
    conn.execute(insert_ignore(conn, PENDING, "message_id"), rows)


# How long a Stripe event waits for its customer's account. A customer never linked (another
# product's, a test customer) would otherwise keep its events held for ever; past this, a held
# event's facts are stale anyway: even a yearly plan is invoiced again within it, and that
# newer event is held (or attributed) in its turn.
STRIPE_HOLD = timedelta(days=400)


def expire_held_stripe(engine: Engine, now: datetime) -> int:
    """Drop the held Stripe events stored more than STRIPE_HOLD before `now` (their stored
    events stay, with no account); returns how many. Daily, from the scheduler's leader."""
    with write_tx(engine) as conn:
        return conn.execute(delete(PENDING).where(PENDING.c.created_at < now - STRIPE_HOLD)).rowcount or 0


def _attribute_held(conn, links: dict[str, str], deltas: dict[str, "_AccountDelta"]) -> None:
    """The customers this batch links to an account: their held events get the account, and
    their facts apply with their own times, as if they had arrived after the link."""
    held = []
    for chunk in chunks(sorted(links)):
        held.extend(conn.execute(select(PENDING.c.message_id, PENDING.c.customer_id, PENDING.c.occurred_at,
                                        PENDING.c.facts).where(PENDING.c.customer_id.in_(chunk))))
    if not held:
        return
    for message_id, customer, at, facts in sorted(held, key=lambda r: r[0]):
        delta = deltas[links[customer]]
        traits = dict(facts.get("traits") or {})
        if isinstance(traits.get("renewal_date"), str):
            traits["renewal_date"] = date.fromisoformat(traits["renewal_date"])
        delta.take_facts(at, traits, facts.get("lifecycle"), facts.get("payment_failed"))
        delta.event_driven = True
    conn.execute(update(EVENT).where(EVENT.c.source == "stripe", EVENT.c.message_id == bindparam("mid"))
                 .values(account_id=bindparam("aid")),
                 [{"mid": r[0], "aid": links[r[1]]} for r in held])
    for chunk in chunks(sorted(r[0] for r in held)):
        conn.execute(delete(PENDING).where(PENDING.c.message_id.in_(chunk)))


EVENT_KEYS = ("source", "message_id", "kind", "name", "account_id", "contact_id", "occurred_at", "received_at",
              "milestone", "properties")


def _insert_events(conn, batch: list["IncomingEvent"], now: datetime, milestones: frozenset[str]) -> list["IncomingEvent"]:
    """Insert the batch (unique (source, message_id) pairs: store_batches), skipping the pairs
    already stored; return the new ones."""
    if conn.dialect.name == "sqlite":
        # SQLite has one writer and we hold its lock (BEGIN IMMEDIATE): no other transaction
        # inserts meanwhile, so the insert can skip RETURNING.
        insert = FastMany.of(conn, "event.insert", lambda c: upsert(c, EVENT).on_conflict_do_nothing(), EVENT_KEYS,
                             _types(EVENT))
        procs, in_order = insert.sqlite_params(conn)
        if not in_order:  # a changed table definition: the generic path still stores it right
            stored = _stored_ids(conn, [(ev.source, ev.message_id) for ev in batch])
            fresh = [ev for ev in batch if (ev.source, ev.message_id) not in stored]
            insert.run(conn, [_event_row(ev, now, milestones) for ev in fresh])
            return fresh
        last_id = driver_rows(conn, "SELECT max(id) FROM event")[0][0] or 0
        # The hottest insert: one tuple per event, converted as the columns' own bind
        # processors would (storage.sql), with no dict per row and `now` converted once.
        as_json, received = procs["properties"], sqlite_datetime_text(now)
        inserted = insert.run_tuples(conn, [
            (ev.source, ev.message_id, ev.kind, ev.name, ev.account_id, ev.contact_id,
             sqlite_datetime_text(ev.occurred_at), received, ev.kind not in PRODUCT_KINDS or ev.name in milestones,
             as_json(ev.properties))
            for ev in batch])
        if inserted == len(batch):  # the common case: nothing was a redelivery
            return batch
        # Some were already stored (ON CONFLICT DO NOTHING skipped them). New rows take ids
        # past the largest one before (an INTEGER PRIMARY KEY counts up), so they are ours.
        new = set(driver_rows(conn, "SELECT source, message_id FROM event WHERE id > ?", (last_id,)))
        return [ev for ev in batch if (ev.source, ev.message_id) in new]
    rows = {(ev.source, ev.message_id): _event_row(ev, now, milestones) for ev in batch}
    # Elsewhere concurrent transactions may race on the same ids: the database decides,
    # and RETURNING tells which rows were ours. Rows go in key order, so two batches sharing
    # ids wait on each other in one order instead of deadlocking.
    stmt = insert_ignore(conn, EVENT, "source", "message_id").returning(EVENT.c.source, EVENT.c.message_id)
    inserted: set[tuple[str, str]] = set()
    for chunk in chunks([rows[key] for key in sorted(rows)], 500):
        inserted.update(tuple(r) for r in conn.execute(stmt, chunk))
    return [ev for ev in batch if (ev.source, ev.message_id) in inserted]


def _event_row(ev: "IncomingEvent", now: datetime, milestones: frozenset[str]) -> dict[str, Any]:
    return {
        "source": ev.source, "message_id": ev.message_id, "kind": ev.kind, "name": ev.name,
        "account_id": ev.account_id, "contact_id": ev.contact_id, "occurred_at": ev.occurred_at,
        "received_at": now, "properties": ev.properties,
        "milestone": ev.kind not in PRODUCT_KINDS or ev.name in milestones,
    }


def _stored_ids(conn, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
    by_source: dict[str, list[str]] = defaultdict(list)
    for source, message_id in keys:
        by_source[source].append(message_id)
    stored: set[tuple[str, str]] = set()
    for source, ids in by_source.items():
        # `source` is one of our own constants ("segment", "stripe", "tickets"), never client text.
        rows = select_in(conn, EVENT, ("message_id",), "message_id", ids, where=f"source = '{source}'")
        stored.update((source, r[0]) for r in rows)
    return stored


def _types(table) -> dict:
    """Column name -> type (asked for on every FastMany call: worked out once per table)."""
    found = _types_of.get(table.name)
    if found is None or found[0] is not table:
        found = _types_of[table.name] = (table, {c.name: c.type for c in table.columns})
    return found[1]


_types_of: dict = {}


def _apply(conn, fresh: list["IncomingEvent"], rules: Rules, now: datetime, result: StoreResult) -> None:
    journey_events = plan_for(rules).tracked_events
    deltas: dict[str, _AccountDelta] = defaultdict(_AccountDelta)
    active_days: set[tuple[str, date]] = set()
    contacts: dict[str, dict[str, Any]] = {}
    tickets: dict[str, dict[str, Any]] = {}
    missing: dict[tuple[str, str], list] = {}
    out_of_window: dict[tuple[str, str], list] = {}
    volume: dict[tuple[str, date], list[int]] = defaultdict(lambda: [0, 0])
    hourly: dict[tuple[str, str], int] = defaultdict(int)  # (source, track name or "") this hour
    links: dict[str, str] = {}  # Stripe customer -> the account this batch names for it
    unattributed: list["IncomingEvent"] = []  # Stripe events of a customer with no account yet
    today, schema = now.date(), rules.schema_  # looked up once, not per event

    for ev in fresh:
        if ev.missing_properties:
            ev.missing_properties = []  # a retried store (storage.writer) must not count twice
        kind, name, account_id = ev.kind, ev.name, ev.account_id
        if ev.time_issues:
            label = (name or kind)[:200]
            for prop, detail in ev.time_issues:
                entry = out_of_window.get((label, prop))
                if entry is None:
                    out_of_window[(label, prop)] = [1, ev.message_id, detail]
                else:
                    entry[0] += 1
        if kind == "track" and name:
            volume[(name, today)][0] += 1
            hourly[(ev.source, name)] += 1
            if name in schema:
                for prop in schema[name]:
                    if ev.properties.get(prop) in (None, ""):
                        ev.missing_properties.append(prop)
                        volume[(name, today)][1] += 1
                        entry = missing.setdefault((name, prop), [0, ev.occurred_at, ev.occurred_at, ev.message_id])
                        entry[0] += 1
                        entry[1] = min(entry[1], ev.occurred_at)
                        entry[2] = max(entry[2], ev.occurred_at)
        else:
            hourly[(ev.source, "")] += 1
        if ev.contact_id and (ev.contact_traits or kind in ("group", "identify")):
            _merge_contact(contacts, ev)
        if ev.ticket is not None:
            _merge_ticket(tickets, ev)
        if not account_id:
            if ev.stripe_customer_id:  # held until the customer's account is known
                unattributed.append(ev)
            continue
        delta = deltas[account_id]
        if kind in PRODUCT_KINDS:
            at = ev.occurred_at
            delta.seen(at)
            active_days.add((account_id, at.date()))
            if name in journey_events:
                delta.step(name, at)
        if ev.account_traits or ev.lifecycle or ev.payment_failed is not None:
            delta.take_facts(ev.occurred_at, ev.account_traits, ev.lifecycle, ev.payment_failed)
        if ev.stripe_customer_id:
            delta.stripe_customer_id = ev.stripe_customer_id
            links[ev.stripe_customer_id] = account_id  # its held events are this account's
        if ev.source == "stripe" or ev.ticket is not None:  # payments and tickets of any helpdesk
            delta.event_driven = True

    if links:
        _attribute_held(conn, links, deltas)
    if unattributed:
        _hold_unattributed(conn, unattributed, now)
    if contacts:
        _upsert_contacts(conn, contacts, now)
    if deltas:
        result.owners = _update_accounts(conn, deltas, rules, now, source="segment")
        result.accounts = set(deltas)
        result.evaluate = {aid for aid, d in deltas.items() if d.event_driven} | _with_open_stalls(
            conn, [aid for aid, d in deltas.items() if d.progressed and not d.event_driven]
        )
    if active_days:
        _insert_active_days(conn, sorted(active_days))
    if volume:
        _count_volume(conn, volume)
    if hourly:
        _count_hour(conn, hourly, now)
    if tickets:
        _upsert_tickets(conn, tickets)
    if missing:
        _record_issues(conn, "missing_property", {
            key: (n, example, f"'{key[0]}' arrived without the required property '{key[1]}'")
            for key, (n, _first, _last, example) in missing.items()}, now)
        result.missing_properties = sum(v[0] for v in missing.values())
    if out_of_window:
        _record_issues(conn, "time_out_of_window", {key: tuple(v) for key, v in out_of_window.items()}, now)


def _insert_active_days(conn, days: list[tuple[str, date]]) -> None:
    insert = FastMany.of(conn, "active_day.insert", lambda c: upsert(c, ACTIVE_DAY).on_conflict_do_nothing(),
                         ("account_id", "day"), _types(ACTIVE_DAY))
    procs, in_order = insert.sqlite_params(conn) if conn.dialect.name == "sqlite" else ({}, False)
    if in_order:  # one per account and batch: tuples, the day converted by the column's own processor
        as_day = procs["day"]
        insert.run_tuples(conn, [(a, as_day(d)) for a, d in days])
    else:
        insert.run(conn, [{"account_id": a, "day": d} for a, d in days])


def _merge_contact(contacts: dict[str, dict[str, Any]], ev: "IncomingEvent") -> None:
    row = contacts.setdefault(
        ev.contact_id,
        {"id": ev.contact_id, "account_id": None, "email": None, "name": None, "first_name": None,
         "unsubscribed": None, "last_seen_at": ev.occurred_at},
    )
    if ev.account_id:
        row["account_id"] = ev.account_id
    for key, value in (ev.contact_traits or {}).items():
        row[key] = value
    row["last_seen_at"] = max(row["last_seen_at"], ev.occurred_at)


def _contact_upsert(conn):
    stmt = upsert(conn, CONTACT)
    excluded = stmt.excluded
    # Keep what we knew when a message omits a trait; an identify that says nothing about
    # unsubscribing must not resubscribe anyone, so that flag is set in a second statement.
    return stmt.on_conflict_do_update(
        index_elements=["id"],
        set_={
            "account_id": func.coalesce(excluded.account_id, CONTACT.c.account_id),
            "email": func.coalesce(excluded.email, CONTACT.c.email),
            "name": func.coalesce(excluded.name, CONTACT.c.name),
            "first_name": func.coalesce(excluded.first_name, CONTACT.c.first_name),
            "updated_at": excluded.updated_at,
        },
    )


def _upsert_contacts(conn, contacts: dict[str, dict[str, Any]], now: datetime) -> None:
    rows = [dict(row, created_at=now, updated_at=now) for _, row in sorted(contacts.items())]
    for row in rows:
        if row["unsubscribed"] is None:
            row["unsubscribed"] = False
    unsub_given = {row["id"] for row in contacts.values() if row["unsubscribed"] is not None}
    FastMany.of(conn, "contact.upsert", _contact_upsert, tuple(rows[0]), _types(CONTACT)).run(conn, rows)
    if unsub_given:
        conn.execute(
            update(CONTACT).where(CONTACT.c.id == bindparam("cid")).values(unsubscribed=bindparam("flag")),
            [{"cid": cid, "flag": bool(contacts[cid]["unsubscribed"])} for cid in sorted(unsub_given)],
        )


ACCOUNT_STATE = (
    "id", "name", "name_lower", "domain", "plan", "arr", "seats", "employees", "owner_email", "owner_slack_id",
    "renewal_date", "status", "track", "steps", "first_seen_at", "last_seen_at", "payment_failed_at", "stripe_customer_id", "stage",
    "signup_at", "activated_at", "waiting_step", "waiting_since", "stalled_at", "checkpoint_at", "steps_done",
    "journey_version", "next_eval_at", "traits_at", "lifecycle_at", "payment_at", "fact_times",
)
# last_seen_at moves at most once per UTC day: the journey and the digest need no finer
# grain, and it spares an account-row write for every event of an active account (the exact
# time of the latest activity is one indexed look-up away, in the event table).


def _update_accounts(conn, deltas: dict[str, _AccountDelta], rules: Rules, now: datetime, *,
                     source: str) -> set[str]:
    """Fold the deltas into the accounts, creating missing ones; write only rows that change.
    Returns the accounts whose owner_email changed (`_owner_changes`)."""
    ids = sorted(deltas)
    version = rules_version(rules)
    # First a narrow look: most accounts of a batch only show activity that changes nothing.
    known = {r[0]: r for r in select_in(conn, ACCOUNT, ("id", "first_seen_at", "last_seen_at", "journey_version"),
                                           "id", ids, raw=True)}
    changing = [aid for aid in ids if aid not in known or not _unchanged(known[aid], deltas[aid], version)]
    if not changing:
        return set()
    cols = [ACCOUNT.c[name] for name in ACCOUNT_STATE]
    rows: dict[str, dict] = {}
    if conn.dialect.name == "postgresql":
        # One pass in id order creates the missing rows and locks every row (an upsert locks
        # the row it finds). Locking the known rows first and the new ones after deadlocks
        # when two batches see a just-created account differently (known to one, new to the other).
        stmt = upsert(conn, ACCOUNT)
        stmt = stmt.on_conflict_do_update(index_elements=["id"], set_={"updated_at": ACCOUNT.c.updated_at})
        stmt = stmt.returning(*cols)
        for chunk in chunks(changing):
            rows.update((r.id, dict(r._mapping)) for r in conn.execute(stmt, [_new_account(aid, now) for aid in chunk]))
    else:
        # SQLite: this transaction holds the database's only write lock already.
        rows.update((r.id, r._asdict()) for r in select_in(conn, ACCOUNT, ACCOUNT_STATE, "id",
                                                           [aid for aid in changing if aid in known]))
        missing = [aid for aid in changing if aid not in rows]
        if missing:
            conn.execute(insert_ignore(conn, ACCOUNT, "id"), [_new_account(aid, now) for aid in missing])
            rows.update((aid, _new_account(aid, now)) for aid in missing)
    values_of = {aid: _account_update(rows[aid], deltas[aid], rules, now) for aid in changing}
    owners = _owner_changes(conn, rows, values_of, now, source)
    # Each row SETs only the columns whose value changes (and updated_at; next_eval_at when it
    # is to be cleared): an UPDATE rewrites the entry of every index on a column it SETs, the
    # account table has eight, and a typical update moves a few journey columns. Rows that
    # change the same columns go in one executemany.
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    compared: list[str] | None = None
    for aid in changing:
        row, values = rows[aid], values_of[aid]
        if compared is None:  # every values dict has _account_update's keys, in its order
            compared = [k for k in values if k not in _ALWAYS_SET]
        changed = tuple([k for k in compared if values[k] != row.get(k)])
        clear_eval = ("next_eval_at",) if row.get("next_eval_at") is not None else ()
        if changed or (deltas[aid].event_driven and clear_eval):
            keys = ("_id", *changed, "updated_at", *clear_eval)
            shapes[keys].append({k: values[k] for k in keys})
    for keys, updates in sorted(shapes.items()):
        FastMany.of(
            conn, "account.update",
            lambda c, keys=keys: update(ACCOUNT).where(ACCOUNT.c.id == bindparam("_id")).values(
                {k: bindparam(k) for k in keys if k != "_id"}),
            keys, _types(ACCOUNT),
        ).run(conn, updates)
    return owners


_ALWAYS_SET = frozenset({"_id", "updated_at", "next_eval_at"})  # not compared: see _update_accounts


def _owner_changes(conn, rows: dict[str, dict], values_of: dict[str, dict], now: datetime, source: str) -> set[str]:
    """Accounts whose owner_email changes: their stored Slack owner is the former owner's, so
    it is replaced, in the account's own UPDATE, by the Slack id another account already maps
    the new email to, else cleared (bot.slack.owners resolves it). A reassignment (there was
    an owner before) is audited with both emails and nothing else."""
    changed = {aid: ((row.get("owner_email") or None), (values_of[aid]["owner_email"] or None))
               for aid, row in rows.items() if aid in values_of
               and (row.get("owner_email") or "").lower() != (values_of[aid]["owner_email"] or "").lower()}
    if not changed:
        return set()
    emails = sorted({new.lower() for _, new in changed.values() if new})
    known: dict[str, str] = {}
    for chunk in chunks(emails):  # CSMs are few: this runs only when an owner changes
        known.update((email.lower(), slack_id) for email, slack_id in conn.execute(
            select(ACCOUNT.c.owner_email, ACCOUNT.c.owner_slack_id)
            .where(ACCOUNT.c.owner_email.in_(chunk), ACCOUNT.c.owner_slack_id.is_not(None))))
    for aid, (_, new) in changed.items():
        values_of[aid]["owner_slack_id"] = known.get(new.lower()) if new else None
    audits = [{"at": now, "actor": "system", "action": "account.owner_changed", "stall_id": None, "account_id": aid,
               "source": source, "detail": {"from": old, "to": new}}
              for aid, (old, new) in sorted(changed.items()) if old]
    if audits:
        conn.execute(AUDIT.insert(), audits)
    return set(changed)


def _new_account(aid: str, now: datetime) -> dict[str, Any]:
    return {
        "id": aid, "name": aid, "name_lower": aid.lower()[:255], "domain": None, "plan": None, "arr": 0.0, "seats": None,
        "employees": None, "owner_email": None, "owner_slack_id": None, "renewal_date": None, "status": "trialing", "track": "standard",
        "steps": {}, "first_seen_at": None, "last_seen_at": None, "payment_failed_at": None,
        "stripe_customer_id": None, "stage": "Onboarding", "signup_at": None, "activated_at": None,
        "waiting_step": None, "waiting_since": None, "stalled_at": None, "checkpoint_at": None, "steps_done": 0,
        "journey_version": "", "next_eval_at": None, "traits_at": None, "lifecycle_at": None, "payment_at": None,
        "fact_times": None, "created_at": now, "updated_at": now,
    }


def _unchanged(known: tuple, delta: _AccountDelta, version: str) -> bool:
    """The common case of plain product usage: nothing but activity on a known account."""
    if delta.steps or delta.traits or delta.lifecycle or delta.payment or delta.stripe_customer_id:
        return False
    if delta.event_driven:  # a ticket or billing event: the account is due for evaluation
        return False
    _, first, last, journey_version = known
    if journey_version != version:
        return False
    if delta.first_seen is not None and (first is None or _earlier(delta.first_seen, first)):
        return False
    return delta.last_seen is None or (last is not None and not _later_day(delta.last_seen, last))


def _account_update(row: dict, delta: _AccountDelta, rules: Rules, now: datetime) -> dict[str, Any]:
    # Facts from a message older than what is stored (a late redelivery, Stripe's unordered
    # webhooks) must not overwrite newer ones: each fact keeps the time it is from, and a
    # message changes only the facts it carries (a name-only group call leaves ARR alone).
    values = {name: row[name] for name in ACCOUNT_FIELDS}
    traits_at, lifecycle_at, payment_at = row.get("traits_at"), row.get("lifecycle_at"), row.get("payment_at")
    fact_times = row.get("fact_times")
    if delta.traits:
        times = dict(fact_times or {})
        for key, value in delta.traits.items():
            at = delta.trait_times[key]
            if key in values and _not_older(at, _stamp(times.get(key))):
                values[key] = value
                times[key] = at.astimezone(timezone.utc).isoformat()
                traits_at = _max(traits_at, at)
        if times != (fact_times or {}):
            fact_times = times
    plan = plan_for(rules)
    steps = merge_step_times(row["steps"] or {}, delta.steps, plan.tracked_events) if delta.steps else dict(row["steps"] or {})
    first_seen = _min(row["first_seen_at"], delta.first_seen)
    last_seen = row["last_seen_at"]
    if delta.last_seen is not None and (last_seen is None or _later_day(delta.last_seen, last_seen)):
        last_seen = delta.last_seen
    status = row["status"]
    if delta.lifecycle and _not_older(delta.lifecycle[0], lifecycle_at):
        lifecycle_at, status = delta.lifecycle
    payment_failed_at = row["payment_failed_at"]
    if delta.payment is not None and _not_older(delta.payment[0], payment_at):
        payment_at, failed = delta.payment
        payment_failed_at = (payment_failed_at or payment_at) if failed else None
    track = assign_track(values["arr"], values["plan"], values["seats"], plan)
    journey = compute_journey(
        parse_step_times(steps), plan, first_seen_at=first_seen, renewal_date=values["renewal_date"], now=now,
        churn_risk=row["stage"] == "Churn risk", track=track,
    )
    return {
        "_id": row["id"],
        **values,
        "owner_slack_id": row.get("owner_slack_id"),  # replaced when the owner changes (_owner_changes)
        "name_lower": (values["name"] or row["id"]).lower()[:255],
        "track": track,
        "status": status,
        "steps": steps,
        "first_seen_at": first_seen,
        "last_seen_at": last_seen,
        "payment_failed_at": payment_failed_at,
        "traits_at": traits_at,
        "fact_times": fact_times,
        "lifecycle_at": lifecycle_at,
        "payment_at": payment_at,
        "stripe_customer_id": delta.stripe_customer_id or row["stripe_customer_id"],
        **journey_columns(journey),
        "journey_version": rules_version(rules),
        "next_eval_at": None,  # something changed: the next scan looks at it
        "updated_at": now,
    }


def journey_columns(journey: JourneyState) -> dict[str, Any]:
    """The account columns that store a journey state."""
    return {
        "signup_at": journey.signup_at,
        "activated_at": journey.activated_at,
        "stage": journey.stage,
        "waiting_step": journey.waiting_step,
        "waiting_since": journey.waiting_since,
        "stalled_at": journey.stalled_at,
        "checkpoint_at": journey.checkpoint_at,
        "steps_done": journey.steps_done,
    }


def _with_open_stalls(conn, account_ids: list[str]) -> set[str]:
    """Of these accounts, the ones with a live stall (progress may have resolved it)."""
    rows = select_in(conn, STALL, ("account_id",), "account_id", sorted(account_ids), where="open_key IS NOT NULL")
    return {r[0] for r in rows}


def _merge_ticket(tickets: dict[str, dict[str, Any]], ev: "IncomingEvent") -> None:
    t = ev.ticket
    current = tickets.get(t.id)
    if current is not None and current["updated_at"] > ev.occurred_at:
        return
    tickets[t.id] = {
        "id": t.id, "account_id": ev.account_id, "requester_email": t.requester_email, "status": t.status,
        "topic": t.topic, "subject": t.subject, "body": t.body, "priority": t.priority, "created_at": t.created_at,
        "updated_at": ev.occurred_at,
    }


def _upsert_tickets(conn, tickets: dict[str, dict[str, Any]]) -> None:
    stmt = upsert(conn, TICKET)
    excluded = stmt.excluded
    stmt = stmt.on_conflict_do_update(
        index_elements=["id"],
        set_={
            "account_id": func.coalesce(excluded.account_id, TICKET.c.account_id),
            "status": excluded.status,
            "topic": func.coalesce(excluded.topic, TICKET.c.topic),
            "subject": func.coalesce(excluded.subject, TICKET.c.subject),
            "body": func.coalesce(excluded.body, TICKET.c.body),
            "priority": func.coalesce(excluded.priority, TICKET.c.priority),
            "updated_at": excluded.updated_at,
        },
        # An older update arriving late must not roll a ticket's status back.
        where=excluded.updated_at >= TICKET.c.updated_at,
    )
    conn.execute(stmt, [tickets[k] for k in sorted(tickets)])


def _volume_upsert(conn):
    stmt = upsert(conn, VOLUME)
    return stmt.on_conflict_do_update(
        index_elements=["name", "day"],
        set_={"count": VOLUME.c.count + stmt.excluded.count,
              "missing_required": VOLUME.c.missing_required + stmt.excluded.missing_required},
    )


def _count_volume(conn, volume: dict[tuple[str, date], list[int]]) -> None:
    FastMany.of(conn, "volume.upsert", _volume_upsert, ("name", "day", "count", "missing_required"),
                _types(VOLUME)).run(conn, [{"name": name, "day": day, "count": n, "missing_required": m}
                                           for (name, day), (n, m) in sorted(volume.items())])


def _volume_hour_upsert(conn):
    stmt = upsert(conn, VOLUME_HOUR)
    return stmt.on_conflict_do_update(index_elements=["hour", "source", "name"],
                                      set_={"count": VOLUME_HOUR.c.count + stmt.excluded.count})


def _count_hour(conn, hourly: dict[tuple[str, str], int], now: datetime) -> None:
    """Add the batch to this hour's counters (by arrival: a quiet source is one that sends
    nothing now, whatever its events' own timestamps say)."""
    hour = now.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)
    FastMany.of(conn, "volume_hour.upsert", _volume_hour_upsert, ("hour", "source", "name", "count"),
                _types(VOLUME_HOUR)).run(conn, [{"hour": hour, "source": source, "name": name[:200], "count": n}
                                                for (source, name), n in sorted(hourly.items())])


def _issue_upsert(conn):
    stmt = upsert(conn, TRACKING)
    excluded = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=["kind", "event_name", "property"],
        set_={
            "count": TRACKING.c.count + excluded.count,
            "last_seen_at": excluded.last_seen_at,
            "example_message_id": excluded.example_message_id,
            "resolved_at": null(),
        },
    )


ISSUE_KEYS = ("kind", "event_name", "property", "count", "first_seen_at", "last_seen_at", "example_message_id", "detail")


def _record_issues(conn, kind: str, issues: dict[tuple[str, str], tuple[int, str, str]], now: datetime) -> None:
    """Count tracking issues of one kind: {(event name, property): (count, example message id, detail)}."""
    FastMany.of(conn, "tracking_issue.upsert", _issue_upsert, ISSUE_KEYS, _types(TRACKING)).run(conn, [
        {"kind": kind, "event_name": name, "property": prop, "count": n, "first_seen_at": now, "last_seen_at": now,
         "example_message_id": example, "detail": detail[:1000]}
        for (name, prop), (n, example, detail) in sorted(issues.items())
    ])


def rules_version(rules: Rules | RulePlan) -> str:
    """A short fingerprint of what stored journey state depends on."""
    rules = rules.rules if isinstance(rules, RulePlan) else rules
    cached = _versions.get(id(rules))
    if cached is None or cached[0] is not rules:
        cached = _versions[id(rules)] = (rules, _fingerprint_hash(rules.journey_fingerprint()))
    return cached[1]


_versions: dict[int, tuple[Rules, str]] = {}


@lru_cache(maxsize=32)
def _fingerprint_hash(fingerprint: str) -> str:
    return hashlib.sha1(fingerprint.encode()).hexdigest()[:16]


# The narrow look-up may hand over SQLite's stored text ("YYYY-MM-DD HH:MM:SS.ffffff", UTC)
# instead of a datetime (select_in raw=True): these compare either form without parsing it.

def _earlier(at: datetime, stored) -> bool:
    if not isinstance(stored, str):
        return at < stored
    # The stored text is fixed-width, so its order is the times' order.
    return sqlite_datetime_text(at) < stored


def _not_older(at: datetime | None, stored: datetime | None) -> bool:
    return stored is None or at is None or at >= stored


def _stamp(stored: str | None) -> datetime | None:
    """A fact time as stored in fact_times (ISO 8601 with its offset)."""
    return datetime.fromisoformat(stored) if stored else None


def _later_day(new: datetime, old) -> bool:
    if isinstance(old, str):
        return sqlite_datetime_text(new)[:10] > old[:10]
    return new.astimezone(timezone.utc).date() > old.astimezone(timezone.utc).date()


def _min(a, b):
    return b if a is None else a if b is None else min(a, b)


def _max(a, b):
    return b if a is None else a if b is None else max(a, b)


def apply_account_traits(engine: Engine, traits: dict[str, dict[str, Any]], rules: Rules, now: datetime, *,
                         source: str = "import") -> tuple[int, int]:
    """Set account facts from outside the event stream (CSV import), in one transaction,
    through the same path as a Segment group call (an owner change included). Returns
    (created, updated)."""
    if not traits:
        return 0, 0
    with write_tx(engine) as conn:
        existing: set[str] = set()
        for chunk in chunks(sorted(traits)):
            existing.update(r[0] for r in conn.execute(select(ACCOUNT.c.id).where(ACCOUNT.c.id.in_(chunk))))
        deltas: dict[str, _AccountDelta] = {}
        for aid, values in traits.items():
            deltas[aid] = _AccountDelta(traits=dict(values), trait_times=dict.fromkeys(values, now))
        _update_accounts(conn, deltas, rules, now, source=source)
    return len(traits) - len(existing), len(existing)
