"""Property tests of the ingest routes against the live server (hypothesis).

1. Whatever arrives (bytes, JSON, message-shaped JSON; any Content-Encoding, Authorization,
   X-Signature, Stripe-Signature, X-Stallwatch-Signature text, or a valid one), every route
   answers 200/400/401/413 with a JSON body, never a 5xx, and a non-2xx stored nothing.
2. Valid-shaped Segment batches mixing good and bad messages (and redeliveries): every
   message is accounted for (accepted + rejected + duplicates == len(batch)), the rejected
   indices are exactly the bad ones, and exactly the good messages are in the event table.
"""

from __future__ import annotations

import base64
import gzip
import json
import time
from datetime import datetime, timedelta, timezone

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from bot.ingest import stripe as stripe_ingest
from bot.ingest import tickets as tickets_ingest
from tests.conftest import STRIPE_SECRET, TICKETS_SECRET, WRITE_KEY
from tests.helpers import EVENT, segment_signature
from tests.fuzz import examples

V1 = ["/v1/batch", "/v1/track", "/v1/identify", "/v1/group", "/v1/page", "/v1/screen", "/v1/alias"]
ROUTES = V1 + ["/ingest/segment", "/ingest/stripe", "/ingest/tickets"]
AUTH_HEADER = {"/ingest/segment": "X-Signature", "/ingest/stripe": "Stripe-Signature",
               "/ingest/tickets": "X-Stallwatch-Signature"}
FUZZ = settings(max_examples=examples(1000), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
BATCHES = settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def table_counts(engine) -> tuple[int, ...]:
    with engine.connect() as conn:
        return tuple(conn.execute(text(
            "SELECT (SELECT count(*) FROM event), (SELECT count(*) FROM account), "
            "(SELECT count(*) FROM contact), (SELECT count(*) FROM ticket)")).one())


# --------------------------------------------------------------------------- strategies

# Values that reach the edges of the parsers: extreme dates, NUL, huge numbers, e-mails.
TRICKY = st.sampled_from([
    "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-05:00", "0001-01-01", "9999-12-31T23:59:59Z",
    "2024-02-30T00:00:00Z", "2024-05-01T10:00:00Z", "2024-05-01T10:00:00", "not a date", "",
    "a\x00b", "\x00", "x" * 300, "user@example.com", "JANE@initech.com", "@", "a@b", "$1,000", "nan", "inf",
    "-1", "1e400", "true", "sha256=", "t=1,v1=00", "Signed Up", "Report Shared", "identify", "track", "group",
])
SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(2 ** 70), max_value=2 ** 70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20) | TRICKY)
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                         max_size=4), max_leaves=15)
KEYS = [
    # Segment
    "type", "userId", "anonymousId", "event", "messageId", "timestamp", "originalTimestamp", "context", "properties",
    "traits", "groupId", "name", "batch", "writeKey", "sentAt", "account_id", "arr", "mrr", "employees", "seats",
    "plan", "owner_email", "renewal_date", "email", "unsubscribed", "website", "domain", "first_name",
    # tickets
    "id", "status", "created_at", "updated_at", "requester_email", "topic", "tags", "subject", "priority", "tickets",
    # Stripe
    "created", "data", "object", "metadata", "customer", "items", "quantity", "price", "unit_amount", "recurring",
    "interval", "currency", "subscription_details", "current_period_end", "cancel_at_period_end",
]
SHAPED = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=7),
    max_leaves=25,
)

ODD = SCALARS | SHAPED  # a field value: usually a scalar, sometimes a structure
OFFSETS = st.sampled_from([timezone.utc] + [timezone(timedelta(hours=h)) for h in (-12, -5, 1, 5, 14)])
# Boundary moments: the ends of the datetime range, with offsets that push them past it in UTC.
EDGE_DATES = st.builds(lambda d, tz: d.replace(tzinfo=tz).isoformat(),
                       st.sampled_from([datetime.min, datetime.max, datetime.min + timedelta(hours=3),
                                        datetime.max - timedelta(hours=3), datetime(1970, 1, 1)]), OFFSETS | st.none())
DATE = (st.datetimes(timezones=OFFSETS | st.none()).map(lambda d: d.isoformat()) | EDGE_DATES
        | st.dates().map(str) | TRICKY | SCALARS)
ID = st.text(max_size=12) | st.integers(min_value=-10, max_value=10 ** 20) | TRICKY | SCALARS
TEXT = st.text(max_size=20) | TRICKY | SCALARS
EDGE_NUMBERS = st.sampled_from([0, -1, 2 ** 31 - 1, 2 ** 31, 2 ** 53, 2 ** 63, 10 ** 12, 10 ** 12 + 1, 1e308, 0.5])
NUM = (st.integers(min_value=-10, max_value=10 ** 15) | EDGE_NUMBERS | st.floats()
       | st.decimals(allow_nan=False).map(str) | TRICKY | SCALARS)
