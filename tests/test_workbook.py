"""CSV files are read cell for cell as the csv module reads them, whichever reader the file gets.

All content here is made up (random text), no person's data.
"""

import csv
import re
import zipfile
from itertools import zip_longest
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from registry.workbook import read

#: Cell text without the characters that shape a CSV file, but with those some readers treat specially.
cell_text = st.one_of(
    st.sampled_from(["", " ", "NA", "null", "nan", "#N/A", "None", "-", "1,5"[0], "2019-05-01", "1e309", "0x1A"]),
    st.text(alphabet="aé肺 \t#'\\;\x0b\x0c\x1a\x1c\x85\u2028N1.-e+", max_size=8),
)


def _reference(file: Path) -> tuple[list[str], list[list[str]]]:
    with file.open(encoding="utf-8-sig") as handle:
        header, *rows = list(csv.reader(handle)) or [[]]
    return header, rows


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


def _with_dimension(path: Path, ref: str) -> None:
    """Rewrite the first sheet's ``<dimension>`` tag, as some tools write it wrong (openpyxl's read-only mode trusts it)."""
    with zipfile.ZipFile(path) as book:
        parts = {name: book.read(name) for name in book.namelist()}
    sheet = "xl/worksheets/sheet1.xml"
    parts[sheet], count = re.subn(rb'<dimension ref="[^"]*"', f'<dimension ref="{ref}"'.encode(), parts[sheet])
    assert count == 1
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as book:
        for name, content in parts.items():
            book.writestr(name, content)


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
