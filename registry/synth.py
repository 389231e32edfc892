"""Synthetic registries of any size in the import format. SYNTHETIC DATA: no row describes a real person.

Tests, demonstrations and benchmarks need registries of 1,000 to 100,000 patients that
look like the real thing and pass the data-quality checks; real patients can never be
used for that. :func:`generate` draws one, vectorised over patients (no Python loop per
patient), from distributions modelled on the demo cohort (fixtures/demo) and
DOMAIN.md; :func:`write` writes it as a folder of CSV files, one per sheet of
:data:`registry.sheets.SHEETS`, or as an XLSX workbook, with a ``SYNTHETIC.txt``
notice. What is drawn, patient by patient:

- site (``SYN01``...; study_id ``SYN01-000123``, numbered in order of ILD diagnosis),
  sex, age, smoking, clinical features; DM, ILD and respiratory-symptom dates in the
  enrolment window; RPILD by the site's definition, with the worsening date it implies;
- anti-MDA5 (line blot and/or ELISA, cut-off 32) and anti-Ro52; baseline labs in the
  canonical units; PFT or the reason it was not done; HRCT; a tacrolimus trough;
- exactly one study drug (tofacitinib or tacrolimus, its share growing over 2017-2020)
  started after the ILD diagnosis, glucocorticoids, methylprednisolone pulses,
  steroid-sparing agents, prophylaxis; adverse events within the attributed course,
  some stopping the study drug;
- survival from the study-drug start: Weibull proportional hazards, tofacitinib HR 0.45,
  RPILD, age and anti-MDA5 grade; deaths with a cause, censoring at the last contact.

Every date lies on or before the patient's death or last contact and the end of
follow-up (a fixed date, never today's), so the output does not depend on when it is
made: the same size, seed and :data:`GENERATOR_VERSION` give the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from registry.codes import ANALYTE_RANGES, ANTI_MDA5_ELISA_POSITIVE_INDEX, PFT_RANGES, Analyte, RpildDefinition
from registry.config import Config
from registry.quality.schemas import RPILD_DAYS
from registry.sheets import SHEETS, SHEETS_BY_NAME

#: Version of the generator: raised whenever the same seed would give different data.
GENERATOR_VERSION = "1"
SITE_PREFIX = "SYN"
#: Patients per site when the number of sites is not given.
PATIENTS_PER_SITE = 2000
#: Follow-up ends this long after the enrolment window closes (18 months), for every patient alike.
FOLLOW_UP_DAYS = 546
NOTICE = "SYNTHETIC.txt"

# --- survival: cumulative hazard H(t) = BASE_HAZARD * (t / 183 days) ** SHAPE * exp(linear predictor) ----------------
#: Shape < 1: the hazard falls with time, so most deaths come in the first months (as in MDA5-ILD).
SHAPE = 0.35
#: Tacrolimus, no RPILD, age 53, weak anti-MDA5: about 8% dead by 6 months (STUDY.md: 1 of 13).
BASE_HAZARD = 0.08
LOG_HR_TOFACITINIB = math.log(0.45)  # Fan et al. 2022: adjusted HR 0.438
LOG_HR_RPILD = math.log(11.0)
LOG_HR_PER_YEAR = 0.03
LOG_HR_PER_GRADE = 0.25  # per step weak -> moderate -> strong
MEAN_AGE = 53.0

# --- who is who (STUDY.md: 26 tofacitinib, 35 tacrolimus) ----------------------------------------------------------
#: Days from the ILD diagnosis to the start of the index study drug (fewest, most).
INDEX_DELAY_DAYS = (2, 15)
#: Tofacitinib share at the start and at the end of the enrolment window (its use grew over the period).
TOFACITINIB_SHARE = (0.28, 0.58)
RPILD_SHARE = {True: 13 / 26, False: 22 / 35}  # by tofacitinib (True) or tacrolimus (False)
#: Anti-MDA5 line-blot grade (weak, moderate, strong) by group: tofacitinib 16/6/4, tacrolimus 9/9/17.
GRADE_SHARE = {True: np.array([16, 6, 4]) / 26, False: np.array([9, 9, 17]) / 35}
GRADES = np.array(["", "weak", "moderate", "strong"], dtype=object)
#: Sites judging RPILD by worsening within 3 months (the others: within 1 month).
THREE_MONTH_SITES = 0.25
LOST_TO_FOLLOW_UP = 0.06

# Proportions of the demo cohort (fixtures/demo) where it has them.
FEMALE = 0.61
SMOKING = {True: (0.35, 0.45, 0.20), False: (0.62, 0.28, 0.10)}  # never, former, current; by male
FEATURES = {
    "gottron": 0.70,
    "heliotrope_rash": 0.46,
    "mechanics_hands": 0.46,
    "skin_ulcers": 0.36,
    "fever": 0.52,
    "arthritis": 0.36,
    "muscle_weakness": 0.30,
}
#: Share of empty cells where registries leave some (optional fields; PAT-015 warns of missing smoking).
MISSING = {"smoking": 0.02, "feature": 0.04, "dm_diagnosis_date": 0.02, "hrct_pattern": 0.03}

#: Baseline labs: analyte, typical value, log-scale spread, factor in RPILD, decimals, share of patients measured.
LABS = (
    (Analyte.FERRITIN, 900, 0.6, 1.6, 0, 0.98),
    (Analyte.LDH, 330, 0.3, 1.6, 0, 0.98),
    (Analyte.CRP, 8, 0.8, 1.6, 1, 0.97),
    (Analyte.ESR, 30, 0.5, 1.2, 0, 0.70),
    (Analyte.KL6, 800, 0.5, 1.6, 0, 0.75),
    (Analyte.LYMPHOCYTES, 0.7, 0.4, 1 / 1.6, 2, 0.99),
    (Analyte.CK, 150, 0.9, 1.0, 0, 0.95),
    (Analyte.ALT, 45, 0.5, 1.0, 0, 0.98),
    (Analyte.AST, 55, 0.5, 1.0, 0, 0.98),
    (Analyte.ALBUMIN, 33, 0.12, 0.95, 1, 0.97),
    (Analyte.CREATININE, 60, 0.2, 1.0, 0, 0.97),
    (Analyte.PAO2, 75, 0.15, 1 / 1.25, 0, 0.85),
)
FIO2_ON_OXYGEN = np.array([0.29, 0.33, 0.37, 0.41, 0.5, 0.6, 0.8, 1.0])

#: Adverse-event terms: weight among tofacitinib and tacrolimus patients, and the course they are attributed to.
AE_TERMS = {
    "bacterial_infection": (0.22, 0.22, "study"),
    "cmv_reactivation": (0.15, 0.13, "study"),
    "herpes_zoster": (0.12, 0.05, "study"),
    "fungal_infection": (0.06, 0.06, "study"),
    "pjp": (0.04, 0.04, "study"),
    "hepatotoxicity": (0.08, 0.06, "study"),
    "hyperglycaemia": (0.10, 0.12, "glucocorticoid"),
    "cytopenia": (0.08, 0.05, "study"),
    "nephrotoxicity": (0.01, 0.10, "study"),
    "hypertension": (0.02, 0.06, "study"),
    "gastrointestinal": (0.07, 0.05, "study"),
    "neurotoxicity": (0.0, 0.03, "study"),
    "thrombosis": (0.02, 0.01, "study"),
    "pneumomediastinum": (0.03, 0.03, ""),
}
#: Events that stop the study drug, by group.
STOPPING_TERMS = {
    True: ("herpes_zoster", "cmv_reactivation", "bacterial_infection", "cytopenia", "hepatotoxicity"),
    False: ("nephrotoxicity", "cmv_reactivation", "bacterial_infection", "neurotoxicity", "hyperglycaemia"),
}
#: Organism or site, where a record often names one (an empty string: not given).
TERM_DETAILS = {
    "bacterial_infection": ("Klebsiella pneumoniae", "Pseudomonas aeruginosa", "Staphylococcus aureus", "", ""),
    "fungal_infection": ("Aspergillus fumigatus", "Candida albicans", ""),
    "herpes_zoster": ("thoracic dermatome", "lumbar dermatome", ""),
}
#: Causes of death and their shares, with RPILD (True) and without.
DEATH_CAUSES = {
    True: {
        "respiratory_failure_ild": 0.75,
        "infection": 0.15,
        "pneumomediastinum": 0.06,
        "other": 0.02,
        "unknown": 0.02,
    },
    False: {
        "respiratory_failure_ild": 0.55,
        "infection": 0.25,
        "cardiovascular": 0.06,
        "malignancy": 0.06,
        "other": 0.04,
        "unknown": 0.04,
    },
}
#: Steroid-sparing agents: share, doses per administration, unit, frequency, course length in days (None: runs on).
STEROID_SPARING = {
    "cyclophosphamide": (0.30, ("500", "600", "750"), "mg/m2", "monthly", (30, 180)),
    "ivig": (0.35, ("0.4",), "g/kg", "daily", (4, 4)),
    "mycophenolate": (0.25, ("0.5", "0.75", "1"), "g", "bid", None),
    "rituximab": (0.10, ("600", "1000"), "mg", "once", (0, 0)),
}
FATAL_INFECTIONS = (("bacterial_infection", "fungal_infection", "pjp", "cmv_reactivation"), (0.5, 0.2, 0.15, 0.15))

#: Random streams, one per part, so that changing how one sheet is drawn leaves the others as they were.
STREAMS = (
    "sites",
    "patients",
    "survival",
    "course",
    "antibodies",
    "labs",
    "pfts",
    "hrct",
    "treatments",
    "events",
    "follow_up",
)


@dataclass
class Synthetic:
    """A synthetic registry: every sheet as text cells, in the column order of :data:`registry.sheets.SHEETS`."""

    patients: int
    seed: int
    sites: tuple[str, ...]
    sheets: dict[str, pd.DataFrame]
    enrolment: tuple[date, date]
    follow_up_end: date
    rows: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.rows = {name: len(frame) for name, frame in self.sheets.items()}


def default_sites(patients: int) -> int:
    """One site per 2,000 patients, at least one."""
    return max(1, patients // PATIENTS_PER_SITE)


def site_codes(sites: int) -> tuple[str, ...]:
    width = max(2, len(str(sites)))
    return tuple(f"{SITE_PREFIX}{k:0{width}d}" for k in range(1, sites + 1))


# --- cells: numpy arrays to the text a person would type ------------------------------------------------------------


def _iso(days: np.ndarray) -> np.ndarray:
    """ISO dates (YYYY-MM-DD); NaT as an empty cell."""
    text = np.full(len(days), "", dtype=object)
    present = ~np.isnat(days)
    distinct, position = np.unique(days[present], return_inverse=True)  # a few thousand days: format each once
    text[present] = np.datetime_as_string(distinct, unit="D").astype(object)[position]
    return text


def _number(values: np.ndarray, decimals: int) -> np.ndarray:
    """Numbers rounded to ``decimals``, whole ones without ``.0`` (as the export writes them); NaN empty."""
    rounded = np.round(np.asarray(values, dtype=float), decimals)
    text = np.full(len(rounded), "", dtype=object)
    present = ~np.isnan(rounded)
    distinct, position = np.unique(rounded[present], return_inverse=True)
    shown = distinct.astype(str).astype(object)
    whole = distinct == np.trunc(distinct)
    shown[whole] = distinct[whole].astype(np.int64).astype(str)
    text[present] = shown[position]
    return text


def _yes_no(flags: np.ndarray, missing: np.ndarray | None = None) -> np.ndarray:
    text = np.where(flags, "yes", "no").astype(object)
    if missing is not None:
        text[missing] = ""
    return text


def _codes(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=object)


def _frame(sheet: str, order: Sequence[np.ndarray], cells: dict[str, np.ndarray]) -> pd.DataFrame:
    """A sheet's cells in the column order of SHEETS, rows sorted by ``order`` (most significant key first)."""
    columns = [c.name for c in SHEETS_BY_NAME[sheet].columns]
    unknown = set(cells) - set(columns)
    if unknown:
        raise KeyError(f"{sheet}: no columns {sorted(unknown)}")
    rows = np.lexsort(tuple(reversed([np.asarray(key) for key in order]))) if order else slice(None)
    size = len(next(iter(cells.values())))
    empty = np.full(size, "", dtype=object)
    return pd.DataFrame({name: cells.get(name, empty)[rows] for name in columns})


