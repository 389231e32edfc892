"""Backups and restores (registry.backup), on SQLite and PostgreSQL, with real pg_dump / pg_restore."""

import hashlib
import json
import shutil
import sqlite3
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import SQLModel
from typer.testing import CliRunner

import registry
from registry import db
from registry.accounts import create_account
from registry.audit import audited_session
from registry.backup import BackupError, RestoreMismatch, backup, restore
from registry.cli import app
from registry.codes import Role
from registry.entry import set_deleted
from registry.ingest import import_path
from registry.models import LabResult, Patient, PatientIdentifier, Site
from tests.conftest import add_demo_site, drop_append_only_triggers

DEMO = Path(__file__).resolve().parents[1] / "fixtures" / "demo"
SCHEMA_TABLES = len(SQLModel.metadata.tables) + 1  # every model's table and alembic_version
runner = CliRunner()


def fill(engine: sa.Engine) -> None:
    """Real content in every kind of row: the demo cohort, an account, an edit, a soft delete, an identifier."""
    add_demo_site(engine)
    assert import_path(engine, DEMO, actor="import").written
    with audited_session(engine, actor="dana", reason="corrected at source") as session:
        patient = session.exec(sa.select(Patient).order_by(Patient.id)).scalars().first()
        patient.smoking = "former" if patient.smoking != "former" else "never"
        session.add(PatientIdentifier(patient_id=patient.id, full_name="SYNTHETIC Person", hospital_number="SYN-1"))
        create_account(session, "dana", "correct horse battery", Role.DATA_MANAGER)
        session.commit()
        lab_id = session.exec(sa.select(LabResult.id).order_by(LabResult.id)).scalars().first()
    set_deleted(engine, "labs", lab_id, deleted=True, actor="dana", reason="entered twice")


def every_row(engine: sa.Engine) -> dict[str, list[tuple]]:
    """Every row of every table of the database (reflected, so alembic_version too), in key order."""
    metadata = sa.MetaData()
    metadata.reflect(bind=engine)
    with engine.connect() as connection:
        return {
            name: [tuple(row) for row in connection.execute(sa.select(table).order_by(*table.primary_key.columns))]
            for name, table in sorted(metadata.tables.items())
        }


def restored_rows(engine: sa.Engine, *, forced: bool = False, replaced: str = "nothing") -> dict[str, list[tuple]]:
    """:func:`every_row` of a restored database, once its newest audit entry is shown to be the restore's own."""
    rows = every_row(engine)
    entry, seal, hashed = rows["audit_log"].pop(), rows["audit_seal"].pop(), rows["audit_entry_hash"].pop()
    assert (seal[1:5], entry[10]) == ((entry[10], 1, entry[0], entry[0]), seal[1])  # sealed on its own
    assert hashed[0] == entry[0]
    values = entry[9] if isinstance(entry[9], dict) else json.loads(entry[9])
    reason = f"restore of {values['backup']}{' (forced)' * forced}"
    assert entry[2:9] == ("operator", reason, "restore", "(database)", "", None, None)
    assert (values["forced"], values["replaced"].startswith(replaced)) == (forced, True)
    return rows


@pytest.fixture
def filled(migrated: sa.Engine) -> sa.Engine:
    fill(migrated)
    return migrated


