"""The webhook routes through the real HTTP server: the Segment webhook destination
(/ingest/segment), Stripe (/ingest/stripe) and helpdesk tickets (/ingest/tickets).
Stripe and ticket events are evaluated before the answer: stalls are queried right after."""

from __future__ import annotations

import time

import httpx

from bot.app import create_app
from bot.ingest import stripe as stripe_ingest
from bot.ingest import tickets as tickets_ingest
from tests.conftest import STRIPE_SECRET, TICKETS_SECRET, LiveServer
from tests.helpers import (
    CONTACT, EVENT, STALL, TICKET, account, ago, all_rejected, as_utc, count, counts, dumps, events_by_message, group_call,
    identify_call, iso, live_stalls, one, post_segment_webhook, post_stripe, post_tickets, post_v1, rows,
    segment_signature, track,
)

NOTHING = {"event": 0, "account": 0, "contact": 0, "ticket": 0}


def answer(response: httpx.Response, *, accepted: int, duplicates: int = 0, rejected: int = 0) -> dict:
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["duplicates"], len(body["rejected"])) == (accepted, duplicates, rejected), body
    return body


def refused(response: httpx.Response, status: int, context: object = "") -> dict:
    assert response.status_code == status, f"{context}: {response.status_code} {response.text}"
    body = response.json()
    assert isinstance(body.get("error"), str) and body["error"]
    assert isinstance(body.get("code"), str) and body["code"] and body["message"] == body["error"], body
    return body


# --------------------------------------------------------------------------- /ingest/segment


def test_segment_webhook_single_and_batch(client, engine):
    single = track("Signed Up", message_id="wh-1", group="acme", at=ago(days=2), properties={"plan": "pro"})
    body = answer(post_segment_webhook(client, single), accepted=1)
    assert "success" not in body  # the webhook answers the plain ingest shape
    answer(post_segment_webhook(client, {"batch": [
        track("Project Created", message_id="wh-2", group="acme", at=ago(days=1)),
        group_call("acme", {"name": "Acme", "arr": 9000}, message_id="wh-3"),
        {"type": "track", "userId": "u1", "messageId": "wh-bad"},  # no event
    ]}), accepted=2, rejected=1)
    stored = events_by_message(engine)
    assert set(stored) == {"wh-1", "wh-2", "wh-3"}
    assert {r["source"] for r in stored.values()} == {"segment"}
    acme = account(engine, "acme")
    assert (acme["name"], acme["arr"], acme["steps_done"], acme["waiting_step"]) == (
        "Acme", 9000, 2, "Integration Connected")


def test_segment_webhook_signature(client, engine):
    msg = track("Button Clicked", message_id="sig-1", group="acme")
    body = dumps(msg)
    refused(post_segment_webhook(client, raw=body, signature=None), 401)
    refused(post_segment_webhook(client, raw=body, signature=""), 401)
    refused(post_segment_webhook(client, raw=body, signature=segment_signature(body, "other-secret")), 401)
    refused(post_segment_webhook(client, raw=body, signature=segment_signature(body + b" ")), 401)
    refused(post_segment_webhook(client, raw=body + b" ", signature=segment_signature(body)), 401)  # altered body
    refused(post_segment_webhook(client, raw=body, signature="sha1=" + segment_signature(body)), 401)
    refused(post_segment_webhook(client, raw=b"not json", signature="nope"), 401)  # verified before parsed
    assert counts(engine) == NOTHING
    answer(post_segment_webhook(client, raw=body, signature=segment_signature(body).upper()), accepted=1)
    refused(post_segment_webhook(client, raw=b"not json"), 400)
    refused(post_segment_webhook(client, raw=b"[1, 2]"), 400)
    refused(post_segment_webhook(client, {"batch": "nope"}), 400)
    assert count(engine, EVENT) == 1


def test_segment_webhook_invalid_single_message_is_rejected(client, engine):
    body = all_rejected(post_segment_webhook(client, {"type": "track", "userId": "u1", "messageId": "x"}),
                        rejected=1)
    assert body["rejected"][0]["index"] == 0 and "event" in body["rejected"][0]["error"]
    assert counts(engine) == NOTHING


