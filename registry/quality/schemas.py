"""Row-level rules as pandera schemas: one DataFrameModel per table.

Each schema states the column types, the required fields and the code lists of its
table (rules ``-001``, ``-002`` and ``-003`` of the catalogue) and carries the table's
other one-row rules as named checks, the check's name being the rule id. A test holds
every schema to its SQLModel table, column for column, so the two cannot drift.
Checks ignore empty values unless they are about emptiness (``ignore_na=False``).
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from registry.codes import (
    ANALYTE_RANGES,
    DRUGS,
    HRCT_MAX_WEIGHT,
    HRCT_TOTAL_SCORE_RANGE,
    PFT_RANGES,
    AdverseEventOutcome,
    AdverseEventTerm,
    Analyte,
    Antibody,
    AntibodyGrade,
    AntibodyUnit,
    Assay,
    DeathCause,
    DoseUnit,
    Drug,
    Frequency,
    HrctPattern,
    PftNotDoneReason,
    RpildDefinition,
    Sex,
    Smoking,
    StopReason,
    VitalStatus,
)
from registry.definitions import value_positive
from registry.models import HRCT_EXTENT_COLUMNS
from registry.tables import answered, coded

#: Days within which worsening after respiratory-symptom onset makes ILD rapidly progressive.
RPILD_DAYS = {RpildDefinition.WORSENING_1_MONTH: 30, RpildDefinition.WORSENING_3_MONTHS: 91}
YEAR_DAYS = 365.25

Date = Series[pd.Timestamp]
Int = Series[pd.Int64Dtype]
Flag = Series[pd.BooleanDtype]


def codes(code_list: type[Enum], *, required: bool = False) -> Any:
    return pa.Field(isin=[member.value for member in code_list], nullable=not required)


def optional() -> Any:
    return pa.Field(nullable=True)


def required() -> Any:
    return pa.Field(nullable=False)


class Schema(pa.DataFrameModel):
    class Config:
        strict = False  # extra columns are the loader's business, not a finding
        coerce = False  # a value of the wrong type is a finding, never silently converted


class SiteSchema(Schema):
    id: Int = required()
    code: Series[str] = required()
    name: Series[str] = required()
    country: Series[str] = optional()


#: What a row check reads beyond its rule's fields (:mod:`registry.quality.catalogue`, patterns matched against the
#: table's columns) and its record's missing-data codes: a save runs only the checks reading a column it changed,
#: and the tests hold each check to its fields and these.
READS_BEYOND_FIELDS = {
    "ABT-011": ("antibody",),
    "FUP-011": ("vital_status",),
    "LAB-013": ("unit",),
    "LAB-014": ("unit",),
}


def _age_at_diagnosis(df: pd.DataFrame) -> pd.Series:
    diagnosis = df[["dm_diagnosis_date", "ild_diagnosis_date"]].min(axis=1)
    return (diagnosis - df["birth_date"]).dt.days / YEAR_DAYS


class PatientSchema(Schema):
    id: Int = required()
    study_id: Series[str] = required()
    site_id: Int = required()
    sex: Series[str] = codes(Sex, required=True)
    birth_date: Date = required()
    smoking: Series[str] = codes(Smoking)
    dm_diagnosis_date: Date = optional()
    ild_diagnosis_date: Date = optional()
    resp_symptom_onset_date: Date = optional()
    ild_worsening_date: Date = optional()
    rpild: Flag = optional()
    rpild_definition: Series[str] = codes(RpildDefinition)
    gottron: Flag = optional()
    heliotrope_rash: Flag = optional()
    mechanics_hands: Flag = optional()
    skin_ulcers: Flag = optional()
    fever: Flag = optional()
    arthritis: Flag = optional()
    muscle_weakness: Flag = optional()
    missing_codes: Series[str] = optional()  # missing-data codes of the fields (registry/missing.py)

    @pa.dataframe_check(name="PAT-010")
    def adult_age(cls, df: pd.DataFrame) -> pd.Series:
        age = _age_at_diagnosis(df)
        return age.isna() | age.between(18, 100)

    @pa.dataframe_check(name="PAT-011")
    def very_old(cls, df: pd.DataFrame) -> pd.Series:
        age = _age_at_diagnosis(df)
        return age.isna() | (age <= 85) | (age > 100)

    @pa.dataframe_check(name="PAT-012")
    def after_birth(cls, df: pd.DataFrame) -> pd.Series:
        later = df[["dm_diagnosis_date", "ild_diagnosis_date", "resp_symptom_onset_date"]]
        return ~later.le(df["birth_date"], axis=0).any(axis=1)

    @pa.dataframe_check(name="PAT-013")
    def onset_before_ild(cls, df: pd.DataFrame) -> pd.Series:
        return ~(df["resp_symptom_onset_date"] > df["ild_diagnosis_date"])

    @pa.dataframe_check(name="PAT-014")
    def worsening_after_onset(cls, df: pd.DataFrame) -> pd.Series:
        return ~(df["ild_worsening_date"] < df["resp_symptom_onset_date"])

    # Completeness: a field is answered by a value or by a missing-data code ("unknown", "not asked", ...).
    @pa.dataframe_check(name="PAT-015")
    def smoking_known(cls, df: pd.DataFrame) -> pd.Series:
        return answered(df, "smoking")

    @pa.dataframe_check(name="PAT-016")
    def rpild_known(cls, df: pd.DataFrame) -> pd.Series:
        return answered(df, "rpild")

    @pa.dataframe_check(name="PAT-017")
    def onset_known(cls, df: pd.DataFrame) -> pd.Series:
        return answered(df, "resp_symptom_onset_date")

    @pa.check("ild_diagnosis_date", name="STU-002", ignore_na=False)
    def ild_present(cls, s: pd.Series) -> pd.Series:
        return s.notna()

    @pa.dataframe_check(name="STU-006")
    def rpild_matches_dates(cls, df: pd.DataFrame) -> pd.Series:
        limit = df["rpild_definition"].map({d.value: days for d, days in RPILD_DAYS.items()})
        days = (df["ild_worsening_date"] - df["resp_symptom_onset_date"]).dt.days
        judged = df["rpild"].notna() & limit.notna() & df["resp_symptom_onset_date"].notna()
        expected = (days <= limit).fillna(False)  # no worsening recorded: not rapidly progressive
        return ~judged | (df["rpild"].fillna(False).astype(bool) == expected)


class AntibodyTestSchema(Schema):
    id: Int = required()
    patient_id: Int = required()
    antibody: Series[str] = codes(Antibody, required=True)
    assay: Series[str] = codes(Assay, required=True)
    sample_date: Date = required()
    grade: Series[str] = codes(AntibodyGrade)
    value: Series[float] = optional()
    unit: Series[str] = codes(AntibodyUnit)
    cutoff: Series[float] = optional()
    missing_codes: Series[str] = optional()  # missing-data codes of the fields (registry/missing.py)

    @pa.dataframe_check(name="ABT-011")
    def grade_agrees_with_value(cls, df: pd.DataFrame) -> pd.Series:
        judged = df["grade"].notna() & df["value"].notna()
        return ~judged | ((df["grade"] != AntibodyGrade.NEGATIVE) == value_positive(df))


_CANONICAL_UNIT = {analyte.value: r.unit for analyte, r in ANALYTE_RANGES.items()}
#: Values that betray an entry in a common wrong unit, caught by their own rule.
_UNIT_TRAPS = {"LAB-011": (Analyte.LYMPHOCYTES, 50.0), "LAB-012": (Analyte.FIO2, 1.0)}


def _trapped(df: pd.DataFrame) -> pd.Series:
    trapped = pd.Series(False, index=df.index)
    for analyte, above in _UNIT_TRAPS.values():
        trapped |= (df["analyte"] == analyte) & (df["value"] > above)
    return trapped


def _judged(df: pd.DataFrame) -> pd.Series:
    """Rows whose value can be held against the analyte's range: canonical unit, no unit trap."""
    return (df["unit"] == df["analyte"].map(_CANONICAL_UNIT)) & ~_trapped(df)


