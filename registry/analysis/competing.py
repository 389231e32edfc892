"""Competing risks: the cumulative incidence of death when lung transplantation ends follow-up first.

1 - Kaplan-Meier treats a transplanted patient as if they could still die later at the rate of those followed, and so
overstates the probability of death by a given day. The Aalen-Johansen estimate (Aalen & Johansen 1978) counts each
event in its own state: the cumulative incidence of cause k by t is sum_{s <= t} S(s-) d_k(s) / n(s), S the
Kaplan-Meier estimate of staying free of either event. It equals R's multi-state
``survfit(Surv(time, factor(status, 0:2)) ~ group)`` (status 0 censored, 1 death, 2 transplantation): the estimate,
the infinitesimal-jackknife standard error R gives multi-state curves, and the interval R's ``survfit_confint`` puts
on a probability (tests/r/competing_reference.R). The influence of each patient on the estimate is read off
cumulative sums over time, so the cost grows with n log n, not n x times.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from registry.analysis.survival import Estimate, fit_km, interval, survival_at

#: The states of ``cr_status`` in the analysis table.
CENSORED, DEATH, COMPETING = 0, 1, 2
#: What the competing event is, in the report's words.
COMPETING_EVENT = "lung transplantation"


@dataclass(frozen=True)
class CumulativeIncidence:
    """At each distinct follow-up time: patients at risk, and for death and the competing event the cumulative
    incidence, its standard error and 95% interval (NaN where R gives NA)."""

    time: np.ndarray
    n_risk: np.ndarray
    death: np.ndarray
    death_std_err: np.ndarray
    death_lower: np.ndarray
    death_upper: np.ndarray
    competing: np.ndarray
    competing_std_err: np.ndarray
    competing_lower: np.ndarray
    competing_upper: np.ndarray


def _incidence(
    inverse: np.ndarray,
    status: np.ndarray,
    cause: int,
    n_risk: np.ndarray,
    events: np.ndarray,
    cause_events: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The cumulative incidence of ``cause`` at each distinct time and its infinitesimal-jackknife standard error.

    Patient i's influence at t is C(m) - B(m) + [t >= t_i] (d_ik S(t_i-) / Y(t_i) + a_i (F(t) - F(t_i))), m = min(t,
    t_i), with F the incidence, f its jumps S(s-) d_k(s) / Y(s), B(u) = sum_{s <= u} f(s) / Y(s), C(u) = sum_{s <=
    u} f(s) G(s-), G(u) = sum_{s <= u} d(s) / (Y (Y - d)) (the influence on log S of a patient still at risk) and a_i
    = G(t_i) - [i had an event] / (Y(t_i) - d(t_i)) (a patient whose time is passed)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        surv = np.cumprod(1 - events / n_risk)
        before = np.concatenate(([1.0], surv[:-1]))  # S(s-)
        jump = before * cause_events / n_risk
        incidence = np.cumsum(jump)
        g = np.cumsum(np.where(events > 0, events / (n_risk * (n_risk - events)), 0.0))
        g_before = np.concatenate(([0.0], g[:-1]))
        b = np.cumsum(jump / n_risk)
        c = np.cumsum(jump * g_before)
        had_event = status != CENSORED
        a = g[inverse] - np.where(had_event, 1 / (n_risk - events)[inverse], 0.0)
        own = np.where(status == cause, before[inverse] / n_risk[inverse], 0.0)
    u = c[inverse] - b[inverse] + own - a * incidence[inverse]
    bins = len(n_risk)
    passed_uu = np.cumsum(np.bincount(inverse, weights=u * u, minlength=bins))
    passed_ua = np.cumsum(np.bincount(inverse, weights=u * a, minlength=bins))
    passed_aa = np.cumsum(np.bincount(inverse, weights=a * a, minlength=bins))
    later = len(inverse) - np.cumsum(np.bincount(inverse, minlength=bins))  # patients with t_i > t
    variance = passed_uu + 2 * incidence * passed_ua + incidence**2 * passed_aa + (c - b) ** 2 * later
    return incidence, np.sqrt(np.maximum(variance, 0.0))


def aalen_johansen(time: pd.Series, status: pd.Series, conf_type: str = "log-log") -> CumulativeIncidence:
    """The Aalen-Johansen estimate of ``status`` (0 censored, 1 death, 2 competing event) over follow-up ``time``,
    with 95% intervals of ``conf_type`` on each probability, as R's multi-state survfit."""
    times = np.asarray(time, dtype=float)
    codes = np.asarray(status, dtype=int)
    distinct, inverse = np.unique(times, return_inverse=True)
    leaving = np.bincount(inverse, minlength=len(distinct))
    n_risk = len(times) - np.concatenate(([0], np.cumsum(leaving)[:-1]))
    counts = {k: np.bincount(inverse, weights=codes == k, minlength=len(distinct)) for k in (DEATH, COMPETING)}
    events = counts[DEATH] + counts[COMPETING]
    made = {}
    for k in (DEATH, COMPETING):
        incidence, std_err = _incidence(inverse, codes, k, n_risk, events, counts[k])
        with np.errstate(divide="ignore", invalid="ignore"):
            lower, upper = interval(incidence, np.where(std_err == 0, 0.0, std_err / incidence), conf_type)
        made[k] = (incidence, std_err, lower, upper)
    return CumulativeIncidence(distinct, n_risk, *made[DEATH], *made[COMPETING])


