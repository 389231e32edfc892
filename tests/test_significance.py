"""Table 1's and the safety table's tests against scipy.stats, their oracle (registry.analysis.significance computes
them on scipy.special's distributions, to spare the analyses the import of scipy.stats)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from registry.analysis.baseline import fisher_exact_2xk
from registry.analysis.significance import expected_counts, mann_whitney_u, pearson_chi_square, welch_t_test

RNG = np.random.default_rng(20261203)
#: The same formulas, summed in another order.
TOLERANCE = 1e-10


def _samples(count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    cases = []
    for _ in range(count):
        n1, n2 = RNG.integers(2, 60, size=2)
        cases.append((RNG.normal(50, 10, n1), RNG.normal(RNG.uniform(45, 55), RNG.uniform(5, 15), n2)))
    return cases


@pytest.mark.parametrize("a, b", _samples(40))
def test_welch_equals_scipy(a, b):
    assert welch_t_test(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue, rel=TOLERANCE)


@pytest.mark.filterwarnings("ignore:Precision loss occurred:RuntimeWarning")  # scipy's, of data without spread
def test_welch_without_spread_is_undefined_as_in_scipy():
    same = np.array([3.0, 3.0, 3.0])
    assert np.isnan(welch_t_test(same, same)) and np.isnan(stats.ttest_ind(same, same, equal_var=False).pvalue)


def _mann_whitney_cases() -> list[tuple[np.ndarray, np.ndarray]]:
    cases = []
    for n1, n2 in [(3, 4), (5, 8), (8, 8), (8, 40), (2, 200), (1, 6), (9, 9), (30, 45), (200, 150)]:
        cases.append((RNG.normal(0, 1, n1), RNG.normal(0.5, 1, n2)))  # no ties: exact where a group has <= 8
        cases.append((RNG.integers(0, 6, n1).astype(float), RNG.integers(1, 7, n2).astype(float)))  # ties
    cases.append((np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0, 7.0])))  # complete separation, exact
    cases.append((np.array([2.0, 2.0, 2.0]), np.array([2.0, 2.0])))  # every value tied
    return cases


@pytest.mark.parametrize("a, b", _mann_whitney_cases())
def test_mann_whitney_equals_scipy_exact_and_asymptotic(a, b):
    expected = stats.mannwhitneyu(a, b, alternative="two-sided").pvalue
    assert mann_whitney_u(a, b) == pytest.approx(expected, rel=TOLERANCE)
    assert mann_whitney_u(b, a) == pytest.approx(expected, rel=TOLERANCE)


def test_mann_whitney_of_a_small_group_beside_thousands_is_exact():
    small, large = RNG.normal(0.3, 1, 8), RNG.normal(0, 1, 5_000)
    assert mann_whitney_u(small, large) == pytest.approx(stats.mannwhitneyu(small, large, method="exact").pvalue,
                                                        rel=TOLERANCE)  # fmt: skip


def test_the_analyses_import_scipy_stats_only_for_an_exact_mann_whitney():
    probe = ("import sys, numpy as np; from registry.analysis import run, significance as s\n"
             "s.mann_whitney_u(np.arange(20.0), np.arange(5.0, 30.0)); before = 'scipy.stats' in sys.modules\n"
             "s.mann_whitney_u(np.arange(3.0), np.arange(2.5, 9.5)); print(before, 'scipy.stats' in sys.modules)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "True"]


def _tables() -> list[np.ndarray]:
    tables = [RNG.integers(0, 40, size=(2, k)) + 1 for k in (2, 2, 3, 4, 5) for _ in range(4)]
    return [*tables, np.array([[120, 80], [95, 105]]), np.array([[5, 0, 7], [9, 12, 3]])]


@pytest.mark.parametrize("table", _tables())
def test_chi_square_and_expected_counts_equal_scipy(table):
    scipy_test = stats.chi2_contingency(table, correction=False)
    assert pearson_chi_square(table) == pytest.approx(scipy_test.pvalue, rel=TOLERANCE)
    np.testing.assert_allclose(expected_counts(table), stats.contingency.expected_freq(table), rtol=1e-12)


@pytest.mark.parametrize("table", [RNG.integers(0, 30, size=(2, 2)) for _ in range(40)]
                         + [np.array([[0, 26], [3, 32]]), np.array([[19, 7], [26, 9]]), np.array([[1, 1], [1, 1]])])  # fmt: skip
def test_fisher_of_the_safety_table_equals_scipy(table):
    """The safety table's 2 x 2 Fisher test is Table 1's enumeration (R's fisher.test): scipy's fisher_exact."""
    assert fisher_exact_2xk(table) == pytest.approx(stats.fisher_exact(table).pvalue, rel=1e-9)
