"""Scoring: ARR at risk x severity, the priority band, and the one-line "why"."""

from __future__ import annotations

from datetime import datetime

from ._text import plural, renews_in
from .config import Rules
from .journey import days_until
from .model import AccountFacts, Finding, Score
from .plan import RulePlan, plan_for

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
    """
    plan = plan_for(rules)
    days_past = max((now - finding.threshold_at).total_seconds() / DAY_SECONDS, 0.0)
    time_factor = min(plan.max_time_factor, 1.0 + plan.per_day_past_threshold * days_past)
    stage_weight = plan.stage_weights.get(finding.stage, 1.0)

    notes: list[str] = []  # the friction facts, for the why line
    open_tickets = sum(1 for t in facts.tickets if t.is_open) if facts.tickets else 0
    friction = 1.0 + min(plan.max_ticket_factor - 1.0, plan.per_open_ticket * open_tickets)
    if open_tickets and explain:
        notes.append(plural(open_tickets, "open ticket"))
    if facts.payment_failed_at is not None and finding.rule != "payment_failed":
        friction += plan.payment_failed_friction
        notes.append("payment failed")
    days_left = days_until(facts.renewal_date, now) if facts.renewal_date is not None else None
    if days_left is not None and 0 <= days_left <= plan.renewal_within_days and finding.rule != "renewal_risk":
        friction += plan.renewal_near_friction
        if explain:
            notes.append(renews_in(days_left))

    severity = plan.weights.get(finding.rule, 1.0) * time_factor * stage_weight * friction
    arr = facts.arr if facts.arr and facts.arr > 0 else 0.0
    value = round(arr * severity, 2)
    priority = plan.band(value)
    if not explain:
        return Score(score=value, severity=round(severity, 3), priority=priority, why="")
    why = f"{priority}: ${arr:,.0f} ARR x {severity:.1f}: {finding.detail}"
    if notes:
        why += ", " + ", ".join(notes)
    return Score(score=value, severity=round(severity, 3), priority=priority, why=why)
