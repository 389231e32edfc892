"""The interchange format: one sheet (or CSV file) per clinical table, same columns.

Derived from the models, so a column added to a table appears in the template,
the import, the export and the dictionary at once. In a sheet, patients are named
by ``study_id`` and sites by their code; database row ids never leave the database,
and neither do direct identifiers (``patient_identifier`` has no sheet).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from functools import cached_property
from typing import Any

import sqlalchemy as sa
from sqlmodel import SQLModel

from registry import missing
from registry.dictionary import Entry, describe, required
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
    is_codable,
    is_missing_codes,
)

#: Database foreign keys and the column a person uses instead, in a sheet.
_NATURAL_REFERENCES: dict[str, tuple[str, sa.Column]] = {
    "patient_id": ("study_id", Patient.__table__.c.study_id),
    "site_id": ("site", Site.__table__.c.code),
}


@dataclass(frozen=True)
class SheetColumn:
    name: str  # the header in the sheet
    target: str  # the database column it fills
    source: sa.Column  # the column whose type, codes and description the cell follows
    required: bool

    @property
    def is_reference(self) -> bool:
        return self.name != self.target

    @property
    def takes_code(self) -> bool:
        """Whether a cell of this column may hold a missing-data code (``[unknown]``) instead of a value."""
        return is_codable(self.source) and not self.required


@dataclass(frozen=True)
class Sheet:
    name: str
    model: type[SQLModel]
    columns: tuple[SheetColumn, ...]
    key: tuple[str, ...]  # sheet columns that identify a row across imports

    @property
    def table(self) -> sa.Table:
        return self.model.__table__

    def column(self, name: str) -> SheetColumn:
        return self._by_name[name]

    @cached_property
    def coded(self) -> list[tuple[str, str]]:
        """(database column, sheet column) of each column that takes a missing-data code."""
        return [(c.target, c.name) for c in self.columns if c.takes_code]

    @cached_property
    def _by_name(self) -> dict[str, SheetColumn]:
        return {c.name: c for c in self.columns}


def _sheet(name: str, model: type[SQLModel]) -> Sheet:
    table = model.__table__
    columns = []
    for column in table.columns:
        if (column.primary_key and not column.foreign_keys) or is_bookkeeping(column) or is_missing_codes(column):
            continue  # generated row id, edit counter, deletion and lock times; codes are in their fields' cells
        sheet_name, source = _NATURAL_REFERENCES.get(column.name, (column.name, column))
        columns.append(SheetColumn(sheet_name, column.name, source, required(column)))
    unique = next((c for c in table.constraints if isinstance(c, sa.UniqueConstraint)), table.primary_key)
    rename = {c.target: c.name for c in columns}
    return Sheet(name, model, tuple(columns), tuple(rename[c.name] for c in unique.columns))


#: Sheets in the order they are read and written: patients before their records.
SHEETS: tuple[Sheet, ...] = (
    _sheet("patients", Patient),
    _sheet("antibody_tests", AntibodyTest),
    _sheet("labs", LabResult),
    _sheet("pfts", Pft),
    _sheet("hrct", Hrct),
    _sheet("treatments", Treatment),
    _sheet("adverse_events", AdverseEvent),
    _sheet("follow_up", FollowUp),
)
SHEETS_BY_NAME = {sheet.name: sheet for sheet in SHEETS}

#: Sheets a workbook may carry besides the data (the template writes them).
HELPER_SHEETS = ("dictionary", "lists")


def stored_rows(
    connection: sa.Connection, sheet: Sheet, patients: sa.Select | None = None
) -> dict[tuple, dict[str, Any]]:
    """What the database holds for ``sheet``: natural key -> values under the sheet's
    column names (codes as plain strings), plus the record's database key as ``id`` and
    ``deleted``: whether the record, or the patient it belongs to, is deleted. A coded field holds its
    :class:`registry.missing.Missing`.

    One statement, each record joined to its patient and site, so that what other writers
    commit meanwhile (a new patient with their records) is seen whole or not at all. ``patients``: a select of
    patient ids, to read only their rows (one patient's page of the API, not the whole registry)."""
    table = sheet.table
    references = [c for c in sheet.columns if c.is_reference]
    query = sa.select(table, *(c.source.label(f"_{c.name}") for c in references))
    for column in references:
        query = query.join(column.source.table, table.c[column.target] == column.source.table.c.id)
    if sheet.model is not Patient:
        query = query.add_columns(Patient.__table__.c.deleted_at.label("_patient_deleted_at"))
    if patients is not None:
        query = query.where((table.c.id if sheet.model is Patient else table.c.patient_id).in_(patients))
    stored = {}
    for record in connection.execute(query).mappings():
        values = {"id": record[table.primary_key.columns[0].name]}
        for column in sheet.columns:
            value = record[f"_{column.name}" if column.is_reference else column.target]
            values[column.name] = value.value if isinstance(value, Enum) else value
        values["deleted"] = record["deleted_at"] is not None or record.get("_patient_deleted_at") is not None
        missing.with_codes(values, record.get(missing.COLUMN), sheet.coded)
        stored[tuple(values[k] for k in sheet.key)] = values
    return stored


def sheet_dictionary() -> list[Entry]:
    """The dictionary of the workbook: one entry per sheet column."""
    entries = []
    for sheet in SHEETS:
        for column in sheet.columns:
            entry = describe(column.source, sheet.name, column.name, is_required=column.required)
            if column.is_reference:
                kind = "patient (study_id)" if column.name == "study_id" else "registered site (code)"
                entry = Entry(**{**entry.__dict__, "description": f"The {kind} this row belongs to"})
            entries.append(entry)
    return entries


@contextlib.contextmanager
def snapshot(engine: sa.Engine) -> Iterator[sa.Connection]:
    """One read transaction, so that every sheet an export reads shows the same registry: a patient committed meanwhile
    is in it whole (with all their records) or not at all (PostgreSQL: REPEATABLE READ)."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="REPEATABLE READ") as connection, connection.begin():
            yield connection
        return
    with engine.connect() as connection:
        connection.exec_driver_sql("BEGIN")  # pysqlite would run each SELECT in a read snapshot of its own
        try:
            yield connection
        finally:
            connection.exec_driver_sql("ROLLBACK")


def live_rows(connection: sa.Connection, sheet: Sheet) -> list[dict[str, Any]]:
    """The sheet's records that are not deleted (nor their patient), in natural-key order (a blank key part first)."""
    stored = stored_rows(connection, sheet)
    order = sorted(stored, key=lambda key: tuple("" if part is None else str(part) for part in key))
    return [stored[key] for key in order if not stored[key]["deleted"]]


def rows_by_patient(connection: sa.Connection) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """study_id -> sheet -> the patient's live records, for every live patient, in study_id order."""
    patients: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for sheet in SHEETS:
        for values in live_rows(connection, sheet):
            if sheet.model is Patient:
                patients[values["study_id"]] = {}
            if values["study_id"] in patients:
                patients[values["study_id"]].setdefault(sheet.name, []).append(values)
    return dict(sorted(patients.items()))
