"""registry synth: synthetic registries that are deterministic, realistic enough, and clean."""

import re
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from typer.testing import CliRunner

from registry import db, synth
from registry.audit import audited_session
from registry.cli import app
from registry.config import Config
from registry.ingest import import_path
from registry.models import STUDY_ID_PATTERN, Site
from registry.quality import run_checks
from registry.sheets import SHEETS
from registry.tables import load_tables

SHEET_FILES = {f"{sheet.name}.csv" for sheet in SHEETS}
#: The warnings a synthetic registry is meant to carry: a little missing smoking history, a few high ferritins
#: or tacrolimus troughs. Anything else is a generator defect.
EXPECTED_WARNINGS = {"PAT-015", "LAB-014"}


def _files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_same_seed_gives_the_same_bytes_another_seed_other_data(tmp_path):
    synth.synthesize(tmp_path / "a", 400, seed=5, sites=2)
    synth.synthesize(tmp_path / "b", 400, seed=5, sites=2)
    synth.synthesize(tmp_path / "c", 400, seed=6, sites=2)
    first = _files(tmp_path / "a")
    assert set(first) == SHEET_FILES | {"SYNTHETIC.txt"}
    assert _files(tmp_path / "b") == first
    other = _files(tmp_path / "c")
    assert [name for name in first if other[name] == first[name]] == []  # every sheet and the notice differ


def test_files_follow_the_import_format(tmp_path):
    made = synth.synthesize(tmp_path / "out", 200, seed=2)
    for sheet in SHEETS:
        lines = (tmp_path / "out" / f"{sheet.name}.csv").read_text(encoding="utf-8").split("\n")
        assert lines[0] == ",".join(c.name for c in sheet.columns)  # exactly the sheet's columns, in order
        assert lines[-1] == "" and len(lines) - 2 == made.rows[sheet.name] > 0
        text = "\n".join(lines[1:])
        assert not re.search(r"(^|,)-?\d+\.0(,|$)", text, re.MULTILINE), f"{sheet.name}: a whole number with .0"
        assert "nan" not in text.lower() and "NaT" not in text
    notice = (tmp_path / "out" / "SYNTHETIC.txt").read_text()
    assert notice.startswith("SYNTHETIC DATA: no row describes a real person.")
    for fact in ("Patients: 200", "Seed: 2", f"generator version {synth.GENERATOR_VERSION}", "registry site add SYN01"):
        assert fact in notice


def test_cohort_is_realistic_enough():
    made = synth.generate(4000, seed=11)
    sheets = made.sheets
    assert all(len(frame) for frame in sheets.values())
    assert made.sites == ("SYN01", "SYN02")  # one site per 2,000 patients
    patients = sheets["patients"].set_index("study_id")
    assert patients.index.str.fullmatch(r"SYN0[12]-\d{6}").all()
    assert patients.index.str.fullmatch(STUDY_ID_PATTERN[0]).all() and patients.index.is_unique

    treatments = sheets["treatments"]
    study = treatments[treatments["drug"].isin(["tofacitinib", "tacrolimus"])]
    assert study["study_id"].is_unique and set(study["study_id"]) == set(patients.index)  # exactly one study drug
    study = study.set_index("study_id").reindex(patients.index)
    start = pd.to_datetime(study["start_date"])
    assert (start > pd.to_datetime(patients["ild_diagnosis_date"])).all()

    follow_up = sheets["follow_up"].set_index("study_id").reindex(patients.index)
    cohort = pd.DataFrame(
        {
            "tofacitinib": (study["drug"] == "tofacitinib").astype(int),
            "rpild": (patients["rpild"] == "yes").astype(int),
            "days": (pd.to_datetime(follow_up["last_contact_date"]) - start).dt.days,
            "dead": follow_up["vital_status"] == "dead",
            "age": (start - pd.to_datetime(patients["birth_date"])).dt.days / 365.25,
        }
    )
    assert 0.35 < cohort["tofacitinib"].mean() < 0.52  # STUDY.md: 26 of 61
    rpild = cohort.groupby("tofacitinib")["rpild"].mean()
    assert abs(rpild[1] - 13 / 26) < 0.07 and abs(rpild[0] - 22 / 35) < 0.07
    assert 40 < cohort["age"].mean() < 65

    # 1-year mortality among patients whose 1-year status is known: lower with tofacitinib, higher with RPILD
    known = cohort[cohort["dead"] | (cohort["days"] >= 365)]
    died = known["dead"] & (known["days"] <= 365)
    by_group = died.groupby(known["tofacitinib"]).mean()
    assert 0.40 < by_group[0] < 0.70 and 0.12 < by_group[1] < 0.40
    by_rpild = died.groupby(known["rpild"]).mean()
    assert by_rpild[1] > 3 * by_rpild[0]
    assert follow_up.loc[follow_up["vital_status"] == "dead", "death_cause"].ne("").all()

    # the generating model: tofacitinib HR 0.45 adjusted for RPILD and age
    one_year = cohort.assign(time=cohort["days"].clip(upper=365), event=(cohort["dead"] & (cohort["days"] <= 365)))
    fit = CoxPHFitter().fit(one_year[["time", "event", "tofacitinib", "rpild", "age"]], "time", "event")
    assert 0.30 < np.exp(fit.params_["tofacitinib"]) < 0.65

    events = sheets["adverse_events"]
    any_event = patients.index.isin(events["study_id"])
    assert 0.55 < any_event.mean() < 0.85  # STUDY.md: 73-74% in both groups
    stopped = study["stop_reason"] == "adverse_event"
    assert stopped[cohort["tofacitinib"] == 1].mean() > stopped[cohort["tofacitinib"] == 0].mean()


