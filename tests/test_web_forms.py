"""Forms a coordinator can read (issue 18, point 2): labels and help, lab units, fields that do not apply.

Driven with FastAPI's TestClient against a real database (both engines), the template
and the dictionary read from the files written; the database is read back after each step.
"""

import html
import re
from datetime import date

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from openpyxl import load_workbook
from test_web import sign_in

from registry.codes import ANALYTE_RANGES, LAB_UNIT_FACTORS, Analyte, to_canonical_unit
from registry.dictionary import data_dictionary, help_text
from registry.export import template
from registry.models import AuditLog, FollowUp, LabResult, Patient, Pft
from registry.sheets import SHEETS, sheet_dictionary
from registry.web.app import create_app


@pytest.fixture
def client(web_registry):
    client = TestClient(create_app(web_registry, secret_key="test-secret"))
    sign_in(client, "cora")
    return client


def labels_and_help(page: str) -> dict[str, tuple[str, str]]:
    """Each field of a form: the text of its label (without the required mark) and of its help."""
    labels = dict(re.findall(r'<label for="([^"]+)">([^<]*?)(?: \*)?</label>', page))
    helps = dict(re.findall(r'<span class="help" id="help-([^"]+)">([^<]*)</span>', page))
    return {name: (html.unescape(labels[name]), html.unescape(helps[name])) for name in helps if name in labels}


def test_every_field_has_one_label_and_help_in_the_dictionary_the_template_and_the_forms(client, tmp_path):
    entries = {(e.table, e.column): e for e in sheet_dictionary()}
    assert all(e.label and e.description for e in entries.values()), "every sheet column needs a label and help"
    assert entries["patients", "resp_symptom_onset_date"].label == "Date of first respiratory symptoms"
    registry = {(e.table, e.column): e.label for e in data_dictionary()}
    for sheet in SHEETS:  # the registry's dictionary gives each stored column the sheet's label
        for column in sheet.columns:
            if not column.is_reference:
                assert registry[sheet.table.name, column.target] == entries[sheet.name, column.name].label

    template(tmp_path / "t.xlsx")
    book = load_workbook(tmp_path / "t.xlsx")
    for sheet in SHEETS:
        notes = {cell.value: cell.comment.text for cell in book[sheet.name][1]}
        for name, note in notes.items():
            entry = entries[sheet.name, name]
            coded = ". Or a missing-data code: [unknown], [not_done], [not_applicable], [not_asked]."
            assert note == f"{entry.label}: {help_text(entry)}" + (". Required." if entry.required == "yes" else "") + (
                coded if entry.missing_codes == "yes" else ""
            )
    dictionary = [dict(zip([c.value for c in book["dictionary"][1]], row, strict=True))
                  for row in book["dictionary"].iter_rows(min_row=2, values_only=True)]  # fmt: skip
    assert {(row["table"], row["column"]): row["label"] for row in dictionary} == {
        key: entry.label for key, entry in entries.items()
    }
    assert book["patients"]["H1"].comment.text == (
        "Date of first respiratory symptoms: Onset of respiratory symptoms (cough, dyspnoea). "
        "Or a missing-data code: [unknown], [not_done], [not_applicable], [not_asked]."
    )

    forms = {"patients": "/patients/new", **{s.name: f"/patients/EX-002/{s.name}/new" for s in SHEETS[1:-1]},
             "follow_up": "/patients/EX-002/follow_up/new"}  # fmt: skip
    for sheet, path in forms.items():
        shown = labels_and_help(client.get(path).text)
        expected = {c.name: (entries[sheet, c.name].label, help_text(entries[sheet, c.name]))
                    for c in next(s for s in SHEETS if s.name == sheet).columns if c.name != "study_id" or sheet == "patients"}  # fmt: skip
        assert shown == expected, sheet
    page = client.get("/patients/new").text
    assert '<label for="resp_symptom_onset_date">Date of first respiratory symptoms</label>' in page
    assert ">resp_symptom_onset_date<" not in page


def csrf_of(client: TestClient, path: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text).group(1)


def post(client: TestClient, path: str, data: dict):
    """Submit ``data`` as the form at ``path`` would, with its CSRF token (without the script: every field sent)."""
    return client.post(path, data={"csrf_token": csrf_of(client, path), **data}, follow_redirects=False)


def field_error(page: str, name: str) -> str:
    match = re.search(rf'<span class="field-error" id="error-{name}">([^<]*)</span>', page)
    return html.unescape(match.group(1)) if match else ""


def rows(engine, table: sa.Table) -> list[tuple]:
    with engine.connect() as connection:
        return sorted(map(tuple, connection.execute(sa.select(table)).all()), key=repr)


