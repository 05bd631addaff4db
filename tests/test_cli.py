"""`stallwatch` CLI (bot.cli.main) through click's CliRunner, against the test database."""

from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, inspect, select

from bot.cli import main
from bot.settings import default_rules_text
from storage.db import make_engine

from factories import ACCOUNT, STALL, signup, stalls, store

UTC = timezone.utc


@pytest.fixture
def cli(db_url):
    """Run the CLI with DATABASE_URL at the test database and the packaged default rules."""
    runner = CliRunner()

    def run(*args: str, url: str | None = None, **env: str | None):
        environment = {"DATABASE_URL": url or db_url, "STALLWATCH_RULES": None, **env}
        return runner.invoke(main, list(args), env=environment, catch_exceptions=True)

    return run


def assert_clean_failure(result, code: int = 1):
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit)  # click's own exit, not a crash
    assert "Traceback" not in result.output


def count_accounts(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(ACCOUNT)).scalar_one()


# ------------------------------------------------------------------ rules check


def test_rules_check_packaged_default(cli, tmp_path):
    path = tmp_path / "default.toml"
    path.write_text(default_rules_text(), encoding="utf-8")
    result = cli("rules", "check", str(path))
    assert result.exit_code == 0, result.output
    assert f"{path}: ok" in result.output
    assert "Signed Up, Project Created, Integration Connected, Invite Sent" in result.output
    assert "activation: Report Shared" in result.output
    assert "self_serve: digest only (no ping); stalled after 48 h on a step" in result.output
    assert "high_touch: pings in real time" in result.output


def test_rules_check_shows_track_overrides(cli, tmp_path):
    path = tmp_path / "tracks.toml"
    path.write_text(default_rules_text() + "\n[tracks.high_touch.thresholds]\nstall_after_hours = 72\n"
                    "checkpoint_days = 21\n", encoding="utf-8")
    result = cli("rules", "check", str(path))
    assert result.exit_code == 0, result.output
    assert "high_touch: pings in real time; stalled after 72 h on a step, not activated at day 21" in result.output
    assert "standard: pings in real time; stalled after 48 h on a step, not activated at day 14" in result.output


def test_rules_check_located_error(cli, tmp_path):
    lines = default_rules_text().splitlines()
    hits = [i for i, line in enumerate(lines) if line.startswith("stall_after_hours")]
    lines[hits[1]] = "stall_after_hours = -5"  # the second step
    path = tmp_path / "x.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    result = cli("rules", "check", str(path))
    assert_clean_failure(result, 1)
    assert f"{path}:{hits[1] + 1}: journey.steps[1].stall_after_hours: " in result.output
    assert "greater than 0" in result.output
    assert "1 problem(s)" in result.output


def test_rules_check_lists_every_problem(cli, tmp_path):
    text = default_rules_text().replace('timezone = "UTC"', 'timezone = "Mars/Olympus"').replace(
        "P0 = 25000", "P0 = 25000\nP9 = 1")
    path = tmp_path / "many.toml"
    path.write_text(text, encoding="utf-8")
    result = cli("rules", "check", str(path))
    assert_clean_failure(result, 1)
    lines = text.splitlines()
    zone_line = next(i for i, line in enumerate(lines) if "Mars/Olympus" in line) + 1
    p9_line = next(i for i, line in enumerate(lines) if line.startswith("P9")) + 1
    assert f"{path}:{zone_line}: digest.timezone: " in result.output
    assert f"{path}:{p9_line}: priorities.P9: unknown key" in result.output
    assert "2 problem(s)" in result.output


def test_rules_check_toml_syntax_error_has_line(cli, tmp_path):
    path = tmp_path / "syntax.toml"
    path.write_text('version = 1\n\n[journey\nactivation_event = "x"\n', encoding="utf-8")
    result = cli("rules", "check", str(path))
    assert_clean_failure(result, 1)
    assert f"{path}:3: not valid TOML" in result.output


def test_rules_check_missing_file(cli, tmp_path):
    path = tmp_path / "nope.toml"
    result = cli("rules", "check", str(path))
    assert_clean_failure(result, 1)
    assert f"cannot read {path}" in result.output
    assert "No such file" in result.output