def _choice(rng: np.random.Generator, options: Sequence[object], p: Sequence[float], size: int) -> np.ndarray:
    return np.asarray(options, dtype=object)[rng.choice(len(options), size=size, p=np.asarray(p) / np.sum(p))]


def _between(rng: np.random.Generator, size: int, low: np.ndarray | int, high: np.ndarray | int) -> np.ndarray:
    """``size`` whole numbers drawn uniformly from ``low`` to ``high`` inclusive (``high`` below ``low``: ``low``)."""
    low = np.asarray(low, dtype=np.int64)
    high = np.maximum(np.asarray(high, dtype=np.int64), low)
    return rng.integers(low, high + 1, size=size)


def _days(later: np.ndarray, earlier: np.ndarray) -> np.ndarray:
    return (later - earlier).astype(np.int64)


# --- the patients: who they are, when things happened, how long they lived ------------------------------------------


@dataclass
class _Cohort:
    """One entry per patient, in study_id order; dates as ``datetime64[D]`` (NaT: none)."""

    study_id: np.ndarray
    site: np.ndarray  # site number, 0-based
    site_code: np.ndarray
    male: np.ndarray
    tofacitinib: np.ndarray  # the study drug: tofacitinib (True) or tacrolimus (False)
    rpild: np.ndarray
    grade: np.ndarray  # anti-MDA5 line-blot grade, 1 weak .. 3 strong
    ild: np.ndarray
    index: np.ndarray  # study-drug start
    age_days: np.ndarray  # at the index date
    exit: np.ndarray  # death or last contact
    dead: np.ndarray
    lost: np.ndarray

    def __len__(self) -> int:
        return len(self.study_id)

    @property
    def follow_days(self) -> np.ndarray:
        return _days(self.exit, self.index)


