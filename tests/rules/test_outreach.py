"""rules.outreach: recipient choice, the send checks, the follow-up after recovery emails."""

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, strategies as st

from rules.config import Outreach
from rules.outreach import (ContactFact, SendContext, address_problem, first_name, followup, pick_recipient,
                            recipient_problem, send_blocker)

UTC = timezone.utc
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
OUT = Outreach()  # 2 attempts, recheck 3 days, 7 days between emails


def ctx(**kw) -> SendContext:
    base = dict(recipient="ana@acme.com", recipient_unsubscribed=False, lifecycle="trialing", stall_status="open",
                stall_step="Integration Connected", draft_step="Integration Connected", attempts=0, draft_attempt=1)
    return SendContext(**{**base, **kw})


# --- recipient ---------------------------------------------------------------------------------

def test_most_recently_active_usable_contact_wins():
    contacts = [
        ContactFact("u1", "founder@acme.com", created_at=NOW - timedelta(days=30), last_seen_at=NOW - timedelta(days=20)),
        ContactFact("u2", "ana@acme.com", created_at=NOW - timedelta(days=10), last_seen_at=NOW - timedelta(days=1)),
        ContactFact("u3", "gone@acme.com", unsubscribed=True, last_seen_at=NOW),
        ContactFact("u4", None, last_seen_at=NOW),
        ContactFact("u5", "jane@ourco.com", last_seen_at=NOW),  # our own CSM added to the account
    ]
    assert pick_recipient(contacts, owner_email="csm@ourco.com").id == "u2"


def test_never_seen_contacts_fall_back_to_the_first_created():
    contacts = [ContactFact("b", "b@acme.com", created_at=NOW), ContactFact("a", "a@acme.com", created_at=NOW - timedelta(days=2))]
    assert pick_recipient(contacts).id == "a"


def test_nobody_usable():
    assert pick_recipient([ContactFact("u", "x@acme.com", unsubscribed=True), ContactFact("v", "no-at-sign")]) is None
    assert pick_recipient([]) is None


def test_first_name():
    assert first_name(ContactFact("u", "a@b.c", first_name=" Ana ")) == "Ana"
    assert first_name(ContactFact("u", "a@b.c", name="Ana María López")) == "Ana"
    assert first_name(ContactFact("u", "a@b.c")) is None
    assert first_name(None) is None


@given(st.lists(st.builds(ContactFact, id=st.text(max_size=5), email=st.one_of(st.none(), st.emails()),
                          unsubscribed=st.booleans(),
                          last_seen_at=st.one_of(st.none(), st.datetimes(timezones=st.just(UTC))),
                          created_at=st.one_of(st.none(), st.datetimes(timezones=st.just(UTC)))), max_size=6))
def test_pick_recipient_only_ever_picks_someone_who_may_get_email(contacts):
    chosen = pick_recipient(contacts)
    if chosen is None:
        assert not any(c.email and "@" in c.email and not c.unsubscribed for c in contacts)
    else:
        assert chosen.email and not chosen.unsubscribed and chosen in contacts


# --- send checks ---------------------------------------------------------------------------------

def test_a_fresh_relevant_draft_may_go():
    assert send_blocker(ctx(), NOW, OUT) is None


@pytest.mark.parametrize("change, code, words", [
    (dict(recipient=None), "no_recipient", "no recipient"),
    (dict(recipient="ana@acme.com, evil@evil.example"), "bad_recipient", "not one plain email address"),
    (dict(recipient="ana@acme.com\r\nBcc: evil@evil.example"), "bad_recipient", "not one plain email address"),
    (dict(lifecycle="cancelled"), "lifecycle", "cancelled"),
    (dict(lifecycle="churned"), "lifecycle", "churned"),
    (dict(lifecycle="past_due"), "lifecycle", "past due"),
    (dict(recipient_unsubscribed=True), "unsubscribed", "unsubscribed"),
    (dict(stall_status="auto_resolved", stall_resolution="Integration Connected done"), "not_relevant",
     "no longer open (Integration Connected done)"),
    (dict(stall_step="Invite Sent"), "not_relevant", "moved on from 'Integration Connected' to 'Invite Sent'"),
    (dict(attempts=1, draft_attempt=1), "duplicate", "already went out"),
    (dict(attempts=2, draft_attempt=3), "attempts", "win-back"),
    (dict(last_email_to_recipient_at=NOW - timedelta(days=2)), "too_soon", "next one may go from 2026-11-27"),
])
def test_each_check_blocks_with_its_reason(change, code, words):
    blocked = send_blocker(ctx(**change), NOW, OUT)
    assert blocked is not None and blocked.code == code and words in blocked.reason


