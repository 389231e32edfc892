"""Queries and record status on the web (registry/web/workflow.py): opening a query from a finding or on a field,
answering, closing and re-opening it, the list with its summary, who may do what and of which site, and a patient
marked complete, verified, signed (a wrong password refused), re-opened, and voided by an edit.

Driven over HTTP with FastAPI's TestClient against a real database (both engines), read back after each step.
"""

import html
import re

import pytest
import sqlalchemy as sa
from conftest import WEB_PASSWORD
from fastapi.testclient import TestClient
from test_web import sign_in
from test_web_entry import NEW_PATIENT, _form_values

from registry.accounts import create_account
from registry.audit import audited_session
from registry.codes import RecordStatus, Role
from registry.models import DataQuery, LabResult, Patient, Signature
from registry.queries import About, list_queries, open_query, thread
from registry.signoff import state_of
from registry.web.app import create_app

FERRITIN = {"analyte": "ferritin", "sample_date": "2019-02-20", "value": "50000", "unit": "ng/mL"}


@pytest.fixture
def registry_db(web_registry):
    """``web_registry`` with the investigator ivy (DEMO), the coordinator olga (OTHER) and the analyst ana."""
    with audited_session(web_registry, actor="test") as session:
        create_account(session, "ivy", WEB_PASSWORD, Role.INVESTIGATOR, ["DEMO"])
        create_account(session, "olga", WEB_PASSWORD, Role.COORDINATOR, ["OTHER"])
        create_account(session, "ana", WEB_PASSWORD, Role.ANALYST)
        session.commit()
    return web_registry


@pytest.fixture
def as_user(registry_db):
    """A signed-in client of its own per user name."""
    clients: dict[str, TestClient] = {}

    def signed(username: str) -> TestClient:
        if username not in clients:
            clients[username] = TestClient(create_app(registry_db, secret_key="test-secret"))
            assert sign_in(clients[username], username).status_code == 303
        return clients[username]

    return signed


def csrf_of(client: TestClient, path: str = "/patients") -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text).group(1)


def post(client: TestClient, path: str, data: dict, form: str = "/patients"):
    return client.post(path, data={"csrf_token": csrf_of(client, form), **data}, follow_redirects=False)


def flash(text: str) -> str:
    found = re.search(r'<p class="flash" role="status">(.*?)</p>', text, re.S)
    return html.unescape(found.group(1)) if found else ""


def after(client: TestClient, response) -> str:
    """The message of the page a POST redirected to (303)."""
    assert response.status_code == 303, response.text
    return flash(client.get(response.headers["location"]).text)


def open_forms(page: str) -> list[dict[str, str]]:
    """The fields of each "Open query" form of a findings table."""
    forms = re.findall(
        r'<form class="inline" method="post" action="(/patients/[^"]+/queries)">(.*?)</form>', page, re.S
    )
    found = []
    for action, body in forms:
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', body))
        (question,) = re.findall(r"<textarea[^>]*>([^<]*)</textarea>", body)
        found.append({name: html.unescape(value) for name, value in {**fields, "question": question}.items()}
                     | {"action": action})  # fmt: skip
    return found


def query_row(page: str, query_id: int) -> list[str]:
    """The cells of the query's row in a patient page's Queries section, as text."""
    row = re.search(rf'<tr id="query-{query_id}">(.*?)</tr>', page, re.S).group(1)
    return [
        html.unescape(re.sub(r"<[^>]+>", "", cell)).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
    ]


def status_of(page: str) -> str:
    return re.search(r'<strong id="record-status">([^<]*)</strong>', page).group(1)


def lab_key(engine, study_id: str) -> int:
    with engine.connect() as connection:
        return connection.execute(
            sa.select(LabResult.id).join(Patient, Patient.id == LabResult.patient_id)
            .where(Patient.study_id == study_id, LabResult.value == 50000)
        ).scalar_one()  # fmt: skip


