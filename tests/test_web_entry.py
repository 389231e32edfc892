"""Data entry over HTTP: forms with the import's validation, reasons, stale edits, soft delete, locks, roles.

Driven with FastAPI's TestClient against a real database (both engines); the
database is read back after each step, never mocked.
"""

import html
import re

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from markupsafe import escape
from test_web import sign_in

from registry.audit import audit_history
from registry.export import export
from registry.models import (
    STUDY_ID_PATTERN,
    AdverseEvent,
    AntibodyTest,
    AuditLog,
    FollowUp,
    Patient,
    Pft,
    Treatment,
)
from registry.tables import load_tables
from registry.web.app import create_app

NEW_PATIENT = {
    "study_id": "EX-100",
    "site": "DEMO",
    "sex": "female",
    "birth_date": "1970-03-04",
    "smoking": "never",
    "ild_diagnosis_date": "2020-02-01",
    "rpild": "no",
    "rpild_definition": "worsening_1_month",
}
#: What a form sends to save values the checks call errors: confirmed, with a reason (registry.entry_checks).
CONFIRMED = {"confirm": "yes", "confirm_reason": "as in the record"}


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


def refusal(page: str) -> tuple[str, list[str]]:
    """The title of an error page and the problems it lists."""
    title = re.search(r"<h1>([^<]*)</h1>", page).group(1)
    return title, [html.unescape(p) for p in re.findall(r'<p class="error">([^<]*)</p>', page)]


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


def treatment_keys(client: TestClient, study_id: str) -> list[str]:
    return re.findall(rf"/patients/{study_id}/treatments/(\d+)/edit", client.get(f"/patients/{study_id}").text)


def test_a_correction_needs_a_reason_and_is_audited_with_it(client, web_registry):
    sign_in(client, "cora")
    path = "/patients/EX-002/edit"
    form = {**_form_values(client, path), "smoking": "current"}
    before = snapshot(web_registry)
    refused = post(client, path, {**form, "reason": "  "})
    assert refused.status_code == 422 and field_error(refused.text, "reason") == "a reason for the change is required"
    assert 'value="current"' in refused.text or '<option value="current" selected>' in refused.text
    assert snapshot(web_registry) == before
    saved = post(client, path, {**form, "reason": "source document says current smoker"})
    assert saved.status_code == 303
    patient = patient_row(web_registry, "EX-002")
    assert (patient.smoking.value, patient.version) == ("current", 2)
    last = audit_history(web_registry, "EX-002")[-1]
    assert (last.action.value, last.actor, last.reason) == ("update", "cora", "source document says current smoker")
    assert (last.old_values, last.new_values) == ({"smoking": "former"}, {"smoking": "current"})
    assert "Saved: smoking." in client.get("/patients/EX-002").text
    same = post(client, path, {**_form_values(client, path), "reason": "again"})  # nothing changed: nothing written
    assert same.status_code == 303 and patient_row(web_registry, "EX-002").version == 2
    assert "Nothing changed." in client.get("/patients/EX-002").text


def as_sent(page: str, **chosen: str) -> dict[str, str]:
    """What the form on ``page`` sends as it stands (hidden fields too), with the radio button ``chosen`` per field."""
    form = page[page.index('<form method="post" novalidate>') :]
    sent = {
        name: html.unescape(value)
        for name, value in re.findall(
            r'<input type="(?:hidden|text|date)" (?:id="[^"]+" )?name="([^"]+)" value="([^"]*)"', form
        )
    }
    for name, options in re.findall(r'<select id="[^"]+" name="([^"]+)"[^>]*>(.*?)</select>', form, re.S):
        selected = re.search(r'<option value="([^"]*)"(?: data-for="[^"]*")? selected>', options)
        sent[name] = selected.group(1) if selected else ""
    for name, value in re.findall(r'<textarea id="[^"]+" name="([^"]+)"[^>]*>([^<]*)</textarea>', form):
        sent[name] = html.unescape(value)
    for name, which in chosen.items():
        sent[name] = html.unescape(re.search(rf'id="{name}-{which}" name="{name}" value="([^"]*)"', form).group(1))
    return sent


def _form_values(client: TestClient, path: str) -> dict[str, str]:
    """What the edit form at ``path`` would submit unchanged."""
    return as_sent(client.get(path).text)


