"""Code lists: the single source of allowed values, units and plausible ranges.

The database (CHECK constraints), validation (import, data-quality rules) and the
data dictionary all read these definitions, so a code added here is accepted
everywhere at once. Stored codes are short lower-case identifiers; the labels are
what people read.

Plausible ranges are engineering defaults for validation (../shared/DOMAIN.md,
"proposed"), not published reference limits: ``low``/``high`` bound values that are
physiologically possible at all; ``soft_low``/``soft_high`` mark values that are
possible but rare enough to deserve a second look.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from enum import StrEnum


class CodeList(StrEnum):
    """A code list whose members carry a human label (``label``)."""

    def __new__(cls, value: str, label: str = "") -> CodeList:
        member = str.__new__(cls, value)
        member._value_ = value
        member.label = label or value  # type: ignore[attr-defined]
        return member

    label: str


class Sex(CodeList):
    FEMALE = "female", "Female"
    MALE = "male", "Male"


class Smoking(CodeList):
    NEVER = "never", "Never smoked"
    FORMER = "former", "Former smoker"
    CURRENT = "current", "Current smoker"


class RpildDefinition(CodeList):
    """How the RPILD flag was judged; kept beside the flag so analyses can tell."""

    WORSENING_1_MONTH = (
        "worsening_1_month",
        "Radiological/respiratory worsening within 1 month of respiratory-symptom onset",
    )
    WORSENING_3_MONTHS = (
        "worsening_3_months",
        "Radiological/respiratory worsening within 3 months of respiratory-symptom onset",
    )


class Antibody(CodeList):
    ANTI_MDA5 = "anti_mda5", "Anti-MDA5 (CADM-140)"
    ANTI_RO52 = "anti_ro52", "Anti-Ro52 (TRIM21)"
    ANTI_RO60 = "anti_ro60", "Anti-Ro60 (SSA)"
    ANTI_JO1 = "anti_jo1", "Anti-Jo-1"
    ANTI_PL7 = "anti_pl7", "Anti-PL-7"
    ANTI_PL12 = "anti_pl12", "Anti-PL-12"
    ANTI_EJ = "anti_ej", "Anti-EJ"
    ANTI_OJ = "anti_oj", "Anti-OJ"
    ANTI_MI2 = "anti_mi2", "Anti-Mi-2"
    ANTI_TIF1G = "anti_tif1g", "Anti-TIF1-gamma"
    ANTI_NXP2 = "anti_nxp2", "Anti-NXP2"
    ANTI_SAE = "anti_sae", "Anti-SAE"
    ANTI_SRP = "anti_srp", "Anti-SRP"
    ANTI_HMGCR = "anti_hmgcr", "Anti-HMGCR"
    ANTI_PMSCL = "anti_pmscl", "Anti-PM/Scl"
    ANTI_KU = "anti_ku", "Anti-Ku"
    ANA = "ana", "Antinuclear antibodies (IIF)"


#: Myositis-specific antibodies other than anti-MDA5; a second one is a data-quality flag.
OTHER_MYOSITIS_SPECIFIC = frozenset(
    {
        Antibody.ANTI_JO1,
        Antibody.ANTI_PL7,
        Antibody.ANTI_PL12,
        Antibody.ANTI_EJ,
        Antibody.ANTI_OJ,
        Antibody.ANTI_MI2,
        Antibody.ANTI_TIF1G,
        Antibody.ANTI_NXP2,
        Antibody.ANTI_SAE,
        Antibody.ANTI_SRP,
        Antibody.ANTI_HMGCR,
    }
)


class Assay(CodeList):
    ELISA = "elisa", "ELISA (index or U/mL)"
    LINE_BLOT = "line_blot", "Line blot / immunoblot (graded)"
    IMMUNOPRECIPITATION = "immunoprecipitation", "Immunoprecipitation"
    CBA = "cba", "Cell-based assay"
    IIF = "iif", "Indirect immunofluorescence"


class AntibodyGrade(CodeList):
    """Semi-quantitative grade, as line-blot kits report it."""

    NEGATIVE = "negative", "Negative (-)"
    WEAK = "weak", "Weak positive (+)"
    MODERATE = "moderate", "Moderate positive (++)"
    STRONG = "strong", "Strong positive (+++)"


class AntibodyUnit(CodeList):
    INDEX = "index", "ELISA index (arbitrary units)"
    U_ML = "U/mL", "Units per millilitre"
    TITRE = "titre", "Reciprocal dilution (e.g. 1:320 entered as 320)"


#: Anti-MDA5 ELISA index at or above which the result is positive (MESACUP kit, MBL).
ANTI_MDA5_ELISA_POSITIVE_INDEX = 32.0


class Analyte(CodeList):
    FERRITIN = "ferritin", "Serum ferritin"
    LDH = "ldh", "Lactate dehydrogenase"
    CRP = "crp", "C-reactive protein"
    ESR = "esr", "Erythrocyte sedimentation rate"
    KL6 = "kl6", "Krebs von den Lungen-6"
    LYMPHOCYTES = "lymphocytes", "Lymphocyte count"
    CK = "ck", "Creatine kinase"
    ALT = "alt", "Alanine aminotransferase"
    AST = "ast", "Aspartate aminotransferase"
    ALBUMIN = "albumin", "Serum albumin"
    CREATININE = "creatinine", "Serum creatinine"
    PAO2 = "pao2", "Arterial oxygen partial pressure"
    FIO2 = "fio2", "Fraction of inspired oxygen"
    TACROLIMUS_TROUGH = "tacrolimus_trough", "Tacrolimus trough concentration"


class MissingCode(CodeList):
    """Why an optional field has no value, where a blank would not say (REDCap's missing-data codes UNK, ND, NA and
    NASK). Stored apart from the field's value (``missing_codes`` of the record), written ``[code]`` in a cell."""

    UNKNOWN = "unknown", "Unknown"
    NOT_DONE = "not_done", "Not done"
    NOT_APPLICABLE = "not_applicable", "Not applicable"
    NOT_ASKED = "not_asked", "Not asked"


