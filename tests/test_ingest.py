"""Workbook import: every bad cell reported at once, nothing written unless all is well."""

import csv
import hashlib
import threading
import time
from datetime import date, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import add_demo_site
from openpyxl import Workbook

from registry import db, ingest
from registry.config import Config
from registry.entry import form_values, save_record, set_locked
from registry.entry_checks import EntryChecks
from registry.ingest import import_path, import_sheets, write_problems
from registry.models import TABLES, AdverseEvent, AuditLog, LabResult, Patient
from registry.sheets import SHEETS_BY_NAME
from registry.workbook import RawSheet, WorkbookError, read

EXAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "example"
DIRTY = Path(__file__).resolve().parents[1] / "fixtures" / "dirty" / "sheets"
CHECKS = EntryChecks(Config(), date(2026, 1, 1))
LABS = ["study_id", "analyte", "sample_date", "value", "unit"]
PATIENTS = ["study_id", "site", "sex", "birth_date"]


def raw(name, header, *rows):
    return RawSheet(name, name, list(header), [(i, list(r)) for i, r in enumerate(rows, start=2)])


def snapshot(engine) -> dict[str, list]:
    """Every row of every table, to prove a refused import wrote nothing."""
    with engine.connect() as connection:
        return {
            m.__tablename__: sorted(map(tuple, connection.execute(sa.select(m.__table__))), key=repr) for m in TABLES
        }


@pytest.fixture
def registry(migrated):
    """A registry with the demo site and the example workbook imported."""
    add_demo_site(migrated)
    result = import_path(migrated, EXAMPLE, actor="coordinator")
    assert result.problems == [] and result.written
    return migrated


def test_example_imports_with_counts_per_sheet(registry):
    with registry.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(LabResult)).scalar_one() == 20


def test_second_import_changes_nothing_and_logs_nothing(registry):
    before = snapshot(registry)
    result = import_path(registry, EXAMPLE, actor="coordinator")
    assert not result.written and not result.changed
    assert {name: (c.inserted, c.updated, c.unchanged) for name, c in result.counts.items()} == {
        "patients": (0, 0, 4), "antibody_tests": (0, 0, 8), "labs": (0, 0, 20), "pfts": (0, 0, 4),
        "hrct": (0, 0, 4), "treatments": (0, 0, 11), "adverse_events": (0, 0, 4), "follow_up": (0, 0, 4),
    }  # fmt: skip
    assert snapshot(registry) == before  # the audit log included


def test_changed_row_is_an_audited_update(registry):
    sheet = raw(
        "labs",
        LABS,
        ["EX-001", "ferritin", "2018-05-03", "2250", "ng/mL"],
        ["EX-001", "ldh", "2018-05-03", "412", "U/L"],
    )
    result = import_sheets(registry, [sheet], actor="datamanager", reason="lab report re-read")
    assert (result.counts["labs"].updated, result.counts["labs"].unchanged, result.written) == (1, 1, True)
    with registry.connect() as connection:
        entry = connection.execute(sa.select(AuditLog).order_by(AuditLog.id.desc())).first()
    assert (entry.action, entry.table_name, entry.study_id, entry.actor, entry.reason) == (
        "update",
        "lab_result",
        "EX-001",
        "datamanager",
        "lab report re-read",
    )
    assert (entry.old_values, entry.new_values) == ({"value": 2150.0}, {"value": 2250.0})


def test_missing_optional_columns_leave_stored_values_alone(registry):
    sheet = raw("patients", PATIENTS, ["EX-002", "DEMO", "male", "1975-11-30"])
    result = import_sheets(registry, [sheet], actor="c", reason="r")
    assert result.counts["patients"].unchanged == 1 and not result.written


