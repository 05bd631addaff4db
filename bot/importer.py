"""`stallwatch import-accounts`: account facts from a CSV, all rows or none."""

from __future__ import annotations

from rules.config import Rules
from sqlalchemy import Engine

from bot.importer_csv import MAX_PROBLEMS, AccountRow, CsvError, parse_accounts_csv
from storage.db import utcnow
from storage.ingest import apply_account_traits

_TEXT_COLUMNS = ("account_id", "name", "domain", "plan", "owner_email")


def import_accounts_csv(engine: Engine, rules: Rules, text: str, *, source: str = "accounts.csv") -> tuple[int, int]:
    """Validate every row first (CsvError lists them, nothing stored), then upsert in one
    transaction. Empty cells leave what is known unchanged. Returns (created, updated)."""
    rows = parse_accounts_csv(text, source)
    _reject_nul(rows, source)
    traits: dict[str, dict] = {}
    for row in rows:
        values = {"name": row.name, "domain": row.domain, "plan": row.plan, "arr": row.arr,
                  "owner_email": row.owner_email, "renewal_date": row.renewal_date}
        traits[row.account_id] = {k: v for k, v in values.items() if v not in (None, "")}
    return apply_account_traits(engine, traits, rules, utcnow())


def _reject_nul(rows: list[AccountRow], source: str) -> None:
    """PostgreSQL cannot store NUL in text (SQLite would): a located error on every backend,
    not a database error halfway through the import."""
    problems = [f"{source}:{row.line}: {column}: contains a NUL character"
                for row in rows for column in _TEXT_COLUMNS if "\x00" in (getattr(row, column) or "")]
    if problems:
        listed = problems[:MAX_PROBLEMS]
        if len(problems) > len(listed):
            listed.append(f"... and {len(problems) - len(listed)} more")
        raise CsvError(listed, count=len(problems))