def _cohort(
    n: int, sites: int, streams: dict[str, np.random.Generator], enrolment: tuple[date, date], end: date
) -> _Cohort:
    rng = streams["sites"]
    weights = rng.dirichlet(np.full(sites, 4.0))
    site = np.concatenate([np.arange(min(sites, n)), rng.choice(sites, size=max(0, n - sites), p=weights)])
    start, last = np.datetime64(enrolment[0], "D"), np.datetime64(enrolment[1], "D")
    ild = start + _between(rng, n, 0, _days(last, start) - INDEX_DELAY_DAYS[1])  # the index course inside it too
    order = np.lexsort((ild, site))  # study_ids numbered per site in order of ILD diagnosis
    site, ild = site[order], ild[order]
    serial = np.arange(n) - np.searchsorted(site, site) + 1
    codes = np.asarray(site_codes(sites), dtype=object)
    width = max(6, len(str(int(serial.max()))))
    study_id = codes[site] + "-" + pd.Series(serial).astype(str).str.zfill(width).to_numpy(dtype=object)

    rng = streams["patients"]
    period = _days(ild, start) / max(1, _days(last, start))
    share = TOFACITINIB_SHARE[0] + (TOFACITINIB_SHARE[1] - TOFACITINIB_SHARE[0]) * period
    tofacitinib = rng.random(n) < share
    rpild = rng.random(n) < np.where(tofacitinib, RPILD_SHARE[True], RPILD_SHARE[False])
    u = rng.random(n)
    grade = (
        np.where(
            tofacitinib,
            np.searchsorted(np.cumsum(GRADE_SHARE[True]), u),
            np.searchsorted(np.cumsum(GRADE_SHARE[False]), u),
        )
        + 1
    )
    grade = np.minimum(grade, 3)
    male = rng.random(n) >= FEMALE
    index = ild + _between(rng, n, *INDEX_DELAY_DAYS)
    age_days = np.round(np.clip(rng.normal(MEAN_AGE, 12, n), 20, 84) * 365.25).astype(np.int64)

    rng = streams["survival"]
    linear = (
        LOG_HR_TOFACITINIB * tofacitinib
        + LOG_HR_RPILD * rpild
        + LOG_HR_PER_YEAR * (age_days / 365.25 - MEAN_AGE)
        + LOG_HR_PER_GRADE * (grade - 1)
    )
    hazard = rng.exponential(1.0, n) / (BASE_HAZARD * np.exp(linear))
    death_day = np.ceil(183 * np.minimum(hazard, 1e6) ** (1 / SHAPE))  # days after the index date
    closing = _days(np.datetime64(end, "D"), index) - _between(rng, n, 0, 60)  # the last visit before follow-up ends
    lost = rng.random(n) < LOST_TO_FOLLOW_UP
    censor_day = np.where(lost, _between(rng, n, 30, closing), closing)
    dead = death_day <= censor_day
    exit_day = np.where(dead, death_day, censor_day).astype(np.int64)
    return _Cohort(
        study_id,
        site,
        codes[site],
        male,
        tofacitinib,
        rpild,
        grade,
        ild,
        index,
        age_days,
        index + exit_day,
        dead,
        lost & ~dead,
    )


@dataclass
class _Course:
    """The study-drug course of each patient: its end (NaT: running), why it ended, and the onset of the adverse
    event that stopped it (NaT: none). Drawn first, because labs, treatments and adverse events all depend on it."""

    stop: np.ndarray
    reason: np.ndarray
    stopping_event: np.ndarray


def _study_course(cohort: _Cohort, rng: np.random.Generator) -> _Course:
    """When and why the study drug stopped: an adverse event (tofacitinib more often), death, remission, cost."""
    n, days = len(cohort), cohort.follow_days
    eligible = days >= 30
    stopped_for_event = eligible & (rng.random(n) < np.where(cohort.tofacitinib, 0.28, 0.18))
    stop_day = _between(rng, n, 14, np.minimum(days - 1, 270))
    other = ~stopped_for_event & (days >= 90) & (rng.random(n) < 0.10)
    other_reason = _choice(rng, ["remission", "cost", "patient_choice"], [0.6, 0.25, 0.15], n)
    other_day = _between(rng, n, 60, days - 14)
    stop = np.full(n, np.datetime64("NaT"), dtype="datetime64[D]")
    reason = np.full(n, "", dtype=object)
    stop[cohort.dead], reason[cohort.dead] = cohort.exit[cohort.dead], "death"
    stop[other], reason[other] = (cohort.index + other_day)[other], other_reason[other]
    stop[stopped_for_event], reason[stopped_for_event] = (cohort.index + stop_day)[stopped_for_event], "adverse_event"
    event = np.full(n, np.datetime64("NaT"), dtype="datetime64[D]")
    event[stopped_for_event] = (cohort.index + stop_day - _between(rng, n, 0, 7))[stopped_for_event]
    return _Course(stop, reason, event)


