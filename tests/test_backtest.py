"""`stallwatch backtest`: history files, the replay on a simulated clock, the report.

Histories are written as JSON Lines in the ingest routes' formats and replayed through the
real store, scan, router, outbox sender and digest; nothing of ours is mocked.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from bot.backtest.history import HistoryError, read_history
from bot.backtest.replay import SpanError, replay, replay_all
from bot.cli import main
from bot.settings import default_rules_text, load_rules
from rules.backtest import DigestFact, PingFact, StallFact, summarize

UTC = timezone.utc
MON = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday, 10:00 UTC: outside quiet hours
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


# --------------------------------------------------------------------------- history builders


def ts(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


_ids = iter(range(1, 10**9))


def seg(message: dict) -> dict:
    return {"source": "segment", "message": {"messageId": f"m-{next(_ids)}", **message}}


def signup(account: str, at: datetime, *, arr: float, owner: str | None = "csm@yourco.example") -> list[dict]:
    traits = {"name": account.title(), "arr": arr, "plan": "business" if arr >= 25000 else "growth"}
    if owner:
        traits["owner_email"] = owner
    return [
        seg({"type": "group", "userId": f"{account}-u", "groupId": account, "traits": traits, "timestamp": ts(at)}),
        seg({"type": "track", "userId": f"{account}-u", "event": "Signed Up", "properties": {"plan": "pro"},
             "context": {"groupId": account}, "timestamp": ts(at)}),
    ]


def step(account: str, name: str, at: datetime, received: datetime | None = None) -> dict:
    record = seg({"type": "track", "userId": f"{account}-u", "event": name, "context": {"groupId": account},
                  "timestamp": ts(at)})
    if received is not None:
        record["received_at"] = ts(received)
    return record


def page(account: str, at: datetime) -> dict:
    return seg({"type": "page", "userId": f"{account}-u", "name": "Home", "properties": {"account_id": account},
                "timestamp": ts(at)})


def ticket(account: str, tid: str, at: datetime, topic: str, status: str = "open") -> dict:
    return {"source": "tickets", "ticket": {"id": tid, "account_id": account, "status": status, "topic": topic,
                                            "subject": f"about {topic}", "created_at": ts(at)}}


def write(path: Path, records: list, *, raw: list[str] = ()) -> Path:
    lines = [json.dumps(r) if not isinstance(r, str) else r for r in records]
    path.write_text("\n".join([*lines, *raw]) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def rules():
    return load_rules()


def run(path: Path, rules, **kwargs):
    return replay(read_history(path), rules, label="test", **kwargs)


def day(summary, which: date):
    return next(d for d in summary.days if d.day == which)


# --------------------------------------------------------------------------- the replay


def test_step_stall_ping_delay_and_noise(tmp_path, rules):
    """Signed up Monday 10:00 and nothing more: stalled Wednesday 10:00 (48 h), confirmed 6 h
    later (step_stall.confirm_hours) and opened by the 16:00 scan, pinged at once (P0: $60K);
    the step done at 22:00 closes it: noise."""
    history = write(tmp_path / "h.jsonl", [*signup("big", MON, arr=60000), step("big", "Project Created", MON + 60 * HOUR)])
    result = run(history, rules)
    summary = result.summary()
    assert [d.day for d in summary.days] == [date(2026, 3, 2), date(2026, 3, 3), date(2026, 3, 4)]
    wed = day(summary, date(2026, 3, 4))
    assert wed.opened == 1 and wed.by_rule == {"step_stall": 1} and wed.by_priority == {"P0": 1}
    assert wed.by_track == {"high_touch": 1} and wed.by_stage == {"Onboarding": 1}
    assert wed.pings == 1 and wed.max_pings_per_csm == 1 and wed.busiest_csm == "csm@yourco.example"
    assert wed.median_delay_hours == 6.0  # the 16:00 scan opened it the moment it was confirmed
    assert wed.noise == 1 and wed.arr_flagged == 60000
    assert day(summary, date(2026, 3, 2)).digest_items is None  # Monday's digest (09:00) was before the history
    assert day(summary, date(2026, 3, 3)).digest_items == 0
    stall = result.stalls[0]
    assert stall.opened_at == MON + 54 * HOUR and stall.status == "auto_resolved"
    assert stall.resolved_at == MON + 60 * HOUR  # evaluated as the progress arrived, not at the next scan
    assert summary.totals.pings == 1 and summary.totals.noise == 1 and summary.totals.noise_rate == 1.0


def test_detection_delay_is_the_confirmation_plus_the_scan_interval_at_most(tmp_path, rules):
    at = MON + timedelta(minutes=3)  # stalls at Wednesday 10:03, confirmed at 16:03: the 16:05 scan finds it
    history = write(tmp_path / "h.jsonl", [*signup("big", at, arr=60000), page("other", at + 55 * HOUR)])
    summary = run(history, rules).summary()
    assert day(summary, date(2026, 3, 4)).median_delay_hours == pytest.approx(6 + 2 / 60)


def test_quiet_hours_hold_a_p1_ping_until_morning(tmp_path, rules):
    """A P1 ($12K) stalling Wednesday 16:00, confirmed at 22:00, is pinged Thursday 08:00, when
    quiet hours end."""
    at = datetime(2026, 3, 2, 16, 0, tzinfo=UTC)
    history = write(tmp_path / "h.jsonl", [*signup("mid", at, arr=12000), page("other", at + 66 * HOUR)])
    result = run(history, rules)
    summary = result.summary()
    assert day(summary, date(2026, 3, 4)).opened == 1 and day(summary, date(2026, 3, 4)).pings == 0
    assert day(summary, date(2026, 3, 5)).pings == 1
    assert result.pings[0].at == datetime(2026, 3, 5, 8, 0, tzinfo=UTC)


def test_a_p0_is_not_held_behind_a_held_p1(tmp_path, rules):
    night = datetime(2026, 3, 2, 22, 0, tzinfo=UTC)
    records = [*signup("mid", night, arr=12000), *signup("big", night + HOUR, arr=60000), page("big", night + 60 * HOUR)]
    result = run(write(tmp_path / "h.jsonl", records), rules)
    p0 = next(p for p in result.pings if p.priority == "P0")
    assert p0.at == night + HOUR + 54 * HOUR  # Thursday 05:00, when its stall was confirmed


def test_a_held_ping_whose_stall_closes_first_never_goes_out(tmp_path, rules):
    at = datetime(2026, 3, 2, 22, 0, tzinfo=UTC)
    history = write(tmp_path / "h.jsonl", [*signup("mid", at, arr=12000),
                                           step("mid", "Project Created", datetime(2026, 3, 5, 6, 0, tzinfo=UTC)),
                                           page("other", at + 60 * HOUR)])
    summary = run(history, rules).summary()
    assert summary.totals.opened == 1 and summary.totals.pings == 0 and summary.totals.noise == 1


def test_ticket_spike_opens_when_the_ticket_arrives(tmp_path, rules):
    base = MON + timedelta(minutes=1)
    records = [*signup("acme", MON - 20 * DAY, arr=40000), step("acme", "Report Shared", MON - 19 * DAY),
               ticket("acme", "T1", base, "sso"), ticket("acme", "T2", base + DAY, "sso"),
               ticket("acme", "T3", base + 2 * DAY + timedelta(minutes=1), "billing")]
    result = run(write(tmp_path / "h.jsonl", records), rules)
    spikes = [s for s in result.stalls if s.rule == "ticket_spike"]
    assert len(spikes) == 1
    assert spikes[0].opened_at == base + 2 * DAY + timedelta(minutes=1)  # not at the next 5-minute scan
    assert spikes[0].delay == timedelta(0)


def test_late_event_moves_the_journey_and_closes_the_stall(tmp_path, rules):
    """The step was done Tuesday 06:00 but arrives Thursday 10:00: the stall opened Wednesday on
    'Project Created' closes on arrival, and one on the next step (waiting since Tuesday 06:00,
    stalled since Thursday 06:00) opens once confirmed, at 12:00."""
    records = [*signup("big", MON, arr=60000),
               step("big", "Project Created", MON + 20 * HOUR, received=MON + 72 * HOUR), page("other", MON + 80 * HOUR)]
    result = run(write(tmp_path / "h.jsonl", records), rules)
    stale, current = result.stalls
    assert stale.rule == current.rule == "step_stall"
    assert stale.status == "auto_resolved" and stale.resolved_at == MON + 72 * HOUR
    assert stale.opened_at == MON + 54 * HOUR and stale.noise  # closed 18 h after it opened
    assert current.status == "open" and current.opened_at == MON + 74 * HOUR
    assert current.threshold_at == MON + 68 * HOUR and current.delay == 6 * HOUR  # the confirmation


def test_skipping_idle_scans_changes_nothing(tmp_path, rules):
    """The replay's shortcuts (no scan when nobody is due, the sender only when a row is due)
    give exactly what scanning and sending at every step gives: quiet-hour holds, a held ping
    cancelled, a P0 behind a held P1 in the alerts channel, ticket spikes, late events."""
    at = datetime(2026, 3, 2, 21, 0, tzinfo=UTC)
    records = [*signup("big", MON, arr=60000), *signup("mid", at, arr=12000), *signup("small", MON, arr=3000),
               *signup("mid2", at + HOUR, arr=15000), *signup("big2", at + 2 * HOUR, arr=90000),
               step("mid2", "Project Created", at + 50 * HOUR),
               step("small", "Project Created", MON + 60 * HOUR), ticket("big", "T1", MON + DAY, "sso"),
               ticket("big", "T2", MON + DAY + HOUR, "sso"), ticket("big", "T3", MON + 2 * DAY, "billing"),
               step("big", "Project Created", MON + 5 * HOUR, received=MON + 49 * HOUR),
               page("mid", at + 70 * HOUR)]
    history = read_history(write(tmp_path / "h.jsonl", records))
    fast, slow = replay(history, rules), replay(history, rules, skip_idle=False)
    assert fast.scans_skipped > 0 and slow.scans_skipped == 0 and slow.scans > fast.scans
    assert fast.stalls == slow.stalls and len(fast.stalls) >= 5
    assert fast.pings == slow.pings and len(fast.pings) >= 3  # one per account: "big" has two stalls
    assert fast.digests == slow.digests


def test_duplicates_are_counted_not_replayed_twice(tmp_path, rules):
    records = signup("big", MON, arr=60000)
    result = run(write(tmp_path / "h.jsonl", records + records), rules)
    assert result.stored == 2 and result.duplicates == 2


def test_pings_are_read_per_account_and_per_csm(tmp_path, rules):
    """Two $60K accounts of one CSM stall Wednesday 10:00 and 11:00: each ping carries its
    stall's account (so the per-account figures hold however the router groups a ping), one
    CSM gets two, no account twice."""
    records = [*signup("big", MON, arr=60000), *signup("big2", MON + HOUR, arr=60000), page("other", MON + 3 * DAY)]
    result = run(write(tmp_path / "h.jsonl", records), rules)
    account_of = {s.id: s.account_id for s in result.stalls}
    assert sorted(p.account_id for p in result.pings) == ["big", "big2"]
    assert all(p.account_id == account_of[p.stall_id] for p in result.pings)
    wed = day(result.summary(), date(2026, 3, 4))
    assert wed.pings == 2 and wed.accounts_pinged == 2 and wed.accounts_pinged_twice == 0
    assert wed.max_pings_per_account == 1 and wed.csms_pinged == 1 and wed.pings_per_csm_mean == 2.0
    assert wed.opened == 2 and wed.accounts_opened == 2 and wed.stalls_per_account == 1.0


def test_history_spanning_centuries_is_a_clean_error(tmp_path, rules):
    records = [page("a", datetime(1995, 1, 1, tzinfo=UTC)), page("a", datetime(2150, 1, 1, tzinfo=UTC))]
    with pytest.raises(SpanError, match="spans"):
        run(write(tmp_path / "h.jsonl", records), rules)


# --------------------------------------------------------------------------- reading histories


def test_malformed_lines_are_located_and_skipped(tmp_path):
    path = write(tmp_path / "events.jsonl", [*signup("big", MON, arr=60000)], raw=[
        "{not json",
        json.dumps({"source": "segment", "message": {"type": "track", "event": "X", "timestamp": ts(MON)}}),
        json.dumps({"source": "fax", "message": {}}),
        json.dumps({"source": "stripe", "event": {"id": "evt_1", "type": "charge.refunded", "created": 1,
                                                  "data": {"object": {}}}}),
        "",
        "# a comment",
        json.dumps({"source": "tickets", "ticket": {"id": "T1", "status": "open"}}),
    ])
    history = read_history(path)
    assert len(history.entries) == 2
    assert history.ignored == 1  # a Stripe type Stallwatch ignores, as the route does: not an error
    assert str(history.problems[0]).startswith(f"{path}:3: not JSON (")  # orjson's words follow
    assert [str(p) for p in history.problems[1:]] == [
        f"{path}:4: segment message: userId or anonymousId is required",
        f"{path}:5: source must be one of segment, stripe, tickets (got 'fax')",
        f"{path}:9: tickets ticket: created_at is required (an ISO 8601 timestamp)",
    ]
    with pytest.raises(HistoryError) as info:
        read_history(path, strict=True)
    assert str(info.value) == str(history.problems[0])


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def cli():
    runner = CliRunner(mix_stderr=False) if "mix_stderr" in CliRunner.__init__.__code__.co_varnames else CliRunner()

    def invoke(*args: str):
        return runner.invoke(main, list(args), env={"STALLWATCH_RULES": None, "SLACK_BOT_TOKEN": None},
                             catch_exceptions=False)

    return invoke


def test_cli_table(tmp_path, cli):
    path = write(tmp_path / "events.jsonl", [*signup("big", MON, arr=60000), page("big", MON + 3 * DAY)])
    result = cli("backtest", str(path))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"Backtest of {path}: 3 records, 3 replayed" in out
    assert "day " in out and "pings" in out and "max/CSM" in out and "noise" in out and "ARR flagged" in out
    assert "Wed 2026-03-04" in out and "total" in out
    assert "Stalls opened by rule" in out and "step_stall" in out
    assert "median detection delay" in out
    assert "accts" in out and "max/acct" in out and "avg/CSM" in out and "per acct" in out
    assert "accounts pinged (distinct)" in out and "stalls opened per account" in out
    assert "accounts pinged 2+ times the same day (account-days)" in out and "0 of 1" in out
    # The tracks as the replayed rules route and tune them (self-serve: digest only by default).
    assert "    self_serve: digest only (no ping); stalled after 48 h on a step, not activated at day 14" in out


def test_cli_json_schema(tmp_path, cli):
    path = write(tmp_path / "events.jsonl", [*signup("big", MON, arr=60000), page("big", MON + 3 * DAY)],
                 raw=["oops"])
    result = cli("backtest", str(path), "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["schema"] == "stallwatch.backtest/1"
    assert doc["input"]["records"] == 4 and doc["input"]["used"] == 3 and doc["input"]["skipped"] == 1
    assert doc["input"]["problems"][0]["line"] == 4 and "not JSON" in doc["input"]["problems"][0]["error"]
    assert f"{path}:4: not JSON" in result.stderr
    (run_doc,) = doc["runs"]
    assert run_doc["label"] == "default rules" and run_doc["rules"] is None
    assert {"seconds", "scans", "scans_skipped", "evaluations", "events_stored", "duplicates", "days",
            "totals", "store_failures", "scan_failures"} <= run_doc.keys()
    wed = next(d for d in run_doc["days"] if d["day"] == "2026-03-04")
    assert wed == {
        "day": "2026-03-04", "pings": 1, "max_pings_per_csm": 1, "busiest_csm": "csm@yourco.example",
        "digest_items": 0, "digest_open": 0, "accounts_pinged": 1, "accounts_pinged_twice": 0,
        "max_pings_per_account": 1, "pings_per_csm_mean": 1.0, "stalls_per_account": 1.0, "noise_rate": 0.0,
        "opened": 1, "opened_by_rule": {"step_stall": 1},
        "opened_by_stage": {"Onboarding": 1}, "opened_by_track": {"high_touch": 1},
        "opened_by_priority": {"P0": 1}, "median_detection_delay_hours": 6.0, "noise": 0, "arr_flagged": 60000.0,
    }
    totals = run_doc["totals"]
    assert totals["pings"] == 1 and totals["opened"] == 1 and totals["noise_rate"] == 0.0
    assert totals["noise_by_rule"] == {"step_stall": 0}
    assert totals["pings_by_csm"] == {"csm@yourco.example": 1}
    assert totals["accounts_pinged"] == 1 and totals["account_days_pinged_twice"] == 0
    assert totals["pings_per_csm_day_mean"] == 1.0 and totals["stalls_per_account"] == 1.0


def test_cli_against_side_by_side(tmp_path, cli):
    tuned = tmp_path / "tuned.toml"
    tuned.write_text(default_rules_text().replace("stall_after_hours = 48", "stall_after_hours = 96"), encoding="utf-8")
    path = write(tmp_path / "events.jsonl", [*signup("big", MON, arr=60000), page("big", MON + 3 * DAY)])
    result = cli("backtest", str(path), "--against", str(tuned))
    assert result.exit_code == 0
    assert "A: default rules" in result.stdout and "B: tuned.toml" in result.stdout
    assert "1 → 0" in result.stdout  # the stall Wednesday opens with 48 h, not with 96 h
    doc = json.loads(cli("backtest", str(path), "--against", str(tuned), "--json").stdout)
    assert [r["label"] for r in doc["runs"]] == ["default rules", "tuned.toml"]
    assert [r["rules"] for r in doc["runs"]] == [None, str(tuned)]
    assert [r["totals"]["opened"] for r in doc["runs"]] == [1, 0]


def test_cli_against_in_parallel_matches_sequential(tmp_path, rules):
    history = read_history(write(tmp_path / "events.jsonl", [*signup("big", MON, arr=60000),
                                                             page("big", MON + 3 * DAY)]))
    parallel = replay_all(history, [(rules, "a"), (rules, "b")], parallel=True)
    sequential = replay_all(history, [(rules, "a"), (rules, "b")], parallel=False)
    assert [r.stalls for r in parallel] == [r.stalls for r in sequential]
    assert [r.pings for r in parallel] == [r.pings for r in sequential]


def test_cli_strict_stops_at_the_first_bad_line(tmp_path, cli):
    path = write(tmp_path / "events.jsonl", signup("big", MON, arr=60000), raw=["[1, 2]", "{"])
    result = cli("backtest", str(path), "--strict")
    assert result.exit_code == 1
    assert f"{path}:3: a record must be a JSON object" in result.stderr
    assert f"{path}:4:" not in result.stderr
    ok = cli("backtest", str(path))
    assert ok.exit_code == 0 and "2 skipped" in ok.stdout


def test_cli_empty_history(tmp_path, cli):
    path = tmp_path / "empty.jsonl"
    path.write_text("", encoding="utf-8")
    result = cli("backtest", str(path))
    assert result.exit_code == 0
    assert "Nothing to report" in result.stdout
    doc = json.loads(cli("backtest", str(path), "--json").stdout)
    assert doc["input"]["records"] == 0 and doc["runs"][0]["days"] == [] and doc["runs"][0]["totals"]["pings"] == 0


def test_cli_bad_rules_file_is_located(tmp_path, cli):
    bad = tmp_path / "bad.toml"
    bad.write_text(default_rules_text().replace("P0 = 25000", "P0 = -1"), encoding="utf-8")
    path = write(tmp_path / "events.jsonl", signup("big", MON, arr=60000))
    result = cli("backtest", str(path), "--rules", str(bad))
    assert result.exit_code == 1
    assert f"{bad}:" in result.stderr and "problem(s) in the rules file" in result.stderr


# --------------------------------------------------------------------------- the figures (pure)


def _stall(i, *, rule="step_stall", opened, threshold=None, status="open", resolved=None, account="a", arr=1000.0):
    return StallFact(id=i, account_id=account, rule=rule, stage="Onboarding", track="standard", priority="P1",
                     owner=None, arr=arr, opened_at=opened, threshold_at=threshold or opened, status=status,
                     resolved_at=resolved)


def test_summarize_definitions():
    d0 = datetime(2026, 3, 2, tzinfo=UTC)
    stalls = [
        _stall(1, opened=d0 + HOUR, threshold=d0, status="auto_resolved", resolved=d0 + 20 * HOUR),  # noise
        _stall(2, opened=d0 + HOUR, threshold=d0 + HOUR - timedelta(minutes=30), status="auto_resolved",
               resolved=d0 + 30 * HOUR),  # closed after 24 h: not noise
        _stall(3, rule="usage_drop", opened=d0 + 2 * HOUR, threshold=d0 - 7 * DAY, account="b", arr=500.0),
        _stall(4, opened=d0 + DAY, status="suppressed", resolved=d0 + DAY + HOUR, account="a"),
    ]
    pings = [PingFact(1, "x@y", d0 + HOUR, "P1"), PingFact(2, "x@y", d0 + 2 * HOUR, "P1"),
             PingFact(3, None, d0 + 3 * HOUR, "P0")]
    digests = [DigestFact(at=d0 + 9 * HOUR, listed=40, open_total=55)]
    s = summarize(stalls, pings, digests, d0.date(), (d0 + 2 * DAY).date())
    first = s.days[0]
    assert first.pings == 3 and first.max_pings_per_csm == 2 and first.busiest_csm == "x@y"
    assert first.digest_items == 40 and first.digest_open == 55
    assert first.opened == 3 and first.by_rule == {"step_stall": 2, "usage_drop": 1}
    assert first.median_delay_hours == pytest.approx(0.75)  # (1 h + 0.5 h) / 2; usage_drop left out
    assert first.noise == 1
    assert first.arr_flagged == 1500.0  # accounts a and b, once each
    assert s.days[1].opened == 1 and s.days[1].noise == 0  # suppressed is not noise
    assert s.days[2].opened == 0 and s.days[2].digest_items is None
    assert s.totals.opened == 4 and s.totals.noise == 1 and s.totals.noise_rate == 0.25
    assert s.totals.accounts_flagged == 2 and s.totals.arr_flagged == 1500.0
    assert s.totals.pings_by_csm == {"x@y": 2, "(no owner)": 1}


def test_summarize_empty():
    s = summarize([], [], [], None, None)
    assert s.days == [] and s.totals.pings == 0 and s.totals.noise_rate is None


def test_summarize_alerts_per_account():
    """Monday: account a pinged three times (owner x), b once (owner y); Tuesday: a once (x),
    c once (no owner); Wednesday: two pings whose account is unknown, each its own account."""
    d0 = datetime(2026, 3, 2, tzinfo=UTC)
    stalls = [
        _stall(1, opened=d0 + HOUR, status="auto_resolved", resolved=d0 + 5 * HOUR, account="a"),  # noise
        _stall(2, opened=d0 + 2 * HOUR, account="a"),
        _stall(3, opened=d0 + 3 * HOUR, account="b"),
        _stall(6, opened=d0 + 4 * HOUR, account="a"),
        _stall(4, opened=d0 + DAY + HOUR, status="auto_resolved", resolved=d0 + 2 * DAY + 7 * HOUR, account="a"),
        _stall(5, opened=d0 + DAY + 2 * HOUR, status="auto_resolved", resolved=d0 + DAY + 12 * HOUR,
               account="c"),  # noise
    ]
    pings = [PingFact(1, "x", d0 + HOUR, "P1", "a"), PingFact(2, "x", d0 + 2 * HOUR, "P1", "a"),
             PingFact(3, "y", d0 + 3 * HOUR, "P1", "b"), PingFact(6, "x", d0 + 4 * HOUR, "P1", "a"),
             PingFact(4, "x", d0 + DAY + HOUR, "P1", "a"), PingFact(5, None, d0 + DAY + 2 * HOUR, "P2", "c"),
             PingFact(7, "y", d0 + 2 * DAY + HOUR, "P2"), PingFact(8, "y", d0 + 2 * DAY + 2 * HOUR, "P2")]
    s = summarize(stalls, pings, [], d0.date(), (d0 + 3 * DAY).date())
    mon, tue, wed, thu = s.days
    assert (mon.pings, mon.accounts_pinged, mon.accounts_pinged_twice, mon.max_pings_per_account) == (4, 2, 1, 3)
    assert mon.csms_pinged == 2 and mon.pings_per_csm_mean == 2.0 and mon.max_pings_per_csm == 3
    assert mon.opened == 4 and mon.accounts_opened == 2 and mon.stalls_per_account == 2.0
    assert mon.noise == 1 and mon.noise_rate == 0.25
    assert (tue.pings, tue.accounts_pinged, tue.accounts_pinged_twice, tue.max_pings_per_account) == (2, 2, 0, 1)
    assert tue.csms_pinged == 2 and tue.pings_per_csm_mean == 1.0  # x and "(no owner)"
    assert tue.stalls_per_account == 1.0 and tue.noise_rate == 0.5
    assert (wed.pings, wed.accounts_pinged, wed.accounts_pinged_twice, wed.max_pings_per_account) == (2, 2, 0, 1)
    assert wed.csms_pinged == 1 and wed.pings_per_csm_mean == 2.0 and wed.stalls_per_account is None
    assert wed.noise_rate is None
    assert thu.pings == 0 and thu.accounts_pinged == 0 and thu.pings_per_csm_mean is None
    t = s.totals
    assert t.pings == 8 and t.accounts_pinged == 5  # a, b, c and the two unknown ones
    assert t.account_days_pinged == 6 and t.account_days_pinged_twice == 1 and t.max_pings_per_account_day == 3
    assert t.csm_days_pinged == 5 and t.pings_per_csm_day_mean == 1.6 and t.max_pings_per_csm_day == 3
    assert t.opened == 6 and t.accounts_flagged == 3 and t.stalls_per_account == 2.0
    assert t.noise == 2 and t.noise_rate == pytest.approx(1 / 3)
    assert mon.as_dict()["accounts_pinged_twice"] == 1 and mon.as_dict()["noise_rate"] == 0.25
    doc = t.as_dict()
    assert (doc["accounts_pinged"], doc["account_days_pinged"], doc["account_days_pinged_twice"],
            doc["max_pings_per_account_day"], doc["pings_per_csm_day_mean"], doc["stalls_per_account"],
            doc["noise_rate"]) == (5, 6, 1, 3, 1.6, 2.0, 0.333)


# --------------------------------------------------------------------------- never a crash


_time = st.datetimes(min_value=datetime(2026, 3, 1), max_value=datetime(2026, 3, 6), timezones=st.just(UTC))
_scalar = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                    st.text(max_size=12))
_junk = st.recursive(_scalar, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                     max_leaves=8)
_segment = st.fixed_dictionaries(
    {"type": st.sampled_from(["track", "identify", "group", "page", "alias", "bogus"])},
    optional={"userId": st.one_of(st.sampled_from(["u1", "u2"]), _scalar),
              "event": st.sampled_from(["Signed Up", "Project Created", "Report Shared", "Clicked"]),
              "groupId": st.sampled_from(["a1", "a2", ""]),
              "timestamp": st.one_of(_time.map(ts), _scalar),
              "traits": st.one_of(st.fixed_dictionaries({}, optional={"arr": _scalar, "name": _scalar,
                                                                      "renewal_date": _scalar,
                                                                      "owner_email": _scalar}), _junk),
              "properties": _junk, "context": st.one_of(st.just({"groupId": "a1"}), _junk),
              "receivedAt": st.one_of(_time.map(ts), _scalar)})
_ticket = st.fixed_dictionaries({}, optional={
    "id": st.one_of(st.sampled_from(["T1", "T2", "T3"]), _scalar), "status": st.sampled_from(["open", "solved", ""]),
    "account_id": st.sampled_from(["a1", "a2"]), "topic": st.sampled_from(["sso", "billing"]),
    "created_at": st.one_of(_time.map(ts), _scalar), "updated_at": st.one_of(_time.map(ts), _scalar),
    "requester_email": _scalar})
_stripe = st.fixed_dictionaries({"id": st.text(min_size=1, max_size=8),
                                 "type": st.sampled_from(["invoice.payment_failed", "invoice.paid",
                                                          "customer.subscription.deleted", "charge.refunded"]),
                                 "created": st.one_of(_time.map(lambda t: int(t.timestamp())), _scalar),
                                 "data": st.one_of(st.just({"object": {"metadata": {"account_id": "a1"}}}), _junk)})
_record = st.one_of(
    _segment.map(lambda m: json.dumps({"source": "segment", "message": m})),
    _ticket.map(lambda t: json.dumps({"source": "tickets", "ticket": t})),
    _stripe.map(lambda e: json.dumps({"source": "stripe", "event": e})),
    _junk.map(lambda j: json.dumps({"source": "segment", "message": j}, default=str)),
    st.text(max_size=40),
    st.binary(max_size=30).map(lambda b: b.decode("latin-1")),
)


@hsettings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(lines=st.lists(_record, min_size=1, max_size=12))
def test_any_history_gives_a_report_not_a_crash(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("fuzz") / "events.jsonl"
    path.write_text("\n".join(line.replace("\n", " ").replace("\r", " ") for line in lines) + "\n",
                    encoding="utf-8", errors="surrogatepass")
    history = read_history(path)
    assert len(history.entries) + len(history.problems) + history.ignored == history.records
    for problem in history.problems:
        assert str(problem).startswith(f"{path}:{problem.line}: ")
    result = replay(history, load_rules())
    assert not result.store_failures and not result.scan_failures
    summary = result.summary()
    assert summary.totals.opened == len(result.stalls)
