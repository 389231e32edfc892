"""CSV files are read cell for cell as the csv module reads them, whichever reader the file gets.

All content here is made up (random text), no person's data.
"""

import csv
import re
import zipfile
from itertools import zip_longest
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from registry import workbook
from registry.workbook import UnreadableCell, WorkbookError, read

#: Cell text without the characters that shape a CSV file, but with those some readers treat specially.
cell_text = st.one_of(
    st.sampled_from(["", " ", "NA", "null", "nan", "#N/A", "None", "-", "1,5"[0], "2019-05-01", "1e309", "0x1A"]),
    st.text(alphabet="aé肺 \t#'\\;\x0b\x0c\x1a\x1c\x85\u2028N1.-e+", max_size=8),
)


def _reference(file: Path) -> tuple[list[str], list[list[str]]]:
    with file.open(encoding="utf-8-sig", newline="") as handle:  # as the csv module asks
        header, *rows = [[_unescaped(cell) for cell in record] for record in csv.reader(handle)] or [[]]
    return header, rows


def _unescaped(cell: str) -> str:
    """The documented escape taken off: one ' before one or more ' and then = + - @ tab or CR."""
    return cell[1:] if re.match(r"'+[=+\-@\t\r]", cell) else cell


def _read_back(file: Path, size: int) -> tuple[list, list[tuple[int, list]], list[list], bool]:
    (sheet,) = read(file.parent)
    rows, columns = [], []
    for chunk in sheet.chunks(size):
        rows += [(number, chunk.row(position)) for position, number in enumerate(chunk.numbers)]
        columns.append([list(column) for column in chunk.columns])
    return sheet.header, rows, columns, sheet.rows.plain


def _expected_columns(rows: list[list[str]], size: int) -> list[list[list]]:
    batches = [rows[start : start + size] for start in range(0, len(rows), size)]
    return [[list(column) for column in zip_longest(*batch, fillvalue=None)] for batch in batches]


@st.composite
def csv_bytes(draw) -> bytes:
    """A grid of cells, now and then made irregular (a short, long or blank line, a quoted cell), with any line end,
    with or without a byte-order mark and a last line end."""
    width = draw(st.integers(1, 5))
    grid = draw(st.lists(st.lists(cell_text, min_size=width, max_size=width), min_size=1, max_size=8))
    lines = [",".join(cells) for cells in grid]
    if draw(st.booleans()):  # irregular
        position = draw(st.integers(0, len(lines)))
        lines.insert(position, draw(st.sampled_from(["", "x", ",".join(["y"] * (width + 1)), '"a,b\nc",d', 'a"b'])))
    end = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = end.join(lines) + (end if draw(st.booleans()) else "")
    return ("\ufeff" if draw(st.booleans()) else "").encode() + text.encode()


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=csv_bytes(), size=st.integers(1, 4))
def test_chunks_hold_the_cells_the_csv_module_reads(tmp_path, data, size):
    file = tmp_path / "labs.csv"
    file.write_bytes(data)
    header, rows, columns, plain = _read_back(file, size)
    event(f"read by the fast reader: {plain}")
    expected_header, expected_rows = _reference(file)
    assert header == expected_header
    assert rows == list(enumerate(expected_rows, start=2))
    assert columns == _expected_columns(expected_rows, size)


def test_a_plain_grid_is_read_by_the_fast_reader_and_anything_else_by_the_csv_module(tmp_path):
    file = tmp_path / "labs.csv"
    grid = "study_id,value\r\nEX-1,5\r\nEX-2, 6 \r\nEX-3,\r\n"
    for text, plain in [(grid, True), (grid + "\r\n", False), (grid + "EX-4\r\n", False),
                        (grid + '"EX,5",7\r\n', False), ("study_id\nEX-1\n", False), ("study_id,value\n", False)]:  # fmt: skip
        file.write_text(text, encoding="utf-8", newline="")
        header, rows, _columns, was_plain = _read_back(file, 2)
        assert was_plain is plain, text
        assert (header, rows) == (_reference(file)[0], list(enumerate(_reference(file)[1], start=2)))
    file.write_text(grid, encoding="utf-8", newline="")
    assert _read_back(file, 2)[1] == [(2, ["EX-1", "5"]), (3, ["EX-2", " 6 "]), (4, ["EX-3", ""])]


def _rewrite_sheet(path: Path, change) -> None:
    """Rewrite the first sheet's XML with ``change`` (bytes -> bytes), as other tools write it."""
    with zipfile.ZipFile(path) as book:
        parts = {name: book.read(name) for name in book.namelist()}
    sheet = "xl/worksheets/sheet1.xml"
    parts[sheet] = change(parts[sheet])
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as book:
        for name, content in parts.items():
            book.writestr(name, content)


