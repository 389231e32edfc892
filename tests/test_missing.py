"""Missing-data codes: stored apart from a value and a blank, through import, export, forms, checks and Table 1.

Each test runs on SQLite and PostgreSQL (the ``migrated`` fixture); the database is read back, never mocked.
"""

import json
import shutil
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from test_web import sign_in
from test_web_entry import field_error, post, version_of

from registry import db
from registry.analysis.baseline import baseline_table
from registry.audit import audit_history
from registry.codes import MissingCode
from registry.cohort import build_cohort
from registry.config import Config
from registry.export import export
from registry.ingest import import_path
from registry.missing import Missing, decode, encode
from registry.models import FollowUp, Hrct, Patient, Pft
from registry.quality import run_checks
from registry.tables import load_tables
from registry.web.app import create_app

EXAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "example"
TODAY = date(2026, 11, 25)


def _sheets(tmp_path: Path, edits: dict[str, list[tuple[str, str]]]) -> Path:
    """The example's sheets with each (old, new) text replaced once in the named sheet."""
    folder = tmp_path / "sheets"
    shutil.copytree(EXAMPLE, folder)
    for sheet, replacements in edits.items():
        path = folder / f"{sheet}.csv"
        text = path.read_text()
        for old, new in replacements:
            assert old in text, old
            text = text.replace(old, new, 1)
        path.write_text(text)
    return folder


#: EX-002: smoking unknown, resp-symptom onset not asked, HRCT total score not done, DLCO not done.
CODED = {
    "patients": [("EX-002,DEMO,male,1975-11-30,former,", "EX-002,DEMO,male,1975-11-30,[unknown],"),
                 ("2019-02-15,2019-01-28,,no", "2019-02-15,[not_asked],,no")],
    "hrct": [("0,0,5,0,0,5,62", "0,0,5,0,0,5,[not_done]")],
}  # fmt: skip


def _row(engine, model, **where):
    with sa.orm.Session(engine) as session:
        query = sa.select(model).filter_by(**where)
        return session.execute(query).scalars().first()


def _patient(engine, study_id: str) -> Patient:
    return _row(engine, Patient, study_id=study_id)


def test_a_coded_cell_is_stored_apart_from_the_value_and_from_a_blank(migrated, tmp_path):
    from conftest import add_demo_site

    add_demo_site(migrated)
    result = import_path(migrated, _sheets(tmp_path, CODED), actor="test")
    assert result.problems == [] and result.written
    patient = _patient(migrated, "EX-002")
    assert (patient.smoking, patient.resp_symptom_onset_date, patient.ild_worsening_date) == (None, None, None)
    assert decode(patient.missing_codes) == {"resp_symptom_onset_date": "not_asked", "smoking": "unknown"}
    assert patient.missing_codes == '{"resp_symptom_onset_date":"not_asked","smoking":"unknown"}'
    hrct = _row(migrated, Hrct, patient_id=patient.id)
    assert (hrct.total_score, decode(hrct.missing_codes)) == (None, {"total_score": MissingCode.NOT_DONE})
    assert _patient(migrated, "EX-001").missing_codes is None  # no code: nothing stored
    entry = next(e for e in audit_history(migrated, "EX-002") if e.table_name == "patient")
    assert entry.new_values["missing_codes"] == patient.missing_codes and entry.new_values["smoking"] is None


def test_export_writes_the_codes_back_and_a_round_trip_gives_the_same_files(migrated, tmp_path):
    from conftest import add_demo_site

    add_demo_site(migrated)
    assert import_path(migrated, _sheets(tmp_path, CODED), actor="test").written
    first = tmp_path / "first"
    export(migrated, first)
    patients = (first / "patients.csv").read_text()
    assert "EX-002,DEMO,male,1975-11-30,[unknown],2019-02-11,2019-02-15,[not_asked],,no," in patients
    assert (first / "hrct.csv").read_text().splitlines()[2].endswith(",0,0,5,0,0,5,[not_done]")
    again = import_path(migrated, first, actor="test")  # the same data: nothing to change
    assert again.problems == [] and not again.changed
    fresh = sa.create_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    db.upgrade(fresh)
    add_demo_site(fresh)
    assert import_path(fresh, first, actor="test").written
    second = tmp_path / "second"
    export(fresh, second)
    assert {p.name: p.read_bytes() for p in first.iterdir()} == {p.name: p.read_bytes() for p in second.iterdir()}
    workbook = tmp_path / "registry.xlsx"
    export(migrated, workbook)
    from openpyxl import load_workbook

    book = load_workbook(workbook)
    row = next(r for r in book["patients"].iter_rows(values_only=True) if r[0] == "EX-002")
    assert row[4] == "[unknown]" and row[7] == "[not_asked]"
    smoking = next(v for v in book["patients"].data_validations.dataValidation if str(v.sqref).startswith("E2:"))
    column = smoking.formula1.split("!")[1].split("$")[1]
    assert [c.value for c in book["lists"][column] if c.value] == [
        "never", "former", "current", "[unknown]", "[not_done]", "[not_applicable]", "[not_asked]",
    ]  # fmt: skip


