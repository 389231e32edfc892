"""Sensitivity analyses of the hazard ratio of tofacitinib: confounding, missing baseline data, competing risks.

The study is observational, so the published adjusted Cox model is set beside estimates that answer a reviewer's
first questions in the same report: propensity-score weighting (stabilised IPTW and overlap weights, with the
balance they achieve and weighted Kaplan-Meier curves), a doubly robust model (weighted and adjusted), the adjusted
model after multiple imputation of missing baseline values, E-values for unmeasured confounding, and the cumulative
incidence of death with lung transplantation as a competing event. Every estimate is computed here, once; the report
lays them out. Each part can be switched off in ``registry.toml`` (``sensitivity_analyses``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from registry.analysis.competing import cumulative_incidence
from registry.analysis.cox import CoxError, CoxResult, fit_cox
from registry.analysis.evalue import OUTCOMES, evalue
from registry.analysis.imputation import ImputationError, PooledCox, fit_cox_imputed, impute, write_imputations
from registry.analysis.mortality import complement
from registry.analysis.survival import Estimate, fit_km, km_curve, survival_at
from registry.analysis.weighting import (
    SMD_THRESHOLD,
    WEIGHTINGS,
    PropensityError,
    balance,
    effective_sample_size,
    fit_propensity,
    propensity_weights,
    truncate_weights,
)
from registry.config import Config

#: A group whose effective sample size under a weighting falls below this, or below MIN_ESS_SHARE of its patients,
#: is flagged: a few patients carry the weighted estimate.
MIN_ESS = 10
MIN_ESS_SHARE = 0.5
#: The rows of the hazard-ratio table, in the order the report gives them.
METHODS = ("unadjusted", "adjusted", "adjusted_baseline", "imputed", "iptw", "overlap", "doubly_robust")
#: Bins of the propensity-score distribution given for the overlap figure.
PS_BINS = 40
#: The weight column the weighted models read.
WEIGHT = "_weight"


def _exposure_term(model: Any, exposure: str) -> dict[str, Any] | None:
    if not isinstance(model, CoxResult | PooledCox):
        return None
    term = next(t for t in model.terms if t.name == exposure)
    return {"hr": term.hr, "lower": term.lower, "upper": term.upper, "p": term.p}


def _fit(data: pd.DataFrame, covariates: list[str], **options: Any) -> CoxResult | dict[str, str]:
    try:
        return fit_cox(data, "cox_time", "cox_event", covariates, **options)
    except CoxError as error:
        return {"error": str(error)}


def _ess_notes(label: str, ess: dict[str, float], patients: dict[str, int]) -> list[str]:
    return [
        f"{label}: the effective sample size of {group} is {ess[group]:.1f} of {patients[group]} patients; a few "
        "patients carry the weighted estimate"
        for group in ess
        if ess[group] < MIN_ESS or ess[group] < MIN_ESS_SHARE * patients[group]
    ]


def _distribution(score: pd.Series, group: pd.Series) -> dict[str, Any]:
    """The propensity scores of each group as counts in bins of width 1 / PS_BINS, with their range: what the
    overlap figure draws (the scores themselves would grow the results with the cohort)."""
    edges = np.linspace(0, 1, PS_BINS + 1)
    by_group = {str(g): score[group == g].to_numpy() for g in sorted(group.unique())}
    return {
        "edges": edges.tolist(),
        "counts": {g: np.histogram(v, edges)[0].tolist() for g, v in by_group.items()},
        "range": {g: [float(v.min()), float(v.max())] for g, v in by_group.items()},
    }


def _by_group(data: pd.DataFrame) -> dict[str, np.ndarray]:
    """The row positions of each group's patients."""
    return {str(group): np.flatnonzero(data["group"].to_numpy() == group) for group in sorted(data["group"].unique())}


def _weights(data: pd.DataFrame, score: pd.Series, weighting: str, exposure: str, config: Config) -> np.ndarray:
    """The weights of ``weighting``, truncated as the configuration says."""
    treated = data[exposure].to_numpy(bool)
    weights = propensity_weights(score.to_numpy(), treated, weighting)
    if config.weight_truncation_percentile:
        weights = truncate_weights(weights, treated, config.weight_truncation_percentile)
    return weights


