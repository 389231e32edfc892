"""Queries about a patient's data and their threads; triggers keep the threads append-only and the queries undeleted

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 20:00:00.000000

A query (``data_query``) is a question about a patient, one record or one field; its
messages (``query_message``) are the question, the answers, corrections, closings and
re-openings (registry/queries.py). A message is never changed or deleted, a query never
deleted (its status changes): the audit hooks refuse it, and so do the triggers here.

The downgrade drops both tables: refused while any query exists unless forced
(``registry db downgrade --force``, which logs it first; the plain alembic command:
``-x force=yes``). The audit log keeps the entries of what they held.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from registry.db import downgrade_forced, refuse_dropping_queries

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES = ("open", "answered", "closed")
ACTIONS = ("opened", "answered", "corrected", "closed", "reopened")
#: What the triggers refuse, by table: the statements (PostgreSQL: TRUNCATE too) and the message.
REFUSED = {
    "query_message": (("UPDATE", "DELETE"), "query_message is append-only: a message of a query cannot be changed or "
                      "deleted"),
    "data_query": (("DELETE",), "data_query keeps every query: a query cannot be deleted (close it)"),
}  # fmt: skip


def _code(name: str, values: Sequence[str]) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=32)


def _text(name: str, length: int, comment: str, *, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.String(length=length), nullable=nullable, comment=comment)


def _moment(name: str, comment: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, comment=comment)


def _triggers(dialect: str) -> list[str]:
    if dialect == "sqlite":
        return [
            f"CREATE TRIGGER {table}_no_{kind.lower()} BEFORE {kind} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{message}'); END"
            for table, (kinds, message) in REFUSED.items()
            for kind in kinds
        ]
    statements = []
    for table, (kinds, message) in REFUSED.items():
        statements += [
            f"""CREATE FUNCTION {table}_refused() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION '{message}' USING ERRCODE = 'integrity_constraint_violation';
            END $$""",
            f"CREATE TRIGGER {table}_refused BEFORE {' OR '.join(kinds)} OR TRUNCATE ON {table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {table}_refused()",
        ]
    return statements


def _dropped(dialect: str) -> list[str]:
    if dialect == "sqlite":
        return [f"DROP TRIGGER IF EXISTS {table}_no_{kind.lower()}" for table, (kinds, _) in REFUSED.items()
                for kind in kinds]  # fmt: skip
    return [f"DROP FUNCTION IF EXISTS {table}_refused() CASCADE" for table in REFUSED]


def upgrade() -> None:
    op.create_table(
        "data_query",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False, comment="Patient the query is about"),
        _text("table_name", 64, "Table of the record the query is about (empty: the patient as a whole)",
              nullable=True),
        _text("record_key", 64, "Primary key of that record (empty: the patient as a whole)", nullable=True),
        _text("field", 64, "Field the query is about (empty: the whole record)", nullable=True),
        _text("rule", 16, "Rule of the catalogue whose finding the query was opened from (empty: none)",
              nullable=True),
        _text("value", 200, "The field's value when the query was opened, as the checks show it", nullable=True),
        sa.Column("status", _code("query_status", STATUSES), nullable=False, comment="open, answered or closed"),
        _text("opened_by", 100, "Who opened the query"),
        _moment("opened_at", "When the query was opened (UTC)"),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False,
                  comment="Change counter: a change made from an older status is refused"),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f("fk_data_query_patient_id_patient"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_data_query")),
    )  # fmt: skip
    op.create_index(op.f("ix_data_query_patient_id"), "data_query", ["patient_id"], unique=False)
    op.create_index(op.f("ix_data_query_status"), "data_query", ["status"], unique=False)
    op.create_table(
        "query_message",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("query_id", sa.Integer(), nullable=False, comment="Query the message belongs to"),
        sa.Column("action", _code("query_action", ACTIONS), nullable=False, comment="What the message did"),
        sa.Column("status", _code("query_message_status", STATUSES), nullable=False,
                  comment="The query's status after the message"),
        _text("body", 2000, "The message as written (for a correction: the field's old and new value and why)"),
        _text("written_by", 100, "Who wrote the message"),
        _moment("written_at", "When the message was written (UTC)"),
        sa.ForeignKeyConstraint(
            ["query_id"], ["data_query.id"], name=op.f("fk_query_message_query_id_data_query"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_query_message")),
    )  # fmt: skip
    op.create_index(op.f("ix_query_message_query_id"), "query_message", ["query_id"], unique=False)
    for statement in _triggers(op.get_bind().dialect.name):
        op.execute(statement)


def downgrade() -> None:
    connection = op.get_bind()
    if not downgrade_forced():
        refuse_dropping_queries(connection)
    for statement in _dropped(connection.dialect.name):
        op.execute(statement)
    op.drop_index(op.f("ix_query_message_query_id"), table_name="query_message")
    op.drop_table("query_message")
    op.drop_index(op.f("ix_data_query_status"), table_name="data_query")
    op.drop_index(op.f("ix_data_query_patient_id"), table_name="data_query")
    op.drop_table("data_query")
