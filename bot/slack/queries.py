"""Which Slack messages show a stall's ping: every edit of the stall re-renders each of them
(the ping's view is bot.stalls.views.ping_view)."""

from __future__ import annotations

from sqlalchemy import Connection, select

from storage.models import Alert, SlackOutbox

ALERT = Alert.__table__
OUTBOX_T = SlackOutbox.__table__


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
