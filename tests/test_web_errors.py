"""The header policy of every response, errors answered as pages, and a form sent after its session ended.

Driven over HTTP with FastAPI's TestClient against a real database (both engines).
"""

import base64
import html
import json
import logging
import re

import pytest
import sqlalchemy as sa
from conftest import WEB_PASSWORD
from fastapi import HTTPException
from fastapi.testclient import TestClient
from test_web import sign_in
from test_web_entry import _form_values, csrf_of, refusal, snapshot, treatment_keys

from registry.accounts import create_account
from registry.audit import audited_session
from registry.codes import Role
from registry.web.app import create_app

POLICY = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


@pytest.fixture
def client(web_registry):
    return TestClient(create_app(web_registry, secret_key="test-secret"))


def policy_of(response) -> dict[str, str | None]:
    return {name: response.headers.get(name) for name in [*POLICY, "cache-control", "strict-transport-security"]}


@pytest.mark.parametrize("https", [False, True])
def test_every_response_carries_the_header_policy(web_registry, https):
    client = TestClient(create_app(web_registry, secret_key="test-secret", https=https), base_url="https://testserver")
    hsts = "max-age=31536000" if https else None
    answers = {"sign-in page": client.get("/login"), "redirect to sign-in": client.get("/patients/EX-002")}
    sign_in(client, "dana")
    key = treatment_keys(client, "EX-002")[0]
    for name, path in [("patient list", "/patients"), ("patient page", "/patients/EX-002"),
                       ("form", f"/patients/EX-002/treatments/{key}/edit"), ("checks", "/checks"),
                       ("not found", "/patients/EX-404"), ("invalid", "/checks?page=0")]:  # fmt: skip
        answers[name] = client.get(path, follow_redirects=False)
    for name, answer in answers.items():
        assert policy_of(answer) == {**POLICY, "cache-control": "no-store", "strict-transport-security": hsts}, name
    stylesheet = client.get("/registry.css")  # the responses without patient data: cached
    assert stylesheet.headers["content-type"] == "text/css; charset=utf-8"
    assert policy_of(stylesheet) == {**POLICY, "cache-control": "max-age=3600", "strict-transport-security": hsts}
    script = client.get("/registry.js")
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert policy_of(script) == {**POLICY, "cache-control": "max-age=3600", "strict-transport-security": hsts}


def test_no_page_holds_inline_script_or_style(client, web_registry):
    """The policy forbids them, so a page that held one would break: none does."""
    with audited_session(web_registry, actor="test") as session:
        create_account(session, "adam", WEB_PASSWORD, Role.ADMIN)
        session.commit()
    pages = [client.get("/login").text]
    sign_in(client, "adam")
    pages.append(client.get("/admin").text)
    sign_in(client, "dana")
    key = treatment_keys(client, "EX-002")[0]
    for path in ("/patients", "/patients/EX-002", "/patients/new", f"/patients/EX-002/treatments/{key}/edit",
                 "/checks", "/patients/EX-404"):  # fmt: skip
        pages.append(client.get(path).text)
    script = '<script src="/registry.js" defer></script>'  # the application's own script, from this site
    for text in pages:
        assert '<link rel="stylesheet" href="/registry.css">' in text and text.count(script) == 1
        assert not re.search(r"<script|<style|\sstyle=|\son[a-z]+=", text.replace(script, ""), re.I)


def test_refusals_and_invalid_requests_answer_a_page_that_says_what_to_do(client):
    page = client.get("/no/such/page")
    assert (page.status_code, page.headers["content-type"]) == (404, "text/html; charset=utf-8")
    assert refusal(page.text) == ("Not found", [])
    assert "go back to the patient list." in page.text and '<a href="/patients">All patients</a>' in page.text
    sign_in(client, "cora")
    forbidden = client.get("/report.pdf")  # the report is not a coordinator's (their own sites' checks are)
    assert forbidden.status_code == 403
    assert refusal(forbidden.text) == ("Not allowed", ["Your role (coordinator) may not do this."])
    assert "ask a data manager or an administrator." in forbidden.text
    assert "cora (coordinator)" in forbidden.text  # the application's layout, signed in
    other_site = client.get("/patients/EX-901/edit")
    assert (other_site.status_code, refusal(other_site.text)) == (404, ("Not found", ["No such patient."]))
    sign_in(client, "dana")
    invalid = client.get("/checks", params={"page": "0"})
    assert (invalid.status_code, invalid.headers["content-type"]) == (422, "text/html; charset=utf-8")
    assert refusal(invalid.text) == ("Not accepted", ["page: Input should be greater than or equal to 1."])
    assert "Go back, correct what is listed, and send it again." in invalid.text
    missing = client.post("/login", data={"username": "dana"})
    assert missing.status_code == 422
    assert refusal(missing.text) == ("Not accepted", ["password: Field required."])