#: The dates entry and import accept: a birth date or a clinical date outside them is a typing error (0001-01-01
#: for 2001-01-01, 2202 for 2022), refused with the row's message. Dates inside them that are merely implausible (a
#: birth in 1905, a visit next year) are for the data-quality rules.
EARLIEST_DATE = date(1900, 1, 1)
LATEST_DATE = date(2100, 12, 31)


@dataclass(frozen=True)
class Range:
    """Plausible values of one measurement, in its canonical unit."""

    unit: str
    low: float
    high: float
    soft_low: float | None = None
    soft_high: float | None = None
    source: str = ""


#: Canonical unit and plausible range of each analyte. Sources: DOMAIN.md (proposed
#: limits); unit traps noted where a common alternative unit would pass unnoticed.
ANALYTE_RANGES: dict[Analyte, Range] = {
    Analyte.FERRITIN: Range("ng/mL", 1, 100_000, soft_high=10_000, source="DOMAIN.md; µg/L is numerically equal"),
    Analyte.LDH: Range("U/L", 50, 5_000, source="DOMAIN.md"),
    Analyte.CRP: Range("mg/L", 0, 500, source="DOMAIN.md; trap: mg/dL is 10x smaller"),
    Analyte.ESR: Range("mm/h", 0, 150, source="DOMAIN.md"),
    Analyte.KL6: Range("U/mL", 50, 20_000, source="DOMAIN.md"),
    Analyte.LYMPHOCYTES: Range("10^9/L", 0, 10, source="DOMAIN.md; trap: >50 is a per-µL entry"),
    Analyte.CK: Range("U/L", 5, 50_000, source="DOMAIN.md"),
    Analyte.ALT: Range("U/L", 1, 5_000, source="DOMAIN.md"),
    Analyte.AST: Range("U/L", 1, 5_000, source="DOMAIN.md"),
    Analyte.ALBUMIN: Range("g/L", 10, 60, source="DOMAIN.md; trap: g/dL is 10x smaller"),
    Analyte.CREATININE: Range("umol/L", 20, 1_500, source="DOMAIN.md; trap: mg/dL is 88.4x smaller"),
    Analyte.PAO2: Range("mmHg", 30, 600, source="DOMAIN.md; trap: kPa is 7.5x smaller"),
    Analyte.FIO2: Range("fraction", 0.21, 1.0, source="DOMAIN.md; trap: >1 is a percentage entry"),
    Analyte.TACROLIMUS_TROUGH: Range(
        "ng/mL", 0, 60, soft_high=20, source="DOMAIN.md: target trough 5-10 ng/mL, flag >20"
    ),
}


