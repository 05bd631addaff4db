"""The scan runs the domain functions for every account: ~50,000 must take well under 2 s.

The bound asserted here is loose (shared CI machines are slow and noisy); it catches an
accidental quadratic loop or a per-call rules compilation, not a 20% regression. A wall-clock
check: in tests/proof (its own step of .ci/run), not in the default run.
"""

from __future__ import annotations

import importlib.resources
import random
import time
from datetime import datetime, timedelta, timezone

from rules.config import parse_rules
from rules.journey import compute_journey
from rules.model import AccountFacts, OpenStall, TicketFact
from rules.reconcile import reconcile
from rules.scoring import score
from rules.stalls import evaluate

UTC = timezone.utc
NOW = datetime(2025, 6, 16, 12, 0, tzinfo=UTC)
RULES = parse_rules(importlib.resources.files("rules").joinpath("default_rules.toml").read_text())
EVENTS = [s.event for s in RULES.journey.steps] + [RULES.journey.activation_event]


def population(n: int, seed: int = 7) -> list[AccountFacts]:
    rng = random.Random(seed)
    accounts = []
    for i in range(n):
        signup = NOW - timedelta(hours=rng.uniform(1, 24 * 60))
        steps = {"Signed Up": signup}
        for event in EVENTS[1:]:
            if rng.random() < 0.6:
                steps[event] = signup + timedelta(hours=rng.uniform(0, 24 * 20))
        tickets = tuple(TicketFact(f"{i}-{k}", NOW - timedelta(days=rng.uniform(0, 10)), rng.choice(["open", "closed"]),
                                   rng.choice(["billing", "login", None]), priority=rng.choice([None, "high"]))
                        for k in range(rng.choice([0, 0, 0, 1, 3])))
        accounts.append(AccountFacts(
            id=f"acc-{i}", name=f"Account {i}", arr=rng.choice([0, 2_400, 12_000, 50_000]), status="active",
            track="standard", signup_at=signup, steps=steps, tickets=tickets,
            renewal_date=(NOW + timedelta(days=rng.uniform(-10, 400))).date() if rng.random() < 0.5 else None,
            active_days_recent=rng.randint(0, 7), active_days_previous=rng.randint(0, 7),
            payment_failed_at=NOW - timedelta(days=1) if rng.random() < 0.02 else None,
        ))
    return accounts


def scan(accounts, stalls_by_account):
    changes = 0
    for facts in accounts:
        journey = compute_journey(facts.steps, RULES, first_seen_at=facts.signup_at, now=NOW,
                                  renewal_date=facts.renewal_date)
        findings = evaluate(facts, RULES, NOW, journey=journey)
        scored = [(f, score(f, facts, RULES, NOW)) for f in findings]
        changes += len(reconcile(facts.id, facts.status, stalls_by_account.get(facts.id, ()), scored, NOW))
    return changes


def test_fifty_thousand_accounts_scan_quickly():
    accounts = population(50_000)
    stalls = {a.id: (OpenStall(1, a.id, "step_stall", "Project Created", "open", 1000.0, "P3"),)
              for a in accounts[::3]}
    started = time.perf_counter()
    changes = scan(accounts, stalls)
    elapsed = time.perf_counter() - started
    assert changes > 10_000  # the population really exercises the rules
    assert elapsed < 6.0, f"scan of 50,000 accounts took {elapsed:.2f}s"
