"""One ping view for every path: the router's edit of a closed stall's ping and the re-render
after a click (or a draft) show the same message, whatever edited it last."""

from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import event

from bot.scan import scan
from bot.slack.render import ping_blocks, ping_text
from bot.slack.render.ping import draft_text
from bot.slack.text import WJ
from bot.stalls.views import DraftLine, ping_view, ping_views, resolution
from storage.models import Draft
from tests.factories import DAY, HOUR, PROJECT, T0, live_stalls, signup, stalls, store, ticket, track
from tests.fuzz import examples
from tests.test_router import ALERTS, make_rig, now_utc, stall_step_account  # noqa: F401 - make_rig is a fixture

pytest_plugins = ["tests.fakes.fixtures"]

DRAFT = Draft.__table__


def close_edit(rig, stall_id: int) -> dict:
    """What the router's refresh of the closed stall made Slack show in the channel ping."""
    rig.send()
    [edit] = [c for c in rig.fake.calls("chat.update") if c.body["channel"] == ALERTS]
    return edit.body


def auto_resolved_late(rig):
    """A P0 step stall, pinged, then auto-resolved by its step's event arriving late."""
    now = now_utc()
    stall_step_account(rig, "acme", now - HOUR, arr=50000)
    scan(rig.engine, rig.rules, now - HOUR, hooks=rig.hooks)
    [stall] = live_stalls(rig.engine, "acme")
    rig.send()
    store(rig.engine, rig.rules, [track("acme", PROJECT, now - 20 * HOUR)], now=now)
    assert scan(rig.engine, rig.rules, now, hooks=rig.hooks).auto_resolved == 1
    return stall.id, now


def test_an_auto_resolved_ping_reads_the_same_from_the_router_and_from_a_rerender(make_rig):
    rig = make_rig()
    stall_id, now = auto_resolved_late(rig)
    routed = close_edit(rig, stall_id)
    assert "Project Created arrived late" in str(routed["blocks"])
    # Days later a click (or a draft's outcome) re-renders the same message from state.
    for later in (now, now + 3 * DAY):
        with rig.engine.connect() as conn:
            view = ping_view(conn, stall_id, rig.rules, later)
        assert [b.to_dict() for b in ping_blocks(view)] == routed["blocks"]
        assert ping_text(view) == routed["text"]


def test_a_system_resolution_names_nobody_and_its_days_stay_frozen(make_rig):
    rig = make_rig()
    stall_id, now = auto_resolved_late(rig)
    [stall] = stalls(rig.engine, "acme")
    assert stall.resolved_by == "system"
    with rig.engine.connect() as conn:
        at_close = ping_view(conn, stall_id, rig.rules, now)
        later = ping_view(conn, stall_id, rig.rules, now + 10 * DAY)
    assert at_close.resolved_by is None and at_close.status == "auto_resolved"
    assert at_close.days_stalled == later.days_stalled
    assert at_close.resolution.startswith("Project Created arrived late")


# --- the draft line: rendered from the latest draft's facts (the view holds no Slack markup) ----

SENT = datetime(2026, 3, 2, 9, 30, tzinfo=timezone.utc)


@pytest.mark.parametrize("draft, line", [
    (DraftLine("drafting", "U0CSM1", "llm:gpt"), "Recovery email being drafted by <@U0CSM1>"),
    (DraftLine("drafted", "U0CSM1", "template", attempt=2),
     "Recovery email drafted by <@U0CSM1> (template), awaiting approval (attempt 2)"),
    (DraftLine("drafted", None, "llm:gpt"), "Recovery email drafted by a CSM (AI), awaiting approval"),
    (DraftLine("approved", "U0CSM1", "llm:gpt", recipient="ana@acme.io"),
     f"Recovery email approved by <@U0CSM1>, sending to ana@acme.{WJ}io"),
    (DraftLine("sent", "U0CSM1", "llm:gpt", recipient="ana@acme.io", sent_at=SENT),
     f"Recovery email sent by <@U0CSM1> at 2026-03-02 09:30 UTC to ana@acme.{WJ}io"),
    (DraftLine("blocked", "U0CSM1", "llm:gpt", blocked_reason="the account has churned"),
     "Recovery email not sent: the account has churned"),
    (DraftLine("blocked", "U0CSM1", "llm:gpt", attempt=3, blocked_reason="could not be delivered: 550"),
     "Recovery email (attempt 3) could not be delivered: 550"),
])
def test_the_draft_line_says_where_the_recovery_email_is(draft, line):
    assert draft_text(draft) == line


