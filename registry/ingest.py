"""Workbook import: parse every cell, validate every row, then write all or nothing.

Validation runs to the end and reports every problem with its sheet, row, column,
value and rule; only a workbook without errors is written, in one transaction.
Rows are matched to stored records by their natural key (``sheets.Sheet.key``), so
importing the same file again changes nothing, and a changed cell is an audited
update. Columns a sheet leaves out are left as stored; rows a sheet leaves out are
kept (an import never deletes).

With checks (``registry.entry_checks.EntryChecks``), the data-quality rules run for the
patients the import touches inside the writing transaction, before and after the
writes, and the findings the import adds are reported; ``strict`` refuses an import
that adds errors (rolled back). A dry run with checks writes in a transaction and rolls
it back, so its findings are exactly those the import would add. A patient's missing
records (no antibody test, treatment or follow-up yet) are reported as still to enter
and never refuse: a coordinator may import the patients first and their records later.
A patient verified or signed whose records the import adds or changes goes back to
complete, their signature voided (registry/signoff.py), in the import's transaction.
"""

from __future__ import annotations

import csv
import gc
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import Enum
from functools import cache
from itertools import chain, compress, repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlmodel import Session

from registry import missing, workbook
from registry.atomic import replacing
from registry.audit import audited_session, insert_audited_columns
from registry.codes import EARLIEST_DATE, LATEST_DATE
from registry.missing import Missing
from registry.models import Patient, Site, is_codable, scalar_default
from registry.sheets import HELPER_SHEETS, SHEETS, SHEETS_BY_NAME, Sheet, SheetColumn, stored_rows
from registry.signoff import void_for_patients
from registry.violations import explain

if TYPE_CHECKING:
    import pandas as pd

    from registry.entry_checks import EntryChecks

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_NUMERALS = "0123456789.+-eE"  # the characters of a plain decimal number
_WHOLE = re.compile(r"[+-]?\d+")
_QUALIFIED = re.compile(r"[<>≤≥]=?\s*[\d.]+")
_WITH_UNIT = re.compile(r"[+-]?[\d.]+\s*[^\d\s.].*")
_DAY_MONTH = re.compile(r"\d{1,2}[/.\-]\d{1,2}[/.\-]\d{2,4}")
_LARGEST_INTEGER = 2**31 - 1  # the INTEGER column of both databases
_YES = {"yes", "y", "true", "1"}
_NO = {"no", "n", "false", "0"}
_LOCK_CHUNK = 10_000  # ids per SELECT ... FOR UPDATE (PostgreSQL takes at most 65,535 parameters)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input, located as the person who typed it sees it."""

    source: str  # sheet name, or CSV file name
    row: int | None
    column: str | None
    value: Any
    message: str
    severity: str = "error"  # error (nothing is written) | warning

    def __str__(self) -> str:
        place = self.source + (f" row {self.row}" if self.row is not None else "")
        place += f", column {self.column}" if self.column is not None else ""
        shown = f'"{_shortened(show(self.value))}" ' if self.value is not None else ""
        return f"{place}: {shown}{self.message}"


#: The most of a value a message shows (a 200,000-character cell would fill the screen; --errors keeps it whole).
_SHOWN = 80


def _shortened(text: str) -> str:
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}... ({len(text):,} characters)"


def show(value: Any) -> str:
    """A cell value as the person entered it (dates as ISO, no Python reprs)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime) and value.time() == datetime.min.time():
        return value.date().isoformat()
    if isinstance(value, date | datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass
class Counts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0


@dataclass
class ImportResult:
    problems: list[Problem]
    counts: dict[str, Counts] = field(default_factory=dict)
    written: bool = False
    findings: pd.DataFrame | None = None  # the findings the import adds (registry.quality's columns); None: unchecked

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def changed(self) -> bool:
        return any(c.inserted or c.updated for c in self.counts.values())


class CellError(ValueError):
    """A cell that cannot be read as its column's type; the message is the rule broken."""


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise CellError("is not a number")
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        number = float(value)
    elif isinstance(value, str) and _QUALIFIED.fullmatch(value):
        raise CellError("is not a number (qualifiers such as < or > cannot be stored: enter the number alone)")
    elif isinstance(value, str) and "," in value:
        raise CellError("is not a number (use a point for decimals and no thousands separators)")
    elif isinstance(value, str) and _WITH_UNIT.fullmatch(value):
        raise CellError("is not a number (enter the number alone, without its unit)")
    else:
        raise CellError("is not a number")
    if not math.isfinite(number):
        raise CellError("is not a finite number")
    return number


