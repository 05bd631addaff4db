"""`stallwatch import-accounts FILE.csv`: parse and validate the accounts CSV.

Pure parsing: text in, `AccountRow`s out; the CLI stores them. The whole file is validated
first and nothing is imported when any row is bad: `CsvError.problems` lists every problem
(the first 50, then "... and N more"), each located as `FILE:LINE: column: what is wrong`.

Format (contract): a header with exactly the columns
`account_id,name,domain,plan,arr,owner_email,renewal_date`, in any order. Header names are
matched case-insensitively, ignoring surrounding whitespace and a UTF-8 byte-order mark.
Unknown, duplicate and missing columns are errors. Then one account per row:

| column | rule |
|---|---|
| `account_id` | required, at most 255 characters, unique within the file |
| `name` | required, at most 255 characters |
| `domain` | optional; `https://www.Acme.com/x` is stored as `acme.com` (scheme, path, port, `www.` dropped, lower-cased) |
| `plan` | optional, at most 100 characters |
| `arr` | optional annual revenue in dollars, non-negative: `50000`, `50,000`, `$50,000.00`; commas must group thousands |
| `owner_email` | optional, must look like an e-mail address; lower-cased |
| `renewal_date` | optional ISO date `YYYY-MM-DD` (an ISO datetime is accepted and its date kept) |

Values are stripped of surrounding whitespace; an empty cell is "not given" (None). Blank
lines and rows whose cells are all empty are skipped. `line` is the physical line on which
the row starts (the header is line 1 when the file starts with it), so quoted multi-line
cells do not shift the numbers of the following rows. An empty file is an error; a file
with only the header yields no rows.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

__all__ = ["COLUMNS", "AccountRow", "CsvError", "parse_accounts_csv", "load_accounts_csv", "parse_cell"]

COLUMNS: tuple[str, ...] = ("account_id", "name", "domain", "plan", "arr", "owner_email", "renewal_date")
HEADER = ",".join(COLUMNS)
MAX_PROBLEMS = 50
MAX_ID_LENGTH = 255
MAX_NAME_LENGTH = 255
MAX_PLAN_LENGTH = 100
MAX_EMAIL_LENGTH = 254

_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_LABEL_RE = re.compile(r"[^\W_](?:[\w-]{0,61}[^\W_])?")
_ARR_RE = re.compile(r"(-)?\s*\$?\s*(-)?\s*((?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]*)?|\.[0-9]+)")


@dataclass
class AccountRow:
    account_id: str
    name: str
    domain: str | None
    plan: str | None
    arr: float | None
    owner_email: str | None
    renewal_date: date | None
    line: int

    def traits(self) -> dict[str, Any]:
        """The account facts this row sets (given cells only), keyed like Segment group traits."""
        facts = {
            "name": self.name,
            "domain": self.domain,
            "plan": self.plan,
            "arr": self.arr,
            "owner_email": self.owner_email,
            "renewal_date": self.renewal_date,
        }
        return {k: v for k, v in facts.items() if v is not None}


class CsvError(ValueError):
    """The file cannot be imported. `problems` holds located messages (at most 50, then a
    final "... and N more"); `count` is the total number of problems."""

    def __init__(self, problems: list[str] | str, *, count: int | None = None) -> None:
        if isinstance(problems, str):
            problems = [problems]
        self.problems: list[str] = list(problems)
        self.count: int = count if count is not None else len(self.problems)
        super().__init__("\n".join(self.problems))


class _Problems:
    def __init__(self, source: str) -> None:
        self.source = source
        self.listed: list[str] = []
        self.count = 0

    def add(self, line: int | None, message: str) -> None:
        self.count += 1
        if len(self.listed) < MAX_PROBLEMS:
            where = f"{self.source}:{line}" if line is not None else self.source
            self.listed.append(f"{where}: {message}")

    def raise_if_any(self) -> None:
        if self.count:
            listed = list(self.listed)
            if self.count > len(listed):
                listed.append(f"... and {self.count - len(listed)} more")
            raise CsvError(listed, count=self.count)


def _show(value: str, limit: int = 60) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")


# --------------------------------------------------------------------------- cell parsers
# Each returns the parsed value, or raises ValueError with the message to report.


def _parse_domain(value: str) -> str:
    text = value.lower()
    text = re.sub(r"^[a-z][a-z0-9+.-]*://", "", text)  # scheme
    text = re.split(r"[/?#]", text, maxsplit=1)[0]  # path, query, fragment
    text = re.sub(r":\d+$", "", text).rstrip(".")  # port, root dot
    if text.startswith("www."):
        text = text[4:]
    labels = text.split(".")
    if (
        len(text) > 253
        or len(labels) < 2
        or not all(_LABEL_RE.fullmatch(label) for label in labels)
    ):
        raise ValueError(f"{_show(value)} is not a domain name (like acme.com)")
    return text


def _parse_arr(value: str) -> float:
    match = _ARR_RE.fullmatch(value)
    if match is None:
        raise ValueError(f"{_show(value)} is not a number (like 50000, 50,000 or $50,000.00)")
    number = float(match.group(3).replace(",", ""))
    if (match.group(1) or match.group(2)) and number != 0:
        raise ValueError(f"{_show(value)} is negative; ARR must be 0 or more")
    if not math.isfinite(number):
        raise ValueError(f"{_show(value)} is too large")
    return abs(number)  # "-0" -> 0.0


def _parse_email(value: str) -> str:
    if len(value) > MAX_EMAIL_LENGTH or not _EMAIL_RE.fullmatch(value):
        raise ValueError(f"{_show(value)} is not an e-mail address")
    return value.lower()


def _parse_renewal(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value).date()
    except ValueError:
        raise ValueError(f"{_show(value)} is not an ISO date (YYYY-MM-DD)") from None


def _limited(limit: int):
    def parse(value: str) -> str:
        if len(value) > limit:
            raise ValueError(f"is longer than {limit} characters ({len(value)})")
        return value

    return parse


_PARSERS = {
    "account_id": _limited(MAX_ID_LENGTH),
    "name": _limited(MAX_NAME_LENGTH),
    "domain": _parse_domain,
    "plan": _limited(MAX_PLAN_LENGTH),
    "arr": _parse_arr,
    "owner_email": _parse_email,
    "renewal_date": _parse_renewal,
}
_REQUIRED = ("account_id", "name")


def parse_cell(column: str, value: str) -> Any:
    """One non-empty, stripped value of `column` read as a cell of the file is (the CRM sync
    reads its properties with the same rules); raises ValueError saying what is wrong."""
    return _PARSERS[column](value)


# --------------------------------------------------------------------------- the file


def _header_problems(names: list[str]) -> list[str]:
    wanted = set(COLUMNS)
    seen: set[str] = set()
    duplicates: list[str] = []
    unknown: list[str] = []
    for position, name in enumerate(names, start=1):
        if name in seen:
            if name in wanted and name not in duplicates:
                duplicates.append(name)
        elif name not in wanted:
            unknown.append(repr(name) if name else f"(empty name, column {position})")
        if name:
            seen.add(name)
    missing = [c for c in COLUMNS if c not in seen]
    problems = []
    if unknown:
        problems.append(f"unknown column(s): {', '.join(unknown)}")
    if duplicates:
        problems.append(f"duplicate column(s): {', '.join(duplicates)}")
    if missing:
        problems.append(f"missing column(s): {', '.join(missing)}")
    if problems:
        hint = f" (expected header: {HEADER})"
        if len(names) == 1 and (";" in names[0] or "\t" in names[0]):
            hint += "; the file looks separated by ';' or tabs, save it as comma-separated CSV"
        problems[-1] += hint
    return problems


def parse_accounts_csv(text: str, source: str = "accounts.csv") -> list[AccountRow]:
    """Parse and validate an accounts CSV; raise `CsvError` listing every problem."""
    if text.startswith("\ufeff"):
        text = text[1:]
    problems = _Problems(source)
    reader = csv.reader(io.StringIO(text, newline=""))
    columns: list[str] | None = None
    rows: list[AccountRow] = []
    first_line: dict[str, int] = {}
    end_of_previous = 0
    while True:
        start = end_of_previous + 1
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.add(max(start, reader.line_num), f"unreadable CSV: {exc}")
            break
        end_of_previous = reader.line_num
        if not any(cell.strip() for cell in record):
            continue  # blank line, or a row of empty cells

        if columns is None:
            names = [cell.strip().lstrip("\ufeff").strip().lower() for cell in record]
            header_problems = _header_problems(names)
            if header_problems:
                for message in header_problems:
                    problems.add(start, message)
                problems.raise_if_any()
            columns = names
            continue

        if len(record) != len(columns):
            problems.add(start, f"expected {len(columns)} fields, got {len(record)}")
            continue
        values: dict[str, Any] = {}
        ok = True
        for column, cell in zip(columns, record):
            cell = cell.strip()
            if not cell:
                values[column] = None
                if column in _REQUIRED:
                    problems.add(start, f"{column}: is required")
                    ok = False
                continue
            try:
                values[column] = _PARSERS[column](cell)
            except ValueError as exc:
                problems.add(start, f"{column}: {exc}")
                ok = False
        account_id = values.get("account_id")
        if account_id is not None and account_id in first_line:
            problems.add(start, f"account_id: {_show(account_id)} duplicates line {first_line[account_id]}")
            ok = False
        elif account_id is not None:
            first_line[account_id] = start
        if ok:
            rows.append(AccountRow(**values, line=start))

    if columns is None and not problems.count:
        problems.add(None, f"empty file, expected header {HEADER}")
    problems.raise_if_any()
    return rows


def load_accounts_csv(path: str | Path) -> list[AccountRow]:
    """Read a UTF-8 (with or without BOM) CSV file and parse it; errors name the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CsvError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CsvError(
            f"{path}: not UTF-8 text (byte {exc.start}); export the sheet as 'CSV UTF-8'"
        ) from None
    return parse_accounts_csv(text, source=path.name if path.name else str(path))
