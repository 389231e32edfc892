"""The audit trail: every ORM change to clinical data is logged in the same transaction.

A flush hook writes one ``audit_log`` row per inserted, updated or deleted record,
with the actor and reason carried by the session (``session.info``). A change
without an actor is refused, so no code path can write unattributed data, and the
log itself is append-only, as is every data cut (registry/cuts.py) and every query's thread
(registry/queries.py, whose queries are never deleted) and every signature, which is
only ever voided (registry/signoff.py): refused here, and by the database's triggers.
A change to a verified or signed patient's data voids their sign-off in its own flush.
A bulk ``session.execute(update(...))`` or ``delete(...)``, which would change rows
past the flush hooks, is refused. Every entry carries its transaction's token and is
hash-chained as the transaction commits (registry/audit_chain.py). Direct identifiers
are logged as changed, never copied.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from contextlib import closing
from datetime import UTC, date, datetime
from enum import Enum
from itertools import chain
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session
from sqlmodel import Session as SQLModelSession
from sqlmodel import SQLModel, select

from registry.audit_chain import batch_of
from registry.codes import AuditAction
from registry.models import (
    TABLES,
    AuditEntryHash,
    AuditLog,
    AuditSeal,
    DataCut,
    DataQuery,
    Patient,
    PatientStatus,
    QueryMessage,
    Signature,
    scalar_default,
)


class AuditError(RuntimeError):
    """A change could not be attributed, or the audit log itself was to be altered."""


def audited_session(engine: sa.Engine, actor: str, reason: str | None = None) -> SQLModelSession:
    """A session whose changes are logged as made by ``actor`` for ``reason``."""
    _require(actor)
    return SQLModelSession(engine, info={"actor": actor, "reason": reason})


def _require(actor: str) -> None:
    if not actor.strip():
        raise AuditError("An actor (user or process name) is required to change registry data")


#: Stands in the log for the value of a direct identifier: the change is logged, the value is not.
REDACTED = "[identifier redacted]"


def audit_history(engine: sa.Engine, study_id: str) -> list[AuditLog]:
    """Every logged change to the patient ``study_id`` and their records, oldest first."""
    with SQLModelSession(engine) as session:
        return list(session.exec(select(AuditLog).where(AuditLog.study_id == study_id).order_by(AuditLog.id)))


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):  # a data cut's snapshot: its size is logged, its content is kept in its own row
        return f"[{len(value):,} bytes]"
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, date | datetime):
        return value.isoformat()
    return value


def _logged(attr: sa.orm.ColumnProperty, value: Any) -> Any:
    if value is not None and any(column.info.get("identifier") for column in attr.columns):
        return REDACTED
    return _jsonable(value)


def _logged_attrs(mapper: sa.orm.Mapper) -> list[sa.orm.ColumnProperty]:
    """The columns worth logging: all but the edit counter, which every update bumps."""
    return [attr for attr in mapper.column_attrs if attr.columns[0] is not mapper.version_id_col]


def insert_audited(
    connection: sa.Connection,
    model: type[SQLModel],
    rows: Sequence[Mapping[str, Any]],
    *,
    actor: str,
    reason: str | None,
) -> list[Any]:
    """:func:`insert_audited_columns` for records given row by row (a column a row leaves out gets its default)."""
    defaults = {
        c.name: scalar_default(c) for c in model.__table__.columns if c is not model.__table__.autoincrement_column
    }
    columns = {name: [row.get(name, default) for row in rows] for name, default in defaults.items()}
    return insert_audited_columns(connection, model, columns, actor=actor, reason=reason)


def insert_audited_columns(
    connection: sa.Connection,
    model: type[SQLModel],
    columns: Mapping[str, Sequence[Any]],
    *,
    actor: str,
    reason: str | None,
) -> list[Any]:
    """Insert records given column by column and log each as the flush hook logs an ORM insert; returns their keys.

    For bulk writes (an import of many thousand records), where an ORM object, or even
    SQLAlchemy's parameter processing, per row would cost more than the insert itself:
    values go to the driver's ``executemany``, converted by each column type's own bind
    processor once per distinct value, and the database writes the audit entries itself
    from the rows just stored (one ``INSERT ... SELECT``), so that no entry is built in
    Python. A column not given gets its default, so that the log shows the whole record.
    """
    _require(actor)
    count = len(next(iter(columns.values()), ()))
    if not count:
        return []
    table, attrs, dialect = model.__table__, _logged_attrs(sa.inspect(model)), connection.dialect
    generated = table.autoincrement_column  # the row id the database assigns, if any
    full = {c.name: columns[c.name] if c.name in columns else [scalar_default(c)] * count
            for c in (a.columns[0] for a in attrs) if c is not generated}  # fmt: skip
    for name, values in full.items():
        if isinstance(table.c[name].type, _NOT_BULK_LOGGED) and values.count(None) < count:
            raise TypeError(f"{table.name}.{name}: a bulk insert cannot log such values as the ORM does; use the ORM")
    bound = {name: _driver_values(table.c[name], values, dialect) for name, values in full.items()}
    if generated is None:
        _insert_many(connection, table, bound)
        keys = list(full[table.primary_key.columns[0].name])
    elif dialect.name == "sqlite":
        # This transaction holds SQLite's only write lock from its first insert on, so the rows of one executemany
        # take the consecutive ids after the largest before them: the newest ``count`` ids, in the order given.
        _insert_many(connection, table, bound)
        last = connection.execute(sa.select(sa.func.max(generated))).scalar_one()
        keys = list(range(last - count + 1, last + 1))
    else:  # other writers' ids interleave with ours: ours are found by natural key
        before = connection.execute(sa.select(sa.func.max(generated))).scalar() or 0
        _insert_many(connection, table, bound)
        keys = _ids_by_natural_key(connection, table, before, bound)
    long_floats = {name for name, values in full.items() if isinstance(table.c[name].type, sa.Float)
                   and dialect.name == "sqlite" and not _fifteen_digits_suffice(values)}  # fmt: skip
    _log_inserts(connection, model, attrs, keys, actor, reason, long_floats)
    return keys


#: Column types whose stored form does not give back the text the ORM logs (a date-time's time zone, a snapshot's
#: size): the bulk insert takes no values of them (an import has none: they are bookkeeping or data cuts).
_NOT_BULK_LOGGED = (sa.DateTime, sa.LargeBinary, sa.JSON)


def _ids_by_natural_key(
    connection: sa.Connection, table: sa.Table, before: int, bound: Mapping[str, Sequence[Any]]
) -> list[int]:
    """The ids the database gave the rows of ``bound`` (driver values by column), in their order."""
    generated, quote = table.autoincrement_column, connection.dialect.identifier_preparer.quote
    natural = [c.name for c in next(c for c in table.constraints if isinstance(c, sa.UniqueConstraint)).columns]
    with closing(connection.connection.cursor()) as cursor:  # rows as the driver gives them: the values it got
        cursor.execute(
            f"SELECT {', '.join(map(quote, [generated.name, *natural]))} FROM {quote(table.name)} "
            f"WHERE {quote(generated.name)} > {_MARKERS[connection.dialect.paramstyle]}",
            (before,),
        )
        ids = {tuple(found[1:]): found[0] for found in cursor.fetchall()}
    return [ids[key] for key in zip(*(bound[name] for name in natural), strict=True)]


def _log_inserts(
    connection: sa.Connection,
    model: type[SQLModel],
    attrs: Sequence[sa.orm.ColumnProperty],
    keys: Sequence[Any],
    actor: str,
    reason: str | None,
    long_floats: set[str],
) -> None:
    """One ``audit_log`` insert entry per record of ``keys``, written by the database from the stored rows.

    Each value is turned into JSON by the database as ``json.dumps`` writes the Python value the ORM
    logs (read back, the same keys in the same order and the same values). SQLite writes floats with
    15 significant digits: the columns named in ``long_floats``, where that does not give every value
    back, are written with Python's ``repr`` instead.
    """
    table, log, dialect = model.__table__, AuditLog.__table__, connection.dialect
    (key,) = table.primary_key.columns  # every table written in bulk has a one-column key
    if long_floats:
        connection.connection.driver_connection.create_function(_FLOAT_JSON, 1, _float_json, deterministic=True)
    pairs = [(sa.literal_column(f"'{a.key}'"), _json_value(a, dialect.name, a.columns[0].name in long_floats))
             for a in attrs]  # fmt: skip
    build = sa.func.json_object if dialect.name == "sqlite" else sa.func.json_build_object
    patient = Patient.__table__
    if model is Patient:
        study_id, source = table.c.study_id, table
    elif "patient_id" in table.c:
        study_id, source = patient.c.study_id, table.outerjoin(patient, patient.c.id == table.c.patient_id)
    else:
        study_id, source = sa.null(), table
    entry = _entry(datetime.now(UTC), actor, reason, AuditAction.INSERT, str(table.name), "", None, None, None,
                   batch_of(connection))  # fmt: skip
    varying = {"record_key": sa.cast(key, sa.String), "study_id": study_id, "new_values": build(*chain(*pairs))}
    same = {name: sa.literal(value, log.c[name].type)
            for name, value in entry.items() if name not in varying and value is not None}  # fmt: skip
    chosen = sa.select(*same.values(), *varying.values()).select_from(source).where(_among(key, keys, dialect))
    connection.execute(sa.insert(log).from_select([*same, *varying], chosen.order_by(key)))


#: The SQLite function giving a float's JSON as ``json.dumps`` writes it.
_FLOAT_JSON = "registry_float_json"


def _float_json(value: float | None) -> str | None:
    return None if value is None else float.__repr__(value)


def _fifteen_digits_suffice(values: Sequence[float | None]) -> bool:
    """Whether each of ``values`` is given back by its 15 significant digits (as typed numbers are), once per value."""
    return all(float(f"{value:.15g}") == value for value in set(values) if value is not None)


def _json_value(attr: sa.orm.ColumnProperty, dialect: str, long_float: bool) -> sa.ColumnElement[Any]:
    """The JSON the ORM logs for ``attr``'s stored value, computed by the database (NULL as null)."""
    column = attr.columns[0]
    if _logged(attr, "") == REDACTED:  # a direct identifier: whether there is a value, never the value
        return sa.case((column.is_(None), sa.null()), else_=sa.literal_column(f"'{REDACTED}'"))
    if isinstance(column.type, sa.Boolean):  # SQLite stores 0 and 1
        as_json = sa.func.json if dialect == "sqlite" else (lambda text: sa.cast(text, sa.JSON))
        flag = sa.case((column, sa.literal_column("'true'")), else_=sa.literal_column("'false'"))
        return sa.case((column.is_(None), sa.null()), else_=as_json(flag))
    if isinstance(column.type, sa.Float):
        if long_float:
            return sa.func.json(getattr(sa.func, _FLOAT_JSON)(column))
        if dialect == "sqlite":
            return column
        text = sa.cast(sa.func.to_json(column), sa.Text)  # the shortest exact digits, but 100 for Python's 100.0
        whole = text.regexp_match("^-?[0-9]+$")
        return sa.cast(sa.case((whole, text + sa.literal_column("'.0'")), else_=text), sa.JSON)
    return column  # text, codes, whole numbers; dates are ISO text in both databases' JSON


