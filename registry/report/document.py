"""The report document: results and check findings laid out by templates/report.html.

``report_context`` gathers what the template shows (the results document, the
data-quality summary, the figures, the methods text); it computes no statistic.
``render_html`` fills the template; ``render_pdf`` turns the HTML into an A4 PDF with
weasyprint (fonts embedded, figures kept as vector SVG).
"""

from __future__ import annotations

import base64
import platform
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import jinja2

import registry
from registry.config import Config
from registry.quality import CheckRun
from registry.report.figures import (
    cumulative_incidence_figure,
    forest_figure,
    km_figure,
    love_figure,
    propensity_figure,
    weighted_km_figure,
)
from registry.report.native import load_weasyprint
from registry.report.numbers import (
    format_days,
    format_estimate,
    format_p,
    format_percent,
    format_proportion,
    format_ratio,
    format_smd,
)
from registry.resources import resource_dir

#: The libraries whose versions the methods section names.
SOFTWARE = ("numpy", "pandas", "scipy", "firthmodels", "pandera", "sqlalchemy", "matplotlib", "weasyprint")
SUBSETS = {"overall": "All analysed patients", "rpild": "Rapidly progressive ILD (RPILD)"}
#: How many failing rules the data-quality summary lists.
TOP_RULES = 10


def figures(results: dict[str, Any]) -> dict[str, str]:
    """Every figure of the report as SVG text, by file name (the same results give the same bytes)."""
    made = {}
    for subset, title in SUBSETS.items():
        analyses = results.get(subset, {})
        if "survival" in analyses and analyses["survival"]["groups"]:
            p = analyses["survival"]["log_rank"]["full follow-up"]["p"]
            made[f"km_{subset}.svg"] = km_figure(analyses["survival"], title, p)
        adjusted = analyses.get("cox", {}).get("models", {}).get("adjusted", {})
        if "terms" in adjusted:
            made[f"forest_{subset}.svg"] = forest_figure(adjusted["terms"], title)
    made.update(_sensitivity_figures(results.get("sensitivity", {})))
    return made


def _sensitivity_figures(sensitivity: dict[str, Any]) -> dict[str, str]:
    """The love plot, the overlap figure, the weighted Kaplan-Meier curves and the cumulative incidence."""
    made = {}
    propensity, weightings = sensitivity.get("propensity", {}), sensitivity.get("weightings") or {}
    if weightings:
        made["love.svg"] = love_figure(weightings, propensity["smd_threshold"])
    if "distribution" in propensity:
        made["propensity.svg"] = propensity_figure(propensity["distribution"])
    for name, weighting in weightings.items():
        made[f"weighted_km_{name}.svg"] = weighted_km_figure(weighting, weighting["label"])
    competing = sensitivity.get("competing_risks", {})
    if competing.get("recorded"):
        curves = {group: entry["curve"] for group, entry in competing["groups"].items()}
        made["cumulative_incidence.svg"] = cumulative_incidence_figure(curves, "All analysed patients")
    return made


def _software() -> dict[str, str]:
    versions = {"mda5-registry": registry.__version__, "Python": platform.python_version()}
    for name in SOFTWARE:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def report_context(
    results: dict[str, Any],
    checks: CheckRun,
    config: Config,
    *,
    generated_at: datetime,
    registry_name: str,
    dq_errors_allowed: bool = False,
    svg: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Everything the template lays out, as plain data."""
    failing = checks.summary[checks.summary["failing"] > 0].sort_values(
        ["severity", "failing"], ascending=[True, False], kind="stable"
    )
    svg = figures(results) if svg is None else svg  # the caller may have drawn them already
    return {
        "registry_name": registry_name,
        "cutoff": config.data_cutoff.isoformat() if config.data_cutoff else None,
        "generated_at": generated_at.isoformat(timespec="seconds"),
        "version": registry.__version__,
        "results": results,
        "config": config,
        "subsets": SUBSETS,
        "quality": {
            "rules": len(checks.summary),
            "errors": checks.errors,
            "warnings": checks.warnings,
            "top": failing.head(TOP_RULES).to_dict("records"),
        },
        "dq_errors_allowed": dq_errors_allowed and checks.errors > 0,
        "figures": {
            name: "data:image/svg+xml;base64," + base64.b64encode(s.encode()).decode() for name, s in svg.items()
        },
        "software": _software(),
    }


def _templates() -> Path:
    return resource_dir("templates", "_templates", "report.html")


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_templates()), autoescape=True, undefined=jinja2.StrictUndefined
    )
    environment.filters.update(
        p=format_p,
        ratio=format_ratio,
        percent=format_percent,
        proportion=format_proportion,
        days=format_days,
        estimate=format_estimate,
        smd=format_smd,
    )
    return environment


def render_html(context: dict[str, Any]) -> str:
    """The report as one self-contained HTML page (stylesheet and figures inline)."""
    stylesheet = (_templates() / "report.css").read_text(encoding="utf-8")
    return _environment().get_template("report.html").render(stylesheet=stylesheet, **context)


def render_pdf(html: str) -> bytes:
    """A4 PDF of the report HTML (weasyprint embeds the fonts it uses)."""
    return load_weasyprint().HTML(string=html, base_url=str(_templates())).write_pdf()
