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
        "Where the time goes: validation parses every cell in Python (about two thirds of the",
        "validation time), then runs the database's CHECK rules once per sheet in a scratch SQLite",
        "table. New records are written in bulk, one executemany per sheet, with their audit rows",
        "built alongside (`registry.audit.insert_audited`, the same entries the ORM flush hook",
        "writes; a test holds the two equal); changed records still go through the ORM. In the",
        "write, SQLAlchemy's per-row parameter processing and the JSON of the audit rows cost",
        "about as much as SQLite's own work. Earlier, with one ORM object per new record, the same",
        "workbook took 19.4 s to import (7,600 rows/s).",
        "",
    ]
    write_section("import_workbook", lines, args.output)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
