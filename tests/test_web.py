"""The web application's first part: sign-in, sessions, CSRF, throttling, site-scoped patient pages.

Driven over HTTP with FastAPI's TestClient against a real database (both engines).
"""

import html
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import WEB_PASSWORD as PASSWORD
from fastapi.testclient import TestClient

from registry.web import security
from registry.web.app import create_app


@pytest.fixture
def client(web_registry):
    return TestClient(create_app(web_registry, secret_key="test-secret"))


def _csrf(client: TestClient, path: str = "/login") -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text).group(1)


def sign_in(client: TestClient, username: str, password: str = PASSWORD, **extra):
    data = {"username": username, "password": password, "csrf_token": _csrf(client), **extra}
    return client.post("/login", data=data, follow_redirects=False)


def test_unauthenticated_requests_go_to_the_sign_in_page(client):
    for path in ("/", "/patients", "/patients/EX-001", "/patients/nobody"):
        response = client.get(path, follow_redirects=False)
        assert (response.status_code, response.headers["location"]) == (303, f"/login?next={path}")


def test_sign_in_sets_a_safe_session_cookie_and_sign_out_ends_it(client):
    response = sign_in(client, "cora", next="/patients/EX-001")
    assert (response.status_code, response.headers["location"]) == (303, "/patients/EX-001")
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert client.get("/patients").status_code == 200
    out = client.post("/logout", data={"csrf_token": _csrf(client, "/patients")}, follow_redirects=False)
    assert out.headers["location"] == "/login"
    assert client.get("/patients", follow_redirects=False).status_code == 303


def test_an_open_redirect_is_refused(client):
    assert sign_in(client, "cora", next="//evil.example/x").headers["location"] == "/patients"


def test_wrong_passwords_are_throttled_and_disabled_accounts_refused(client, stopped_clock):
    for _ in range(security.NAME_AT_ADDRESS.free):
        response = sign_in(client, "dana", "not the password")
        assert response.status_code == 401 and "Wrong user name or password." in response.text
    blocked = sign_in(client, "dana")  # the right password, too soon
    assert blocked.status_code == 429 and blocked.headers["retry-after"] == "1"
    assert "Too many failed sign-ins from this address: try again in 1 s." in blocked.text
    stopped_clock.advance(seconds=1)
    assert sign_in(client, "dana").status_code == 303
    assert sign_in(client, "gone").status_code == 401
    assert sign_in(client, "nobody").status_code == 401


def test_a_form_without_a_valid_csrf_token_is_refused(client):
    data = {"username": "cora", "password": PASSWORD}
    assert client.post("/login", data=data).status_code == 403
    assert client.post("/login", data={**data, "csrf_token": "forged"}).status_code == 403
    sign_in(client, "cora")
    assert client.post("/logout", data={"csrf_token": "forged"}).status_code == 403


def test_a_coordinator_sees_only_the_patients_of_their_sites(client):
    sign_in(client, "cora")
    listing = client.get("/patients").text
    assert re.findall(r">(EX-\d+)</a>", listing) == ["EX-001", "EX-002", "EX-003", "EX-004"]
    assert client.get("/patients/EX-001").status_code == 200
    other = client.get("/patients/EX-901")
    missing = client.get("/patients/EX-999")
    assert other.status_code == missing.status_code == 404
    assert other.text == missing.text  # another site's patient is indistinguishable from none
    assert "EX-901" not in client.get("/patients", params={"site": "OTHER"}).text


def test_a_data_manager_sees_every_site(client):
    sign_in(client, "dana")
    listing = client.get("/patients").text
    assert "EX-901" in listing and "4 patient" not in listing and "5 patient(s)" in listing
    assert client.get("/patients/EX-901").status_code == 200
    assert re.findall(r">(EX-\d+)</a>", client.get("/patients", params={"q": "90"}).text) == ["EX-901"]
    assert re.findall(r">(EX-\d+)</a>", client.get("/patients", params={"q": "%"}).text) == []
    for injection in ("' OR '1'='1", "EX-001'; DROP TABLE patient; --", "_"):
        assert re.findall(r">(EX-\d+)</a>", client.get("/patients", params={"q": injection}).text) == []
    assert "5 patient(s)" in client.get("/patients").text  # nothing was dropped


def test_the_patient_page_shows_records_and_history_escaped(client):
    sign_in(client, "cora")
    page = client.get("/patients/EX-002").text
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "herpes_zoster" in page and "tofacitinib" in page
    assert "insert" in page and "patient" in page  # the audit history of the import


def test_registry_serve_answers_on_loopback(web_registry, database_url):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = Path(sys.executable).with_name("registry")
    server = subprocess.Popen([str(script), "--database", database_url, "serve", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=1) as answer:
                    assert answer.status == 200 and b"Sign in" in answer.read()
                    break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("registry serve did not answer")
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_the_patient_list_comes_a_page_at_a_time_with_its_filters_kept(client, monkeypatch):
    from registry.web import pages

    monkeypatch.setattr(pages, "PAGE_SIZE", 2)
    sign_in(client, "dana")

    def listed(**params) -> tuple[list[str], dict[str, str], str]:
        text = client.get("/patients", params=params).text
        links = {rel: html.unescape(href) for href, rel in re.findall(r'<a href="([^"]+)" rel="(prev|next)"', text)}
        counted = re.search(r"(\d+ patient\(s\)[^<]*)</p>", text).group(1)
        return re.findall(r">(EX-\d+)</a>", text), links, counted

    assert listed() == (["EX-001", "EX-002"], {"next": "/patients?page=2"}, "5 patient(s), 1–2 shown")
    assert listed(page=2) == (
        ["EX-003", "EX-004"],
        {"prev": "/patients?page=1", "next": "/patients?page=3"},
        "5 patient(s), 3–4 shown",
    )
    last = (["EX-901"], {"prev": "/patients?page=2"}, "5 patient(s), 5–5 shown")
    assert listed(page=3) == last
    assert listed(page=99) == last  # past the end: the last page
    assert listed(q="EX-00", page=2) == (["EX-003", "EX-004"], {"prev": "/patients?q=EX-00&page=1"},
                                         "4 patient(s), 3–4 shown")  # fmt: skip
    assert listed(q="EX-9") == (["EX-901"], {}, "1 patient(s)")  # one page: no links
    assert client.get("/patients", params={"page": 0}).status_code == 422
