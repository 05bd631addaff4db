"""`stallwatch import-accounts`: account facts from a CSV, all rows or none."""

from __future__ import annotations

from rules.config import Rules
from sqlalchemy import Engine

from bot.importer_csv import MAX_PROBLEMS, AccountRow, CsvError, parse_accounts_csv
from bot.ingest.timewindow import renewal_problem
from storage.db import utcnow
from storage.ingest import apply_account_traits

_TEXT_COLUMNS = ("account_id", "name", "domain", "plan", "owner_email")


def import_accounts_csv(engine: Engine, rules: Rules, text: str, *, source: str = "accounts.csv") -> tuple[int, int]:
    """Validate every row first (CsvError lists them, nothing stored), then upsert in one
    transaction. Empty cells leave what is known unchanged. Returns (created, updated)."""
    rows = parse_accounts_csv(text, source)
    now = utcnow()
    _reject_nul(rows, source)
    _reject_out_of_window(rows, source, now)
    traits: dict[str, dict] = {}
    for row in rows:
        values = {"name": row.name, "domain": row.domain, "plan": row.plan, "arr": row.arr,
                  "owner_email": row.owner_email, "renewal_date": row.renewal_date}
        traits[row.account_id] = {k: v for k, v in values.items() if v not in (None, "")}
    return apply_account_traits(engine, traits, rules, now)


def _reject_nul(rows: list[AccountRow], source: str) -> None:
    """PostgreSQL cannot store NUL in text (SQLite would): a located error on every backend,
    not a database error halfway through the import."""
    _raise_if_any([f"{source}:{row.line}: {column}: contains a NUL character"
                   for row in rows for column in _TEXT_COLUMNS if "\x00" in (getattr(row, column) or "")])


def _reject_out_of_window(rows: list[AccountRow], source: str, now) -> None:
    """The ingest time window (bot/ingest/timewindow.py) for renewal dates. A message drops
    such a date and reports it; an import, all rows or none, names the line instead."""
    _raise_if_any([f"{source}:{row.line}: renewal_date: {problem}" for row in rows
                   if row.renewal_date is not None and (problem := renewal_problem(row.renewal_date, now))])


def _raise_if_any(problems: list[str]) -> None:
    if problems:
        listed = problems[:MAX_PROBLEMS]
        if len(problems) > len(listed):
            listed.append(f"... and {len(problems) - len(listed)} more")
        raise CsvError(listed, count=len(problems))