def _unique_patients(frame: pd.DataFrame, birth: np.ndarray) -> np.ndarray:
    """Birth dates moved a day where two patients of a site share sex, birth and DM diagnosis date (PAT-018)."""
    key = frame.assign(birth=birth)
    while True:
        twins = key.duplicated(["site", "male", "birth", "dm"]).to_numpy() & key["dm"].notna().to_numpy()
        if not twins.any():
            return key["birth"].to_numpy()
        key.loc[twins, "birth"] = key.loc[twins, "birth"] - np.timedelta64(1, "D")


def _patients(cohort: _Cohort, rng: np.random.Generator, definitions: np.ndarray) -> pd.DataFrame:
    n = len(cohort)
    onset = cohort.ild - _between(rng, n, 5, 40)
    dm_gap = np.where(rng.random(n) < 0.7, _between(rng, n, 0, 30), _between(rng, n, 31, 365))
    dm = cohort.ild - dm_gap
    dm[rng.random(n) < MISSING["dm_diagnosis_date"]] = np.datetime64("NaT")
    definition = definitions[cohort.site]
    limit = pd.Series(definition).map({d.value: days for d, days in RPILD_DAYS.items()}).to_numpy(dtype=np.int64)
    # RPILD: worsening within the definition's limit; otherwise some worsen later, which must not look rapid
    rapid = onset + _between(rng, n, 5, limit - 4)
    slow = onset + _between(rng, n, limit + 1, limit + 400)
    worsening = np.where(cohort.rpild, np.minimum(rapid, cohort.exit), slow)
    worsening[~cohort.rpild & ((rng.random(n) >= 0.35) | (slow > cohort.exit))] = np.datetime64("NaT")
    birth = cohort.index - cohort.age_days
    birth = _unique_patients(pd.DataFrame({"site": cohort.site, "male": cohort.male, "dm": dm}), birth)
    male_smoking = _choice(rng, ["never", "former", "current"], SMOKING[True], n)
    female_smoking = _choice(rng, ["never", "former", "current"], SMOKING[False], n)
    smoking = np.where(cohort.male, male_smoking, female_smoking)
    smoking[rng.random(n) < MISSING["smoking"]] = ""
    cells = {
        "study_id": cohort.study_id,
        "site": cohort.site_code,
        "sex": np.where(cohort.male, "male", "female").astype(object),
        "birth_date": _iso(birth),
        "smoking": _codes(smoking),
        "dm_diagnosis_date": _iso(dm),
        "ild_diagnosis_date": _iso(cohort.ild),
        "resp_symptom_onset_date": _iso(onset),
        "ild_worsening_date": _iso(worsening),
        "rpild": _yes_no(cohort.rpild),
        "rpild_definition": _codes(definition),
    }
    for name, share in FEATURES.items():
        cells[name] = _yes_no(rng.random(n) < share, rng.random(n) < MISSING["feature"])
    return _frame("patients", [], cells)


# --- records -------------------------------------------------------------------------------------------------------


def _antibody_tests(cohort: _Cohort, rng: np.random.Generator) -> pd.DataFrame:
    """Anti-MDA5 by line blot (graded) and/or ELISA (index, cut-off 32); anti-Ro52 by line blot."""
    n = len(cohort)
    sampled = cohort.ild - _between(rng, n, 0, 7)
    elisa_only = rng.random(n) < 0.04
    elisa = elisa_only | (rng.random(n) < 0.30)
    has_ro52 = rng.random(n) < 0.95
    # ELISA index by grade (MESACUP: positive >= 32, values into the thousands with dilution)
    median = np.array([0.0, 60, 140, 420])[cohort.grade]
    value = np.maximum(np.round(median * np.exp(rng.normal(0, 0.35, n))), ANTI_MDA5_ELISA_POSITIVE_INDEX + 1)
    ro52_grade = _choice(rng, ["negative", "weak", "moderate", "strong"], [0.35, 0.15, 0.2, 0.3], n)
    patient = np.arange(n)
    blot, by_elisa, ro52 = patient[~elisa_only], patient[elisa], patient[has_ro52]
    p = np.concatenate([blot, by_elisa, ro52])
    kind = np.repeat([0, 1, 2], [len(blot), len(by_elisa), len(ro52)])  # anti-MDA5 line blot, ELISA; anti-Ro52
    is_elisa = kind == 1
    cells = {
        "study_id": cohort.study_id[p],
        "antibody": np.where(kind == 2, "anti_ro52", "anti_mda5").astype(object),
        "assay": np.where(is_elisa, "elisa", "line_blot").astype(object),
        "sample_date": _iso(sampled[p]),
        "grade": np.concatenate([GRADES[cohort.grade[blot]], np.full(len(by_elisa), "", object), ro52_grade[ro52]]),
        "value": np.where(is_elisa, _number(value[p], 0), "").astype(object),
        "unit": np.where(is_elisa, "index", "").astype(object),
        "cutoff": np.where(is_elisa, _number(np.full(len(p), ANTI_MDA5_ELISA_POSITIVE_INDEX), 0), "").astype(object),
    }
    return _frame("antibody_tests", [p, kind], cells)


