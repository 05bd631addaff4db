"""A synthetic B2B company: accounts, product events, billing and tickets, seeded.

`generate(seed, accounts, days, end, shape=...)` returns every message the company's
Segment, Stripe and helpdesk would send over `days` days ending at `end`, in the wire
formats the ingest routes accept, as history records (see bot/backtest/history.py for the
format). Two shapes (`SHAPES`), so alert figures can be checked on more than one kind of
customer base, not just another seed:

- `saas` (the default, described below): many small accounts, six CSMs;
- `enterprise`: fewer, bigger accounts (150 by default, ARR median about $40,000, so most
  are high-touch), half of them existing customers, onboarding steps that take about 1.7
  times as long (security reviews, procurement), 2.5 times the tickets per account, and
  three CSMs (two high-touch, one standard) who each own more accounts.

The saas company:

- about a third of the accounts are existing customers (signed up months ago, activated,
  renewal dates ahead, billed monthly or yearly); their journey and billing history is
  backfilled when the window starts, as it is when Stallwatch is first connected;
- the rest sign up during the window and walk the packaged default journey (Signed Up,
  Project Created, Integration Connected, Invite Sent, then Report Shared), each step
  with a drop-off chance that depends on the track (Integration Connected is the weak
  one), delays drawn log-normally (some past the 48-hour threshold: stalls that resolve
  by themselves), a few steps done out of order and a few events arriving late;
- ARR is log-normal (median about $9,000), so the plan, and with it the track
  (high_touch / standard / self_serve), follows from it as the default rules assign it;
- product usage on business days in the account's time zone, fading for customers who
  dropped off, falling sharply for a few existing customers (usage drop, renewal risk);
- helpdesk tickets (some by requester e-mail only), a few spikes on one topic;
- Stripe: customers and subscriptions, self-serve trials that convert or cancel, a few
  cancellations and failed payments (most of them paid a day or two later);
- one broken-tracking incident: for about a day `Signed Up` loses its required `plan`;
- two scripted stories for the live part of the demo, arriving just after `end`: a third
  ticket on one topic from a $62K account (a ticket spike, pinged at once) and a late
  `Integration Connected` for a $84K account whose step stall was pinged (the ping is
  edited to say the stall was opened on stale data).

Pure: no I/O and no clock (`end` is given); the same seed and shape give the same company.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

UTC = timezone.utc
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)

STEPS = ("Signed Up", "Project Created", "Integration Connected", "Invite Sent")
ACTIVATION = "Report Shared"
USAGE_EVENTS = ("Dashboard Viewed", "Dashboard Viewed", "Report Viewed", "Query Run", "Query Run", "Alert Configured")

# Chance of going on to the next step (Project Created, Integration Connected, Invite Sent,
# Report Shared), per track. Connecting the integration is where most customers drop off.
CONTINUE = {
    "high_touch": (0.97, 0.86, 0.93, 0.93),
    "standard": (0.93, 0.76, 0.88, 0.88),
    "self_serve": (0.88, 0.64, 0.80, 0.80),
}
# Median hours from one step to the next (log-normal; sigma below): some pass 48 hours.
STEP_MEDIAN_HOURS = (14.0, 30.0, 18.0, 20.0)
STEP_SIGMA = 0.95
TICKETS_PER_DAY = {"high_touch": 0.05, "standard": 0.035, "self_serve": 0.015}

HIGH_TOUCH_CSMS = ("maya.chen", "diego.ramirez", "priya.nair")
STANDARD_CSMS = ("sam.okafor", "lena.fischer", "tom.becker")
CS_DOMAIN = "yourco.example"

REGIONS = ((-7, 0.25), (-5, 0.30), (0, 0.15), (1, 0.20), (8, 0.10))  # UTC offset (hours), weight

TOPICS = {
    "integration": ("Salesforce sync stopped", "Webhook deliveries failing", "HubSpot fields not mapping",
                    "API rate limit errors", "Integration keeps disconnecting"),
    "billing": ("Invoice shows the wrong seat count", "Update our billing address", "Charged twice this month"),
    "sso": ("SSO login fails for contractors", "SAML certificate rotation", "Okta group sync missing users"),
    "reporting": ("Report totals don't match the export", "Scheduled report not delivered",
                  "Chart shows no data for last week"),
    "performance": ("Dashboards load slowly", "Query timeouts in the EU workspace"),
    "onboarding": ("How do we invite the rest of the team?", "Need help setting up our first project"),
}
TOPIC_WEIGHTS = {"integration": 5, "billing": 2, "sso": 2, "reporting": 3, "performance": 2, "onboarding": 3}

_FIRST = ("Ava", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kira", "Liam",
          "Mei", "Nora", "Omar", "Paula", "Quinn", "Rosa", "Sven", "Tara", "Uma", "Victor", "Wen", "Yara", "Zoe")
_LAST = ("Adams", "Bauer", "Costa", "Dubois", "Evans", "Fox", "Garcia", "Hansen", "Ito", "Jensen", "Kim",
         "Larsen", "Moreau", "Novak", "Olsen", "Patel", "Rossi", "Silva", "Tanaka", "Varga", "Weber", "Young")
_NAME_A = ("Acme", "Alder", "Atlas", "Beacon", "Birch", "Brightline", "Cascade", "Cedar", "Cobalt", "Delta",
           "Drift", "Ember", "Evergreen", "Falcon", "Fjord", "Glacier", "Granite", "Harbor", "Helix", "Indigo",
           "Ironwood", "Jasper", "Juniper", "Kestrel", "Keystone", "Larkspur", "Lumen", "Maple", "Meridian",
           "Nimbus", "Nova", "Onyx", "Orchard", "Pinnacle", "Polar", "Quartz", "Redwood", "Sable", "Summit",
           "Tidal", "Topaz", "Vantage", "Vertex", "Willow", "Zephyr")
_NAME_B = ("Analytics", "Apparel", "Biotech", "Capital", "Dynamics", "Energy", "Foods", "Freight", "Health",
           "Insurance", "Labs", "Learning", "Logistics", "Media", "Motors", "Networks", "Partners", "Realty",
           "Retail", "Robotics", "Security", "Software", "Studios", "Systems", "Travel")



@dataclass(frozen=True)
class Shape:
    """What kind of customer base the company has. The saas values are the module's
    constants, so the saas company is what it was before shapes existed, draw for draw."""

    name: str
    accounts: int  # the default number of accounts
    arr_median: float
    arr_sigma: float  # of log(ARR)
    existing_share: float  # of the accounts: customers since before the window
    step_delay_factor: float  # multiplies STEP_MEDIAN_HOURS
    ticket_factor: float  # multiplies TICKETS_PER_DAY
    high_touch_csms: tuple[str, ...]
    standard_csms: tuple[str, ...]


SHAPES = {
    "saas": Shape("saas", accounts=300, arr_median=9000.0, arr_sigma=1.1, existing_share=1 / 3,
                  step_delay_factor=1.0, ticket_factor=1.0, high_touch_csms=HIGH_TOUCH_CSMS,
                  standard_csms=STANDARD_CSMS),
    # The scripted stories' owners (maya.chen, diego.ramirez) stay on the high-touch team.
    "enterprise": Shape("enterprise", accounts=150, arr_median=40000.0, arr_sigma=0.9, existing_share=0.5,
                        step_delay_factor=1.7, ticket_factor=2.5, high_touch_csms=HIGH_TOUCH_CSMS[:2],
                        standard_csms=STANDARD_CSMS[:1]),
}

# The scripted stories (see the module doc).
LATE_STORY = "Northwind Logistics"
SPIKE_STORY = "Bluefin Health"


@dataclass
class DemoAccount:
    id: str
    name: str
    domain: str
    plan: str
    arr: float
    track: str  # as the packaged default rules assign it
    owner_email: str | None
    signup_at: datetime
    existing: bool
    offset: float  # the customer's UTC offset, hours
    user_id: str
    email: str
    contact_name: str
    renewal_date: date | None = None
    billing: str = "year"  # Stripe price interval: "month" or "year"
    story: str | None = None
    steps_done: dict[str, datetime] = field(default_factory=dict)


@dataclass(frozen=True)
class Record:
    """One message as the history holds it: when it reached Stallwatch, and the record."""

    at: datetime
    seq: int
    record: dict[str, Any]

    @property
    def source(self) -> str:
        return self.record["source"]


@dataclass
class Company:
    seed: int
    start: datetime
    end: datetime
    accounts: list[DemoAccount]
    records: list[Record]  # in arrival order
    incident: tuple[datetime, datetime]  # when `Signed Up` lost its `plan`
    shape: str = "saas"

    @property
    def history(self) -> list[Record]:
        """What arrived up to `end` (backfilled, then scanned at `end`)."""
        return [r for r in self.records if r.at <= self.end]

    @property
    def live(self) -> list[Record]:
        """What arrives after `end`: the live part of the demo."""
        return [r for r in self.records if r.at > self.end]

    def csms(self) -> list[str]:
        return sorted({a.owner_email for a in self.accounts if a.owner_email})


def iso(at: datetime) -> str:
    """Segment-style timestamp: UTC, milliseconds, Z."""
    at = at.astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def _floor(at: datetime, microseconds: int) -> datetime:
    return at.replace(microsecond=at.microsecond - at.microsecond % microseconds)


class _Builder:
    def __init__(self, seed: int, start: datetime, end: datetime, shape: Shape):
        self.rng = random.Random(seed)
        self.start, self.end = start, end
        self.shape = shape
        self.records: list[Record] = []
        self._seq = 0
        self._ticket = 1000
        self.live: set[int] = set()  # the scripted records that arrive after `end`

    # ------------------------------------------------------------------ record helpers

    def _id(self, prefix: str) -> str:
        return f"{prefix}{self.rng.getrandbits(64):016x}"

    def add(self, at: datetime, record: dict[str, Any], received: datetime | None = None) -> None:
        if received is not None and received > at:
            record = {**record, "received_at": iso(received)}
            arrival = _floor(received, 1000)
        else:  # the arrival is the event's own time, as precise as the wire format carries it
            arrival = _floor(at, 1_000_000 if record["source"] == "stripe" else 1000)
        self._seq += 1
        self.records.append(Record(arrival, self._seq, record))

    def segment(self, at: datetime, message: dict[str, Any], received: datetime | None = None) -> None:
        message = {"messageId": self._id("sw-"), "timestamp": iso(at), **message}
        self.add(at, {"source": "segment", "message": message}, received)

    def track(self, acc: DemoAccount, name: str, at: datetime, properties: dict | None = None,
              received: datetime | None = None) -> None:
        self.segment(at, {"type": "track", "userId": acc.user_id, "event": name, "properties": properties or {},
                          "context": {"groupId": acc.id}}, received)

    def stripe(self, at: datetime, event_type: str, obj: dict[str, Any], received: datetime | None = None) -> None:
        event = {"id": self._id("evt_"), "object": "event", "type": event_type, "created": int(at.timestamp()),
                 "livemode": False, "data": {"object": obj}}
        self.add(at, {"source": "stripe", "event": event}, received)

    def ticket(self, at: datetime, body: dict[str, Any]) -> None:
        self.add(at, {"source": "tickets", "ticket": body})

    # ------------------------------------------------------------------ time helpers

    def work_time(self, day: datetime, offset: float, *, earliest: datetime | None = None) -> datetime:
        """A moment during the customer's working day (08:30-18:30 local) on `day`'s date."""
        local_midnight = datetime.combine(day.date(), datetime.min.time(), UTC) - timedelta(hours=offset)
        moment = local_midnight + timedelta(hours=self.rng.uniform(8.5, 18.5))
        if earliest is not None and moment < earliest:
            moment = earliest + timedelta(minutes=self.rng.uniform(5, 90))
        return moment

    def next_work_moment(self, at: datetime, offset: float) -> datetime:
        """`at`, moved forward into working hours if it falls at night (people act by day)."""
        local = at + timedelta(hours=offset)
        hour = local.hour + local.minute / 60
        if 8.5 <= hour <= 18.5:
            return at
        base = local if hour > 18.5 else local - DAY
        next_morning = datetime.combine((base + DAY).date(), datetime.min.time(), UTC) + timedelta(hours=8.5)
        return next_morning - timedelta(hours=offset) + timedelta(minutes=self.rng.uniform(0, 180))


def generate(seed: int = 7, accounts: int | None = None, days: int = 45, *, end: datetime,
             shape: str = "saas") -> Company:
    """The company's messages over `days` days ending at `end` (aware UTC); `accounts`
    defaults to the shape's (300 for saas, 150 for enterprise)."""
    if shape not in SHAPES:
        raise ValueError(f"unknown company shape {shape!r}: one of {', '.join(SHAPES)}")
    kind = SHAPES[shape]
    accounts = kind.accounts if accounts is None else accounts
    if accounts < 10:
        raise ValueError("the demo company needs at least 10 accounts")
    if days < 3:
        raise ValueError("the demo company needs at least 3 days of history")
    end = end.astimezone(UTC)
    start = end - timedelta(days=days)
    b = _Builder(seed, start, end, kind)
    rng = b.rng
    incident_start = datetime.combine((start + timedelta(days=round(days * 0.6))).date(),
                                      datetime.min.time(), UTC) + timedelta(hours=14)
    incident = (incident_start, incident_start + timedelta(hours=26))

    people = _accounts(rng, accounts, start, end, kind)
    for acc in people:
        if acc.existing:
            _existing_customer(b, acc)
        else:
            _new_customer(b, acc, incident)
        _usage(b, acc)
        _tickets(b, acc)
    _billing_trouble(b, [a for a in people if a.existing and not a.story])
    _ticket_spikes(b, [a for a in people if not a.story])
    _stories(b, people)
    # Only the scripted stories arrive after `end` (a signup minutes before it would spill over).
    records = sorted((r for r in b.records if r.at <= end or r.seq in b.live), key=lambda r: (r.at, r.seq))
    return Company(seed=seed, start=start, end=end, accounts=people, records=records, incident=incident,
                   shape=shape)


