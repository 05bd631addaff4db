"""The recovery drafter's production deadlines in real time (bot/drafting/llm.py): a request
gets at most 10 s, the whole draft at most 12 s, and the CSM has a usable draft well within
15 s. The mechanics are tested in milliseconds in tests/test_drafter.py; this is the SLA check,
once per deadline (SQLite only: the clock, not the database)."""

from __future__ import annotations

import time

import pytest

from bot.drafting.llm import DEADLINE_S, REQUEST_TIMEOUT_S, Drafter
from bot.slack.draft_views import BODY, SUBJECT
from tests.test_drafter import OUTREACH, llm_settings, sample_facts
from tests.test_recovery_flow import env, initial, texts  # noqa: F401 - env is the flow's fixture

pytest_plugins = ["tests.fakes.fixtures"]


def test_a_slow_model_still_gives_a_usable_template_draft_within_15_seconds(env, db_url):  # noqa: F811
    if not db_url.startswith("sqlite"):
        pytest.skip("the clock, not the database: once is enough")
    env.llm.delay(30)
    started = time.monotonic()
    view = env.click_draft()
    elapsed = time.monotonic() - started
    assert REQUEST_TIMEOUT_S - 0.5 <= elapsed < 15, elapsed
    assert "Template draft" in texts(view) and initial(view, BODY) and initial(view, SUBJECT)
    assert env.draft()["source"] == "template"
    assert env.draft()["note"] == f"the model did not answer within {REQUEST_TIMEOUT_S:.0f} s"


def test_a_trickling_model_is_cut_off_at_the_12_second_deadline(fake_openai):
    """One byte a second: no read ever times out, so only the overall deadline ends it."""
    fake_openai.trickle(1.0)
    started = time.monotonic()
    result = Drafter(llm_settings(fake_openai), OUTREACH).draft(sample_facts())
    elapsed = time.monotonic() - started
    assert DEADLINE_S - 0.5 <= elapsed < DEADLINE_S + 1.5, elapsed
    assert result.source == "template"
    assert result.note == f"the model did not answer within {DEADLINE_S:.0f} s"
