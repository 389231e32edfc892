"""The synthetic demo cohort reproduces every published figure of STUDY.md."""

from datetime import date
from pathlib import Path

import pytest
from conftest import add_demo_site

from registry import db
from registry.analysis.run import analyze
from registry.cohort import build_cohort
from registry.config import Config
from registry.ingest import import_path
from registry.quality import run_checks
from registry.tables import load_tables

DEMO = Path(__file__).resolve().parents[1] / "fixtures" / "demo"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    engine = db.make_engine(f"sqlite:///{tmp_path_factory.mktemp('demo') / 'r.db'}")
    db.upgrade(engine)
    add_demo_site(engine)
    imported = import_path(engine, DEMO, actor="test")
    assert imported.problems == [] and imported.written
    tables = load_tables(engine)
    cohort = build_cohort(tables, Config())
    return cohort, analyze(cohort, Config()), run_checks(tables, Config(), date(2026, 11, 25))


def _by_group(rows):
    return {g["group"]: g for g in rows}


def test_patients_and_grades(results):
    cohort, doc, _ = results
    assert doc["flow"]["analysed"] == {"tacrolimus": 35, "tofacitinib": 26}
    assert doc["flow"]["rpild"] == {"tacrolimus": 22, "tofacitinib": 13}
    grades = cohort.table.groupby("group")["anti_mda5_grade"].value_counts().unstack().loc[:, [1, 2, 3]]
    assert grades.loc["tofacitinib"].tolist() == [16, 6, 4]
    assert grades.loc["tacrolimus"].tolist() == [9, 9, 17]


@pytest.mark.parametrize(
    "subset, landmark, tofa, tacro, p",
    [
        ("overall", 0, (10, 26, 38.5), (22, 35, 62.9), 0.028),
        ("overall", 1, (11, 25, 44.0), (23, 35, 65.7), 0.031),
        ("rpild", 0, (10, 13, 76.9), (21, 22, 95.5), 0.021),
        ("rpild", 1, (11, 13, 84.6), (22, 22, 100.0), 0.017),
    ],
)
def test_mortality(results, subset, landmark, tofa, tacro, p):
    entry = results[1][subset]["mortality"][landmark]
    groups = _by_group(entry["groups"])
    for name, (deaths, known, percent) in (("tofacitinib", tofa), ("tacrolimus", tacro)):
        assert (groups[name]["deaths"], groups[name]["known"], round(groups[name]["percent"], 1)) == (
            deaths,
            known,
            percent,
        )
    assert round(entry["p"], 3) == p


@pytest.mark.parametrize(
    "subset, published", [("overall", (0.438, 0.200, 0.960, 0.039)), ("rpild", (0.248, 0.068, 0.905, 0.035))]
)
def test_adjusted_hazard_ratio(results, subset, published):
    term = results[1][subset]["cox"]["models"]["adjusted"]["terms"][0]
    assert term["name"] == "tofacitinib"
    assert tuple(round(term[k], 3) for k in ("hr", "lower", "upper", "p")) == published


@pytest.mark.parametrize(
    "outcome, tofa, tacro, p",
    [("ae_any", (19, 73.1), (26, 74.3), 1.000), ("discontinuation", (6, 23.1), (5, 14.3), 0.504)],
)
def test_safety(results, outcome, tofa, tacro, p):
    row = next(r for r in results[1]["safety"] if r["outcome"] == outcome)
    groups = _by_group(row["groups"])
    assert (groups["tofacitinib"]["patients"], round(groups["tofacitinib"]["percent"], 1)) == tofa
    assert (groups["tacrolimus"]["patients"], round(groups["tacrolimus"]["percent"], 1)) == tacro
    assert round(row["p"], 3) == p


def test_the_demo_cohort_is_clean(results):
    *_, checks = results
    assert (checks.errors, checks.warnings) == (0, 0), checks.findings.to_string()