def test_a_query_opened_from_a_finding_is_answered_closed_and_reopened(as_user, registry_db):
    dana, cora = as_user("dana"), as_user("cora")
    assert post(dana, "/patients/EX-002/labs/new", FERRITIN).status_code == 303
    assert post(dana, "/checks", {}, form="/checks").status_code == 303
    (form,) = [f for f in open_forms(dana.get("/checks").text) if f["rule"] == "LAB-014"]
    key = lab_key(registry_db, "EX-002")
    assert (form["action"], form["table"], form["record"], form["field"], form["value"], form["back"]) == (
        "/patients/EX-002/queries", "lab_result", str(key), "value", "50000", "/checks#findings")  # fmt: skip
    assert form["question"].startswith("LAB-014: ")
    opened = post(dana, form.pop("action"), form, form="/checks")
    assert opened.headers["location"] == "/checks#findings"
    assert flash(dana.get("/checks").text) == "Query 1 opened."
    checks = dana.get("/checks").text
    assert '<a href="/patients/EX-002#query-1">query 1 open</a>' in checks
    assert [f["rule"] for f in open_forms(checks)].count("LAB-014") == 0  # the number instead of the button
    again = post(dana, "/patients/EX-002/queries", form, form="/checks")
    assert after(dana, again) == (f"Not done: query 1 on lab_result {key}, field value of patient EX-002 is open: "
                                  "add to it rather than opening another.")  # fmt: skip
    (row,) = list_queries(registry_db).to_dict("records")
    assert (row["rule"], row["value"], row["status"], row["opened_by"]) == ("LAB-014", "50000", "open", "dana")

    page = cora.get("/patients/EX-002").text
    assert query_row(page, 1)[:4] == ["1", f"lab_result {key}, field value", "LAB-014", "open"]
    assert query_row(page, 1)[4].startswith("opened by dana on ")
    assert '<a class="query-marker" href="#query-1">query 1 open</a>' in page
    assert 'action="/queries/1/answer"' in page and 'action="/queries/1/close"' not in page
    assert 'action="/patients/EX-002/queries"' not in page  # a coordinator opens none
    answered = post(cora, "/queries/1/answer", {"text": "The report reads 50,000 ng/mL."})
    assert answered.headers["location"] == "/patients/EX-002#query-1"
    assert after(cora, answered) == "Answer sent: query 1 is answered, for a data manager to close or re-open."
    assert query_row(cora.get("/patients/EX-002").text, 1)[3] == "answered"

    assert after(dana, post(dana, "/queries/1/close", {"text": "  "})) == "Not done: the message is required."
    assert after(dana, post(dana, "/queries/1/close", {"text": "Accepted."})) == "Query 1 closed."
    page = dana.get("/patients/EX-002").text
    assert query_row(page, 1)[3] == "closed" and 'class="query-marker" href="#query-1"' not in page  # none once closed
    assert after(cora, post(cora, "/queries/1/answer", {"text": "more"})) == (
        "Not done: query 1 is closed: it cannot be answered (only a query open or answered can)."
    )
    reopened = post(dana, "/queries/1/reopen", {"text": "Repeat the test, please."})
    assert after(dana, reopened) == "Query 1 re-opened: it awaits the site's answer again."
    assert [(m.action.value, m.written_by, m.body) for m in thread(registry_db, 1)] == [
        ("opened", "dana", form["question"]),
        ("answered", "cora", "The report reads 50,000 ng/mL."),
        ("closed", "dana", "Accepted."),
        ("reopened", "dana", "Repeat the test, please."),
    ]
    assert "Repeat the test, please." in cora.get("/patients/EX-002").text