def _bound(df: pd.DataFrame, name: str) -> pd.Series:
    bounds = {analyte.value: getattr(r, name) for analyte, r in ANALYTE_RANGES.items()}
    return df["analyte"].map(bounds).astype(float)


class LabResultSchema(Schema):
    id: Int = required()
    patient_id: Int = required()
    analyte: Series[str] = codes(Analyte, required=True)
    sample_date: Date = required()
    value: Series[float] = required()
    unit: Series[str] = required()

    @pa.dataframe_check(name="LAB-010")
    def canonical_unit(cls, df: pd.DataFrame) -> pd.Series:
        canonical = df["analyte"].map(_CANONICAL_UNIT)
        return canonical.isna() | (df["unit"] == canonical)

    @pa.dataframe_check(name="LAB-011")
    def lymphocytes_per_litre(cls, df: pd.DataFrame) -> pd.Series:
        analyte, above = _UNIT_TRAPS["LAB-011"]
        return ~((df["analyte"] == analyte) & (df["value"] > above))

    @pa.dataframe_check(name="LAB-012")
    def fio2_fraction(cls, df: pd.DataFrame) -> pd.Series:
        analyte, above = _UNIT_TRAPS["LAB-012"]
        return ~((df["analyte"] == analyte) & (df["value"] > above))

    @pa.dataframe_check(name="LAB-013")
    def plausible(cls, df: pd.DataFrame) -> pd.Series:
        inside = df["value"].between(_bound(df, "low"), _bound(df, "high"))
        return ~_judged(df) | inside

    @pa.dataframe_check(name="LAB-014")
    def usual(cls, df: pd.DataFrame) -> pd.Series:
        low, high = _bound(df, "soft_low"), _bound(df, "soft_high")
        unusual = (df["value"] < low.fillna(-np.inf)) | (df["value"] > high.fillna(np.inf))
        inside = df["value"].between(_bound(df, "low"), _bound(df, "high"))
        return ~(_judged(df) & inside & unusual)


