"""SQLModel tables for the Stallwatch domain (see DESIGN.md, "Domain").

All datetimes are timezone-aware UTC (SQLModel's UTCDateTime: timestamptz on PostgreSQL). Hot paths (ingest, scan) use these tables through SQLAlchemy
Core (`Model.__table__`) and batch their statements; the ORM classes serve the rest.
Indexes are named after the query they serve.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Optional

from sqlalchemy import JSON, Column, Index, UniqueConstraint, text
from sqlmodel import Field, SQLModel


class Account(SQLModel, table=True):
    __tablename__ = "account"
    __table_args__ = (
        Index("ix_account_stalled_at", "stalled_at"),  # due step stalls
        Index("ix_account_checkpoint_at", "checkpoint_at"),  # due "not activated"
        Index("ix_account_renewal_date", "renewal_date"),  # renewal risk
        Index("ix_account_name_lower", "name_lower"),  # /journey lookup
        Index("ix_account_domain", "domain"),
        Index("ix_account_owner_email", "owner_email"),
        Index("ix_account_signup_at", "signup_at"),  # funnel
        Index("ix_account_next_eval", "next_eval_at"),  # due for the next scan
        # Journeys computed under other rules (storage.stalls.stale_journey), looked up by
        # every scan: without it, a read of every account each time (migration 0010).
        Index("ix_account_journey_version", "journey_version"),
    )

    id: str = Field(primary_key=True, max_length=255)  # Segment groupId
    name: str = Field(default="", max_length=255)
    name_lower: str = Field(default="", max_length=255)
    domain: Optional[str] = Field(default=None, max_length=255)
    plan: Optional[str] = Field(default=None, max_length=100)
    arr: float = 0.0
    seats: Optional[int] = None
    employees: Optional[int] = None
    owner_email: Optional[str] = Field(default=None, max_length=320)
    owner_slack_id: Optional[str] = Field(default=None, max_length=64)
    track: str = Field(default="standard", max_length=20)
    status: str = Field(default="trialing", max_length=20)  # lifecycle
    renewal_date: Optional[date] = None
    stripe_customer_id: Optional[str] = Field(default=None, max_length=255)
    # Journey: step event -> first time reached (ISO strings), and what follows from it.
    steps: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    signup_at: Optional[datetime] = None
    activated_at: Optional[datetime] = None
    stage: str = Field(default="Onboarding", max_length=20)
    waiting_step: Optional[str] = Field(default=None, max_length=200)
    waiting_since: Optional[datetime] = None
    stalled_at: Optional[datetime] = None
    checkpoint_at: Optional[datetime] = None
    steps_done: int = 0
    journey_version: str = Field(default="", max_length=64)
    first_seen_at: Optional[datetime] = None
    last_seen_at: Optional[datetime] = None
    payment_failed_at: Optional[datetime] = None
    # The time of the message each kind of fact came from: an older message arriving late
    # (Stripe does not order its webhooks) does not overwrite a newer fact.
    traits_at: Optional[datetime] = None  # the newest of fact_times
    lifecycle_at: Optional[datetime] = None
    payment_at: Optional[datetime] = None
    # Each account fact's own time ({"arr": ISO time, "name": ...}): a message updates only
    # the facts it carries, each only if it is not older than that fact's time, so a
    # name-only group call does not block an older Stripe event's ARR (storage/ingest.py).
    fact_times: Optional[dict[str, str]] = Field(default=None, sa_column=Column(JSON, nullable=True))
    # When the scan must evaluate the account again (NULL: now). Ingest clears it whenever the
    # account changes; the scan sets it from rules.review.next_review.
    next_eval_at: Optional[datetime] = None
    # Account health (rules/health.py), 0..100, and its reasons in words, heaviest first:
    # written by the scan when it evaluates the account; NULL until it first did.
    health: Optional[int] = None
    health_reasons: Optional[list[str]] = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: datetime
    updated_at: datetime


class AccountHealthDay(SQLModel, table=True):
    """Each account's health once a day (bot/health.py's snapshot job), kept for a rolling
    HEALTH_DAYS_KEPT days: the week's trend in /journey, App Home and the digest."""

    __tablename__ = "account_health_day"
    __table_args__ = (Index("ix_account_health_day_day", "day"),)  # retention, a day's re-run

    account_id: str = Field(primary_key=True, max_length=255)
    day: date = Field(primary_key=True)
    health: int


