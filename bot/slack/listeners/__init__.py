"""Bolt listeners grouped by kind; each module has `register(app)`."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp


def register_listeners(app: AsyncApp) -> None:
    from bot.slack.listeners import actions, commands, drafts, events

    commands.register(app)
    actions.register(app)
    drafts.register(app)
    events.register(app)
