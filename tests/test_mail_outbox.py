"""The mail outbox (bot.mail) against a real SMTP server on loopback (aiosmtpd, tests/fakes/smtp.py),
on SQLite and PostgreSQL: nothing without approval, exactly the approved text, exactly once
under double clicks, racing senders, retries and dead workers, and every send check blocking
with its reason before anything reaches the server."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import unicodedata
from datetime import timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings as hyp_settings, strategies as st
from prometheus_client import REGISTRY
from sqlalchemy import select, update

from bot.ingest.records import IncomingEvent
from bot.mail.outbox import (
    LOST_ANSWER_REASON,
    UNKNOWN_REASON,
    MailOutcome,
    MailSender,
    enqueue_mail,
    mail_configured,
    new_message_id,
)
from bot.mail.smtp import SmtpConfig, build_message, parse_mail_from, parse_smtp_url
from bot.scan import scan
from storage.db import read_tx, utcnow, write_tx
from storage.models import AuditEntry, Draft, MailOutbox, Stall
from tests.fakes.smtp import FakeSMTP, closed_port
from tests.fuzz import examples

from factories import HOUR, INTEGRATION, PROJECT, T0, live_stalls, signup, store, stripe, track

pytest_plugins = ["tests.fakes.fixtures"]

MAIL = MailOutbox.__table__
DRAFT = Draft.__table__
STALL = Stall.__table__
AUDIT = AuditEntry.__table__

MAIL_FROM = "Acme Customer Success <success@acme.test>"
CSM = "U0CSM"
SUBJECT = "Getting your first project going"
BODY = "Hi Ana,\n\nI saw you signed up last week. Want a hand creating your first project?\n\nBest,\nSam\n"
ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- fixtures


class Clock:
    """A sender clock the test moves, so backoffs and leases take no real time. It starts a
    second ahead of the real clock, so rows enqueued during setup are due."""

    def __init__(self):
        self.now = utcnow() + timedelta(seconds=1)

    def __call__(self):
        return self.now

    def advance(self, **kwargs) -> None:
        self.now += timedelta(**kwargs)


def mail_settings_for(settings, server: FakeSMTP | None, **update):
    values = {"smtp_url": server.url if server else None, "mail_from": MAIL_FROM, **update}
    return settings.model_copy(update=values)


@pytest.fixture
def mail_settings(settings, smtp_server):
    return mail_settings_for(settings, smtp_server)


@pytest.fixture
def outcomes():
    return []


@pytest.fixture
def make_sender(engine, mail_settings, rules, outcomes):
    """MailSenders whose outcome hook records each outcome together with what the hook saw
    of the draft inside the sender's transaction."""

    def hook(conn, outcome: MailOutcome) -> None:
        draft = conn.execute(select(DRAFT.c.status, DRAFT.c.blocked_reason).where(DRAFT.c.id == outcome.draft_id)).one()
        outcomes.append((outcome, draft.status, draft.blocked_reason))

    def make(worker_id: str = "w1", *, clock=utcnow, settings=None, rules_=None, server: FakeSMTP | None = None,
             **kwargs) -> MailSender:
        return MailSender(engine, settings or mail_settings, rules_ or rules, on_outcome=hook, worker_id=worker_id,
                          clock=clock, ssl_context=server.client_context() if server else None, **kwargs)

    return make


def identify(account: str, email: str, at, *, user: str | None = None, unsubscribed: bool | None = None,
             first_name: str = "Ana") -> IncomingEvent:
    traits = {"email": email, "first_name": first_name}
    if unsubscribed is not None:
        traits["unsubscribed"] = unsubscribed
    return IncomingEvent(source="segment", message_id=f"idf-{account}-{email}-{at.isoformat()}-{unsubscribed}",
                         kind="identify", name=None, occurred_at=at, account_id=account,
                         contact_id=user or f"{account}-user", contact_traits=traits)


def world(engine, rules, contacts: dict[str, str]) -> dict[str, int]:
    """Accounts (id -> their contact's email) that signed up at T0 and stalled on 'Create a
    project' (real ingestion and scan). Returns account id -> stall id."""
    events = []
    for account, email in contacts.items():
        events += signup(account, T0, arr=12000)
        events.append(identify(account, email, T0))
    store(engine, rules, events, now=T0)
    scan(engine, rules, T0 + 55 * HOUR)
    return {s.account_id: s.id for s in live_stalls(engine)}


@pytest.fixture
def acme(engine, rules) -> int:
    """The stall of account 'acme', whose contact is ana@customer.test."""
    return world(engine, rules, {"acme": "ana@customer.test"})["acme"]


def approve(engine, stall_id: int, *, recipient: str = "ana@customer.test", subject: str = SUBJECT,
            body: str = BODY, by: str = CSM, attempt: int | None = None, status: str = "approved",
            enqueue: bool = True) -> int:
    """A Draft approved by `by`, enqueued in the same transaction (what bot.stalls.drafts.approve does)."""
    now = utcnow()
    with write_tx(engine) as conn:
        stall = conn.execute(select(STALL).where(STALL.c.id == stall_id)).one()
        draft_id = conn.execute(DRAFT.insert().values(
            stall_id=stall_id, account_id=stall.account_id, recipient=recipient, subject=subject, body=body,
            generated_subject=subject, generated_body=body, source="template", rule=stall.rule, step=stall.step,
            attempt=attempt or stall.recovery_attempts + 1, status=status, created_by=by,
            approved_by=by if status == "approved" else None, approved_at=now if status == "approved" else None,
            created_at=now, updated_at=now,
        ).returning(DRAFT.c.id)).scalar_one()
        if enqueue:
            assert enqueue_mail(conn, draft_id=draft_id, recipient=recipient, subject=subject, body=body, now=now,
                                mail_from=MAIL_FROM)
    return draft_id


def row_of(engine, draft_id: int):
    with read_tx(engine) as conn:
        return conn.execute(select(MAIL).where(MAIL.c.draft_id == draft_id)).one()


def draft_of(engine, draft_id: int):
    with read_tx(engine) as conn:
        return conn.execute(select(DRAFT).where(DRAFT.c.id == draft_id)).one()


def stall_of(engine, stall_id: int):
    with read_tx(engine) as conn:
        return conn.execute(select(STALL).where(STALL.c.id == stall_id)).one()


