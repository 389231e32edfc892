"""Write imputed data sets (tests/r/imputation_datasets.csv) for tests/r/imputation_reference.R to pool with mice.

Run from the repository root:  .venv/bin/python tests/r/imputation_datasets.py
Cases: the demo cohort (synthetic, fixtures/demo; 21 of 61 lack baseline PFT), m = 20, as the report imputes it; and a
seeded random cohort of 300 (synthetic) with a fifth of two covariates missing at random, m = 5. No identifier is
written: rows are numbered within each case.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).resolve().parent / "imputation_datasets.csv"
COVARIATES = ["tofacitinib", "age", "male", "ever_smoker", "anti_mda5_grade", "steroid_sparing", "pft_fvc_pct_pred",
              "pft_dlco_pct_pred"]  # fmt: skip


def random_cohort(n: int = 300, seed: int = 20261206) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data = pd.DataFrame({
        "tofacitinib": rng.integers(0, 2, n), "age": rng.normal(52, 11, n).round(1), "male": rng.integers(0, 2, n),
        "ever_smoker": rng.integers(0, 2, n).astype(float), "anti_mda5_grade": rng.integers(1, 4, n).astype(float),
        "steroid_sparing": rng.integers(0, 2, n), "pft_fvc_pct_pred": rng.normal(70, 15, n).round(),
    })  # fmt: skip
    data["pft_dlco_pct_pred"] = (0.6 * data["pft_fvc_pct_pred"] + rng.normal(10, 8, n)).round()
    hazard = 0.004 * np.exp(
        -0.6 * data["tofacitinib"] + 0.03 * (data["age"] - 52) - 0.02 * (data["pft_fvc_pct_pred"] - 70)
    )
    death, censor = np.ceil(rng.exponential(1 / hazard)), rng.integers(30, 400, n)
    data["cox_time"] = np.minimum(np.minimum(death, censor), 365).astype(int)
    data["cox_event"] = ((death <= censor) & (death <= 365)).astype(int)
    for name in ("pft_fvc_pct_pred", "ever_smoker"):
        data.loc[rng.random(n) < 0.2, name] = np.nan
    return data


def datasets() -> pd.DataFrame:
    import sys
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from conftest import build_demo_table

    from registry.analysis.imputation import impute
    from registry.analysis.run import cox_data
    from registry.config import Config

    config = Config()
    with tempfile.TemporaryDirectory() as folder:
        demo = cox_data(build_demo_table(Path(folder)), config).reset_index(drop=True)
    frames = []
    for case, data, m in (("demo", demo, config.imputations), ("random_300", random_cohort(), 5)):
        made = impute(data, COVARIATES[1:], predictors=["tofacitinib"], time="cox_time", event="cox_event", m=m,
                      seed=config.imputation_seed)  # fmt: skip
        for number, imputed in enumerate(made, start=1):
            frames.append(imputed[["cox_time", "cox_event", *COVARIATES]].assign(case=case, imputation=number))
    return pd.concat(frames)[["case", "imputation", "cox_time", "cox_event", *COVARIATES]]


if __name__ == "__main__":
    datasets().to_csv(OUT, index=False, float_format="%.17g")
    print(f"written {OUT}")
