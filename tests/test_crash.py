"""Crash safety: imports, report runs and backups killed with SIGKILL, then the next run.

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

import contextlib
import fcntl
import io
import json
import os
import re
import signal
import sqlite3
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import add_demo_site
from pypdf import PdfReader
from sqlalchemy import orm
from sqlmodel import SQLModel

import registry.report.build  # noqa: F401  (loaded before the forks, like every module a run needs)
from registry import db
from registry.atomic import remove_stale_temporaries, write_atomically
from registry.audit_chain import verify_chain
from registry.cli import app
from registry.ingest import import_path
from registry.report.archive import LOG_NAME, locked, recover, store

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PATIENTS = 400  # an import of a few seconds
KILLED = -signal.SIGKILL


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str
    pid: int


class Child:
    """``target()`` in a child process forked from this one (every module is loaded once, not per run).

    The child's exit status is what ``target`` raised with SystemExit (0 if it returned,
    1 on another exception, its traceback on stderr), or -9 if it was killed.
    """

    def __init__(self, target: Callable[[], object]) -> None:
        self.output = tempfile.TemporaryFile(), tempfile.TemporaryFile()  # noqa: SIM115 (closed by wait)
        self.pid = os.fork()
        if self.pid == 0:
            os._exit(self._child(target))

    def _child(self, target: Callable[[], object]) -> int:
        try:
            for stream, file in zip((1, 2), self.output, strict=True):
                os.dup2(file.fileno(), stream)
            sys.stdout, sys.stderr = open(1, "w", closefd=False), open(2, "w", closefd=False)  # noqa: SIM115
            target()
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
        return Ran(os.waitstatus_to_exitcode(status), stdout, stderr, self.pid)

    def kill(self) -> Ran:
        os.kill(self.pid, signal.SIGKILL)
        return self.wait()


def command(*args: str, crash_at: str | None = None) -> Child:
    """``registry ARGS`` in a child process, which kills itself with SIGKILL at ``crash_at``, if given.

    ``crash_at``: ``sql:REGEX`` before the first statement matching REGEX, ``commit`` before
    the first commit, ``after-commit`` after it (statements and commits of the registry's
    database), ``audit:REGEX`` at the first audit event (a file opened, renamed, linked,
    removed, a database connected...) whose description matches REGEX.
    """

    def run() -> None:
        os.environ["REGISTRY_ACTOR"] = "crash test"
        if crash_at:
            _kill_at(crash_at)
        app(list(args), prog_name="registry")

    return Child(run)


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
    return command(*args).wait()


def killed(*args: str, crash_at: str) -> Ran:
    """Run ``registry ARGS`` to its death at ``crash_at``, which must come."""
    run = command(*args, crash_at=crash_at).wait()
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


#: What differs between two runs of the same import: the commit times, the random token of each transaction's
#: entries and the hashes that cover them.
RUN_BY_RUN = {"changed_at", "batch", "content_sha256", "previous_sha256", "seal_sha256"}


def contents(url: str) -> dict[str, list[tuple]]:
    """Every table's rows, sorted, without what differs run by run; the audit chain is verified intact first."""
    engine = db.make_engine(url)
    tables = {}
    with engine.connect() as connection:
        assert verify_chain(connection).intact
        for table in SQLModel.metadata.sorted_tables:
            rows = connection.execute(sa.select(*(c for c in table.columns if c.name not in RUN_BY_RUN))).all()
            tables[table.name] = sorted((tuple(row) for row in rows), key=repr)
    engine.dispose()
    return tables


def counts(tables: dict[str, list[tuple]]) -> dict[str, int]:
    return {name: len(rows) for name, rows in tables.items()}


