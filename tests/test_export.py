"""Export and template: the import format, lossless and free of direct identifiers."""

import csv
import filecmp
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import add_demo_site
from openpyxl import load_workbook
from typer.testing import CliRunner

from registry import db, workbook
from registry.audit import audited_session
from registry.cli import app
from registry.export import export, template
from registry.ingest import import_path
from registry.models import AdverseEvent, LabResult, PatientIdentifier
from registry.sheets import SHEETS, sheet_dictionary
from registry.workbook import XLSX_MAX_ROWS, WorkbookError, require_xlsx_fits

EXAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "example"


def _registry_with_example(engine):
    add_demo_site(engine)
    assert import_path(engine, EXAMPLE, actor="coordinator").written
    return engine


@pytest.mark.parametrize("target", ["registry.xlsx", "csv"])
def test_export_import_export_gives_identical_files(migrated, tmp_path, target):
    _registry_with_example(migrated)
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    counts = export(migrated, first / target)
    assert counts == {"patients": 4, "antibody_tests": 8, "labs": 20, "pfts": 4, "hrct": 4, "treatments": 11,
                      "adverse_events": 4, "follow_up": 4}  # fmt: skip

    empty = db.make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    db.upgrade(empty)
    add_demo_site(empty)
    result = import_path(empty, first / target, actor="coordinator")
    assert result.problems == [] and result.written
    export(empty, second / target)

    if target.endswith(".xlsx"):
        assert (first / target).read_bytes() == (second / target).read_bytes()
    else:
        names = sorted(p.name for p in (first / target).iterdir())
        assert names == sorted([f"{s.name}.csv" for s in SHEETS] + ["dictionary.csv"])
        _, mismatch, errors = filecmp.cmpfiles(first / target, second / target, names, shallow=False)
        assert (mismatch, errors) == ([], [])


def test_csv_export_matches_the_hand_written_example(tmp_path):
    """The example is written the way the export writes, so the two agree cell for cell."""
    engine = db.make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    db.upgrade(engine)
    _registry_with_example(engine)
    export(engine, tmp_path / "out")
    for sheet in SHEETS:
        exported = (tmp_path / "out" / f"{sheet.name}.csv").read_text().splitlines()
        example = (EXAMPLE / f"{sheet.name}.csv").read_text().splitlines()
        assert sorted(exported[1:]) == sorted(
            line + "," * (len(exported[0].split(",")) - len(line.split(","))) for line in example[1:]
        )


def test_direct_identifiers_are_never_exported(migrated, tmp_path):
    _registry_with_example(migrated)
    with audited_session(migrated, actor="admin") as session:
        session.add(PatientIdentifier(patient_id=1, hospital_number="H-7781234", full_name="Imaginary Person"))
        session.commit()
    export(migrated, tmp_path / "out.xlsx")
    export(migrated, tmp_path / "out")
    book = load_workbook(tmp_path / "out.xlsx")
    cells = [str(c) for ws in book.worksheets for row in ws.iter_rows(values_only=True) for c in row]
    texts = [p.read_text() for p in (tmp_path / "out").iterdir()]
    for secret in ("H-7781234", "Imaginary", "hospital_number", "full_name"):
        assert not any(secret in c for c in cells)
        assert not any(secret in t for t in texts)


def test_template_has_every_sheet_header_dropdown_and_the_dictionary(tmp_path):
    template(tmp_path / "t.xlsx")
    book = load_workbook(tmp_path / "t.xlsx")
    assert book.sheetnames == [s.name for s in SHEETS] + ["dictionary", "lists"]
    assert book["lists"].sheet_state == "hidden"
    for sheet in SHEETS:
        ws = book[sheet.name]
        assert [c.value for c in ws[1]] == [c.name for c in sheet.columns]
        assert ws.max_row == 1  # empty
    labs = book["labs"]
    ranges = {str(v.sqref): v.formula1 for v in labs.data_validations.dataValidation}
    assert set(ranges) == {"B2:B10000"}  # analyte is the only code column of labs
    lists = book["lists"]
    column = ranges["B2:B10000"].split("!")[1].split("$")[1]
    assert [c.value for c in lists[column] if c.value] == [
        "ferritin", "ldh", "crp", "esr", "kl6", "lymphocytes", "ck", "alt", "ast", "albumin", "creatinine",
        "pao2", "fio2", "tacrolimus_trough",
    ]  # fmt: skip
    dictionary = list(book["dictionary"].iter_rows(values_only=True))
    assert dictionary[0] == (
        "table",
        "column",
        "label",
        "type",
        "unit",
        "allowed_values",
        "required",
        "missing_codes",
        "plausible_range",
        "description",
    )
    assert len(dictionary) - 1 == len(sheet_dictionary())
    labs_value = next(r for r in dictionary if r[:2] == ("labs", "value"))
    assert labs_value[:7] == ("labs", "value", "Result", "number", "canonical unit of the analyte", None, "yes")


