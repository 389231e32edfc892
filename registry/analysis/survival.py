"""Kaplan-Meier curves, numbers at risk and log-rank tests, as plain data.

The Kaplan-Meier estimate is computed here as R's survival package computes it
(``survfit(Surv(time, event) ~ 1, conf.type = ...)``), vectorised: at each distinct time
of follow-up (deaths and censorings) the number at risk (follow-up time >= t), the
deaths, S(t), the standard error of the cumulative hazard (Greenwood), and the 95%
interval of the chosen type (``log``, R's default; ``log-log``; ``plain``), undefined
(None, R's NA) where that type does not exist: at S = 0 for every type, and at S = 1 for
``log-log``. The median and its limits are read off as R's ``quantile.survfit`` reads them
(where the curve sits at 0.5 over an interval, its midpoint). tests/r/km_reference.R holds
R's own numbers for these; lifelines' fitter is the test oracle for S(t). The log-rank
test is R's ``survdiff`` (tests/r/logrank_reference.R), lifelines' tests its oracle.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import chdtrc

from registry.config import KM_CONF_TYPES

#: The two-sided 95% normal quantile, qnorm(0.975).
Z_95 = 1.959963984540054
#: R's quantile.survfit tolerance, sqrt(.Machine$double.eps): a curve within it of 0.5 is at 0.5.
MEDIAN_TOLERANCE = math.sqrt(np.finfo(float).eps)


def r_call(conf_type: str) -> str:
    """The R call that reproduces the curves and intervals of ``conf_type``."""
    return f'survfit(Surv(time, event) ~ group, conf.type = "{conf_type}")'


@dataclass(frozen=True)
class Estimate:
    value: float
    lower: float | None  # None: the interval does not exist there (R's NA)
    upper: float | None


@dataclass(frozen=True)
class Median:
    """The median survival time and its 95% limits; None where the curve (or the band's edge) never reaches 0.5,
    R's NA: the median of a curve that stays above 0.5 is not reached, yet its lower limit may be."""

    value: float | None
    lower: float | None
    upper: float | None


@dataclass(frozen=True)
class KaplanMeier:
    """``survfit``'s table: each distinct follow-up time with its numbers at risk and of deaths, S(t), the
    standard error of the cumulative hazard and the 95% interval (NaN where R gives NA)."""

    time: np.ndarray
    n_risk: np.ndarray
    n_event: np.ndarray
    surv: np.ndarray
    std_err: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    conf_type: str


@dataclass(frozen=True)
class Curve:
    """A Kaplan-Meier step function and its 95% band, ready for plotting."""

    label: str
    time: list[float]
    survival: list[float]
    lower: list[float]  # NaN (null in JSON) where the band does not exist
    upper: list[float]
    censored_times: list[float]
    median: Median | None  # None where neither the curve nor the band's lower edge reaches 0.5
    n: int
    events: int


@dataclass(frozen=True)
class LogRank:
    statistic: float
    df: int
    p: float
    truncated_at: int | None  # days; None for full follow-up


def interval(surv: np.ndarray, std_err: np.ndarray, conf_type: str) -> tuple[np.ndarray, np.ndarray]:
    """The 95% interval of S with the cumulative hazard's standard error, as R's ``survfit_confint`` (upper limits
    kept within 1); NaN where it does not exist."""
    if conf_type not in KM_CONF_TYPES:
        raise ValueError(f"unknown confidence interval type {conf_type!r}: choose one of {', '.join(KM_CONF_TYPES)}")
    surv, std_err = np.asarray(surv, dtype=float), np.asarray(std_err, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        if conf_type == "plain":
            half = std_err * surv * Z_95
            return np.maximum(surv - half, 0.0), np.minimum(surv + half, 1.0)
        if conf_type == "log":
            log_s = np.log(np.where(surv == 0, np.nan, surv))
            return np.exp(log_s - Z_95 * std_err), np.minimum(np.exp(log_s + Z_95 * std_err), 1.0)
        xx = np.where((surv == 0) | (surv == 1), np.nan, surv)
        half = Z_95 * std_err / np.log(xx)
        centre = np.log(-np.log(xx))
        return np.exp(-np.exp(centre - half)), np.exp(-np.exp(centre + half))


def fit_km(
    time: pd.Series, event: pd.Series, conf_type: str = "log-log", weights: pd.Series | np.ndarray | None = None
) -> KaplanMeier:
    """Kaplan-Meier of follow-up ``time`` and ``event`` (1 death, 0 censored), with its interval of ``conf_type``.

    With case ``weights`` (inverse-probability weights, say) the numbers at risk and of deaths are sums of weights
    and the standard error is the infinitesimal jackknife's, as R's ``survfit(..., weights = w)`` (robust by default
    for weights that are not whole numbers); without, Greenwood's."""
    times = np.asarray(time, dtype=float)
    events = np.asarray(event, dtype=int)
    weight = np.ones(len(times)) if weights is None else np.asarray(weights, dtype=float)
    distinct, inverse = np.unique(times, return_inverse=True)
    leaving = np.bincount(inverse, weights=weight, minlength=len(distinct))
    deaths = np.bincount(inverse, weights=weight * events, minlength=len(distinct))
    n_risk = weight.sum() - np.concatenate(([0], np.cumsum(leaving)[:-1]))
    if weights is None:
        n_risk, deaths = np.rint(n_risk).astype(int), np.rint(deaths).astype(int)
    with np.errstate(divide="ignore", invalid="ignore"):
        surv = np.cumprod(1 - deaths / n_risk)
        if weights is None:
            greenwood = np.cumsum(np.where(deaths > 0, deaths / (n_risk * (n_risk - deaths)), 0.0))
            std_err = np.sqrt(greenwood)
        else:
            std_err = _jackknife_std_err(inverse, events, weight, n_risk, deaths)
    lower, upper = interval(surv, std_err, conf_type)
    return KaplanMeier(distinct, n_risk, deaths, surv, std_err, lower, upper, conf_type)


def _jackknife_std_err(
    inverse: np.ndarray, events: np.ndarray, weight: np.ndarray, n_risk: np.ndarray, deaths: np.ndarray
) -> np.ndarray:
    """The infinitesimal-jackknife standard error of -log S(t) at each distinct time: the square root of
    sum_i (w_i dlog S(t) / dw_i)^2, where patient i's derivative is G(min(t, t_i)) - [i died at t_i <= t] /
    (Y(t_i) - D(t_i)), G(t) = sum_{s <= t} D(s) / (Y(s) (Y(s) - D(s))); the sums over patients read off cumulative
    sums by time, so the cost grows with n. NaN once S is 0."""
    g = np.cumsum(np.where(deaths > 0, deaths / (n_risk * (n_risk - deaths)), 0.0))
    own = g[inverse] - events / (n_risk - deaths)[inverse]  # the derivative of a patient whose time is passed
    passed = np.bincount(inverse, weights=(weight * own) ** 2, minlength=len(n_risk))
    squared = np.bincount(inverse, weights=weight**2, minlength=len(n_risk))
    later = np.concatenate((np.cumsum(squared[::-1])[::-1][1:], [0.0]))  # sum of w^2 with t_i > t
    return np.sqrt(np.cumsum(passed) + g**2 * later)


def _value(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _before_first_time(conf_type: str) -> tuple[np.ndarray, np.ndarray]:
    """The interval of S = 1 with standard error 0, before any follow-up time (R's ``summary(fit, times = 0)``)."""
    return interval(np.array([1.0]), np.array([0.0]), conf_type)


def survival_at(km: KaplanMeier, t: float) -> Estimate:
    """S(t) with its 95% interval: the step function's value at the last time <= t (before the first: S = 1), as
    R's ``summary(fit, times = t, extend = TRUE)``."""
    at = np.searchsorted(km.time, t, side="right") - 1
    if at < 0:
        lower, upper = _before_first_time(km.conf_type)
        return Estimate(1.0, _value(lower[0]), _value(upper[0]))
    return Estimate(float(km.surv[at]), _value(km.lower[at]), _value(km.upper[at]))


def _first_at_least(values: np.ndarray, p: float) -> int | None:
    """R's ``approx(values, seq_along(values), p, method = "constant", f = 1)``: the position of the smallest of
    ``values`` at or above ``p`` (NaN left out); None where none is (above the largest, or below the smallest)."""
    valid = np.flatnonzero(~np.isnan(values))
    if not len(valid) or p > values[valid].max() or p < values[valid].min():
        return None
    above = valid[values[valid] >= p]
    return int(above[np.argmin(values[above])])


def _quantile_time(time: np.ndarray, curve: np.ndarray, p: float = 0.5) -> float | None:
    """The time where ``1 - curve`` reaches ``p``, as R's ``findq`` (quantile.survfit): the midpoint where the
    curve sits within the tolerance of ``1 - p`` over an interval (or from its last point to the end of follow-up);
    None (R's NA) where it never reaches it."""
    x = np.concatenate(([0.0], time))
    y = np.concatenate(([0.0], 1 - curve))
    if np.all(np.isnan(y)) or np.nanmax(y) < p:
        return None
    last_time = x[-1]
    seen = pd.Series(y).duplicated().to_numpy()  # as R's duplicated: a repeated NaN is a duplicate too
    x, y = x[~seen], y[~seen]
    first, second = _first_at_least(y + MEDIAN_TOLERANCE, p), _first_at_least(y - MEDIAN_TOLERANCE, p)
    if not np.isnan(y[-1]) and abs(p - y[-1]) < MEDIAN_TOLERANCE:
        return None if first is None else (x[first] + last_time) / 2
    if first is None or second is None:
        return None
    return (x[first] + x[second]) / 2


def median_survival(km: KaplanMeier) -> Median | None:
    """The median survival time and its 95% limits (where the band's edges reach 0.5), as R's
    ``quantile(fit, 0.5)``; None where neither the curve nor the band's lower edge reaches 0.5."""
    found = Median(*(_quantile_time(km.time, curve) for curve in (km.surv, km.lower, km.upper)))
    return None if found.value is None and found.lower is None else found


def km_curve(
    time: pd.Series,
    event: pd.Series,
    label: str,
    conf_type: str = "log-log",
    weights: np.ndarray | None = None,
) -> Curve:
    """The curve from day 0 (S = 1, where R's ``summary(fit, times = 0)`` gives its interval) to the last time;
    weighted by case ``weights`` if given (see :func:`fit_km`)."""
    km = fit_km(time, event, conf_type, weights)
    times, surv, lower, upper = km.time, km.surv, km.lower, km.upper
    if not len(times) or times[0] > 0:
        start_lower, start_upper = _before_first_time(conf_type)
        times, surv = np.concatenate(([0.0], times)), np.concatenate(([1.0], surv))
        lower, upper = np.concatenate((start_lower, lower)), np.concatenate((start_upper, upper))
    return Curve(
        label=label,
        time=times.tolist(),
        survival=surv.tolist(),
        lower=lower.tolist(),
        upper=upper.tolist(),
        censored_times=sorted(float(t) for t in time[event == 0]),
        median=median_survival(km),
        n=len(time),
        events=int(event.sum()),
    )


def at_risk(time: pd.Series, times: Sequence[float]) -> list[int]:
    """Patients still followed at each time, counted as R does: follow-up time >= t."""
    values = np.asarray(time)
    return [int((values >= t).sum()) for t in times]


def truncate(time: pd.Series, event: pd.Series, days: int | None) -> tuple[pd.Series, pd.Series]:
    """Follow-up ended administratively at ``days``: later deaths become censorings."""
    if days is None:
        return time, event
    return time.clip(upper=days), (event.astype(bool) & (time <= days)).astype(int)


def log_rank(time: pd.Series, event: pd.Series, group: pd.Series, days: int | None = None) -> LogRank:
    """Log-rank test of equal survival across groups, on follow-up truncated at ``days``.

    Without a single death there is nothing to compare: statistic and p are NaN (null in JSON).
    """
    time, event = truncate(time, event, days)
    labels, membership = np.unique(np.asarray(group), return_inverse=True)
    if not event.any():
        return LogRank(float("nan"), len(labels) - 1, float("nan"), days)
    times, events = np.asarray(time, dtype=float), np.asarray(event, dtype=bool)
    death_times = np.unique(times[events])
    at = np.searchsorted(death_times, times[events])
    # per death time (rows) and group (columns): patients at risk (time >= t) and deaths
    at_risk = np.column_stack([
        (membership == k).sum() - np.searchsorted(np.sort(times[membership == k]), death_times, side="left")
        for k in range(len(labels))
    ])  # fmt: skip
    deaths = np.zeros_like(at_risk)
    np.add.at(deaths, (at, membership[events]), 1)
    n, d = at_risk.sum(axis=1), deaths.sum(axis=1)
    share = at_risk / n[:, None]
    expected = (d[:, None] * share).sum(axis=0)
    observed_minus_expected = deaths.sum(axis=0) - expected
    spread = np.where(n > 1, d * (n - d) / np.maximum(n - 1, 1), 0.0)
    # the hypergeometric covariance, summed over death times: spread * share_g * (1[g = h] - share_h)
    covariance = np.diag(spread @ share) - (share * spread[:, None]).T @ share
    # as R's survdiff: the first group left out (the others determine it), df from the groups expected to die
    statistic = float(observed_minus_expected[1:] @ np.linalg.solve(covariance[1:, 1:], observed_minus_expected[1:]))
    df = int((expected > 0).sum()) - 1
    return LogRank(statistic, df, float(chdtrc(df, statistic)), days)
