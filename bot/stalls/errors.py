"""Domain errors of the use-cases. Each one's `message` is safe and useful to show the user
as is (the Slack adapter shows it ephemerally or in the modal; anything else gets an error id)."""

from __future__ import annotations


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
    def __init__(self, by: str | None, status: str = "resolved"):
        self.by, self.status = by, status
        if status == "resolved" and by and by not in ("system", "cli"):
            text = f"This stall was already resolved by <@{by}>."
        elif status == "auto_resolved" or by == "system":
            text = "This stall was already resolved automatically (the account moved on)."
        elif status == "suppressed":
            text = "This stall was already closed: the account cancelled or churned."
        else:
            text = "This stall was already resolved."
        super().__init__(text)
