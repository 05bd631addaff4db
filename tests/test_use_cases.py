"""The stall use-cases (bot/stalls/actions.py) without Slack, Bolt or HTTP: a real database
(both backends through the `engine` fixture), a fixed clock passed in, and the checks, the
guarded changes, the acknowledged alerts and the audit rows they leave."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from bot.scan import scan
from bot.stalls import actions
from bot.stalls.context import Services
from bot.stalls.errors import AlreadyResolved, BadRequest, NotAllowed, NotFound
from bot.stalls.permissions import PERMISSIONS, Op, Subject, allowed
from storage.models import Alert

from factories import ACCOUNT, DAY, HOUR, PROJECT, STALL, T0, audits, signup, store, stalls, track

OWNER, OUTSIDER, ADMIN = "U0OWNER", "U0OUTSIDER", "U0ADMIN"
NOW = T0 + 3 * DAY + HOUR
ALERT = Alert.__table__


@pytest.fixture
def services(engine, settings, rules) -> Services:
    return Services(engine=engine, settings=settings.model_copy(update={"admins": ADMIN}), rules=rules,
                    clock=lambda: NOW)


@pytest.fixture
def stall_id(services) -> int:
    """Acme, owned by OWNER, with a live step stall and one unacknowledged ping alert."""
    engine, rules = services.engine, services.rules
    store(engine, rules, signup("acme", T0, arr=50000, name="Acme") + [track("acme", PROJECT, T0 + HOUR)], now=T0 + HOUR)
    scan(engine, rules, T0 + 3 * DAY)
    (stall,) = stalls(engine, "acme")
    with engine.begin() as conn:
        conn.execute(update(ACCOUNT).where(ACCOUNT.c.id == "acme").values(owner_slack_id=OWNER))
        conn.execute(ALERT.insert().values(stall_id=stall.id, channel="C0ALERTS", ts="1.0", kind="ping",
                                           priority=stall.priority, created_at=T0, updated_at=T0))
    return stall.id


def stall_row(services, stall_id):
    with services.engine.connect() as conn:
        return conn.execute(select(STALL).where(STALL.c.id == stall_id)).one()


def alert_acks(services, stall_id):
    with services.engine.connect() as conn:
        return conn.execute(select(ALERT.c.acked_by, ALERT.c.acked_at).where(ALERT.c.stall_id == stall_id)).all()


def test_assign_changes_acks_and_audits_once(services, stall_id):
    first = actions.assign(services, stall_id, OWNER, source="test")
    again = actions.assign(services, stall_id, OWNER, source="test")
    assert (first.changed, first.text) == (True, "Assigned to you.")
    assert (again.changed, again.text) == (False, "It is already assigned to you.")
    assert stall_row(services, stall_id).assignee == OWNER
    assert [(a.acked_by, a.acked_at.replace(tzinfo=NOW.tzinfo)) for a in alert_acks(services, stall_id)] == [(OWNER, NOW)]
    [entry] = [a for a in audits(services.engine, stall_id) if a.action == "stall.assign"]
    assert (entry.actor, entry.source, entry.detail) == (OWNER, "test", {"assignee": OWNER, "previous": None})


def test_snooze_uses_the_clock_passed_in(services, stall_id):
    outcome = actions.snooze(services, stall_id, OWNER, 3, source="test")
    row = stall_row(services, stall_id)
    assert outcome.text == "Snoozed for 3 days."
    assert (row.status, row.snoozed_by, row.snoozed_until.replace(tzinfo=NOW.tzinfo)) == ("snoozed", OWNER, NOW + 3 * DAY)
    assert actions.snooze(services, stall_id, OWNER, source="test").text == "Snoozed for 1 day."


def test_resolve_is_final(services, stall_id):
    assert actions.resolve(services, stall_id, ADMIN, source="test").text == "Resolved."
    row = stall_row(services, stall_id)
    assert (row.status, row.open_key, row.resolved_by) == ("resolved", None, ADMIN)
    for op in (Op.ASSIGN, Op.SNOOZE, Op.RESOLVE):
        with pytest.raises(AlreadyResolved) as refused:
            actions.change(services, op, stall_id, OWNER, source="test")
        assert (refused.value.by, refused.value.status) == (ADMIN, "resolved")  # the adapter words it
    assert actions.view(services, stall_id, OWNER) == "acme"  # a closed stall can still be looked at
    assert [a.action for a in audits(services.engine, stall_id) if a.action.startswith("stall.")] == ["stall.resolve"]


@pytest.mark.parametrize("op", [Op.ASSIGN, Op.SNOOZE, Op.RESOLVE, Op.VIEW])
def test_outsider_is_refused_and_nothing_changes(services, stall_id, op):
    before, acks, trail = stall_row(services, stall_id), alert_acks(services, stall_id), audits(services.engine, stall_id)
    with pytest.raises(NotAllowed, match="^Only "):
        actions.view(services, stall_id, OUTSIDER) if op == Op.VIEW else \
            actions.change(services, op, stall_id, OUTSIDER, source="test")
    assert stall_row(services, stall_id) == before
    assert alert_acks(services, stall_id) == acks and audits(services.engine, stall_id) == trail


def test_the_assignee_may_act(services, stall_id):
    with pytest.raises(NotAllowed):
        actions.snooze(services, stall_id, "U0HELPER", source="test")
    with services.engine.begin() as conn:
        conn.execute(update(STALL).where(STALL.c.id == stall_id).values(assignee="U0HELPER"))
    assert actions.snooze(services, stall_id, "U0HELPER", source="test").changed


def test_unknown_stall_and_op(services, stall_id):
    with pytest.raises(NotFound):
        actions.assign(services, stall_id + 1000, OWNER, source="test")
    with pytest.raises(NotFound):
        actions.view(services, stall_id + 1000, OWNER)
    with pytest.raises(BadRequest):
        actions.change(services, Op.DRAFT, stall_id, OWNER, source="test")


def test_every_op_is_declared_and_roles_decide():
    subject = Subject(stall_id=1, owner_slack_id=OWNER, assignee="U0ASSIGNEE")
    assert set(PERMISSIONS) == set(Op)
    for op in Op:
        assert allowed(op, OWNER, subject, ()) and allowed(op, "U0ASSIGNEE", subject, ())
        assert allowed(op, ADMIN, subject, {ADMIN}) and not allowed(op, OUTSIDER, subject, {ADMIN})
        assert not allowed(op, "", Subject(stall_id=1, owner_slack_id="", assignee=""), {""})


def test_the_application_layer_loads_nothing_of_slack():
    """bot/stalls is Slack-free: importing every module of it loads no Slack or web library
    (checked in a fresh interpreter, so what other tests imported does not count)."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import importlib, pkgutil, sys, bot.stalls\n"
            "for m in pkgutil.iter_modules(bot.stalls.__path__): importlib.import_module('bot.stalls.' + m.name)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('slack_sdk', 'slack_bolt', 'starlette')"
            " or m.startswith('bot.slack')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"
