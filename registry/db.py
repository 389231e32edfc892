"""Engines and migrations, selected by one database URL.

The URL comes from ``--database``, else ``REGISTRY_DATABASE_URL``, else a SQLite
file in the working directory. SQLite connections enforce foreign keys (off by
default in SQLite) and use the write-ahead log so readers never block the writer.
Alembic is imported by the functions that migrate, not here: most commands never
need it (start-up time).
"""

from __future__ import annotations

import uuid
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, overload

import sqlalchemy as sa

from registry import audit  # noqa: F401  (registers the audit trail on every session)
from registry.resources import resource_dir
from registry.settings import (  # noqa: F401  (the database's settings, read here by their users)
    BUSY_TIMEOUT_VARIABLE,
    DEFAULT_BUSY_TIMEOUT,
    DEFAULT_URL,
    URL_VARIABLE,
    busy_timeout,
    database_url,
)

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory


@overload
def as_utc(moment: datetime) -> datetime: ...
@overload
def as_utc(moment: None) -> None: ...
def as_utc(moment: datetime | None) -> datetime | None:
    """``moment`` as an aware UTC time: SQLite gives stored UTC times back without their zone."""
    return moment if moment is None or moment.tzinfo else moment.replace(tzinfo=UTC)


def _sqlite_pragmas(busy_ms: int):  # noqa: ANN202 (an event listener)
    def set_pragmas(dbapi_connection, _record) -> None:  # noqa: ANN001 (DB-API objects)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
        cursor.close()

    return set_pragmas


#: The engines made by :func:`make_engine` and still in use, for :func:`dispose_engines`.
_ENGINES: weakref.WeakSet[sa.Engine] = weakref.WeakSet()


def make_engine(url: str | None = None) -> sa.Engine:
    """An engine for ``url`` (see :func:`database_url`), with SQLite made strict, and writes that wait for another
    writer's lock :func:`busy_timeout` seconds at most (PostgreSQL would wait for ever)."""
    parsed, busy_ms = sa.make_url(database_url(url)), max(1, round(busy_timeout() * 1000))  # 0: no limit
    if parsed.get_backend_name() == "postgresql":
        options = f"{parsed.query.get('options', '')} -c lock_timeout={busy_ms}".strip()
        engine = sa.create_engine(parsed, connect_args={"options": options})
    else:
        engine = sa.create_engine(parsed)
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas(busy_ms))
    _ENGINES.add(engine)
    return engine


def dispose_engines() -> None:
    """Close the pooled connections of every engine still in use, as a process ends.

    Closing the last connection to a SQLite file folds its write-ahead log back into
    the file (and removes the ``-wal`` and ``-shm`` files), so the database is one file
    again; the command does it itself rather than leave it to the interpreter's exit.
    """
    for engine in list(_ENGINES):
        engine.dispose()


def migrations_dir() -> Path:
    """Alembic scripts: shipped inside the wheel, or ``alembic/`` in a source checkout."""
    return resource_dir("alembic", "_alembic", "env.py")


@contextmanager
def _alembic(engine: sa.Engine) -> Iterator[Config]:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        yield config


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    from alembic import command

    with _alembic(engine) as config:
        command.upgrade(config, revision)


class DowngradeRefused(RuntimeError):
    """A downgrade would drop data that no earlier schema can hold (and was not forced)."""


def downgrade_forced() -> bool:
    """Inside a migration: whether the running downgrade was forced (:func:`downgrade` with ``force``, or the plain
    alembic command with ``-x force=yes``), so that it may drop data no earlier schema can hold."""
    from alembic import context

    return (
        bool(context.config.attributes.get("force")) or context.get_x_argument(as_dictionary=True).get("force") == "yes"
    )


#: What every refused downgrade asks for.
BACK_UP_FIRST = "back the database up first (`registry backup`), then pass --force (the downgrade is logged)"
#: The tables that keep missing-data codes (migration 0008).
CODED_TABLES = ("patient", "antibody_test", "pft", "hrct", "treatment", "adverse_event", "follow_up")


def refuse_dropping_missing_codes(connection: sa.Connection) -> None:
    """:class:`DowngradeRefused` while a record holds missing-data codes, which a downgrade below 0008 drops."""
    coded = sum(
        connection.execute(sa.text(f"SELECT count(*) FROM {table} WHERE missing_codes IS NOT NULL")).scalar_one()
        for table in CODED_TABLES
    )
    if coded:
        raise DowngradeRefused(
            f"Downgrade refused: {coded:,} record{'' if coded == 1 else 's'} hold missing-data codes, which migrating "
            f"below 0008 drops (the coded fields become blanks): {BACK_UP_FIRST}"
        )


