"""load_tables: the registry as typed frames, the same on SQLite and PostgreSQL.

The reference is pandas' own reader (``pandas.read_sql`` through SQLAlchemy, which
converts every value in Python) of the same live records, typed column by column;
load_tables reads with the driver's cursor and converts whole columns, and must give
exactly the same frames.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from registry.entry import set_deleted
from registry.ingest import import_path
from registry.models import LabResult, Patient
from registry.tables import DATA_TABLES, data_columns, dtype_of, live, load_tables, typed
from tests.conftest import add_demo_site

EXAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "example"


@pytest.fixture
def example(migrated: sa.Engine) -> sa.Engine:
    add_demo_site(migrated)
    assert not import_path(migrated, EXAMPLE, actor="test").errors
    with migrated.connect() as connection:
        patient = connection.execute(sa.select(Patient.id).where(Patient.study_id == "EX-002")).scalar_one()
        lab = connection.execute(sa.select(LabResult.id).where(LabResult.patient_id != patient)).first()[0]
    set_deleted(migrated, "labs", lab, deleted=True, actor="dana", reason="entered twice")
    set_deleted(migrated, "patients", patient, deleted=True, actor="dana", reason="withdrew consent")
    return migrated


def _reference(engine: sa.Engine) -> dict[str, pd.DataFrame]:
    with engine.connect() as connection:
        return {name: typed(pd.read_sql(live(table), connection), table) for name, table in DATA_TABLES.items()}


def test_load_tables_equals_pandas_own_reader_typed(example):
    tables, reference = load_tables(example), _reference(example)
    assert list(tables) == list(DATA_TABLES)
    for name, table in DATA_TABLES.items():
        assert len(tables[name]) > 0, name
        pd.testing.assert_frame_equal(tables[name], reference[name], obj=name)
        assert [str(tables[name][c.name].dtype) for c in data_columns(table)] == [
            dtype_of(c) for c in data_columns(table)
        ]


def test_missing_values_are_none_in_text_and_na_elsewhere(example):
    tables = load_tables(example)
    pfts = tables["pft"].set_index("test_date")
    too_ill = pfts.loc[pd.Timestamp("2018-05-06")]
    assert too_ill["not_done_reason"] == "too_ill" and np.isnan(too_ill["fvc_l"])
    done = pfts.loc[pd.Timestamp("2020-03-21")]
    assert done["not_done_reason"] is None and np.isnan(done["tlc_pct_pred"])  # None, never NaN, in a text column
    events = tables["adverse_event"]
    assert events["serious"].dtype == "boolean" and events["ctcae_grade"].dtype == "Int64"
    assert events["resolution_date"].isna().any() and events["resolution_date"].dtype == "datetime64[s]"
    text = [c.name for c in data_columns(DATA_TABLES["adverse_event"]) if dtype_of(c) == "object"]
    assert all(value is None or isinstance(value, str) for value in events[text].to_numpy().ravel())


def test_deleted_records_patients_and_identifiers_are_never_loaded(example):
    tables = load_tables(example)
    assert "EX-002" not in set(tables["patient"]["study_id"])
    patients = {int(n) for n in tables["patient"]["id"]}
    for name, frame in tables.items():
        if "patient_id" in frame:
            assert set(frame["patient_id"]) <= patients, name
    with example.connect() as connection:
        stored = connection.execute(sa.select(sa.func.count()).select_from(LabResult).where(
            LabResult.deleted_at.is_(None), LabResult.patient_id.in_(patients))).scalar_one()  # fmt: skip
    assert len(tables["lab_result"]) == stored
    assert "patient_identifier" not in tables["patient"] and "deleted_at" not in tables["lab_result"]


def test_an_empty_registry_gives_empty_frames_in_their_dtypes(migrated):
    tables = load_tables(migrated)
    for name, table in DATA_TABLES.items():
        assert tables[name].empty, name
        assert {c: str(t) for c, t in tables[name].dtypes.items()} == {c.name: dtype_of(c) for c in data_columns(table)}