# ---------------------------------------------------------------------- accounts


def _plan_for(arr: float) -> str:
    if arr < 5000:
        return "starter"
    if arr < 25000:
        return "growth"
    if arr < 100000:
        return "business"
    return "enterprise"


def _track_for(arr: float, plan: str) -> str:
    # What the packaged default rules' [tracks] assign (checked by the tests).
    if arr >= 25000 or plan == "enterprise":
        return "high_touch"
    if arr <= 5000 or plan in ("free", "starter"):
        return "self_serve"
    return "standard"


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def _accounts(rng: random.Random, n: int, start: datetime, end: datetime, shape: Shape) -> list[DemoAccount]:
    names = [f"{a} {b}" for a in _NAME_A for b in _NAME_B if f"{a} {b}" not in (LATE_STORY, SPIKE_STORY)]
    rng.shuffle(names)
    names = names[: n - 2]
    existing = max(2, round(n * shape.existing_share))
    window = (end - start).total_seconds()
    out: list[DemoAccount] = []
    for i, name in enumerate(names):
        arr = min(max(round(math.exp(rng.gauss(math.log(shape.arr_median), shape.arr_sigma)), -2), 1200.0),
                  480000.0)
        plan = _plan_for(arr)
        track = _track_for(arr, plan)
        offset = rng.choices([o for o, _ in REGIONS], weights=[w for _, w in REGIONS])[0]
        is_existing = i < existing - 1
        if is_existing:
            signup = start - timedelta(days=rng.uniform(60, 330))
        else:
            signup = start + timedelta(seconds=rng.uniform(0, window - 6 * 3600))
        out.append(_account(rng, i + 1, name, arr, plan, track, offset, signup, is_existing, shape=shape))
    # The scripted stories, at the end of the list.
    out.append(_account(rng, n - 1, LATE_STORY, 84000.0, "business", "high_touch", 0, end - timedelta(days=3),
                        False, owner="maya.chen", story="late"))
    out.append(_account(rng, n, SPIKE_STORY, 62000.0, "business", "high_touch", 1, start - timedelta(days=200),
                        True, owner="diego.ramirez", story="spike"))
    return out


