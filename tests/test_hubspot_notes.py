"""Notes on HubSpot companies (bot/crm/notes.py, `[hubspot] notes = true`): one per recovery
email sent and per alert resolved, enqueued from the audit log into the outbox before sending,
created once each even when an attempt fails or its answer is lost. Against the fake HubSpot on
loopback (tests/fakes/hubspot_api.py: notes as documented at
https://developers.hubspot.com/docs/api-reference/crm-notes-v3/guide, `POST /crm/v3/objects/notes`
with hs_timestamp, hs_note_body and an association of type 190 HUBSPOT_DEFINED to the
company; the notes search with CONTAINS_TOKEN, https://developers.hubspot.com/docs/api/crm/search),
on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from bot.crm.hubspot import HubSpotClient
from bot.crm.notes import FLOOR_KEY, STALE_CLAIM, enqueue_notes, marker, run_notes
from bot.scan import scan
from bot.scheduler import Scheduler
from bot.stalls import actions
from bot.stalls.context import Services
from rules.config import parse_rules
from bot.settings import default_rules_text
from storage.db import write_tx
from storage.meta import get_meta
from storage.models import HubspotNoteOutbox
from storage.stall_actions import audit
from factories import DAY, HOUR, PROJECT, T0, signup, stalls, store, track

pytest_plugins = ["tests.fakes.fixtures"]

NOTES = HubspotNoteOutbox.__table__
OWNER = "U0OWNER"
NOW = T0 + 3 * DAY + HOUR
NOTES_ON = "\n[hubspot]\nnotes = true\n"


@pytest.fixture
def rules_on():
    return parse_rules(default_rules_text() + NOTES_ON)


def client_for(hub) -> HubSpotClient:
    return HubSpotClient(hub.token, hub.url, backoff_first=0.01)


def resolved_stall(engine, settings, rules, note: str = "spoke to them") -> int:
    store(engine, rules, signup("acme", T0, arr=50000, name="Acme") + [track("acme", PROJECT, T0 + HOUR)], now=T0 + HOUR)
    scan(engine, rules, T0 + 3 * DAY)
    (stall,) = stalls(engine, "acme")
    services = Services(engine=engine, settings=settings.model_copy(update={"admins": OWNER}), rules=rules,
                        clock=lambda: NOW)
    actions.resolve(services, stall.id, OWNER, source="test", reason="handled", note=note)
    return stall.id


def mail_sent(engine, account: str = "acme") -> None:
    """The entry the mail outbox writes when a recovery email went out (bot/mail/outbox.py _write_sent)."""
    with write_tx(engine) as conn:
        audit(conn, now=NOW, actor=OWNER, action="mail.sent", stall_id=None, account_id=account, source="mail_outbox",
              detail={"recipient": "dana@acme.example", "subject": "Need a hand with the integration?"})


def outbox(engine) -> list:
    with engine.connect() as conn:
        return list(conn.execute(select(NOTES).order_by(NOTES.c.id)))


def run(engine, rules, hub, now=NOW):
    with client_for(hub) as client:
        return run_notes(engine, rules, client, now)


def test_each_note_is_created_once_even_when_the_first_attempt_is_lost(engine, settings, rules_on, fake_hubspot):
    fake_hubspot.add_company("501", modified=NOW, stallwatch_account_id="acme", name="Acme")
    assert enqueue_notes(engine, NOW) == 0 and get_meta(engine, FLOOR_KEY) is not None  # notes on from now
    stall_id = resolved_stall(engine, settings, rules_on, note="<b>call</b> Tuesday")
    mail_sent(engine)
    # HubSpot creates the first note but its answer is lost (a 502 after the fact).
    fake_hubspot.fail_next("/crm/v3/objects/notes", status=502, deliver=True)
    first = run(engine, rules_on, fake_hubspot)
    assert (first.enqueued, first.sent, first.retried) == (2, 1, 1)
    assert len(fake_hubspot.notes) == 2  # both exist at HubSpot already
    lost = [r for r in outbox(engine) if r.status == "pending"]
    assert len(lost) == 1 and lost[0].maybe_sent and lost[0].attempts == 1
    # Due again: the note is looked for by its marker and found; nothing is created twice.
    second = run(engine, rules_on, fake_hubspot, now=NOW + timedelta(hours=2))
    assert (second.enqueued, second.sent, second.found) == (0, 1, 1)
    assert len(fake_hubspot.notes) == 2
    assert len(fake_hubspot.calls("/crm/v3/objects/notes/search")) == 1
    assert [r.status for r in outbox(engine)] == ["sent", "sent"]
    assert {r.note_id for r in outbox(engine)} == {n.id for n in fake_hubspot.notes}
    # Passes later see the same audit entries again (the overlap) and enqueue nothing.
    third = run(engine, rules_on, fake_hubspot, now=NOW + timedelta(hours=3))
    assert (third.enqueued, third.sent) == (0, 0) and len(fake_hubspot.notes) == 2
    bodies = sorted(n.properties["hs_note_body"] for n in fake_hubspot.notes)
    assert any(f"alert #{stall_id} resolved as handled by Slack user {OWNER}" in b and
               "&lt;b&gt;call&lt;/b&gt; Tuesday" in b for b in bodies)
    assert any("recovery email to dana@acme.example" in b and "Need a hand with the integration?" in b for b in bodies)
    for note in fake_hubspot.notes:
        assert note.properties["hs_timestamp"].endswith("Z")
        assert note.associations == [{"to": {"id": "501"}, "types": [{"associationCategory": "HUBSPOT_DEFINED",
                                                                      "associationTypeId": 190}]}]
        assert marker(next(r.key for r in outbox(engine) if r.note_id == note.id)) in note.properties["hs_note_body"]


def test_a_429_is_waited_out_and_the_note_created_once(engine, rules_on, fake_hubspot):
    fake_hubspot.add_company("501", modified=NOW, stallwatch_account_id="acme")
    enqueue_notes(engine, NOW)
    mail_sent(engine)
    fake_hubspot.fail_next("/crm/v3/objects/notes", status=429, retry_after=1)
    stats = run(engine, rules_on, fake_hubspot)
    assert stats.sent == 1 and len(fake_hubspot.notes) == 1
    assert [c.status for c in fake_hubspot.calls("/crm/v3/objects/notes")] == [429, 201]


def test_a_5xx_on_create_is_not_retried_blindly(engine, rules_on, fake_hubspot):
    fake_hubspot.add_company("501", modified=NOW, stallwatch_account_id="acme")
    enqueue_notes(engine, NOW)
    mail_sent(engine)
    fake_hubspot.fail_next("/crm/v3/objects/notes", status=503)  # not created
    assert run(engine, rules_on, fake_hubspot).retried == 1
    assert [c.status for c in fake_hubspot.calls("/crm/v3/objects/notes")] == [503]  # one call, no blind retry
    stats = run(engine, rules_on, fake_hubspot, now=NOW + timedelta(hours=1))
    assert (stats.sent, stats.found) == (1, 0) and len(fake_hubspot.notes) == 1  # looked, not there, created


def test_a_sender_that_died_mid_call_is_taken_over_without_a_duplicate(engine, rules_on, fake_hubspot):
    fake_hubspot.add_company("501", modified=NOW, stallwatch_account_id="acme")
    enqueue_notes(engine, NOW)
    mail_sent(engine)
    enqueue_notes(engine, NOW)
    [row] = outbox(engine)
    with client_for(fake_hubspot) as client:  # the dead sender's call did reach HubSpot
        client.create_note("501", row.body, NOW)
    with write_tx(engine) as conn:
        conn.execute(update(NOTES).where(NOTES.c.id == row.id).values(status="sending", claimed_at=NOW, attempts=1))
    assert run(engine, rules_on, fake_hubspot, now=NOW + timedelta(minutes=1)).sent == 0  # still its claim
    stats = run(engine, rules_on, fake_hubspot, now=NOW + STALE_CLAIM + timedelta(minutes=1))
    assert (stats.sent, stats.found) == (1, 1) and len(fake_hubspot.notes) == 1


def test_an_account_without_a_company_waits_and_is_matched_by_domain_later(engine, rules_on, fake_hubspot):
    store(engine, rules_on, signup("acme", T0, arr=50000, name="Acme", domain="acme.example"), now=T0)
    enqueue_notes(engine, NOW)
    mail_sent(engine)
    assert run(engine, rules_on, fake_hubspot).retried == 1
    assert outbox(engine)[0].error == "no HubSpot company for this account yet"
    fake_hubspot.add_company("777", modified=NOW, domain="acme.example")
    assert run(engine, rules_on, fake_hubspot, now=NOW + timedelta(hours=1)).sent == 1
    assert fake_hubspot.notes[0].associations[0]["to"] == {"id": "777"}


def test_entries_before_notes_were_turned_on_are_not_noted(engine, rules_on, fake_hubspot):
    fake_hubspot.add_company("501", modified=NOW, stallwatch_account_id="acme")
    mail_sent(engine)
    assert run(engine, rules_on, fake_hubspot).enqueued == 0
    mail_sent(engine)
    assert run(engine, rules_on, fake_hubspot).sent == 1 and len(fake_hubspot.notes) == 1


def test_the_notes_job_runs_only_when_turned_on(engine, settings, rules, rules_on):
    with_token = settings.model_copy(update={"hubspot_token": "pat-x"})
    jobs = lambda s, r: {j.id for j in Scheduler(engine, s, r)._aps.get_jobs()}  # noqa: E731
    assert not {"hubspot_sync", "hubspot_notes"} & jobs(settings, rules)
    assert "hubspot_sync" in jobs(with_token, rules) and "hubspot_notes" not in jobs(with_token, rules)
    assert {"hubspot_sync", "hubspot_notes"} <= jobs(with_token, rules_on)
