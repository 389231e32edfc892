"""Audit chain: each audit entry's hash chained to the one before it, sealed a transaction at a time; triggers refuse
changes to the audit log, the entries' hashes, the seals and the data cuts

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 06:10:00.000000

The entries already written are hashed and sealed as one transaction (registry/audit_chain.py),
so that ``registry audit verify`` passes on an upgraded database. The code list of
``audit_log.action`` gains restore and downgrade; the downgrade keeps them (the
entries of restores and forced downgrades stay in the log).

The downgrade drops the chain (and a downgrade on to ``base`` the log itself): it is
refused while the log holds entries unless forced (``registry db downgrade --force``,
which logs it first; the plain alembic command: ``-x force=yes``).
"""

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from registry.audit_chain import seal
from registry.db import downgrade_forced, refuse_dropping_audit_chain

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIONS = ("insert", "update", "delete", "restore", "downgrade")
#: What each trigger refuses, by table: every UPDATE and DELETE (PostgreSQL: TRUNCATE too).
REFUSED = {
    "audit_log": "audit_log is append-only: an audit entry cannot be changed or deleted",
    "audit_seal": "audit_seal is append-only: a seal of audit entries cannot be changed or deleted",
    "audit_entry_hash": "audit_entry_hash is append-only: the hash of an audit entry cannot be changed or deleted",
    "data_cut": "data_cut is frozen: a data cut cannot be changed or deleted (make a new one)",
}


def _triggers(dialect: str) -> list[str]:
    if dialect == "sqlite":
        return [
            f"CREATE TRIGGER {table}_no_{kind.lower()} BEFORE {kind} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{message}'); END"
            for table, message in REFUSED.items()
            for kind in ("UPDATE", "DELETE")
        ]
    statements = []
    for table, message in REFUSED.items():
        statements += [
            f"""CREATE FUNCTION {table}_refused() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION '{message}' USING ERRCODE = 'integrity_constraint_violation';
            END $$""",
            f"CREATE TRIGGER {table}_refused BEFORE UPDATE OR DELETE OR TRUNCATE ON {table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {table}_refused()",
        ]
    return statements


def _dropped(dialect: str) -> list[str]:
    if dialect == "sqlite":
        return [f"DROP TRIGGER IF EXISTS {table}_no_{kind}" for table in REFUSED for kind in ("update", "delete")]
    return [f"DROP FUNCTION IF EXISTS {table}_refused() CASCADE" for table in REFUSED]


def _action(values: Sequence[str]) -> sa.Enum:
    return sa.Enum(*values, name="action", native_enum=False, create_constraint=True, length=32)


def _sha256(name: str, comment: str) -> sa.Column:
    return sa.Column(name, sa.String(length=64), nullable=False, comment=comment)


def upgrade() -> None:
    connection = op.get_bind()
    op.create_table(
        "audit_seal",
        sa.Column(
            "chain_index", sa.Integer(), autoincrement=False, nullable=False,
            comment="Position in the chain (1, 2, ...), in commit order",
        ),
        sa.Column(
            "batch", sa.String(length=32), nullable=False,
            comment="Random token the transaction wrote into its entries (audit_log.batch)",
        ),
        sa.Column("entries", sa.Integer(), nullable=False, comment="Audit entries the transaction wrote"),
        sa.Column("first_id", sa.Integer(), nullable=False, comment="audit_log.id of its first entry"),
        sa.Column("last_id", sa.Integer(), nullable=False, comment="audit_log.id of its last entry"),
        _sha256("content_sha256", "SHA-256 of its entries' content hashes, in id order"),
        _sha256("previous_sha256", "seal_sha256 of the seal before it (64 zeros for the first)"),
        _sha256("seal_sha256", "SHA-256 of previous_sha256 and the seal's position, count, ids and content hash"),
        sa.PrimaryKeyConstraint("chain_index", name=op.f("pk_audit_seal")),
        sa.UniqueConstraint("batch", name=op.f("uq_audit_seal_batch")),
    )  # fmt: skip
    op.create_table(
        "audit_entry_hash",
        sa.Column("entry_id", sa.Integer(), autoincrement=False, nullable=False, comment="audit_log.id of the entry"),
        _sha256("content_sha256", "SHA-256 of the entry's content, as the database computed it"),
        _sha256("previous_sha256", "content_sha256 of the entry before it in the chain (64 zeros for the first)"),
        sa.PrimaryKeyConstraint("entry_id", name=op.f("pk_audit_entry_hash")),
    )  # fmt: skip
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
                "batch",
                sa.String(length=32),
                nullable=True,
                comment="The writing transaction's seal (audit_seal.batch) that chains this entry",
            )
        )
    token = uuid.uuid4().hex  # the entries written so far, sealed as one transaction
    op.execute(sa.text("UPDATE audit_log SET batch = :token").bindparams(token=token))
    seal(connection, token, 0)
    for statement in _triggers(connection.dialect.name):
        op.execute(statement)


def downgrade() -> None:
    connection = op.get_bind()
    if not downgrade_forced():
        refuse_dropping_audit_chain(connection)
    for statement in _dropped(connection.dialect.name):
        op.execute(statement)
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_column("batch")
    op.drop_table("audit_entry_hash")
    op.drop_table("audit_seal")