def test_a_stale_form_is_refused_and_shows_what_changed(client, web_registry):
    other = TestClient(create_app(web_registry, secret_key="test-secret"))
    sign_in(client, "cora")
    sign_in(other, "dana")
    key = treatment_keys(client, "EX-002")[0]
    path = f"/patients/EX-002/treatments/{key}/edit"
    mine, theirs = _form_values(client, path), _form_values(other, path)
    assert post(other, path, {**theirs, "dose": "7", "reason": "dose per pharmacy record"}).status_code == 303
    refused = post(client, path, {**mine, "dose": "3", "reason": "my correction"})
    assert refused.status_code == 409
    assert "this record was changed by someone else since you opened it" in refused.text
    assert re.search(
        r"<td>dana</td><td>dose</td>\s*<td>\d+</td><td>7</td><td>dose per pharmacy record</td>", refused.text
    )
    assert 'name="dose" value="3"' in refused.text  # my entry is kept
    with sa.orm.Session(web_registry) as session:
        treatment = session.get(Treatment, int(key))
        assert (treatment.dose, treatment.version) == (7, 2)  # their change stands
    again = re.search(r'name="version" value="(\d+)"', refused.text).group(1)
    assert again == "2"  # saving again is a deliberate choice, made over what they saw
    assert post(client, path, {**mine, "version": again, "dose": "3", "reason": "my correction"}).status_code == 303
    with sa.orm.Session(web_registry) as session:
        assert session.get(Treatment, int(key)).dose == 3


def pft(engine, key: int) -> tuple:
    with sa.orm.Session(engine) as session:
        stored = session.get(Pft, key)
        return stored.fvc_l, stored.fvc_pct_pred, stored.version


def test_saving_again_after_a_conflict_applies_only_what_this_user_changed(client, web_registry):
    """Another user's correction of one field survives this user's save of another, made from an older form."""
    other = TestClient(create_app(web_registry, secret_key="test-secret"))
    sign_in(client, "cora")
    sign_in(other, "dana")
    key = int(re.search(r"/patients/EX-002/pfts/(\d+)/edit", client.get("/patients/EX-002").text).group(1))
    path = f"/patients/EX-002/pfts/{key}/edit"
    mine = as_sent(client.get(path).text)
    assert (mine["fvc_l"], mine["fvc_pct_pred"]) == ("2.61", "74.5")
    theirs = {**as_sent(other.get(path).text), "fvc_l": "2.11", "reason": "spirometry report: 2.11 L"}
    assert other.post(path, data=theirs, follow_redirects=False).status_code == 303
    refused = client.post(path, data={**mine, "fvc_pct_pred": "75", "reason": "predicted value recomputed"})
    assert refused.status_code == 409 and pft(web_registry, key) == (2.11, 74.5, 2)
    again = as_sent(refused.text)  # "Save again": the refused form as it stands
    assert client.post(path, data=again, follow_redirects=False).status_code == 303
    assert pft(web_registry, key) == (2.11, 75, 3)  # their correction stands, mine is applied
    assert "fields you did not change show the stored value." in refused.text
    assert (again["fvc_l"], again["original.fvc_l"], again["fvc_pct_pred"], again["version"]) == ("2.11", "2.11",
                                                                                                  "75", "2")  # fmt: skip
    assert 'class="conflict' not in refused.text  # nothing to choose: they changed one field, I another
    last = audit_history(web_registry, "EX-002")[-1]
    assert (last.actor, last.old_values, last.new_values) == ("cora", {"fvc_pct_pred": 74.5}, {"fvc_pct_pred": 75.0})

    mine = as_sent(client.get(path).text)  # both change fvc_l
    theirs = {**as_sent(other.get(path).text), "fvc_l": "2.2", "reason": "second reading"}
    assert other.post(path, data=theirs, follow_redirects=False).status_code == 303
    refused = client.post(path, data={**mine, "fvc_l": "2.5", "reason": "my reading"})
    assert refused.status_code == 409 and pft(web_registry, key) == (2.2, 75, 4)
    assert re.search(r'id="fvc_l-theirs" name="fvc_l" value="2.2" autofocus>\s*stored: <strong>2.2</strong> '
                     r'\(dana, \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC: second reading\)', refused.text)  # fmt: skip
    assert 'id="fvc_l-yours" name="fvc_l" value="2.5"> yours: <strong>2.5</strong>' in refused.text
    unchosen = client.post(path, data=as_sent(refused.text))
    assert unchosen.status_code == 422 and field_error(unchosen.text, "fvc_l") == "choose the stored value or yours"
    assert pft(web_registry, key) == (2.2, 75, 4)
    assert client.post(path, data=as_sent(unchosen.text, fvc_l="yours"), follow_redirects=False).status_code == 303
    assert pft(web_registry, key) == (2.5, 75, 5)
    last = audit_history(web_registry, "EX-002")[-1]
    assert (last.actor, last.reason, last.old_values, last.new_values) == ("cora", "my reading", {"fvc_l": 2.2},
                                                                          {"fvc_l": 2.5})  # fmt: skip