def _account(rng: random.Random, number: int, name: str, arr: float, plan: str, track: str, offset: float,
             signup: datetime, existing: bool, owner: str | None = None, story: str | None = None,
             shape: Shape = SHAPES["saas"]) -> DemoAccount:
    if owner is None:
        if track == "high_touch":
            owner = rng.choice(shape.high_touch_csms)
        elif track == "standard":
            owner = rng.choice(shape.standard_csms)
    domain = f"{_slug(name)}.example"
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    renewal = None
    if existing:
        anniversary = signup + timedelta(days=365)
        renewal = anniversary.date()
    billing = "month" if track == "self_serve" else "year"  # contracts are annual; self-serve pays monthly
    return DemoAccount(
        id=f"acct_{number:04d}", name=name, domain=domain, plan=plan, arr=arr, track=track,
        owner_email=f"{owner}@{CS_DOMAIN}" if owner else None, signup_at=signup, existing=existing,
        offset=offset, user_id=f"user_{number:04d}", email=f"{first.lower()}.{last.lower()}@{domain}",
        contact_name=f"{first} {last}", renewal_date=renewal, billing=billing, story=story,
    )


def group_traits(acc: DemoAccount) -> dict[str, Any]:
    """A demo account's Segment group traits (the CRM's view of it: name, ARR, owner...)."""
    traits: dict[str, Any] = {"name": acc.name, "domain": acc.domain, "plan": acc.plan, "arr": acc.arr,
                              "employees": max(5, int(acc.arr / 900)), "seats": max(3, int(acc.arr / 1800))}
    if acc.owner_email:
        traits["owner_email"] = acc.owner_email
    if acc.renewal_date:
        traits["renewal_date"] = acc.renewal_date.isoformat()
    return traits


