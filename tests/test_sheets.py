"""The interchange format: stored records read back under the sheets' column names."""

from datetime import date

import sqlalchemy as sa
from conftest import add_demo_site

from registry.ingest import import_sheets
from registry.sheets import SHEETS_BY_NAME, stored_rows
from registry.workbook import RawSheet


def _import_patient_with_a_lab(engine, study_id: str) -> None:
    """A synthetic patient of site DEMO and one CRP result of theirs, imported (committed) as one workbook."""
    sheets = [
        RawSheet("patients", "patients.csv", ["study_id", "site", "sex", "birth_date"],
                 [(2, [study_id, "DEMO", "female", "1970-01-01"])]),
        RawSheet("labs", "labs.csv", ["study_id", "analyte", "sample_date", "value", "unit"],
                 [(2, [study_id, "crp", "2020-01-02", "12.5", "mg/L"])]),
    ]  # fmt: skip
    result = import_sheets(engine, sheets, actor="test", reason="synthetic test data")
    assert result.written and not result.problems


def test_stored_rows_sees_a_patient_committed_with_their_records_while_it_reads(migrated):
    # Another writer commits a new patient and their lab just before the labs are read. Reading the patients'
    # study_ids by a statement of their own, first, used to miss that patient and raise KeyError (an import
    # crashed when another import or a web form added a patient with records at the same moment).
    add_demo_site(migrated)
    _import_patient_with_a_lab(migrated, "SY-1")
    written = []

    def another_writer(_conn, _cursor, statement, *_args) -> None:
        if "lab_result" in statement and not written:
            written.append(statement)
            _import_patient_with_a_lab(migrated, "SY-2")

    with migrated.connect() as connection:
        sa.event.listen(connection, "before_cursor_execute", another_writer)
        labs = stored_rows(connection, SHEETS_BY_NAME["labs"])
    assert written
    assert {key: (row["value"], row["deleted"]) for key, row in labs.items()} == {
        ("SY-1", "crp", date(2020, 1, 2)): (12.5, False),
        ("SY-2", "crp", date(2020, 1, 2)): (12.5, False),
    }


def test_stored_rows_of_some_patients_only(migrated):
    """The API reads one patient's rows, not the whole registry's."""
    add_demo_site(migrated)
    for study_id in ("SY-001", "SY-002"):
        _import_patient_with_a_lab(migrated, study_id)
    from registry.models import Patient

    one = sa.select(Patient.id).where(Patient.study_id == "SY-002")
    with migrated.connect() as connection:
        labs = stored_rows(connection, SHEETS_BY_NAME["labs"], one)
        patients = stored_rows(connection, SHEETS_BY_NAME["patients"], one)
        everyone = stored_rows(connection, SHEETS_BY_NAME["labs"])
    assert [values["study_id"] for values in labs.values()] == ["SY-002"]
    assert list(patients) == [("SY-002",)] and len(everyone) == 2
