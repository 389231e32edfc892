"""REDCap both ways: the data dictionary REDCap would accept, records out, records in, round trip."""

import csv
import filecmp
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import add_demo_site
from test_ingest import snapshot
from typer.testing import CliRunner

from registry import db
from registry.cli import app
from registry.codes import MissingCode
from registry.export import export
from registry.ingest import import_path
from registry.interchange import redcap
from registry.missing import Missing
from registry.models import AuditLog, LabResult, Patient
from registry.privacy import Scanner, registered_identifiers
from registry.sheets import SHEETS, SHEETS_BY_NAME, stored_rows

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE, DEMO = ROOT / "fixtures" / "example", ROOT / "fixtures" / "demo"
#: REDCap's text validation types (the ones a data dictionary may name).
VALIDATIONS = {"", "date_ymd", "date_mdy", "date_dmy", "datetime_ymd", "email", "integer", "number", "phone", "time",
               "zipcode", "alpha_only"}  # fmt: skip
FIELD_TYPES = {"text", "notes", "dropdown", "radio", "checkbox", "yesno", "truefalse", "calc", "file", "descriptive",
               "slider", "sql"}  # fmt: skip


def _fresh(tmp_path: Path, name: str) -> sa.Engine:
    engine = db.make_engine(f"sqlite:///{tmp_path / name}")
    db.upgrade(engine)
    add_demo_site(engine)
    return engine


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _write_csv(path: Path, rows: list[dict[str, str]], header: list[str] | None = None) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, header or list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def example(migrated):
    add_demo_site(migrated)
    assert import_path(migrated, EXAMPLE, actor="coordinator").written
    return migrated


# The data dictionary ---------------------------------------------------------------------------------------------


