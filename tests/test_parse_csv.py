"""The import-accounts CSV parser (bot/importer_csv.py)."""

from __future__ import annotations

import csv
import io
from datetime import date

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.importer_csv import COLUMNS, AccountRow, CsvError, load_accounts_csv, parse_accounts_csv
from tests.fuzz import examples

HEADER = "account_id,name,domain,plan,arr,owner_email,renewal_date"


def problems_of(text: str, source: str = "accounts.csv") -> list[str]:
    with pytest.raises(CsvError) as info:
        parse_accounts_csv(text, source)
    return info.value.problems


def test_valid_file():
    text = (
        f"{HEADER}\n"
        "acme,Acme Corp,acme.com,enterprise,50000,Sam@Example.com,2024-12-31\n"
        "globex,Globex,,,,,\n"
        'initech,"Initech, Inc.",https://www.Initech.com/about,pro,"$1,200.50",jo@initech.io,2025-01-15T00:00:00Z\n'
    )
    rows = parse_accounts_csv(text)
    assert rows == [
        AccountRow("acme", "Acme Corp", "acme.com", "enterprise", 50000.0, "sam@example.com", date(2024, 12, 31), 2),
        AccountRow("globex", "Globex", None, None, None, None, None, 3),
        AccountRow("initech", "Initech, Inc.", "initech.com", "pro", 1200.5, "jo@initech.io", date(2025, 1, 15), 4),
    ]
    assert rows[1].traits() == {"name": "Globex"}
    assert rows[0].traits()["renewal_date"] == date(2024, 12, 31)


def test_header_order_case_whitespace_and_bom():
    text = "\ufeff Renewal_Date , OWNER_EMAIL,arr,plan,domain,name,account_id\r\n2024-06-01,a@b.io,10,pro,b.io,B,b1\r\n"
    [row] = parse_accounts_csv(text)
    assert row == AccountRow("b1", "B", "b.io", "pro", 10.0, "a@b.io", date(2024, 6, 1), 2)


def test_header_only_and_blank_lines():
    assert parse_accounts_csv(HEADER) == []
    assert parse_accounts_csv(HEADER + "\n\n\n") == []
    rows = parse_accounts_csv(f"\n{HEADER}\n\nacme,Acme,,,,,\n,,,,,,\n\nbeta,Beta,,,,,\n")
    assert [(r.account_id, r.line) for r in rows] == [("acme", 4), ("beta", 7)]


@pytest.mark.parametrize("text", ["", "\n\n", "\ufeff", "  \n"])
def test_empty_file(text):
    problems = problems_of(text)
    assert problems == [f"accounts.csv: empty file, expected header {HEADER}"]


def test_header_errors_name_the_columns():
    [problem] = problems_of("account_id,name,domain,plan,arr,owner_email,renewal_date,seats,region\n")
    assert problem.startswith("accounts.csv:1: unknown column(s): 'seats', 'region'")
    [problem] = problems_of("account_id,name,arr\n")
    assert problem.startswith("accounts.csv:1: missing column(s): domain, plan, owner_email, renewal_date")
    assert HEADER in problem
    problems = problems_of("account_id,name,name,domain,plan,arr,owner_email,foo\n")
    assert problems[0] == "accounts.csv:1: unknown column(s): 'foo'"
    assert problems[1] == "accounts.csv:1: duplicate column(s): name"
    assert problems[2].startswith("accounts.csv:1: missing column(s): renewal_date")
    [problem] = problems_of(HEADER + ",\n")
    assert "unknown column(s): (empty name, column 8)" in problem


def test_semicolon_file_gets_a_hint():
    problems = problems_of(HEADER.replace(",", ";") + "\n")
    assert problems[0].startswith("accounts.csv:1: unknown column(s): 'account_id;name;")
    assert "separated by ';'" in problems[-1]


