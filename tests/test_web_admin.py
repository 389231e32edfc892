"""Accounts and sites from the web, for administrators only; every change audited, no password shown."""

import re

import pytest
import sqlalchemy as sa
from conftest import WEB_PASSWORD
from fastapi.testclient import TestClient
from test_web import sign_in
from test_web_entry import post

from registry.accounts import create_account
from registry.audit import audited_session
from registry.codes import Role
from registry.models import Account, AuditLog, Site
from registry.web.app import create_app


@pytest.fixture
def admin(web_registry):
    with audited_session(web_registry, actor="test") as session:
        create_account(session, "adam", WEB_PASSWORD, Role.ADMIN)
        session.commit()
    client = TestClient(create_app(web_registry, secret_key="test-secret"))
    sign_in(client, "adam")
    return client


def test_only_administrators_reach_the_page(web_registry, admin):
    assert admin.get("/admin").status_code == 200 and 'href="/admin"' in admin.get("/patients").text
    for username in ("cora", "dana"):
        other = TestClient(create_app(web_registry, secret_key="test-secret"))
        sign_in(other, username)
        assert other.get("/admin").status_code == 403
        token = re.search(r'name="csrf_token" value="([^"]+)"', other.get("/patients").text).group(1)
        data = {"csrf_token": token, "username": "eve", "role": "admin", "password": "x" * 20}
        assert other.post("/admin/accounts", data=data).status_code == 403
        assert 'href="/admin"' not in other.get("/patients").text


def test_an_administrator_adds_a_coordinator_who_can_then_sign_in(web_registry, admin):
    new = {"username": "cleo", "role": "coordinator", "site": "OTHER", "password": "a long enough secret"}
    assert post(admin, "/admin/accounts", new, form="/admin").status_code == 303
    assert "Account cleo (coordinator) added." in admin.get("/admin").text
    cleo = TestClient(create_app(web_registry, secret_key="test-secret"))
    assert sign_in(cleo, "cleo", "a long enough secret").status_code == 303
    assert re.findall(r">(EX-\d+)</a>", cleo.get("/patients").text) == ["EX-901"]
    with web_registry.connect() as connection:
        logged = connection.execute(
            sa.select(AuditLog).where(AuditLog.table_name == "account").order_by(AuditLog.id.desc())
        ).mappings().first()  # fmt: skip
    assert (logged["actor"], logged["reason"]) == ("adam", "account cleo created")
    assert "a long enough secret" not in str(logged["new_values"]) and "$argon2" not in str(logged["new_values"])


def test_refusals_are_explained_and_change_nothing(web_registry, admin):
    def accounts():
        with web_registry.connect() as connection:
            return connection.execute(sa.select(Account.username, Account.active, Account.password_hash)).all()

    before = accounts()
    cases = [
        ({"username": "x", "role": "analyst", "password": "short"}, "the password must have at least 12 characters"),
        ({"username": "x", "role": "coordinator", "password": "a long enough secret"},
         "a coordinator needs at least one site (--site CODE)"),
        ({"username": "cora", "role": "analyst", "password": "a long enough secret"},
         "an account named &#39;cora&#39; exists already"),
        ({"username": "y" * 65, "role": "analyst", "password": "a long enough secret"},
         "a sign-in name has at most 64 characters"),
        ({"username": "<b>x</b>", "role": "analyst", "password": "a long enough secret"},
         "&#39;&lt;b&gt;x&lt;/b&gt;&#39; is not a usable sign-in name: lower-case letters a-z, digits, &#39;.&#39;, "
         "&#39;_&#39; and &#39;-&#39;, starting with a letter or digit"),
        ({"username": "xavier", "role": "analyst", "password": "xavier's password"},
         "the password must not contain the user name"),
        ({"username": "x", "role": "boss", "password": "a long enough secret"}, "choose a role"),
    ]  # fmt: skip
    for data, message in cases:
        answer = post(admin, "/admin/accounts", data, form="/admin")
        assert answer.status_code == 422 and f"Account not added: {message}." in answer.text, message
    mine = post(admin, "/admin/accounts/adam/disable", {}, form="/admin")
    assert mine.status_code == 409 and "you cannot disable your own account" in mine.text
    weak = post(admin, "/admin/accounts/cora/password", {"password": "short"}, form="/admin")
    assert "Not done: the password must have at least 12 characters." in weak.text
    assert accounts() == before


def test_an_administrator_disables_an_account_and_resets_a_password(web_registry, admin):
    assert post(admin, "/admin/accounts/dana/disable", {}, form="/admin").status_code == 303
    dana = TestClient(create_app(web_registry, secret_key="test-secret"))
    assert sign_in(dana, "dana").status_code == 401
    assert (
        post(admin, "/admin/accounts/cora/password", {"password": "another long secret"}, form="/admin").status_code
        == 303
    )
    cora = TestClient(create_app(web_registry, secret_key="test-secret"))
    assert sign_in(cora, "cora").status_code == 401
    assert sign_in(cora, "cora", "another long secret").status_code == 303


def test_an_administrator_adds_a_site_and_bad_input_is_refused(web_registry, admin):
    assert (
        post(admin, "/admin/sites", {"code": "NJ1", "name": "Nanjing", "country": "CN"}, form="/admin").status_code
        == 303
    )
    with web_registry.connect() as connection:
        assert connection.execute(sa.select(Site.code, Site.country).where(Site.code == "NJ1")).one() == ("NJ1", "CN")
    cases = [
        ({"code": "X" * 17, "name": "Too long"}, "code is longer than 16 characters"),
        ({"code": "NJ2", "name": ""}, "name is required"),
        ({"code": "NJ1", "name": "Again"}, "site: another record already has the same code"),
    ]
    for data, message in cases:
        answer = post(admin, "/admin/sites", data, form="/admin")
        assert answer.status_code == 422 and f"Site not added: {message}." in answer.text, message


def test_an_administrator_changes_a_role_and_sites_and_every_change_ends_the_sessions(web_registry, admin):
    cora = TestClient(create_app(web_registry, secret_key="test-secret"))
    sign_in(cora, "cora")
    assert re.findall(r">(EX-\d+)</a>", cora.get("/patients").text) == ["EX-001", "EX-002", "EX-003", "EX-004"]
    changed = post(admin, "/admin/accounts/cora/role", {"role": "coordinator", "site": "OTHER"}, form="/admin")
    assert changed.status_code == 303 and "Role of cora changed." in admin.get("/admin").text
    assert cora.get("/patients", follow_redirects=False).status_code == 303  # signed out by the change
    sign_in(cora, "cora")
    assert re.findall(r">(EX-\d+)</a>", cora.get("/patients").text) == ["EX-901"]
    for action, data in (("password", {"password": "another long secret"}), ("disable", {})):
        assert post(admin, f"/admin/accounts/cora/{action}", data, form="/admin").status_code == 303
        assert cora.get("/patients", follow_redirects=False).status_code == 303, action
        sign_in(cora, "cora", "another long secret")
    mine = post(admin, "/admin/accounts/adam/role", {"role": "analyst"}, form="/admin")
    assert mine.status_code == 409 and "Not done: you cannot change your own role." in mine.text
    events = admin.get("/admin").text.split('id="sign-in-events"')[1]
    assert events.index("Account disabled") < events.index("Password changed") < events.index("Role or sites changed")
    assert "testclient" in events and "adam" in events