def test_the_frequency_window_ends():
    assert send_blocker(ctx(last_email_to_recipient_at=NOW - timedelta(days=7)), NOW, OUT) is None
    assert send_blocker(ctx(last_email_to_recipient_at=NOW - timedelta(days=1)), NOW,
                        Outreach(min_days_between_emails=0)) is None


def test_a_snoozed_stall_is_still_relevant():
    assert send_blocker(ctx(stall_status="snoozed"), NOW, OUT) is None


def test_customer_state_is_reported_before_our_pacing():
    blocked = send_blocker(ctx(lifecycle="churned", last_email_to_recipient_at=NOW), NOW, OUT)
    assert blocked.code == "lifecycle"


# --- follow-up ---------------------------------------------------------------------------------

def fu(**kw):
    base = dict(stall_status="open", attempts=1, last_recovery_at=NOW - timedelta(days=3), handled_attempt=0,
                now=NOW, outreach=OUT)
    return followup(**{**base, **kw})


def test_followup_waits_for_the_recheck_period():
    f = fu(last_recovery_at=NOW - timedelta(days=1))
    assert f.kind == "wait" and f.due_at == NOW + timedelta(days=2)


def test_still_stalled_after_the_first_email_alerts_again_as_attempt_two():
    assert fu() == fu().__class__("realert", attempt=2)


def test_after_the_last_attempt_it_is_a_win_back():
    f = fu(attempts=2, handled_attempt=1)
    assert f.kind == "winback" and f.attempt == 2


@pytest.mark.parametrize("change", [dict(handled_attempt=1), dict(stall_status="resolved"), dict(attempts=0),
                                    dict(last_recovery_at=None), dict(attempts=2, handled_attempt=10**6)])
def test_nothing_to_do(change):
    assert fu(**change).kind == "none"


# --- who an email may go to (issue 10) -------------------------------------------------------------

@pytest.mark.parametrize("value, says", [
    ("", "Enter the email address"),
    ("a@x.com, b@y.com", "One recipient only"),
    ("a@x.com;b@y.com", "One recipient only"),
    ("Bob <b@x.com>", "without a name"),
    ("<b@x.com>", "without a name"),
    ("b@x.com (Bob)", "without a name"),
    ("b@x.com\r\nBcc: e@evil.example", "one line"),
    ("b@x.com\nSubject: hi", "one line"),
    ("b@x.com\x00", "one line"),
    ("b @x.com", "no spaces"),
    ("b@x", "not a valid email address"),
    ("b@@x.com", "not a valid email address"),
    ("a..b@x.com", "not a valid email address"),
    ("b@-x.com", "not a valid email address"),
    ("b" * 250 + "@x.com", "not a valid email address"),
])
def test_a_recipient_must_be_one_plain_address(value, says):
    assert says in address_problem(value)


@pytest.mark.parametrize("value", ["ana@acme.com", "Ana.Smith+cs@acme.co.uk", "josé@exämple.de", "o'neil@x.io"])
def test_plain_addresses_pass(value):
    assert address_problem(value) is None


def test_an_unknown_address_needs_confirmation():
    assert "not a contact of this account" in recipient_problem("new@acme.com", known=False, confirmed_new=False)
    assert recipient_problem("new@acme.com", known=False, confirmed_new=True) is None
    assert recipient_problem("ana@acme.com", known=True, confirmed_new=False) is None
    # Confirmation never makes a malformed address acceptable.
    assert "One recipient only" in recipient_problem("a@x.com,b@y.com", known=False, confirmed_new=True)


@given(st.text(max_size=60))
def test_an_accepted_address_can_carry_no_second_recipient_or_header(value):
    if address_problem(value) is None:
        address = value.strip()
        assert address.count("@") == 1
        assert not any(c in address for c in ",;<>\"()\r\n\t ")