def _at(fit: CumulativeIncidence, days: int, prefix: str) -> Estimate:
    """The incidence at the last time <= ``days`` (0 before the first), as R's ``summary(fit, times = days)``."""
    at = np.searchsorted(fit.time, days, side="right") - 1
    if at < 0:
        return Estimate(0.0, None, None)
    values = [getattr(fit, f"{prefix}{part}")[at] for part in ("", "_lower", "_upper")]
    value, lower, upper = (None if np.isnan(v) else float(v) for v in values)
    return Estimate(float(value or 0.0), lower, upper)


def _listed(values: np.ndarray) -> list[float | None]:
    return [None if np.isnan(v) else float(v) for v in values]


def cumulative_incidence(table: pd.DataFrame, landmarks: dict[str, int], conf_type: str) -> dict[str, Any]:
    """Per group of the analysis table: the cumulative incidence of death and of lung transplantation (curves from
    day 0, and at each landmark with its 95% interval, beside crude 1 - Kaplan-Meier with transplantation censored);
    ``recorded`` False, with a note, when no analysed patient was transplanted (1 - KM is then the incidence)."""
    transplanted = int((table["cr_status"] == COMPETING).sum())
    result: dict[str, Any] = {"competing_event": COMPETING_EVENT, "recorded": transplanted > 0, "events": transplanted}
    if not transplanted:
        result["note"] = (
            f"No {COMPETING_EVENT} is recorded among the analysed patients: the Kaplan-Meier mortality is the "
            "cumulative incidence of death"
        )
        return result
    groups = {}
    for group, rows in table.groupby("group", sort=True):
        fit = aalen_johansen(rows["cr_time_days"], rows["cr_status"], conf_type)
        crude = fit_km(rows["cr_time_days"], (rows["cr_status"] == DEATH).astype(int), conf_type)
        landmarks_out = []
        for name, days in landmarks.items():
            survival = survival_at(crude, days)
            landmarks_out.append({
                "landmark": name,
                "days": days,
                "deaths": int(((rows["cr_status"] == DEATH) & (rows["cr_time_days"] <= days)).sum()),
                "competing_events": int(((rows["cr_status"] == COMPETING) & (rows["cr_time_days"] <= days)).sum()),
                "death": _at(fit, days, "death"),
                "competing": _at(fit, days, "competing"),
                "one_minus_km": 1 - survival.value,
            })  # fmt: skip
        groups[str(group)] = {
            "curve": {
                "time": [0.0, *fit.time.tolist()],
                "death": [0.0, *fit.death.tolist()],
                "death_lower": [None, *_listed(fit.death_lower)],
                "death_upper": [None, *_listed(fit.death_upper)],
                "competing": [0.0, *fit.competing.tolist()],
                "competing_label": COMPETING_EVENT,
            },
            "landmarks": landmarks_out,
        }
    result["groups"] = groups
    result["r_call"] = f'survfit(Surv(time, factor(status, 0:2)) ~ group, conf.type = "{conf_type}")'
    return result
