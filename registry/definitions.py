"""The study's definitions over the typed tables, shared by the checks and the cohort.

What makes an antibody result positive and which course is a patient's index
treatment are decided here, once, so the data-quality rules judge the data by the
same definitions the analyses use.
"""

from __future__ import annotations

import pandas as pd

from registry.codes import ANTI_MDA5_ELISA_POSITIVE_INDEX, STUDY_DRUGS, Antibody, AntibodyGrade


def value_positive(tests: pd.DataFrame) -> pd.Series:
    """A quantitative result at or above its cut-off (anti-MDA5 without one: the ELISA's 32)."""
    default = tests["antibody"].eq(Antibody.ANTI_MDA5).map({True: ANTI_MDA5_ELISA_POSITIVE_INDEX, False: None})
    cutoff = tests["cutoff"].fillna(default.astype(float))
    return (tests["value"] >= cutoff).fillna(False).astype(bool)


def positive(tests: pd.DataFrame) -> pd.Series:
    """A result graded weak, moderate or strong, or a value at or above its cut-off."""
    graded = tests["grade"].isin([AntibodyGrade.WEAK, AntibodyGrade.MODERATE, AntibodyGrade.STRONG])
    return graded | value_positive(tests)


def index_treatment(treatment: pd.DataFrame) -> pd.DataFrame:
    """Per patient (index: patient_id): group = first study drug, index_date = its start.

    ``both_study_drugs`` marks patients who received both drugs; ``same_day_start``
    those who started both on the first day, whose group cannot be decided.
    """
    study = treatment[treatment["drug"].isin([d.value for d in STUDY_DRUGS])].sort_values(["patient_id", "start_date"])
    first = study.groupby("patient_id")[["drug", "start_date"]].first()
    first.columns = ["group", "index_date"]
    drugs = study.groupby("patient_id")["drug"].nunique()
    first["both_study_drugs"] = drugs.reindex(first.index) > 1
    first_day = study.groupby("patient_id")["start_date"].transform("min") == study["start_date"]
    first["same_day_start"] = study[first_day].groupby("patient_id")["drug"].nunique().reindex(first.index) > 1
    return first


def with_index(frame: pd.DataFrame, index: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The rows of ``frame`` whose patient is in ``index``, with the patient's ``columns`` of it.

    The result keeps a plain row index: for an empty result pandas would name it patient_id,
    beside the patient_id column, and every later sort or grouping by patient would fail.
    """
    return frame.merge(index[columns], left_on="patient_id", right_index=True).rename_axis(None)
