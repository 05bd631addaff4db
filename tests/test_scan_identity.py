"""The scan's outcome is pinned: the same data and moments give exactly the stalls, audits and
account columns (stage, health, next review) that the scan of commit 454ec02 gave, before
it was made fast (issue 16).

Two companies, each replayed as a sequence of scans (first full scan, scheduled ones,
event-driven evaluations, a forced full scan, people snoozing and resolving with lasting
decisions between them):
- the demo company (bot.demo.company.generate, the records parsed as the backtest does);
- the benchmark's generated company (benchmarks.scan.account_events), small and seeded.
After every step the whole outcome is hashed; the final state is kept in full so that a
difference shows as a readable diff. tests/data/scan_identity.json was written once by the
old scan (`STALLWATCH_WRITE_SCAN_IDENTITY=1 pytest tests/test_scan_identity.py`).
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from sqlalchemy import case, select

from bot.scan import evaluate_accounts, scan
from storage.db import write_tx
from storage.ingest import store_batches, store_events
from storage.models import Account, AuditEntry, Stall
from rules.model import RULE_NAMES
from storage import stall_actions

UTC = timezone.utc
FIXTURE = Path(__file__).parent / "data" / "scan_identity.json"
WRITE = os.environ.get("STALLWATCH_WRITE_SCAN_IDENTITY") == "1"
ACCOUNT, STALL, AUDIT = Account.__table__, Stall.__table__, AuditEntry.__table__
ACCOUNT_COLUMNS = ("id", "stage", "health", "health_reasons", "next_eval_at", "waiting_step", "stalled_at",
                   "checkpoint_at", "steps_done", "status")
REPORT_FIELDS = ("candidates", "opened", "updated", "unsnoozed", "auto_resolved", "suppressed", "failed", "full",
                 "opened_ids", "changed_ids")
DEMO_END = datetime(2026, 3, 4, 9, 0, tzinfo=UTC)


def _plain(value):
    if isinstance(value, datetime):
        value = value if value.tzinfo else value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def _rows(conn, stmt) -> list[list]:
    return [[_plain(v) for v in row] for row in conn.execute(stmt)]


def state(engine) -> dict:
    """Everything a scan writes: every stall, the scan's audit entries, the accounts' columns."""
    with engine.connect() as conn:
        return {
            "stalls": _rows(conn, select(*[c for c in STALL.columns]).order_by(STALL.c.id)),
            "audits": _rows(conn, select(AUDIT.c.at, AUDIT.c.actor, AUDIT.c.action, AUDIT.c.stall_id,
                                         AUDIT.c.account_id, AUDIT.c.source, AUDIT.c.detail)
                            .order_by(AUDIT.c.id)),
            "accounts": _rows(conn, select(*[ACCOUNT.c[c] for c in ACCOUNT_COLUMNS]).order_by(ACCOUNT.c.id)),
        }


def digest(value) -> str:
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()[:20]


class Recorder:
    def __init__(self, engine):
        self.engine = engine
        self.steps: list[dict] = []

    def after(self, what: str, report=None) -> None:
        step = {"what": what, "state": digest(state(self.engine))}
        if report is not None:
            step["report"] = {f: getattr(report, f) for f in REPORT_FIELDS}
        self.steps.append(step)

    def result(self) -> dict:
        return {"steps": self.steps, "final": state(self.engine)}


def people_act(engine, rec: Recorder, now: datetime, n: int, by_id: bool = True) -> None:
    """What CSMs do between scans: snooze one live stall, resolve one as handled, one as known
    until a date, one as a false positive (the n-th ones, in id order, so it is repeatable;
    or, `by_id=False`, in the order one scan process opens them, which is id order when no
    event-driven evaluation ran: by scan, account, rule)."""
    rank = case(*[(STALL.c.rule == rule, k) for k, rule in enumerate(RULE_NAMES)], else_=len(RULE_NAMES))
    order = (STALL.c.id,) if by_id else (STALL.c.opened_at, STALL.c.account_id, rank)
    with engine.connect() as conn:
        live = [r.id for r in conn.execute(select(STALL.c.id).where(STALL.c.open_key.is_not(None)).order_by(*order))]
    picks = live[n::7][:4]
    with engine.connect() as conn:
        subjects = {r.id: r for r in conn.execute(select(STALL.c.id, STALL.c.account_id, STALL.c.rule)
                                                  .where(STALL.c.id.in_(picks)))}
    with write_tx(engine) as conn:
        for k, sid in enumerate(picks):
            s = subjects[sid]
            key = f"{s.account_id}|{s.rule}"
            if k == 0:
                stall_actions.snooze(conn, sid, "U1", now + timedelta(days=1), now)
            elif k == 1:
                stall_actions.resolve(conn, sid, "U1", "handled", now, kind="handled", account_id=s.account_id,
                                      decision_key=key)
            elif k == 2:
                stall_actions.resolve(conn, sid, "U1", "known", now, kind="known", account_id=s.account_id,
                                      decision_key=key, quiet_until=now + timedelta(days=2))
            else:
                stall_actions.resolve(conn, sid, "U1", "false positive", now, kind="false_positive",
                                      account_id=s.account_id, decision_key=key)
    rec.after(f"people act at {now.isoformat()}")


def run_demo(engine, rules) -> dict:
    from bot.backtest.history import parse_record
    from bot.demo.company import generate

    company = generate(11, 120, 30, end=DEMO_END)
    entries = sorted((e for n, r in enumerate(company.records) if (e := parse_record(r.record, n)) is not None),
                     key=lambda e: (e.at, e.line))
    rec = Recorder(engine)
    step = timedelta(hours=6)
    t = company.start + step
    i = 0
    tick = 0
    while i < len(entries) or t <= DEMO_END + step:
        batch = []
        while i < len(entries) and entries[i].at <= t:
            batch.append(entries[i].event)
            i += 1
        if batch:
            stored = store_events(engine, batch, rules, t)
            if stored.evaluate and tick >= 8:
                report = evaluate_accounts(engine, rules, sorted(stored.evaluate), t)
                rec.after(f"evaluate at {t.isoformat()}", report)
        if tick >= 8:  # the first scan after two days of history: a first, full scan
            rec.after(f"scan at {t.isoformat()}", scan(engine, rules, t))
            if tick % 12 == 0:
                people_act(engine, rec, t + timedelta(minutes=1), tick // 12)
        tick += 1
        t += step
    rec.after("forced full", scan(engine, rules, t, full=True))
    rec.after("a day later", scan(engine, rules, t + timedelta(days=1)))
    return rec.result()


def run_generated(engine, rules, workers: int | None = None) -> dict:
    """`workers=2`: every full scan split over two processes (as at 100,000 accounts)."""
    from benchmarks.scan import NOW, store_all

    def scan_at(at, **kw):
        return scan(engine, rules, at, workers=workers, **kw)

    store_all(engine, 600, 10, rules)
    rec = Recorder(engine)
    rec.after("first scan", scan_at(NOW))
    rec.after("same moment", scan_at(NOW))
    rec.after("5 minutes later", scan_at(NOW + timedelta(minutes=5)))
    people_act(engine, rec, NOW + timedelta(minutes=10), 0, by_id=False)
    rec.after("an hour later", scan_at(NOW + timedelta(hours=1)))
    rec.after("forced full", scan_at(NOW + timedelta(hours=1), full=True))
    for days in (1, 2, 3, 6, 9):
        at = NOW + timedelta(days=days)
        rec.after(f"{days} days later", scan_at(at))
        if days == 2:
            people_act(engine, rec, at + timedelta(minutes=1), 1, by_id=False)
    rec.after("forced full later", scan_at(NOW + timedelta(days=9, hours=1), full=True))
    return rec.result()


RUNS = {"demo": run_demo, "generated": run_generated}


@pytest.fixture(scope="module")
def pinned() -> dict:
    if WRITE:
        return {}
    return json.loads(FIXTURE.read_text())


@pytest.mark.parametrize("company", sorted(RUNS))
def test_the_scan_gives_what_it_gave_before(company, engine, rules, pinned, request):
    got = json.loads(orjson.dumps(RUNS[company](engine, rules)))
    if WRITE:
        if "sqlite" in str(engine.url):
            data = json.loads(FIXTURE.read_text()) if FIXTURE.exists() else {}
            data[company] = got
            FIXTURE.parent.mkdir(exist_ok=True)
            FIXTURE.write_text(json.dumps(data, separators=(",", ":"), sort_keys=True))
        return
    want = pinned[company]
    assert len(got["steps"]) == len(want["steps"])
    assert got["final"]["stalls"], "the replay opened no stall: it proves nothing"
    for key in ("stalls", "audits", "accounts"):
        assert got["final"][key] == want["final"][key], key
    for mine, theirs in zip(got["steps"], want["steps"]):
        assert mine == theirs


def _renumbered(result: dict) -> dict:
    """The outcome with stall ids replaced by their rank in (opened_at, account, rule): two
    processes writing at once number the stalls they open in another order."""
    stall_columns = [c.name for c in STALL.columns]
    at, account, rule, ident = (stall_columns.index(c) for c in ("opened_at", "account_id", "rule", "id"))
    stalls = sorted(result["final"]["stalls"], key=lambda r: (r[at], r[account], r[rule]))
    new = {row[ident]: n for n, row in enumerate(stalls, 1)}
    final = {
        "stalls": sorted([[new[v] if i == ident else v for i, v in enumerate(row)] for row in stalls]),
        "audits": sorted([[new.get(v, v) if i == 3 else v for i, v in enumerate(row)]
                          for row in result["final"]["audits"]], key=repr),
        "accounts": result["final"]["accounts"],
    }
    steps = [{**step, "state": None,
              "report": {**step["report"], "opened_ids": sorted(new[i] for i in step["report"]["opened_ids"]),
                         "changed_ids": sorted(new[i] for i in step["report"]["changed_ids"])}}
             if "report" in step else {**step, "state": None} for step in result["steps"]]
    return {"steps": steps, "final": final}


def test_a_full_scan_split_over_two_processes_gives_the_same(engine, rules, pinned):
    """The split (bot.scan._scan_two, used by full scans of 20,000 accounts or more) forced
    on the small company: the same outcome, up to the order stall ids were given in."""
    got = json.loads(orjson.dumps(run_generated(engine, rules, workers=2)))
    if WRITE:
        return
    assert _renumbered(got) == _renumbered(pinned["generated"])