CELL_CASES = [
    ("labs", LABS, ["EX-001", "crp", "2018-05-04", "<5", "mg/L"], 'labs row 2, column value: "<5" is not a number (qualifiers such as < or > cannot be stored: enter the number alone)'),
    ("labs", LABS, ["EX-001", "crp", "2018-05-04", "12 mg/L", "mg/L"], 'labs row 2, column value: "12 mg/L" is not a number (enter the number alone, without its unit)'),
    ("labs", LABS, ["EX-001", "crp", "2018-05-04", "1,200", "mg/L"], 'labs row 2, column value: "1,200" is not a number (use a point for decimals and no thousands separators)'),
    ("labs", LABS, ["EX-001", "crp", "2018-05-04", "high", "mg/L"], 'labs row 2, column value: "high" is not a number'),
    ("labs", LABS, ["EX-001", "crp", "2018-05-04", "nan", "mg/L"], 'labs row 2, column value: "nan" is not a number'),
    ("labs", LABS, ["EX-001", "crp", "03/04/2019", "5", "mg/L"], 'labs row 2, column sample_date: "03/04/2019" is not an ISO 8601 date (YYYY-MM-DD); day and month order is ambiguous and never guessed'),
    ("labs", LABS, ["EX-001", "crp", "2019-02-30", "5", "mg/L"], 'labs row 2, column sample_date: "2019-02-30" is not a valid date'),
    ("labs", LABS, ["EX-001", "crp", "4 March 2019", "5", "mg/L"], 'labs row 2, column sample_date: "4 March 2019" is not an ISO 8601 date (YYYY-MM-DD)'),
    ("labs", LABS, ["EX-001", "crp", 43528, "5", "mg/L"], 'labs row 2, column sample_date: "43528" is a number, not a date (use a date cell or YYYY-MM-DD)'),
    ("labs", LABS, ["EX-001", "crp", datetime(2019, 3, 4, 14, 30), "5", "mg/L"], 'labs row 2, column sample_date: "2019-03-04T14:30:00" has a time of day: enter the date only'),
    ("labs", LABS, ["EX-001", "troponin", "2018-05-04", "5", "ng/L"], 'labs row 2, column analyte: "troponin" is not an allowed value; allowed: ferritin, ldh, crp, esr, kl6, lymphocytes, ck, alt, ast, albumin, creatinine, pao2, fio2, tacrolimus_trough'),
    ("labs", LABS, ["EX-001", "CRP", "2018-05-04", "5", "mg/L"], 'labs row 2, column analyte: "CRP" is not an allowed value; allowed: ferritin, ldh, crp, esr, kl6, lymphocytes, ck, alt, ast, albumin, creatinine, pao2, fio2, tacrolimus_trough'),
    ("labs", LABS, ["EX-001", "crp", "2018-05-04", "", "mg/L"], "labs row 2, column value: is required"),
    ("labs", LABS, ["EX-999", "crp", "2018-05-04", "5", "mg/L"], 'labs row 2, column study_id: "EX-999" is not a patient in the patients sheet or the registry'),
    ("patients", PATIENTS, ["EX-010", "NOPE", "female", "1970-01-01"], 'patients row 2, column site: "NOPE" is not a registered site (known: DEMO)'),
    ("patients", PATIENTS, ["X" * 33, "DEMO", "female", "1970-01-01"], f'patients row 2, column study_id: "{"X" * 33}" is longer than 32 characters'),
    ("patients", [*PATIENTS, "rpild"], ["EX-010", "DEMO", "female", "1970-01-01", "maybe"], 'patients row 2, column rpild: "maybe" is not yes or no'),
    ("patients", [*PATIENTS, "rpild"], ["EX-010", "DEMO", "female", "1970-01-01", "yes"], 'patients row 2, column rpild: "yes" an RPILD flag needs the definition it was judged by (rpild_definition)'),
    ("adverse_events", ["study_id", "onset_date", "term", "ctcae_grade", "serious", "led_to_discontinuation"], ["EX-001", "2018-06-01", "pjp", "2.5", "no", "no"], 'adverse_events row 2, column ctcae_grade: "2.5" is not a whole number'),
    ("adverse_events", ["study_id", "onset_date", "term", "ctcae_grade", "serious", "led_to_discontinuation"], ["EX-001", "2018-06-01", "pjp", "7", "no", "no"], 'adverse_events row 2, column ctcae_grade: "7" ctcae_grade must be 1, 2, 3, 4 or 5'),
    ("treatments", ["study_id", "drug", "start_date", "end_date"], ["EX-002", "tacrolimus", "2019-03-01", "2019-02-01"], 'treatments row 2, column end_date: "2019-02-01" end_date cannot be before start_date'),
    ("follow_up", ["study_id", "last_contact_date", "vital_status", "death_date"], ["EX-002", "2021-03-01", "dead", ""], 'follow_up row 2, column vital_status: "dead" death_date is required when vital_status is dead, and only then'),
]  # fmt: skip