def test_a_conflict_and_an_unexpected_error_answer_pages_and_the_log_holds_no_patient_data(web_registry, caplog):
    app = create_app(web_registry, secret_key="test-secret")

    @app.get("/conflict")
    def conflict() -> None:
        raise HTTPException(status_code=409, detail="This was changed meanwhile")

    @app.get("/patients/{study_id}/fails")
    def fails(study_id: str) -> None:
        raise RuntimeError(f"a bug that quotes {study_id}, born 1970-03-04")

    client = TestClient(app)
    answer = client.get("/conflict")
    assert (answer.status_code, refusal(answer.text)) == (409, ("Not done", ["This was changed meanwhile."]))
    assert "Reload the page to see what is stored now, then try again." in answer.text
    with caplog.at_level(logging.ERROR, logger="registry.web"):
        failed = client.get("/patients/EX-002/fails")
    assert (failed.status_code, failed.headers["content-type"]) == (500, "text/html; charset=utf-8")
    assert refusal(failed.text) == ("Something went wrong", [])
    assert "The error has been logged and nothing more was done." in failed.text
    assert "RuntimeError" not in failed.text and "EX-002" not in failed.text  # no traceback, no detail
    assert policy_of(failed)["content-security-policy"] == POLICY["content-security-policy"]
    (logged,) = [r.getMessage() for r in caplog.records if r.name == "registry.web"]
    assert logged.startswith("unexpected RuntimeError answering GET /patients/{study_id}/fails (")
    assert "in fails" in logged and "EX-002" not in logged and "1970" not in logged


def signed_out_form(client: TestClient, path: str, changes: dict[str, str]) -> dict[str, str]:
    """What the form at ``path`` sends with ``changes`` typed, after its session ended: the sign-in page's fields."""
    sent = {**_form_values(client, path), **changes, "csrf_token": csrf_of(client, path)}
    client.cookies.clear()  # the session ended
    answer = client.post(path, data=sent, follow_redirects=False)
    assert answer.status_code == 401
    assert re.search(r'<p class="error" role="alert">([^<]*)</p>', answer.text).group(1) == (
        "You were signed out before this was saved: sign in again to go back to the form with what you typed."
    )
    hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', answer.text))
    assert hidden["next"] == path and hidden["csrf_token"] != sent["csrf_token"]  # a new session's token
    typed = json.loads(html.unescape(hidden["typed"]))
    assert typed == {name: value for name, value in sent.items() if name != "csrf_token"}  # never the old token
    return {"next": hidden["next"], "typed": html.unescape(hidden["typed"])}


def _readable_cookies(client: TestClient) -> str:
    """The cookies as whoever holds them can read them: a signed cookie is base64 JSON before its signature."""
    texts = []
    for value in client.cookies.values():
        head = value.split(".")[0]
        texts += [value, base64.b64decode(head + "=" * (-len(head) % 4), altchars=b"-_").decode("utf-8", "ignore")]
    return " ".join(texts)


def test_a_form_sent_after_the_session_ended_opens_again_with_what_was_typed(client, web_registry):
    sign_in(client, "cora")
    key = treatment_keys(client, "EX-002")[0]
    path = f"/patients/EX-002/treatments/{key}/edit"
    before = snapshot(web_registry)
    carried = signed_out_form(client, path, {"dose": "12", "reason": "per pharmacy"})
    assert snapshot(web_registry) == before
    wrong = sign_in(client, "cora", "not the password", **carried)
    assert wrong.status_code == 401 and 'name="typed"' in wrong.text  # a mistyped password keeps it too
    back = sign_in(client, "cora", **carried)
    assert (back.status_code, back.headers["location"]) == (303, path)
    assert "per pharmacy" not in back.headers.get("set-cookie", "")  # kept on the server, with the new session
    assert "pharmacy" not in _readable_cookies(client)
    with web_registry.connect() as connection:
        stored = connection.execute(sa.text("SELECT resumed_form FROM web_session WHERE resumed_form IS NOT NULL"))
        assert "per pharmacy" in stored.scalar_one()
    form = client.get(path).text
    assert re.search(r'<p class="warning-box" role="status" id="note">([^<]*)</p>', form).group(1) == (
        "Not saved yet: you were signed out before saving. Check what you typed, then save."
    )
    assert 'name="dose" value="12"' in form and ">per pharmacy</textarea>" in form
    assert snapshot(web_registry) == before  # shown, not saved
    assert 'name="dose" value="12"' not in client.get(path).text  # once
    saved = client.post(path, data={**json.loads(carried["typed"]), "csrf_token": csrf_of(client, path)},
                        follow_redirects=False)  # fmt: skip
    assert saved.status_code == 303 and "Saved: dose." in client.get("/patients/EX-002").text


def test_the_way_back_to_a_form_checks_site_and_role_again(client, web_registry):
    sign_in(client, "dana")
    path = "/patients/EX-901/edit"  # site OTHER
    carried = signed_out_form(client, path, {"smoking": "current", "reason": "x"})
    assert sign_in(client, "cora", **carried).headers["location"] == path  # cora works for DEMO only
    assert client.get(path).status_code == 404
    assert sign_in(client, "dana", **{**carried, "next": "//evil.example/x"}).headers["location"] == "/patients"
    form = client.get(path).text  # what was typed is kept for its own address only
    assert '<option value="current" selected>' not in form and 'id="note"' not in form
