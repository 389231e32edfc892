"""Data entry over HTTP: forms with the import's validation, reasons, stale edits, soft delete, locks, roles.

Driven with FastAPI's TestClient against a real database (both engines); the
database is read back after each step, never mocked.
"""

import re

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from test_web import sign_in

from registry.audit import audit_history
from registry.models import AdverseEvent, AntibodyTest, AuditLog, FollowUp, Patient, Treatment
from registry.tables import load_tables
from registry.web.app import create_app

NEW_PATIENT = {
    "study_id": "EX-100",
    "site": "DEMO",
    "sex": "female",
    "birth_date": "1970-03-04",
    "smoking": "never",
    "ild_diagnosis_date": "2021-02-01",
    "rpild": "no",
    "rpild_definition": "worsening_1_month",
}


@pytest.fixture
def client(web_registry):
    return TestClient(create_app(web_registry, secret_key="test-secret"))


def csrf_of(client: TestClient, path: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text).group(1)


def version_of(client: TestClient, path: str) -> str:
    return re.search(r'name="version" value="(\d+)"', client.get(path).text).group(1)


def post(client: TestClient, path: str, data: dict, form: str | None = None):
    """Submit ``data`` as the form at ``form`` (default: ``path``) would, with its CSRF token."""
    return client.post(path, data={"csrf_token": csrf_of(client, form or path), **data}, follow_redirects=False)


def field_error(page: str, name: str) -> str:
    match = re.search(rf'<span class="field-error" id="error-{name}">([^<]*)</span>', page)
    return match.group(1) if match else ""


def patient_row(engine, study_id: str) -> Patient:
    with sa.orm.Session(engine) as session:
        return session.execute(sa.select(Patient).where(Patient.study_id == study_id)).scalar_one()


def snapshot(engine) -> dict[str, list]:
    with engine.connect() as connection:
        return {
            model.__tablename__: sorted(map(tuple, connection.execute(sa.select(model.__table__)).all()), key=repr)
            for model in (Patient, AntibodyTest, Treatment, AdverseEvent, FollowUp, AuditLog)
        }


def test_a_coordinator_creates_a_patient_and_their_records(client, web_registry):
    sign_in(client, "cora")
    created = post(client, "/patients/new", NEW_PATIENT)
    assert (created.status_code, created.headers["location"]) == (303, "/patients/EX-100")
    patient = patient_row(web_registry, "EX-100")
    assert (patient.sex.value, patient.birth_date.isoformat(), patient.rpild, patient.version) == (
        "female",
        "1970-03-04",
        False,
        1,
    )
    antibody = {"antibody": "anti_mda5", "assay": "elisa", "sample_date": "2021-02-03", "value": "120.5",
                "unit": "index", "cutoff": "32"}  # fmt: skip
    assert post(client, "/patients/EX-100/antibody_tests/new", antibody).status_code == 303
    treatment = {"drug": "tofacitinib", "start_date": "2021-02-10", "dose": "5", "dose_unit": "mg", "frequency": "bid"}
    assert post(client, "/patients/EX-100/treatments/new", treatment).status_code == 303
    follow_up = {"last_contact_date": "2022-02-10", "vital_status": "alive", "lost_to_follow_up": "no"}
    assert post(client, "/patients/EX-100/follow_up/new", follow_up).status_code == 303
    page = client.get("/patients/EX-100").text
    assert "Saved: " in page and "anti_mda5 120.5 index" in page and "tofacitinib started" in page
    assert re.search(r"<td>2021-02-10</td><td>\+0</td>", page)  # the timeline counts days from the index date
    history = audit_history(web_registry, "EX-100")
    assert [(e.action.value, e.table_name, e.actor) for e in history] == [
        ("insert", "patient", "cora"), ("insert", "antibody_test", "cora"), ("insert", "treatment", "cora"),
        ("insert", "follow_up", "cora"),
    ]  # fmt: skip
    assert {e.reason for e in history} == {"initial entry"}
    assert "version" not in history[0].new_values  # bookkeeping is not logged as data
    tables = load_tables(web_registry)
    assert "EX-100" in set(tables["patient"]["study_id"]) and "version" not in tables["patient"]


def test_a_field_error_is_shown_beside_its_field_and_the_entries_are_kept(client, web_registry):
    sign_in(client, "cora")
    before = snapshot(web_registry)
    wrong = {**NEW_PATIENT, "birth_date": "04/03/1970", "sex": "unknown", "rpild_definition": ""}
    answer = post(client, "/patients/new", wrong, form="/patients/new")
    assert answer.status_code == 422
    assert field_error(answer.text, "birth_date") == (
        "is not an ISO 8601 date (YYYY-MM-DD); day and month order is ambiguous and never guessed"
    )
    assert field_error(answer.text, "sex") == ("is not an allowed value; allowed: female, male")
    assert 'value="04/03/1970"' in answer.text and 'value="EX-100"' in answer.text  # what was typed is kept
    assert snapshot(web_registry) == before  # nothing written
    rule = post(client, "/patients/new", {**NEW_PATIENT, "rpild_definition": ""}, form="/patients/new")
    assert field_error(rule.text, "rpild") == ("an RPILD flag needs the definition it was judged by (rpild_definition)")
    assert snapshot(web_registry) == before


def test_the_import_and_the_form_give_the_same_message(client):
    sign_in(client, "cora")
    bad = {"drug": "tofacitinib", "start_date": "2021-02-10", "end_date": "2021-01-01"}
    answer = post(client, "/patients/EX-001/treatments/new", bad)
    assert field_error(answer.text, "end_date") == "end_date cannot be before start_date"
    dose = post(client, "/patients/EX-001/treatments/new", {"drug": "tacrolimus", "start_date": "2021-02-10",
                                                             "dose": "1,5"})  # fmt: skip
    assert field_error(dose.text, "dose") == ("is not a number (use a point for decimals and no thousands separators)")


def test_a_duplicate_natural_key_is_refused_at_its_field(client, web_registry):
    sign_in(client, "cora")
    existing = client.get("/patients/EX-001").text
    drug, start = re.search(r"<td>(tofacitinib|tacrolimus)</td><td>(\d{4}-\d\d-\d\d)</td>", existing).groups()
    answer = post(client, "/patients/EX-001/treatments/new", {"drug": drug, "start_date": start})
    assert answer.status_code == 422
    assert field_error(answer.text, "start_date") == ("another record of this patient has the same drug + start_date")
    taken = post(client, "/patients/new", {**NEW_PATIENT, "study_id": "EX-001"}, form="/patients/new")
    assert field_error(taken.text, "study_id") == "another patient has this study_id"