#: Units an entry form accepts for an analyte besides its canonical one, each with the factor that converts a value
#: in it to the canonical unit (canonical = value x factor). Only exact, documented conversions: identities of units
#: (ug/L = ng/mL), powers of ten (1 dL = 0.1 L; 1 uL = 1e-6 L; 1 % = 0.01), and the conventional creatinine factor
#: (1 mg/dL = 88.4 umol/L, molar mass 113.12 g/mol). PaO2 in kPa is left out: 7.50062 mmHg/kPa is not exact.
#: The form stores the converted value in the canonical unit; an import stores what the sheet holds, and rule
#: LAB-010 reports a unit other than the canonical one.
LAB_UNIT_FACTORS: dict[Analyte, dict[str, float]] = {
    Analyte.FERRITIN: {"ug/L": 1},
    Analyte.CRP: {"mg/dL": 10},
    Analyte.LYMPHOCYTES: {"/uL": 0.001},
    Analyte.ALBUMIN: {"g/dL": 10},
    Analyte.CREATININE: {"mg/dL": 88.4},
    Analyte.FIO2: {"%": 0.01},
    Analyte.TACROLIMUS_TROUGH: {"ug/L": 1},
}


def lab_units(analyte: Analyte) -> tuple[str, ...]:
    """The units an entry form offers for ``analyte``: the canonical one first."""
    return (ANALYTE_RANGES[analyte].unit, *LAB_UNIT_FACTORS.get(analyte, {}))


def to_canonical_unit(analyte: Analyte, value: float, unit: str) -> float:
    """``value`` in ``unit`` (one of :func:`lab_units`) as a value in the analyte's canonical unit, computed in
    decimal so that 1.2 mg/dL is 12 mg/L, not 12.000000000000002."""
    if unit == ANALYTE_RANGES[analyte].unit:
        return value
    return float(Decimal(repr(value)) * Decimal(repr(LAB_UNIT_FACTORS[analyte][unit])))


#: Plausible ranges of pulmonary function results (DOMAIN.md, proposed).
PFT_RANGES: dict[str, Range] = {
    "fvc_l": Range("L", 0.3, 8.0, source="proposed: adult FVC"),
    "fvc_pct_pred": Range("% predicted", 10, 150, source="DOMAIN.md"),
    "dlco_pct_pred": Range("% predicted", 5, 150, source="DOMAIN.md"),
    "tlc_pct_pred": Range("% predicted", 20, 150, source="DOMAIN.md"),
}


class PftNotDoneReason(CodeList):
    TOO_ILL = "too_ill", "Too breathless or unwell to perform"
    OXYGEN_OR_VENTILATION = "oxygen_or_ventilation", "On high-flow oxygen or ventilation"
    INFECTION_CONTROL = "infection_control", "Infection-control restrictions"
    REFUSED = "refused", "Patient declined"
    NOT_AVAILABLE = "not_available", "Test not available at the site"
    OTHER = "other", "Other reason"


class HrctPattern(CodeList):
    OP = "op", "Organising pneumonia"
    NSIP = "nsip", "Non-specific interstitial pneumonia"
    NSIP_OP = "nsip_op", "NSIP with organising pneumonia"
    UIP = "uip", "Usual interstitial pneumonia"
    DAD = "dad", "Diffuse alveolar damage"
    UNCLASSIFIABLE = "unclassifiable", "Unclassifiable"


