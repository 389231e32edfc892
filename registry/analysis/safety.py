"""Safety by group: proportions of patients with each outcome, Fisher's exact test."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from registry.analysis.baseline import fisher_exact_2xk
from registry.codes import AdverseEventTerm

OUTCOMES = {
    "ae_any": "Any adverse event",
    "ae_serious_or_grade3": "Serious or CTCAE grade >= 3 adverse event",
    **{f"ae_{term.value}": term.label for term in AdverseEventTerm},
    "discontinuation": "Study drug discontinued for an adverse event",
}


@dataclass(frozen=True)
class GroupCount:
    group: str
    patients: int  # with the outcome
    total: int
    percent: float


@dataclass(frozen=True)
class SafetyRow:
    outcome: str
    label: str
    groups: list[GroupCount]
    p: float | None  # two-sided Fisher's exact test (two groups); None if nobody had it
    test: str = "Fisher's exact, two-sided"


def safety(table: pd.DataFrame, group: str = "group") -> list[SafetyRow]:
    """Each outcome column of ``OUTCOMES`` (booleans per patient) by ``group``."""
    rows = []
    for outcome, label in OUTCOMES.items():
        counts = [
            GroupCount(str(name), int(part[outcome].sum()), len(part), 100 * part[outcome].sum() / len(part))
            for name, part in table.groupby(group, sort=True)
        ]
        p = None
        if len(counts) == 2 and any(c.patients for c in counts):
            p = fisher_exact_2xk(np.array([[c.patients, c.total - c.patients] for c in counts]))
        rows.append(SafetyRow(outcome, label, counts, p))
    return rows
