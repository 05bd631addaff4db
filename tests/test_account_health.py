"""Account health end to end: the scan scores accounts on real storage, the daily snapshot job
(idempotent per day, rolling retention) feeds the week's trend and the digest's chart, and
/journey, App Home and the digest show it. (tests/test_health.py is the /healthz endpoint.)"""

from __future__ import annotations

import json
from datetime import date, timedelta

from sqlalchemy import func, insert, select

from bot.scan import scan
from bot.slack.chart import alt_text, chart_data, chart_png, chart_title
from bot.slack.digest import build_digest
from bot.slack.render import digest_messages, home_view, journey_blocks
from bot.snapshots import HEALTH_DAYS_KEPT, CompanyFigures, chart_history, take_snapshot
from bot.stalls.reads import journey_data, stall_rows
from storage.models import AccountHealthDay, DailySnapshot

from factories import DAY, HOUR, PROJECT, T0, account_row, activated, signup, store, ticket, track
from test_blocks import all_text, assert_valid_message, digest, journey, row

HEALTH_DAY, SNAPSHOT = AccountHealthDay.__table__, DailySnapshot.__table__


def stalled_acme(engine, rules):
    """acme: signed up at T0 ($12K ARR), two open tickets (one urgent), stuck on its second step."""
    store(engine, rules, signup("acme", T0, arr=12000) + [ticket("acme", T0 + DAY, "t1"),
                                                            ticket("acme", T0 + DAY, "t2", priority="urgent")],
          now=T0 + DAY)


def health_rows(engine, day: date | None = None) -> dict[str, int]:
    stmt = select(HEALTH_DAY.c.account_id, HEALTH_DAY.c.health)
    if day is not None:
        stmt = stmt.where(HEALTH_DAY.c.day == day)
    with engine.connect() as conn:
        return dict(conn.execute(stmt).all())


# ------------------------------------------------------------------ the scan


def test_the_scan_scores_each_account_it_evaluates_and_rescores_on_change(engine, rules):
    stalled_acme(engine, rules)
    store(engine, rules, activated("fine", T0, arr=30000), now=T0 + DAY)
    now = T0 + 55 * HOUR
    scan(engine, rules, now)

    acme = account_row(engine, "acme")
    assert acme.health < 60
    assert acme.health_reasons[:2] == ["onboarding stalled 2 days", "2 open tickets (1 urgent)"]
    assert (account_row(engine, "fine").health, account_row(engine, "fine").health_reasons) == (100, [])

    # The customer moves on: the stall closes and the score recovers, with the change.
    store(engine, rules, [track("acme", PROJECT, now + HOUR)], now=now + HOUR)
    scan(engine, rules, now + 2 * HOUR)
    better = account_row(engine, "acme")
    assert better.health > acme.health
    assert better.health_reasons == ["2 open tickets (1 urgent)", "2 of 4 onboarding steps done"]


def test_a_rules_change_to_the_weights_rescores(engine, rules):
    stalled_acme(engine, rules)
    scan(engine, rules, T0 + 55 * HOUR)
    before = account_row(engine, "acme").health
    from bot.settings import default_rules_text
    from rules.config import parse_rules

    harsher = parse_rules(default_rules_text().replace("per_open_ticket = 5", "per_open_ticket = 7"))
    scan(engine, harsher, T0 + 55 * HOUR)  # the rules changed: a full scan
    assert account_row(engine, "acme").health == before - 4  # 2 tickets x 2 more points


# ------------------------------------------------------------------ the snapshot job


def test_the_snapshot_is_written_once_per_day_and_a_rerun_replaces_it(engine, rules):
    stalled_acme(engine, rules)
    now = T0 + 55 * HOUR
    scan(engine, rules, now)
    first = take_snapshot(engine, rules, now)
    assert first.day == now.date() and first.accounts == 1
    first_health = account_row(engine, "acme").health
    assert health_rows(engine) == {"acme": account_row(engine, "acme").health}
    assert dict(first.figures.open_alerts) == {"P0": 0, "P1": 1, "P2": 0, "P3": 0}
    assert dict(first.figures.arr_at_risk) == {"P0": 0.0, "P1": 12000.0, "P2": 0.0, "P3": 0.0}

    # Later the same day, after a change: the day's rows are replaced, not added to.
    store(engine, rules, [track("acme", PROJECT, now + HOUR)], now=now + HOUR)
    scan(engine, rules, now + 2 * HOUR)
    again = take_snapshot(engine, rules, now + 2 * HOUR)
    assert again.day == first.day
    assert health_rows(engine) == {"acme": account_row(engine, "acme").health}
    assert health_rows(engine)["acme"] > first_health
    with engine.connect() as conn:
        [snap] = conn.execute(select(SNAPSHOT)).all()
    assert snap.open_alerts == {"P0": 0, "P1": 0, "P2": 0, "P3": 0}  # the stall closed meanwhile