def test_a_deleted_record_leaves_checks_analyses_and_exports_and_can_be_restored(client, web_registry, tmp_path):
    sign_in(client, "cora")
    key = treatment_keys(client, "EX-002")[0]
    action = f"/patients/EX-002/treatments/{key}"
    no_reason = post(client, f"{action}/delete", {}, form="/patients/EX-002")
    assert no_reason.status_code == 303
    assert "Not done: a reason for the change is required." in client.get("/patients/EX-002").text
    count = len(load_tables(web_registry)["treatment"])
    export(web_registry, tmp_path / "before")
    assert post(client, f"{action}/delete", {"reason": "entered twice"}, form="/patients/EX-002").status_code == 303
    assert len(load_tables(web_registry)["treatment"]) == count - 1
    export(web_registry, tmp_path / "after")
    exported = [(tmp_path / f / "treatments.csv").read_text().splitlines() for f in ("before", "after")]
    assert len(exported[1]) == len(exported[0]) - 1 and set(exported[1]) < set(exported[0])
    with sa.orm.Session(web_registry) as session:
        stored = session.get(Treatment, int(key))
        assert stored is not None and stored.deleted_at is not None  # kept, only hidden
    last = audit_history(web_registry, "EX-002")[-1]
    assert (last.action.value, last.reason, last.old_values["deleted_at"]) == ("update", "entered twice", None)
    page = client.get("/patients/EX-002").text
    assert 'class="deleted"' in page and f"{action}/restore" in page
    assert (
        post(client, f"{action}/restore", {"reason": "was not a duplicate"}, form="/patients/EX-002").status_code == 303
    )
    assert len(load_tables(web_registry)["treatment"]) == count


def test_the_import_refuses_rows_of_deleted_records_and_patients(client, web_registry, tmp_path):
    from registry.ingest import import_path

    sign_in(client, "cora")
    example = tmp_path / "example"
    export(web_registry, example)
    key = treatment_keys(client, "EX-002")[0]
    post(client, f"/patients/EX-002/treatments/{key}/delete", {"reason": "test"}, form="/patients/EX-002")
    post(client, "/patients/EX-003/delete", {"reason": "withdrew consent"}, form="/patients/EX-003")
    before = snapshot(web_registry)
    result = import_path(web_registry, example, actor="test")
    messages = [str(p) for p in result.errors]
    assert any(
        m.startswith("treatments.csv row ") and "is a deleted record (or belongs to a deleted patient): restore it" in m
        for m in messages
    )
    assert any('"EX-003" is a deleted patient: restore them in the web application first' in m for m in messages)
    assert not result.written and snapshot(web_registry) == before
    assert "EX-003" not in set(load_tables(web_registry)["patient"]["study_id"])
    assert ">EX-003</a>" not in client.get("/patients").text
    assert ">EX-003</a>" in client.get("/patients", params={"deleted": "show"}).text
    refused = post(client, "/patients/EX-003/treatments/new", {"drug": "tacrolimus", "start_date": "2021-01-01"})
    assert "this patient is deleted: restore them before changing their records" in refused.text


def test_a_locked_patient_cannot_change_until_unlocked(client, web_registry):
    coordinator = TestClient(create_app(web_registry, secret_key="test-secret"))
    sign_in(coordinator, "cora")
    sign_in(client, "dana")
    assert post(coordinator, "/patients/EX-002/lock", {"reason": "x"}, form="/patients/EX-002").status_code == 403
    assert (
        post(client, "/patients/EX-002/lock", {"reason": "data cut 2024"}, form="/patients/EX-002").status_code == 303
    )
    assert patient_row(web_registry, "EX-002").locked_at is not None
    path = "/patients/EX-002/edit"
    refused = post(coordinator, path, {**_form_values(coordinator, path), "smoking": "never", "reason": "fix"})
    assert refused.status_code == 409
    assert "locked by a data manager: ask them to unlock before changing anything" in refused.text
    assert patient_row(web_registry, "EX-002").smoking.value == "former"
    assert (
        post(client, "/patients/EX-002/unlock", {"reason": "query answered"}, form="/patients/EX-002").status_code
        == 303
    )
    assert (
        post(coordinator, path, {**_form_values(coordinator, path), "smoking": "never", "reason": "fix"}).status_code
        == 303
    )
    reasons = [e.reason for e in audit_history(web_registry, "EX-002")[-3:]]
    assert reasons == ["data cut 2024", "query answered", "fix"]


# --- security: roles, sites, CSRF, payloads ------------------------------------------------------


def other_site_keys(engine) -> dict[str, int]:
    """A record id of each kind belonging to EX-901, the patient of site OTHER."""
    from registry.sheets import SHEETS_BY_NAME

    with engine.connect() as connection:
        patient_id = connection.execute(sa.select(Patient.id).where(Patient.study_id == "EX-901")).scalar_one()
        keys = {}
        for name in ("antibody_tests", "treatments", "adverse_events", "follow_up"):
            table = SHEETS_BY_NAME[name].table
            pk = table.primary_key.columns[0]
            keys[name] = connection.execute(sa.select(pk).where(table.c.patient_id == patient_id)).scalars().first()
    assert None not in keys.values(), keys  # EX-901 has a record of every kind
    return keys