def _labs(cohort: _Cohort, course: _Course, rng: np.random.Generator) -> pd.DataFrame:
    """Baseline labs on one day before the study drug, in canonical units; tacrolimus troughs after it."""
    n = len(cohort)
    day = cohort.index - _between(rng, n, 0, 2)
    parts: list[tuple[Analyte, np.ndarray, np.ndarray, np.ndarray]] = []  # analyte, patient mask, day, value text
    for analyte, typical, spread, rpild_factor, decimals, measured in LABS:
        bounds = ANALYTE_RANGES[analyte]
        centre = typical * np.where(cohort.rpild, rpild_factor, 1.0)
        values = np.round(centre * np.exp(rng.normal(0, spread, n)), decimals)
        values = np.clip(values, max(bounds.low, 10.0**-decimals), bounds.high)
        taken = rng.random(n) < measured
        parts.append((analyte, taken, day, _number(values, decimals)))
        if analyte is Analyte.PAO2:  # FiO2 with every blood gas: room air, or oxygen (more often in RPILD)
            oxygen = rng.random(n) < np.where(cohort.rpild, 0.6, 0.1)
            fio2 = np.where(oxygen, FIO2_ON_OXYGEN[rng.integers(0, len(FIO2_ON_OXYGEN), n)], 0.21)
            parts.append((Analyte.FIO2, taken, day, _number(fio2, 2)))
    running_until = np.where(np.isnat(course.stop), cohort.exit, np.minimum(course.stop, cohort.exit))
    for low, high, share in ((7, 14, 0.9), (28, 42, 0.8)):  # troughs at two visits while on tacrolimus
        when = cohort.index + _between(rng, n, low, high)
        taken = ~cohort.tofacitinib & (when <= running_until) & (rng.random(n) < share)
        values = np.clip(np.round(7 * np.exp(rng.normal(0, 0.35, n)), 1), 0.5, 40)
        parts.append((Analyte.TACROLIMUS_TROUGH, taken, when, _number(values, 1)))
    p = np.concatenate([np.flatnonzero(taken) for _, taken, _, _ in parts])
    sampled = np.concatenate([when[taken] for _, taken, when, _ in parts])
    cells = {
        "study_id": cohort.study_id[p],
        "analyte": np.concatenate([np.full(taken.sum(), analyte.value, object) for analyte, taken, _, _ in parts]),
        "sample_date": _iso(sampled),
        "value": np.concatenate([text[taken] for _, taken, _, text in parts]),
        "unit": np.concatenate([np.full(taken.sum(), ANALYTE_RANGES[a].unit, object) for a, taken, _, _ in parts]),
    }
    rank = np.concatenate([np.full(taken.sum(), k) for k, (_, taken, _, _) in enumerate(parts)])
    return _frame("labs", [p, sampled, rank], cells)


def _predicted_fvc(cohort: _Cohort) -> np.ndarray:
    """A rough predicted FVC in litres by sex and age, to turn % predicted into litres."""
    age = cohort.age_days / 365.25
    return np.where(cohort.male, 4.6 - 0.025 * (age - 40), 3.4 - 0.02 * (age - 40))


def _pfts(cohort: _Cohort, rng: np.random.Generator) -> pd.DataFrame:
    """A baseline PFT (or why it was not done: often in RPILD), and a 6-month one for some survivors."""
    n = len(cohort)
    baseline = cohort.index - _between(rng, n, 0, 5)
    not_done = rng.random(n) < np.where(cohort.rpild, 0.55, 0.04)
    reason = np.where(
        cohort.rpild,
        _choice(rng, ["too_ill", "oxygen_or_ventilation", "infection_control"], [0.55, 0.4, 0.05], n),
        _choice(rng, ["refused", "not_available", "infection_control"], [0.35, 0.35, 0.3], n),
    )
    later = cohort.index + _between(rng, n, 160, 200)
    again = ~not_done & (later <= cohort.exit) & (rng.random(n) < 0.5)
    patient = np.concatenate([np.arange(n), np.flatnonzero(again)])
    visit = np.concatenate([np.zeros(n, int), np.ones(again.sum(), int)])
    count = len(patient)
    fvc = np.clip(rng.normal(np.where(cohort.rpild, 62, 72), 12)[patient] + 5 * visit, 25, 130)
    dlco = np.clip(rng.normal(np.where(cohort.rpild, 48, 56), 12)[patient] + 4 * visit, 15, 120)
    tlc = np.clip(rng.normal(np.where(cohort.rpild, 64, 70), 11)[patient] + 3 * visit, 30, 125)
    litres = np.clip(_predicted_fvc(cohort)[patient] * fvc / 100, PFT_RANGES["fvc_l"].low + 0.2, 7.0)
    done = ~(not_done[patient] & (visit == 0))
    dlco[(rng.random(count) < 0.10) | ~done] = np.nan
    tlc[(rng.random(count) < 0.15) | ~done] = np.nan
    fvc[~done], litres[~done] = np.nan, np.nan
    cells = {
        "study_id": cohort.study_id[patient],
        "test_date": _iso(np.where(visit == 0, baseline[patient], later[patient])),
        "fvc_l": _number(litres, 2),
        "fvc_pct_pred": _number(fvc, 0),
        "dlco_pct_pred": _number(dlco, 0),
        "tlc_pct_pred": _number(tlc, 0),
        "not_done_reason": np.where(done, "", reason[patient]).astype(object),
    }
    return _frame("pfts", [patient, visit], cells)


def _hrct(cohort: _Cohort, rng: np.random.Generator) -> pd.DataFrame:
    """A baseline HRCT at ILD diagnosis, and a 3-month one for some survivors (less extensive)."""
    n = len(cohort)
    later = cohort.index + _between(rng, n, 80, 100)
    again = (later <= cohort.exit) & (rng.random(n) < 0.5)
    patient = np.concatenate([np.arange(n), np.flatnonzero(again)])
    visit = np.concatenate([np.zeros(n, int), np.ones(again.sum(), int)])
    count, rpild = len(patient), cohort.rpild[patient]
    scan = np.where(visit == 0, (cohort.ild - _between(rng, n, 0, 3))[patient], later[patient])
    pattern = np.where(
        rpild,
        _choice(rng, ["op", "nsip_op", "dad", "unclassifiable"], [0.35, 0.35, 0.2, 0.1], count),
        _choice(rng, ["nsip", "op", "nsip_op", "uip", "unclassifiable"], [0.35, 0.3, 0.3, 0.03, 0.02], count),
    )
    pattern[rng.random(count) < MISSING["hrct_pattern"]] = ""
    shrink = np.where(visit == 1, 0.6, 1.0)[:, None]
    lower = np.array([0.8, 1.0, 1.25, 0.8, 1.0, 1.25])  # lower zones more involved
    ggo = np.clip(rng.normal(np.where(rpild, 35, 16)[:, None] * lower, 10, (count, 6)) * shrink, 0, 95).round()
    consolidation = np.clip(rng.normal(np.where(rpild, 15, 5)[:, None] * lower, 6, (count, 6)) * shrink, 0, 90).round()
    cells = {"study_id": cohort.study_id[patient], "scan_date": _iso(scan), "pattern": _codes(pattern)}
    names = [c.name for c in SHEETS_BY_NAME["hrct"].columns if c.name.endswith("_pct")]
    for column, values in zip(names, [*ggo.T, *consolidation.T], strict=True):
        cells[column] = _number(values, 0)
    # the site's total score: ground glass counted once and consolidation twice, over the six zones
    cells["total_score"] = _number(ggo.sum(axis=1) + 2 * consolidation.sum(axis=1), 0)
    return _frame("hrct", [patient, visit], cells)


