"""Every data-quality rule: the clean example registry conforms, one edit makes the rule fire.

The example registry (fixtures/example, four hand-written patients) passes every rule;
each case below breaks it in one place and names exactly the findings the rule must
report (study_id, table, field, value).
"""

from collections.abc import Callable
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from registry import db
from registry.audit import audited_session
from registry.config import Config
from registry.ingest import import_path
from registry.models import Site
from registry.quality import CATALOGUE, RULES, Severity, run_checks
from registry.quality.catalogue import PREFIX
from registry.quality.cross import CROSS_RULES, READS, Registry
from registry.quality.engine import conform, failing, schema_reads
from registry.quality.schemas import SCHEMAS
from registry.tables import DATA_TABLES, data_columns, load_tables

EXAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "example"
TODAY = date(2026, 11, 25)
Tables = dict[str, pd.DataFrame]


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Tables:
    engine = db.make_engine(f"sqlite:///{tmp_path_factory.mktemp('quality') / 'registry.db'}")
    db.upgrade(engine)
    with audited_session(engine, actor="test") as session:
        session.add(Site(code="DEMO", name="Demo"))
        session.commit()
    assert not import_path(engine, EXAMPLE, actor="test").errors
    tables = load_tables(engine)
    engine.dispose()
    return tables


@pytest.fixture
def tables(example) -> Tables:
    return {name: frame.copy() for name, frame in example.items()}


def findings(tables: Tables, rule: str, config: Config | None = None) -> list[tuple]:
    run = run_checks(tables, config or Config(), TODAY)
    rows = run.findings[run.findings["rule"] == rule]
    return sorted(rows[["study_id", "table", "field", "value"]].itertuples(index=False, name=None), key=str)


def test_the_clean_example_passes_every_rule(example):
    run = run_checks(example, Config(data_cutoff=date(2021, 6, 30)), TODAY)
    assert run.findings.empty, run.findings.to_string()
    assert len(run.summary) == len(RULES) and (run.summary["failing"] == 0).all()
    assert run.summary.set_index("rule").loc["LAB-013", "checked"] == len(example["lab_result"])


def test_every_rule_has_a_check_and_every_check_a_rule():
    named = {check.name for schema in SCHEMAS.values() for check in _checks(schema)}
    generic = {f"{rule.id}" for rule in RULES if rule.id.split("-")[1] in ("001", "002", "003")}
    assert named | generic | set(CROSS_RULES) == set(CATALOGUE)
    assert not named & set(CROSS_RULES)


def _checks(schema) -> list:
    built = schema.to_schema()
    return [*built.checks, *(c for column in built.columns.values() for c in column.checks if c.name[0].isupper())]


@pytest.mark.parametrize("table", SCHEMAS)
def test_each_schema_is_its_table_column_for_column(table):
    schema, model = SCHEMAS[table].to_schema(), DATA_TABLES[table]
    assert list(schema.columns) == [c.name for c in data_columns(model)]
    for column in data_columns(model):
        declared = schema.columns[column.name]
        assert declared.nullable == (column.nullable and not column.primary_key), column.name
        enums = getattr(column.type, "enums", None)
        isin = [c for c in declared.checks if c.name == "isin"]
        if enums and column.name != "ctcae_grade":
            assert sorted(isin[0].statistics["allowed_values"]) == sorted(enums), column.name
        else:
            assert not isin or column.name == "ctcae_grade", column.name


# --- helpers that break the example in one place -------------------------------------------------


def _patient(t: Tables, study_id: str) -> int:
    return int(t["patient"].loc[t["patient"]["study_id"] == study_id, "id"].iloc[0])


def _rows(t: Tables, table: str, study_id: str, **equal) -> pd.Index:
    frame = t[table]
    mask = frame["id" if table == "patient" else "patient_id"] == _patient(t, study_id)
    for column, value in equal.items():
        mask &= frame[column] == value
    assert mask.any(), (table, study_id, equal)
    return frame.index[mask]


