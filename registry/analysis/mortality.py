"""Mortality at each landmark, by group: crude and Kaplan-Meier, with the log-rank p.

Crude mortality is deaths by the landmark over patients whose status at the landmark
is known (dead by it, or followed at least that long); a patient censored alive
before the landmark is in neither count. The Kaplan-Meier estimate uses everyone and
is reported beside it. The p-value is the log-rank test on follow-up truncated at the
landmark, as in the reference study.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from registry.analysis.survival import Estimate, fit_km, log_rank, survival_at


@dataclass(frozen=True)
class GroupMortality:
    group: str
    deaths: int
    known: int  # patients with known status at the landmark (the denominator)
    percent: float | None  # None when no patient's status is known
    km_mortality: Estimate  # 1 - S(landmark), with its 95% CI (limits None where the interval does not exist)


@dataclass(frozen=True)
class LandmarkMortality:
    landmark: str
    days: int
    groups: list[GroupMortality]
    p: float  # log-rank, follow-up truncated at the landmark
    test: str = "log-rank, follow-up truncated at the landmark"


def complement(limit: float | None) -> float | None:
    return None if limit is None else 1 - limit


def mortality(
    table: pd.DataFrame, landmarks: dict[str, int], group: str = "group", conf_type: str = "log-log"
) -> list[LandmarkMortality]:
    """Mortality by ``group`` at each landmark (name -> days) of the analysis table, the Kaplan-Meier estimate with
    its interval of ``conf_type`` (not estimable, None, where it does not exist: at 0 % for log-log, at 100 %)."""
    results = []
    for name, days in landmarks.items():
        groups = []
        for label, rows in table.groupby(group, sort=True):
            deaths, known = int(rows[f"dead_by_{days}"].sum()), int(rows[f"status_known_{days}"].sum())
            survival = survival_at(fit_km(rows["time_days"], rows["event"], conf_type), days)
            groups.append(
                GroupMortality(
                    group=str(label),
                    deaths=deaths,
                    known=known,
                    percent=100 * deaths / known if known else None,
                    km_mortality=Estimate(1 - survival.value, complement(survival.upper), complement(survival.lower)),
                )
            )
        p = log_rank(table["time_days"], table["event"], table[group], days).p
        results.append(LandmarkMortality(name, days, groups, p))
    return results