def test_template_imports_as_nothing(migrated, tmp_path):
    template(tmp_path / "t.xlsx")
    result = import_path(migrated, tmp_path / "t.xlsx", actor="c")
    assert result.errors == [] and not result.written
    assert all((c.inserted, c.updated, c.unchanged) == (0, 0, 0) for c in result.counts.values())


def test_a_workbook_is_refused_exactly_at_excels_row_limit(tmp_path):
    fits = {"patients": 100_000, "labs": XLSX_MAX_ROWS - 1}  # 1,048,575 rows below the header: the last that fit
    require_xlsx_fits(tmp_path / "r.xlsx", fits)
    with pytest.raises(WorkbookError) as refused:
        require_xlsx_fits(tmp_path / "r.xlsx", {**fits, "labs": XLSX_MAX_ROWS, "treatments": 2_000_000})
    assert str(refused.value) == (
        f"{tmp_path / 'r.xlsx'}: sheet labs would have 1,048,576 rows; sheet treatments would have "
        "2,000,000 rows, and an .xlsx sheet holds at most 1,048,575 below its header; write a folder of CSV files "
        "instead (a path without .xlsx)"
    )


@pytest.mark.parametrize("pseudonymised", [False, True], ids=["full", "pseudonymised"])
def test_export_of_a_registry_too_large_for_a_workbook_writes_nothing(migrated, tmp_path, monkeypatch, pseudonymised):
    _registry_with_example(migrated)
    monkeypatch.setattr(workbook, "XLSX_MAX_ROWS", 20)  # the example's 20 lab results (and a header) pass it
    key, folder = tmp_path / "export.key", tmp_path / "exports"
    key.write_bytes(b"k" * 32)
    folder.mkdir()
    options = ["--pseudonymise", "--key-file", str(key)] if pseudonymised else []
    out = folder / "registry.xlsx"
    result = CliRunner().invoke(app, ["--database", migrated.url.render_as_string(hide_password=False), "export",
                                      str(out), *options])  # fmt: skip
    assert result.exit_code == 2
    assert result.output.startswith(f"Nothing written: {out}: sheet labs would have 20 rows; ")
    assert result.output.endswith(", and an .xlsx sheet holds at most 19 below its header; write a folder of CSV "
                                  "files instead (a path without .xlsx)\n")  # fmt: skip
    assert list(folder.iterdir()) == []


def test_synth_refuses_a_workbook_too_large_before_writing_anything(tmp_path, monkeypatch):
    monkeypatch.setattr(workbook, "XLSX_MAX_ROWS", 100)
    out = tmp_path / "synthetic.xlsx"
    result = CliRunner().invoke(app, ["synth", "--patients", "40", "--out", str(out)])
    assert result.exit_code == 2
    assert re.match(rf"Nothing written: {re.escape(str(out))}: sheet labs would have \d+ rows", result.output)
    assert list(tmp_path.iterdir()) == []


def test_an_exported_workbook_has_bold_noted_frozen_headers_and_iso_dates(migrated, tmp_path):
    _registry_with_example(migrated)
    export(migrated, tmp_path / "out.xlsx")
    patients = load_workbook(tmp_path / "out.xlsx")["patients"]
    header = {cell.value: cell for cell in patients[1]}
    assert all(cell.font.b for cell in header.values()) and patients.freeze_panes == "A2"
    assert header["sex"].comment.text == "Sex: Sex recorded at birth. Required."
    assert header["smoking"].comment.text == (
        "Smoking: Smoking history. Or a missing-data code: [unknown], [not_done], [not_applicable], [not_asked]."
    )
    assert header["sex"].comment.author == "mda5-registry"
    birth = patients.cell(row=2, column=list(header).index("birth_date") + 1)
    assert (birth.value.date().isoformat(), birth.number_format) == ("1968-03-14", "yyyy-mm-dd")
    assert patients.column_dimensions["D"].width == len("birth_date") + 2


