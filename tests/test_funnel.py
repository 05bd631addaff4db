"""The funnel's rates on mature cohorts (bot/stalls/reads.funnel_data), from hand-made cohorts
stored through the real ingest path and scanned, rendered as /funnel and the digest show them."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from bot.scan import scan
from bot.settings import default_rules_text
from bot.slack.render import funnel_blocks
from bot.slack.render.funnel import activation_line, funnel_summary
from bot.stalls.reads import funnel_data
from rules.config import parse_rules
from tests.factories import ACTIVATION, DAY, HOUR, INTEGRATION, INVITE, PROJECT, signup, store, track
from tests.test_blocks import assert_valid_message

UTC = timezone.utc
NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)
# High touch gets its own checkpoint: day 21 instead of the journey's day 14.
RULES = parse_rules(default_rules_text() + "\n[tracks.high_touch.thresholds]\ncheckpoint_days = 21\n")
HIGH, STANDARD, SELF = 50_000, 10_000, 1_000  # ARR that puts an account on each track


def read(engine, days: int = 30):
    with engine.connect() as conn:
        return funnel_data(conn, RULES, NOW, days)


def test_activation_counts_only_accounts_past_their_own_checkpoint(engine):
    events = []
    for i in range(6):  # past day 21 (signed up 25 days ago): 4 activated by day 21, one on day 22
        events += signup(f"h{i}", NOW - 25 * DAY, arr=HIGH)
    for i in range(4):
        events.append(track(f"h{i}", ACTIVATION, NOW - 20 * DAY))
    events.append(track("h4", ACTIVATION, NOW - 3 * DAY))  # day 22: too late for "by day 21"
    events += signup("h-young", NOW - 15 * DAY, arr=HIGH)  # past day 14 but not its day 21
    events += signup("h-old", NOW - 60 * DAY, arr=HIGH)  # its checkpoint passed before the window
    for i in range(5):  # past day 14: 2 of 5 activated
        events += signup(f"s{i}", NOW - 20 * DAY, arr=STANDARD)
    for i in range(2):
        events.append(track(f"s{i}", ACTIVATION, NOW - 17 * DAY))
    events += signup("s-fresh", NOW - 10 * DAY, arr=STANDARD)  # activated fast, but not mature: left out
    events.append(track("s-fresh", ACTIVATION, NOW - 9 * DAY))
    for i in range(3):  # too few to rate
        events += signup(f"x{i}", NOW - 20 * DAY, arr=SELF)
    events.append(track("x0", ACTIVATION, NOW - 19 * DAY))
    store(engine, RULES, events, now=NOW)
    scan(engine, RULES, NOW)

    f = read(engine)
    rates = {t.track: (t.accounts, t.activation_rate, t.checkpoint_days) for t in f.tracks}
    assert [t.track for t in f.tracks] == ["high_touch", "standard", "self_serve"]  # the natural order
    assert rates == {"high_touch": (6, 4 / 6, 21), "standard": (5, 2 / 5, 14), "self_serve": (3, 1 / 3, 14)}
    # The mature accounts not activated stalled (h4 had activated, late, before the one scan).
    assert [t.stall_rate for t in f.tracks] == [1 / 6, 3 / 5, 2 / 3]
    assert f.activation_name == "Activated (Report Shared)"
    assert activation_line(f) == ("Activated (Report Shared) by day 21: High touch 67% (n=6) · "
                                  "Standard 40% (n=5, by day 14) · Self serve – (n=3, by day 14)")
    text = json.dumps(assert_valid_message(funnel_blocks(f)), ensure_ascii=False)
    assert "*High touch* (n=6)\\nactivated by day 21: 67% · stalled: 17%" in text
    assert "*Self serve* (n=3)\\nactivated by day 14: – · stalled: –" in text

    # A week later h-young is past its day 21 (not activated), and s-fresh past its day 14.
    with engine.connect() as conn:
        later = funnel_data(conn, RULES, NOW + 7 * DAY, 30)
    assert [(t.track, t.accounts) for t in later.tracks] == [("high_touch", 7), ("standard", 6), ("self_serve", 3)]
    assert later.tracks[0].activation_rate == 4 / 7 and later.tracks[1].activation_rate == 3 / 6


def test_a_step_counts_an_account_once_it_had_time_to_move_on(engine):
    events = []
    for i in range(5):  # ten days ago; four create a project the next day, two of them connect
        events += signup(f"a{i}", NOW - 10 * DAY, arr=STANDARD)
    for i in range(4):
        events.append(track(f"a{i}", PROJECT, NOW - 9 * DAY))
    for i in range(2):
        events.append(track(f"a{i}", INTEGRATION, NOW - 8 * DAY))
    events += signup("c", NOW - 3 * DAY, arr=STANDARD)  # created a project a day ago: not yet due to connect
    events.append(track("c", PROJECT, NOW - 1 * DAY))
    for i in range(3):  # signed up 5 hours ago: not yet due to create a project, even the one who did
        events += signup(f"fresh{i}", NOW - 5 * HOUR, arr=STANDARD)
    events.append(track("fresh0", PROJECT, NOW - 4 * HOUR))
    # Every step done the day after signup, not activated: the last step (next: activation)
    # counts the account only once past its checkpoint.
    for name, days in (("d-mature", 20), ("d-young", 5)):
        events += signup(name, NOW - days * DAY, arr=STANDARD)
        events += [track(name, e, NOW - (days - 1) * DAY) for e in (PROJECT, INTEGRATION, INVITE)]
    events += signup("old", NOW - 200 * DAY, arr=STANDARD)  # long before the window
    store(engine, RULES, events, now=NOW)
    scan(engine, RULES, NOW)

    f = read(engine)
    assert [(s.name, s.entered, s.converted) for s in f.stages] == [
        ("Sign up", 8, 7),  # a0-a4, c, d-mature, d-young (not the three fresh ones, nor old)
        ("Create a project", 6, 4),  # a0-a3, d-mature, d-young (not c, not fresh0)
        ("Connect integration", 4, 2),  # a0, a1, d-mature, d-young
        ("Invite a teammate", 1, 0),  # d-mature (d-young's day 14 is ahead)
    ]
    assert f.stages[0].median_days == 1.0
    text = json.dumps(assert_valid_message(funnel_blocks(f)), ensure_ascii=False)
    assert "Sign up: 8 → 7 (88%) · median 1 day" in text
    assert "Connect integration: 4 → 2 (–)" in text
    assert "*Weakest stage:* Create a project: only 67% move on (n=6)" in text
    assert funnel_summary(f).startswith("*Funnel, last 30 days:* Sign up 88% (n=8) → Create a project 67% (n=6) → "
                                        "Connect integration – (n=4) → Invite a teammate – (n=1)")
