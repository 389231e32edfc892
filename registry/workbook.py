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
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cached_property
from itertools import islice, zip_longest
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree

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


#: The most an .xlsx workbook may expand to unzipped (the largest sheet Excel holds, 1,048,576 rows of a registry
#: table, is some 700 MB), and how much more than its compressed size any large part of it may expand (Apache
#: POI's limit: 100 times; spreadsheets' own files expand some 5 to 15 times). A "zip bomb" of 1.5 MB expanding to
#: hundreds of MB took 293 s and 2 GB to read: it is refused before a byte is parsed.
MAX_EXPANDED_BYTES = 2 * 1024**3
MAX_EXPANSION_RATIO = 100
_RATIO_FLOOR = 1024**2  # parts smaller than this expand as they like: a few kB of styles compress very well

#: Excel's error values, which a cell holds in place of a value (openpyxl's ERROR_CODES).
ERROR_VALUES = ("#NULL!", "#DIV/0!", "#VALUE!", "#REF!", "#NAME?", "#NUM!", "#N/A")
#: What starts a formula element (``<f>``, ``<f t="shared" si="0"/>``, ``<x:f>``) or marks an error cell in a sheet's
#: XML: only a workbook holding one needs the slower second reading that tells formulas from values. (The same
#: characters in a cell's text would cost a needless second reading, never a missed formula.)
_FORMULA_OR_ERROR = (b"<f>", b"<f ", b"<f/", b":f>", b":f ", b":f/", b't="e"')

#: CSV cells a spreadsheet would run as a formula: those starting with = + - @ tab or CR (OWASP's list). The CSV
#: export writes them with a ' before (as spreadsheets do to mark text), and before any ' that already starts such
#: a cell, so that reading takes exactly one ' off a cell that starts with one or more ' and then such a character:
#: the round trip is exact ('=1 is written ''=1 and read '=1; 'quoted, which no spreadsheet runs, is left as it is).
_RUNNABLE = re.compile(r"'*[=+\-@\t\r]")
_ESCAPED = re.compile(r"'+[=+\-@\t\r]")
#: The longest CSV cell read (the csv module's default stops at 131,072 characters, with a traceback); no column
#: holds so much, so the import refuses a longer cell by its column's rule, named.
_CSV_FIELD_LIMIT = 16 * 1024**2


class WorkbookError(Exception):
    """The file could not be read as a workbook at all, or the registry not written as one."""


@dataclass(frozen=True)
class UnreadableCell:
    """A workbook cell that holds no value the registry could read: a formula never calculated, or an error.

    It stands in the sheet where the cell was, so that the import refuses it with the other problems, by row and
    column (a formula without its stored value was read as blank, an error cell as the text "#N/A").
    """

    shown: str  # the formula or error, as the spreadsheet shows it
    problem: str  # what the import says of it

    def __str__(self) -> str:
        return self.shown


def _escaped_csv_text(value: str) -> str:
    return "'" + value if _RUNNABLE.match(value) else value


def _unescaped_csv_text(value: str) -> str:
    return value[1:] if _ESCAPED.match(value) else value


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


def _raw_sheet(
    name: str,
    source: str,
    rows: Iterable[Sequence[Any]],
    hidden: bool = False,
    marks: Mapping[tuple[int, int], UnreadableCell | _Formula] | None = None,
) -> RawSheet:
    """``marks``: (row, column index) -> the error cells and formulas of the sheet (:func:`_marked_cells`); an
    error cell, and a formula whose stored value is none or an error, are replaced by what stands in for them."""
    rows = iter(rows)
    header = list(next(rows, []))
    sheet = RawSheet(name, source, header, hidden=hidden)
    sheet.rows = [(number, list(cells)) for number, cells in enumerate(rows, start=2)]
    for (number, index), mark in (marks or {}).items():
        cells = sheet.rows[number - 2][1]
        stored = cells[index] if index < len(cells) else None
        if (cell := mark.unreadable(stored) if isinstance(mark, _Formula) else mark) is not None:
            cells.extend([None] * (index + 1 - len(cells)))  # a short row reaches the cell
            cells[index] = cell
    return sheet


