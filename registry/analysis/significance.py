"""The two-sample tests of Table 1 and of the safety table, as scipy.stats computes them, on scipy.special's
distribution functions.

Why not scipy.stats itself: importing it takes 0.35-0.45 s (it rewrites hundreds of docstrings as it loads), a
third of `registry analyze` at 61 patients and more than the tests themselves at any size. These are its formulas:
Welch's t-test (``ttest_ind(equal_var=False)``), Pearson's chi-square without continuity correction
(``chi2_contingency(correction=False)``) and the Mann-Whitney U test (``mannwhitneyu``, two-sided, its ``auto``
method: the normal approximation with tie and continuity corrections; where a group has at most 8 values and none
is tied, the exact distribution, which scipy.stats itself counts, imported for that case alone).
tests/test_significance.py holds them equal to scipy.stats, the oracle, on random data. Fisher's exact test is
registry.analysis.baseline's enumeration (R's fisher.test).
"""

from __future__ import annotations

import numpy as np
from scipy.special import chdtrc, ndtr, stdtr

#: scipy's ``auto`` choice: the exact distribution of U when a group has at most this many values and none is tied.
MANN_WHITNEY_EXACT_MAX = 8


def welch_t_test(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p of Welch's t-test (unequal variances, Welch-Satterthwaite degrees of freedom)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (a.mean() - b.mean()) / np.sqrt(va + vb)
        df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return float(2 * stdtr(df, -np.abs(t)))


def expected_counts(table: np.ndarray) -> np.ndarray:
    """The counts expected under independence: row total x column total / total."""
    table = np.asarray(table, dtype=float)
    return np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()


def pearson_chi_square(table: np.ndarray) -> float:
    """p of Pearson's chi-square test of independence, without continuity correction."""
    table = np.asarray(table, dtype=float)
    expected = expected_counts(table)
    statistic = float(((table - expected) ** 2 / expected).sum())
    df = (table.shape[0] - 1) * (table.shape[1] - 1)
    return float(chdtrc(df, statistic)) if df > 0 else 1.0


def _average_ranks(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each value's rank (ties share their mean rank), and the size of each group of tied values."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)
    return ((upper - counts + 1 + upper) / 2)[inverse], counts


def mann_whitney_u(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p of the Mann-Whitney U test, as ``scipy.stats.mannwhitneyu(a, b)``."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n1, n2 = len(a), len(b)
    ranks, ties = _average_ranks(np.concatenate([a, b]))
    u1 = ranks[:n1].sum() - n1 * (n1 + 1) / 2
    u = max(u1, n1 * n2 - u1)
    if min(n1, n2) <= MANN_WHITNEY_EXACT_MAX and not (ties > 1).any():
        from scipy.stats import mannwhitneyu  # the exact distribution: rare (small groups), worth its 0.4 s here

        return float(mannwhitneyu(a, b, alternative="two-sided", method="exact").pvalue)
    n = n1 + n2
    spread = np.sqrt(n1 * n2 / 12 * ((n + 1) - (ties**3 - ties).sum() / (n * (n - 1))))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (u - n1 * n2 / 2 - 0.5) / spread
    return float(np.clip(2 * ndtr(-z), 0.0, 1.0))
