"""Cox proportional-hazards models (lifelines, Efron ties) and R's ``cox.zph`` test.

``cox_zph`` re-implements the proportional-hazards score test of R survival >= 3
(``cox.zph(fit, transform = "km")``): for each term, a score test of adding
beta_j * g(t) * x_j with g(t) = 1 - KM(t-) centred over the deaths, the fitted
coefficients held fixed and their estimation accounted for; plus the global test.
lifelines' ``check_assumptions`` computes a different statistic and no global test.

When the usual estimate does not exist (all deaths at one value of a binary covariate,
or a likelihood that keeps rising: monotone likelihood) ``fit_cox`` says so and, unless
told not to, gives Firth's penalised estimate instead (Heinze & Schemper 2001, as in R's
``coxphf``): profile-likelihood confidence limits and penalised likelihood-ratio p-values.
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

#: lifelines' Newton-Raphson run to convergence: its defaults stop while the step still moves the estimate by up to
#: 1e-4 relative (the Newton decrement below 1e-7), a step short of R's coxph; to 1e-16, the coefficients, hazard
#: ratios, limits and p-values equal R's to 1e-6 (tests/test_cox_reference.py). The relative change of the log
#: likelihood is not a criterion (r_precision 0): it stops too early in the same way.
CONVERGENCE = {"precision": 1e-16, "r_precision": 0.0}
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
    method: str = "partial likelihood"  # or FIRTH when the usual estimate does not exist


FIRTH = "Firth-penalised partial likelihood"


class CoxError(ValueError):
    """The model cannot be estimated; the message says why in plain words."""


def _separation(complete: pd.DataFrame, event: str, covariates: Sequence[str]) -> str | None:
    """Why the usual estimate cannot exist, for a binary covariate with deaths at one value only."""
    for name in covariates:
        values = complete[name]
        if values.nunique() == 2 and complete.loc[complete[event] == 1, name].nunique() < 2:
            return (
                f"all deaths occurred at one value of {name} (complete separation): the hazard ratio is "
                "infinite or zero and the usual Cox estimate does not exist"
            )
    return None


def _fit_firth(complete: pd.DataFrame, duration: str, event: str, covariates: Sequence[str]) -> list[Term]:
    """Firth's penalised Cox model (Breslow ties): PL confidence limits, penalised LR p-values."""
    from firthmodels import FirthCoxPH  # imported here: it loads scikit-learn, and few models need it

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = FirthCoxPH(backend="numpy").fit(
                complete[list(covariates)].to_numpy(float),
                (complete[event].to_numpy(bool), complete[duration].to_numpy(float)),
            )
        except (ValueError, np.linalg.LinAlgError) as error:  # scipy's LinAlgError is numpy's
            raise CoxError(f"Firth's penalised estimate failed too ({error})") from None
        if model.converged_:
            model.lrt()
            limits = model.conf_int(method="pl")
    if caught or not model.converged_:
        reason = str(caught[0].message).splitlines()[0] if caught else "no convergence"
        raise CoxError(f"Firth's penalised estimate failed too ({reason})")
    return [
        Term(name, float(coef), float(se), float(np.exp(coef)), float(np.exp(lo)), float(np.exp(hi)), float(p))
        for name, coef, se, (lo, hi), p in zip(
            covariates, model.coef_, model.bse_, limits, model.lrt_pvalues_, strict=True
        )
    ]


