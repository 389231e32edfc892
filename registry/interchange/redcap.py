"""REDCap both ways: our sheets as a REDCap project (data dictionary), records out, records in.

A REDCap project holds one record per patient (record id: ``study_id``). The patient's own sheets (patients,
follow_up) are instruments filled once; every other sheet is a repeating instrument, one instance per row. REDCap
wants field names unique across the project, so the fields of a repeating instrument carry its prefix
(``lab_value``, ``tx_start_date``). Coded values keep our codes (REDCap's raw values allow only letters, digits and
underscores, so ``U/mL`` is ``u_ml``); the missing-data codes are REDCap's (``UNK``, ``ND``, ``NA``, ``NASK``, to
be set once in the project's Missing Data Codes).

A records export comes back in through the workbook import itself (:func:`registry.ingest.import_sheets`): the
same all-or-nothing validation, messages and audit; the messages name the file, its row and the REDCap field.
A mapping file (TOML) renames the instruments, fields, codes and missing-data codes of an existing project.
"""

from __future__ import annotations

import csv
import io
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from registry.atomic import replacing
from registry.codes import MissingCode
from registry.dictionary import Entry, type_name
from registry.ingest import ImportResult, Problem, import_sheets
from registry.interchange import plain_text
from registry.missing import Missing
from registry.sheets import SHEETS, SHEETS_BY_NAME, Sheet, SheetColumn, rows_by_patient, sheet_dictionary, snapshot
from registry.workbook import RawSheet, UnreadableCell, WorkbookError

RECORD_ID = "study_id"
REPEAT_INSTRUMENT, REPEAT_INSTANCE = "redcap_repeat_instrument", "redcap_repeat_instance"
#: Columns REDCap adds to an export that carry no registry data (events and data access groups are REDCap's own).
SYSTEM_COLUMNS = ("redcap_event_name", "redcap_data_access_group", "redcap_survey_identifier")
#: The prefix of each sheet's fields (the patient's own sheet has none: its fields are the record's).
PREFIXES = {
    "patients": "",
    "antibody_tests": "ab",
    "labs": "lab",
    "pfts": "pft",
    "hrct": "ct",
    "treatments": "tx",
    "adverse_events": "ae",
    "follow_up": "fu",
}
#: Instruments filled once per record; the others repeat.
SINGLE = ("patients", "follow_up")
#: Our missing-data codes as REDCap's (Project Setup > Additional customizations > Missing Data Codes).
MISSING_CODES = {
    MissingCode.UNKNOWN: "UNK",
    MissingCode.NOT_DONE: "ND",
    MissingCode.NOT_APPLICABLE: "NA",
    MissingCode.NOT_ASKED: "NASK",
}
#: The header of a REDCap data dictionary, as REDCap writes and reads it.
DICTIONARY_HEADER = (
    "Variable / Field Name",
    "Form Name",
    "Section Header",
    "Field Type",
    "Field Label",
    "Choices, Calculations, OR Slider Labels",
    "Field Note",
    "Text Validation Type OR Show Slider Number",
    "Text Validation Min",
    "Text Validation Max",
    "Identifier?",
    "Branching Logic (Show field only if...)",
    "Required Field?",
    "Custom Alignment",
    "Question Number (surveys only)",
    "Matrix Group Name",
    "Matrix Ranking?",
    "Field Annotation",
)
#: Fields REDCap's de-identified exports should leave out (Identifier? = y).
IDENTIFIERS = frozenset({"birth_date"})
#: REDCap's instrument status, written after each instrument's fields: 2 is "Complete".
COMPLETE = "2"


class RedcapError(WorkbookError):
    """A REDCap file or mapping the registry cannot read at all (nothing is imported)."""


def redcap_code(value: str) -> str:
    """Our code as a REDCap raw value: lower case, any character but a letter, digit or underscore as ``_``."""
    return re.sub(r"[^a-z0-9_]", "_", value.lower())


