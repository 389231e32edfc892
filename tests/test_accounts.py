"""Accounts of the web application, created and changed with `registry user`."""

import sqlalchemy as sa
from typer.testing import CliRunner

from registry.accounts import MIN_PASSWORD_LENGTH, password_matches
from registry.cli import app
from registry.models import Account, AuditLog

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
            "only coordinators are tied to sites; the analyst role sees every site",
        ),
        (
            ["user", "add", "bob", "--role", "coordinator", "--site", "XX9"],
            PASSWORD,
            "unknown site(s) XX9: register them first (registry site add)",
        ),
        (
            ["user", "add", " bob", "--role", "analyst"],
            PASSWORD,
            "' bob' is not a usable sign-in name (empty, or spaces at either end)",
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
