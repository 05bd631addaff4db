"""The optional per-CSM morning DM (issue 14; rules `[digest] morning_dm`, off by default).

Every CSM with a Slack user and at least one live stall on their accounts (Account.owner_slack_id)
or assigned to them gets ONE DM a day, at `[digest] morning_time` in the digest's time zone:
their queue as /stalls mine ranks it (one row per account, bot/stalls/reads.py `stall_rows`)
and what changed for them since yesterday: accounts new in their queue, resolved, escalated,
notes added by others. A CSM with nothing live gets nothing.

Exactly once per (local day, user), across restarts, threads and processes: the outbox row's
key `morning:{day}:{user}` is unique and `enqueue` inserts it with ON CONFLICT DO NOTHING, so a
second run the same day (a restart, a standby turned leader, `stallwatch digest --morning`)
enqueues nothing; the outbox then sends each row once (bot/slack/outbox.py).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Callable
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, func, or_, select

from bot.slack.outbox import enqueue
from bot.slack.render.morning import MorningChanges, MorningData, blocks_text, morning_blocks, morning_text
from bot.stalls.context import Wakeups
from bot.stalls.reads import stall_rows
from rules.config import Rules
from storage.db import read_tx, utcnow, write_tx
from storage.models import Account, Alert, Note, SlackOutbox, Stall

log = logging.getLogger(__name__)

UTC = timezone.utc
ACCOUNT = Account.__table__
STALL = Stall.__table__
ALERT = Alert.__table__
NOTE = Note.__table__
OUTBOX = SlackOutbox.__table__

DAY = timedelta(days=1)
MAX_ROWS = 15  # accounts listed in a DM; the rest counted ("and N more: /stalls mine")
LIVE = STALL.c.open_key.is_not(None)


@dataclass
class MorningOutcome:
    """What `send_morning` did: the users DMed (or, dry run, who would be) and why not."""

    day: date
    sent: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)  # DMed earlier today: nothing new enqueued
    reason: str = ""
    text: str | None = None  # dry run: every DM as text

    def summary(self) -> str:
        if self.reason:
            return self.reason
        return (f"morning DMs for {self.day}: {len(self.sent)} queued"
                + (f", {len(self.already)} already sent today" if self.already else ""))


def morning_day(now: datetime, rules: Rules) -> date:
    """The local date (the digest's time zone) a run at `now` sends the morning DM of."""
    return now.astimezone(ZoneInfo(rules.digest.timezone)).date()


def morning_key(day: date, user: str) -> str:
    return f"morning:{day}:{user}"


# --------------------------------------------------------------------------- reading


def _mine(user: str):
    """A stall is in `user`'s queue when they own its account or it is assigned to them."""
    return or_(ACCOUNT.c.owner_slack_id == user, STALL.c.assignee == user)


def _joined():
    return STALL.join(ACCOUNT, ACCOUNT.c.id == STALL.c.account_id)


def csm_users(conn: Connection) -> list[str]:
    """Every Slack user with at least one live stall on their accounts or assigned to them."""
    owners = select(ACCOUNT.c.owner_slack_id.label("user")).select_from(_joined()).where(
        LIVE, ACCOUNT.c.owner_slack_id.is_not(None))
    assignees = select(STALL.c.assignee.label("user")).where(LIVE, STALL.c.assignee.is_not(None))
    return sorted({u for (u,) in conn.execute(owners.union(assignees)) if u})


def _accounts(conn: Connection, *conds) -> dict[str, str]:
    """{account id: name} of the accounts with a stall matching `conds`."""
    return {r.account_id: r.name or r.account_id for r in conn.execute(
        select(STALL.c.account_id, ACCOUNT.c.name).select_from(_joined()).where(*conds).distinct())}


def changes_since(conn: Connection, user: str, since: datetime, now: datetime) -> MorningChanges:
    """What changed in `user`'s queue between `since` and `now`: accounts live now that were not
    then (new), live then and closed since (resolved), escalated in the window, and notes written
    in the window by anyone else on the accounts of either list."""
    mine = _mine(user)
    live_now = _accounts(conn, LIVE, mine)
    live_then = _accounts(conn, mine, STALL.c.opened_at <= since,
                          or_(STALL.c.resolved_at.is_(None), STALL.c.resolved_at > since))
    closed = _accounts(conn, mine, STALL.c.resolved_at > since, STALL.c.resolved_at <= now)
    escalated = _accounts(conn, mine, STALL.c.id.in_(select(ALERT.c.stall_id).where(
        ALERT.c.kind == "escalation", ALERT.c.created_at > since, ALERT.c.created_at <= now)))
    resolved = {a: n for a, n in closed.items() if a in live_then and a not in live_now}
    watched = {**live_now, **resolved}
    notes: dict[str, int] = defaultdict(int)
    if watched:
        for r in conn.execute(select(NOTE.c.account_id, func.count()).where(
                NOTE.c.account_id.in_(list(watched)), NOTE.c.author != user,
                NOTE.c.created_at > since, NOTE.c.created_at <= now).group_by(NOTE.c.account_id)):
            notes[r[0]] += int(r[1])
    return MorningChanges(
        new=sorted(n for a, n in live_now.items() if a not in live_then),
        resolved=sorted(resolved.values()),
        escalated=sorted(escalated.values()),
        notes=sum(notes.values()),
        noted=sorted(watched[a] for a in notes),
    )


def build_morning(conn: Connection, rules: Rules, user: str, now: datetime) -> MorningData | None:
    """`user`'s morning DM as of `now`; None when nothing is live in their queue."""
    rows, total = stall_rows(conn, now, user=user, rules=rules, limit=MAX_ROWS)
    if not rows:
        return None
    return MorningData(user=user, day=morning_day(now, rules), rows=rows, total=total,
                       changes=changes_since(conn, user, now - DAY, now), max_rows=MAX_ROWS)


# --------------------------------------------------------------------------- sending


def send_morning(engine: Engine, rules: Rules, now: datetime | None = None, *, dry_run: bool = False,
                 force: bool = False, wakeups: Wakeups | None = None,
                 clock: Callable[[], datetime] = utcnow) -> MorningOutcome:
    """Enqueue today's morning DM of every CSM with something live (see the module doc).
    Off unless `[digest] morning_dm` is on (`force`: the CLI's explicit request runs it anyway)."""
    now = now or utcnow()
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    day = morning_day(now, rules)
    outcome = MorningOutcome(day=day)
    if not (rules.digest.morning_dm or force or dry_run):
        outcome.reason = "the morning DM is off ([digest] morning_dm = false in the rules file)"
        return outcome
    with read_tx(engine) as conn:
        users = csm_users(conn)
        done = {k for (k,) in conn.execute(select(OUTBOX.c.key).where(
            OUTBOX.c.key.in_([morning_key(day, u) for u in users])))} if users else set()
    texts: list[str] = []
    for user in users:
        key = morning_key(day, user)
        if key in done and not dry_run:  # cheap check first; the INSERT below is what decides
            outcome.already.append(user)
            continue
        with read_tx(engine) as conn:
            data = build_morning(conn, rules, user, now)
        if data is None:
            continue
        blocks = morning_blocks(data)
        if dry_run:
            texts += [f"== {user}", *blocks_text(blocks), ""]
            outcome.sent.append(user)
            continue
        with write_tx(engine) as conn:
            new = enqueue(conn, key=key, method="dm", now=clock(), payload={
                "user": user, "text": morning_text(data), "blocks": blocks})
        (outcome.sent if new else outcome.already).append(user)
    if dry_run:
        outcome.text = "\n".join(texts) if texts else "no CSM has anything live: no morning DM\n"
        outcome.reason = f"dry run: {len(outcome.sent)} morning DM(s) for {day}, nothing stored or sent"
    elif outcome.sent and wakeups is not None:
        wakeups.slack_outbox.set()
    log.info("%s", outcome.summary())
    return outcome


__all__ = ["MorningOutcome", "build_morning", "changes_since", "csm_users", "morning_day", "send_morning"]
