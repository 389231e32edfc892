"""Aalen-Johansen cumulative incidence against R's multi-state survfit, to 1e-6 relative at every time.

tests/r/competing_reference.R wrote seeded random cohorts of two groups (60 to 800 patients, whole days) and a case
with deaths, transplants and censorings tied on the same days, and R's estimate, infinitesimal-jackknife standard
error and 95% limits per group at every time and at landmarks, for each conf.type; the tests read the stored output
(and, where R is installed, run it again).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import assert_r_gives_the_stored_output, needs_r

from registry.analysis.competing import R_DEFAULT_CONF_TYPE, aalen_johansen, cumulative_incidence
from registry.analysis.survival import fit_km

R = Path(__file__).resolve().parent / "r"
CASES = pd.read_csv(R / "competing_cases.csv")
CURVES = pd.read_csv(R / "competing_curves.csv")
LANDMARKS = pd.read_csv(R / "competing_landmarks.csv")
CONF_TYPES = ["log", "log-log", "plain"]
PARTS = {"death": "death", "death_std_err": "death_std_err", "death_lower": "death_lower",
         "death_upper": "death_upper", "competing": "transplant", "competing_std_err": "transplant_std_err",
         "competing_lower": "transplant_lower", "competing_upper": "transplant_upper"}  # fmt: skip
GROUPS = sorted(CASES[["case", "group"]].drop_duplicates().itertuples(index=False, name=None))


def _same(found, expected, what):
    found, expected = np.asarray(found, dtype=float), np.asarray(expected, dtype=float)
    assert np.array_equal(np.isnan(found), np.isnan(expected)), what  # R's NA where the interval does not exist
    kept = ~np.isnan(expected)
    assert found[kept] == pytest.approx(expected[kept], rel=1e-10, abs=1e-15), what


def test_the_reference_holds_every_kind_of_event_and_tie():
    assert len(GROUPS) == 8 and len(CURVES) > 2000
    for (case, group), rows in CASES.groupby(["case", "group"]):
        assert set(rows["status"]) == {0, 1, 2}, (case, group)
        assert rows["time"].duplicated().any() or case == "random_60", (case, group)  # 28 patients over 500 days
    last = CASES[CASES["time"] == CASES.groupby(["case", "group"])["time"].transform("max")]
    ended = last.groupby(["case", "group"])["status"].min() > 0
    assert ended.any() and not ended.all()  # groups whose follow-up ends with events (S = 0 there), and others
    ties = CASES[CASES["case"] == "ties"].groupby(["group", "time"])["status"].nunique()
    assert (ties == 3).sum() >= 2  # a death, a transplant and a censoring on the same day


@pytest.mark.parametrize(("case", "group"), GROUPS)
@pytest.mark.parametrize("conf_type", CONF_TYPES)
def test_cumulative_incidence_equals_multi_state_survfit_at_every_time(case, group, conf_type):
    rows = CASES[(CASES["case"] == case) & (CASES["group"] == group)]
    r = CURVES[(CURVES["case"] == case) & (CURVES["group"] == group) & (CURVES["conf_type"] == conf_type)]
    fit = aalen_johansen(rows["time"], rows["status"], conf_type)
    assert fit.time.tolist() == r["time"].tolist()
    assert fit.n_risk.tolist() == r["n_risk"].tolist()
    for ours, theirs in PARTS.items():
        _same(getattr(fit, ours), r[theirs], ours)


def test_the_default_interval_is_rs_default_for_a_multi_state_curve():
    """R's multi-state survfit takes conf.type "log" when none is given (the R script checks fit$conf.type)."""
    assert R_DEFAULT_CONF_TYPE == "log"
    rows = CASES[CASES["case"] == "random_300"]
    default, log = aalen_johansen(rows["time"], rows["status"]), aalen_johansen(rows["time"], rows["status"], "log")
    assert np.array_equal(default.death_lower, log.death_lower, equal_nan=True)