def audit_of(engine, action: str) -> list:
    with read_tx(engine) as conn:
        return list(conn.execute(select(AUDIT).where(AUDIT.c.action == action).order_by(AUDIT.c.id)))


def canonical(body: str) -> str:
    """What a plain-text MIME body carries: the lines of `body`, each ending in a line break."""
    return "".join(line.decode() + "\n" for line in body.encode().splitlines())


def aware(value):
    from datetime import timezone

    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def counter(outcome: str) -> float:
    return REGISTRY.get_sample_value("stallwatch_mail_outbox_total", {"outcome": outcome}) or 0.0


def assert_blocked(engine, draft_id: int, outcomes, smtp_server, *, code: str, reason_has: str) -> str:
    """Blocked with the reason everywhere it should be, and nothing reached the SMTP server."""
    row = row_of(engine, draft_id)
    draft = draft_of(engine, draft_id)
    assert row.status == "blocked"
    assert draft.status == "blocked"
    assert reason_has in draft.blocked_reason
    assert row.error == draft.blocked_reason
    [entry] = [a for a in audit_of(engine, "mail.blocked") if a.detail["draft_id"] == draft_id]
    assert (entry.actor, entry.stall_id, entry.detail["code"], entry.detail["reason"]) == \
        ("system", draft.stall_id, code, draft.blocked_reason)
    [(outcome, seen_status, seen_reason)] = [o for o in outcomes if o[0].draft_id == draft_id]
    assert (outcome.status, outcome.code, outcome.reason, outcome.approved_by, outcome.stall_id) == \
        ("blocked", code, draft.blocked_reason, CSM, draft.stall_id)
    assert (seen_status, seen_reason) == ("blocked", draft.blocked_reason)  # the hook runs in the transaction
    assert smtp_server.messages == [] and smtp_server.hellos == 0  # nobody even connected
    return draft.blocked_reason


# ----------------------------------------------------------------------------- approval and content


def test_nothing_is_sent_without_approval(engine, acme, make_sender, smtp_server, outcomes):
    approve(engine, acme, status="drafted", enqueue=False)
    sender = make_sender()
    assert sender.run_once() == 0
    with read_tx(engine) as conn:
        assert conn.execute(select(MAIL)).all() == []
    assert smtp_server.messages == [] and smtp_server.hellos == 0

    # A row whose draft is not approved (it cannot be made by the approval flow) is held too.
    draft_id = approve(engine, acme, status="drafted", enqueue=False)
    with write_tx(engine) as conn:
        enqueue_mail(conn, draft_id=draft_id, recipient="ana@customer.test", subject=SUBJECT, body=BODY,
                     now=utcnow(), mail_from=MAIL_FROM)
    assert sender.run_once() == 1
    assert row_of(engine, draft_id).status == "blocked"
    assert row_of(engine, draft_id).error == "the draft is drafted, not approved"
    assert draft_of(engine, draft_id).status == "drafted"  # not ours to change
    assert smtp_server.messages == [] and smtp_server.hellos == 0


def test_sends_exactly_the_approved_email(engine, acme, make_sender, smtp_server, outcomes):
    subject = "Héllo wörld — your first project 🚀 " * 6 + "ça va?"  # folds over several encoded words
    body = ("Bonjour Ana,\n\nÇa fait une semaine — 你好 — and here is a very long line: " + "ünïcödé " * 200 + "\n"
            ".\n..a line starting with dots\nFrom the team\ntrailing spaces   \n\tand a tab\n\n"
            + "x" * 1500 + "\nBest,\nSam")
    draft_id = approve(engine, acme, subject=subject, body=body)
    queued = row_of(engine, draft_id)
    assert re.fullmatch(rf"<stallwatch\.draft-{draft_id}\.[0-9a-f]{{16}}@acme\.test>", queued.message_id)

    sent_before = counter("sent")
    assert make_sender().run_once() == 1

    [received] = smtp_server.messages
    assert received.mail_from == "success@acme.test"
    assert received.rcpt_tos == ["ana@customer.test"]
    message = received.message
    assert message["Subject"] == subject
    assert message["From"] == MAIL_FROM
    assert message["To"] == "ana@customer.test"
    assert message["Message-ID"] == queued.message_id
    assert message["X-Stallwatch-Draft"] == str(draft_id)
    assert message.get_content_type() == "text/plain"
    assert message.get_content_charset() == "utf-8"
    assert message["Auto-Submitted"] is None  # a person approved it
    assert received.text.replace("\r\n", "\n") == canonical(body)
    assert received.data.isascii()  # 7-bit clean: any relay takes it
    assert max(len(line) for line in received.data.split(b"\r\n")) <= 998

    row = row_of(engine, draft_id)
    assert (row.status, row.attempts, row.error) == ("sent", 1, None)
    sent_at = aware(row.sent_at)
    assert abs((parsedate_to_datetime(message["Date"]) - sent_at).total_seconds()) < 5
    draft = draft_of(engine, draft_id)
    assert (draft.status, aware(draft.sent_at), draft.blocked_reason) == ("sent", sent_at, None)
    stall = stall_of(engine, acme)
    assert (stall.recovery_attempts, aware(stall.last_recovery_at)) == (1, sent_at)

    [entry] = audit_of(engine, "mail.sent")
    assert (entry.actor, entry.stall_id, entry.account_id) == (CSM, acme, "acme")
    assert entry.detail["subject"] == subject and entry.detail["body"] == body  # exactly what was sent
    assert (entry.detail["recipient"], entry.detail["message_id"], entry.detail["draft_id"]) == \
        ("ana@customer.test", queued.message_id, draft_id)
    assert entry.detail["sent_at"] == sent_at.isoformat()
    assert entry.detail["smtp_reply"].startswith("250 2.0.0 Ok: queued as FAKE1")

    [(outcome, seen_status, _)] = outcomes
    assert outcome == MailOutcome(draft_id=draft_id, stall_id=acme, status="sent", reason=None, sent_at=sent_at,
                                  approved_by=CSM, recipient="ana@customer.test")
    assert seen_status == "sent"
    assert counter("sent") == sent_before + 1

    assert make_sender().run_once() == 0  # and never again
    assert len(smtp_server.messages) == 1


