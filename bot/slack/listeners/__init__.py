"""Bolt listeners grouped by kind, as module-level functions taking the Services first
(bot.slack.boundary wraps them for Bolt); each module has `register(app, services)`."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.slack.listeners import actions, commands, drafts, events, notes
from bot.stalls.context import Services


def register_all(app: AsyncApp, services: Services) -> None:
    commands.register(app, services)
    actions.register(app, services)
    drafts.register(app, services)
    events.register(app, services)
    notes.register(app, services)