def read(path: Path) -> list[RawSheet]:
    """Every sheet of an XLSX workbook, or every ``*.csv`` file of a folder."""
    if path.is_dir():  # LABS.CSV as labs.csv: a file's case never decides whether it is read
        return [_read_csv(file) for file in sorted(path.iterdir()) if file.suffix.lower() == ".csv" and file.is_file()]
    if not path.exists():
        raise WorkbookError(f"{path}: no such file or folder")
    if path.suffix.lower() != ".xlsx":
        raise WorkbookError(f"{path}: expected an .xlsx workbook or a folder of .csv files")
    marks = _marked_cells(path) if _check_expansion(path) else {}
    with _opened_xlsx(path, data_only=True) as book:
        return [
            _raw_sheet(ws.title, ws.title, _sheet_rows(path, ws), ws.sheet_state != "visible", marks.get(ws.title))
            for ws in book.worksheets
        ]


_DAMAGE = (zipfile.BadZipFile, EOFError, zlib.error, ElementTree.ParseError, KeyError, ValueError)


@contextmanager
def _opened_xlsx(path: Path, data_only: bool) -> Iterator[Any]:
    """The workbook opened for streamed reading, every sheet's rows all there are (a sheet's ``<dimension>`` tag
    may be wrong, and was trusted: 2 rows of 20 were imported)."""
    from openpyxl import load_workbook  # here, as every openpyxl import: a CSV import never needs it (start-up time)
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        book = load_workbook(path, read_only=True, data_only=data_only)
    except (InvalidFileException, OSError, *_DAMAGE) as error:
        raise WorkbookError(f"{path}: not a readable .xlsx workbook ({error})") from error
    try:
        for ws in book.worksheets:
            ws.reset_dimensions()
        yield book
    finally:
        book.close()


def _sheet_rows(path: Path, ws: Any, values_only: bool = True) -> Iterator[tuple[Any, ...]]:
    """A sheet's rows; a damaged sheet (its XML cut short, a part failing its checksum) a :class:`WorkbookError`."""
    try:
        yield from ws.iter_rows(values_only=values_only)
    except _DAMAGE as error:
        raise WorkbookError(
            f"{path}: sheet {ws.title} is damaged and cannot be read ({type(error).__name__}: {error}); nothing was "
            "imported: open the workbook in Excel or LibreOffice and save it again, or save the sheet as CSV"
        ) from None


def _check_expansion(path: Path) -> bool:
    """Refuse a workbook that would expand past :data:`MAX_EXPANDED_BYTES`, or a part of it more than
    :data:`MAX_EXPANSION_RATIO` times; return whether any sheet holds formulas or error cells.

    The sizes are those the zip declares, which Python's zipfile never reads past.
    """
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise WorkbookError(f"{path}: not a readable .xlsx workbook ({error})") from error
    with archive:
        parts = archive.infolist()
        total = sum(part.file_size for part in parts)
        if total > MAX_EXPANDED_BYTES:
            raise WorkbookError(
                f"{path}: refused: it would expand to {total:,} bytes unzipped, more than the {MAX_EXPANDED_BYTES:,} "
                "a workbook may; split it, or import a folder of CSV files"
            )
        for part in parts:
            if part.file_size > _RATIO_FLOOR and part.file_size > MAX_EXPANSION_RATIO * max(part.compress_size, 1):
                raise WorkbookError(
                    f"{path}: refused: its part {part.filename} would expand from {part.compress_size:,} to "
                    f"{part.file_size:,} bytes, more than {MAX_EXPANSION_RATIO} times (spreadsheets write parts that "
                    "expand some 5 to 15 times): it is not read, as it may be built to exhaust memory"
                )
        sheets = [
            part for part in parts if part.filename.startswith("xl/worksheets/") and part.filename.endswith(".xml")
        ]
        try:
            return any(_holds_formula_or_error(archive, part) for part in sheets)
        except _DAMAGE as error:
            raise WorkbookError(f"{path}: not a readable .xlsx workbook ({type(error).__name__}: {error})") from None


def _holds_formula_or_error(archive: zipfile.ZipFile, part: zipfile.ZipInfo) -> bool:
    tail = b""
    with archive.open(part) as stream:
        while block := stream.read(4 * 1024**2):
            if any(marker in tail + block for marker in _FORMULA_OR_ERROR):
                return True
            tail = block[-8:]  # a marker cut between two blocks
    return False


@dataclass(frozen=True)
class _Formula:
    """A formula cell, as the formula-aware reading finds it; the values reading gives its stored value."""

    text: str
    coordinate: str  # D7

    def unreadable(self, stored: Any) -> UnreadableCell | None:
        """What stands in for the cell given its ``stored`` value: none, an error, or (None) the value itself."""
        if stored is None:
            return UnreadableCell(
                self.text, f"is a formula with no stored value (cell {self.coordinate}): the workbook was saved "
                "without calculating it; open it in Excel or LibreOffice, let it calculate, save, and import again"
            )  # fmt: skip
        if stored in ERROR_VALUES:
            return _error_cell(f"{stored} (from {self.text})", self.coordinate)
        return None


