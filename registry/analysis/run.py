"""All analyses of a cohort, as one JSON-ready document (see docs/results.md).

Every number the report will show is computed here, once: overall and in the RPILD
subgroup. The document carries the configuration it was made with and a fingerprint
of the analysis table, so each result can be traced to the data that produced it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd

import registry
from registry.analysis.baseline import baseline_table
from registry.analysis.cox import CoxError, fit_cox
from registry.analysis.mortality import mortality
from registry.analysis.safety import safety
from registry.analysis.survival import at_risk, km_curve, log_rank, r_call
from registry.cohort import Cohort
from registry.config import Config

#: The group whose hazard ratio is reported; the other study drug is the reference.
EXPOSURE = "tofacitinib"
#: Days at which numbers at risk are given under the curves.
AT_RISK_EVERY = 30


def fingerprint(table: pd.DataFrame) -> str:
    """SHA-256 of the analysis table's CSV form: the same data gives the same hash."""
    return hashlib.sha256(table.sort_index().to_csv().encode()).hexdigest()


def _plain(value: Any) -> Any:
    """Dataclasses, dates and numpy numbers as JSON values; NaN and infinity as null."""
    if dataclasses.is_dataclass(value):  # field by field: dataclasses.asdict would copy every list first
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, date | datetime):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _survival(table: pd.DataFrame, config: Config) -> dict[str, Any]:
    horizon = int(table["time_days"].max()) if len(table) else 0
    times = list(range(0, horizon + 1, AT_RISK_EVERY))
    groups = {
        name: {
            "curve": km_curve(rows["time_days"], rows["event"], name, config.km_conf_type),
            "at_risk": dict(zip(times, at_risk(rows["time_days"], times), strict=True)),
        }
        for name, rows in table.groupby("group", sort=True)
    }
    tests = {"full follow-up": log_rank(table["time_days"], table["event"], table["group"])}
    for name, days in config.landmarks.items():
        tests[name] = log_rank(table["time_days"], table["event"], table["group"], days)
    return {"ci_type": config.km_conf_type, "r_call": r_call(config.km_conf_type), "groups": groups, "log_rank": tests}


def cox_data(table: pd.DataFrame, config: Config) -> pd.DataFrame:
    """The analysis table with the exposure as 0/1 and follow-up ended at the last landmark (``cox_time``,
    ``cox_event``): what every Cox model, weighted or imputed, is fitted to."""
    data = table.assign(**{EXPOSURE: (table["group"] == EXPOSURE).astype(int)})
    horizon = max(config.landmarks.values())
    data["cox_time"] = data["time_days"].clip(upper=horizon)
    data["cox_event"] = (data["event"].astype(bool) & (data["time_days"] <= horizon)).astype(int)
    return data


def _cox(table: pd.DataFrame, config: Config) -> dict[str, Any]:
    data = cox_data(table, config)
    horizon = max(config.landmarks.values())

    def fit(covariates: list[str]) -> Any:
        try:
            return fit_cox(data, "cox_time", "cox_event", covariates, firth=config.firth_on_separation)
        except CoxError as error:
            return {"error": str(error)}

    models = {"unadjusted": fit([EXPOSURE]), "adjusted": fit([EXPOSURE, *config.covariates])}
    univariable = {name: fit([name]) for name in config.covariates}
    return {
        "outcome": f"death within {horizon} days",
        "reference": "tacrolimus",
        "models": models,
        "univariable": univariable,
    }


def _analyses(table: pd.DataFrame, config: Config) -> dict[str, Any]:
    run = config.analyses
    result: dict[str, Any] = {"patients": table["group"].value_counts().sort_index().to_dict()}
    if "mortality" in run:
        result["mortality"] = mortality(table, config.landmarks, conf_type=config.km_conf_type)
    if "survival" in run:
        result["survival"] = _survival(table, config)
    if "cox" in run:
        result["cox"] = _cox(table, config)
    return result


def _not_signed(data_cut: dict[str, Any] | None, registered: int) -> dict[str, Any]:
    """For a cut of signed patients only: the patients in the registry at the cut, and those it left out (not
    signed), in all and by record status."""
    if not data_cut or not data_cut.get("signed_only"):
        return {}
    left_out = data_cut.get("left_out") or {}
    total = sum(left_out.values())
    return {"not_signed": {"in_registry": registered + total, "total": total, "by_status": left_out}}


def analyze(
    cohort: Cohort, config: Config, *, data_cut: dict[str, Any] | None = None, imputations: Path | None = None
) -> dict[str, Any]:
    """Every configured analysis of ``cohort``, overall and in the RPILD subgroup.

    ``data_cut`` describes the frozen data cut the cohort was built from (registry.cuts), if any: it travels
    with the results so that they name the snapshot they can be reproduced from. ``imputations``: a directory to
    write the multiple imputation's data sets to.
    """
    table = cohort.table
    rpild = table[table["rpild"].fillna(False).astype(bool)]
    document: dict[str, Any] = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "software": {"mda5-registry": registry.__version__},
        "configuration": dataclasses.asdict(config),
        "data_fingerprint": fingerprint(table),
        **({"data_cut": data_cut} if data_cut else {}),
        "flow": {
            "registered": cohort.registered,
            "excluded": cohort.exclusion_counts(),
            "analysed": table["group"].value_counts().sort_index().to_dict(),
            "rpild": rpild["group"].value_counts().sort_index().to_dict(),
            **_not_signed(data_cut, cohort.registered),
        },
        "overall": _analyses(table, config),
        "rpild": _analyses(rpild, config),
    }
    if "baseline" in config.analyses:
        document["baseline"] = baseline_table(
            table,
            fisher_exact_limit=config.fisher_exact_limit,
            fisher_resamples=config.fisher_resamples,
            coded=cohort.coded,
        )
    if "safety" in config.analyses:
        document["safety"] = safety(table)
    if config.sensitivity_analyses and "cox" in config.analyses and not table.empty:
        from registry.analysis.sensitivity import sensitivity  # imported where it runs: most commands never do

        models = document["overall"]["cox"]["models"]
        document["sensitivity"] = sensitivity(
            cox_data(table, config), models, EXPOSURE, config, imputations=imputations
        )
    return _plain(document)