@pytest.mark.parametrize("subject", [
    " leading space and  double  spaces ",
    "x" * 120,  # one long word
    "=?utf-8?q?looks_encoded?= but is not",
    "Ünïcödé " + "ß" * 250,
])
def test_awkward_subjects_arrive_as_written(engine, acme, make_sender, smtp_server, subject):
    draft_id = approve(engine, acme, subject=subject)
    make_sender().run_once()
    assert row_of(engine, draft_id).status == "sent"
    [received] = smtp_server.messages
    assert received.message["Subject"] == subject


_text = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r\n")


@hyp_settings(max_examples=examples(300), deadline=None, suppress_health_check=list(HealthCheck))
@given(subject=st.one_of(st.text(_text, min_size=1, max_size=300),
                         st.lists(st.sampled_from(["Héllo", "wörld", " ", "  ", "=?", "a" * 90, "ß", "\t", "🚀"]),
                                  min_size=1, max_size=40).map("".join)),
       body=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1,
                    max_size=3000))
def test_any_subject_and_body_survive_the_message_exactly(subject, body):
    """Without a server: whatever the CSM approved is what a mail reader decodes (or it is
    refused, never altered)."""
    import email.policy
    from email.parser import BytesParser

    try:
        message = build_message(mail_from=MAIL_FROM, recipient="ana@customer.test", subject=subject, body=body,
                                message_id="<x@acme.test>", draft_id=1, date=utcnow())
    except ValueError as e:  # only control characters (which check_draft refuses anyway)
        assert "cannot be encoded in an email header exactly" in str(e)
        assert any(unicodedata.category(c) == "Cc" for c in subject), subject
        return
    raw = message.as_bytes()
    assert raw.isascii() and max(len(line) for line in raw.split(b"\r\n")) <= 998
    parsed = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert parsed["Subject"] == subject
    assert parsed.get_content().replace("\r\n", "\n") == canonical(body)


def test_message_id_is_fixed_at_enqueue(engine, acme):
    draft_id = approve(engine, acme)
    message_id = row_of(engine, draft_id).message_id
    assert re.fullmatch(rf"<stallwatch\.draft-{draft_id}\.[0-9a-f]{{16}}@acme\.test>", message_id)
    assert new_message_id(7, None).endswith("@stallwatch.local>")
    assert new_message_id(7, "not an address").endswith("@stallwatch.local>")
    assert new_message_id(7, "x@Mail.Example.COM").endswith("@mail.example.com>")
    assert new_message_id(7, MAIL_FROM) != new_message_id(7, MAIL_FROM)


def test_enqueue_refuses_text_that_cannot_be_a_header(engine, acme):
    draft_id = approve(engine, acme, enqueue=False)
    with pytest.raises(ValueError, match="single line"):
        with write_tx(engine) as conn:
            enqueue_mail(conn, draft_id=draft_id, recipient="ana@customer.test", subject="Hi\n", body=BODY,
                         now=utcnow(), mail_from=MAIL_FROM)
    with pytest.raises(ValueError, match="one email address"):
        with write_tx(engine) as conn:
            enqueue_mail(conn, draft_id=draft_id, recipient="ana@customer.test\r\nBcc: x@y.z", subject="Hi",
                         body=BODY, now=utcnow(), mail_from=MAIL_FROM)


def test_a_recipient_that_is_not_one_address_fails_without_sending(engine, acme, make_sender, smtp_server, outcomes):
    """The send check right before SMTP holds it (issue 10; the modal refuses it first)."""
    draft_id = approve(engine, acme, recipient="ana@customer.test, boss@customer.test")
    make_sender().run_once()
    draft = draft_of(engine, draft_id)
    assert row_of(engine, draft_id).status == "blocked"
    assert draft.status == "blocked"
    assert "is not one plain email address" in draft.blocked_reason
    assert smtp_server.messages == [] and smtp_server.hellos == 0
    assert [o.status for o, *_ in outcomes] == ["blocked"]


@pytest.mark.parametrize("smtputf8", [True, False])
def test_international_address_needs_smtputf8(engine, acme, make_sender, settings, outcomes, smtputf8):
    with FakeSMTP(smtputf8=smtputf8) as server:
        draft_id = approve(engine, acme, recipient="josé@exämple.test")
        make_sender(settings=mail_settings_for(settings, server)).run_once()
        if smtputf8:
            [received] = server.messages
            assert received.rcpt_tos == ["josé@exämple.test"] and "SMTPUTF8" in received.mail_options
            assert received.message["To"] == "josé@exämple.test"
            assert row_of(engine, draft_id).status == "sent"
        else:
            assert server.messages == []
            assert row_of(engine, draft_id).status == "failed"
            assert draft_of(engine, draft_id).blocked_reason == \
                f"could not be delivered: the address needs SMTPUTF8, which smtp://127.0.0.1:{server.port} does not support"


# ----------------------------------------------------------------------------- exactly once


def test_double_enqueue_is_one_row_and_one_email(engine, acme, make_sender, smtp_server):
    draft_id = approve(engine, acme)
    for _ in range(3):  # double (triple) click: the approval's enqueue runs again
        with write_tx(engine) as conn:
            assert enqueue_mail(conn, draft_id=draft_id, recipient="ana@customer.test", subject=SUBJECT,
                                body=BODY, now=utcnow(), mail_from=MAIL_FROM) is False
    with read_tx(engine) as conn:
        assert len(conn.execute(select(MAIL)).all()) == 1
    sender = make_sender()
    sender.run_once()
    sender.run_once()
    assert len(smtp_server.messages) == 1


def test_racing_senders_send_each_email_once(engine, rules, make_sender, smtp_server):
    contacts = {f"acct{i}": f"person{i}@customer{i}.test" for i in range(8)}
    stalls = world(engine, rules, contacts)
    drafts = {approve(engine, stalls[a], recipient=email): email for a, email in contacts.items()}
    senders = [make_sender(f"w{i}") for i in range(4)]
    barrier = threading.Barrier(len(senders))
    errors = []

    def run(sender):
        try:
            barrier.wait()
            for _ in range(3):
                sender.run_once()
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(s,)) for s in senders]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    received = sorted(m.rcpt_tos[0] for m in smtp_server.messages)
    assert received == sorted(contacts.values())  # every email, each exactly once
    for draft_id in drafts:
        assert row_of(engine, draft_id).status == "sent"
    assert len(audit_of(engine, "mail.sent")) == len(drafts)


