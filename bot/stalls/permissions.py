"""Who may do what to a stall: the one place it is declared (Grafana OnCall's lesson).

The table is keyed by domain operations (Op), not by how a surface carries them: a button,
a menu option and a digest row that assign a stall are all Op.ASSIGN. A user has the role
OWNER when they own the stall's account (Account.owner_slack_id), ASSIGNEE when the account's
alert is assigned to them, TEAM when they are in the CS team (STALLWATCH_TEAM: user ids or a
Slack user group, bot/stalls/team.py), ADMIN when listed in STALLWATCH_ADMINS. Anyone else is
refused and nothing changes (tests/test_slack_actions.py and tests/test_team.py click every
operation as an outsider).

Visibility is Op.VIEW, one rule for every surface (the ping's "View journey", `/journey`,
`/stalls`, the App Home): a user sees an account when they hold a role on it. TEAM and ADMIN
do not depend on the account, so they see every account (`sees_every_account`); anyone else
sees the accounts they own or are assigned, and nothing of the others (`/journey` refuses,
`/stalls all` lists only their own and says so, the App Home is their own queue).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from bot.stalls.errors import NotAllowed


class Op(Enum):
    ASSIGN = "assign"  # take the alert yourself ("Assign to me")
    REASSIGN = "reassign"  # give it to someone else ("Assign to...")
    SNOOZE = "snooze"
    RESOLVE = "resolve"
    VIEW = "view"
    DRAFT = "draft"
    REGENERATE = "regenerate"
    DISCARD = "discard"
    APPROVE = "approve"
    NOTE = "note"  # write a note on the account or its alert


class Role(Enum):
    OWNER = "the account's owner"
    ASSIGNEE = "the stall's assignee"
    TEAM = "a CS team member"
    ADMIN = "a Stallwatch admin"


EVERYONE_RESPONSIBLE = frozenset({Role.OWNER, Role.ASSIGNEE, Role.TEAM, Role.ADMIN})

# The declaration, one line per operation. The CS team covers for each other (a CSM on leave,
# an unowned account): a member may claim, hand on and act on any alert, as an admin may.
PERMISSIONS: dict[Op, frozenset[Role]] = {
    Op.ASSIGN: EVERYONE_RESPONSIBLE,  # claim it: the owner, a teammate covering, an admin
    Op.REASSIGN: EVERYONE_RESPONSIBLE,  # hand it on: the assignee too may pass it to someone else
    Op.SNOOZE: EVERYONE_RESPONSIBLE,
    Op.RESOLVE: EVERYONE_RESPONSIBLE,
    Op.VIEW: EVERYONE_RESPONSIBLE,  # see the account (journey, lists): the visibility rule
    Op.DRAFT: EVERYONE_RESPONSIBLE,
    Op.REGENERATE: EVERYONE_RESPONSIBLE,
    Op.DISCARD: EVERYONE_RESPONSIBLE,
    Op.APPROVE: EVERYONE_RESPONSIBLE,  # an email to the customer: still only people responsible for it
    Op.NOTE: EVERYONE_RESPONSIBLE,  # the whole team reads a note: only people responsible for the account write one
}
# Roles that do not depend on the account: whoever holds one holds it on every account.
STAFF_ROLES = frozenset({Role.TEAM, Role.ADMIN})


@dataclass(frozen=True)
class Subject:
    """What a permission check needs to know about a stall (or an account: stall_id None)."""

    stall_id: int | None
    owner_slack_id: str | None
    assignee: str | None


NOBODY = Subject(stall_id=None, owner_slack_id=None, assignee=None)


def roles_of(user_id: str, subject: Subject, admins: Iterable[str], team: Iterable[str] = ()) -> frozenset[Role]:
    roles = set()
    if user_id and subject.owner_slack_id == user_id:
        roles.add(Role.OWNER)
    if user_id and subject.assignee == user_id:
        roles.add(Role.ASSIGNEE)
    if user_id and user_id in frozenset(team):
        roles.add(Role.TEAM)
    if user_id and user_id in frozenset(admins):
        roles.add(Role.ADMIN)
    return frozenset(roles)


def allowed(op: Op, user_id: str, subject: Subject, admins: Iterable[str], team: Iterable[str] = ()) -> bool:
    needed = PERMISSIONS.get(op)
    if needed is None:  # undeclared operations are refused, never silently allowed
        return False
    return bool(needed & roles_of(user_id, subject, admins, team))


def sees_every_account(user_id: str, admins: Iterable[str], team: Iterable[str] = ()) -> bool:
    """Whether `user_id` may view any account: Op.VIEW on an account nobody owns or is assigned
    (so only the roles that do not depend on the account count)."""
    return allowed(Op.VIEW, user_id, NOBODY, admins, team)


def check(op: Op, user_id: str, subject: Subject, admins: Iterable[str], team: Iterable[str] = ()) -> None:
    """Raise NotAllowed unless `user_id` may perform `op` on the stall (or the account)."""
    if not allowed(op, user_id, subject, admins, team):
        who = ", ".join(r.value for r in sorted(PERMISSIONS.get(op, ()), key=lambda r: list(Role).index(r)))
        what = "see this account" if op == Op.VIEW else "do that on this stall"
        raise NotAllowed(f"Only {_or(who) or 'nobody'} can {what}. "
                         "Ask the owner, or a Stallwatch admin to add you to the CS team (STALLWATCH_TEAM).")


def _or(listed: str) -> str:
    """"a, b, c" -> "a, b or c"."""
    head, _, last = listed.rpartition(", ")
    return f"{head} or {last}" if head else last
