"""Personal tokens for the JSON API: the tokens (hashed), the sites they serve, and every use

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 03:30:00.000000

``api_token`` holds each token's SHA-256 (never the token), its holder's name, role,
expiry and revocation; ``api_token_site`` the sites of a coordinator's or investigator's
token; ``api_token_use`` every request made with one, which the rate limit counts
(registry/tokens.py). The downgrade drops the three tables (every token then stops
working; the audit log keeps their creation and revocation).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLES = ("coordinator", "data_manager", "analyst", "admin", "investigator")


def _moment(name: str, comment: str, *, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable, comment=comment)


def upgrade() -> None:
    op.create_table(
        "api_token",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False,
                  comment="Who holds the token, or what for (unique): its name in the audit trail is token:NAME"),
        sa.Column("token_hash", sa.String(length=64), nullable=False,
                  comment="SHA-256 (hex) of the token (the token itself is never stored)"),
        sa.Column("role", sa.Enum(*ROLES, name="api_token_role", native_enum=False, create_constraint=True, length=32),
                  nullable=False, comment="What the token may do (as an account of that role)"),
        _moment("created_at", "When the token was created (UTC)"),
        sa.Column("created_by", sa.String(length=100), nullable=False, comment="Who created it"),
        _moment("expires_at", "The token is refused from this time on (UTC)"),
        _moment("revoked_at", "When it was revoked (UTC); empty while it stands", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_token")),
        sa.UniqueConstraint("name", name=op.f("uq_api_token_name")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_token_token_hash")),
    )  # fmt: skip
    op.create_table(
        "api_token_site",
        sa.Column("token_id", sa.Integer(), nullable=False, comment="Token"),
        sa.Column("site_id", sa.Integer(), nullable=False, comment="Site"),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], name=op.f("fk_api_token_site_site_id_site"),
                                ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["token_id"], ["api_token.id"], name=op.f("fk_api_token_site_token_id_api_token"),
                                ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("token_id", "site_id", name=op.f("pk_api_token_site")),
    )  # fmt: skip
    op.create_table(
        "api_token_use",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_id", sa.Integer(), nullable=False, comment="Token used"),
        _moment("at", "When (UTC)"),
        sa.Column("method", sa.String(length=8), nullable=False, comment="HTTP method"),
        sa.Column("path", sa.String(length=200), nullable=False, comment="Path requested (the query string is not kept)"),
        sa.Column("status", sa.Integer(), nullable=False, comment="HTTP status answered (0 while it is being answered)"),
        sa.Column("client_address", sa.String(length=45), nullable=True, comment="Client address of the request"),
        sa.ForeignKeyConstraint(["token_id"], ["api_token.id"], name=op.f("fk_api_token_use_token_id_api_token"),
                                ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_token_use")),
    )  # fmt: skip
    op.create_index("ix_api_token_use_token_id_at", "api_token_use", ["token_id", "at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_api_token_use_token_id_at", table_name="api_token_use")
    op.drop_table("api_token_use")
    op.drop_table("api_token_site")
    op.drop_table("api_token")