def _identify_and_group(b: _Builder, acc: DemoAccount, at: datetime, received: datetime | None = None) -> None:
    b.segment(at, {"type": "identify", "userId": acc.user_id,
                   "traits": {"email": acc.email, "name": acc.contact_name}, "context": {"groupId": acc.id}},
              received)
    b.segment(at + timedelta(seconds=2), {"type": "group", "userId": acc.user_id, "groupId": acc.id,
                                          "traits": group_traits(acc)}, received)


def _price(acc: DemoAccount) -> dict[str, Any]:
    per_year = 1 if acc.billing == "year" else 12
    return {"id": f"price_{acc.plan}_{acc.billing}", "object": "price", "nickname": f"{acc.plan.title()} ({acc.billing}ly)",
            "currency": "usd", "unit_amount": int(round(acc.arr * 100 / per_year)),
            "recurring": {"interval": acc.billing, "interval_count": 1, "usage_type": "licensed"}}


def _subscription(acc: DemoAccount, status: str, period_end: datetime, **extra: Any) -> dict[str, Any]:
    return {"id": f"sub_{acc.id}", "object": "subscription", "customer": f"cus_{acc.id}", "status": status,
            "cancel_at_period_end": False, "current_period_end": int(period_end.timestamp()),
            "metadata": {"account_id": acc.id},
            "items": {"object": "list", "data": [{"id": f"si_{acc.id}", "quantity": 1, "price": _price(acc)}]},
            **extra}


