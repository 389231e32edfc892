"""`registry analyze`: every result in one JSON document, traceable to its data."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from registry.cli import app
from tests.conftest import modules_loaded_by

runner = CliRunner()
EXAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "example"


@pytest.fixture
def example(migrated, database_url):
    for args in (["site", "add", "DEMO", "Demo", "--actor", "t"], ["import", str(EXAMPLE), "--actor", "t"]):
        assert runner.invoke(app, ["--database", database_url, *args]).exit_code == 0
    return database_url


@pytest.fixture
def demo_registry(tmp_path):
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    demo = Path(__file__).resolve().parents[1] / "fixtures" / "demo"
    for args in (
        ["db", "upgrade"],
        ["site", "add", "DEMO", "Demo", "--actor", "t"],
        ["import", str(demo), "--actor", "t"],
    ):
        assert runner.invoke(app, ["--database", url, *args]).exit_code == 0
    return url


def _analyze(url, tmp_path, *extra):
    return runner.invoke(app, ["--database", url, "analyze", "--json", str(tmp_path / "r.json"), *extra])


def test_results_document(example, tmp_path):
    result = _analyze(example, tmp_path, "--config", str(tmp_path / "absent.toml"))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[:2] == [
        "4 patients registered, 0 excluded",
        "analysed: tacrolimus 2, tofacitinib 2",
    ]
    doc = json.loads((tmp_path / "r.json").read_text())
    assert list(doc) == [
        "generated_at",
        "software",
        "configuration",
        "data_fingerprint",
        "flow",
        "overall",
        "rpild",
        "baseline",
        "safety",
        "sensitivity",
    ]
    assert doc["configuration"]["landmarks"] == {"6 months": 183, "1 year": 365}
    assert doc["flow"] == {"registered": 4, "excluded": {}, "analysed": {"tacrolimus": 2, "tofacitinib": 2},
                           "rpild": {"tacrolimus": 1, "tofacitinib": 1}}  # fmt: skip
    six = doc["overall"]["mortality"][0]
    assert [(g["group"], g["deaths"], g["known"]) for g in six["groups"]] == [
        ("tacrolimus", 1, 2),
        ("tofacitinib", 1, 2),
    ]
    assert doc["overall"]["survival"]["ci_type"] == "log-log"
    assert set(doc["overall"]["survival"]["log_rank"]) == {"full follow-up", "6 months", "1 year"}
    assert doc["overall"]["cox"]["models"]["unadjusted"]["terms"][0]["name"] == "tofacitinib"
    # 4 patients, 6 coefficients: neither the usual nor Firth's estimate exists
    assert doc["overall"]["cox"]["models"]["adjusted"]["error"] == (
        "all deaths occurred at one value of male (complete separation): the hazard ratio is infinite or "
        "zero and the usual Cox estimate does not exist; Firth's penalised estimate failed too (Fisher "
        "information is rank deficient)"
    )
    assert next(r for r in doc["safety"] if r["outcome"] == "ae_any")["groups"][0]["patients"] == 2


def test_fingerprint_follows_the_data(example, tmp_path):
    _analyze(example, tmp_path)
    first = json.loads((tmp_path / "r.json").read_text())["data_fingerprint"]
    _analyze(example, tmp_path)
    assert json.loads((tmp_path / "r.json").read_text())["data_fingerprint"] == first
    (tmp_path / "fu").mkdir()
    (tmp_path / "fu" / "follow_up.csv").write_text("study_id,last_contact_date,vital_status\nEX-002,2021-04-01,alive\n")
    runner.invoke(app, ["--database", example, "import", str(tmp_path / "fu"), "--actor", "t"])
    _analyze(example, tmp_path)
    assert json.loads((tmp_path / "r.json").read_text())["data_fingerprint"] != first


def test_bad_configuration_stops_before_any_analysis(example, tmp_path):
    (tmp_path / "registry.toml").write_text("landmark = 1\n")
    result = _analyze(example, tmp_path, "--config", str(tmp_path / "registry.toml"))
    assert result.exit_code == 2
    assert "Configuration not used:" in result.output and "unknown key(s) landmark" in result.output
    assert not (tmp_path / "r.json").exists()


def test_univariable_models_for_each_covariate(example, tmp_path):
    _analyze(example, tmp_path)
    doc = json.loads((tmp_path / "r.json").read_text())
    univariable = doc["overall"]["cox"]["univariable"]
    assert list(univariable) == ["age", "male", "ever_smoker", "anti_mda5_grade", "steroid_sparing"]
    assert univariable["age"]["terms"][0]["name"] == "age"


def test_imputations_are_written_for_re_pooling_and_an_occupied_directory_is_refused(demo_registry, tmp_path):
    out = tmp_path / "imputed"
    result = _analyze(demo_registry, tmp_path, "--imputations", str(out))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == f"20 imputed data sets written to {out}"
    files = sorted(out.glob("imputation_*.csv"))
    assert [f.name for f in files][:2] == ["imputation_01.csv", "imputation_02.csv"] and len(files) == 20
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["m"] == 20 and manifest["imputed"] == {"pft_fvc_pct_pred": 21, "pft_dlco_pct_pred": 21}
    # pooling the written files again gives the results' pooled estimate
    import numpy as np
    import pandas as pd

    from registry.analysis.imputation import fit_cox_imputed

    pooled = json.loads((tmp_path / "r.json").read_text())["sensitivity"]["imputation"]["pooled"]
    covariates = manifest["columns"][3:]
    again = fit_cox_imputed([pd.read_csv(f) for f in files], "cox_time", "cox_event", covariates)
    assert [t.coef for t in again.terms] == pytest.approx([t["coef"] for t in pooled["terms"]], rel=1e-12)
    assert not np.isnan(again.terms[0].se)
    scan = runner.invoke(app, ["--database", demo_registry, "privacy", "scan", str(out), str(tmp_path / "r.json")])
    assert scan.exit_code == 0, scan.output  # no identifier leaves through the imputed data sets
    refused = _analyze(demo_registry, tmp_path, "--imputations", str(out))
    assert refused.exit_code == 2
    assert refused.output.strip() == f"--imputations: {out} is not a new or empty directory; nothing was analysed"


#: Libraries `registry analyze` has no use for, each a few tenths of a second to import (issue 20's start-up): the
#: analyses compute on scipy.special (scipy.stats only for an exact Mann-Whitney test, which the demo cohort has
#: none of), the report's libraries are the report's.
NOT_FOR_ANALYZE = ("scipy.stats", "scipy.optimize", "lifelines", "matplotlib", "weasyprint", "jinja2")


def test_analyze_loads_none_of_the_libraries_it_has_no_use_for(demo_registry, tmp_path):
    """Every analysis of the demo cohort, the sensitivity analyses and their imputations included."""
    args = ["--database", demo_registry, "analyze", "--json", str(tmp_path / "r.json")]
    assert modules_loaded_by(args, NOT_FOR_ANALYZE) == []
    assert json.loads((tmp_path / "r.json").read_text())["sensitivity"]


def test_analyses_at_scale_run_side_by_side_and_give_the_numbers_of_running_them_in_turn(
    tmp_path, monkeypatch, one_blas_thread
):
    """From 10,000 patients the multiple imputation's chains and pooled fits run in threads
    (registry.analysis.threads): every number of the results must be those of running them one after another."""
    import pandas as pd

    import registry.analysis.threads as threads
    from registry.analysis.run import analyze
    from registry.cohort import Cohort
    from registry.config import Config
    from tests.conftest import build_demo_table

    if threads.cores() < 2:
        pytest.skip("one core: nothing runs side by side")
    demo = build_demo_table(tmp_path)
    copies = -(-threads.MIN_ROWS // len(demo))
    table = pd.concat([demo.set_axis([f"{i}-{k}" for i in demo.index], axis=0) for k in range(copies)])
    cohort = Cohort(table, pd.DataFrame({"study_id": [], "reason": []}), len(table))
    started = []
    real = threads.ThreadPoolExecutor
    monkeypatch.setattr(threads, "ThreadPoolExecutor", lambda **kw: started.append(kw) or real(**kw))
    side_by_side = analyze(cohort, Config())
    assert len(started) == 2  # the chains, the fits
    monkeypatch.setattr(threads, "MIN_ROWS", len(table) + 1)
    in_turn = analyze(cohort, Config())
    assert len(started) == 2
    for results in (side_by_side, in_turn):
        results.pop("generated_at")
    assert json.dumps(side_by_side) == json.dumps(in_turn)
    assert side_by_side["sensitivity"]["imputation"]["pooled"]["terms"]