def _weighting(
    data: pd.DataFrame, weights: np.ndarray, weighting: str, exposure: str, config: Config
) -> dict[str, Any]:
    """One weighting's balance, weighted Kaplan-Meier curves and landmark mortality (infinitesimal-jackknife
    intervals), and weighted Cox model of the exposure (robust standard errors)."""
    treated = data[exposure].to_numpy(bool)
    groups = _by_group(data)
    time, event = data["time_days"], data["event"]
    fits = {
        group: fit_km(time.iloc[at], event.iloc[at], config.km_conf_type, weights[at]) for group, at in groups.items()
    }
    mortality = []
    for name, days in config.landmarks.items():
        estimates = []
        for group, km in fits.items():
            survival = survival_at(km, days)
            mortality_at = Estimate(1 - survival.value, complement(survival.upper), complement(survival.lower))
            estimates.append({"group": group, "km_mortality": mortality_at})
        mortality.append({"landmark": name, "days": days, "groups": estimates})
    ess = {group: effective_sample_size(weights[at]) for group, at in groups.items()}
    covariates = [*config.propensity_covariates, *config.propensity_baseline]
    return {
        "label": WEIGHTINGS[weighting],
        "truncated_at_percentile": config.weight_truncation_percentile or None,
        "weights": {
            group: {"min": float(weights[at].min()), "max": float(weights[at].max()), "sum": float(weights[at].sum())}
            for group, at in groups.items()
        },
        "effective_sample_size": ess,
        "balance": balance(data[covariates], treated, weights),
        "curves": {
            group: km_curve(time.iloc[at], event.iloc[at], group, config.km_conf_type, weights[at])
            for group, at in groups.items()
        },
        "mortality": mortality,
        "cox": _fit(data.assign(**{WEIGHT: weights}), [exposure], weights=WEIGHT),
        "notes": _ess_notes(WEIGHTINGS[weighting], ess, {group: len(at) for group, at in groups.items()}),
    }