def test_per_account_rows_are_kept_for_a_rolling_90_days(engine, rules):
    stalled_acme(engine, rules)
    now = T0 + 55 * HOUR
    scan(engine, rules, now)
    today = now.date()
    with engine.begin() as conn:
        conn.execute(insert(HEALTH_DAY), [
            {"account_id": "acme", "day": today - timedelta(days=HEALTH_DAYS_KEPT), "health": 10},
            {"account_id": "acme", "day": today - timedelta(days=HEALTH_DAYS_KEPT - 1), "health": 20}])
    report = take_snapshot(engine, rules, now)
    assert report.pruned == 1
    with engine.connect() as conn:
        days = sorted(conn.execute(select(HEALTH_DAY.c.day)).scalars())
    assert days == [today - timedelta(days=HEALTH_DAYS_KEPT - 1), today]


def test_activation_counts_the_mature_cohort_by_track(engine, rules):
    now = T0 + 60 * DAY
    # Checkpoints (signup + 14 days) passed in the last 28 days: 20 and 30 days ago signups.
    events = (activated("big-on-time", now - 20 * DAY, arr=30000)
              + signup("big-late", now - 30 * DAY, arr=40000) + [track("big-late", "Report Shared", now - 2 * DAY)]
              + signup("std-never", now - 25 * DAY, arr=9000)
              + signup("too-young", now - 5 * DAY, arr=9000)  # still has time: not in the cohort
              + signup("too-old", now - 50 * DAY, arr=9000))  # checkpoint long past: not in it either
    store(engine, rules, events, now=now)
    figures = take_snapshot(engine, rules, now).figures
    assert json.loads(json.dumps(figures.activation)) == {
        "high_touch": {"rate": 0.5, "accounts": 2}, "standard": {"rate": 0.0, "accounts": 1}}
    assert list(figures.activation) == ["high_touch", "standard"]  # the tracks' natural order


# ------------------------------------------------------------------ the trend


def test_the_trend_is_the_change_since_the_snapshot_a_week_ago(engine, rules):
    stalled_acme(engine, rules)
    week_ago = T0 + 55 * HOUR
    scan(engine, rules, week_ago)
    take_snapshot(engine, rules, week_ago)
    then = account_row(engine, "acme").health

    now = week_ago + 7 * DAY
    scan(engine, rules, now)  # stalled a week longer
    assert account_row(engine, "acme").health < then
    with engine.connect() as conn:
        j = journey_data(conn, "acme", rules, now)
        [home_row], _ = stall_rows(conn, now, rules=rules)
    assert (j.health, j.health_week_ago) == (account_row(engine, "acme").health, then)
    assert home_row.health_trend == j.health - then < 0

    blocks = assert_valid_message(journey_blocks(j))
    assert f"*Health {j.health}* ↓ from {then} last week · onboarding stalled 9 days" in all_text(blocks)
    # No snapshot a week before: the score alone.
    with engine.connect() as conn:
        j = journey_data(conn, "acme", rules, now + 5 * DAY)
    assert j.health_week_ago is None


# ------------------------------------------------------------------ the chart


def figures(day: date, n: int) -> CompanyFigures:
    return CompanyFigures(day=day, open_alerts={"P0": n, "P1": 2 * n, "P2": 3, "P3": 1},
                          arr_at_risk={"P0": 50000.0 * n, "P1": 10000.0, "P2": 2000.0, "P3": 0.0},
                          activation={"standard": {"rate": 0.4, "accounts": 30},
                                      "high_touch": {"rate": 0.5 + n / 200, "accounts": 10}})


