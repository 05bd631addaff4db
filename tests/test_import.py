"""bot.importer.import_accounts_csv on arbitrary CSV-ish text: all rows or none."""

from __future__ import annotations

from datetime import date

from hypothesis import HealthCheck, example, given, settings, strategies as st
from sqlalchemy import delete, func, select

from bot.importer import import_accounts_csv
from bot.importer_csv import COLUMNS, HEADER, CsvError, parse_accounts_csv
from bot.ingest.timewindow import renewal_problem
from storage.db import utcnow

from factories import ACCOUNT

TEXT_COLUMNS = ("account_id", "name", "domain", "plan", "owner_email")
PLAUSIBLE = [
    "", " ", "acme", "Acme Inc", "ACME", "acme.com", "https://www.Acme.com/x", "not a domain", "enterprise", "starter",
    "0", "50000", "50,000", "$1,234.50", "-5", "-0", "1e5", "1,00", "abc", "9" * 400, "a@b.co", "CSM@Example.com", "nul\x00@b.co",
    "bad@", "2026-06-30", "2026-13-01", "2026-06-30T10:00:00+02:00", " spaced ", "x" * 300, "é", "a\x00b",
    "line\nbreak", 'quo"te', "semi;colon",
]
cell = st.one_of(st.sampled_from(PLAUSIBLE), st.text(max_size=12))
ids = st.one_of(st.sampled_from(["a", "b", "A", " a", "acct-1", ""]), st.text(min_size=1, max_size=8))


def render(value: str, quote: bool) -> str:
    if quote or any(ch in value for ch in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


VALID = [  # per column, in HEADER order: values the column accepts (ids may repeat)
    st.sampled_from(["a", "b", "A", " a", "acct-1"]) | st.text(st.characters(categories=["L", "N"]), min_size=1,
                                                                max_size=8),
    st.sampled_from(["Acme", "Acme, Inc.", "Ümlaut GmbH", "x\ny"]) | st.text(min_size=1, max_size=10).map(lambda v: v + "!"),
    st.sampled_from(["", "acme.com", "https://www.Acme.com/x", "sub.example.co.uk:8080"]),
    st.sampled_from(["", "pro", "enterprise"]) | st.text(max_size=10),
    st.sampled_from(["", "0", "-0", "50,000", "$1,234.50", ".5"]) | st.integers(0, 10**12).map(str)
    | st.floats(0, 1e12).map(str),
    st.sampled_from(["", "a@b.co", "CSM@Example.com"]),
    st.sampled_from(["", "2026-06-30T10:00:00+02:00"]) | st.dates().map(lambda d: d.isoformat())
    | st.dates(date(2024, 1, 1), date(2030, 12, 31)).map(lambda d: d.isoformat()),
]


@st.composite
def rows(draw, clean: bool) -> str:
    """A row of 7 cells in HEADER order: valid ones (clean), mostly valid ones, or anything."""
    mode = "clean" if clean else draw(st.sampled_from(["mostly", "mostly", "mostly", "any"]))
    if mode == "clean":
        cells = [draw(strategy) for strategy in VALID]
    elif mode == "mostly":
        cells = [draw(st.one_of(strategy, strategy, strategy, cell)) for strategy in VALID]
    else:
        cells = draw(st.lists(cell, max_size=9))
    return ",".join(render(c, draw(st.booleans())) for c in cells)


headers = st.one_of(
    st.just(HEADER),
    st.just(HEADER),
    st.just(HEADER.upper().replace(",", " , ")),
    st.just("\ufeff" + HEADER),
    st.permutations(COLUMNS).map(",".join),
    st.lists(st.sampled_from([*COLUMNS, "extra", ""]), max_size=9).map(",".join),
    st.text(max_size=40),
)


@st.composite
def csv_texts(draw) -> str:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=200))
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    clean = draw(st.booleans())
    lines = [draw(st.just(HEADER) if clean else headers), *draw(st.lists(rows(clean), max_size=6))]
    return newline.join(lines) + draw(st.sampled_from(["", newline, newline * 2]))


def stored(engine) -> dict:
    with engine.connect() as conn:
        return {r.id: r for r in conn.execute(select(ACCOUNT))}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(text=csv_texts())
@example(text=HEADER + "\nacme,Acme,acme.com,pro,\"$50,000\",a@acme.com,2026-06-30\n")
@example(text=HEADER + "\nacme,Acme,,,,,\nacme,Again,,,,,\n")
@example(text=HEADER + "\nnul,Na\x00me,,,,,\n")
@example(text="")
def test_import_is_all_or_nothing(engine, rules, text):
    with engine.begin() as conn:
        conn.execute(delete(ACCOUNT))
    try:
        expected = parse_accounts_csv(text, "fuzz.csv")
    except CsvError:
        expected = None

    try:
        created, updated = import_accounts_csv(engine, rules, text, source="fuzz.csv")
    except CsvError as exc:
        if expected is not None:
            # Stricter than the parser on two points only: the databases cannot store NUL, and
            # a renewal date must be inside the ingest time window (bot/ingest/timewindow.py).
            nul = any("\x00" in (getattr(r, c) or "") for r in expected for c in TEXT_COLUMNS)
            window = any(r.renewal_date and renewal_problem(r.renewal_date, utcnow()) for r in expected)
            assert nul or window
            assert all("contains a NUL character" in p or ": renewal_date: " in p
                       for p in exc.problems if not p.startswith("..."))
        assert exc.problems and all(p.startswith("fuzz.csv") for p in exc.problems)
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(ACCOUNT)).scalar_one() == 0
        return

    assert expected is not None
    assert (created, updated) == (len(expected), 0)
    rows = stored(engine)
    assert sorted(rows) == sorted(r.account_id for r in expected)
    for want in expected:
        got = rows[want.account_id]
        assert got.name == want.name
        assert got.domain == want.domain
        assert got.plan == want.plan
        assert got.arr == (want.arr if want.arr is not None else 0.0)
        assert got.owner_email == want.owner_email
        assert got.renewal_date == want.renewal_date


def test_import_name_whose_lowercase_is_longer(engine, rules):
    """'\u0130'.lower() is two characters: a 200-character name lower-cases to 400, past the
    255 of account.name_lower, which storage clips (PostgreSQL would refuse the row)."""
    name = "\u0130" * 200
    text = f"{HEADER}\n{name},{name},,,,,\n"
    assert import_accounts_csv(engine, rules, text) == (1, 0)
    assert stored(engine)[name].name == name
