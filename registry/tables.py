"""The registry as plain DataFrames: one query per table, one dtype per column type.

Everything downstream of the database (data-quality checks, the cohort builder)
reads these frames, never the ORM. Column dtypes follow the model's column types, so
a check sees the same types whatever the database: dates as ``datetime64[s]`` (:data:`DATE`),
measurements as ``float64``, whole numbers as ``Int64``, flags as nullable
``boolean`` and codes and text as strings (``object``). Direct identifiers
(``patient_identifier``), bookkeeping columns (edit counters, deletion and lock times)
and deleted records, with every record of a deleted patient, are never loaded.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import sqlalchemy as sa

from registry.models import (
    AdverseEvent,
    AntibodyTest,
    FollowUp,
    Hrct,
    LabResult,
    Patient,
    Pft,
    Site,
    Treatment,
    is_bookkeeping,
)

#: The tables analyses and checks read, in entry order.
DATA_TABLES: dict[str, sa.Table] = {
    model.__table__.name: model.__table__
    for model in (Site, Patient, AntibodyTest, LabResult, Pft, Hrct, Treatment, AdverseEvent, FollowUp)
}


#: The dtype of dates: second resolution spans years 1 to 9999 and beyond, so every date a database can store is
#: held as it is (``datetime64[ns]``, pandas' default, ends in 1677 and 2262: one lab dated 0001-01-01 stopped every
#: check and analysis). Arithmetic on them stays in seconds too: see :data:`DAY`.
DATE = "datetime64[s]"
#: One day in :data:`DATE`'s unit: ``pd.Timedelta(days=n)`` is in nanoseconds and would drag a date column into them.
DAY = np.timedelta64(1, "D").astype("timedelta64[s]")
#: Later than any storable date, with room for windows added to it: the end of a course that has not ended.
NEVER = np.datetime64(1_000_000 * 365, "D").astype(DATE)


def as_dates(values: np.ndarray) -> np.ndarray:
    """Dates (``datetime.date``, ISO text, timestamps; ``None``/NaN/NaT where missing) as a :data:`DATE` array.

    Converted once per distinct date (numpy converts date objects one by one, and dates repeat).
    """
    codes, uniques = pd.factorize(values)  # missing cells get code -1
    return np.append(np.asarray(uniques, dtype=object).astype(DATE), np.datetime64("NaT", "s"))[codes]


def data_columns(table: sa.Table) -> list[sa.Column]:
    """The columns of ``table`` that hold data (bookkeeping columns left out)."""
    return [column for column in table.columns if not is_bookkeeping(column)]


def live(table: sa.Table, patient_ids: Collection[int] | None = None) -> sa.Select:
    """The data columns of the records of ``table`` that are not deleted, nor belong to a deleted patient; with
    ``patient_ids``, only those of these patients (a table without ``patient_id`` is not cut).

    For a few patients their own deletion is looked up by key: excluding every deleted patient
    (``NOT IN``) scans the patient table, 9 ms a table at 100,000 patients on SQLite."""
    query = sa.select(*data_columns(table))
    if "deleted_at" in table.c:
        query = query.where(table.c.deleted_at.is_(None))
    if "patient_id" in table.c and patient_ids is None:
        deleted = sa.select(Patient.id).where(Patient.deleted_at.is_not(None))
        query = query.where(table.c.patient_id.not_in(deleted))
    elif "patient_id" in table.c:
        alive = sa.select(Patient.id).where(Patient.id.in_(list(patient_ids)), Patient.deleted_at.is_(None))
        query = query.where(table.c.patient_id.in_(alive))
    return query


def dtype_of(column: sa.Column) -> str:
    """The pandas dtype a column's values are held in."""
    kind = column.type
    if isinstance(kind, sa.Date):
        return DATE
    if isinstance(kind, sa.Float):
        return "float64"
    if isinstance(kind, sa.Boolean):
        return "boolean"
    if isinstance(kind, sa.Integer):
        return "Int64"
    return "object"


def _text(values: np.ndarray) -> np.ndarray:
    """Text cells with one string object per distinct value, and ``None`` (never NaN) where missing.

    Codes repeat (an analyte's name in a million lab rows): with one object per value,
    every later comparison and look-up of the column is a pointer test, not a string
    compare; the checks of a 100,000-patient registry take half the time.
    """
    codes, uniques = pd.factorize(values)  # missing cells (None, NaN, NA) get code -1
    return np.append(uniques, None)[codes]


def as_dtype(values: pd.Series, column: sa.Column) -> pd.Series:
    """``values`` in ``column``'s dtype (:func:`dtype_of`); missing text as ``None``, never NaN."""
    dtype = dtype_of(column)
    if dtype == "object":
        return pd.Series(_text(values.to_numpy(dtype=object)), index=values.index, name=values.name)
    if str(values.dtype) == dtype:  # in its dtype already (the checks re-type loaded frames)
        return values
    if dtype == DATE:
        return pd.Series(as_dates(values.to_numpy(dtype=object)), index=values.index, name=values.name)
    return values.astype(dtype)