def test_two_drafts_to_one_person_never_both_go_out(engine, rules, make_sender, smtp_server, outcomes):
    """Approved together for two accounts the same person belongs to: the second waits while
    the first is in flight, then the frequency check holds it."""
    stalls = world(engine, rules, {"acme": "ana@customer.test", "beta": "Ana@Customer.test"})
    first = approve(engine, stalls["acme"], recipient="ana@customer.test")
    second = approve(engine, stalls["beta"], recipient="Ana@Customer.test")
    smtp_server.slow("data", 1.5)
    a = make_sender("a")
    thread = threading.Thread(target=a.run_once)
    thread.start()
    assert smtp_server.received.wait(10)  # the first is being delivered
    clock = Clock()
    b = make_sender("b", clock=clock)
    b.run_once()
    waiting = row_of(engine, second)
    assert (waiting.status, waiting.attempts) == ("pending", 0)
    assert "another email to this address is being sent" in waiting.error
    thread.join(30)
    assert row_of(engine, first).status == "sent"
    clock.advance(seconds=6)
    b.run_once()
    assert len(smtp_server.messages) == 1
    reason = draft_of(engine, second).blocked_reason
    assert row_of(engine, second).status == "blocked"
    assert "got a recovery email on" in reason and "min_days_between_emails = 7" in reason


def test_stall_counts_each_sent_recovery_once(engine, acme, rules, make_sender, smtp_server):
    no_gap = rules.model_copy(update={"outreach": rules.outreach.model_copy(update={"min_days_between_emails": 0})})
    sender = make_sender(rules_=no_gap)
    first = approve(engine, acme)
    sender.run_once()
    stall = stall_of(engine, acme)
    assert stall.recovery_attempts == 1
    assert aware(stall.last_recovery_at) == aware(row_of(engine, first).sent_at)

    stale = approve(engine, acme, attempt=1)  # drafted as attempt 1 too (two drafts approved together)
    sender.run_once()
    assert row_of(engine, stale).status == "blocked"
    assert "recovery email #1 for this stall already went out" in draft_of(engine, stale).blocked_reason
    assert stall_of(engine, acme).recovery_attempts == 1

    second = approve(engine, acme)  # the follow-up, attempt 2
    sender.run_once()
    stall = stall_of(engine, acme)
    assert stall.recovery_attempts == 2
    assert aware(stall.last_recovery_at) == aware(row_of(engine, second).sent_at)
    assert len(smtp_server.messages) == 2


# ----------------------------------------------------------------------------- retries and failures


def test_transient_451_then_success_sends_once(engine, acme, make_sender, smtp_server, outcomes):
    draft_id = approve(engine, acme)
    smtp_server.fail("data", "451 4.3.0 Try again later")
    clock = Clock()
    sender = make_sender(clock=clock)
    sender.run_once()
    row = row_of(engine, draft_id)
    assert (row.status, row.attempts) == ("pending", 1)
    assert "451 4.3.0 Try again later" in row.error
    assert aware(row.next_attempt_at) == clock.now + timedelta(seconds=30)
    assert draft_of(engine, draft_id).status == "approved"
    assert outcomes == [] and smtp_server.messages == []

    sender.run_once()  # not due yet
    assert row_of(engine, draft_id).attempts == 1
    clock.advance(seconds=31)
    sender.run_once()
    row = row_of(engine, draft_id)
    assert (row.status, row.attempts) == ("sent", 2)
    assert len(smtp_server.messages) == 1
    assert audit_of(engine, "mail.sent")[0].detail["attempts"] == 2


@pytest.mark.parametrize("fault", [("rcpt", "421 4.7.0 Too busy"), ("mail", "452 4.3.1 Insufficient storage"),
                                   ("rcpt", "drop"), ("mail", "drop")])
def test_errors_before_the_message_are_retried_and_sent_once(engine, acme, make_sender, smtp_server, fault):
    draft_id = approve(engine, acme)
    smtp_server.fail(*fault)
    clock = Clock()
    sender = make_sender(clock=clock)
    sender.run_once()
    assert row_of(engine, draft_id).status == "pending"
    clock.advance(minutes=1)
    sender.run_once()
    assert row_of(engine, draft_id).status == "sent"
    assert len(smtp_server.messages) == 1


def test_backoff_grows_then_gives_up(engine, acme, make_sender, outcomes, settings):
    draft_id = approve(engine, acme)
    clock = Clock()
    refused = settings.model_copy(update={"smtp_url": f"smtp://127.0.0.1:{closed_port()}", "mail_from": MAIL_FROM})
    sender = make_sender(clock=clock, settings=refused, max_attempts=4)
    delays = []
    for _ in range(3):
        sender.run_once()
        row = row_of(engine, draft_id)
        assert row.status == "pending" and "Connection refused" in row.error
        delays.append((aware(row.next_attempt_at) - clock.now).total_seconds())
        clock.now = aware(row.next_attempt_at)
    assert delays == [30, 60, 120]
    sender.run_once()
    row = row_of(engine, draft_id)
    draft = draft_of(engine, draft_id)
    assert (row.status, row.attempts) == ("failed", 4)
    assert draft.status == "blocked"
    assert draft.blocked_reason.startswith("could not be delivered after 4 attempts: could not talk to smtp://127.0.0.1")
    [entry] = audit_of(engine, "mail.failed")
    assert entry.detail["reason"] == draft.blocked_reason
    assert [(o.status, o.reason) for o, *_ in outcomes] == [("failed", draft.blocked_reason)]


@pytest.mark.parametrize("stage,reply,says", [
    ("rcpt", "550 5.1.1 <ana@customer.test>: Recipient address rejected: User unknown",
     "the mail server refused the recipient (550 5.1.1 <ana@customer.test>: Recipient address rejected"),
    ("data", "554 5.7.1 Message rejected as spam", "the mail server refused the message (554 5.7.1 Message rejected"),
])
def test_permanent_refusal_fails_with_the_reason(engine, acme, make_sender, smtp_server, outcomes, stage, reply, says):
    draft_id = approve(engine, acme)
    smtp_server.fail(stage, reply)
    clock = Clock()
    sender = make_sender(clock=clock)
    sender.run_once()
    row = row_of(engine, draft_id)
    draft = draft_of(engine, draft_id)
    assert row.status == "failed"
    assert draft.status == "blocked"
    assert draft.blocked_reason.startswith(f"could not be delivered: {says}")
    assert audit_of(engine, "mail.failed")[0].detail["reason"] == draft.blocked_reason
    [(outcome, seen_status, _)] = outcomes
    assert (outcome.status, outcome.reason, outcome.approved_by, seen_status) == \
        ("failed", draft.blocked_reason, CSM, "blocked")
    clock.advance(hours=5)
    sender.run_once()
    assert smtp_server.messages == [] and stall_of(engine, acme).recovery_attempts == 0