def test_unset_secret_answers_401(settings, engine):
    segment_body = dumps(track("Button Clicked", message_id="unset-1", group="acme"))
    stripe_body = dumps(_subscription_event("evt_unset", "acme"))
    tickets_body = dumps(_ticket("T-unset", "acme", "sso", ago(hours=1)))

    def post(c: httpx.Client, setting: str) -> httpx.Response:
        if setting == "segment_shared_secret":
            return c.post("/ingest/segment", content=segment_body,
                          headers={"X-Signature": segment_signature(segment_body)})
        if setting == "stripe_webhook_secret":
            return c.post("/ingest/stripe", content=stripe_body, headers={
                "Stripe-Signature": stripe_ingest.sign(stripe_body, STRIPE_SECRET, int(time.time()))})
        return c.post("/ingest/tickets", content=tickets_body,
                      headers={"X-Stallwatch-Signature": tickets_ingest.sign(tickets_body, TICKETS_SECRET)})

    settings_names = ("segment_shared_secret", "stripe_webhook_secret", "tickets_shared_secret")
    unset = settings.model_copy(update={name: None for name in settings_names})
    with LiveServer(create_app(unset, engine=engine)) as live, httpx.Client(base_url=live.url, timeout=30) as c:
        for name in settings_names:
            refused(post(c, name), 401, name)
    assert counts(engine) == NOTHING
    # One secret unset at a time: only its route refuses.
    for name in settings_names:
        app = create_app(settings.model_copy(update={name: None}), engine=engine)
        with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=30) as c:
            refused(post(c, name), 401, name)
            assert count(engine, EVENT) == 0
    with LiveServer(create_app(settings, engine=engine)) as live, httpx.Client(base_url=live.url, timeout=30) as c:
        for name in settings_names:
            answer(post(c, name), accepted=1)


# --------------------------------------------------------------------------- /ingest/stripe


def _subscription_event(event_id: str, account_id: str, *, status: str = "active", unit_amount: int = 50000,
                        quantity: int = 10, created: int | None = None, customer: str = "cus_acme",
                        event_type: str = "customer.subscription.updated") -> dict:
    now = int(time.time())
    return {
        "id": event_id, "object": "event", "type": event_type, "created": created or now - 60, "livemode": False,
        "data": {"object": {
            "id": "sub_1", "object": "subscription", "customer": customer, "status": status, "currency": "usd",
            "cancel_at_period_end": False, "current_period_end": now + 30 * 86400,
            "metadata": {"account_id": account_id},
            "items": {"object": "list", "data": [{
                "id": "si_1", "quantity": quantity,
                "price": {"id": "price_pro", "nickname": "Pro", "unit_amount": unit_amount, "currency": "usd",
                          "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed"}},
            }]},
        }},
    }


def _invoice_event(event_id: str, event_type: str, *, account_id: str | None, created: int,
                   customer: str = "cus_acme") -> dict:
    invoice = {"id": f"in_{event_id}", "object": "invoice", "customer": customer, "subscription": "sub_1",
               "status": "open" if event_type == "invoice.payment_failed" else "paid", "currency": "usd",
               "amount_due": 500000, "amount_paid": 0 if event_type == "invoice.payment_failed" else 500000,
               "attempt_count": 1, "billing_reason": "subscription_cycle"}
    if account_id is not None:
        invoice["subscription_details"] = {"metadata": {"account_id": account_id}}
    return {"id": event_id, "object": "event", "type": event_type, "created": created, "data": {"object": invoice}}


def test_stripe_subscription_sets_status_and_arr(client, engine):
    answer(post_stripe(client, _subscription_event("evt_sub_1", "acme")), accepted=1)
    acme = account(engine, "acme")
    assert acme["status"] == "active"
    assert acme["arr"] == 500 * 10 * 12
    assert acme["stripe_customer_id"] == "cus_acme"
    assert acme["renewal_date"] is not None
    assert acme["track"] == "high_touch"
    stored = one(engine, EVENT, EVENT.c.source == "stripe")
    assert (stored["message_id"], stored["kind"], stored["name"], stored["account_id"]) == (
        "evt_sub_1", "stripe", "customer.subscription.updated", "acme")

    answer(post_stripe(client, _subscription_event("evt_sub_2", "acme", status="past_due", quantity=5)), accepted=1)
    acme = account(engine, "acme")
    assert (acme["status"], acme["arr"]) == ("past_due", 500 * 5 * 12)
    answer(post_stripe(client, _subscription_event("evt_sub_3", "acme", event_type="customer.subscription.deleted",
                                                   status="canceled")), accepted=1)
    assert account(engine, "acme")["status"] == "churned"


