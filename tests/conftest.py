"""Database fixtures: every test that asks for ``engine`` runs on SQLite and on PostgreSQL.

PostgreSQL comes from ``REGISTRY_TEST_POSTGRES_URL`` (a server .ci/run started), or
else from a throwaway server this session starts itself with tests/postgres.sh.
Where neither is possible the PostgreSQL cases are skipped, except under CI, where
they fail: a green CI run must have exercised both databases.
"""

from __future__ import annotations

import ast
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from registry import db

POSTGRES_SCRIPT = Path(__file__).with_name("postgres.sh")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """URL of a PostgreSQL server's maintenance database."""
    if url := os.environ.get("REGISTRY_TEST_POSTGRES_URL"):
        yield url
        return
    directory = tempfile.mkdtemp(prefix="registry-pg-")  # not under pytest's root-only tmp dirs
    started = subprocess.run(["bash", str(POSTGRES_SCRIPT), "start", directory], capture_output=True, text=True)
    if started.returncode != 0:
        shutil.rmtree(directory, ignore_errors=True)
        reason = f"no PostgreSQL server: {started.stderr.strip()}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (PostgreSQL tests must run under CI)")
        pytest.skip(reason)
    try:
        yield started.stdout.strip()
    finally:
        subprocess.run(["bash", str(POSTGRES_SCRIPT), "stop", directory], check=False)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of each kind, dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.db'}"
        return
    with db.new_postgres_database(request.getfixturevalue("postgres_server"), "test") as url:
        yield url


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    """An engine on an empty database (no schema yet)."""
    engine = db.make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def migrated(engine: sa.Engine) -> sa.Engine:
    """An engine on a database migrated to the newest schema."""
    db.upgrade(engine)
    return engine


