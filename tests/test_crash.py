"""Crash safety: imports and report runs killed with SIGKILL, then the next run.

Each kill lands at a chosen point of a real ``registry`` command run in a child process:
a hook installed in the child (SQLAlchemy events for the import, Python's audit events
for the report's file operations) sends it SIGKILL there, so every point is reached on
every run, however loaded the machine; one SQLite import is also killed from outside
once its write-ahead log starts to grow. After each kill the database holds exactly
what it held before the import or all of it, and a report folder holds the last good
files or complete new ones, never a part; then the next run succeeds.
All data is synthetic (``registry synth`` and fixtures/demo).
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import orm
from sqlmodel import SQLModel

import registry.report.build  # noqa: F401  (loaded before the forks, like every module a run needs)
from registry import db
from registry.cli import app

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PATIENTS = 400  # an import of a few seconds
KILLED = -signal.SIGKILL


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


class Registry:
    """``registry ARGS`` in a child process forked from this one (the modules are loaded once, not per run).

    ``crash_at`` names where the child kills itself with SIGKILL: ``sql:REGEX`` before the
    first statement matching REGEX, ``commit`` before the first commit, ``after-commit``
    after it, ``audit:REGEX`` at the first audit event (a file opened, renamed, linked,
    removed, a database connected...) whose description matches REGEX.
    """

    def __init__(self, *args: str, crash_at: str | None = None) -> None:
        self.output = tempfile.TemporaryFile(), tempfile.TemporaryFile()  # noqa: SIM115 (closed by wait)
        self.pid = os.fork()
        if self.pid == 0:
            os._exit(self._child(args, crash_at))

    def _child(self, args: tuple[str, ...], crash_at: str | None) -> int:
        try:
            for stream, file in zip((1, 2), self.output, strict=True):
                os.dup2(file.fileno(), stream)
            sys.stdout, sys.stderr = open(1, "w", closefd=False), open(2, "w", closefd=False)  # noqa: SIM115
            os.environ["REGISTRY_ACTOR"] = "crash test"
            if crash_at:
                _kill_at(crash_at)
            app(list(args), prog_name="registry")
        except SystemExit as exit:
            return exit.code if isinstance(exit.code, int) else 1
        except BaseException:
            traceback.print_exc()
            return 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        return 0

    def wait(self) -> Ran:
        _, status = os.waitpid(self.pid, 0)
        stdout, stderr = (file.seek(0) or file.read().decode() for file in self.output)
        for file in self.output:
            file.close()
        return Ran(os.waitstatus_to_exitcode(status), stdout, stderr)

    def kill(self) -> Ran:
        os.kill(self.pid, signal.SIGKILL)
        return self.wait()


def _kill_at(crash_at: str) -> None:
    kind, _, pattern = crash_at.partition(":")
    die = lambda *_: os.kill(os.getpid(), signal.SIGKILL)  # noqa: E731
    stored = lambda connection: connection.engine.url.database  # noqa: E731  (not the import's in-memory scratch)
    if kind == "sql":
        sa.event.listen(
            sa.Engine, "before_cursor_execute", lambda *a: stored(a[0]) and re.search(pattern, a[2]) and die()
        )
    elif kind == "commit":
        sa.event.listen(sa.Engine, "commit", lambda connection: stored(connection) and die())
    elif kind == "after-commit":
        sa.event.listen(orm.Session, "after_commit", lambda session: stored(session.get_bind()) and die())
    elif kind == "audit":
        sys.addaudithook(lambda event, args: re.search(pattern, f"{event} {args}") and die())
    else:
        raise ValueError(f"unknown crash point {crash_at!r}")


def cli(*args: str) -> Ran:
    """Run ``registry ARGS`` to its end."""
    return Registry(*args).wait()


def killed(*args: str, crash_at: str) -> Ran:
    """Run ``registry ARGS`` to its death at ``crash_at``, which must come."""
    run = Registry(*args, crash_at=crash_at).wait()
    assert run.returncode == KILLED, f"{crash_at} was never reached (exit {run.returncode}): {run.stderr[-2000:]}"
    return run


# -- the import -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("synthetic") / "registry"
    made = cli("synth", "--patients", str(PATIENTS), "--seed", "9", "--out", str(folder))
    assert made.returncode == 0, made.stderr
    return folder


def prepared(url: str) -> None:
    """The schema and the synthetic registry's site: the state before the import."""
    engine = db.make_engine(url)
    db.upgrade(engine)
    engine.dispose()
    added = cli("--database", url, "site", "add", "SYN01", "Synthetic site SYN01")
    assert added.returncode == 0, added.stderr