# ----------------------------------------------------------------------------- the send checks


def _cancelled(engine, rules, acme):
    store(engine, rules, [stripe("acme", T0 + 50 * HOUR, lifecycle="cancelled")], now=T0 + 50 * HOUR)


def _churned(engine, rules, acme):
    store(engine, rules, [stripe("acme", T0 + 50 * HOUR, lifecycle="churned")], now=T0 + 50 * HOUR)


def _past_due(engine, rules, acme):
    store(engine, rules, [stripe("acme", T0 + 50 * HOUR, lifecycle="past_due")], now=T0 + 50 * HOUR)


def _unsubscribed(engine, rules, acme):
    store(engine, rules, [identify("acme", "ana@customer.test", T0 + 50 * HOUR, unsubscribed=True)],
          now=T0 + 50 * HOUR)


def _resolved(engine, rules, acme):
    store(engine, rules, [track("acme", PROJECT, T0 + 50 * HOUR)], now=T0 + 50 * HOUR)
    scan(engine, rules, T0 + 51 * HOUR)  # the customer created the project: the stall auto-resolves


def _moved(engine, rules, acme):
    with write_tx(engine) as conn:  # a late event moved the open stall to another step
        conn.execute(update(STALL).where(STALL.c.id == acme).values(step=INTEGRATION))


def _emailed_recently(engine, rules, acme):
    other = world(engine, rules, {"beta": "ana@customer.test"})["beta"]
    with write_tx(engine) as conn:  # another account's recovery email reached Ana two days ago
        draft_id = conn.execute(DRAFT.insert().values(
            stall_id=other, account_id="beta", recipient="ana@customer.test", subject="s", body="b",
            status="sent", attempt=1, created_at=utcnow(), updated_at=utcnow()).returning(DRAFT.c.id)).scalar_one()
        conn.execute(MAIL.insert().values(
            draft_id=draft_id, recipient="ANA@customer.test", subject="s", body="b", message_id="<old@acme.test>",
            status="sent", attempts=1, next_attempt_at=utcnow(), sent_at=utcnow() - timedelta(days=2),
            created_at=utcnow()))


def _attempts_used(engine, rules, acme):
    with write_tx(engine) as conn:
        conn.execute(update(STALL).where(STALL.c.id == acme).values(recovery_attempts=2))


BLOCKERS = {
    "cancelled": (_cancelled, "lifecycle", "the account has cancelled"),
    "churned": (_churned, "lifecycle", "the account has churned"),
    "past_due": (_past_due, "lifecycle", "the account is past due on payment"),
    "unsubscribed": (_unsubscribed, "unsubscribed", "ana@customer.test has unsubscribed from email"),
    "stall_resolved": (_resolved, "not_relevant", "the stall is no longer open"),
    "stall_moved": (_moved, "not_relevant",
                    "the account moved on from 'Project Created' to 'Integration Connected'"),
    "emailed_recently": (_emailed_recently, "too_soon", "got a recovery email on"),
    "attempts_used": (_attempts_used, "attempts", "2 recovery email(s) already went out for this stall"),
}


@pytest.mark.parametrize("case", list(BLOCKERS))
def test_each_send_check_blocks_with_its_reason_and_sends_nothing(engine, rules, acme, make_sender, smtp_server,
                                                                 outcomes, case):
    change, code, says = BLOCKERS[case]
    draft_id = approve(engine, acme, attempt=3 if case == "attempts_used" else None)
    change(engine, rules, acme)  # after approval, before the sender's turn
    blocked_before = counter("blocked")
    make_sender().run_once()
    assert_blocked(engine, draft_id, outcomes, smtp_server, code=code, reason_has=says)
    assert counter("blocked") == blocked_before + 1
    assert stall_of(engine, acme).recovery_attempts == (2 if case == "attempts_used" else 0)


# ----------------------------------------------------------------------------- crash window


def _claim_as_dead_worker(engine, draft_id: int, status: str, minutes_ago: float) -> None:
    with write_tx(engine) as conn:
        conn.execute(update(MAIL).where(MAIL.c.draft_id == draft_id).values(
            status=status, claimed_by="dead-worker", claimed_at=utcnow() - timedelta(minutes=minutes_ago),
            attempts=1))


def test_row_left_transmitting_by_a_dead_worker_becomes_unknown_and_is_never_resent(
        engine, acme, make_sender, smtp_server, outcomes):
    draft_id = approve(engine, acme)
    _claim_as_dead_worker(engine, draft_id, "transmitting", minutes_ago=2)
    sender = make_sender()
    sender.run_once()  # within the lease: maybe still being sent: left alone
    assert row_of(engine, draft_id).status == "transmitting"
    assert outcomes == []

    _claim_as_dead_worker(engine, draft_id, "transmitting", minutes_ago=6)
    sender.run_once()
    row = row_of(engine, draft_id)
    draft = draft_of(engine, draft_id)
    assert row.status == "unknown"
    assert (draft.status, draft.blocked_reason) == ("blocked", UNKNOWN_REASON)
    assert UNKNOWN_REASON == ("may or may not have been sent (the sender stopped mid-delivery); "
                              "check the mailbox before drafting again")
    [entry] = audit_of(engine, "mail.unknown")
    assert (entry.actor, entry.detail["reason"]) == ("system", UNKNOWN_REASON)
    assert [(o.status, o.reason, o.approved_by) for o, *_ in outcomes] == [("unknown", UNKNOWN_REASON, CSM)]
    clock = Clock()
    clock.advance(days=1)
    make_sender(clock=clock).run_once()
    assert smtp_server.messages == [] and smtp_server.hellos == 0


def test_row_left_sending_by_a_dead_worker_is_sent_once(engine, acme, make_sender, smtp_server, outcomes):
    """'sending' means the final "." was never written: the server cannot have delivered it."""
    draft_id = approve(engine, acme)
    _claim_as_dead_worker(engine, draft_id, "sending", minutes_ago=6)
    sender = make_sender()
    sender.run_once()
    row = row_of(engine, draft_id)
    assert (row.status, row.attempts) == ("sent", 2)
    assert len(smtp_server.messages) == 1
    assert [o.status for o, *_ in outcomes] == ["sent"]


