"""Kaplan-Meier curves, numbers at risk and log-rank tests (lifelines), as plain data.

Conventions follow R's survival package so results can be checked against it:
the confidence interval is "log-log" (lifelines' exponential Greenwood formula is
R's ``conf.type = "log-log"``), and the number at risk at time t counts patients
whose follow-up time is >= t (lifelines' own at-risk table differs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from lifelines import KaplanMeierFitter
from lifelines.statistics import logrank_test, multivariate_logrank_test

CI_TYPE = "log-log"


@dataclass(frozen=True)
class Estimate:
    value: float
    lower: float
    upper: float


@dataclass(frozen=True)
class Curve:
    """A Kaplan-Meier step function and its 95% band, ready for plotting."""

    label: str
    time: list[float]
    survival: list[float]
    lower: list[float]
    upper: list[float]
    censored_times: list[float]
    median: Estimate | None  # None where the curve never reaches 0.5; an open upper limit is infinite
    n: int
    events: int


@dataclass(frozen=True)
class LogRank:
    statistic: float
    df: int
    p: float
    truncated_at: int | None  # days; None for full follow-up


def fit_km(time: pd.Series, event: pd.Series, label: str = "all") -> KaplanMeierFitter:
    return KaplanMeierFitter(alpha=0.05).fit(time, event, label=label)


def survival_at(kmf: KaplanMeierFitter, t: float) -> Estimate:
    """S(t) with its 95% CI: the step function's value at the last time <= t."""
    table = kmf.survival_function_.join(kmf.confidence_interval_)
    row = table[table.index <= t].iloc[-1]
    return Estimate(float(row.iloc[0]), float(row.iloc[1]), float(row.iloc[2]))


def _median(kmf: KaplanMeierFitter) -> Estimate | None:
    value = float(kmf.median_survival_time_)
    if not np.isfinite(value):
        return None
    band = kmf.confidence_interval_
    lower_curve, upper_curve = band.iloc[:, 0], band.iloc[:, 1]
    # As R's quantile.survfit: the limits are where each edge of the band first reaches 0.5;
    # the lower edge gets there first. An upper edge that never does leaves the limit open.
    lower = lower_curve[lower_curve <= 0.5].index.min()
    upper = upper_curve[upper_curve <= 0.5].index.min()
    return Estimate(value, float(lower), float(upper) if pd.notna(upper) else float("inf"))


def km_curve(time: pd.Series, event: pd.Series, label: str) -> Curve:
    kmf = fit_km(time, event, label)
    band = kmf.confidence_interval_
    return Curve(
        label=label,
        time=[float(t) for t in kmf.survival_function_.index],
        survival=[float(s) for s in kmf.survival_function_.iloc[:, 0]],
        lower=[float(v) for v in band.iloc[:, 0]],
        upper=[float(v) for v in band.iloc[:, 1]],
        censored_times=sorted(float(t) for t in time[event == 0]),
        median=_median(kmf),
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
    if not event.any():
        return LogRank(float("nan"), group.nunique() - 1, float("nan"), days)
    labels = sorted(group.unique())
    if len(labels) == 2:
        a, b = (group == labels[0]), (group == labels[1])
        result = logrank_test(time[a], time[b], event[a], event[b])
    else:
        result = multivariate_logrank_test(time, group, event)
    return LogRank(float(result.test_statistic), int(result.degrees_of_freedom), float(result.p_value), days)
