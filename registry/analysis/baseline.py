"""The baseline table ("Table 1") by group, with gtsummary's conventions.

Continuous variables: median (IQR) and the Mann-Whitney U test, or mean (SD) and
Welch's t-test where the variable is declared normal. Categorical and yes/no
variables: n (%) of the non-missing, chi-square without continuity correction, or
Fisher's exact test when an expected count is below 5 (exact for 2 x k tables by
enumeration, since scipy's r x c version is a Monte Carlo estimate; a Monte Carlo
estimate too where the tables to enumerate are too many, as in large registries). Every row
reports missing counts and a standardised mean difference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from scipy.special import gammaln

from registry.analysis.significance import expected_counts, mann_whitney_u, pearson_chi_square, welch_t_test


@dataclass(frozen=True)
class Variable:
    column: str
    label: str
    kind: str  # continuous | categorical | binary
    normal: bool = False


#: The study's baseline variables, in the order the table shows them.
BASELINE_VARIABLES: tuple[Variable, ...] = (
    Variable("age", "Age at index, years", "continuous", normal=True),
    Variable("male", "Male sex", "binary"),
    Variable("ever_smoker", "Ever smoker", "binary"),
    Variable("rpild", "Rapidly progressive ILD", "binary"),
    Variable("anti_mda5_grade", "Anti-MDA5 grade (1 weak, 2 moderate, 3 strong)", "categorical"),
    Variable("steroid_sparing", "Concurrent steroid-sparing agent", "binary"),
    Variable("ferritin", "Ferritin, ng/mL", "continuous"),
    Variable("ldh", "LDH, U/L", "continuous"),
    Variable("crp", "CRP, mg/L", "continuous"),
    Variable("kl6", "KL-6, U/mL", "continuous"),
    Variable("lymphocytes", "Lymphocytes, 10^9/L", "continuous"),
    Variable("ck", "CK, U/L", "continuous"),
    Variable("albumin", "Albumin, g/L", "continuous"),
    Variable("pft_fvc_pct_pred", "FVC, % predicted", "continuous"),
    Variable("pft_dlco_pct_pred", "DLCO, % predicted", "continuous"),
    Variable("hrct_total_score", "HRCT total score", "continuous"),
    Variable("hrct_pattern", "HRCT pattern", "categorical"),
)


@dataclass(frozen=True)
class Cell:
    text: str  # as printed, e.g. "52 (44, 61)" or "12 (46%)"
    n: int  # non-missing
    missing: int


@dataclass(frozen=True)
class Row:
    variable: str
    label: str
    level: str | None  # category of a categorical variable; None on the variable's own row
    cells: dict[str, Cell]
    p: float | None
    test: str | None
    smd: float | None
    missing: int = field(init=False)  # patients without a value, all groups together
    coded: int = 0  # of them, those whose value was recorded as a missing-data code (unknown, not done, ...)

    def __post_init__(self) -> None:
        object.__setattr__(self, "missing", sum(cell.missing for cell in self.cells.values()))


#: The seed of Fisher's Monte Carlo estimate: the same data give the same p in every report.
MONTE_CARLO_SEED = 20221


def tables_to_enumerate(table: np.ndarray) -> int:
    """How many first rows an exact 2 x k Fisher test looks at (an upper bound: the product of column ranges)."""
    columns = np.asarray(table, dtype=int).sum(axis=0)
    return math.prod(int(c) + 1 for c in columns[:-1])


def _log_p(rows: np.ndarray, columns: np.ndarray, first_row: int) -> np.ndarray:
    """Log hypergeometric probability of each first row (one per column of ``rows``) given the margins."""
    total = int(columns.sum())
    log_denominator = gammaln(total + 1) - gammaln(first_row + 1) - gammaln(total - first_row + 1)
    cols = columns[:, None]
    return (gammaln(cols + 1) - gammaln(rows + 1) - gammaln(cols - rows + 1)).sum(axis=0) - log_denominator


def fisher_exact_2xk(table: np.ndarray) -> float:
    """Two-sided exact p of a 2 x k table: the probability of tables no more likely than it.

    Every table with the observed margins is enumerated at once with numpy (see
    :func:`tables_to_enumerate` for how many; :func:`fisher_test` decides when that is too many).
    """
    table = np.asarray(table, dtype=int)
    columns, first_row = table.sum(axis=0), int(table[0].sum())
    rows = np.indices([int(c) + 1 for c in columns[:-1]]).reshape(len(columns) - 1, -1)
    last = first_row - rows.sum(axis=0)
    keep = (last >= 0) & (last <= columns[-1])
    log_p = _log_p(np.vstack([rows[:, keep], last[keep]]), columns, first_row)
    observed = _log_p(table[0][:, None], columns, first_row)[0]
    # as R: the probabilities scaled by their largest and divided by their sum (1, but for rounding), so
    # that a table as likely as any gives p = 1 exactly; "no more likely" within R's relative tolerance, 1e-7
    scaled = np.exp(log_p - log_p.max())
    return float(min(1.0, scaled[log_p <= observed + 1e-7].sum() / scaled.sum()))


def fisher_monte_carlo(table: np.ndarray, resamples: int, seed: int = MONTE_CARLO_SEED) -> float:
    """R's ``fisher.test(simulate.p.value = TRUE, B = resamples)``: random tables with the observed margins.

    p = (1 + the number of random tables no more likely than the observed) / (resamples + 1).
    """
    table = np.asarray(table, dtype=int)
    columns, first_row = table.sum(axis=0), int(table[0].sum())
    drawn = np.random.default_rng(seed).multivariate_hypergeometric(columns, first_row, size=resamples).T
    observed = _log_p(table[0][:, None], columns, first_row)[0]
    return float((1 + (_log_p(drawn, columns, first_row) <= observed + 1e-7).sum()) / (resamples + 1))


def fisher_test(table: np.ndarray, exact_limit: int, resamples: int) -> tuple[float, str]:
    """Fisher's test of a 2 x k table: exact up to ``exact_limit`` tables, else a Monte Carlo estimate.

    The estimate draws ``resamples`` random tables with the observed margins from a fixed
    seed, so a report is reproducible (:func:`fisher_monte_carlo`).
    """
    if tables_to_enumerate(table) <= exact_limit:
        return fisher_exact_2xk(table), "Fisher's exact"
    return fisher_monte_carlo(table, resamples), f"Fisher's exact (Monte Carlo, {resamples:,} tables)"


def _smd_continuous(a: pd.Series, b: pd.Series) -> float:
    pooled = math.sqrt((a.var() + b.var()) / 2)
    return float(abs(a.mean() - b.mean()) / pooled) if pooled > 0 else 0.0


def _smd_categorical(a: pd.Series, b: pd.Series, levels: list) -> float:
    """Yang & Dalton's multi-category SMD (equals the usual one for two levels)."""
    p1 = np.array([(a == level).mean() for level in levels[1:]])
    p2 = np.array([(b == level).mean() for level in levels[1:]])
    s = (np.diag(p1) - np.outer(p1, p1) + np.diag(p2) - np.outer(p2, p2)) / 2
    diff = p1 - p2
    try:
        return float(math.sqrt(diff @ np.linalg.solve(s, diff)))
    except np.linalg.LinAlgError:
        return float("nan")


