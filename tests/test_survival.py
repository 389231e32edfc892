"""Survival analyses against independent references: hand-worked and textbook values."""

import math

import numpy as np
import pandas as pd
import pytest
from lifelines.datasets import load_lung, load_rossi

from registry.analysis.mortality import mortality
from registry.analysis.survival import at_risk, fit_km, km_curve, log_rank, survival_at, truncate

TIME = pd.Series([1, 2, 2, 3, 4, 5])
EVENT = pd.Series([1, 1, 0, 1, 0, 1])


def test_kaplan_meier_by_hand():
    # at risk 6, 5, 3, 1 at the death times 1, 2, 3, 5
    curve = km_curve(TIME, EVENT, "x")
    expected = {1: 5 / 6, 2: 5 / 6 * 4 / 5, 3: 5 / 6 * 4 / 5 * 2 / 3, 5: 0.0}
    steps = dict(zip(curve.time, curve.survival, strict=True))
    for t, s in expected.items():
        assert steps[t] == pytest.approx(s, abs=1e-12)
    # log-log (R's conf.type = "log-log") Greenwood interval at t = 3
    s = expected[3]
    greenwood = 1 / (6 * 5) + 1 / (5 * 4) + 1 / (3 * 2)
    half = 1.959963984540054 * math.sqrt(greenwood) / abs(math.log(s))
    lower, upper = s ** math.exp(half), s ** math.exp(-half)
    estimate = survival_at(fit_km(TIME, EVENT), 3.5)
    assert (estimate.value, estimate.lower, estimate.upper) == pytest.approx((s, lower, upper), abs=1e-9)
    assert curve.median.value == 3 and curve.censored_times == [2.0, 4.0]


def test_numbers_at_risk_count_time_at_least_t():
    assert at_risk(TIME, [0, 2, 2.5, 5, 6]) == [6, 5, 3, 1, 0]


def _log_rank_by_hand(time, event, group) -> float:
    """(O - E)^2 / V for two groups, hypergeometric variance, summed over death times."""
    time, event, group = map(np.asarray, (time, event, group))
    first = group == np.unique(group)[0]
    o_minus_e = variance = 0.0
    for t in np.unique(time[event == 1]):
        at = time >= t
        n, n1 = at.sum(), (at & first).sum()
        d = ((time == t) & (event == 1)).sum()
        d1 = ((time == t) & (event == 1) & first).sum()
        o_minus_e += d1 - d * n1 / n
        if n > 1:
            variance += d * (n1 / n) * (1 - n1 / n) * (n - d) / (n - 1)
    return o_minus_e**2 / variance


def test_log_rank_equals_the_hand_formula_on_rossi():
    rossi = load_rossi()
    result = log_rank(rossi["week"], rossi["arrest"], rossi["fin"])
    assert result.statistic == pytest.approx(_log_rank_by_hand(rossi["week"], rossi["arrest"], rossi["fin"]), abs=1e-9)
    assert round(result.statistic, 1) == 3.8  # R's survdiff(Surv(week, arrest) ~ fin) prints "Chisq= 3.8 on 1 df"
    assert result.df == 1


def test_log_rank_equals_r_survdiff_on_the_lung_data():
    # R: survdiff(Surv(time, status) ~ sex, data = lung): Chisq = 10.32674 on 1 df;
    # survminer::surv_pvalue(survfit(Surv(time, status) ~ sex, data = lung)) = 0.001311165
    lung = load_lung()
    result = log_rank(lung["time"], lung["status"], lung["sex"])
    assert result.statistic == pytest.approx(10.32674, abs=1e-4)
    assert result.p == pytest.approx(0.001311165, abs=1e-9)


