"""Audit chain: hash-chained audit entries, triggers refusing changes to the audit log and the data cuts

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 06:10:00.000000

The entries already written are chained in ``id`` order (registry/audit_chain.py), so
that ``registry audit verify`` passes on an upgraded database. The code list of
``audit_log.action`` gains restore and downgrade; the downgrade keeps them (the
entries of restores and forced downgrades stay in the log).

The downgrade drops the chain (and a downgrade on to ``base`` the log itself): it is
refused while the log holds entries unless forced (``registry db downgrade --force``,
which logs it first; the plain alembic command: ``-x force=yes``).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

from registry.audit import AuditError
from registry.audit_chain import seal

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIONS = ("insert", "update", "delete", "restore", "downgrade")
CHAIN = ("chain_index", "previous_sha256", "entry_sha256")
CONTENT = ("id", "changed_at", "actor", "reason", "action", "table_name", "record_key", "study_id", "old_values",
           "new_values")  # fmt: skip
LOG_REFUSED = "audit_log is append-only: an audit entry cannot be changed or deleted"
CUT_REFUSED = "data_cut is frozen: a data cut cannot be changed or deleted (make a new one)"


#: The seal, the one UPDATE an entry allows: its chain columns set, once, from empty (registry/audit_chain.py).
SEALED_ONCE = " AND ".join([f"OLD.{name} IS NULL AND NEW.{name} IS NOT NULL" for name in CHAIN])


def _sqlite_triggers() -> list[str]:
    refuse = f"BEGIN SELECT RAISE(ABORT, '{LOG_REFUSED}'); END"
    return [  # UPDATE OF: the seal's update, which sets no content column, does not even run the first trigger
        f"CREATE TRIGGER audit_log_content_unchanged BEFORE UPDATE OF {', '.join(CONTENT)} ON audit_log {refuse}",
        f"CREATE TRIGGER audit_log_sealed_once BEFORE UPDATE OF {', '.join(CHAIN)} ON audit_log "
        f"WHEN NOT ({SEALED_ONCE}) {refuse}",
        f"CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log {refuse}",
        f"CREATE TRIGGER data_cut_no_update BEFORE UPDATE ON data_cut BEGIN SELECT RAISE(ABORT, '{CUT_REFUSED}'); END",
        f"CREATE TRIGGER data_cut_no_delete BEFORE DELETE ON data_cut BEGIN SELECT RAISE(ABORT, '{CUT_REFUSED}'); END",
    ]


def _postgres_triggers() -> list[str]:
    refuse = "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()"
    return [
        f"""CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '{LOG_REFUSED}' USING ERRCODE = 'integrity_constraint_violation';
        END $$""",
        f"CREATE TRIGGER audit_log_content_unchanged BEFORE UPDATE OF {', '.join(CONTENT)} ON audit_log {refuse}",
        f"CREATE TRIGGER audit_log_sealed_once BEFORE UPDATE OF {', '.join(CHAIN)} ON audit_log "
        f"FOR EACH ROW WHEN (NOT ({SEALED_ONCE})) EXECUTE FUNCTION audit_log_append_only()",
        f"CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log {refuse}",
        "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()",
        f"""CREATE FUNCTION data_cut_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '{CUT_REFUSED}' USING ERRCODE = 'integrity_constraint_violation';
        END $$""",
        "CREATE TRIGGER data_cut_frozen BEFORE UPDATE OR DELETE OR TRUNCATE ON data_cut "
        "FOR EACH STATEMENT EXECUTE FUNCTION data_cut_frozen()",
    ]


_DROPPED = {
    "sqlite": [f"DROP TRIGGER IF EXISTS {name}" for name in ("audit_log_content_unchanged", "audit_log_sealed_once",
                                                             "audit_log_no_delete", "data_cut_no_update",
                                                             "data_cut_no_delete")],
    "postgresql": ["DROP FUNCTION IF EXISTS audit_log_append_only() CASCADE",
                   "DROP FUNCTION IF EXISTS data_cut_frozen() CASCADE"],
}  # fmt: skip


def _action(values: Sequence[str]) -> sa.Enum:
    return sa.Enum(*values, name="action", native_enum=False, create_constraint=True, length=32)


def upgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name == "postgresql":
        op.drop_constraint(op.f("ck_audit_log_action"), "audit_log", type_="check")
        op.create_check_constraint("action", "audit_log", sa.column("action").in_(ACTIONS))
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        if connection.dialect.name == "sqlite":  # the table is copied, with the new CHECK
            batch_op.alter_column(
                "action", existing_type=_action(ACTIONS[:3]), type_=_action(ACTIONS), existing_nullable=False,
                existing_comment="insert, update or delete",
            )  # fmt: skip
        batch_op.add_column(
            sa.Column(
                "chain_index",
                sa.Integer(),
                nullable=True,
                comment="Position in the hash chain (1, 2, ...), given as the writing transaction commits",
            )
        )
        batch_op.add_column(
            sa.Column(
                "previous_sha256",
                sa.String(length=64),
                nullable=True,
                comment="entry_sha256 of the entry before it in the chain (64 zeros for the first)",
            )
        )
        batch_op.add_column(
            sa.Column(
                "entry_sha256",
                sa.String(length=64),
                nullable=True,
                comment="SHA-256 of previous_sha256 and this entry's content (registry/audit_chain.py)",
            )
        )
        batch_op.create_unique_constraint(batch_op.f("uq_audit_log_chain_index"), ["chain_index"])
    seal(connection)
    for statement in _sqlite_triggers() if connection.dialect.name == "sqlite" else _postgres_triggers():
        op.execute(statement)


def downgrade() -> None:
    entries = op.get_bind().execute(sa.text("SELECT count(*) FROM audit_log")).scalar_one()
    forced = context.config.attributes.get("force") or context.get_x_argument(as_dictionary=True).get("force") == "yes"
    if entries and not forced:
        raise AuditError(
            f"Downgrade refused: the audit log holds {entries:,} entr{'y' if entries == 1 else 'ies'}, and migrating below 0007 drops its hash "
            "chain (on to base, the log itself): back the database up first (`registry backup`), then pass --force "
            "(the downgrade is logged)"
        )
    for statement in _DROPPED[op.get_bind().dialect.name]:
        op.execute(statement)
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_audit_log_chain_index"), type_="unique")
        batch_op.drop_column("entry_sha256")
        batch_op.drop_column("previous_sha256")
        batch_op.drop_column("chain_index")