def _period_end(acc: DemoAccount, at: datetime) -> datetime:
    if acc.renewal_date is not None:
        return datetime.combine(acc.renewal_date, datetime.min.time(), UTC)
    return at + (timedelta(days=365) if acc.billing == "year" else timedelta(days=30))


def _customer(b: _Builder, acc: DemoAccount, at: datetime, received: datetime | None = None) -> None:
    b.stripe(at, "customer.created", {"id": f"cus_{acc.id}", "object": "customer", "name": acc.name,
                                       "email": f"billing@{acc.domain}", "metadata": {"account_id": acc.id}},
             received)


# ---------------------------------------------------------------------- journeys


def _existing_customer(b: _Builder, acc: DemoAccount) -> None:
    """Signed up months ago and activated; backfilled when the window starts."""
    rng = b.rng
    backfill = b.start + timedelta(minutes=rng.uniform(1, 50))
    _identify_and_group(b, acc, acc.signup_at, received=backfill)
    at = acc.signup_at
    for name in (*STEPS, ACTIVATION):
        props = {"plan": acc.plan} if name == "Signed Up" else {}
        b.track(acc, name, at, props, received=backfill)
        acc.steps_done[name] = at
        at += timedelta(hours=rng.uniform(4, 60))
    _customer(b, acc, acc.signup_at, received=backfill)
    b.stripe(acc.signup_at + timedelta(minutes=1), "customer.subscription.created",
             _subscription(acc, "active", _period_end(acc, acc.signup_at)), received=backfill)


