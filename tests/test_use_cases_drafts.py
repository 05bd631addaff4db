"""The recovery-email use-cases (bot/stalls/drafts.py) without Slack, Bolt or HTTP: a real
database, the template drafter (no OPENAI_API_KEY), a fixed clock passed in."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from bot.scan import scan
from bot.stalls import drafts
from bot.stalls.context import Services
from bot.stalls.drafts import BODY, RECIPIENT, SUBJECT, DraftClosed, Edited
from bot.stalls.errors import AlreadyResolved, CannotDraft, NotAllowed, NotFound
from storage.models import Draft, MailOutbox

from factories import ACCOUNT, DAY, HOUR, PROJECT, STALL, T0, audits, identify, signup, stalls, store, track

OWNER, OUTSIDER = "U0OWNER", "U0OUTSIDER"
NOW = T0 + 3 * DAY + HOUR
DRAFT = Draft.__table__
MAIL = MailOutbox.__table__
GOOD = Edited("ana@acme.example", "Your first project", "Hi Ana,\n\nCan I help you with your first project?\n\nJane")


@pytest.fixture
def services(engine, settings, rules) -> Services:
    return Services(engine=engine, settings=settings.model_copy(update={"mail_from": "jane@ourco.example"}),
                    rules=rules, clock=lambda: NOW)


@pytest.fixture
def stall_id(services) -> int:
    """Acme, owned by OWNER, stalled after its first project; Ana is its contact."""
    engine, rules = services.engine, services.rules
    store(engine, rules, signup("acme", T0, arr=50000, name="Acme") + [
        identify("acme", "ana", T0, email="ana@acme.example", first_name="Ana"),
        track("acme", PROJECT, T0 + HOUR, user="ana")], now=T0 + HOUR)
    scan(engine, rules, T0 + 3 * DAY)
    (stall,) = stalls(engine, "acme")
    with engine.begin() as conn:
        conn.execute(update(ACCOUNT).where(ACCOUNT.c.id == "acme").values(owner_slack_id=OWNER))
    return stall.id


@pytest.fixture
def draft_id(services, stall_id) -> int:
    draft_id = drafts.start_draft(services, stall_id, OWNER, view_id="V1", source="test")
    drafts.write_draft(services, draft_id, OWNER, source="test")
    return draft_id


def draft_row(services, draft_id):
    with services.engine.connect() as conn:
        return conn.execute(select(DRAFT).where(DRAFT.c.id == draft_id)).one()


def mail_rows(services):
    with services.engine.connect() as conn:
        return conn.execute(select(MAIL)).all()


def test_draft_is_written_from_the_template(services, stall_id, draft_id):
    row = draft_row(services, draft_id)
    assert (row.status, row.source, row.recipient, row.attempt, row.view_id) == \
        ("drafted", "template", "ana@acme.example", 1, "V1")
    assert [a.action for a in audits(services.engine, stall_id) if a.action.startswith("draft.")] == \
        ["draft.requested", "draft.created"]
    form = drafts.write_draft(services, draft_id, OWNER, source="test", regenerate=True)
    assert (form.draft_id, form.account_name, form.recipient) == (draft_id, "Acme", "ana@acme.example")


def test_outsider_may_not_draft_nor_approve(services, stall_id, draft_id):
    with pytest.raises(NotAllowed):
        drafts.start_draft(services, stall_id, OUTSIDER, view_id=None, source="test")
    with pytest.raises(NotAllowed):
        drafts.write_draft(services, draft_id, OUTSIDER, source="test", regenerate=True)
    with pytest.raises(NotAllowed):
        drafts.approve(services, draft_id, OUTSIDER, GOOD, source="test")
    with pytest.raises(NotAllowed):
        drafts.discard(services, draft_id, OUTSIDER, source="test")
    assert draft_row(services, draft_id).status == "drafted" and mail_rows(services) == []


def test_no_draft_for_a_closed_stall_or_a_churned_account(services, stall_id):
    with services.engine.begin() as conn:
        conn.execute(update(ACCOUNT).where(ACCOUNT.c.id == "acme").values(status="churned"))
    with pytest.raises(CannotDraft, match="No recovery email"):
        drafts.start_draft(services, stall_id, OWNER, view_id=None, source="test")
    with services.engine.begin() as conn:
        conn.execute(update(STALL).where(STALL.c.id == stall_id).values(open_key=None, status="resolved",
                                                                         resolved_by=OWNER))
    with pytest.raises(AlreadyResolved):
        drafts.start_draft(services, stall_id, OWNER, view_id=None, source="test")
    with pytest.raises(NotFound):
        drafts.start_draft(services, stall_id + 1000, OWNER, view_id=None, source="test")


def test_field_errors_change_nothing(services, draft_id):
    bad = Edited("Ana <ana@acme.example>, bob@acme.example", "", "")
    result = drafts.approve(services, draft_id, OWNER, bad, source="test")
    assert set(result.errors) == {RECIPIENT, SUBJECT, BODY} and not result.approved
    stranger = drafts.approve(services, draft_id, OWNER, Edited("eve@elsewhere.example", GOOD.subject, GOOD.body),
                              source="test")
    assert set(stranger.errors) == {RECIPIENT}
    assert draft_row(services, draft_id).status == "drafted" and mail_rows(services) == []


def test_approve_queues_the_mail_once(services, stall_id, draft_id):
    result = drafts.approve(services, draft_id, OWNER, GOOD, source="test")
    assert (result.approved, result.recipient, result.stall_id) == (True, "ana@acme.example", stall_id)
    assert result.not_configured  # no SMTP_URL in these settings: queued, and the CSM is told why
    row = draft_row(services, draft_id)
    assert (row.status, row.approved_by, row.subject) == ("approved", OWNER, GOOD.subject)
    [mail] = mail_rows(services)
    assert (mail.draft_id, mail.recipient) == (draft_id, "ana@acme.example")
    again = drafts.approve(services, draft_id, OWNER, GOOD, source="test")
    assert again.closed is not None and again.closed.status == "approved" and not again.approved
    assert len(mail_rows(services)) == 1
    with pytest.raises(DraftClosed):
        drafts.discard(services, draft_id, OWNER, source="test")
    assert [a.action for a in audits(services.engine, stall_id)].count("draft.approved") == 1


def test_discard_is_final(services, draft_id):
    drafts.discard(services, draft_id, OWNER, source="test")
    assert draft_row(services, draft_id).status == "discarded"
    with pytest.raises(DraftClosed) as closed:
        drafts.write_draft(services, draft_id, OWNER, source="test", regenerate=True)
    assert closed.value.draft.status == "discarded"
    assert drafts.approve(services, draft_id, OWNER, GOOD, source="test").closed.status == "discarded"
