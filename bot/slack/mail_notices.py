"""What Slack shows when the mail sender has dealt with an approved recovery email: the mail
sender's `on_outcome` hook (bot/mail/outbox.py), run inside its transaction."""

from __future__ import annotations

from sqlalchemy import Connection

from bot.slack.outbox import enqueue, enqueue_refresh
from bot.slack.text import md
from bot.stalls.context import Services
from bot.stalls.views import not_sent_phrase, ping_view


def mail_outcome(services: Services, conn: Connection, outcome) -> None:
    """Re-render the stall's pings (their "✉️" line now says sent / blocked: rendered from the
    draft's state when the outbox sends) and tell the approver when it did not go out."""
    if not services.settings.slack_enabled:
        return
    now = services.clock()
    if outcome.stall_id is not None:
        enqueue_refresh(conn, outcome.stall_id, now=now)
    if outcome.status != "sent" and outcome.approved_by:
        view = ping_view(conn, outcome.stall_id, services.rules, now) if outcome.stall_id is not None else None
        name = view.account_name if view else None
        enqueue(conn, key=f"mail:{outcome.draft_id}:{outcome.status}:dm", method="dm", now=now,
                payload={"user": outcome.approved_by,
                         "text": f":warning: The recovery email for {md(name, 120) if name else 'the account'} "
                                 f"to {md(outcome.recipient, 200) or 'the customer'} "
                                 f"{md(not_sent_phrase(outcome.reason), 600)}"})
    services.wakeups.slack_outbox.set()