class LungZone(CodeList):
    """The six zones scored on HRCT (upper, middle, lower of each lung)."""

    RIGHT_UPPER = "right_upper", "Right upper zone"
    RIGHT_MIDDLE = "right_middle", "Right middle zone"
    RIGHT_LOWER = "right_lower", "Right lower zone"
    LEFT_UPPER = "left_upper", "Left upper zone"
    LEFT_MIDDLE = "left_middle", "Left middle zone"
    LEFT_LOWER = "left_lower", "Left lower zone"


class HrctFeature(CodeList):
    GGO = "ggo", "Ground-glass opacity"
    CONSOLIDATION = "consolidation", "Consolidation"


#: The most one percent of a zone counts in a total HRCT score. The scores the registry holds weight each zone's extent
#: of a feature by the feature's severity, consolidation (the denser) at most twice: ground glass once and
#: consolidation twice, or both twice. A score that also counts normal lung or fibrosis (Ichikado's) is another scale.
HRCT_MAX_WEIGHT = 2
#: Plausible total HRCT scores: six zones, each at most wholly involved, each percent counted at most twice.
HRCT_TOTAL_SCORE_RANGE = Range(
    "points", 0, len(LungZone) * 100 * HRCT_MAX_WEIGHT, source="proposed: 6 zones x 100% x weight 2 (consolidation)"
)


class DrugClass(CodeList):
    STUDY_DRUG = "study_drug", "Study drug"
    GLUCOCORTICOID = "glucocorticoid", "Glucocorticoid"
    IMMUNOSUPPRESSANT = "immunosuppressant", "Immunosuppressant / steroid-sparing"
    ANTIFIBROTIC = "antifibrotic", "Antifibrotic"
    PROPHYLAXIS = "prophylaxis", "Anti-infective prophylaxis"
    PROCEDURE = "procedure", "Extracorporeal or supportive procedure"


class Drug(CodeList):
    TOFACITINIB = "tofacitinib", "Tofacitinib"
    TACROLIMUS = "tacrolimus", "Tacrolimus"
    GLUCOCORTICOID = "glucocorticoid", "Oral/IV glucocorticoid (prednisone equivalent)"
    METHYLPREDNISOLONE_PULSE = "methylprednisolone_pulse", "Methylprednisolone pulse"
    CYCLOPHOSPHAMIDE = "cyclophosphamide", "Cyclophosphamide (IV)"
    IVIG = "ivig", "Intravenous immunoglobulin"
    MYCOPHENOLATE = "mycophenolate", "Mycophenolate mofetil"
    RITUXIMAB = "rituximab", "Rituximab"
    CICLOSPORIN = "ciclosporin", "Ciclosporin"
    AZATHIOPRINE = "azathioprine", "Azathioprine"
    METHOTREXATE = "methotrexate", "Methotrexate"
    HYDROXYCHLOROQUINE = "hydroxychloroquine", "Hydroxychloroquine"
    BARICITINIB = "baricitinib", "Baricitinib"
    RUXOLITINIB = "ruxolitinib", "Ruxolitinib"
    TOCILIZUMAB = "tocilizumab", "Tocilizumab"
    BASILIXIMAB = "basiliximab", "Basiliximab"
    PIRFENIDONE = "pirfenidone", "Pirfenidone"
    NINTEDANIB = "nintedanib", "Nintedanib"
    TMP_SMX_PROPHYLAXIS = "tmp_smx_prophylaxis", "Trimethoprim-sulfamethoxazole prophylaxis"
    PLASMA_EXCHANGE = "plasma_exchange", "Plasma exchange"
    PMX_DHP = "pmx_dhp", "Polymyxin B direct haemoperfusion"
    ECMO = "ecmo", "Extracorporeal membrane oxygenation"


class DoseUnit(CodeList):
    MG = "mg", "mg"
    G = "g", "g"
    MG_KG = "mg/kg", "mg per kg body weight"
    G_KG = "g/kg", "g per kg body weight"
    MG_M2 = "mg/m2", "mg per m² body surface area"
    SESSION = "session", "Session (procedures)"


