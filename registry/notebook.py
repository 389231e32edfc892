"""For notebooks: the analysis cohort and every result as pandas objects, from a database URL.

    >>> from registry.notebook import open_registry
    >>> registry = open_registry("sqlite:///registry.db")          # or postgresql://..., a config file, a data cut
    >>> registry.cohort                                          # one row per analysed patient, as analysed
    >>> results = registry.results()                             # the analyses, as `registry analyze` runs them
    >>> results.cox()                                            # hazard ratios of every model, one row per term
    >>> results.mortality("rpild"), results.baseline(), results.safety(), results.hazard_ratios()

The numbers are those of the report and of ``registry analyze``'s JSON (``results.document``): computed once, in
the analysis layer; these functions only lay them out as tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from registry.cohort import COLUMNS, Cohort, build_cohort
from registry.config import Config, load_config
from registry.db import make_engine
from registry.tables import load_tables


@dataclass(frozen=True)
class Results:
    """The analyses' document (as ``registry analyze`` writes it) and tables of its parts."""

    document: dict[str, Any]

    def mortality(self, population: str = "overall") -> pd.DataFrame:
        """Per landmark and group: deaths, patients of known status, KM mortality with its limits, the p-value."""
        rows = [{"landmark": m["landmark"], "days": m["days"], "group": g["group"], "deaths": g["deaths"],
                 "known": g["known"], "percent": g["percent"], "km_mortality": g["km_mortality"]["value"],
                 "lower": g["km_mortality"]["lower"], "upper": g["km_mortality"]["upper"], "p": m["p"]}
                for m in self.document[population]["mortality"] for g in m["groups"]]  # fmt: skip
        return pd.DataFrame(rows)

    def cox(self, population: str = "overall") -> pd.DataFrame:
        """Every term of every Cox model (the configured ones, then each univariable one)."""
        cox = self.document[population]["cox"]
        models = {**cox["models"], **{f"univariable: {name}": m for name, m in cox["univariable"].items()}}
        rows = [{"model": name, **term, "n": model["n"], "events": model["events"]}
                for name, model in models.items() for term in model["terms"]]  # fmt: skip
        return pd.DataFrame(rows)

    def baseline(self) -> pd.DataFrame:
        """Table 1: one row per variable (and level), a column per group, p-value and standardised difference."""
        rows = [{"variable": b["variable"], "label": b["label"], "level": b["level"],
                 **{group: cell["text"] for group, cell in b["cells"].items()}, "p": b["p"], "test": b["test"],
                 "smd": b["smd"]} for b in self.document["baseline"]]  # fmt: skip
        return pd.DataFrame(rows)

    def safety(self) -> pd.DataFrame:
        """Per adverse-event outcome and group: patients with it, of how many, and Fisher's p."""
        rows = [{"outcome": s["outcome"], "label": s["label"], **g, "p": s["p"]}
                for s in self.document["safety"] for g in s["groups"]]  # fmt: skip
        return pd.DataFrame(rows)

    def hazard_ratios(self) -> pd.DataFrame:
        """The sensitivity analyses' hazard ratio of tofacitinib, one row per method."""
        return pd.DataFrame(self.document.get("sensitivity", {}).get("hazard_ratios", []))


@dataclass
class Registry:
    """A registry read for analysis: its tables, its cohort, its results (each computed once, when first asked)."""

    engine: sa.Engine
    config: Config

    @cached_property
    def _cohort(self) -> Cohort:
        return build_cohort(load_tables(self.engine, COLUMNS), self.config)

    @property
    def cohort(self) -> pd.DataFrame:
        """One row per analysed patient, indexed by study_id: group, follow-up, event, covariates."""
        return self._cohort.table

    @property
    def excluded(self) -> pd.DataFrame:
        """The patients left out, each with the reason (the flow diagram's)."""
        return self._cohort.excluded

    def tables(self) -> dict[str, pd.DataFrame]:
        """Every clinical table's live records, as the analyses read them."""
        return load_tables(self.engine)

    def results(self) -> Results:
        """Every configured analysis of the cohort (ValueError when it cannot be analysed, saying why)."""
        import json

        from registry.analysis.run import analyze

        if (why := self._cohort.why_not_analysable()) is not None:
            raise ValueError(why)
        return Results(json.loads(json.dumps(analyze(self._cohort, self.config))))


def open_registry(url: str | None = None, config: Config | str | Path | None = None) -> Registry:
    """The registry at ``url`` (default: REGISTRY_DATABASE_URL, else sqlite:///registry.db) under ``config`` (a
    Config, a registry.toml path, or the defaults)."""
    if not isinstance(config, Config):
        config = load_config(Path(config)) if config is not None else Config()
    return Registry(make_engine(url), config)
