"""Cox proportional-hazards models (Efron ties, as R's ``coxph``) and R's ``cox.zph`` test.

``fit_cox`` maximises Efron's partial likelihood by Newton-Raphson, vectorised over the death times, to the last
digits (R's coxph stops a step earlier; its numbers are within 1e-6 of ours). lifelines' ``CoxPHFitter``, which
took 20-200 ms a model where this takes a few, stays beside R as the tests' oracle.

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
from scipy.special import chdtrc, ndtr

from registry.analysis.survival import Z_95, fit_km

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
    variance: str = "model-based"  # or ROBUST: weighted models, as R's coxph(..., robust = TRUE)


FIRTH = "Firth-penalised partial likelihood"
ROBUST = "robust (sandwich)"


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


@dataclass(frozen=True)
class _Design:
    """What Efron's partial likelihood needs of the covariates and the follow-up, worked out once for every
    evaluation at a beta: the patients latest first (a prefix is the risk set of its last time) and the deaths by
    time."""

    x: np.ndarray  # the patients' covariates, latest time first
    weight: np.ndarray  # their case weights, in that order (1 without weights)
    last_at_risk: np.ndarray  # per death time: the last patient at risk (time >= t)
    times_at_risk: np.ndarray  # per patient, in that order: how many death times (the first ones) it is at risk at
    x_dead: np.ndarray  # the deaths' covariates, by time
    weight_dead: np.ndarray  # their case weights
    tied_weight: np.ndarray  # per death: the mean case weight of the deaths at its time (R's meanwt)
    which: np.ndarray  # each death's death time (non-decreasing)
    first: np.ndarray  # per death time: its first death
    fraction: np.ndarray  # per death: Efron's k / d, k = 0 .. d - 1 (the tied deaths leave the risk set in turn)


def _design(x: np.ndarray, time: np.ndarray, event: np.ndarray, weight: np.ndarray | None = None) -> _Design:
    weight = np.ones(len(time)) if weight is None else weight
    order = np.argsort(-time, kind="stable")
    death_times = np.unique(time[event])
    at_risk = len(time) - np.searchsorted(np.sort(time), death_times, side="left")
    dead = np.flatnonzero(event)
    dead = dead[np.argsort(time[dead], kind="stable")]
    which = np.searchsorted(death_times, time[dead])
    ties = np.bincount(which, minlength=len(death_times))
    first = np.concatenate(([0], np.cumsum(ties)[:-1]))
    fraction = (np.arange(len(dead)) - first[which]) / ties[which]
    tied_weight = (np.add.reduceat(weight[dead], first) / ties)[which] if len(dead) else np.zeros(0)
    # the death times at or before a patient's own time, whose risk sets it is in
    times_at_risk = np.searchsorted(death_times, time[order], side="right")
    return _Design(
        x[order], weight[order], at_risk - 1, times_at_risk, x[dead], weight[dead], tied_weight, which, first,
        fraction,
    )  # fmt: skip


@dataclass(frozen=True)
class _Efron:
    """Efron's log partial likelihood at a beta, its score and information; per death the risk-weighted mean of
    the covariates and its share of the baseline hazard."""

    loglik: float
    score: np.ndarray
    information: np.ndarray
    mean: np.ndarray
    hazard: np.ndarray  # per death: its share of the baseline hazard's jump, the deaths' mean weight / its denominator
    denominator: np.ndarray  # per death: Efron's risk-set sum, the tied deaths before it taken out by k / d
    risk: np.ndarray  # per patient (the design's order): case weight x exp(x beta)
    risk_dead: np.ndarray  # the same per death


def _risk_set_sums(d: _Design, risk: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per death time, the sum of ``risk`` x ``values`` (the patients latest first) over its risk set: the sums
    over the patients who join it (one block each) summed cumulatively over the death times, not over every
    patient (the patients outnumber the times many-fold)."""
    ends = d.last_at_risk[::-1]
    joining, at_risk = np.concatenate(([0], ends[:-1] + 1)), ends[-1] + 1  # fit_cox asks for a death at least
    shape = (slice(None),) + (None,) * (values.ndim - 1)
    return np.cumsum(np.add.reduceat(risk[:at_risk][shape] * values[:at_risk], joining, axis=0), axis=0)[::-1]


