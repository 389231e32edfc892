"""Backups: a consistent online copy of the whole database, with a checksum manifest, and its restore.

A backup is a folder holding one data file (SQLite: a copy made with SQLite's online
backup API; PostgreSQL: a ``pg_dump --format=custom`` archive) and ``manifest.json``,
which records what was copied (kind, schema revision, rows per table) and each file's
size and SHA-256, and carries a checksum of itself. A restore checks all of that
before it touches the target, and counts the restored rows against the manifest after.

Checksums show a damaged backup, not a forged one (whoever rewrites the data file can
write a matching manifest), so the audit log's hash chain (registry/audit_chain.py) is
verified in the copy as it is made, recorded in the manifest (a backup of a broken log
is still written, for forensics, and says so), and verified again in the backup's own
data before a restore: a broken chain is refused unless forced. Every restore writes an
audit entry of its own into the restored database: what was restored, over what, forced
or not.
"""

from __future__ import annotations

import ctypes
import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from psycopg.conninfo import make_conninfo

import registry
from registry import db
from registry.audit import log_operation
from registry.audit_chain import ChainReport, chain_head_message, has_chain, verified, verify_database
from registry.codes import AuditAction

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
#: The data file of each kind of database.
DATA_FILES = {"sqlite": "registry.db", "postgresql": "registry.dump"}
KIND_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
_CHUNK = 1 << 20
#: The hidden folder a backup is made in (tempfile.mkdtemp's names), renamed to OUT when complete.
UNFINISHED = re.compile(r"\.(?P<out>.+)\.partial-[a-z0-9_]{8}")
_PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies


class BackupError(Exception):
    """A backup or restore was refused or failed; the message says why (never with a password)."""


class RestoreMismatch(BackupError):
    """The restore ran, but the restored database does not hold the rows the manifest lists."""


@dataclass(frozen=True)
class BackupFile:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """What a backup holds; written as ``manifest.json`` with a checksum of itself (``manifest_sha256``)."""

    format_version: int
    package_version: str
    database: str  # "sqlite" or "postgresql"
    source: str  # the database URL, password masked
    tool: str  # what made the copy, with its version
    schema_revision: str | None
    created_at: str  # ISO 8601, UTC
    tables: dict[str, int]  # rows per table, every table included (alembic_version and audit_log too)
    files: list[BackupFile]
    audit_chain: dict[str, Any] | None = None  # the chain as verified in the copy (ChainReport.as_dict); None: no chain


def backup(engine: sa.Engine, out: Path, removed: list[Path] | None = None) -> Manifest:
    """Copy the database of ``engine`` to the new folder ``out`` (refused if it exists and is not empty).

    The copy is consistent while others write. It is made in a hidden folder beside
    ``out`` and renamed to ``out`` when complete, so ``out`` never holds half a backup;
    the hidden folders of killed backups beside ``out`` are removed first, and listed in
    ``removed``. Files are readable by their owner only: a backup holds direct identifiers.
    """
    kind = engine.dialect.name
    if kind not in DATA_FILES:
        raise BackupError(f"cannot back up a {kind} database: only SQLite and PostgreSQL are supported")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BackupError(f"{out} exists and is not an empty folder: choose a new folder for the backup")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        (removed if removed is not None else []).extend(remove_unfinished(out.parent))
        partial, lock = _locked_partial(out)
    except OSError as error:
        raise BackupError(f"cannot write a backup to {out}: {error}") from None
    try:
        data = partial / DATA_FILES[kind]
        copy = _copy_sqlite if kind == "sqlite" else _dump_postgres
        tool, revision, counts, chain = copy(engine, data)
        data.chmod(0o600)
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            package_version=registry.__version__,
            database=kind,
            source=_shown(engine),
            tool=tool,
            schema_revision=revision,
            created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            tables=counts,
            files=[BackupFile(data.name, data.stat().st_size, _sha256(data))],
            audit_chain=None if chain is None else chain.as_dict(),
        )
        _write_manifest(partial / MANIFEST, manifest)
        partial.rename(out)  # replaces an empty folder; never a non-empty one
    except BaseException as error:
        shutil.rmtree(partial, ignore_errors=True)
        if isinstance(error, OSError | sqlite3.Error | sa.exc.DBAPIError):  # disk full, database unreadable, ...
            reason = error.orig if isinstance(error, sa.exc.DBAPIError) else error
            raise BackupError(f"the backup to {out} failed and was removed: {reason}") from error
        raise
    finally:
        os.close(lock)
    return manifest