def test_a_coordinator_cannot_reach_another_sites_patients_by_url_or_form(client, web_registry):
    sign_in(client, "cora")
    before = snapshot(web_registry)
    for path in ("/patients/EX-901/edit", "/patients/EX-901/treatments/new"):
        assert client.get(path).status_code == 404
    token = csrf_of(client, "/patients")
    for path in ("/patients/EX-901/edit", "/patients/EX-901/treatments/new", "/patients/EX-901/delete"):
        assert client.post(path, data={"csrf_token": token, "reason": "x"}).status_code == 404
    for name, key in other_site_keys(web_registry).items():
        for path in (f"/patients/EX-901/{name}/{key}/edit", f"/patients/EX-001/{name}/{key}/edit"):
            assert client.get(path).status_code == 404  # neither under its patient nor under one of mine
        for action in ("edit", "delete", "restore"):
            answer = client.post(f"/patients/EX-001/{name}/{key}/{action}", data={"csrf_token": token, "reason": "x"})
            assert answer.status_code == 404, (name, action)
    tampered = post(client, "/patients/new", {**NEW_PATIENT, "site": "OTHER"}, form="/patients/new")
    assert tampered.status_code == 422 and field_error(tampered.text, "site") == "is not a site you enter patients for"
    path = "/patients/EX-001/edit"
    moved = post(client, path, {**_form_values(client, path), "site": "OTHER", "reason": "move"})
    assert field_error(moved.text, "site") == "is not a site you enter patients for"
    assert snapshot(web_registry) == before


def test_roles_decide_who_may_write_lock_and_read_results(web_registry):
    from conftest import WEB_PASSWORD

    from registry.accounts import create_account
    from registry.audit import audited_session
    from registry.codes import Role

    with audited_session(web_registry, actor="test") as session:
        create_account(session, "ana", WEB_PASSWORD, Role.ANALYST)
        create_account(session, "adam", WEB_PASSWORD, Role.ADMIN)
        session.commit()
    expected = {  # (may enter data, may lock, may run checks: a coordinator those of their own sites)
        "cora": (True, False, True),
        "dana": (True, True, True),
        "ana": (False, False, True),
        "adam": (False, False, True),
    }
    for username, (writes, locks, results) in expected.items():
        client = TestClient(create_app(web_registry, secret_key="test-secret"))
        sign_in(client, username)
        assert client.get("/patients/new").status_code == (200 if writes else 403), username
        path = "/patients/EX-002/edit"
        assert client.get(path).status_code == (200 if writes else 403), username
        token = csrf_of(client, "/patients")
        answer = client.post("/patients/EX-002/lock", data={"csrf_token": token, "reason": "x"}, follow_redirects=False)
        assert answer.status_code == (303 if locks else 403), username
        if locks:
            client.post("/patients/EX-002/unlock", data={"csrf_token": token, "reason": "x"})
        assert client.get("/checks").status_code == (200 if results else 403), username
        assert ("/checks" in client.get("/patients").text) == results
        assert ('href="/patients/new"' in client.get("/patients").text) == writes


def test_every_form_refuses_a_missing_or_forged_csrf_token(client, web_registry):
    sign_in(client, "dana")
    key = treatment_keys(client, "EX-002")[0]
    paths = [
        "/patients/new", "/patients/EX-002/edit", "/patients/EX-002/treatments/new",
        f"/patients/EX-002/treatments/{key}/edit", f"/patients/EX-002/treatments/{key}/delete",
        f"/patients/EX-002/treatments/{key}/restore", "/patients/EX-002/delete", "/patients/EX-002/restore",
        "/patients/EX-002/lock", "/patients/EX-002/unlock", "/checks",
    ]  # fmt: skip
    before = snapshot(web_registry)
    for path in paths:
        for token in ({}, {"csrf_token": "forged"}):
            answer = client.post(path, data={**NEW_PATIENT, **token, "reason": "x", "version": "1"})
            assert answer.status_code == 403, path
            assert refusal(answer.text) == (
                "Not allowed",
                ["The form has expired or did not come from this site: reload it."],
            ), path
    assert snapshot(web_registry) == before


PAYLOADS = ["<script>alert(1)</script>", "x'); DROP TABLE patient; --", '"><img src=x onerror=alert(1)>']


