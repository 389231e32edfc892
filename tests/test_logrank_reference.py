"""The log-rank test against R's survdiff: two and three groups, full and truncated follow-up, random and demo cohorts.

tests/r/logrank_reference.R read the cohorts (tests/r/cox_cases.csv, demo_survival.csv) and wrote R's numbers
(tests/r/logrank.csv; versions in logrank_reference.version); the tests read the stored output and need no R.
lifelines' tests, which the analysis used before its own vectorised one, are the oracle beside R.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from conftest import assert_r_gives_the_stored_output, needs_r
from lifelines.statistics import logrank_test, multivariate_logrank_test

from registry.analysis.survival import log_rank, truncate

R = Path(__file__).resolve().parent / "r"
EXPECTED = pd.read_csv(R / "logrank.csv", keep_default_na=False)
#: R and numpy do the same sums in another order.
TOLERANCE = 1e-10


def _cohort(case: str) -> pd.DataFrame:
    if case.startswith("demo"):
        demo = pd.read_csv(R / "demo_survival.csv").rename(columns={"time_days": "time"})
        return demo[demo["rpild"] == 1] if case == "demo_rpild" else demo
    cases = pd.read_csv(R / "cox_cases.csv")
    return cases[cases["case"] == case]


ROWS = [tuple(row) for row in EXPECTED[["case", "grouping", "truncated_at"]].itertuples(index=False)]


def test_the_stored_output_covers_every_case():
    assert len(ROWS) == 4 * 2 * 2 + 2 * 2  # four random cohorts by group and by grade; the demo cohort and its RPILD


@pytest.mark.parametrize("case, grouping, truncated_at", ROWS)
def test_statistic_df_and_p_equal_r_survdiff(case, grouping, truncated_at):
    data = _cohort(case)
    days = None if truncated_at == "NA" else int(truncated_at)
    ours = log_rank(data["time"], data["event"], data[grouping], days)
    r = EXPECTED[(EXPECTED["case"] == case) & (EXPECTED["grouping"] == grouping)
                 & (EXPECTED["truncated_at"] == truncated_at)].iloc[0]  # fmt: skip
    assert ours.df == int(r["df"])
    assert ours.statistic == pytest.approx(float(r["chisq"]), rel=TOLERANCE)
    assert ours.p == pytest.approx(float(r["p"]), rel=TOLERANCE)
    # the oracle: lifelines' log-rank tests on the same (truncated) follow-up
    time, event = truncate(data["time"], data["event"], days)
    if data[grouping].nunique() == 2:
        first = data[grouping] == sorted(data[grouping].unique())[0]
        theirs = logrank_test(time[first], time[~first], event[first], event[~first])
    else:
        theirs = multivariate_logrank_test(time, data[grouping], event)
    assert ours.statistic == pytest.approx(theirs.test_statistic, rel=1e-9)
    assert math.isclose(ours.p, theirs.p_value, rel_tol=1e-9)


@needs_r
def test_r_gives_the_stored_numbers_again(tmp_path):
    assert_r_gives_the_stored_output(
        tmp_path, "logrank_reference.R", ("cox_cases.csv", "demo_survival.csv"), ("logrank.csv",)
    )