def test_rules_check_not_utf8(cli, tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(default_rules_text().replace("Sign up", "Inscrit é").encode("latin-1"))
    result = cli("rules", "check", str(path))
    assert_clean_failure(result, 1)
    assert f"cannot read {path}" in result.output


def test_bad_rules_file_in_environment_is_a_clean_error(cli, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("version = 1\n", encoding="utf-8")
    result = cli("scan", "--now", "2026-01-10T00:00:00Z", STALLWATCH_RULES=str(path))
    assert_clean_failure(result, 1)
    assert "the rules file has problems" in result.output
    assert f"{path}:" in result.output and "journey: required key is missing" in result.output


# ------------------------------------------------------------------ db upgrade


def test_db_upgrade_twice(cli, db_url, tmp_path):
    # SQLite: a brand-new file; PostgreSQL: the (already migrated) test schema.
    url = f"sqlite:///{tmp_path / 'fresh.db'}" if db_url.startswith("sqlite") else db_url
    for _ in range(2):
        result = cli("db", "upgrade", url=url)
        assert result.exit_code == 0, result.output
        assert "database schema is up to date" in result.output
    engine = make_engine(url)
    try:
        names = set(inspect(engine).get_table_names())
        assert {"account", "event", "stall", "lease", "alembic_version"} <= names
        with engine.connect() as conn:
            versions = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all()
        assert len(versions) == 1
    finally:
        engine.dispose()


# ------------------------------------------------------------------ scan


def test_scan_with_now_prints_summary_and_opens_stalls(cli, engine, rules):
    store(engine, rules, signup("acme", datetime(2026, 1, 1, tzinfo=UTC), arr=50000)
          + signup("fresh", datetime(2026, 1, 9, 12, tzinfo=UTC)), now=datetime(2026, 1, 9, 12, tzinfo=UTC))
    result = cli("scan", "--now", "2026-01-10T00:00:00Z")
    assert result.exit_code == 0, result.output
    # The first scan is a full one; both accounts are new, so both are evaluated.
    assert result.output.startswith("full scan at 2026-01-10T00:00:00+00:00: 2 accounts evaluated, 1 opened, ")
    [stall] = stalls(engine)
    assert (stall.account_id, stall.rule, stall.priority) == ("acme", "step_stall", "P0")

    again = cli("scan", "--now", "2026-01-10T00:00:00Z")
    assert again.output.startswith("scan at 2026-01-10T00:00:00+00:00: 0 accounts evaluated, 0 opened, ")
    forced = cli("scan", "--now", "2026-01-10T00:00:00Z", "--full")
    assert forced.exit_code == 0, forced.output
    assert forced.output.startswith("full scan at 2026-01-10T00:00:00+00:00: ")
    assert " 0 opened, 0 updated, 0 unsnoozed, 0 auto-resolved, 0 suppressed" in forced.output
    assert stall.opened_at == datetime(2026, 1, 10, tzinfo=UTC)

    again = cli("scan", "--now", "2026-01-10T00:00:00")  # naive: taken as UTC
    assert again.exit_code == 0, again.output
    assert "0 accounts evaluated, 0 opened, 0 updated, 0 unsnoozed, 0 auto-resolved, 0 suppressed" in again.output
    assert len(stalls(engine)) == 1


def test_scan_with_garbage_now_is_a_usage_error(cli, engine):
    result = cli("scan", "--now", "garbage")
    assert_clean_failure(result, 2)
    assert "'garbage' is not an ISO 8601 time" in result.output
    assert "Usage:" in result.output
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(STALL)).scalar_one() == 0


# ------------------------------------------------------------------ import-accounts

HEADER = "account_id,name,domain,plan,arr,owner_email,renewal_date"


def write_csv(path: Path, *rows: str) -> Path:
    path.write_text("\n".join((HEADER, *rows)) + "\n", encoding="utf-8")
    return path


def accounts(engine) -> dict:
    with engine.connect() as conn:
        return {r.id: r for r in conn.execute(select(ACCOUNT).order_by(ACCOUNT.c.id))}


def test_import_accounts_creates_then_updates(cli, engine, tmp_path):
    first = write_csv(
        tmp_path / "accounts.csv",
        'acme,Acme Inc,https://www.Acme.com/x,enterprise,"$50,000",CSM@Example.com,2026-06-30',
        "tiny,Tiny Co,tiny.io,starter,2400,csm2@example.com,",
    )
    result = cli("import-accounts", str(first))
    assert result.exit_code == 0, result.output
    assert f"{first}: 2 account(s) created, 0 updated" in result.output
    rows = accounts(engine)
    assert sorted(rows) == ["acme", "tiny"]
    acme, tiny = rows["acme"], rows["tiny"]
    assert (acme.name, acme.domain, acme.plan, acme.arr) == ("Acme Inc", "acme.com", "enterprise", 50000.0)
    assert acme.owner_email == "csm@example.com"
    assert acme.renewal_date == date(2026, 6, 30)
    assert acme.track == "high_touch"
    assert acme.name_lower == "acme inc"
    assert (tiny.arr, tiny.track, tiny.renewal_date) == (2400.0, "self_serve", None)

    second = write_csv(
        tmp_path / "again.csv",
        "acme,Acme Inc,,pro,12000,,2027-01-31",
        "tiny,Tiny Company,,,,,",  # empty cells keep what is known
        "new1,New One,new.io,,,,",
    )
    result = cli("import-accounts", str(second))
    assert result.exit_code == 0, result.output
    assert f"{second}: 1 account(s) created, 2 updated" in result.output
    rows = accounts(engine)
    assert sorted(rows) == ["acme", "new1", "tiny"]
    acme, tiny = rows["acme"], rows["tiny"]
    assert (acme.plan, acme.arr, acme.track, acme.renewal_date) == ("pro", 12000.0, "standard", date(2027, 1, 31))
    assert (acme.domain, acme.owner_email) == ("acme.com", "csm@example.com")
    assert (tiny.name, tiny.arr, tiny.plan, tiny.domain, tiny.track) == ("Tiny Company", 2400.0, "starter", "tiny.io",
                                                                          "self_serve")
    assert rows["new1"].track == "standard"  # nothing to judge by: the default


def test_import_accounts_bad_row_imports_nothing(cli, engine, tmp_path):
    path = write_csv(
        tmp_path / "bad.csv",
        "good,Good Co,good.io,pro,1000,a@good.io,2026-05-01",
        "bad,Bad Co,bad.io,pro,abc,a@bad.io,2026-05-01",
        "worse,,worse.io,pro,100,not-an-email,2026-02-30",
    )
    result = cli("import-accounts", str(path))
    assert_clean_failure(result, 1)
    assert f"{path}:3: arr: 'abc' is not a number" in result.output
    assert f"{path}:4: name: is required" in result.output
    assert f"{path}:4: owner_email: 'not-an-email' is not an e-mail address" in result.output
    assert f"{path}:4: renewal_date: '2026-02-30' is not an ISO date" in result.output
    assert "nothing imported (4 problem(s) above)" in result.output
    assert count_accounts(engine) == 0


def test_import_accounts_bad_file_leaves_existing_accounts_unchanged(cli, engine, tmp_path):
    good = write_csv(tmp_path / "good.csv", "acme,Acme,acme.com,pro,1000,a@acme.com,2026-05-01")
    assert cli("import-accounts", str(good)).exit_code == 0
    before = accounts(engine)
    bad = write_csv(tmp_path / "bad.csv", "acme,Acme,acme.com,pro,999999,a@acme.com,2026-05-01",
                    "acme,Acme again,,,,,")
    result = cli("import-accounts", str(bad))
    assert_clean_failure(result, 1)
    assert f"{bad}:3: account_id: 'acme' duplicates line 2" in result.output
    assert accounts(engine) == before


def test_import_accounts_not_utf8(cli, engine, tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes((HEADER + "\nacme,Café,cafe.fr,,,,\n").encode("latin-1"))
    result = cli("import-accounts", str(path))
    assert_clean_failure(result, 1)
    assert f"cannot read {path}" in result.output
    assert count_accounts(engine) == 0


def test_import_accounts_missing_file(cli, tmp_path):
    result = cli("import-accounts", str(tmp_path / "missing.csv"))
    assert_clean_failure(result, 1)
    assert "cannot read" in result.output


def test_import_accounts_utf8_bom_and_header_only(cli, engine, tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(("\ufeff" + HEADER + "\r\nacme,Açme,,,,,\r\n").encode("utf-8"))
    result = cli("import-accounts", str(path))
    assert result.exit_code == 0, result.output
    assert accounts(engine)["acme"].name == "Açme"

    empty = tmp_path / "header.csv"
    empty.write_text(HEADER + "\n", encoding="utf-8")
    result = cli("import-accounts", str(empty))
    assert result.exit_code == 0, result.output
    assert "0 account(s) created, 0 updated" in result.output
