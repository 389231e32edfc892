"""Propensity-score weighting against R on the demo cohort and seeded random cohorts of 300 and 800, to 1e-6.

tests/r/sensitivity_reference.R wrote the data and R's numbers (stats::glm, survival's weighted survfit and
coxph(..., robust = TRUE), and cobalt's balance conventions written out); the tests read the stored output and need
no R. The demo rows are the demo cohort's Cox data (tests/r/sensitivity_data.py), checked here against the cohort
built from fixtures/demo so that the reference cannot drift from the demo.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import assert_r_gives_the_stored_output, needs_r

from registry.analysis.cox import ROBUST, fit_cox
from registry.analysis.run import EXPOSURE, _cox, cox_data
from registry.analysis.sensitivity import sensitivity
from registry.analysis.survival import fit_km, survival_at
from registry.analysis.weighting import (
    balance,
    effective_sample_size,
    fit_propensity,
    propensity_weights,
    truncate_weights,
)
from registry.config import Config

R = Path(__file__).resolve().parent / "r"
CASES = pd.read_csv(R / "sensitivity_cases.csv")
PROPENSITY = pd.read_csv(R / "sensitivity_propensity.csv")
WEIGHTS = pd.read_csv(R / "sensitivity_weights.csv")
BALANCE = pd.read_csv(R / "sensitivity_balance.csv")
KM = pd.read_csv(R / "sensitivity_km.csv")
COX = pd.read_csv(R / "sensitivity_cox.csv")
PS_COVARIATES = ["age", "male", "ever_smoker", "anti_mda5_grade", "rpild"]
ADJUSTED = ["age", "male", "ever_smoker", "anti_mda5_grade", "steroid_sparing"]
TOLERANCE = 1e-6
NAMES = sorted(CASES["case"].unique())


def _case(name: str) -> pd.DataFrame:
    rows = CASES[CASES["case"] == name].drop(columns="case").reset_index(drop=True)
    return rows.assign(group=np.where(rows[EXPOSURE] == 1, "tofacitinib", "tacrolimus"))


def _weights(name: str, weighting: str) -> np.ndarray:
    data = _case(name)
    score, _ = fit_propensity(data, EXPOSURE, PS_COVARIATES)
    treated = data[EXPOSURE].to_numpy(bool)
    if weighting == "iptw_truncated_95":
        return truncate_weights(propensity_weights(score.to_numpy(), treated, "iptw"), treated, 95)
    return propensity_weights(score.to_numpy(), treated, weighting)


@pytest.mark.parametrize("name", NAMES)
def test_propensity_model_scores_and_weights_equal_glm(name):
    data = _case(name)
    score, model = fit_propensity(data, EXPOSURE, PS_COVARIATES)
    r = PROPENSITY[PROPENSITY["case"] == name].set_index("term")
    assert [t.name for t in model.terms] == list(r.index)
    for term in model.terms:
        assert [term.coef, term.se, term.p] == pytest.approx(r.loc[term.name, ["coef", "se", "p"]].to_list(),
                                                             rel=TOLERANCE), term.name  # fmt: skip
    theirs = WEIGHTS[WEIGHTS["case"] == name]
    assert score.to_numpy() == pytest.approx(theirs["ps"].to_numpy(), rel=TOLERANCE)
    for weighting in ("iptw", "overlap", "iptw_truncated_95"):
        assert _weights(name, weighting) == pytest.approx(theirs[weighting].to_numpy(), rel=TOLERANCE), weighting


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("weighting", ["iptw", "overlap", "iptw_truncated_95"])
def test_balance_and_effective_sample_size_follow_cobalts_conventions(name, weighting):
    data, weights = _case(name), _weights(name, weighting)
    treated = data[EXPOSURE].to_numpy(bool)
    r = BALANCE[(BALANCE["case"] == name) & (BALANCE["weighting"] == weighting)].set_index("covariate")
    found = balance(data[PS_COVARIATES], treated, weights)
    assert [b.covariate for b in found] == list(r.index)
    for b in found:
        expected = r.loc[b.covariate]
        assert b.binary == expected["binary"]
        assert [b.smd_before, b.smd_after] == pytest.approx([expected["smd_before"], expected["smd_after"]],
                                                            rel=TOLERANCE, abs=1e-12)  # fmt: skip
        if b.binary:
            assert b.variance_ratio_before is None and b.variance_ratio_after is None
        else:
            assert [b.variance_ratio_before, b.variance_ratio_after] == pytest.approx(
                [expected["vr_before"], expected["vr_after"]], rel=TOLERANCE
            )
    first = r.iloc[0]
    assert effective_sample_size(weights[treated]) == pytest.approx(first["ess_tofacitinib"], rel=TOLERANCE)
    assert effective_sample_size(weights[~treated]) == pytest.approx(first["ess_tacrolimus"], rel=TOLERANCE)


@pytest.mark.parametrize("name", NAMES)
def test_overlap_weights_balance_the_propensity_covariates_exactly(name):
    """A property of overlap weights with a logistic propensity model (Li, Morgan & Zaslavsky 2018): the weighted
    means of its covariates are equal in the two groups."""
    rows = BALANCE[(BALANCE["case"] == name) & (BALANCE["weighting"] == "overlap")]
    assert rows["smd_after"].abs().max() < 1e-9
    data = _case(name)
    found = balance(data[PS_COVARIATES], data[EXPOSURE].to_numpy(bool), _weights(name, "overlap"))
    assert max(abs(b.smd_after) for b in found) < 1e-9


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("weighting", ["iptw", "overlap", "iptw_truncated_95"])
def test_weighted_kaplan_meier_equals_survfit_with_weights(name, weighting):
    data, weights = _case(name), _weights(name, weighting)
    r = KM[(KM["case"] == name) & (KM["weighting"] == weighting)]
    for group, exposed in (("tofacitinib", 1), ("tacrolimus", 0)):
        members = (data[EXPOSURE] == exposed).to_numpy()
        km = fit_km(data["time_days"][members], data["event"][members], "log-log", weights[members])
        for _, expected in r[r["group"] == group].iterrows():
            at = np.searchsorted(km.time, expected["days"], side="right") - 1
            estimate = survival_at(km, expected["days"])
            ours = [estimate.value, km.std_err[at] * km.surv[at], estimate.lower, estimate.upper]
            assert ours == pytest.approx(expected[["surv", "std_err", "lower", "upper"]].to_list(), rel=TOLERANCE)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("weighting", ["iptw", "overlap", "iptw_truncated_95"])
def test_weighted_cox_with_robust_errors_equals_coxph(name, weighting):
    data = _case(name).assign(w=_weights(name, weighting))
    models = {weighting: [EXPOSURE], **({"doubly_robust": [EXPOSURE, *ADJUSTED]} if weighting == "iptw" else {})}
    for model, covariates in models.items():
        result = fit_cox(data, "cox_time", "cox_event", covariates, weights="w")
        assert result.variance == ROBUST and result.zph == []
        r = COX[(COX["case"] == name) & (COX["model"] == model)].set_index("term")
        assert [t.name for t in result.terms] == list(r.index)
        for term in result.terms:
            ours = [term.coef, term.se, term.hr, term.lower, term.upper, term.p]
            assert ours == pytest.approx(r.loc[term.name, ["coef", "se", "hr", "lower", "upper", "p"]].to_list(),
                                         rel=TOLERANCE), (model, term.name)  # fmt: skip


def test_the_demo_rows_are_the_demo_cohort(demo_table):
    """tests/r/sensitivity_demo.csv, R's demo input, is the cohort built from fixtures/demo today."""
    stored = pd.read_csv(R / "sensitivity_demo.csv")
    built = cox_data(demo_table, Config()).assign(rpild=lambda t: t["rpild"].astype(float))[stored.columns]
    pd.testing.assert_frame_equal(built.reset_index(drop=True), stored, check_dtype=False, rtol=1e-15)