def test_changing_a_code_to_a_value_and_back_is_an_audited_change(migrated, tmp_path):
    from conftest import add_demo_site

    add_demo_site(migrated)
    assert import_path(migrated, _sheets(tmp_path, CODED), actor="test").written
    valued = _sheets(tmp_path / "valued", {"patients": [("1975-11-30,former,", "1975-11-30,current,")]})
    result = import_path(migrated, valued, actor="dm", reason="smoking found in the notes")
    assert result.problems == [] and result.changed
    patient = _patient(migrated, "EX-002")
    assert (patient.smoking.value, patient.missing_codes) == ("current", None)
    last = [e for e in audit_history(migrated, "EX-002") if e.table_name == "patient"][-1]
    assert (last.actor, last.reason) == ("dm", "smoking found in the notes")
    assert last.old_values["missing_codes"] == '{"resp_symptom_onset_date":"not_asked","smoking":"unknown"}'
    assert (last.old_values["smoking"], last.new_values["smoking"], last.new_values["missing_codes"]) == (
        None,
        "current",
        None,
    )


@pytest.mark.parametrize(
    ("sheet", "old", "new", "column", "message"),
    [
        ("patients", "1975-11-30,former,", "1975-11-30,[unkown],", "smoking",
         "is not a missing-data code: write one of [unknown], [not_done], [not_applicable], [not_asked]"),
        ("patients", "EX-002,DEMO,male,1975-11-30,", "EX-002,DEMO,[unknown],1975-11-30,", "sex",
         "is required: a missing-data code ([unknown]) cannot stand in for it"),
        ("patients", "no,worsening_1_month,yes,no,yes", "no,[not_asked],yes,no,yes", "rpild_definition",
         "takes no missing-data code ([not_asked]): give a value or leave it empty"),
        ("follow_up", "EX-001,2018-06-20,dead,2018-06-20,", "EX-001,2018-06-20,dead,[unknown],", "death_date",
         "takes no missing-data code ([unknown]): give a value or leave it empty"),
    ],
)  # fmt: skip
def test_a_code_where_none_may_stand_is_refused_by_cell_and_nothing_is_written(
    migrated, tmp_path, sheet, old, new, column, message
):
    from conftest import add_demo_site

    add_demo_site(migrated)
    result = import_path(migrated, _sheets(tmp_path, {sheet: [(old, new)]}), actor="test")
    assert not result.written
    errors = [p for p in result.errors if p.source == f"{sheet}.csv"]  # the refused row's records follow it
    assert [(p.column, p.message) for p in errors] == [(column, message)]
    cell = next(part for part in new.split(",") if part.startswith("["))
    assert str(errors[0]).endswith(f'column {column}: "{cell}" {message}')
    with migrated.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(Patient)).scalar_one() == 0


def test_a_coded_field_is_answered_for_the_completeness_rules_and_a_blank_is_not(migrated, tmp_path):
    from conftest import add_demo_site

    add_demo_site(migrated)
    blank = {"patients": [("1975-11-30,former,", "1975-11-30,,"), ("2019-02-15,2019-01-28,,no", "2019-02-15,,,no")],
             "follow_up": [("dead,2018-06-20,respiratory_failure_ild,", "dead,2018-06-20,,")]}  # fmt: skip
    assert import_path(migrated, _sheets(tmp_path, blank), actor="test").written

    def completeness() -> set[tuple[str, str]]:
        findings = run_checks(load_tables(migrated), Config(), TODAY).findings
        wanted = findings[findings["rule"].isin(["PAT-015", "PAT-017", "FUP-011"])]
        return set(zip(wanted["rule"], wanted["study_id"], strict=True))

    assert completeness() == {("PAT-015", "EX-002"), ("PAT-017", "EX-002"), ("FUP-011", "EX-001")}
    coded = {**CODED, "follow_up": [("dead,2018-06-20,respiratory_failure_ild,", "dead,2018-06-20,[unknown],")]}
    folder = _sheets(tmp_path / "coded", coded)
    assert import_path(migrated, folder, actor="test", reason="answered at source").changed
    assert completeness() == set()
    assert _row(migrated, FollowUp, patient_id=_patient(migrated, "EX-001").id).death_cause is None


