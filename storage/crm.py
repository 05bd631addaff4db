"""What the CRM sync (bot/crm) reads of the accounts before it stores facts through
storage.ingest.apply_account_traits: the facts it may change, and accounts by domain."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from storage.ingest import accounts_with_domains
from storage.models import Account
from storage.sql import select_in

ACCOUNT = Account.__table__
FACTS = ("name", "domain", "arr", "owner_email", "renewal_date")


def account_facts(engine: Engine, ids: list[str]) -> dict[str, dict[str, Any]]:
    """The stored CRM facts of these accounts (those that exist), by id."""
    if not ids:
        return {}
    with engine.connect() as conn:
        rows = select_in(conn, ACCOUNT, ("id", *FACTS), "id", sorted(set(ids)))
    return {r.id: {name: getattr(r, name) for name in FACTS} for r in rows}


def accounts_by_domain(engine: Engine, domains: list[str]) -> dict[str, list[str]]:
    """The ids of the accounts with each of these domains (storage.ingest.accounts_with_domains)."""
    with engine.connect() as conn:
        return accounts_with_domains(conn, domains)
