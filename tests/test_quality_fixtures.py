"""The checks on whole registries: the clean demo cohort, and the seeded-defect registry."""

import csv
import importlib.util
import sys
from datetime import date
from pathlib import Path

import pytest
from conftest import add_demo_site

from registry.config import Config
from registry.ingest import import_path
from registry.quality import Severity, run_checks
from registry.tables import load_tables

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
DIRTY = FIXTURES / "dirty"
TODAY = date(2026, 11, 25)


def _findings(engine, folder: Path) -> list[dict]:
    add_demo_site(engine)
    imported = import_path(engine, folder, actor="test")
    assert imported.problems == [] and imported.written
    return run_checks(load_tables(engine), Config(), TODAY).findings.to_dict("records")


def _manifest() -> list[dict]:
    with (DIRTY / "manifest.csv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _matches(line: dict, finding: dict) -> bool:
    same = all(finding[k] == line[k] for k in ("rule", "study_id", "table", "field"))
    return same and (line["value"] == "*" or (finding["value"] or "") == line["value"])


def test_every_seeded_defect_is_found_and_nothing_else(migrated):
    findings = _findings(migrated, DIRTY / "sheets")
    manifest = _manifest()
    missed = [line for line in manifest if not any(_matches(line, f) for f in findings)]
    assert missed == []
    unexpected = [f for f in findings if not any(_matches(line, f) for line in manifest)]
    assert [f for f in unexpected if f["severity"] == Severity.ERROR] == []
    assert unexpected == []  # the warnings are documented too
    assert len({line["rule"] for line in manifest}) >= 35


def test_the_seeded_defects_cover_every_rule_family():
    families = {line["rule"].split("-")[0] for line in _manifest()}
    assert families >= {"PAT", "ABT", "LAB", "PFT", "HRC", "TRT", "AEV", "FUP", "TIM", "STU"}


def test_the_dirty_fixture_is_what_its_build_script_makes(tmp_path):
    spec = importlib.util.spec_from_file_location("dirty_build", DIRTY / "build.py")
    build = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = build  # dataclasses look their module up
    spec.loader.exec_module(build)
    build.write(*build.build(), folder=tmp_path)
    for made in sorted(tmp_path.rglob("*.csv")):
        assert made.read_bytes() == (DIRTY / made.relative_to(tmp_path)).read_bytes(), made.name


@pytest.mark.parametrize("folder", ["demo", "example"])
def test_the_clean_fixtures_have_no_findings(migrated, folder):
    assert _findings(migrated, FIXTURES / folder) == []