def _new_customer(b: _Builder, acc: DemoAccount, incident: tuple[datetime, datetime]) -> None:
    rng = b.rng
    signup = acc.signup_at = b.next_work_moment(acc.signup_at, acc.offset)
    if signup >= b.end:
        signup = acc.signup_at = b.end - timedelta(hours=rng.uniform(2, 5))
    _identify_and_group(b, acc, signup - timedelta(seconds=30))
    broken = incident[0] <= signup < incident[1]
    b.track(acc, "Signed Up", signup, {} if broken else {"plan": acc.plan})
    acc.steps_done["Signed Up"] = signup
    _customer(b, acc, signup + timedelta(minutes=1))
    trial = acc.track == "self_serve"
    status = "trialing" if trial else "active"
    extra = {"trial_end": int((signup + 14 * DAY).timestamp())} if trial else {}
    b.stripe(signup + timedelta(minutes=2), "customer.subscription.created",
             _subscription(acc, status, _period_end(acc, signup), **extra))

    if acc.story == "late":
        return  # scripted in _stories
    times: list[tuple[str, datetime]] = []
    at = signup
    for k, name in enumerate((*STEPS[1:], ACTIVATION)):
        if rng.random() > CONTINUE[acc.track][k]:
            break
        hours = STEP_MEDIAN_HOURS[k] * b.shape.step_delay_factor * math.exp(rng.gauss(0, STEP_SIGMA))
        at = b.next_work_moment(at + timedelta(hours=hours), acc.offset)
        if at >= b.end:
            break
        times.append((name, at))
    # A few customers invite their team before connecting the integration.
    names = [n for n, _ in times]
    if "Invite Sent" in names and rng.random() < 0.08:
        i, j = names.index("Integration Connected"), names.index("Invite Sent")
        times[i], times[j] = (times[i][0], times[j][1]), (times[j][0], times[i][1])
    for name, at in times:
        received = None
        if rng.random() < 0.07:  # offline client, batch upload: the event arrives hours later
            late = at + timedelta(hours=rng.uniform(3, 40))
            received = late if late < b.end else None
        b.track(acc, name, at, received=received)
        acc.steps_done[name] = at

    if trial:
        trial_end = signup + 14 * DAY
        if trial_end < b.end:
            activated = acc.steps_done.get(ACTIVATION)
            if (activated is not None and activated < trial_end) or rng.random() < 0.7:
                b.stripe(trial_end, "customer.subscription.updated",
                         _subscription(acc, "active", _period_end(acc, trial_end)))
            else:  # the trial ends unconverted: the subscription is cancelled
                b.stripe(trial_end, "customer.subscription.deleted",
                         _subscription(acc, "canceled", trial_end, canceled_at=int(trial_end.timestamp())))


# ---------------------------------------------------------------------- usage and tickets