class DailySnapshot(SQLModel, table=True):
    """Company-level figures once a day (the digest's chart): open alerts and ARR at risk by
    priority ({"P0": n, ...}), activation of the mature cohort by track ({"standard":
    {"rate": 0.42, "accounts": 120}, ...}). A re-run the same day replaces the row."""

    __tablename__ = "daily_snapshot"

    day: date = Field(primary_key=True)
    open_alerts: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    arr_at_risk: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    activation: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime


class Contact(SQLModel, table=True):
    __tablename__ = "contact"
    __table_args__ = (
        Index("ix_contact_account_id", "account_id"),
        Index("ix_contact_email", "email"),
    )

    id: str = Field(primary_key=True, max_length=255)  # Segment userId
    account_id: Optional[str] = Field(default=None, max_length=255)
    email: Optional[str] = Field(default=None, max_length=320)
    name: Optional[str] = Field(default=None, max_length=255)
    first_name: Optional[str] = Field(default=None, max_length=255)
    unsubscribed: bool = False
    last_seen_at: Optional[datetime] = None
    created_at: datetime
    updated_at: datetime


class Event(SQLModel, table=True):
    __tablename__ = "event"
    __table_args__ = (
        # Idempotency: one row per (source, message id), whatever the redelivery.
        UniqueConstraint("source", "message_id", name="uq_event_source_message"),
        # /journey's timeline: an account's milestones (steps, traits, billing, tickets). Plain
        # product usage (most of the volume) stays out of it: each row in this index costs a
        # random page write at ingest, and usage is summed up by active_day instead.
        Index("ix_event_account_milestone", "account_id", "occurred_at",
              sqlite_where=text("milestone"), postgresql_where=text("milestone")),
    )

    id: Optional[int] = Field(default=None, primary_key=True)
    source: str = Field(max_length=20)  # "segment" | "stripe" | "tickets"
    message_id: str = Field(max_length=255)
    kind: str = Field(max_length=20)  # track, identify, group, page, stripe type, ticket
    name: Optional[str] = Field(default=None, max_length=200)
    account_id: Optional[str] = Field(default=None, max_length=255)
    contact_id: Optional[str] = Field(default=None, max_length=255)
    occurred_at: datetime
    received_at: datetime
    milestone: bool = False  # a journey step, activation, identify/group, billing or ticket event
    properties: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class StripePending(SQLModel, table=True):
    """A Stripe event stored before its customer's account was known (Stripe does not order
    its webhooks): the facts it carries, applied with their own time, and the event's
    account filled in, in the transaction that first links the customer to an account."""

    __tablename__ = "stripe_pending"
    __table_args__ = (Index("ix_stripe_pending_customer", "customer_id"),)  # the link's look-up

    message_id: str = Field(primary_key=True, max_length=255)  # the Stripe event id (source "stripe")
    customer_id: str = Field(max_length=255)
    occurred_at: datetime
    # {"traits": {...}, "lifecycle": str | None, "payment_failed": bool | None}, JSON-ready
    facts: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime


class EventVolume(SQLModel, table=True):
    """Events received per name and UTC day: volume anomalies without scanning the event table."""

    __tablename__ = "event_volume"

    name: str = Field(primary_key=True, max_length=200)
    day: date = Field(primary_key=True)
    count: int = 0
    missing_required: int = 0


class EventVolumeHour(SQLModel, table=True):
    """Events received per UTC hour, source and event name (tracking health, rules.tracking).

    `name` is the event name of track calls and "" for everything else a source sends, so a
    source's volume is the sum of its rows. The hour leads the key: the tracking job reads
    the last weeks and prunes older hours by range."""

    __tablename__ = "event_volume_hour"

    hour: datetime = Field(primary_key=True)
    source: str = Field(primary_key=True, max_length=20)
    name: str = Field(primary_key=True, max_length=200)
    count: int = 0