def test_a_query_on_a_field_is_answered_by_correcting_it_through_the_form(as_user, registry_db):
    dana, cora = as_user("dana"), as_user("cora")
    refused = post(dana, "/patients/EX-001/queries", {"field": "nonsense", "question": "?"})
    assert after(dana, refused).startswith("Not done: patient has no field 'nonsense': choose one of study_id, ")
    assert after(dana, post(dana, "/patients/EX-001/queries", {"field": "smoking", "question": " "})) == (
        "Not done: the question is required."
    )
    opened = post(dana, "/patients/EX-001/queries", {"field": "smoking", "question": "Smoking history, please?"})
    assert opened.headers["location"] == "/patients/EX-001#queries"
    assert after(dana, opened) == "Query 1 opened."
    page = cora.get("/patients/EX-001").text
    assert query_row(page, 1)[1].startswith("patient ") and query_row(page, 1)[1].endswith(", field smoking")
    assert "Queries not closed on this record:" in page and "query 1 open</a> on smoking" in page

    path = "/patients/EX-001/edit"
    values = _form_values(cora, path)
    new = "former" if values["smoking"] != "former" else "never"
    saved = cora.post(path, data={**values, "smoking": new, "reason": "asked the patient"}, follow_redirects=False)
    assert after(cora, saved) == "Saved: smoking. Answers query 1."
    page = cora.get("/patients/EX-001").text
    assert query_row(page, 1)[3] == "answered"
    assert f"smoking changed from {values['smoking']} to {new}: asked the patient" in page

    labs = post(dana, "/patients/EX-001/queries", {"about": "lab_result:999999", "question": "Which lab?"})
    assert after(dana, labs) == "Not done: patient EX-001 has no lab_result record 999999."


def test_queries_are_kept_to_their_sites_and_roles(as_user, registry_db):
    ours = open_query(registry_db, "EX-001", "Ours?", actor="dana")
    theirs = open_query(registry_db, "EX-901", "Theirs?", actor="dana")
    cora, olga, ana, ivy, dana = (as_user(name) for name in ("cora", "olga", "ana", "ivy", "dana"))

    def listed(client: TestClient) -> list[str]:
        return re.findall(r'<a href="/patients/[^"]+#query-\d+">(\d+)</a>', client.get("/queries").text)

    assert listed(cora) == [str(ours)] and listed(olga) == [str(theirs)] and listed(ivy) == [str(ours)]
    assert listed(dana) == listed(ana) == [str(ours), str(theirs)]
    assert cora.get("/patients/EX-901").status_code == 404
    for path in (f"/queries/{theirs}/answer", "/queries/999999/answer"):  # another site's: as one that is not
        response = post(cora, path, {"text": "x"})
        assert response.status_code == 404 and "Not found" in response.text
    assert post(cora, "/patients/EX-901/queries", {"question": "x"}).status_code == 404
    assert post(cora, "/patients/EX-901/status/complete", {}).status_code == 404
    assert post(ivy, "/patients/EX-901/status/sign", {"password": WEB_PASSWORD}).status_code == 404
    assert after(olga, post(olga, f"/queries/{theirs}/answer", {"text": "Ours, yes."})).startswith("Answer sent")

    for client in (ana, ivy):  # readers
        for action in ("answer", "close", "reopen"):
            assert post(client, f"/queries/{ours}/{action}", {"text": "x"}).status_code == 403
        assert post(client, "/patients/EX-001/queries", {"question": "x"}).status_code == 403
        page = client.get("/patients/EX-001").text
        assert "Ours?" in page and 'action="/queries/' not in page and 'action="/patients/EX-001/queries"' not in page
    for action in ("close", "reopen"):
        assert post(cora, f"/queries/{ours}/{action}", {"text": "x"}).status_code == 403
    assert post(cora, "/patients/EX-001/queries", {"question": "x"}).status_code == 403
    for path in (f"/queries/{ours}/answer", "/patients/EX-001/queries", "/patients/EX-001/status/complete"):
        assert cora.post(path, data={"text": "x", "question": "x"}).status_code == 403  # no CSRF token
        assert cora.post(path, data={"csrf_token": "forged", "text": "x"}).status_code == 403
    assert [m.body for m in thread(registry_db, ours)] == ["Ours?"]  # nothing written by the refusals
    assert 'href="/queries"' in cora.get("/patients").text


def counts(page: str, table: str) -> dict[str, int]:
    body = re.search(rf'<table id="{table}"><tbody>(.*?)</tbody></table>', page, re.S)
    if body is None:
        assert f'<p class="muted" id="{table}">none</p>' in page
        return {}
    return {html.unescape(name): int(n) for name, n in re.findall(r"<tr><th>(.*?)</th><td>(\d+)</td></tr>",
                                                                  body.group(1))}  # fmt: skip


