"""Export and template: the registry written in the import format.

An export imported into an empty registry and exported again gives the same files,
byte for byte: rows are sorted by their natural key and values are written one
way only. Direct identifiers have no sheet, so they can never be exported; deleted
records (and every record of a deleted patient) are left out.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import astuple, fields
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from registry import missing
from registry.atomic import replacing
from registry.dictionary import Entry, help_text
from registry.missing import Missing
from registry.sheets import SHEETS, Sheet, sheet_dictionary, stored_rows
from registry.workbook import SheetData, require_xlsx_fits, write_csv_folder, write_xlsx

YES_NO = ["yes", "no"]


def _choices(sheet: Sheet) -> dict[str, list[str]]:
    """Each drop-down's values: a code list, yes/no, and the missing-data codes where the column takes one."""
    choices = {}
    for column in sheet.columns:
        kind = column.source.type
        if isinstance(kind, sa.Enum):
            choices[column.name] = list(kind.enums)
        elif isinstance(kind, sa.Boolean):
            choices[column.name] = list(YES_NO)
        else:
            continue
        if column.takes_code:
            choices[column.name] += missing.CELLS
    return choices


def _cell(value: Any) -> Any:
    """A stored value as the sheet writes it: a missing-data code as its cell text (``[unknown]``)."""
    return str(value) if isinstance(value, Missing) else value


def _notes(entries: list[Entry]) -> dict[str, str]:
    """Each header's comment: the column's label and help, as the forms show them."""
    coded = f". Or a missing-data code: {', '.join(missing.CELLS)}."
    return {e.column: f"{e.label}: {help_text(e)}" + (". Required." if e.required == "yes" else "")
                      + (coded if e.missing_codes == "yes" else "") for e in entries}  # fmt: skip


def workbook_sheets(connection: sa.Connection | None) -> list[SheetData]:
    """Every data sheet (empty without a connection: the template) and the dictionary sheet."""
    dictionary = sheet_dictionary()
    sheets = []
    for sheet in SHEETS:
        header = [c.name for c in sheet.columns]
        rows = []
        if connection is not None:
            stored = stored_rows(connection, sheet)
            rows = [[_cell(stored[key][name]) for name in header]
                    for key in sorted(stored) if not stored[key]["deleted"]]  # fmt: skip
        entries = [e for e in dictionary if e.table == sheet.name]
        sheets.append(SheetData(sheet.name, header, rows, _choices(sheet), _notes(entries)))
    sheets.append(SheetData("dictionary", [f.name for f in fields(Entry)], [list(astuple(e)) for e in dictionary]))
    return sheets


def is_workbook(path: Path) -> bool:
    return path.suffix.lower() == ".xlsx"


def notice_path(path: Path, name: str) -> Path:
    """Where the notice ``name`` of the output ``path`` goes: into its folder, or beside a workbook as STEM.NAME."""
    return path.with_name(f"{path.stem}.{name}") if is_workbook(path) else path / name


@contextlib.contextmanager
def output(path: Path, notice: tuple[str, str] | None = None) -> Iterator[Path]:
    """A temporary to write ``path`` (an .xlsx workbook, or else a folder) to, which replaces it when the block
    ends without an error, with the notice file (name, text) if given (:func:`notice_path`), and is removed
    when it does not: a full disk leaves what ``path`` held before."""
    with replacing(path, folder=not is_workbook(path)) as data:
        yield data
        if notice and not is_workbook(path):
            (data / notice[0]).write_text(notice[1], encoding="utf-8")
        elif notice:
            with replacing(notice_path(path, notice[0])) as beside:  # renamed before the workbook
                beside.write_text(notice[1], encoding="utf-8")


def write(path: Path, sheets: list[SheetData], notice: tuple[str, str] | None = None) -> None:
    """``*.xlsx`` paths get a workbook; any other path a folder of CSV files; with the notice (name, text) if given.

    Written whole or not at all (:func:`output`).
    """
    if is_workbook(path):
        require_xlsx_fits(path, {sheet.name: len(sheet.rows) for sheet in sheets})  # named as given, not its temporary
    with output(path, notice) as data:
        (write_xlsx if is_workbook(path) else write_csv_folder)(data, sheets)


def export(engine: sa.Engine, path: Path) -> dict[str, int]:
    """Write the registry to ``path``; returns the number of rows per sheet."""
    with engine.connect() as connection:
        sheets = workbook_sheets(connection)
    write(path, sheets)
    return {s.name: len(s.rows) for s in sheets if s.name != "dictionary"}


def template(path: Path) -> None:
    write(path, workbook_sheets(None))
