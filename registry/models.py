"""Registry tables: one typed SQLModel class per table.

The database guards what can never be valid (keys, required fields, code lists,
impossible ranges and orders); what is merely implausible is left to the
data-quality rules, which can report it without refusing the data. Deleting a
patient who still has records is refused (``ON DELETE RESTRICT``), never cascaded.

Column descriptions double as database comments and feed the data dictionary.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import Enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import declared_attr
from sqlmodel import Field, SQLModel

from registry.codes import (
    CTCAE_VERSION,
    HRCT_TOTAL_SCORE_RANGE,
    PFT_RANGES,
    AdverseEventOutcome,
    AdverseEventTerm,
    Analyte,
    Antibody,
    AntibodyGrade,
    AntibodyUnit,
    Assay,
    AuditAction,
    DeathCause,
    DoseUnit,
    Drug,
    Frequency,
    HrctFeature,
    HrctPattern,
    LungZone,
    PftNotDoneReason,
    QueryAction,
    QueryStatus,
    Range,
    RecordStatus,
    Role,
    RpildDefinition,
    Sex,
    SignInOutcome,
    Smoking,
    StopReason,
    VitalStatus,
)

# Deterministic constraint names, so migrations can drop and alter them on
# PostgreSQL and SQLite alike.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def column(
    description: str,
    *,
    label: str | None = None,
    help: str | None = None,
    unit: str | None = None,
    plausible: Range | None = None,
    identifier: bool = False,
    pattern: tuple[str, str] | None = None,
    codable: bool = True,
    **kwargs: Any,
) -> Any:
    """A documented column: the description becomes the database comment.

    ``label`` is the name people read ("Date of birth", never ``birth_date``) and ``help`` the one-line help text
    where it must say more than, or other than, the description (which names columns); both travel in the column's
    ``info``, once, to the data dictionary, the workbook template and the entry forms (:func:`label_of`,
    :func:`help_of`). ``unit`` and ``plausible`` travel there too;
    ``identifier`` marks a direct identifier, whose value the audit log never copies;
    ``pattern`` is a regular expression every entered value must match in full, and
    the rule it stands for, in words; ``codable=False`` keeps an optional column from taking a missing-data code
    (:func:`is_codable`).
    """
    info: dict[str, Any] = {"identifier": True} if identifier else {}
    if not codable:
        info["codable"] = False
    if label is not None:
        info["label"] = label
    if help is not None:
        info["help"] = help
    if pattern is not None:
        info["pattern"] = pattern
    if plausible is not None:
        info["plausible"] = plausible
        unit = unit or plausible.unit
    if unit:
        info["unit"] = unit
    return Field(description=description, sa_column_kwargs={"comment": description, "info": info}, **kwargs)


def label_of(column: sa.Column) -> str:
    """What people call the column (empty for bookkeeping and security tables, which no form shows)."""
    return column.info.get("label", "")


def help_of(column: sa.Column) -> str:
    """The column's one-line help text: its own, or else its description."""
    return column.info.get("help") or column.comment or ""


def is_codable(column: sa.Column) -> bool:
    """Whether ``column`` may hold a missing-data code (:class:`registry.codes.MissingCode`) instead of a value: an
    optional clinical field (labelled, not a key) that does not opt out. A required field cannot: a code never stands
    in for a value the record needs."""
    return (
        column.nullable
        and bool(column.info.get("label"))
        and not column.foreign_keys
        and not column.primary_key
        and column.info.get("codable", True)
    )


def rule(condition: str, name: str, message: str) -> sa.CheckConstraint:
    """A CHECK constraint with the plain-language message shown when a row breaks it."""
    return sa.CheckConstraint(condition, name=name, info={"message": message})


#: Width of every code column: room for any code, so that a wrong code meets the
#: code-list CHECK (a readable refusal) rather than a length error.
CODE_LENGTH = 32


def code(codes: type[Enum], name: str, description: str, **kwargs: Any) -> Any:
    """A column restricted to a code list by a CHECK constraint (portable, no native enum)."""
    enum_type = sa.Enum(
        codes,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=CODE_LENGTH,
        values_callable=lambda e: [m.value for m in e],
    )
    return column(description, sa_type=enum_type, **kwargs)


def text(length: int, description: str, **kwargs: Any) -> Any:
    return column(description, sa_type=sa.String(length), **kwargs)


def patient_key(description: str = "Patient the record belongs to", *, primary_key: bool = False) -> Any:
    return column(
        description,
        label="Patient",
        foreign_key="patient.id",
        ondelete="RESTRICT",
        index=not primary_key,
        primary_key=primary_key,
    )


def identifier() -> Any:
    return Field(default=None, primary_key=True)


def scalar_default(column: sa.Column) -> Any:
    """The value a new row gets when it gives none for ``column`` (None where there is no plain default)."""
    default = column.default
    return default.arg if default is not None and default.is_scalar else None


def is_bookkeeping(column: sa.Column) -> bool:
    """Whether ``column`` keeps records rather than clinical facts: no sheet, schema, analysis or form shows it."""
    return bool(column.info.get("bookkeeping"))


def bookkeeping(description: str, server_default: str | sa.ColumnElement[Any] | None = None, **kwargs: Any) -> Any:
    """A bookkeeping column (edit counter, deletion or lock time), documented like the others."""
    column_kwargs = {"comment": description, "info": {"bookkeeping": True}, "server_default": server_default}
    return Field(description=description, sa_column_kwargs=column_kwargs, **kwargs)