def _whole(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif (isinstance(value, float) and value.is_integer()) or (isinstance(value, str) and _WHOLE.fullmatch(value)):
        number = int(value)
    else:
        raise CellError("is not a whole number")
    if abs(number) > _LARGEST_INTEGER:
        raise CellError("is too large a number to store")
    return number


def _date(value: Any) -> date:
    day = _calendar_date(value)
    if not EARLIEST_DATE <= day <= LATEST_DATE:
        raise CellError(f"is outside {EARLIEST_DATE} to {LATEST_DATE}: a date so far off is a typing error")
    return day


def _calendar_date(value: Any) -> date:
    if isinstance(value, datetime):
        if value.time() != datetime.min.time():
            raise CellError("has a time of day: enter the date only")
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str) and _ISO_DATE.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise CellError("is not a valid date") from None
    if isinstance(value, str) and _DAY_MONTH.fullmatch(value):
        raise CellError("is not an ISO 8601 date (YYYY-MM-DD); day and month order is ambiguous and never guessed")
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise CellError("is a number, not a date (use a date cell or YYYY-MM-DD)")
    raise CellError("is not an ISO 8601 date (YYYY-MM-DD)")


def _yes_no(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float | str) and str(value).strip().lower() in _YES | _NO:
        return str(value).strip().lower() in _YES
    raise CellError("is not yes or no")


def _text(value: Any, length: int) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise CellError("is not text")
    if len(value) > length:
        raise CellError(f"is longer than {length} characters")
    if "\x00" in value:
        raise CellError("contains a NUL character")
    if control := workbook.CONTROL_CHARACTERS.search(value):  # NUL told apart above
        raise CellError(f"contains the control character U+{ord(control.group()):04X} (text may hold tabs and line "
                        "breaks, no other control character: an .xlsx cell cannot hold one)")  # fmt: skip
    return value


def _blank(cell: Any) -> bool:
    return cell is None or (isinstance(cell, str) and not cell.strip())


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _missing_code(column: SheetColumn, text: str) -> Missing | None:
    """The missing-data code a cell is written as (``[unknown]``), if it is one; :class:`CellError` where the column
    takes none, or the code between the brackets is not one."""
    try:
        code = missing.from_cell(text)
    except ValueError as error:
        if not is_codable(column.source) or column.required:
            return None  # "[...]" is then the column's business: a text, or a value of the wrong kind
        raise CellError(str(error)) from None
    if code is not None and column.required:
        raise CellError(f"is required: a missing-data code ({code}) cannot stand in for it")
    if code is not None and not is_codable(column.source):
        raise CellError(f"takes no missing-data code ({code}): give a value or leave it empty")
    return code


def parse_cell(column: SheetColumn, value: Any) -> Any:
    """The cell's value as its column's type, a :class:`registry.missing.Missing` for a missing-data code
    (``[unknown]``), or :class:`CellError`. Blank cells are None."""
    if isinstance(value, workbook.UnreadableCell):  # a formula never calculated, an error such as #N/A
        raise CellError(value.problem)
    if _blank(value):
        if column.required:
            raise CellError("is required")
        return None
    if isinstance(value, str):  # line breaks as LF: an .xlsx cell (XML) keeps no CR, so a CR could not come back
        value = value.strip().replace("\r\n", "\n").replace("\r", "\n")
        if value.startswith("[") and (code := _missing_code(column, value)) is not None:
            return code
    kind = column.source.type
    if isinstance(kind, sa.Enum):
        if not isinstance(value, str) or value not in kind.enums:
            raise CellError(f"is not an allowed value; allowed: {', '.join(kind.enums)}")
        return value
    if isinstance(kind, sa.String):
        text = _text(value, kind.length)
        pattern, rule = column.source.info.get("pattern", (None, None))
        if pattern is not None and not _compiled(pattern).fullmatch(text):
            raise CellError(rule)
        return text
    if isinstance(kind, sa.Date):
        return _date(value)
    if isinstance(kind, sa.Boolean):
        return _yes_no(value)
    if isinstance(kind, sa.Integer):
        return _whole(value)
    if isinstance(kind, sa.Float):
        return _number(value)
    raise TypeError(f"no parser for {kind!r}")  # a model column type this module does not know


def _columns(sheet: Sheet, raw: workbook.RawSheet, problems: list[Problem]) -> dict[int, SheetColumn] | None:
    """Header position -> column; None if the header is unusable (then no row is read)."""
    known = {c.name: c for c in sheet.columns}
    found: dict[int, SheetColumn] = {}
    seen: dict[str, int] = {}
    usable = True
    for index, cell in enumerate(raw.header):
        name = show(cell).strip() if cell is not None else ""
        if not name:
            continue
        if name in seen:
            problems.append(Problem(raw.source, 1, name, None, "column appears more than once"))
            usable = False
        elif name in known:
            found[index] = known[name]
        else:
            problems.append(Problem(raw.source, 1, name, None, "unknown column, ignored", "warning"))
        seen[name] = index
    for column in sheet.columns:
        if column.required and column.name not in seen:
            problems.append(Problem(raw.source, 1, column.name, None, "required column is missing"))
            usable = False
    return found if usable else None