@pytest.mark.parametrize("case", sorted(CASES["case"].unique()))
@pytest.mark.parametrize("conf_type", CONF_TYPES)
def test_landmarks_equal_rs_summary_at_those_times(case, conf_type):
    """summary(fit, times = c(3, 183, 365), extend = TRUE) per group; day 3 comes before the first event in "ties"
    (R: 0 with limits 0 and 0) and after some in the random cases; beside it 1 - KM with transplants censored."""
    rows = CASES[CASES["case"] == case].rename(columns={"time": "cr_time_days", "status": "cr_status"})
    landmarks = {f"day {d}": d for d in (3, 183, 365)}
    result = cumulative_incidence(rows, landmarks, conf_type)
    assert result["recorded"] and result["r_call"].endswith(f'conf.type = "{conf_type}")')
    r = LANDMARKS[(LANDMARKS["case"] == case) & (LANDMARKS["conf_type"] == conf_type)]
    for group, entry in result["groups"].items():
        theirs = r[r["group"] == group].sort_values("days")
        ours = entry["landmarks"]
        assert [landmark["days"] for landmark in ours] == theirs["days"].tolist()
        for name, column in (("death", "death"), ("competing", "transplant")):
            for part, suffix in (("value", ""), ("lower", "_lower"), ("upper", "_upper")):
                found = [np.nan if (x := getattr(landmark[name], part)) is None else x for landmark in ours]
                _same(found, theirs[column + suffix], (group, name, part))
        _same([landmark["one_minus_km"] for landmark in ours], 1 - theirs["km_surv"], (group, "1 - KM"))
        group_rows = rows[rows["group"] == group]
        for landmark in ours:
            by = group_rows[group_rows["cr_time_days"] <= landmark["days"]]["cr_status"]
            assert (landmark["deaths"], landmark["competing_events"]) == ((by == 1).sum(), (by == 2).sum())


def test_the_curve_starts_at_day_0_and_ends_at_the_estimate():
    rows = CASES[CASES["case"] == "random_60"].rename(columns={"time": "cr_time_days", "status": "cr_status"})
    result = cumulative_incidence(rows, {"1 year": 365}, "log-log")
    for group, entry in result["groups"].items():
        curve = entry["curve"]
        fit = aalen_johansen(rows.loc[rows["group"] == group, "cr_time_days"],
                             rows.loc[rows["group"] == group, "cr_status"], "log-log")  # fmt: skip
        assert curve["time"][0] == 0 and curve["time"][1:] == fit.time.tolist()
        assert [curve[k][0] for k in ("death", "death_lower", "death_upper", "competing")] == [0, 0, 0, 0]
        assert curve["death"][1:] == fit.death.tolist() and curve["competing_upper"][-1] == fit.competing_upper[-1]
        assert len({len(v) for k, v in curve.items() if k != "competing_label"}) == 1
        assert entry["n"] == (rows["group"] == group).sum()
        assert entry["deaths"] + entry["competing_events"] <= entry["n"]


def test_a_small_example_by_hand():
    """Four patients: death on day 1, transplant on day 2, censored on day 3, death on day 4. Free of either event:
    S = 3/4 after day 1, 1/2 after day 2. Death: 1/4 on day 1, + S(4-) x 1/1 = 1/2 on day 4, 3/4 in all;
    transplantation: S(2-) x 1/3 = 1/4 from day 2. On day 1 the death incidence is a binomial proportion, 1/4 of 4:
    the jackknife's variance is p(1 - p)/n = 3/64."""
    fit = aalen_johansen(pd.Series([1, 2, 3, 4]), pd.Series([1, 2, 0, 1]))
    assert fit.time.tolist() == [1, 2, 3, 4] and fit.n_risk.tolist() == [4, 3, 2, 1]
    assert fit.death.tolist() == pytest.approx([0.25, 0.25, 0.25, 0.75])
    assert fit.competing.tolist() == pytest.approx([0.0, 0.25, 0.25, 0.25])
    assert fit.death_std_err[0] == pytest.approx(np.sqrt(3 / 64))
    assert fit.competing_std_err[0] == 0 and np.isnan(fit.competing_lower[0])  # log of 0: R's NA


