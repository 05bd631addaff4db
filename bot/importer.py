"""`stallwatch import-accounts`: account facts from a CSV, all rows or none."""

from __future__ import annotations

from rules.config import Rules
from sqlalchemy import Engine

from bot.importer_csv import parse_accounts_csv
from storage.db import utcnow
from storage.ingest import apply_account_traits


def import_accounts_csv(engine: Engine, rules: Rules, text: str, *, source: str = "accounts.csv") -> tuple[int, int]:
    """Validate every row first (CsvError lists them, nothing stored), then upsert in one
    transaction. Empty cells leave what is known unchanged. Returns (created, updated)."""
    rows = parse_accounts_csv(text, source)
    traits: dict[str, dict] = {}
    for row in rows:
        values = {"name": row.name, "domain": row.domain, "plan": row.plan, "arr": row.arr,
                  "owner_email": row.owner_email, "renewal_date": row.renewal_date}
        traits[row.account_id] = {k: v for k, v in values.items() if v not in (None, "")}
    return apply_account_traits(engine, traits, rules, utcnow())
