"""The data-quality rule catalogue: what each rule checks, how it is classed, how bad it is.

Categories are those of the harmonised data-quality assessment framework (Kahn et
al., eGEMs 2016), as OHDSI's Data Quality Dashboard uses them. An ``error`` blocks
analysis (the report refuses to render); a ``warning`` is shown and does not block.
Rule ids are stable: a retired rule's id is never reused. The checks themselves live
in :mod:`registry.quality.schemas` (one row at a time, pandera) and
:mod:`registry.quality.cross` (across rows and tables, pandas).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from registry.codes import HRCT_TOTAL_SCORE_RANGE


class Category(StrEnum):
    VALUE = "conformance: value"
    RELATIONAL = "conformance: relational"
    COMPUTATIONAL = "conformance: computational"
    COMPLETENESS = "completeness"
    ATEMPORAL = "plausibility: atemporal"
    TEMPORAL = "plausibility: temporal"
    UNIQUENESS = "plausibility: uniqueness"


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Rule:
    id: str
    table: str  # what the rule counts as checked: a table's records, or "date" (every recorded date)
    category: Category
    severity: Severity
    message: str
    fields: tuple[str, ...]


#: Rule-id prefix of each table.
PREFIX = {
    "site": "SIT",
    "patient": "PAT",
    "antibody_test": "ABT",
    "lab_result": "LAB",
    "pft": "PFT",
    "hrct": "HRC",
    "treatment": "TRT",
    "adverse_event": "AEV",
    "follow_up": "FUP",
}

#: Generic rules every table has (where they apply): -001 types, -002 required
#: fields, -003 code lists, -004 references, -005 natural-key duplicates.
TYPE, REQUIRED, CODE_LIST, REFERENCE, DUPLICATE_KEY = "001", "002", "003", "004", "005"


def _generic(table: str, *, codes: bool = True, reference: str | None = "patient", key: tuple[str, ...]) -> list[Rule]:
    p = PREFIX[table]
    E = Severity.ERROR
    rules = [
        Rule(f"{p}-{TYPE}", table, Category.VALUE, E, "value is not of the column's type", ("*",)),
        Rule(f"{p}-{REQUIRED}", table, Category.COMPLETENESS, E, "a required field is empty", ("*",)),
    ]
    if codes:
        rules.append(
            Rule(f"{p}-{CODE_LIST}", table, Category.VALUE, E, "value is not in the column's code list", ("*",))
        )
    if reference:
        field = f"{reference}_id"
        rules.append(
            Rule(
                f"{p}-{REFERENCE}",
                table,
                Category.RELATIONAL,
                E,
                f"refers to a {reference} that does not exist",
                (field,),
            )
        )
    rules.append(
        Rule(
            f"{p}-{DUPLICATE_KEY}", table, Category.UNIQUENESS, E, f"another record has the same {', '.join(key)}", key
        )
    )
    return rules


_HRCT_SCORE = HRCT_TOTAL_SCORE_RANGE
E, W = Severity.ERROR, Severity.WARNING
V, R, C, M = Category.VALUE, Category.RELATIONAL, Category.COMPUTATIONAL, Category.COMPLETENESS
A, T, U = Category.ATEMPORAL, Category.TEMPORAL, Category.UNIQUENESS

# fmt: off
RULES: tuple[Rule, ...] = (
    *_generic("site", codes=False, reference=None, key=("code",)),
    *_generic("patient", reference="site", key=("study_id",)),
    Rule("PAT-010", "patient", A, E, "age at diagnosis is outside 18-100 years",
         ("birth_date", "dm_diagnosis_date", "ild_diagnosis_date")),
    Rule("PAT-011", "patient", A, W, "age at diagnosis is over 85 years: check the birth date",
         ("birth_date", "dm_diagnosis_date", "ild_diagnosis_date")),
    Rule("PAT-012", "patient", T, E, "a diagnosis or symptom date is not after the birth date",
         ("birth_date", "dm_diagnosis_date", "ild_diagnosis_date", "resp_symptom_onset_date")),
    Rule("PAT-013", "patient", T, E, "respiratory symptoms began after the ILD diagnosis",
         ("resp_symptom_onset_date", "ild_diagnosis_date")),
    Rule("PAT-014", "patient", T, E, "ILD worsening is dated before respiratory-symptom onset",
         ("ild_worsening_date", "resp_symptom_onset_date")),
    Rule("PAT-015", "patient", M, W, "smoking history is missing (a covariate of the adjusted model)", ("smoking",)),
    Rule("PAT-016", "patient", M, W, "RPILD flag is missing (the patient drops out of the RPILD subgroup)", ("rpild",)),
    Rule("PAT-017", "patient", M, W, "respiratory-symptom onset date is missing (RPILD cannot be judged)",
         ("resp_symptom_onset_date",)),
    Rule("PAT-018", "patient", U, E, "another patient has the same site, sex, birth date and DM diagnosis date",
         ("site_id", "sex", "birth_date", "dm_diagnosis_date")),
    *_generic("antibody_test", key=("patient_id", "antibody", "assay", "sample_date")),
    Rule("ABT-010", "patient", M, E, "no anti-MDA5 result", ("antibody",)),
    Rule("ABT-011", "antibody_test", C, W, "grade and value disagree about positivity (value against cut-off)",
         ("grade", "value", "cutoff")),
    *_generic("lab_result", key=("patient_id", "analyte", "sample_date")),
    Rule("LAB-010", "lab_result", V, E, "unit is not the analyte's canonical unit", ("unit", "analyte")),
    Rule("LAB-011", "lab_result", V, E, "lymphocyte count above 50: entered per µL instead of 10^9/L",
         ("value", "analyte")),
    Rule("LAB-012", "lab_result", V, E, "FiO2 above 1: entered as a percentage instead of a fraction",
         ("value", "analyte")),
    Rule("LAB-013", "lab_result", A, E, "value outside the analyte's plausible range", ("value", "analyte")),
    Rule("LAB-014", "lab_result", A, W, "value possible but unusual for the analyte: check it", ("value", "analyte")),
    Rule("LAB-015", "lab_result", U, W, "same analyte and value on the day before: a double entry?",
         ("value", "analyte", "sample_date")),
    *_generic("pft", key=("patient_id", "test_date")),
    Rule("PFT-010", "patient", M, W, "no baseline pulmonary function test, nor the reason it was not done",
         ("test_date", "not_done_reason")),
    Rule("PFT-011", "pft", A, E, "result outside the plausible range",
         ("fvc_l", "fvc_pct_pred", "dlco_pct_pred", "tlc_pct_pred")),
    *_generic("hrct", key=("patient_id", "scan_date")),
    Rule("HRC-010", "patient", M, W, "no baseline HRCT", ("scan_date",)),
    Rule("HRC-011", "hrct", A, E, "extent outside 0-100% of the zone", ("*_pct",)),
    Rule("HRC-012", "hrct", A, E, f"total score outside {_HRCT_SCORE.low:g}-{_HRCT_SCORE.high:g}, the most six "
         "wholly involved zones give with each percent counted twice", ("total_score",)),
    Rule("HRC-013", "hrct", C, E, "total score above twice the sum of the zone extents: these extents cannot give it",
         ("total_score", "*_pct")),
    Rule("HRC-014", "hrct", M, W, "total score without every zone's extents: it cannot be checked against them",
         ("total_score", "*_pct")),
    *_generic("treatment", key=("patient_id", "drug", "start_date")),
    Rule("TRT-010", "patient", M, E, "no tofacitinib or tacrolimus course (no index treatment)", ("drug",)),
    Rule("TRT-011", "treatment", A, W, "dose outside the drug's usual range", ("dose", "dose_unit", "drug")),
    Rule("TRT-012", "treatment", V, W, "dose unit is not the drug's usual unit: the dose cannot be judged",
         ("dose_unit", "drug")),
    Rule("TRT-013", "treatment", T, E, "course ends before it starts", ("end_date", "start_date")),
    Rule("TRT-014", "treatment", U, E, "course overlaps another course of the same drug",
         ("drug", "start_date", "end_date")),
    Rule("TRT-015", "treatment", C, E, "a stop reason but no end date: the course counts as ongoing",
         ("end_date", "stop_reason")),
    Rule("TRT-016", "treatment", M, W, "an end date but no stop reason", ("stop_reason", "end_date")),
    *_generic("adverse_event", key=("patient_id", "term", "onset_date")),
    Rule("AEV-010", "adverse_event", T, E, "onset outside every course of the attributed drug (+ window)",
         ("onset_date", "attributed_drug")),
    Rule("AEV-011", "adverse_event", R, E, "the attributed drug was never given to the patient", ("attributed_drug",)),
    Rule("AEV-012", "adverse_event", T, E, "onset after the patient's death", ("onset_date",)),
    Rule("AEV-013", "adverse_event", T, E, "resolution before onset", ("resolution_date", "onset_date")),
    Rule("AEV-014", "adverse_event", M, W, "term 'other' without a description (term_detail)", ("term_detail", "term")),
    Rule("AEV-015", "adverse_event", C, E, "fatal outcome, but the patient is not recorded as dead", ("outcome",)),
    Rule("AEV-016", "adverse_event", C, E, "CTCAE grade 5 (death related to the event) but the outcome is not fatal",
         ("ctcae_grade", "outcome")),
    Rule("AEV-017", "adverse_event", C, W, "CTCAE grade 4 or 5 but not marked serious", ("serious", "ctcae_grade")),
    Rule("AEV-018", "adverse_event", C, E, "a resolution date, but the outcome is that the event did not resolve",
         ("resolution_date", "outcome")),
    *_generic("follow_up", key=("patient_id",)),
    Rule("FUP-010", "patient", M, E, "no follow-up record (vital status unknown)", ("vital_status",)),
    Rule("FUP-011", "follow_up", M, W, "dead without a cause of death", ("death_cause",)),
    Rule("FUP-012", "follow_up", T, E, "death before the start of the index study drug", ("death_date",)),
    Rule("FUP-013", "follow_up", T, E, "lung transplantation dated after the last contact",
         ("lung_transplant_date", "last_contact_date")),
    Rule("TIM-001", "date", T, E, "a record is dated after the patient's death", ("*_date",)),
    Rule("TIM-002", "date", T, E, "a record is dated after the last contact", ("*_date", "last_contact_date")),
    Rule("TIM-003", "date", T, W, "a record is dated after the data cut-off (analyses ignore it)", ("*_date",)),
    Rule("TIM-004", "date", T, E, "a date lies in the future", ("*_date", "birth_date")),
    Rule("TIM-005", "patient", T, E, "the index study drug started before the ILD diagnosis",
         ("ild_diagnosis_date", "start_date")),
    Rule("TIM-006", "date", T, E, "a record is dated before the patient's birth", ("*_date", "birth_date")),
    Rule("TIM-007", "date", T, W, "a record is dated more than 2 years before the DM and ILD diagnoses",
         ("*_date", "dm_diagnosis_date", "ild_diagnosis_date")),
    Rule("TIM-008", "date", V, E, "a spreadsheet's default date (1899-12-30, 1899-12-31, 1900-01-01 or 1904-01-01): "
         "an empty or zero cell read as a date?", ("*_date", "birth_date")),
    Rule("STU-001", "patient", V, E, "anti-MDA5 tested but never positive (study entry criterion)",
         ("antibody", "grade", "value")),
    Rule("STU-002", "patient", M, E, "no ILD diagnosis date (ILD is a study entry criterion)", ("ild_diagnosis_date",)),
    Rule("STU-003", "patient", V, E, "ILD diagnosed outside the enrolment window", ("ild_diagnosis_date",)),
    Rule("STU-004", "patient", V, W, "received both tofacitinib and tacrolimus (classified by the first)", ("drug",)),
    Rule("STU-005", "patient", V, E, "tofacitinib and tacrolimus started the same day: group undecidable",
         ("drug", "start_date")),
    Rule("STU-006", "patient", C, E, "RPILD flag disagrees with the symptom-onset and worsening dates",
         ("rpild", "rpild_definition", "resp_symptom_onset_date", "ild_worsening_date")),
    Rule("STU-007", "patient", V, W, "another myositis-specific antibody is positive too", ("antibody", "grade")),
    Rule("STU-008", "patient", V, W, "the index study drug started outside the enrolment window", ("start_date",)),
)
# fmt: on

CATALOGUE: dict[str, Rule] = {rule.id: rule for rule in RULES}
