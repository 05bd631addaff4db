"""Reconcile: turn one account's current findings into changes to its live stalls.

Live stalls are those open or snoozed; there is at most one per (account, rule). Running
reconcile again with the same `now` after applying its changes yields no changes, so scans
can be repeated safely.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from .decisions import Decision, apply_decisions
from .model import RULE_NAMES, SUPPRESSING_STATUSES, Finding, OpenStall, Score, StallChange

LIVE = ("open", "snoozed")
# A score change smaller than this share of the old score is noise (time factors creep every
# scan); only bigger moves, or a priority change, update the stall.
SCORE_CHANGE = 0.05


def stall_open_key(account_id: str, rule: str) -> str:
    """The identity of the one live stall an account may have per rule."""
    return f"{account_id}|{rule}"


def reconcile(
    account_id: str,
    status: str,
    open_stalls: Sequence[OpenStall],
    findings: Sequence[tuple[Finding, Score]],
    now: datetime,
    decisions: Sequence[Decision] = (),
) -> list[StallChange]:
    """The changes that make the account's live stalls match its findings.

    - cancelled / churned account: every live stall is suppressed, nothing opens;
    - finding, no live stall: "open";
    - live stall, finding of the same rule and step: "update" if the priority changed or the
      score moved by more than 5%; a snoozed stall whose snooze has ended is "unsnooze"d
      instead (a snooze with no end stays snoozed); snoozed stalls are otherwise updated
      quietly like open ones, and never get a second stall opened beside them;
    - live stall, finding of the same rule on another step: the old stall "auto_resolve"s
      ("moved past ...") and a new one opens;
    - live stall, no finding of its rule: "auto_resolve";
    - a person's decision (`decisions`, rules.decisions) that still holds keeps its rule's
      finding from opening a stall; one that no longer holds "lapse"s (first, before opens).
    Changes come in RULE_NAMES order (unknown rules after, by name).
    """
    if not open_stalls and not decisions:  # most accounts on most scans
        if not findings or status in SUPPRESSING_STATUSES:
            return []
        if len(findings) == 1:  # one stall opens
            finding, scored = findings[0]
            return [_opening(account_id, finding.rule, finding, scored)]
    live = [s for s in open_stalls if s.status in LIVE]
    if status in SUPPRESSING_STATUSES:
        return [StallChange("suppress", account_id, s.rule, stall_id=s.id, reason=f"account {status}")
                for s in sorted(live, key=lambda s: (_rule_order(s.rule), s.id))]

    changes: list[StallChange] = []
    if decisions:
        findings, lapses = apply_decisions(decisions, findings, {s.rule for s in live}, now)
        changes += [
            StallChange("lapse", account_id, lapse.decision.rule, stall_id=lapse.decision.stall_id, reason=lapse.reason)
            for lapse in sorted(lapses, key=lambda lapse: _rule_order(lapse.decision.rule))]
    stall_by_rule: dict[str, OpenStall] = {}
    for stall in sorted(live, key=_stall_id) if len(live) > 1 else live:
        if stall.rule in stall_by_rule:  # should not happen; heal it rather than carry it
            kept = stall_by_rule[stall.rule]
            changes.append(StallChange("auto_resolve", account_id, stall.rule, stall_id=stall.id,
                                       reason=f"duplicate of stall {kept.id}"))
        else:
            stall_by_rule[stall.rule] = stall
    found_by_rule: dict[str, tuple[Finding, Score]] = {}
    for finding, scored in findings:
        found_by_rule.setdefault(finding.rule, (finding, scored))  # one per rule: the first

    rules = stall_by_rule.keys() | found_by_rule.keys()
    for rule in sorted(rules, key=_rule_order) if len(rules) > 1 else rules:
        stall, found = stall_by_rule.get(rule), found_by_rule.get(rule)
        if stall is None:
            finding, scored = found
            changes.append(_opening(account_id, rule, finding, scored))
        elif found is None:
            changes.append(StallChange("auto_resolve", account_id, rule, stall_id=stall.id,
                                       reason=_cleared_reason(stall)))
        elif found[0].step != stall.step:
            finding, scored = found
            changes.append(StallChange("auto_resolve", account_id, rule, stall_id=stall.id,
                                       reason=f"moved past '{stall.step}'" if stall.step else "condition changed"))
            changes.append(_opening(account_id, rule, finding, scored))
        else:
            change = _refresh(account_id, stall, *found, now)
            if change is not None:
                changes.append(change)
    return changes


def _opening(account_id: str, rule: str, finding: Finding, scored: Score) -> StallChange:
    """A stall opens (every field given by position, the cheapest call: a first scan opens
    one per stalled account)."""
    return StallChange("open", account_id, rule, None, finding, scored, None)


def _refresh(account_id: str, stall: OpenStall, finding: Finding, scored: Score, now: datetime) -> StallChange | None:
    if stall.status == "snoozed" and stall.snoozed_until is not None and stall.snoozed_until <= now:
        return StallChange("unsnooze", account_id, stall.rule, stall_id=stall.id, finding=finding,
                           score=scored, reason="snooze ended")
    if scored.priority != stall.priority:
        reason = f"priority {stall.priority} -> {scored.priority}"
    elif abs(scored.score - stall.score) > SCORE_CHANGE * abs(stall.score):
        reason = "score changed"
    else:
        return None
    return StallChange("update", account_id, stall.rule, stall_id=stall.id, finding=finding, score=scored, reason=reason)


def _stall_id(stall: OpenStall) -> int:
    return stall.id


def _cleared_reason(stall: OpenStall) -> str:
    # Why the finding vanished (step reached, activation, a late event, a disabled rule) is
    # not visible from here; say only what is certainly true.
    if stall.rule == "step_stall" and stall.step:
        return f"no longer stalled on '{stall.step}'"
    return "condition cleared"


_RULE_RANK = {rule: (n, "") for n, rule in enumerate(RULE_NAMES)}


def _rule_order(rule: str) -> tuple[int, str]:
    return _RULE_RANK.get(rule) or (len(RULE_NAMES), rule)