#: What :func:`parse_cell` made of cells: per cell type, cell -> (value, None) or (None, the rule broken).
_Seen = dict[type, dict[Any, tuple[Any, str | None]]]


class _ColumnParser:
    """:func:`parse_cell` for one column, once per distinct cell: codes, dates and flags repeat."""

    LIMIT = 100_000  # distinct cells remembered from chunk to chunk, per type (memory stays bounded)

    def __init__(self, column: SheetColumn, seen: _Seen) -> None:
        self.column, self.seen = column, seen  # seen: shared by the columns that read alike (study_id of each sheet)

    def __call__(self, cell: Any) -> tuple[Any, str | None]:
        """(value, None), or (None, the rule the cell breaks)."""
        try:
            return parse_cell(self.column, cell), None
        except CellError as error:
            return None, str(error)

    def column_values(self, cells: Sequence[Any]) -> tuple[list[Any], set[int]]:
        """The values of ``cells`` (None for a cell that fails) and the positions of the cells that fail."""
        kinds = set(map(type, cells)) - {type(None)}
        if len(kinds) > 1 or float in kinds:  # True == 1 == 1.0 and 0.0 == -0.0: such cells one by one
            outcomes = [self(cell) for cell in cells]
            return [value for value, _ in outcomes], {i for i, (_, error) in enumerate(outcomes) if error}
        seen = self.seen.setdefault(next(iter(kinds), type(None)), {})
        unique = dict.fromkeys(cells)
        distinct = [cell for cell in unique if cell not in seen]
        outcomes = self._numbers(distinct) if kinds == {str} and isinstance(self.column.source.type, sa.Float) else {}
        outcomes.update((cell, self(cell)) for cell in distinct if cell not in outcomes)
        if len(seen) < self.LIMIT:
            seen.update(outcomes)
        outcomes.update((cell, seen[cell]) for cell in unique if cell not in outcomes)
        values = list(map({cell: value for cell, (value, _) in outcomes.items()}.__getitem__, cells))
        failing = {cell for cell, (_, error) in outcomes.items() if error is not None}
        return values, {i for i, cell in enumerate(cells) if cell in failing} if failing else set()

    @staticmethod
    def _numbers(texts: list[str]) -> dict[str, tuple[float, None]]:
        """What :func:`parse_cell` makes of the plain decimal numbers among ``texts`` (digits, point, sign and
        exponent only: there ``float`` accepts exactly what it does), all at once; {} if any is not one."""
        plain = [text for text in texts if text and not text.strip(_NUMERALS)]
        try:
            numbers = list(map(float, plain))
        except ValueError:
            return {}
        if not all(map(math.isfinite, numbers)):
            return {}
        return dict(zip(plain, zip(numbers, repeat(None)), strict=False))


#: Rows read, checked and written at a time: memory stays bounded however long the sheet.
_CHUNK = 50_000


@dataclass
class _Rows:
    """The rows of a sheet that read cleanly, column by column (the raw cells are not kept)."""

    sheet: Sheet
    source: str
    numbers: list[int]  # the row numbers a spreadsheet shows
    values: dict[str, list[Any]]  # sheet column -> parsed values, for the columns the sheet has

    def __len__(self) -> int:
        return len(self.numbers)

    def keys(self) -> list[tuple]:
        return list(zip(*(self.values[name] for name in self.sheet.key), strict=True))

    def keep(self, wanted: Sequence[bool]) -> None:
        """Drop the rows that are not ``wanted``."""
        self.numbers = list(compress(self.numbers, wanted))
        self.values = {name: list(compress(values, wanted)) for name, values in self.values.items()}

    def records(self, start: int, stop: int) -> dict[str, Sequence[Any]]:
        """Rows ``start:stop`` as they will be stored, column by column: defaults where the sheet has none."""
        count = len(self.numbers[start:stop])
        return {c.name: self.values[c.name][start:stop] if c.name in self.values else [scalar_default(c.source)] * count
                for c in self.sheet.columns}  # fmt: skip