def test_the_query_list_filters_and_counts(as_user, registry_db):
    first = open_query(registry_db, "EX-001", "a", actor="dana", about=About("patient", None, "smoking"))
    open_query(registry_db, "EX-002", "b", actor="dana")
    open_query(registry_db, "EX-901", "c", actor="dana")
    dana, cora = as_user("dana"), as_user("cora")
    post(cora, f"/queries/{first}/answer", {"text": "never smoked"})
    page = dana.get("/queries").text
    assert counts(page, "by-status") == {"open": 2, "answered": 1, "closed": 0}
    assert counts(page, "open-by-age") == {"up to 7 days": 2, "8-30 days": 0, "over 30 days": 0}
    assert counts(page, "open-by-rule") == {"(no rule)": 2}
    assert counts(page, "open-by-site") == {"DEMO": 1, "OTHER": 1}
    assert counts(page, "open-by-coordinator") == {"cora": 1, "olga": 1}
    assert "3 query(ies)" in page
    answered = dana.get("/queries", params={"status": "answered"}).text
    assert re.findall(r'#query-\d+">(\d+)</a>', answered) == [str(first)]
    assert 'href="/patients/EX-001#query-1"' in answered
    other = dana.get("/queries", params={"site": "OTHER"}).text
    assert re.findall(r'<td><a href="/patients/([^"#]+)">', other) == ["EX-901"]
    assert counts(other, "by-status") == {"open": 1, "answered": 0, "closed": 0}
    mine = cora.get("/queries", params={"site": "OTHER"}).text  # not a site of hers: nothing
    assert "No queries match these filters." in mine and counts(mine, "open-by-site") == {}
    assert counts(cora.get("/queries").text, "by-status") == {"open": 1, "answered": 1, "closed": 0}


