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
        "How it works: each sheet is read in chunks of 50,000 rows. A CSV file that is a plain grid (no",
        "quoting, every line as many cells as the header) is read by pandas' C reader, which hands over",
        "whole columns; any other file by the csv module, with the same cells and row numbers (a test holds",
        "the two equal). Columns are parsed, not rows: `parse_cell` once per distinct cell, remembered",
        "across chunks and sheets, plain decimal numbers by one `map(float)` per column, and only rows",
        "with a failing cell cell by cell, so the messages are the old ones. References, duplicate keys",
        "and the plan are set tests that look at single rows only when something is wrong; the CHECK",
        "rules run per chunk in a scratch SQLite table holding just the columns they read. New records go",
        "to the driver's `executemany` in chunks (one transaction), values converted by each column",
        "type's own bind processor once per distinct value; after each chunk the database writes the",
        "chunk's audit entries itself, one `INSERT ... SELECT` building each entry's JSON from the row",
        "just stored (SQLite's `json_object`, PostgreSQL's `json_build_object`; they read back as the",
        "entries the ORM flush hook writes, a test holds them equal). Changed records go through the ORM.",
        "Python's cycle collector is paused while an import runs: it holds millions of lists and tuples",
        "and makes no cycles, and the collector walked them over and over (a quarter of the time).",
        "",
        "Where the time goes (cProfile, 10,000 `registry synth` patients, 245,565 rows, in-process",
        "4.3 s, 2026-11-27): writing about 77% (SQLite's `executemany` of the rows 44%, the audit",
        "`INSERT ... SELECT` 20%, the commit 7%), reading and parsing 12% (the CSV reader 4%), the CHECK",
        "rules 8%; the Python around the database is about 1 s of it. Before these changes the same run",
        "took 7.4-8.0 s, about 4 s of it Python: the csv module 0.75 s, the audit JSON built in Python",
        "and then written by `executemany` 2.5 s, and the cycle collector, which cProfile does not show",
        "(a quarter of a run, measured with `gc.callbacks`). This table's workbook before: validate",
        "1.6 s, full import 4.6 s, peak 217 MB, measured minutes apart on the same machine.",
        "",
        "Against the floor: the `registry import` command (start-up included) of 100,000 `registry",
        "synth` patients, 2,452,109 rows, on SQLite took 40.4 s (60,700 rows/s, peak 547 MB) with other",
        "jobs running (load 1.2-1.6 on 2 cores); the floor, a raw DB-API `executemany` of the same rows",
        "(`benchmarks/scale.py`), took 19.6 s right after: 2.1 times the floor, against 4.8 times",
        "(94.7 s) before. The floor is about 124,000 rows/s on this machine; an import also writes an",
        "audit row per record, so 100,000 records/s (200,000 rows written) is above it and not reachable",
        "here. The scale table has the figures of a quiet machine.",
        "",
        "The audit chain (registry/audit_chain.py, issue 17): each transaction seals its entries as it",
        "commits: one `INSERT ... SELECT` storing each entry's hash and its link (`audit_entry_hash`),",
        "one aggregate over those hashes and one `audit_seal` row. Measured side by side on this workbook",
        "(2026-12-02, 3 runs each, SQLite and the tests' PostgreSQL): the import took 2.28 s on SQLite",
        "and 7.2-7.4 s on PostgreSQL before the chain, 2.74-2.78 s and 7.43-7.47 s with seals alone; the",
        "seal itself 0.31 s and 0.45 s, the token each entry carries the rest. The per-entry hashes,",
        "measured later that day beside seals alone on a busier machine (load 2.8-3 on 2 cores): the seal",
        "takes 0.73-0.78 s against 0.30-0.33 s on SQLite (3 runs each), the import 3.41-3.69 s against",
        "2.82-3.02 s; on PostgreSQL 0.87-1.03 s against 0.64-0.67 s (2 runs each; its import, 9.3-11.8 s,",
        "varied more than that). Of SQLite's seal, hashing the entries is 0.28 s, LAG's window 0.2 s, the",
        "aggregate over the stored hashes 0.14 s (SQLite inlined the hashing subquery into LAG's argument",
        "and hashed every entry twice, 1.1-1.3 s, until it became a MATERIALIZED CTE). `registry audit",
        "verify` of the 147,501 entries took 1.15-1.21 s on SQLite and 1.9 s on PostgreSQL, against",
        "0.97-1.5 s and 1.3-1.9 s before, on the same busy machine. Chaining each entry instead (hash",
        "columns set by an UPDATE of every entry at the commit) took 3.8 s and 12 s (seal 1.3 s and 4.5",
        "s): rewriting every row cost more than hashing it.",
        "",
    ]
    write_section("import_workbook", lines, args.output)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
