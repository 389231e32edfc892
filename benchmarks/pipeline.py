"""Checks, analyses and the report on synthetic registries of 61 to 100,000 patients (SQLite).

Run:

    .venv/bin/python benchmarks/pipeline.py --sizes 61,10000,100000

Each size runs in its own process (so peak memory is that size's): the registry is the
demo cohort copied to N patients (benchmarks/common.py), then each stage is timed
separately: loading the tables, `run_checks` (the whole rule catalogue), cohort and
analyses, the report's HTML (figures included) and its PDF. Beside them the floor:
plain `pandas.read_sql` of the same tables. Figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from pypdf import PdfReader

from benchmarks.common import DOCS, REPO, fresh_registry, insert, machine, peak_mb, synthetic_tables, write_section
from registry.analysis.run import analyze
from registry.cohort import build_cohort
from registry.config import Config
from registry.quality import run_checks
from registry.report.document import render_html, render_pdf, report_context
from registry.tables import DATA_TABLES, load_tables

TODAY = date(2026, 11, 25)


def measure(patients: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        engine = fresh_registry(f"sqlite:///{scratch / 'registry.db'}")
        rows = insert(engine, synthetic_tables(patients, scratch / "demo.db"))
        timings = {}

        def timed(name: str, step):  # noqa: ANN001, ANN202
            started = time.perf_counter()
            value = step()
            timings[name] = time.perf_counter() - started
            return value

        with engine.connect() as connection:
            timed("read floor", lambda: [pd.read_sql(sa.select(t), connection) for t in DATA_TABLES.values()])
        tables = timed("load tables", lambda: load_tables(engine))
        checks = timed("checks", lambda: run_checks(tables, Config(), TODAY))
        results = timed("cohort + analyses", lambda: analyze(build_cohort(tables, Config()), Config()))
        context = timed(
            "report figures",
            lambda: report_context(
                results, checks, Config(), generated_at=datetime.now(UTC), registry_name="Benchmark"
            ),
        )
        html = timed("report HTML", lambda: render_html(context))
        pdf = timed("report PDF", lambda: render_pdf(html))
    return {
        "patients": patients,
        "rows": rows,
        "timings": timings,
        "findings": {"error": checks.errors, "warning": checks.warnings},
        "pdf_pages": len(PdfReader(io.BytesIO(pdf)).pages),
        "pdf_kb": len(pdf) / 1024,
        "peak_mb": peak_mb(),
    }


def _table(results: list[dict]) -> list[str]:
    steps = list(results[0]["timings"])
    lines = [
        "| step | " + " | ".join(f"{r['patients']:,} patients ({r['rows']:,} rows)" for r in results) + " |",
        "|---|" + "---|" * len(results),
    ]
    for step in steps:
        cells = [f"{r['timings'][step]:.2f} s" for r in results]
        if step == "checks":
            cells = [f"{r['timings'][step]:.2f} s ({r['rows'] / r['timings'][step]:,.0f} rows/s)" for r in results]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    lines.append("| peak memory | " + " | ".join(f"{r['peak_mb']:,.0f} MB" for r in results) + " |")
    lines.append("| findings (error / warning) | " + " | ".join(f"{r['findings']['error']} / {r['findings']['warning']}"
                                                             for r in results) + " |")  # fmt: skip
    lines.append("| PDF | " + " | ".join(f"{r['pdf_pages']} pages, {r['pdf_kb']:,.0f} KB" for r in results) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="61,10000,100000", help="comma-separated patient counts")
    parser.add_argument("--patients", type=int, help="measure one size in this process and print JSON")
    parser.add_argument("--output", type=Path, default=DOCS)
    args = parser.parse_args()
    if args.patients:
        print(json.dumps(measure(args.patients)))
        return
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        command = [sys.executable, "-m", "benchmarks.pipeline", "--patients", str(size)]
        done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO)
        results.append(json.loads(done.stdout.splitlines()[-1]))
    lines = [
        "## Checks, analyses and report (`benchmarks/pipeline.py`)",
        "",
        f"Machine: {machine()}; SQLite file database. Registries: the 61-patient demo cohort copied to N patients.",
        "",
        *_table(results),
        "",
        "What the steps are: *read floor* is `pandas.read_sql` of every data table, untyped (the least any",
        "check or analysis must spend); *load tables* is `registry.tables.load_tables` (the same read, typed);",
        "*checks* is `registry.quality.run_checks`, the whole rule catalogue on the loaded frames (pandera",
        "schemas per table, vectorised cross-table rules; rows/s over all data rows); *cohort + analyses* is",
        "`build_cohort` and `analyze` (Table 1, mortality, Kaplan-Meier, log-rank, Cox models with R's",
        "`cox.zph`, safety, overall and RPILD); *report figures* draws the SVG figures; *report PDF* is",
        "weasyprint. Peak memory is the whole process's (all steps, one size per process). Kaplan-Meier",
        "steps, bands and censoring marks are thinned to the figure's resolution (one point), so the",
        "figures (and the PDF) stay the same size however large the cohort.",
        "",
    ]
    write_section("pipeline", lines, args.output)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