@pytest.fixture
def fresh_url(database_url: str, tmp_path: Path, request: pytest.FixtureRequest):
    """A second, empty database of the same kind as ``database_url``."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'restored.db'}"
        return
    with db.new_postgres_database(request.getfixturevalue("postgres_server"), "restore") as url:
        yield url


@pytest.fixture
def fresh(fresh_url: str):
    engine = db.make_engine(fresh_url)
    yield engine
    engine.dispose()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rewrite_manifest(folder: Path, **changes) -> None:
    """Change manifest fields and give it a matching checksum, as a tool that wrote a wrong manifest would."""
    document = json.loads((folder / "manifest.json").read_text()) | changes
    del document["manifest_sha256"]
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    document["manifest_sha256"] = hashlib.sha256(canonical).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(document))


def test_a_restore_into_a_fresh_database_holds_every_row_of_every_table(filled, fresh, tmp_path):
    original = every_row(filled)
    assert original["patient_identifier"] and original["account"] and original["alembic_version"]
    assert {row[4] for row in original["audit_log"]} == {"insert", "update"}  # the edit and the soft delete

    manifest = backup(filled, tmp_path / "backup")

    kind = filled.dialect.name
    data = tmp_path / "backup" / {"sqlite": "registry.db", "postgresql": "registry.dump"}[kind]
    assert sorted(path.name for path in (tmp_path / "backup").iterdir()) == sorted(["manifest.json", data.name])
    written = json.loads((tmp_path / "backup" / "manifest.json").read_text())
    assert written["format_version"] == 1
    assert written["package_version"] == registry.__version__ != "0+unknown"
    assert written["database"] == kind
    assert written["schema_revision"] == db.head_revision()
    assert written["created_at"].endswith("Z")
    assert written["tables"] == {name: len(rows) for name, rows in original.items()}
    assert written["files"] == [{"name": data.name, "size": data.stat().st_size, "sha256": sha256(data)}]
    assert written["tool"].startswith("pg_dump (PostgreSQL) 15" if kind == "postgresql" else "SQLite 3.")
    assert manifest.tables == written["tables"]
    assert {path.stat().st_mode & 0o777 for path in (tmp_path / "backup").iterdir()} == {0o600}  # identifiers inside

    assert restore(fresh, tmp_path / "backup", actor="operator").tables == written["tables"]
    assert restored_rows(fresh) == original
    assert db.current_revision(fresh) == db.head_revision()


def test_a_backup_never_writes_into_a_folder_that_holds_anything(filled, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("keep me")
    with pytest.raises(BackupError) as refused:
        backup(filled, tmp_path / "taken")
    assert (
        str(refused.value)
        == f"{tmp_path / 'taken'} exists and is not an empty folder: choose a new folder for the backup"
    )
    assert [path.name for path in (tmp_path / "taken").iterdir()] == ["notes.txt"]
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []  # no partial backup left
    (tmp_path / "empty").mkdir()
    backup(filled, tmp_path / "empty")
    assert (tmp_path / "empty" / "manifest.json").is_file()


@pytest.mark.sqlite_only
def test_a_failed_backup_leaves_nothing_behind_and_says_why(tmp_path):
    (tmp_path / "broken.db").write_bytes(b"not a database, " * 512)
    engine = db.make_engine(f"sqlite:///{tmp_path / 'broken.db'}")
    with pytest.raises(BackupError) as failed:
        backup(engine, tmp_path / "backups" / "tonight")
    engine.dispose()
    assert (
        str(failed.value)
        == f"the backup to {tmp_path / 'backups' / 'tonight'} failed and was removed: file is not a database"
    )
    assert list((tmp_path / "backups").iterdir()) == []
    (tmp_path / "file").write_text("")
    with pytest.raises(BackupError) as refused:
        backup(engine, tmp_path / "file" / "tonight")
    assert str(refused.value) == (
        f"cannot write a backup to {tmp_path / 'file' / 'tonight'}: [Errno 17] File exists: '{tmp_path / 'file'}'"
    )


@pytest.mark.sqlite_only
def test_a_sqlite_restore_that_cannot_get_the_target_changes_nothing(tmp_path):
    source = db.make_engine(f"sqlite:///{tmp_path / 'source.db'}")
    db.upgrade(source)
    add_demo_site(source)
    backup(source, tmp_path / "backup")
    source.dispose()
    url = f"sqlite:///{tmp_path / 'target.db'}"
    target = db.make_engine(url)
    sa.event.listen(target, "connect", lambda connection, _: connection.execute("PRAGMA busy_timeout = 100"))
    db.upgrade(target)
    before = every_row(target)
    writer = sqlite3.connect(tmp_path / "target.db")
    writer.execute("BEGIN IMMEDIATE")  # another process writing: the target is locked
    outcome: list[BaseException] = []

    def attempt() -> None:
        try:
            restore(target, tmp_path / "backup", force=True, actor="operator")
        except BaseException as error:
            outcome.append(error)

    attempting = threading.Thread(target=attempt, daemon=True)  # Python's own backup() would wait for ever
    attempting.start()
    attempting.join(timeout=60)
    writer.rollback()
    writer.close()
    assert not attempting.is_alive(), "the restore waited for the locked target instead of giving up"
    assert len(outcome) == 1
    assert isinstance(outcome[0], BackupError)
    assert str(outcome[0]) == (
        f"the restore into {db.redacted(url)} failed and changed nothing: "
        "database is locked (in use by another connection: stop its writers)"
    )
    assert every_row(target) == before
    target.dispose()


@pytest.mark.parametrize("damage", ["changed", "missing", "manifest", "no manifest"])
def test_a_damaged_backup_is_refused_and_the_target_is_left_unchanged(filled, fresh, tmp_path, damage):
    backup(filled, tmp_path / "backup")
    data = next(path for path in (tmp_path / "backup").iterdir() if path.name != "manifest.json")
    manifest = tmp_path / "backup" / "manifest.json"
    if damage == "changed":  # one byte in the middle, size unchanged
        content = bytearray(data.read_bytes())
        content[len(content) // 2] ^= 0xFF
        data.write_bytes(bytes(content))
        expected = f"{data} does not match its SHA-256 in the manifest: it changed since the backup"
    elif damage == "missing":
        data.unlink()
        expected = f"{data} is missing: the backup is incomplete"
    elif damage == "no manifest":
        manifest.unlink()
        expected = f"{manifest} is missing: {tmp_path / 'backup'} is not a backup folder, or not a complete one"
    else:  # a row count edited by hand
        document = json.loads(manifest.read_text())
        document["tables"]["patient"] += 1
        manifest.write_text(json.dumps(document, indent=2))
        expected = f"{manifest} has been changed since the backup was written (its checksum does not match)"
    db.upgrade(fresh)  # a target that holds something, restored over with --force
    add_demo_site(fresh)
    before = every_row(fresh)
    with pytest.raises(BackupError) as refused:
        restore(fresh, tmp_path / "backup", force=True, actor="operator")
    assert str(refused.value) == expected
    assert every_row(fresh) == before


def test_a_non_empty_target_is_refused_without_force_and_replaced_with_it(filled, fresh, fresh_url, tmp_path):
    backup(filled, tmp_path / "backup")
    db.upgrade(fresh)  # the schema alone, and one row of alembic_version, is not empty
    before = every_row(fresh)
    with pytest.raises(BackupError) as refused:
        restore(fresh, tmp_path / "backup", actor="operator")
    assert str(refused.value) == (
        f"{db.redacted(fresh_url)} is not empty: it holds {SCHEMA_TABLES} tables with 1 row "
        f"(schema revision {db.head_revision()}); pass --force to replace it"
    )
    assert every_row(fresh) == before

    add_demo_site(fresh)
    with audited_session(fresh, actor="someone") as session:
        session.add(Site(code="GONE", name="Only in the target"))
        session.commit()
    restore(fresh, tmp_path / "backup", force=True, actor="operator")
    assert restored_rows(fresh, forced=True, replaced=f"{SCHEMA_TABLES} tables with ") == every_row(filled)


def test_a_forced_restore_leaves_no_table_the_backup_does_not_hold(filled, fresh, fresh_url, tmp_path):
    backup(filled, tmp_path / "backup")
    db.upgrade(fresh)
    with fresh.begin() as connection:
        connection.execute(sa.text("CREATE TABLE notes (line TEXT)"))
    if fresh.dialect.name == "sqlite":  # the backup API replaces the whole file
        restore(fresh, tmp_path / "backup", force=True, actor="operator")
        assert restored_rows(fresh, forced=True, replaced=f"{SCHEMA_TABLES + 1} tables with ") == every_row(filled)
        return
    before = every_row(fresh)  # pg_restore --clean drops only what the backup holds: refused instead
    with pytest.raises(BackupError) as refused:
        restore(fresh, tmp_path / "backup", force=True, actor="operator")
    assert str(refused.value) == (
        f"{db.redacted(fresh_url)} holds tables the backup does not (notes), which a restore would leave behind: "
        "restore into a new, empty database instead"
    )
    assert every_row(fresh) == before


def test_a_backup_restores_only_into_its_own_kind_of_database(filled, tmp_path, request):
    backup(filled, tmp_path / "backup")
    if filled.dialect.name == "sqlite":
        other_url = request.getfixturevalue("postgres_server")
        names = ("SQLite", "PostgreSQL")
    else:
        other_url = f"sqlite:///{tmp_path / 'other.db'}"
        names = ("PostgreSQL", "SQLite")
    other = db.make_engine(other_url)
    with pytest.raises(BackupError) as refused:
        restore(other, tmp_path / "backup", actor="operator")
    assert str(refused.value) == (
        f"{tmp_path / 'backup'} is a backup of a {names[0]} database and cannot be restored into "
        f"{db.redacted(other_url)}, a {names[1]} database: restore it into a {names[0]} database"
    )
    other.dispose()


def test_restored_rows_that_differ_from_the_manifest_are_reported(filled, fresh, fresh_url, tmp_path):
    backup(filled, tmp_path / "backup")
    counts = json.loads((tmp_path / "backup" / "manifest.json").read_text())["tables"]
    rewrite_manifest(tmp_path / "backup", tables=counts | {"patient": counts["patient"] + 1})
    with pytest.raises(RestoreMismatch) as mismatch:
        restore(fresh, tmp_path / "backup", actor="operator")
    assert str(mismatch.value) == (
        f"{db.redacted(fresh_url)} was restored but differs from the manifest: "
        f"patient: {counts['patient']} restored, {counts['patient'] + 1} in the backup"
    )


@pytest.mark.sqlite_only
def test_a_sqlite_backup_taken_while_another_thread_writes_is_a_consistent_snapshot(tmp_path):
    url = f"sqlite:///{tmp_path / 'busy.db'}"
    engine = db.make_engine(url)
    db.upgrade(engine)
    fill(engine)
    written: list[str] = []
    stop = threading.Event()

    def keep_writing() -> None:  # each site and its audit_log row in one transaction
        while not stop.is_set():
            code = f"W{len(written):05d}"
            with audited_session(engine, actor="writer") as session:
                session.add(Site(code=code, name="written during the backup"))
                session.commit()
            written.append(code)

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        while len(written) < 20:
            stop.wait(0.01)
        backup(engine, tmp_path / "backup")
        at_backup = len(written)
        while len(written) < at_backup + 20:
            stop.wait(0.01)
    finally:
        stop.set()
        writer.join()

    copy = sqlite3.connect(tmp_path / "backup" / "registry.db")
    assert copy.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    copy.close()
    restored = db.make_engine(f"sqlite:///{tmp_path / 'restored.db'}")
    restore(restored, tmp_path / "backup", actor="operator")
    with restored.connect() as connection:
        sites = connection.execute(sa.select(Site.code).where(Site.code.like("W%")).order_by(Site.code)).scalars()
        sites = list(sites)
        logged = connection.execute(
            sa.text("SELECT count(*) FROM audit_log WHERE actor = 'writer' AND table_name = 'site'")
        ).scalar_one()
    assert 20 <= len(sites) <= at_backup < len(written)
    assert sites == written[: len(sites)]  # a prefix of the writes, nothing skipped
    assert logged == len(sites)  # and each site's audit row with it
    restored.dispose()
    engine.dispose()


def test_pg_dump_gets_the_password_from_the_environment_and_no_message_shows_it(postgres_server, tmp_path, monkeypatch):
    real = shutil.which("pg_dump")
    log = tmp_path / "pg_dump.log"
    (tmp_path / "bin").mkdir()
    wrapper = tmp_path / "bin" / "pg_dump"  # the real pg_dump, recording what it was given
    wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" "PGPASSWORD=$PGPASSWORD" >> {log}\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    with db.new_postgres_database(postgres_server, "secret") as url:
        with_password = sa.make_url(db.database_url(url)).set(password="s3cret-pa55").render_as_string(False)
        engine = db.make_engine(with_password)
        db.upgrade(engine)
        result = runner.invoke(app, ["--database", with_password, "backup", str(tmp_path / "backup")])
        engine.dispose()
    assert result.exit_code == 0, result.output
    arguments = log.read_text().splitlines()
    assert "PGPASSWORD=s3cret-pa55" in arguments
    assert not any("s3cret" in argument for argument in arguments if not argument.startswith("PGPASSWORD="))
    assert "s3cret" not in (tmp_path / "backup" / "manifest.json").read_text()
    assert "s3cret" not in result.output
    assert json.loads((tmp_path / "backup" / "manifest.json").read_text())["source"].count("***") == 1


def test_a_missing_pg_dump_is_named_with_where_to_get_it(postgres_server, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    engine = db.make_engine(postgres_server)
    with pytest.raises(BackupError) as refused:
        backup(engine, tmp_path / "backup")
    engine.dispose()
    assert str(refused.value) == (
        "pg_dump was not found on PATH: install the PostgreSQL client programs of the server's major version "
        "or newer (Debian/Ubuntu: apt-get install postgresql-client)"
    )
    assert not (tmp_path / "backup").exists()


def run(database: str, *args: str):
    return runner.invoke(app, ["--database", database, *args], catch_exceptions=False)


def test_backup_and_restore_commands_end_to_end(database_url, fresh_url, tmp_path):
    assert run(database_url, "db", "upgrade").exit_code == 0
    fill(db.make_engine(database_url))
    out = tmp_path / "backup"

    made = run(database_url, "backup", str(out))
    assert made.exit_code == 0
    lines = made.output.splitlines()
    manifest = json.loads((out / "manifest.json").read_text())
    data = out / manifest["files"][0]["name"]
    rows = sum(manifest["tables"].values())
    assert lines[0] == f"Backup of {db.redacted(database_url)} written to {out}"
    assert lines[1] == f"  schema revision {db.head_revision()}, {rows:,} rows in {SCHEMA_TABLES} tables"
    assert lines[2] == f"  {data.name}  {data.stat().st_size:,} bytes  SHA-256 {sha256(data)}"
    assert lines[3] == f"  manifest.json  (made with {manifest['tool']})"
    chain = manifest["audit_chain"]
    entries, seals = manifest["tables"]["audit_log"], manifest["tables"]["audit_seal"]
    assert chain == {"entries": entries, "head_index": seals, "head_sha256": chain["head_sha256"], "intact": True,
                     "problem": None}  # fmt: skip
    assert lines[4] == f"  audit log intact: {entries:,} entries, head {seals} {chain['head_sha256']}"

    again = run(database_url, "backup", str(out))
    assert (again.exit_code, again.output) == (
        1,
        f"Not backed up: {out} exists and is not an empty folder: choose a new folder for the backup\n",
    )

    restored = run(fresh_url, "restore", str(out))
    assert restored.exit_code == 0
    lines = restored.output.splitlines()
    kind = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}[manifest["database"]]
    assert lines[0] == f"Restored {out} ({kind}, backed up {manifest['created_at']}) into {db.redacted(fresh_url)}"
    assert lines[1].split() == ["table", "rows"]
    assert [line.split() for line in lines[2:-3]] == [[name, f"{n:,}"] for name, n in manifest["tables"].items()]
    assert lines[-3] == f"Every table holds the rows the manifest lists: {rows:,} rows."
    assert lines[-2] == f"Schema revision {db.head_revision()} (up to date)"
    chain = manifest["audit_chain"]  # the restore's own entry chained onto the backed-up head
    assert lines[-1].startswith(f"audit log intact: {chain['entries'] + 1:,} entries, head {chain['head_index'] + 1} ")
    assert run(fresh_url, "db", "current").exit_code == 0

    refused = run(fresh_url, "restore", str(out))
    assert refused.exit_code == 1
    assert refused.output.startswith(
        f"Not restored: {db.redacted(fresh_url)} is not empty: it holds {SCHEMA_TABLES} tables"
    )
    assert run(fresh_url, "restore", str(out), "--force").exit_code == 0

    rewrite_manifest(out, tables=manifest["tables"] | {"site": 2})
    mismatch = run(fresh_url, "restore", str(out), "--force")
    assert (mismatch.exit_code, mismatch.output) == (
        2,
        f"Restored, but not as backed up: {db.redacted(fresh_url)} was restored but differs from the manifest: "
        "site: 1 restored, 2 in the backup\n",
    )


BROKEN = (
    "audit entry 1 (sealed at chain position 1): its content was changed after it was written (it no longer gives its "
    "stored hash)"
)


def test_a_backup_of_a_broken_audit_log_is_kept_says_so_and_restores_only_when_forced(
    filled, fresh, fresh_url, tmp_path
):
    drop_append_only_triggers(filled)
    with filled.begin() as connection:  # an entry rewritten behind the audit's back
        connection.execute(sa.text("UPDATE audit_log SET actor = 'nobody' WHERE id = 1"))
    url, out = filled.url.render_as_string(hide_password=False), tmp_path / "backup"

    made = run(url, "backup", str(out))
    assert made.exit_code == 2
    assert made.stderr.splitlines() == [
        f"WARNING: the backup's audit log BROKEN at {BROKEN} (0 entries verified before it)",
        "It is kept, for forensics, and its manifest says so: it restores only with --force.",
        "See docs/operations.md, 'When the audit chain is broken'",
    ]
    chain = json.loads((out / "manifest.json").read_text())["audit_chain"]
    assert (chain["entries"], chain["head_index"], chain["intact"], chain["problem"]) == (0, 0, False, BROKEN)

    refused = run(fresh_url, "restore", str(out))
    assert (refused.exit_code, refused.output) == (
        1,
        f"Not restored: {out} holds a broken audit log ({BROKEN}): it is not restored; "
        "pass --force to restore it all the same (for forensics: the restore is logged)\n",
    )
    with fresh.connect() as connection:
        assert sa.inspect(connection).get_table_names() == []  # untouched

    forced = run(fresh_url, "restore", str(out), "--force", "--actor", "operator")
    assert forced.exit_code == 3
    assert forced.stderr.splitlines()[-2:] == [
        f"audit log BROKEN at {BROKEN} (0 entries verified before it)",
        "See docs/operations.md, 'When the audit chain is broken'",
    ]
    assert restored_rows(fresh, forced=True)["audit_log"][0][2] == "nobody"  # restored as it was, for forensics
    with fresh.connect() as connection:
        entry = connection.execute(sa.text("SELECT new_values FROM audit_log ORDER BY id DESC LIMIT 1")).scalar_one()
    entry = entry if isinstance(entry, dict) else json.loads(entry)
    assert entry["audit_chain"] == f"audit log BROKEN at {BROKEN} (0 entries verified before it)"


@pytest.mark.sqlite_only
def test_a_backup_rewritten_with_recomputed_checksums_is_refused_by_its_audit_chain(tmp_path):
    """The issue's case: the data file edited, its size and SHA-256 and the manifest's checksum written anew."""
    engine = db.make_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    db.upgrade(engine)
    fill(engine)
    out = tmp_path / "backup"
    backup(engine, out)
    data = out / "registry.db"
    edited = sqlite3.connect(data)
    edited.execute("DROP TRIGGER audit_log_no_update")
    edited.execute("UPDATE audit_log SET new_values = json_set(new_values, '$.name', 'Elsewhere') WHERE id = 1")
    edited.commit()
    edited.close()
    rewrite_manifest(out, files=[{"name": data.name, "size": data.stat().st_size, "sha256": sha256(data)}])
    fresh = db.make_engine(f"sqlite:///{tmp_path / 'restored.db'}")
    with pytest.raises(BackupError) as refused:
        restore(fresh, out, actor="operator")
    assert str(refused.value) == (
        f"{out} holds a broken audit log ({BROKEN}): it is not restored; pass --force to restore it all the same "
        "(for forensics: the restore is logged)"
    )
    assert not (tmp_path / "restored.db").exists() or every_row(fresh) == {}
