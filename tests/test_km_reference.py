"""Kaplan-Meier against R's survival package: curves, intervals of each type, medians and landmarks.

tests/r/km_reference.R wrote the data and R's numbers (tests/r/km_*.csv, R and survival versions in
km_reference.version); these tests read the stored output, so they need no R. Where Rscript is installed, the last
test runs the script again and finds the same numbers. lifelines' fitter is the oracle for S(t) beside R.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import assert_r_gives_the_stored_output, needs_r
from lifelines import KaplanMeierFitter

from registry.analysis.mortality import mortality
from registry.analysis.survival import fit_km, km_curve, median_survival, survival_at

R = Path(__file__).resolve().parent / "r"
CASES = pd.read_csv(R / "km_cases.csv")
CURVES = pd.read_csv(R / "km_curves.csv")
MEDIANS = pd.read_csv(R / "km_medians.csv")
LANDMARKS = pd.read_csv(R / "km_landmarks.csv")
COMBINATIONS = sorted({(c, t) for c, t in zip(MEDIANS["case"], MEDIANS["conf_type"], strict=True)})
#: Agreement asked of every number (relative): R and numpy do the same arithmetic, in another order.
TOLERANCE = 1e-12


def _data(case: str) -> tuple[pd.Series, pd.Series]:
    rows = CASES[CASES["case"] == case]
    return rows["time"].reset_index(drop=True), rows["event"].reset_index(drop=True)


def _same(ours, theirs) -> None:
    """Equal within TOLERANCE, NaN (R's NA) exactly where R has it, infinities where R has them."""
    ours, theirs = np.asarray(ours, dtype=float), np.asarray(theirs, dtype=float)
    assert ours.shape == theirs.shape
    assert np.array_equal(np.isnan(ours), np.isnan(theirs)), (ours, theirs)
    assert np.array_equal(np.isinf(ours), np.isinf(theirs)), (ours, theirs)
    finite = np.isfinite(theirs)
    np.testing.assert_allclose(ours[finite], theirs[finite], rtol=TOLERANCE, atol=1e-15)


def _none_as_nan(value: float | None) -> float:
    return math.nan if value is None else value


def test_the_stored_output_covers_every_case_and_interval_type():
    assert len(COMBINATIONS) == (10 + 4) * 3  # hand-made and random cases, the demo cohort's four curves
    assert {t for _, t in COMBINATIONS} == {"log", "log-log", "plain"}


@pytest.mark.parametrize("case, conf_type", COMBINATIONS)
def test_the_curve_and_its_interval_equal_r_survfit(case, conf_type):
    time, event = _data(case)
    km = fit_km(time, event, conf_type)
    r = CURVES[(CURVES["case"] == case) & (CURVES["conf_type"] == conf_type)]
    _same(km.time, r["time"])
    assert km.n_risk.tolist() == r["n_risk"].tolist() and km.n_event.tolist() == r["n_event"].tolist()
    for ours, theirs in ((km.surv, "surv"), (km.std_err, "std_err"), (km.lower, "lower"), (km.upper, "upper")):
        _same(ours, r[theirs])
    oracle = KaplanMeierFitter().fit(time, event).survival_function_.iloc[:, 0]
    _same(km.surv, oracle.reindex(km.time).to_numpy())


@pytest.mark.parametrize("case, conf_type", COMBINATIONS)
def test_the_median_and_its_limits_equal_r_quantile(case, conf_type):
    time, event = _data(case)
    median = median_survival(fit_km(time, event, conf_type))
    (r,) = MEDIANS[(MEDIANS["case"] == case) & (MEDIANS["conf_type"] == conf_type)].to_dict("records")
    if math.isnan(r["median"]) and math.isnan(r["lower"]):
        assert median is None
        return
    _same([_none_as_nan(median.value), _none_as_nan(median.lower), _none_as_nan(median.upper)],
          [r["median"], r["lower"], r["upper"]])  # fmt: skip
    assert km_curve(time, event, "x", conf_type).median == median


@pytest.mark.parametrize("case, conf_type", COMBINATIONS)
def test_survival_at_the_landmarks_equals_r_summary(case, conf_type):
    time, event = _data(case)
    km = fit_km(time, event, conf_type)
    for r in LANDMARKS[(LANDMARKS["case"] == case) & (LANDMARKS["conf_type"] == conf_type)].to_dict("records"):
        estimate = survival_at(km, r["t"])
        _same([estimate.value, _none_as_nan(estimate.lower), _none_as_nan(estimate.upper)],
              [r["surv"], r["lower"], r["upper"]])  # fmt: skip


def test_the_demo_cohorts_medians_as_r_gives_them():
    """R: quantile(survfit(..., conf.type = "log-log"), 0.5) on the demo cohort: 120 (42, 345) on tacrolimus, NA (134,
    NA) on tofacitinib; in the RPILD subgroup 38.5 (16, 108), a midpoint, and 129 (71, 175)."""
    expected = {"demo_tacrolimus": (120, 42, 345), "demo_tofacitinib": (None, 134, None),
                "demo_rpild_tacrolimus": (38.5, 16, 108), "demo_rpild_tofacitinib": (129, 71, 175)}  # fmt: skip
    for case, (value, lower, upper) in expected.items():
        median = median_survival(fit_km(*_data(case), "log-log"))
        assert (median.value, median.lower, median.upper) == (value, lower, upper)


def test_the_examples_of_the_issue():
    """Deaths on days 1-4 of four patients: median 2.5, upper limit NA (we said 2, with 4); nobody dead by 183 days
    or everybody: the mortality interval does not exist (we printed 100-100 %)."""
    median = median_survival(fit_km(*_data("four_deaths")))
    assert (median.value, median.lower, median.upper) == (2.5, 1.0, None)
    for case, value in (("no_deaths", 0.0), ("all_die", 1.0)):
        time, event = _data(case)
        table = pd.DataFrame({"group": "a", "time_days": time, "event": event})
        table["dead_by_183"] = (table["event"] == 1) & (table["time_days"] <= 183)
        table["status_known_183"] = table["dead_by_183"] | (table["time_days"] >= 183)
        (landmark,) = mortality(table, {"6 months": 183}, conf_type="log-log")
        assert (landmark.groups[0].km_mortality.value, landmark.groups[0].km_mortality.lower,
                landmark.groups[0].km_mortality.upper) == (value, None, None)  # fmt: skip


def test_an_unknown_interval_type_is_refused():
    with pytest.raises(
        ValueError, match=r"^unknown confidence interval type 'logit': choose one of log, log-log, plain$"
    ):
        fit_km(pd.Series([1, 2]), pd.Series([1, 0]), "logit")


@needs_r
def test_r_gives_the_stored_numbers_again(tmp_path):
    assert_r_gives_the_stored_output(
        tmp_path,
        "km_reference.R",
        ("demo_survival.csv",),
        ("km_cases.csv", "km_curves.csv", "km_medians.csv", "km_landmarks.csv"),
    )


def test_the_demo_cohort_file_is_the_analysis_table(tmp_path):
    """tests/r/demo_survival.csv, which R reads, is the demo cohort's follow-up as the analyses see it."""
    from conftest import add_demo_site

    from registry import db
    from registry.cohort import build_cohort
    from registry.config import Config
    from registry.ingest import import_path
    from registry.tables import load_tables

    engine = db.make_engine(f"sqlite:///{tmp_path / 'demo.db'}")
    db.upgrade(engine)
    add_demo_site(engine)
    assert import_path(engine, Path(__file__).resolve().parents[1] / "fixtures" / "demo", actor="test").written
    with engine.connect() as connection:
        table = build_cohort(load_tables(connection), Config()).table
    engine.dispose()
    stored = pd.read_csv(R / "demo_survival.csv")
    ours = table[["time_days", "event", "group"]].reset_index(drop=True)
    assert ours.astype({"time_days": int, "event": int}).equals(stored[["time_days", "event", "group"]])
    assert (table["rpild"].fillna(False).astype(bool).astype(int).to_numpy() == stored["rpild"].to_numpy()).all()
