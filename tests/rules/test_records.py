"""The domain's records (rules.model, rules.health.Health) are NamedTuples: built in C at a
fraction of a frozen dataclass's cost (the scan builds several per account), and still
immutable, hashable and compared by value, with the documented defaults."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest

from rules.health import Health
from rules.model import AccountFacts, Finding, JourneyState, OpenStall, Score, StallChange, TicketFact

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)


def test_keywords_and_positions_build_the_same_record_with_its_defaults():
    facts = AccountFacts("a1", "Acme", 1200.0, "active", "standard", signup_at=NOW, renewal_date=date(2027, 1, 1))
    assert facts == AccountFacts(id="a1", name="Acme", arr=1200.0, status="active", track="standard", plan=None,
                                 seats=None, signup_at=NOW, renewal_date=date(2027, 1, 1))
    assert (facts.plan, facts.tickets, facts.active_days_recent, facts.active_days_previous, facts.stage) == (
        None, (), 0, 0, None)
    assert JourneyState("Onboarding", NOW, None, None, None, None, None).steps_done == 0
    assert Finding("step_stall", "Invite Sent", NOW, NOW, "3 days").stage == "Onboarding"
    assert TicketFact("t1", NOW, "open", None).priority is None
    assert OpenStall(1, "a1", "step_stall", None, "open", 1.0, "P1").snoozed_until is None
    assert StallChange("open", "a1", "step_stall").finding is None
    assert Health(100) == Health(100, ()) and Health(100).reasons == ()


def test_records_are_immutable_and_hashable_by_value():
    finding = Finding("step_stall", "Invite Sent", NOW, NOW, "3 days on 'Invite Sent'")
    assert hash(finding) == hash(Finding("step_stall", "Invite Sent", NOW, NOW, "3 days on 'Invite Sent'"))
    with pytest.raises(AttributeError):
        finding.rule = "other"  # type: ignore[misc]
    assert finding._replace(step=None).step is None and finding.step == "Invite Sent"
    with pytest.raises(TypeError):
        Score(1.0, 2.0)  # type: ignore[call-arg]
    assert repr(Score(1.0, 2.0, "P1", "")) == "Score(score=1.0, severity=2.0, priority='P1', why='')"


def test_the_default_steps_are_an_empty_mapping_no_one_can_fill():
    facts = AccountFacts("a1", "Acme", 0.0, "active", "standard")
    assert dict(facts.steps) == {}
    with pytest.raises(TypeError):
        facts.steps["Signed Up"] = NOW  # type: ignore[index]