def missing_codes() -> Any:
    """The record's missing-data codes: field -> code, as JSON text with sorted keys (empty: none), written and read
    by :mod:`registry.missing` only. Kept beside the fields, not in them, so a coded field is told apart from a
    value and from a blank, and its changes are audited as the record's are."""
    description = "Missing-data codes of the record's fields (JSON: field -> code); a coded field itself is empty"
    return Field(
        default=None,
        description=description,
        sa_type=sa.Text,
        sa_column_kwargs={"comment": description, "info": {"missing_codes": True}},
    )


def is_missing_codes(column: sa.Column) -> bool:
    return bool(column.info.get("missing_codes"))


def moment(description: str) -> Any:
    """An optional UTC timestamp kept for bookkeeping."""
    return bookkeeping(description, default=None, sa_type=sa.DateTime(timezone=True))


VERSION = "Edit counter: an edit made from an older version is refused (optimistic locking)"
DELETED = "When the record was deleted (UTC); deleted records are kept, hidden from analyses and restorable"


class Versioned:
    """A row whose ``version`` column counts its changes: a change made from an older version is refused
    (SQLAlchemy's version counter)."""

    @declared_attr
    def __mapper_args__(cls) -> dict[str, Any]:
        return {"version_id_col": cls.__table__.c.version}


class Entered(Versioned):
    """A clinical record entered by people, versioned; each such table also declares ``deleted_at`` for soft
    deletion."""


#: What a study_id may hold: it appears in addresses, file names and reports, so letters, digits, ".", "_", "-"
#: (and not "new", the address of the new-patient form).
STUDY_ID_PATTERN = (
    r"(?!new\Z)[A-Za-z0-9][A-Za-z0-9._-]*",
    "may hold only letters, digits, '.', '_' and '-', starts with a letter or digit, and is not 'new'",
)


#: Site codes: capitals, digits, '_' and '-' (no markup, no look-alike or invisible characters, no '/').
SITE_CODE_PATTERN = (
    r"[A-Z0-9][A-Z0-9_-]*",
    "may hold only capital letters A-Z, digits, '_' and '-', and starts with a letter or digit",
)


class Site(SQLModel, table=True):
    __tablename__ = "site"

    id: int | None = identifier()
    code: str = text(
        16, "Short site code used in study_ids and reports", label="Site", unique=True, pattern=SITE_CODE_PATTERN
    )
    name: str = text(200, "Hospital or centre name", label="Site name")
    country: str | None = text(2, "ISO 3166-1 alpha-2 country code", label="Country")
    verification_required: bool = bookkeeping(
        "Whether a data manager must verify a patient's source data before an investigator signs (registry site "
        "verification)",
        default=False,
        server_default=sa.false(),
    )


class Patient(Entered, SQLModel, table=True):
    """One person with anti-MDA5 dermatomyositis and ILD, known only by study_id."""

    __tablename__ = "patient"
    __table_args__ = (
        rule(
            "rpild IS NULL OR rpild_definition IS NOT NULL",
            "rpild_needs_definition",
            "an RPILD flag needs the definition it was judged by (rpild_definition)",
        ),
        # The probable-duplicate key (rule PAT-018): a save's check finds the patients sharing it by this index.
        sa.Index(None, "site_id", "sex", "birth_date", "dm_diagnosis_date"),
    )

    id: int | None = identifier()
    study_id: str = text(
        32,
        "Pseudonymous study identifier; the only key that leaves the database",
        label="Study ID",
        unique=True,
        pattern=STUDY_ID_PATTERN,
    )
    site_id: int = column("Recruiting site", label="Site", foreign_key="site.id", ondelete="RESTRICT", index=True)
    sex: Sex = code(Sex, "sex", "Sex recorded at birth", label="Sex")
    birth_date: date = column("Date of birth (used for age; never exported exactly)", label="Date of birth")
    smoking: Smoking | None = code(Smoking, "smoking", "Smoking history", label="Smoking")
    dm_diagnosis_date: date | None = column(
        "Date dermatomyositis (or clinically amyopathic DM) was diagnosed", label="Date of DM diagnosis"
    )
    ild_diagnosis_date: date | None = column(
        "Date interstitial lung disease was diagnosed", label="Date of ILD diagnosis"
    )
    resp_symptom_onset_date: date | None = column(
        "Onset of respiratory symptoms (cough, dyspnoea)", label="Date of first respiratory symptoms"
    )
    ild_worsening_date: date | None = column(
        "Date of documented radiological or respiratory worsening, if any", label="Date of ILD worsening"
    )
    rpild: bool | None = column(
        "Rapidly progressive ILD, judged by rpild_definition",
        label="Rapidly progressive ILD (RPILD)",
        help="Rapidly progressive ILD, yes or no as judged by the RPILD definition",
    )
    rpild_definition: RpildDefinition | None = code(
        RpildDefinition,
        "rpild_definition",
        "Definition used to judge the RPILD flag",
        label="RPILD definition",
        codable=False,  # goes with the flag: a coded flag needs no definition
    )
    gottron: bool | None = column("Gottron papules or sign", label="Gottron papules")
    heliotrope_rash: bool | None = column("Heliotrope rash", label="Heliotrope rash")
    mechanics_hands: bool | None = column("Mechanic's hands", label="Mechanic's hands")
    skin_ulcers: bool | None = column("Cutaneous ulcers", label="Skin ulcers")
    fever: bool | None = column("Fever (>= 38 C) at presentation", label="Fever")
    arthritis: bool | None = column("Arthritis or arthralgia", label="Arthritis")
    muscle_weakness: bool | None = column("Proximal muscle weakness", label="Muscle weakness")
    missing_codes: str | None = missing_codes()
    version: int = bookkeeping(VERSION, default=1, server_default="1")
    deleted_at: datetime | None = moment(DELETED)
    locked_at: datetime | None = moment(
        "When a data manager locked the patient's records against edits (UTC); empty while open"
    )