def test_table_1_counts_the_coded_apart_from_the_blank(migrated, tmp_path):
    from conftest import add_demo_site

    add_demo_site(migrated)
    edits = {"patients": [("1975-11-30,former,", "1975-11-30,[unknown],")],
             "hrct": [("0,0,5,0,0,5,62", "0,0,5,0,0,5,[not_done]")]}  # fmt: skip
    assert import_path(migrated, _sheets(tmp_path, edits), actor="test").written
    config = Config(enrolment_start=date(2015, 1, 1), enrolment_end=date(2025, 12, 31))
    cohort = build_cohort(load_tables(migrated), config)
    assert "EX-002" in cohort.table.index
    rows = {row.variable: row for row in baseline_table(cohort.table, coded=cohort.coded) if row.level is None}
    blank_pft = int(cohort.table["pft_dlco_pct_pred"].isna().sum())
    assert (rows["ever_smoker"].missing, rows["ever_smoker"].coded) == (1, 1)
    assert (rows["hrct_total_score"].missing, rows["hrct_total_score"].coded) == (
        int(cohort.table["hrct_total_score"].isna().sum()),
        1,
    )
    assert (rows["pft_dlco_pct_pred"].missing, rows["pft_dlco_pct_pred"].coded) == (blank_pft, 0)
    assert (rows["age"].coded, rows["ferritin"].coded) == (0, 0)


def test_the_stored_codes_have_one_spelling():
    codes = {"smoking": MissingCode.UNKNOWN, "fever": MissingCode.NOT_ASKED}
    assert encode(codes) == '{"fever":"not_asked","smoking":"unknown"}'
    assert decode(encode(codes)) == codes and encode({}) is None and decode(None) == {}
    assert str(Missing(MissingCode.NOT_APPLICABLE)) == "[not_applicable]"
    assert Missing(MissingCode.UNKNOWN) != "unknown" and Missing(MissingCode.UNKNOWN) == Missing(MissingCode.UNKNOWN)


# --- forms ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def client(web_registry):
    return TestClient(create_app(web_registry, secret_key="test-secret"))


def test_a_form_stores_the_code_chosen_beside_a_field_and_shows_it_again(client, web_registry):
    sign_in(client, "cora")
    path = "/patients/EX-002/edit"
    data = {"version": version_of(client, path), "reason": "asked the patient: does not know", "smoking": "",
            "missing.smoking": "unknown"}  # fmt: skip
    form = {**_form_of(client, path), **data}
    assert post(client, path, form).status_code == 303
    patient = _patient(web_registry, "EX-002")
    assert (patient.smoking, decode(patient.missing_codes)) == (None, {"smoking": "unknown"})
    page = client.get(path).text
    assert '<option value="unknown" selected>Unknown</option>' in page
    assert 'id="smoking" name="smoking"' in page
    entry = [e for e in audit_history(web_registry, "EX-002") if e.table_name == "patient"][-1]
    assert (entry.actor, entry.reason, entry.new_values["missing_codes"]) == (
        "cora",
        "asked the patient: does not know",
        '{"smoking":"unknown"}',
    )
    assert "[unknown]" in client.get("/patients/EX-002").text  # the patient page says which code


def test_a_form_with_a_value_and_a_code_for_one_field_is_refused(client, web_registry):
    sign_in(client, "cora")
    path = "/patients/EX-002/edit"
    before = _patient(web_registry, "EX-002")
    form = {**_form_of(client, path), "version": version_of(client, path), "reason": "r", "smoking": "current",
            "missing.smoking": "unknown"}  # fmt: skip
    page = post(client, path, form).text
    assert field_error(page, "smoking") == "has a value and a missing-data code: keep one of them"
    after = _patient(web_registry, "EX-002")
    assert (after.smoking, after.missing_codes, after.version) == (before.smoking, None, before.version)