@dataclass(frozen=True)
class Field:
    """One REDCap field: a column of one of our sheets."""

    name: str
    sheet: Sheet
    column: SheetColumn
    entry: Entry

    @property
    def form(self) -> str:
        return self.sheet.name

    @cached_property
    def codes(self) -> dict[str, str]:
        """Our code -> its REDCap raw value, for a code list field."""
        kind = self.column.source.type
        return {value: redcap_code(value) for value in kind.enums} if isinstance(kind, sa.Enum) else {}

    @cached_property
    def labels(self) -> dict[str, str]:
        """Our code -> its label."""
        enum_class = getattr(self.column.source.type, "enum_class", None)
        return {m.value: getattr(m, "label", m.value) for m in enum_class} if enum_class is not None else {}

    @property
    def is_yes_no(self) -> bool:
        return isinstance(self.column.source.type, sa.Boolean)


def _fields() -> list[Field]:
    entries = {(e.table, e.column): e for e in sheet_dictionary()}
    found = []
    for sheet in SHEETS:
        prefix = PREFIXES[sheet.name]
        for column in sheet.columns:
            if column.name == RECORD_ID and sheet.name != "patients":
                continue  # the record itself says whose row it is
            name = f"{prefix}_{column.name}" if prefix else column.name
            found.append(Field(name, sheet, column, entries[sheet.name, column.name]))
    return found


#: Every field, in instrument order, the record id first.
FIELDS: tuple[Field, ...] = tuple(_fields())
FIELDS_BY_NAME = {f.name: f for f in FIELDS}


#: REDCap's text validation of our column types (other types have none).
_VALIDATIONS = ((sa.Date, "date_ymd"), (sa.Integer, "integer"), (sa.Float, "number"))


def _validation(column: sa.Column) -> str:
    return type_name(column, _VALIDATIONS, "")


def _field_type(f: Field) -> str:
    if f.codes:
        return "dropdown"
    if f.is_yes_no:
        return "yesno"
    return "text"


def dictionary_rows() -> list[list[str]]:
    """The REDCap data dictionary of the registry: one row per field, in :data:`DICTIONARY_HEADER`'s columns."""
    rows = []
    for f in FIELDS:
        plausible = f.column.source.info.get("plausible")
        choices = " | ".join(f"{f.codes[value]}, {f.labels.get(value, value)}" for value in f.codes)
        note = f.entry.description + (f" (unit: {f.entry.unit})" if f.entry.unit else "")
        low = high = ""
        if plausible is not None and _validation(f.column.source) in ("number", "integer"):
            low, high = f"{plausible.low:g}", f"{plausible.high:g}"
        annotation = "" if f.column.takes_code else "@NOMISSING"
        row = [f.name, f.form, "", _field_type(f), f.entry.label, choices, note, _validation(f.column.source), low,
               high, "y" if f.name in IDENTIFIERS else "", "", "y" if f.column.required else "", "", "", "", "",
               annotation]  # fmt: skip
        rows.append(row)
    return rows


def repeating_instruments() -> list[str]:
    """The instruments to mark repeating in Project Setup > Repeating instruments."""
    return [sheet.name for sheet in SHEETS if sheet.name not in SINGLE]


def missing_codes_setting() -> str:
    """What to enter in the project's Missing Data Codes (REDCap's syntax: ``code, label`` lines)."""
    return "\n".join(f"{MISSING_CODES[code]}, {code.label}" for code in MissingCode)