def test_the_sensitivity_section_of_the_demo_gives_rs_hazard_ratios(demo_table):
    config = Config()
    data = cox_data(demo_table, config)
    result = sensitivity(data, _cox(demo_table, config)["models"], EXPOSURE, config)
    rows = {row["method"]: row for row in result["hazard_ratios"]}
    r = COX[(COX["case"] == "demo") & (COX["term"] == EXPOSURE)].set_index("model")
    for method in ("iptw", "overlap", "doubly_robust"):
        assert [rows[method][k] for k in ("hr", "lower", "upper", "p")] == pytest.approx(
            r.loc[method, ["hr", "lower", "upper", "p"]].to_list(), rel=TOLERANCE
        ), method
        assert rows[method]["n"] == 61 and rows[method]["variance"] == ROBUST
    km = KM[(KM["case"] == "demo") & (KM["weighting"] == "iptw")]
    for landmark in result["weightings"]["iptw"]["mortality"]:
        for group in landmark["groups"]:
            expected = km[(km["group"] == group["group"]) & (km["days"] == landmark["days"])].iloc[0]
            mortality = group["km_mortality"]
            assert [mortality.value, mortality.lower, mortality.upper] == pytest.approx(
                [1 - expected["surv"], 1 - expected["upper"], 1 - expected["lower"]], rel=TOLERANCE
            )


@needs_r
def test_r_gives_the_stored_numbers_again(tmp_path):
    assert_r_gives_the_stored_output(
        tmp_path,
        "sensitivity_reference.R",
        ("sensitivity_demo.csv",),
        (
            "sensitivity_cases.csv",
            "sensitivity_propensity.csv",
            "sensitivity_weights.csv",
            "sensitivity_balance.csv",
            "sensitivity_km.csv",
            "sensitivity_cox.csv",
        ),
    )


def test_each_part_can_be_switched_off(demo_table):
    config = Config(sensitivity_analyses=("overlap",))
    data = cox_data(demo_table, config)
    result = sensitivity(data, _cox(demo_table, config)["models"], EXPOSURE, config)
    assert [row["method"] for row in result["hazard_ratios"]] == ["unadjusted", "adjusted", "overlap"]
    assert list(result["weightings"]) == ["overlap"]
    assert "imputation" not in result and "competing_risks" not in result and "evalue_conversion" not in result
    assert all("evalue" not in row for row in result["hazard_ratios"])


def test_truncated_weights_are_used_and_reported(demo_table):
    config = Config(sensitivity_analyses=("iptw",), weight_truncation_percentile=95)
    result = sensitivity(cox_data(demo_table, config), _cox(demo_table, config)["models"], EXPOSURE, config)
    iptw = result["weightings"]["iptw"]
    r = COX[(COX["case"] == "demo") & (COX["model"] == "iptw_truncated_95")]
    assert iptw["truncated_at_percentile"] == 95
    assert len(r) == 1 and iptw["cox"].terms[0].hr == pytest.approx(r["hr"].iloc[0], rel=TOLERANCE)
