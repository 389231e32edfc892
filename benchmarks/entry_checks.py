"""The data-quality rules at entry (issue 18, point 1): what they add to a save and to an import (SQLite).

The registry is check_registry.py's: the example patients copied to N clean patients. A web
save is checked twice inside its transaction (before and after the change,
:class:`registry.entry_checks.EntryChecks`), so what checking adds to one save is two
:func:`registry.quality.incremental.check_patients` of its patient: timed for 20 patients
spread over the registry, the median reported. The import is of the next 1,000 copies
(new patients, every sheet), exported as a CSV workbook with ``registry.export``, into two
copies of the registry file: once without the checks and once with them (``--strict``, as a
coordinator would run it). Run:

    .venv/bin/python -m benchmarks.entry_checks --patients 100000

It writes its section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

from benchmarks.check_registry import TODAY, synthetic_tables
from benchmarks.common import DOCS, fresh_registry, insert, machine, write_section
from registry import db, export
from registry.config import Config
from registry.entry_checks import EntryChecks
from registry.ingest import import_path
from registry.quality.incremental import check_patients

SAVES = 20  # patients whose save is timed


def _patients(tables: dict[str, pd.DataFrame], first: int, last: int) -> dict[str, pd.DataFrame]:
    """The tables cut to the patients with ids ``first``..``last`` (every site kept)."""
    owner = {name: "id" if name == "patient" else "patient_id" for name in tables}
    return {name: frame if name == "site" else frame[frame[owner[name]].between(first, last)]
            for name, frame in tables.items()}  # fmt: skip


def _save_check_ms(registry: Path, patients: int) -> list[float]:
    """Milliseconds of a save's two checks (before and after) of each of :data:`SAVES` patients."""
    engine, config, times = db.make_engine(f"sqlite:///{registry}"), Config(), []
    with engine.connect() as connection:
        for patient_id in range(1, patients + 1, max(patients // SAVES, 1))[:SAVES]:
            started = time.perf_counter()
            for _ in ("before", "after"):
                check_patients(connection, [patient_id], config, TODAY)
            times.append(1000 * (time.perf_counter() - started))
    engine.dispose()
    return times


def _import_s(registry: Path, workbook: Path, checks: EntryChecks | None) -> tuple[float, int]:
    """Seconds of importing ``workbook`` into ``registry``, and the findings it adds (0 without checks)."""
    engine = db.make_engine(f"sqlite:///{registry}")
    started = time.perf_counter()
    result = import_path(engine, workbook, actor="benchmark", checks=checks, strict=checks is not None)
    seconds = time.perf_counter() - started
    engine.dispose()
    assert result.written and not result.errors, [str(p) for p in result.errors[:5]]
    return seconds, 0 if result.findings is None else len(result.findings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--new", type=int, default=1_000, help="New patients imported.")
    parser.add_argument("--output", type=Path, default=DOCS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        tables = synthetic_tables(args.patients + args.new, scratch / "example.db", Config())
        registry = fresh_registry(f"sqlite:///{scratch / 'plain.db'}")
        insert(registry, _patients(tables, 1, args.patients))
        registry.dispose()  # the file whole (its write-ahead log checkpointed) before it is copied
        newcomers = fresh_registry(f"sqlite:///{scratch / 'new.db'}")
        insert(newcomers, _patients(tables, args.patients + 1, args.patients + args.new))
        export.export(newcomers, scratch / "workbook")
        newcomers.dispose()
        shutil.copy(scratch / "plain.db", scratch / "checked.db")
        saves = _save_check_ms(scratch / "checked.db", args.patients)
        plain_s, _ = _import_s(scratch / "plain.db", scratch / "workbook", None)
        checked_s, findings = _import_s(scratch / "checked.db", scratch / "workbook", EntryChecks(Config(), TODAY))
    added = 100 * (checked_s - plain_s) / plain_s
    save_ms = statistics.median(saves)
    lines = [
        "## Checks at entry: a save, an import (`benchmarks/entry_checks.py`)",
        "",
        f"Machine: {machine()}; SQLite file database. Registry: the 4 example patients copied to "
        f"{args.patients:,} clean patients (as `check_registry.py` builds it).",
        "",
        "| what | time | target |",
        "|---|---|---|",
        f"| a save's checks: `check_patients` of its patient before and after the change, median of {len(saves)} "
        f"patients (min {min(saves):.0f}, max {max(saves):.0f} ms) | {save_ms:.0f} ms | <= 100 ms: "
        f"{'met' if save_ms <= 100 else 'missed'} |",
        f"| import of {args.new:,} new patients (every sheet), without the checks | {plain_s:.2f} s | |",
        f"| the same import with the checks (`--strict`) | {checked_s:.2f} s ({added:+.0f} %, {findings} findings) "
        f"| <= +20 %: {'met' if added <= 20 else 'missed'} |",
        "",
        "How it is measured: the save's figure is the checks alone, in one connection, with the",
        "registry file warm (the rest of a save, the form, the write and the audit, is not in it). The",
        "import is timed once each way, into two copies of the same registry file; with the checks,",
        "`check_patients` runs for the touched patients (none stored before, so the before-run reads",
        "nothing) after the writes, inside the transaction, before the commit.",
        "",
        "Where a save's time goes (timed step by step, 100,000 patients): each `check_patients` is about 220 ms,",
        "of which about 70 ms read the patient's rows (every table's query also excludes deleted",
        "patients, `patient_id NOT IN (deleted patients)`, which SQLite answers by scanning the",
        "patient table, about 9 ms a table) and about 150 ms are `run_checks`' fixed cost for any",
        "number of rows (pandera's schema of each table, then the ~100 rules one by one on frames of",
        "a few rows), which does not grow with the registry (a 40-patient registry: about 210 ms a",
        "check). The 100 ms target needs that fixed cost cut (a per-row path for one patient, or",
        "pandera only for the tables a save touches), not a faster read; it is left as it is, the",
        "figure stated. The import's figure was 43 s (+169 %) before the patients sharing a",
        "key with the touched ones were found by `(key) IN (their keys)` instead of a join (the",
        "duplicate key has no index: the join scanned the patient table once per touched patient).",
    ]
    write_section("entry_checks", lines, args.output)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