def _row_problems(
    raw: workbook.RawSheet, number: int, cells: list[Any], parsers: dict[int, _ColumnParser]
) -> list[Problem]:
    """What is wrong with one row that did not read cleanly, cell by cell (a blank row is not wrong)."""
    if all(_blank(cell) for cell in cells):  # blank rows, trailing or not, carry nothing
        return []
    problems = []
    for index, cell in enumerate(cells):
        if index in parsers and (error := parsers[index](cell)[1]) is not None:
            problems.append(
                Problem(raw.source, number, parsers[index].column.name, None if _blank(cell) else cell, error)
            )
    for index, parse in parsers.items():  # short rows: missing trailing cells are blank; the first refusal is told
        if index >= len(cells) and not problems and (error := parse(None)[1]) is not None:
            problems.append(Problem(raw.source, number, parse.column.name, None, error))
    return problems


def _parse_rows(
    sheet: Sheet, raw: workbook.RawSheet, problems: list[Problem], seen: dict[tuple[sa.Column, bool], _Seen]
) -> _Rows | None:
    """The rows that read cleanly, column by column; problems for the others. None if the header is unusable."""
    found = _columns(sheet, raw, problems)
    if found is None:
        return None
    parsers = {index: _ColumnParser(c, seen.setdefault((c.source, c.required), {})) for index, c in found.items()}
    unheaded = [index for index, cell in enumerate(raw.header) if _blank(cell)]
    rows = _Rows(sheet, raw.source, [], {column.name: [] for column in found.values()})
    stray = False
    for chunk in raw.chunks(_CHUNK):
        numbers = chunk.numbers
        cells_of = chunk.columns + [(None,) * len(numbers)] * (len(raw.header) - len(chunk.columns))  # blank cells
        unread = [*unheaded, *range(len(raw.header), len(cells_of))]
        stray = stray or any(not _blank(cell) for index in unread for cell in cells_of[index])
        failing: set[int] = set()
        parsed = {}
        for index, parse in parsers.items():
            parsed[index], failed = parse.column_values(cells_of[index])
            failing |= failed
        for position in sorted(failing):
            problems += _row_problems(raw, numbers[position], chunk.row(position), parsers)
        clean = [position not in failing for position in range(len(numbers))] if failing else [True] * len(numbers)
        rows.numbers += compress(numbers, clean)
        for index, values in parsed.items():
            rows.values[parsers[index].column.name] += compress(values, clean)
    if stray:
        problems.append(Problem(raw.source, None, None, None, "values in columns without a header, ignored", "warning"))
    return rows


def _find_sheets(raw_sheets: Sequence[workbook.RawSheet], problems: list[Problem]) -> dict[str, workbook.RawSheet]:
    found = {}
    for raw in raw_sheets:
        name = raw.name.strip().lower()  # "Labs " is the labs sheet; no other reading is possible
        if name in found:
            problems.append(Problem(raw.source, None, None, None, f"is a second {name} sheet; merge the two"))
        elif name in SHEETS_BY_NAME:
            found[name] = raw
            if raw.hidden:
                message = "is hidden in the workbook: imported all the same (unhide it to see what is imported)"
                problems.append(Problem(raw.source, None, None, None, message, "warning"))
        elif name not in HELPER_SHEETS:
            expected = ", ".join(SHEETS_BY_NAME)
            problems.append(
                Problem(raw.source, None, None, None, f"unknown sheet, ignored (expected: {expected})", "warning")
            )
    if not found:
        problems.append(Problem("workbook", None, None, None, f"has none of the sheets {', '.join(SHEETS_BY_NAME)}"))
    return found


@dataclass
class _Stored:
    """What the database holds now about patients and sites."""

    sites: dict[str, int]
    patients: dict[str, int]
    deleted_patients: set[str]
    locked_patients: set[str]


def _load(connection: sa.Connection) -> _Stored:
    return _Stored(
        sites=dict(connection.execute(sa.select(Site.code, Site.id)).all()),
        patients=dict(connection.execute(sa.select(Patient.study_id, Patient.id)).all()),
        deleted_patients=set(
            connection.execute(sa.select(Patient.study_id).where(Patient.deleted_at.is_not(None))).scalars()
        ),
        locked_patients=set(
            connection.execute(sa.select(Patient.study_id).where(Patient.locked_at.is_not(None))).scalars()
        ),
    )


def _check_references(rows: _Rows, stored: _Stored, known_patients: set[str], problems: list[Problem]) -> None:
    """Drop (and report) rows naming an unregistered site, an unknown patient or a deleted one."""
    if rows.sheet.name == "patients":
        if set(rows.values.get("site", ())) - {None} <= stored.sites.keys():
            return  # the usual case, settled without a look at each row
    elif (named := set(rows.values["study_id"])) <= known_patients and named.isdisjoint(stored.deleted_patients):
        return
    good = []
    if rows.sheet.name == "patients":
        known = ", ".join(sorted(stored.sites)) or "none yet; add one with `registry site add`"
        for number, site in zip(rows.numbers, rows.values.get("site", [None] * len(rows)), strict=True):
            good.append(site is None or site in stored.sites)
            if not good[-1]:
                problems.append(
                    Problem(rows.source, number, "site", site, f"is not a registered site (known: {known})")
                )
    else:
        for number, study_id in zip(rows.numbers, rows.values["study_id"], strict=True):
            if study_id not in known_patients:
                message = "is not a patient in the patients sheet or the registry"
            elif study_id in stored.deleted_patients:
                message = "is a deleted patient: restore them in the web application first"
            else:
                message = None
            good.append(message is None)
            if message is not None:
                problems.append(Problem(rows.source, number, "study_id", study_id, message))
    rows.keep(good)


