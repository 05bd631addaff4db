"""What the ingest store takes: one normalized message of any source (built by bot/ingest's
parsers, stored by storage.ingest and storage.writer)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(slots=True)
class TicketUpdate:
    id: str
    status: str
    created_at: datetime
    topic: str | None = None
    subject: str | None = None
    body: str | None = None  # the customer's text, first 4,000 characters
    priority: str | None = None
    requester_email: str | None = None


@dataclass(slots=True)
class IncomingEvent:
    """One message, validated and normalized. All datetimes are aware UTC."""

    source: str  # idempotency namespace: "segment" (both /v1/* and /ingest/segment), "stripe", "tickets"
    message_id: str
    kind: str  # track | identify | group | page | screen | alias | stripe event type | ticket
    name: str | None  # track event name, page name, stripe type, "ticket <status>"
    occurred_at: datetime
    account_id: str | None
    contact_id: str | None
    properties: dict[str, Any] = field(default_factory=dict)
    # Facts the message carries about its account or contact, applied with the event:
    account_traits: dict[str, Any] | None = None  # name, domain, plan, arr, owner_email, renewal_date(date), employees, seats
    contact_traits: dict[str, Any] | None = None  # email, name, first_name, unsubscribed(bool)
    lifecycle: str | None = None  # Stripe: trialing | active | past_due | cancelled | churned
    payment_failed: bool | None = None  # Stripe invoice: True failed, False paid
    stripe_customer_id: str | None = None
    ticket: TicketUpdate | None = None
    requester_email: str | None = None  # tickets without account_id: resolved through contacts
    # Set by the store when the message is a known event missing a required property.
    missing_properties: list[str] = field(default_factory=list)
    # (field, detail) for each time outside the ingest window (bot/ingest/timewindow.py):
    # clamped or dropped before storing, recorded by the store as tracking issues.
    time_issues: list[tuple[str, str]] = field(default_factory=list)
    position: int = 0  # the message's index in its request, for the `rejected` answer
