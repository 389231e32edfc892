"""Alembic: the migrations build exactly the schema the models declare, and undo it."""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlmodel import SQLModel

from registry import db
from registry.models import TABLES

REGISTRY_TABLES = {model.__table__.name for model in TABLES}


def test_upgrade_head_then_downgrade_base(engine):
    db.upgrade(engine)
    assert set(sa.inspect(engine).get_table_names()) == REGISTRY_TABLES | {"alembic_version"}
    assert db.current_revision(engine) == db.head_revision()

    db.downgrade(engine, "base")
    assert set(sa.inspect(engine).get_table_names()) == {"alembic_version"}
    assert db.current_revision(engine) is None

    db.upgrade(engine)  # and back up again, from an emptied database
    assert set(sa.inspect(engine).get_table_names()) == REGISTRY_TABLES | {"alembic_version"}


def test_upgrade_twice_is_harmless(migrated):
    db.upgrade(migrated)
    assert db.current_revision(migrated) == db.head_revision()


def test_autogenerate_finds_no_difference(migrated):
    with migrated.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, SQLModel.metadata) == []


def test_migrated_database_has_every_declared_constraint(migrated):
    """Autogenerate ignores CHECK constraints, so compare their names directly."""
    inspector = sa.inspect(migrated)
    for model in TABLES:
        table = model.__table__
        declared = {c.name for c in table.constraints if isinstance(c, sa.CheckConstraint)}
        assert {c["name"] for c in inspector.get_check_constraints(table.name)} == declared, table.name
        declared_fks = {(c.name, c.ondelete) for c in table.foreign_key_constraints}
        assert {(c["name"], c["options"].get("ondelete")) for c in inspector.get_foreign_keys(table.name)} == (
            declared_fks
        ), table.name


def test_one_linear_history():
    config = Config()
    config.set_main_option("script_location", str(db.migrations_dir()))
    assert len(ScriptDirectory.from_config(config).get_heads()) == 1


def test_the_upgrade_chains_the_entries_written_before_it(engine):
    from registry.audit_chain import verify_chain

    db.upgrade(engine, "0006")
    log = sa.table("audit_log", *(sa.column(name) for name in ("changed_at", "actor", "action", "table_name",
                                                                "record_key")), sa.column("new_values", sa.JSON))  # fmt: skip
    with engine.begin() as connection:  # as the registry before 0007 wrote them
        connection.execute(sa.insert(log), [
            {"changed_at": datetime(2026, 1, day, 12, tzinfo=UTC), "actor": "coordinator1", "action": "insert",
             "table_name": "site", "record_key": str(day), "new_values": {"code": f"S{day}", "weight": 1.5}}
            for day in range(1, 6)
        ])  # fmt: skip
    db.upgrade(engine)
    with engine.connect() as connection:
        report = verify_chain(connection)
        seals = connection.execute(sa.text("SELECT chain_index, entries, first_id, last_id FROM audit_seal")).all()
    assert (report.entries, report.head_index, report.problem) == (5, 1, None)
    assert [tuple(s) for s in seals] == [(1, 5, 1, 5)]  # sealed together
