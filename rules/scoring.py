"""Scoring: ARR at risk x severity, the priority band, and the one-line "why" (in words: rules/wording.py)."""

from __future__ import annotations

from datetime import datetime

from .config import Rules
from .journey import utc_date
from .model import AccountFacts, Finding, Score
from .plan import RulePlan, plan_for
from .wording import priority_reason

DAY_SECONDS = 86400.0


def score(finding: Finding, facts: AccountFacts, rules: Rules | RulePlan, now: datetime, *,
          explain: bool = True) -> Score:
    """Score one finding (with `explain=False`, without the "why" line: a scan scores every
    stalled account but needs the words only for the stalls it opens or changes).

    severity = rule weight x time factor x stage weight x friction, where
    - time factor = 1 + per_day_past_threshold x (fractional) days past `threshold_at`,
      capped at max_time_factor: a stall matters more the longer it is ignored;
    - stage weight comes from scoring.stage_weights[finding.stage];
    - friction = 1 + open tickets (per_open_ticket each, adding at most max_ticket_factor-1)
      + payment_failed if a payment failed + renewal_near if the renewal is within the
      renewal_risk window; a rule's own signal is not counted twice (the payment_failed rule
      gets no payment friction, renewal_risk no renewal friction).
    score = ARR x severity (rounded to cents), priority = the band the score falls in.
    The why line is the finding's detail, then the priority in words (`priority_reason`):
    "3 days on 'Connect integration' · P0 because $50K ARR, 1 day past the 48 h threshold,
    2 open tickets".
    """
    plan = plan_for(rules)
    days_past = max((now - finding.threshold_at).total_seconds() / DAY_SECONDS, 0.0)
    time_factor = min(plan.max_time_factor, 1.0 + plan.per_day_past_threshold * days_past)
    stage_weight = plan.stage_weights.get(finding.stage, 1.0)

    open_tickets = sum(1 for t in facts.tickets if t.is_open) if facts.tickets else 0
    friction = 1.0 + min(plan.max_ticket_factor - 1.0, plan.per_open_ticket * open_tickets)
    if facts.payment_failed_at is not None and finding.rule != "payment_failed":
        friction += plan.payment_failed_friction
    renewal_date = facts.renewal_date
    if (renewal_date is not None and finding.rule != "renewal_risk"
            and 0 <= (renewal_date - utc_date(now)).days <= plan.renewal_within_days):
        friction += plan.renewal_near_friction

    severity = plan.weights.get(finding.rule, 1.0) * time_factor * stage_weight * friction
    arr = facts.arr if facts.arr and facts.arr > 0 else 0.0
    value = round(arr * severity, 2)
    priority = plan.band(value)
    if not explain:
        return Score(value, round(severity, 3), priority, "")
    # The finding's own detail (written at this `now`, with absolute dates), not
    # wording.reason_text: a stored "since Tuesday" would turn false next week.
    because = priority_reason(
        priority, arr=arr, rule=finding.rule, now=now, threshold_at=finding.threshold_at,
        stalled_since=finding.stalled_since, open_tickets=open_tickets, renewal_date=facts.renewal_date,
        renewal_within_days=plan.renewal_within_days, payment_failed=facts.payment_failed_at is not None,
    )
    why = f"{finding.detail} · {because}" if finding.detail else because
    return Score(value, round(severity, 3), priority, why)