def _usage(b: _Builder, acc: DemoAccount) -> None:
    rng = b.rng
    first_day = max(acc.signup_at, b.start)
    activated = acc.steps_done.get(ACTIVATION)
    last_step = max(acc.steps_done.values()) if acc.steps_done else acc.signup_at
    declining = None  # (from, until): usage falls sharply for a while (usage drop, renewal risk)
    if acc.existing and not acc.story and rng.random() < 0.12:
        begin = b.start + timedelta(days=rng.uniform(10, max((b.end - b.start).days - 4, 11)))
        declining = (begin, begin + timedelta(days=rng.uniform(9, 30)))
    base = rng.uniform(0.75, 0.95)
    day = datetime.combine(first_day.date(), datetime.min.time(), UTC)
    while day < b.end:
        weekday = (day + timedelta(hours=acc.offset)).weekday() < 5
        if acc.existing or (activated is not None and day >= activated - DAY):
            p = base
        elif acc.story == "late":
            p = 0.8
        else:
            idle_days = max((day - last_step).total_seconds() / 86400, 0.0)
            p = 0.75 if idle_days < 2 else 0.45 * 0.75 ** (idle_days - 2)
        if declining is not None and declining[0] <= day < declining[1]:
            p = 0.05
        if not weekday:
            p *= 0.1
        if rng.random() < p:
            count = 1 + min(int(rng.expovariate(0.45)), 8)
            for _ in range(count):
                at = b.work_time(day, acc.offset, earliest=acc.signup_at)
                if not (b.start <= at < b.end):
                    continue
                if rng.random() < 0.15:
                    b.segment(at, {"type": "page", "userId": acc.user_id, "name": rng.choice(("Settings", "Billing", "Home")),
                                   "properties": {"account_id": acc.id}})
                else:
                    b.track(acc, rng.choice(USAGE_EVENTS), at)
        day += DAY


def _ticket_body(b: _Builder, acc: DemoAccount, topic: str, created: datetime, priority: str, status: str,
                 updated: datetime | None = None, ticket_id: str | None = None, by_email: bool = False) -> dict:
    body: dict[str, Any] = {"id": ticket_id, "status": status, "topic": topic,
                            "subject": b.rng.choice(TOPICS[topic]), "priority": priority, "created_at": iso(created)}
    if updated is not None:
        body["updated_at"] = iso(updated)
    if by_email:
        body["requester_email"] = acc.email
    else:
        body["account_id"] = acc.id
    return body


def _one_ticket(b: _Builder, acc: DemoAccount, created: datetime, topic: str, priority: str,
                solve_after: timedelta | None) -> None:
    b._ticket += 1
    ticket_id = f"T-{b._ticket}"
    by_email = b.rng.random() < 0.3
    opened = _ticket_body(b, acc, topic, created, priority, "open", ticket_id=ticket_id, by_email=by_email)
    b.ticket(created, opened)
    if solve_after is not None and created + solve_after < b.end:
        solved = {**opened, "status": "solved", "updated_at": iso(created + solve_after)}
        b.ticket(created + solve_after, solved)


def _priority(rng: random.Random) -> str:
    return rng.choices(("normal", "high", "urgent"), weights=(7, 2, 1))[0]


def _solve_after(rng: random.Random) -> timedelta | None:
    if rng.random() < 0.12:
        return None  # still open
    return timedelta(hours=6 + 30 * math.exp(rng.gauss(0, 0.8)))


def _tickets(b: _Builder, acc: DemoAccount) -> None:
    if acc.story:
        return
    rng = b.rng
    at = max(acc.signup_at, b.start)
    rate = TICKETS_PER_DAY[acc.track] * b.shape.ticket_factor
    topics, weights = list(TOPIC_WEIGHTS), list(TOPIC_WEIGHTS.values())
    while True:
        at += timedelta(days=rng.expovariate(rate))
        if at >= b.end:
            return
        created = b.next_work_moment(at, acc.offset)
        if created >= b.end:
            return
        _one_ticket(b, acc, created, rng.choices(topics, weights=weights)[0], _priority(rng), _solve_after(rng))


