"""Event streams for the proof scenarios, built so that the expected outcome is known:
which events are distinct, which stalls must open, which accounts must ping.

The accounts of a run look like a real B2B book: a group call with ARR and an owner (one of a
few CSMs, who exist in the fake Slack's directory), a `Signed Up` five days ago (so every
account is stalled on its next step: the scheduler's scan opens those), some progress, ticket
spikes (three tickets, two on one topic: opened event-driven, by whichever server stores the
third), failed Stripe payments (event-driven too), and a bulk of product usage.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import orjson

from benchmarks.proof.harness import Delivery, signed_headers

UTC = timezone.utc
FEATURES = ["Dashboard Viewed", "Report Viewed", "Filter Applied", "Export Clicked", "Search Performed"]
ARRS = [2_400, 12_000, 30_000, 60_000]  # P2, P1, P0, P0 once stalled three days past the threshold
SEGMENT_ROUTES = ("/v1/batch", "/ingest/segment")


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


def csm_email(k: int) -> str:
    return f"csm{k}@proof.test"


def csm_user(k: int) -> str:
    return f"U0CSM{k:04d}"


@dataclass
class AccountPlan:
    id: str
    arr: int
    owner: int  # CSM index
    spike: bool = False
    payment: bool = False
    progress: bool = False

    def expected_rules(self) -> set[str]:
        rules = {"step_stall"}
        if self.spike:
            rules.add("ticket_spike")
        if self.payment:
            rules.add("payment_failed")
        return rules


@dataclass
class Workload:
    setup: list[Delivery] = field(default_factory=list)  # group calls: the accounts exist first
    stream: list[Delivery] = field(default_factory=list)
    accounts: dict[str, AccountPlan] = field(default_factory=dict)
    distinct: set[tuple[str, str]] = field(default_factory=set)
    redelivered_events: int = 0

    @property
    def deliveries(self) -> list[Delivery]:
        return self.setup + self.stream

    @property
    def events_sent(self) -> int:
        return sum(len(d.ids) for d in self.deliveries)


def segment_delivery(messages: list[dict], route: str, server: int = 0, tag: str = "segment") -> Delivery:
    body = orjson.dumps({"batch": messages})
    return Delivery(route=route, body=body, headers=signed_headers(route, body),
                    ids=[("segment", m["messageId"]) for m in messages], server=server, tag=tag)


def ticket_delivery(tickets: list[dict], server: int = 0, tag: str = "ticket") -> Delivery:
    from bot.ingest.tickets import parse_tickets

    body = orjson.dumps(tickets if len(tickets) > 1 else tickets[0])
    ids = [("tickets", ev.message_id) for ev in parse_tickets(body)]
    return Delivery(route="/ingest/tickets", body=body, headers=signed_headers("/ingest/tickets", body), ids=ids,
                    server=server, tag=tag)


def stripe_delivery(event: dict, server: int = 0) -> Delivery:
    body = orjson.dumps(event)
    return Delivery(route="/ingest/stripe", body=body, headers={}, ids=[("stripe", event["id"])], server=server,
                    tag="stripe")


def group_message(run: str, acct: AccountPlan, at: datetime) -> dict:
    return {"type": "group", "messageId": f"{run}-g-{acct.id}", "userId": f"{acct.id}-u0", "groupId": acct.id,
            "timestamp": iso(at), "traits": {"name": f"Account {acct.id}", "plan": "pro", "arr": acct.arr,
                                             "owner_email": csm_email(acct.owner)}}


def track_message(message_id: str, account: str, event: str, at: datetime, user: int = 0, **props) -> dict:
    return {"type": "track", "messageId": message_id, "userId": f"{account}-u{user}", "event": event,
            "timestamp": iso(at), "context": {"groupId": account}, "properties": {"plan": "pro", **props}}


def spike_tickets(account: str, now: datetime, tag: str = "") -> list[dict]:
    """Three open tickets within hours, two on one topic: a ticket spike, and news (tickets days
    older than the account's first sighting would be a backfill's backlog, never pinged)."""
    return [{"id": f"{account}-T{n}{tag}", "account_id": account, "status": "open", "topic": topic,
             "subject": f"{topic} problem {n}", "created_at": iso(now - timedelta(hours=hours))}
            for n, (topic, hours) in enumerate((("SSO", 5), ("Billing", 3), ("sso", 1)))]


def payment_failed_event(run: str, account: str, now: datetime) -> dict:
    return {"id": f"evt_{run}_{account}", "type": "invoice.payment_failed", "created": int(now.timestamp()) - 3600,
            "data": {"object": {"id": f"in_{run}_{account}", "object": "invoice", "customer": f"cus_{account}",
                                "metadata": {"account_id": account}, "amount_due": 250000, "currency": "usd",
                                "attempt_count": 1}}}


def book(run: str, n_events: int, *, csms: int, seed: int, account_prefix: str = "acct",
         now: datetime | None = None, batch: int = 50, redeliver: float = 0.2, servers: int = 2) -> Workload:
    """A multi-server stream of `n_events` distinct events plus `redeliver` x that many
    redeliveries: whole requests repeated at once to the other server (a retry racing the
    original) and single messages re-sent later in other batches (a webhook redelivery)."""
    rnd = random.Random(seed)
    now = now or datetime.now(UTC)
    n_accounts = max(20, n_events // 40)
    w = Workload()
    for i in range(n_accounts):
        acct = AccountPlan(id=f"{account_prefix}-{run}-{i:05d}", arr=ARRS[i % len(ARRS)], owner=i % csms,
                           spike=i % 4 == 1, payment=i % 10 == 3, progress=i % 5 == 2)
        w.accounts[acct.id] = acct

    # The accounts first (not timed, not redelivered): the stream is about known accounts.
    groups = [group_message(run, a, now - timedelta(days=6)) for a in w.accounts.values()]
    for k in range(0, len(groups), batch):
        w.setup.append(segment_delivery(groups[k:k + batch], SEGMENT_ROUTES[(k // batch) % 2], server=k // batch))

    segment: list[dict] = []
    units: list[Delivery] = []
    for a in w.accounts.values():
        segment.append(track_message(f"{run}-su-{a.id}", a.id, "Signed Up", now - timedelta(days=5)))
        if a.progress:
            segment.append(track_message(f"{run}-pc-{a.id}", a.id, "Project Created", now - timedelta(days=4)))
        if a.spike:
            units.extend(ticket_delivery([t], tag="ticket") for t in spike_tickets(a.id, now))
        if a.payment:
            units.append(stripe_delivery(payment_failed_event(run, a.id, now)))
    ids = list(w.accounts)
    n = 0
    while len(segment) + sum(len(u.ids) for u in units) < n_events:
        acct = rnd.choice(ids)
        at = now - timedelta(seconds=rnd.randrange(1, 86_400))
        roll = rnd.random()
        if roll < 0.03:
            segment.append({"type": "identify", "messageId": f"{run}-id-{n}", "userId": f"{acct}-u{rnd.randrange(4)}",
                            "timestamp": iso(at), "traits": {"email": f"u{n}@{acct}.test", "name": f"User {n}"}})
        elif roll < 0.08:
            segment.append({"type": "page", "messageId": f"{run}-pg-{n}", "userId": f"{acct}-u{rnd.randrange(4)}",
                            "name": "Reports", "timestamp": iso(at), "context": {"groupId": acct}, "properties": {}})
        else:
            segment.append(track_message(f"{run}-u-{n}", acct, rnd.choice(FEATURES), at, user=rnd.randrange(4),
                                         value=round(rnd.random(), 3)))
        n += 1
    rnd.shuffle(segment)
    for k in range(0, len(segment), batch):
        units.append(segment_delivery(segment[k:k + batch], SEGMENT_ROUTES[(k // batch) % 2]))
    rnd.shuffle(units)
    for i, d in enumerate(units):
        d.server = i % servers
    w.distinct = {i for d in w.setup + units for i in d.ids}

    # Redeliveries: half as whole requests racing their original on the other server, half as
    # single messages re-sent later, re-batched, through the other Segment route.
    target = int(redeliver * (len(w.distinct) - len(groups)))
    stream: list[Delivery] = []
    late: list[tuple[int, dict]] = []
    budget_whole = target // 2
    seen_messages: list[dict] = []
    for d in units:
        stream.append(d)
        if budget_whole > 0 and rnd.random() < redeliver:
            copy = Delivery(route=d.route, body=d.body, headers=d.headers, ids=list(d.ids), redelivery=True,
                            server=d.server + 1, tag=d.tag)
            stream.append(copy)
            budget_whole -= len(d.ids)
            w.redelivered_events += len(d.ids)
        if d.route in SEGMENT_ROUTES:
            seen_messages.extend(orjson.loads(d.body)["batch"])
    rnd.shuffle(seen_messages)
    singles = seen_messages[:max(0, target - w.redelivered_events)]
    for k in range(0, len(singles), batch):
        chunk = singles[k:k + batch]
        late.append((rnd.randrange(len(stream) // 4, len(stream) + 1), chunk))
    for position, chunk in sorted(late, key=lambda x: -x[0]):
        d = segment_delivery(chunk, SEGMENT_ROUTES[position % 2], server=position + 1)
        d.redelivery = True
        stream.insert(position, d)
        w.redelivered_events += len(chunk)
    w.stream = stream
    return w


# --------------------------------------------------------------------------- steady streams


class SteadyStream:
    """Batches for the paced scenarios (soak, storm, crash): product usage over `accounts`
    known accounts, and now and then a ticket spike on a new account of `csms` owners (which
    opens a P0 stall event-driven and pings its owner and the alerts channel)."""

    def __init__(self, run: str, *, accounts: int = 10_000, csms: int = 10, batch: int = 100, seed: int = 11):
        self.run = run
        self.accounts = accounts
        self.csms = csms
        self.batch = batch
        self.rnd = random.Random(seed)
        self.spikes = 0

    def account_setup(self, batch: int = 200) -> list[Delivery]:
        now = datetime.now(UTC)
        groups = [group_message(self.run, AccountPlan(id=f"steady-{a}", arr=ARRS[a % len(ARRS)], owner=a % self.csms),
                                now - timedelta(days=30))
                  for a in range(self.accounts)]
        return [segment_delivery(groups[k:k + batch], SEGMENT_ROUTES[0], tag="setup")
                for k in range(0, len(groups), batch)]

    def usage(self, i: int) -> Delivery:
        now = datetime.now(UTC)
        rnd = self.rnd
        messages = []
        for j in range(self.batch):
            acct = f"steady-{rnd.randrange(self.accounts)}"
            mid = f"{self.run}-s{i}-{j}"
            roll = rnd.random()
            if roll < 0.01:
                messages.append({"type": "identify", "messageId": mid, "userId": f"{acct}-u{rnd.randrange(5)}",
                                 "timestamp": iso(now), "traits": {"email": f"{mid}@example.com"}})
            elif roll < 0.04:
                messages.append({"type": "page", "messageId": mid, "userId": f"{acct}-u{rnd.randrange(5)}",
                                 "name": "Home", "timestamp": iso(now), "context": {"groupId": acct}})
            else:
                messages.append(track_message(mid, acct, rnd.choice(FEATURES), now, user=rnd.randrange(5),
                                              path="/app", value=round(rnd.random(), 3)))
        return segment_delivery(messages, SEGMENT_ROUTES[i % 2], tag="usage")

    def known_spike_accounts(self, n: int, arr: int = 60_000, batch: int = 200) -> tuple[list[str], list[Delivery]]:
        """`n` accounts made now (group calls), for spikes later: `spike_on(account)`."""
        now = datetime.now(UTC)
        plans = [AccountPlan(id=f"known-{self.run}-{k:06d}", arr=arr, owner=k % self.csms) for k in range(n)]
        groups = [group_message(self.run, p, now - timedelta(days=20)) for p in plans]
        return [p.id for p in plans], [segment_delivery(groups[k:k + batch], SEGMENT_ROUTES[0], tag="setup")
                                       for k in range(0, len(groups), batch)]

    def spike_on(self, account: str) -> list[Delivery]:
        """A ticket spike on an existing account: three tickets, each its own request."""
        return [ticket_delivery([t], tag="ticket") for t in spike_tickets(account, datetime.now(UTC))]

    def spike_account(self, arr: int = 60_000) -> tuple[str, list[Delivery]]:
        """A new account (group call) and its three tickets, each its own request."""
        k = self.spikes
        self.spikes += 1
        account = f"spike-{self.run}-{k:06d}"
        now = datetime.now(UTC)
        plan = AccountPlan(id=account, arr=arr, owner=k % self.csms)
        group = segment_delivery([group_message(self.run, plan, now - timedelta(days=20))], "/v1/batch", tag="group")
        return account, [group] + [ticket_delivery([t], tag="ticket") for t in spike_tickets(account, now)]


def now_ts() -> float:
    return time.time()
