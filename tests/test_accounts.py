"""Accounts of the web application, created and changed with `registry user`."""

import json

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from registry.accounts import MIN_PASSWORD_LENGTH, AccountError, common_passwords, hash_password, password_matches
from registry.cli import app
from registry.models import Account, AuditLog, WebSession
from registry.sites import SiteError, register_site

runner = CliRunner()
PASSWORD = "correct horse battery"


def registry(url):
    def run(*args, password=None):
        return runner.invoke(app, ["--database", url, *args, "--actor", "admin"], input=password)

    assert run("site", "add", "NJ1", "Hospital").exit_code == 0
    assert run("site", "add", "SH2", "Other hospital").exit_code == 0
    return run


def _account(engine, username) -> Account:
    with engine.connect() as connection:
        return Account(**connection.execute(sa.select(Account).where(Account.username == username)).mappings().one())


def test_accounts_are_created_listed_and_disabled(migrated, database_url):
    run = registry(database_url)
    add = run("user", "add", "alice", "--role", "coordinator", "--site", "NJ1", "--site", "SH2", "--password-stdin",
              password=PASSWORD + "\n")  # fmt: skip
    assert (add.exit_code, add.output) == (0, "Account alice (coordinator) added\n")
    assert run("user", "add", "erin", "--role", "admin", "--password-stdin", password=PASSWORD).exit_code == 0
    assert run("user", "disable", "erin").output == "Account erin disabled\n"
    listed = runner.invoke(app, ["--database", database_url, "user", "list"])
    assert listed.output == "alice\tcoordinator\tactive\tNJ1,SH2\nerin\tadmin\tdisabled\t\n"


def test_passwords_are_argon2id_hashes_never_stored_or_logged(migrated, database_url):
    run = registry(database_url)
    run("user", "add", "alice", "--role", "analyst", "--password-stdin", password=PASSWORD)
    alice = _account(migrated, "alice")
    assert alice.password_hash.startswith("$argon2id$") and PASSWORD not in alice.password_hash
    assert password_matches(alice, PASSWORD) and not password_matches(alice, PASSWORD + "!")
    assert run("user", "passwd", "alice", "--password-stdin", password="another long password").exit_code == 0
    alice = _account(migrated, "alice")
    assert password_matches(alice, "another long password") and not password_matches(alice, PASSWORD)
    with migrated.connect() as connection:
        logged = connection.execute(sa.select(AuditLog).where(AuditLog.table_name == "account")).mappings().all()
    assert [(e["action"], e["actor"]) for e in logged] == [("insert", "admin"), ("update", "admin")]
    assert logged[1]["new_values"] == {"password_hash": "[identifier redacted]"}
    assert "argon2" not in str([dict(e) for e in logged])


def test_bad_requests_are_refused_and_nothing_is_written(migrated, database_url):
    run = registry(database_url)
    cases = [
        (
            ["user", "add", "bob", "--role", "analyst"],
            "short",
            f"the password must have at least {MIN_PASSWORD_LENGTH} characters",
        ),
        (
            ["user", "add", "bob", "--role", "coordinator"],
            PASSWORD,
            "a coordinator needs at least one site (--site CODE)",
        ),
        (
            ["user", "add", "bob", "--role", "analyst", "--site", "NJ1"],
            PASSWORD,
            "only coordinators and investigators are tied to sites; the analyst role sees every site",
        ),
        (
            ["user", "add", "bob", "--role", "coordinator", "--site", "XX9"],
            PASSWORD,
            "unknown site(s) XX9: register them first (registry site add)",
        ),
        (
            ["user", "add", " bob", "--role", "analyst"],
            PASSWORD,
            "' bob' is not a usable sign-in name: lower-case letters a-z, digits, '.', '_' and '-', starting with a "
            "letter or digit",
        ),
        (["user", "disable", "nobody"], None, "no account named 'nobody'"),
    ]
    for args, password, message in cases:
        result = run(*args, *(["--password-stdin"] if password else []), password=password)
        assert (result.exit_code, result.output) == (1, f"Not done: {message}\n"), args
    with migrated.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(Account)).scalar() == 0
    run("user", "add", "bob", "--role", "analyst", "--password-stdin", password=PASSWORD)
    again = run("user", "add", "bob", "--role", "analyst", "--password-stdin", password=PASSWORD)
    assert again.output == "Not done: an account named 'bob' exists already\n"


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("eleven char", "the password must have at least 12 characters"),
        (" \t" * 8, "the password must not be only spaces"),
        ("x" * 20, "the password must not be one character repeated"),
        ("my name is Alice, ok?", "the password must not contain the user name"),
        ("Password1234", "the password is one of the most common passwords: choose another"),
        ("QWERTYUIOPASDF", "the password is one of the most common passwords: choose another"),
    ],
)
def test_weak_passwords_are_refused_with_the_rule_they_break(password, message):
    with pytest.raises(AccountError) as refused:
        hash_password(password, "alice")
    assert str(refused.value) == message
    assert hash_password("correct horse battery", "alice").startswith("$argon2id$")