def test_dictionary_follows_redcaps_rules(tmp_path):
    """What REDCap checks when a data dictionary is uploaded, checked here the same way."""
    path = tmp_path / "dictionary.csv"
    assert redcap.write_dictionary(path) == len(redcap.FIELDS) == 72
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == redcap.DICTIONARY_HEADER
    fields = [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
    names = [f["Variable / Field Name"] for f in fields]
    assert names[0] == "study_id" and fields[0]["Form Name"] == "patients"  # the record id: first field, first form
    assert len(set(names)) == len(names)  # unique across the project
    for f in fields:
        name = f["Variable / Field Name"]
        assert re.fullmatch(r"[a-z][a-z0-9_]*", name) and len(name) <= 100, name
        assert "___" not in name and not name.endswith("_complete"), name  # REDCap's checkbox and status columns
        assert re.fullmatch(r"[a-z][a-z0-9_]*", f["Form Name"]), f["Form Name"]
        assert f["Field Type"] in FIELD_TYPES and f["Text Validation Type OR Show Slider Number"] in VALIDATIONS
        assert f["Field Label"], name
        assert f["Required Field?"] in ("", "y") and f["Identifier?"] in ("", "y")
        if f["Field Type"] == "dropdown":
            choices = [choice.split(", ", 1) for choice in f["Choices, Calculations, OR Slider Labels"].split(" | ")]
            codes = [code for code, _ in choices]
            assert all(re.fullmatch(r"[a-z0-9_]+", code) for code in codes) and len(set(codes)) == len(codes), name
            assert all(label and "|" not in label for _, label in choices), name
        else:
            assert f["Choices, Calculations, OR Slider Labels"] == "", name
        for bound in ("Text Validation Min", "Text Validation Max"):
            if f[bound]:
                float(f[bound])
    by_name = {f["Variable / Field Name"]: f for f in fields}
    assert by_name["birth_date"]["Identifier?"] == "y"
    assert by_name["lab_value"]["Required Field?"] == "y" and by_name["lab_value"]["Form Name"] == "labs"
    assert by_name["ab_unit"]["Choices, Calculations, OR Slider Labels"] == (
        "index, ELISA index (arbitrary units) | u_ml, Units per millilitre | titre, Reciprocal dilution (e.g. 1:320 "
        "entered as 320)"
    )
    assert by_name["rpild"]["Field Type"] == "yesno" and by_name["rpild"]["Field Annotation"] == ""
    assert by_name["sex"]["Field Annotation"] == "@NOMISSING"  # required: no missing-data code may stand for it
    assert by_name["ae_ctcae_grade"]["Text Validation Type OR Show Slider Number"] == "integer"
    assert (by_name["pft_fvc_pct_pred"]["Text Validation Min"], by_name["pft_fvc_pct_pred"]["Text Validation Max"]) \
        == ("10", "150")  # fmt: skip


def test_every_code_list_survives_as_redcap_choices():
    """A code added to a list cannot collide with another once written as a REDCap raw value."""
    for f in redcap.FIELDS:
        kind = f.column.source.type
        if isinstance(kind, sa.Enum):
            assert list(f.codes) == list(kind.enums)
            assert len(set(f.codes.values())) == len(f.codes), f.name


def test_records_header_holds_every_field_once_and_a_status_per_instrument():
    header = redcap.records_header()
    assert header[:3] == ["study_id", "redcap_repeat_instrument", "redcap_repeat_instance"]
    assert sorted(set(header) - {"redcap_repeat_instrument", "redcap_repeat_instance"}) == sorted(
        [f.name for f in redcap.FIELDS] + [f"{sheet.name}_complete" for sheet in SHEETS]
    )


def test_dictionary_command_prints_the_project_settings(tmp_path):
    out = tmp_path / "dictionary.csv"
    result = CliRunner().invoke(app, ["redcap", "dictionary", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"REDCap data dictionary of 72 fields written to {out}",
        "Repeating instruments (Project Setup > Repeating instruments): antibody_tests, labs, pfts, hrct, treatments, "
        "adverse_events",
        "Missing Data Codes (Project Setup > Additional customizations):",
        "UNK, Unknown",
        "ND, Not done",
        "NA, Not applicable",
        "NASK, Not asked",
    ]
    assert out.read_text(encoding="utf-8").startswith("Variable / Field Name,Form Name,Section Header,Field Type,")


# Records out and in -----------------------------------------------------------------------------------------------


def test_round_trip_through_redcap_gives_the_same_registry(migrated, second_registry, tmp_path):
    """The demo registry -> a REDCap records export -> a fresh registry of the same database: the same export,
    byte for byte."""
    add_demo_site(migrated)
    assert import_path(migrated, DEMO, actor="coordinator").written
    records = tmp_path / "records.csv"
    assert redcap.export_records(migrated, records) == 61 + 122 + 732 + 61 + 61 + 243 + 45
    second = second_registry
    result = redcap.import_records(second, records, actor="coordinator")
    assert result.problems == [] and result.written
    assert {name: c.inserted for name, c in result.counts.items()} == {
        "patients": 61, "antibody_tests": 122, "labs": 732, "pfts": 61, "hrct": 61, "treatments": 243,
        "adverse_events": 45, "follow_up": 61,
    }  # fmt: skip
    export(migrated, tmp_path / "first")
    export(second, tmp_path / "again")
    names = sorted(p.name for p in (tmp_path / "first").iterdir())
    _, mismatch, errors = filecmp.cmpfiles(tmp_path / "first", tmp_path / "again", names, shallow=False)
    assert (mismatch, errors) == ([], [])
    redcap.export_records(second, tmp_path / "records-again.csv")
    assert (tmp_path / "records-again.csv").read_bytes() == records.read_bytes()
    with second.connect() as connection:
        query = sa.select(AuditLog.reason, AuditLog.actor).where(AuditLog.study_id.is_not(None)).distinct()
        reasons = set(connection.execute(query))
    assert reasons == {("import of records.csv (REDCap)", "coordinator")}


def test_records_rows_are_redcaps_layout(example, tmp_path):
    path = tmp_path / "records.csv"
    redcap.export_records(example, path)
    rows = _read_csv(path)
    first = [r for r in rows if r["study_id"] == "EX-001"]
    own = first[0]
    assert (own["redcap_repeat_instrument"], own["redcap_repeat_instance"]) == ("", "")
    assert own["sex"] and own["fu_vital_status"] and own["patients_complete"] == own["follow_up_complete"] == "2"
    assert own["lab_value"] == "" and own["labs_complete"] == ""  # a repeating instrument's fields stay empty here
    labs = [r for r in first if r["redcap_repeat_instrument"] == "labs"]
    assert [r["redcap_repeat_instance"] for r in labs] == [str(i) for i in range(1, len(labs) + 1)]
    assert all(r["sex"] == "" and r["labs_complete"] == "2" for r in labs)
    with example.connect() as connection:
        stored = sorted(stored_rows(connection, SHEETS_BY_NAME["labs"]).values(), key=lambda v: (v["analyte"],
                        v["sample_date"]))  # fmt: skip
    ex1 = [v for v in stored if v["study_id"] == "EX-001"]
    assert [(r["lab_analyte"], r["lab_sample_date"], float(r["lab_value"]), r["lab_unit"]) for r in labs] == [
        (v["analyte"], v["sample_date"].isoformat(), v["value"], v["unit"]) for v in ex1
    ]


def _as_labels(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """A raw records export as REDCap's "CSV (labels)" writes its values: choice labels, Yes/No, instrument labels."""
    labelled = []
    for row in rows:
        out = dict(row)
        if row["redcap_repeat_instrument"]:
            out["redcap_repeat_instrument"] = row["redcap_repeat_instrument"].replace("_", " ").title()
        for f in redcap.FIELDS:
            value = row.get(f.name, "")
            if value and f.codes:
                out[f.name] = f.labels[{raw: ours for ours, raw in f.codes.items()}[value]]
            elif value and f.is_yes_no:
                out[f.name] = {"1": "Yes", "0": "No"}[value]
        labelled.append(out)
    return labelled


def test_a_label_export_imports_as_the_raw_one(example, tmp_path):
    raw = tmp_path / "raw.csv"
    redcap.export_records(example, raw)
    rows = _read_csv(raw)
    labelled = _as_labels(rows)
    assert labelled != rows and any(r["redcap_repeat_instrument"] == "Antibody Tests" for r in labelled)
    path = _write_csv(tmp_path / "labels.csv", labelled)
    fresh = _fresh(tmp_path, "labels.db")
    result = redcap.import_records(fresh, path, actor="c")
    assert result.problems == [] and result.written
    redcap.export_records(fresh, tmp_path / "again.csv")
    assert (tmp_path / "again.csv").read_bytes() == raw.read_bytes()


MAPPING = """
[instruments]
laboratory = "labs"

[fields]
record_id = "study_id"
gender = "sex"
lab_result_value = "lab_value"

[choices.sex]
1 = "female"
2 = "male"

[missing_codes]
"-99" = "unknown"
"""


def test_a_mapping_names_an_existing_projects_instruments_fields_and_codes(example, tmp_path):
    raw = tmp_path / "raw.csv"
    redcap.export_records(example, raw)
    rows = _read_csv(raw)
    renamed = {"study_id": "record_id", "sex": "gender", "lab_value": "lab_result_value"}
    theirs = []
    for row in rows:
        out = {renamed.get(k, k): v for k, v in row.items()}
        out["gender"] = {"female": "1", "male": "2", "": ""}[out["gender"]]
        if out["redcap_repeat_instrument"] == "labs":
            out["redcap_repeat_instrument"] = "laboratory"
        theirs.append(out)
    theirs[0]["smoking"] = "-99"  # their missing-data code for "unknown"
    (tmp_path / "map.toml").write_text(MAPPING, encoding="utf-8")
    mapping = redcap.read_mapping(tmp_path / "map.toml")
    fresh = _fresh(tmp_path, "mapped.db")
    result = redcap.import_records(fresh, _write_csv(tmp_path / "theirs.csv", theirs), actor="c", mapping=mapping)
    assert result.problems == [] and result.written
    with fresh.connect() as connection:
        patients = stored_rows(connection, SHEETS_BY_NAME["patients"])
    first = patients[(theirs[0]["record_id"],)]
    assert first["smoking"] == Missing(MissingCode.UNKNOWN)
    with example.connect() as connection:
        expected = stored_rows(connection, SHEETS_BY_NAME["patients"])
    assert {k: v["sex"] for k, v in patients.items()} == {k: v["sex"] for k, v in expected.items()}
    with fresh.connect() as connection, example.connect() as source:
        assert sorted(connection.execute(sa.select(LabResult.value))) == sorted(
            source.execute(sa.select(LabResult.value))
        )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[patients]\n",
            "map.toml: patients: unknown table; a mapping has [instruments], [fields], [choices], [missing_codes]",
        ),
        (
            '[instruments]\nlab = "laboratory"\n',
            'map.toml: instruments.lab: "laboratory" is not one of our '
            "instruments: adverse_events, antibody_tests, follow_up, hrct, labs, patients, pfts, treatments",
        ),
        (
            '[fields]\nrecord = "record_id"\n',
            'map.toml: fields.record: "record_id" is not one of our fields (registry redcap dictionary lists them)',
        ),
        ('[choices.sex]\n1 = "f"\n', 'map.toml: choices.sex.1: "f" is not a code of sex: female, male'),
        ('[choices.lab_value]\n1 = "f"\n', "map.toml: choices.lab_value: is not one of our code-list fields"),
        (
            '[missing_codes]\n"-99" = "unk"\n',
            'map.toml: missing_codes.-99: "unk" is not a missing-data code: unknown, '
            "not_done, not_applicable, not_asked",
        ),
        ("fields = 3\n", "map.toml: fields: must be a table ([fields])"),
    ],
)
def test_a_bad_mapping_is_refused_by_key(tmp_path, text, message):
    path = tmp_path / "map.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(redcap.RedcapError) as refused:
        redcap.read_mapping(path)
    assert str(refused.value) == f"{tmp_path}/{message}"


