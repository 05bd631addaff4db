"""How `stallwatch serve` runs uvicorn: every limit chosen, none left to a default.

What a client can hold, and for how long:
- open files: the soft limit is raised to the hard one at start. Each connection is a file;
  at the usual soft limit of 1,024, about a thousand idle connections exhaust it and the
  server stops accepting anyone (health checks included).
- connections: at most MAX_CONNECTIONS at once (fewer when the open-file limit is lower);
  past it uvicorn answers 503 at once instead of queueing.
- request headers: complete within HEADER_TIMEOUT_SECONDS of the connection opening, or of
  the previous response on a kept-alive connection, else the connection is closed. uvicorn
  (0.55) has no such timeout: a connection that never sends a byte is never closed, and its
  keep-alive timer restarts on every byte, so a client dripping a header lives forever.
- header size: h11 (not httptools, which accepts headers of any size: 20 MB were taken in a
  test), buffering at most MAX_HEADER_BYTES of an incomplete request head (so a head is
  bounded by that plus one socket read, at most 256 KB), else a 400.
- idle keep-alive: KEEP_ALIVE_SECONDS after a response.
- bodies: each route reads at most its own limit (bot.ingest.routes.read_body).
"""

from __future__ import annotations

import gc
import logging
import resource

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

HEADER_TIMEOUT_SECONDS = 10.0  # Slack, Segment, Stripe and helpdesks send a header at once
KEEP_ALIVE_SECONDS = 5
MAX_CONNECTIONS = 2000
MAX_HEADER_BYTES = 16 * 1024  # h11's own default, set on purpose; Slack's headers are ~1 KB
BACKLOG = 2048
FILES_SPARE = 200  # files kept for the database pool, logs, the Slack client, the outbox


def raise_open_file_limit() -> int:
    """Raise the soft limit on open files to the hard limit; returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 20
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)  # the kernel caps "unlimited"
    if soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %s to %s: %s", soft, wanted, exc)
    return soft


GC_YOUNG_THRESHOLD = 20_000  # allocations between young collections (Python's default: 700)


def tune_gc() -> None:
    """Cheaper cyclic garbage collection for the serving process, called once it is built.

    Everything made at start (modules, the app, the rules, SQLAlchemy's metadata: ~150,000
    objects) lives as long as the process, yet each full collection walked it again: under
    ingest load one ran every few seconds (in-flight batches promoted to the old generation
    count towards the next one) at ~70 ms each, ~10% of the server's CPU. `gc.freeze()` moves
    them out of the collector's sight; a larger young threshold lets most of a request's
    objects die by reference counting before a collection sees them. Cyclic garbage is still
    collected, only less often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def uvicorn_options(open_files: int, *, header_timeout: float = HEADER_TIMEOUT_SECONDS) -> dict:
    """uvicorn.run / uvicorn.Config keyword arguments for these limits."""
    connections = max(100, min(MAX_CONNECTIONS, open_files - FILES_SPARE))
    return {
        "http": header_deadline_protocol(header_timeout),
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
        "limit_concurrency": connections,
        "backlog": BACKLOG,
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
    }


def header_deadline_protocol(seconds: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol, closing a connection whose request line and headers are not
    complete `seconds` after it opened or after its previous response."""

    class HeaderDeadlineProtocol(H11Protocol):
        header_timeout = seconds
        _responses = 0
        _deadline = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            self._responses += 1
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = self.loop.call_later(seconds, self._expire, self._responses)

        def _expire(self, responses: int) -> None:
            # Still waiting for the same request's headers (h11: the client is IDLE or has
            # sent part of a request line; once a Request is parsed it is SEND_BODY or DONE).
            if responses == self._responses and self.conn.their_state is h11.IDLE \
                    and not self.transport.is_closing():
                self.transport.close()

    return HeaderDeadlineProtocol