def test_the_shipped_common_passwords_are_long_enough_to_matter():
    listed = common_passwords()
    assert len(listed) > 300 and all(len(p) >= MIN_PASSWORD_LENGTH and p == p.lower() for p in listed)


@pytest.mark.parametrize(
    "username", ["Alice", "al ice", "al/ice", "<b>al</b>", "al\u200bice", "аlice", ".alice", "alice\x00", ""]
)
def test_user_names_outside_the_documented_characters_are_refused(migrated, database_url, username):
    run = registry(database_url)
    result = run("user", "add", username, "--role", "analyst", "--password-stdin", password=PASSWORD)
    rule = "lower-case letters a-z, digits, '.', '_' and '-', starting with a letter or digit"
    assert (result.exit_code, result.output) == (1, f"Not done: {username!r} is not a usable sign-in name: {rule}\n")
    assert run("user", "add", "a.lice_2-b", "--role", "analyst", "--password-stdin", password=PASSWORD).exit_code == 0


@pytest.mark.parametrize("code", ["nj1", "NJ 1", "NJ/1", "<B>", "NJ\u200b1", "-NJ", "NJ１"])
def test_site_codes_outside_the_documented_characters_are_refused(migrated, code):
    rule = "may hold only capital letters A-Z, digits, '_' and '-', and starts with a letter or digit"
    with pytest.raises(SiteError) as refused:
        register_site(migrated, {"code": code, "name": "Hospital"}, actor="admin")
    assert str(refused.value) == f"code {rule}"
    assert register_site(migrated, {"code": "NJ_1-B", "name": "Hospital"}, actor="admin") == "NJ_1-B"


def test_a_new_role_and_sites_are_set_and_end_the_sessions(migrated, database_url):
    run = registry(database_url)
    run("user", "add", "alice", "--role", "coordinator", "--site", "NJ1", "--password-stdin", password=PASSWORD)
    changed = run("user", "role", "alice", "--role", "coordinator", "--site", "SH2")
    assert (changed.exit_code, changed.output) == (0, "Role of alice is now coordinator\n")
    assert run("user", "role", "alice", "--role", "analyst").exit_code == 0
    refused = run("user", "role", "alice", "--role", "analyst", "--site", "NJ1")
    assert (
        refused.output
        == "Not done: only coordinators and investigators are tied to sites; the analyst role sees every site\n"
    )
    listed = runner.invoke(app, ["--database", database_url, "user", "list"])
    assert listed.output == "alice\tanalyst\tactive\t\n"
    with migrated.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(WebSession)).scalar() == 0
    events = runner.invoke(app, ["--database", database_url, "user", "events", "--user", "alice", "--json"])
    assert [(e["username"], e["outcome"], e["client_address"], e["actor"]) for e in json.loads(events.output)] == [
        ("alice", "role_changed", None, "admin")
    ] * 2
    run("user", "passwd", "alice", "--password-stdin", password="another long password")
    run("user", "disable", "alice")
    lines = runner.invoke(app, ["--database", database_url, "user", "events", "--limit", "2"]).output.splitlines()
    assert [line.split("\t")[1:] for line in lines] == [
        ["alice", "disabled", "", "admin"],
        ["alice", "password_changed", "", "admin"],
    ]
