"""Analysis configuration: one TOML file, every key optional, defaults reproduce the study.

The defaults are the definitions of Fan et al. (J Rheumatol 2022): enrolment October
2017 - December 2020, landmarks of 183 and 365 days, covariates of the adjusted model.
An unknown key is an error, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from datetime import date
from pathlib import Path
from typing import Any

from registry.codes import DRUGS, Drug

#: The Kaplan-Meier interval types (R's survfit conf.type) the analyses compute.
KM_CONF_TYPES = ("log", "log-log", "plain")
#: The parts of the sensitivity analyses (registry.analysis.sensitivity), by the names that switch them on.
SENSITIVITY_ANALYSES = ("iptw", "overlap", "doubly_robust", "imputation", "competing_risks", "evalues")
DEFAULT_STEROID_SPARING = tuple(drug.value for drug, info in DRUGS.items() if info.steroid_sparing)


@dataclass(frozen=True)
class Config:
    data_cutoff: date | None = None  # None: follow-up runs to each patient's last contact
    enrolment_start: date = date(2017, 10, 1)
    enrolment_end: date = date(2020, 12, 31)
    landmarks: dict[str, int] = field(default_factory=lambda: {"6 months": 183, "1 year": 365})
    baseline_window_days: int = 30  # a baseline value lies within this many days of the index date
    steroid_sparing_drugs: tuple[str, ...] = DEFAULT_STEROID_SPARING
    steroid_sparing_window_days: int = 30  # a course overlapping index +/- this many days is concurrent
    covariates: tuple[str, ...] = ("age", "male", "ever_smoker", "anti_mda5_grade", "steroid_sparing")
    adverse_event_window_days: int = 30  # an event attributed to a drug starts within its course + this
    firth_on_separation: bool = True  # no usual Cox estimate: show Firth's penalised one (False: only say why)
    fisher_exact_limit: int = 1_000_000  # Table 1's Fisher test is exact up to this many tables to enumerate
    fisher_resamples: int = 100_000  # beyond it, a Monte Carlo estimate from this many random tables (fixed seed)
    analyses: tuple[str, ...] = ("baseline", "mortality", "survival", "cox", "safety")
    km_conf_type: str = "log-log"  # the Kaplan-Meier 95% interval: "log" (R's default), "log-log" or "plain"
    registry_name: str = "MDA5-ILD registry"  # the report's title and running header
    # Sensitivity analyses (registry.analysis.sensitivity); each part switched on by its name here.
    sensitivity_analyses: tuple[str, ...] = SENSITIVITY_ANALYSES
    propensity_covariates: tuple[str, ...] = ("age", "male", "ever_smoker", "anti_mda5_grade", "rpild")
    propensity_baseline: tuple[str, ...] = ()  # baseline values (labs, PFT) added to the propensity model
    # 0: no truncation; e.g. 99: weights above their group's 99th percentile set to it
    weight_truncation_percentile: int = 0
    # baseline values added to the adjusted model, and imputed where missing
    imputed_covariates: tuple[str, ...] = ("pft_fvc_pct_pred", "pft_dlco_pct_pred")
    imputations: int = 20  # m, the number of imputed data sets
    imputation_seed: int = 20221  # the same seed gives the same imputations
    evalue_outcome: str = "common"  # "common": HR converted to RR for a common outcome; "rare": RR = HR


class ConfigError(ValueError):
    """The configuration file names an unknown key or holds a value of the wrong kind."""


def _whole(value: Any) -> bool:
    """An integer, and not a boolean (TOML's true is Python's 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _check(name: str, value: Any, default: Any) -> Any:
    if name in ("data_cutoff", "enrolment_start", "enrolment_end"):
        if not isinstance(value, date):
            raise ConfigError(f"{name}: {value!r} is not a date (write it unquoted, e.g. 2021-06-30)")
        return value
    if name == "landmarks":
        if not isinstance(value, dict) or not all(isinstance(v, int) and v > 0 for v in value.values()):
            raise ConfigError(f'landmarks: {value!r} must map names to days, e.g. {{"6 months" = 183}}')
        return dict(value)
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{name}: {value!r} is not a list of names")
        if name == "steroid_sparing_drugs":
            unknown = sorted(set(value) - {d.value for d in Drug})
            if unknown:
                raise ConfigError(f"steroid_sparing_drugs: unknown drug(s) {', '.join(unknown)}")
        if name == "sensitivity_analyses":
            unknown = sorted(set(value) - set(SENSITIVITY_ANALYSES))
            if unknown:
                known = ", ".join(SENSITIVITY_ANALYSES)
                raise ConfigError(f"sensitivity_analyses: unknown part(s) {', '.join(unknown)}; known: {known}")
        return tuple(value)
    if name == "evalue_outcome" and value not in ("common", "rare"):
        raise ConfigError(f"evalue_outcome: {value!r} is not 'common' or 'rare'")
    if name == "weight_truncation_percentile" and not (_whole(value) and (value == 0 or 50 <= value < 100)):
        raise ConfigError(f"weight_truncation_percentile: {value!r} is not 0 (none) or a percentile from 50 to 99")
    if name == "imputations" and not (_whole(value) and value >= 2):
        raise ConfigError(f"imputations: {value!r} is not a whole number of at least 2")
    if name == "imputation_seed" and not (_whole(value) and value >= 0):
        raise ConfigError(f"imputation_seed: {value!r} is not a whole number")
    if name == "km_conf_type":
        if value not in KM_CONF_TYPES:
            raise ConfigError(f"km_conf_type: {value!r} is not one of {', '.join(map(repr, KM_CONF_TYPES))}")
        return value
    if isinstance(default, str):
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{name}: {value!r} is not a name")
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: {value!r} is not true or false")
        return value
    if not (_whole(value) and value >= 0):
        raise ConfigError(f"{name}: {value!r} is not a whole number of days")
    return value


def load_config(path: Path | None) -> Config:
    """The configuration in ``path`` (TOML), or the defaults when there is no file."""
    if path is None or not path.exists():
        return Config()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: {error}") from error
    defaults = {f.name: getattr(Config(), f.name) for f in fields(Config)}
    unknown = sorted(set(data) - set(defaults))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(defaults)}")
    return Config(**{name: _check(name, value, defaults[name]) for name, value in data.items()})