@pytest.mark.parametrize(
    "name, header, cells, message", CELL_CASES, ids=[m.split(":")[0] + m[-20:] for *_, m in CELL_CASES]
)
def test_bad_cell_is_reported_exactly_and_nothing_is_written(registry, name, header, cells, message):
    before = snapshot(registry)
    result = import_sheets(registry, [raw(name, header, cells)], actor="c", reason="r")
    assert [str(p) for p in result.errors] == [message]
    assert not result.written
    assert snapshot(registry) == before


def test_every_error_is_reported_at_once_in_reading_order(registry):
    before = snapshot(registry)
    labs = raw(
        "labs",
        LABS,
        ["EX-001", "crp", "2018-05-04", "<5", "mg/L"],
        ["EX-001", "crp", "2018-05-05", "5", "mg/L"],
        ["EX-001", "crp", "2018-05-05", "6", "mg/L"],
        ["EX-001", "crp", "03/04/2019", "x", "mg/L"],
    )
    patients = raw("patients", PATIENTS, ["EX-010", "DEMO", "f", "1970-01-01"])
    result = import_sheets(registry, [labs, patients], actor="c", reason="r")
    assert [str(p) for p in result.errors] == [
        'patients row 2, column sex: "f" is not an allowed value; allowed: female, male',
        'labs row 2, column value: "<5" is not a number (qualifiers such as < or > cannot be stored: enter the number alone)',
        'labs row 4, column study_id + analyte + sample_date: "EX-001 / crp / 2018-05-05" repeats row 3: each row needs its own study_id + analyte + sample_date',
        'labs row 5, column sample_date: "03/04/2019" is not an ISO 8601 date (YYYY-MM-DD); day and month order is ambiguous and never guessed',
        'labs row 5, column value: "x" is not a number',
    ]  # fmt: skip
    assert snapshot(registry) == before


def test_missing_required_column_is_rejected_before_any_row_is_read(registry):
    sheet = raw("labs", ["study_id", "analyte", "value"], ["EX-001", "crp", "<5"])
    result = import_sheets(registry, [sheet], actor="c", reason="r")
    assert [str(p) for p in result.errors] == [
        "labs row 1, column sample_date: required column is missing",
        "labs row 1, column unit: required column is missing",
    ]


def test_repeated_header_is_rejected(registry):
    result = import_sheets(
        registry,
        [raw("labs", [*LABS, "value"], ["EX-001", "crp", "2018-05-04", "5", "mg/L", "6"])],
        actor="c",
        reason="r",
    )
    assert [str(p) for p in result.errors] == ["labs row 1, column value: column appears more than once"]


def test_unknown_columns_and_sheets_are_warnings_and_the_rest_is_imported(registry):
    labs = raw("labs", [*LABS, "comment"], ["EX-001", "crp", "2018-05-04", "5", "mg/L", "fasting"])
    notes = raw("notes", ["anything"], ["at all"])
    result = import_sheets(registry, [labs, notes], actor="c", reason="r")
    assert result.errors == []
    assert [str(p) for p in result.warnings] == [
        "labs row 1, column comment: unknown column, ignored",
        "notes: unknown sheet, ignored (expected: patients, antibody_tests, labs, pfts, hrct, treatments, adverse_events, follow_up)",
    ]
    assert result.written and result.counts["labs"].inserted == 1


