"""Shared by the benchmark scripts: the machine line, synthetic registries, docs sections.

``synthetic_tables`` makes an N-patient registry from the 61 synthetic demo patients
(fixtures/demo): each copy of the cohort is a new site (so that no two patients of one
site look like one person entered twice), each patient gets new ids and a new
study_id; ``insert`` writes it with SQLAlchemy Core in bulk. That is a benchmark fixture, not the product's import
path (which validates and audits every row; see import_workbook.py).
"""

from __future__ import annotations

import platform
import re
import resource
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from registry import db
from registry.audit import audited_session
from registry.ingest import import_path
from registry.models import Site
from registry.tables import DATA_TABLES, DATE, load_tables, typed

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "fixtures" / "demo"
DOCS = REPO / "docs" / "benchmarks.md"


def machine() -> str:
    cores = len(__import__("os").sched_getaffinity(0))
    return (
        f"{platform.processor() or platform.machine()}, {cores} core(s), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fresh_registry(url: str) -> sa.Engine:
    engine = db.make_engine(url)
    db.upgrade(engine)
    with audited_session(engine, actor="benchmark") as session:
        session.add(Site(code="DEMO", name="Benchmark site (synthetic data)"))
        session.commit()
    return engine


def fixture_tables(folder: Path, scratch: Path) -> dict[str, pd.DataFrame]:
    """A fixture's sheets imported into a scratch SQLite registry, loaded back as typed frames."""
    engine = fresh_registry(f"sqlite:///{scratch}")
    assert import_path(engine, folder, actor="benchmark").written
    tables = load_tables(engine)
    engine.dispose()
    return tables


def synthetic_tables(patients: int, scratch: Path) -> dict[str, pd.DataFrame]:
    """The demo cohort copied to ``patients`` patients, as typed frames ready to insert."""
    demo = fixture_tables(DEMO, scratch)
    base = demo["patient"]
    copies = -(-patients // len(base))
    patient = pd.concat([base] * copies, ignore_index=True).iloc[:patients].copy()
    copy = np.arange(len(patient)) // len(base)
    original_id = patient["id"].to_numpy()
    patient["id"] = np.arange(1, len(patient) + 1)
    patient["study_id"] = [f"SY-{n:06d}" for n in range(1, len(patient) + 1)]
    patient["site_id"] = copy + 1
    site = pd.DataFrame({"id": np.arange(1, copies + 1), "code": [f"S{k:04d}" for k in range(1, copies + 1)],
                         "name": "Synthetic site", "country": None})  # fmt: skip
    new_id = pd.DataFrame({"original": original_id, "copy": copy, "patient_id": patient["id"]})
    tables = {"site": typed(site, DATA_TABLES["site"]), "patient": patient}
    for name, frame in demo.items():
        if name in tables:
            continue
        rows = frame.merge(new_id, left_on="patient_id", right_on="original", suffixes=("_old", ""))
        rows = rows.drop(columns=["patient_id_old", "original", "copy"])
        if "id" in rows:
            rows["id"] = np.arange(1, len(rows) + 1)
        tables[name] = rows[frame.columns]
    return tables


def insert(engine: sa.Engine, tables: dict[str, pd.DataFrame], chunk: int = 50_000) -> int:
    """Bulk-insert typed frames (no audit rows: a benchmark fixture); returns the data rows written."""
    total = 0
    with engine.begin() as connection:
        connection.execute(sa.delete(DATA_TABLES["site"]))
        for name, table in DATA_TABLES.items():
            frame = tables[name].astype(object).where(tables[name].notna(), None)
            for column in frame.columns:
                if tables[name][column].dtype == DATE:
                    frame[column] = [v.date() if v is not None else None for v in frame[column]]
            records = frame.to_dict("records")
            for start in range(0, len(records), chunk):
                connection.execute(table.insert(), records[start : start + chunk])
            total += len(records)
    return total


def write_section(name: str, lines: list[str], path: Path = DOCS) -> None:
    """Replace this benchmark's section of docs/benchmarks.md (between its markers), keep the rest."""
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    block = "\n".join([begin, *lines, end])
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