class PatientIdentifier(SQLModel, table=True):
    """Direct identifiers, kept apart so no analysis, export or report can select them."""

    __tablename__ = "patient_identifier"

    patient_id: int = patient_key(primary_key=True)
    hospital_number: str | None = text(64, "Hospital record number (direct identifier)", identifier=True)
    full_name: str | None = text(200, "Full name (direct identifier)", identifier=True)


class AntibodyTest(Entered, SQLModel, table=True):
    __tablename__ = "antibody_test"
    __table_args__ = (
        sa.UniqueConstraint("patient_id", "antibody", "assay", "sample_date"),
        rule(
            "grade IS NOT NULL OR value IS NOT NULL",
            "has_result",
            "an antibody test needs a result: a grade or a value",
        ),
        rule(
            "assay <> 'line_blot' OR grade IS NOT NULL",
            "line_blot_graded",
            "a line-blot result needs a grade (negative, weak, moderate or strong)",
        ),
        rule("value IS NULL OR unit IS NOT NULL", "value_has_unit", "a value needs its unit"),
        rule("value IS NULL OR value >= 0", "value_not_negative", "value cannot be negative"),
        rule("cutoff IS NULL OR cutoff >= 0", "cutoff_not_negative", "cutoff cannot be negative"),
    )

    id: int | None = identifier()
    patient_id: int = patient_key()
    antibody: Antibody = code(Antibody, "antibody", "Antibody tested", label="Antibody")
    assay: Assay = code(Assay, "assay", "Assay method", label="Assay")
    sample_date: date = column("Date the sample was taken", label="Sample date")
    grade: AntibodyGrade | None = code(
        AntibodyGrade,
        "grade",
        "Semi-quantitative result (line blot: - / + / ++ / +++)",
        label="Grade",
        codable=False,  # a test is recorded for its result: a grade or a value
    )
    value: float | None = column("Quantitative result (ELISA index, U/mL or titre)", label="Value", codable=False)
    unit: AntibodyUnit | None = code(
        AntibodyUnit, "unit", "Unit of value", label="Unit", help="Unit of the value", codable=False
    )
    cutoff: float | None = column(
        "The kit's positivity cut-off, in the unit of value (anti-MDA5 ELISA: 32)",
        label="Cut-off",
        help="The kit's positivity cut-off, in the unit of the value (anti-MDA5 ELISA: 32)",
    )
    missing_codes: str | None = missing_codes()
    version: int = bookkeeping(VERSION, default=1, server_default="1")
    deleted_at: datetime | None = moment(DELETED)


class LabResult(Entered, SQLModel, table=True):
    """Laboratory results in long form: one analyte, one day, one value."""

    __tablename__ = "lab_result"
    __table_args__ = (
        sa.UniqueConstraint("patient_id", "analyte", "sample_date"),
        rule("value >= 0", "value_not_negative", "value cannot be negative"),
    )

    id: int | None = identifier()
    patient_id: int = patient_key()
    analyte: Analyte = code(
        Analyte, "analyte", "Analyte measured (canonical units in the analyte code list)", label="Analyte"
    )
    sample_date: date = column("Date the sample was taken", label="Sample date")
    value: float = column(
        "Result as a plain number, in unit",
        label="Result",
        help="Result as a plain number, in the unit chosen",
        unit="canonical unit of the analyte",
    )
    unit: str = text(
        16,
        "Unit of value; must be the analyte's canonical unit to be analysed",
        label="Unit",
        help="The analyte's canonical unit, or one the form converts to it exactly (see the analyte code list)",
    )
    version: int = bookkeeping(VERSION, default=1, server_default="1")
    deleted_at: datetime | None = moment(DELETED)


def _pft_range_checks() -> tuple[sa.CheckConstraint, ...]:
    return tuple(
        rule(f"{name} IS NULL OR {name} > 0", f"{name}_positive", f"{name} must be greater than 0")
        for name in PFT_RANGES
    )