def test_payloads_in_every_text_field_are_stored_literally_and_shown_escaped(client, web_registry):
    """Every free-text field of every form gets SQL and HTML payloads (as long as the column allows).

    A study_id is an identifier, not free text: it appears in addresses and file names, so a
    payload there is refused with its rule, and shown back escaped.
    """
    from registry.entry import form_columns
    from registry.sheets import SHEETS_BY_NAME

    sign_in(client, "cora")
    text_fields = {
        (sheet.name, column.name)
        for sheet in SHEETS_BY_NAME.values()
        for column in form_columns(sheet, creating=True)
        if type(column.source.type) is sa.String and column.name != "site"
    }
    assert text_fields == {("patients", "study_id"), ("labs", "unit"), ("adverse_events", "term_detail")}
    before = snapshot(web_registry)
    for payload in PAYLOADS:
        refused = post(client, "/patients/new", {**NEW_PATIENT, "study_id": payload}, form="/patients/new")
        assert field_error(refused.text, "study_id") == str(escape(STUDY_ID_PATTERN[1]))
        assert "<script>alert" not in refused.text and "<img src=x" not in refused.text
    assert snapshot(web_registry) == before
    for n, payload in enumerate(PAYLOADS):
        study_id = f"PAY-{n}"
        assert (
            post(client, "/patients/new", {**NEW_PATIENT, "study_id": study_id}, form="/patients/new").status_code
            == 303
        )
        base = f"/patients/{study_id}"
        unit = payload[:16].strip()  # the column holds 16 characters
        lab = {"analyte": "ferritin", "sample_date": "2021-02-01", "value": "100", "unit": unit}
        refused = post(client, f"{base}/labs/new", lab)  # a lab unit is chosen from the analyte's, never typed
        assert (
            field_error(refused.text, "unit")
            == "is not a unit of Serum ferritin the form accepts: choose ng/mL or ug/L"
        )
        assert "<script>alert" not in refused.text and "<img src=x" not in refused.text
        lab["unit"] = "ng/mL"
        event = {"onset_date": "2021-03-01", "term": "other", "term_detail": payload, "ctcae_grade": "2",
                 "serious": "no", "led_to_discontinuation": "no"}  # fmt: skip
        assert post(client, f"{base}/labs/new", lab | CONFIRMED).status_code == 303  # the unit is no ferritin unit
        assert post(client, f"{base}/adverse_events/new", event).status_code == 303
        with web_registry.connect() as connection:
            stored = connection.execute(sa.text(
                "SELECT l.unit, a.term_detail FROM patient p JOIN lab_result l ON l.patient_id = p.id"
                " JOIN adverse_event a ON a.patient_id = p.id WHERE p.study_id = :s"), {"s": study_id}).one()  # fmt: skip
        assert tuple(stored) == ("ng/mL", payload)
        page = client.get(base).text
        assert "<script>alert" not in page and "<img src=x" not in page
        assert page.count(str(escape(payload))) >= 2  # the record and its audit history
    with web_registry.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM patient")).scalar() == 5 + len(PAYLOADS)
        assert connection.execute(sa.text("SELECT count(*) FROM site")).scalar() == 2


def test_checks_run_from_the_web_and_their_findings_lead_to_the_field(client, web_registry):
    sign_in(client, "dana")
    path = "/patients/EX-002/edit"
    post(client, path, {**_form_values(client, path), "birth_date": "1905-01-01", "reason": "typo to test checks",
                        **CONFIRMED})  # fmt: skip
    assert post(client, "/checks", {}, form="/checks").status_code == 303
    page = client.get("/checks").text
    assert re.search(r'<a href="/patients/EX-002/edit#field-birth_date">birth_date</a>', page)
    patient = client.get("/patients/EX-002").text
    assert "1905-01-01" in patient and 'href="/patients/EX-002/edit#field-birth_date"' in patient
    listed = client.get("/patients", params={"findings": "open"}).text
    assert ">EX-002</a>" in listed
    refused = client.get("/report.pdf")
    assert refused.status_code == 409 and "The report is not rendered" in refused.text


def test_the_findings_of_the_checks_come_a_page_at_a_time_and_by_rule(client, monkeypatch):
    from registry.web import pages

    monkeypatch.setattr(pages, "PAGE_SIZE", 2)
    sign_in(client, "dana")
    for study_id in ("EX-001", "EX-002", "EX-003"):
        path = f"/patients/{study_id}/edit"
        post(client, path, {**_form_values(client, path), "smoking": "", "reason": "history not known after all"})
    post(client, "/checks", {}, form="/checks")

    def findings(**params) -> tuple[list[tuple[str, str]], list[str]]:
        text = client.get("/checks", params=params).text
        rows = re.findall(r'<a href="/patients/(EX-\d+)#findings">EX-\d+</a></td>\s*<td>([A-Z]+-\d+)</td>', text)
        return rows, [html.unescape(href) for href in re.findall(r'<a href="([^"]+)" rel="(?:prev|next)"', text)]

    unknown = [("EX-001", "PAT-015"), ("EX-002", "PAT-015"), ("EX-003", "PAT-015")]  # the three smoking histories
    assert findings() == (unknown[:2], ["/checks?page=2"])
    assert findings(page=2) == findings(page=99) == (unknown[2:], ["/checks?page=1"])  # past the end: the last page
    assert findings(rule="PAT-015", page=1) == (unknown[:2], ["/checks?rule=PAT-015&page=2"])
    assert findings(rule="PAT-015", page=2) == (unknown[2:], ["/checks?rule=PAT-015&page=1"])
    assert findings(rule="LAB-010") == ([], [])
    summary = client.get("/checks").text
    assert '<a href="/checks?rule=PAT-015#findings">PAT-015</a>' in summary and "3 finding(s), 1–2 shown" in summary
    (form,) = verify_forms(client.get("/checks", params={"rule": "PAT-015", "page": 2}).text)
    verified = post(client, "/findings/verify", {**form, "comment": "no history at source"}, form="/checks")
    assert verified.headers["location"] == "/checks?rule=PAT-015&page=2#findings"  # back to the same page
    assert client.get("/checks", params={"page": 0}).status_code == 422