@pytest.fixture
def second_registry(migrated: sa.Engine, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    """A second empty registry (migrated, the DEMO site registered) on the same kind of database as ``migrated``:
    the far side of a round trip."""
    if migrated.dialect.name == "sqlite":
        url = f"sqlite:///{tmp_path / 'second.db'}"
        context = contextlib.nullcontext(url)
    else:
        context = db.new_postgres_database(request.getfixturevalue("postgres_server"), "second")
    with context as url:
        engine = db.make_engine(url)
        db.upgrade(engine)
        add_demo_site(engine)
        yield engine
        engine.dispose()


@pytest.fixture
def one_blas_thread():
    """BLAS on one thread, as the console command runs it (registry.cli.run): only then do the analyses run their
    pieces in threads (registry.analysis.threads); the test process loaded numpy with BLAS on every core."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def modules_loaded_by(args: list[str], names: Sequence[str]) -> list[str]:
    """Which of the modules ``names`` ``registry ARGS`` loads, run in a fresh interpreter (start-up time: a command
    loads only what it uses); the command must succeed."""
    probe = ("import sys; from registry.cli import app; from typer.main import get_command\n"
             f"try: get_command(app).main({args!r}, prog_name='registry')\n"
             "except SystemExit as done: assert not done.code, done.code\n"
             f"print(sorted(m for m in {tuple(names)!r} if m in sys.modules))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return ast.literal_eval(done.stdout.splitlines()[-1])


def pytest_report_header(config: pytest.Config) -> str:
    given = os.environ.get("REGISTRY_TEST_POSTGRES_URL")
    source = f"server at {db.redacted(given)}" if given else "throwaway server from tests/postgres.sh"
    return f"databases: SQLite (temporary files), PostgreSQL ({source})"


def add_demo_site(engine: sa.Engine) -> None:
    """Register the site DEMO, which the fixtures' patients belong to."""
    from registry.audit import audited_session
    from registry.models import Site

    with audited_session(engine, actor="admin") as session:
        session.add(Site(code="DEMO", name="Demo centre (synthetic data)"))
        session.commit()


#: The R scripts and their stored output (tests/r): tests read the output; R itself is needed only to remake it.
R_REFERENCES = Path(__file__).resolve().parent / "r"
needs_r = pytest.mark.skipif(shutil.which("Rscript") is None, reason="R is not installed (the stored output is used)")


def assert_r_gives_the_stored_output(
    folder: Path, script: str, inputs: tuple[str, ...], outputs: tuple[str, ...]
) -> None:
    """Run tests/r/``script`` in ``folder`` (with its ``inputs`` copied beside it) and compare every file it writes
    of ``outputs`` with the stored one, byte for byte."""
    for name in (script, *inputs):
        shutil.copy(R_REFERENCES / name, folder)
    subprocess.run(["Rscript", str(folder / script)], check=True, capture_output=True)
    for name in outputs:
        assert (folder / name).read_text() == (R_REFERENCES / name).read_text(), name


def build_demo_table(folder: Path):
    """The demo cohort's analysis table, built from fixtures/demo in a SQLite registry in ``folder``."""
    from registry.cohort import build_cohort
    from registry.config import Config
    from registry.ingest import import_path
    from registry.tables import load_tables

    engine = db.make_engine(f"sqlite:///{folder / 'demo.db'}")
    db.upgrade(engine)
    add_demo_site(engine)
    import_path(engine, Path(__file__).resolve().parents[1] / "fixtures" / "demo", actor="test")
    table = build_cohort(load_tables(engine), Config()).table
    engine.dispose()
    return table


@pytest.fixture(scope="session")
def demo_table(tmp_path_factory: pytest.TempPathFactory):
    """The demo cohort's analysis table, built once per session (read-only)."""
    return build_demo_table(tmp_path_factory.mktemp("demo-table"))


def drop_append_only_triggers(engine: sa.Engine) -> None:
    """Drop the triggers that refuse changes to audit_log, audit_seal and data_cut, as a database owner set on
    tampering could:
    what the audit chain and a cut's checks must still find."""
    import importlib.util

    path = db.migrations_dir() / "versions" / "0007_audit_chain.py"
    spec = importlib.util.spec_from_file_location("migration_0007", path)
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    with engine.begin() as connection:
        for statement in migration._dropped(engine.dialect.name):
            connection.exec_driver_sql(statement)


#: The password of every account of ``web_registry``.
WEB_PASSWORD = "correct horse battery"


@pytest.fixture
def web_registry(migrated, tmp_path):
    """Sites DEMO (the example's four patients) and OTHER (EX-901, a copy of EX-001), and three accounts."""
    from registry.accounts import create_account, disable
    from registry.audit import audited_session
    from registry.codes import Role
    from registry.ingest import import_path
    from registry.models import Site

    with audited_session(migrated, actor="test") as session:
        session.add_all([Site(code="DEMO", name="Demo"), Site(code="OTHER", name="Other")])
        session.commit()
    shutil.copytree(Path(__file__).resolve().parents[1] / "fixtures" / "example", tmp_path / "sheets")
    for sheet in (tmp_path / "sheets").glob("*.csv"):  # EX-901 of site OTHER: a copy of EX-001 and their records
        lines = sheet.read_text().splitlines()
        copies = [line.replace("EX-001,DEMO", "EX-901,OTHER").replace("EX-001,", "EX-901,", 1)
                  for line in lines if line.startswith("EX-001,")]  # fmt: skip
        sheet.write_text("\n".join(lines + copies) + "\n")
    events = tmp_path / "sheets" / "adverse_events.csv"
    events.write_text(events.read_text().replace("thoracic dermatome", "<script>alert(1)</script>"))
    assert import_path(migrated, tmp_path / "sheets", actor="test").written
    with audited_session(migrated, actor="test") as session:
        create_account(session, "cora", WEB_PASSWORD, Role.COORDINATOR, ["DEMO"])
        create_account(session, "dana", WEB_PASSWORD, Role.DATA_MANAGER)
        create_account(session, "gone", WEB_PASSWORD, Role.ANALYST)
        session.flush()
        disable(session, "gone")
        session.commit()
    return migrated


class StoppedClock:
    """The sign-in throttle's clock, standing still until a test moves it."""

    def __init__(self) -> None:
        self.moment = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.moment

    def advance(self, **delta: float) -> None:
        self.moment += timedelta(**delta)


@pytest.fixture
def stopped_clock(monkeypatch: pytest.MonkeyPatch) -> StoppedClock:
    """Stop the throttle's clock, so that its delays do not run out while a slow machine checks passwords."""
    from registry.web import security

    clock = StoppedClock()
    monkeypatch.setattr(security, "now", clock)
    return clock


@contextlib.contextmanager
def served(app) -> Iterator[str]:
    """``app`` served by uvicorn on a loopback port in a background thread; yields its base URL."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    web = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=web.run, daemon=True)
    thread.start()
    for _ in range(100):
        if web.started:
            break
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        web.should_exit = True
        thread.join(timeout=10)
