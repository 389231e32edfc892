"""Record status and electronic signatures; the investigator role; signed-only data cuts

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 09:00:00.000000

A patient's record status (``patient_status``: in progress, complete, verified, signed)
and the investigators' signatures (``signature``), which are never deleted and only ever
changed by their voiding, once: refused by the audit hooks and by the triggers here. The
account roles gain ``investigator`` and the sign-in outcomes ``signature_refused``; a site
says whether its patients need source verification before signing; a data cut says
whether it froze signed patients only, and how many it left out.

SQLite cannot alter a CHECK constraint: the code lists are widened as SQLite's own
documentation prescribes for loosening a constraint (the table's stored CREATE statement
rewritten, the schema version bumped, the integrity checked), since copying the account
table would break the foreign keys that point at it.

The downgrade drops the status and the signatures and narrows the code lists again:
refused while any status, signature or investigator account exists unless forced
(``registry db downgrade --force``; the plain alembic command: ``-x force=yes``), which
disables the investigator accounts as analysts and logs refused signatures as failed sign-ins. The audit log keeps what they held.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from registry.db import downgrade_forced, refuse_dropping_sign_off

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES = ("in_progress", "complete", "verified", "signed")
#: The code lists widened, by table: (constraint, column, values before, values added).
WIDENED = {
    "account": ("ck_account_role", "role", ("coordinator", "data_manager", "analyst", "admin"), ("investigator",)),
    "sign_in_event": (
        "ck_sign_in_event_sign_in_outcome",
        "outcome",
        ("success", "failure", "throttled", "signed_out", "password_changed", "role_changed", "disabled"),
        ("signature_refused",),
    ),
}
#: What the signature triggers refuse: any delete, and any update but the voiding of a standing signature.
SIGNATURE_FIXED = ("patient_id", "signer", "signed_at", "meaning")
REFUSED_DELETE = "signature keeps every signature: a signature cannot be deleted (it is voided)"
REFUSED_UPDATE = "a signature cannot be changed, only voided once"


def _in_list(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


def _set_codes(table: str, constraint: str, column: str, old: Sequence[str], new: Sequence[str]) -> None:
    """The CHECK ``constraint`` of ``table`` made to allow ``new`` instead of ``old``."""
    connection = op.get_bind()
    if connection.dialect.name != "sqlite":
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {constraint}")
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {constraint} CHECK ({_in_list(column, new)})")
        return
    before, after = f"CHECK ({_in_list(column, old)})", f"CHECK ({_in_list(column, new)})"
    stored = connection.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).scalar_one()
    if before not in stored:
        raise RuntimeError(f"{table}: the constraint {constraint} is not {before} as migration 0002/0006 made it")
    version = connection.exec_driver_sql("PRAGMA schema_version").scalar_one()
    connection.exec_driver_sql("PRAGMA writable_schema = ON")
    connection.exec_driver_sql(
        "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = ?", (stored.replace(before, after), table)
    )
    connection.exec_driver_sql(f"PRAGMA schema_version = {version + 1}")
    connection.exec_driver_sql("PRAGMA writable_schema = OFF")
    problems = connection.exec_driver_sql("PRAGMA integrity_check").scalars().all()
    if problems != ["ok"]:
        raise RuntimeError(f"{table}: the integrity check after widening {constraint} found {problems}")


def _signature_triggers(dialect: str) -> list[str]:
    changed = " OR ".join(f"NEW.{name} IS NOT OLD.{name}" for name in SIGNATURE_FIXED)
    if dialect == "sqlite":
        return [
            f"CREATE TRIGGER signature_no_delete BEFORE DELETE ON signature "
            f"BEGIN SELECT RAISE(ABORT, '{REFUSED_DELETE}'); END",
            f"CREATE TRIGGER signature_no_update BEFORE UPDATE ON signature "
            f"WHEN OLD.voided_at IS NOT NULL OR NEW.voided_at IS NULL OR {changed} "
            f"BEGIN SELECT RAISE(ABORT, '{REFUSED_UPDATE}'); END",
        ]
    changed = " OR ".join(f"NEW.{name} IS DISTINCT FROM OLD.{name}" for name in SIGNATURE_FIXED)
    return [
        f"""CREATE FUNCTION signature_refused() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'UPDATE' AND OLD.voided_at IS NULL AND NEW.voided_at IS NOT NULL AND NOT ({changed}) THEN
                RETURN NEW;
            END IF;
            IF TG_OP = 'UPDATE' THEN
                RAISE EXCEPTION '{REFUSED_UPDATE}' USING ERRCODE = 'integrity_constraint_violation';
            END IF;
            RAISE EXCEPTION '{REFUSED_DELETE}' USING ERRCODE = 'integrity_constraint_violation';
        END $$""",
        "CREATE TRIGGER signature_refused BEFORE UPDATE OR DELETE ON signature "
        "FOR EACH ROW EXECUTE FUNCTION signature_refused()",
        "CREATE FUNCTION signature_not_truncated() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        f"BEGIN RAISE EXCEPTION '{REFUSED_DELETE}' USING ERRCODE = 'integrity_constraint_violation'; END $$",
        "CREATE TRIGGER signature_not_truncated BEFORE TRUNCATE ON signature "
        "FOR EACH STATEMENT EXECUTE FUNCTION signature_not_truncated()",
    ]


def upgrade() -> None:
    for table, (constraint, column, old, added) in WIDENED.items():
        _set_codes(table, constraint, column, old, (*old, *added))
    with op.batch_alter_table("site", recreate="never") as batch:
        batch.add_column(sa.Column("verification_required", sa.Boolean(), server_default=sa.false(), nullable=False,
                                   comment="Whether a data manager must verify a patient's source data before an "
                                   "investigator signs (registry site verification)"))  # fmt: skip
    with op.batch_alter_table("data_cut", recreate="never") as batch:
        batch.add_column(sa.Column("signed_only", sa.Boolean(), server_default=sa.false(), nullable=False,
                                   comment="Whether only signed patients were frozen (registry cut create "
                                   "--signed-only)"))  # fmt: skip
        batch.add_column(sa.Column("left_out", sa.JSON(), nullable=True,
                                   comment="Patients left out of a signed-only cut, by record status (empty: none "
                                   "left out)"))  # fmt: skip
    op.create_table(
        "patient_status",
        sa.Column("patient_id", sa.Integer(), nullable=False, comment="Patient whose record status this is"),
        sa.Column("status", sa.Enum(*STATUSES, name="record_status", native_enum=False, create_constraint=True,
                                    length=32), nullable=False, comment="in_progress, complete, verified or signed"),
        sa.Column("changed_by", sa.String(length=100), nullable=False,
                  comment="Who set the status (or whose change of the data set it back)"),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False, comment="When the status was set (UTC)"),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False,
                  comment="Change counter: a status set from an older one is refused"),
        sa.ForeignKeyConstraint(["patient_id"], ["patient.id"], name=op.f("fk_patient_status_patient_id_patient"),
                                ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("patient_id", name=op.f("pk_patient_status")),
    )  # fmt: skip
    op.create_index(op.f("ix_patient_status_status"), "patient_status", ["status"], unique=False)
    op.create_table(
        "signature",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False, comment="Patient whose data were signed"),
        sa.Column("signer", sa.String(length=64), nullable=False,
                  comment="Account (user name) of the investigator who signed, after re-entering their password"),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False,
                  comment="When the signature was made (UTC)"),
        sa.Column("meaning", sa.String(length=500), nullable=False,
                  comment="What the signature attests, as shown to the signer"),
        sa.Column("voided_at", sa.DateTime(timezone=True), nullable=True,
                  comment="When the signature was voided (UTC); empty while it stands"),
        sa.Column("voided_by", sa.String(length=100), nullable=True,
                  comment="Who voided it: the author of the change to the data, or of the re-opening"),
        sa.Column("void_reason", sa.String(length=500), nullable=True,
                  comment="Why it was voided (the change and its reason)"),
        sa.ForeignKeyConstraint(["patient_id"], ["patient.id"], name=op.f("fk_signature_patient_id_patient"),
                                ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signature")),
    )  # fmt: skip
    op.create_index(op.f("ix_signature_patient_id"), "signature", ["patient_id"], unique=False)
    for statement in _signature_triggers(op.get_bind().dialect.name):
        op.execute(statement)


def downgrade() -> None:
    connection = op.get_bind()
    if not downgrade_forced():
        refuse_dropping_sign_off(connection)
    if connection.dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS signature_no_delete")
        op.execute("DROP TRIGGER IF EXISTS signature_no_update")
    else:
        op.execute("DROP FUNCTION IF EXISTS signature_refused() CASCADE")
        op.execute("DROP FUNCTION IF EXISTS signature_not_truncated() CASCADE")
    op.drop_index(op.f("ix_signature_patient_id"), table_name="signature")
    op.drop_table("signature")
    op.drop_index(op.f("ix_patient_status_status"), table_name="patient_status")
    op.drop_table("patient_status")
    with op.batch_alter_table("data_cut", recreate="never") as batch:
        batch.drop_column("left_out")
        batch.drop_column("signed_only")
    with op.batch_alter_table("site", recreate="never") as batch:
        batch.drop_column("verification_required")
    op.execute("UPDATE account SET role = 'analyst', active = false WHERE role = 'investigator'")
    op.execute("UPDATE sign_in_event SET outcome = 'failure' WHERE outcome = 'signature_refused'")
    for table, (constraint, column, old, added) in WIDENED.items():
        _set_codes(table, constraint, column, (*old, *added), old)