EMAIL = st.emails() | TEXT
SEGMENT_TYPES = st.sampled_from(["track", "identify", "group", "page", "screen", "alias", "bogus"])
STRIPE_TYPES = st.sampled_from(sorted(stripe_ingest.HANDLED_TYPES) + ["charge.succeeded"])


def _fields(**fields):
    """A dict holding any subset of the fields."""
    return st.fixed_dictionaries({}, optional=fields)


TRAIT_FIELDS = dict(name=TEXT, domain=TEXT, website=TEXT, plan=TEXT, arr=NUM, mrr=NUM, owner_email=EMAIL,
                    renewal_date=DATE, employees=NUM, seats=NUM, email=EMAIL, first_name=TEXT, unsubscribed=SCALARS,
                    account_id=ID)
TRAITS = _fields(**TRAIT_FIELDS)
SEGMENT_MESSAGE = _fields(
    type=SEGMENT_TYPES, userId=ID, anonymousId=ID, messageId=ID, event=TEXT, name=TEXT,
    timestamp=DATE, originalTimestamp=DATE, groupId=ID, traits=TRAITS | ODD,
    properties=_fields(plan=TEXT, account_id=ID, other=ODD) | ODD,
    context=_fields(groupId=ID, traits=TRAITS) | ODD,
)
TICKET = _fields(
    id=ID, status=TEXT, created_at=DATE, updated_at=DATE, account_id=ID, requester_email=EMAIL, topic=TEXT,
    tags=st.lists(TEXT, max_size=3) | ODD, subject=TEXT, priority=ID, extra=ODD,
)
STRIPE_OBJECT_FIELDS = dict(
    id=ID, object=TEXT, customer=ID | _fields(id=ID, metadata=_fields(account_id=ID)),
    status=st.sampled_from(["active", "trialing", "past_due", "canceled", "paused"]) | TEXT,
    metadata=_fields(account_id=ID) | ODD, currency=st.sampled_from(["usd", "jpy", "kwd"]) | TEXT, name=TEXT,
    email=EMAIL, cancel_at_period_end=SCALARS, current_period_end=NUM, trial_end=NUM, amount_due=NUM,
    amount_paid=NUM, subscription=ID, subscription_details=_fields(metadata=_fields(account_id=ID)),
    items=_fields(data=st.lists(_fields(
        quantity=NUM, current_period_end=NUM,
        price=_fields(unit_amount=NUM, unit_amount_decimal=NUM, currency=TEXT, nickname=TEXT,
                      recurring=_fields(interval=st.sampled_from(["month", "year", "week", "day"]) | TEXT,
                                        interval_count=NUM, usage_type=TEXT))), max_size=3)),
)
STRIPE_OBJECT = _fields(**STRIPE_OBJECT_FIELDS)
STRIPE_EVENT = _fields(id=ID, type=STRIPE_TYPES | TEXT, created=NUM | st.integers(1_500_000_000, 2_000_000_000),
                       livemode=SCALARS, data=_fields(object=STRIPE_OBJECT | ODD))


GOOD_ID = st.text(min_size=1, max_size=12) | st.integers(min_value=0, max_value=10 ** 20)
ISO = st.datetimes(timezones=OFFSETS | st.none()).map(lambda d: d.isoformat()) | EDGE_DATES


@st.composite
def mutated(draw, base: dict, odd_fields: dict):
    """`base` (a valid object) with a few of its fields removed or replaced by odd values."""
    value = dict(base)
    for key in draw(st.lists(st.sampled_from(sorted(odd_fields)), max_size=3, unique=True)):
        if draw(st.integers(0, 4)) == 0:
            value.pop(key, None)
        else:
            value[key] = draw(odd_fields[key])
    return value