def test_a_workbook_without_any_known_sheet_is_an_error(registry):
    result = import_sheets(registry, [raw("Sheet1", ["a"], ["b"])], actor="c", reason="r")
    assert str(result.errors[0]) == (
        "workbook: has none of the sheets patients, antibody_tests, labs, pfts, hrct, treatments, adverse_events, follow_up"
    )


def test_blank_rows_are_ignored(registry):
    sheet = raw(
        "labs", LABS, ["EX-001", "crp", "2018-05-04", "5", "mg/L"], [None, "", "  ", None, None], ["", "", "", "", ""]
    )
    result = import_sheets(registry, [sheet], actor="c", reason="r")
    assert result.problems == [] and result.counts["labs"].inserted == 1


def test_new_patient_and_records_in_one_workbook(registry):
    patients = raw("patients", PATIENTS, ["EX-010", "DEMO", "female", "1970-01-01"])
    labs = raw("labs", LABS, ["EX-010", "crp", "2020-01-02", "5", "mg/L"])
    result = import_sheets(registry, [labs, patients], actor="c", reason="r")
    assert result.written and (result.counts["patients"].inserted, result.counts["labs"].inserted) == (1, 1)


def test_dry_run_reports_counts_and_writes_nothing(registry):
    before = snapshot(registry)
    result = import_sheets(
        registry, [raw("labs", LABS, ["EX-001", "crp", "2018-05-04", "5", "mg/L"])], actor="c", reason="r", dry_run=True
    )
    assert (result.counts["labs"].inserted, result.written) == (1, False)
    assert snapshot(registry) == before


def test_a_clean_import_adds_no_findings(migrated):
    add_demo_site(migrated)
    result = import_path(migrated, EXAMPLE, actor="c", checks=CHECKS, strict=True)
    assert result.written and result.problems == [] and result.findings.empty


def test_dry_run_lists_the_findings_the_import_would_add_and_writes_nothing(migrated):
    """The writes are made and rolled back: the findings are the import's own, with nothing written."""
    add_demo_site(migrated)
    before = snapshot(migrated)
    result = import_path(migrated, DIRTY, actor="c", dry_run=True, checks=CHECKS)
    assert (result.written, result.problems, snapshot(migrated)) == (False, [], before)
    manifest = list(csv.DictReader((DIRTY.parent / "manifest.csv").open(encoding="utf-8")))
    assert set(zip(result.findings["rule"], result.findings["study_id"], strict=True)) == {
        (line["rule"], line["study_id"]) for line in manifest
    }


def test_strict_refuses_an_import_that_adds_errors_and_writes_nothing(migrated):
    add_demo_site(migrated)
    before = snapshot(migrated)
    result = import_path(migrated, DIRTY, actor="c", checks=CHECKS, strict=True)
    assert not result.written and snapshot(migrated) == before  # the audit log included
    assert [str(p) for p in result.errors] == [
        "checks: the import adds 62 error findings (strict): nothing was written"
    ]
    assert len(result.findings) == 82


def test_strict_imports_patients_without_their_records_yet_and_lists_them_as_still_to_enter(registry):
    """A coordinator imports the patients first and their tests, treatments and follow-up later."""
    header = [*PATIENTS, "dm_diagnosis_date", "ild_diagnosis_date"]
    patients = raw("patients", header, ["EX-010", "DEMO", "female", "1970-01-01", "2020-01-02", "2020-02-03"])
    result = import_sheets(registry, [patients], actor="c", reason="r", checks=CHECKS, strict=True)
    assert result.written and result.errors == []
    assert list(zip(result.findings["rule"], result.findings["severity"], strict=True)) == [
        ("PAT-015", "warning"), ("PAT-016", "warning"), ("PAT-017", "warning"),
        ("ABT-010", "error"), ("TRT-010", "error"), ("FUP-010", "error"),
    ]  # fmt: skip