def _imputation(
    data: pd.DataFrame, exposure: str, config: Config, out: Path | None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The adjusted model with ``imputed_covariates``: complete cases, and after multiple imputation (pooled)."""
    covariates = [exposure, *config.covariates, *config.imputed_covariates]
    unknown = [name for name in covariates if name not in data.columns]
    if unknown:
        return {"error": f"unknown imputed covariate(s): {', '.join(unknown)}"}, []
    names = ", ".join(config.imputed_covariates)
    complete = _fit(data, covariates)
    rows = [{"method": "adjusted_baseline", "label": f"Adjusted + {names}, complete cases", "model": complete}]
    missing = {name: int(data[name].isna().sum()) for name in covariates if data[name].isna().any()}
    part: dict[str, Any] = {
        "covariates": covariates,
        "missing": missing,
        "m": config.imputations,
        "seed": config.imputation_seed,
        "complete_case": complete,
        "method": (
            f"Multiple imputation: the adjusted model with {names}, missing values imputed {config.imputations} times "
            "by chained equations with predictive mean matching (as R's mice, method pmm, 5 donors; one chain of "
            f"10 rounds per imputation, seed {config.imputation_seed}; the imputation model holds the other "
            "covariates, the study drug, the event indicator and the Nelson-Aalen cumulative hazard), the Cox model "
            "fitted in each and pooled by Rubin's rules with Barnard-Rubin degrees of freedom (as R's mice::pool); "
            "the complete-case fit of the same model is shown beside it."
        ),
    }
    if not missing:
        part["note"] = "No value of the model's covariates is missing: nothing to impute"
        return part, rows
    try:
        datasets = impute(
            data, covariates[1:], predictors=[exposure], time="cox_time", event="cox_event",
            m=config.imputations, seed=config.imputation_seed,
        )  # fmt: skip
        pooled = fit_cox_imputed(datasets, "cox_time", "cox_event", covariates)
    except (ImputationError, CoxError) as error:
        part["error"] = str(error)
        rows.append({"method": "imputed", "label": f"Adjusted + {names}, multiple imputation", "model": part})
        return part, rows
    part["pooled"] = pooled
    if out is not None:
        written = write_imputations(
            datasets, out, columns=["cox_time", "cox_event", *covariates],
            description={"made_by": "registry analyze --imputations", "m": config.imputations,
                         "seed": config.imputation_seed, "imputed": missing,
                         "model_formula": f"Surv(cox_time, cox_event) ~ {' + '.join(covariates)}"},
        )  # fmt: skip
        part["written"] = [str(path) for path in written]
    label = f"Adjusted + {names}, multiple imputation (m = {config.imputations})"
    rows.append({"method": "imputed", "label": label, "model": pooled})
    return part, rows


def sensitivity(
    data: pd.DataFrame, models: dict[str, Any], exposure: str, config: Config, *, imputations: Path | None = None
) -> dict[str, Any]:
    """Every configured sensitivity analysis of the Cox data ``data`` (the analysis table with the exposure 0/1 and
    ``cox_time`` / ``cox_event``), beside the unadjusted and adjusted ``models`` already fitted; the imputed data sets
    are written to the directory ``imputations`` if given."""
    run = config.sensitivity_analyses
    result: dict[str, Any] = {"notes": []}
    rows: list[dict[str, Any]] = [
        {"method": "unadjusted", "label": "Unadjusted", "model": models["unadjusted"]},
        {"method": "adjusted", "label": "Adjusted, complete cases", "model": models["adjusted"]},
    ]
    if "imputation" in run:
        result["imputation"], imputed_rows = _imputation(data, exposure, config, imputations)
        rows.extend(imputed_rows)
    if "competing_risks" in run:
        result["competing_risks"] = cumulative_incidence(data, config.landmarks, config.km_conf_type)
        if result["competing_risks"]["recorded"]:
            result["competing_risks"]["method"] = (
                "Competing risks: lung transplantation before death ends a patient's time at risk of death before "
                "transplantation; the cumulative incidence of death and of transplantation by the Aalen-Johansen "
                "estimator with infinitesimal-jackknife intervals, as R's survfit(Surv(time, factor(status)) ~ group) "
                "multi-state estimate; 1 - Kaplan-Meier with transplantation censored is shown beside it as crude."
            )
    covariates = [*config.propensity_covariates, *config.propensity_baseline]
    unknown = [name for name in covariates if name not in data.columns]
    weightings = [name for name in WEIGHTINGS if name in run]
    if unknown:
        result["propensity"] = {"error": f"unknown propensity covariate(s): {', '.join(unknown)}"}
    elif weightings or "doubly_robust" in run:
        ps_data = data.assign(**{name: data[name].astype(float) for name in covariates})
        try:
            score, model = fit_propensity(ps_data, exposure, covariates)
        except PropensityError as error:
            result["propensity"] = {"error": str(error)}
        else:
            analysed = ps_data.loc[score.index]
            result["propensity"] = {
                "model": model,
                "distribution": _distribution(score, analysed["group"]),
                "smd_threshold": SMD_THRESHOLD,
            }
            result["weightings"] = {}
            for name in weightings:
                made = _weighting(analysed, _weights(analysed, score, name, exposure, config), name, exposure, config)
                result["weightings"][name] = made
                result["notes"].extend(made["notes"])
                rows.append({"method": name, "label": made["label"], "model": made["cox"]})
            if "doubly_robust" in run:
                weighted = analysed.assign(**{WEIGHT: _weights(analysed, score, "iptw", exposure, config)})
                robust = _fit(weighted, [exposure, *config.covariates], weights=WEIGHT)
                result["doubly_robust"] = robust
                rows.append({"method": "doubly_robust", "label": "Doubly robust (IPTW and adjusted)", "model": robust})
    rows.sort(key=lambda row: METHODS.index(row["method"]))
    result["hazard_ratios"] = [_row(row, exposure, config, "evalues" in run) for row in rows]
    if "evalues" in run:
        result["evalue_conversion"] = OUTCOMES[config.evalue_outcome]
    return result


def _row(row: dict[str, Any], exposure: str, config: Config, with_evalue: bool) -> dict[str, Any]:
    model = row["model"]
    estimate = _exposure_term(model, exposure)
    entry: dict[str, Any] = {"method": row["method"], "label": row["label"]}
    if estimate is None:
        entry["error"] = model.get("error", "not estimated") if isinstance(model, dict) else "not estimated"
        return entry
    if isinstance(model, PooledCox):
        variance, estimation = "Rubin's rules", f"partial likelihood in each of {model.m} imputations, pooled"
    else:
        variance, estimation = model.variance, model.method
    entry.update(estimate, n=model.n, events=model.events, variance=variance, estimation=estimation,
                 notes=model.notes)  # fmt: skip
    if with_evalue and row["method"] != "unadjusted":
        entry["evalue"] = evalue(estimate["hr"], estimate["lower"], estimate["upper"], config.evalue_outcome)
    return entry