def _locked_partial(out: Path) -> tuple[Path, int]:
    """A new hidden folder to make the backup in, and a descriptor holding its lock while the backup runs."""
    while True:
        partial = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))  # mode 0700
        lock = os.open(partial, os.O_RDONLY)
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.fstat(lock).st_nlink:
            return partial, lock
        os.close(lock)  # removed as unfinished between its creation and the lock: take another


def remove_unfinished(folder: Path) -> list[Path]:
    """Remove the hidden folders of killed or crashed backups in ``folder`` (a running backup holds its folder's
    lock and is left alone): they hold a copy of the data, direct identifiers included. Returns those removed."""
    removed = []
    for candidate in sorted(folder.iterdir()):
        if not UNFINISHED.fullmatch(candidate.name) or candidate.is_symlink() or not candidate.is_dir():
            continue
        try:
            lock = os.open(candidate, os.O_RDONLY)
        except OSError:
            continue  # not ours to remove
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(candidate)
            removed.append(candidate)
        except BlockingIOError:
            continue  # a backup at work
        finally:
            os.close(lock)
    return removed


def read_backup(source: Path) -> Manifest:
    """The manifest of the backup in ``source``, once it and every file it lists are shown unchanged."""
    path = source / MANIFEST
    if not path.is_file():
        raise BackupError(f"{path} is missing: {source} is not a backup folder, or not a complete one")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        claimed = document.pop("manifest_sha256")
        if document.get("format_version") != FORMAT_VERSION:
            raise BackupError(
                f"{path}: backup format {document.get('format_version')!r} is not {FORMAT_VERSION}: "
                "restore it with the version of the registry that wrote it"
            )
        if claimed != _canonical_sha256(document):
            raise BackupError(f"{path} has been changed since the backup was written (its checksum does not match)")
        manifest = Manifest(**{**document, "files": [BackupFile(**entry) for entry in document["files"]]})
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise BackupError(f"{path} is not a readable backup manifest ({type(error).__name__}: {error})") from None
    if [entry.name for entry in manifest.files] != [DATA_FILES.get(manifest.database)]:
        raise BackupError(f"{path} lists no data file of a {manifest.database} backup")
    for entry in manifest.files:
        data = source / entry.name
        if not data.is_file():
            raise BackupError(f"{data} is missing: the backup is incomplete")
        if data.stat().st_size != entry.size:
            raise BackupError(f"{data} has {data.stat().st_size} bytes, the manifest says {entry.size}: damaged")
        if _sha256(data) != entry.sha256:
            raise BackupError(f"{data} does not match its SHA-256 in the manifest: it changed since the backup")
    return manifest


def restore(engine: sa.Engine, source: Path, force: bool = False, *, actor: str) -> Manifest:
    """Replace the database of ``engine`` with the backup in ``source``; returns the backup's manifest.

    Refused, with the target untouched, when the backup is changed or incomplete, of
    another kind of database, or when the target holds anything or the backup's audit
    chain is broken and ``force`` is not given. The restore is logged as made by ``actor``
    (in the restored database, when its schema has the audit chain). Raises
    :class:`RestoreMismatch` when the restored rows differ from the manifest.
    """
    manifest = read_backup(source)
    kind, target = engine.dialect.name, _shown(engine)
    if manifest.database != kind:
        backed_up = KIND_NAMES[manifest.database]
        raise BackupError(
            f"{source} is a backup of a {backed_up} database and cannot be restored into {target}, "
            f"a {KIND_NAMES.get(kind, kind)} database: restore it into a {backed_up} database"
        )
    with engine.connect() as connection:
        held, revision = _row_counts(connection), _revision_of(connection)
    if held and not force:
        tables, rows = _counted(len(held), "table"), _counted(sum(held.values()), "row")
        raise BackupError(
            f"{target} is not empty: it holds {tables} with {rows} "
            f"(schema revision {revision or 'none'}); pass --force to replace it"
        )
    if kind == "postgresql" and (extra := sorted(set(held) - set(manifest.tables))):
        raise BackupError(
            f"{target} holds tables the backup does not ({', '.join(extra)}), which a restore would leave "
            "behind: restore into a new, empty database instead"
        )
    data = source / manifest.files[0].name
    chain = _backed_up_chain(engine, data)
    if chain is not None and not chain.intact and not force:
        raise BackupError(
            f"{source} holds a broken audit log ({chain.problem}): it is not restored; "
            "pass --force to restore it all the same (for forensics: the restore is logged)"
        )
    if kind == "sqlite":
        try:
            _restore_sqlite(engine, data)
        except sqlite3.Error as error:  # e.g. the target is locked by a writer: rolled back
            raise BackupError(f"the restore into {target} failed and changed nothing: {error}") from error
    else:
        _restore_postgres(engine, data, clean=bool(held))
    with engine.connect() as connection:
        restored = _row_counts(connection)
    replaced = f"{_counted(len(held), 'table')} with {_counted(sum(held.values()), 'row')}" if held else "nothing"
    _log_restore(engine, source, manifest, chain, force, f"{replaced} (schema revision {revision or 'none'})", actor)
    if restored != manifest.tables:
        differences = [
            f"{name}: {restored.get(name, 'no table')} restored, {manifest.tables.get(name, 'no table')} in the backup"
            for name in sorted(set(restored) | set(manifest.tables))
            if restored.get(name) != manifest.tables.get(name)
        ]
        raise RestoreMismatch(f"{target} was restored but differs from the manifest: " + "; ".join(differences))
    return manifest


