"""Propensity-score weighting: the propensity model, the weights, and the balance they achieve.

The propensity score is the probability of starting tofacitinib rather than tacrolimus given the baseline
covariates, from a logistic regression fitted by iteratively reweighted least squares, as R's
``glm(tofacitinib ~ ..., family = binomial)`` (run here to the last digits). Two weightings of it:

- ``iptw``: stabilised inverse-probability-of-treatment weights for the average treatment effect (ATE), P(T = t) /
  P(T = t | x), as WeightIt's ``weightit(..., estimand = "ATE", stabilize = TRUE)``;
- ``overlap``: overlap weights (ATO; Li, Morgan & Zaslavsky 2018), 1 - e(x) for the treated and e(x) for the others:
  bounded, they give most weight to the patients who could have had either drug.

Weights may be truncated at a percentile within each group (R's ``quantile`` type 7). Balance is read the way R's
cobalt reads it: the standardised mean difference of each covariate, the weighted difference of means over the
*unweighted* pooled standard deviation sqrt((s1^2 + s0^2) / 2), binary covariates standardised too with
s^2 = p(1 - p); variance ratios (treated over reference, weighted variances with cobalt's bias correction) for
continuous covariates; and Kish's effective sample size (sum w)^2 / sum w^2 per group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import expit, ndtr

#: The weightings, by the name the configuration and the results use.
WEIGHTINGS = {
    "iptw": "IPTW (stabilised, ATE)",
    "overlap": "Overlap weights (ATO)",
}
#: An absolute standardised mean difference above this is imbalance (Austin 2009's 0.1).
SMD_THRESHOLD = 0.1
#: Newton-Raphson for the propensity model stops at a step this small relative to 1 + |coefficient|.
STEP_TOLERANCE = 1e-10
MAX_ITERATIONS = 50
#: A fitted probability this close to 0 or 1 means the groups are (nearly) separated by the covariates.
SEPARATED = 1e-8


class PropensityError(ValueError):
    """The propensity model cannot be estimated; the message says why."""


@dataclass(frozen=True)
class PropensityTerm:
    name: str
    coef: float  # log odds ratio of starting the exposure drug
    se: float
    odds_ratio: float
    p: float  # Wald, as glm's summary


@dataclass(frozen=True)
class PropensityModel:
    covariates: list[str]
    terms: list[PropensityTerm]  # "(Intercept)" first, as glm
    n: int
    exposed: int
    dropped_missing: int  # patients left out for a missing covariate
    iterations: int


def fit_propensity(table: pd.DataFrame, exposure: str, covariates: Sequence[str]) -> tuple[pd.Series, PropensityModel]:
    """The propensity score of each patient with every covariate (complete cases) and the model it came from."""
    data = table[[exposure, *covariates]].astype(float)
    complete = data.dropna()
    treated = complete[exposure].to_numpy()
    if len(np.unique(treated)) < 2:
        raise PropensityError("every patient with the propensity covariates had the same drug: no propensity model")
    for name in covariates:
        if complete[name].nunique() < 2:
            raise PropensityError(f"{name} takes a single value among the patients: drop it from the propensity model")
    x = np.column_stack([np.ones(len(complete)), complete[list(covariates)].to_numpy()])
    beta = np.zeros(x.shape[1])
    iterations = 0
    for iterations in range(1, MAX_ITERATIONS + 1):  # noqa: B007 (the count is reported)
        p = expit(x @ beta)
        information = x.T @ (x * (p * (1 - p))[:, None])
        try:
            step = np.linalg.solve(information, x.T @ (treated - p))
        except np.linalg.LinAlgError:
            raise PropensityError("the propensity covariates are collinear: the model cannot be estimated") from None
        beta = beta + step
        if np.all(np.abs(step) <= STEP_TOLERANCE * (1 + np.abs(beta))):
            break
    else:
        raise PropensityError(
            f"the propensity model did not converge in {MAX_ITERATIONS} iterations: the covariates may separate the "
            "groups"
        )
    p = expit(x @ beta)
    if np.any((p < SEPARATED) | (p > 1 - SEPARATED)):
        raise PropensityError(
            "fitted propensity scores of 0 or 1: the covariates (nearly) separate the groups, and weighting is not "
            "possible"
        )
    se = np.sqrt(np.diag(np.linalg.inv(x.T @ (x * (p * (1 - p))[:, None]))))
    terms = [
        PropensityTerm(name, float(b), float(s), float(np.exp(b)), float(2 * ndtr(-abs(b / s))))
        for name, b, s in zip(["(Intercept)", *covariates], beta, se, strict=True)
    ]
    model = PropensityModel(
        list(covariates), terms, len(complete), int(treated.sum()), len(data) - len(complete), iterations
    )
    return pd.Series(p, index=complete.index, name="propensity"), model


def propensity_weights(score: np.ndarray, treated: np.ndarray, weighting: str) -> np.ndarray:
    """The weights of ``weighting`` (a key of :data:`WEIGHTINGS`) for propensity ``score`` and exposure 0/1."""
    treated = np.asarray(treated, dtype=bool)
    if weighting == "iptw":
        share = treated.mean()
        return np.where(treated, share / score, (1 - share) / (1 - score))
    if weighting == "overlap":
        return np.where(treated, 1 - score, score)
    raise ValueError(f"unknown weighting {weighting!r}: choose one of {', '.join(WEIGHTINGS)}")


def truncate_weights(weights: np.ndarray, treated: np.ndarray, percentile: float) -> np.ndarray:
    """Weights above the ``percentile``-th percentile of their group's set to it (R's quantile, type 7)."""
    treated = np.asarray(treated, dtype=bool)
    capped = np.asarray(weights, dtype=float).copy()
    for group in (treated, ~treated):
        capped[group] = np.minimum(capped[group], np.percentile(capped[group], percentile))
    return capped


def effective_sample_size(weights: np.ndarray) -> float:
    """Kish's effective sample size, (sum w)^2 / sum w^2."""
    return float(weights.sum() ** 2 / (weights**2).sum())


