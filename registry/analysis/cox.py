"""Cox proportional-hazards models (lifelines, Efron ties) and R's ``cox.zph`` test.

``cox_zph`` re-implements the proportional-hazards score test of R survival >= 3
(``cox.zph(fit, transform = "km")``): for each term, a score test of adding
beta_j * g(t) * x_j with g(t) = 1 - KM(t-) centred over the deaths, the fitted
coefficients held fixed and their estimation accounted for; plus the global test.
lifelines' ``check_assumptions`` computes a different statistic and no global test.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.exceptions import ConvergenceError, ConvergenceWarning
from scipy import stats

#: Fewer events per estimated coefficient than this and the model is flagged as overfitted.
MIN_EVENTS_PER_VARIABLE = 10


@dataclass(frozen=True)
class Term:
    name: str
    coef: float
    se: float
    hr: float
    lower: float
    upper: float
    p: float


@dataclass(frozen=True)
class ZphTest:
    term: str  # a covariate, or "GLOBAL"
    chisq: float
    df: int
    p: float


@dataclass
class CoxResult:
    terms: list[Term]
    n: int
    events: int
    dropped_missing: int  # complete-case analysis: rows dropped for a missing covariate
    events_per_variable: float
    zph: list[ZphTest]
    notes: list[str] = field(default_factory=list)  # warnings a reader must see
    ties: str = "Efron"


class CoxError(ValueError):
    """The model cannot be estimated; the message says why in plain words."""


def _schoenfeld_pieces(x: np.ndarray, time: np.ndarray, event: np.ndarray, beta: np.ndarray):  # noqa: ANN202
    """Per death: Schoenfeld residual and g(t); per death time: Efron information and g."""
    risk = np.exp(x @ beta)
    km = KaplanMeierFitter().fit(time, event).survival_function_.iloc[:, 0]
    residuals, g_death, information = [], [], []
    for t in np.unique(time[event]):
        at_risk, dying = time >= t, (time == t) & event
        d = int(dying.sum())
        w, wd = risk[at_risk], risk[dying]
        s0, s1, s2 = w.sum(), w @ x[at_risk], (x[at_risk] * w[:, None]).T @ x[at_risk]
        s0d, s1d, s2d = wd.sum(), wd @ x[dying], (x[dying] * wd[:, None]).T @ x[dying]
        means, v = [], np.zeros((x.shape[1], x.shape[1]))
        for k in range(d):  # Efron: the tied deaths leave the risk set a fraction at a time
            f = k / d
            mean = (s1 - f * s1d) / (s0 - f * s0d)
            means.append(mean)
            v += (s2 - f * s2d) / (s0 - f * s0d) - np.outer(mean, mean)
        before = km[km.index < t]
        g = 1.0 - (float(before.iloc[-1]) if len(before) else 1.0)  # 1 - KM(t-), left-continuous
        residuals.extend(x[dying] - np.mean(means, axis=0))
        g_death.extend([g] * d)
        information.append((g, d, v))
    return np.array(residuals), np.array(g_death), information


def cox_zph(
    x: np.ndarray, time: np.ndarray, event: np.ndarray, beta: np.ndarray, names: Sequence[str]
) -> list[ZphTest]:
    """R's ``cox.zph(fit, transform = "km")``: per-term and global chi-square tests."""
    residuals, g, information = _schoenfeld_pieces(x, time, event.astype(bool), beta)
    centre = g.mean()
    u = ((g - centre)[:, None] * residuals).sum(axis=0)
    i11 = sum(v for _, _, v in information)
    i12 = sum((gt - centre) * v for gt, _, v in information)
    i22 = sum((gt - centre) ** 2 * v for gt, _, v in information)
    tests = []
    for j, name in enumerate(names):
        efficient = i22[j, j] - i12[:, j] @ np.linalg.solve(i11, i12[:, j])
        chisq = float(u[j] ** 2 / efficient)
        tests.append(ZphTest(name, chisq, 1, float(stats.chi2.sf(chisq, 1))))
    full = i22 - i12.T @ np.linalg.solve(i11, i12)
    chisq = float(u @ np.linalg.solve(full, u))
    tests.append(ZphTest("GLOBAL", chisq, len(names), float(stats.chi2.sf(chisq, len(names)))))
    return tests


def fit_cox(table: pd.DataFrame, duration: str, event: str, covariates: Sequence[str]) -> CoxResult:
    """A Cox model of ``covariates`` (numeric columns), complete cases, Efron ties."""
    data = table[[duration, event, *covariates]]
    complete = data.dropna()
    dropped = len(data) - len(complete)
    events = int(complete[event].sum())
    if events == 0:
        raise CoxError("no deaths among the patients analysed: hazard ratios cannot be estimated")
    notes = []
    if dropped:
        notes.append(f"{dropped} patient(s) with a missing covariate were left out (complete-case analysis)")
    for name in covariates:
        values = complete[name]
        if values.nunique() < 2:
            raise CoxError(f"{name} takes a single value among the patients analysed: its effect cannot be estimated")
        if values.nunique() == 2:
            with_events = complete.loc[complete[event] == 1, name].nunique()
            if with_events < 2:
                raise CoxError(
                    f"all deaths occurred at one value of {name} (complete separation): the hazard ratio is "
                    "infinite or zero and the usual Cox estimate does not exist"
                )
    epv = events / len(covariates)
    if epv < MIN_EVENTS_PER_VARIABLE:
        notes.append(f"{epv:.1f} events per variable (< {MIN_EVENTS_PER_VARIABLE}): estimates may be overfitted")
    fitter = CoxPHFitter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", ConvergenceWarning)
            fitter.fit(complete, duration_col=duration, event_col=event)
    except (ConvergenceError, ConvergenceWarning) as error:
        raise CoxError(f"the model did not converge ({str(error).splitlines()[0]})") from None
    summary = fitter.summary
    terms = [
        Term(
            name,
            float(summary.loc[name, "coef"]),
            float(summary.loc[name, "se(coef)"]),
            float(summary.loc[name, "exp(coef)"]),
            float(summary.loc[name, "exp(coef) lower 95%"]),
            float(summary.loc[name, "exp(coef) upper 95%"]),
            float(summary.loc[name, "p"]),
        )
        for name in covariates
    ]
    zph = cox_zph(
        complete[list(covariates)].to_numpy(float),
        complete[duration].to_numpy(float),
        complete[event].to_numpy(),
        fitter.params_[list(covariates)].to_numpy(),
        covariates,
    )
    return CoxResult(terms, len(complete), events, dropped, epv, zph, notes)