@st.composite
def segment_message(draw, route: str):
    mtype = route.rsplit("/", 1)[1] if route.startswith("/v1/") and route != "/v1/batch" else draw(SEGMENT_TYPES)
    base = {"type": mtype, "userId": draw(GOOD_ID), "messageId": draw(GOOD_ID), "timestamp": draw(ISO),
            "event": draw(st.text(min_size=1, max_size=20)), "name": draw(st.text(max_size=20)),
            "groupId": draw(GOOD_ID), "properties": {"plan": draw(TEXT)},
            "traits": draw(mutated({"name": "Acme", "plan": "pro", "arr": 1000, "employees": 5, "email": "a@b.co",
                                    "owner_email": "csm@vendor.com", "renewal_date": "2030-01-01"}, TRAIT_FIELDS)),
            "context": {"groupId": draw(GOOD_ID)}}
    return draw(mutated(base, {"type": SEGMENT_TYPES | TEXT, "userId": ID, "anonymousId": ID, "messageId": ID,
                               "timestamp": DATE, "event": TEXT, "name": TEXT, "groupId": ID, "traits": ODD,
                               "properties": _fields(plan=TEXT, account_id=ID, other=ODD) | ODD,
                               "context": _fields(groupId=ID, traits=TRAITS) | ODD, "originalTimestamp": DATE}))


@st.composite
def ticket(draw):
    base = {"id": draw(GOOD_ID), "status": draw(st.text(min_size=1, max_size=10)), "created_at": draw(ISO),
            "account_id": draw(GOOD_ID), "topic": draw(st.text(max_size=10)), "subject": draw(st.text(max_size=20))}
    return draw(mutated(base, {"id": ID, "status": TEXT, "created_at": DATE, "updated_at": DATE, "account_id": ID,
                               "requester_email": EMAIL, "topic": TEXT, "tags": st.lists(TEXT, max_size=3) | ODD,
                               "subject": TEXT, "priority": ID, "extra": ODD}))


@st.composite
def stripe_event(draw):
    etype = draw(STRIPE_TYPES)
    obj = {"id": draw(GOOD_ID.map(str)), "customer": "cus_" + draw(st.text(max_size=6)),
           "status": draw(st.sampled_from(["active", "trialing", "past_due", "canceled", "paused"])),
           "metadata": {"account_id": draw(GOOD_ID.map(str))}, "currency": draw(st.sampled_from(["usd", "jpy", "kwd"])),
           "name": draw(TEXT), "email": draw(EMAIL), "current_period_end": draw(NUM),
           "subscription_details": {"metadata": {"account_id": draw(GOOD_ID.map(str))}},
           "items": {"data": [{"quantity": draw(NUM), "price": {
               "unit_amount": draw(NUM), "currency": "usd",
               "recurring": {"interval": draw(st.sampled_from(["month", "year", "week", "day"]) | TEXT),
                             "interval_count": draw(NUM)}}}]}}
    obj = draw(mutated(obj, {k: v for k, v in STRIPE_OBJECT_FIELDS.items()}))
    base = {"id": "evt_" + draw(st.text(min_size=1, max_size=8)), "type": etype,
            "created": draw(st.integers(1_500_000_000, 2_000_000_000)), "data": {"object": obj}}
    return draw(mutated(base, {"id": ID, "type": TEXT, "created": NUM, "livemode": SCALARS, "data": ODD}))


@st.composite
def message_like(draw, route: str):
    """A body shaped like what `route` expects, valid but for a few odd fields."""
    if route == "/ingest/stripe":
        return draw(stripe_event() | STRIPE_EVENT)
    if route == "/ingest/tickets":
        one = ticket() | TICKET | ODD
        return draw(one | st.lists(one, max_size=4) | st.fixed_dictionaries({"tickets": st.lists(one, max_size=4)}))
    message = segment_message(route) | SEGMENT_MESSAGE | ODD
    if route in ("/v1/batch", "/ingest/segment") and draw(st.booleans()):
        return draw(st.fixed_dictionaries({"batch": st.lists(message, max_size=5)},
                                          optional={"context": ODD, "writeKey": SCALARS}))
    return draw(segment_message(route) | SEGMENT_MESSAGE)


# Header text: what h11 lets through (no NUL, no line breaks), including Latin-1 bytes.
HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
                      max_size=60).map(lambda s: s.strip(" \t"))