def edit(table: str, study_id: str, column: str, value, **equal) -> Callable[[Tables], None]:
    def apply(t: Tables) -> None:
        rows = _rows(t, table, study_id, **equal)
        if (isinstance(value, str) and t[table][column].dtype != object) or value is None:
            t[table] = t[table].astype({column: object})  # a value of the wrong type, as a spreadsheet has
        t[table].loc[rows, column] = value

    return apply


def add(table: str, owner: str, like: dict | None = None, **values) -> Callable[[Tables], None]:
    """A copy of the patient's first matching record with ``values`` changed, under a new id."""

    def apply(t: Tables) -> None:
        frame = t[table]
        row = frame.loc[_rows(t, table, owner, **(like or {}))[0]].copy()
        key = "patient_id" if table == "follow_up" else "id"
        if key == "id":
            row["id"] = int(frame["id"].max()) + 1
        for column, value in values.items():
            row[column] = pd.Timestamp(value) if column.endswith("_date") and value else value
        grown = frame.reset_index(drop=True).reindex(range(len(frame) + 1))
        grown.loc[len(frame)] = row
        t[table] = grown

    return apply


def delete(table: str, study_id: str, **equal) -> Callable[[Tables], None]:
    def apply(t: Tables) -> None:
        t[table] = t[table].drop(_rows(t, table, study_id, **equal))

    return apply


def both(*edits: Callable[[Tables], None]) -> Callable[[Tables], None]:
    def apply(t: Tables) -> None:
        for e in edits:
            e(t)

    return apply


