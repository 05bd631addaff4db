"""Events: the App Home (the viewer's own queue, ranked); the app uninstalled or its token revoked.

Events are acked by Bolt before these run (process_before_response=False); errors go to the
app's error handler, which logs them (there is nobody to answer ephemerally)."""

from __future__ import annotations

import asyncio

from slack_bolt.async_app import AsyncApp

from bot.slack.render import home_view
from bot.slack.boundary import listener
from bot.slack.health import mark_revoked
from bot.slack.listeners.actions import home_rows
from bot.stalls.context import Services


async def app_home_opened(services: Services, event, client):
    if event.get("tab", "home") != "home":
        return
    user = event["user"]
    rows, total = await asyncio.to_thread(home_rows, services, user)
    view = home_view(rows, user, more=max(total - len(rows), 0))
    await client.views_publish(user_id=user, view=view.to_dict())


# Slack revokes the bot token when the app is uninstalled: stop posting (the outbox holds
# its rows) and say so in the logs and /healthz (bot.slack.health).
async def app_uninstalled(services: Services):
    await asyncio.to_thread(mark_revoked, services.engine, services.settings.slack_bot_token,
                            "the app was uninstalled")


async def tokens_revoked(services: Services, event):
    if not (event.get("tokens") or {}).get("bot"):
        return  # only user tokens, which Stallwatch does not use
    await asyncio.to_thread(mark_revoked, services.engine, services.settings.slack_bot_token,
                            "Slack revoked the bot token")


def register(app: AsyncApp, services: Services) -> None:
    app.event("app_home_opened")(listener(services, app_home_opened))
    app.event("app_uninstalled")(listener(services, app_uninstalled))
    app.event("tokens_revoked")(listener(services, tokens_revoked))