def _with_dimension(path: Path, ref: str) -> None:
    """Rewrite the first sheet's ``<dimension>`` tag, as some tools write it wrong (openpyxl's read-only mode trusts it)."""

    def change(xml: bytes) -> bytes:
        xml, count = re.subn(rb'<dimension ref="[^"]*"', f'<dimension ref="{ref}"'.encode(), xml)
        assert count == 1
        return xml

    _rewrite_sheet(path, change)


def test_every_row_of_a_sheet_is_read_whatever_its_dimension_tag_says(tmp_path):
    """A sheet of 20 data rows whose tag says A1:B3 gave 2 rows, without a word (issue 17)."""
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = "labs"
    sheet.append(["study_id", "analyte"])
    for number in range(1, 21):
        sheet.append([f"EX-{number:03d}", "ferritin", *(["wider"] if number == 20 else [])])  # the last row wider
    sheet.append([])  # a blank row in between is kept as one
    sheet.append(["EX-999", "ldh"])
    path = tmp_path / "cases.xlsx"
    book.save(path)
    _with_dimension(path, "A1:B3")
    (labs,) = read(path)
    assert labs.header == ["study_id", "analyte"]
    assert [number for number, _ in labs.rows] == list(range(2, 24))
    assert labs.rows[0] == (2, ["EX-001", "ferritin"]) and labs.rows[19] == (21, ["EX-020", "ferritin", "wider"])
    assert labs.rows[-1] == (23, ["EX-999", "ldh"]) and not any(labs.rows[20][1])


def _labs_workbook(path: Path, *values) -> Path:
    """A labs sheet whose value column holds ``values``, one row each (openpyxl writes a formula without its value)."""
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = "labs"
    sheet.append(["study_id", "value", "note"])
    for number, value in enumerate(values, start=1):
        sheet.append([f"EX-{number:03d}", value, "text"])
    book.save(path)
    return path


def test_formulas_without_a_stored_value_and_error_cells_stand_out_as_unreadable(tmp_path):
    """A formula saved without its value was read as blank, an error cell as the text "#N/A" (issue 17, point 1)."""
    path = _labs_workbook(tmp_path / "cases.xlsx", 5, "=B2*2", "#N/A", "#N/A text", "=1/0", "=2+2")

    def stored_values(xml: bytes) -> bytes:  # what Excel writes for calculated formulas: <f> and the value
        xml = xml.replace(b'<c r="B6"><f>1/0</f><v /></c>', b'<c r="B6" t="e"><f>1/0</f><v>#DIV/0!</v></c>')
        return xml.replace(b'<c r="B7"><f>2+2</f><v /></c>', b'<c r="B7"><f>2+2</f><v>4</v></c>')

    _rewrite_sheet(path, stored_values)
    (labs,) = read(path)
    values = [cells[1] for _, cells in labs.rows]
    assert values[0] == 5 and values[3] == "#N/A text" and values[5] == 4  # a stored formula value is the value
    assert values[1] == UnreadableCell(
        "=B2*2",
        "is a formula with no stored value (cell B3): the workbook was saved without calculating it; open it in Excel "
        "or LibreOffice, let it calculate, save, and import again",
    )
    assert values[2] == UnreadableCell(
        "#N/A", "is a spreadsheet error, not a value (cell B4): correct the cell, or empty it"
    )
    assert values[4] == UnreadableCell(
        "#DIV/0! (from =1/0)", "is a spreadsheet error, not a value (cell B6): correct the cell, or empty it"
    )
    assert [cells[2] for _, cells in labs.rows] == ["text"] * 6