def _efron(design: _Design, beta: np.ndarray) -> _Efron:
    """Vectorised over death times, so the cost grows with n, not n x times. Case weights enter as R's coxph weighs
    them: each patient's risk times its weight, each of d tied deaths' terms times the mean weight of the d.

    The information, sum over deaths of w (S2 - f S2d) / D - w m m' (S2 the risk set's sum of r x x', S2d the tied
    deaths', m the mean), is summed patient by patient instead of death by death: each patient's r x x' enters
    the S2 of every death time it is at risk at, with the sum of those deaths' w / D, so the S2 part is one
    product X' diag(r c) X and no n x k x k array of outer products is made."""
    d, which, first = design, design.which, design.first
    risk = d.weight * np.exp(d.x @ beta)
    eta_dead = d.x_dead @ beta
    risk_dead = d.weight_dead * np.exp(eta_dead)
    s0 = _risk_set_sums(d, risk, np.ones(len(risk)))
    s1 = _risk_set_sums(d, risk, d.x)
    s0d = np.add.reduceat(risk_dead, first)
    s1d = np.add.reduceat(risk_dead[:, None] * d.x_dead, first, axis=0)
    f = d.fraction
    denominator = s0[which] - f * s0d[which]
    mean = (s1[which] - f[:, None] * s1d[which]) / denominator[:, None]
    share = d.tied_weight / denominator
    by_patient = risk * np.concatenate(([0.0], np.cumsum(np.add.reduceat(share, first))))[d.times_at_risk]
    by_death = risk_dead * np.add.reduceat(f * share, first)[which]
    information = (
        (d.x * by_patient[:, None]).T @ d.x
        - (d.x_dead * by_death[:, None]).T @ d.x_dead
        - (mean * d.tied_weight[:, None]).T @ mean
    )
    return _Efron(
        loglik=float(d.weight_dead @ eta_dead - d.tied_weight @ np.log(denominator)),
        score=d.weight_dead @ d.x_dead - d.tied_weight @ mean,
        information=(information + information.T) / 2,
        mean=mean,
        hazard=share,
        denominator=denominator,
        risk=risk,
        risk_dead=risk_dead,
    )


def _information_by_time(design: _Design, at: _Efron) -> np.ndarray:
    """Per death time, its share of the information at ``at`` (for ``cox.zph``): the risk sets' sums of r x x'
    themselves, one k x k matrix per death time."""
    d, which, first = design, design.which, design.first
    s2 = _risk_set_sums(d, at.risk, d.x[:, :, None] * d.x[:, None, :])
    s2d = np.add.reduceat(at.risk_dead[:, None, None] * (d.x_dead[:, :, None] * d.x_dead[:, None, :]), first, axis=0)
    term = (s2[which] - d.fraction[:, None, None] * s2d[which]) / at.denominator[:, None, None]
    term -= at.mean[:, :, None] * at.mean[:, None, :]
    term *= d.tied_weight[:, None, None]
    return np.add.reduceat(term, first, axis=0)


def _robust_variance(
    x: np.ndarray, time: np.ndarray, event: np.ndarray, weight: np.ndarray, beta: np.ndarray, at: _Efron
) -> np.ndarray:
    """The sandwich variance of R's ``coxph(..., weights = w, robust = TRUE)``: I^-1 (sum_i w_i^2 U_i U_i') I^-1, with
    U_i patient i's score residual under Efron's ties (R's coxscore2: a death at a tied time takes 1/d of each
    tied term and stays in its risk sets with weight 1 - k/d), each patient its own cluster."""
    design = _design(x, time, event, weight)
    death_times = np.unique(time[event])
    first, fraction, h, mean = design.first, design.fraction, at.hazard, at.mean
    ties = np.diff(np.append(first, len(fraction)))
    cum_h = np.cumsum(np.add.reduceat(h, first))
    cum_hm = np.cumsum(np.add.reduceat(h[:, None] * mean, first, axis=0), axis=0)
    mean_by_time = np.add.reduceat(mean, first, axis=0) / ties[:, None]
    own_h = np.add.reduceat(fraction * h, first)
    own_hm = np.add.reduceat((fraction * h)[:, None] * mean, first, axis=0)
    last = np.searchsorted(death_times, time, side="right") - 1  # each patient's last death time at risk
    seen = last >= 0
    at_last = np.maximum(last, 0)
    score = np.exp(x @ beta)[:, None]
    residual = np.where(seen[:, None], -score * (x * cum_h[at_last][:, None] - cum_hm[at_last]), 0.0)
    died = event & seen
    k = at_last[died]
    residual[died] += x[died] - mean_by_time[k] + score[died] * (x[died] * own_h[k][:, None] - own_hm[k])
    inverse = np.linalg.inv(at.information)
    weighted = residual * weight[:, None]
    return inverse @ (weighted.T @ weighted) @ inverse