def test_two_concurrent_edits_of_one_record_keep_one_and_refuse_the_other(web_registry):
    """Both edits start from the same version at the same moment: one is stored, the other refused, none lost."""
    import threading

    from registry.entry import Stale, form_values, save_record
    from registry.sheets import SHEETS_BY_NAME

    key = patient_row(web_registry, "EX-002").id
    form = form_values(patient_row(web_registry, "EX-002"), SHEETS_BY_NAME["patients"], "DEMO")

    def race(version: int, values: list[str]) -> dict[str, str]:
        """Both edits at once from ``version``: smoking value -> saved or refused."""
        start, outcomes = threading.Barrier(2), {}

        def edit(smoking: str) -> None:
            start.wait()
            try:
                save_record(web_registry, "patients", {**form, "smoking": smoking}, actor=smoking, reason="race",
                            patient_id=key, key=key, version=version)  # fmt: skip
                outcomes[smoking] = "saved"
            except Stale:
                outcomes[smoking] = "refused"

        threads = [threading.Thread(target=edit, args=(value,)) for value in values]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return outcomes

    for round_ in range(10):
        before = patient_row(web_registry, "EX-002")
        values = [value for value in ("never", "former", "current") if value != before.smoking.value]  # both change it
        outcomes = race(before.version, values[::-1] if round_ % 2 else values)
        assert sorted(outcomes.values()) == ["refused", "saved"], outcomes
        (winner,) = [value for value, outcome in outcomes.items() if outcome == "saved"]
        stored = patient_row(web_registry, "EX-002")
        assert (stored.smoking.value, stored.version) == (winner, before.version + 1)
        last = audit_history(web_registry, "EX-002")[-1]
        assert (last.actor, last.new_values) == (winner, {"smoking": winner})
    updates = [e for e in audit_history(web_registry, "EX-002") if e.action.value == "update"]
    assert len(updates) == 10  # one per round: the refused edits wrote nothing


def verify_forms(page: str) -> list[dict[str, str]]:
    """The hidden fields of each "verified at source" form of a page."""
    forms = re.findall(r'<form class="inline" method="post" action="/findings/verify">(.*?)</form>', page, re.S)
    fields = [re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form) for form in forms]
    return [{name: html.unescape(value) for name, value in found} for found in fields]  # as a browser sends them


def test_a_data_manager_verifies_a_warning_at_source_and_can_reopen_it(client, web_registry):
    from registry.models import FindingReview

    sign_in(client, "dana")
    lab = {"analyte": "ferritin", "sample_date": "2019-02-20", "value": "50000", "unit": "ng/mL"}
    assert post(client, "/patients/EX-002/labs/new", lab).status_code == 303
    post(client, "/checks", {}, form="/checks")
    page = client.get("/patients/EX-002").text
    (form,) = [f for f in verify_forms(page) if f["rule"] == "LAB-014"]
    assert (form["table"], form["field"], form["value"], form["back"]) == ("lab_result", "value", "50000",
                                                                            "/patients/EX-002#findings")  # fmt: skip
    assert ">EX-002</a>" in client.get("/patients", params={"findings": "open"}).text
    no_comment = post(client, "/findings/verify", {**form, "comment": " "}, form="/patients/EX-002")
    assert no_comment.headers["location"] == "/patients/EX-002#findings"
    assert "Not done: say what was checked, and where (the comment is required)." in client.get("/patients/EX-002").text
    post(client, "/findings/verify", {**form, "comment": "x" * 501}, form="/patients/EX-002")
    assert "Not done: the comment is longer than 500 characters." in client.get("/patients/EX-002").text
    comment = "laboratory report of 2019-02-20 reads 50,000 ng/mL"
    assert post(client, "/findings/verify", {**form, "comment": comment}, form="/patients/EX-002").status_code == 303
    page = client.get("/patients/EX-002").text
    assert "verified by dana on " in page and comment in page
    assert [f["rule"] for f in verify_forms(page)] == []  # nothing else of EX-002 to verify
    assert ">EX-002</a>" not in client.get("/patients", params={"findings": "open"}).text
    with web_registry.connect() as connection:
        review = connection.execute(sa.select(FindingReview)).mappings().one()
    assert (review["rule"], review["value"], review["reviewed_by"], review["comment"]) == ("LAB-014", "50000", "dana",
                                                                                          comment)  # fmt: skip
    logged = audit_history(web_registry, "EX-002")[-1]
    assert (logged.table_name, logged.action.value, logged.reason) == ("finding_review", "insert", comment)

    coordinator = TestClient(create_app(web_registry, secret_key="test-secret"))
    sign_in(coordinator, "cora")
    assert "Verified at source" not in coordinator.get("/patients/EX-002").text
    refused = post(coordinator, "/findings/verify", {**form, "comment": "x"}, form="/patients")
    assert refused.status_code == 403

    review_id = re.search(r'action="/findings/reviews/(\d+)/reopen"', page).group(1)
    reopen = f"/findings/reviews/{review_id}/reopen"
    post(client, reopen, {"reason": ""}, form="/patients/EX-002")
    assert "Not done: a reason for the change is required." in client.get("/patients/EX-002").text
    assert post(client, reopen, {"reason": "report was for another patient"}, form="/checks").status_code == 303
    assert ">EX-002</a>" in client.get("/patients", params={"findings": "open"}).text


