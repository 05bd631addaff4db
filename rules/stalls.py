"""The stall rules: given one account's facts and `now`, which rules say it is stalled.

Each rule returns its verdict as a `Finding` with `stalled_since` (when the trouble began)
and `threshold_at` (when the rule's threshold was crossed: scoring grows severity from it).
Rules are pure and cheap: most accounts exit each rule on its first comparison.

Against noise (stalls that close by themselves within hours), a rule may ask more of a stall
to open than to stay open: step_stall and not_activated open only `confirm_hours` past their
threshold, and usage_drop (and renewal_risk's usage signal) opens below `ratio` but holds
until usage is back to `recover_ratio`. So evaluate takes the account's live stalls.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, time, timedelta, timezone

from ._text import duration, renews_in
from .config import Rules
from .journey import compute_journey, days_until, journey_stage, utc_date
from .model import SUPPRESSING_STATUSES, AccountFacts, Finding, JourneyState, OpenStall, TicketFact
from .plan import RulePlan, plan_for
from .wording import ago_text, escalation_text, ticket_spike_detail, usage_drop_detail, usage_drop_percent
from .reconcile import LIVE

UTC = timezone.utc
WEEK = timedelta(days=7)
# Findings of these rules put the account in the "Churn risk" stage.
CHURN_RULES = frozenset({"usage_drop", "renewal_risk", "payment_failed"})
# Helpdesk priorities that make an open ticket an escalation.
ESCALATION_PRIORITIES = frozenset({"high", "urgent"})

# (rule, step, stalled_since, threshold_at, detail): a finding before its stage is known.
_Verdict = tuple[str, "str | None", datetime, datetime, str]


def evaluate(
    facts: AccountFacts,
    rules: Rules | RulePlan,
    now: datetime,
    *,
    journey: JourneyState | None = None,
    open_stalls: Sequence[OpenStall] = (),
) -> list[Finding]:
    """Every enabled rule's finding for this account at `now`, in RULE_NAMES order.

    Cancelled or churned accounts get none (reconcile suppresses their stalls). Pass the
    `journey` if the caller has already computed it; otherwise it is derived from
    `facts.steps`, `facts.signup_at`, `facts.activated_at` and `facts.track` (its
    thresholds). The findings carry
    `facts.stage` if set; else the journey's stage, which is "Churn risk" when one of
    CHURN_RULES fires here (so the stage never lags a scan behind the findings).

    `open_stalls` are the account's stalls (those live count: open or snoozed), as reconcile
    gets them. A stall not yet live must pass its rule's confirmation to be found; a live one
    is found as long as its rule's plain condition holds (step_stall: on the same step), or
    for usage, until usage has recovered.
    """
    if facts.status in SUPPRESSING_STATUSES:
        return []
    plan = plan_for(rules)
    if journey is None:
        journey = compute_journey(facts.steps, plan, first_seen_at=facts.signup_at,
                                  activated_at_hint=facts.activated_at, track=facts.track)
    enabled = plan.enabled
    activated = journey.activated_at is not None
    if open_stalls:
        live = {(s.rule, s.step) for s in open_stalls if s.status in LIVE}
        live_rules = {rule for rule, _ in live}
    else:  # most accounts
        live = live_rules = _NONE
    verdicts: list[_Verdict] = []

    if "step_stall" in enabled and not activated:
        _add(verdicts, _step_stall(journey, plan, now, live=("step_stall", journey.waiting_step) in live))
    if "not_activated" in enabled and not activated:
        _add(verdicts, _not_activated(journey, plan, now, live="not_activated" in live_rules))
    if "ticket_spike" in enabled and facts.tickets:  # urgent by design: no confirmation
        _add(verdicts, _ticket_spike(facts.tickets, plan, now))
    if "usage_drop" in enabled and activated and _usage_down(facts, plan, live="usage_drop" in live_rules):
        since = now - WEEK  # usage is counted per week: the trouble dates from the weak week's start
        detail = usage_drop_detail(facts.active_days_recent, facts.active_days_previous, since)
        verdicts.append(("usage_drop", None, since, since, detail))
    renewal_date = facts.renewal_date  # most renewals are not within the window: no call
    if ("renewal_risk" in enabled and renewal_date is not None
            and 0 <= (renewal_date - utc_date(now)).days <= plan.renewal_within_days):
        _add(verdicts, _renewal_risk(facts, plan, now, live="renewal_risk" in live_rules))
    if "payment_failed" in enabled and facts.payment_failed_at is not None:
        failed_at = facts.payment_failed_at
        verdicts.append(("payment_failed", None, failed_at, failed_at, f"payment failed {ago_text(now - failed_at)}"))

    if not verdicts:
        return []
    stage = facts.stage or journey_stage(
        plan,
        activated=activated,
        all_steps_done=journey.steps_done == len(plan.step_events),
        renewal_date=facts.renewal_date,
        now=now,
        churn_risk=any(v[0] in CHURN_RULES for v in verdicts),
    )
    return [Finding(rule, step, since, threshold, detail, stage) for rule, step, since, threshold, detail in verdicts]


_NONE: frozenset = frozenset()


def _add(verdicts: list[_Verdict], verdict: _Verdict | None) -> None:
    if verdict is not None:
        verdicts.append(verdict)


def _step_stall(journey: JourneyState, plan: RulePlan, now: datetime, *, live: bool = False) -> _Verdict | None:
    # Waiting on activation itself (all steps done) has no stalled_at: not_activated covers it.
    step = journey.waiting_step
    if step not in plan.step_index or journey.stalled_at is None:
        return None
    if now < journey.stalled_at + (timedelta(0) if live else plan.step_confirm):
        return None
    since = journey.waiting_since
    detail = f"{duration(now - since)} on '{plan.step_labels[step]}'"
    return ("step_stall", step, since, journey.stalled_at, detail)


def _not_activated(journey: JourneyState, plan: RulePlan, now: datetime, *, live: bool = False) -> _Verdict | None:
    if journey.checkpoint_at is None:
        return None
    if now < journey.checkpoint_at + (timedelta(0) if live else plan.not_activated_confirm):
        return None
    signup = journey.signup_at
    return ("not_activated", None, signup, journey.checkpoint_at,
            f"not activated {duration(now - signup)} after signup")


def _ticket_spike(tickets: Sequence[TicketFact], plan: RulePlan, now: datetime) -> _Verdict | None:
    """`min_tickets` tickets created in the window, `min_same_topic` of them on one topic.

    The spike dates from the ticket that completed it: walking the window's tickets oldest
    first, the first one at which both counts are met. Every earlier ticket of the window is
    within `window_days` of it, so the condition really held from that moment on.
    """
    start = now - plan.spike_window
    recent = [t for t in tickets if start <= t.created_at <= now]
    if len(recent) < plan.spike_min_tickets:
        return None
    recent.sort(key=lambda t: (t.created_at, t.id))
    counts: dict[str, int] = {}
    labels: dict[str, str] = {}  # topic key -> its spelling on the earliest ticket
    firsts: dict[str, datetime] = {}  # topic key -> its earliest ticket in the window
    top = 0
    spike_at = None
    for n, ticket in enumerate(recent, 1):
        label = (ticket.topic or "").strip()
        key = label.casefold()
        if key:
            counts[key] = counts.get(key, 0) + 1
            labels.setdefault(key, label)
            firsts.setdefault(key, ticket.created_at)
            top = max(top, counts[key])
        if spike_at is None and n >= plan.spike_min_tickets and top >= plan.spike_min_same_topic:
            spike_at = ticket.created_at
    if spike_at is None:
        return None
    if not counts:  # min_same_topic 0: a spike without a topic
        detail = ticket_spike_detail(len(recent), "", recent[0].created_at, len(recent), plan.spike_window_days)
    else:
        topic = min(counts, key=lambda k: (-counts[k], k))  # most tickets; ties by name, for stability
        detail = ticket_spike_detail(counts[topic], labels[topic], firsts[topic], len(recent),
                                     plan.spike_window_days)
    return ("ticket_spike", None, spike_at, spike_at, detail)


def _usage_down(facts: AccountFacts, plan: RulePlan, *, live: bool = False) -> bool:
    """Usage fell below `ratio` of the week before (from enough activity to judge); for a
    `live` stall, usage is still below `recover_ratio` of the week before. A week with no
    activity at all after an active one stays "down"; two empty weeks have nothing left to
    compare, and clear it."""
    previous, recent = facts.active_days_previous, facts.active_days_recent
    if live:
        return recent < plan.usage_recover_ratio * previous
    return previous >= plan.usage_min_previous and recent < plan.usage_ratio * previous


def _renewal_risk(facts: AccountFacts, plan: RulePlan, now: datetime, *, live: bool = False) -> _Verdict | None:
    """Renewal within `within_days` (not past) with an open escalation or a usage drop.

    The usage-drop signal does not need the usage_drop rule to be enabled, nor activation:
    falling usage before a renewal is a risk either way. It has usage_drop's hysteresis: a
    `live` renewal risk holds until usage recovers.
    """
    days_left = days_until(facts.renewal_date, now)
    if days_left is None or not 0 <= days_left <= plan.renewal_within_days:
        return None
    escalations = _open_escalations(facts.tickets)
    usage_down = _usage_down(facts, plan, live=live)
    if not escalations and not usage_down:
        return None
    # The days are recounted at render time (wording.reason_text); the rest is stored as is.
    reasons = [renews_in(days_left)]
    if usage_down:
        reasons.append(f"usage down {usage_drop_percent(facts.active_days_recent, facts.active_days_previous)}%")
    reasons.extend(escalations)
    window_start = datetime.combine(facts.renewal_date, time(0), UTC) - timedelta(days=plan.renewal_within_days)
    return ("renewal_risk", None, window_start, window_start, ", ".join(reasons))


def _open_escalations(tickets: Sequence[TicketFact]) -> list[str]:
    """The open high/urgent tickets, counted by priority: ["1 urgent ticket", "2 high-priority tickets"]."""
    found = [p for p in ((t.priority or "").strip().casefold() for t in tickets if t.is_open)
             if p in ESCALATION_PRIORITIES]
    return escalation_text(found.count("urgent"), found.count("high"))
