"""The registry as plain DataFrames: one query per table, one dtype per column type.

Everything downstream of the database (data-quality checks, the cohort builder)
reads these frames, never the ORM. Column dtypes follow the model's column types, so
a check sees the same types whatever the database: dates as ``datetime64[ns]``,
measurements as ``float64``, whole numbers as ``Int64``, flags as nullable
``boolean`` and codes and text as strings (``object``). Direct identifiers
(``patient_identifier``), bookkeeping columns (edit counters, deletion and lock times)
and deleted records, with every record of a deleted patient, are never loaded.
"""

from __future__ import annotations

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


def data_columns(table: sa.Table) -> list[sa.Column]:
    """The columns of ``table`` that hold data (bookkeeping columns left out)."""
    return [column for column in table.columns if not is_bookkeeping(column)]


def live(table: sa.Table) -> sa.Select:
    """The data columns of the records of ``table`` that are not deleted, nor belong to a deleted patient."""
    query = sa.select(*data_columns(table))
    if "deleted_at" in table.c:
        query = query.where(table.c.deleted_at.is_(None))
    if "patient_id" in table.c:
        deleted = sa.select(Patient.id).where(Patient.deleted_at.is_not(None))
        query = query.where(table.c.patient_id.not_in(deleted))
    return query


def dtype_of(column: sa.Column) -> str:
    """The pandas dtype a column's values are held in."""
    kind = column.type
    if isinstance(kind, sa.Date):
        return "datetime64[ns]"
    if isinstance(kind, sa.Float):
        return "float64"
    if isinstance(kind, sa.Boolean):
        return "boolean"
    if isinstance(kind, sa.Integer):
        return "Int64"
    return "object"


def typed(frame: pd.DataFrame, table: sa.Table) -> pd.DataFrame:
    """``frame`` with every data column of ``table`` in its dtype (an empty table keeps its columns)."""
    columns = {}
    for column in data_columns(table):
        values = frame[column.name] if column.name in frame else pd.Series(index=frame.index, dtype=object)
        dtype = dtype_of(column)
        if dtype == "object":
            values = values.astype(object).where(values.notna(), None)
        elif str(values.dtype) != dtype:  # a column in its dtype already (the checks re-type loaded frames) is kept
            values = pd.to_datetime(values).astype(dtype) if dtype == "datetime64[ns]" else values.astype(dtype)
        columns[column.name] = values
    return pd.DataFrame(columns, index=frame.index)


def _read(connection: sa.Connection, query: sa.Select) -> pd.DataFrame:
    """The rows of ``query`` (which binds no parameters) as the driver returns them, read with the driver's own
    cursor: no row objects or per-value conversion in Python (dates stay text on SQLite, codes stay text);
    :func:`typed` converts whole columns after."""
    cursor = connection.connection.cursor()
    try:
        cursor.execute(str(query.compile(dialect=connection.dialect)))
        columns = [description[0] for description in cursor.description]
        return pd.DataFrame(cursor.fetchall(), columns=columns)
    finally:
        cursor.close()


def load_tables(bind: sa.Engine | sa.Connection) -> dict[str, pd.DataFrame]:
    """Every data table's live records (:func:`live`), one query each, typed by :func:`typed`.

    Given a connection, the tables are read in its transaction: a data cut reads them in one
    snapshot of the database, so that they agree with each other (registry.cuts).
    """
    if isinstance(bind, sa.Engine):
        with bind.connect() as connection:
            return load_tables(connection)
    return {name: typed(_read(bind, live(table)), table) for name, table in DATA_TABLES.items()}
