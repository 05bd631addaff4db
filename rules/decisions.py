"""Decisions that last: after a person resolves an alert and says why, the same condition does
not reopen it at the next scan; a material change does.

A decision is kept per (account, rule) on the stall it closed (storage: `stall.decision_key`
while it holds). What reopens, per kind:

- "handled" / "false_positive": the same rule on the same step stays closed. It lapses (and
  the rule opens normally again) when the condition materially changes: the rule fires on
  another step (the account reached the step, then stalled on the next), or the finding
  clears (the condition went away) and so may come back later as a new stall;
- "known" (quiet until a date): nothing of the rule reopens before the date; from then on
  it may.

A different rule is never held by a decision: it opens normally. Pure: `now` is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

HANDLED = "handled"
FALSE_POSITIVE = "false_positive"
KNOWN = "known"
KINDS = (HANDLED, FALSE_POSITIVE, KNOWN)
LABELS = {HANDLED: "handled", FALSE_POSITIVE: "false positive", KNOWN: "known"}
MAX_QUIET_DAYS = 90
MAX_SNOOZE_DAYS = 30
NOTE_MAX = 300  # the note is kept in stall.resolution (500 characters) with its label


@dataclass(frozen=True)
class Decision:
    """A person's lasting decision about one rule of an account (the stall it closed)."""

    stall_id: int
    account_id: str
    rule: str
    step: str | None
    kind: str
    resolved_at: datetime
    quiet_until: datetime | None = None


@dataclass(frozen=True)
class Lapse:
    """A decision that no longer holds, and why (audited)."""

    decision: Decision
    reason: str


def held(decision: Decision, finding_step: str | None, found: bool, now: datetime) -> str | None:
    """None while `decision` still holds given this scan's finding of its rule (`found`, on
    `finding_step`); else why it lapsed."""
    if decision.kind == KNOWN:
        if decision.quiet_until is not None and now < decision.quiet_until:
            return None
        return "quiet period ended"
    if not found:
        return "condition cleared"
    if finding_step != decision.step:
        return f"now stalled on '{finding_step}'" if finding_step else "condition changed"
    return None


def apply_decisions(decisions: Sequence[Decision], findings: Sequence, live_rules: set[str],
                    now: datetime) -> tuple[list, list[Lapse]]:
    """The findings a scan may act on, and the decisions that lapse.

    `findings` are (Finding, Score) pairs; a finding of a rule whose decision holds is
    dropped (no stall opens). A decision of a rule that has a live stall again (opened
    before the decision, or by a race) no longer holds: the live stall is what counts."""
    by_rule: dict[str, Decision] = {}
    for d in sorted(decisions, key=lambda d: (d.resolved_at, d.stall_id)):
        by_rule[d.rule] = d  # the latest per rule
    found = {f.rule: f for f, _ in findings}
    lapses: list[Lapse] = []
    holding: set[str] = set()
    for rule, decision in sorted(by_rule.items()):
        if rule in live_rules:
            lapses.append(Lapse(decision, "a stall of the rule is live again"))
            continue
        finding = found.get(rule)
        why = held(decision, finding.step if finding else None, finding is not None, now)
        if why is None:
            holding.add(rule)
        else:
            lapses.append(Lapse(decision, why))
    return [(f, s) for f, s in findings if f.rule not in holding], lapses


def quiet_until(day: date) -> datetime:
    """A "known until <date>" or "snooze until <date>" ends at the start of that day, UTC."""
    return datetime.combine(day, time(0), timezone.utc)


def check_until(day: date, now: datetime, max_days: int) -> str | None:
    """Why `day` cannot end a quiet period or a snooze started `now` (None: it can): it must be
    after today and at most `max_days` ahead."""
    today = now.astimezone(timezone.utc).date()
    if day <= today:
        return "Pick a date after today."
    if day > today + timedelta(days=max_days):
        return f"Pick a date at most {max_days} days ahead."
    return None


def describe(kind: str | None, note: str | None = None, until: datetime | None = None) -> str:
    """The decision in words, e.g. "false positive — 'customer is on holiday'"."""
    label = LABELS.get(kind or "", "resolved")
    if kind == KNOWN and until is not None:
        label = f"known, quiet until {until:%Y-%m-%d}"
    return f"{label} — '{note}'" if note else label