class PftSchema(Schema):
    id: Int = required()
    patient_id: Int = required()
    test_date: Date = required()
    fvc_l: Series[float] = optional()
    fvc_pct_pred: Series[float] = optional()
    dlco_pct_pred: Series[float] = optional()
    tlc_pct_pred: Series[float] = optional()
    not_done_reason: Series[str] = codes(PftNotDoneReason)
    missing_codes: Series[str] = optional()  # missing-data codes of the fields (registry/missing.py)

    @pa.check(*PFT_RANGES, name="PFT-011")
    def plausible(cls, s: pd.Series) -> pd.Series:
        r = PFT_RANGES[s.name]
        return s.between(r.low, r.high)


class HrctSchema(Schema):
    id: Int = required()
    patient_id: Int = required()
    scan_date: Date = required()
    pattern: Series[str] = codes(HrctPattern)
    ggo_right_upper_pct: Series[float] = optional()
    ggo_right_middle_pct: Series[float] = optional()
    ggo_right_lower_pct: Series[float] = optional()
    ggo_left_upper_pct: Series[float] = optional()
    ggo_left_middle_pct: Series[float] = optional()
    ggo_left_lower_pct: Series[float] = optional()
    consolidation_right_upper_pct: Series[float] = optional()
    consolidation_right_middle_pct: Series[float] = optional()
    consolidation_right_lower_pct: Series[float] = optional()
    consolidation_left_upper_pct: Series[float] = optional()
    consolidation_left_middle_pct: Series[float] = optional()
    consolidation_left_lower_pct: Series[float] = optional()
    total_score: Series[float] = optional()
    missing_codes: Series[str] = optional()  # missing-data codes of the fields (registry/missing.py)

    @pa.check(*HRCT_EXTENT_COLUMNS, name="HRC-011")
    def extent(cls, s: pd.Series) -> pd.Series:
        return s.between(0, 100)

    @pa.check("total_score", name="HRC-012")
    def plausible_total(cls, s: pd.Series) -> pd.Series:
        return s.between(HRCT_TOTAL_SCORE_RANGE.low, HRCT_TOTAL_SCORE_RANGE.high)

    @pa.dataframe_check(name="HRC-013")
    def total_from_extents(cls, df: pd.DataFrame) -> pd.Series:
        """Judged when every zone's extents are entered; half a point allowed for a total rounded to whole points."""
        extents = df[list(HRCT_EXTENT_COLUMNS)]
        judged = extents.notna().all(axis=1) & df["total_score"].notna()
        return ~judged | (df["total_score"] <= HRCT_MAX_WEIGHT * extents.sum(axis=1) + 0.5)

    @pa.dataframe_check(name="HRC-014")
    def total_has_extents(cls, df: pd.DataFrame) -> pd.Series:
        return df["total_score"].isna() | df[list(HRCT_EXTENT_COLUMNS)].notna().all(axis=1)


def _drug_info(df: pd.DataFrame, name: str) -> pd.Series:
    return df["drug"].map({drug.value: getattr(info, name) for drug, info in DRUGS.items()})


