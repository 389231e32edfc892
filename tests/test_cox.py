"""Cox models against R: survival::coxph and cox.zph on the Rossi recidivism data."""

import re

import numpy as np
import pandas as pd
import pytest
from lifelines.datasets import load_rossi

from registry.analysis.cox import CoxError, fit_cox

ROSSI_TERMS = ["fin", "age", "race", "wexp", "mar", "paro", "prio"]
# R: coxph(Surv(week, arrest) ~ fin + age + race + wexp + mar + paro + prio, data = Rossi)
# (Fox & Weisberg, "Cox proportional-hazards regression for survival data in R")
R_COEF = [-0.379422, -0.057438, 0.313900, -0.149796, -0.433704, -0.084871, 0.091497]
R_SE = [0.191379, 0.021999, 0.307993, 0.212224, 0.381868, 0.195757, 0.028649]


def test_coefficients_and_standard_errors_equal_r():
    result = fit_cox(load_rossi(), "week", "arrest", ROSSI_TERMS)
    assert [t.coef for t in result.terms] == pytest.approx(R_COEF, abs=1e-4)
    assert [t.se for t in result.terms] == pytest.approx(R_SE, abs=1e-4)
    fin = result.terms[0]
    assert fin.hr == pytest.approx(np.exp(-0.379422), abs=1e-4)
    assert (result.n, result.events, result.dropped_missing) == (432, 114, 0)
    assert result.events_per_variable == pytest.approx(114 / 7)


def test_proportional_hazards_test_equals_r_cox_zph():
    # R survival >= 3: cox.zph(fit) with transform = "km": age 5.974, wexp 4.225, GLOBAL 17.69 (7 df)
    zph = {t.term: t for t in fit_cox(load_rossi(), "week", "arrest", ROSSI_TERMS).zph}
    assert zph["age"].chisq == pytest.approx(5.974, abs=5e-4)
    assert zph["wexp"].chisq == pytest.approx(4.225, abs=5e-4)
    assert zph["GLOBAL"].chisq == pytest.approx(17.69, abs=5e-3)
    assert zph["GLOBAL"].df == 7


def test_without_the_proportional_hazards_test_the_fit_is_the_same():
    """zph=False (the fits multiple imputation pools) leaves cox.zph out and changes nothing else."""
    full = fit_cox(load_rossi(), "week", "arrest", ROSSI_TERMS)
    bare = fit_cox(load_rossi(), "week", "arrest", ROSSI_TERMS, zph=False)
    assert bare.zph == [] and len(full.zph) == len(ROSSI_TERMS) + 1
    assert bare.terms == full.terms and (bare.n, bare.events, bare.notes) == (full.n, full.events, full.notes)


def test_missing_covariates_are_dropped_and_counted():
    rossi = load_rossi().astype({"age": float})
    rossi.loc[:9, "age"] = np.nan
    result = fit_cox(rossi, "week", "arrest", ["fin", "age"])
    assert (result.n, result.dropped_missing) == (422, 10)
    assert result.notes[0] == "10 patient(s) with a missing covariate were left out (complete-case analysis)"


def test_few_events_per_variable_are_flagged():
    rossi = load_rossi().iloc[:60]
    result = fit_cox(rossi, "week", "arrest", ROSSI_TERMS)
    assert any("events per variable (< 10)" in note for note in result.notes)


SEPARATED = pd.DataFrame({"t": [5, 6, 7, 8, 9, 10], "e": [1, 0, 1, 0, 0, 1], "x": [0, 1, 0, 1, 1, 0]})
SEPARATION = r"all deaths occurred at one value of x \(complete separation\)"


def test_no_events_and_separation_give_clear_messages():
    with pytest.raises(CoxError, match="no deaths among the patients analysed"):
        fit_cox(SEPARATED.assign(e=0), "t", "e", ["x"])
    with pytest.raises(CoxError, match=SEPARATION):
        fit_cox(SEPARATED, "t", "e", ["x"], firth=False)
    with pytest.raises(CoxError, match="x takes a single value"):
        fit_cox(SEPARATED.assign(x=1), "t", "e", ["x"])


def test_separation_falls_back_to_firth_with_a_note():
    result = fit_cox(SEPARATED, "t", "e", ["x"])
    assert result.method == "Firth-penalised partial likelihood" and result.ties == "Breslow"
    assert re.search(SEPARATION, result.notes[-1]) and "Firth's penalised estimate" in result.notes[-1]
    x = result.terms[0]
    assert x.hr < 1 and x.lower < x.hr < x.upper and 0 < x.p < 1  # finite, where the usual estimate is -infinity
    assert result.zph == []


def test_firth_estimate_equals_heinze_and_schemper():
    # Heinze & Schemper (Biometrics 2001), section 2: two patients, x = 1 dies at t = 1, x = 0 censored
    # at t = 2; the usual estimate is infinite, Firth's modified score has its root at exp(beta) = 3.
    table = pd.DataFrame({"t": [1.0, 2.0], "e": [1, 0], "x": [1, 0]})
    assert fit_cox(table, "t", "e", ["x"]).terms[0].hr == pytest.approx(3.0, abs=1e-6)


def _information_death_by_death(x, time, event, weight, beta):
    """Efron's information as the textbook writes it: a loop over the deaths, each risk set summed anew."""
    information = np.zeros((x.shape[1], x.shape[1]))
    for t in np.unique(time[event]):
        dying = event & (time == t)
        at_risk = time >= t
        r = weight * np.exp(x @ beta)
        d, mean_weight = dying.sum(), weight[dying].mean()
        for k in range(d):
            share = np.where(dying, k / d, 0.0)
            w = r * np.where(at_risk, 1.0, 0.0) * (1 - share)
            s0, s1, s2 = w.sum(), w @ x, (x * w[:, None]).T @ x
            mean = s1 / s0
            information += mean_weight * (s2 / s0 - np.outer(mean, mean))
    return information


@pytest.mark.parametrize("weighted", [False, True])
def test_the_information_summed_patient_by_patient_equals_the_sum_over_deaths(weighted):
    """_efron sums the information per patient (one matrix product); per death time (cox.zph's split) and death by
    death (a plain loop) it must be the same, with tied deaths and case weights."""
    from registry.analysis.cox import _design, _efron, _information_by_time

    rng = np.random.default_rng(7)
    n = 200
    x = rng.normal(size=(n, 3))
    time = rng.integers(1, 25, n).astype(float)  # many ties
    event = rng.random(n) < 0.6
    weight = rng.uniform(0.2, 3.0, n) if weighted else np.ones(n)
    beta = np.array([0.3, -0.5, 0.1])
    design = _design(x, time, event, weight if weighted else None)
    at = _efron(design, beta)
    expected = _information_death_by_death(x, time, event, weight, beta)
    assert np.abs(at.information - expected).max() < 1e-12 * np.abs(expected).max()
    assert np.abs(_information_by_time(design, at).sum(axis=0) - expected).max() < 1e-12 * np.abs(expected).max()