class Pft(Entered, SQLModel, table=True):
    """Pulmonary function test, or the documented reason it could not be done."""

    __tablename__ = "pft"
    __table_args__ = (
        sa.UniqueConstraint("patient_id", "test_date"),
        *_pft_range_checks(),
        rule(
            "not_done_reason IS NULL OR (fvc_l IS NULL AND fvc_pct_pred IS NULL"
            " AND dlco_pct_pred IS NULL AND tlc_pct_pred IS NULL)",
            "not_done_has_no_results",
            "a test marked not done (not_done_reason) cannot have results",
        ),
        rule(
            "not_done_reason IS NOT NULL OR fvc_l IS NOT NULL OR fvc_pct_pred IS NOT NULL"
            " OR dlco_pct_pred IS NOT NULL OR tlc_pct_pred IS NOT NULL",
            "has_result_or_reason",
            "a pulmonary function test needs at least one result or the reason it was not done",
        ),
    )

    id: int | None = identifier()
    patient_id: int = patient_key()
    test_date: date = column("Date of the test (or of the decision it could not be done)", label="Test date")
    fvc_l: float | None = column("Forced vital capacity", label="FVC", plausible=PFT_RANGES["fvc_l"])
    fvc_pct_pred: float | None = column(
        "FVC, percent of predicted", label="FVC % predicted", plausible=PFT_RANGES["fvc_pct_pred"]
    )
    dlco_pct_pred: float | None = column(
        "DLCO, percent of predicted", label="DLCO % predicted", plausible=PFT_RANGES["dlco_pct_pred"]
    )
    tlc_pct_pred: float | None = column(
        "Total lung capacity, percent of predicted", label="TLC % predicted", plausible=PFT_RANGES["tlc_pct_pred"]
    )
    not_done_reason: PftNotDoneReason | None = code(
        PftNotDoneReason,
        "not_done_reason",
        "Why the test could not be done (leave results empty)",
        label="Reason not done",
        codable=False,  # the reason is itself what a code would say
    )
    missing_codes: str | None = missing_codes()
    version: int = bookkeeping(VERSION, default=1, server_default="1")
    deleted_at: datetime | None = moment(DELETED)


#: HRCT extent columns, one per feature and lung zone, e.g. ``ggo_right_upper_pct``.
HRCT_EXTENT_COLUMNS = {
    f"{feature.value}_{zone.value}_pct": f"{feature.label} extent, {zone.label.lower()}"
    for feature in HrctFeature
    for zone in LungZone
}


def extent(feature: HrctFeature, zone: LungZone) -> Any:
    name = f"{feature.value}_{zone.value}_pct"
    label = f"{feature.label}, {zone.label.lower()}"
    return column(HRCT_EXTENT_COLUMNS[name], label=label, plausible=Range("% of zone", 0, 100))


class Hrct(Entered, SQLModel, table=True):
    """Chest high-resolution CT: pattern, per-zone extent of each feature, total score."""

    __tablename__ = "hrct"
    __table_args__ = (
        sa.UniqueConstraint("patient_id", "scan_date"),
        *(
            rule(f"{name} IS NULL OR {name} BETWEEN 0 AND 100", f"{name}_0_to_100", f"{name} must be between 0 and 100")
            for name in HRCT_EXTENT_COLUMNS
        ),
        rule("total_score IS NULL OR total_score >= 0", "total_score_not_negative", "total_score cannot be negative"),
    )

    id: int | None = identifier()
    patient_id: int = patient_key()
    scan_date: date = column("Date of the scan", label="Scan date")
    pattern: HrctPattern | None = code(HrctPattern, "pattern", "Radiological pattern", label="Pattern")
    ggo_right_upper_pct: float | None = extent(HrctFeature.GGO, LungZone.RIGHT_UPPER)
    ggo_right_middle_pct: float | None = extent(HrctFeature.GGO, LungZone.RIGHT_MIDDLE)
    ggo_right_lower_pct: float | None = extent(HrctFeature.GGO, LungZone.RIGHT_LOWER)
    ggo_left_upper_pct: float | None = extent(HrctFeature.GGO, LungZone.LEFT_UPPER)
    ggo_left_middle_pct: float | None = extent(HrctFeature.GGO, LungZone.LEFT_MIDDLE)
    ggo_left_lower_pct: float | None = extent(HrctFeature.GGO, LungZone.LEFT_LOWER)
    consolidation_right_upper_pct: float | None = extent(HrctFeature.CONSOLIDATION, LungZone.RIGHT_UPPER)
    consolidation_right_middle_pct: float | None = extent(HrctFeature.CONSOLIDATION, LungZone.RIGHT_MIDDLE)
    consolidation_right_lower_pct: float | None = extent(HrctFeature.CONSOLIDATION, LungZone.RIGHT_LOWER)
    consolidation_left_upper_pct: float | None = extent(HrctFeature.CONSOLIDATION, LungZone.LEFT_UPPER)
    consolidation_left_middle_pct: float | None = extent(HrctFeature.CONSOLIDATION, LungZone.LEFT_MIDDLE)
    consolidation_left_lower_pct: float | None = extent(HrctFeature.CONSOLIDATION, LungZone.LEFT_LOWER)
    total_score: float | None = column(
        "Total HRCT score by the site's scoring protocol (FLAIR uses >= 133)",
        label="Total HRCT score",
        help="The six zones' extents weighted by feature (consolidation at most twice) and summed: at most twice "
        "the sum of the extents above, which it is checked against (FLAIR's cut-off is 133)",
        plausible=HRCT_TOTAL_SCORE_RANGE,
    )
    missing_codes: str | None = missing_codes()
    version: int = bookkeeping(VERSION, default=1, server_default="1")
    deleted_at: datetime | None = moment(DELETED)