def _among(column: sa.Column, keys: Sequence[Any], dialect: sa.Dialect) -> sa.ColumnElement[bool]:
    """``column IN keys`` with the keys as one parameter (one chunk holds more keys than a statement may have)."""
    if dialect.name == "sqlite":
        listed = sa.func.json_each(json.dumps(list(keys))).table_valued("value")
        return column.in_(sa.select(listed.c.value))
    return column == sa.any_(sa.bindparam("keys", list(keys), type_=sa.ARRAY(column.type)))


#: Where a value goes in a statement, by the driver's parameter style (sqlite3: qmark; psycopg: pyformat).
_MARKERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}


def _insert_many(connection: sa.Connection, table: sa.Table, columns: Mapping[str, Sequence[Any]]) -> None:
    """One ``executemany`` of driver values given column by column."""
    quote = connection.dialect.identifier_preparer.quote
    markers = ", ".join([_MARKERS[connection.dialect.paramstyle]] * len(columns))
    statement = f"INSERT INTO {quote(table.name)} ({', '.join(map(quote, columns))}) VALUES ({markers})"
    connection.exec_driver_sql(statement, list(zip(*columns.values(), strict=True)))  # errors as SQLAlchemy's


def _driver_values(column: sa.Column, values: Sequence[Any], dialect: sa.Dialect) -> Sequence[Any]:
    """``values`` as the driver takes them: the column type's own bind processor, run once per distinct value."""
    process = column.type.dialect_impl(dialect).bind_processor(dialect)
    return values if process is None else _per_distinct(process, values)