def sound_sqlite(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as connection:
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
        run = command("--database", url, "import", str(synthetic))
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
    for phase, crash_at, holds in KILL_POINTS[2:]:  # from writing on: validation is the same as on SQLite
        killed("--database", url, "import", str(synthetic), crash_at=crash_at)
        if holds == "before":
            assert contents(url) == before, phase
        else:
            assert counts(contents(url)) == reference, phase
    again = cli("--database", url, "import", str(synthetic))
    assert again.returncode == 0 and "Nothing changed" in again.stdout, again.stderr
    assert counts(contents(url)) == reference


# -- the report -------------------------------------------------------------------------

CHANGES = {"os.rename", "os.link", "os.symlink", "os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree"}
WRITING = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def pdf(run: int) -> bytes:
    return f"%PDF-1.7 run {run} ".encode() + b"x" * 50_000 + b"\n%%EOF\n"


def results(run: int) -> bytes:
    return json.dumps({"run": run, "padding": "y" * 20_000}).encode()


def run_of(data: bytes) -> int | None:
    """Which run wrote these bytes, if they are a whole file of one."""
    return next((run for run in (1, 2, 3) if data in (pdf(run), results(run))), None)


def publish(folder: Path, out: Path, run: int, stem: str, kill_at_change: int | None = None) -> None:
    """What a report run does with its bytes (``registry report --out OUT --archive FOLDER``).

    With ``kill_at_change`` n, the process kills itself at its n-th change to the file
    system once it holds the lock (a file opened for writing, renamed, linked, removed...).
    """
    with locked(folder):
        if kill_at_change:
            changes = 0

            def count(event: str, args: tuple) -> None:
                nonlocal changes
                if event in CHANGES or (event == "open" and isinstance(args[2], int) and args[2] & WRITING):
                    changes += 1
                    if changes == kill_at_change:
                        os.kill(os.getpid(), signal.SIGKILL)

            sys.addaudithook(count)
        recover(folder)
        write_atomically(out, pdf(run))
        store(folder, stem, pdf(run), results(run))


def files_of(folder: Path) -> dict[str, bytes]:
    """Every report file a reader sees by name (following links), with its bytes; not the log."""
    files = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file() and p.name != LOG_NAME)
    return {p.name: p.read_bytes() for p in files}


def publish_before_pairs(folder: Path, out: Path, run: int, stem: str) -> None:
    """What a report run did before latest.* were links to a pair: four files, each renamed into place."""
    folder.mkdir(parents=True)
    write_atomically(out, pdf(run))
    for name in (f"{stem}.json", f"{stem}.pdf", "latest.json", "latest.pdf"):
        write_atomically(folder / name, results(run) if name.endswith(".json") else pdf(run))


@pytest.mark.parametrize(
    ("old_stem", "new_stem", "first"),
    [
        ("report-a", "report-b", publish),
        ("report-a", "report-a", publish),
        ("report-a", "report-b", publish_before_pairs),
    ],
    ids=["new data", "same data", "an archive written before pairs"],
)
def test_a_report_killed_at_any_change_leaves_the_last_good_files_or_whole_new_ones(
    old_stem: str, new_stem: str, first: Callable[[Path, Path, int, str], None], tmp_path: Path
) -> None:
    """Killed at each change in turn: out and latest.* are never a part, never a mix of two runs; the next run tidies up."""
    change = 0
    while True:
        change += 1
        folder, out = tmp_path / str(change) / "archive", tmp_path / str(change) / "out" / "report.pdf"
        out.parent.mkdir(parents=True)
        first(folder, out, 1, old_stem)
        good = files_of(folder)
        run = Child(lambda: publish(folder, out, 2, new_stem, kill_at_change=change)).wait()  # noqa: B023
        if run.returncode == 0:
            break
        assert run.returncode == KILLED, run.stderr
        seen = {name: run_of(data) for name, data in files_of(folder).items()}
        assert run_of(out.read_bytes()) in (1, 2), f"killed at change {change}"
        assert (seen["latest.pdf"], seen["latest.json"]) in ((1, 1), (2, 2)), f"killed at change {change}: {seen}"
        for name, data in files_of(folder).items():  # the dated files: the last good ones, or whole new ones
            assert data == good.get(name) or (name.startswith(new_stem) and run_of(data) == 2), name

        with locked(folder) as unfinished:  # the next run
            assert unfinished is not None and unfinished.startswith(f"pid {run.pid}, started "), unfinished
            recover(folder)
            write_atomically(out, pdf(3))
            store(folder, "report-c", pdf(3), results(3))
        seen = files_of(folder)
        assert (out.read_bytes(), seen["latest.pdf"], seen["latest.json"]) == (pdf(3), pdf(3), results(3))
        assert [p.name for p in out.parent.iterdir()] == ["report.pdf"]
        assert [p.name for p in folder.iterdir() if p.name.startswith(".") and not p.is_dir()] == [".report.lock"]
        assert len(list((folder / ".pairs").glob("*"))) <= 2  # the latest, and the one it replaced
    assert change > 10  # every change of a run was a kill point: more than a handful
    assert files_of(folder)["latest.pdf"] == pdf(2) and files_of(folder)["latest.json"] == results(2)


