"""Accounts of the web application and the sites they work for

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 03:20:48.705939
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "account",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False, comment="Sign-in name"),
        sa.Column(
            "password_hash",
            sa.String(length=200),
            nullable=False,
            comment="Argon2id hash of the password (the password itself is never stored)",
        ),
        sa.Column(
            "role",
            sa.Enum(
                "coordinator",
                "data_manager",
                "analyst",
                "admin",
                name="role",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
            comment="What the account may do",
        ),
        sa.Column("active", sa.Boolean(), nullable=False, comment="Disabled accounts cannot sign in"),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, comment="When the account was created (UTC)"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account")),
        sa.UniqueConstraint("username", name=op.f("uq_account_username")),
    )
    op.create_table(
        "account_site",
        sa.Column("account_id", sa.Integer(), nullable=False, comment="Account"),
        sa.Column("site_id", sa.Integer(), nullable=False, comment="Site"),
        sa.ForeignKeyConstraint(
            ["account_id"], ["account.id"], name=op.f("fk_account_site_account_id_account"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["site_id"], ["site.id"], name=op.f("fk_account_site_site_id_site"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("account_id", "site_id", name=op.f("pk_account_site")),
    )


def downgrade() -> None:
    op.drop_table("account_site")
    op.drop_table("account")