def _marked_cells(path: Path) -> dict[str, dict[tuple[int, int], UnreadableCell | _Formula]]:
    """Per sheet, (row, column index) -> its error cells and its formulas, below the header.

    Formulas are told from values only in a reading of their own (the values reading gives a formula's stored value,
    or None where there is none, and an error as its text), so this runs only for workbooks that hold either; the
    values reading then judges each formula by its stored value (:meth:`_Formula.unreadable`).
    """
    marks: dict[str, dict[tuple[int, int], UnreadableCell | _Formula]] = {}
    with _opened_xlsx(path, data_only=False) as book:
        for ws in book.worksheets:
            for row in _sheet_rows(path, ws, values_only=False):
                for cell in row:  # blank cells are of type "n"
                    if cell.data_type not in ("f", "e") or cell.row == 1:
                        continue
                    text, where = str(cell.value), cell.coordinate
                    mark = _Formula(text, where) if cell.data_type == "f" else _error_cell(text, where)
                    marks.setdefault(ws.title, {})[cell.row, cell.column - 1] = mark
    return marks


def _error_cell(value: str, cell: str) -> UnreadableCell:
    return UnreadableCell(value, f"is a spreadsheet error, not a value (cell {cell}): correct the cell, or empty it")


def _read_csv(file: Path) -> RawSheet:
    try:
        with file.open(encoding="utf-8-sig", newline="") as handle:  # a byte-order mark, if any, is not data
            text = handle.read()  # line ends as they are
    except UnicodeDecodeError as error:
        raise WorkbookError(
            f"{file.name}: not UTF-8 text (byte {error.start}); save it as 'CSV UTF-8' and import again"
        ) from error
    rows = _CsvRows(file, _is_plain(text), escaped=_ESCAPED.search(text) is not None)
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

    def __init__(self, file: Path, plain: bool = False, escaped: bool = False) -> None:
        self.file, self.plain = file, plain
        self.escaped = escaped  # whether a cell may start with an escaping ' (_RUNNABLE): only then is it looked for

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
            columns = [frame[column].tolist() for column in frame.columns]
            if self.escaped:
                columns = [list(map(_unescaped_csv_text, column)) for column in columns]
            yield Chunk(range(start, start + len(frame)), columns)
            start += len(frame)

    @contextmanager
    def reader(self) -> Iterator[Iterator[list[str]]]:
        """The file's records, each a list of cells as written (an escaping ' taken off); a record the csv module
        cannot read (a cell longer than :data:`_CSV_FIELD_LIMIT`) a :class:`WorkbookError` naming its line."""
        csv.field_size_limit(_CSV_FIELD_LIMIT)  # for the whole process: the registry reads no other CSV
        with self.file.open(encoding="utf-8-sig", newline="") as handle:  # a CR in a quoted cell is data
            yield self._records(csv.reader(handle))

    def _records(self, reader: Any) -> Iterator[list[str]]:
        try:
            for record in reader:
                yield list(map(_unescaped_csv_text, record)) if self.escaped else record
        except csv.Error as error:
            raise WorkbookError(
                f"{self.file.name} line {reader.line_num}: cannot be read as CSV ({error}; a cell may hold at most "
                f"{_CSV_FIELD_LIMIT:,} characters): nothing was imported"
            ) from None

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


def csv_cell(value: Any) -> str:
    """A value as a CSV cell: yes/no, whole floats without their point, ISO dates, runnable text escaped."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        return _escaped_csv_text(value)
    return str(value)


def write_csv_folder(folder: Path, sheets: list[SheetData]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for sheet in sheets:
        with (folder / f"{sheet.name}.csv").open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(sheet.header)
            for cells in ([csv_cell(v) for v in row] for row in sheet.rows):
                if "\r" in "".join(cells):
                    handle.write(_csv_record_with_cr(cells))
                else:
                    writer.writerow(cells)


def _csv_record_with_cr(cells: list[str]) -> str:
    """The record of a row a cell of which holds a carriage return, that cell quoted: the csv module quotes only
    cells holding a character of its line end, so "a\\rb" was written bare and read back as two rows."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(cells)
    return buffer.getvalue().removesuffix("\r\n") + "\n"


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