class Treatment(Entered, SQLModel, table=True):
    """One continuous episode of a drug or procedure."""

    __tablename__ = "treatment"
    __table_args__ = (
        sa.UniqueConstraint("patient_id", "drug", "start_date"),
        rule("end_date IS NULL OR end_date >= start_date", "ends_after_start", "end_date cannot be before start_date"),
        rule("dose IS NULL OR dose > 0", "dose_positive", "dose must be greater than 0"),
        rule("dose IS NULL OR dose_unit IS NOT NULL", "dose_has_unit", "a dose needs its dose_unit"),
    )

    id: int | None = identifier()
    patient_id: int = patient_key()
    drug: Drug = code(
        Drug, "drug", "Drug or procedure (classes and dose ranges in the drug code list)", label="Drug or procedure"
    )
    start_date: date = column("First day of the episode", label="Start date")
    end_date: date | None = column("Last day of the episode; empty while ongoing", label="End date")
    dose: float | None = column(
        "Dose per administration, in dose_unit", label="Dose", help="Dose per administration, in the dose unit"
    )
    dose_unit: DoseUnit | None = code(DoseUnit, "dose_unit", "Unit of dose", label="Dose unit", codable=False)
    frequency: Frequency | None = code(Frequency, "frequency", "How often the dose is given", label="Frequency")
    stop_reason: StopReason | None = code(StopReason, "stop_reason", "Why the episode ended", label="Stop reason")
    missing_codes: str | None = missing_codes()
    version: int = bookkeeping(VERSION, default=1, server_default="1")
    deleted_at: datetime | None = moment(DELETED)


class AdverseEvent(Entered, SQLModel, table=True):
    __tablename__ = "adverse_event"
    __table_args__ = (
        sa.UniqueConstraint("patient_id", "term", "onset_date"),
        rule("ctcae_grade BETWEEN 1 AND 5", "ctcae_grade_1_to_5", "ctcae_grade must be 1, 2, 3, 4 or 5"),
        rule(
            "resolution_date IS NULL OR resolution_date >= onset_date",
            "resolves_after_onset",
            "resolution_date cannot be before onset_date",
        ),
    )

    id: int | None = identifier()
    patient_id: int = patient_key()
    onset_date: date = column("Date the event began", label="Onset date")
    term: AdverseEventTerm = code(AdverseEventTerm, "term", "Adverse event term", label="Event")
    term_detail: str | None = text(
        200, "Organism, site or description (required for term 'other')", label="Event detail"
    )
    ctcae_grade: int = column(
        f"Severity grade, CTCAE v{CTCAE_VERSION}", label="CTCAE grade", plausible=Range("grade", 1, 5)
    )
    serious: bool = column(
        "Serious adverse event (ICH E2A: death, life-threatening, hospitalisation, ...)", label="Serious"
    )
    attributed_drug: Drug | None = code(
        Drug, "attributed_drug", "Drug the event is attributed to, if any", label="Attributed to drug"
    )
    led_to_discontinuation: bool = column(
        "The attributed drug was stopped because of the event", label="Led to discontinuation"
    )
    outcome: AdverseEventOutcome | None = code(AdverseEventOutcome, "outcome", "Outcome of the event", label="Outcome")
    resolution_date: date | None = column("Date the event resolved", label="Resolution date")
    missing_codes: str | None = missing_codes()
    version: int = bookkeeping(VERSION, default=1, server_default="1")
    deleted_at: datetime | None = moment(DELETED)


class FollowUp(Entered, SQLModel, table=True):
    """Vital status as last known: one row per patient, updated as follow-up accrues."""

    __tablename__ = "follow_up"
    __table_args__ = (
        rule(
            "(vital_status = 'dead') = (death_date IS NOT NULL)",
            "death_date_iff_dead",
            "death_date is required when vital_status is dead, and only then",
        ),
        rule(
            "death_cause IS NULL OR vital_status = 'dead'",
            "cause_only_if_dead",
            "death_cause can only be given when vital_status is dead",
        ),
    )

    patient_id: int = patient_key(primary_key=True)
    last_contact_date: date = column(
        "Last date the patient was known alive (or date of death)", label="Date of last contact"
    )
    vital_status: VitalStatus = code(VitalStatus, "vital_status", "Vital status at last contact", label="Vital status")
    death_date: date | None = column(
        "Date of death", label="Date of death", codable=False
    )  # required of the dead (the survival time ends there), empty for the living
    death_cause: DeathCause | None = code(DeathCause, "death_cause", "Principal cause of death", label="Cause of death")
    lung_transplant_date: date | None = column(
        "Date of lung transplantation, if any", label="Date of lung transplantation"
    )
    lost_to_follow_up: bool = column(
        "No contact possible after last_contact_date",
        label="Lost to follow-up",
        help="No contact possible after the date of last contact",
        default=False,
    )
    missing_codes: str | None = missing_codes()
    version: int = bookkeeping(VERSION, default=1, server_default="1")
    deleted_at: datetime | None = moment(DELETED)


class Account(SQLModel, table=True):
    """A person who signs in to the web application; never deleted, only disabled."""

    __tablename__ = "account"

    id: int | None = identifier()
    username: str = text(64, "Sign-in name", unique=True)
    password_hash: str = text(200, "Argon2id hash of the password (the password itself is never stored)",
                              identifier=True)  # fmt: skip
    role: Role = code(Role, "role", "What the account may do")
    active: bool = column("Disabled accounts cannot sign in", default=True)
    created_at: datetime = column("When the account was created (UTC)", sa_type=sa.DateTime(timezone=True))