def _check_duplicates(rows: _Rows, problems: list[Problem]) -> None:
    """Drop (and report) rows repeating an earlier row's natural key."""
    keys = rows.keys()
    if len(set(keys)) == len(keys):
        return  # the usual case, settled without a look at each row
    first: dict[tuple, int] = {}
    good = []
    columns = " + ".join(rows.sheet.key)
    for number, key in zip(rows.numbers, keys, strict=True):
        earlier = first.setdefault(key, number)
        good.append(earlier == number)
        if earlier != number:
            shown = " / ".join(show(v) for v in key)
            message = f"repeats row {earlier}: each row needs its own {columns}"
            problems.append(Problem(rows.source, number, columns, shown, message))
    rows.keep(good)


@dataclass
class _Change:
    """A stored record that a row changes."""

    number: int
    stored: dict[str, Any]
    changes: dict[str, Any]  # sheet column -> new value

    def merged(self) -> dict[str, Any]:
        """The record as it will be stored."""
        return {**self.stored, **self.changes}


@dataclass
class _Plan:
    """What an import does to one sheet's table."""

    new: _Rows  # records to insert
    changed: list[_Change]
    unchanged: int


def _plan(connection: sa.Connection, rows: _Rows, stored: _Stored, problems: list[Problem]) -> _Plan:
    """Match rows to stored records by natural key; refuse deleted records and locked patients' changes."""
    sheet, records, keys = rows.sheet, stored_rows(connection, rows.sheet), rows.keys()
    plan, new = _Plan(rows, [], 0), []
    if records.keys().isdisjoint(keys) and stored.locked_patients.isdisjoint(rows.values["study_id"]):
        return plan  # all new, none of a locked patient: the usual case, settled without a look at each row
    columns = " + ".join(sheet.key)
    for position, (number, key, study_id) in enumerate(zip(rows.numbers, keys, rows.values["study_id"], strict=True)):
        existing = records.get(key)
        if existing is not None and existing["deleted"]:
            shown = " / ".join(show(v) for v in key)
            message = "is a deleted record (or belongs to a deleted patient): restore it in the web application first"
            problems.append(Problem(rows.source, number, columns, shown, message))
            new.append(False)
            continue
        changes = {} if existing is None else {
            name: values[position] for name, values in rows.values.items() if existing.get(name) != values[position]
        }  # fmt: skip
        if (
            existing is None or changes
        ) and study_id in stored.locked_patients:  # unchanged rows of a locked patient are fine
            message = "is a patient locked by a data manager: ask them to unlock before changing their records"
            problems.append(Problem(rows.source, number, "study_id", study_id, message))
            new.append(False)
            continue
        new.append(existing is None)
        if changes:
            plan.changed.append(_Change(number, existing, changes))
        elif existing is not None:
            plan.unchanged += 1
    rows.keep(new)
    return plan


def _rule_columns(sheet: Sheet, condition: str) -> list[str]:
    positions = {c.name: condition.find(c.target) for c in sheet.columns if re.search(rf"\b{c.target}\b", condition)}
    return sorted(positions, key=positions.get)


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    return value


def _sqlite_values(column: SheetColumn, values: Sequence[Any]) -> Sequence[Any]:
    """A column's values as SQLite compares them: dates and codes as text (once per distinct value), a field with a
    missing-data code empty, as it is stored."""
    if is_codable(column.source):
        values = [None if isinstance(v, Missing) else v for v in values]
    if not isinstance(column.source.type, sa.Date | sa.Enum):
        return values
    converted: dict[Any, Any] = {}
    return [converted[v] if v in converted else converted.setdefault(v, _sqlite_value(v)) for v in values]


def rule_violations(sheet: Sheet, records: Sequence[dict[str, Any]]) -> list[tuple[int, str | None, str]]:
    """``(index, column, message)`` for each of ``records`` (sheet-named values) that breaks a CHECK rule.

    The rules are the database's own (``models.rule``), run over every record at once in
    a scratch SQLite table, so what the database would refuse is reported for every
    record instead of the first, and with the column to show it at.
    """
    with _RuleChecker(sheet) as checker:
        return checker.violations(len(records), _by_column(sheet, records))


