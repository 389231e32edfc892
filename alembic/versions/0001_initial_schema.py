"""Initial schema: every registry table, its keys and constraints

Revision ID: 0001
Revises:
Create Date: 2026-11-24 23:02:34.574994
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "changed_at", sa.DateTime(timezone=True), nullable=False, comment="When the change was committed (UTC)"
        ),
        sa.Column("actor", sa.String(length=100), nullable=False, comment="User or process that made the change"),
        sa.Column("reason", sa.String(length=500), nullable=True, comment="Reason for the change, as given"),
        sa.Column(
            "action",
            sa.Enum("insert", "update", "delete", name="action", native_enum=False, create_constraint=True, length=32),
            nullable=False,
            comment="insert, update or delete",
        ),
        sa.Column("table_name", sa.String(length=64), nullable=False, comment="Table changed"),
        sa.Column("record_key", sa.String(length=64), nullable=False, comment="Primary key of the changed row"),
        sa.Column(
            "study_id",
            sa.String(length=32),
            nullable=True,
            comment="Patient the row belongs to, for per-patient history",
        ),
        sa.Column("old_values", sa.JSON(none_as_null=True), nullable=True, comment="Changed columns before the change"),
        sa.Column("new_values", sa.JSON(none_as_null=True), nullable=True, comment="Changed columns after the change"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_log_study_id"), ["study_id"], unique=False)

    op.create_table(
        "site",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "code", sa.String(length=16), nullable=False, comment="Short site code used in study_ids and reports"
        ),
        sa.Column("name", sa.String(length=200), nullable=False, comment="Hospital or centre name"),
        sa.Column("country", sa.String(length=2), nullable=True, comment="ISO 3166-1 alpha-2 country code"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_site")),
        sa.UniqueConstraint("code", name=op.f("uq_site_code")),
    )
    op.create_table(
        "patient",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "study_id",
            sa.String(length=32),
            nullable=False,
            comment="Pseudonymous study identifier; the only key that leaves the database",
        ),
        sa.Column("site_id", sa.Integer(), nullable=False, comment="Recruiting site"),
        sa.Column(
            "sex",
            sa.Enum("female", "male", name="sex", native_enum=False, create_constraint=True, length=32),
            nullable=False,
            comment="Sex recorded at birth",
        ),
        sa.Column(
            "birth_date", sa.Date(), nullable=False, comment="Date of birth (used for age; never exported exactly)"
        ),
        sa.Column(
            "smoking",
            sa.Enum("never", "former", "current", name="smoking", native_enum=False, create_constraint=True, length=32),
            nullable=True,
            comment="Smoking history",
        ),
        sa.Column(
            "dm_diagnosis_date",
            sa.Date(),
            nullable=True,
            comment="Date dermatomyositis (or clinically amyopathic DM) was diagnosed",
        ),
        sa.Column(
            "ild_diagnosis_date", sa.Date(), nullable=True, comment="Date interstitial lung disease was diagnosed"
        ),
        sa.Column(
            "resp_symptom_onset_date",
            sa.Date(),
            nullable=True,
            comment="Onset of respiratory symptoms (cough, dyspnoea)",
        ),
        sa.Column(
            "ild_worsening_date",
            sa.Date(),
            nullable=True,
            comment="Date of documented radiological or respiratory worsening, if any",
        ),
        sa.Column("rpild", sa.Boolean(), nullable=True, comment="Rapidly progressive ILD, judged by rpild_definition"),
        sa.Column(
            "rpild_definition",
            sa.Enum(
                "worsening_1_month",
                "worsening_3_months",
                name="rpild_definition",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=True,
            comment="Definition used to judge the RPILD flag",
        ),
        sa.Column("gottron", sa.Boolean(), nullable=True, comment="Gottron papules or sign"),
        sa.Column("heliotrope_rash", sa.Boolean(), nullable=True, comment="Heliotrope rash"),
        sa.Column("mechanics_hands", sa.Boolean(), nullable=True, comment="Mechanic's hands"),
        sa.Column("skin_ulcers", sa.Boolean(), nullable=True, comment="Cutaneous ulcers"),
        sa.Column("fever", sa.Boolean(), nullable=True, comment="Fever (>= 38 C) at presentation"),
        sa.Column("arthritis", sa.Boolean(), nullable=True, comment="Arthritis or arthralgia"),
        sa.Column("muscle_weakness", sa.Boolean(), nullable=True, comment="Proximal muscle weakness"),
        sa.CheckConstraint(
            "rpild IS NULL OR rpild_definition IS NOT NULL", name=op.f("ck_patient_rpild_needs_definition")
        ),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], name=op.f("fk_patient_site_id_site"), ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patient")),
        sa.UniqueConstraint("study_id", name=op.f("uq_patient_study_id")),
    )
    with op.batch_alter_table("patient", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_patient_site_id"), ["site_id"], unique=False)

    op.create_table(
        "adverse_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False, comment="Patient the record belongs to"),
        sa.Column("onset_date", sa.Date(), nullable=False, comment="Date the event began"),
        sa.Column(
            "term",
            sa.Enum(
                "cmv_reactivation",
                "pjp",
                "herpes_zoster",
                "bacterial_infection",
                "fungal_infection",
                "other_infection",
                "hepatotoxicity",
                "nephrotoxicity",
                "hyperglycaemia",
                "cytopenia",
                "thrombosis",
                "pneumomediastinum",
                "gastrointestinal",
                "hypertension",
                "neurotoxicity",
                "other",
                name="term",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
            comment="Adverse event term",
        ),
        sa.Column(
            "term_detail",
            sa.String(length=200),
            nullable=True,
            comment="Organism, site or description (required for term 'other')",
        ),
        sa.Column("ctcae_grade", sa.Integer(), nullable=False, comment="Severity grade, CTCAE v5.0"),
        sa.Column(
            "serious",
            sa.Boolean(),
            nullable=False,
            comment="Serious adverse event (ICH E2A: death, life-threatening, hospitalisation, ...)",
        ),
        sa.Column(
            "attributed_drug",
            sa.Enum(
                "tofacitinib",
                "tacrolimus",
                "glucocorticoid",
                "methylprednisolone_pulse",
                "cyclophosphamide",
                "ivig",
                "mycophenolate",
                "rituximab",
                "ciclosporin",
                "azathioprine",
                "methotrexate",
                "hydroxychloroquine",
                "baricitinib",
                "ruxolitinib",
                "tocilizumab",
                "basiliximab",
                "pirfenidone",
                "nintedanib",
                "tmp_smx_prophylaxis",
                "plasma_exchange",
                "pmx_dhp",
                "ecmo",
                name="attributed_drug",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=True,
            comment="Drug the event is attributed to, if any",
        ),
        sa.Column(
            "led_to_discontinuation",
            sa.Boolean(),
            nullable=False,
            comment="The attributed drug was stopped because of the event",
        ),
        sa.Column(
            "outcome",
            sa.Enum(
                "recovered",
                "recovering",
                "not_recovered",
                "sequelae",
                "fatal",
                "unknown",
                name="outcome",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=True,
            comment="Outcome of the event",
        ),
        sa.Column("resolution_date", sa.Date(), nullable=True, comment="Date the event resolved"),
        sa.CheckConstraint("ctcae_grade BETWEEN 1 AND 5", name=op.f("ck_adverse_event_ctcae_grade_1_to_5")),
        sa.CheckConstraint(
            "resolution_date IS NULL OR resolution_date >= onset_date",
            name=op.f("ck_adverse_event_resolves_after_onset"),
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f("fk_adverse_event_patient_id_patient"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_adverse_event")),
        sa.UniqueConstraint(
            "patient_id", "term", "onset_date", name=op.f("uq_adverse_event_patient_id_term_onset_date")
        ),
    )
    with op.batch_alter_table("adverse_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_adverse_event_patient_id"), ["patient_id"], unique=False)

    op.create_table(
        "antibody_test",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False, comment="Patient the record belongs to"),
        sa.Column(
            "antibody",
            sa.Enum(
                "anti_mda5",
                "anti_ro52",
                "anti_ro60",
                "anti_jo1",
                "anti_pl7",
                "anti_pl12",
                "anti_ej",
                "anti_oj",
                "anti_mi2",
                "anti_tif1g",
                "anti_nxp2",
                "anti_sae",
                "anti_srp",
                "anti_hmgcr",
                "anti_pmscl",
                "anti_ku",
                "ana",
                name="antibody",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
            comment="Antibody tested",
        ),
        sa.Column(
            "assay",
            sa.Enum(
                "elisa",
                "line_blot",
                "immunoprecipitation",
                "cba",
                "iif",
                name="assay",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
            comment="Assay method",
        ),
        sa.Column("sample_date", sa.Date(), nullable=False, comment="Date the sample was taken"),
        sa.Column(
            "grade",
            sa.Enum(
                "negative",
                "weak",
                "moderate",
                "strong",
                name="grade",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=True,
            comment="Semi-quantitative result (line blot: - / + / ++ / +++)",
        ),
        sa.Column("value", sa.Float(), nullable=True, comment="Quantitative result (ELISA index, U/mL or titre)"),
        sa.Column(
            "unit",
            sa.Enum("index", "U/mL", "titre", name="unit", native_enum=False, create_constraint=True, length=32),
            nullable=True,
            comment="Unit of value",
        ),
        sa.Column(
            "cutoff",
            sa.Float(),
            nullable=True,
            comment="The kit's positivity cut-off, in the unit of value (anti-MDA5 ELISA: 32)",
        ),
        sa.CheckConstraint("assay <> 'line_blot' OR grade IS NOT NULL", name=op.f("ck_antibody_test_line_blot_graded")),
        sa.CheckConstraint("cutoff IS NULL OR cutoff >= 0", name=op.f("ck_antibody_test_cutoff_not_negative")),
        sa.CheckConstraint("grade IS NOT NULL OR value IS NOT NULL", name=op.f("ck_antibody_test_has_result")),
        sa.CheckConstraint("value IS NULL OR unit IS NOT NULL", name=op.f("ck_antibody_test_value_has_unit")),
        sa.CheckConstraint("value IS NULL OR value >= 0", name=op.f("ck_antibody_test_value_not_negative")),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f("fk_antibody_test_patient_id_patient"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_antibody_test")),
        sa.UniqueConstraint(
            "patient_id",
            "antibody",
            "assay",
            "sample_date",
            name=op.f("uq_antibody_test_patient_id_antibody_assay_sample_date"),
        ),
    )
    with op.batch_alter_table("antibody_test", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_antibody_test_patient_id"), ["patient_id"], unique=False)

    op.create_table(
        "follow_up",
        sa.Column("patient_id", sa.Integer(), nullable=False, comment="Patient the record belongs to"),
        sa.Column(
            "last_contact_date",
            sa.Date(),
            nullable=False,
            comment="Last date the patient was known alive (or date of death)",
        ),
        sa.Column(
            "vital_status",
            sa.Enum("alive", "dead", name="vital_status", native_enum=False, create_constraint=True, length=32),
            nullable=False,
            comment="Vital status at last contact",
        ),
        sa.Column("death_date", sa.Date(), nullable=True, comment="Date of death"),
        sa.Column(
            "death_cause",
            sa.Enum(
                "respiratory_failure_ild",
                "infection",
                "pneumomediastinum",
                "cardiovascular",
                "malignancy",
                "other",
                "unknown",
                name="death_cause",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=True,
            comment="Principal cause of death",
        ),
        sa.Column("lung_transplant_date", sa.Date(), nullable=True, comment="Date of lung transplantation, if any"),
        sa.Column(
            "lost_to_follow_up", sa.Boolean(), nullable=False, comment="No contact possible after last_contact_date"
        ),
        sa.CheckConstraint(
            "(vital_status = 'dead') = (death_date IS NOT NULL)", name=op.f("ck_follow_up_death_date_iff_dead")
        ),
        sa.CheckConstraint(
            "death_cause IS NULL OR vital_status = 'dead'", name=op.f("ck_follow_up_cause_only_if_dead")
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f("fk_follow_up_patient_id_patient"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("patient_id", name=op.f("pk_follow_up")),
    )
    op.create_table(
        "hrct",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False, comment="Patient the record belongs to"),
        sa.Column("scan_date", sa.Date(), nullable=False, comment="Date of the scan"),
        sa.Column(
            "pattern",
            sa.Enum(
                "op",
                "nsip",
                "nsip_op",
                "uip",
                "dad",
                "unclassifiable",
                name="pattern",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=True,
            comment="Radiological pattern",
        ),
        sa.Column(
            "ggo_right_upper_pct", sa.Float(), nullable=True, comment="Ground-glass opacity extent, right upper zone"
        ),
        sa.Column(
            "ggo_right_middle_pct", sa.Float(), nullable=True, comment="Ground-glass opacity extent, right middle zone"
        ),
        sa.Column(
            "ggo_right_lower_pct", sa.Float(), nullable=True, comment="Ground-glass opacity extent, right lower zone"
        ),
        sa.Column(
            "ggo_left_upper_pct", sa.Float(), nullable=True, comment="Ground-glass opacity extent, left upper zone"
        ),
        sa.Column(
            "ggo_left_middle_pct", sa.Float(), nullable=True, comment="Ground-glass opacity extent, left middle zone"
        ),
        sa.Column(
            "ggo_left_lower_pct", sa.Float(), nullable=True, comment="Ground-glass opacity extent, left lower zone"
        ),
        sa.Column(
            "consolidation_right_upper_pct", sa.Float(), nullable=True, comment="Consolidation extent, right upper zone"
        ),
        sa.Column(
            "consolidation_right_middle_pct",
            sa.Float(),
            nullable=True,
            comment="Consolidation extent, right middle zone",
        ),
        sa.Column(
            "consolidation_right_lower_pct", sa.Float(), nullable=True, comment="Consolidation extent, right lower zone"
        ),
        sa.Column(
            "consolidation_left_upper_pct", sa.Float(), nullable=True, comment="Consolidation extent, left upper zone"
        ),
        sa.Column(
            "consolidation_left_middle_pct", sa.Float(), nullable=True, comment="Consolidation extent, left middle zone"
        ),
        sa.Column(
            "consolidation_left_lower_pct", sa.Float(), nullable=True, comment="Consolidation extent, left lower zone"
        ),
        sa.Column(
            "total_score",
            sa.Float(),
            nullable=True,
            comment="Total HRCT score by the site's scoring protocol (FLAIR uses >= 133)",
        ),
        sa.CheckConstraint(
            "consolidation_left_lower_pct IS NULL OR consolidation_left_lower_pct BETWEEN 0 AND 100",
            name=op.f("ck_hrct_consolidation_left_lower_pct_0_to_100"),
        ),
        sa.CheckConstraint(
            "consolidation_left_middle_pct IS NULL OR consolidation_left_middle_pct BETWEEN 0 AND 100",
            name=op.f("ck_hrct_consolidation_left_middle_pct_0_to_100"),
        ),
        sa.CheckConstraint(
            "consolidation_left_upper_pct IS NULL OR consolidation_left_upper_pct BETWEEN 0 AND 100",
            name=op.f("ck_hrct_consolidation_left_upper_pct_0_to_100"),
        ),
        sa.CheckConstraint(
            "consolidation_right_lower_pct IS NULL OR consolidation_right_lower_pct BETWEEN 0 AND 100",
            name=op.f("ck_hrct_consolidation_right_lower_pct_0_to_100"),
        ),
        sa.CheckConstraint(
            "consolidation_right_middle_pct IS NULL OR consolidation_right_middle_pct BETWEEN 0 AND 100",
            name=op.f("ck_hrct_consolidation_right_middle_pct_0_to_100"),
        ),
        sa.CheckConstraint(
            "consolidation_right_upper_pct IS NULL OR consolidation_right_upper_pct BETWEEN 0 AND 100",
            name=op.f("ck_hrct_consolidation_right_upper_pct_0_to_100"),
        ),
        sa.CheckConstraint(
            "ggo_left_lower_pct IS NULL OR ggo_left_lower_pct BETWEEN 0 AND 100",
            name=op.f("ck_hrct_ggo_left_lower_pct_0_to_100"),
        ),
        sa.CheckConstraint(
            "ggo_left_middle_pct IS NULL OR ggo_left_middle_pct BETWEEN 0 AND 100",
            name=op.f("ck_hrct_ggo_left_middle_pct_0_to_100"),
        ),
        sa.CheckConstraint(
            "ggo_left_upper_pct IS NULL OR ggo_left_upper_pct BETWEEN 0 AND 100",
            name=op.f("ck_hrct_ggo_left_upper_pct_0_to_100"),
        ),
        sa.CheckConstraint(
            "ggo_right_lower_pct IS NULL OR ggo_right_lower_pct BETWEEN 0 AND 100",
            name=op.f("ck_hrct_ggo_right_lower_pct_0_to_100"),
        ),
        sa.CheckConstraint(
            "ggo_right_middle_pct IS NULL OR ggo_right_middle_pct BETWEEN 0 AND 100",
            name=op.f("ck_hrct_ggo_right_middle_pct_0_to_100"),
        ),
        sa.CheckConstraint(
            "ggo_right_upper_pct IS NULL OR ggo_right_upper_pct BETWEEN 0 AND 100",
            name=op.f("ck_hrct_ggo_right_upper_pct_0_to_100"),
        ),
        sa.CheckConstraint("total_score IS NULL OR total_score >= 0", name=op.f("ck_hrct_total_score_not_negative")),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f("fk_hrct_patient_id_patient"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hrct")),
        sa.UniqueConstraint("patient_id", "scan_date", name=op.f("uq_hrct_patient_id_scan_date")),
    )
    with op.batch_alter_table("hrct", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_hrct_patient_id"), ["patient_id"], unique=False)

    op.create_table(
        "lab_result",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False, comment="Patient the record belongs to"),
        sa.Column(
            "analyte",
            sa.Enum(
                "ferritin",
                "ldh",
                "crp",
                "esr",
                "kl6",
                "lymphocytes",
                "ck",
                "alt",
                "ast",
                "albumin",
                "creatinine",
                "pao2",
                "fio2",
                "tacrolimus_trough",
                name="analyte",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
            comment="Analyte measured (canonical units in the analyte code list)",
        ),
        sa.Column("sample_date", sa.Date(), nullable=False, comment="Date the sample was taken"),
        sa.Column("value", sa.Float(), nullable=False, comment="Result as a plain number, in unit"),
        sa.Column(
            "unit",
            sa.String(length=16),
            nullable=False,
            comment="Unit of value; must be the analyte's canonical unit to be analysed",
        ),
        sa.CheckConstraint("value >= 0", name=op.f("ck_lab_result_value_not_negative")),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f("fk_lab_result_patient_id_patient"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lab_result")),
        sa.UniqueConstraint(
            "patient_id", "analyte", "sample_date", name=op.f("uq_lab_result_patient_id_analyte_sample_date")
        ),
    )
    with op.batch_alter_table("lab_result", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_lab_result_patient_id"), ["patient_id"], unique=False)

    op.create_table(
        "patient_identifier",
        sa.Column("patient_id", sa.Integer(), nullable=False, comment="Patient the record belongs to"),
        sa.Column(
            "hospital_number", sa.String(length=64), nullable=True, comment="Hospital record number (direct identifier)"
        ),
        sa.Column("full_name", sa.String(length=200), nullable=True, comment="Full name (direct identifier)"),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f("fk_patient_identifier_patient_id_patient"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("patient_id", name=op.f("pk_patient_identifier")),
    )
    op.create_table(
        "pft",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False, comment="Patient the record belongs to"),
        sa.Column(
            "test_date", sa.Date(), nullable=False, comment="Date of the test (or of the decision it could not be done)"
        ),
        sa.Column("fvc_l", sa.Float(), nullable=True, comment="Forced vital capacity"),
        sa.Column("fvc_pct_pred", sa.Float(), nullable=True, comment="FVC, percent of predicted"),
        sa.Column("dlco_pct_pred", sa.Float(), nullable=True, comment="DLCO, percent of predicted"),
        sa.Column("tlc_pct_pred", sa.Float(), nullable=True, comment="Total lung capacity, percent of predicted"),
        sa.Column(
            "not_done_reason",
            sa.Enum(
                "too_ill",
                "oxygen_or_ventilation",
                "infection_control",
                "refused",
                "not_available",
                "other",
                name="not_done_reason",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=True,
            comment="Why the test could not be done (leave results empty)",
        ),
        sa.CheckConstraint("dlco_pct_pred IS NULL OR dlco_pct_pred > 0", name=op.f("ck_pft_dlco_pct_pred_positive")),
        sa.CheckConstraint("fvc_l IS NULL OR fvc_l > 0", name=op.f("ck_pft_fvc_l_positive")),
        sa.CheckConstraint("fvc_pct_pred IS NULL OR fvc_pct_pred > 0", name=op.f("ck_pft_fvc_pct_pred_positive")),
        sa.CheckConstraint(
            "not_done_reason IS NOT NULL OR fvc_l IS NOT NULL OR fvc_pct_pred IS NOT NULL OR dlco_pct_pred IS NOT NULL OR tlc_pct_pred IS NOT NULL",
            name=op.f("ck_pft_has_result_or_reason"),
        ),
        sa.CheckConstraint(
            "not_done_reason IS NULL OR (fvc_l IS NULL AND fvc_pct_pred IS NULL AND dlco_pct_pred IS NULL AND tlc_pct_pred IS NULL)",
            name=op.f("ck_pft_not_done_has_no_results"),
        ),
        sa.CheckConstraint("tlc_pct_pred IS NULL OR tlc_pct_pred > 0", name=op.f("ck_pft_tlc_pct_pred_positive")),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f("fk_pft_patient_id_patient"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pft")),
        sa.UniqueConstraint("patient_id", "test_date", name=op.f("uq_pft_patient_id_test_date")),
    )
    with op.batch_alter_table("pft", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pft_patient_id"), ["patient_id"], unique=False)

    op.create_table(
        "treatment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False, comment="Patient the record belongs to"),
        sa.Column(
            "drug",
            sa.Enum(
                "tofacitinib",
                "tacrolimus",
                "glucocorticoid",
                "methylprednisolone_pulse",
                "cyclophosphamide",
                "ivig",
                "mycophenolate",
                "rituximab",
                "ciclosporin",
                "azathioprine",
                "methotrexate",
                "hydroxychloroquine",
                "baricitinib",
                "ruxolitinib",
                "tocilizumab",
                "basiliximab",
                "pirfenidone",
                "nintedanib",
                "tmp_smx_prophylaxis",
                "plasma_exchange",
                "pmx_dhp",
                "ecmo",
                name="drug",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
            comment="Drug or procedure (classes and dose ranges in the drug code list)",
        ),
        sa.Column("start_date", sa.Date(), nullable=False, comment="First day of the episode"),
        sa.Column("end_date", sa.Date(), nullable=True, comment="Last day of the episode; empty while ongoing"),
        sa.Column("dose", sa.Float(), nullable=True, comment="Dose per administration, in dose_unit"),
        sa.Column(
            "dose_unit",
            sa.Enum(
                "mg",
                "g",
                "mg/kg",
                "g/kg",
                "mg/m2",
                "session",
                name="dose_unit",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=True,
            comment="Unit of dose",
        ),
        sa.Column(
            "frequency",
            sa.Enum(
                "once",
                "daily",
                "bid",
                "tid",
                "weekly",
                "every_2_weeks",
                "every_4_weeks",
                "monthly",
                "thrice_weekly",
                "continuous",
                name="frequency",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=True,
            comment="How often the dose is given",
        ),
        sa.Column(
            "stop_reason",
            sa.Enum(
                "completed",
                "adverse_event",
                "inefficacy",
                "remission",
                "death",
                "transplant",
                "patient_choice",
                "cost",
                "switch",
                "other",
                name="stop_reason",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=True,
            comment="Why the episode ended",
        ),
        sa.CheckConstraint("dose IS NULL OR dose > 0", name=op.f("ck_treatment_dose_positive")),
        sa.CheckConstraint("dose IS NULL OR dose_unit IS NOT NULL", name=op.f("ck_treatment_dose_has_unit")),
        sa.CheckConstraint("end_date IS NULL OR end_date >= start_date", name=op.f("ck_treatment_ends_after_start")),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f("fk_treatment_patient_id_patient"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_treatment")),
        sa.UniqueConstraint("patient_id", "drug", "start_date", name=op.f("uq_treatment_patient_id_drug_start_date")),
    )
    with op.batch_alter_table("treatment", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_treatment_patient_id"), ["patient_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("treatment", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_treatment_patient_id"))

    op.drop_table("treatment")
    with op.batch_alter_table("pft", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pft_patient_id"))

    op.drop_table("pft")
    op.drop_table("patient_identifier")
    with op.batch_alter_table("lab_result", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_lab_result_patient_id"))

    op.drop_table("lab_result")
    with op.batch_alter_table("hrct", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hrct_patient_id"))

    op.drop_table("hrct")
    op.drop_table("follow_up")
    with op.batch_alter_table("antibody_test", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_antibody_test_patient_id"))

    op.drop_table("antibody_test")
    with op.batch_alter_table("adverse_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_adverse_event_patient_id"))

    op.drop_table("adverse_event")
    with op.batch_alter_table("patient", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_patient_site_id"))

    op.drop_table("patient")
    op.drop_table("site")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_log_study_id"))

    op.drop_table("audit_log")
