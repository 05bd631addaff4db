"""rules.review.next_review at the edges of what ingestion accepts."""

from datetime import date, datetime, timedelta, timezone
import importlib.resources

from hypothesis import given, strategies as st

from rules.config import parse_rules
from rules.journey import compute_journey
from rules.model import AccountFacts
from rules.review import next_review
from rules.scoring import score
from rules.stalls import evaluate

UTC = timezone.utc
NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)
RULES = parse_rules(importlib.resources.files("rules").joinpath("default_rules.toml").read_text())


@given(renewal=st.dates(min_value=date(1900, 1, 1), max_value=date.max))
def test_any_renewal_date_gives_a_review_moment(renewal):
    """A renewal date of 9999-12-31 (accepted by the Segment parser) once overflowed and made
    every scan fail; any date must give a moment after now."""
    facts = AccountFacts(id="acc", name="Acme", arr=50_000, status="active", track="standard",
                         steps={"Signed Up": NOW - timedelta(days=90), "Report Shared": NOW - timedelta(days=80)},
                         renewal_date=renewal, active_days_recent=1, active_days_previous=5)
    journey = compute_journey(facts.steps, RULES)
    findings = evaluate(facts, RULES, NOW)
    scored = [(f, score(f, facts, RULES, NOW)) for f in findings]
    assert next_review(facts, journey, scored, RULES, NOW) > NOW