class _RuleChecker:
    """The CHECK rules of a sheet's table, run in a scratch SQLite table over records given column by column."""

    def __init__(self, sheet: Sheet) -> None:
        self.sheet = sheet
        self.rules = [c for c in sheet.table.constraints if isinstance(c, sa.CheckConstraint) and "message" in c.info]
        read = {name for rule in self.rules for name in _rule_columns(sheet, str(rule.sqltext))}
        self.columns = [c for c in sheet.columns if c.name in read]  # only these go to the scratch table
        self.scratch = sa.create_engine("sqlite://")

    def __enter__(self) -> _RuleChecker:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.scratch.dispose()

    def violations(self, count: int, columns: Mapping[str, Sequence[Any]]) -> list[tuple[int, str | None, str]]:
        """``(index, column, message)`` for each of ``count`` records (sheet column -> values) that breaks a rule."""
        if not count or not self.rules:
            return []
        table, targets = self.sheet.table.name, [c.target for c in self.columns]
        found = []
        with self.scratch.begin() as connection:
            connection.exec_driver_sql(f"CREATE TABLE {table} ({', '.join(['_index', *targets])})")
            values = [range(count), *(_sqlite_values(c, columns[c.name]) for c in self.columns)]
            connection.exec_driver_sql(
                f"INSERT INTO {table} VALUES ({', '.join('?' * len(values))})", list(zip(*values, strict=True))
            )
            for rule in self.rules:
                condition = str(rule.sqltext)
                broken = connection.exec_driver_sql(f"SELECT _index FROM {table} WHERE NOT ({condition})")
                names = _rule_columns(self.sheet, condition)
                found += [(index, names[0] if names else None, rule.info["message"]) for (index,) in broken]
            connection.exec_driver_sql(f"DROP TABLE {table}")
        return found


def _check_rules(plan: _Plan, problems: list[Problem]) -> None:
    """Report every new or changed record that breaks a CHECK rule of its table, a chunk of records at a time."""
    new, changed = plan.new, [change.merged() for change in plan.changed]
    batches = ((new.numbers[start : start + _CHUNK], new.records(start, start + _CHUNK))
               for start in range(0, len(new), _CHUNK))  # fmt: skip
    with _RuleChecker(new.sheet) as checker:
        for numbers, columns in chain(batches, [([c.number for c in plan.changed], _by_column(new.sheet, changed))]):
            for index, column, message in checker.violations(len(numbers), columns):
                value = columns[column][index] if column else None
                problems.append(Problem(new.source, numbers[index], column, value, message))