@st.composite
def requests(draw):
    route = draw(st.sampled_from(ROUTES))
    kind = draw(st.sampled_from(["bytes", "json", "message", "message", "message"]))
    if kind == "bytes":
        raw = draw(st.binary(max_size=300))
    else:
        value = draw(JSON if kind == "json" else message_like(route))
        if route in V1 and isinstance(value, dict) and draw(st.booleans()):
            value["writeKey"] = draw(st.sampled_from([WRITE_KEY, "wrong"]) | HEADER_TEXT)
        raw = json.dumps(value).encode()
    headers: dict[str, bytes] = {}
    auth = draw(st.sampled_from(["valid", "valid", "valid", "text", "none"]))
    name = AUTH_HEADER.get(route, "Authorization")
    if auth == "valid":
        if route in V1:
            value = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
        elif route == "/ingest/segment":
            value = segment_signature(raw)
        elif route == "/ingest/stripe":
            value = stripe_ingest.sign(raw, STRIPE_SECRET, int(time.time()) + draw(st.sampled_from([0, 0, -1000])))
        else:
            value = tickets_ingest.sign(raw, TICKETS_SECRET)
        headers[name] = value.encode()
    elif auth == "text":
        prefix = draw(st.sampled_from(["", "Basic ", "sha256=", "t=1700000000,v1="]))
        headers[name] = (prefix + draw(HEADER_TEXT)).strip(" \t").encode("latin-1")
    if draw(st.booleans()):  # an Authorization / signature header on a route that does not use it
        headers[draw(st.sampled_from(["Authorization", "X-Signature", "Stripe-Signature",
                                      "X-Stallwatch-Signature"]))] = draw(HEADER_TEXT).encode("latin-1")
    encoding = draw(st.sampled_from(["none", "none", "none", "gzip", "gzip-raw", "text"]))
    if encoding == "gzip":
        raw = gzip.compress(raw)
        headers["Content-Encoding"] = b"gzip"
    elif encoding == "gzip-raw":
        headers["Content-Encoding"] = b"gzip"
    elif encoding == "text":
        headers["Content-Encoding"] = draw(HEADER_TEXT).encode("latin-1")
    return route, raw, headers


def test_any_request_gets_a_json_answer_and_refusals_store_nothing(client: httpx.Client, engine):
    seen: dict[int, int] = {}

    @FUZZ
    @given(request=requests())
    def check(request):
        route, raw, headers = request
        before = table_counts(engine)
        response = client.post(route, content=raw, headers=headers)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        assert response.status_code in (200, 400, 401, 413), (response.status_code, response.text)
        assert response.headers["content-type"].startswith("application/json")
        body = response.json()
        assert isinstance(body, dict)
        if response.status_code == 200:
            assert isinstance(body["accepted"], int) and isinstance(body["duplicates"], int)
            assert all(isinstance(r["index"], int) and isinstance(r["error"], str) for r in body["rejected"])
            if route in V1:
                assert body["success"] is True
        else:
            assert isinstance(body["error"], str)
            assert table_counts(engine) == before, (response.status_code, body)

    check()
    assert {200, 400, 401} <= set(seen), seen  # the generator reaches past the auth checks


# --------------------------------------------------------------------------- valid-shaped batches

EVENTS = st.sampled_from(["Signed Up", "Project Created", "Integration Connected", "Invite Sent", "Report Shared",
                          "Button Clicked", "Page Viewed"])
ACCOUNTS = st.sampled_from([f"acct-{i}" for i in range(5)])
USERS = st.sampled_from([f"user-{i}" for i in range(8)]) | st.integers(min_value=1, max_value=99)
TIMESTAMPS = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1),
                          timezones=st.just(timezone.utc)).map(lambda d: d.isoformat())
GOOD_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=10)  # NUL is refused (PostgreSQL text)
SIMPLE = st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=8)
PROPS = st.fixed_dictionaries({}, optional={"plan": SIMPLE, "source": SIMPLE, "n": SIMPLE, "flag": SIMPLE,
                                            "account_id": ACCOUNTS})
MESSAGE_IDS = st.integers(min_value=0, max_value=150).map(lambda n: f"fz-{n}")  # small pool: redeliveries


@st.composite
def good_message(draw):
    mtype = draw(st.sampled_from(["track", "track", "track", "identify", "group", "page"]))
    msg: dict = {"type": mtype, "messageId": draw(MESSAGE_IDS)}
    ids = draw(st.sampled_from(["user", "user", "anonymous", "both"]))
    if ids != "anonymous":
        msg["userId"] = draw(USERS)
    if ids != "user":
        msg["anonymousId"] = f"anon-{draw(st.integers(0, 5))}"
    if draw(st.booleans()):
        msg["timestamp"] = draw(TIMESTAMPS)
    if draw(st.booleans()):
        msg["context"] = {"groupId": draw(ACCOUNTS)}
    if mtype == "track":
        msg["event"] = draw(EVENTS)
        msg["properties"] = draw(PROPS)
    elif mtype == "page":
        msg["name"] = draw(st.none() | GOOD_TEXT)
        msg["properties"] = draw(PROPS)
    elif mtype == "identify":
        msg["traits"] = draw(st.fixed_dictionaries({}, optional={
            "email": st.emails(), "name": GOOD_TEXT, "unsubscribed": st.booleans()}))
    else:
        msg["groupId"] = draw(ACCOUNTS)
        msg["traits"] = draw(st.fixed_dictionaries({}, optional={
            "name": GOOD_TEXT, "arr": st.integers(0, 10 ** 6), "mrr": st.floats(0, 10 ** 4),
            "plan": st.sampled_from(["free", "pro", "enterprise"]), "employees": st.integers(0, 10 ** 5)}))
    return msg