@dataclass
class _Courses:
    """Treatment rows under construction (patient, drug, dates as datetime64[D], dose text, codes)."""

    parts: list[dict[str, np.ndarray]] = field(default_factory=list)

    def add(
        self,
        rows: np.ndarray,
        drug: str | np.ndarray,
        start: np.ndarray,
        end: np.ndarray,
        dose: str | np.ndarray,
        unit: str | np.ndarray,
        frequency: str | np.ndarray,
        reason: np.ndarray,
    ) -> None:
        """The courses of the patients in ``rows`` (a mask); a str is the same for every one."""
        size = int(rows.sum())

        def each(value: str | np.ndarray) -> np.ndarray:
            return np.full(size, value, dtype=object) if isinstance(value, str) else np.asarray(value, object)[rows]

        self.parts.append(
            {
                "patient": np.flatnonzero(rows),
                "drug": each(drug),
                "start": start[rows],
                "end": end[rows],
                "dose": each(dose),
                "unit": each(unit),
                "frequency": each(frequency),
                "reason": each(reason),
            }
        )


def _ended(cohort: _Cohort, start: np.ndarray, end: np.ndarray, done: str) -> tuple[np.ndarray, ...]:
    """A course's start, end and stop reason within the patient's follow-up.

    It starts by the death or last contact at the latest. A course still running then
    (no end, or an end beyond) ends at death ("death"), or runs on past the last contact
    of a living patient (no end); any other ended ``done``.
    """
    nat = np.datetime64("NaT")
    start = np.minimum(start, cohort.exit)
    runs_on = np.isnat(end) | (end >= cohort.exit)
    end = np.where(runs_on, np.where(cohort.dead, cohort.exit, nat), np.maximum(end, start))
    reason = np.where(runs_on, np.where(cohort.dead, "death", ""), done).astype(object)
    return start, end, reason