class AccountSite(SQLModel, table=True):
    """The sites a coordinator works for (other roles see every site)."""

    __tablename__ = "account_site"

    account_id: int = column("Account", foreign_key="account.id", ondelete="RESTRICT", primary_key=True)
    site_id: int = column("Site", foreign_key="site.id", ondelete="RESTRICT", primary_key=True)


class WebSession(SQLModel, table=True):
    """A signed-in session of the web application, checked on every request.

    The browser holds a random token; only its SHA-256 is stored, so a copy of the
    database signs no one in. A security log, not registry data: written directly,
    not through the audit trail.
    """

    __tablename__ = "web_session"

    id: str = column("SHA-256 (hex) of the session token the browser holds", sa_type=sa.String(64), primary_key=True)
    account_id: int = column("Account signed in", foreign_key="account.id", ondelete="RESTRICT", index=True)
    created_at: datetime = column("When the session began (UTC)", sa_type=sa.DateTime(timezone=True))
    last_seen_at: datetime = column("Latest request of the session (UTC, to the minute)",
                                    sa_type=sa.DateTime(timezone=True))  # fmt: skip
    ended_at: datetime | None = column("When the session ended (UTC); empty while it lasts",
                                       sa_type=sa.DateTime(timezone=True))  # fmt: skip
    end_reason: SignInOutcome | None = code(SignInOutcome, "web_session_end", "Why the session ended")
    resumed_form: str | None = column(
        "What a form held when the previous session ended (JSON: its address and fields), until it opens",
        sa_type=sa.Text,
    )


class SignInEvent(SQLModel, table=True):
    """A sign-in, failure, refusal, sign-out or account change, for administrators (no patient data).

    A security log, not registry data: written directly, not through the audit trail;
    passwords and session tokens are never recorded.
    """

    __tablename__ = "sign_in_event"

    id: int | None = identifier()
    at: datetime = column("When it happened (UTC)", sa_type=sa.DateTime(timezone=True), index=True)
    username: str = text(64, "User name as typed, trimmed and lower-cased (cut at 64 characters)", index=True)
    account_id: int | None = column("The account of that name, if there is one", foreign_key="account.id",
                                    ondelete="RESTRICT")  # fmt: skip
    client_address: str | None = text(45, "Client address of the request (empty from the command line)")
    outcome: SignInOutcome = code(SignInOutcome, "sign_in_outcome", "What happened")
    actor: str | None = text(100, "Who made an account change (an administrator, or the command line's user)")


class SignInThrottle(SQLModel, table=True):
    """Failed sign-ins counted per client address and per user name from an address, changed atomically.

    Every attempt claims its turn by a conditional UPDATE before its password is checked,
    so parallel requests and several server processes cannot check more than allowed.
    """

    __tablename__ = "sign_in_throttle"

    key: str = column("addr:ADDRESS, or name:ADDRESS:NAME", sa_type=sa.String(200), primary_key=True)
    failures: int = column("Failed (or not yet answered) attempts since the last success or quiet hour")
    last_failure_at: datetime = column("Latest counted attempt (UTC)", sa_type=sa.DateTime(timezone=True))
    next_allowed_at: datetime = column("No attempt is checked before this time (UTC)",
                                       sa_type=sa.DateTime(timezone=True))  # fmt: skip


class FindingReview(SQLModel, table=True):
    """A data manager's verdict on a data-quality warning: the value was checked at source and is right.

    It answers the finding while the value stays the same; a changed value is a new
    finding. Errors are never verified, only corrected.
    """

    __tablename__ = "finding_review"
    __table_args__ = (sa.UniqueConstraint("rule", "table_name", "record_key", "field"),)

    id: int | None = identifier()
    patient_id: int | None = column(
        "Patient the finding concerns", foreign_key="patient.id", ondelete="RESTRICT", index=True
    )
    rule: str = text(16, "Rule of the catalogue that reported the finding")
    table_name: str = text(64, "Table of the record the finding concerns")
    record_key: str = text(64, "Primary key of that record")
    field: str = text(64, "Field the finding concerns")
    value: str | None = text(200, "The value that was verified, as the checks show it")
    comment: str = text(500, "What was checked, and where (source document, laboratory report, ...)")
    reviewed_by: str = text(100, "Data manager who verified the value")
    reviewed_at: datetime = column("When the value was verified (UTC)", sa_type=sa.DateTime(timezone=True))


class DataQuery(Versioned, SQLModel, table=True):
    """A question about a patient's data, on the patient, one record or one field: REDCap's data resolution workflow,
    OpenClinica's discrepancy note. Its thread (:class:`QueryMessage`) says who asked, answered and closed it.

    Never deleted (the audit hooks and the database's triggers refuse it): a query no longer needed is closed.
    """

    __tablename__ = "data_query"

    id: int | None = identifier()
    patient_id: int = column("Patient the query is about", foreign_key="patient.id", ondelete="RESTRICT", index=True)
    table_name: str | None = text(64, "Table of the record the query is about (empty: the patient as a whole)")
    record_key: str | None = text(64, "Primary key of that record (empty: the patient as a whole)")
    field: str | None = text(64, "Field the query is about (empty: the whole record)")
    rule: str | None = text(16, "Rule of the catalogue whose finding the query was opened from (empty: none)")
    value: str | None = text(200, "The field's value when the query was opened, as the checks show it")
    status: QueryStatus = code(QueryStatus, "query_status", "open, answered or closed", index=True)
    opened_by: str = text(100, "Who opened the query")
    opened_at: datetime = column("When the query was opened (UTC)", sa_type=sa.DateTime(timezone=True))
    version: int = bookkeeping("Change counter: a change made from an older status is refused", default=1,
                               server_default="1")  # fmt: skip