def test_file_level_problems_stop_before_any_cell_is_read(example, tmp_path):
    raw = tmp_path / "raw.csv"
    redcap.export_records(example, raw)
    rows = _read_csv(raw)
    labs = [i for i, r in enumerate(rows) if r["redcap_repeat_instrument"] == "labs"]
    rows[labs[0]]["sex"] = "female"
    rows[labs[1]]["redcap_repeat_instrument"] = "vitals"
    rows[labs[2]]["lab_value"] = "12,5"  # a cell problem: told only once the file itself reads as records
    before = snapshot(example)
    result = redcap.import_records(example, _write_csv(tmp_path / "records.csv", rows), actor="c")
    assert [str(p) for p in result.problems] == [
        f'records.csv row {labs[0] + 2}, column sex: "female" belongs to the instrument patients, not to the '
        "repeating labs",
        f'records.csv row {labs[1] + 2}, column redcap_repeat_instrument: "vitals" is not one of our instruments '
        "(or --mapping)",
    ]
    assert not result.written and snapshot(example) == before


def test_cell_problems_name_the_file_row_and_redcap_field(example, tmp_path):
    raw = tmp_path / "raw.csv"
    redcap.export_records(example, raw)
    rows = _read_csv(raw)
    labs = [i for i, r in enumerate(rows) if r["redcap_repeat_instrument"] == "labs"]
    rows[labs[0]]["lab_value"] = "12,5"
    rows[0]["fu_vital_status"] = "deceased"
    rows[0]["smoking"] = "UNK"  # a missing-data code is a value, not a problem
    rows[0]["sex"] = "UNK"  # but not for a required field
    before = snapshot(example)
    result = redcap.import_records(example, _write_csv(tmp_path / "records.csv", rows), actor="c")
    assert [str(p) for p in result.problems] == [
        'records.csv row 2, column sex: "UNK" is a missing-data code (unknown), and this field takes none: give a '
        "value, or leave it empty",
        'records.csv row 2, column fu_vital_status: "deceased" is not an allowed value; allowed: alive, dead',
        f'records.csv row {labs[0] + 2}, column lab_value: "12,5" is not a number (use a point for decimals and no '
        "thousands separators)",
    ]
    assert not result.written and snapshot(example) == before


