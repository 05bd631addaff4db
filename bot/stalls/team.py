"""The CS team (STALLWATCH_TEAM): who holds Role.TEAM in the permission table.

The setting lists user ids (`U1,U2`) and/or Slack user groups (`S0CS`). A group's members are
read from Slack by a `fetch` the Slack adapter installs (bot/slack/team.py: one
`usergroups.users.list` per group); this module stays Slack-free. Members are cached for
`ttl`; when Slack is away (an error, a timeout, a 429) the last known list is kept, the
failure is logged, and the next try waits `retry_after` so a click never waits on a Slack
that is down. Before any successful read (or with no Slack at all) a group has no members:
team rights are never granted on a guess.

`members()` may call Slack: call it off the event loop (the use-cases run in threads), and
before opening a write transaction (it may wait for Slack's answer).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)

TEAM_TTL = 600.0  # seconds a user group's members are trusted (Slack's tier 2: 20+ calls a minute)
RETRY_AFTER = 60.0  # seconds before Slack is asked again after a failed read

Fetch = Callable[[str], Iterable[str]]  # user group id -> its members' user ids; raises when it cannot


class TeamRoster:
    """The CS team's Slack user ids: the listed ids plus the members of the listed groups."""

    def __init__(self, user_ids: Iterable[str] = (), groups: Iterable[str] = (), *, ttl: float = TEAM_TTL,
                 retry_after: float = RETRY_AFTER, clock: Callable[[], float] = time.monotonic):
        self.user_ids = frozenset(user_ids)
        self.groups = tuple(groups)
        self.ttl, self.retry_after, self.clock = ttl, retry_after, clock
        self._fetch: Fetch | None = None
        self._known: frozenset[str] | None = None  # the groups' members at the last good read
        self._next_at = 0.0  # when the groups are read again (clock time)
        self._reading = threading.Lock()  # one read of Slack at a time

    @classmethod
    def from_settings(cls, settings, **kw) -> "TeamRoster":
        return cls(settings.team_user_ids, settings.team_groups, **kw)

    def install(self, fetch: Fetch) -> None:
        """How to read a user group (the Slack adapter's, once Slack is configured)."""
        self._fetch = fetch

    def members(self) -> frozenset[str]:
        """Everyone with the TEAM role now. Blocking (may read Slack): never on the event loop."""
        if not self.groups:
            return self.user_ids
        return self.user_ids | self._group_members()

    def _group_members(self) -> frozenset[str]:
        if self.clock() < self._next_at or self._fetch is None:
            return self._known or frozenset()
        # With a list known, a click never waits for another's read: it uses the list it has.
        if not self._reading.acquire(blocking=self._known is None):
            return self._known or frozenset()
        try:
            if self.clock() < self._next_at:  # another thread read it meanwhile
                return self._known or frozenset()
            return self._read()
        finally:
            self._reading.release()

    def _read(self) -> frozenset[str]:
        try:
            read = frozenset(uid for group in self.groups for uid in self._fetch(group))
        except Exception as error:  # noqa: BLE001 - Slack away: keep the last list, try later
            self._next_at = self.clock() + self.retry_after
            known = self._known or frozenset()
            log.warning("could not read the CS team's user group(s) %s from Slack (%s: %s); using the last "
                        "known list (%d members), retrying in %.0f s", ",".join(self.groups),
                        type(error).__name__, error, len(known), self.retry_after)
            return known
        if read != self._known:
            log.info("CS team (%s): %d members", ",".join(self.groups), len(read))
        self._known = read
        self._next_at = self.clock() + self.ttl
        return read