def test_a_review_holds_for_its_value_only_and_errors_cannot_be_verified(client, web_registry):
    sign_in(client, "dana")
    lab = {"analyte": "ferritin", "sample_date": "2019-02-20", "value": "50000", "unit": "ng/mL"}
    post(client, "/patients/EX-002/labs/new", lab)
    post(client, "/checks", {}, form="/checks")
    (form,) = [f for f in verify_forms(client.get("/patients/EX-002").text) if f["rule"] == "LAB-014"]
    post(client, "/findings/verify", {**form, "comment": "checked"}, form="/patients/EX-002")
    key = re.search(r"/patients/EX-002/labs/(\d+)/edit#field-value", client.get("/patients/EX-002").text).group(1)
    path = f"/patients/EX-002/labs/{key}/edit"
    post(client, path, {**_form_values(client, path), "value": "60000", "reason": "second reading"})
    post(client, "/checks", {}, form="/checks")
    (again,) = [f for f in verify_forms(client.get("/patients/EX-002").text) if f["rule"] == "LAB-014"]
    assert again["value"] == "60000"  # a new value is a new finding, open until verified
    error = {**again, "rule": "LAB-013"}
    stale = post(client, "/findings/verify", {**error, "comment": "x"}, form="/patients/EX-002")
    assert stale.status_code == 303
    assert "Not done: the finding is not in the latest check run (run the checks again)." in client.get("/checks").text
    post(client, path, {**_form_values(client, path), "value": "150000", "reason": "test", **CONFIRMED})
    post(client, "/checks", {}, form="/checks")
    checks = client.get("/checks").text
    assert "open: correct the data" in checks
    from registry.entry import EntryError
    from registry.reviews import verify

    with pytest.raises(EntryError, match="an error cannot be verified: correct the data"):
        verify(web_registry, {"severity": "error", "rule": "LAB-013"}, comment="x", actor="dana")


def test_a_lock_covers_every_record_of_the_patient_and_the_import(client, web_registry, tmp_path):
    from registry.ingest import import_path

    export(web_registry, tmp_path / "unchanged")
    sign_in(client, "dana")
    key = treatment_keys(client, "EX-002")[0]
    assert post(client, "/patients/EX-002/lock", {"reason": "data cut"}, form="/patients/EX-002").status_code == 303
    before = snapshot(web_registry)
    added = post(client, "/patients/EX-002/treatments/new", {"drug": "tacrolimus", "start_date": "2021-01-01"})
    assert added.status_code == 409 and "locked by a data manager" in added.text
    path = f"/patients/EX-002/treatments/{key}/edit"
    edited = post(client, path, {**_form_values(client, path), "dose": "9", "reason": "x"})
    assert edited.status_code == 409 and "locked by a data manager" in edited.text
    post(client, f"/patients/EX-002/treatments/{key}/delete", {"reason": "x"}, form="/patients/EX-002")
    assert "Not done: this patient&#39;s records are locked by a data manager" in client.get("/patients/EX-002").text
    assert import_path(web_registry, tmp_path / "unchanged", actor="test").errors == []  # unchanged rows pass
    changed = tmp_path / "changed"
    export(web_registry, changed)
    treatments = changed / "treatments.csv"
    lines = treatments.read_text().splitlines()
    row = next(n for n, line in enumerate(lines, start=1) if line.startswith("EX-002,tofacitinib,2019-02-18,,5,"))
    lines[row - 1] = lines[row - 1].replace(",,5,", ",,7,")
    treatments.write_text("\n".join(lines) + "\n")
    result = import_path(web_registry, changed, actor="test")
    assert [str(p) for p in result.errors] == [
        f'treatments.csv row {row}, column study_id: "EX-002" is a patient locked by a data manager: '
        "ask them to unlock before changing their records"
    ]
    assert snapshot(web_registry) == before


