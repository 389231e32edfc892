"""The rule catalogue on every web save (issue 18, point 1): errors refuse or are confirmed, warnings save.

Driven with FastAPI's TestClient against a real database (both engines), read back after each step.
"""

import html
import re

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from test_web import sign_in
from test_web_entry import NEW_PATIENT, post, snapshot

from registry.models import AuditLog, FindingReview, Pft
from registry.web.app import create_app

FVC_900 = {"test_date": "2019-03-01", "fvc_l": "900", "fvc_pct_pred": "70", "dlco_pct_pred": "50"}


@pytest.fixture
def client(web_registry):
    return TestClient(create_app(web_registry, secret_key="test-secret"))


def _beside(page: str, field: str) -> list[str]:
    """The findings listed beside ``field`` of a form."""
    block = re.search(rf'<div id="field-{field}".*?</div>', page, re.S).group(0)
    return [html.unescape(re.sub(r"<[^>]+>", "", item)) for item in re.findall(r"<li class=.*?</li>", block, re.S)]


def test_an_error_refuses_the_save_with_the_finding_beside_its_field_and_nothing_written(client, web_registry):
    sign_in(client, "cora")
    before = snapshot(web_registry)
    refused = post(client, "/patients/EX-002/pfts/new", FVC_900)
    assert refused.status_code == 422
    assert "Not saved: the checks found errors: correct them, or confirm them with a reason" in refused.text
    assert _beside(refused.text, "fvc_l") == ["error PFT-011: result outside the plausible range (value 900)"]
    assert 'name="fvc_l" value="900"' in refused.text  # the entries are kept
    assert snapshot(web_registry) == before
    ticked = post(client, "/patients/EX-002/pfts/new", FVC_900 | {"confirm": "yes", "confirm_reason": ""})
    assert ticked.status_code == 422
    assert '<span class="field-error" id="error-confirm">say why the values are right: choose a reason or write one' \
        in ticked.text  # fmt: skip
    assert snapshot(web_registry) == before


def test_a_confirmed_error_is_saved_with_its_reason_kept_audited_and_open(client, web_registry):
    sign_in(client, "cora")
    confirm = {"confirm": "yes", "confirm_reason": "value verified at source", "confirm_note": "lab sheet p. 2"}
    saved = post(client, "/patients/EX-002/pfts/new", FVC_900 | confirm)
    assert (saved.status_code, saved.headers["location"]) == (303, "/patients/EX-002#pfts")
    with sa.orm.Session(web_registry) as session:
        pft = session.execute(sa.select(Pft).where(Pft.fvc_l == 900)).scalar_one()
        review = session.execute(sa.select(FindingReview)).scalar_one()
        entry = session.execute(sa.select(AuditLog).where(AuditLog.table_name == "finding_review")).scalar_one()
    reason = "confirmed at entry: value verified at source; lab sheet p. 2"
    assert (review.rule, review.table_name, review.record_key, review.field, review.value) == (
        "PFT-011", "pft", str(pft.id), "fvc_l", "900")  # fmt: skip
    assert (review.comment, review.reviewed_by) == (reason, "cora")
    assert (entry.actor, entry.reason, entry.action.value) == ("cora", reason, "insert")
    page = client.get("/patients/EX-002").text
    assert "Saved: test_date, fvc_l, fvc_pct_pred, dlco_pct_pred. The checks found 1 confirmed error(s)" in page
    assert f"open: correct the data ({reason}, by cora on" in page  # an open error, with its reason


def test_a_warning_saves_and_is_shown(client, web_registry):
    sign_in(client, "cora")
    lab = {"analyte": "ferritin", "sample_date": "2019-02-20", "value": "50000", "unit": "ng/mL"}
    assert post(client, "/patients/EX-002/labs/new", lab).status_code == 303
    page = client.get("/patients/EX-002").text
    assert "The checks found 1 warning(s): see the findings below." in page
    assert "<td>LAB-014</td><td>warning</td>" in page


def test_the_patient_page_shows_findings_as_they_are_now_without_a_check_run(client, web_registry):
    sign_in(client, "cora")
    assert post(client, "/patients/new", NEW_PATIENT).status_code == 303
    page = client.get("/patients/EX-100").text
    assert "The checks found 1 warning(s), 3 record(s) still to enter" in page  # no antibody test, treatment, follow-up
    assert "<td>ABT-010</td><td>error</td>" in page and "checks run" not in page
    follow_up = {"last_contact_date": "2022-02-10", "vital_status": "alive", "lost_to_follow_up": "no"}
    assert post(client, "/patients/EX-100/follow_up/new", follow_up).status_code == 303
    assert "<td>FUP-010</td>" not in client.get("/patients/EX-100").text


def test_a_coordinator_runs_the_checks_of_their_own_sites_only_and_never_replaces_the_registrys_run(client):
    from test_web_entry import _form_values

    sign_in(client, "dana")
    for study_id in ("EX-001", "EX-901"):  # EX-901 is of site OTHER, not cora's
        path = f"/patients/{study_id}/edit"
        post(client, path, {**_form_values(client, path), "smoking": "", "reason": "history not known after all"})
    post(client, "/checks", {}, form="/checks")
    coordinator = TestClient(client.app)
    sign_in(coordinator, "cora")
    before = coordinator.get("/checks").text
    assert '<a href="/checks">Checks of my sites</a>' in before and "/report.pdf" not in before
    assert "<h1>Data-quality checks of your sites (DEMO)</h1>" in before
    assert "The checks have not run since the application started." in before  # the registry's run is not theirs
    assert post(coordinator, "/checks", {}, form="/checks").status_code == 303
    assert _patients_with_findings(coordinator.get("/checks").text) == {"EX-001"}
    assert _patients_with_findings(client.get("/checks").text) == {"EX-001", "EX-901"}  # the registry's run stays
    assert coordinator.get("/report.pdf").status_code == 403


def _patients_with_findings(page: str) -> set[str]:
    return set(re.findall(r'<a href="/patients/(EX-\d+)#findings">', page))
