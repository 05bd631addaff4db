"""What "stored once, opened once, sent once" means, measured on the database and on the fake
Slack (which keeps every message it accepted, with its metadata, and every call it answered)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from benchmarks.proof.harness import Database


def outbox_key(body_or_message: dict) -> str | None:
    """The outbox key a post carries in its message metadata (bot.slack.outbox.outbox_metadata)."""
    from bot.slack.outbox import METADATA_EVENT, METADATA_KEY_FIELD

    metadata = body_or_message.get("metadata") or {}
    if not isinstance(metadata, dict):
        return None
    payload = metadata.get("event_payload") or {}
    if metadata.get("event_type") == METADATA_EVENT:
        return payload.get("key")
    return payload.get(METADATA_KEY_FIELD)


@dataclass
class SlackTally:
    """Per outbox key: messages Slack holds, and successful calls that created one."""

    messages: Counter = field(default_factory=Counter)
    ok_posts: Counter = field(default_factory=Counter)
    uploads: Counter = field(default_factory=Counter)  # files.completeUploadExternal per channel
    calls: Counter = field(default_factory=Counter)  # every call by method and HTTP status

    def doubled(self) -> dict[str, int]:
        return {k: n for k, n in self.messages.items() if n > 1} | {k: n for k, n in self.ok_posts.items() if n > 1}


def slack_tally(fake) -> SlackTally:
    t = SlackTally()
    for m in fake.all_messages():
        key = outbox_key(m)
        if key:
            t.messages[key] += 1
    for c in fake.calls():
        t.calls[(c.method, c.status)] += 1
        if c.method == "chat.postMessage" and c.ok:
            key = outbox_key(c.body)
            if key:
                t.ok_posts[key] += 1
        if c.method == "files.completeUploadExternal" and c.ok:
            t.uploads[c.body.get("channel_id") or c.body.get("channels")] += 1
    return t


@dataclass
class OutboxState:
    by_status: Counter
    keys: dict[str, str]  # key -> status
    failed: list[tuple[str, str]]  # (key, error)

    @property
    def settled(self) -> bool:
        return not self.by_status.get("pending") and not self.by_status.get("sending")

    @property
    def cancelled(self) -> list[str]:
        """Pings the router withdrew before delivery: their stall closed first (late data
        resolved it), so there was nothing left to say. Not a failure."""
        return [k for k, error in self.failed if (error or "").startswith("cancelled:")]

    @property
    def undelivered(self) -> dict[str, str]:
        """Rows neither sent nor cancelled: key -> status."""
        cancelled = set(self.cancelled)
        return {k: v for k, v in self.keys.items() if v != "sent" and k not in cancelled}


def outbox_state(db: Database) -> OutboxState:
    rows = db.rows("SELECT key, status, error FROM slack_outbox")
    return OutboxState(by_status=Counter(r.status for r in rows), keys={r.key: r.status for r in rows},
                       failed=[(r.key, r.error) for r in rows if r.status == "failed"])


def post_keys(state: OutboxState) -> set[str]:
    """The keys of the outbox rows that are posts (pings, their thread replies, backlog summaries,
    escalations, digest messages)."""
    posts = ("ping", "reprio", "news", "backlog", "escalation", "digest", "ops")
    return {k for k in state.keys if k.split(":", 1)[0] in posts and not k.endswith(":chart")}


def stored_ids(db: Database) -> set[tuple[str, str]]:
    return {(r.source, r.message_id) for r in db.rows("SELECT source, message_id FROM event")}


def event_counts(db: Database) -> tuple[int, int]:
    row = db.rows("SELECT count(*) AS n, count(DISTINCT source || ':' || message_id) AS d FROM event")[0]
    return row.n, row.d


def stall_opens(db: Database) -> Counter:
    """How many stall rows each (account, rule, step) has: 1 means opened once."""
    return Counter((r.account_id, r.rule, r.step) for r in db.rows("SELECT account_id, rule, step FROM stall"))


def live_stalls(db: Database) -> list:
    return db.rows("SELECT s.id, s.account_id, s.rule, s.priority, s.status, a.owner_slack_id, a.owner_email "
                   "FROM stall s JOIN account a ON a.id = s.account_id WHERE s.open_key IS NOT NULL")


def expected_pings(db: Database, alerts_channel: str, realtime=("P0", "P1")) -> set[str]:
    """One ping per account with a live real-time stall, per destination: the alerts channel,
    and the owner's DM when the owner's Slack user is known. One alert per account: the ping's
    key names the account's lead stall (the one its open Alert of kind "ping" sits on); an
    account never pinged is named after one of its stalls, so it shows as missing. Stalls that
    went into a backlog summary are owed no ping."""
    leads = {r.account_id: r.stall_id for r in db.rows(
        "SELECT s.account_id, a.stall_id FROM alert a JOIN stall s ON s.id = a.stall_id "
        "WHERE a.kind = 'ping' AND a.closed_at IS NULL ORDER BY a.id")}
    backlog = {r.stall_id for r in db.rows("SELECT stall_id FROM alert WHERE kind = 'backlog'")}
    owed = {}
    for s in live_stalls(db):
        if s.priority in realtime and s.status == "open" and s.id not in backlog:
            owed.setdefault(s.account_id, s)
    keys = set()
    for account, s in owed.items():
        lead = leads.get(account, s.id)
        keys.add(f"ping:{lead}:{alerts_channel}")
        if s.owner_slack_id:
            keys.add(f"ping:{lead}:{s.owner_slack_id}")
    return keys


def unrouted_stalls(db: Database, realtime=("P0", "P1")) -> list:
    """Live real-time stalls that no router ever looked at: no Alert row of theirs says they
    were pinged, joined their account's ping as a reason, or went into a backlog summary."""
    return [s for s in live_stalls(db) if s.priority in realtime and s.status == "open"
            and not db.scalar("SELECT count(*) FROM alert WHERE stall_id = :id AND kind IN ('ping', 'reason', "
                              "'backlog')", id=s.id)]


def routed_pings(db: Database, alerts_channel: str, realtime=("P0", "P1")) -> set[str]:
    """expected_pings of the stalls a router did route (see unrouted_stalls)."""
    lost = {s.id for s in unrouted_stalls(db, realtime)}
    return {k for k in expected_pings(db, alerts_channel, realtime) if int(k.split(":")[1]) not in lost}


def outbox_drained(db: Database) -> bool:
    return outbox_state(db).settled