def _csv_text(rows: Iterable[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def write_dictionary(path: Path) -> int:
    """Write the data dictionary to ``path`` (whole or not at all); returns the number of fields."""
    rows = dictionary_rows()
    with replacing(path) as temporary:
        temporary.write_text(_csv_text([DICTIONARY_HEADER, *rows]), encoding="utf-8")
    return len(rows)


# Records out ---------------------------------------------------------------------------------------------------


def records_header() -> list[str]:
    """The columns of a REDCap records export of this project, in REDCap's order."""
    header = [RECORD_ID, REPEAT_INSTRUMENT, REPEAT_INSTANCE]
    for sheet in SHEETS:
        header += [f.name for f in FIELDS if f.form == sheet.name and f.name != RECORD_ID]
        header.append(f"{sheet.name}_complete")
    return header


def _raw(f: Field, value: Any) -> str:
    """A stored value as a REDCap raw value."""
    if value is None:
        return ""
    if isinstance(value, Missing):
        return MISSING_CODES[value.code]
    text = plain_text(value)
    return f.codes[text] if f.codes else text


def records_rows(connection: sa.Connection) -> list[list[str]]:
    """The registry as REDCap records: per patient the record's row (patients, follow_up), then one row per
    instance of each repeating instrument, numbered from 1 in the order of the rows' natural keys."""
    header = records_header()
    position = {name: i for i, name in enumerate(header)}
    rows = []
    for study_id, forms in rows_by_patient(connection).items():
        single = [""] * len(header)
        single[0] = study_id
        for form in SINGLE:
            for values in forms.get(form, []):
                _fill(single, position, form, values)
        rows.append(single)
        for sheet in SHEETS:
            if sheet.name in SINGLE:
                continue
            for instance, values in enumerate(forms.get(sheet.name, []), start=1):
                row = [""] * len(header)
                row[:3] = [study_id, sheet.name, str(instance)]
                _fill(row, position, sheet.name, values)
                rows.append(row)
    return rows


def _fill(row: list[str], position: Mapping[str, int], form: str, values: Mapping[str, Any]) -> None:
    for f in FIELDS:
        if f.form == form and f.name != RECORD_ID:
            row[position[f.name]] = _raw(f, values[f.column.name])
    row[position[f"{form}_complete"]] = COMPLETE


def export_records(engine: sa.Engine, path: Path) -> int:
    """Write the registry as a REDCap records export (raw values) to ``path``; returns the number of rows."""
    with snapshot(engine) as connection:
        rows = records_rows(connection)
    with replacing(path) as temporary:
        temporary.write_text(_csv_text([records_header(), *rows]), encoding="utf-8")
    return len(rows)


# Records in ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RedcapMapping:
    """How an existing REDCap project's names differ from ours (all optional): instrument -> our sheet, field ->
    our field, a field's code -> our code (ours as the registry writes it: ``U/mL``), missing-data code -> ours."""

    instruments: dict[str, str] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)
    choices: dict[str, dict[str, str]] = field(default_factory=dict)  # keyed by our field name
    missing_codes: dict[str, MissingCode] = field(default_factory=dict)


_MAPPING_TABLES = ("instruments", "fields", "choices", "missing_codes")


def read_mapping(path: Path) -> RedcapMapping:
    """The mapping file; :class:`RedcapError` naming the file, the key and the rule for anything it cannot use."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RedcapError(f"{path}: no such mapping file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise RedcapError(f"{path}: not a TOML file ({error})") from None

    def fail(key: str, rule: str) -> RedcapError:
        return RedcapError(f"{path}: {key}: {rule}")

    for key in document:
        if key not in _MAPPING_TABLES:
            raise fail(key, f"unknown table; a mapping has {', '.join(f'[{t}]' for t in _MAPPING_TABLES)}")
    tables = {}
    for key in _MAPPING_TABLES:
        table = document.get(key, {})
        if not isinstance(table, dict):
            raise fail(key, "must be a table ([" + key + "])")
        tables[key] = table
    sheets = {sheet.name for sheet in SHEETS}
    for theirs, ours in tables["instruments"].items():
        if ours not in sheets:
            raise fail(f"instruments.{theirs}", f'"{ours}" is not one of our instruments: {", ".join(sorted(sheets))}')
    for theirs, ours in tables["fields"].items():
        if ours not in FIELDS_BY_NAME:
            raise fail(f"fields.{theirs}", f'"{ours}" is not one of our fields (registry redcap dictionary lists them)')
    choices = {}
    for ours, codes in tables["choices"].items():
        f = FIELDS_BY_NAME.get(ours)
        if f is None or not f.codes:
            raise fail(f"choices.{ours}", "is not one of our code-list fields")
        if not isinstance(codes, dict):
            raise fail(f"choices.{ours}", "must be a table of their code = our code")
        for theirs, code in codes.items():
            if code not in f.codes:
                raise fail(f"choices.{ours}.{theirs}", f'"{code}" is not a code of {ours}: {", ".join(f.codes)}')
        choices[ours] = {str(theirs): code for theirs, code in codes.items()}
    missing_codes = {}
    for theirs, ours in tables["missing_codes"].items():
        try:
            missing_codes[str(theirs)] = MissingCode(ours)
        except ValueError:
            allowed = ", ".join(code.value for code in MissingCode)
            raise fail(f"missing_codes.{theirs}", f'"{ours}" is not a missing-data code: {allowed}') from None
    return RedcapMapping(
        {str(k): str(v) for k, v in tables["instruments"].items()},
        {str(k): str(v) for k, v in tables["fields"].items()},
        choices,
        missing_codes,
    )


def _instrument_key(text: str) -> str:
    """An instrument as a raw export (``antibody_tests``) or a label export (``Antibody Tests``) names it."""
    return re.sub(r"\W+", "_", text.strip().lower()).strip("_")


class _Reader:
    """Turns one REDCap records export into our sheets, remembering where each cell came from."""

    def __init__(self, path: Path, mapping: RedcapMapping) -> None:
        self.path, self.mapping = path, mapping
        self.source = path.name
        self.problems: list[Problem] = []
        self.instruments = {_instrument_key(sheet.name): sheet.name for sheet in SHEETS}
        self.instruments.update({_instrument_key(k): v for k, v in mapping.instruments.items()})
        self.missing = {code: ours for ours, code in MISSING_CODES.items()} | mapping.missing_codes

    def problem(self, row: int | None, column: str | None, value: Any, message: str, severity: str = "error") -> None:
        self.problems.append(Problem(self.source, row, column, value, message, severity))

    def columns(self, header: list[str]) -> dict[int, Field]:
        """Header position -> our field; REDCap's own columns are known, anything else is told and ignored."""
        found: dict[int, Field] = {}
        seen: dict[str, str] = {}  # our field -> the column that gives it
        statuses = {f"{name}_complete" for name in self.instruments} | {
            f"{k}_complete" for k in self.mapping.instruments
        }
        for index, name in enumerate(header):
            name = name.strip()
            ours = self.mapping.fields.get(name, name)
            if ours in seen:
                given = "column appears more than once" if seen[ours] == name else f"gives {ours}, as {seen[ours]} does"
                self.problem(1, name, None, f"{given}: one column per field")
            elif ours in FIELDS_BY_NAME:
                found[index] = FIELDS_BY_NAME[ours]
                seen[ours] = name
            elif name in (REPEAT_INSTRUMENT, REPEAT_INSTANCE) or name in statuses or not name:
                continue
            elif name in SYSTEM_COLUMNS:
                self.problem(1, name, None, "REDCap's own column, ignored (the registry has no events or groups)",
                             "warning")  # fmt: skip
            else:
                self.problem(1, name, None, "unknown field, ignored (a --mapping file can name our field)", "warning")
        if not any(f.name == RECORD_ID for f in found.values()):
            if REPEAT_INSTRUMENT not in header and ("Repeat Instrument" in header or FIELDS[0].entry.label in header):
                raise RedcapError(f"{self.source}: the header holds REDCap's field labels (a 'CSV (labels)' export): "
                                  "export with the variable names as headers (the values may stay labels)")  # fmt: skip
            self.problem(1, RECORD_ID, None, "the record id column is missing (the first column, or --mapping)")
        present = {f.form for f in found.values() if f.name != RECORD_ID}
        for f in FIELDS:
            if f.form in present and f.column.required and f not in found.values():
                self.problem(1, f.name, None, f"required field of the instrument {f.form} is missing from the export")
        return found

    def cell(self, f: Field, text: str) -> str | UnreadableCell:
        """A REDCap value as our cell: codes and labels to our codes, missing-data codes to ``[code]`` (one in a field
        that takes none is refused by the import with the other cells, never stored as the number -99)."""
        value = text.strip()
        if not value:
            return value
        if value in self.missing:
            if f.column.takes_code:
                return str(Missing(self.missing[value]))
            code = self.missing[value].value
            return UnreadableCell(value, f"is a missing-data code ({code}), and this field takes none: give a value, "
                                  "or leave it empty")  # fmt: skip
        if f.codes:
            theirs = self.mapping.choices.get(f.name, {})
            if value in theirs:
                return theirs[value]
            by_raw = {raw: ours for ours, raw in f.codes.items()}
            by_label = {label.lower(): ours for ours, label in f.labels.items()}
            return by_raw.get(value, by_label.get(value.lower(), value))
        return value

    def sheets(self, records: Iterator[list[str]]) -> list[RawSheet]:
        """Our sheets, each with the columns the file has for it: a field the export leaves out is left alone in the
        registry, never emptied (a blank cell of a field it has is a blank, as in REDCap)."""
        header = next(records, None)
        if header is None:
            raise RedcapError(f"{self.source}: empty file (a REDCap records export starts with its header)")
        found = self.columns(header)
        instrument_at = header.index(REPEAT_INSTRUMENT) if REPEAT_INSTRUMENT in header else None
        record_at = next((i for i, f in found.items() if f.name == RECORD_ID), None)
        read = set(found) | {header.index(n) for n in (REPEAT_INSTRUMENT, REPEAT_INSTANCE) if n in header}
        read |= {i for i, name in enumerate(header) if name.strip() and i not in found}  # told about already
        given = {sheet.name: [RECORD_ID] for sheet in SHEETS}
        for f in found.values():
            if f.name != RECORD_ID:
                given[f.form].append(f.column.name)
        # each sheet under its own name, so that the import's problems can be named as REDCap fields (_located)
        raw = {name: RawSheet(name, name, columns, []) for name, columns in given.items()}
        stray = False
        for number, cells in enumerate(records, start=2):
            if not any(cell.strip() for cell in cells):
                continue
            stray = stray or any(c.strip() for i, c in enumerate(cells) if i not in read)
            cells = cells + [""] * (len(header) - len(cells))
            instrument = cells[instrument_at].strip() if instrument_at is not None else ""
            form = self.instruments.get(_instrument_key(instrument)) if instrument else None
            if instrument and form is None:
                self.problem(number, REPEAT_INSTRUMENT, instrument, "is not one of our instruments (or --mapping)")
                continue
            if form in SINGLE:
                self.problem(number, REPEAT_INSTRUMENT, instrument, f"{form} is filled once per record, not repeated")
                continue
            forms = (form,) if form else SINGLE
            values: dict[str, dict[str, str | UnreadableCell]] = {name: {} for name in forms}
            for index, f in found.items():
                if f.name == RECORD_ID:
                    continue
                if f.form in values:
                    values[f.form][f.column.name] = self.cell(f, cells[index])
                elif cells[index].strip():
                    where = f"the repeating {form}" if form else "the record's own row"
                    self.problem(number, f.name, cells[index], f"belongs to the instrument {f.form}, not to {where}")
            study_id = cells[record_at] if record_at is not None else ""
            for name in forms:
                if len(given[name]) == 1 or (name == "follow_up" and not any(values[name].values())):
                    continue  # no field of it in the file, or a record whose follow-up is not entered yet
                row = [study_id if column == RECORD_ID else values[name][column] for column in given[name]]
                raw[name].rows.append((number, row))
        if stray:
            self.problem(None, None, None, "values in columns without a header, ignored", "warning")
        return [raw[sheet.name] for sheet in SHEETS if raw[sheet.name].rows]


def _located(problem: Problem, path: Path) -> Problem:
    """A problem of the import, named as the REDCap file says it: the file, and our sheet's column as its field."""
    sheet = SHEETS_BY_NAME.get(problem.source)
    if sheet is None:
        return problem  # the checks' or the database's
    column = problem.column
    if column is not None and PREFIXES[sheet.name] and column != RECORD_ID:
        column = f"{PREFIXES[sheet.name]}_{column}"
    return replace(problem, source=path.name, column=column)


def read_records(path: Path, mapping: RedcapMapping | None = None) -> tuple[list[RawSheet], list[Problem]]:
    """Our sheets from a REDCap records export, and what is wrong with the file as REDCap records."""
    reader = _Reader(path, mapping or RedcapMapping())
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            sheets = reader.sheets(csv.reader(handle))
    except FileNotFoundError:
        raise RedcapError(f"{path}: no such file") from None
    except UnicodeDecodeError as error:
        raise RedcapError(f"{path.name}: not UTF-8 text (byte {error.start}); export it from REDCap again") from None
    except csv.Error as error:
        raise RedcapError(f"{path.name}: cannot be read as CSV ({error})") from None
    return sheets, reader.problems


def import_records(
    engine: sa.Engine,
    path: Path,
    *,
    actor: str,
    mapping: RedcapMapping | None = None,
    reason: str | None = None,
    **options: Any,
) -> ImportResult:
    """Import a REDCap records export as a workbook is imported (``options``: dry_run, checks, strict)."""
    sheets, problems = read_records(path, mapping)
    if any(p.severity == "error" for p in problems):
        return ImportResult(problems)
    result = import_sheets(engine, sheets, actor=actor, reason=reason or f"import of {path.name} (REDCap)", **options)
    located = [_located(p, path) for p in result.problems]
    result.problems = sorted(problems + located, key=lambda p: (p.source != path.name, p.row or 0))
    return result
