"""Shared fixtures for the pure domain tests (rules/)."""

from __future__ import annotations

import importlib.resources

import pytest

from rules.config import Rules, parse_rules


def default_rules_text() -> str:
    return importlib.resources.files("rules").joinpath("default_rules.toml").read_text()


@pytest.fixture(scope="session")
def default_text() -> str:
    return default_rules_text()


@pytest.fixture(scope="session")
def rules(default_text: str) -> Rules:
    return parse_rules(default_text, "default_rules.toml")