def _continuous(variable: Variable, parts: dict[str, pd.Series]) -> list[Row]:
    cells, values = {}, {}
    for name, series in parts.items():
        present = series.dropna().astype(float)
        values[name] = present
        if present.empty:
            text = "-"
        elif variable.normal:
            text = f"{present.mean():.1f} ({present.std():.1f})"
        else:
            q1, median, q3 = present.quantile([0.25, 0.5, 0.75])
            text = f"{median:.4g} ({q1:.4g}, {q3:.4g})"
        cells[name] = Cell(text, len(present), int(series.isna().sum()))
    a, b = values.values()
    p = test = smd = None
    if len(a) > 1 and len(b) > 1:
        if variable.normal:
            p, test = welch_t_test(a, b), "Welch's t-test"
        else:
            p, test = mann_whitney_u(a, b), "Mann-Whitney U"
        smd = _smd_continuous(a, b)
    return [Row(variable.column, variable.label, None, cells, p, test, smd)]


def _categorical(
    variable: Variable, parts: dict[str, pd.Series], fisher_exact_limit: int, fisher_resamples: int
) -> list[Row]:
    present = {name: s.dropna() for name, s in parts.items()}
    levels = sorted(set().union(*(set(s) for s in present.values())), key=str)
    if variable.kind == "binary":
        present = {name: s.astype(bool) for name, s in present.items()}
        levels = [False, True]
    counts = np.array([[int((s == level).sum()) for level in levels] for s in present.values()])
    p = test = smd = None
    usable = counts[:, counts.sum(axis=0) > 0]
    if usable.shape[1] >= 2 and (usable.sum(axis=1) > 0).all():
        expected = expected_counts(usable)
        if (expected < 5).any():
            p, test = fisher_test(usable, fisher_exact_limit, fisher_resamples)
        else:
            p = pearson_chi_square(usable)
            test = "Pearson's chi-square"
        a, b = present.values()
        smd = _smd_categorical(a, b, levels)

    def cell(name: str, level: object) -> Cell:
        n = len(present[name])
        k = int((present[name] == level).sum())
        text = f"{k} ({100 * k / n:.0f}%)" if n else "-"
        return Cell(text, n, int(parts[name].isna().sum()))

    if variable.kind == "binary":
        return [Row(variable.column, variable.label, None, {name: cell(name, True) for name in parts}, p, test, smd)]
    head = Row(
        variable.column,
        variable.label,
        None,
        {n: Cell("", len(present[n]), int(parts[n].isna().sum())) for n in parts},
        p,
        test,
        smd,
    )
    return [head] + [
        Row(variable.column, variable.label, str(level), {name: cell(name, level) for name in parts}, None, None, None)
        for level in levels
    ]


def baseline_table(
    table: pd.DataFrame,
    variables: Sequence[Variable] = BASELINE_VARIABLES,
    group: str = "group",
    *,
    fisher_exact_limit: int = 1_000_000,
    fisher_resamples: int = 100_000,
    coded: pd.DataFrame | None = None,
) -> list[Row]:
    """One row per variable (plus one per category), by the two groups of ``group``.

    ``coded`` (as :attr:`registry.cohort.Cohort.coded`) tells, of the patients missing a variable, those whose value
    was recorded as a missing-data code rather than left blank: each variable's row counts them (``Row.coded``).

    Fisher's test is exact while it has at most ``fisher_exact_limit`` tables to enumerate,
    and a Monte Carlo estimate from ``fisher_resamples`` tables beyond (:func:`fisher_test`).
    """
    names = sorted(table[group].unique())
    if len(names) != 2:
        raise ValueError(f"the baseline table compares two groups; found {len(names)}: {', '.join(map(str, names))}")
    rows = []
    for variable in variables:
        parts = {name: table.loc[table[group] == name, variable.column] for name in names}
        found = (
            _continuous(variable, parts)
            if variable.kind == "continuous"
            else _categorical(variable, parts, fisher_exact_limit, fisher_resamples)
        )
        if coded is not None and variable.column in coded:
            analysed = table.index[table[group].isin(names)]
            found[0] = replace(found[0], coded=int(coded[variable.column].reindex(analysed, fill_value=False).sum()))
        rows += found
    return rows