class ActiveDay(SQLModel, table=True):
    """One row per account and UTC day with any product activity (usage drop)."""

    __tablename__ = "active_day"
    __table_args__ = (Index("ix_active_day_day", "day", "account_id"),)

    account_id: str = Field(primary_key=True, max_length=255)
    day: date = Field(primary_key=True)


class Ticket(SQLModel, table=True):
    __tablename__ = "ticket"
    __table_args__ = (
        Index("ix_ticket_account_created", "account_id", "created_at"),
        Index("ix_ticket_created", "created_at"),
    )

    id: str = Field(primary_key=True, max_length=255)
    account_id: Optional[str] = Field(default=None, max_length=255)
    requester_email: Optional[str] = Field(default=None, max_length=320)
    status: str = Field(default="open", max_length=40)
    topic: Optional[str] = Field(default=None, max_length=200)
    subject: Optional[str] = Field(default=None, max_length=1000)
    body: Optional[str] = Field(default=None)  # the customer's message (first 4,000 characters)
    priority: Optional[str] = Field(default=None, max_length=40)
    created_at: datetime
    updated_at: datetime


class Stall(SQLModel, table=True):
    __tablename__ = "stall"
    __table_args__ = (
        # One open (or snoozed) stall per account and rule: open_key is set while the stall
        # is live and NULL once closed, so closed rows never collide (NULLs are distinct).
        UniqueConstraint("open_key", name="uq_stall_open_key"),
        # Counts by status and resolved time (the digest). Not by score: the ranked lists sort
        # open before snoozed first, which such an index cannot serve, and a score puts each
        # new stall at a random place in it (migration 0010).
        Index("ix_stall_status_resolved", "status", "resolved_at"),
        # Only assigned stalls: every look-up is of one assignee or of all assigned ones, and
        # nearly all stalls (every new one) have none (migration 0011).
        Index("ix_stall_assignee", "assignee", sqlite_where=text("assignee IS NOT NULL"),
              postgresql_where=text("assignee IS NOT NULL")),
        # The decisions that still hold, per account (storage.stalls.held_decisions); its
        # leading column serves every look-up of an account's stalls.
        Index("ix_stall_decision", "account_id", "decision_key"),
    )

    id: Optional[int] = Field(default=None, primary_key=True)
    account_id: str = Field(max_length=255)
    rule: str = Field(max_length=40)
    step: Optional[str] = Field(default=None, max_length=200)
    open_key: Optional[str] = Field(default=None, max_length=300)
    status: str = Field(default="open", max_length=20)
    opened_at: datetime
    stalled_since: datetime
    threshold_at: datetime
    updated_at: datetime
    resolved_at: Optional[datetime] = None
    resolution: Optional[str] = Field(default=None, max_length=500)
    resolved_by: Optional[str] = Field(default=None, max_length=64)
    score: float = 0.0
    severity: float = 1.0
    priority: str = Field(default="P3", max_length=2)
    why: str = Field(default="", max_length=1000)
    detail: str = Field(default="", max_length=500)
    stage: str = Field(default="Onboarding", max_length=20)
    assignee: Optional[str] = Field(default=None, max_length=64)
    snoozed_until: Optional[datetime] = None
    snoozed_by: Optional[str] = Field(default=None, max_length=64)
    recovery_attempts: int = 0
    last_recovery_at: Optional[datetime] = None
    # Why a person resolved it (rules.decisions): handled | false_positive | known; the note is
    # in `resolution`. `quiet_until`: a "known" decision keeps its rule quiet until then.
    resolution_kind: Optional[str] = Field(default=None, max_length=20)
    quiet_until: Optional[datetime] = None
    # "<account>|<rule>" while the decision holds (nothing of its rule reopens), NULL once the
    # condition materially changed: like open_key, at most one per account and rule.
    decision_key: Optional[str] = Field(default=None, max_length=300)


