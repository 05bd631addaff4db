"""The account lookup behind /journey: exact id, domain and name first, then prefix,
substring and misspellings as "did you mean" suggestions."""

from __future__ import annotations

import pytest

from storage.lookup import find_account, forget_names
from tests.factories import T0, group, store


@pytest.fixture
def accounts(engine, rules):
    store(engine, rules, [
        group("acct-1", T0, name="Acme Analytics", domain="acme.io"),
        group("acct-2", T0, name="Globex", domain="globex.com"),
        group("acct-3", T0, name="Globex Europe", domain="globex.eu"),
        group("acct-4", T0, name="Initech", domain="initech.com"),
    ], now=T0)
    forget_names()  # the name index outlives a test database (same URL on PostgreSQL)
    return engine


@pytest.mark.parametrize("query", ["acct-4", "initech.com", "https://www.initech.com/", "INITECH", "  initech "])
def test_exact_matches(accounts, query):
    found = find_account(accounts, query)
    assert found.exact is not None and found.exact.id == "acct-4"
    assert found.exact.name == "Initech"


def test_unique_prefix_is_a_match(accounts):
    assert find_account(accounts, "acme").exact.id == "acct-1"


def test_exact_name_wins_over_a_longer_name_with_the_same_start(accounts):
    assert find_account(accounts, "globex").exact.id == "acct-2"


def test_ambiguous_prefix_suggests_every_candidate(accounts):
    found = find_account(accounts, "glob")
    assert found.exact is None
    assert [m.id for m in found.suggestions] == ["acct-2", "acct-3"]


def test_word_inside_a_name_and_misspellings_are_suggestions(accounts):
    assert [m.id for m in find_account(accounts, "analytics").suggestions] == ["acct-1"]
    assert find_account(accounts, "initec").exact.id == "acct-4"  # prefix
    typo = find_account(accounts, "intech")
    assert typo.exact is None and typo.suggestions[0].id == "acct-4"
    assert typo.suggestions[0].name == "Initech"  # shown as written, not lower-cased


@pytest.mark.parametrize("query", ["", "   ", "zzzzqqqq"])
def test_nothing_to_suggest(accounts, query):
    found = find_account(accounts, query)
    assert found.exact is None and found.suggestions == []
