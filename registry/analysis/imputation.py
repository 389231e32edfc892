"""Multiple imputation of missing baseline covariates by chained equations, and Rubin's rules for Cox models.

Each of m imputations is its own chain (as R's mice): missing values start as random draws of the observed ones,
then, for ``iterations`` rounds, each incomplete covariate is imputed in turn by predictive mean matching from all
the others, the exposure, the event indicator and the Nelson-Aalen cumulative hazard at the patient's time (White &
Royston 2009). Predictive mean matching is R mice's default, ``mice.impute.pmm``: a Bayesian linear regression
(coefficients and residual variance drawn from their posterior, ridge 1e-5), the observed cases' predictions from
the fitted coefficients and the missing ones' from the drawn (type 1 matching), and each missing value taken from
one of the 5 observed cases with the nearest predictions. Imputed values are always observed values: a binary
covariate stays 0/1, a grade stays whole. The sampler is written here rather than taken from statsmodels
(MICEData, one chain, not the per-imputation chains of mice) because importing statsmodels costs seconds in every
analysis; the pooling below is checked against R's ``mice::pool`` on the same data sets (tests/r/imputation_*).

Pooling follows Rubin (1987) with the Barnard & Rubin (1999) degrees of freedom, exactly as ``mice::pool``: for a
Cox model the complete-data degrees of freedom are the number of events minus the number of coefficients (mice takes
``nobs``, which for a coxph fit counts events, as survival's ``nobs.coxph``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import stdtr, stdtrit  # Student's t as scipy.stats.t computes it, without its 0.4 s import

from registry.analysis.cox import CoxError, CoxResult, Term, fit_cox
from registry.analysis.threads import map_in_threads

#: Donors per missing value and the ridge of mice.impute.pmm's defaults.
DONORS = 5
RIDGE = 1e-5
#: Rounds of the chained equations per imputation (mice's default maxit is 5).
ITERATIONS = 10


class ImputationError(ValueError):
    """The imputation cannot be made as asked; the message names the column."""


def nelson_aalen(time: pd.Series, event: pd.Series) -> np.ndarray:
    """The Nelson-Aalen cumulative hazard at each patient's own time, tied deaths counted together (d / n; mice's
    ``nelsonaalen`` takes coxph's baseline hazard, which splits them Efron's way: a predictor either way)."""
    times = np.asarray(time, dtype=float)
    distinct, inverse = np.unique(times, return_inverse=True)
    leaving = np.bincount(inverse, minlength=len(distinct))
    deaths = np.bincount(inverse, weights=np.asarray(event, dtype=float), minlength=len(distinct))
    at_risk = len(times) - np.concatenate(([0], np.cumsum(leaving)[:-1]))
    return np.cumsum(deaths / at_risk)[inverse]


def stable_argsort(values: np.ndarray) -> np.ndarray:
    """``np.argsort(values, kind="stable")``, equal values in the order they come, at the cost of the much faster
    unstable sort: the unstable order is right but for the runs of equal values, which are put back in order of
    position (none, as a rule, for predictions from continuous predictors)."""
    order = np.argsort(values)
    ordered = values[order]
    tied = ordered[1:] == ordered[:-1]
    if not tied.any():
        return order
    in_run = np.zeros(len(values), dtype=bool)
    in_run[:-1] |= tied
    in_run[1:] |= tied
    at = np.flatnonzero(in_run)  # the runs are blocks of these positions, in order: sorting (run, position) keys
    run = np.cumsum(np.concatenate(([True], ~tied)))[at]  # puts each back in its own block
    order[at] = np.sort(run * len(values) + order[at]) % len(values)
    return order


def _pmm(x_obs: np.ndarray, y_obs: np.ndarray, x_mis: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draws for the missing values of a covariate by predictive mean matching (mice.impute.pmm, matchtype 1) from its
    observed values ``y_obs``; ``x_obs`` and ``x_mis`` hold the predictors of the observed and the missing rows, an
    intercept first."""
    xtx = x_obs.T @ x_obs
    v = np.linalg.inv(xtx + np.diag(RIDGE * np.diag(xtx)))
    coef = v @ x_obs.T @ y_obs
    residual = y_obs - x_obs @ coef
    df = max(len(y_obs) - x_obs.shape[1], 1)
    sigma = np.sqrt(residual @ residual / rng.chisquare(df))
    drawn = coef + np.linalg.cholesky((v + v.T) / 2) @ rng.standard_normal(len(coef)) * sigma
    predicted_obs, predicted_mis = x_obs @ coef, x_mis @ drawn
    order = stable_argsort(predicted_obs)
    donors = nearest_donors(predicted_obs[order], predicted_mis, rng.random(len(predicted_mis)))
    return y_obs[order[donors]]