def _backed_up_chain(engine: sa.Engine, data: Path) -> ChainReport | None:
    """The audit chain in the backup's data file, verified before the target is touched (None: no chain).

    SQLite: read in the file itself, read-only. PostgreSQL: the archive is restored into
    a scratch database on the target's server, verified and dropped (the restoring role
    needs CREATEDB).
    """
    if engine.dialect.name == "sqlite":
        copy = sa.create_engine(f"sqlite:///file:{data}?mode=ro&uri=true", poolclass=sa.pool.NullPool)
        return verify_database(copy)
    try:
        with db.new_postgres_database(engine.url.render_as_string(hide_password=False), "verify") as url:
            scratch = sa.create_engine(db.database_url(url), poolclass=sa.pool.NullPool)
            _run(scratch, [_program("pg_restore"), "--no-owner", "--no-privileges", str(data)])
            return verify_database(scratch)
    except sa.exc.DBAPIError as error:
        raise BackupError(
            f"the audit log of {data} could not be verified before the restore: {error.orig} "
            "(the restore verifies it in a scratch database: the role needs CREATEDB)"
        ) from None


def _log_restore(
    engine: sa.Engine, source: Path, manifest: Manifest, chain: ChainReport | None, force: bool, replaced: str,
    actor: str,
) -> None:  # fmt: skip
    """The restore's own audit entry, the newest of the restored chain (none before migration 0007's schema)."""
    with engine.begin() as connection:
        if not has_chain(connection):
            return
        log_operation(connection, AuditAction.RESTORE, actor, f"restore of {source}{' (forced)' if force else ''}", {
            "backup": str(source), "backed_up_at": manifest.created_at, "schema_revision": manifest.schema_revision,
            "forced": force, "replaced": replaced,
            "audit_chain": "none" if chain is None else chain_head_message(chain),
        })  # fmt: skip