class Frequency(CodeList):
    ONCE = "once", "Single dose"
    DAILY = "daily", "Once daily"
    BID = "bid", "Twice daily"
    TID = "tid", "Three times daily"
    WEEKLY = "weekly", "Weekly"
    EVERY_2_WEEKS = "every_2_weeks", "Every 2 weeks"
    EVERY_4_WEEKS = "every_4_weeks", "Every 4 weeks"
    MONTHLY = "monthly", "Monthly"
    THRICE_WEEKLY = "thrice_weekly", "Three times a week"
    CONTINUOUS = "continuous", "Continuous (procedures)"


@dataclass(frozen=True)
class DrugInfo:
    """What the registry knows of a drug: its class and its plausible dose."""

    drug_class: DrugClass
    steroid_sparing: bool
    dose_unit: DoseUnit | None = None
    dose_per: Frequency | None = None
    dose_low: float | None = None
    dose_high: float | None = None
    source: str = ""


#: Drug catalogue. ``steroid_sparing`` is the default list of concurrent
#: steroid-sparing agents for the adjusted Cox model (configurable in the cohort).
#: Dose ranges are per administration in ``dose_unit`` at the usual frequency.
DRUGS: dict[Drug, DrugInfo] = {
    Drug.TOFACITINIB: DrugInfo(
        DrugClass.STUDY_DRUG, False, DoseUnit.MG, Frequency.BID, 2.5, 10, "DOMAIN.md: 5-20 mg/day"
    ),
    Drug.TACROLIMUS: DrugInfo(
        DrugClass.STUDY_DRUG, False, DoseUnit.MG, Frequency.BID, 0.25, 7.5, "DOMAIN.md: 0.5-15 mg/day"
    ),
    Drug.GLUCOCORTICOID: DrugInfo(
        DrugClass.GLUCOCORTICOID,
        False,
        DoseUnit.MG,
        Frequency.DAILY,
        0,
        250,
        "DOMAIN.md: prednisone-equivalent 0-250 mg/day",
    ),
    Drug.METHYLPREDNISOLONE_PULSE: DrugInfo(
        DrugClass.GLUCOCORTICOID, False, DoseUnit.MG, Frequency.DAILY, 250, 1000, "DOMAIN.md: 250-1000 mg x 1-5 days"
    ),
    Drug.CYCLOPHOSPHAMIDE: DrugInfo(
        DrugClass.IMMUNOSUPPRESSANT, True, DoseUnit.MG_M2, Frequency.MONTHLY, 300, 1000, "DOMAIN.md: 300-1000 mg/m2"
    ),
    Drug.IVIG: DrugInfo(
        DrugClass.IMMUNOSUPPRESSANT, True, DoseUnit.G_KG, Frequency.MONTHLY, 0.4, 2, "DOMAIN.md: 0.4-2 g/kg per course"
    ),
    Drug.MYCOPHENOLATE: DrugInfo(
        DrugClass.IMMUNOSUPPRESSANT, True, DoseUnit.G, Frequency.BID, 0.25, 1.5, "DOMAIN.md: 0.5-3 g/day"
    ),
    Drug.RITUXIMAB: DrugInfo(
        DrugClass.IMMUNOSUPPRESSANT, True, DoseUnit.MG, Frequency.ONCE, 375, 1000, "DOMAIN.md: 375 mg/m2 or 1000 mg"
    ),
    Drug.CICLOSPORIN: DrugInfo(
        DrugClass.IMMUNOSUPPRESSANT, True, DoseUnit.MG, Frequency.BID, 25, 250, "proposed: 2-5 mg/kg/day"
    ),
    Drug.AZATHIOPRINE: DrugInfo(
        DrugClass.IMMUNOSUPPRESSANT, True, DoseUnit.MG, Frequency.DAILY, 25, 250, "proposed: 1-3 mg/kg/day"
    ),
    Drug.METHOTREXATE: DrugInfo(
        DrugClass.IMMUNOSUPPRESSANT, True, DoseUnit.MG, Frequency.WEEKLY, 5, 25, "proposed: 7.5-25 mg/week"
    ),
    Drug.HYDROXYCHLOROQUINE: DrugInfo(
        DrugClass.IMMUNOSUPPRESSANT, False, DoseUnit.MG, Frequency.DAILY, 100, 400, "proposed: 200-400 mg/day"
    ),
    Drug.BARICITINIB: DrugInfo(
        DrugClass.IMMUNOSUPPRESSANT, True, DoseUnit.MG, Frequency.DAILY, 1, 8, "proposed: 2-4 mg/day"
    ),
    Drug.RUXOLITINIB: DrugInfo(
        DrugClass.IMMUNOSUPPRESSANT, True, DoseUnit.MG, Frequency.BID, 5, 25, "proposed: 10-50 mg/day"
    ),
    Drug.TOCILIZUMAB: DrugInfo(
        DrugClass.IMMUNOSUPPRESSANT, True, DoseUnit.MG_KG, Frequency.EVERY_4_WEEKS, 4, 8, "proposed: 8 mg/kg IV"
    ),
    Drug.BASILIXIMAB: DrugInfo(
        DrugClass.IMMUNOSUPPRESSANT, True, DoseUnit.MG, Frequency.ONCE, 10, 20, "proposed: 20 mg IV"
    ),
    Drug.PIRFENIDONE: DrugInfo(
        DrugClass.ANTIFIBROTIC, False, DoseUnit.MG, Frequency.TID, 200, 801, "proposed: up to 2403 mg/day"
    ),
    Drug.NINTEDANIB: DrugInfo(
        DrugClass.ANTIFIBROTIC, False, DoseUnit.MG, Frequency.BID, 100, 150, "proposed: 100-150 mg bid"
    ),
    Drug.TMP_SMX_PROPHYLAXIS: DrugInfo(
        DrugClass.PROPHYLAXIS,
        False,
        DoseUnit.MG,
        Frequency.DAILY,
        80,
        960,
        "proposed: 480-960 mg daily or thrice weekly",
    ),
    Drug.PLASMA_EXCHANGE: DrugInfo(DrugClass.PROCEDURE, False, DoseUnit.SESSION),
    Drug.PMX_DHP: DrugInfo(DrugClass.PROCEDURE, False, DoseUnit.SESSION),
    Drug.ECMO: DrugInfo(DrugClass.PROCEDURE, False, DoseUnit.SESSION),
}

