"""The process's services, passed explicitly to every use-case and listener (no module-level
state): the database, settings, rules, the clock, what to tell after a scan changed stalls,
and the senders' wake-ups."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from sqlalchemy import Engine

from bot.settings import Settings
from bot.stalls.team import TeamRoster
from rules.config import Rules
from storage.db import utcnow

Clock = Callable[[], datetime]  # returns an aware UTC now
ChangeHook = Callable[[Any], None]  # called with the scan's report after its changes are committed


@dataclass(frozen=True)
class Wakeups:
    """One event per outbox sender of the process. Whoever commits rows to an outbox sets its
    event so they go out at once rather than at the sender's next poll; a set with no sender
    running is harmless."""

    slack_outbox: threading.Event = field(default_factory=threading.Event)
    mail_outbox: threading.Event = field(default_factory=threading.Event)
    # Not an outbox: ingest changed an account's owner, so the Slack owner resolver
    # (bot.slack.owners) maps the new owner now rather than at its daily run.
    slack_owners: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class Services:
    engine: Engine
    settings: Settings
    rules: Rules
    clock: Clock = utcnow
    wakeups: Wakeups = field(default_factory=Wakeups)
    change_hooks: list[ChangeHook] = field(default_factory=list)
    roster: TeamRoster | None = None  # the CS team (STALLWATCH_TEAM); None: built from the settings

    def __post_init__(self):
        if self.roster is None:  # frozen: the one place a field is filled in after the fact
            object.__setattr__(self, "roster", TeamRoster.from_settings(self.settings))

    @property
    def admins(self) -> frozenset[str]:
        return self.settings.admin_ids

    @property
    def team(self) -> frozenset[str]:
        """The CS team's user ids now. Blocking (may read a user group from Slack): call it in a
        thread, before a write transaction."""
        return self.roster.members()
