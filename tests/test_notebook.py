"""The notebook entry point: the cohort and the results as pandas objects, the numbers of `registry analyze`."""

from pathlib import Path

import pytest
from conftest import add_demo_site

from registry.ingest import import_path
from registry.notebook import open_registry

DEMO = Path(__file__).resolve().parents[1] / "fixtures" / "demo"


@pytest.fixture
def demo(migrated):
    add_demo_site(migrated)
    assert import_path(migrated, DEMO, actor="coordinator").written
    return migrated.url.render_as_string(hide_password=False)


def test_the_cohort_and_results_are_the_published_ones(demo):
    registry = open_registry(demo)
    assert len(registry.cohort) == 61 and registry.cohort["group"].value_counts().to_dict() == {
        "tacrolimus": 35, "tofacitinib": 26,
    }  # fmt: skip
    assert registry.excluded.empty
    results = registry.results()
    mortality = results.mortality().set_index(["days", "group"])
    assert mortality.loc[(183, "tacrolimus"), ["deaths", "known"]].tolist() == [22, 35]
    assert mortality.loc[(183, "tofacitinib"), ["deaths", "known"]].tolist() == [10, 26]
    assert round(mortality.loc[(183, "tofacitinib"), "p"], 3) == 0.028
    cox = results.cox().set_index(["model", "name"])
    adjusted = cox.loc[("adjusted", "tofacitinib")]
    assert (round(adjusted["hr"], 3), round(adjusted["lower"], 3), round(adjusted["upper"], 3)) == (0.438, 0.2, 0.96)
    assert adjusted["hr"] == results.document["overall"]["cox"]["models"]["adjusted"]["terms"][0]["hr"]
    rpild = results.cox("rpild").set_index(["model", "name"]).loc[("adjusted", "tofacitinib")]
    assert round(rpild["hr"], 3) == 0.248
    assert set(results.baseline()["variable"]) >= {"age", "male"}
    assert results.safety()["outcome"].iloc[0] == "ae_any"
    assert results.hazard_ratios()["method"].tolist()[:2] == ["unadjusted", "adjusted"]
    assert len(registry.tables()["lab_result"]) == 732


def test_a_registry_that_cannot_be_analysed_says_why(migrated, tmp_path):
    url = migrated.url.render_as_string(hide_password=False)
    (tmp_path / "registry.toml").write_text("", encoding="utf-8")
    registry = open_registry(url, tmp_path / "registry.toml")
    assert registry.cohort.empty
    with pytest.raises(ValueError) as refused:
        registry.results()
    assert str(refused.value) == "no patient can be analysed: the registry holds no patients"