def _per_distinct(function: Callable[[Any], Any], values: Sequence[Any]) -> list[Any]:
    """``function`` of each of ``values``, called once per distinct value: columns repeat their values."""
    if len(set(map(type, values)) - {type(None)}) > 1:  # True == 1 == 1.0: remember results within one type only
        return [function(v) for v in values]
    results = {v: function(v) for v in set(values)}
    return list(map(results.__getitem__, values))


def _entry(
    now: datetime,
    actor: str,
    reason: str | None,
    action: AuditAction,
    table_name: str,
    record_key: str,
    study_id: str | None,
    old: dict[str, Any] | None,
    new: dict[str, Any] | None,
    batch: str,
) -> dict[str, Any]:
    """One ``audit_log`` row, as the flush hook and the bulk insert both write it; ``batch``: its transaction's seal."""
    return {
        "changed_at": now, "actor": actor, "reason": reason, "action": action, "table_name": table_name,
        "record_key": record_key, "study_id": study_id, "old_values": old, "new_values": new, "batch": batch,
    }  # fmt: skip


def _columns(obj: SQLModel) -> dict[str, Any]:
    mapper = sa.inspect(obj).mapper
    return {attr.key: _logged(attr, getattr(obj, attr.key)) for attr in _logged_attrs(mapper)}