def test_a_patient_is_marked_complete_verified_signed_and_reopened_through_the_web(as_user, registry_db):
    cora, dana, ivy = as_user("cora"), as_user("dana"), as_user("ivy")
    assert post(cora, "/patients/new", NEW_PATIENT).status_code == 303
    refused = after(cora, post(cora, "/patients/EX-100/status/complete", {}))
    assert refused.startswith("Not done: patient EX-100 cannot be marked complete: a required form is missing (")
    assert status_of(cora.get("/patients/EX-100").text) == "in progress"

    assert 'action="/patients/EX-001/status/complete"' in cora.get("/patients/EX-001").text
    assert post(ivy, "/patients/EX-001/status/complete", {}).status_code == 403
    done = post(cora, "/patients/EX-001/status/complete", {})
    assert done.headers["location"] == "/patients/EX-001#status"
    assert after(cora, done) == "Marked complete."
    page = ivy.get("/patients/EX-001").text
    assert status_of(page) == "complete" and ", set by cora on " in page
    assert "By signing you attest: <strong id=\"meaning\">I attest that the data of patient EX-001 are complete and " \
           "accurate</strong>." in page  # fmt: skip
    assert '<input type="password" id="sign-password" name="password" autocomplete="current-password" required>' in page
    assert 'action="/patients/EX-001/status/sign"' not in cora.get("/patients/EX-001").text
    assert post(cora, "/patients/EX-001/status/verify", {}).status_code == 403
    assert post(dana, "/patients/EX-001/status/sign", {"password": WEB_PASSWORD}).status_code == 403

    wrong = after(ivy, post(ivy, "/patients/EX-001/status/sign", {"password": "not my password"}))
    assert wrong == "Not done: the user name or password is not right: nothing was signed."
    assert state_of(registry_db, "EX-001").status is RecordStatus.COMPLETE
    signed = post(ivy, "/patients/EX-001/status/sign", {"password": WEB_PASSWORD, "username": "cora"})
    assert after(ivy, signed) == "Signed: I attest that the data of patient EX-001 are complete and accurate."
    page = cora.get("/patients/EX-001").text
    assert status_of(page) == "signed"
    assert re.search(r'<p id="signature">Signed by <strong>ivy</strong> on [\d-]+ [\d:]+ UTC: “I attest that the data '
                     r"of patient EX-001 are complete and accurate”.</p>", page)  # fmt: skip
    assert re.search(r"EX-001</a></td>.*?<td>signed</td>", cora.get("/patients").text, re.S)

    path = "/patients/EX-001/edit"  # any change voids the signature
    values = _form_values(cora, path)
    new = "former" if values["smoking"] != "former" else "never"
    assert cora.post(path, data={**values, "smoking": new, "reason": "corrected after the call"},
                     follow_redirects=False).status_code == 303  # fmt: skip
    page = cora.get("/patients/EX-001").text
    assert status_of(page) == "complete" and '<p id="signature">' not in page
    voided = re.search(r'<table id="voided-signatures">.*?<tbody>(.*?)</tbody>', page, re.S).group(1)
    cells = [html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", voided, re.S)]
    assert [cells[0], cells[2], cells[4], cells[5]] == [
        "ivy", "I attest that the data of patient EX-001 are complete and accurate", "cora",
        "data changed: corrected after the call"]  # fmt: skip

    assert after(dana, post(dana, "/patients/EX-001/status/verify", {})) == (
        "Marked verified: the source data were checked."
    )
    assert after(ivy, post(ivy, "/patients/EX-001/status/sign", {"password": WEB_PASSWORD})).startswith("Signed: ")
    assert after(dana, post(dana, "/patients/EX-001/status/reopen", {"reason": " "})) == (
        "Not done: a reason (at most 500 characters) is required to re-open a patient."
    )
    assert after(dana, post(dana, "/patients/EX-001/status/reopen", {"reason": "lab results to add"})) == (
        "Re-opened: the patient is in progress again."
    )
    state = state_of(registry_db, "EX-001")
    assert state.status is RecordStatus.IN_PROGRESS and state.signature is None
    assert [s.void_reason for s in state.signatures] == ["re-opened: lab results to add",
                                                         "data changed: corrected after the call"]  # fmt: skip
    with registry_db.connect() as connection:
        signers = connection.execute(sa.select(Signature.signer)).scalars().all()
        assert signers == ["ivy", "ivy"] and connection.execute(sa.select(sa.func.count(DataQuery.id))).scalar() == 0
    assert after(ivy, post(ivy, "/patients/EX-001/status/sign", {"password": WEB_PASSWORD})) == (
        "Not done: patient EX-001 is in_progress: only a patient complete or verified can be signed."
    )
    assert state_of(registry_db, "EX-001").status is RecordStatus.IN_PROGRESS


def test_signature_passwords_are_throttled_like_sign_ins_and_refusals_logged(as_user, registry_db, stopped_clock):
    from registry.models import SignInEvent
    from registry.web import security

    cora, ivy = as_user("cora"), as_user("ivy")
    post(cora, "/patients/EX-001/status/complete", {})
    for _ in range(security.NAME_AT_ADDRESS.free):
        refused = after(ivy, post(ivy, "/patients/EX-001/status/sign", {"password": "guess"}))
        assert refused == "Not done: the user name or password is not right: nothing was signed."
    too_soon = after(ivy, post(ivy, "/patients/EX-001/status/sign", {"password": WEB_PASSWORD}))
    assert too_soon == "Not done: too many failed attempts from this address: try again in 1 s; nothing was signed."
    stopped_clock.advance(seconds=1)
    assert after(ivy, post(ivy, "/patients/EX-001/status/sign", {"password": WEB_PASSWORD})).startswith("Signed: ")
    with registry_db.connect() as connection:
        logged = connection.execute(
            sa.select(SignInEvent.username, SignInEvent.outcome, SignInEvent.client_address)
            .where(SignInEvent.username == "ivy").order_by(SignInEvent.id)
        ).all()  # fmt: skip
    assert [outcome.value for _, outcome, _ in logged] == ["success", *["signature_refused"] * 5, "throttled"]
    assert {client for *_, client in logged} == {"testclient"}