def _schoenfeld_pieces(x: np.ndarray, time: np.ndarray, event: np.ndarray, beta: np.ndarray):  # noqa: ANN202
    """Per death: Schoenfeld residual and g(t); per death time: Efron information and g.

    Vectorised over death times: the risk-set sums of every death time are read off
    cumulative sums over the patients sorted by time (latest first), and Efron's tie
    fractions are laid out one per death, so the cost grows with n, not n x death times.
    """
    n, p = x.shape
    risk = np.exp(x @ beta)
    outer = x[:, :, None] * x[:, None, :]
    order = np.argsort(-time, kind="stable")  # latest first: a prefix is the risk set of its last time
    cum_w = np.cumsum(risk[order])
    cum_wx = np.cumsum(risk[order, None] * x[order], axis=0)
    cum_wxx = np.cumsum(risk[order, None, None] * outer[order], axis=0)
    death_times = np.unique(time[event])
    at_risk = n - np.searchsorted(np.sort(time), death_times, side="left")  # patients with time >= t
    s0, s1, s2 = cum_w[at_risk - 1], cum_wx[at_risk - 1], cum_wxx[at_risk - 1]

    dead = np.flatnonzero(event)
    which = np.searchsorted(death_times, time[dead])  # each death's death time
    d = np.bincount(which, minlength=len(death_times))
    s0d = np.bincount(which, weights=risk[dead], minlength=len(death_times))
    s1d, s2d = np.zeros((len(death_times), p)), np.zeros((len(death_times), p, p))
    np.add.at(s1d, which, risk[dead, None] * x[dead])
    np.add.at(s2d, which, risk[dead, None, None] * outer[dead])

    # Efron: the tied deaths leave the risk set a fraction k / d at a time, k = 0 .. d - 1
    by_time = np.argsort(which, kind="stable")
    first = np.concatenate([[0], np.cumsum(d)[:-1]])
    k = np.empty(len(dead), dtype=int)
    k[by_time] = np.arange(len(dead)) - first[which[by_time]]
    f = (k / d[which])[:, None]
    denominator = s0[which] - f[:, 0] * s0d[which]
    mean = (s1[which] - f * s1d[which]) / denominator[:, None]
    term = (s2[which] - f[:, :, None] * s2d[which]) / denominator[:, None, None] - mean[:, :, None] * mean[:, None, :]
    v = np.zeros((len(death_times), p, p))
    np.add.at(v, which, term)
    mean_by_time = np.zeros((len(death_times), p))
    np.add.at(mean_by_time, which, mean)
    mean_by_time /= d[:, None]

    km = KaplanMeierFitter().fit(time, event).survival_function_.iloc[:, 0]
    before = np.searchsorted(km.index.to_numpy(), death_times, side="left") - 1  # KM(t-), left-continuous
    g = 1.0 - np.where(before >= 0, km.to_numpy()[np.maximum(before, 0)], 1.0)
    residuals = x[dead] - mean_by_time[which]
    return residuals, g[which], list(zip(g, d, v, strict=True))


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


def _fit_lifelines(complete: pd.DataFrame, duration: str, event: str, covariates: Sequence[str]) -> CoxPHFitter:
    """lifelines' fit, then its Newton-Raphson carried on from there to convergence (:data:`CONVERGENCE`).

    The first fit keeps lifelines' own warnings of a likelihood that keeps rising (refused, so that Firth's estimate
    is shown); the second only polishes an estimate that exists, and a standard error that is not finite there is
    refused the same way."""
    first = CoxPHFitter()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        first.fit(complete, duration_col=duration, event_col=event)
        fitter = CoxPHFitter().fit(complete, duration_col=duration, event_col=event,
                                   initial_point=first.params_.to_numpy(), fit_options=CONVERGENCE)  # fmt: skip
    if not np.isfinite(fitter.standard_errors_.to_numpy()).all():
        raise ConvergenceError("the information matrix is singular at the estimate: a coefficient may be infinite")
    return fitter


def _terms(fitter: CoxPHFitter, covariates: Sequence[str]) -> list[Term]:
    summary = fitter.summary
    return [
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


def fit_cox(
    table: pd.DataFrame, duration: str, event: str, covariates: Sequence[str], *, firth: bool = True
) -> CoxResult:
    """A Cox model of ``covariates`` (numeric columns), complete cases, Efron ties.

    Where the usual estimate does not exist, ``firth`` decides between Firth's
    penalised estimate (with a note saying why) and a ``CoxError``.
    """
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
        if complete[name].nunique() < 2:
            raise CoxError(f"{name} takes a single value among the patients analysed: its effect cannot be estimated")
    epv = events / len(covariates)
    if epv < MIN_EVENTS_PER_VARIABLE:
        notes.append(f"{epv:.1f} events per variable (< {MIN_EVENTS_PER_VARIABLE}): estimates may be overfitted")
    problem = _separation(complete, event, covariates)
    if problem is None:
        try:
            fitter = _fit_lifelines(complete, duration, event, covariates)
        except (ConvergenceError, ConvergenceWarning) as error:
            problem = f"the model did not converge ({str(error).splitlines()[0]})"
    if problem is not None:
        if not firth:
            raise CoxError(problem)
        notes.append(
            f"{problem}; shown instead: Firth's penalised estimate (Heinze & Schemper 2001; Breslow ties), "
            "profile-likelihood 95% CI and penalised likelihood-ratio p; no proportional-hazards test"
        )
        try:
            terms = _fit_firth(complete, duration, event, covariates)
        except CoxError as error:
            raise CoxError(f"{problem}; {error}") from None
        return CoxResult(terms, len(complete), events, dropped, epv, [], notes, ties="Breslow", method=FIRTH)
    zph = cox_zph(
        complete[list(covariates)].to_numpy(float),
        complete[duration].to_numpy(float),
        complete[event].to_numpy(),
        fitter.params_[list(covariates)].to_numpy(),
        covariates,
    )
    return CoxResult(_terms(fitter, covariates), len(complete), events, dropped, epv, zph, notes)
