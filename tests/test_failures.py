"""Failures of the machine (issue 17, point 2): a full disk, a read-only database, a database locked by another writer.

Each is met by a real ``registry`` command in a child process, which must answer one
plain message and exit code 1, no traceback, and leave nothing half-written: every
file it would have replaced holds what it held, no temporary is left beside it, and
the database holds what it held. A full disk is a file size limit (RLIMIT_FSIZE, with
SIGXFSZ ignored): a write past it fails with EFBIG, as one past the end of a disk does.
All data is synthetic (fixtures/demo).
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import add_demo_site

from registry import db
from registry.ingest import import_path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
#: Below every output of the demo cohort that is tested here, above the 32 KiB of a SQLite -shm file.
FULL_AT = 20_000


def registry(url: str, *args: str, full_at: int | None = None, **environment: str) -> subprocess.CompletedProcess:
    """``registry ARGS`` on the database ``url`` in a child process, its disk full after ``full_at`` bytes a file."""

    def limited() -> None:
        if full_at is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (full_at, full_at))

    env = {**os.environ, db.URL_VARIABLE: url, "PYTHONDONTWRITEBYTECODE": "1", "REGISTRY_ACTOR": "test", **environment}
    return subprocess.run([sys.executable, "-m", "registry", *args], preexec_fn=limited, capture_output=True,
                          text=True, env=env, timeout=300)  # fmt: skip


def refused(ran: subprocess.CompletedProcess, message: str) -> None:
    """The command failed with exactly ``message`` and nothing else on stderr."""
    assert (ran.returncode, ran.stderr.strip()) == (1, message), ran.stderr


def files_in(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones included), by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def demo(migrated: sa.Engine) -> Iterator[sa.Engine]:
    """The demo cohort, with a connection held open (a SQLite database's -shm file exists: the child need not
    write it)."""
    add_demo_site(migrated)
    assert import_path(migrated, FIXTURES / "demo", actor="test").written
    with migrated.connect():
        yield migrated


def url_of(engine: sa.Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


@pytest.mark.parametrize(
    ("out", "options"),
    [("export", []), ("export.xlsx", []), ("shared", ["--pseudonymise", "--key-file"])],
    ids=["csv-folder", "xlsx", "pseudonymised"],
)
def test_an_export_to_a_full_disk_leaves_the_previous_export(
    demo: sa.Engine, tmp_path: Path, out: str, options: list[str]
) -> None:
    outputs, key = tmp_path / "outputs", tmp_path / "export.key"
    key.write_text("k" * 64)
    command = ["export", str(outputs / out), *options, *([str(key)] if options else [])]
    assert registry(url_of(demo), *command).returncode == 0
    before = files_in(outputs)

    ran = registry(url_of(demo), *command, full_at=FULL_AT)
    refused(ran, f"Nothing written: {outputs / out}: File too large (EFBIG)")
    assert files_in(outputs) == before


@pytest.mark.parametrize(
    "command",
    [["template", "{out}"], ["template", "{out}.xlsx"], ["dictionary", "--output", "{out}.md"],
     ["synth", "--patients", "40", "--out", "{out}"], ["synth", "--patients", "40", "--out", "{out}.xlsx"]],
    ids=["template-csv", "template-xlsx", "dictionary", "synth-csv", "synth-xlsx"],
)  # fmt: skip
def test_a_command_writing_to_a_full_disk_leaves_what_was_there(tmp_path: Path, command: list[str]) -> None:
    out = tmp_path / "outputs" / "made"
    args = [part.format(out=out) for part in command]
    url = f"sqlite:///{tmp_path / 'unused.db'}"
    assert registry(url, *args).returncode == 0
    before = files_in(out.parent)

    ran = registry(url, *args, full_at=2_000)
    target = next(part for part in args if part.startswith(str(out)))
    assert ran.stderr.startswith(f"Nothing written: {target}") and ran.stderr.endswith(": File too large (EFBIG)\n")
    assert ran.returncode == 1, ran.stderr
    assert files_in(out.parent) == before


def test_a_report_archived_on_a_full_disk_leaves_no_results_without_their_pdf(demo: sa.Engine, tmp_path: Path) -> None:
    archive, config = tmp_path / "archive", tmp_path / "registry.toml"
    config.write_text('analyses = ["mortality"]\n')
    ran = registry(url_of(demo), "report", "--archive", str(archive), "--config", str(config), full_at=FULL_AT)
    assert ran.returncode == 1 and "Traceback" not in ran.stderr, ran.stderr
    (line,) = ran.stderr.splitlines()
    assert line.startswith(f"Nothing written: {archive}/report-") and line.endswith(".pdf: File too large (EFBIG)")
    assert sorted(p.name for p in archive.iterdir()) == [".report.lock", "report.log"]


def contents(engine: sa.Engine) -> dict[str, list[tuple]]:
    """Every row of every table."""
    with engine.connect() as connection:
        tables = sa.inspect(connection).get_table_names()
        return {name: sorted(map(tuple, connection.execute(sa.text(f'SELECT * FROM "{name}"'))), key=repr)
                for name in tables}  # fmt: skip


def test_an_import_onto_a_full_sqlite_disk_writes_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    engine = db.make_engine(url)
    db.upgrade(engine)
    add_demo_site(engine)
    before = contents(engine)
    with engine.connect():  # its -shm file exists
        ran = registry(url, "import", str(FIXTURES / "demo"), full_at=FULL_AT)  # the write-ahead log cannot grow
    refused(ran, f"Nothing written: the database {url} could not be written (disk I/O error): is its disk full?")
    assert contents(engine) == before
    engine.dispose()


@pytest.fixture
def registered(migrated: sa.Engine) -> sa.Engine:
    """A migrated database with the demo site."""
    add_demo_site(migrated)
    return migrated


def read_only(engine: sa.Engine) -> str:
    """A URL of ``engine``'s database that cannot write: SQLite opened read-only, or a PostgreSQL database whose
    transactions are read-only."""
    if engine.dialect.name == "sqlite":
        return f"sqlite:///file:{engine.url.database}?mode=ro&uri=true"
    with engine.connect() as connection:
        connection.execute(sa.text(f'ALTER DATABASE "{engine.url.database}" SET default_transaction_read_only = on'))
        connection.commit()
    return url_of(engine)


def test_a_write_to_a_read_only_database_says_so_and_writes_nothing(registered: sa.Engine) -> None:
    before, url = contents(registered), read_only(registered)
    ran = registry(url, "import", str(FIXTURES / "demo"))
    detail = {"sqlite": "attempt to write a readonly database",
              "postgresql": "cannot execute INSERT in a read-only transaction"}[registered.dialect.name]  # fmt: skip
    refused(ran, f"Nothing written: the database {db.redacted(url)} is read-only ({detail})")
    refused(
        registry(url, "site", "add", "NEW", "New site"),
        f"Nothing written: the database {db.redacted(url)} is read-only ({detail})",
    )
    assert contents(registered) == before


@pytest.fixture
def locked(registered: sa.Engine) -> Iterator[sa.Engine]:
    """The database with a write lock held by another writer: a SQLite write transaction, a PostgreSQL table lock."""
    with registered.connect() as connection:
        if registered.dialect.name == "sqlite":
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.execute(sa.text("LOCK TABLE site IN ACCESS EXCLUSIVE MODE"))
        yield registered
        connection.rollback()


def test_a_write_to_a_database_locked_past_the_busy_timeout_says_so_and_writes_nothing(locked: sa.Engine) -> None:
    url = url_of(locked)
    ran = registry(url, "site", "add", "NEW", "New site", REGISTRY_BUSY_TIMEOUT="0.5")
    detail = {"sqlite": "database is locked", "postgresql": "canceling statement due to lock timeout"}[
        locked.dialect.name
    ]
    refused(ran, f"Nothing written: the database {db.redacted(url)} is locked by another writer (waited 0.5 s: {detail}); "
                 "try again when it has finished")  # fmt: skip