class TreatmentSchema(Schema):
    id: Int = required()
    patient_id: Int = required()
    drug: Series[str] = codes(Drug, required=True)
    start_date: Date = required()
    end_date: Date = optional()
    dose: Series[float] = optional()
    dose_unit: Series[str] = codes(DoseUnit)
    frequency: Series[str] = codes(Frequency)
    stop_reason: Series[str] = codes(StopReason)
    missing_codes: Series[str] = optional()  # missing-data codes of the fields (registry/missing.py)

    @pa.dataframe_check(name="TRT-011")
    def usual_dose(cls, df: pd.DataFrame) -> pd.Series:
        same_unit = df["dose_unit"] == _drug_info(df, "dose_unit")
        low, high = _drug_info(df, "dose_low").astype(float), _drug_info(df, "dose_high").astype(float)
        judged = same_unit & df["dose"].notna() & low.notna()
        return ~judged | df["dose"].between(low, high)

    @pa.dataframe_check(name="TRT-012")
    def usual_unit(cls, df: pd.DataFrame) -> pd.Series:
        usual = _drug_info(df, "dose_unit")
        return df["dose_unit"].isna() | usual.isna() | (df["dose_unit"] == usual)

    @pa.dataframe_check(name="TRT-013")
    def ends_after_start(cls, df: pd.DataFrame) -> pd.Series:
        return ~(df["end_date"] < df["start_date"])

    @pa.dataframe_check(name="TRT-015")
    def stopped_course_ends(cls, df: pd.DataFrame) -> pd.Series:
        return ~(df["stop_reason"].notna() & df["end_date"].isna())

    @pa.dataframe_check(name="TRT-016")
    def ended_course_has_reason(cls, df: pd.DataFrame) -> pd.Series:
        return ~(df["end_date"].notna() & ~answered(df, "stop_reason"))


class AdverseEventSchema(Schema):
    id: Int = required()
    patient_id: Int = required()
    onset_date: Date = required()
    term: Series[str] = codes(AdverseEventTerm, required=True)
    term_detail: Series[str] = optional()
    ctcae_grade: Int = pa.Field(isin=[1, 2, 3, 4, 5])
    serious: Flag = required()
    attributed_drug: Series[str] = codes(Drug)
    led_to_discontinuation: Flag = required()
    outcome: Series[str] = codes(AdverseEventOutcome)
    resolution_date: Date = optional()
    missing_codes: Series[str] = optional()  # missing-data codes of the fields (registry/missing.py)

    @pa.dataframe_check(name="AEV-013")
    def resolves_after_onset(cls, df: pd.DataFrame) -> pd.Series:
        return ~(df["resolution_date"] < df["onset_date"])

    @pa.dataframe_check(name="AEV-014")
    def other_is_described(cls, df: pd.DataFrame) -> pd.Series:
        detail = df["term_detail"].fillna("").astype(str).str.strip()
        return ~((df["term"] == AdverseEventTerm.OTHER) & (detail == "") & ~coded(df, "term_detail"))

    @pa.dataframe_check(name="AEV-016")
    def grade_5_is_fatal(cls, df: pd.DataFrame) -> pd.Series:
        """CTCAE grade 5 is death related to the event. (A fatal outcome of an event graded 4, its worst grade
        before death, is left alone: registries record it either way.)"""
        return ~((df["ctcae_grade"] == 5).fillna(False) & (df["outcome"] != AdverseEventOutcome.FATAL))

    @pa.dataframe_check(name="AEV-017")
    def severe_is_serious(cls, df: pd.DataFrame) -> pd.Series:
        """Grade 4 (life-threatening) and 5 meet ICH E2A's seriousness criteria."""
        return ~((df["ctcae_grade"] >= 4).fillna(False) & (df["serious"] == False).fillna(False))  # noqa: E712

    @pa.dataframe_check(name="AEV-018")
    def resolved_has_resolved(cls, df: pd.DataFrame) -> pd.Series:
        unresolved = df["outcome"].isin([AdverseEventOutcome.NOT_RECOVERED, AdverseEventOutcome.FATAL])
        return ~(df["resolution_date"].notna() & unresolved)


class FollowUpSchema(Schema):
    patient_id: Int = required()
    last_contact_date: Date = required()
    vital_status: Series[str] = codes(VitalStatus, required=True)
    death_date: Date = optional()
    death_cause: Series[str] = codes(DeathCause)
    lung_transplant_date: Date = optional()
    lost_to_follow_up: Flag = required()
    missing_codes: Series[str] = optional()  # missing-data codes of the fields (registry/missing.py)

    @pa.dataframe_check(name="FUP-011")
    def cause_of_death(cls, df: pd.DataFrame) -> pd.Series:
        return ~((df["vital_status"] == VitalStatus.DEAD) & ~answered(df, "death_cause"))

    @pa.dataframe_check(name="FUP-013")
    def transplant_before_last_contact(cls, df: pd.DataFrame) -> pd.Series:
        """The last contact is the last day the patient was known alive: a transplant is no later."""
        return ~(df["lung_transplant_date"] > df["last_contact_date"])


#: The schema of each table.
SCHEMAS: dict[str, type[Schema]] = {
    "site": SiteSchema,
    "patient": PatientSchema,
    "antibody_test": AntibodyTestSchema,
    "lab_result": LabResultSchema,
    "pft": PftSchema,
    "hrct": HrctSchema,
    "treatment": TreatmentSchema,
    "adverse_event": AdverseEventSchema,
    "follow_up": FollowUpSchema,
}
