"""Alembic environment: migrates the database the registry is configured for.

``registry db upgrade`` hands over an open connection (``config.attributes``); the
plain ``alembic`` command, run from the repository root, uses the same URL setting
as the registry (``REGISTRY_DATABASE_URL``, else the default SQLite file).
"""

from alembic import context

from registry import models
from registry.db import make_engine

config = context.config
target_metadata = models.SQLModel.metadata


def run_migrations(connection) -> None:  # noqa: ANN001
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("Offline (--sql) migrations are not supported; run against a database")

connection = config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
else:
    with make_engine().begin() as connection:
        run_migrations(connection)
