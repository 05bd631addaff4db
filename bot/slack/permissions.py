"""Who may do what to a stall: the one place it is declared (Grafana OnCall's lesson).

Every interactive action on a stall names the roles allowed to perform it. A Slack user has
the role OWNER when they own the stall's account (Account.owner_slack_id), ASSIGNEE when the
stall is assigned to them, ADMIN when listed in STALLWATCH_ADMINS. Anyone else is refused
with an ephemeral message and nothing changes (tests/test_slack_actions.py clicks every
action in PERMISSIONS as an outsider).

The domain errors below are raised by listeners and turned into friendly ephemeral text by
the one `app.error` handler in bot.slack.bolt_app.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from bot.slack.blocks import Action


class Role(Enum):
    OWNER = "the account's owner"
    ASSIGNEE = "the stall's assignee"
    ADMIN = "a Stallwatch admin"


_RESPONSIBLE = frozenset({Role.OWNER, Role.ASSIGNEE, Role.ADMIN})

# The declaration. Menu options (ROW_MENU, DIGEST_MENU) are checked under the op they carry.
PERMISSIONS: dict[Action, frozenset[Role]] = {
    Action.ASSIGN: _RESPONSIBLE,
    Action.SNOOZE: _RESPONSIBLE,
    Action.RESOLVE: _RESPONSIBLE,
    Action.VIEW_JOURNEY: _RESPONSIBLE,
    Action.DRAFT: _RESPONSIBLE,
    Action.DRAFT_REGENERATE: _RESPONSIBLE,
    Action.DRAFT_DISCARD: _RESPONSIBLE,
    Action.DRAFT_APPROVE: _RESPONSIBLE,
    Action.DIGEST_ASSIGN: _RESPONSIBLE,
    Action.DIGEST_SNOOZE: _RESPONSIBLE,
}


# --- domain errors -------------------------------------------------------------------------

class StallwatchSlackError(Exception):
    """A domain error whose `message` is safe and useful to show the user as is."""

    message = "That did not work."

    def __init__(self, message: str | None = None):
        super().__init__(message or self.message)
        if message:
            self.message = message


class NotAllowed(StallwatchSlackError):
    message = "You are not allowed to do that."


class NotFound(StallwatchSlackError):
    message = "That stall no longer exists."


class AlreadyResolved(StallwatchSlackError):
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


# --- the check -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Subject:
    """What a permission check needs to know about a stall."""

    stall_id: int
    owner_slack_id: str | None
    assignee: str | None


def roles_of(user_id: str, subject: Subject, admins: Iterable[str]) -> frozenset[Role]:
    roles = set()
    if user_id and subject.owner_slack_id == user_id:
        roles.add(Role.OWNER)
    if user_id and subject.assignee == user_id:
        roles.add(Role.ASSIGNEE)
    if user_id and user_id in frozenset(admins):
        roles.add(Role.ADMIN)
    return frozenset(roles)


def allowed(action: Action, user_id: str, subject: Subject, admins: Iterable[str]) -> bool:
    needed = PERMISSIONS.get(action)
    if needed is None:  # undeclared actions are refused, never silently allowed
        return False
    return bool(needed & roles_of(user_id, subject, admins))


def check(action: Action, user_id: str, subject: Subject, admins: Iterable[str]) -> None:
    """Raise NotAllowed unless `user_id` may perform `action` on the stall."""
    if not allowed(action, user_id, subject, admins):
        who = " or ".join(r.value for r in sorted(PERMISSIONS.get(action, ()), key=lambda r: r.name))
        raise NotAllowed(f"Only {who or 'nobody'} can do that on this stall. "
                         "Ask the owner, or a Stallwatch admin to add you to STALLWATCH_ADMINS.")