def _changes(obj: SQLModel) -> tuple[dict[str, Any], dict[str, Any]]:
    old, new = {}, {}
    state = sa.inspect(obj)
    for attr in _logged_attrs(state.mapper):
        history = state.attrs[attr.key].history
        if history.has_changes():
            old[attr.key] = _logged(attr, history.deleted[0] if history.deleted else None)
            new[attr.key] = _logged(attr, history.added[0] if history.added else None)
    return old, new


def _key(obj: SQLModel) -> str:
    identity = sa.inspect(obj).identity or sa.inspect(obj).mapper.primary_key_from_instance(obj)
    return "/".join(str(part) for part in identity)


#: The audit chain's own tables: only ever appended to.
_APPEND_ONLY = (AuditLog, AuditSeal, AuditEntryHash)
#: The registry's own tables; other mapped classes in the same process are not ours to audit.
_AUDITED = tuple(model for model in TABLES if model not in _APPEND_ONLY)


def _keep_old_value(*_args: Any) -> None:
    """Registered with active_history: the value before a change is loaded even when expired."""


# Without active history, a value changed after a commit (which expires attributes) would
# be logged with an unknown old value; with it, SQLAlchemy loads the stored value first.
for _model in _AUDITED:
    for _attribute in sa.inspect(_model).column_attrs:
        event.listen(getattr(_model, _attribute.key), "set", _keep_old_value, active_history=True)


@event.listens_for(Session, "before_flush")
def _refuse_log_tampering(session: Session, _context: Any, _instances: Any) -> None:
    for obj in (*session.dirty, *session.deleted):
        if isinstance(obj, _APPEND_ONLY):
            raise AuditError("The audit log is append-only: its rows cannot be changed or deleted")
        if isinstance(obj, DataCut):
            raise AuditError(f"Data cut {obj.name} is frozen: a cut cannot be changed or deleted (make a new one)")
        if isinstance(obj, QueryMessage):
            raise AuditError("A message of a query is kept as written: it cannot be changed or deleted")
        if isinstance(obj, Signature) and not _only_voided(obj):
            raise AuditError("A signature is kept as made: it cannot be changed or deleted, only voided once")
    for obj in session.deleted:
        if isinstance(obj, DataQuery):
            raise AuditError(f"Query {obj.id} cannot be deleted: close it")
        if isinstance(obj, PatientStatus):
            raise AuditError("A patient's record status cannot be deleted: set it (registry status)")