def contents(url: str) -> dict[str, list[tuple]]:
    """Every table's rows, sorted, without the audit trail's commit times."""
    engine = db.make_engine(url)
    tables = {}
    with engine.connect() as connection:
        for table in SQLModel.metadata.sorted_tables:
            rows = connection.execute(sa.select(*(c for c in table.columns if c.name != "changed_at"))).all()
            tables[table.name] = sorted((tuple(row) for row in rows), key=repr)
    engine.dispose()
    return tables


def counts(tables: dict[str, list[tuple]]) -> dict[str, int]:
    return {name: len(rows) for name, rows in tables.items()}


def sound_sqlite(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert connection.execute("PRAGMA foreign_key_check").fetchall() == []


def import_reference(url: str, synthetic: Path) -> dict[str, list[tuple]]:
    prepared(url)
    done = cli("--database", url, "import", str(synthetic))
    assert done.returncode == 0 and f"Imported {synthetic.name}." in done.stdout, done.stderr
    return contents(url)


KILL_POINTS = [  # (phase, where the process dies, what the database then holds)
    ("validating against the stored records", r"sql:FROM patient\b", "before"),
    ("writing the first sheet", r"sql:^INSERT INTO", "before"),
    ("writing the last sheet", r"sql:^(INSERT INTO|COPY) follow_up", "before"),
    ("committing", "commit", "before"),
    ("just after the commit", "after-commit", "after"),
]


def test_a_killed_sqlite_import_leaves_none_or_all_of_it(synthetic: Path, tmp_path: Path) -> None:
    """Each kill starts from what the previous one left, so every run after the first recovers a crashed database."""
    reference = import_reference(f"sqlite:///{tmp_path / 'reference.db'}", synthetic)
    path = tmp_path / "registry.db"
    url = f"sqlite:///{path}"
    prepared(url)
    before = contents(url)
    assert before["audit_log"] and not before["patient"] and len(reference["lab_result"]) > 1000

    kill_when_writing_begins(url, path, synthetic)
    sound_sqlite(path)
    assert contents(url) in (before, reference)
    for phase, crash_at, holds in KILL_POINTS:
        killed("--database", url, "import", str(synthetic), crash_at=crash_at)
        sound_sqlite(path)
        assert contents(url) == (before if holds == "before" else reference), phase
    again = cli("--database", url, "import", str(synthetic))
    assert again.returncode == 0 and "Nothing changed" in again.stdout, again.stderr
    sound_sqlite(path)
    assert contents(url) == reference


def kill_when_writing_begins(url: str, path: Path, synthetic: Path) -> None:
    """Kill an import from outside once its write-ahead log grows (again, from the same start, if it finished first)."""
    start = path.read_bytes()
    wal = path.with_name(path.name + "-wal")
    for _ in range(3):
        run = Registry("--database", url, "import", str(synthetic))
        while os.waitid(os.P_PID, run.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None and not (
            wal.exists() and wal.stat().st_size > 0
        ):
            time.sleep(0.002)
        if run.kill().returncode == KILLED:
            return
        for leftover in (wal, path.with_name(path.name + "-shm")):
            leftover.unlink(missing_ok=True)
        path.write_bytes(start)
    pytest.fail("the import finished three times before it could be killed")


@pytest.fixture
def postgres_urls(postgres_server: str) -> Iterator[tuple[str, str]]:
    with (
        db.new_postgres_database(postgres_server, "crash") as url,
        db.new_postgres_database(postgres_server, "crashref") as reference,
    ):
        yield url, reference


def test_a_killed_postgresql_import_leaves_none_or_all_of_it(synthetic: Path, postgres_urls: tuple[str, str]) -> None:
    """Ids differ from the reference's after a killed import (PostgreSQL's sequences are not rolled back): counted."""
    url, reference_url = postgres_urls
    reference = counts(import_reference(reference_url, synthetic))
    prepared(url)
    before = contents(url)
    for phase, crash_at, holds in KILL_POINTS:
        killed("--database", url, "import", str(synthetic), crash_at=crash_at)
        if holds == "before":
            assert contents(url) == before, phase
        else:
            assert counts(contents(url)) == reference, phase
    again = cli("--database", url, "import", str(synthetic))
    assert again.returncode == 0 and "Nothing changed" in again.stdout, again.stderr
    assert counts(contents(url)) == reference
