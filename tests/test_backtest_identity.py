"""The backtest gives the same answer after its speed-up (issue 16): the full report and every
stall, ping and digest it recorded, on two generated companies of different shapes, with the
default rules and with another rules file, compared with what the replay produced before it
was made fast (commit 454ec02).

The histories are stored (gzipped) rather than regenerated: `stallwatch demo --export` dates a
company from the real clock, so regenerating would move every time.

    tests/data/backtest_saas_seed7.jsonl.gz        stallwatch demo --export F --accounts 60 --days 21 --seed 7
    tests/data/backtest_enterprise_seed11.jsonl.gz stallwatch demo --export F --shape enterprise --seed 11
                                                   --accounts 30 --days 30
    tests/data/backtest_confirm12.toml             the packaged default with step_stall.confirm_hours = 12

To record the expected outputs again (only when the replay's behaviour is meant to change):
STALLWATCH_RECORD_BACKTEST_IDENTITY=1 pytest tests/test_backtest_identity.py
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import asdict
from datetime import date, datetime
from pathlib import Path

import pytest

from bot.backtest.history import read_history
from bot.backtest.replay import replay
from bot.backtest.report import as_json
from bot.settings import load_rules

DATA = Path(__file__).parent / "data"
RECORD = os.environ.get("STALLWATCH_RECORD_BACKTEST_IDENTITY") == "1"
HISTORIES = {"saas": "backtest_saas_seed7.jsonl.gz", "enterprise": "backtest_enterprise_seed11.jsonl.gz"}
RULES = {"default": None, "confirm12": "backtest_confirm12.toml"}


def _plain(value):
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def snapshot(history_path: Path, rules) -> dict:
    """Everything the replay produced, but its wall-clock seconds and the file's path."""
    history = read_history(history_path)
    result = replay(history, rules, label="identity")
    doc = as_json(history, [result], ["identity"], [None])
    doc["input"].pop("path")
    for run in doc["runs"]:
        run.pop("seconds")
    return _plain({
        "report": doc,
        "stalls": [asdict(s) for s in result.stalls],
        "pings": [asdict(p) for p in result.pings],
        "digests": [asdict(d) for d in result.digests],
    })


@pytest.mark.parametrize("rules_name", sorted(RULES))
@pytest.mark.parametrize("company", sorted(HISTORIES))
def test_backtest_output_is_unchanged(tmp_path, company, rules_name):
    history = tmp_path / "history.jsonl"
    history.write_bytes(gzip.decompress((DATA / HISTORIES[company]).read_bytes()))
    rules_file = RULES[rules_name]
    rules = load_rules(DATA / rules_file) if rules_file else load_rules()
    got = snapshot(history, rules)
    expected_path = DATA / f"backtest_expected_{company}_{rules_name}.json"
    if RECORD:
        expected_path.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    expected = json.loads(expected_path.read_text(encoding="utf-8"))
    assert got["stalls"], "the company must open stalls, or this compares nothing"
    assert got["pings"], "and ping"
    assert got["report"] == expected["report"]
    assert got["stalls"] == expected["stalls"]
    assert got["pings"] == expected["pings"]
    assert got["digests"] == expected["digests"]