def test_stripe_payment_failed_opens_stall_at_once_and_paid_clears_it(client, engine):
    failed_at = int(time.time()) - 120
    # The subscription was active before the payment failed (facts apply in event-time order).
    answer(post_stripe(client, _subscription_event("evt_sub", "acme", created=failed_at - 600)), accepted=1)
    answer(post_stripe(client, _invoice_event("evt_fail", "invoice.payment_failed", account_id="acme",
                                              created=failed_at)), accepted=1)
    acme = account(engine, "acme")
    assert as_utc(acme["payment_failed_at"]).timestamp() == failed_at
    assert acme["status"] == "past_due"
    stalls = live_stalls(engine, "acme", "payment_failed")  # no scan: evaluated before the answer
    assert len(stalls) == 1, rows(engine, STALL)
    assert stalls[0]["status"] == "open"
    stall_id = stalls[0]["id"]

    # A redelivery changes nothing and opens nothing more.
    answer(post_stripe(client, _invoice_event("evt_fail", "invoice.payment_failed", account_id="acme",
                                              created=failed_at)), accepted=0, duplicates=1)
    assert count(engine, STALL, STALL.c.account_id == "acme") == 1

    # The invoice is paid: the failure is cleared and the stall closes, again before the answer.
    answer(post_stripe(client, _invoice_event("evt_paid", "invoice.paid", account_id=None,
                                              created=failed_at + 60)), accepted=1)  # resolved by customer id
    acme = account(engine, "acme")
    assert acme["payment_failed_at"] is None
    assert live_stalls(engine, "acme", "payment_failed") == []
    closed = one(engine, STALL, STALL.c.id == stall_id)
    assert closed["status"] == "auto_resolved" and closed["resolved_at"] is not None
    assert one(engine, EVENT, EVENT.c.message_id == "evt_paid")["account_id"] == "acme"


def test_stripe_dedup_on_event_id(client, engine):
    event = _subscription_event("evt_dup", "acme")
    answer(post_stripe(client, event), accepted=1)
    answer(post_stripe(client, event), accepted=0, duplicates=1)  # a fresh signature, same event
    answer(post_stripe(client, {**event, "created": event["created"] + 5}), accepted=0, duplicates=1)
    assert count(engine, EVENT) == 1


def test_stripe_signature_refusals(client, engine):
    event = _subscription_event("evt_sig", "acme")
    body = dumps(event)
    now = int(time.time())
    refused(post_stripe(client, raw=body, timestamp=now - 400), 401)  # stale
    refused(post_stripe(client, raw=body, timestamp=now + 400), 401)  # from the future
    signature = stripe_ingest.sign(body, STRIPE_SECRET, now)
    tampered = dumps({**event, "data": {"object": {**event["data"]["object"], "metadata": {"account_id": "evil"}}}})
    refused(post_stripe(client, raw=tampered, signature=signature), 401)  # modified after signing
    refused(post_stripe(client, raw=body + b"\n", signature=signature), 401)
    refused(post_stripe(client, raw=body, signature=stripe_ingest.sign(body, "whsec_other", now)), 401)
    refused(post_stripe(client, raw=body, signature=""), 401)
    refused(post_stripe(client, raw=body, signature="t=abc,v1=zz"), 401)
    refused(client.post("/ingest/stripe", content=body), 401)  # no header at all
    assert counts(engine) == NOTHING
    answer(post_stripe(client, raw=body, timestamp=now - 200), accepted=1)


def test_stripe_ignored_type_and_bad_envelopes(client, engine):
    ignored = {"id": "evt_charge", "object": "event", "type": "charge.succeeded", "created": int(time.time()),
               "data": {"object": {"id": "ch_1", "object": "charge", "metadata": {"account_id": "acme"}}}}
    assert answer(post_stripe(client, ignored), accepted=0)["rejected"] == []
    assert counts(engine) == NOTHING
    for bad in (b"not json", b"[]", dumps({"type": "invoice.paid"}), dumps({"id": "evt_x", "type": "invoice.paid"}),
                dumps({"id": "evt_y", "type": "invoice.paid", "created": int(time.time())})):
        refused(post_stripe(client, raw=bad), 400, bad)
    # A handled event whose object cannot be used is reported, not stored.
    unusable = {"id": "evt_cus", "object": "event", "type": "customer.created", "created": int(time.time()),
                "data": {"object": {"object": "customer", "name": "No Id"}}}
    body = all_rejected(post_stripe(client, unusable), rejected=1)
    assert body["rejected"][0]["index"] == 0 and "id" in body["rejected"][0]["error"]
    assert counts(engine) == NOTHING


def test_stripe_customer_event_names_account(client, engine):
    event = {"id": "evt_cus_1", "object": "event", "type": "customer.updated", "created": int(time.time()) - 5,
             "data": {"object": {"id": "cus_hooli", "object": "customer", "name": "Hooli",
                                 "email": "billing@hooli.com", "metadata": {"account_id": "hooli"}}}}
    answer(post_stripe(client, event), accepted=1)
    hooli = account(engine, "hooli")
    assert (hooli["name"], hooli["domain"], hooli["stripe_customer_id"]) == ("Hooli", "hooli.com", "cus_hooli")