def test_stale_temporaries_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    names = [".report.pdf.k1ll3d_1", ".report.pdf.l1ve_abc", ".report.pdf.short", ".other.pdf.k1ll3d_2", ".hidden"]
    for name in names:
        (tmp_path / name).write_bytes(b"part")
    with (tmp_path / ".report.pdf.l1ve_abc").open("rb") as live:
        fcntl.flock(live, fcntl.LOCK_EX)  # a writer still at work
        write_atomically(tmp_path / "report.pdf", pdf(1))
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted({*names, "report.pdf"} - {".report.pdf.k1ll3d_1"})
        assert remove_stale_temporaries(tmp_path) == [".other.pdf.k1ll3d_2"]
    assert remove_stale_temporaries(tmp_path) == [".report.pdf.l1ve_abc"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", ".report.pdf.short", "report.pdf"]


def with_demo_cohort(url: str) -> str:
    """``url``, its database migrated and holding the demo cohort."""
    engine = db.make_engine(url)
    db.upgrade(engine)
    add_demo_site(engine)
    assert import_path(engine, FIXTURES / "demo", actor="test").written
    engine.dispose()
    return url


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return with_demo_cohort(f"sqlite:///{tmp_path_factory.mktemp('demo') / 'registry.db'}")


def test_a_killed_report_run_keeps_the_last_good_report_and_the_next_run_succeeds(
    demo_url: str, tmp_path: Path
) -> None:
    out, archive = tmp_path / "out" / "report.pdf", tmp_path / "archive"
    config = tmp_path / "registry.toml"
    config.write_text('analyses = ["mortality"]\n')  # a short report: how it is written is what is tested
    run = ("--database", demo_url, "report", "--out", str(out), "--archive", str(archive), "--config", str(config))
    out.parent.mkdir()
    first = cli(*run)
    assert first.returncode == 0, first.stderr
    good = {"report.pdf": out.read_bytes(), **files_of(archive)}

    building = killed(*run, crash_at=r"audit:^sqlite3\.connect")  # the lock held, reading the registry
    writing = killed(*run, crash_at=r"audit:^os\.rename .*/\.report\.pdf\.")  # the new --out file not yet renamed
    assert out.read_bytes() == good["report.pdf"] and len(list(out.parent.iterdir())) == 2  # and a temporary
    publishing = killed(*run, crash_at=r"audit:^os\.symlink .*\.latest\.")  # the new files written, not yet latest
    seen = files_of(archive)
    assert (seen["latest.pdf"], seen["latest.json"]) == (good["latest.pdf"], good["latest.json"])
    for name, data in {**seen, "report.pdf": out.read_bytes()}.items():  # the same data: same names, new bytes
        assert data == good[name] or whole(name, data), name
    published = Path(os.readlink(archive / "latest")).name
    (unpublished,) = (p.name for p in (archive / ".pairs").iterdir() if p.name != published)  # the killed run's

    last = cli(*run)
    assert last.returncode == 0, last.stderr
    seen = files_of(archive)
    (dated,) = archive.glob("report-*.pdf")
    assert seen["latest.pdf"] == dated.read_bytes() != good["latest.pdf"]
    assert seen["latest.json"] == dated.with_suffix(".json").read_bytes() != good["latest.json"]
    assert whole("latest.pdf", seen["latest.pdf"]) and whole("latest.json", seen["latest.json"])
    assert sorted(p.name for p in archive.iterdir() if p.name.startswith(".")) == [".pairs", ".report.lock"]
    assert [p.name for p in out.parent.iterdir()] == ["report.pdf"]  # the killed run's temporary removed
    log = [line.split(" ", 2)[2] for line in (archive / "report.log").read_text().splitlines()]
    assert [line for line in log if not line.startswith("INFO wrote")] == [
        f"INFO report run started ({demo_url})",
        f"INFO report run started ({demo_url})",
        f"INFO report run started ({demo_url})",
        f"WARNING the previous run (pid {building.pid}, started {_started(log, building.pid)}) did not finish (killed or crashed)",
        f"INFO report run started ({demo_url})",
        f"WARNING the previous run (pid {writing.pid}, started {_started(log, writing.pid)}) did not finish (killed or crashed)",
        f"INFO report run started ({demo_url})",
        f"WARNING the previous run (pid {publishing.pid}, started {_started(log, publishing.pid)}) did not finish (killed or crashed)",
        f"WARNING removed what an unfinished run left: .pairs/{unpublished}",
    ]  # fmt: skip
    assert (archive / ".report.lock").read_text() == ""  # finished: no record of a run in progress

    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    engine = db.make_engine(empty)
    db.upgrade(engine)
    engine.dispose()
    failed = cli("--database", empty, "report", "--archive", str(archive))
    log_text = (archive / "report.log").read_text()
    assert failed.returncode == 1 and log_text.rindex(" ERROR ") > log_text.rindex("report run started")
    assert (archive / ".report.lock").read_text() == ""  # failed, but not killed: the next run will not say so
    assert files_of(archive) == seen


def whole(name: str, data: bytes) -> bool:
    """A complete report (every page readable, the end marker there) or a complete results document."""
    if name.endswith(".json"):
        return bool(json.loads(data)["data_fingerprint"])
    return data.rstrip().endswith(b"%%EOF") and len(PdfReader(io.BytesIO(data), strict=True).pages) > 1


def _started(log: list[str], pid: int) -> str:
    """When the run ``pid`` started, as the next run found it in the lock file."""
    (line,) = (line for line in log if f"(pid {pid}, started " in line)
    started = line.split(", started ", 1)[1].split(")", 1)[0]
    assert datetime.fromisoformat(started).tzinfo == UTC
    return started


# -- the backup -------------------------------------------------------------------------


@pytest.fixture
def demo_database(database_url: str) -> str:
    """A database of each kind holding the demo cohort."""
    return with_demo_cohort(database_url)


def test_the_copy_a_killed_backup_left_is_removed_by_the_next_backup(demo_database: str, tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    killed("--database", demo_database, "backup", str(backups / "monday"), crash_at=r"audit:^os\.chmod .*\.partial-")
    (unfinished,) = backups.iterdir()  # the whole data file is in it, not yet protected by a manifest
    assert unfinished.name.startswith(".monday.partial-") and (unfinished.stat().st_mode & 0o777) == 0o700
    assert len(list(unfinished.iterdir())) == 1

    done = cli("--database", demo_database, "backup", str(backups / "tuesday"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"Removed an unfinished backup left by an earlier run: {unfinished}"
    assert [p.name for p in backups.iterdir()] == ["tuesday"]


def test_an_unfinished_backup_still_running_is_left_alone(tmp_path: Path) -> None:
    from registry.backup import _locked_partial, remove_unfinished

    (tmp_path / ".other").mkdir()
    (tmp_path / ".x.partial-short").mkdir()
    partial, lock = _locked_partial(tmp_path / "running")
    try:
        assert remove_unfinished(tmp_path) == []
    finally:
        os.close(lock)
    assert remove_unfinished(tmp_path) == [partial]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other", ".x.partial-short"]


def pg_dumps_writing_into(folder: Path) -> list[int]:
    """The process ids of pg_dump processes writing a file below ``folder``."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
            if (
                entry.name.isdigit()
                and Path(arguments[0].decode()).name == "pg_dump"
                and str(folder).encode() in b" ".join(arguments)
            ):
                found.append(int(entry.name))
    return found


def test_pg_dump_dies_with_a_killed_backup_and_the_next_backup_cleans_up(postgres_server: str, tmp_path: Path) -> None:
    """pg_dump is held at a known point, waiting for a table lock, when the backup is killed."""
    backups = tmp_path / "backups"
    with db.new_postgres_database(postgres_server, "crashdump") as url:
        engine = db.make_engine(url)
        db.upgrade(engine)
        with engine.connect() as holder:  # a table pg_dump dumps but the backup does not count (another schema)
            holder.execute(sa.text("CREATE SCHEMA held; CREATE TABLE held.t (x int)"))
            holder.commit()
            holder.execute(sa.text("LOCK TABLE held.t IN ACCESS EXCLUSIVE MODE"))
            run = command("--database", url, "backup", str(backups / "monday"))
            waiting = sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dump' AND wait_event_type = 'Lock'"
            )
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as watcher:  # a new view each time
                for _ in range(600):
                    if watcher.execute(waiting).scalar_one():
                        break
                    time.sleep(0.05)
                else:
                    pytest.fail(f"pg_dump never waited for the lock: {run.kill().stderr}")
            (dump,) = pg_dumps_writing_into(backups)
            assert run.kill().returncode == KILLED
            for _ in range(100):
                if not pg_dumps_writing_into(backups):
                    break
                time.sleep(0.05)
            left = pg_dumps_writing_into(backups)
            for pid in left:  # the test's own grandchild: ended so that the database can be dropped
                os.kill(pid, signal.SIGKILL)
            assert left == [], f"pg_dump {dump} went on running after its backup was killed"
            holder.rollback()
        engine.dispose()
        (unfinished,) = backups.iterdir()
        done = cli("--database", url, "backup", str(backups / "tuesday"))
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[0] == f"Removed an unfinished backup left by an earlier run: {unfinished}"
        assert [p.name for p in backups.iterdir()] == ["tuesday"]