D = pd.Timestamp
CUTOFF = Config(data_cutoff=date(2020, 12, 31))
CASES = [
    # generic rules: types, required fields, code lists, references, natural keys
    ("SIT-001", lambda t: t.__setitem__("site", t["site"].assign(code=[123])), [(None, "site", "code", "123")]),
    ("SIT-002", lambda t: t.__setitem__("site", t["site"].assign(name=[None])), [(None, "site", "name", None)]),
    ("SIT-005", lambda t: t.__setitem__("site", pd.concat([t["site"], t["site"].assign(id=pd.array([2], dtype="Int64"))],
                                                            ignore_index=True)),
     [(None, "site", "code", "DEMO")] * 2),
    ("PAT-001", edit("patient", "EX-002", "rpild", "no"), [("EX-002", "patient", "rpild", "no")]),
    ("PAT-002", edit("patient", "EX-002", "sex", None), [("EX-002", "patient", "sex", None)]),
    ("PAT-003", edit("patient", "EX-002", "sex", "unknown"), [("EX-002", "patient", "sex", "unknown")]),
    ("PAT-004", edit("patient", "EX-002", "site_id", 9), [("EX-002", "patient", "site_id", "9")]),
    ("PAT-005", edit("patient", "EX-002", "study_id", "EX-001"), [("EX-001", "patient", "study_id", "EX-001")] * 2),
    ("ABT-001", edit("antibody_test", "EX-002", "value", "58", assay="elisa"),
     [("EX-002", "antibody_test", "value", "58")]),
    ("ABT-002", edit("antibody_test", "EX-002", "sample_date", None, assay="elisa"),
     [("EX-002", "antibody_test", "sample_date", None)]),
    ("ABT-003", edit("antibody_test", "EX-002", "unit", "mg", assay="elisa"),
     [("EX-002", "antibody_test", "unit", "mg")]),
    ("ABT-004", edit("antibody_test", "EX-002", "patient_id", 99, assay="elisa"),
     [(None, "antibody_test", "patient_id", "99")]),
    ("ABT-005", add("antibody_test", "EX-002", like={"assay": "elisa"}),
     [("EX-002", "antibody_test", "sample_date", "2019-02-12")] * 2),
    ("LAB-001", edit("lab_result", "EX-004", "value", "6,2", analyte="crp"), [("EX-004", "lab_result", "value", "6,2")]),
    ("LAB-002", edit("lab_result", "EX-004", "unit", None, analyte="crp"), [("EX-004", "lab_result", "unit", None)]),
    ("LAB-003", edit("lab_result", "EX-004", "analyte", "hba1c", analyte="crp"),
     [("EX-004", "lab_result", "analyte", "hba1c")]),
    ("LAB-004", edit("lab_result", "EX-004", "patient_id", 99, analyte="crp"), [(None, "lab_result", "patient_id", "99")]),
    ("LAB-005", add("lab_result", "EX-004", like={"analyte": "crp"}, value=7.0),
     [("EX-004", "lab_result", "sample_date", "2020-03-19")] * 2),
    ("PFT-001", edit("pft", "EX-002", "fvc_l", "2.61"), [("EX-002", "pft", "fvc_l", "2.61")]),
    ("PFT-002", edit("pft", "EX-002", "test_date", None), [("EX-002", "pft", "test_date", None)]),
    ("PFT-003", edit("pft", "EX-001", "not_done_reason", "busy"), [("EX-001", "pft", "not_done_reason", "busy")]),
    ("PFT-004", edit("pft", "EX-002", "patient_id", 99), [(None, "pft", "patient_id", "99")]),
    ("PFT-005", add("pft", "EX-002"), [("EX-002", "pft", "test_date", "2019-02-14")] * 2),
    ("HRC-001", edit("hrct", "EX-002", "total_score", "62"), [("EX-002", "hrct", "total_score", "62")]),
    ("HRC-002", edit("hrct", "EX-002", "scan_date", None), [("EX-002", "hrct", "scan_date", None)]),
    ("HRC-003", edit("hrct", "EX-002", "pattern", "honeycomb"), [("EX-002", "hrct", "pattern", "honeycomb")]),
    ("HRC-004", edit("hrct", "EX-002", "patient_id", 99), [(None, "hrct", "patient_id", "99")]),
    ("HRC-005", add("hrct", "EX-002"), [("EX-002", "hrct", "scan_date", "2019-02-15")] * 2),
    ("TRT-001", edit("treatment", "EX-002", "dose", "5 mg", drug="tofacitinib"),
     [("EX-002", "treatment", "dose", "5 mg")]),
    ("TRT-002", edit("treatment", "EX-002", "start_date", None, drug="glucocorticoid"),
     [("EX-002", "treatment", "start_date", None)]),
    ("TRT-003", edit("treatment", "EX-002", "frequency", "hourly", drug="tofacitinib"),
     [("EX-002", "treatment", "frequency", "hourly")]),
    ("TRT-004", edit("treatment", "EX-002", "patient_id", 99, drug="glucocorticoid"),
     [(None, "treatment", "patient_id", "99")]),
    ("TRT-005", add("treatment", "EX-002", like={"drug": "glucocorticoid"}, dose=20.0),
     [("EX-002", "treatment", "start_date", "2019-02-16")] * 2),
    ("AEV-001", edit("adverse_event", "EX-002", "ctcae_grade", "II"), [("EX-002", "adverse_event", "ctcae_grade", "II")]),
    ("AEV-002", edit("adverse_event", "EX-002", "serious", None), [("EX-002", "adverse_event", "serious", None)]),
    ("AEV-003", edit("adverse_event", "EX-002", "term", "shingles"), [("EX-002", "adverse_event", "term", "shingles")]),
    ("AEV-004", edit("adverse_event", "EX-002", "patient_id", 99), [(None, "adverse_event", "patient_id", "99")]),
    ("AEV-005", add("adverse_event", "EX-002", ctcae_grade=3), [("EX-002", "adverse_event", "onset_date", "2019-06-10")] * 2),
    ("FUP-001", edit("follow_up", "EX-002", "last_contact_date", "2021-03-01"),
     [("EX-002", "follow_up", "last_contact_date", "2021-03-01")]),
    ("FUP-002", edit("follow_up", "EX-002", "last_contact_date", None), [("EX-002", "follow_up", "last_contact_date", None)]),
    ("FUP-003", edit("follow_up", "EX-002", "vital_status", "unknown"),
     [("EX-002", "follow_up", "vital_status", "unknown")]),
    ("FUP-004", edit("follow_up", "EX-002", "patient_id", 99), [(None, "follow_up", "patient_id", "99")]),
    ("FUP-005", add("follow_up", "EX-002"), [("EX-002", "follow_up", "patient_id", "2")]),  # one key, one finding
    # patients
    ("PAT-010", edit("patient", "EX-002", "birth_date", D("2005-01-01")), [("EX-002", "patient", "birth_date", "2005-01-01")]),
    ("PAT-011", edit("patient", "EX-002", "birth_date", D("1930-01-01")), [("EX-002", "patient", "birth_date", "1930-01-01")]),
    ("PAT-012", edit("patient", "EX-002", "resp_symptom_onset_date", D("1970-01-01")),
     [("EX-002", "patient", "birth_date", "1975-11-30")]),
    ("PAT-013", edit("patient", "EX-002", "resp_symptom_onset_date", D("2019-03-01")),
     [("EX-002", "patient", "resp_symptom_onset_date", "2019-03-01")]),
    ("PAT-014", edit("patient", "EX-001", "ild_worsening_date", D("2018-04-01")),
     [("EX-001", "patient", "ild_worsening_date", "2018-04-01")]),
    ("PAT-015", edit("patient", "EX-002", "smoking", None), [("EX-002", "patient", "smoking", None)]),
    ("PAT-016", edit("patient", "EX-002", "rpild", None), [("EX-002", "patient", "rpild", None)]),
    ("PAT-017", edit("patient", "EX-002", "resp_symptom_onset_date", None),
     [("EX-002", "patient", "resp_symptom_onset_date", None)]),
    ("PAT-018", add("patient", "EX-002", study_id="EX-099"),
     [("EX-002", "patient", "study_id", "EX-002"), ("EX-099", "patient", "study_id", "EX-099")]),
    # antibodies and study entry
    ("ABT-010", delete("antibody_test", "EX-004", antibody="anti_mda5"), [("EX-004", "patient", "antibody", None)]),
    ("ABT-011", edit("antibody_test", "EX-002", "grade", "negative", assay="elisa"),
     [("EX-002", "antibody_test", "grade", "negative")]),
    ("STU-001", edit("antibody_test", "EX-004", "grade", "negative", antibody="anti_mda5"),
     [("EX-004", "patient", "antibody", None)]),
    ("STU-002", edit("patient", "EX-002", "ild_diagnosis_date", None), [("EX-002", "patient", "ild_diagnosis_date", None)]),
    ("STU-003", edit("patient", "EX-002", "ild_diagnosis_date", D("2016-01-05")),
     [("EX-002", "patient", "ild_diagnosis_date", "2016-01-05")]),
    ("STU-004", add("treatment", "EX-002", like={"drug": "tofacitinib"}, drug="tacrolimus", start_date="2019-06-01"),
     [("EX-002", "patient", "drug", "tofacitinib")]),
    ("STU-005", add("treatment", "EX-002", like={"drug": "tofacitinib"}, drug="tacrolimus"),
     [("EX-002", "patient", "start_date", "2019-02-18")]),
    ("STU-006", edit("patient", "EX-002", "ild_worsening_date", D("2019-02-10")), [("EX-002", "patient", "rpild", "no")]),
    ("STU-007", edit("antibody_test", "EX-004", "grade", "weak", antibody="anti_jo1"),
     [("EX-004", "antibody_test", "antibody", "anti_jo1")]),
    # laboratory
    ("LAB-010", edit("lab_result", "EX-001", "unit", "mg/dL", analyte="crp"), [("EX-001", "lab_result", "unit", "mg/dL")]),
    ("LAB-011", edit("lab_result", "EX-001", "value", 420.0, analyte="lymphocytes"),
     [("EX-001", "lab_result", "value", "420")]),
    ("LAB-012", edit("lab_result", "EX-001", "value", 21.0, analyte="fio2"), [("EX-001", "lab_result", "value", "21")]),
    ("LAB-013", edit("lab_result", "EX-002", "value", 250_000.0, analyte="ferritin"),
     [("EX-002", "lab_result", "value", "250000")]),
    ("LAB-014", edit("lab_result", "EX-002", "value", 25_000.0, analyte="ferritin"),
     [("EX-002", "lab_result", "value", "25000")]),
    ("LAB-015", add("lab_result", "EX-002", like={"analyte": "ferritin"}, sample_date="2019-02-13"),
     [("EX-002", "lab_result", "value", "640")]),
    # lungs
    ("PFT-010", edit("pft", "EX-002", "test_date", D("2019-06-01")), [("EX-002", "patient", "test_date", None)]),
    ("PFT-011", edit("pft", "EX-002", "fvc_pct_pred", 7.45), [("EX-002", "pft", "fvc_pct_pred", "7.45")]),
    ("HRC-010", edit("hrct", "EX-002", "scan_date", D("2019-08-01")), [("EX-002", "patient", "scan_date", None)]),
    ("HRC-011", edit("hrct", "EX-002", "ggo_right_upper_pct", 150.0), [("EX-002", "hrct", "ggo_right_upper_pct", "150")]),
    ("HRC-012", edit("hrct", "EX-004", "total_score", 1330.0), [("EX-004", "hrct", "total_score", "1330")]),  # no extents
    ("HRC-013", edit("hrct", "EX-002", "total_score", 999.0), [("EX-002", "hrct", "total_score", "999")]),  # 2 x 95 at most
    ("HRC-014", both(edit("hrct", "EX-002", "ggo_left_lower_pct", None), edit("hrct", "EX-004", "total_score", 150.0)),
     [("EX-002", "hrct", "total_score", "62"), ("EX-004", "hrct", "total_score", "150")]),
    # treatments
    ("TRT-010", delete("treatment", "EX-002", drug="tofacitinib"), [("EX-002", "patient", "drug", None)]),
    ("TRT-011", edit("treatment", "EX-002", "dose", 50.0, drug="tofacitinib"), [("EX-002", "treatment", "dose", "50")]),
    ("TRT-012", edit("treatment", "EX-002", "dose_unit", "g", drug="tofacitinib"),
     [("EX-002", "treatment", "dose_unit", "g")]),
    ("TRT-013", edit("treatment", "EX-001", "end_date", D("2018-05-01"), drug="tofacitinib"),
     [("EX-001", "treatment", "end_date", "2018-05-01")]),
    ("TRT-014", add("treatment", "EX-002", like={"drug": "glucocorticoid"}, start_date="2019-03-01"),
     [("EX-002", "treatment", "start_date", "2019-03-01")]),
    ("TRT-015", edit("treatment", "EX-003", "end_date", pd.NaT, drug="cyclophosphamide"),
     [("EX-003", "treatment", "end_date", None)]),
    ("TRT-016", edit("treatment", "EX-003", "stop_reason", None, drug="cyclophosphamide"),
     [("EX-003", "treatment", "stop_reason", None)]),
    # adverse events
    ("AEV-010", edit("adverse_event", "EX-002", "onset_date", D("2019-01-01")),
     [("EX-002", "adverse_event", "onset_date", "2019-01-01")]),
    ("AEV-011", edit("adverse_event", "EX-001", "attributed_drug", "tacrolimus"),
     [("EX-001", "adverse_event", "attributed_drug", "tacrolimus")]),
    ("AEV-012", edit("adverse_event", "EX-001", "onset_date", D("2018-07-01")),
     [("EX-001", "adverse_event", "onset_date", "2018-07-01")]),
    ("AEV-013", edit("adverse_event", "EX-001", "resolution_date", D("2018-05-01")),
     [("EX-001", "adverse_event", "resolution_date", "2018-05-01")]),
    ("AEV-014", both(edit("adverse_event", "EX-002", "term", "other"), edit("adverse_event", "EX-002", "term_detail", None)),
     [("EX-002", "adverse_event", "term_detail", None)]),
    ("AEV-015", edit("adverse_event", "EX-002", "outcome", "fatal"), [("EX-002", "adverse_event", "outcome", "fatal")]),
    ("AEV-016", edit("adverse_event", "EX-004", "ctcae_grade", 5), [("EX-004", "adverse_event", "ctcae_grade", "5")]),
    ("AEV-017", edit("adverse_event", "EX-003", "serious", False), [("EX-003", "adverse_event", "serious", "no")]),
    ("AEV-018", edit("adverse_event", "EX-004", "outcome", "not_recovered"),
     [("EX-004", "adverse_event", "resolution_date", "2020-08-05")]),
    # follow-up and dates
    ("FUP-010", delete("follow_up", "EX-002"), [("EX-002", "patient", "vital_status", None)]),
    ("FUP-011", edit("follow_up", "EX-001", "death_cause", None), [("EX-001", "follow_up", "death_cause", None)]),
    ("FUP-012", both(edit("follow_up", "EX-002", "vital_status", "dead"),
                     edit("follow_up", "EX-002", "death_date", D("2019-02-17")),
                     edit("follow_up", "EX-002", "death_cause", "infection")),
     [("EX-002", "follow_up", "death_date", "2019-02-17")]),
    ("FUP-013", edit("follow_up", "EX-004", "lung_transplant_date", D("2021-08-01")),
     [("EX-004", "follow_up", "lung_transplant_date", "2021-08-01")]),
    ("TIM-001", add("lab_result", "EX-001", like={"analyte": "ferritin"}, sample_date="2018-07-01"),
     [("EX-001", "lab_result", "sample_date", "2018-07-01")]),
    ("TIM-002", add("lab_result", "EX-002", like={"analyte": "ferritin"}, sample_date="2021-05-01"),
     [("EX-002", "lab_result", "sample_date", "2021-05-01"), ("EX-002", "follow_up", "last_contact_date", "2021-03-01")]),
    ("TIM-003", add("lab_result", "EX-004", like={"analyte": "crp"}, sample_date="2021-02-01"),
     [("EX-004", "lab_result", "sample_date", "2021-02-01")]),
    ("TIM-004", edit("follow_up", "EX-004", "last_contact_date", D("2027-01-01")),
     [("EX-004", "follow_up", "last_contact_date", "2027-01-01")]),
    ("TIM-004", edit("patient", "EX-004", "birth_date", D("2059-01-22")), [("EX-004", "patient", "birth_date", "2059-01-22")]),
    ("TIM-005", edit("patient", "EX-002", "ild_diagnosis_date", D("2019-03-01")),
     [("EX-002", "patient", "ild_diagnosis_date", "2019-03-01"), ("EX-002", "treatment", "start_date", "2019-02-18")]),
    ("TIM-006", add("lab_result", "EX-002", like={"analyte": "ferritin"}, sample_date="1970-01-01"),
     [("EX-002", "lab_result", "sample_date", "1970-01-01")]),
    ("TIM-007", add("lab_result", "EX-002", like={"analyte": "ferritin"}, sample_date="2016-12-31"),
     [("EX-002", "lab_result", "sample_date", "2016-12-31")]),
    ("TIM-008", add("lab_result", "EX-002", like={"analyte": "ferritin"}, sample_date="1900-01-01"),
     [("EX-002", "lab_result", "sample_date", "1900-01-01")]),
    ("STU-008", edit("treatment", "EX-004", "start_date", D("2021-01-05"), drug="tacrolimus"),
     [("EX-004", "treatment", "start_date", "2021-01-05")]),
]  # fmt: skip