class QueryMessage(SQLModel, table=True):
    """One message of a query's thread: the question, an answer, a correction of the field, a closing or re-opening.

    Written once and never changed or deleted (the audit hooks and the database's triggers refuse it).
    """

    __tablename__ = "query_message"

    id: int | None = identifier()
    query_id: int = column("Query the message belongs to", foreign_key="data_query.id", ondelete="RESTRICT",
                           index=True)  # fmt: skip
    action: QueryAction = code(QueryAction, "query_action", "What the message did")
    status: QueryStatus = code(QueryStatus, "query_message_status", "The query's status after the message")
    body: str = text(2000, "The message as written (for a correction: the field's old and new value and why)")
    written_by: str = text(100, "Who wrote the message")
    written_at: datetime = column("When the message was written (UTC)", sa_type=sa.DateTime(timezone=True))


class PatientStatus(Versioned, SQLModel, table=True):
    """Where a patient's record stands: in progress, complete, verified or signed (registry/signoff.py).

    A patient without a row is in progress. A change to the data of a verified or signed
    patient returns them to complete (and voids the signature) in the change's own flush.
    """

    __tablename__ = "patient_status"

    patient_id: int = patient_key("Patient whose record status this is", primary_key=True)
    status: RecordStatus = code(RecordStatus, "record_status", "in_progress, complete, verified or signed",
                                index=True)  # fmt: skip
    changed_by: str = text(100, "Who set the status (or whose change of the data set it back)")
    changed_at: datetime = column("When the status was set (UTC)", sa_type=sa.DateTime(timezone=True))
    version: int = bookkeeping("Change counter: a status set from an older one is refused", default=1,
                               server_default="1")  # fmt: skip


class Signature(SQLModel, table=True):
    """An investigator's electronic signature of a patient's data (21 CFR 11.50: signer, time, meaning).

    Never changed or deleted but for its voiding, once (the audit hooks and the database's
    triggers refuse anything else): a change to the patient's data voids it.
    """

    __tablename__ = "signature"

    id: int | None = identifier()
    patient_id: int = patient_key("Patient whose data were signed")
    signer: str = text(64, "Account (user name) of the investigator who signed, after re-entering their password")
    signed_at: datetime = column("When the signature was made (UTC)", sa_type=sa.DateTime(timezone=True))
    meaning: str = text(500, "What the signature attests, as shown to the signer")
    voided_at: datetime | None = column("When the signature was voided (UTC); empty while it stands",
                                        sa_type=sa.DateTime(timezone=True))  # fmt: skip
    voided_by: str | None = text(100, "Who voided it: the author of the change to the data, or of the re-opening")
    void_reason: str | None = text(500, "Why it was voided (the change and its reason)")


class ApiToken(SQLModel, table=True):
    """A personal token for the JSON API (``registry token create``): who holds it, with which role and sites.

    The token itself is shown once and never stored: only its SHA-256 (a token is 256 random bits, so a hash is
    enough). It expires, and can be revoked; tokens are never deleted. Changed through the audit trail.
    """

    __tablename__ = "api_token"

    id: int | None = identifier()
    name: str = text(64, "Who holds the token, or what for (unique): its name in the audit trail is token:NAME",
                     unique=True)  # fmt: skip
    token_hash: str = text(64, "SHA-256 (hex) of the token (the token itself is never stored)", unique=True,
                           identifier=True)  # fmt: skip
    role: Role = code(Role, "api_token_role", "What the token may do (as an account of that role)")
    created_at: datetime = column("When the token was created (UTC)", sa_type=sa.DateTime(timezone=True))
    created_by: str = text(100, "Who created it")
    expires_at: datetime = column("The token is refused from this time on (UTC)", sa_type=sa.DateTime(timezone=True))
    revoked_at: datetime | None = column("When it was revoked (UTC); empty while it stands",
                                         sa_type=sa.DateTime(timezone=True))  # fmt: skip


class ApiTokenSite(SQLModel, table=True):
    """The sites a coordinator's or investigator's token serves (other roles see every site)."""

    __tablename__ = "api_token_site"

    token_id: int = column("Token", foreign_key="api_token.id", ondelete="RESTRICT", primary_key=True)
    site_id: int = column("Site", foreign_key="site.id", ondelete="RESTRICT", primary_key=True)


class ApiTokenUse(SQLModel, table=True):
    """Every request made with a token, answered or refused (a security log, written directly: no patient data).

    The rate limit counts these."""

    __tablename__ = "api_token_use"
    __table_args__ = (sa.Index("ix_api_token_use_token_id_at", "token_id", "at"),)

    id: int | None = identifier()
    token_id: int = column("Token used", foreign_key="api_token.id", ondelete="RESTRICT")
    at: datetime = column("When (UTC)", sa_type=sa.DateTime(timezone=True))
    method: str = text(8, "HTTP method")
    path: str = text(200, "Path requested (the query string is not kept)")
    status: int = column("HTTP status answered (0 while it is being answered)")
    client_address: str | None = text(45, "Client address of the request")