def _by_column(sheet: Sheet, records: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    return {c.name: [record[c.name] for record in records] for c in sheet.columns}


def _lock_changed(session: Session, plans: list[_Plan]) -> None:
    """Lock the stored records the import changes before changing any, in the web forms' order (a patient's records,
    then the patient; each table by id), so that an import and a form saving the same patient queue, not deadlock."""
    for plan in sorted(plans, key=lambda plan: plan.new.sheet.model is Patient):
        ids = sorted(change.stored["id"] for change in plan.changed)
        key = plan.new.sheet.table.primary_key.columns[0]
        for start in range(0, len(ids), _LOCK_CHUNK):
            chunk = ids[start : start + _LOCK_CHUNK]
            session.execute(sa.select(key).where(key.in_(chunk)).order_by(key).with_for_update())


class _ClosedMeanwhile(Exception):
    """Patients the import writes to were locked or deleted after it was validated."""

    def __init__(self, study_ids: list[str]) -> None:
        super().__init__(study_ids)
        self.study_ids = study_ids


def _touched(plans: list[_Plan]) -> list[str]:
    """The study_ids of the patients whose records the import inserts or changes."""
    return sorted(
        {study_id for plan in plans for study_id in plan.new.values.get("study_id", [])}
        | {change.stored["study_id"] for plan in plans for change in plan.changed}
    )


class _AddsErrors(Exception):
    """The strict import adds error findings (rolled back)."""

    def __init__(self, findings: pd.DataFrame) -> None:
        super().__init__(len(findings))
        self.findings = findings


def _refuse_closed_since_validation(session: Session, touched: list[str]) -> None:
    """Ask again, after every write is flushed, whether a patient the import writes to (``touched``) is now locked or
    deleted.

    The patient rows are read FOR SHARE on PostgreSQL (after the records, the web forms' order), so a lock
    committed since the validation is seen and one still under way waits for this import; on SQLite this
    transaction holds the write lock by now, so it reads the newest state.
    """
    closed = []
    for start in range(0, len(touched), _LOCK_CHUNK):
        query = sa.select(Patient.study_id).where(
            Patient.study_id.in_(touched[start : start + _LOCK_CHUNK]),
            Patient.locked_at.is_not(None) | Patient.deleted_at.is_not(None),
        )
        closed += session.execute(query.order_by(Patient.id).with_for_update(read=True)).scalars()
    if closed:
        raise _ClosedMeanwhile(sorted(closed))


def _write(
    engine: sa.Engine, plans: list[_Plan], actor: str, reason: str, checks: _Checks | None, *, commit: bool
) -> pd.DataFrame | None:
    """All changes in one audited transaction: new records in bulk and in chunks, changed ones through the ORM.

    With ``checks``, the findings the changes add (before the commit, which ``commit=False`` leaves out)."""
    with audited_session(engine, actor=actor, reason=reason) as session:
        _lock_changed(session, plans)
        connection = session.connection()
        sites = dict(session.execute(sa.select(Site.code, Site.id)).all())
        patients: dict[str, int] = dict(session.execute(sa.select(Patient.study_id, Patient.id)).all())
        touched = _touched(plans)
        before = None if checks is None else checks.before(session, patients, touched)
        for plan in plans:
            sheet, new = plan.new.sheet, plan.new
            ids = {c.name: patients if c.name == "study_id" else sites for c in sheet.columns if c.is_reference}
            for start in range(0, len(new), _CHUNK):
                columns = {
                    sheet.column(name).target: list(map(ids[name].__getitem__, values[start : start + _CHUNK]))
                    if name in ids else values[start : start + _CHUNK]
                    for name, values in new.values.items()
                }  # fmt: skip
                if missing.has(sheet.table):
                    columns = missing.stored_columns(columns)
                insert_audited_columns(connection, sheet.model, columns, actor=actor, reason=reason)
            for change in plan.changed:
                record = session.get(sheet.model, change.stored["id"])
                targets = {sheet.column(name).target: ids[name][value] if name in ids else value
                           for name, value in change.changes.items()}  # fmt: skip
                if missing.has(sheet.table):
                    targets = missing.stored(targets, record.missing_codes)
                for target, value in targets.items():
                    setattr(record, target, value)
            session.flush()
            if sheet.name == "patients":
                patients = dict(session.execute(sa.select(Patient.study_id, Patient.id)).all())
        _refuse_closed_since_validation(session, touched)
        void_for_patients(session, [patients[study_id] for study_id in touched if study_id in patients])
        session.flush()
        added = None if checks is None else checks.added(session, patients, touched, before)
        if commit:
            session.commit()
        return added


@dataclass(frozen=True)
class _Checks:
    """The data-quality rules run for the patients an import touches, a chunk of patients at a time (PostgreSQL
    takes at most 65,535 parameters); the rules' own reads of related patients make the chunks' findings whole."""

    checks: EntryChecks
    strict: bool

    def _findings(self, session: Session, ids: list[int], before: pd.DataFrame | None) -> pd.DataFrame:
        import pandas as pd

        chunks = [ids[start : start + _LOCK_CHUNK] for start in range(0, len(ids), _LOCK_CHUNK)]
        found = [self.checks.findings(session, chunk) if before is None else self.checks.added(session, chunk, before)
                 for chunk in chunks or [[]]]  # fmt: skip
        return pd.concat(found, ignore_index=True)

    def before(self, session: Session, patients: Mapping[str, int], touched: list[str]) -> pd.DataFrame:
        """The findings of the touched patients already stored, before the import writes."""
        return self._findings(session, [patients[s] for s in touched if s in patients], None)

    def added(
        self, session: Session, patients: Mapping[str, int], touched: list[str], before: pd.DataFrame
    ) -> pd.DataFrame:
        """The findings the flushed writes add; :class:`_AddsErrors` if strict and errors are among them."""
        added = self._findings(session, [patients[s] for s in touched], before)
        if self.strict and not self.checks.errors(added).empty:
            raise _AddsErrors(added)
        return added


@contextmanager
def _cycle_collection_paused() -> Iterator[None]:
    """Python's cycle collector paused, as it was before afterwards.

    An import holds millions of lists and tuples until it ends (parsed columns, rows for the
    driver) and makes no reference cycles worth collecting meanwhile; the collector would
    walk all of them again and again (a quarter of the import's time at 10,000 patients).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def import_sheets(
    engine: sa.Engine,
    raw_sheets: Sequence[workbook.RawSheet],
    *,
    actor: str,
    reason: str,
    dry_run: bool = False,
    checks: EntryChecks | None = None,
    strict: bool = False,
) -> ImportResult:
    """Validate every row of ``raw_sheets``; write them in one transaction if none is wrong.

    Sheet by sheet (patients first), each read in chunks into columns of parsed values,
    so that the raw cells of only one chunk are held at a time. With ``checks``, the
    findings the import adds are in the result; ``strict`` refuses an import that adds errors.
    """
    checked = None if checks is None else _Checks(checks, strict)
    with _cycle_collection_paused():
        return _import_sheets(engine, raw_sheets, actor=actor, reason=reason, dry_run=dry_run, checks=checked)


def _import_sheets(
    engine: sa.Engine,
    raw_sheets: Sequence[workbook.RawSheet],
    *,
    actor: str,
    reason: str,
    dry_run: bool,
    checks: _Checks | None,
) -> ImportResult:
    problems: list[Problem] = []
    found = _find_sheets(raw_sheets, problems)
    plans = []
    with engine.connect() as connection:
        stored = _load(connection)
        known_patients, seen = set(stored.patients), {}
        for sheet in (sheet for sheet in SHEETS if sheet.name in found):
            rows = _parse_rows(sheet, found[sheet.name], problems, seen)
            if rows is None:
                continue
            if sheet.name == "patients":
                known_patients |= set(rows.values["study_id"])
            _check_references(rows, stored, known_patients, problems)
            _check_duplicates(rows, problems)
            plans.append(_plan(connection, rows, stored, problems))
            _check_rules(plans[-1], problems)
    counts = {sheet.name: Counts() for sheet in SHEETS if sheet.name in found}
    for plan in plans:
        counts[plan.new.sheet.name] = Counts(len(plan.new), len(plan.changed), plan.unchanged)
    result = ImportResult(sorted(problems, key=_reading_order), counts)
    if result.errors or (dry_run and checks is None) or not result.changed:
        return result
    try:
        result.findings = _write(engine, plans, actor, reason, checks, commit=not dry_run)
    except _AddsErrors as refused:
        result.findings = refused.findings
        errors = len(checks.checks.errors(refused.findings))
        message = f"the import adds {errors} error finding{'' if errors == 1 else 's'} (strict): nothing was written"
        result.problems.append(Problem("checks", None, None, None, message))
        return result
    except sa.exc.IntegrityError as error:  # a concurrent change the validation could not see
        result.problems.append(Problem("database", None, None, None, f"refused the import: {explain(error).message}"))
        return result
    except _ClosedMeanwhile as closed:
        message = "was locked by a data manager or deleted while the import was being checked: nothing was written"
        result.problems += [Problem("database", None, "study_id", study_id, message) for study_id in closed.study_ids]
        return result
    result.written = not dry_run
    return result


def _reading_order(problem: Problem) -> tuple:
    order = {sheet.name: i for i, sheet in enumerate(SHEETS)}
    stem = problem.source.removesuffix(".csv")
    return (order.get(stem, len(order)), problem.source, problem.row or 0)


def import_path(
    engine: sa.Engine,
    path: Path,
    *,
    actor: str,
    reason: str | None = None,
    dry_run: bool = False,
    checks: EntryChecks | None = None,
    strict: bool = False,
) -> ImportResult:
    """Import an XLSX workbook or a folder of CSV files (raises ``workbook.WorkbookError`` if unreadable)."""
    reason = reason or f"import of {path.name}"
    return import_sheets(
        engine, workbook.read(path), actor=actor, reason=reason, dry_run=dry_run, checks=checks, strict=strict
    )


ERROR_COLUMNS = ["severity", "sheet", "row", "column", "value", "message"]


def write_problems(path: Path, problems: Sequence[Problem], findings: pd.DataFrame | None = None) -> None:
    """The problems, then the findings the import adds, as a table a coordinator can sort, filter and tick off
    (written whole or not at all). A finding's row names its sheet and column; its message starts with the rule
    and the patient, and says "still to enter" for a record the patient lacks."""
    with replacing(path) as temporary, temporary.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(ERROR_COLUMNS)
        for p in problems:
            value = "" if p.value is None else show(p.value)
            writer.writerow([p.severity, p.source, p.row or "", p.column or "", value, p.message])
        writer.writerows(finding_rows(findings) if findings is not None else [])


def finding_rows(findings: pd.DataFrame) -> Iterator[list[str]]:
    """The findings as rows of :data:`ERROR_COLUMNS` (a birth date withheld, as in every findings file)."""
    import pandas as pd

    from registry.entry_checks import is_missing_record  # registry.entry_checks reads registry.entry, which reads this
    from registry.quality.output import shareable

    sheets = {sheet.table.name: sheet.name for sheet in SHEETS}
    for f in shareable(findings).itertuples():
        message = f"{f.rule} {f.study_id}: {'still to enter: ' if is_missing_record(f.rule) else ''}{f.message}"
        field, value = ("" if pd.isna(v) else show(v) for v in (f.field, f.value))
        yield [f.severity, sheets.get(f.table, f.table), "", field, value, message]
