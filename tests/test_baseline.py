"""Table 1 against scipy and hand calculations."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from registry.analysis.baseline import Variable, baseline_table, fisher_exact_2xk

TABLE = pd.DataFrame(
    {
        "group": ["a"] * 6 + ["b"] * 6,
        "ferritin": [100, 200, 300, 400, 500, np.nan, 250, 350, 450, 1000, 1200, 1500],
        "age": [40, 45, 50, 55, 60, 65, 50, 55, 60, 65, 70, 75],
        "male": [1, 0, 0, 0, 1, np.nan, 1, 1, 1, 0, 1, 1],
        "grade": [1, 1, 1, 2, 2, 3, 2, 3, 3, 3, 3, 1],
    }
)


def _rows(*variables):
    return baseline_table(TABLE, variables)


def test_continuous_median_iqr_missing_and_mann_whitney():
    (row,) = _rows(Variable("ferritin", "Ferritin", "continuous"))
    assert row.cells["a"].text == "300 (200, 400)" and (row.cells["a"].n, row.cells["a"].missing) == (5, 1)
    a = TABLE.ferritin[:5]
    b = TABLE.ferritin[6:]
    assert row.p == stats.mannwhitneyu(a, b, alternative="two-sided").pvalue
    assert row.test == "Mann-Whitney U"
    assert row.smd == pytest.approx(abs(a.mean() - b.mean()) / np.sqrt((a.var() + b.var()) / 2))


def test_declared_normal_uses_mean_sd_and_t_test():
    (row,) = _rows(Variable("age", "Age", "continuous", normal=True))
    assert row.cells["a"].text == "52.5 (9.4)"
    assert row.p == stats.ttest_ind(TABLE.age[:6], TABLE.age[6:], equal_var=False).pvalue


def test_binary_with_small_expected_counts_uses_fisher():
    (row,) = _rows(Variable("male", "Male", "binary"))
    assert row.cells["a"].text == "2 (40%)" and row.cells["a"].missing == 1
    assert row.test == "Fisher's exact"
    assert row.p == pytest.approx(stats.fisher_exact([[3, 2], [1, 5]]).pvalue, abs=1e-12)


def test_categorical_rows_per_level_and_exact_2xk():
    head, *levels = _rows(Variable("grade", "Grade", "categorical"))
    assert [r.level for r in levels] == ["1", "2", "3"]
    assert [levels[i].cells["a"].text for i in range(3)] == ["3 (50%)", "2 (33%)", "1 (17%)"]
    assert head.test == "Fisher's exact"
    assert head.p == pytest.approx(fisher_exact_2xk(np.array([[3, 2, 1], [1, 1, 4]])))


def test_fisher_2xk_equals_scipy_on_2x2_and_a_monte_carlo_estimate_on_2x3():
    for table in ([[3, 2], [1, 5]], [[10, 0], [2, 8]], [[19, 7], [26, 9]]):
        assert fisher_exact_2xk(np.array(table)) == pytest.approx(stats.fisher_exact(table).pvalue, abs=1e-12)
    table = np.array([[16, 6, 4], [9, 9, 17]])  # the study's anti-MDA5 grades by group
    estimate = stats.fisher_exact(
        table, method=stats.MonteCarloMethod(n_resamples=40_000, rng=np.random.default_rng(1))
    )
    assert fisher_exact_2xk(table) == pytest.approx(estimate.pvalue, abs=0.01)


def test_large_expected_counts_use_chi_square_without_correction():
    big = pd.DataFrame({"group": ["a"] * 40 + ["b"] * 40, "x": [1] * 25 + [0] * 15 + [1] * 12 + [0] * 28})
    (row,) = baseline_table(big, [Variable("x", "X", "binary")])
    assert row.test == "Pearson's chi-square"
    assert row.p == stats.chi2_contingency([[15, 25], [28, 12]], correction=False).pvalue


def test_fisher_is_exact_up_to_the_limit_and_a_reproducible_monte_carlo_estimate_beyond():
    from registry.analysis.baseline import fisher_test, tables_to_enumerate

    large = np.array([[40, 3, 2, 120, 60, 300], [45, 7, 1, 100, 70, 252]])  # 1,000 patients, a rare level
    assert tables_to_enumerate(large) > 10**8  # enumerating it: minutes in numpy, hours in Python
    p, test = fisher_test(large, exact_limit=1_000_000, resamples=20_000)
    assert test == "Fisher's exact (Monte Carlo, 20,000 tables)"
    assert fisher_test(large, exact_limit=1_000_000, resamples=20_000) == (p, test)  # fixed seed
    assert p == pytest.approx(stats.chi2_contingency(large, correction=False).pvalue, abs=0.03)
    small = np.array([[3, 2, 1, 4], [1, 1, 4, 2]])
    exact, label = fisher_test(small, exact_limit=tables_to_enumerate(small), resamples=20_000)
    assert (exact, label) == (fisher_exact_2xk(small), "Fisher's exact")
    estimate, _ = fisher_test(small, exact_limit=tables_to_enumerate(small) - 1, resamples=20_000)
    assert estimate == pytest.approx(exact, abs=0.01)
