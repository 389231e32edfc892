"""Write the demo cohort's Cox data (tests/r/sensitivity_demo.csv) for tests/r/sensitivity_reference.R.

Run from the repository root:  .venv/bin/python tests/r/sensitivity_data.py
The demo cohort is synthetic (fixtures/demo); no study identifier is written, only the analysed variables, one row
per patient in the order of the analysis table.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent / "sensitivity_demo.csv"
COLUMNS = ["time_days", "event", "cox_time", "cox_event", "tofacitinib", "age", "male", "ever_smoker",
           "anti_mda5_grade", "rpild", "steroid_sparing", "pft_fvc_pct_pred", "pft_dlco_pct_pred"]  # fmt: skip


def demo_cox_data():
    """The demo registry's Cox data, built from fixtures/demo as `registry demo` builds it (SQLite)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import build_demo_table

    from registry.analysis.run import cox_data
    from registry.config import Config

    with tempfile.TemporaryDirectory() as folder:
        data = cox_data(build_demo_table(Path(folder)), Config())
    return data.assign(rpild=data["rpild"].astype(float))[COLUMNS]


if __name__ == "__main__":
    demo_cox_data().to_csv(OUT, index=False, float_format="%.17g")
    print(f"written {OUT}")