def test_the_chart_shows_eight_weeks_by_priority_and_activation_by_track():
    last = date(2026, 12, 4)
    history = [figures(last - timedelta(days=i), i % 10) for i in range(70)]  # ten weeks, any order
    c = chart_data(history)
    assert len(c.days) == 56 and c.days[0] == last - timedelta(days=55) and c.days[-1] == last and c.full
    assert list(c.open_alerts) == ["P0", "P1", "P2", "P3"]
    assert c.open_alerts["P1"][-1] == 0 and c.open_alerts["P1"][0] == 2 * 5  # 55 days back: n = 5
    assert c.arr_at_risk["P0"][0] == 250000.0
    assert list(c.activation) == ["high_touch", "standard"]  # natural order, not the stored one
    assert chart_title(c) == "Open alerts and ARR at risk by priority, activation by track: last 8 weeks"
    alt = alt_text(c)
    assert "Open alerts today: 4 (from 19 on 10 Oct)" in alt and "P0 0, P1 0, P2 3, P3 1" in alt
    assert "ARR at risk today: $12K (from $262K on 10 Oct)" in alt
    assert "High touch 50%, Standard 40%" in alt and len(alt) <= 1000
    png = chart_png(c)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png == chart_png(c)  # deterministic


def test_with_less_history_the_chart_says_since_when():
    last = date(2026, 12, 4)
    c = chart_data([figures(last - timedelta(days=i), 1) for i in (0, 1, 3)])  # a day missing
    assert c.days == (last - timedelta(days=3), last - timedelta(days=1), last) and not c.full
    assert chart_title(c).endswith("since 01 Dec 2026")
    one = chart_data([CompanyFigures(day=last, open_alerts={}, arr_at_risk={})])
    assert one.days == (last,) and one.open_alerts["P0"] == (0,) and one.activation == {}
    assert "no mature cohort yet" in alt_text(one)
    assert chart_png(one)[:4] == b"\x89PNG"
    assert chart_data([]) is None


def test_the_digest_charts_the_snapshots_ending_today(engine, rules):
    stalled_acme(engine, rules)
    now = T0 + 55 * HOUR
    scan(engine, rules, now)
    with engine.connect() as conn:
        [live] = chart_history(conn, rules, now)  # no snapshot yet: today's figures, read live
    assert live.day == now.date() and live.open_alerts["P1"] == 1
    take_snapshot(engine, rules, now - DAY)
    take_snapshot(engine, rules, now)
    d = build_digest(engine, rules, now)
    assert [h.day for h in d.history] == [now.date() - timedelta(days=1), now.date()]
    c = chart_data(d.history)
    assert c.open_alerts["P1"] == (1, 1) and c.arr_at_risk["P1"] == (12000.0, 12000.0)
    [digest_row] = d.rows
    assert digest_row.health == account_row(engine, "acme").health


# ------------------------------------------------------------------ rendering


def test_rows_show_health_and_its_trend_compactly():
    rows = [row(1, health=62, health_trend=-9), row(2, health=80, health_trend=0), row(3)]
    home = home_view(rows, "U0CSM1").to_dict()
    text = json.dumps(home, ensure_ascii=False)
    assert "· health 62 ↓9\\n" in text
    assert "· health 80\\n" in text  # steady: no mark
    assert "*Account 3* · $99,997 ARR\\n" in text  # not scored yet: nothing shown
    for message in digest_messages(digest(rows)):
        assert_valid_message(message)
    assert "health 62 ↓9" in "".join(all_text(assert_valid_message(m)) for m in digest_messages(digest(rows)))


def test_journey_shows_health_with_reasons_and_without_history():
    j = journey(health=62, health_week_ago=71, health_reasons=("onboarding stalled 4 days", "2 open tickets"))
    text = all_text(assert_valid_message(journey_blocks(j)))
    assert "*Health 62* ↓ from 71 last week · onboarding stalled 4 days, 2 open tickets" in text
    text = all_text(assert_valid_message(journey_blocks(journey(health=100))))
    assert "*Health 100*" in text and "last week" not in text
    assert "Health" not in all_text(assert_valid_message(journey_blocks(journey())))


def test_the_snapshot_command_writes_today_once(engine, rules, db_url):
    from click.testing import CliRunner

    from bot.cli import main

    stalled_acme(engine, rules)
    now = T0 + 55 * HOUR
    scan(engine, rules, now)
    env = {"DATABASE_URL": db_url, "STALLWATCH_RULES": None}
    for _ in range(2):
        result = CliRunner().invoke(main, ["snapshot", "--now", now.isoformat()], env=env, catch_exceptions=True)
        assert result.exit_code == 0, result.output
        assert f"snapshot for {now.date()}: 1 account health rows" in result.output and "P1 1" in result.output
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(SNAPSHOT)).scalar_one() == 1
    assert health_rows(engine) == {"acme": account_row(engine, "acme").health}