class Alert(SQLModel, table=True):
    """A Slack message about a stall; one per stall, channel and kind, edited in place.

    One alert per account: the account's ping (kind "ping") sits on its lead stall, the one that
    opened it; every other stall of the account that joined it while it was open has a row of
    kind "reason" pointing at the lead (`lead_stall_id`). `closed_at` is set on the ping once
    none of its stalls is live any more: a later stall opens a new alert."""

    __tablename__ = "alert"
    __table_args__ = (
        UniqueConstraint("stall_id", "channel", "kind", name="uq_alert_stall_channel_kind"),
        Index("ix_alert_kind_open", "kind", "closed_at"),  # open pings (escalations, an account's alert)
    )

    id: Optional[int] = Field(default=None, primary_key=True)
    stall_id: int = Field(index=True)
    channel: str = Field(max_length=64)
    ts: Optional[str] = Field(default=None, max_length=64)
    kind: str = Field(default="ping", max_length=20)  # ping | reason | backlog | escalation | winback | ...
    priority: str = Field(max_length=2)
    lead_stall_id: Optional[int] = None  # the stall whose ping this alert belongs to (kind "reason")
    closed_at: Optional[datetime] = None  # a ping: when its last live stall closed
    created_at: datetime
    updated_at: datetime
    acked_by: Optional[str] = Field(default=None, max_length=64)
    acked_at: Optional[datetime] = None


class Draft(SQLModel, table=True):
    __tablename__ = "draft"

    id: Optional[int] = Field(default=None, primary_key=True)
    stall_id: int = Field(index=True)
    account_id: str = Field(max_length=255)
    contact_id: Optional[str] = Field(default=None, max_length=255)
    recipient: Optional[str] = Field(default=None, max_length=320)
    subject: str = Field(default="", max_length=300)
    body: str = Field(default="")
    generated_subject: str = Field(default="", max_length=300)
    generated_body: str = Field(default="")
    source: str = Field(default="template", max_length=100)  # "template" or "llm:<model>"
    # What the draft was written about: re-checked before sending (rules.outreach.send_blocker).
    rule: str = Field(default="", max_length=40)
    step: Optional[str] = Field(default=None, max_length=200)
    attempt: int = 1  # the stall's recovery attempt this email is
    note: Optional[str] = Field(default=None, max_length=500)  # e.g. why the template was used
    view_id: Optional[str] = Field(default=None, max_length=64)  # the Slack modal showing it
    status: str = Field(default="drafting", max_length=20)
    blocked_reason: Optional[str] = Field(default=None, max_length=500)
    created_by: Optional[str] = Field(default=None, max_length=64)
    approved_by: Optional[str] = Field(default=None, max_length=64)
    approved_at: Optional[datetime] = None
    sent_at: Optional[datetime] = None
    created_at: datetime
    updated_at: datetime


