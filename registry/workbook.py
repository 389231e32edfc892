"""Reading and writing workbooks: XLSX files or folders of CSV files, one per sheet.

Only file formats live here; what the cells mean is the importer's business. Every
sheet comes back as raw cells with the row numbers a person sees in a spreadsheet
(the header is row 1), so error messages can point at the right cell.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cached_property
from itertools import islice, zip_longest
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.worksheet._write_only import WriteOnlyWorksheet

#: Fixed timestamp inside an XLSX, so the same content gives the same bytes.
_FIXED_TIME = datetime(2000, 1, 1)
_MODIFIED = re.compile(r"(<dcterms:modified[^>]*>)[^<]*(</dcterms:modified>)")
#: Rows of a sheet that get the drop-down lists.
_VALIDATED_ROWS = 10_000
#: The most rows an .xlsx sheet holds (Excel's limit), its header's included.
XLSX_MAX_ROWS = 1_048_576


#: The control characters XML, and so an .xlsx cell, cannot hold (openpyxl's ILLEGAL_CHARACTERS_RE): all of C0 but
#: tab, line feed and carriage return. Entry refuses them in text (registry.ingest).
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


class WorkbookError(Exception):
    """The file could not be read as a workbook at all, or the registry not written as one."""


def require_xlsx_fits(path: Path, rows: Mapping[str, int]) -> None:
    """Refuse, before anything is written, a workbook a sheet of which would pass Excel's row limit.

    ``rows``: data rows per sheet. A large registry (the lab results of some 80,000
    patients) does not fit; a folder of CSV files has no limit.
    """
    over = [f"sheet {name} would have {count:,} rows" for name, count in rows.items() if count >= XLSX_MAX_ROWS]
    if over:
        raise WorkbookError(
            f"{path}: {'; '.join(over)}, and an .xlsx sheet holds at most {XLSX_MAX_ROWS - 1:,} "
            "below its header; write a folder of CSV files instead (a path without .xlsx)"
        )


@dataclass
class Chunk:
    """Consecutive rows of a sheet, column by column: as many columns as its longest row has cells,
    a shorter row's missing cells None."""

    numbers: Sequence[int]  # the row numbers a spreadsheet shows
    columns: list[Sequence[Any]]
    rows: Sequence[Sequence[Any]] | None = None  # the rows as read, where some are shorter than others

    def row(self, position: int) -> list[Any]:
        """The cells of one row as read (a short row without its missing cells)."""
        if self.rows is not None:
            return list(self.rows[position])
        return [column[position] for column in self.columns]


@dataclass
class RawSheet:
    name: str  # the sheet name, or the CSV file's stem
    source: str  # how messages name it: the sheet name, or the CSV file name
    header: list[Any]
    rows: Sequence[tuple[int, list[Any]]] = field(default_factory=list)  # (row number, cells)
    hidden: bool = False  # a workbook sheet its author hid (imported all the same, and said so)

    def chunks(self, size: int) -> Iterator[Chunk]:
        """The rows, ``size`` at a time, column by column."""
        if isinstance(self.rows, _CsvRows):
            return self.rows.chunks(size)
        return _chunks(self.rows, size)


def _chunks(rows: Iterable[tuple[int, list[Any]]], size: int) -> Iterator[Chunk]:
    iterator = iter(rows)
    while batch := list(islice(iterator, size)):
        numbers, cells = zip(*batch, strict=True)
        yield Chunk(numbers, list(zip_longest(*cells, fillvalue=None)), cells)


def _raw_sheet(name: str, source: str, rows: Iterable[Sequence[Any]], hidden: bool = False) -> RawSheet:
    rows = iter(rows)
    header = list(next(rows, []))
    sheet = RawSheet(name, source, header, hidden=hidden)
    sheet.rows = [(number, list(cells)) for number, cells in enumerate(rows, start=2)]
    return sheet


def read(path: Path) -> list[RawSheet]:
    """Every sheet of an XLSX workbook, or every ``*.csv`` file of a folder."""
    if path.is_dir():  # LABS.CSV as labs.csv: a file's case never decides whether it is read
        return [_read_csv(file) for file in sorted(path.iterdir()) if file.suffix.lower() == ".csv" and file.is_file()]
    if not path.exists():
        raise WorkbookError(f"{path}: no such file or folder")
    if path.suffix.lower() != ".xlsx":
        raise WorkbookError(f"{path}: expected an .xlsx workbook or a folder of .csv files")
    from openpyxl import load_workbook  # here, as every openpyxl import: a CSV import never needs it (start-up time)
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, InvalidFileException, OSError, KeyError, ValueError) as error:
        raise WorkbookError(f"{path}: not a readable .xlsx workbook ({error})") from error
    try:
        for ws in book.worksheets:
            ws.reset_dimensions()  # read every row there is: a sheet's <dimension> tag may be wrong, and was trusted
        return [_raw_sheet(ws.title, ws.title, ws.iter_rows(values_only=True), hidden=ws.sheet_state != "visible")
                for ws in book.worksheets]  # fmt: skip
    finally:
        book.close()