def test_a_sheet_cut_short_is_refused_as_damaged(tmp_path):
    """A truncated sheet XML inside an .xlsx gave a ParseError traceback (issue 17, point 2)."""
    path = _labs_workbook(tmp_path / "cases.xlsx", *range(50))
    _rewrite_sheet(path, lambda xml: xml[: len(xml) // 2])
    with pytest.raises(WorkbookError) as refused:
        read(path)
    assert str(refused.value).startswith(f"{path}: sheet labs is damaged and cannot be read (ParseError: ")
    assert str(refused.value).endswith(
        "; nothing was imported: open the workbook in Excel or LibreOffice and save it again, or save the sheet as CSV"
    )


def test_a_workbook_part_expanding_past_a_hundred_times_is_refused_before_it_is_parsed(tmp_path):
    """An .xlsx of 1.5 MB expanding to hundreds of MB took 293 s and 2 GB to read (issue 17, point 2)."""
    path = _labs_workbook(tmp_path / "cases.xlsx", 1)
    padding = b"<!--" + b" " * 50_000_000 + b"-->"  # 50 MB that deflate to some 50 kB
    _rewrite_sheet(path, lambda xml: xml.replace(b"<sheetData>", padding + b"<sheetData>"))
    with zipfile.ZipFile(path) as book:
        part = book.getinfo("xl/worksheets/sheet1.xml")
    with pytest.raises(WorkbookError) as refused:
        read(path)
    assert str(refused.value) == (
        f"{path}: refused: its part xl/worksheets/sheet1.xml would expand from {part.compress_size:,} to "
        f"{part.file_size:,} bytes, more than 100 times (spreadsheets write parts that expand some 5 to 15 times): "
        "it is not read, as it may be built to exhaust memory"
    )


def test_a_workbook_expanding_past_the_limit_is_refused(tmp_path, monkeypatch):
    path = _labs_workbook(tmp_path / "cases.xlsx", 1)
    with zipfile.ZipFile(path) as book:
        total = sum(part.file_size for part in book.infolist())
    monkeypatch.setattr(workbook, "MAX_EXPANDED_BYTES", total - 1)
    with pytest.raises(WorkbookError) as refused:
        read(path)
    assert str(refused.value) == (
        f"{path}: refused: it would expand to {total:,} bytes unzipped, more than the {total - 1:,} a workbook may; "
        "split it, or import a folder of CSV files"
    )
    monkeypatch.setattr(workbook, "MAX_EXPANDED_BYTES", total)
    assert read(path)[0].rows == [(2, ["EX-001", 1, "text"])]


def test_a_csv_cell_longer_than_the_csv_modules_default_is_read_whole(tmp_path):
    """A quoted cell over 131,072 characters gave `_csv.Error: field larger than field limit` (issue 17, point 2)."""
    long = "x" * 300_000
    (tmp_path / "labs.csv").write_text(f'study_id,note\nEX-001,"{long}"\n', encoding="utf-8")
    (labs,) = read(tmp_path)
    assert list(labs.rows) == [(2, ["EX-001", long])]


def test_a_csv_cell_past_the_limit_is_refused_naming_the_file_and_line(tmp_path, monkeypatch):
    monkeypatch.setattr(workbook, "_CSV_FIELD_LIMIT", 1000)
    (tmp_path / "labs.csv").write_text(f'study_id,note\nEX-001,short\nEX-002,"{"x" * 1001}"\n', encoding="utf-8")
    (labs,) = read(tmp_path)
    with pytest.raises(WorkbookError) as refused:
        list(labs.rows)
    assert str(refused.value) == (
        "labs.csv line 3: cannot be read as CSV (field larger than field limit (1000); a cell may hold at most 1,000 "
        "characters): nothing was imported"
    )


@pytest.mark.parametrize(
    ("stored", "written"),
    [("=1+1", "'=1+1"), ("+33 1 23", "'+33 1 23"), ("-5 mg", "'-5 mg"), ("@SUM(A1)", "'@SUM(A1)"),
     ("\tx", "'\tx"), ("\rx", "'\rx"), ("'=1", "''=1"), ("''+", "'''+"), ("'plain", "'plain"), ("a=b", "a=b"),
     ("'", "'"), ("x", "x"), ("a\rb", "a\rb"), ("a\r\nb", "a\r\nb")],
)  # fmt: skip
@pytest.mark.parametrize("quoted", [False, True], ids=["plain grid", "quoted"])
def test_csv_text_a_spreadsheet_would_run_is_written_with_a_quote_that_reading_takes_off(
    tmp_path, stored, written, quoted
):
    """CSV exports wrote text a spreadsheet runs as a formula as it was (issue 17, point 1): now behind a ', which
    the registry's own reading takes off again, so the round trip is exact, whichever reader the file gets."""
    rows = [["EX-001", stored]] + ([["EX-002", 'say "a,b"']] if quoted else [])
    workbook.write_csv_folder(tmp_path, [workbook.SheetData("labs", ["study_id", "note"], rows)])
    with (tmp_path / "labs.csv").open(encoding="utf-8", newline="") as handle:
        assert list(csv.reader(handle))[1] == ["EX-001", written]
    (labs,) = read(tmp_path)
    assert labs.rows.plain == (not quoted and "\r" not in stored)
    (chunk,) = labs.chunks(10)
    assert [list(column) for column in chunk.columns] == [[row[0] for row in rows], [row[1] for row in rows]]
    assert list(labs.rows) == list(enumerate(rows, start=2))