def test_text_that_starts_with_an_equals_sign_is_exported_to_xlsx_as_text_and_comes_back(migrated, tmp_path):
    """An AE detail '=HYPERLINK(...)' was written as a live formula with no value; imported back, the field was
    blanked by an audited update (issue 17, point 1)."""
    _registry_with_example(migrated)
    detail = '=HYPERLINK("http://example.org","see note")'
    with audited_session(migrated, actor="test") as session:
        event = session.exec(sa.select(AdverseEvent).order_by(AdverseEvent.id)).scalars().first()
        event.term_detail = detail
        session.commit()
    export(migrated, tmp_path / "out.xlsx")
    cell = next(c for row in load_workbook(tmp_path / "out.xlsx")["adverse_events"].iter_rows() for c in row
                if c.value == detail)  # fmt: skip
    assert cell.data_type == "s"  # a string, not a formula
    result = import_path(migrated, tmp_path / "out.xlsx", actor="test")
    assert result.problems == [] and not result.changed  # nothing blanked, nothing updated


#: Text a spreadsheet would run as a formula, or holding a carriage return, as stored (made-up AE details).
RUNNABLE = ["=1+1", "'@SUM(A1:A9)", "-see note\nand more", "+a\nb"]


def test_csv_export_neutralises_formulas_and_the_import_takes_the_quote_off_again(migrated, tmp_path):
    """A CSV export wrote cells a spreadsheet runs as formulas as they were (issue 17, point 1). Now the round trip
    is exact, and the export the same again."""
    _registry_with_example(migrated)
    with audited_session(migrated, actor="test") as session:
        events = session.exec(sa.select(AdverseEvent).order_by(AdverseEvent.id)).scalars().all()
        for event, detail in zip(events, RUNNABLE, strict=True):
            event.term_detail = detail
        session.commit()
    export(migrated, tmp_path / "first")
    with (tmp_path / "first" / "adverse_events.csv").open(encoding="utf-8", newline="") as handle:
        written = [row[3] for row in csv.reader(handle)][1:]
    assert written == ["'=1+1", "''@SUM(A1:A9)", "'-see note\nand more", "'+a\nb"]
    fresh = db.make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    db.upgrade(fresh)
    add_demo_site(fresh)
    assert import_path(fresh, tmp_path / "first", actor="test").written
    with fresh.connect() as connection:
        details = connection.execute(sa.select(AdverseEvent.term_detail).order_by(AdverseEvent.id)).scalars().all()
    assert details == RUNNABLE
    result = import_path(migrated, tmp_path / "first", actor="test")  # back into the registry it came from
    assert result.problems == [] and not result.changed
    export(fresh, tmp_path / "second")
    names = sorted(p.name for p in (tmp_path / "first").iterdir())
    assert filecmp.cmpfiles(tmp_path / "first", tmp_path / "second", names, shallow=False)[1:] == ([], [])


def test_the_pseudonymised_csv_export_neutralises_formulas_too(migrated, tmp_path):
    _registry_with_example(migrated)
    with audited_session(migrated, actor="test") as session:
        lab = session.exec(sa.select(LabResult).order_by(LabResult.id)).scalars().first()
        lab.unit = "=HYPERLINK(1)"  # the unit is the one free text the pseudonymised export keeps
        session.commit()
    (tmp_path / "key").write_bytes(b"k" * 32)
    result = CliRunner().invoke(app, ["--database", str(migrated.url.render_as_string(hide_password=False)), "export",
                                      str(tmp_path / "shared"), "--pseudonymise", "--key-file", str(tmp_path / "key")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert ",'=HYPERLINK(1)\n" in (tmp_path / "shared" / "labs.csv").read_text(encoding="utf-8")
    (labs,) = (sheet for sheet in workbook.read(tmp_path / "shared") if sheet.name == "labs")
    assert "=HYPERLINK(1)" in [cells[-1] for _, cells in labs.rows]