#: The drugs whose first start defines a patient's group and index date.
STUDY_DRUGS = (Drug.TOFACITINIB, Drug.TACROLIMUS)


class StopReason(CodeList):
    COMPLETED = "completed", "Planned course completed"
    ADVERSE_EVENT = "adverse_event", "Adverse event"
    INEFFICACY = "inefficacy", "Lack of efficacy"
    REMISSION = "remission", "Remission / tapered off"
    DEATH = "death", "Death"
    TRANSPLANT = "transplant", "Lung transplantation"
    PATIENT_CHOICE = "patient_choice", "Patient choice"
    COST = "cost", "Cost or availability"
    SWITCH = "switch", "Switched to another treatment"
    OTHER = "other", "Other reason"


class AdverseEventTerm(CodeList):
    CMV_REACTIVATION = "cmv_reactivation", "CMV reactivation"
    PJP = "pjp", "Pneumocystis jirovecii pneumonia"
    HERPES_ZOSTER = "herpes_zoster", "Herpes zoster"
    BACTERIAL_INFECTION = "bacterial_infection", "Bacterial infection"
    FUNGAL_INFECTION = "fungal_infection", "Fungal infection"
    OTHER_INFECTION = "other_infection", "Other infection"
    HEPATOTOXICITY = "hepatotoxicity", "Hepatotoxicity"
    NEPHROTOXICITY = "nephrotoxicity", "Nephrotoxicity"
    HYPERGLYCAEMIA = "hyperglycaemia", "Hyperglycaemia"
    CYTOPENIA = "cytopenia", "Cytopenia"
    THROMBOSIS = "thrombosis", "Venous or arterial thrombosis"
    PNEUMOMEDIASTINUM = "pneumomediastinum", "Pneumomediastinum"
    GASTROINTESTINAL = "gastrointestinal", "Gastrointestinal disorder"
    HYPERTENSION = "hypertension", "Hypertension"
    NEUROTOXICITY = "neurotoxicity", "Neurotoxicity (tremor, seizures, PRES)"
    OTHER = "other", "Other (describe in detail)"