def test_header_problems(example, tmp_path):
    raw = tmp_path / "raw.csv"
    redcap.export_records(example, raw)
    rows = _read_csv(raw)
    for row in rows:
        row["redcap_event_name"] = "baseline_arm_1"
        row["weight_kg"] = ""
        del row["lab_unit"]
    result = redcap.import_records(example, _write_csv(tmp_path / "records.csv", rows), actor="c")
    assert [str(p) for p in result.problems] == [
        "records.csv row 1, column redcap_event_name: REDCap's own column, ignored (the registry has no events or "
        "groups)",
        "records.csv row 1, column weight_kg: unknown field, ignored (a --mapping file can name our field)",
        "records.csv row 1, column lab_unit: required field of the instrument labs is missing from the export",
    ]
    assert [p.severity for p in result.problems] == ["warning", "warning", "error"]
    without_id = [{k: v for k, v in row.items() if k != "study_id"} for row in rows]
    result = redcap.import_records(example, _write_csv(tmp_path / "no-id.csv", without_id), actor="c")
    assert "no-id.csv row 1, column study_id: the record id column is missing (the first column, or --mapping)" in [
        str(p) for p in result.errors
    ]


def test_missing_data_codes_travel_as_redcaps(example, tmp_path):
    raw = tmp_path / "raw.csv"
    redcap.export_records(example, raw)
    rows = _read_csv(raw)
    rows[0]["smoking"], rows[0]["rpild"] = "UNK", "NASK"
    path = _write_csv(tmp_path / "records.csv", rows)
    result = redcap.import_records(example, path, actor="c", reason="REDCap sync")
    assert result.problems == [] and result.counts["patients"].updated == 1
    with example.connect() as connection:
        stored = stored_rows(connection, SHEETS_BY_NAME["patients"])[(rows[0]["study_id"],)]
        audit = connection.execute(
            sa.select(AuditLog).where(AuditLog.table_name == "patient").order_by(AuditLog.id.desc())
        ).first()
        smoking = connection.execute(sa.select(Patient.smoking).where(Patient.study_id == rows[0]["study_id"]))
    assert (stored["smoking"], stored["rpild"]) == (Missing(MissingCode.UNKNOWN), Missing(MissingCode.NOT_ASKED))
    assert smoking.scalar_one() is None  # the field has no value; the code is kept beside it
    assert (audit.action, audit.reason) == ("update", "REDCap sync")
    redcap.export_records(example, tmp_path / "again.csv")
    again = _read_csv(tmp_path / "again.csv")
    assert (again[0]["smoking"], again[0]["rpild"]) == ("UNK", "NASK")


