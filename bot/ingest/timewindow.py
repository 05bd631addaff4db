"""The one sane-time window every ingest source goes through.

A time far in the past or future is never true data (a year-0001 default, a year-9999
"never"), and stored as is it breaks arithmetic downstream (date overflows in the scan,
"739,953 days" in Slack, a ticket updated in 9999 that can never close). So:

- an event time (Segment `timestamp`, Stripe `created`, a ticket's `created_at` /
  `updated_at`) before EARLIEST or later than the time received is stored as the time
  received; past EARLIEST or more than CLOCK_SKEW ahead it is also reported as a tracking
  issue (a few seconds ahead is only a client clock, clamped silently);
- a renewal date (group trait, Stripe `current_period_end`, CSV) outside RENEWAL_PAST before
  to RENEWAL_AHEAD after the day received is not stored as a fact and is reported; the rest
  of the message is stored.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from bot.ingest.records import IncomingEvent

EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)
CLOCK_SKEW = timedelta(minutes=5)
RENEWAL_PAST_YEARS = 5
RENEWAL_AHEAD_YEARS = 10
# The name of the message's own time field, per source, for the tracking issue.
TIME_FIELD = {"segment": "timestamp", "stripe": "created", "tickets": "updated_at", "intercom": "updated_at"}


def renewal_window(received_at: datetime) -> tuple[date, date]:
    """The renewal dates accepted for a message received at `received_at` (inclusive)."""
    day = received_at.astimezone(timezone.utc).date()
    return _years(day, -RENEWAL_PAST_YEARS), _years(day, RENEWAL_AHEAD_YEARS)


def renewal_problem(renewal: date, received_at: datetime) -> str | None:
    """Why this renewal date is refused, or None when it is inside the window."""
    low, high = renewal_window(received_at)
    if low <= renewal <= high:
        return None
    return f"renewal_date {renewal.isoformat()} is outside {low.isoformat()} .. {high.isoformat()}"


def apply_window(event: IncomingEvent, received_at: datetime) -> IncomingEvent:
    """Clamp the event's times and drop an out-of-window renewal date, noting each in
    `event.time_issues` (the store records them as tracking issues)."""
    ticket = event.ticket
    if ticket is not None and event.occurred_at == ticket.created_at:
        field = "created_at"  # a ticket without updated_at: its time is its creation
    else:
        field = TIME_FIELD.get(event.source, "timestamp")
    event.occurred_at = _moment(event, field, event.occurred_at, received_at)
    if ticket is not None:
        ticket.created_at = _moment(event, None if field == "created_at" else "created_at",
                                    ticket.created_at, received_at)
    renewal = (event.account_traits or {}).get("renewal_date")
    if renewal is not None and (problem := renewal_problem(renewal, received_at)) is not None:
        del event.account_traits["renewal_date"]
        event.time_issues.append(("renewal_date", f"{problem}: not stored"))
    return event


def _moment(event: IncomingEvent, field: str | None, at: datetime, received_at: datetime) -> datetime:
    """`at` inside the window, else the time received; a report under `field` (None: the
    same time was reported under another name already) unless it is a small clock skew."""
    if EARLIEST <= at <= received_at:
        return at
    if field is not None and not (received_at < at <= received_at + CLOCK_SKEW):
        event.time_issues.append((field, f"{field} {at.isoformat(timespec='seconds')} is before "
                                         f"{EARLIEST.year} or in the future: stored as the time received"))
    return received_at


def _years(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)