def test_all_row_problems_are_collected_with_lines():
    text = (
        f"{HEADER}\n"  # 1
        "acme,Acme,acme.com,pro,50000,sam@example.com,2024-12-31\n"  # 2
        "beta,Beta,,,abc,,\n"  # 3
        ',"Multi\nline name",,,,,\n'  # 4-5
        "gamma,Gamma,not a domain,,-5,nobody,31/12/2024\n"  # 6
        "acme,Acme again,,,,,\n"  # 7
        "short,row\n"  # 8
        "delta,,,,,,\n"  # 9
        "eps,Eps,,," + "p" * 101 + ",,\n"  # 10
    )
    problems = problems_of(text, "customers.csv")
    assert problems == [
        "customers.csv:3: arr: 'abc' is not a number (like 50000, 50,000 or $50,000.00)",
        "customers.csv:4: account_id: is required",
        "customers.csv:6: domain: 'not a domain' is not a domain name (like acme.com)",
        "customers.csv:6: arr: '-5' is negative; ARR must be 0 or more",
        "customers.csv:6: owner_email: 'nobody' is not an e-mail address",
        "customers.csv:6: renewal_date: '31/12/2024' is not an ISO date (YYYY-MM-DD)",
        "customers.csv:7: account_id: 'acme' duplicates line 2",
        "customers.csv:8: expected 7 fields, got 2",
        "customers.csv:9: name: is required",
        "customers.csv:10: arr: '" + "p" * 60 + "...' is not a number (like 50000, 50,000 or $50,000.00)",
    ]


def test_line_numbers_after_quoted_newlines():
    text = f'{HEADER}\na,"one\ntwo\nthree",,,,,\nb,B,,,oops,,\n'
    problems = problems_of(text)
    assert problems == ["accounts.csv:5: arr: 'oops' is not a number (like 50000, 50,000 or $50,000.00)"]
    rows = parse_accounts_csv(f'{HEADER}\r\na,"one\r\ntwo",,,,,\r\nb,B,,,,,\r\n')
    assert [(r.account_id, r.name, r.line) for r in rows] == [("a", "one\r\ntwo", 2), ("b", "B", 4)]


def test_nothing_returned_when_any_row_is_bad():
    with pytest.raises(CsvError) as info:
        parse_accounts_csv(f"{HEADER}\ngood,Good,,,,,\nbad,Bad,,,x,,\n")
    assert info.value.count == 1
    assert isinstance(info.value, ValueError)
    assert str(info.value) == "accounts.csv:3: arr: 'x' is not a number (like 50000, 50,000 or $50,000.00)"


def test_problem_list_is_capped_at_50():
    text = HEADER + "\n" + "".join(f"a{i},A,,,bad,,\n" for i in range(120))
    with pytest.raises(CsvError) as info:
        parse_accounts_csv(text)
    assert len(info.value.problems) == 51
    assert info.value.problems[49].startswith("accounts.csv:51: arr:")
    assert info.value.problems[50] == "... and 70 more"
    assert info.value.count == 120


@pytest.mark.parametrize(
    "arr, expected",
    [
        ("0", 0.0),
        ("50000", 50000.0),
        ("50,000", 50000.0),
        ("$50,000", 50000.0),
        ("$ 1,234,567.89", 1234567.89),
        ("2400.5", 2400.5),
        (".5", 0.5),
        ("10.", 10.0),
        ("-0", 0.0),
    ],
)
def test_arr_formats(arr, expected):
    [row] = parse_accounts_csv(f'{HEADER}\na,A,,,"{arr}",,\n')
    assert row.arr == expected


@pytest.mark.parametrize("arr", ["abc", "50k", "1,00", "12,3456", "1e5", "$", "50 000", "USD 5", "nan", "inf", "1" * 400])
def test_arr_rejected(arr):
    [problem] = problems_of(f'{HEADER}\na,A,,,"{arr}",,\n')
    assert problem.startswith("accounts.csv:2: arr: ")


@pytest.mark.parametrize(
    "domain, expected",
    [
        ("acme.com", "acme.com"),
        ("ACME.COM", "acme.com"),
        ("www.acme.com", "acme.com"),
        ("https://www.acme.co.uk/pricing?x=1", "acme.co.uk"),
        ("http://app.acme.io:8080", "app.acme.io"),
        ("acme.com.", "acme.com"),
        ("münchen.de", "münchen.de"),
    ],
)
def test_domain_normalization(domain, expected):
    [row] = parse_accounts_csv(f"{HEADER}\na,A,{domain},,,,\n")
    assert row.domain == expected


@pytest.mark.parametrize("domain", ["acme", "acme..com", "-acme.com", "ac me.com", "a@b.com", "x" * 64 + ".com"])
def test_domain_rejected(domain):
    [problem] = problems_of(f'{HEADER}\na,A,"{domain}",,,,\n')
    assert problem.startswith("accounts.csv:2: domain: ")


def test_account_id_length_limit():
    assert parse_accounts_csv(f"{HEADER}\n{'x' * 255},A,,,,,\n")[0].account_id == "x" * 255
    [problem] = problems_of(f"{HEADER}\n{'x' * 256},A,,,,,\n")
    assert problem == "accounts.csv:2: account_id: is longer than 255 characters (256)"