def typed(frame: pd.DataFrame, table: sa.Table) -> pd.DataFrame:
    """``frame`` with every data column of ``table`` in its dtype (an empty table keeps its columns)."""
    empty = pd.Series(index=frame.index, dtype=object)
    columns = {c.name: as_dtype(frame.get(c.name, empty), c) for c in data_columns(table)}
    return pd.DataFrame(columns, index=frame.index)


def _column(values: np.ndarray, dtype: str) -> np.ndarray | pd.api.extensions.ExtensionArray:
    """One column of driver values (an object array, ``None`` for NULL) in ``dtype``, converted as a whole."""
    if dtype == "object":
        return _text(values)
    if dtype == "float64":
        return values.astype(np.float64)  # None becomes NaN
    if dtype == DATE:
        return as_dates(values)  # ISO text on SQLite, dates on PostgreSQL
    missing = np.equal(values, None)
    filled = np.where(missing, 0, values)
    if dtype == "boolean":  # 0/1 on SQLite, booleans on PostgreSQL
        return pd.arrays.BooleanArray(filled.astype(bool), missing)
    return pd.arrays.IntegerArray(filled.astype(np.int64), missing)


@dataclass(frozen=True)
class Prepared:
    """A read compiled once and run with new values of its parameters (whole numbers), in the driver's own style:
    compiling a statement costs more than running it on a few rows."""

    compiled: sa.engine.Compiled

    def arguments(self, values: Mapping[str, int]) -> tuple | dict:
        bound = self.compiled.construct_params(dict(values))
        return tuple(bound[name] for name in self.compiled.positiontup) if self.compiled.positional else bound


def read_table(
    connection: sa.Connection,
    table: sa.Table,
    query: sa.Select | Prepared | None = None,
    values: Mapping[str, int] | None = None,
    only: Collection[str] | None = None,
) -> pd.DataFrame:
    """The live records of ``table`` (:func:`live`, or ``query``, a filter of it whose parameters are whole numbers,
    written into its SQL, or a :class:`Prepared` one with its ``values``), read with the driver's own cursor and
    typed a whole column at a time: no row objects, no per-value conversion in Python, no type inference. With
    ``only``, just these of its data columns (of :func:`live`'s query)."""
    columns = data_columns(table)
    if only is not None:
        if query is not None:
            raise ValueError("only= narrows the table's own live query; a given query names its columns itself")
        columns = [column for column in columns if column.name in only]
    query = live(table).with_only_columns(*columns) if query is None else query
    cursor = connection.connection.cursor()
    try:
        if isinstance(query, Prepared):
            cursor.execute(query.compiled.string, query.arguments(values or {}))
        else:
            cursor.execute(str(query.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True})))
        rows = cursor.fetchall()
    finally:
        cursor.close()
    cells = np.array(rows, dtype=object) if rows else np.empty((0, len(columns)), dtype=object)
    return pd.DataFrame(
        {column.name: _column(cells[:, n], dtype_of(column)) for n, column in enumerate(columns)}, copy=False
    )


def load_tables(
    bind: sa.Engine | sa.Connection, columns: Mapping[str, Collection[str]] | None = None
) -> dict[str, pd.DataFrame]:
    """Every data table's live records (:func:`live`), one query each, in the dtypes of :func:`dtype_of`; with
    ``columns``, only its tables, each with only its columns (what the cohort reads: registry.cohort.COLUMNS).

    Given a connection, the tables are read in its transaction: a data cut reads them in one
    snapshot of the database, so that they agree with each other (registry.cuts).
    """
    if isinstance(bind, sa.Engine):
        with bind.connect() as connection:
            return load_tables(connection, columns)
    if columns is None:
        return {name: read_table(bind, table) for name, table in DATA_TABLES.items()}
    return {name: read_table(bind, DATA_TABLES[name], only=only) for name, only in columns.items()}


def coded(frame: pd.DataFrame, field: str) -> pd.Series:
    """Whether each record of ``frame`` holds a missing-data code for ``field`` (registry/missing.py: its
    ``missing_codes`` column is JSON with sorted keys, so a field's key is found as text, never parsed row by row)."""
    if "missing_codes" not in frame:
        return pd.Series(False, index=frame.index)
    codes = frame["missing_codes"]
    return codes.notna() & codes.fillna("").str.contains(f'"{field}":', regex=False)


def answered(frame: pd.DataFrame, field: str) -> pd.Series:
    """Whether each record of ``frame`` gives ``field`` a value or a missing-data code: what completeness asks."""
    return frame[field].notna() | coded(frame, field)
