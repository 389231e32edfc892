"""Sessions and sign-in events: server-side web sessions, the sign-in log, the sign-in throttle

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 03:13:25.447187
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sign_in_throttle",
        sa.Column("key", sa.String(length=200), nullable=False, comment="addr:ADDRESS, or name:ADDRESS:NAME"),
        sa.Column(
            "failures",
            sa.Integer(),
            nullable=False,
            comment="Failed (or not yet answered) attempts since the last success or quiet hour",
        ),
        sa.Column(
            "last_failure_at", sa.DateTime(timezone=True), nullable=False, comment="Latest counted attempt (UTC)"
        ),
        sa.Column(
            "next_allowed_at",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="No attempt is checked before this time (UTC)",
        ),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_sign_in_throttle")),
    )
    op.create_table(
        "sign_in_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, comment="When it happened (UTC)"),
        sa.Column(
            "username",
            sa.String(length=64),
            nullable=False,
            comment="User name as typed, trimmed and lower-cased (cut at 64 characters)",
        ),
        sa.Column("account_id", sa.Integer(), nullable=True, comment="The account of that name, if there is one"),
        sa.Column(
            "client_address",
            sa.String(length=45),
            nullable=True,
            comment="Client address of the request (empty from the command line)",
        ),
        sa.Column(
            "outcome",
            sa.Enum(
                "success",
                "failure",
                "throttled",
                "signed_out",
                "password_changed",
                "role_changed",
                "disabled",
                name="sign_in_outcome",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
            comment="What happened",
        ),
        sa.Column(
            "actor",
            sa.String(length=100),
            nullable=True,
            comment="Who made an account change (an administrator, or the command line's user)",
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["account.id"], name=op.f("fk_sign_in_event_account_id_account"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sign_in_event")),
    )
    with op.batch_alter_table("sign_in_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sign_in_event_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_sign_in_event_username"), ["username"], unique=False)

    op.create_table(
        "web_session",
        sa.Column(
            "id", sa.String(length=64), nullable=False, comment="SHA-256 (hex) of the session token the browser holds"
        ),
        sa.Column("account_id", sa.Integer(), nullable=False, comment="Account signed in"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, comment="When the session began (UTC)"),
        sa.Column(
            "last_seen_at",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="Latest request of the session (UTC, to the minute)",
        ),
        sa.Column(
            "ended_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="When the session ended (UTC); empty while it lasts",
        ),
        sa.Column(
            "end_reason",
            sa.Enum(
                "success",
                "failure",
                "throttled",
                "signed_out",
                "password_changed",
                "role_changed",
                "disabled",
                name="web_session_end",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=True,
            comment="Why the session ended",
        ),
        sa.Column(
            "resumed_form",
            sa.Text(),
            nullable=True,
            comment="What a form held when the previous session ended (JSON: its address and fields), until it opens",
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["account.id"], name=op.f("fk_web_session_account_id_account"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_session")),
    )
    with op.batch_alter_table("web_session", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_web_session_account_id"), ["account_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("web_session", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_web_session_account_id"))

    op.drop_table("web_session")
    with op.batch_alter_table("sign_in_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sign_in_event_username"))
        batch_op.drop_index(batch_op.f("ix_sign_in_event_at"))

    op.drop_table("sign_in_event")
    op.drop_table("sign_in_throttle")