# --------------------------------------------------------------------------- /ingest/tickets


def _ticket(ticket_id: str, account_id: str | None, topic: str | None, created, **extra) -> dict:
    item = {"id": ticket_id, "status": "open", "subject": f"Help with {topic}", "priority": "high",
            "created_at": iso(created)}
    if account_id is not None:
        item["account_id"] = account_id
    if topic is not None:
        item["topic"] = topic
    item.update(extra)
    return item


def test_ticket_spike_opens_stall_right_after_third_ticket(client, engine):
    answer(post_v1(client, "/v1/group", group_call("acme", {"name": "Acme", "arr": 50000})), accepted=1)
    answer(post_tickets(client, _ticket("T-1", "acme", "SSO", ago(days=5))), accepted=1)
    answer(post_tickets(client, _ticket("T-2", "acme", "billing", ago(days=3))), accepted=1)
    assert live_stalls(engine, "acme", "ticket_spike") == []
    third = _ticket("T-3", "acme", "sso", ago(days=1))
    answer(post_tickets(client, third), accepted=1)
    stalls = live_stalls(engine, "acme", "ticket_spike")  # no scan: evaluated before the answer
    assert len(stalls) == 1, rows(engine, STALL)
    assert stalls[0]["priority"] in ("P0", "P1"), stalls[0]
    assert stalls[0]["status"] == "open"
    assert count(engine, TICKET, TICKET.c.account_id == "acme") == 3
    assert count(engine, EVENT, EVENT.c.source == "tickets") == 3
    # Redelivering the third ticket stores nothing and opens no second stall.
    answer(post_tickets(client, third), accepted=0, duplicates=1)
    assert count(engine, TICKET, TICKET.c.account_id == "acme") == 3
    assert count(engine, STALL, STALL.c.account_id == "acme") == 1


def test_ticket_redelivery_and_status_update(client, engine):
    t = _ticket("T-9", "acme", "sso", ago(days=1))
    body = dumps(t)
    answer(post_tickets(client, raw=body), accepted=1)
    answer(post_tickets(client, raw=body), accepted=0, duplicates=1)
    answer(post_tickets(client, {**t, "status": "Solved", "updated_at": iso(ago(hours=1))}), accepted=1)
    ticket = one(engine, TICKET, TICKET.c.id == "T-9")
    assert ticket["status"] == "solved"
    # An older update arriving late does not roll the status back.
    answer(post_tickets(client, {**t, "status": "pending", "updated_at": iso(ago(hours=5))}), accepted=1)
    assert one(engine, TICKET, TICKET.c.id == "T-9")["status"] == "solved"
    assert count(engine, EVENT, EVENT.c.source == "tickets") == 3


def test_ticket_requester_email_resolves_account(client, engine):
    answer(post_v1(client, "/v1/batch", {"batch": [
        identify_call("u-jane", {"email": "Jane@Initech.com", "name": "Jane"}),
        group_call("initech", {"name": "Initech"}, user="u-jane"),
    ]}), accepted=2)
    assert one(engine, CONTACT, CONTACT.c.id == "u-jane")["account_id"] == "initech"
    answer(post_tickets(client, _ticket("T-20", None, "login", ago(hours=3), requester_email="JANE@initech.com")),
           accepted=1)
    ticket = one(engine, TICKET, TICKET.c.id == "T-20")
    assert ticket["account_id"] == "initech"
    assert ticket["requester_email"] == "jane@initech.com"
    assert one(engine, EVENT, EVENT.c.source == "tickets")["account_id"] == "initech"


def test_ticket_requester_domain_resolves_account(client, engine):
    """A requester no contact matches belongs to the one account with their company's domain;
    never by a free-mail domain, never when two accounts share the domain."""
    answer(post_v1(client, "/v1/batch", {"batch": [
        group_call("initech", {"name": "Initech", "domain": "initech.com"}, user="u-1"),
        group_call("hooli", {"name": "Hooli", "domain": "hooli.xyz"}, user="u-2"),
        group_call("hooli-eu", {"name": "Hooli EU", "domain": "hooli.xyz"}, user="u-3"),
        group_call("mailer", {"name": "Mailer", "domain": "gmail.com"}, user="u-4"),
    ]}), accepted=4)
    created = ago(hours=3)
    answer(post_tickets(client, [
        _ticket("T-21", None, "login", created, requester_email="Peter@INITECH.com"),
        _ticket("T-22", None, "login", created, requester_email="gavin@hooli.xyz"),
        _ticket("T-23", None, "login", created, requester_email="someone@gmail.com"),
    ]), accepted=3)
    stored = {r["id"]: r["account_id"] for r in rows(engine, TICKET)}
    assert stored == {"T-21": "initech", "T-22": None, "T-23": None}