def test_unknown_email_counts_for_the_frequency_limit(engine, rules, acme, make_sender, smtp_server, outcomes):
    draft_id = approve(engine, acme)
    _claim_as_dead_worker(engine, draft_id, "transmitting", minutes_ago=6)
    make_sender().run_once()
    assert row_of(engine, draft_id).status == "unknown"
    beta = world(engine, rules, {"beta": "ana@customer.test"})["beta"]
    again = approve(engine, beta)
    make_sender().run_once()
    reason = draft_of(engine, again).blocked_reason
    assert row_of(engine, again).status == "blocked"
    # The send check counts an "unknown" email as sent (storage.outreach.last_email_to).
    assert "ana@customer.test got a recovery email on" in reason
    assert smtp_server.messages == []


@pytest.mark.parametrize("fault", ["drop", "slow"])
def test_lost_answer_after_the_message_is_unknown_and_not_resent(engine, acme, make_sender, settings, outcomes,
                                                                 fault):
    """The server got the whole message but its answer never came (connection dropped, or
    slower than the timeout): maybe delivered, so never sent again."""
    with FakeSMTP() as server:
        if fault == "drop":
            server.drop("data")
        else:
            server.slow("data", 3)
        fast = mail_settings_for(settings, server, smtp_url=server.url + "?timeout=0.5")
        draft_id = approve(engine, acme)
        clock = Clock()
        sender = make_sender(clock=clock, settings=fast)
        sender.run_once()
        row = row_of(engine, draft_id)
        assert row.status == "unknown"
        assert "broke right after the message was transmitted" in row.error
        assert draft_of(engine, draft_id).blocked_reason == LOST_ANSWER_REASON
        assert [o.status for o, *_ in outcomes] == ["unknown"]
        clock.advance(hours=2)
        sender.run_once()
        assert len(server.messages) == 1  # the one that got there; nothing more


SENDER_SCRIPT = """
import sys
from bot.mail.outbox import MailSender
from bot.settings import Settings
from storage.db import make_engine
db, smtp = sys.argv[1], sys.argv[2]
settings = Settings(_env_file=None, DATABASE_URL=db, SMTP_URL=smtp, STALLWATCH_MAIL_FROM="success@acme.test")
MailSender(make_engine(db), settings, settings.rules, worker_id="doomed").run_once()
print("finished", flush=True)
"""


@pytest.mark.parametrize("stage", ["rcpt", "data"])
def test_kill_9_mid_delivery_then_restart_sends_nothing_twice(engine, db_url, acme, make_sender, smtp_server,
                                                              outcomes, stage):
    """A real sender process killed with SIGKILL: before the final "." (waiting on RCPT) the
    email goes out once after the restart; after it (waiting for the 250) it is 'unknown'."""
    draft_id = approve(engine, acme)
    smtp_server.slow(stage, 60)
    proc = subprocess.Popen([sys.executable, "-c", SENDER_SCRIPT, db_url, smtp_server.url], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        expected = "transmitting" if stage == "data" else "sending"
        while row_of(engine, draft_id).status != expected or (stage == "data" and not smtp_server.messages):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the sender did not reach the server"
            time.sleep(0.05)
        time.sleep(0.2)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)
    assert row_of(engine, draft_id).claimed_by == "doomed"

    clock = Clock()
    clock.advance(minutes=6)  # the lease ran out: the worker is dead
    restarted = make_sender("restarted", clock=clock)
    restarted.run_once()
    restarted.run_once()
    row = row_of(engine, draft_id)
    if stage == "rcpt":
        assert row.status == "sent"
        assert len(smtp_server.messages) == 1
    else:
        assert row.status == "unknown"
        assert draft_of(engine, draft_id).blocked_reason == UNKNOWN_REASON
        assert len(smtp_server.messages) == 1  # the killed sender's; not sent again


def test_graceful_stop_finishes_the_email_in_hand(engine, rules, make_sender, smtp_server):
    stalls = world(engine, rules, {"acme": "ana@customer.test", "beta": "bo@beta.test"})
    first = approve(engine, stalls["acme"])
    second = approve(engine, stalls["beta"], recipient="bo@beta.test")
    smtp_server.slow("data", 1.0)
    stop, wake = threading.Event(), threading.Event()
    thread = make_sender().start(stop, wake)
    assert smtp_server.received.wait(10)  # mid-delivery
    stop.set()
    thread.join(30)
    assert not thread.is_alive()
    assert row_of(engine, first).status == "sent"  # finished, not cut off
    assert row_of(engine, second).status == "pending"  # the next one waits for the next start
    assert len(smtp_server.messages) == 1


def test_wake_event_sends_at_once(engine, acme, make_sender, smtp_server):
    stop, wake = threading.Event(), threading.Event()
    sender = make_sender()
    thread = threading.Thread(target=sender.run_forever, args=(stop, wake), kwargs={"poll": 30})
    thread.start()
    try:
        time.sleep(0.2)  # idle, waiting on the 30-second poll
        approve(engine, acme)
        wake.set()
        assert smtp_server.received.wait(10)
    finally:
        stop.set()
        wake.set()
        thread.join(10)
    assert len(smtp_server.messages) == 1


def test_a_failing_outcome_hook_does_not_lose_the_sent_record(engine, acme, mail_settings, rules, smtp_server):
    def broken(conn, outcome):
        conn.execute(AUDIT.insert().values(at=utcnow(), actor="hook", action="hook.partial", detail={}))
        raise RuntimeError("Slack is down")

    draft_id = approve(engine, acme)
    MailSender(engine, mail_settings, rules, on_outcome=broken).run_once()
    assert row_of(engine, draft_id).status == "sent"
    assert draft_of(engine, draft_id).status == "sent"
    assert len(audit_of(engine, "mail.sent")) == 1
    assert audit_of(engine, "hook.partial") == []  # the hook's own writes rolled back with it
    assert len(smtp_server.messages) == 1