def _ticket_spikes(b: _Builder, accounts: list[DemoAccount]) -> None:
    """A handful of accounts file three or four tickets in a few days, most on one topic."""
    rng = b.rng
    for acc in rng.sample(accounts, k=min(len(accounts), max(3, len(accounts) // 30))):
        first = max(acc.signup_at, b.start) + timedelta(days=rng.uniform(1, 20))
        if first + 5 * DAY >= b.end:
            first = b.end - timedelta(days=rng.uniform(5, 6))
        if first < acc.signup_at:
            continue
        topic = rng.choice(("integration", "integration", "reporting", "sso", "performance"))
        at = first
        for i in range(rng.choice((3, 3, 4))):
            created = b.next_work_moment(at, acc.offset)
            if created >= b.end:
                break
            _one_ticket(b, acc, created, topic if i != 1 or rng.random() < 0.6 else "billing",
                        "urgent" if i == 2 else _priority(rng), _solve_after(rng))
            at = created + timedelta(hours=rng.uniform(8, 40))


def _billing_trouble(b: _Builder, existing: list[DemoAccount]) -> None:
    """A few failed payments (most paid a day or two later) and a few cancellations."""
    rng = b.rng
    monthly = [a for a in existing if a.billing == "month"]
    for acc in rng.sample(monthly, k=min(len(monthly), max(2, len(existing) // 20))):
        failed_at = b.start + timedelta(days=rng.uniform(3, (b.end - b.start).days - 1))
        invoice = {"id": b._id("in_"), "object": "invoice", "customer": f"cus_{acc.id}",
                   "subscription": f"sub_{acc.id}", "status": "open", "currency": "usd",
                   "amount_due": int(round(acc.arr * 100 / 12)), "amount_paid": 0, "attempt_count": 1,
                   "billing_reason": "subscription_cycle", "subscription_details": {"metadata": {"account_id": acc.id}}}
        b.stripe(failed_at, "invoice.payment_failed", invoice)
        b.stripe(failed_at + timedelta(seconds=5), "customer.subscription.updated",
                 _subscription(acc, "past_due", _period_end(acc, failed_at)))
        paid_at = failed_at + timedelta(hours=rng.uniform(20, 70))
        if rng.random() < 0.65 and paid_at < b.end:
            b.stripe(paid_at, "invoice.paid", {**invoice, "status": "paid", "amount_paid": invoice["amount_due"],
                                               "attempt_count": 2})
            b.stripe(paid_at + timedelta(seconds=5), "customer.subscription.updated",
                     _subscription(acc, "active", _period_end(acc, paid_at)))
    for acc in rng.sample(existing, k=min(len(existing), max(1, len(existing) // 30))):
        at = b.start + timedelta(days=rng.uniform(5, (b.end - b.start).days - 1))
        b.stripe(at, "customer.subscription.updated",
                 {**_subscription(acc, "active", _period_end(acc, at)), "cancel_at_period_end": True})


def _stories(b: _Builder, accounts: list[DemoAccount]) -> None:
    late = next(a for a in accounts if a.story == "late")
    spike = next(a for a in accounts if a.story == "spike")
    end = b.end
    # Northwind: signed up three days ago, created a project the next day, then connected the
    # integration yesterday, but that event is stuck in a mobile client's queue until just after
    # `end`: the step stall (48 h after the project, confirmed 6 h later) opens at the first
    # scan, news (it crossed its threshold less than a day before), not backlog.
    project = end - timedelta(hours=64)  # stalled 16 h before `end`: confirmed (6 h), not backlog (< 24 h)
    b.track(late, "Project Created", project)
    late.steps_done["Project Created"] = project
    connected = end - timedelta(hours=22)
    b.track(late, "Integration Connected", connected, received=end + timedelta(minutes=8))
    b.live.add(b._seq)
    late.steps_done["Integration Connected"] = connected
    # Bluefin: two SSO tickets this week; the third arrives just after `end`: a ticket spike.
    b._ticket += 1
    b.ticket(end - timedelta(days=3, hours=2), _ticket_body(b, spike, "sso", end - timedelta(days=3, hours=2), "high",
                                                             "open", ticket_id=f"T-{b._ticket}"))
    b._ticket += 1
    b.ticket(end - timedelta(days=1, hours=5), _ticket_body(b, spike, "sso", end - timedelta(days=1, hours=5), "high",
                                                             "open", ticket_id=f"T-{b._ticket}"))
    b._ticket += 1
    third = end + timedelta(minutes=4)
    b.ticket(third, {**_ticket_body(b, spike, "sso", third, "urgent", "open", ticket_id=f"T-{b._ticket}"),
                     "subject": "Nobody in the EU team can log in since the SSO change"})
    b.live.add(b._seq)
