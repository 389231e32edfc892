"""Safety proportions and Fisher's exact test, against the published study and scipy."""

import pandas as pd
import pytest
from scipy.stats import fisher_exact

from registry.analysis.safety import OUTCOMES, safety


def _table(tofa_yes, tofa_n, tacro_yes, tacro_n, outcome):
    frame = pd.DataFrame(
        {
            "group": ["tofacitinib"] * tofa_n + ["tacrolimus"] * tacro_n,
            outcome: [True] * tofa_yes
            + [False] * (tofa_n - tofa_yes)
            + [True] * tacro_yes
            + [False] * (tacro_n - tacro_yes),
        }
    )
    for other in OUTCOMES:
        if other not in frame:
            frame[other] = False
    return frame


@pytest.mark.parametrize(
    "outcome, counts, published_p",
    [("ae_any", (19, 26, 26, 35), 1.000), ("discontinuation", (6, 26, 5, 35), 0.504)],
)
def test_published_safety_p_values(outcome, counts, published_p):
    row = next(r for r in safety(_table(*counts, outcome)) if r.outcome == outcome)
    tacro, tofa = row.groups  # groups in name order
    assert (tofa.patients, tofa.total, tacro.patients, tacro.total) == counts
    assert round(tofa.percent, 1) == round(100 * counts[0] / counts[1], 1)
    assert round(row.p, 3) == published_p
    expected = fisher_exact([[counts[2], counts[3] - counts[2]], [counts[0], counts[1] - counts[0]]]).pvalue
    assert row.p == pytest.approx(expected, rel=1e-12)
    assert published_p < 1 or row.p == 1.0  # a table as likely as any: p is 1, not 1 - 5e-15


def test_outcome_nobody_had_has_no_p():
    row = next(r for r in safety(_table(0, 3, 0, 4, "ae_pjp")) if r.outcome == "ae_pjp")
    assert row.p is None and [g.patients for g in row.groups] == [0, 0]