class _NoEstimate(Exception):
    """The Newton-Raphson iterations found no finite maximum; the message says what was seen."""


#: Newton-Raphson stops at a step that moves no coefficient by more than this (relative to 1 + its size): the
#: estimate is then at the maximum to the last digits. R's coxph stops at a relative change of the log likelihood
#: below 1e-9, a step or so earlier: its numbers are within 1e-6 of ours (tests/test_cox_reference.py).
STEP_TOLERANCE = 1e-10
#: A log likelihood that rises by less than this (relative) while a coefficient still moves by more than
#: :data:`STALLED_STEP` is not converging but running away: the coefficient is infinite (monotone likelihood).
FLAT = 1e-15
STALLED_STEP = 1e-5
MAX_ITERATIONS = 50


def _newton_raphson(design: _Design, names: Sequence[str]) -> tuple[np.ndarray, _Efron]:
    """The maximum of Efron's partial likelihood from beta = 0, halving a step that lowers it (as R's coxph)."""
    beta = np.zeros(design.x.shape[1])
    current = _efron(design, beta)
    for _ in range(MAX_ITERATIONS):
        try:
            step = np.linalg.solve(current.information, current.score)
        except np.linalg.LinAlgError:
            raise _NoEstimate("the information matrix is singular: a coefficient may be infinite") from None
        if np.all(np.abs(step) <= STEP_TOLERANCE * (1 + np.abs(beta))):
            beta = beta + step
            return beta, _efron(design, beta)
        rounding = 1e-13 * abs(current.loglik)  # a fall smaller than this is the sums' rounding, not a worse beta
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for _halving in range(30):
                candidate = _efron(design, beta + step)
                if np.isfinite(candidate.loglik) and candidate.loglik >= current.loglik - rounding:
                    break
                step = step / 2
            else:
                raise _NoEstimate("no step raised the log likelihood")
        flat = candidate.loglik - current.loglik <= FLAT * abs(current.loglik)
        moving = np.abs(step) > STALLED_STEP * (1 + np.abs(beta))
        beta, current = beta + step, candidate
        if flat and moving.any():
            growing = names[int(np.argmax(np.abs(step)))]
            raise _NoEstimate(
                f"the log likelihood stopped rising while the coefficient of {growing} kept growing: it may be infinite"
            )
    raise _NoEstimate(f"no convergence in {MAX_ITERATIONS} Newton-Raphson iterations")


