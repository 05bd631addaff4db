"""Events: the App Home (the viewer's own queue, ranked); the app uninstalled or its token revoked."""

from __future__ import annotations

import asyncio

from slack_bolt.async_app import AsyncApp

from bot.slack.blocks import home_view
from bot.slack.bolt_app import deps
from bot.slack.listeners.actions import home_rows


def register(app: AsyncApp) -> None:
    d = deps(app)

    # Events are acked by Bolt before this runs (process_before_response=False); errors go
    # to the app's error handler, which logs them (there is nobody to answer ephemerally).
    @app.event("app_home_opened")
    async def app_home_opened(event, client):
        if event.get("tab", "home") != "home":
            return
        user = event["user"]
        rows, total = await asyncio.to_thread(home_rows, d, user)
        view = home_view(rows, user, more=max(total - len(rows), 0))
        await client.views_publish(user_id=user, view=view.to_dict())

    # Slack revokes the bot token when the app is uninstalled: stop posting (the outbox holds
    # its rows) and say so in the logs and /healthz (bot.slack.health).
    @app.event("app_uninstalled")
    async def app_uninstalled():
        from bot.slack.health import mark_revoked

        await asyncio.to_thread(mark_revoked, d.engine, d.settings.slack_bot_token, "the app was uninstalled")

    @app.event("tokens_revoked")
    async def tokens_revoked(event):
        from bot.slack.health import mark_revoked

        if not (event.get("tokens") or {}).get("bot"):
            return  # only user tokens, which Stallwatch does not use
        await asyncio.to_thread(mark_revoked, d.engine, d.settings.slack_bot_token, "Slack revoked the bot token")