def test_an_import_reports_only_the_findings_it_adds(registry):
    """A stored patient's finding is not the import's: changing another cell of theirs adds only its own."""
    labs = [["EX-001", "ferritin", "2018-05-03", "2250", "mg/dL"]]
    first = import_sheets(registry, [raw("labs", LABS, *labs)], actor="c", reason="r", checks=CHECKS)
    assert list(first.findings["rule"]) == ["LAB-010"]
    second = raw("labs", LABS, *labs, ["EX-001", "crp", "2018-05-03", "900", "mg/L"])
    result = import_sheets(registry, [second], actor="c", reason="r", checks=CHECKS)
    assert (result.written, list(result.findings["rule"]), list(result.findings["value"])) == (
        True,
        ["LAB-013"],
        ["900"],
    )


def _write_csv(folder: Path, name: str, rows: list[list[str]], encoding: str = "utf-8") -> None:
    folder.mkdir(exist_ok=True)
    with (folder / f"{name}.csv").open("w", encoding=encoding, newline="") as handle:
        csv.writer(handle).writerows(rows)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig"])
def test_csv_with_or_without_byte_order_mark(registry, tmp_path, encoding):
    _write_csv(tmp_path / "in", "labs", [LABS, ["EX-001", "crp", "2018-05-04", "5", "mg/L"]], encoding)
    result = import_path(registry, tmp_path / "in", actor="c")
    assert result.problems == [] and result.counts["labs"].inserted == 1


def test_csv_errors_name_the_file(registry, tmp_path):
    _write_csv(tmp_path / "in", "labs", [LABS, ["EX-001", "crp", "2018-05-04", "<5", "mg/L"]])
    result = import_path(registry, tmp_path / "in", actor="c")
    assert str(result.errors[0]).startswith('labs.csv row 2, column value: "<5" is not a number')


def test_csv_that_is_not_utf8_is_refused(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "labs.csv").write_bytes("study_id\nEX-\xe9\n".encode("latin-1"))
    with pytest.raises(WorkbookError, match=r"labs.csv: not UTF-8 text \(byte 12\); save it as 'CSV UTF-8'"):
        read(tmp_path / "in")


def test_unreadable_workbook_paths(tmp_path):
    with pytest.raises(WorkbookError, match="no such file or folder"):
        read(tmp_path / "missing.xlsx")
    (tmp_path / "cases.xls").write_bytes(b"old")
    with pytest.raises(WorkbookError, match=r"expected an .xlsx workbook or a folder of .csv files"):
        read(tmp_path / "cases.xls")
    (tmp_path / "broken.xlsx").write_bytes(b"not a zip")
    with pytest.raises(WorkbookError, match=r"not a readable \.xlsx workbook"):
        read(tmp_path / "broken.xlsx")


def test_xlsx_with_real_date_cells_and_numbers(registry, tmp_path):
    book = Workbook()
    sheet = book.active
    sheet.title = "labs"
    sheet.append(LABS)
    sheet.append(["EX-001", "crp", datetime(2018, 5, 4), 5, "mg/L"])
    sheet.append(["EX-001", "ldh", date(2018, 5, 4), 250.5, "U/L"])
    sheet.append([None] * 5)  # a trailing empty row
    book.save(tmp_path / "cases.xlsx")
    result = import_path(registry, tmp_path / "cases.xlsx", actor="c")
    assert result.problems == [] and result.counts["labs"].inserted == 2


def test_rejected_import_leaves_the_sqlite_file_byte_for_byte_unchanged(tmp_path):
    from registry import db

    engine = db.make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    db.upgrade(engine)
    add_demo_site(engine)
    engine.dispose()
    digest = hashlib.sha256((tmp_path / "r.db").read_bytes()).hexdigest()
    engine = db.make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    result = import_sheets(
        engine,
        [raw("patients", PATIENTS, ["EX-1", "DEMO", "female", "1970-01-01"], ["EX-2", "DEMO", "x", "1970-01-01"])],
        actor="c",
        reason="r",
    )
    assert result.errors
    engine.dispose()
    assert hashlib.sha256((tmp_path / "r.db").read_bytes()).hexdigest() == digest


