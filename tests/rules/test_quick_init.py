"""rules.model.quick_init: the frozen dataclasses the scan builds per account get a faster
__init__ that must give the very same objects (fields, defaults, equality, hash, frozenness)
as the one dataclasses generates."""

from __future__ import annotations

import dataclasses
import inspect
from datetime import date, datetime, timezone

import pytest

from rules.decisions import Decision, Lapse
from rules.health import Health
from rules.model import AccountFacts, Finding, JourneyState, OpenStall, Score, StallChange, TicketFact

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
QUICK = [JourneyState, TicketFact, AccountFacts, Finding, Score, OpenStall, StallChange, Health]


def plain(cls):
    """The same class as dataclasses alone makes it (its generated __init__)."""
    fields = [(f.name, f.type, dataclasses.field(default=f.default, default_factory=f.default_factory))
              for f in dataclasses.fields(cls)]
    return dataclasses.make_dataclass(cls.__name__, fields, frozen=True)


@pytest.mark.parametrize("cls", QUICK, ids=lambda c: c.__name__)
def test_same_parameters_and_defaults(cls):
    quick = inspect.signature(cls.__init__).parameters
    reference = inspect.signature(plain(cls).__init__).parameters
    assert list(quick) == list(reference)
    for name, param in reference.items():
        if param.default is not inspect.Parameter.empty and "factory" not in repr(param.default):
            assert quick[name].default == param.default, name


def test_same_objects():
    facts = AccountFacts("a1", "Acme", 1200.0, "active", "standard", signup_at=NOW, renewal_date=date(2027, 1, 1))
    reference = plain(AccountFacts)("a1", "Acme", 1200.0, "active", "standard", signup_at=NOW,
                                    renewal_date=date(2027, 1, 1))
    assert dataclasses.astuple(facts) == dataclasses.astuple(reference)
    assert facts.steps == {} and facts.steps is not AccountFacts("b", "B", 0.0, "active", "standard").steps
    assert facts == AccountFacts(id="a1", name="Acme", arr=1200.0, status="active", track="standard", plan=None,
                                 seats=None, signup_at=NOW, renewal_date=date(2027, 1, 1))
    finding = Finding("step_stall", "Invite Sent", NOW, NOW, "3 days on 'Invite Sent'")
    assert finding.stage == "Onboarding"
    assert hash(finding) == hash(Finding("step_stall", "Invite Sent", NOW, NOW, "3 days on 'Invite Sent'"))
    assert repr(Score(1.0, 2.0, "P1", "")) == "Score(score=1.0, severity=2.0, priority='P1', why='')"
    assert Health(100) == Health(100, ()) and Health(100).reasons == ()
    assert dataclasses.replace(finding, step=None).step is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        finding.rule = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Score(1.0, 2.0)  # type: ignore[call-arg]
    # Untouched classes keep dataclasses' own __init__ (the decorator is opt-in).
    assert Decision(1, "a1", "step_stall", None, "handled", NOW) == Decision(1, "a1", "step_stall", None, "handled", NOW)
    assert Lapse(Decision(1, "a1", "step_stall", None, "handled", NOW), "why").reason == "why"
