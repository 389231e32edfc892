"""The analysis table: one row per eligible patient, built from plain DataFrames.

Group is the first study drug started (tofacitinib or tacrolimus) and the index date
its start; follow-up runs from the index date to death, or is censored at last
contact or at the data cut-off, whichever is first. Patients who cannot be analysed
are counted with the reason, in the order the reasons are tested (the numbers of a
flow diagram). The ORM is never touched: tables arrive as DataFrames.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from registry.codes import AdverseEventTerm, Analyte, AntibodyGrade
from registry.config import Config
from registry.definitions import index_treatment, positive, with_index
from registry.tables import DAY, NEVER, coded

#: The baseline PFT and HRCT fields the analysis table takes (prefixed pft_ and hrct_ there).
PFT_FIELDS = ("fvc_pct_pred", "dlco_pct_pred", "tlc_pct_pred")
HRCT_FIELDS = ("pattern", "total_score")
#: The columns the cohort reads, by table: an analysis loads only these (registry.tables.load_tables), a little over
#: half the cells of a registry (reading 20,000 synthetic patients took 1.1 s, 0.75 s with these).
COLUMNS: dict[str, tuple[str, ...]] = {
    "patient": ("id", "study_id", "sex", "birth_date", "smoking", "ild_diagnosis_date", "rpild", "missing_codes"),
    "antibody_test": ("patient_id", "antibody", "sample_date", "grade", "value", "cutoff"),
    "lab_result": ("patient_id", "analyte", "sample_date", "value"),
    "pft": ("patient_id", "test_date", *PFT_FIELDS, "not_done_reason", "missing_codes"),
    "hrct": ("patient_id", "scan_date", *HRCT_FIELDS, "missing_codes"),
    "treatment": ("patient_id", "drug", "start_date", "end_date", "stop_reason"),
    "adverse_event": (
        "patient_id",
        "onset_date",
        "term",
        "ctcae_grade",
        "serious",
        "attributed_drug",
        "led_to_discontinuation",
    ),
    "follow_up": ("patient_id", "last_contact_date", "vital_status", "death_date", "lung_transplant_date"),
}
#: Ordinal anti-MDA5 grade used as the titre covariate (weak=1, moderate=2, strong=3).
GRADE_ORDER = {AntibodyGrade.NEGATIVE: 0, AntibodyGrade.WEAK: 1, AntibodyGrade.MODERATE: 2, AntibodyGrade.STRONG: 3}


@dataclass
class Cohort:
    table: pd.DataFrame  # one row per analysed patient, indexed by study_id
    excluded: pd.DataFrame  # study_id, reason
    registered: int  # patients in the registry
    #: Per patient (as ``table``) and variable taken from a field that may hold a missing-data code: whether the
    #: value is missing because a code was recorded ("unknown", "not done", ...) rather than left blank.
    coded: pd.DataFrame = field(default_factory=pd.DataFrame)

    def exclusion_counts(self) -> dict[str, int]:
        return self.excluded["reason"].value_counts(sort=False).to_dict()

    def why_empty(self) -> str:
        """Why no patient can be analysed, in words (for an empty cohort)."""
        if not self.registered:
            return "the registry holds no patients"
        counts = self.exclusion_counts()
        return "every patient was excluded: " + ", ".join(f"{reason} {n}" for reason, n in counts.items())

    def why_not_analysable(self) -> str | None:
        """Why the analyses cannot run, as a sentence (no patient, or only one of the two groups they compare); None
        when they can. A cut of signed patients early in a study may hold one group only."""
        if self.table.empty:
            return f"no patient can be analysed: {self.why_empty()}"
        groups = self.table["group"].value_counts().sort_index()
        if len(groups) < 2:
            found = ", ".join(f"{group} {n}" for group, n in groups.items())
            return (
                f"nothing can be compared: every analysed patient is in one group ({found}), and the analyses "
                "compare tofacitinib with tacrolimus"
            )
        return None


def _anti_mda5(antibody: pd.DataFrame, index: pd.DataFrame) -> pd.DataFrame:
    """Positivity and the line-blot grade of the anti-MDA5 test nearest the index date."""
    tests = with_index(antibody[antibody["antibody"] == "anti_mda5"], index, ["index_date"])
    tests["positive"] = positive(tests)
    tests["distance"] = (tests["sample_date"] - tests["index_date"]).abs()
    graded = tests[tests["grade"].notna()].sort_values(["patient_id", "distance", "sample_date"])
    grade = graded.groupby("patient_id")["grade"].first()
    result = pd.DataFrame({"anti_mda5_positive": tests.groupby("patient_id")["positive"].any()})
    result["anti_mda5_grade"] = grade.map({g.value: n for g, n in GRADE_ORDER.items()})
    return result


def _nearest(frame: pd.DataFrame, date_column: str, index: pd.DataFrame, window: int) -> pd.DataFrame:
    """For each patient the record nearest the index date, at most ``window`` days away."""
    rows = with_index(frame, index, ["index_date"])
    rows["distance"] = (rows[date_column] - rows["index_date"]).dt.days.abs()
    rows = rows[rows["distance"] <= window].sort_values(["patient_id", "distance", date_column])
    return rows.groupby("patient_id").first()


def _baseline_labs(labs: pd.DataFrame, index: pd.DataFrame, window: int) -> pd.DataFrame:
    labs = labs[["patient_id", "analyte", "sample_date", "value"]]  # _nearest takes the first of each column
    by_analyte = dict(tuple(labs.groupby("analyte", sort=False)))  # one pass over the labs, not one per analyte
    none = labs.iloc[:0]
    columns = {
        analyte.value: _nearest(by_analyte.get(analyte.value, none), "sample_date", index, window)["value"]
        for analyte in Analyte
    }
    return pd.DataFrame(columns, index=index.index)


def _with_coded(frame: pd.DataFrame, fields: tuple[str, ...]) -> pd.DataFrame:
    """``frame`` with a column ``coded_<field>`` per field: True where the record holds a missing-data code for it,
    else empty, so that :func:`_nearest` (the first non-empty of each column) tells whether any record in the window
    coded the field."""
    flags = {name: coded(frame, name) for name in fields}
    return frame.assign(**{f"coded_{name}": flag.where(flag) for name, flag in flags.items()})


def _coded_baseline(nearest: pd.DataFrame, fields: tuple[str, ...], prefix: str, index: pd.Index) -> pd.DataFrame:
    """Per patient of ``index`` and field, whether the baseline value is missing and a record coded it."""
    nearest = nearest.reindex(index)
    return pd.DataFrame(
        {f"{prefix}{name}": nearest[name].isna() & nearest[f"coded_{name}"].notna() for name in fields}, index=index
    )


def _steroid_sparing(treatment: pd.DataFrame, index: pd.DataFrame, config: Config) -> pd.Series:
    courses = with_index(treatment[treatment["drug"].isin(config.steroid_sparing_drugs)], index, ["index_date"])
    window = config.steroid_sparing_window_days * DAY
    end = courses["end_date"].fillna(NEVER)
    overlaps = (courses["start_date"] <= courses["index_date"] + window) & (end >= courses["index_date"] - window)
    return courses[overlaps].groupby("patient_id").size().reindex(index.index, fill_value=0) > 0


def _safety(events: pd.DataFrame, treatment: pd.DataFrame, index: pd.DataFrame) -> pd.DataFrame:
    """Adverse events from the index date on: any, serious or grade >= 3, each term; discontinuation.

    Discontinuation: the index study-drug course stopped for an adverse event, or an
    event attributed to the index drug led to its discontinuation.
    """
    rows = with_index(events, index, ["index_date", "group"])
    rows = rows[rows["onset_date"] >= rows["index_date"]]
    flags = pd.DataFrame(index=index.index)
    flags["ae_any"] = index.index.isin(rows["patient_id"])
    severe = rows[rows["serious"].astype(bool) | (rows["ctcae_grade"] >= 3)]
    flags["ae_serious_or_grade3"] = index.index.isin(severe["patient_id"])
    for term in AdverseEventTerm:
        flags[f"ae_{term.value}"] = index.index.isin(rows.loc[rows["term"] == term.value, "patient_id"])
    courses = with_index(treatment, index, ["index_date", "group"])
    index_course = courses[(courses["drug"] == courses["group"]) & (courses["start_date"] == courses["index_date"])]
    stopped = index_course.loc[index_course["stop_reason"] == "adverse_event", "patient_id"]
    attributed = rows.loc[
        rows["led_to_discontinuation"].astype(bool) & (rows["attributed_drug"] == rows["group"]), "patient_id"
    ]
    flags["discontinuation"] = index.index.isin(stopped) | index.index.isin(attributed)
    return flags


def build_cohort(tables: dict[str, pd.DataFrame], config: Config) -> Cohort:
    """The analysis table of ``tables`` (as :func:`registry.tables.load_tables` returns them) under ``config``.

    ``time_days`` and ``event`` are the primary analysis: death at any time to the end of follow-up (``end_date``:
    death, else last contact or the data cut-off), transplanted or not. The competing-risks columns beside them:
    ``transplant_date``, a lung transplantation on or after the index date and on or before ``end_date`` (so on or
    before the cut-off), else NaT (one before the index date, or after the last contact or the cut-off, is not
    counted); ``cr_status``, the first event: 2 a transplantation strictly before death (or of a patient not known to
    have died), 1 death (a transplantation on the day of death counts as death: the day cannot be split and death is
    the outcome studied), 0 censored; ``cr_time_days``, days from the index date to that event (the transplantation
    for status 2, else ``time_days``).
    """
    patients = tables["patient"].set_index("id")
    index = index_treatment(tables["treatment"])
    mda5 = _anti_mda5(tables["antibody_test"], index)
    follow_up = tables["follow_up"].set_index("patient_id")
    start, end = pd.Timestamp(config.enrolment_start), pd.Timestamp(config.enrolment_end)
    cutoff = pd.Timestamp(config.data_cutoff) if config.data_cutoff else None

    reasons = [
        ("no tofacitinib or tacrolimus course", ~patients.index.isin(index.index)),
        ("tofacitinib and tacrolimus started the same day", patients.index.isin(index.index[index["same_day_start"]])),
        ("anti-MDA5 not positive or not tested", ~patients.index.isin(mda5.index[mda5["anti_mda5_positive"]])),
        ("no ILD diagnosis date", patients["ild_diagnosis_date"].isna().to_numpy()),
        (
            "ILD diagnosed outside the enrolment window",
            ~patients["ild_diagnosis_date"].between(start, end).to_numpy()
            & patients["ild_diagnosis_date"].notna().to_numpy(),
        ),
        ("no follow-up (vital status) record", ~patients.index.isin(follow_up.index)),
    ]
    if cutoff is not None:
        late = index.index[index["index_date"] > cutoff]
        reasons.append(("study drug started after the data cut-off", patients.index.isin(late)))
    excluded = pd.Series(pd.NA, index=patients.index, dtype="object")
    for reason, mask in reasons:
        excluded[mask & excluded.isna().to_numpy()] = reason
    kept = patients[excluded.isna()]

    table = pd.DataFrame(index=kept.index)
    table["study_id"] = kept["study_id"]
    table = table.join(index[["group", "index_date", "both_study_drugs"]])
    fu = follow_up.reindex(kept.index)
    died = fu["vital_status"].eq("dead") & (cutoff is None or fu["death_date"] <= cutoff)
    censor_at = fu["last_contact_date"] if cutoff is None else fu["last_contact_date"].clip(upper=cutoff)
    table["event"] = died.astype(int)
    table["end_date"] = fu["death_date"].where(died, censor_at)
    table["time_days"] = (table["end_date"] - table["index_date"]).dt.days
    # The competing event (registry.analysis.competing): a lung transplantation from the index date to the end of
    # follow-up, counted when it came before death (on the day of death, the death counts). The primary analysis
    # above is unchanged: it follows patients to death or last contact, transplanted or not.
    transplant = fu["lung_transplant_date"]
    counted = transplant.between(table["index_date"], table["end_date"]) & ~(died & (transplant >= table["end_date"]))
    table["transplant_date"] = transplant.where(counted)
    table["cr_status"] = np.where(counted, 2, table["event"])
    table["cr_time_days"] = np.where(counted, (transplant - table["index_date"]).dt.days, table["time_days"]).astype(
        int
    )
    for days in config.landmarks.values():
        dead_by = died & (table["time_days"] <= days)
        table[f"dead_by_{days}"] = dead_by
        table[f"status_known_{days}"] = dead_by | (table["time_days"] >= days)
    table["age"] = (table["index_date"] - kept["birth_date"]).dt.days / 365.25
    table["sex"] = kept["sex"]
    table["male"] = kept["sex"].eq("male").astype(int)
    table["smoking"] = kept["smoking"]
    table["ever_smoker"] = kept["smoking"].isin(["former", "current"]).astype(float).where(kept["smoking"].notna())
    table["rpild"] = kept["rpild"]
    table = table.join(mda5[["anti_mda5_grade"]])
    table["steroid_sparing"] = _steroid_sparing(tables["treatment"], index.loc[kept.index], config).astype(int)
    table = table.join(_baseline_labs(tables["lab_result"], index.loc[kept.index], config.baseline_window_days))
    window = config.baseline_window_days
    pft = _nearest(_with_coded(tables["pft"], PFT_FIELDS), "test_date", index.loc[kept.index], window)
    table = table.join(pft[[*PFT_FIELDS, "not_done_reason"]].add_prefix("pft_"))
    table = table.join(_safety(tables["adverse_event"], tables["treatment"], index.loc[kept.index]))
    hrct = _nearest(_with_coded(tables["hrct"], HRCT_FIELDS), "scan_date", index.loc[kept.index], window)
    table = table.join(hrct[list(HRCT_FIELDS)].add_prefix("hrct_"))
    smoking, rpild = (kept[name].isna() & coded(kept, name) for name in ("smoking", "rpild"))
    coded_values = pd.concat(
        [
            pd.DataFrame({"smoking": smoking, "ever_smoker": smoking, "rpild": rpild}, index=kept.index),
            _coded_baseline(pft, PFT_FIELDS, "pft_", kept.index),
            _coded_baseline(hrct, HRCT_FIELDS, "hrct_", kept.index),
        ],
        axis=1,
    ).set_axis(pd.Index(kept["study_id"].to_numpy(), name="study_id"))
    dropped = excluded.dropna()
    excluded_frame = pd.DataFrame({"study_id": patients.loc[dropped.index, "study_id"], "reason": dropped})
    return Cohort(
        table.set_index("study_id"), excluded_frame.reset_index(drop=True), len(patients), coded_values.astype(bool)
    )