def _read_csv(file: Path) -> RawSheet:
    try:
        with file.open(encoding="utf-8-sig", newline="") as handle:  # a byte-order mark, if any, is not data
            text = handle.read()  # line ends as they are
    except UnicodeDecodeError as error:
        raise WorkbookError(
            f"{file.name}: not UTF-8 text (byte {error.start}); save it as 'CSV UTF-8' and import again"
        ) from error
    rows = _CsvRows(file, _is_plain(text))
    with rows.reader() as reader:
        header = next(reader, [])
    return RawSheet(file.stem, file.name, header, rows)


def _is_plain(text: str) -> bool:
    """Whether the CSV ``text`` is a plain grid: at least two columns, one data row or more, each line as many cells
    as the first, no quoting, no NUL, lines ending in LF or CR LF (pandas drops a last all-blank line after a lone
    CR). pandas' reader splits such a file as the csv module does, cell for cell (tests/test_workbook.py)."""
    records = text.count("\n") + (not text.endswith("\n"))
    width = text[: text.find("\n")].count(",") + 1
    return (
        records > 1 and width > 1 and '"' not in text and "\x00" not in text
        and text.count("\r") == text.count("\r\n") and text.count(",") == records * (width - 1)
    )  # fmt: skip


class _CsvRows(Sequence[tuple[int, list[str]]]):
    """A CSV file's data rows, read from the file as they are gone through: a large file is never
    held whole (indexing, which only small inputs need, reads it whole once and keeps it)."""

    def __init__(self, file: Path, plain: bool = False) -> None:
        self.file, self.plain = file, plain

    def chunks(self, size: int) -> Iterator[Chunk]:
        """The rows, ``size`` at a time, column by column: a plain grid (``_is_plain``) by pandas' C reader,
        which hands over whole columns (three times as fast), anything else by the csv module."""
        if not self.plain:
            yield from _chunks(self, size)
            return
        import pandas as pd  # here, not at the top: most commands never read a CSV file

        with self.reader() as reader:
            width = len(next(reader))
        frames = pd.read_csv(
            self.file, encoding="utf-8-sig", header=None, skiprows=1, names=range(width), index_col=False,
            dtype=str, keep_default_na=False, na_filter=False, skip_blank_lines=False, chunksize=size, engine="c",
        )  # fmt: skip
        start = 2
        for frame in frames:
            yield Chunk(range(start, start + len(frame)), [frame[column].tolist() for column in frame.columns])
            start += len(frame)

    @contextmanager
    def reader(self) -> Iterator[Iterator[list[str]]]:
        with self.file.open(encoding="utf-8-sig") as handle:  # line ends as read_text gives them
            yield csv.reader(handle)

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        with self.reader() as reader:
            next(reader, None)  # the header
            yield from enumerate(reader, start=2)

    @cached_property
    def _all(self) -> list[tuple[int, list[str]]]:
        return list(iter(self))  # list(self) would ask len(self) first

    def __len__(self) -> int:
        return len(self._all)

    def __getitem__(self, index):  # noqa: ANN001, ANN204 (an index or a slice, as any sequence)
        return self._all[index]