def _greenwood_band(time, event, transform: str):
    """Kaplan-Meier with a 95% Greenwood band, written out from the textbook formulas."""
    time, event = np.asarray(time), np.asarray(event)
    s, var, rows = 1.0, 0.0, []
    for t in np.unique(time[event == 1]):
        n, d = (time >= t).sum(), ((time == t) & (event == 1)).sum()
        s *= 1 - d / n
        var += d / (n * (n - d)) if n > d else 0.0
        z = 1.959963984540054 * math.sqrt(var)
        if transform == "log":  # R's default conf.type
            rows.append((t, s * math.exp(-z), min(1.0, s * math.exp(z))))
        else:  # "log-log"
            half = z / abs(math.log(s))
            rows.append((t, s ** math.exp(half), s ** math.exp(-half)))
    return rows


def _median_limits(rows):
    return (min(t for t, lo, _ in rows if lo <= 0.5), min(t for t, _, hi in rows if hi <= 0.5))


@pytest.mark.parametrize("sex, r_median, r_log_limits", [(1, 270, (212, 310)), (2, 426, (348, 550))])
def test_median_survival_and_limits_as_r_reads_them(sex, r_median, r_log_limits):
    # R: survfit(Surv(time, status) ~ sex, data = lung) prints median 270 (212, 310) and 426 (348, 550)
    lung = load_lung()
    rows = lung[lung["sex"] == sex]
    assert _median_limits(_greenwood_band(rows["time"], rows["status"], "log")) == r_log_limits
    median = km_curve(rows["time"], rows["status"], str(sex)).median
    assert median.value == r_median
    assert (median.lower, median.upper) == _median_limits(_greenwood_band(rows["time"], rows["status"], "log-log"))
    assert median.lower < median.value < median.upper


def test_truncated_log_rank_censors_later_deaths():
    time, event = truncate(pd.Series([10, 200, 400]), pd.Series([1, 1, 1]), 183)
    assert list(time) == [10, 183, 183] and list(event) == [1, 0, 0]
    rossi = load_rossi()
    t, e = truncate(rossi["week"], rossi["arrest"], 20)
    assert log_rank(rossi["week"], rossi["arrest"], rossi["fin"], 20).statistic == pytest.approx(
        _log_rank_by_hand(t, e, rossi["fin"]), abs=1e-9
    )


def test_crude_mortality_uses_patients_with_known_status():
    table = pd.DataFrame(
        {
            "group": ["a", "a", "a", "b", "b"],
            "time_days": [100, 200, 400, 50, 500],
            "event": [1, 0, 0, 1, 0],
        }
    )
    for days in (183, 365):
        table[f"dead_by_{days}"] = (table["event"] == 1) & (table["time_days"] <= days)
        table[f"status_known_{days}"] = table[f"dead_by_{days}"] | (table["time_days"] >= days)
    six, year = mortality(table, {"6 months": 183, "1 year": 365})
    a6, b6 = six.groups
    assert (a6.deaths, a6.known, b6.deaths, b6.known) == (1, 3, 1, 2)
    a12 = year.groups[0]
    assert (a12.deaths, a12.known, a12.percent) == (1, 2, 50.0)  # censored on day 200: status at 1 year unknown
    assert a12.km_mortality.value == pytest.approx(
        1 / 3
    )  # KM: 1 - 2/3, the censored patient still counted before day 200


def test_edge_cases_all_censored_and_a_group_without_deaths():
    time, group = pd.Series([5, 6, 7, 8]), pd.Series(list("aabb"))
    nothing = log_rank(time, pd.Series([0, 0, 0, 0]), group)
    assert math.isnan(nothing.statistic) and math.isnan(nothing.p)
    one_sided = log_rank(time, pd.Series([1, 1, 0, 0]), group)
    assert one_sided.statistic == pytest.approx(_log_rank_by_hand(time, pd.Series([1, 1, 0, 0]), group))
    curve = km_curve(time, pd.Series([0, 0, 0, 0]), "b")
    assert curve.survival == [1.0] * len(curve.survival) and curve.median is None and curve.events == 0