def test_errors_file_is_a_table_to_work_through(registry, tmp_path):
    result = import_sheets(
        registry, [raw("labs", [*LABS, "x"], ["EX-001", "crp", "2018-05-04", "<5", "mg/L", ""])], actor="c", reason="r"
    )
    write_problems(tmp_path / "errors.csv", result.problems)
    assert (tmp_path / "errors.csv").read_text().splitlines() == [
        "severity,sheet,row,column,value,message",
        'warning,labs,1,x,,"unknown column, ignored"',
        "error,labs,2,value,<5,is not a number (qualifiers such as < or > cannot be stored: enter the number alone)",
    ]


def test_integer_beyond_the_column_range_is_refused(registry):
    header = ["study_id", "onset_date", "term", "ctcae_grade", "serious", "led_to_discontinuation"]
    result = import_sheets(
        registry,
        [raw("adverse_events", header, ["EX-001", "2018-06-01", "pjp", 9.2e18, "no", "no"])],
        actor="c",
        reason="r",
    )
    assert [str(p) for p in result.errors] == [
        'adverse_events row 2, column ctcae_grade: "9200000000000000000" is too large a number to store'
    ]


def test_sheet_names_are_matched_without_regard_to_case_or_spaces(registry):
    result = import_sheets(
        registry, [raw(" Labs ", LABS, ["EX-001", "crp", "2018-05-04", "5", "mg/L"])], actor="c", reason="r"
    )
    assert result.problems == [] and result.counts["labs"].inserted == 1


def test_two_sheets_with_the_same_meaning_are_refused(registry):
    first = raw("labs", LABS, ["EX-001", "crp", "2018-05-04", "5", "mg/L"])
    second = raw("LABS", LABS, ["EX-001", "crp", "2018-05-05", "6", "mg/L"])
    result = import_sheets(registry, [first, second], actor="c", reason="r")
    assert [str(p) for p in result.errors] == ["LABS: is a second labs sheet; merge the two"]
    assert not result.written