def test_approval_through_the_slack_flow_reaches_the_server(engine, acme, mail_settings, rules, smtp_server):
    """bot.stalls.drafts.approve (the modal's submission) enqueues; the sender delivers."""
    from bot.stalls.context import Services
    from bot.stalls.drafts import Edited, approve as approve_draft

    draft_id = approve(engine, acme, status="drafted", enqueue=False)
    services = Services(engine=engine, settings=mail_settings.model_copy(update={"admins": CSM}), rules=rules)
    result = approve_draft(services, draft_id, CSM, Edited("ana@customer.test", "Quick question",
                                                           "Hi Ana, can I help with your first project?"),
                           source="test")
    assert result.approved, result
    MailSender(engine, mail_settings, rules).run_once()
    [received] = smtp_server.messages
    assert received.message["Subject"] == "Quick question"
    assert received.text.strip() == "Hi Ana, can I help with your first project?"
    assert audit_of(engine, "mail.sent")[0].actor == CSM


# ----------------------------------------------------------------------------- transport


def test_auth_with_percent_encoded_credentials(engine, acme, make_sender, settings):
    with FakeSMTP(auth={"me@acme.test": "p@ss:w/rd %?#"}) as server:
        url = f"smtp://me%40acme.test:p%40ss%3Aw%2Frd%20%25%3F%23@127.0.0.1:{server.port}"
        draft_id = approve(engine, acme)
        make_sender(settings=mail_settings_for(settings, server, smtp_url=url)).run_once()
        assert row_of(engine, draft_id).status == "sent"
        assert server.logins == ["me@acme.test"]
        assert len(server.messages) == 1


def test_wrong_password_is_retried_without_giving_up(engine, acme, make_sender, settings, outcomes):
    with FakeSMTP(auth={"me": "right"}) as server:
        draft_id = approve(engine, acme)
        clock = Clock()
        wrong = mail_settings_for(settings, server, smtp_url=f"smtp://me:wrong@127.0.0.1:{server.port}")
        sender = make_sender(clock=clock, settings=wrong, max_attempts=2)
        for _ in range(4):  # past max_attempts: an operator can fix the password, nothing is lost
            sender.run_once()
            row = row_of(engine, draft_id)
            assert row.status == "pending"
            assert "refused the SMTP user name or password (535" in row.error
            assert "wrong" not in row.error
            clock.now = aware(row.next_attempt_at)
        assert outcomes == [] and server.messages == []
        fixed = mail_settings_for(settings, server, smtp_url=f"smtp://me:right@127.0.0.1:{server.port}")
        make_sender(clock=clock, settings=fixed).run_once()
        assert row_of(engine, draft_id).status == "sent"
        assert len(server.messages) == 1


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_tls(engine, acme, make_sender, settings, tls):
    with FakeSMTP(tls=tls, auth={"me": "secret"}) as server:
        url = server.url.replace("://", "://me:secret@")
        if tls == "starttls":
            url += "?starttls=required"
        draft_id = approve(engine, acme)
        make_sender(settings=mail_settings_for(settings, server, smtp_url=url), server=server).run_once()
        assert row_of(engine, draft_id).status == "sent"
        assert server.logins == ["me"]
        assert len(server.messages) == 1


def test_untrusted_certificate_is_a_configuration_error(engine, acme, make_sender, settings):
    with FakeSMTP(tls="implicit") as server:
        draft_id = approve(engine, acme)
        make_sender(settings=mail_settings_for(settings, server)).run_once()  # the system CAs only
        row = row_of(engine, draft_id)
        assert row.status == "pending"
        assert "TLS with smtps://127.0.0.1" in row.error and "certificate" in row.error
        assert server.messages == []


def test_starttls_required_but_not_offered(engine, acme, make_sender, smtp_server, settings):
    draft_id = approve(engine, acme)
    url = smtp_server.url + "?starttls=required"
    make_sender(settings=mail_settings_for(settings, smtp_server, smtp_url=url)).run_once()
    row = row_of(engine, draft_id)
    assert row.status == "pending"
    assert "does not offer STARTTLS (starttls=required)" in row.error
    assert smtp_server.messages == []


def test_password_never_sent_in_clear_to_a_remote_server(engine, acme, make_sender, settings):
    """'127.1' reaches loopback (inet_aton's short form) but is not recognized as such: it
    stands in for a remote relay that offers no STARTTLS. `starttls=off` is the explicit opt-in."""
    import socket

    with FakeSMTP(auth={"me": "secret"}) as server:
        try:
            socket.getaddrinfo("127.1", server.port)
        except OSError:
            pytest.skip("'127.1' does not resolve here")
        draft_id = approve(engine, acme)
        url = f"smtp://me:secret@127.1:{server.port}"
        clock = Clock()
        make_sender(clock=clock, settings=mail_settings_for(settings, server, smtp_url=url)).run_once()
        row = row_of(engine, draft_id)
        assert row.status == "pending"
        assert "refusing to send the password unencrypted (add ?starttls=off" in row.error
        assert server.logins == [] and server.messages == []
        clock.advance(minutes=1)
        make_sender(clock=clock, settings=mail_settings_for(settings, server, smtp_url=url + "?starttls=off")).run_once()
        assert server.logins == ["me"] and len(server.messages) == 1


# ----------------------------------------------------------------------------- configuration


def test_mail_configured_reasons(settings, smtp_server):
    assert mail_configured(settings) == "SMTP_URL is not set: approved emails stay queued until it is"
    no_from = settings.model_copy(update={"smtp_url": smtp_server.url})
    assert mail_configured(no_from).startswith("STALLWATCH_MAIL_FROM (the From address of recovery emails) is not set")
    bad_url = settings.model_copy(update={"smtp_url": "smtp://me:hunter2@host:99999", "mail_from": MAIL_FROM})
    reason = mail_configured(bad_url)
    assert reason.startswith("SMTP_URL is invalid (SMTP_URL's port must be a number from 1 to 65535")
    assert "hunter2" not in reason
    bad_from = settings.model_copy(update={"smtp_url": smtp_server.url, "mail_from": "success at acme"})
    assert mail_configured(bad_from).startswith("STALLWATCH_MAIL_FROM must be one email address")
    assert mail_configured(mail_settings_for(settings, smtp_server)) is None


def test_unconfigured_mail_keeps_approved_emails_queued(engine, acme, settings, rules, smtp_server, make_sender):
    draft_id = approve(engine, acme)
    with pytest.raises(ValueError, match="SMTP_URL is not set"):
        MailSender(engine, settings, rules)
    assert row_of(engine, draft_id).status == "pending"
    assert draft_of(engine, draft_id).status == "approved"
    make_sender().run_once()  # configured later: it goes out (after the checks)
    assert row_of(engine, draft_id).status == "sent"
    assert len(smtp_server.messages) == 1