def _treatments(
    cohort: _Cohort, course: _Course, rng: np.random.Generator
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Study drug, glucocorticoids, pulses, steroid-sparing agents, prophylaxis, plasma exchange.

    Also returns each patient's glucocorticoid start and end, to which some adverse events are attributed.
    """
    n, days, everyone = len(cohort), cohort.follow_days, np.ones(len(cohort), bool)
    nat = np.full(n, np.datetime64("NaT"), dtype="datetime64[D]")
    courses = _Courses()
    dose = np.where(
        cohort.tofacitinib,
        _choice(rng, ["2.5", "5", "10"], [0.05, 0.85, 0.10], n),
        _choice(rng, ["0.5", "1", "1.5", "2", "3"], [0.15, 0.4, 0.25, 0.15, 0.05], n),
    )
    drug = np.where(cohort.tofacitinib, "tofacitinib", "tacrolimus")
    courses.add(everyone, drug, cohort.index, course.stop, dose, "mg", "bid", course.reason)

    start = np.maximum(cohort.ild, cohort.index - _between(rng, n, 0, 3))
    tapered = (days > 400) & (rng.random(n) < 0.15)
    end = np.where(tapered, cohort.index + _between(rng, n, 365, days - 1), nat)
    gc_start, gc_end, reason = _ended(cohort, start, end, "remission")
    gc_dose = _choice(rng, ["30", "40", "50", "60", "80"], [0.1, 0.2, 0.2, 0.35, 0.15], n)
    courses.add(everyone, "glucocorticoid", gc_start, gc_end, gc_dose, "mg", "daily", reason)

    pulse = rng.random(n) < np.where(cohort.rpild, 0.75, 0.15)
    start = np.maximum(cohort.ild, cohort.index - _between(rng, n, 1, 6))
    start, end, reason = _ended(cohort, start, start + 2, "completed")
    pulse_dose = _choice(rng, ["250", "500", "1000"], [0.1, 0.6, 0.3], n)
    courses.add(pulse, "methylprednisolone_pulse", start, end, pulse_dose, "mg", "daily", reason)

    sparing = rng.random(n) < np.where(cohort.rpild, 0.55, 0.30)
    agent = _choice(rng, list(STEROID_SPARING), [share for share, *_ in STEROID_SPARING.values()], n)
    start = np.maximum(cohort.ild, cohort.index + _between(rng, n, -10, 10))
    end, dose, unit, frequency = nat.copy(), *(np.full(n, "", dtype=object) for _ in range(3))
    for name, (_, doses, dose_unit, how_often, length) in STEROID_SPARING.items():
        given = agent == name
        dose[given] = _choice(rng, doses, [1] * len(doses), int(given.sum()))
        unit[given], frequency[given] = dose_unit, how_often
        if length is not None:
            end[given] = (start + _between(rng, n, *length))[given]
    start, end, reason = _ended(cohort, start, end, "completed")
    courses.add(sparing, agent, start, end, dose, unit, frequency, reason)

    prophylaxis = rng.random(n) < 0.9
    start = cohort.index + _between(rng, n, 0, 3)
    finished = rng.random(n) < 0.4
    start, end, reason = _ended(
        cohort, start, np.where(finished, cohort.index + _between(rng, n, 150, 240), nat), "completed"
    )
    thrice = rng.random(n) < 0.3
    dose, frequency = np.where(thrice, "960", "480"), np.where(thrice, "thrice_weekly", "daily")
    courses.add(prophylaxis, "tmp_smx_prophylaxis", start, end, dose, "mg", frequency, reason)

    exchange = cohort.rpild & (rng.random(n) < 0.04)
    start = cohort.index + _between(rng, n, 0, 7)
    start, end, reason = _ended(cohort, start, start + _between(rng, n, 4, 10), "completed")
    courses.add(exchange, "plasma_exchange", start, end, "1", "session", "thrice_weekly", reason)

    rows = {key: np.concatenate([part[key] for part in courses.parts]) for key in courses.parts[0]}
    rank = np.concatenate([np.full(len(part["patient"]), k) for k, part in enumerate(courses.parts)])
    cells = {
        "study_id": cohort.study_id[rows["patient"]],
        "drug": rows["drug"],
        "start_date": _iso(rows["start"]),
        "end_date": _iso(rows["end"]),
        "dose": rows["dose"],
        "dose_unit": rows["unit"],
        "frequency": rows["frequency"],
        "stop_reason": rows["reason"],
    }
    return _frame("treatments", [rows["patient"], rows["start"], rank], cells), gc_start, gc_end


def _attributed(onset: np.ndarray, start: np.ndarray, end: np.ndarray, window: int) -> np.ndarray:
    """Whether an event of ``onset`` lies within a course (start .. end + window; no end: running)."""
    return (onset >= start) & (np.isnat(end) | (onset <= end + window))


def _adverse_events(
    cohort: _Cohort,
    course: _Course,
    rng: np.random.Generator,
    cause: np.ndarray,
    glucocorticoid: tuple[np.ndarray, np.ndarray],
    window: int,
) -> pd.DataFrame:
    """The events that stopped the study drug, others during follow-up, and the infections some patients died of."""
    n, days = len(cohort), cohort.follow_days
    terms = list(AE_TERMS)
    # events that stopped the study drug
    stopping = np.flatnonzero(~np.isnat(course.stopping_event))
    stop_term = np.where(
        cohort.tofacitinib[stopping],
        _choice(rng, STOPPING_TERMS[True], [1] * 5, len(stopping)),
        _choice(rng, STOPPING_TERMS[False], [1] * 5, len(stopping)),
    )
    # other events: 0-3 per patient, from the study-drug start to a year on
    counts = _choice(rng, [0, 1, 2, 3], [0.38, 0.37, 0.17, 0.08], n).astype(int)
    other = np.repeat(np.arange(n), counts)
    weights = {group: np.array([AE_TERMS[t][0 if group else 1] for t in terms]) for group in (True, False)}
    other_term = np.where(
        cohort.tofacitinib[other],
        _choice(rng, terms, weights[True], len(other)),
        _choice(rng, terms, weights[False], len(other)),
    )
    other_onset = cohort.index[other] + _between(rng, len(other), 1, np.minimum(days[other], 365))
    # fatal infections and air leaks of those who died of them
    died_of = np.flatnonzero(cohort.dead)
    infection = died_of[cause[died_of] == "infection"]
    leak = died_of[cause[died_of] == "pneumomediastinum"]
    fatal = np.concatenate([infection, leak])
    fatal_term = np.concatenate(
        [_choice(rng, *FATAL_INFECTIONS, len(infection)), np.full(len(leak), "pneumomediastinum", object)]
    )
    fatal_onset = np.maximum(cohort.exit[fatal] - _between(rng, len(fatal), 0, 10), cohort.index[fatal])

    p = np.concatenate([stopping, other, fatal])
    kind = np.concatenate([np.zeros(len(stopping), int), np.ones(len(other), int), np.full(len(fatal), 2)])
    term = np.concatenate([stop_term, other_term, fatal_term]).astype(object)
    onset = np.concatenate([course.stopping_event[stopping], other_onset, fatal_onset])
    count = len(p)
    grade = np.where(kind == 2, 5, _choice(rng, [1, 2, 3, 4], [0.2, 0.45, 0.28, 0.07], count).astype(int))
    grade = np.where(kind == 0, np.maximum(grade, 2), grade)
    # attribution: the study drug or the glucocorticoid if the onset lies within its course, else none
    target = np.array([AE_TERMS[t][2] for t in term], dtype=object)
    study_drug = np.where(cohort.tofacitinib[p], "tofacitinib", "tacrolimus").astype(object)
    in_study = _attributed(onset, cohort.index[p], course.stop[p], window)
    in_steroid = _attributed(onset, glucocorticoid[0][p], glucocorticoid[1][p], window)
    attributed = np.select(
        [(target == "study") & in_study, (target == "glucocorticoid") & in_steroid], [study_drug, "glucocorticoid"], ""
    ).astype(object)
    attributed[kind == 0] = study_drug[kind == 0]
    # outcome: resolved within the follow-up, or still present at death or the last contact
    resolved = onset + _between(rng, count, 3, 45)
    recovered = (kind != 2) & (resolved <= cohort.exit[p])
    outcome = np.where(
        recovered,
        _choice(rng, ["recovered", "sequelae"], [0.9, 0.1], count),
        np.where(cohort.dead[p], "not_recovered", "recovering"),
    ).astype(object)
    outcome[kind == 2] = "fatal"
    detail = np.full(count, "", dtype=object)
    for name, options in TERM_DETAILS.items():
        chosen = term == name
        detail[chosen] = _choice(rng, options, [1] * len(options), int(chosen.sum()))
    cells = {
        "study_id": cohort.study_id[p],
        "onset_date": _iso(onset),
        "term": term,
        "term_detail": detail,
        "ctcae_grade": grade.astype(str).astype(object),
        "serious": _yes_no(grade >= 3),
        "attributed_drug": attributed,
        "led_to_discontinuation": _yes_no(kind == 0),
        "outcome": outcome,
        "resolution_date": _iso(np.where(recovered, resolved, np.datetime64("NaT"))),
    }
    frame = _frame("adverse_events", [p, onset, kind], cells)
    return frame[~frame.duplicated(["study_id", "term", "onset_date"])].reset_index(drop=True)


def _death_causes(cohort: _Cohort, rng: np.random.Generator) -> np.ndarray:
    """The cause of each death (empty for the living), by RPILD."""
    n = len(cohort)
    with_rpild, without = (
        _choice(rng, list(c), list(c.values()), n) for c in (DEATH_CAUSES[True], DEATH_CAUSES[False])
    )
    cause = np.where(cohort.rpild, with_rpild, without)
    return np.where(cohort.dead, cause, "").astype(object)


def _follow_up(cohort: _Cohort, rng: np.random.Generator, cause: np.ndarray) -> pd.DataFrame:
    n, days = len(cohort), cohort.follow_days
    transplant = ~cohort.dead & (days >= 60) & (rng.random(n) < 0.003)
    transplant_date = np.where(transplant, cohort.index + _between(rng, n, 30, days), np.datetime64("NaT"))
    cells = {
        "study_id": cohort.study_id,
        "last_contact_date": _iso(cohort.exit),
        "vital_status": np.where(cohort.dead, "dead", "alive").astype(object),
        "death_date": _iso(np.where(cohort.dead, cohort.exit, np.datetime64("NaT"))),
        "death_cause": cause,
        "lung_transplant_date": _iso(transplant_date.astype("datetime64[D]")),
        "lost_to_follow_up": _yes_no(cohort.lost),
    }
    return _frame("follow_up", [], cells)


def _streams(seed: int) -> dict[str, np.random.Generator]:
    children = np.random.SeedSequence(seed).spawn(len(STREAMS))
    return {name: np.random.default_rng(child) for name, child in zip(STREAMS, children, strict=True)}


def generate(patients: int, seed: int = 1, sites: int | None = None, *, config: Config | None = None) -> Synthetic:
    """A synthetic registry of ``patients`` patients at ``sites`` sites (default: :func:`default_sites`).

    The enrolment window and the adverse-event window come from ``config`` (default: the
    study's); follow-up ends :data:`FOLLOW_UP_DAYS` after the window closes.
    """
    if patients < 1:
        raise ValueError("patients must be at least 1")
    sites = default_sites(patients) if sites is None else sites
    if not 1 <= sites <= patients:
        raise ValueError(f"sites must be between 1 and the number of patients ({patients})")
    if seed < 0:
        raise ValueError("seed must be a whole number >= 0")
    config = config or Config()
    enrolment = (config.enrolment_start, config.enrolment_end)
    end = config.enrolment_end + timedelta(days=FOLLOW_UP_DAYS)
    streams = _streams(seed)
    cohort = _cohort(patients, sites, streams, enrolment, end)
    definitions = np.where(
        streams["sites"].random(sites) < THREE_MONTH_SITES,
        RpildDefinition.WORSENING_3_MONTHS.value,
        RpildDefinition.WORSENING_1_MONTH.value,
    ).astype(object)
    course = _study_course(cohort, streams["course"])
    treatments, gc_start, gc_end = _treatments(cohort, course, streams["treatments"])
    cause = _death_causes(cohort, streams["follow_up"])
    window = config.adverse_event_window_days
    events = _adverse_events(cohort, course, streams["events"], cause, (gc_start, gc_end), window)
    sheets = {
        "patients": _patients(cohort, streams["patients"], definitions),
        "antibody_tests": _antibody_tests(cohort, streams["antibodies"]),
        "labs": _labs(cohort, course, streams["labs"]),
        "pfts": _pfts(cohort, streams["pfts"]),
        "hrct": _hrct(cohort, streams["hrct"]),
        "treatments": treatments,
        "adverse_events": events,
        "follow_up": _follow_up(cohort, streams["follow_up"], cause),
    }
    assert list(sheets) == [sheet.name for sheet in SHEETS]
    return Synthetic(patients, seed, site_codes(sites), sheets, enrolment, end)


# --- files ---------------------------------------------------------------------------------------------------------


def notice(synthetic: Synthetic) -> str:
    """The text of ``SYNTHETIC.txt``: what the files are, how they were made, how to import them."""
    window = f"{synthetic.enrolment[0]:%Y-%m-%d} to {synthetic.enrolment[1]:%Y-%m-%d}"
    width = max(map(len, synthetic.rows))
    lines = [
        "SYNTHETIC DATA: no row describes a real person.",
        "",
        f"Made by `registry synth` (registry.synth, generator version {GENERATOR_VERSION}).",
        f"Patients: {synthetic.patients}",
        f"Seed: {synthetic.seed}",
        f"Sites: {', '.join(synthetic.sites)}",
        f"Enrolment window: {window}; follow-up ends {synthetic.follow_up_end:%Y-%m-%d}.",
        "The same patients, seed and generator version give the same files, byte for byte.",
        "",
        "Rows per sheet:",
        *(f"  {name.ljust(width)}  {count:>9,}" for name, count in synthetic.rows.items()),
        "",
        "To import: register the sites, then import the folder (or workbook):",
        *(f'  registry site add {code} "Synthetic site {code}"' for code in synthetic.sites),
        "  registry import PATH",
        "",
    ]
    return "\n".join(lines)


def _cell(kind: sa.types.TypeEngine, text: str) -> object:
    """A text cell as the value a spreadsheet cell holds (dates as dates, numbers as numbers)."""
    if text == "":
        return None
    if isinstance(kind, sa.Date):
        return date.fromisoformat(text)
    if isinstance(kind, sa.Boolean):
        return text
    if isinstance(kind, sa.Integer):
        return int(text)
    if isinstance(kind, sa.Float):
        number = float(text)
        return int(number) if number.is_integer() else number
    return text


def _write_xlsx(synthetic: Synthetic, path: Path) -> None:
    from registry.export import workbook_sheets  # the template's drop-downs, notes and dictionary sheet
    from registry.workbook import write_xlsx

    sheets = workbook_sheets(None)
    for sheet_data in sheets:
        if sheet_data.name in synthetic.sheets:
            sheet = SHEETS_BY_NAME[sheet_data.name]
            kinds = [column.source.type for column in sheet.columns]
            rows = synthetic.sheets[sheet.name].itertuples(index=False, name=None)
            sheet_data.rows = [[_cell(kind, text) for kind, text in zip(kinds, row, strict=True)] for row in rows]
    write_xlsx(path, sheets)


def write(synthetic: Synthetic, path: Path) -> list[Path]:
    """Write the registry to ``path``, a folder of CSV files (or an ``.xlsx`` workbook), and its notice.

    CSV cells follow the export's conventions: UTF-8, ``\\n`` line ends, ISO dates, yes/no,
    whole numbers without ``.0``, empty cells for missing values. A workbook's notice is
    written beside it (``NAME.SYNTHETIC.txt``). Written whole or not at all. Returns the files written.
    """
    from registry.export import is_workbook, notice_path, output
    from registry.workbook import require_xlsx_fits

    if is_workbook(path):
        require_xlsx_fits(path, synthetic.rows)  # before the cells are built: a large registry never fits
    with output(path, (NOTICE, notice(synthetic))) as data:
        if is_workbook(path):
            _write_xlsx(synthetic, data)
            written = [path]
        else:
            for name, frame in synthetic.sheets.items():
                frame.to_csv(data / f"{name}.csv", index=False, lineterminator="\n", encoding="utf-8")
            written = [path / f"{name}.csv" for name in synthetic.sheets]
    return [*written, notice_path(path, NOTICE)]


def synthesize(path: Path, patients: int, seed: int = 1, sites: int | None = None) -> Synthetic:
    """Generate a synthetic registry (:func:`generate`) and write it to ``path`` (:func:`write`)."""
    synthetic = generate(patients, seed, sites)
    write(synthetic, path)
    return synthetic
