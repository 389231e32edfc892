"""The header policy of every response.

Driven over HTTP with FastAPI's TestClient against a real database (both engines).
"""

import re

import pytest
from conftest import WEB_PASSWORD
from fastapi.testclient import TestClient
from test_web import sign_in
from test_web_entry import treatment_keys

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
    stylesheet = client.get("/registry.css")  # the one response without patient data: cached
    assert stylesheet.headers["content-type"] == "text/css; charset=utf-8"
    assert policy_of(stylesheet) == {**POLICY, "cache-control": "max-age=3600", "strict-transport-security": hsts}


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
    for text in pages:
        assert '<link rel="stylesheet" href="/registry.css">' in text
        assert not re.search(r"<script|<style|\sstyle=|\son[a-z]+=", text, re.I)
