"""Workbook import: parse every cell, validate every row, then write all or nothing.

Validation runs to the end and reports every problem with its sheet, row, column,
value and rule; only a workbook without errors is written, in one transaction.
Rows are matched to stored records by their natural key (``sheets.Sheet.key``), so
importing the same file again changes nothing, and a changed cell is an audited
update. Columns a sheet leaves out are left as stored; rows a sheet leaves out are
kept (an import never deletes).
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import Enum
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from registry import workbook
from registry.audit import audited_session, insert_audited
from registry.models import Patient, Site, scalar_default
from registry.sheets import HELPER_SHEETS, SHEETS, SHEETS_BY_NAME, Sheet, SheetColumn, stored_rows
from registry.violations import explain

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
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
        shown = f'"{show(self.value)}" ' if self.value is not None else ""
        return f"{place}: {shown}{self.message}"


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
    return value


def _blank(cell: Any) -> bool:
    return cell is None or (isinstance(cell, str) and not cell.strip())


def parse_cell(column: SheetColumn, value: Any) -> Any:
    """The cell's value as its column's type, or :class:`CellError`. Blank cells are None."""
    if _blank(value):
        if column.required:
            raise CellError("is required")
        return None
    if isinstance(value, str):
        value = value.strip()
    kind = column.source.type
    if isinstance(kind, sa.Enum):
        if not isinstance(value, str) or value not in kind.enums:
            raise CellError(f"is not an allowed value; allowed: {', '.join(kind.enums)}")
        return value
    if isinstance(kind, sa.String):
        text = _text(value, kind.length)
        pattern, rule = column.source.info.get("pattern", (None, None))
        if pattern is not None and not re.fullmatch(pattern, text):
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


@dataclass
class Row:
    sheet: Sheet
    source: str
    number: int
    values: dict[str, Any]  # sheet column -> parsed value, for the columns the sheet has

    @property
    def key(self) -> tuple:
        return tuple(self.values[name] for name in self.sheet.key)


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


class _ColumnParser:
    """:func:`parse_cell` for one column, remembering what each distinct cell gave: codes, dates and flags repeat."""

    LIMIT = 50_000  # distinct cells remembered per column (measurements rarely repeat; memory stays bounded)

    def __init__(self, column: SheetColumn) -> None:
        self.column, self.seen = column, {}

    def __call__(self, cell: Any) -> tuple[Any, str | None]:
        """(value, None), or (None, the rule the cell breaks)."""
        key = (type(cell), cell)
        found = self.seen.get(key)
        if found is None:
            try:
                found = (parse_cell(self.column, cell), None)
            except CellError as error:
                found = (None, str(error))
            if len(self.seen) < self.LIMIT:
                self.seen[key] = found
        return found


def _parse_rows(sheet: Sheet, raw: workbook.RawSheet, problems: list[Problem]) -> list[Row]:
    found = _columns(sheet, raw, problems)
    if found is None:
        return []
    columns = {index: _ColumnParser(column) for index, column in found.items()}
    headed = {index for index, cell in enumerate(raw.header) if not _blank(cell)}
    rows, stray = [], False
    for number, cells in raw.rows:
        if all(_blank(cell) for cell in cells):  # blank rows, trailing or not, carry nothing
            continue
        values, ok = {}, True
        for index, cell in enumerate(cells):
            if index not in columns:
                stray = stray or (index not in headed and not _blank(cell))
                continue
            parse = columns[index]
            value, error = parse(cell)
            if error is None:
                values[parse.column.name] = value
            else:
                problems.append(Problem(raw.source, number, parse.column.name, None if _blank(cell) else cell, error))
                ok = False
        for parse in columns.values():  # short rows: missing trailing cells are blank
            if parse.column.name not in values and ok:
                value, error = parse(None)
                if error is None:
                    values[parse.column.name] = value
                else:
                    problems.append(Problem(raw.source, number, parse.column.name, None, error))
                    ok = False
        if ok:
            rows.append(Row(sheet, raw.source, number, values))
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
    """What the database holds now, keyed as the sheets key it."""

    sites: dict[str, int]
    patients: dict[str, int]
    deleted_patients: set[str]
    locked_patients: set[str]
    rows: dict[str, dict[tuple, dict[str, Any]]]  # sheet -> natural key -> sheet-named values (+ "id")


def _load(connection: sa.Connection, sheet_names: Sequence[str]) -> _Stored:
    return _Stored(
        sites=dict(connection.execute(sa.select(Site.code, Site.id)).all()),
        patients=dict(connection.execute(sa.select(Patient.study_id, Patient.id)).all()),
        deleted_patients=set(
            connection.execute(sa.select(Patient.study_id).where(Patient.deleted_at.is_not(None))).scalars()
        ),
        locked_patients=set(
            connection.execute(sa.select(Patient.study_id).where(Patient.locked_at.is_not(None))).scalars()
        ),
        rows={name: stored_rows(connection, SHEETS_BY_NAME[name]) for name in sheet_names},
    )


def _check_references(rows: list[Row], stored: _Stored, problems: list[Problem]) -> list[Row]:
    new_patients = {row.values["study_id"] for row in rows if row.sheet.name == "patients"}
    known_patients = new_patients | set(stored.patients)
    good = []
    for row in rows:
        study_id = row.values["study_id"]
        if row.sheet.name == "patients":
            site = row.values.get("site")
            if site is not None and site not in stored.sites:
                known = ", ".join(sorted(stored.sites)) or "none yet; add one with `registry site add`"
                problems.append(
                    Problem(row.source, row.number, "site", site, f"is not a registered site (known: {known})")
                )
                continue
        elif study_id not in known_patients:
            problems.append(
                Problem(
                    row.source,
                    row.number,
                    "study_id",
                    study_id,
                    "is not a patient in the patients sheet or the registry",
                )
            )
            continue
        elif study_id in stored.deleted_patients:
            message = "is a deleted patient: restore them in the web application first"
            problems.append(Problem(row.source, row.number, "study_id", study_id, message))
            continue
        good.append(row)
    return good


def _check_duplicates(rows: list[Row], problems: list[Problem]) -> list[Row]:
    first: dict[tuple, int] = {}
    good = []
    for row in rows:
        key = (row.sheet.name, *row.key)
        if key in first:
            columns = " + ".join(row.sheet.key)
            shown = " / ".join(show(v) for v in row.key)
            problems.append(
                Problem(
                    row.source,
                    row.number,
                    columns,
                    shown,
                    f"repeats row {first[key]}: each row needs its own {columns}",
                )
            )
            continue
        first[key] = row.number
        good.append(row)
    return good


@dataclass
class _Change:
    row: Row
    stored: dict[str, Any] | None  # None: a new record
    changes: dict[str, Any]  # sheet column -> new value (all provided values for a new record)

    def merged(self) -> dict[str, Any]:
        """The record as it will be stored: defaults, then what is stored, then the changes."""
        base = {c.name: scalar_default(c.source) for c in self.row.sheet.columns}
        return {**base, **(self.stored or {}), **self.changes}


def _plan(rows: list[Row], stored: _Stored, problems: list[Problem]) -> list[_Change]:
    plan = []
    for row in rows:
        existing = stored.rows[row.sheet.name].get(row.key)
        if existing is not None and existing["deleted"]:
            columns = " + ".join(row.sheet.key)
            shown = " / ".join(show(v) for v in row.key)
            message = "is a deleted record (or belongs to a deleted patient): restore it in the web application first"
            problems.append(Problem(row.source, row.number, columns, shown, message))
            continue
        if existing is None:
            change = _Change(row, None, dict(row.values))
        else:
            change = _Change(row, existing, {k: v for k, v in row.values.items() if existing.get(k) != v})
        study_id = row.values["study_id"]
        if change.changes and study_id in stored.locked_patients:  # unchanged rows of a locked patient are fine
            message = "is a patient locked by a data manager: ask them to unlock before changing their records"
            problems.append(Problem(row.source, row.number, "study_id", study_id, message))
            continue
        plan.append(change)
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


def rule_violations(sheet: Sheet, records: Sequence[dict[str, Any]]) -> list[tuple[int, str | None, str]]:
    """``(index, column, message)`` for each of ``records`` (sheet-named values) that breaks a CHECK rule.

    The rules are the database's own (``models.rule``), run over every record at once in
    a scratch SQLite table, so what the database would refuse is reported for every
    record instead of the first, and with the column to show it at.
    """
    rules = [c for c in sheet.table.constraints if isinstance(c, sa.CheckConstraint) and "message" in c.info]
    if not records or not rules:
        return []
    found = []
    scratch = sa.create_engine("sqlite://")
    with scratch.begin() as connection:
        targets = [c.target for c in sheet.columns]
        connection.exec_driver_sql(f"CREATE TABLE {sheet.table.name} (_index, {', '.join(targets)})")
        placeholders = ", ".join("?" * (len(targets) + 1))
        connection.exec_driver_sql(
            f"INSERT INTO {sheet.table.name} VALUES ({placeholders})",
            [(i, *(_sqlite_value(record[c.name]) for c in sheet.columns)) for i, record in enumerate(records)],
        )
        for rule in rules:
            condition = str(rule.sqltext)
            broken = connection.exec_driver_sql(f"SELECT _index FROM {sheet.table.name} WHERE NOT ({condition})")
            columns = _rule_columns(sheet, condition)
            found += [(index, columns[0] if columns else None, rule.info["message"]) for (index,) in broken]
    scratch.dispose()
    return found


def _check_rules(plan: list[_Change], problems: list[Problem]) -> None:
    for sheet in SHEETS:
        changes = [c for c in plan if c.row.sheet is sheet and c.changes]
        merged = [change.merged() for change in changes]
        for index, column, message in rule_violations(sheet, merged):
            row = changes[index].row
            value = merged[index].get(column) if column else None
            problems.append(Problem(row.source, row.number, column, value, message))


def _lock_changed(session: Session, plan: list[_Change]) -> None:
    """Lock the stored records the import changes before changing any, in the web forms' order (a patient's records,
    then the patient; each table by id), so that an import and a form saving the same patient queue, not deadlock."""
    for sheet in sorted(SHEETS, key=lambda s: s.model is Patient):
        ids = sorted(c.stored["id"] for c in plan if c.row.sheet is sheet and c.stored is not None and c.changes)
        key = sheet.table.primary_key.columns[0]
        for start in range(0, len(ids), _LOCK_CHUNK):
            chunk = ids[start : start + _LOCK_CHUNK]
            session.execute(sa.select(key).where(key.in_(chunk)).order_by(key).with_for_update())


def _write(engine: sa.Engine, plan: list[_Change], actor: str, reason: str) -> None:
    """All changes in one audited transaction: new records in bulk, changed ones through the ORM."""
    with audited_session(engine, actor=actor, reason=reason) as session:
        _lock_changed(session, plan)
        connection = session.connection()
        sites = dict(session.execute(sa.select(Site.code, Site.id)).all())
        patients: dict[str, int] = dict(session.execute(sa.select(Patient.study_id, Patient.id)).all())
        for sheet in SHEETS:
            new, changed = [], []
            for change in (c for c in plan if c.row.sheet is sheet and c.changes):
                values = {}
                for name, value in change.changes.items():
                    column = sheet.column(name)
                    if column.is_reference:
                        value = (patients if name == "study_id" else sites)[value]
                    values[column.target] = value
                (new if change.stored is None else changed).append((change, values))
            study_ids = {id_: study_id for study_id, id_ in patients.items()}
            insert_audited(connection, sheet.model, [values for _, values in new], actor=actor, reason=reason,
                           study_ids=study_ids)  # fmt: skip
            for change, values in changed:
                record = session.get(sheet.model, change.stored["id"])
                for target, value in values.items():
                    setattr(record, target, value)
            session.flush()
            if sheet.name == "patients":
                patients = dict(session.execute(sa.select(Patient.study_id, Patient.id)).all())
        session.commit()


def import_sheets(
    engine: sa.Engine,
    raw_sheets: Sequence[workbook.RawSheet],
    *,
    actor: str,
    reason: str,
    dry_run: bool = False,
) -> ImportResult:
    """Validate every row of ``raw_sheets``; write them in one transaction if none is wrong."""
    problems: list[Problem] = []
    found = _find_sheets(raw_sheets, problems)
    rows = [row for sheet in SHEETS if sheet.name in found for row in _parse_rows(sheet, found[sheet.name], problems)]
    with engine.connect() as connection:
        stored = _load(connection, list(found))
    rows = _check_duplicates(_check_references(rows, stored, problems), problems)
    plan = _plan(rows, stored, problems)
    _check_rules(plan, problems)
    counts = {sheet.name: Counts() for sheet in SHEETS if sheet.name in found}
    for change in plan:
        tally = counts[change.row.sheet.name]
        if change.stored is None:
            tally.inserted += 1
        elif change.changes:
            tally.updated += 1
        else:
            tally.unchanged += 1
    result = ImportResult(sorted(problems, key=_reading_order), counts)
    if result.errors or dry_run or not result.changed:
        return result
    try:
        _write(engine, plan, actor, reason)
    except sa.exc.IntegrityError as error:  # a concurrent change the validation could not see
        result.problems.append(Problem("database", None, None, None, f"refused the import: {explain(error).message}"))
        return result
    result.written = True
    return result


def _reading_order(problem: Problem) -> tuple:
    order = {sheet.name: i for i, sheet in enumerate(SHEETS)}
    stem = problem.source.removesuffix(".csv")
    return (order.get(stem, len(order)), problem.source, problem.row or 0)


def import_path(
    engine: sa.Engine, path: Path, *, actor: str, reason: str | None = None, dry_run: bool = False
) -> ImportResult:
    """Import an XLSX workbook or a folder of CSV files (raises ``workbook.WorkbookError`` if unreadable)."""
    return import_sheets(
        engine, workbook.read(path), actor=actor, reason=reason or f"import of {path.name}", dry_run=dry_run
    )


ERROR_COLUMNS = ["severity", "sheet", "row", "column", "value", "message"]


def write_problems(path: Path, problems: Sequence[Problem]) -> None:
    """The problems as a table a coordinator can sort, filter and tick off."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(ERROR_COLUMNS)
        for p in problems:
            value = "" if p.value is None else show(p.value)
            writer.writerow([p.severity, p.source, p.row or "", p.column or "", value, p.message])
