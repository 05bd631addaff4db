"""Who may do what to a stall: the one place it is declared (Grafana OnCall's lesson).

The table is keyed by domain operations (Op), not by how a surface carries them: a button,
a menu option and a digest row that assign a stall are all Op.ASSIGN. A user has the role
OWNER when they own the stall's account (Account.owner_slack_id), ASSIGNEE when the stall is
assigned to them, ADMIN when listed in STALLWATCH_ADMINS. Anyone else is refused and nothing
changes (tests/test_slack_actions.py clicks every operation as an outsider).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from bot.stalls.errors import NotAllowed


class Op(Enum):
    ASSIGN = "assign"
    SNOOZE = "snooze"
    RESOLVE = "resolve"
    VIEW = "view"
    DRAFT = "draft"
    REGENERATE = "regenerate"
    DISCARD = "discard"
    APPROVE = "approve"


class Role(Enum):
    OWNER = "the account's owner"
    ASSIGNEE = "the stall's assignee"
    ADMIN = "a Stallwatch admin"


RESPONSIBLE = frozenset({Role.OWNER, Role.ASSIGNEE, Role.ADMIN})

# The declaration.
PERMISSIONS: dict[Op, frozenset[Role]] = {op: RESPONSIBLE for op in Op}


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


def allowed(op: Op, user_id: str, subject: Subject, admins: Iterable[str]) -> bool:
    needed = PERMISSIONS.get(op)
    if needed is None:  # undeclared operations are refused, never silently allowed
        return False
    return bool(needed & roles_of(user_id, subject, admins))


def check(op: Op, user_id: str, subject: Subject, admins: Iterable[str]) -> None:
    """Raise NotAllowed unless `user_id` may perform `op` on the stall."""
    if not allowed(op, user_id, subject, admins):
        who = " or ".join(r.value for r in sorted(PERMISSIONS.get(op, ()), key=lambda r: r.name))
        raise NotAllowed(f"Only {who or 'nobody'} can do that on this stall. "
                         "Ask the owner, or a Stallwatch admin to add you to STALLWATCH_ADMINS.")
