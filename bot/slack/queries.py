"""Which Slack messages show a stall: every edit of the stall re-renders each of them (the
ping's view is bot.stalls.views.ping_view), each as what it was posted as (`posted_messages`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Sequence

from sqlalchemy import Connection, func, select

from bot.stalls.views import aware
from storage.models import Alert, Draft, SlackOutbox, Stall

ALERT = Alert.__table__
DRAFT = Draft.__table__
STALL = Stall.__table__
OUTBOX_T = SlackOutbox.__table__

# Alert kinds: what a message about a stall was posted as (bot/slack/router.py posts them).
PING, ESCALATION, OVERFLOW, WINBACK = "ping", "escalation", "overflow", "winback"
# One alert per account (see storage.models.Alert): a stall that joined its account's open
# ping is a REASON of it; a stall already old when Stallwatch first saw its account went in
# its owner's BACKLOG summary instead of a ping.
REASON, BACKLOG = "reason", "backlog"
FOLLOWUP = "attempt"  # Alert.kind "attempt2", "attempt3": the ping after a recovery email did not help


def lead_of(conn: Connection, stall_id: int) -> int:
    """The stall whose ping shows this stall: itself when it has a ping, the lead of the ping
    it joined as a reason, else the lead of its account's open ping; itself when none."""
    sid = int(stall_id)
    own = conn.execute(select(ALERT.c.kind, ALERT.c.lead_stall_id).where(
        ALERT.c.stall_id == sid, ALERT.c.kind.in_((PING, REASON))).order_by(ALERT.c.id).limit(1)).first()
    if own is not None:
        return sid if own.kind == PING or own.lead_stall_id is None else int(own.lead_stall_id)
    lead = conn.execute(
        select(ALERT.c.stall_id).select_from(ALERT.join(STALL, STALL.c.id == ALERT.c.stall_id))
        .where(ALERT.c.kind == PING, ALERT.c.closed_at.is_(None),
               STALL.c.account_id == select(STALL.c.account_id).where(STALL.c.id == sid).scalar_subquery())
        .order_by(ALERT.c.id.desc()).limit(1)).scalar()
    return int(lead) if lead is not None else sid


@dataclass(frozen=True)
class Posted:
    """A posted message of a stall and what its wording names besides the stall's current
    state, so a refresh renders it as itself: a follow-up keeps its note, a handoff or an
    escalation its header. A message with no Alert of the stall (none known) is a ping."""

    channel: str
    ts: str
    kind: str = PING  # PING, FOLLOWUP + n, WINBACK or ESCALATION
    attempt: int = 0  # a follow-up: its attempt n; a handoff: how many emails went out
    last_sent: datetime | None = None  # a follow-up: when email n-1 went out; a handoff: the last email
    minutes_unacked: int = 0  # an escalation: how long the P0 ping had waited


def ping_messages(conn: Connection, stall_id: int) -> list[tuple[str, str]]:
    """(channel, ts) of every posted ping about the stall (the first, and follow-ups after
    recovery emails): each is edited after an action. A DM's Alert names the user; its
    message lives in the DM channel the outbox opened, which the post's result records."""
    alerts = list(conn.execute(
        select(ALERT.c.id, ALERT.c.channel, ALERT.c.ts)
        .where(ALERT.c.stall_id == stall_id, (ALERT.c.kind == "ping") | ALERT.c.kind.like("attempt%"),
               ALERT.c.ts.is_not(None))
        .order_by(ALERT.c.id)))
    dm_channels = {r.alert_id: (r.result or {}).get("channel") for r in conn.execute(
        select(OUTBOX_T.c.alert_id, OUTBOX_T.c.result)
        .where(OUTBOX_T.c.alert_id.in_([a.id for a in alerts]), OUTBOX_T.c.method == "dm",
               OUTBOX_T.c.status == "sent"))} if alerts else {}
    return [(dm_channels.get(a.id) or a.channel, a.ts) for a in alerts]


def posted_messages(conn: Connection, stall_id: int, extra: Sequence[tuple[str, str]] = ()) -> list[Posted]:
    """Every posted ping of the stall (`ping_messages`) and the `extra` (channel, ts) messages
    (e.g. the one clicked: a handoff, an escalation), each with what it was posted as."""
    targets = ping_messages(conn, stall_id)
    targets += [(c, ts) for c, ts in extra if (c, ts) not in targets]
    if not targets:
        return []
    alerts = {a.ts: a for a in conn.execute(select(ALERT.c.ts, ALERT.c.kind, ALERT.c.created_at).where(
        ALERT.c.stall_id == stall_id, ALERT.c.ts.in_([ts for _, ts in targets])))}
    stall = conn.execute(select(STALL.c.recovery_attempts, STALL.c.last_recovery_at)
                         .where(STALL.c.id == stall_id)).first()
    sent = dict(conn.execute(select(DRAFT.c.attempt, func.max(DRAFT.c.sent_at)).where(
        DRAFT.c.stall_id == stall_id, DRAFT.c.sent_at.is_not(None)).group_by(DRAFT.c.attempt)).all())
    pinged_at = conn.execute(select(func.min(ALERT.c.created_at))
                             .where(ALERT.c.stall_id == stall_id, ALERT.c.kind == PING)).scalar()
    last_sent = aware(stall.last_recovery_at) if stall else None
    posted = []
    for channel, ts in targets:
        alert = alerts.get(ts)
        kind = alert.kind if alert is not None else PING
        if kind.startswith(FOLLOWUP) and kind.removeprefix(FOLLOWUP).isdigit():
            n = int(kind.removeprefix(FOLLOWUP))
            posted.append(Posted(channel, ts, kind, attempt=n, last_sent=aware(sent.get(n - 1)) or last_sent))
        elif kind == WINBACK and stall is not None:
            posted.append(Posted(channel, ts, kind, attempt=stall.recovery_attempts, last_sent=last_sent))
        elif kind == ESCALATION and pinged_at is not None:
            waited = aware(alert.created_at) - aware(pinged_at)
            posted.append(Posted(channel, ts, kind, minutes_unacked=int(waited.total_seconds() // 60)))
        else:
            posted.append(Posted(channel, ts))
    return posted