def cox_zph(
    x: np.ndarray, time: np.ndarray, event: np.ndarray, beta: np.ndarray, names: Sequence[str]
) -> list[ZphTest]:
    """R's ``cox.zph(fit, transform = "km")``: per-term and global chi-square tests.

    The score test of beta_j * g(t) * x_j added, g(t) = 1 - KM(t-) at each death centred over the deaths: the
    Schoenfeld residuals weighted by g, against the information split by death time."""
    event = event.astype(bool)
    x = x - x.mean(axis=0)  # the residuals and the information do not change; exp(x beta) stays in range
    design = _design(x, time, event)
    at = _efron(design, beta)
    km = fit_km(time, event)
    death_times = np.sort(time[event])[design.first]
    before = np.searchsorted(km.time, death_times, side="left") - 1  # KM(t-), left-continuous
    g_by_time = 1.0 - np.where(before >= 0, km.surv[np.maximum(before, 0)], 1.0)
    g = g_by_time[design.which]
    residuals = design.x_dead - at.mean
    centred, centred_by_time = g - g.mean(), (g_by_time - g.mean())[:, None, None]
    u = (centred[:, None] * residuals).sum(axis=0)
    i11 = at.information
    by_time = _information_by_time(design, at)
    i12 = (centred_by_time * by_time).sum(axis=0)
    i22 = (centred_by_time**2 * by_time).sum(axis=0)
    tests = []
    for j, name in enumerate(names):
        efficient = i22[j, j] - i12[:, j] @ np.linalg.solve(i11, i12[:, j])
        chisq = float(u[j] ** 2 / efficient)
        tests.append(ZphTest(name, chisq, 1, float(chdtrc(1, chisq))))
    full = i22 - i12.T @ np.linalg.solve(i11, i12)
    chisq = float(u @ np.linalg.solve(full, u))
    tests.append(ZphTest("GLOBAL", chisq, len(names), float(chdtrc(len(names), chisq))))
    return tests


def _fit_efron(
    complete: pd.DataFrame, duration: str, event: str, covariates: Sequence[str], weights: str | None = None
) -> list[Term]:
    """The partial-likelihood estimate and Wald statistics, as R's ``coxph(ties = "efron")``; covariates centred
    (as R does) so that exp(x beta) stays in range. With case ``weights``, the weighted estimate and the robust
    (sandwich) standard errors, as ``coxph(..., weights = w, robust = TRUE)``."""
    x = complete[list(covariates)].to_numpy(float)
    x = x - x.mean(axis=0)
    time, died = complete[duration].to_numpy(float), complete[event].to_numpy(bool)
    weight = None if weights is None else complete[weights].to_numpy(float)
    beta, at = _newton_raphson(_design(x, time, died, weight), covariates)
    with np.errstate(invalid="ignore"):
        try:
            if weight is None:
                se = np.sqrt(np.diag(np.linalg.inv(at.information)))
            else:
                se = np.sqrt(np.diag(_robust_variance(x, time, died, weight, beta, at)))
        except np.linalg.LinAlgError:
            se = np.full(len(beta), np.nan)
    if not np.isfinite(se).all():
        raise _NoEstimate("the information matrix is singular at the estimate: a coefficient may be infinite")
    p = 2 * ndtr(-np.abs(beta / se))
    return [
        Term(name, float(b), float(s), float(np.exp(b)), float(np.exp(b - Z_95 * s)), float(np.exp(b + Z_95 * s)),
             float(pv))
        for name, b, s, pv in zip(covariates, beta, se, p, strict=True)
    ]  # fmt: skip


def fit_cox(
    table: pd.DataFrame,
    duration: str,
    event: str,
    covariates: Sequence[str],
    *,
    firth: bool = True,
    weights: str | None = None,
    zph: bool = True,
) -> CoxResult:
    """A Cox model of ``covariates`` (numeric columns), complete cases, Efron ties.

    Where the usual estimate does not exist, ``firth`` decides between Firth's
    penalised estimate (with a note saying why) and a ``CoxError``. With a column of case
    ``weights`` (inverse-probability weights, say): the weighted estimate with robust standard
    errors and no proportional-hazards test; no Firth fallback (there is no weighted one here). ``zph=False`` leaves
    the proportional-hazards test (cox.zph) out where no one reads it (the fits that multiple imputation pools).
    """
    data = table[[duration, event, *covariates, *([weights] if weights else [])]]
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
            terms = _fit_efron(complete, duration, event, covariates, weights)
        except _NoEstimate as error:
            problem = f"the model did not converge ({error})"
    if problem is not None:
        if not firth or weights:
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
    if weights:
        return CoxResult(terms, len(complete), events, dropped, epv, [], notes, variance=ROBUST)
    if not zph:
        return CoxResult(terms, len(complete), events, dropped, epv, [], notes)
    tests = cox_zph(
        complete[list(covariates)].to_numpy(float),
        complete[duration].to_numpy(float),
        complete[event].to_numpy(),
        np.array([term.coef for term in terms]),
        covariates,
    )
    return CoxResult(terms, len(complete), events, dropped, epv, tests, notes)