def test_duplicate_ids_name_both_lines_even_when_spread():
    problems = problems_of(f"{HEADER}\nacme,A,,,,,\nb,B,,,,,\n acme ,A2,,,,,\nacme,A3,,,,,\n")
    assert problems == [
        "accounts.csv:4: account_id: 'acme' duplicates line 2",
        "accounts.csv:5: account_id: 'acme' duplicates line 2",
    ]


def test_unreadable_csv_is_a_csv_error():
    problems = problems_of(f'{HEADER}\na,"{"x" * 200_000}",,,,,\n')
    assert problems[0].startswith("accounts.csv:2: unreadable CSV:")


def test_load_accounts_csv(tmp_path):
    path = tmp_path / "accts.csv"
    path.write_bytes(("\ufeff" + HEADER + "\nacme,Acme,,,100,,\n").encode("utf-8"))
    assert load_accounts_csv(path)[0].arr == 100.0
    path.write_bytes(HEADER.encode() + b"\nacme,Acme \xe9,,,,,\n")  # latin-1, not UTF-8
    with pytest.raises(CsvError, match="accts.csv: not UTF-8"):
        load_accounts_csv(path)
    path.write_bytes(HEADER.encode() + b"\nacme,Acme,,,x,,\n")
    with pytest.raises(CsvError, match=r"^accts\.csv:2: arr:"):
        load_accounts_csv(path)
    with pytest.raises(CsvError, match="cannot read"):
        load_accounts_csv(tmp_path / "missing.csv")


# --------------------------------------------------------------------------- properties


@settings(max_examples=examples(400), suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400))
def test_arbitrary_text_only_raises_csv_error(text):
    try:
        rows = parse_accounts_csv(text)
    except CsvError as exc:
        assert exc.problems and all(isinstance(p, str) for p in exc.problems)
        return
    assert all(isinstance(r, AccountRow) for r in rows)


cells = st.one_of(st.text(max_size=20), st.sampled_from(["", "$1,000", "2024-01-01", "a@b.co", "acme.com", "12.5", '"', "\n"]))


@settings(max_examples=examples(300), suppress_health_check=[HealthCheck.too_slow])
@given(
    order=st.permutations(COLUMNS),
    rows=st.lists(st.lists(cells, min_size=5, max_size=9), max_size=6),
)
def test_arbitrary_csv_shaped_text_only_raises_csv_error(order, rows):
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(order)
    writer.writerows(rows)
    try:
        result = parse_accounts_csv(out.getvalue())
    except CsvError:
        return
    assert len({r.account_id for r in result}) == len(result)


label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True).filter(lambda s: s != "www")
valid_rows = st.fixed_dictionaries(
    {
        "name": st.text(min_size=1, max_size=60).map(str.strip).filter(bool),
        "domain": st.none() | st.lists(label, min_size=2, max_size=3).map(".".join),
        "plan": st.none() | st.text(min_size=1, max_size=30).map(str.strip).filter(bool),
        "arr": st.none() | st.integers(0, 10**9).map(float) | st.decimals(0, 10**7, places=2).map(float),
        "owner_email": st.none()
        | st.tuples(st.from_regex(r"[a-z0-9._+-]{1,20}", fullmatch=True), label, label).map(lambda t: f"{t[0]}@{t[1]}.{t[2]}"),
        "renewal_date": st.none() | st.dates(),
    }
)


@settings(max_examples=examples(200), suppress_health_check=[HealthCheck.too_slow])
@given(
    order=st.permutations(COLUMNS),
    items=st.lists(valid_rows, max_size=8),
    ids=st.lists(st.text(min_size=1, max_size=40).map(str.strip).filter(bool), min_size=8, max_size=8, unique=True),
    arr_style=st.sampled_from(["plain", "dollars"]),
)
def test_round_trip_through_csv_writer(order, items, ids, arr_style):
    expected = []
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(order)
    for item, account_id in zip(items, ids):
        values = dict(item, account_id=account_id)
        cells = []
        for column in order:
            value = values[column]
            if value is None:
                cells.append("")
            elif column == "arr":
                cells.append(f"${value:,.2f}" if arr_style == "dollars" else repr(value))
            elif column == "renewal_date":
                cells.append(value.isoformat())
            else:
                cells.append(value)
        writer.writerow(cells)
        expected.append(values)
    rows = parse_accounts_csv(out.getvalue())
    assert [{k: getattr(r, k) for k in COLUMNS} for r in rows] == expected
    # the line numbers are strictly increasing physical lines, starting after the header
    assert all(a.line < b.line for a, b in zip(rows, rows[1:]))
    if rows:
        assert rows[0].line == 2