def test_a_field_that_takes_no_code_has_no_code_drop_down(client):
    sign_in(client, "cora")
    page = client.get("/patients/EX-002/edit").text
    assert 'name="missing.smoking"' in page and 'name="missing.dm_diagnosis_date"' in page
    assert 'name="missing.sex"' not in page and 'name="missing.rpild_definition"' not in page
    pft = client.get("/patients/EX-002/pfts/new").text
    assert 'name="missing.dlco_pct_pred"' in pft and 'name="missing.not_done_reason"' not in pft


def _form_of(client: TestClient, path: str) -> dict[str, str]:
    """The values an edit form is opened with (its hidden ``original.`` fields), as a browser would submit them."""
    import re

    page = client.get(path).text
    originals = dict(re.findall(r'name="original\.([^"]+)" value="([^"]*)"', page))
    return {**{f"original.{k}": v for k, v in originals.items()}, **originals}


# --- migration -----------------------------------------------------------------------------------------------------


def test_the_downgrade_below_0008_is_refused_while_a_record_holds_a_code(migrated, tmp_path):
    from conftest import add_demo_site

    add_demo_site(migrated)
    assert import_path(migrated, _sheets(tmp_path, CODED), actor="test").written
    with pytest.raises(db.DowngradeRefused) as refused:
        db.downgrade(migrated, "0007")
    assert str(refused.value) == (
        "Downgrade refused: 2 records hold missing-data codes, which migrating below 0008 drops (the coded fields "
        "become blanks): back the database up first (`registry backup`), then pass --force (the downgrade is logged)"
    )
    assert db.current_revision(migrated) == db.head_revision()  # refused before the first step, 0009 included
    assert _patient(migrated, "EX-002").missing_codes is not None
    db.downgrade(migrated, "0007", force=True)
    assert "missing_codes" not in {c["name"] for c in sa.inspect(migrated).get_columns("patient")}
    db.upgrade(migrated)
    assert _patient(migrated, "EX-002").missing_codes is None


def test_pft_fields_coded_not_done_keep_the_test_and_its_other_results(migrated, tmp_path):
    from conftest import add_demo_site

    add_demo_site(migrated)
    folder = _sheets(tmp_path, {})
    lines = (folder / "pfts.csv").read_text().splitlines()
    header = lines[0].split(",")
    first = dict(zip(header, [*lines[2].split(","), ""], strict=False))  # EX-002: every result but TLC
    first["dlco_pct_pred"] = "[not_done]"
    lines[2] = ",".join(first[name] for name in header)
    (folder / "pfts.csv").write_text("\n".join(lines) + "\n")
    assert import_path(migrated, folder, actor="test").written
    pft = _row(migrated, Pft, patient_id=_patient(migrated, first["study_id"]).id)
    assert pft.dlco_pct_pred is None and json.loads(pft.missing_codes) == {"dlco_pct_pred": "not_done"}
    assert pft.fvc_pct_pred is not None


def test_the_pseudonymised_export_shifts_the_dates_and_keeps_a_coded_date_as_its_code(migrated, tmp_path):
    from conftest import add_demo_site

    from registry.pseudonymise import pseudonymised_export

    add_demo_site(migrated)
    assert import_path(migrated, _sheets(tmp_path, CODED), actor="test").written
    pseudonymised_export(migrated, tmp_path / "shared", b"k" * 32)
    rows = (tmp_path / "shared" / "patients.csv").read_text().splitlines()
    header = rows[0].split(",")
    onsets = [dict(zip(header, row.split(","), strict=True))["resp_symptom_onset_date"] for row in rows[1:]]
    assert onsets.count("[not_asked]") == 1 and "2019-01-28" not in onsets


def test_the_missing_smoking_worklist_lists_a_blank_and_not_a_code(client, web_registry):
    sign_in(client, "cora")
    path = "/patients/EX-002/edit"

    def listed() -> bool:
        return 'href="/patients/EX-002"' in client.get("/patients?missing=smoking").text

    assert not listed()
    blank = {**_form_of(client, path), "version": version_of(client, path), "reason": "not known", "smoking": ""}
    assert post(client, path, blank).status_code == 303 and listed()
    coded = {**_form_of(client, path), "version": version_of(client, path), "reason": "asked: unknown",
             "missing.smoking": "unknown"}  # fmt: skip
    assert post(client, path, coded).status_code == 303 and not listed()


def test_stored_codes_no_write_makes_read_as_none():
    assert decode("not json") == {} and decode("[1, 2]") == {} and decode('"x"') == {}
    assert decode('{"smoking": "unknown", "fever": "maybe", "rpild": 3}') == {"smoking": MissingCode.UNKNOWN}