@dataclass(frozen=True)
class Balance:
    covariate: str
    binary: bool
    smd_before: float  # standardised mean difference, exposure minus reference, unweighted
    smd_after: float  # weighted
    variance_ratio_before: float | None  # exposure over reference; None for a binary covariate
    variance_ratio_after: float | None


def _is_binary(values: np.ndarray) -> bool:
    return set(np.unique(values)) <= {0.0, 1.0}


def _mean(values: np.ndarray, weights: np.ndarray) -> float:
    return float(weights @ values / weights.sum())


def _variance(values: np.ndarray, weights: np.ndarray, binary: bool) -> float:
    """cobalt's col_w_var: p(1 - p) for a binary covariate, else the weighted variance with the bias correction
    sum w / ((sum w)^2 - sum w^2) (the usual n - 1 when the weights are equal)."""
    mean = _mean(values, weights)
    if binary:
        return mean * (1 - mean)
    total = weights.sum()
    return float(weights @ (values - mean) ** 2 * total / (total**2 - (weights**2).sum()))


def balance(covariates: pd.DataFrame, treated: np.ndarray, weights: np.ndarray) -> list[Balance]:
    """Balance of each covariate column before and after ``weights``, as cobalt's ``bal.tab(..., binary = "std",
    s.d.denom = "pooled", disp.v.ratio = TRUE)``."""
    treated = np.asarray(treated, dtype=bool)
    ones = np.ones(len(treated))
    result = []
    for name in covariates.columns:
        values = covariates[name].to_numpy(float)
        binary = _is_binary(values)
        pooled = np.sqrt(
            (_variance(values[treated], ones[treated], binary) + _variance(values[~treated], ones[~treated], binary))
            / 2
        )

        def smd(w: np.ndarray, values: np.ndarray = values, pooled: float = pooled) -> float:
            return (_mean(values[treated], w[treated]) - _mean(values[~treated], w[~treated])) / pooled

        def ratio(w: np.ndarray, values: np.ndarray = values, binary: bool = binary) -> float | None:
            if binary:
                return None
            return _variance(values[treated], w[treated], False) / _variance(values[~treated], w[~treated], False)

        result.append(Balance(name, binary, float(smd(ones)), float(smd(weights)), ratio(ones), ratio(weights)))
    return result