def _counted(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _shown(engine: sa.Engine) -> str:
    """The database's URL with the password masked, for messages and the manifest."""
    return engine.url.render_as_string(hide_password=True)


def _row_counts(connection: sa.Connection) -> dict[str, int]:
    """Rows in every table of the database (its default schema), by table name."""
    return {
        name: connection.execute(sa.select(sa.func.count()).select_from(sa.table(name))).scalar_one()
        for name in sorted(sa.inspect(connection).get_table_names())
    }


def _revision_of(connection: sa.Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _copy_sqlite(engine: sa.Engine, data: Path) -> tuple[str, str | None, dict[str, int], ChainReport | None]:
    """SQLite's online backup API, in one step: a snapshot even while other connections write (WAL)."""
    path = engine.url.database
    if path and path != ":memory:" and not Path(path).is_file():
        raise BackupError(f"there is no SQLite database at {path}")
    copy = sqlite3.connect(data)
    try:
        with engine.connect() as connection:
            _copy_pages(connection.connection.driver_connection, copy)
        copy.execute("PRAGMA journal_mode = DELETE")  # one self-contained file, no -wal beside it
        (integrity,) = copy.execute("PRAGMA integrity_check").fetchone()
        if integrity != "ok":
            raise BackupError(f"the copy of {path} fails SQLite's integrity check: {integrity}")
    finally:
        copy.close()
    copied = sa.create_engine(f"sqlite:///{data}", poolclass=sa.pool.NullPool)
    with copied.connect() as connection:  # counted and verified in the copy itself: exactly what the backup holds
        counts, revision, chain = _row_counts(connection), _revision_of(connection), verified(connection)
    return f"SQLite {sqlite3.sqlite_version} online backup API", revision, counts, chain


def _dump_postgres(engine: sa.Engine, data: Path) -> tuple[str, str | None, dict[str, int], ChainReport | None]:
    """``pg_dump --format=custom`` of a snapshot exported by this transaction, in which the rows are counted and
    the audit chain verified too."""
    pg_dump = _program("pg_dump")
    version = subprocess.run([pg_dump, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as connection, connection.begin():
        snapshot = connection.execute(sa.text("SELECT pg_export_snapshot()")).scalar_one()
        counts, revision, chain = _row_counts(connection), _revision_of(connection), verified(connection)
        _run(engine, [pg_dump, "--format=custom", f"--snapshot={snapshot}", f"--file={data}"])
    return version, revision, counts, chain


def _restore_sqlite(engine: sa.Engine, data: Path) -> None:
    """SQLite's backup API from the backup file into the target: all pages in one transaction."""
    source = sqlite3.connect(f"file:{data}?mode=ro", uri=True)
    try:
        with engine.connect() as connection:
            _copy_pages(source, connection.connection.driver_connection)
    finally:
        source.close()


def _copy_pages(source: sqlite3.Connection, target: sqlite3.Connection) -> None:
    """Every page of ``source`` into ``target`` in one step (one snapshot, one transaction).

    Python retries a busy database for ever; here a database still busy once SQLite's
    busy timeout has run out aborts the copy instead, and the target is rolled back.
    """

    def give_up_when_busy(status: int, _remaining: int, _total: int) -> None:
        if status in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            raise sqlite3.OperationalError("database is locked (in use by another connection: stop its writers)")

    source.backup(target, progress=give_up_when_busy)


def _restore_postgres(engine: sa.Engine, data: Path, clean: bool) -> None:
    """``pg_restore`` in one transaction: it restores everything or nothing."""
    options = ["--single-transaction", "--no-owner", "--no-privileges"]
    _run(engine, [_program("pg_restore"), *options, *(["--clean", "--if-exists"] if clean else []), str(data)])


def _program(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(
            f"{name} was not found on PATH: install the PostgreSQL client programs of the server's major version "
            "or newer (Debian/Ubuntu: apt-get install postgresql-client)"
        )
    return found


def _run(engine: sa.Engine, command: list[str]) -> None:
    """Run a PostgreSQL client program against the database of ``engine``; the password goes in PGPASSWORD."""
    url = engine.url
    conninfo = make_conninfo(
        **{"host": url.host, "port": url.port, "user": url.username, "dbname": url.database, **url.query}
    )
    environment = {**os.environ, **({"PGPASSWORD": url.password} if url.password else {})}
    done = subprocess.run([*command, "--no-password", f"--dbname={conninfo}"], capture_output=True, text=True,
                          env=environment, preexec_fn=functools.partial(_die_with_parent, os.getpid()))  # fmt: skip
    if done.returncode != 0:
        program = Path(command[0]).name
        raise BackupError(f"{program} failed (exit {done.returncode}): {done.stderr.strip()}")


def _die_with_parent(parent: int) -> None:
    """In the child, before it runs: be killed when the parent dies, whatever kills it (SIGKILL included).

    Else a killed backup's pg_dump goes on writing a copy of the data that nobody will finish or remove;
    an interrupted parent (Ctrl-C, an exception) kills its child itself (subprocess.run).
    """
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the request: nobody is waiting
            os._exit(1)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _canonical_sha256(body: dict[str, Any]) -> str:
    """SHA-256 of the manifest's fields as compact JSON with sorted keys (what ``manifest_sha256`` holds)."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def _write_manifest(path: Path, manifest: Manifest) -> None:
    body = asdict(manifest)
    document = {**body, "manifest_sha256": _canonical_sha256(body)}
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    path.chmod(0o600)
