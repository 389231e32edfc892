"""Import speed: a synthetic N-patient workbook (every sheet) into a fresh SQLite registry.

Each patient is a copy of one of the example patients (fixtures/example) under a new
study_id, so every sheet carries realistic rows. Run:

    .venv/bin/python -m benchmarks.import_workbook --patients 10000

It prints rows per second for validation alone (--dry-run) and for the full import,
and writes the figures to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

from benchmarks.common import fresh_registry, machine, peak_mb, write_section
from registry.ingest import import_path
from registry.workbook import read

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "fixtures" / "example"


def synthetic_workbook(folder: Path, patients: int) -> int:
    """Write ``patients`` patients as CSV files; returns the number of data rows."""
    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    for sheet in read(EXAMPLE):
        by_patient: dict[str, list[list]] = {}
        for _, row in sheet.rows:
            by_patient.setdefault(row[0], []).append(row)
        templates = sorted(by_patient)
        with (folder / sheet.source).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(sheet.header)
            for n in range(patients):
                for row in by_patient[templates[n % len(templates)]]:
                    writer.writerow([f"SY-{n:06d}", *row[1:]])
                    total += 1
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        rows = synthetic_workbook(tmp_path / "workbook", args.patients)
        engine = fresh_registry(f"sqlite:///{tmp_path / 'registry.db'}")
        started = time.perf_counter()
        dry = import_path(engine, tmp_path / "workbook", actor="benchmark", dry_run=True)
        validate_s = time.perf_counter() - started
        started = time.perf_counter()
        result = import_path(engine, tmp_path / "workbook", actor="benchmark")
        import_s = time.perf_counter() - started
        assert not dry.errors and result.written, result.errors[:5]
    lines = [
        "## Workbook import (`benchmarks/import_workbook.py`)",
        "",
        f"Machine: {machine()}; SQLite file database.",
        "",
        f"Synthetic CSV workbook: {args.patients:,} patients, {rows:,} rows over 8 sheets.",
        "",
        "| step | seconds | rows/s |",
        "|---|---|---|",
        f"| validate only (`--dry-run`) | {validate_s:.1f} | {rows / validate_s:,.0f} |",
        f"| full import (validate + write + audit, one transaction) | {import_s:.1f} | {rows / import_s:,.0f} |",
        "",
        f"Peak memory of the process: {peak_mb():,.0f} MB.",
        "",
        "How it works: each sheet is read in chunks of 50,000 rows (CSV files streamed from disk) and",
        "parsed column by column: `parse_cell` once per distinct cell, remembered across chunks and",
        "sheets (codes, dates and study_ids repeat), plain decimal numbers by one `map(float)` per",
        "column, and only rows with a failing cell cell by cell, so the messages are the old ones.",
        "References, duplicate keys and the plan are set tests that look at single rows only when",
        "something is wrong; the CHECK rules run per chunk in a scratch SQLite table holding just the",
        "columns they read. New records go to the driver's `executemany` in chunks (one transaction),",
        "values converted by each column type's own bind processor once per distinct value, each",
        "with its audit row (`registry.audit.insert_audited_columns`: the entries the ORM flush hook",
        "writes, JSON encoded column by column; a test holds the two equal); changed records go",
        "through the ORM. Only parsed columns are kept, never the raw cells of more than one chunk.",
        "",
        "Where the time goes (cProfile by CPU time, 10,000 `registry synth` patients, 245,565 rows,",
        "2026-11-27): writing about 53% (SQLite's own `executemany` of the rows and their audit rows",
        "32%, the audit JSON 8%), reading and parsing about 38% (the CSV reader 11%, `parse_cell` on",
        "distinct cells 8%), the CHECK rules 5%. Before this (a `Row` object per row, SQLAlchemy's",
        "parameter processing and `json.dumps` per row, every sheet's cells in memory at once) the",
        "same workbook took 13.9 s (10,611 rows/s) with a peak of 444 MB on the same machine, measured",
        "minutes apart.",
        "",
    ]
    write_section("import_workbook", lines, args.output)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