def test_import_command_from_redcap(example, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = example.url.render_as_string(hide_password=False)
    raw = tmp_path / "records.csv"
    redcap.export_records(example, raw)
    runner = CliRunner()
    dry = runner.invoke(app, ["--database", url, "import", "--from", "redcap", str(raw), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert dry.output.splitlines()[-1] == "Dry run: the REDCap records export is valid; nothing was written."
    (tmp_path / "map.toml").write_text("[fields]\nrecord_id = 'study_id'\n", encoding="utf-8")
    refused = runner.invoke(app, ["--database", url, "import", str(raw), "--mapping", "map.toml"])
    assert (refused.exit_code, refused.output.strip()) == (2, "Nothing imported: --mapping goes with --from redcap")
    bad = runner.invoke(app, ["--database", url, "import", "--from", "redcap", str(raw), "--mapping", "nothing.toml"])
    assert (bad.exit_code, bad.output.strip()) == (2, "nothing.toml: no such mapping file")


def test_export_command_writes_records_that_pass_the_privacy_scan(example, tmp_path):
    url = example.url.render_as_string(hide_password=False)
    out = tmp_path / "records.csv"
    result = CliRunner().invoke(app, ["--database", url, "export", "--format", "redcap", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"Exported {len(_read_csv(out))} REDCap records rows to {out}"
    with example.connect() as connection:
        scan = Scanner(registered_identifiers(connection)).scan([out])
    assert scan.findings == [] and scan.unreadable == []
    assert scan.allowed == {f"{out} records column birth_date": 4}  # the full export's birth dates, as the workbook's


def test_a_birth_date_elsewhere_in_a_records_export_is_found(example, tmp_path):
    """Only the patient's own birth_date column of a records export is the full export's: anywhere else it is a leak."""
    out = tmp_path / "records.csv"
    redcap.export_records(example, out)
    rows = _read_csv(out)
    birth = rows[0]["birth_date"]
    ae = next(i for i, r in enumerate(rows) if r["redcap_repeat_instrument"] == "adverse_events")
    rows[ae]["ae_term_detail"] = f"reported by the patient born {birth}"
    _write_csv(out, rows)
    with example.connect() as connection:
        scan = Scanner(registered_identifiers(connection)).scan([out])
    assert [(f.location, f.kind) for f in scan.findings] == [(f"row {ae + 2}, column ae_term_detail", "birth date")]


def test_fields_an_export_leaves_out_are_left_alone_never_emptied(example, tmp_path):
    """REDCap exports a chosen set of fields routinely: what the file does not hold stays as it is."""
    raw = tmp_path / "raw.csv"
    redcap.export_records(example, raw)
    own = [r for r in _read_csv(raw) if r["redcap_repeat_instrument"] == "" and r["study_id"] == "EX-001"]
    columns = ["study_id", "redcap_repeat_instrument", "redcap_repeat_instance", "site", "sex", "birth_date"]
    path = _write_csv(tmp_path / "some.csv", [{k: own[0][k] for k in columns}])
    before = snapshot(example)
    result = redcap.import_records(example, path, actor="c")
    assert result.problems == [] and result.counts == {"patients": result.counts["patients"]}
    assert (result.counts["patients"].updated, result.counts["patients"].unchanged) == (0, 1)
    assert snapshot(example) == before


def test_cells_the_reader_cannot_place_are_told(example, tmp_path):
    raw = tmp_path / "raw.csv"
    redcap.export_records(example, raw)
    rows = _read_csv(raw)
    for row in rows:
        row["value"] = row["lab_value"]  # two columns for one field, through the mapping
        row["weight_complete"] = "2"  # a status of no instrument of ours
    (tmp_path / "map.toml").write_text('[fields]\nvalue = "lab_value"\n', encoding="utf-8")
    mapping = redcap.read_mapping(tmp_path / "map.toml")
    result = redcap.import_records(example, _write_csv(tmp_path / "records.csv", rows), actor="c", mapping=mapping)
    assert [str(p) for p in result.problems] == [
        "records.csv row 1, column value: gives lab_value, as lab_value does: one column per field",
        "records.csv row 1, column weight_complete: unknown field, ignored (a --mapping file can name our field)",
    ]
    assert not result.written


def test_a_mapped_missing_code_in_a_field_that_takes_none_is_refused(example, tmp_path):
    raw = tmp_path / "raw.csv"
    redcap.export_records(example, raw)
    rows = _read_csv(raw)
    lab = next(i for i, r in enumerate(rows) if r["redcap_repeat_instrument"] == "labs")
    rows[lab]["lab_value"] = "-99"
    (tmp_path / "map.toml").write_text('[missing_codes]\n"-99" = "unknown"\n', encoding="utf-8")
    before = snapshot(example)
    result = redcap.import_records(example, _write_csv(tmp_path / "records.csv", rows), actor="c",
                                   mapping=redcap.read_mapping(tmp_path / "map.toml"))  # fmt: skip
    assert [str(p) for p in result.errors] == [
        f'records.csv row {lab + 2}, column lab_value: "-99" is a missing-data code (unknown), and this field takes '
        "none: give a value, or leave it empty"
    ]
    assert snapshot(example) == before


def test_a_labels_header_is_refused_saying_how_to_export(example, tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("Study ID,Repeat Instrument,Repeat Instance,Site\nEX-001,,,DEMO\n", encoding="utf-8")
    with pytest.raises(redcap.RedcapError) as refused:
        redcap.import_records(example, path, actor="c")
    assert str(refused.value) == (
        "labels.csv: the header holds REDCap's field labels (a 'CSV (labels)' export): export with the variable "
        "names as headers (the values may stay labels)"
    )


def test_values_in_columns_without_a_header_are_told(example, tmp_path):
    raw = tmp_path / "raw.csv"
    redcap.export_records(example, raw)
    text = raw.read_text(encoding="utf-8").splitlines()
    text[1] += ",stray"
    (tmp_path / "records.csv").write_text("\n".join(text) + "\n", encoding="utf-8")
    result = redcap.import_records(example, tmp_path / "records.csv", actor="c")
    assert [(str(p), p.severity) for p in result.problems] == [
        ("records.csv: values in columns without a header, ignored", "warning")
    ]