def refuse_dropping_audit_chain(connection: sa.Connection) -> None:
    """registry.audit.AuditError while the audit log holds entries, whose chain a downgrade below 0007 drops."""
    from registry.audit import AuditError

    entries = connection.execute(sa.text("SELECT count(*) FROM audit_log")).scalar_one()
    if entries:
        raise AuditError(
            f"Downgrade refused: the audit log holds {entries:,} entr{'y' if entries == 1 else 'ies'}, and migrating "
            f"below 0007 drops its hash chain (on to base, the log itself): {BACK_UP_FIRST}"
        )


def refuse_dropping_queries(connection: sa.Connection) -> None:
    """:class:`DowngradeRefused` while the registry holds queries, which a downgrade below 0010 drops."""
    count = connection.execute(sa.text("SELECT count(*) FROM data_query")).scalar_one()
    if count:
        raise DowngradeRefused(
            f"Downgrade refused: the registry holds {count:,} quer{'y' if count == 1 else 'ies'} about its data, which "
            f"migrating below 0010 drops with their threads: {BACK_UP_FIRST}"
        )


def refuse_dropping_sign_off(connection: sa.Connection) -> None:
    """:class:`DowngradeRefused` while a patient has a record status or a signature, or an account is an
    investigator's, which a downgrade below 0011 drops (the accounts become disabled analysts)."""
    held = {
        what: connection.execute(sa.text(f"SELECT count(*) FROM {query}")).scalar_one()
        for what, query in (("record status(es)", "patient_status"), ("signature(s)", "signature"),
                            ("investigator account(s)", "account WHERE role = 'investigator'"))
    }  # fmt: skip
    if any(held.values()):
        found = ", ".join(f"{count} {what}" for what, count in held.items() if count)
        raise DowngradeRefused(
            f"Downgrade refused: the registry holds {found}, which migrating below 0011 drops (investigators become "
            f"disabled analysts): {BACK_UP_FIRST}"
        )


#: What each revision's downgrade refuses to drop unless forced.
_REFUSALS = {
    "0011": refuse_dropping_sign_off,
    "0010": refuse_dropping_queries,
    "0008": refuse_dropping_missing_codes,
    "0007": refuse_dropping_audit_chain,
}


def _undone(engine: sa.Engine, revision: str) -> list[str]:
    """The revisions a downgrade to ``revision`` (an id, ``base`` or ``-N``) undoes, newest first."""
    order = [script.revision for script in _scripts().walk_revisions()]  # head first
    current = current_revision(engine)
    if current not in order:
        return []
    start = order.index(current)
    if revision == "base":
        return order[start:]
    if revision.startswith("-") and revision[1:].isdigit():
        return order[start : start + int(revision[1:])]
    return order[start : order.index(revision)] if revision in order else []


def downgrade(engine: sa.Engine, revision: str, *, force: bool = False) -> None:
    """Migrate back to ``revision``; unless ``force``, refused below 0010 while the registry holds queries and below
    0008 while a record holds missing-data codes (:class:`DowngradeRefused`), and below 0007 while the audit log
    holds entries (registry.audit.AuditError).

    The refusals are asked before the first step (each migration asks again, for the plain alembic command): a
    step already taken would stay taken on SQLite, whose driver runs DDL outside the transaction."""
    from alembic import command

    if not force:
        with engine.connect() as connection:
            for step in _undone(engine, revision):
                if step in _REFUSALS:
                    _REFUSALS[step](connection)
    with _alembic(engine) as config:
        config.attributes["force"] = force
        command.downgrade(config, revision)


def current_revision(engine: sa.Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def _scripts() -> ScriptDirectory:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    return ScriptDirectory.from_config(config)


def head_revision() -> str | None:
    return _scripts().get_current_head()


@contextmanager
def new_postgres_database(server_url: str, prefix: str) -> Iterator[str]:
    """The URL of a new, empty database on the PostgreSQL server of ``server_url``, dropped afterwards.

    For tests and benchmarks, which each want a database of their own on one server.
    """
    server = sa.make_url(database_url(server_url))
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def redacted(url: str) -> str:
    """The URL with any password masked, fit for printing and logs."""
    return sa.make_url(database_url(url)).render_as_string(hide_password=True)