def nearest_donors(sorted_obs: np.ndarray, predicted: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """For each missing value's ``predicted`` mean, one of the :data:`DONORS` observed cases nearest to it (their
    predictions ``sorted_obs``, ascending), the ``draws`` (uniform on [0, 1)) choosing which: the one at that rank,
    the nearest first and, at equal distance, the one sorted first (mice's matcher).

    The nearest lie on either side of where the prediction would sort, closer and closer cases being taken from the
    left or the right in turn: five steps over every missing value at once. Where equal predictions lie to the left,
    taking them in turn would give the later one first: those missing values get their donors by sorting the
    distances to the ten cases around them (:func:`_nearest_donors_by_sorting`), which gives the same donors
    everywhere, at several times the cost."""
    n = len(sorted_obs)
    by_value = np.argsort(predicted)  # searched in sorted order, each search starts near where the last one ended
    insert = np.empty(len(predicted), dtype=np.intp)
    insert[by_value] = np.searchsorted(sorted_obs, predicted[by_value])
    lowest, highest = np.maximum(insert - DONORS, 0), np.minimum(insert + DONORS - 1, n - 1)
    rank = (draws * np.minimum(DONORS, highest - lowest + 1)).astype(int)
    left, right = insert - 1, insert.copy()
    donors = np.empty(len(predicted), dtype=np.intp)
    for step in range(DONORS):
        has_left, has_right = left >= lowest, right <= highest
        closer_left = predicted - sorted_obs[np.maximum(left, 0)] <= sorted_obs[np.minimum(right, n - 1)] - predicted
        take_left = has_left & (~has_right | closer_left)
        now = rank == step
        donors[now] = np.where(take_left, left, right)[now]
        left -= take_left
        right += ~take_left
    equal_next = np.concatenate(([0], np.cumsum(sorted_obs[1:] == sorted_obs[:-1])))  # equal pairs (p, p + 1) before p
    tied = np.flatnonzero(equal_next[np.maximum(insert - 1, 0)] > equal_next[lowest])
    if len(tied):
        donors[tied] = _nearest_donors_by_sorting(sorted_obs, predicted[tied], draws[tied], insert[tied])
    return donors


def _nearest_donors_by_sorting(
    sorted_obs: np.ndarray, predicted: np.ndarray, draws: np.ndarray, insert: np.ndarray
) -> np.ndarray:
    """:func:`nearest_donors` by a stable sort of the distances to the :data:`DONORS` cases on either side."""
    window = np.clip(insert[:, None] + np.arange(-DONORS, DONORS)[None, :], 0, len(sorted_obs) - 1)
    distance = np.abs(sorted_obs[window] - predicted[:, None])
    distance[:, 1:][window[:, 1:] == window[:, :-1]] = np.inf  # a clipped window repeats its edge: count it once
    nearest = np.argsort(distance, axis=1, kind="stable")[:, :DONORS]
    usable = np.minimum(DONORS, np.isfinite(distance).sum(axis=1))
    rows = np.arange(len(predicted))
    return window[rows, nearest[rows, (draws * usable).astype(int)]]


def impute(
    table: pd.DataFrame,
    columns: Sequence[str],
    *,
    predictors: Sequence[str],
    time: str,
    event: str,
    m: int = 20,
    seed: int = 20221,
    iterations: int = ITERATIONS,
) -> list[pd.DataFrame]:
    """``m`` completed copies of the imputation model's columns of ``table`` (``predictors``, ``time``, ``event``,
    ``columns``; its index kept): the missing values of ``columns`` imputed by chained equations with predictive
    mean matching, from each other, the complete ``predictors`` (the exposure), ``event`` and the Nelson-Aalen hazard
    at ``time``. The same seed gives the same data sets; observed values are never changed."""
    if m < 2:
        raise ImputationError(f"m = {m}: multiple imputation needs at least 2 imputations")
    for name in [*columns, *predictors, time, event]:
        if name not in table.columns:
            raise ImputationError(f"{name}: no such column in the analysis table")
    for name in [*predictors, time, event]:
        if table[name].isna().any():
            raise ImputationError(f"{name}: a predictor of the imputation model must be complete")
    values = table[list(columns)].astype(float).to_numpy()
    missing = np.isnan(values)
    for j, name in enumerate(columns):
        if missing[:, j].all():
            raise ImputationError(f"{name}: every value is missing, so none can be imputed")
    fixed = np.column_stack([
        table[list(predictors)].astype(float).to_numpy(),
        table[event].astype(float).to_numpy(),
        nelson_aalen(table[time], table[event]),
    ])  # fmt: skip
    incomplete = [j for j in range(len(columns)) if missing[:, j].any()]
    # the design: an intercept, the imputed columns (1 .. k), the fixed predictors; column j's model takes every
    # column but its own, in that order. Each model's predictors of its observed and of its missing rows are gathered
    # once per chain and kept up to date as the other columns are imputed (``updates``), not gathered at every step.
    predictors_of = {j: [c for c in range(1 + len(columns) + fixed.shape[1]) if c != 1 + j] for j in incomplete}
    rows_missing = {j: np.flatnonzero(missing[:, j]) for j in incomplete}
    rows_observed = {j: np.flatnonzero(~missing[:, j]) for j in incomplete}
    y_observed = {j: values[rows_observed[j], j] for j in incomplete}
    updates = {j: _updates(j, incomplete, missing, predictors_of, rows_observed, rows_missing) for j in incomplete}

    def chain(imputation: int) -> np.ndarray:
        """One imputation's chain, from its own random stream: the columns with every missing value imputed."""
        rng = np.random.default_rng([seed, imputation])
        current = values.copy()
        for j in incomplete:
            current[rows_missing[j], j] = rng.choice(y_observed[j], len(rows_missing[j]))
        design = np.column_stack([np.ones(len(current)), current, fixed])
        x_obs = {j: design[np.ix_(rows_observed[j], predictors_of[j])] for j in incomplete}
        x_mis = {j: design[np.ix_(rows_missing[j], predictors_of[j])] for j in incomplete}
        for _ in range(iterations):
            for j in incomplete:
                try:
                    drawn = _pmm(x_obs[j], y_observed[j], x_mis[j], rng)
                except np.linalg.LinAlgError:
                    raise ImputationError(
                        f"{columns[j]}: its imputation model cannot be estimated ({(~missing[:, j]).sum()} observed "
                        "values, collinear or constant predictors)"
                    ) from None
                current[rows_missing[j], j] = drawn
                for other, at, in_obs, from_obs, in_mis, from_mis in updates[j]:
                    x_obs[other][in_obs, at] = drawn[from_obs]
                    x_mis[other][in_mis, at] = drawn[from_mis]
        return current

    completed = map_in_threads(chain, range(m), rows=len(table))
    model = table[list(dict.fromkeys([*predictors, time, event, *columns]))]  # the table's other columns stay out
    return [model.assign(**{name: made[:, j] for j, name in enumerate(columns)}) for made in completed]


def _updates(
    j: int, incomplete: list[int], missing: np.ndarray, predictors_of: dict[int, list[int]],
    rows_observed: dict[int, np.ndarray], rows_missing: dict[int, np.ndarray],
) -> list[tuple[int, int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:  # fmt: skip
    """Where column j's new draws go in the other models' predictors: per other model, j's position among its
    predictors, and the rows of its observed and of its missing rows that j's draws fill, with which draw each."""
    position = np.full(len(missing), -1)
    position[rows_missing[j]] = np.arange(len(rows_missing[j]))
    made = []
    for other in incomplete:
        if other != j:
            in_obs = np.flatnonzero(missing[rows_observed[other], j])
            in_mis = np.flatnonzero(missing[rows_missing[other], j])
            made.append((other, predictors_of[other].index(1 + j), in_obs, position[rows_observed[other][in_obs]],
                         in_mis, position[rows_missing[other][in_mis]]))  # fmt: skip
    return made


@dataclass(frozen=True)
class PooledTerm(Term):
    """A coefficient pooled by Rubin's rules (limits and p from the t distribution), with mice::pool's quantities."""

    df: float  # Barnard-Rubin
    ubar: float  # mean within-imputation variance
    b: float  # between-imputation variance
    t: float  # total variance, ubar + (1 + 1/m) b
    riv: float  # relative increase in variance due to nonresponse
    lambda_: float  # proportion of the variance due to nonresponse
    fmi: float  # fraction of missing information


def barnard_rubin(m: int, b: np.ndarray, t: np.ndarray, dfcom: float) -> np.ndarray:
    """The Barnard-Rubin (1999) degrees of freedom, as mice's ``barnard.rubin`` (lambda floored at 1e-4)."""
    lam = np.maximum((1 + 1 / m) * b / t, 1e-4)
    old = (m - 1) / lam**2
    observed = (dfcom + 1) / (dfcom + 3) * dfcom * (1 - lam)
    return old * observed / (old + observed)


def pool(names: Sequence[str], coefs: np.ndarray, variances: np.ndarray, dfcom: float) -> list[PooledTerm]:
    """Rubin's rules for ``coefs`` and their ``variances`` (imputations x terms) with complete-data df ``dfcom``."""
    m = coefs.shape[0]
    qbar, ubar = coefs.mean(axis=0), variances.mean(axis=0)
    b = coefs.var(axis=0, ddof=1)
    t = ubar + (1 + 1 / m) * b
    df = barnard_rubin(m, b, t, dfcom)
    riv = (1 + 1 / m) * b / ubar
    lam = (1 + 1 / m) * b / t
    fmi = (riv + 2 / (df + 3)) / (1 + riv)
    se = np.sqrt(t)
    quantile = stdtrit(df, 0.975)
    p = 2 * stdtr(np.maximum(df, 0.001), -np.abs(qbar / se))  # as mice's summary.mipo
    return [
        PooledTerm(name, *(float(v) for v in row))
        for name, *row in zip(names, qbar, se, np.exp(qbar), np.exp(qbar - quantile * se), np.exp(qbar + quantile * se),
                              p, df, ubar, b, t, riv, lam, fmi, strict=True)
    ]  # fmt: skip


@dataclass
class PooledCox:
    terms: list[PooledTerm]
    n: int
    events: int
    m: int
    dfcom: int
    notes: list[str] = field(default_factory=list)


def fit_cox_imputed(
    datasets: Sequence[pd.DataFrame], duration: str, event: str, covariates: Sequence[str]
) -> PooledCox:
    """The Cox model of ``covariates`` in each imputed data set, pooled; refused where a fit needs Firth's estimate
    (its penalised coefficients are not what Rubin's rules pool)."""

    def fit(data: pd.DataFrame) -> CoxResult:
        return fit_cox(data, duration, event, covariates, firth=False, zph=False)  # the pool has no use for cox.zph

    fits = map_in_threads(fit, datasets, rows=len(datasets[0]) if datasets else 0)
    for number, result in enumerate(fits, start=1):
        if result.dropped_missing:
            raise CoxError(f"imputation {number} still has missing covariates")
    coefs = np.array([[term.coef for term in fit.terms] for fit in fits])
    variances = np.array([[term.se**2 for term in fit.terms] for fit in fits])
    n, events = fits[0].n, fits[0].events
    notes = [note for note in fits[0].notes if "events per variable" in note]
    dfcom = max(events - len(covariates), 1)  # as mice's get.dfcom
    return PooledCox(pool(covariates, coefs, variances, dfcom), n, events, len(fits), dfcom, notes)


def write_imputations(
    datasets: Sequence[pd.DataFrame], directory: Path, *, columns: Sequence[str], description: dict[str, object]
) -> list[Path]:
    """Each imputed data set as ``imputation_NN.csv`` (study_id, a pseudonym, and ``columns``) with a manifest.json
    saying how they were made and how to pool them in R; refuses a directory that already holds files."""
    if directory.exists() and any(directory.iterdir()):
        raise ImputationError(f"{directory}: the directory is not empty; give a new or empty one")
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for number, data in enumerate(datasets, start=1):
        path = directory / f"imputation_{number:02d}.csv"
        data[list(columns)].to_csv(path, index=True, index_label="study_id", float_format="%.17g")
        written.append(path)
    formula = description.get("model_formula", "Surv(cox_time, cox_event) ~ ...")
    manifest = {
        **description,
        "files": [path.name for path in written],
        "columns": ["study_id", *columns],
        "pool_in_r": [
            "library(survival); library(mice)",
            'files <- sort(Sys.glob("imputation_*.csv"))',
            f"fits <- lapply(files, function(f) coxph({formula}, data = read.csv(f), ties = 'efron'))",
            "summary(pool(as.mira(fits)), conf.int = TRUE, exponentiate = TRUE)",
        ],
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
    return written