#: CTCAE version the grades refer to.
CTCAE_VERSION = "5.0"


class AdverseEventOutcome(CodeList):
    RECOVERED = "recovered", "Recovered/resolved"
    RECOVERING = "recovering", "Recovering/resolving"
    NOT_RECOVERED = "not_recovered", "Not recovered/not resolved"
    SEQUELAE = "sequelae", "Recovered with sequelae"
    FATAL = "fatal", "Fatal"
    UNKNOWN = "unknown", "Unknown"


class VitalStatus(CodeList):
    ALIVE = "alive", "Alive at last contact"
    DEAD = "dead", "Dead"


class DeathCause(CodeList):
    RESPIRATORY_FAILURE_ILD = "respiratory_failure_ild", "Respiratory failure from progressive ILD"
    INFECTION = "infection", "Infection"
    PNEUMOMEDIASTINUM = "pneumomediastinum", "Pneumomediastinum / air leak"
    CARDIOVASCULAR = "cardiovascular", "Cardiovascular"
    MALIGNANCY = "malignancy", "Malignancy"
    OTHER = "other", "Other"
    UNKNOWN = "unknown", "Unknown"


class Role(CodeList):
    """What a registry account may do (checked on every request of the web application)."""

    COORDINATOR = "coordinator", "Research coordinator: enters and edits the patients of their own sites"
    DATA_MANAGER = "data_manager", "Data manager: all sites, resolves data-quality findings, locks records"
    ANALYST = "analyst", "Analyst: reads everything, downloads reports and results"
    ADMIN = "admin", "Administrator: accounts and sites"
    INVESTIGATOR = "investigator", "Investigator: reads the patients of their own sites and signs them off"


#: The roles tied to sites: an account of these sees (and acts on) the patients of its own sites only.
SITE_ROLES = (Role.COORDINATOR, Role.INVESTIGATOR)


class RecordStatus(CodeList):
    """Where a patient's record stands on its way to analysis (registry/signoff.py): entered, verified, signed."""

    IN_PROGRESS = "in_progress", "In progress: data entry under way"
    COMPLETE = "complete", "Complete: every required form entered, no open error or query (coordinator)"
    VERIFIED = "verified", "Verified: source data verified (data manager)"
    SIGNED = "signed", "Signed: attested complete and accurate by an investigator (electronic signature)"


class QueryStatus(CodeList):
    """Where a query about a patient's data stands (registry/queries.py): the site answers, a data manager closes."""

    OPEN = "open", "Open: awaiting the site's answer"
    ANSWERED = "answered", "Answered: awaiting a data manager"
    CLOSED = "closed", "Closed by a data manager"


class QueryAction(CodeList):
    """What one message of a query's thread did."""

    OPENED = "opened", "Opened the query with a question"
    ANSWERED = "answered", "Answered"
    CORRECTED = "corrected", "Corrected the field the query is about"
    CLOSED = "closed", "Closed the query"
    REOPENED = "reopened", "Re-opened the query"


class SignInOutcome(CodeList):
    """What a sign-in event of the web application was (registry user events lists them)."""

    SUCCESS = "success", "Signed in"
    FAILURE = "failure", "Wrong user name or password, or a disabled account"
    THROTTLED = "throttled", "Refused unchecked: too many recent failures from this address"
    SIGNED_OUT = "signed_out", "Signed out (the session ended)"
    PASSWORD_CHANGED = "password_changed", "Password changed (every session of the account ended)"
    ROLE_CHANGED = "role_changed", "Role or sites changed (every session of the account ended)"
    DISABLED = "disabled", "Account disabled (every session of the account ended)"
    SIGNATURE_REFUSED = "signature_refused", "Electronic signature refused: wrong password, role or site"


class AuditAction(CodeList):
    INSERT = "insert", "Record created"
    UPDATE = "update", "Record changed"
    DELETE = "delete", "Record deleted"
    RESTORE = "restore", "Database replaced by a backup (registry restore)"
    DOWNGRADE = "downgrade", "Schema migrated back, forced past the audit chain (registry db downgrade --force)"
