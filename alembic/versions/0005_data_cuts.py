"""Data cuts: frozen snapshots of the analysable data

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 11:58:42.722400
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "data_cut",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "name",
            sa.String(length=64),
            nullable=False,
            comment="Name the cut is known by (registry report --cut NAME)",
        ),
        sa.Column(
            "cutoff_date",
            sa.Date(),
            nullable=False,
            comment="Data cut-off: every analysis of the cut censors follow-up here",
        ),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, comment="When the snapshot was taken (UTC)"
        ),
        sa.Column("created_by", sa.String(length=100), nullable=False, comment="User or process that made the cut"),
        sa.Column("reason", sa.String(length=500), nullable=True, comment="Why the cut was made, as given"),
        sa.Column(
            "snapshot",
            sa.LargeBinary(),
            nullable=False,
            comment="The data tables as the analyses read them at creation (no identifiers): gzip-compressed JSON",
        ),
        sa.Column(
            "snapshot_sha256",
            sa.String(length=64),
            nullable=False,
            comment="SHA-256 of the snapshot's JSON text, verified each time the cut is read",
        ),
        sa.Column("row_counts", sa.JSON(), nullable=False, comment="Rows per table in the snapshot"),
        sa.Column(
            "data_fingerprint",
            sa.String(length=64),
            nullable=True,
            comment="Fingerprint of the analysis table made from the snapshot at creation (empty: no patient analysable)",
        ),
        sa.Column(
            "dq_errors",
            sa.Integer(),
            nullable=False,
            comment="Error-level data-quality findings in the snapshot at creation",
        ),
        sa.Column(
            "dq_warnings",
            sa.Integer(),
            nullable=False,
            comment="Warning-level data-quality findings in the snapshot at creation",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_data_cut")),
        sa.UniqueConstraint("name", name=op.f("uq_data_cut_name")),
    )


def downgrade() -> None:
    op.drop_table("data_cut")
