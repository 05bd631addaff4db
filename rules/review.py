"""When an account must be looked at again if nothing new arrives.

A scan evaluates only the accounts that are due (new data, or a moment when a rule's
verdict or a stall's score can change), so a steady-state scan costs what changed, not how
many accounts there are. Everything time can change on its own is listed here; new data
makes an account due at once (ingest), and tickets and payments are evaluated as they come.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from datetime import datetime, time, timedelta, timezone

from .config import Rules
from .journey import utc_date
from .model import SUPPRESSING_STATUSES, AccountFacts, Finding, JourneyState, Score
from .plan import RulePlan, plan_for
from .reconcile import SCORE_CHANGE

UTC = timezone.utc
DAY = timedelta(days=1)
# However quiet an account, it is re-evaluated at least this often (a safety net).
MAX_WAIT_WITH_STALLS = timedelta(days=1)
MAX_WAIT = timedelta(days=7)
USAGE_SPREAD = timedelta(hours=1)


def next_review(
    facts: AccountFacts,
    journey: JourneyState,
    scored: Sequence[tuple[Finding, Score]],
    rules: Rules | RulePlan,
    now: datetime,
    *,
    snoozed_until: Iterable[datetime | None] = (),
    quiet_until: Iterable[datetime | None] = (),
) -> datetime:
    """The earliest future moment at which evaluating this account could give another answer.

    Moments with no precise time (the daily move of the usage windows, the safety net) are
    spread over a window by a stable hash of the account id, so 100,000 accounts do not all
    come due in the same scan. `quiet_until`: when people's "known" decisions end
    (rules.decisions): their rule may open again then, so the account is looked at.
    """
    plan = plan_for(rules)
    spread = (zlib.crc32(facts.id.encode()) & 0xFFFF) / 0xFFFF  # 0..1, stable per account
    best = now + (MAX_WAIT_WITH_STALLS if scored else MAX_WAIT) * (0.75 + 0.25 * spread)
    if facts.status in SUPPRESSING_STATUSES:
        return best
    # The earliest moment after `now` (any order gives the same: each candidate below is
    # kept only if it is after `now` and before the best so far).
    if journey.activated_at is None:
        # A step stall / "not activated" opens once confirmed, `confirm_hours` past its
        # threshold; a live one is judged from the threshold itself.
        for moment in (journey.stalled_at, journey.checkpoint_at,
                       _later(journey.stalled_at, plan.step_confirm),
                       _later(journey.checkpoint_at, plan.not_activated_confirm)):
            if moment is not None and now < moment < best:
                best = moment
    if facts.tickets:
        spike_window = plan.spike_window
        for t in facts.tickets:  # tickets leave the spike window
            moment = t.created_at + spike_window
            if now < moment < best:
                best = moment
    if facts.active_days_recent or facts.active_days_previous:
        moment = _midnight_after(now) + USAGE_SPREAD * spread  # the usage windows move daily
        if now < moment < best:
            best = moment
    if facts.renewal_date is not None:
        renewal = datetime.combine(facts.renewal_date, time(0), UTC)
        # Its moments: the renewal risk window opens, the Renewal stage begins, ... and ends.
        # None is before the earliest of them (a renewal months away): skipped at once.
        earliest = _shifted(renewal, -plan.renewal_lead)
        if earliest is None or earliest < best:
            for moment in (_shifted(renewal, -plan.renewal_within), _shifted(renewal, -plan.renewal_window),
                           _shifted(renewal, DAY)):
                if moment is not None and now < moment < best:
                    best = moment
    for finding, score in scored:
        moment = score_moves_at(finding, score, plan, now)
        if moment is not None and now < moment < best:
            best = moment
    for moments in (snoozed_until, quiet_until):
        for moment in moments:
            if moment is not None and now < moment < best:
                best = moment
    return best


def score_moves_at(finding: Finding, score: Score, rules: Rules | RulePlan, now: datetime) -> datetime | None:
    """When time alone moves this stall's score (computed at `now`) enough to matter: by
    SCORE_CHANGE, or into the next priority band, whichever comes first; None once the
    time factor is capped. Scoring multiplies severity by the time factor and nothing else
    in it changes with time, so the score at a later moment is score x factor(t) / factor(now).
    """
    plan = plan_for(rules)
    k = plan.per_day_past_threshold
    if k <= 0 or score.score <= 0:
        return None
    days_past = max((now - finding.threshold_at).total_seconds() / 86400.0, 0.0)
    factor = 1.0 + k * days_past
    if factor >= plan.max_time_factor:
        return None
    target = factor * (1.0 + SCORE_CHANGE)
    for floor in plan.band_floors:  # ascending: the first above is the next band up
        if floor > score.score:
            target = min(target, factor * floor / score.score)
            break
    target = min(target, plan.max_time_factor)
    return finding.threshold_at + timedelta(days=(target - 1.0) / k)


def _later(at: datetime | None, delay: timedelta) -> datetime | None:
    return None if at is None else _shifted(at, delay)


def _shifted(at: datetime, delta: timedelta) -> datetime | None:
    """`at + delta`, or None past the ends of the calendar (ingest keeps renewal dates within
    years of now, but a moment that cannot exist is simply never reached)."""
    try:
        return at + delta
    except OverflowError:
        return None


def _midnight_after(now: datetime) -> datetime:
    return datetime.combine(utc_date(now) + DAY, time(0), UTC)
