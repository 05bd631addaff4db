"""Domain errors of the use-cases. Each one's `message` is safe and useful to show the user
as is (the Slack adapter shows it ephemerally or in the modal; anything else gets an error id)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

from rules._text import duration


class StallwatchError(Exception):
    """A domain error whose `message` may be shown to the user."""

    message = "That did not work."

    def __init__(self, message: str | None = None):
        super().__init__(message or self.message)
        if message:
            self.message = message


class NotAllowed(StallwatchError):
    message = "You are not allowed to do that."


class NotFound(StallwatchError):
    message = "That stall no longer exists."


class BadRequest(StallwatchError):
    """The request names something that cannot be done (an outdated button, an unknown op)."""

    message = "That button is out of date; run the command again."


class CannotDraft(StallwatchError):
    """Drafting makes no sense for this stall now."""


class AlreadyResolved(StallwatchError):
    """The stall was closed before this change: `by` (a user id, "system" or "cli") and its
    `status` say how; `at` when, `resolution` why (a person's decision, or what the scan saw),
    `now` when the click was refused. The message names no one in any chat's markup: an
    adapter words it (bot/slack/boundary.py mentions the user and escapes the reason)."""

    def __init__(self, by: str | None, status: str = "resolved", *, at: datetime | None = None,
                 resolution: str | None = None, now: datetime | None = None):
        self.by, self.status, self.at, self.resolution, self.now = by, status, at, resolution, now
        super().__init__(self.wording(by if self.by_person else None))

    @property
    def by_person(self) -> bool:
        """Resolved by a person (not automatically, by the CLI or by a cancellation)."""
        return self.status == "resolved" and bool(self.by) and self.by not in ("system", "cli")

    def wording(self, who: str | None, escape: Callable[[str], str] = str) -> str:
        """The message, with `who` (as the adapter writes the person) when a person resolved it
        and the reason as `escape` writes it. With `at` and `now`: "Already resolved by @x 5
        minutes ago: handled."."""
        if self.at is None or self.now is None:
            return self._legacy(who)
        ago = f" {duration(self.now - _aware(self.at))} ago"
        why = f": {escape(self.resolution)}" if self.resolution and self.resolution != LEGACY_RESOLUTION else ""
        if who:
            return f"Already resolved by {who}{ago}{why}."
        if self.status == "auto_resolved" or self.by == "system" and self.status != "suppressed":
            return f"Already resolved automatically{ago}{why or ' (the account moved on)'}."
        if self.status == "suppressed":
            return f"Already closed{ago}: the account cancelled or churned."
        return f"Already resolved{ago}{why}."

    def _legacy(self, who: str | None) -> str:
        if who:
            return f"This stall was already resolved by {who}."
        if self.status == "auto_resolved" or self.by == "system":
            return "This stall was already resolved automatically (the account moved on)."
        if self.status == "suppressed":
            return "This stall was already closed: the account cancelled or churned."
        return "This stall was already resolved."


LEGACY_RESOLUTION = "Resolved in Slack"  # what a resolve without a reason records (says nothing more)


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=timezone.utc)