@st.composite
def bad_message(draw):
    msg = dict(draw(good_message()))
    msg["messageId"] = f"bad-{draw(st.integers(0, 10 ** 6))}"
    how = draw(st.sampled_from(["no_ids", "no_event", "timestamp", "user_type", "not_object", "properties",
                                "group_id", "type", "context", "nul"]))
    if how == "no_ids":
        msg.pop("userId", None)
        msg.pop("anonymousId", None)
    elif how == "no_event":
        msg.update(type="track", event=draw(st.sampled_from([None, "", "   ", 5])))
    elif how == "timestamp":
        msg["timestamp"] = draw(st.sampled_from(["yesterday", "2024-13-01T00:00:00Z", "2024-02-30", 1717000000,
                                                 ["2024-01-01"], {"at": 1}, True]))
    elif how == "user_type":
        msg["userId"] = draw(st.sampled_from([{"id": 1}, [1], 1.5, True, "x" * 300]))
    elif how == "not_object":
        return draw(st.none() | st.integers() | st.text(max_size=5) | st.lists(st.integers(), max_size=2))
    elif how == "properties":
        msg.update(type="track", event="Button Clicked", properties=draw(st.sampled_from([[1], "x", 3])))
    elif how == "group_id":
        msg.update(type="group", groupId=draw(st.sampled_from([None, "", {"id": 1}])), traits={})
    elif how == "type":
        msg["type"] = draw(st.sampled_from(["bogus", "", 3, None, "Track"]))
    elif how == "nul":
        msg.update(type="track", event=draw(st.sampled_from(["\x00", "Signed\x00Up"])))
    else:
        msg["context"] = draw(st.sampled_from(["acme", [1], 3]))
    return msg


@st.composite
def mixed_batches(draw):
    entries = []
    for _ in range(draw(st.integers(1, 30))):
        if draw(st.integers(0, 3)) == 0:
            entries.append((False, draw(bad_message())))
        elif entries and draw(st.integers(0, 5)) == 0:  # an exact redelivery inside the batch
            entries.append(draw(st.sampled_from([e for e in entries if e[0]] or [(True, draw(good_message()))])))
        else:
            entries.append((True, draw(good_message())))
    via = draw(st.sampled_from(["batch", "batch-gzip", "webhook"]))
    return entries, via


def stored_segment_events(engine) -> dict[str, str | None]:
    with engine.connect() as conn:
        rows = conn.execute(select(EVENT.c.message_id, EVENT.c.name).where(EVENT.c.source == "segment"))
        found = list(rows)
    by_id = dict(found)
    assert len(by_id) == len(found)
    return by_id


def test_mixed_batches_account_for_every_message(client: httpx.Client, engine):
    @BATCHES
    @given(case=mixed_batches())
    def check(case):
        entries, via = case
        batch = [msg for _, msg in entries]
        before = stored_segment_events(engine)
        raw = json.dumps({"batch": batch}).encode()
        if via == "webhook":
            response = client.post("/ingest/segment", content=raw, headers={"X-Signature": segment_signature(raw)})
        else:
            headers = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
            if via == "batch-gzip":
                raw = gzip.compress(raw)
                headers["Content-Encoding"] = "gzip"
            response = client.post("/v1/batch", content=raw, headers=headers)
        body = response.json()
        # Every message refused: a 400 that still lists them; duplicates are not refusals.
        assert response.status_code == (400 if body["rejected"] and not body["accepted"] and not body["duplicates"]
                                        else 200), response.text

        bad = [i for i, (good, _) in enumerate(entries) if not good]
        assert [r["index"] for r in body["rejected"]] == bad, body["rejected"]
        assert body["accepted"] + len(body["rejected"]) + body["duplicates"] == len(batch)

        first: dict[str, dict] = {}
        for good, msg in entries:
            if good:
                first.setdefault(msg["messageId"], msg)
        new = {mid: msg for mid, msg in first.items() if mid not in before}
        assert body["accepted"] == len(new)
        after = stored_segment_events(engine)
        assert set(after) == set(before) | set(first)  # exactly the good messages, nothing else
        for mid, msg in new.items():  # the first delivery of an id is the one stored
            assert after[mid] == (msg.get("event") if msg["type"] == "track" else
                                  (msg.get("name") or None) if msg["type"] == "page" else None), (mid, msg)
        for mid in before:
            assert after[mid] == before[mid]  # a redelivery changes nothing

    check()