@pytest.mark.parametrize("url,expected", [
    ("smtp://mail.example.com", ("mail.example.com", 25, False, "auto", None, None)),
    ("SMTP://Mail.Example.com:2525/", ("Mail.Example.com", 2525, False, "auto", None, None)),
    ("smtp://u:p@mail.example.com", ("mail.example.com", 587, False, "auto", "u", "p")),
    ("smtp://mail.example.com?starttls=required", ("mail.example.com", 587, False, "required", None, None)),
    ("smtp://mail.example.com:25?starttls=off", ("mail.example.com", 25, False, "off", None, None)),
    ("smtps://u:p@smtp.example.com", ("smtp.example.com", 465, True, "off", "u", "p")),
    ("smtp://me%40acme.com:p%40ss%3Aw%2Fo%3Frd%23%25@h:587", ("h", 587, False, "auto", "me@acme.com", "p@ss:w/o?rd#%")),
    ("smtp://user:p@ss@relay.local:25", ("relay.local", 25, False, "auto", "user", "p@ss")),  # lenient: last '@'
    ("smtp://[::1]:1025", ("::1", 1025, False, "auto", None, None)),
    ("smtp://127.0.0.1:1025?timeout=5", ("127.0.0.1", 1025, False, "auto", None, None)),
    ("  smtp://h  ", ("h", 25, False, "auto", None, None)),
])
def test_smtp_url_parses(url, expected):
    config = parse_smtp_url(url)
    assert (config.host, config.port, config.implicit_tls, config.starttls, config.username, config.password) == expected
    assert "password=" not in repr(config)
    assert config.password is None or f":{config.password}@" not in config.describe()


@pytest.mark.parametrize("url,says", [
    ("", "SMTP_URL is empty"),
    ("mail.example.com:25", "SMTP_URL must look like smtp://user:password@host:587"),
    ("http://mail.example.com", "scheme 'http' is not supported"),
    ("smtp://", "SMTP_URL has no host"),
    ("smtp://:secretpw@h", "has a password but no user name"),
    ("smtp://user@h", "has a user name but no password"),
    ("smtp://user:@h", "has a user name but no password"),
    ("smtp://h:0", "port must be a number from 1 to 65535"),
    ("smtp://h:abc", "port must be a number from 1 to 65535"),
    ("smtp://u:sec/retpw@h", "port must be a number"),  # an unencoded '/' in the password
    ("smtp://u:pw@h/path", "has a path after the host"),
    ("smtp://u:se?cretpw@h", "port must be a number"),
    ("smtp://u:pw@h?x=secretpw@", "has an '@' after the host"),
    ("smtp://u:pw@h#secretpw", "has a '#' fragment"),
    ("smtp://h?startls=on", "unknown option 'startls'"),
    ("smtp://h?starttls=maybe", "starttls must be auto, required or off"),
    ("smtp://h?starttls=off&starttls=on", "gives the option 'starttls' twice"),
    ("smtps://h?starttls=required", "starttls does not apply to smtps://"),
    ("smtp://h?timeout=0", "timeout must be a number of seconds"),
    ("smtp://h?timeout=nan", "timeout must be a number of seconds"),
    ("smtp://u:pa ss@h", "spaces or control characters"),
    ("smtp://u:%ff%fe@h", "the password in SMTP_URL is not valid percent-encoded UTF-8"),
    ("smtp://u:%C3%BCsecret@h", "the password in SMTP_URL has non-ASCII characters"),
    ("smtp://[1.2.3.4]", "is not an IPv6 address"),
    ("smtp://[::1", "no closing ']'"),
    ("smtp://bad_host!:25", "host is not a valid host name"),
])
def test_bad_smtp_url_says_what_is_wrong(url, says):
    with pytest.raises(ValueError) as error:
        parse_smtp_url(url)
    assert says in str(error.value)
    assert "secret" not in str(error.value)
    assert error.value.__context__ is None or error.value.__suppress_context__  # no traceback quoting the URL


_url_piece = st.text(st.characters(codec="utf-8", blacklist_categories=("Cs",)), max_size=12)


@hyp_settings(max_examples=examples(1500), deadline=None, suppress_health_check=list(HealthCheck))
@given(scheme=st.sampled_from(["smtp", "smtps", "SMTP", "http", "", "smtp:"]), user=_url_piece,
       secret=st.text(st.characters(codec="utf-8", blacklist_categories=("Cs",)), min_size=1, max_size=12),
       host=st.one_of(st.sampled_from(["mail.example.com", "[::1]", "127.0.0.1", "", "h"]), _url_piece),
       port=st.one_of(st.none(), st.integers(-5, 70000).map(str), _url_piece),
       tail=st.one_of(st.just(""), st.sampled_from(["/", "?starttls=off", "?timeout=3", "#x", "?a=b"]), _url_piece),
       encode=st.booleans())
def test_any_smtp_url_is_a_config_or_a_clear_error_never_leaking_the_password(scheme, user, secret, host, port, tail,
                                                                               encode):
    from urllib.parse import quote

    password = "Zq" + secret  # marked so that it cannot be part of the error's own words
    creds = f"{quote(user, safe='') if encode else user}:{quote(password, safe='') if encode else password}@"
    url = f"{scheme}://{creds}{host}{'' if port is None else ':' + port}{tail}"
    try:
        config = parse_smtp_url(url)
    except ValueError as e:
        message = str(e)
        assert message and message[0].isascii()
        for piece in {password, quote(password, safe=""), password[:6]}:
            assert piece not in message
    else:
        assert isinstance(config, SmtpConfig)
        assert 1 <= config.port <= 65535 and config.host
        assert config.password is None or config.password not in repr(config)
        assert config.password is None or config.password not in config.describe()


def test_mail_from_parsing():
    assert parse_mail_from(MAIL_FROM) == ("Acme Customer Success <success@acme.test>", "success@acme.test")
    assert parse_mail_from("success@acme.test") == ("success@acme.test", "success@acme.test")
    assert parse_mail_from('"Équipe Acme" <cs@acme.test>')[1] == "cs@acme.test"
    for bad in ("", "acme", "a@b", "a@b.co, c@d.co", "<@acme.test>", "x@acme.test\nBcc: y@z.co"):
        with pytest.raises(ValueError):
            parse_mail_from(bad)