def test_ties_on_one_day_are_counted_together():
    """Day 10: of 5 at risk, 2 die, 1 is transplanted, 2 are censored: death 2/5, transplantation 1/5 at once."""
    fit = aalen_johansen(np.array([10, 10, 10, 10, 10]), np.array([1, 1, 2, 0, 0]))
    assert fit.time.tolist() == [10] and fit.death.tolist() == [0.4] and fit.competing.tolist() == [0.2]


def test_without_a_competing_event_death_incidence_is_one_minus_kaplan_meier():
    for case in CASES["case"].unique():
        rows = CASES[CASES["case"] == case]
        status = rows["status"].replace({2: 0})
        fit, km = aalen_johansen(rows["time"], status), fit_km(rows["time"], status)
        assert fit.death == pytest.approx(1 - km.surv, abs=1e-14)
        assert np.all(fit.competing == 0) and np.all(fit.competing_std_err == 0)


def test_a_status_other_than_0_1_2_is_refused():
    with pytest.raises(ValueError, match="status"):
        aalen_johansen(np.array([1, 2]), np.array([1, 3]))


def _table(status, time):
    return pd.DataFrame({"group": ["tacrolimus", "tofacitinib"] * (len(time) // 2), "cr_status": status,
                         "cr_time_days": time, "time_days": time, "event": [int(s == 1) for s in status]})  # fmt: skip


def test_the_section_says_when_no_competing_event_is_recorded_and_labels_crude_km_otherwise():
    none = cumulative_incidence(_table([1, 0, 1, 0], [10, 20, 30, 40]), {"1 year": 365}, "log-log")
    assert none == {"competing_event": "lung transplantation", "recorded": False, "events": 0,
                    "note": "No lung transplantation is recorded among the analysed patients: the Kaplan-Meier "
                    "mortality is the cumulative incidence of death"}  # fmt: skip
    some = cumulative_incidence(_table([1, 2, 2, 1, 0, 1], [10, 20, 30, 40, 50, 60]), {"1 year": 365}, "log-log")
    assert some["recorded"] and some["events"] == 2
    tacrolimus = some["groups"]["tacrolimus"]["landmarks"][0]
    # tacrolimus: death day 10, transplant day 30, censored day 50 -> incidence 1/3; crude 1 - KM (transplant censored)
    # 1 - (2/3)(1)(1) = 1/3 as well, since the only death came first
    assert (tacrolimus["deaths"], tacrolimus["competing_events"]) == (1, 1)
    assert tacrolimus["death"].value == pytest.approx(1 / 3) and tacrolimus["one_minus_km"] == pytest.approx(1 / 3)
    tofacitinib = some["groups"]["tofacitinib"]["landmarks"][0]
    # tofacitinib: transplant day 20, death day 40, death day 60: KM ignores the transplant (1 - 0 = 1), AJ 2/3
    assert tofacitinib["death"].value == pytest.approx(2 / 3) and tofacitinib["one_minus_km"] == pytest.approx(1.0)
    assert tofacitinib["competing"].value == pytest.approx(1 / 3)


def test_for_a_hundred_thousand_patients_the_states_add_up_to_one():
    """Dead, transplanted or free of both: the incidences and the all-cause Kaplan-Meier curve sum to 1 at every time
    (speed is measured in benchmarks, not here)."""
    rng = np.random.default_rng(7)
    n = 100_000
    times, status = rng.integers(0, 1500, n), rng.choice([0, 1, 2], n, p=[0.6, 0.3, 0.1])
    fit = aalen_johansen(times, status)
    free = fit_km(pd.Series(times), pd.Series((status > 0).astype(int))).surv
    assert fit.death + fit.competing + free == pytest.approx(np.ones(len(free)), abs=1e-12)


@needs_r
def test_r_gives_the_stored_numbers_again(tmp_path):
    assert_r_gives_the_stored_output(
        tmp_path,
        "competing_reference.R",
        (),
        ("competing_cases.csv", "competing_curves.csv", "competing_landmarks.csv"),
    )
