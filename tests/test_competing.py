"""Aalen-Johansen cumulative incidence against R's multi-state survfit, to 1e-6 relative at every time.

tests/r/competing_reference.R wrote seeded random cohorts (60 to 800 patients, whole days) and a case with deaths,
transplants and censorings tied at one time, and R's estimate, infinitesimal-jackknife standard error and 95% limits
for each conf.type; the tests read the stored output.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from registry.analysis.competing import aalen_johansen, cumulative_incidence
from registry.analysis.survival import fit_km

R = Path(__file__).resolve().parent / "r"
CASES = pd.read_csv(R / "competing_cases.csv")
CURVES = pd.read_csv(R / "competing_curves.csv")
PARTS = {"death": "death", "death_std_err": "death_std_err", "death_lower": "death_lower",
         "death_upper": "death_upper", "competing": "transplant", "competing_std_err": "transplant_std_err",
         "competing_lower": "transplant_lower", "competing_upper": "transplant_upper"}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES["case"].unique()))
@pytest.mark.parametrize("conf_type", ["log-log", "log", "plain"])
def test_cumulative_incidence_equals_multi_state_survfit(case, conf_type):
    rows = CASES[CASES["case"] == case]
    r = CURVES[(CURVES["case"] == case) & (CURVES["conf_type"] == conf_type)]
    fit = aalen_johansen(rows["time"], rows["status"], conf_type)
    assert fit.time.tolist() == r["time"].tolist()
    assert fit.n_risk.tolist() == r["n_risk"].tolist()
    for ours, theirs in PARTS.items():
        expected = r[theirs].to_numpy(float)
        found = getattr(fit, ours)
        assert np.array_equal(np.isnan(found), np.isnan(expected)), ours  # R's NA where the interval does not exist
        kept = ~np.isnan(expected)
        assert found[kept] == pytest.approx(expected[kept], rel=1e-6, abs=1e-15), ours


def test_a_small_example_by_hand():
    """Four patients: death on day 1, transplant on day 2, censored on day 3, death on day 4. Free of either event:
    S = 3/4 after day 1, 1/2 after day 2. Death: 1/4 on day 1, + S(4-) x 1/1 = 1/2 on day 4, 3/4 in all;
    transplantation: S(2-) x 1/3 = 1/4 from day 2."""
    fit = aalen_johansen(pd.Series([1, 2, 3, 4]), pd.Series([1, 2, 0, 1]))
    assert fit.death.tolist() == pytest.approx([0.25, 0.25, 0.25, 0.75])
    assert fit.competing.tolist() == pytest.approx([0.0, 0.25, 0.25, 0.25])


def test_without_a_competing_event_death_incidence_is_one_minus_kaplan_meier():
    rows = CASES[CASES["case"] == "random_300"]
    status = rows["status"].replace({2: 0})
    fit, km = aalen_johansen(rows["time"], status), fit_km(rows["time"], status)
    assert fit.death == pytest.approx(1 - km.surv, abs=1e-14)
    assert np.all(fit.competing == 0)


def _table(status, time):
    return pd.DataFrame({"group": ["tacrolimus", "tofacitinib"] * (len(time) // 2), "cr_status": status,
                         "cr_time_days": time, "time_days": time, "event": [int(s == 1) for s in status]})  # fmt: skip


def test_the_section_says_when_no_competing_event_is_recorded_and_labels_crude_km_otherwise():
    none = cumulative_incidence(_table([1, 0, 1, 0], [10, 20, 30, 40]), {"1 year": 365}, "log-log")
    assert none == {"competing_event": "lung transplantation", "recorded": False, "events": 0,
                    "note": "No lung transplantation is recorded among the analysed patients: the Kaplan-Meier "
                    "mortality is the cumulative incidence of death"}  # fmt: skip
    some = cumulative_incidence(_table([1, 2, 2, 1, 0, 1], [10, 20, 30, 40, 50, 60]), {"1 year": 365}, "log-log")
    tacrolimus = some["groups"]["tacrolimus"]["landmarks"][0]
    # tacrolimus: death day 10, transplant day 30, censored day 50 -> incidence 1/3; crude 1 - KM (transplant censored)
    # 1 - (2/3)(1)(1) = 1/3 as well, since the only death came first
    assert (tacrolimus["deaths"], tacrolimus["competing_events"]) == (1, 1)
    assert tacrolimus["death"].value == pytest.approx(1 / 3) and tacrolimus["one_minus_km"] == pytest.approx(1 / 3)
    tofacitinib = some["groups"]["tofacitinib"]["landmarks"][0]
    # tofacitinib: transplant day 20, death day 40, death day 60: KM ignores the transplant (1 - 0 = 1), AJ 2/3
    assert tofacitinib["death"].value == pytest.approx(2 / 3) and tofacitinib["one_minus_km"] == pytest.approx(1.0)


@pytest.mark.skipif(shutil.which("Rscript") is None, reason="R is not installed (the stored output is used)")
def test_r_gives_the_stored_numbers_again(tmp_path):
    shutil.copy(R / "competing_reference.R", tmp_path)
    subprocess.run(["Rscript", str(tmp_path / "competing_reference.R")], check=True, capture_output=True)
    for name in ("competing_cases.csv", "competing_curves.csv"):
        assert (tmp_path / name).read_text() == (R / name).read_text(), name