def _only_voided(signature: Signature) -> bool:
    """Whether the change to ``signature`` is its voiding: a standing signature given its void fields, nothing else."""
    state = sa.inspect(signature)
    if signature in state.session.deleted:
        return False
    changed = {attr.key for attr in state.mapper.column_attrs if state.attrs[attr.key].history.has_changes()}
    voided = state.attrs["voided_at"].history
    return (
        changed <= {"voided_at", "voided_by", "void_reason"}
        and bool(voided.added)
        and voided.added[0] is not None
        and (voided.deleted or [None])[0] is None
    )


@event.listens_for(Session, "before_flush")
def _void_sign_off_of_changed_data(session: Session, _context: Any, _instances: Any) -> None:
    """A change to a verified or signed patient's data takes them back to complete and voids the signature."""
    from registry.signoff import void_on_change  # the sign-off library writes through this module's sessions

    void_on_change(session)


@event.listens_for(Session, "do_orm_execute")
def _refuse_bulk_changes(state: sa.orm.ORMExecuteState) -> None:
    """``session.execute(update(Patient)...)`` would change rows past the flush hooks, unaudited: it is refused."""
    if (state.is_update or state.is_delete) and state.bind_mapper is not None:
        model = state.bind_mapper.class_
        if issubclass(model, (*_AUDITED, *_APPEND_ONLY)):
            kind = "update" if state.is_update else "delete"
            raise AuditError(
                f"A bulk {kind} of {model.__tablename__} is refused: it would change rows without an audit entry; "
                "change the records one by one through the session (setattr, session.delete)"
            )


def log_operation(connection: sa.Connection, action: AuditAction, actor: str, reason: str, values: dict) -> None:
    """An entry for an operation on the whole database (a restore, a forced downgrade), chained as it commits."""
    _require(actor)
    entry = _entry(datetime.now(UTC), actor, reason, action, "(database)", "", None, None, values, batch_of(connection))
    connection.execute(sa.insert(AuditLog), [entry])


def _patients_of(connection: sa.Connection, objs: Sequence[SQLModel]) -> dict[int, int | None]:
    """The patient each record belongs to (by ``id()`` of the object), for the entry's study_id: its own
    ``patient_id``, or for a query's message its query's."""
    queries = {obj.query_id for obj in objs if isinstance(obj, QueryMessage)}
    query_patients = dict(
        connection.execute(sa.select(DataQuery.id, DataQuery.patient_id).where(DataQuery.id.in_(queries))).all()
    ) if queries else {}  # fmt: skip
    return {
        id(obj): query_patients.get(obj.query_id) if isinstance(obj, QueryMessage) else getattr(obj, "patient_id", None)
        for obj in objs
    }


@event.listens_for(Session, "after_flush")
def _write_audit_rows(session: Session, _context: Any) -> None:
    entries: list[tuple[AuditAction, SQLModel, dict | None, dict | None]] = []
    for obj in session.new:
        if isinstance(obj, _AUDITED):
            entries.append((AuditAction.INSERT, obj, None, _columns(obj)))
    for obj in session.dirty:
        if isinstance(obj, _AUDITED) and (change := _changes(obj))[1]:
            entries.append((AuditAction.UPDATE, obj, *change))
    for obj in session.deleted:
        if isinstance(obj, _AUDITED):
            entries.append((AuditAction.DELETE, obj, _columns(obj), None))
    if not entries:
        return
    actor = session.info.get("actor")
    if not actor:
        raise AuditError("Refusing to change registry data without an actor: use registry.audit.audited_session")

    connection = session.connection()
    patient_of = _patients_of(connection, [obj for _, obj, _, _ in entries])
    study_ids = dict(
        connection.execute(
            sa.select(Patient.id, Patient.study_id).where(Patient.id.in_(set(patient_of.values()) - {None}))
        ).all()
    )
    now, reason, batch = datetime.now(UTC), session.info.get("reason"), batch_of(connection)
    rows = [
        _entry(now, actor, reason, action, obj.__tablename__, _key(obj),
               obj.study_id if isinstance(obj, Patient) else study_ids.get(patient_of[id(obj)]), old, new, batch)
        for action, obj, old, new in entries
    ]  # fmt: skip
    connection.execute(sa.insert(AuditLog), rows)