def test_every_rule_has_a_violating_case():
    assert [rule for rule, _, _ in CASES if rule not in CATALOGUE] == []
    assert sorted(set(CATALOGUE) - {rule for rule, _, _ in CASES}) == []


@pytest.mark.parametrize("rule, breaks, expected", CASES, ids=[c[0] for c in CASES])
def test_rule_fires_on_the_broken_record(tables, rule, breaks, expected):
    config = CUTOFF if rule == "TIM-003" else None
    assert findings(tables, rule, config) == []  # the conforming case
    breaks(tables)
    assert findings(tables, rule, config) == sorted(expected, key=str)


def conformed(tables: Tables) -> Tables:
    """The tables as the rules read them (each column in its type)."""
    return {name: conform(name, tables[name])[0] for name in SCHEMAS}


def restricted(registry: Registry, reads: dict[str, frozenset[str]]) -> Registry:
    """``registry`` with only the ``reads`` columns of each table (every record kept)."""
    for table, names in reads.items():
        assert names <= set(registry.tables[table].columns), (table, names - set(registry.tables[table].columns))
    tables = {name: frame[sorted(reads.get(name, ()))] for name, frame in registry.tables.items()}
    return Registry(tables, registry.config, registry.today)


def as_rows(found: pd.DataFrame) -> list[dict]:
    return sorted(found.astype(str).to_dict("records"), key=str)


