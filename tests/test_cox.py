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
