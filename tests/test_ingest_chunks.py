"""The import reads, checks and writes in chunks, column by column: wherever chunks end, the outcome is the same.

All data here is synthetic (the example workbook and made-up rows).
"""

import pytest
from conftest import add_demo_site
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlmodel import Session, select
from test_ingest import EXAMPLE, LABS, raw

from registry import ingest
from registry.ingest import CellError, import_path, import_sheets, parse_cell
from registry.models import AuditLog, LabResult, Patient
from registry.sheets import SHEETS_BY_NAME

TREATMENTS = ["study_id", "drug", "start_date", "end_date"]


@pytest.fixture
def registry(migrated):
    add_demo_site(migrated)
    assert import_path(migrated, EXAMPLE, actor="coordinator").written
    return migrated


@pytest.mark.parametrize("chunk", [1, 2, 3, 50_000])
def test_problems_are_the_same_wherever_chunks_end(registry, monkeypatch, chunk):
    monkeypatch.setattr(ingest, "_CHUNK", chunk)
    rows = [["EX-999", "crp", "2018-05-06", "1e999", "mg/L"], ["EX-001", "crp", "2018-05-05", "5", "mg/L"], [],
            ["EX-001", "crp", "2018-05-05", "6", "mg/L"], ["EX-001", "crp", "03/04/2019", "x", "mg/L"],
            ["EX-001", "crp", "2018-05-07", "7"], ["EX-001", "crp", "2018-05-08", "<5", "mg/L"]]  # fmt: skip
    labs = raw("labs", LABS, *rows)
    treatments = raw(
        "treatments",
        TREATMENTS,
        ["EX-002", "tacrolimus", "2019-03-01", "2019-02-01"],
        ["EX-002", "tacrolimus", "2019-04-01", "2019-05-01"],
        ["EX-003", "tacrolimus", "2019-03-01", "2019-01-01"],
    )
    result = import_sheets(registry, [treatments, labs], actor="c", reason="r")
    assert [str(p) for p in result.errors] == [
        'labs row 2, column value: "1e999" is not a finite number',
        'labs row 5, column study_id + analyte + sample_date: "EX-001 / crp / 2018-05-05" repeats row 3: each row needs its own study_id + analyte + sample_date',
        'labs row 6, column sample_date: "03/04/2019" is not an ISO 8601 date (YYYY-MM-DD); day and month order is ambiguous and never guessed',
        'labs row 6, column value: "x" is not a number',
        'labs row 7, column unit: is required',
        'labs row 8, column value: "<5" is not a number (qualifiers such as < or > cannot be stored: enter the number alone)',
        'treatments row 2, column end_date: "2019-02-01" end_date cannot be before start_date',
        'treatments row 4, column end_date: "2019-01-01" end_date cannot be before start_date',
    ]  # fmt: skip
    assert (result.counts["labs"].inserted, result.counts["treatments"].inserted) == (1, 3)
    assert not result.written


def test_a_workbook_written_in_small_chunks_is_whole_and_audited_row_by_row(migrated, monkeypatch):
    monkeypatch.setattr(ingest, "_CHUNK", 3)
    add_demo_site(migrated)
    result = import_path(migrated, EXAMPLE, actor="coordinator")
    assert result.written and result.problems == []
    with Session(migrated) as session:
        study_ids = dict(session.exec(select(Patient.id, Patient.study_id)).all())
        labs = {str(lab.id): lab for lab in session.exec(select(LabResult))}
        logged = {e.record_key: e for e in session.exec(select(AuditLog).where(AuditLog.table_name == "lab_result"))}
    assert len(labs) == 20 and logged.keys() == labs.keys()
    for key, lab in labs.items():  # each entry names its own record, patient and values
        entry = logged[key]
        assert (entry.action, entry.study_id, entry.old_values) == ("insert", study_ids[lab.patient_id], None)
        assert entry.new_values == {**lab.model_dump(mode="json", exclude={"version"})}
    again = import_path(migrated, EXAMPLE, actor="coordinator")
    assert not again.changed and sum(c.unchanged for c in again.counts.values()) == 59


VALUE = SHEETS_BY_NAME["labs"].column("value")


def _one_by_one(cell):
    try:
        return parse_cell(VALUE, cell), None
    except CellError as error:
        return None, str(error)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet="0123456789.+-eE _,<inf", max_size=8), min_size=1, max_size=30))
def test_a_column_of_numbers_reads_as_each_cell_alone(cells):
    """Plain numbers are parsed a column at a time; the values and the failing cells are those of parse_cell."""
    values, failing = ingest._ColumnParser(VALUE, {}).column_values(cells)
    alone = [_one_by_one(cell) for cell in cells]
    assert values == [value for value, _ in alone]
    assert failing == {i for i, (_, error) in enumerate(alone) if error is not None}
    assert all(type(v) is float for v in values if v is not None)