def test_ticket_list_with_bad_items(client, engine):
    created = ago(days=2)
    items = [
        _ticket("T-30", "acme", "sso", created),
        {"id": "T-31", "account_id": "acme", "created_at": iso(created)},  # no status
        "not a ticket",
        _ticket("T-33", "acme", "sso", created, tags=["sso"]),
        _ticket("T-34", None, "sso", created),  # neither account_id nor requester_email
        _ticket("T-35", "acme", "sso", created),
        {**_ticket("T-36", "acme", None, created), "tags": ["billing", "urgent"]},
    ]
    items[5]["created_at"] = "yesterday"
    body = answer(post_tickets(client, items), accepted=3, rejected=4)
    assert [r["index"] for r in body["rejected"]] == [1, 2, 4, 5]
    assert all(isinstance(r["error"], str) and r["error"] for r in body["rejected"])
    stored = {r["id"]: r for r in rows(engine, TICKET)}
    assert set(stored) == {"T-30", "T-33", "T-36"}
    assert stored["T-36"]["topic"] == "billing"
    # The envelope shape works too.
    answer(post_tickets(client, {"tickets": [_ticket("T-40", "acme", "sso", created)]}), accepted=1)


def test_ticket_signature(client, engine):
    body = dumps(_ticket("T-50", "acme", "sso", ago(hours=2)))
    good = tickets_ingest.sign(body, TICKETS_SECRET)
    assert good.startswith("sha256=")
    for bad in ("", good[len("sha256="):], "sha256=" + "0" * 64, "sha1=" + good[7:],
                tickets_ingest.sign(body, "other-secret"), tickets_ingest.sign(body + b" ", TICKETS_SECRET)):
        refused(post_tickets(client, raw=body, signature=bad), 401, bad)
    refused(client.post("/ingest/tickets", content=body), 401)
    refused(post_tickets(client, raw=body + b" ", signature=good), 401)  # altered after signing
    assert counts(engine) == NOTHING
    answer(post_tickets(client, raw=body, signature="SHA256=" + good[7:].upper()), accepted=1)
    refused(post_tickets(client, raw=b"not json"), 400)
    refused(post_tickets(client, raw=b"[]"), 400)
    refused(post_tickets(client, raw=b"42"), 400)


def test_webhook_values_the_database_cannot_hold(client, engine):
    """A NUL in an id or name stored as text is reported per item (PostgreSQL text cannot hold
    it), never a 5xx; the other items are stored. In the customer's free text (subject, body)
    it becomes U+FFFD and the ticket is kept."""
    created = ago(hours=5)
    body = answer(post_tickets(client, [
        _ticket("T-60", "acme", "sso", created),
        _ticket("T-61\x00", "acme", "sso", created),
        _ticket("T-62", "acme", "sso", created, status="open\x00"),
        _ticket("T-63", "acme", "sso\x00", created),
        _ticket("T-64", "acme", "sso", created, subject="Help\x00"),
        _ticket("T-65", None, "sso", created, requester_email="jane\x00@initech.com"),
        _ticket("T-66", "acme\x00", "sso", created),
        _ticket("T-67", "acme", "sso", created, note="free text\x00 kept in properties"),
    ]), accepted=3, rejected=5)
    assert [r["index"] for r in body["rejected"]] == [1, 2, 3, 5, 6]
    assert {r["id"]: r["subject"] for r in rows(engine, TICKET)} == {"T-60": "Help with sso", "T-64": "Help\ufffd",
                                                                  "T-67": "Help with sso"}

    sub = _subscription_event("evt_nul_1", "acme\x00")
    assert all_rejected(post_stripe(client, sub), rejected=1)["rejected"][0]["index"] == 0
    all_rejected(post_stripe(client, {**_subscription_event("evt_nul_2", "acme"), "id": "evt\x00"}), rejected=1)
    customer = {"id": "evt_nul_3", "object": "event", "type": "customer.updated", "created": int(time.time()),
                "data": {"object": {"id": "cus_x", "name": "Hoo\x00li", "metadata": {"account_id": "hooli"}}}}
    all_rejected(post_stripe(client, customer), rejected=1)
    assert count(engine, EVENT, EVENT.c.source == "stripe") == 0
    assert count(engine, EVENT) == 3
