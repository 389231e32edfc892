"""One report run: checks, then cohort and analyses, then the document.

The order is the pipeline's: data-quality checks first, and with error findings the
run stops before any analysis unless the caller allows it (the report then says so on
every page). The caller decides where the bytes go (a file, the archive).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import pandas as pd

from registry.analysis.run import analyze
from registry.cohort import build_cohort
from registry.config import Config
from registry.quality import CheckRun, run_checks
from registry.report.document import figures, render_html, render_pdf, report_context


class ReportRefused(RuntimeError):
    """The data have error-level findings and the caller did not allow them."""

    def __init__(self, checks: CheckRun) -> None:
        super().__init__(f"{checks.errors} data-quality error finding(s): the report is not rendered")
        self.checks = checks


class NothingToAnalyse(RuntimeError):
    """No patient passes the cohort's criteria, or they are all in one group."""


@dataclass
class Report:
    checks: CheckRun
    results: dict[str, Any]
    html: str
    pdf: bytes
    figures: dict[str, str]  # file name -> SVG text

    @property
    def fingerprint(self) -> str:
        return self.results["data_fingerprint"]


def build_report(
    tables: dict[str, pd.DataFrame],
    config: Config,
    *,
    today: date,
    allow_dq_errors: bool = False,
    data_cut: dict[str, Any] | None = None,
    resolution: dict[str, dict[str, int]] | None = None,
) -> Report:
    """Check, analyse and render ``tables`` (as :func:`registry.tables.load_tables` gives them, or a data cut,
    which ``data_cut`` then describes); ``resolution`` (live data only: a cut keeps no queries) counts the
    registry's queries and record statuses (:func:`registry.signoff.resolution_counts`)."""
    checks = run_checks(tables, config, today)
    if checks.errors and not allow_dq_errors:
        raise ReportRefused(checks)
    cohort = build_cohort(tables, config)
    if (why := cohort.why_not_analysable()) is not None:
        raise NothingToAnalyse(why)
    results = analyze(cohort, config, data_cut=data_cut)
    if resolution is not None:
        results["data_resolution"] = resolution
    svg = figures(results)
    context = report_context(
        results,
        checks,
        config,
        generated_at=datetime.now(UTC),
        registry_name=config.registry_name,
        dq_errors_allowed=allow_dq_errors,
        svg=svg,
    )
    html = render_html(context)
    return Report(checks, results, html, render_pdf(html), svg)
