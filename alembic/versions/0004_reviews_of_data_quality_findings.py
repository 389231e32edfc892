"""Reviews of data-quality findings

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 07:31:41.548466
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "finding_review",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=True, comment="Patient the finding concerns"),
        sa.Column(
            "rule", sa.String(length=16), nullable=False, comment="Rule of the catalogue that reported the finding"
        ),
        sa.Column(
            "table_name", sa.String(length=64), nullable=False, comment="Table of the record the finding concerns"
        ),
        sa.Column("record_key", sa.String(length=64), nullable=False, comment="Primary key of that record"),
        sa.Column("field", sa.String(length=64), nullable=False, comment="Field the finding concerns"),
        sa.Column(
            "value", sa.String(length=200), nullable=True, comment="The value that was verified, as the checks show it"
        ),
        sa.Column(
            "comment",
            sa.String(length=500),
            nullable=False,
            comment="What was checked, and where (source document, laboratory report, ...)",
        ),
        sa.Column("reviewed_by", sa.String(length=100), nullable=False, comment="Data manager who verified the value"),
        sa.Column(
            "reviewed_at", sa.DateTime(timezone=True), nullable=False, comment="When the value was verified (UTC)"
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f("fk_finding_review_patient_id_patient"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_finding_review")),
        sa.UniqueConstraint(
            "rule", "table_name", "record_key", "field", name=op.f("uq_finding_review_rule_table_name_record_key_field")
        ),
    )
    with op.batch_alter_table("finding_review", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_finding_review_patient_id"), ["patient_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("finding_review", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_finding_review_patient_id"))

    op.drop_table("finding_review")