def test_a_deleted_record_cannot_be_edited_until_restored(client, web_registry):
    from registry.entry import EntryError, form_values, save_record
    from registry.sheets import SHEETS_BY_NAME

    sign_in(client, "cora")
    key = treatment_keys(client, "EX-002")[0]
    path = f"/patients/EX-002/treatments/{key}/edit"
    form = _form_values(client, path)
    post(client, f"/patients/EX-002/treatments/{key}/delete", {"reason": "duplicate"}, form="/patients/EX-002")
    opened = client.get(path, follow_redirects=False)
    assert opened.status_code == 303 and opened.headers["location"] == "/patients/EX-002#treatments"
    assert "This record is deleted: restore it before changing it." in client.get("/patients/EX-002").text
    refused = post(client, path, {**form, "version": "2", "dose": "9", "reason": "x"}, form="/patients/EX-002")
    assert (
        refused.status_code == 409
        and "Not saved: this record is deleted: restore it before changing it" in refused.text
    )
    with sa.orm.Session(web_registry) as session:
        treatment = session.get(Treatment, int(key))
        assert treatment.dose != 9
        values = form_values(treatment, SHEETS_BY_NAME["treatments"])
    with pytest.raises(EntryError, match="this record is deleted: restore it before changing it"):
        save_record(web_registry, "treatments", {**values, "dose": "9"}, actor="x", reason="x",
                    patient_id=treatment.patient_id, key=int(key), version=treatment.version)  # fmt: skip


def test_a_deleted_patient_takes_every_record_out_of_checks_analyses_and_exports(client, web_registry, tmp_path):
    from datetime import date

    from registry.config import Config
    from registry.quality import run_checks

    sign_in(client, "cora")
    full = load_tables(web_registry)
    ex002 = int(full["patient"].set_index("study_id").loc["EX-002", "id"])
    assert (
        post(client, "/patients/EX-002/delete", {"reason": "withdrew consent"}, form="/patients/EX-002").status_code
        == 303
    )
    tables = load_tables(web_registry)
    for name, frame in tables.items():
        owner = "id" if name == "patient" else "patient_id"
        if owner in frame:
            assert ex002 not in set(frame[owner]), name
            assert len(frame) == len(full[name]) - int((full[name][owner] == ex002).sum()), name
    assert "EX-002" not in set(run_checks(tables, Config(), date(2026, 1, 1)).findings["study_id"].dropna())
    export(web_registry, tmp_path / "out")
    assert not any("EX-002" in f.read_text() for f in (tmp_path / "out").glob("*.csv"))
    restored = post(client, "/patients/EX-002/restore", {"reason": "consent confirmed"}, form="/patients/EX-002")
    assert restored.status_code == 303
    assert {name: len(frame) for name, frame in load_tables(web_registry).items()} == {
        name: len(frame) for name, frame in full.items()
    }


def test_inputs_postgresql_would_refuse_get_a_clear_answer_not_a_crash(client, web_registry):
    sign_in(client, "cora")
    path = "/patients/EX-002/edit"
    long = post(client, path, {**_form_values(client, path), "smoking": "never", "reason": "x" * 501})
    assert long.status_code == 422 and field_error(long.text, "reason") == "is longer than 500 characters"
    event = {"onset_date": "2021-03-01", "term": "other", "term_detail": "a\x00b", "ctcae_grade": "2",
             "serious": "no", "led_to_discontinuation": "no"}  # fmt: skip
    nul = post(client, "/patients/EX-002/adverse_events/new", event)
    assert nul.status_code == 422 and field_error(nul.text, "term_detail") == "contains a NUL character"
    assert client.get("/patients", params={"q": "EX\x00"}).status_code == 200
    assert client.get("/patients/EX%00-002").status_code == 404
    for key in ("3000000000", "99999999999999999999", "-1", "1e3"):
        assert client.get(f"/patients/EX-002/treatments/{key}/edit").status_code == 404, key
    taken = post(client, "/patients/new", {**NEW_PATIENT, "study_id": "new"}, form="/patients/new")
    assert field_error(taken.text, "study_id") == str(escape(STUDY_ID_PATTERN[1]))
    spaced = post(client, "/patients/new", {**NEW_PATIENT, "study_id": "  EX-777 "}, form="/patients/new")
    assert spaced.headers["location"] == "/patients/EX-777"
