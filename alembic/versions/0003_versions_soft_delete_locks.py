"""Edit counters (optimistic locking), soft deletion of clinical records, patient locks

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 07:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ENTERED = ("patient", "antibody_test", "lab_result", "pft", "hrct", "treatment", "adverse_event", "follow_up")
VERSION = "Edit counter: an edit made from an older version is refused (optimistic locking)"
DELETED = "When the record was deleted (UTC); deleted records are kept, hidden from analyses and restorable"
LOCKED = "When a data manager locked the patient's records against edits (UTC); empty while open"


# Columns are added and dropped in place (ALTER TABLE; SQLite >= 3.35 drops columns itself), so a
# downgrade keeps every CHECK and foreign key of the tables as they are.


def upgrade() -> None:
    for table in ENTERED:
        with op.batch_alter_table(table, recreate="never") as batch:
            batch.add_column(sa.Column("version", sa.Integer(), server_default="1", nullable=False, comment=VERSION))
            batch.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True, comment=DELETED))
    with op.batch_alter_table("patient", recreate="never") as batch:
        batch.add_column(sa.Column("locked_at", sa.DateTime(timezone=True), nullable=True, comment=LOCKED))


def downgrade() -> None:
    with op.batch_alter_table("patient", recreate="never") as batch:
        batch.drop_column("locked_at")
    for table in ENTERED:
        with op.batch_alter_table(table, recreate="never") as batch:
            batch.drop_column("deleted_at")
            batch.drop_column("version")