class DigestRun(SQLModel, table=True):
    __tablename__ = "digest_run"
    __table_args__ = (UniqueConstraint("day", "channel", name="uq_digest_day_channel"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    day: date
    channel: str = Field(max_length=64)
    created_at: datetime
    posted_at: Optional[datetime] = None
    items: int = 0


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_entry"
    __table_args__ = (Index("ix_audit_stall", "stall_id", "at"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    at: datetime
    actor: str = Field(max_length=64)  # Slack user id, "system" or "cli"
    action: str = Field(max_length=60)
    stall_id: Optional[int] = None
    account_id: Optional[str] = Field(default=None, max_length=255)
    source: Optional[str] = Field(default=None, max_length=100)  # e.g. the Slack action id
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class Note(SQLModel, table=True):
    """A person's note on an account ("spoke to them, integration lands next sprint"), or on its
    alert (`stall_id`: the stall the note was written from). `text` is stored as typed: it is
    escaped where it is shown (bot/slack/text.py), never here."""

    __tablename__ = "note"
    __table_args__ = (
        Index("ix_note_account_created", "account_id", "created_at"),  # an account's latest notes
        Index("ix_note_created", "created_at"),  # the export: notes since a date
        # One note per submission: Slack's retry of the same modal submission stores nothing twice.
        UniqueConstraint("request_id", name="uq_note_request"),
    )

    id: Optional[int] = Field(default=None, primary_key=True)
    account_id: str = Field(max_length=255)
    stall_id: Optional[int] = None
    author: str = Field(max_length=64)  # Slack user id
    text: str = Field(max_length=2000)
    request_id: Optional[str] = Field(default=None, max_length=64)  # e.g. the modal's view id
    created_at: datetime


class TrackingIssue(SQLModel, table=True):
    __tablename__ = "tracking_issue"
    __table_args__ = (UniqueConstraint("kind", "event_name", "property", name="uq_tracking_issue"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    kind: str = Field(max_length=40)  # missing_property | volume_drop | time_out_of_window
    event_name: str = Field(max_length=200)
    property: str = Field(default="", max_length=200)
    first_seen_at: datetime
    last_seen_at: datetime
    count: int = 1
    example_message_id: Optional[str] = Field(default=None, max_length=255)
    detail: str = Field(default="", max_length=1000)
    reported_at: Optional[datetime] = None
    resolved_at: Optional[datetime] = None


class SlackOutbox(SQLModel, table=True):
    """Every outgoing Slack call, stored before it is sent and claimed atomically."""

    __tablename__ = "slack_outbox"
    __table_args__ = (
        UniqueConstraint("key", name="uq_slack_outbox_key"),
        Index("ix_slack_outbox_due", "status", "next_attempt_at"),
    )

    id: Optional[int] = Field(default=None, primary_key=True)
    key: str = Field(max_length=300)  # idempotency key, e.g. "ping:42:C123"
    method: str = Field(max_length=60)
    channel: Optional[str] = Field(default=None, max_length=64)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(default="pending", max_length=20)  # pending | sending | sent | failed
    attempts: int = 0
    next_attempt_at: datetime
    claimed_by: Optional[str] = Field(default=None, max_length=100)
    claimed_at: Optional[datetime] = None
    sent_at: Optional[datetime] = None
    result: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    error: Optional[str] = Field(default=None, max_length=1000)
    alert_id: Optional[int] = None
    created_at: datetime


class MailOutbox(SQLModel, table=True):
    __tablename__ = "mail_outbox"
    __table_args__ = (
        UniqueConstraint("draft_id", name="uq_mail_outbox_draft"),
        Index("ix_mail_outbox_due", "status", "next_attempt_at"),
    )

    id: Optional[int] = Field(default=None, primary_key=True)
    draft_id: int
    recipient: str = Field(max_length=320)
    subject: str = Field(max_length=300)
    body: str
    message_id: str = Field(max_length=255)  # RFC 5322 Message-ID, fixed before the first try
    status: str = Field(default="pending", max_length=20)
    attempts: int = 0
    next_attempt_at: datetime
    claimed_by: Optional[str] = Field(default=None, max_length=100)
    claimed_at: Optional[datetime] = None
    sent_at: Optional[datetime] = None
    error: Optional[str] = Field(default=None, max_length=1000)
    created_at: datetime


class HubspotNoteOutbox(SQLModel, table=True):
    """Notes for HubSpot companies (`[hubspot] notes`: bot/crm/notes.py), stored before they are
    sent. `key` names what the note is about (the audit entry of a recovery email sent or an
    alert resolved): each one is enqueued once, whatever pass sees it again."""

    __tablename__ = "hubspot_note_outbox"
    __table_args__ = (
        UniqueConstraint("key", name="uq_hubspot_note_outbox_key"),
        Index("ix_hubspot_note_outbox_due", "status", "next_attempt_at"),
    )

    id: Optional[int] = Field(default=None, primary_key=True)
    key: str = Field(max_length=100)  # e.g. "audit:42"
    account_id: str = Field(max_length=255)
    body: str
    at: datetime  # the note's hs_timestamp: when it happened
    status: str = Field(default="pending", max_length=20)  # pending | sending | sent | failed
    attempts: int = 0
    maybe_sent: bool = False  # an attempt may have reached HubSpot: look for the note before creating it
    next_attempt_at: datetime
    claimed_at: Optional[datetime] = None
    note_id: Optional[str] = Field(default=None, max_length=64)
    error: Optional[str] = Field(default=None, max_length=1000)
    sent_at: Optional[datetime] = None
    created_at: datetime


class Lease(SQLModel, table=True):
    """Leader lease for databases without advisory locks (SQLite)."""

    __tablename__ = "lease"

    name: str = Field(primary_key=True, max_length=100)
    holder: str = Field(max_length=200)
    expires_at: datetime


class Meta(SQLModel, table=True):
    __tablename__ = "meta"

    key: str = Field(primary_key=True, max_length=100)
    value: str = Field(default="", max_length=2000)


metadata = SQLModel.metadata