def test_a_lab_unit_is_chosen_from_the_analytes_and_converted_exactly_to_the_canonical_one(client, web_registry):
    form = client.get("/patients/EX-002/labs/new").text
    options = re.findall(r'<option value="([^"]*)" data-for="([^"]*)">', form)
    assert ("mg/dL", "crp creatinine") in options and ("mg/L", "crp") in options
    assert '<select id="unit" name="unit" data-options-by="analyte"' in form
    assert '<input type="text" id="unit"' not in form  # never free text

    labs = LabResult.__table__
    before = rows(web_registry, labs)
    crp = {"analyte": "crp", "sample_date": "2019-02-13", "value": "1.2", "unit": "g/L"}
    refused = post(client, "/patients/EX-002/labs/new", crp)
    assert refused.status_code == 422
    assert (
        field_error(refused.text, "unit")
        == "is not a unit of C-reactive protein the form accepts: choose mg/L or mg/dL"
    )
    assert rows(web_registry, labs) == before

    saved = post(client, "/patients/EX-002/labs/new", {**crp, "unit": "mg/dL"})
    assert saved.status_code == 303
    page = client.get(saved.headers["location"]).text
    assert "Saved: analyte, sample_date, value, unit. Result entered as 1.2 mg/dL, stored as 12 mg/L." in page
    creatinine = {"analyte": "creatinine", "sample_date": "2019-02-13", "value": "1.13", "unit": "mg/dL"}
    assert post(client, "/patients/EX-002/labs/new", creatinine).status_code == 303
    with web_registry.connect() as connection:
        stored = connection.execute(
            sa.select(labs.c.analyte, labs.c.value, labs.c.unit).where(labs.c.sample_date == date(2019, 2, 13))
        ).all()
        reasons = connection.execute(
            sa.select(AuditLog.reason).where(AuditLog.table_name == "lab_result").order_by(AuditLog.id.desc()).limit(2)
        ).scalars()
        assert sorted(map(tuple, stored)) == [("creatinine", 99.892, "umol/L"), ("crp", 12.0, "mg/L")]
        assert list(reasons) == [
            "initial entry; entered as 1.13 mg/dL, stored as 99.892 umol/L",
            "initial entry; entered as 1.2 mg/dL, stored as 12 mg/L",
        ]
    assert to_canonical_unit(Analyte.FIO2, 35.0, "%") == 0.35 and to_canonical_unit(Analyte.CRP, 3.0, "mg/L") == 3.0
    assert all(unit not in LAB_UNIT_FACTORS.get(a, {}) for a, r in ANALYTE_RANGES.items() for unit in [r.unit])


def follow_up_path(client: TestClient) -> str:
    return re.search(r'href="(/patients/EX-002/follow_up/\d+/edit)"', client.get("/patients/EX-002").text).group(1)


def test_a_value_where_the_field_does_not_apply_is_refused_by_the_server(client, web_registry):
    follow_up, patient, pft = FollowUp.__table__, Patient.__table__, Pft.__table__
    before = {table.name: rows(web_registry, table) for table in (follow_up, patient, pft)}
    path = follow_up_path(client)
    form = client.get(path).text
    assert re.search(r'<div id="field-death_date" data-applies=\'\{"controls": \["vital_status"\], '
                     r'"values": \["dead"\]\}\' data-field="death_date">', form)  # fmt: skip
    fields = {"last_contact_date": "2021-03-01", "vital_status": "alive", "death_date": "2021-03-01",
              "death_cause": "infection", "lost_to_follow_up": "no", "reason": "as in the record"}  # fmt: skip
    refused = post(client, path, {**fields, "version": "1"})
    assert refused.status_code == 422
    for name in ("death_date", "death_cause"):
        assert field_error(refused.text, name) == "does not apply unless the vital status is dead: leave it empty"

    new = {"study_id": "EX-300", "site": "DEMO", "sex": "male", "birth_date": "1960-01-01",
           "rpild_definition": "worsening_1_month"}  # fmt: skip
    refused = post(client, "/patients/new", new)
    assert refused.status_code == 422
    assert field_error(refused.text, "rpild_definition") == (
        "does not apply unless RPILD is answered yes or no: leave it empty"
    )

    both = {"test_date": "2019-03-01", "fvc_l": "2.1", "not_done_reason": "too_ill"}
    refused = post(client, "/patients/EX-002/pfts/new", both)
    assert field_error(refused.text, "fvc_l") == (
        "does not apply unless the test was done (no reason it was not): leave it empty"
    )
    assert field_error(refused.text, "not_done_reason") == "does not apply unless no result is entered: leave it empty"
    assert {table.name: rows(web_registry, table) for table in (follow_up, patient, pft)} == before

    assert post(client, "/patients/new", {**new, "rpild": "no"}).status_code == 303  # a 'no' is judged by one too
    dead = {**fields, "vital_status": "dead", "version": "1"}
    assert post(client, path, dead).status_code == 303
    with web_registry.connect() as connection:
        death = connection.execute(sa.select(follow_up.c.death_date, follow_up.c.death_cause)
                                   .join(patient).where(patient.c.study_id == "EX-002")).one()  # fmt: skip
    assert tuple(death) == (date(2021, 3, 1), "infection")


def test_a_single_site_coordinators_site_is_preselected(web_registry, client):
    assert '<option value="DEMO" selected>DEMO</option>' in client.get("/patients/new").text
    manager = TestClient(create_app(web_registry, secret_key="test-secret"))
    sign_in(manager, "dana")
    page = manager.get("/patients/new").text
    assert '<option value="DEMO">DEMO</option>' in page and '<option value="OTHER">OTHER</option>' in page
