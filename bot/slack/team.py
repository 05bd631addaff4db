"""The CS team in Slack: reading STALLWATCH_TEAM's user groups (`usergroups.users.list`, for
bot.stalls.team.TeamRoster) and telling a teammate an alert was assigned to them (one DM,
through the outbox, in the assignment's transaction)."""

from __future__ import annotations

import threading

from sqlalchemy import Connection

from bot.settings import Settings
from bot.slack.client import web_client
from bot.slack.outbox import enqueue
from bot.slack.render.limits import NAME_MAX, SHORT_MAX
from bot.slack.text import md
from bot.stalls.actions import Assigned
from bot.stalls.context import Services
from bot.stalls.views import ping_view

# A click may wait for this read (the first one, or once the list is TEAM_TTL old): short, and
# no SDK retries (a failure keeps the last known list; the roster tries again later).
READ_TIMEOUT = 5


def usergroup_reader(settings: Settings):
    """`fetch(group_id) -> member ids` for TeamRoster.install: Slack's usergroups.users.list
    (scope usergroups:read; `{"ok": true, "users": ["U...", ...]}`). Raises on any error."""

    def fetch(group_id: str) -> list[str]:
        client = web_client(settings, blocking_retries=False, timeout=READ_TIMEOUT)
        users = client.usergroups_users_list(usergroup=group_id).get("users")
        if not isinstance(users, list):
            raise ValueError("usergroups.users.list answered without a users list")
        return [u for u in users if isinstance(u, str)]

    return fetch


def connect_team(services: Services) -> None:
    """Let the roster read its user groups from Slack (once Slack is configured), and read them
    once now in the background, so the first click does not wait for Slack (a modal's
    trigger_id lives 3 seconds)."""
    if services.settings.slack_enabled and services.roster.groups:
        services.roster.install(usergroup_reader(services.settings))
        threading.Thread(target=services.roster.members, name="team-roster", daemon=True).start()


def assigned_dm(services: Services):
    """The `notify` of bot.stalls.actions.assign: the new assignee's DM, queued once per
    assignment (keyed by its audit row) in the assignment's transaction."""

    def notify(conn: Connection, a: Assigned) -> None:
        view = ping_view(conn, a.stall_id, services.rules, a.at)
        name = md(view.account_name, NAME_MAX) if view else md(a.account_id, NAME_MAX)
        reason = view.reasons[0].text if view and view.reasons else (view.why if view else "")
        text = f"<@{a.actor}> assigned you {name}" + (f": {md(reason, SHORT_MAX)}" if reason else "")
        enqueue(conn, key=f"assigned:{a.audit_id}:dm", method="dm", now=a.at,
                payload={"user": a.assignee, "text": text})

    return notify