def test_the_draft_line_escapes_the_recipient_the_reason_and_a_forged_actor():
    nasty = "<!channel> *x* <https://evil.example|click>"
    text = draft_text(DraftLine("blocked", nasty, "llm:gpt", recipient=nasty, blocked_reason=nasty))
    text += draft_text(DraftLine("approved", nasty, "llm:gpt", recipient=nasty))
    assert "<!channel>" not in text and "<https://" not in text and "&lt;!channel&gt;" in text


# --- the batched builder ---------------------------------------------------------------------------

def test_ping_views_reads_any_number_of_stalls_in_four_statements(engine, rules):
    accounts = [f"acc{i}" for i in range(6)]
    for n, account in enumerate(accounts):
        store(engine, rules, signup(account, T0, arr=10_000 * (n + 1), name=account.title())
              + [ticket(account, T0 + HOUR, f"{account}-t1"), ticket(account, T0 + HOUR, f"{account}-t2", status="Solved")],
              now=T0 + HOUR)
    scan(engine, rules, T0 + 3 * DAY)
    ids = [s.id for s in stalls(engine)]
    assert len(ids) >= len(accounts)
    with engine.begin() as conn:
        conn.execute(DRAFT.insert().values(stall_id=ids[0], account_id="acc0", status="sent", source="llm:gpt",
                                           recipient="ana@acc0.io", created_by="U0CSM1", sent_at=T0 + 3 * DAY,
                                           created_at=T0 + 3 * DAY, updated_at=T0 + 3 * DAY))
    statements: list[str] = []
    listen = lambda *args: statements.append(args[2])  # noqa: E731 - (conn, cursor, statement, ...)
    with engine.connect() as conn:
        event.listen(engine, "before_cursor_execute", listen)
        try:
            views = ping_views(conn, ids, rules, T0 + 4 * DAY)
        finally:
            event.remove(engine, "before_cursor_execute", listen)
        assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 4
        assert views == {i: ping_view(conn, i, rules, T0 + 4 * DAY) for i in ids}
    assert {v.open_tickets for v in views.values()} == {1}  # "Solved" is closed, whatever its case
    assert views[ids[0]].draft == DraftLine("sent", "U0CSM1", "llm:gpt", recipient="ana@acc0.io",
                                            sent_at=T0 + 3 * DAY)
    with engine.connect() as conn:
        assert ping_views(conn, [], rules, T0) == {}


@settings(max_examples=examples(200), deadline=None)
@given(reached=st.one_of(st.none(), st.integers(), st.text(max_size=40), st.lists(st.integers(), max_size=3),
                         st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
                         st.datetimes().map(lambda d: d.isoformat())))
def test_a_garbled_step_time_never_breaks_the_resolution_wording(reached):
    """Account.steps is JSON: whatever sits under the step, the ping still renders."""
    stall = SimpleNamespace(status="auto_resolved", rule="step_stall", step=PROJECT, steps={PROJECT: reached},
                            opened_at=T0, resolution="no longer stalled on 'Project Created'")
    text = resolution(stall)
    assert text and (text.startswith(PROJECT) or text == stall.resolution)


def test_a_refreshed_follow_up_shows_its_own_note_and_the_refresh_note():
    from bot.slack.queries import Posted
    from bot.slack.render.escalation import posted_message
    from bot.stalls.views import PingView

    view = PingView(stall_id=7, account_name="Acme", arr=5e4, priority="P0", stage="Setup", step="Connect",
                    days_stalled=3, why="stuck", owner="U0OWNER", note="Priority raised from P1 to P0")
    sent = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
    followup = posted_message(view, Posted("C1", "1.0", "attempt2", attempt=2, last_sent=sent))
    note = "Still stalled after recovery email 1 (sent 2026-03-02): recovery attempt 2"
    assert followup["text"].startswith(f"{note}: P0: Acme")
    assert f"{note} · Priority raised from P1 to P0" in str(followup["blocks"])
    plain = posted_message(view, Posted("C1", "2.0"))
    assert "Still stalled" not in str(plain) and "Priority raised" in str(plain["blocks"])
    handoff = posted_message(view, Posted("C2", "3.0", "winback", attempt=2, last_sent=sent))
    assert handoff["text"].startswith("Win-back handoff after 2 recovery emails")
