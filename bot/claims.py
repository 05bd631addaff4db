"""Claims, leases and backoff: the one mechanism behind the Slack outbox sender, the mail
sender and the scheduler leader.

- A worker id names its process and its machine (`default_worker_id`: host:pid:random@machine),
  so a claim made by a process of this machine that no longer exists is known to be dead
  (`holder_is_gone`) and need not be waited out.
- A `Lease` says how long a claim holds: `ttl` while its holder may be alive, and, where the
  problem allows it, the shorter `dead_holder_grace` once its holder is known to be gone.
- `RowClaims` claims rows of an outbox table (status, claimed_by, claimed_at, next_attempt_at)
  with one atomic UPDATE, so of any number of workers exactly one wins a row; `take_named`
  holds a named lease row (name, holder, expires_at) the same way.
- `backoff` is the exponential delay between attempts.

The policies (what differs is what the problems differ in):
  Slack outbox sender  Lease(5 min, dead_holder_grace=15 s)  posts are found again by their
                       key, so a dead sender's row is taken over within seconds
  mail sender          Lease(5 min)  SMTP has no lookup: its own 'transmitting' state decides
                       what a dead sender's row becomes (bot.mail.outbox)
  scheduler leader     Lease(45 s, dead_holder_grace=0)  renewed every few seconds
"""

from __future__ import annotations

import hashlib
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Connection, Table, and_, or_, select, update

from storage.sql import insert_ignore


def _machine_identity() -> str | None:
    """What tells this machine's processes apart from any other's: the kernel's boot id and
    the pid namespace (Linux). None where /proc does not say: no claim is then judged dead."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None
    return hashlib.sha1(f"{boot}:{namespace}".encode()).hexdigest()[:10]


MACHINE = _machine_identity()


def default_worker_id() -> str:
    """host:pid:random, and @machine where known (see `holder_is_gone`)."""
    worker = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    return f"{worker}@{MACHINE}" if MACHINE else worker


def holder_is_gone(holder: str | None) -> bool:
    """Whether a claim was made by a process of this machine that no longer exists (or is a
    zombie). False whenever in doubt: another machine, an unknown format, a live pid."""
    if not holder or MACHINE is None or "@" not in holder:
        return False
    worker, _, machine = holder.rpartition("@")
    parts = worker.split(":")
    if machine != MACHINE or len(parts) < 3:
        return False
    try:
        pid = int(parts[-2])
    except ValueError:
        return False
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists (another user's process, say)
        return False
    try:  # a killed child its parent has not reaped yet
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


@dataclass(frozen=True)
class Lease:
    """How long a claim holds before another worker may take it over."""

    ttl: timedelta
    dead_holder_grace: timedelta | None = None  # None: a dead holder's claim is waited out too

    @property
    def shortest(self) -> timedelta:
        """The age from which some claim may be stale (what a query looks for first)."""
        return self.ttl if self.dead_holder_grace is None else min(self.ttl, self.dead_holder_grace)

    def stale_after(self, holder: str | None) -> timedelta:
        """How old `holder`'s claim must be before it may be taken over."""
        if self.dead_holder_grace is not None and holder_is_gone(holder):
            return self.shortest
        return self.ttl


def backoff(attempts: int, *, first: float, cap: float) -> timedelta:
    """The wait after the `attempts`-th failed attempt: first, 2 x first, 4 x first ... at most cap."""
    return timedelta(seconds=min(first * 2 ** (attempts - 1), cap))


class RowClaims:
    """Claims on the rows of an outbox table, each decided by one atomic UPDATE: only the
    worker whose UPDATE changed the row may act on it."""

    def __init__(self, table: Table, worker_id: str, lease: Lease, *, pending: str = "pending",
                 claimed: str = "sending"):
        self.table, self.worker_id, self.lease = table, worker_id, lease
        self.pending, self.claimed = pending, claimed

    def claim(self, conn: Connection, row_id: int, now: datetime, **values) -> bool:
        """Take a due pending row."""
        t = self.table
        stmt = (update(t).where(t.c.id == row_id, t.c.status == self.pending, t.c.next_attempt_at <= now)
                .values(status=self.claimed, claimed_by=self.worker_id, claimed_at=now, **values))
        return conn.execute(stmt).rowcount == 1

    def still_stale(self, row_id: int, status: str, holder: str | None, now: datetime):
        """The row is still in the claim we saw (`status`, `holder`) and that claim is stale."""
        t = self.table
        return and_(t.c.id == row_id, t.c.status == status, t.c.claimed_by == holder,
                    t.c.claimed_at < now - self.lease.stale_after(holder))

    def take_over(self, conn: Connection, row_id: int, status: str, holder: str | None, now: datetime,
                  **values) -> bool:
        """Take a row whose claim is stale (its worker died, or is presumed dead)."""
        stmt = (update(self.table).where(self.still_stale(row_id, status, holder, now))
                .values(status=self.claimed, claimed_by=self.worker_id, claimed_at=now, **values))
        return conn.execute(stmt).rowcount == 1

    def ours(self, row_id: int, *statuses: str):
        """The row is still claimed by this worker, in one of `statuses` (default: claimed)."""
        t = self.table
        return and_(t.c.id == row_id, t.c.claimed_by == self.worker_id, t.c.status.in_(statuses or (self.claimed,)))


def take_named(conn: Connection, table: Table, name: str, holder: str, now: datetime, lease: Lease) -> bool:
    """Take or renew the named lease row (name, holder, expires_at): free when it ran out, or
    when its holder is known dead and its dead_holder_grace has passed. True if `holder` has it."""
    t = table
    conn.execute(insert_ignore(conn, t, "name"), {"name": name, "holder": holder, "expires_at": now + lease.ttl})
    current = conn.execute(select(t.c.holder).where(t.c.name == name)).scalar()
    free = [t.c.holder == holder, t.c.expires_at < now]
    if current != holder and lease.stale_after(current) < lease.ttl:
        # renewed more than stale_after ago: expires_at = renewal + ttl
        free.append(and_(t.c.holder == current, t.c.expires_at < now + lease.ttl - lease.stale_after(current)))
    conn.execute(update(t).where(t.c.name == name, or_(*free)).values(holder=holder, expires_at=now + lease.ttl))
    return conn.execute(select(t.c.holder).where(t.c.name == name)).scalar() == holder