CROSS_CASES = [c for c in CASES if c[0] in CROSS_RULES]


@pytest.mark.parametrize("rule, breaks, expected", CROSS_CASES, ids=[c[0] for c in CROSS_CASES])
def test_cross_rules_read_only_the_columns_they_declare(tables, rule, breaks, expected):
    """Each cross rule, on its declared columns alone (:data:`READS`), finds what it finds on the whole tables: a
    save runs only the rules reading what it changed, and one reading an undeclared column would be skipped when
    that column changes (it fails without the column, or finds something else)."""
    breaks(tables)
    registry = Registry(conformed(tables), CUTOFF, TODAY)
    assert set(READS) == set(CROSS_RULES)
    assert len(CROSS_RULES[rule](registry))  # the case's own rule fires
    for name, check in CROSS_RULES.items():
        assert as_rows(check(restricted(registry, READS[name]))) == as_rows(check(registry)), name


@pytest.mark.parametrize("rule, breaks, expected", CASES, ids=[c[0] for c in CASES])
def test_schema_row_checks_read_only_their_fields_codes_and_declared_columns(tables, rule, breaks, expected):
    """A record-level check of a schema, on the columns its rule reads alone (``schema_reads``: the rule's fields,
    the record's missing-data codes, ``READS_BEYOND_FIELDS``), fails the records it fails on the whole table (a
    save runs only the rules reading a column it changed). Column checks read their own column by construction."""
    breaks(tables)
    for table, frame in conformed(tables).items():
        reads = schema_reads(table)
        for check in SCHEMAS[table].to_schema().checks:
            alone = frame[sorted(reads[check.name])]
            assert (failing(table, check, alone) == failing(table, check, frame)).all(), (table, check.name)


TYPE_CASES = [c for c in CASES if c[0] in {f"{prefix}-001" for prefix in PREFIX.values()}]


@pytest.mark.parametrize("rule, breaks, expected", TYPE_CASES, ids=[c[0] for c in TYPE_CASES])
def test_a_mistyped_cell_is_reported_once(tables, rule, breaks, expected):
    breaks(tables)
    run = run_checks(tables, Config(), TODAY)
    cells = run.findings[["rule", "table", "field"]].itertuples(index=False, name=None)
    assert [c for c in cells if c[1:] == expected[0][1:3]] == [(rule, *expected[0][1:3])]


def test_severity_decides_errors_and_warnings(tables):
    edit("patient", "EX-002", "smoking", None)(tables)  # PAT-015, a warning
    run = run_checks(tables, Config(), TODAY)
    assert (run.errors, run.warnings) == (0, 1)
    assert CATALOGUE["PAT-015"].severity is Severity.WARNING