class AuditLog(SQLModel, table=True):
    """Who changed which stored value, when, from what to what, and why."""

    __tablename__ = "audit_log"

    id: int | None = identifier()
    changed_at: datetime = column("When the change was committed (UTC)", sa_type=sa.DateTime(timezone=True))
    actor: str = text(100, "User or process that made the change")
    reason: str | None = text(500, "Reason for the change, as given")
    action: AuditAction = code(AuditAction, "action", "insert, update or delete")
    table_name: str = text(64, "Table changed")
    record_key: str = text(64, "Primary key of the changed row")
    study_id: str | None = text(32, "Patient the row belongs to, for per-patient history", index=True)
    old_values: dict[str, Any] | None = column("Changed columns before the change", sa_type=sa.JSON(none_as_null=True))
    new_values: dict[str, Any] | None = column("Changed columns after the change", sa_type=sa.JSON(none_as_null=True))
    batch: str | None = text(32, "The writing transaction's seal (audit_seal.batch) that chains this entry")

    def fields(self) -> list[str]:
        """The columns this entry records, in the order they were logged."""
        return list(dict.fromkeys([*(self.old_values or {}), *(self.new_values or {})]))


class AuditSeal(SQLModel, table=True):
    """The audit entries of one committed transaction, hash-chained to the transaction sealed before it.

    Written as the transaction commits and never changed or deleted: see registry/audit_chain.py.
    """

    __tablename__ = "audit_seal"

    chain_index: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False,
                             "comment": "Position in the chain (1, 2, ...), in commit order"})  # fmt: skip
    batch: str = text(32, "Random token the transaction wrote into its entries (audit_log.batch)", unique=True)
    entries: int = column("Audit entries the transaction wrote")
    first_id: int = column("audit_log.id of its first entry")
    last_id: int = column("audit_log.id of its last entry")
    content_sha256: str = text(64, "SHA-256 of its entries' content hashes, in id order")
    previous_sha256: str = text(64, "seal_sha256 of the seal before it (64 zeros for the first)")
    seal_sha256: str = text(64, "SHA-256 of previous_sha256 and the seal's position, count, ids and content hash")


class AuditEntryHash(SQLModel, table=True):
    """The hash of one audit entry's content, chained to the entry before it, so that a broken chain names the entry.

    Written with its transaction's seal and never changed or deleted: see registry/audit_chain.py.
    """

    __tablename__ = "audit_entry_hash"

    entry_id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False,
                          "comment": "audit_log.id of the entry"})  # fmt: skip
    content_sha256: str = text(64, "SHA-256 of the entry's content, as the database computed it")
    previous_sha256: str = text(64, "content_sha256 of the entry before it in the chain (64 zeros for the first)")


#: What a data cut's name may hold: it is typed on command lines and shown in reports.
CUT_NAME_PATTERN = (
    r"[A-Za-z0-9][A-Za-z0-9._-]*",
    "holds only letters, digits, '.', '_' and '-', starts with a letter or digit",
)


class DataCut(SQLModel, table=True):
    """The analysable data frozen at a cut-off, so that a report can be made again, identically, later.

    Written once and never changed or deleted (the audit hooks refuse it): see registry/cuts.py.
    """

    __tablename__ = "data_cut"

    id: int | None = identifier()
    name: str = text(64, "Name the cut is known by (registry report --cut NAME)", unique=True,
                     pattern=CUT_NAME_PATTERN)  # fmt: skip
    cutoff_date: date = column("Data cut-off: every analysis of the cut censors follow-up here")
    created_at: datetime = column("When the snapshot was taken (UTC)", sa_type=sa.DateTime(timezone=True))
    created_by: str = text(100, "User or process that made the cut")
    reason: str | None = text(500, "Why the cut was made, as given")
    snapshot: bytes = column(
        "The data tables as the analyses read them at creation (no identifiers): gzip-compressed JSON",
        sa_type=sa.LargeBinary(),
    )
    snapshot_sha256: str = text(64, "SHA-256 of the snapshot's JSON text, verified each time the cut is read")
    row_counts: dict[str, int] = column("Rows per table in the snapshot", sa_type=sa.JSON())
    data_fingerprint: str | None = text(
        64, "Fingerprint of the analysis table made from the snapshot at creation (empty: no patient analysable)"
    )
    dq_errors: int = column("Error-level data-quality findings in the snapshot at creation")
    dq_warnings: int = column("Warning-level data-quality findings in the snapshot at creation")
    signed_only: bool = column("Whether only signed patients were frozen (registry cut create --signed-only)",
                               default=False)  # fmt: skip
    left_out: dict[str, int] | None = column(
        "Patients left out of a signed-only cut, by record status (empty: none left out)", sa_type=sa.JSON()
    )


#: Every table, in the order a patient's records are entered; the audit log last.
TABLES: tuple[type[SQLModel], ...] = (
    Site,
    Patient,
    PatientIdentifier,
    AntibodyTest,
    LabResult,
    Pft,
    Hrct,
    Treatment,
    AdverseEvent,
    FollowUp,
    Account,
    AccountSite,
    FindingReview,
    DataQuery,
    QueryMessage,
    PatientStatus,
    Signature,
    DataCut,
    WebSession,
    SignInEvent,
    SignInThrottle,
    ApiToken,
    ApiTokenSite,
    ApiTokenUse,
    AuditSeal,
    AuditEntryHash,
    AuditLog,
)
