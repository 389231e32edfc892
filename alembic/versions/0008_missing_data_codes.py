"""Missing-data codes: each clinical table with optional fields keeps its records' codes in ``missing_codes``

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 12:40:00.000000

A field coded "unknown", "not done", "not applicable" or "not asked" is itself empty; its
code is kept beside it (registry/missing.py). The downgrade drops the codes, so it is
refused while any record holds one unless forced (``registry db downgrade --force``,
which logs it first; the plain alembic command: ``-x force=yes``): the coded fields
would become blanks.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from registry.db import CODED_TABLES, downgrade_forced, refuse_dropping_missing_codes

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CODED = CODED_TABLES
COMMENT = "Missing-data codes of the record's fields (JSON: field -> code); a coded field itself is empty"


def upgrade() -> None:
    for table in CODED:
        with op.batch_alter_table(table, recreate="never") as batch:
            batch.add_column(sa.Column("missing_codes", sa.Text(), nullable=True, comment=COMMENT))


def downgrade() -> None:
    connection = op.get_bind()
    if not downgrade_forced():
        refuse_dropping_missing_codes(connection)
    for table in CODED:
        with op.batch_alter_table(table, recreate="never") as batch:
            batch.drop_column("missing_codes")