def test_an_import_and_a_form_saving_the_same_patient_queue_instead_of_deadlocking(postgres_server, tmp_path):
    # A form saving a lab holds the lab (FOR UPDATE) and then asks for its patient (FOR SHARE); an import changing
    # that patient and that lab used to update the patient first and then wait for the lab: a deadlock, which
    # PostgreSQL broke by failing one of them (a 500 in the web application, or a crashed import).
    with db.new_postgres_database(postgres_server, "test") as url:
        engine, web = db.make_engine(url), db.make_engine(url)
        db.upgrade(engine)
        add_demo_site(engine)
        assert import_path(engine, EXAMPLE, actor="coordinator").written
        with engine.connect() as connection:
            lab = connection.execute(sa.select(LabResult).join(Patient).where(
                Patient.study_id == "EX-002", LabResult.analyte == "ferritin")).one()  # fmt: skip
        workbook = tmp_path / "workbook"
        workbook.mkdir()
        patients = [line for line in (EXAMPLE / "patients.csv").read_text().splitlines()
                    if line.startswith(("study_id,", "EX-002,"))]  # fmt: skip
        (workbook / "patients.csv").write_text(f"{patients[0]}\n{patients[1].replace(',former,', ',current,')}\n")
        (workbook / "labs.csv").write_text(f"{','.join(LABS)}\nEX-002,ferritin,2019-02-12,641,ng/mL\n")
        imported = {}

        def import_while_the_form_holds_the_lab(_conn, _cursor, statement, *_args) -> None:
            if "FROM patient" not in statement or "FOR SHARE" not in statement or imported:
                return  # not the form's request for its patient
            thread = threading.Thread(target=lambda: imported.update(result=import_path(engine, workbook, actor="imp")))
            thread.start()
            imported["thread"] = thread
            for _ in range(300):  # until the import waits for a lock (the form's lab): a new snapshot each time
                with engine.connect() as watcher:
                    waiting = watcher.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE "
                                                      "datname = current_database() AND wait_event_type = 'Lock'"))  # fmt: skip
                    if waiting.scalar_one():
                        break
                time.sleep(0.1)
            else:
                pytest.fail("the import never waited for a lock")

        sa.event.listen(web, "before_cursor_execute", import_while_the_form_holds_the_lab)
        form = form_values(lab, SHEETS_BY_NAME["labs"]) | {"value": "650"}
        saved = save_record(web, "labs", form, actor="cora", reason="transcription error", patient_id=lab.patient_id,
                            key=lab.id, version=lab.version)  # fmt: skip
        imported["thread"].join(60)
        assert saved.changed == ["value"]
        assert imported["result"].written and imported["result"].problems == []
        with engine.connect() as connection:
            values = connection.execute(sa.select(AuditLog.actor, AuditLog.old_values, AuditLog.new_values).where(
                AuditLog.table_name == "lab_result", AuditLog.record_key == str(lab.id)).order_by(AuditLog.id)).all()  # fmt: skip
            assert [tuple(v) for v in values[1:]] == [("cora", {"value": 640.0}, {"value": 650.0}),
                                                       ("imp", {"value": 650.0}, {"value": 641.0})]  # fmt: skip
            assert (
                connection.execute(sa.select(Patient.smoking).where(Patient.study_id == "EX-002")).scalar_one()
                == "current"
            )
        web.dispose()
        engine.dispose()  # the sessions end, so PostgreSQL's statistics hold theirs
        check = db.make_engine(url)
        with check.connect() as connection:
            deadlocks = connection.execute(
                sa.text("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
            ).scalar_one()
        check.dispose()
        assert deadlocks == 0


@pytest.mark.parametrize("new_record", [True, False], ids=["new record", "changed record"])
def test_a_patient_locked_while_the_import_is_checked_is_not_written_to(registry, monkeypatch, new_record):
    # The lock is committed after the validation (which saw the patient open) and before the write.
    with registry.connect() as connection:
        patient_id = connection.execute(sa.select(Patient.id).where(Patient.study_id == "EX-002")).scalar_one()
    validated_write = ingest._write

    def lock_then_write(*args, **kwargs):
        set_locked(registry, patient_id, locked=True, actor="dm", reason="source data verification")
        before.update(snapshot(registry))
        return validated_write(*args, **kwargs)

    before = {}
    monkeypatch.setattr(ingest, "_write", lock_then_write)
    value = "2018-05-04" if new_record else "2019-02-12"  # a new day, or the stored ferritin's day with a new value
    result = import_sheets(
        registry,
        [
            raw(
                "labs",
                LABS,
                ["EX-001", "crp", "2018-05-04", "5", "mg/L"],
                ["EX-002", "ferritin", value, "777", "ng/mL"],
            )
        ],
        actor="c",
        reason="r",
    )
    assert [str(p) for p in result.errors] == [
        'database, column study_id: "EX-002" was locked by a data manager or deleted while the import was being '
        "checked: nothing was written"
    ]
    assert not result.written
    assert snapshot(registry) == before  # EX-001's row is not written either


def test_csv_files_named_in_capitals_are_imported_like_any_other(migrated, tmp_path):
    """LABS.CSV was skipped without a word (the folder was read with a case-sensitive *.csv; issue 17, point 1)."""
    add_demo_site(migrated)
    folder = tmp_path / "sheets"
    folder.mkdir()
    for file in EXAMPLE.glob("*.csv"):
        (folder / (file.stem.upper() + ".CSV" if file.stem == "labs" else file.name)).write_bytes(file.read_bytes())
    result = import_path(migrated, folder, actor="test")
    assert result.written and result.counts["labs"].inserted == 20
    assert not result.warnings


def _example_workbook(path: Path, hidden: str | None = None, cells: dict[tuple[str, str], object] | None = None):
    """The example cases as one workbook: sheet ``hidden`` hidden, ``cells`` ((sheet, cell) -> value) changed."""
    book = Workbook()
    book.remove(book.active)
    for file in sorted(EXAMPLE.glob("*.csv")):
        sheet = book.create_sheet(file.stem)
        with file.open(encoding="utf-8", newline="") as handle:
            for row in csv.reader(handle):
                sheet.append(row)
        if file.stem == hidden:
            sheet.sheet_state = "hidden"
    for (name, cell), value in (cells or {}).items():
        book[name][cell] = value
    book.save(path)
    return path


def test_a_hidden_sheet_is_imported_and_the_import_says_so(migrated, tmp_path):
    """A sheet its author hid was imported without a word (issue 17, point 1): it still is, with a warning."""
    add_demo_site(migrated)
    result = import_path(migrated, _example_workbook(tmp_path / "cases.xlsx", hidden="hrct"), actor="test")
    assert [str(problem) for problem in result.warnings] == [
        "hrct: is hidden in the workbook: imported all the same (unhide it to see what is imported)"
    ]
    assert result.written and result.counts["hrct"].inserted == 4


def test_formulas_without_a_value_and_error_cells_are_refused_by_cell(registry, tmp_path):
    """A formula saved uncalculated was imported as blank, and "#REF!" in a text column as that text (issue 17,
    point 1): each is refused, named by row, column and cell, and nothing is written."""
    before = snapshot(registry)
    changed = {("labs", "D2"): "=2000+150", ("adverse_events", "D3"): "#REF!", ("labs", "E3"): "=C3"}
    result = import_path(registry, _example_workbook(tmp_path / "cases.xlsx", cells=changed), actor="test")
    assert [str(problem) for problem in result.errors] == [
        'labs row 2, column value: "=2000+150" is a formula with no stored value (cell D2): the workbook was saved '
        "without calculating it; open it in Excel or LibreOffice, let it calculate, save, and import again",
        'labs row 3, column unit: "=C3" is a formula with no stored value (cell E3): the workbook was saved without '
        "calculating it; open it in Excel or LibreOffice, let it calculate, save, and import again",
        'adverse_events row 3, column term_detail: "#REF!" is a spreadsheet error, not a value (cell D3): correct '
        "the cell, or empty it",
    ]
    assert not result.written and snapshot(registry) == before


def test_a_text_cell_too_long_is_refused_and_its_message_shows_the_start_of_it(registry, tmp_path):
    """A cell of 200,000 characters (past the csv module's default limit, which gave a traceback) is read and
    refused by its column's rule; the message shows its first 80 characters and its length."""
    folder = tmp_path / "cases"
    folder.mkdir()
    long = "a" * 200_000
    (folder / "adverse_events.csv").write_text(
        "study_id,onset_date,term,term_detail,ctcae_grade,serious,led_to_discontinuation\n"
        f'EX-001,2018-06-02,other,"{long}",2,no,no\n', encoding="utf-8"
    )  # fmt: skip
    result = import_path(registry, folder, actor="test")
    assert [str(problem) for problem in result.errors] == [
        f'adverse_events.csv row 2, column term_detail: "{"a" * 80}... (200,000 characters)" is longer than 200 '
        "characters"
    ]
    assert result.errors[0].value == long  # the --errors table keeps it whole


def test_line_breaks_are_stored_as_lf_whatever_was_entered(registry):
    """An .xlsx cell (XML) keeps no CR: a CR LF imported from CSV came back from an .xlsx export as LF, an audited
    update on re-import. Line breaks are stored as LF, however they were typed."""
    header = ["study_id", "onset_date", "term", "term_detail", "ctcae_grade", "serious", "led_to_discontinuation"]
    sheet = raw("adverse_events", header, ["EX-002", "2019-06-10", "herpes_zoster", "thoracic\r\ndermatome\rT6", 2,
                                           "no", "no"])  # fmt: skip
    assert import_sheets(registry, [sheet], actor="test", reason="test").written
    with registry.connect() as connection:
        details = connection.execute(sa.select(AdverseEvent.term_detail)).scalars().all()
    assert "thoracic\ndermatome\nT6" in details