@dataclass
class SheetData:
    """A sheet to write: header, rows of Python values, and optional cell lists (drop-downs)."""

    name: str
    header: list[str]
    rows: list[list[Any]]
    choices: dict[str, list[str]] = field(default_factory=dict)  # column -> allowed values
    notes: dict[str, str] = field(default_factory=dict)  # column -> header comment


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def write_csv_folder(folder: Path, sheets: list[SheetData]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for sheet in sheets:
        with (folder / f"{sheet.name}.csv").open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(sheet.header)
            writer.writerows([_csv_cell(v) for v in row] for row in sheet.rows)


def _xlsx_cell(ws: WriteOnlyWorksheet, value: Any) -> Any:
    """A value as its cell: yes/no for flags; text that starts with '=' as text (openpyxl would write it as a formula,
    with no value: an AE detail "=HYPERLINK(...)" came back blank)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str) and value.startswith("="):
        from openpyxl.cell import WriteOnlyCell

        cell = WriteOnlyCell(ws, value=value)
        cell.data_type = "s"
        return cell
    return value


def _dropdown_ranges(sheets: list[SheetData]) -> dict[tuple[str, ...], str]:
    """Where each distinct list of choices is held on the hidden ``lists`` sheet (Excel caps inline lists at 255
    characters): a column each, in the order of first use."""
    from openpyxl.utils import get_column_letter

    ranges: dict[tuple[str, ...], str] = {}
    for sheet in sheets:
        for choices in (tuple(sheet.choices.get(name, ())) for name in sheet.header):
            if choices and choices not in ranges:
                column = get_column_letter(len(ranges) + 1)
                ranges[choices] = f"lists!${column}$1:${column}${len(choices)}"
    return ranges


def _add_dropdown(ws: WriteOnlyWorksheet, letter: str, name: str, source: str) -> None:
    from openpyxl.worksheet.datavalidation import DataValidation

    validation = DataValidation(type="list", formula1=source, allow_blank=True)
    validation.error = f"Choose one of the allowed values for {name}"
    validation.showErrorMessage = True
    ws.data_validations.append(validation)
    validation.add(f"{letter}2:{letter}{_VALIDATED_ROWS}")


def _header_cell(ws: WriteOnlyWorksheet, name: str, note: str | None) -> WriteOnlyCell:
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.comments import Comment
    from openpyxl.styles import Font

    cell = WriteOnlyCell(ws, value=name)
    cell.font = Font(bold=True)
    if note:
        cell.comment = Comment(note, "mda5-registry")
    return cell


def _write_sheet(ws: WriteOnlyWorksheet, sheet: SheetData, ranges: dict[tuple[str, ...], str]) -> None:
    """Column widths, frozen header and drop-downs first (a streamed sheet takes them only before its rows), then
    the rows; date cells get ``yyyy-mm-dd`` from openpyxl."""
    from openpyxl.utils import get_column_letter
    from openpyxl.utils.exceptions import IllegalCharacterError

    ws.freeze_panes = "A2"
    for index, name in enumerate(sheet.header, start=1):
        letter = get_column_letter(index)
        ws.column_dimensions[letter].width = max(12, len(name) + 2)
        if choices := tuple(sheet.choices.get(name, ())):
            _add_dropdown(ws, letter, name, ranges[choices])
    ws.append([_header_cell(ws, name, sheet.notes.get(name)) for name in sheet.header])
    for number, row in enumerate(sheet.rows, start=2):
        try:
            ws.append([_xlsx_cell(ws, v) for v in row])
        except IllegalCharacterError:
            raise WorkbookError(_unwritable(sheet, number, row)) from None


def _unwritable(sheet: SheetData, number: int, row: Sequence[Any]) -> str:
    """Where a row holds a control character, which XML, and so an .xlsx cell, cannot hold (a CSV file can)."""
    name, value = next((n, v) for n, v in zip(sheet.header, row, strict=True) if CONTROL_CHARACTERS.search(str(v)))
    character = CONTROL_CHARACTERS.search(str(value)).group()
    return (
        f"sheet {sheet.name} row {number}, column {name} holds the control character U+{ord(character):04X}, "
        "which an .xlsx cell cannot hold: correct the value, or write a folder of CSV files (a path without .xlsx)"
    )


def write_xlsx(path: Path, sheets: list[SheetData]) -> None:
    """An XLSX workbook: bold frozen header, ISO-formatted date cells, drop-down lists.

    Sheets are streamed (openpyxl's write-only mode), so memory does not grow with the
    rows; timestamps are fixed so that identical content gives identical bytes.
    """
    from openpyxl import Workbook

    require_xlsx_fits(path, {sheet.name: len(sheet.rows) for sheet in sheets})
    book = Workbook(write_only=True)
    ranges = _dropdown_ranges(sheets)
    try:
        for sheet in sheets:
            _write_sheet(book.create_sheet(sheet.name), sheet, ranges)
    except WorkbookError:
        for ws in book.worksheets:  # end each sheet's writer, which would otherwise write to its closed file later
            ws.close()
        raise
    if ranges:
        lists = book.create_sheet("lists")
        lists.sheet_state = "hidden"
        for row in zip_longest(*ranges):
            lists.append(list(row))
    book.properties.creator = "mda5-registry"
    book.properties.created = book.properties.modified = _FIXED_TIME
    buffer = io.BytesIO()
    book.save(buffer)
    path.write_bytes(_with_fixed_timestamps(buffer.getvalue()))


def _with_fixed_timestamps(data: bytes) -> bytes:
    """The XLSX with every zip entry and the document's 'modified' time set to one fixed instant."""
    stamp = _FIXED_TIME.timetuple()[:6]
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            content = source.read(info.filename)
            if info.filename == "docProps/core.xml":  # openpyxl stamps the save time here
                content = _MODIFIED.sub(rf"\g<1>{_FIXED_TIME:%Y-%m-%dT%H:%M:%SZ}\g<2>", content.decode()).encode()
            target.writestr(zipfile.ZipInfo(info.filename, stamp), content, zipfile.ZIP_DEFLATED)
    return out.getvalue()