def _register_sites(engine, codes) -> None:
    with audited_session(engine, actor="test") as session:
        session.add_all([Site(code=code, name=f"Synthetic site {code}") for code in codes])
        session.commit()


def _import_and_check(engine, folder: Path, made: synth.Synthetic) -> None:
    """The synthetic registry imports without a problem and the checks find no error."""
    _register_sites(engine, made.sites)
    result = import_path(engine, folder, actor="test")
    assert [str(p) for p in result.problems] == []
    assert result.written
    assert {sheet: counts.inserted for sheet, counts in result.counts.items()} == made.rows
    run = run_checks(load_tables(engine), Config(), date.today())
    errors = run.findings[run.findings["severity"] == "error"]
    if len(errors):
        print(errors.groupby("rule").head(3).to_string())
    assert run.errors == 0
    assert set(run.findings["rule"]) <= EXPECTED_WARNINGS, run.findings.groupby("rule").size().to_string()


def test_imports_and_passes_every_error_rule(migrated, tmp_path):
    made = synth.synthesize(tmp_path / "sheets", 300, seed=1, sites=2)
    _import_and_check(migrated, tmp_path / "sheets", made)


def test_the_cohort_of_the_columns_it_reads_equals_the_cohort_of_every_column(migrated, tmp_path):
    """`registry analyze` loads only registry.cohort.COLUMNS: the analysis table, its exclusions and its coded
    values are those of the whole tables (a column the cohort reads and COLUMNS forgot would fail here)."""
    from registry.cohort import COLUMNS, build_cohort

    made = synth.synthesize(tmp_path / "sheets", 300, seed=5, sites=2)
    for sheet, column, code in (("patients", "smoking", "[unknown]"), ("pfts", "fvc_pct_pred", "[not_done]")):
        path = tmp_path / "sheets" / f"{sheet}.csv"
        rows = pd.read_csv(path, dtype=str, keep_default_na=False)
        rows.loc[:19, column] = code  # missing-data codes, which the cohort reads from missing_codes
        rows.to_csv(path, index=False)
    _register_sites(migrated, made.sites)
    assert [str(p) for p in import_path(migrated, tmp_path / "sheets", actor="test").problems] == []
    whole, pruned = (build_cohort(load_tables(migrated, columns), Config()) for columns in (None, COLUMNS))
    assert len(pruned.table) > 200 and pruned.coded.to_numpy().any()
    pd.testing.assert_frame_equal(pruned.table, whole.table)
    pd.testing.assert_frame_equal(pruned.excluded, whole.excluded)
    pd.testing.assert_frame_equal(pruned.coded, whole.coded)
    assert set(load_tables(migrated, COLUMNS)) == set(COLUMNS)
    assert list(load_tables(migrated, COLUMNS)["follow_up"].columns) == list(COLUMNS["follow_up"])


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_other_seeds_are_clean_too(tmp_path, seed):
    engine = db.make_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    db.upgrade(engine)
    made = synth.synthesize(tmp_path / "sheets", 300, seed=seed, sites=3)
    _import_and_check(engine, tmp_path / "sheets", made)
    engine.dispose()


def test_workbook_imports_like_the_csv_files(tmp_path):
    made = synth.synthesize(tmp_path / "synthetic.xlsx", 40, seed=9)
    assert (tmp_path / "synthetic.SYNTHETIC.txt").read_text().startswith("SYNTHETIC DATA")
    engine = db.make_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    db.upgrade(engine)
    _import_and_check(engine, tmp_path / "synthetic.xlsx", made)
    engine.dispose()


def test_synth_command_writes_the_files(tmp_path):
    out = tmp_path / "synthetic"
    result = CliRunner().invoke(
        app, ["synth", "--patients", "60", "--seed", "3", "--sites", "2", "--out", str(out)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert set(_files(out)) == SHEET_FILES | {"SYNTHETIC.txt"}
    assert "Synthetic registry: 60 patients, seed 3" in result.output
    assert re.search(r"^patients\s+60$", result.output, re.MULTILINE)
    assert "Sites: SYN01, SYN02" in result.output
    assert "registry site add" in result.output and f"registry import {out}" in result.output
    assert _files(out) == _files(_again(tmp_path, 60, 3, 2))


def _again(tmp_path: Path, patients: int, seed: int, sites: int) -> Path:
    synth.synthesize(tmp_path / "again", patients, seed, sites)
    return tmp_path / "again"


def test_synth_command_refuses_more_sites_than_patients(tmp_path):
    result = CliRunner().invoke(app, ["synth", "--patients", "3", "--sites", "4", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "sites must be between 1 and the number of patients (3)" in result.output
    assert not (tmp_path / "x").exists()
