"""The audit trail: every ORM change to clinical data is logged in the same transaction.

A flush hook writes one ``audit_log`` row per inserted, updated or deleted record,
with the actor and reason carried by the session (``session.info``). A change
without an actor is refused, so no code path can write unattributed data, and the
log itself is append-only, as is every data cut (registry/cuts.py). Direct
identifiers are logged as changed, never copied.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from enum import Enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session
from sqlmodel import Session as SQLModelSession
from sqlmodel import SQLModel, select

from registry.codes import AuditAction
from registry.models import TABLES, AuditLog, DataCut, Patient, scalar_default


class AuditError(RuntimeError):
    """A change could not be attributed, or the audit log itself was to be altered."""


def audited_session(engine: sa.Engine, actor: str, reason: str | None = None) -> SQLModelSession:
    """A session whose changes are logged as made by ``actor`` for ``reason``."""
    if not actor.strip():
        raise AuditError("An actor (user or process name) is required to change registry data")
    return SQLModelSession(engine, info={"actor": actor, "reason": reason})


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
    rows: list[dict[str, Any]],
    *,
    actor: str,
    reason: str | None,
    study_ids: Mapping[int, str],
) -> list[Any]:
    """Insert ``rows`` in one statement and log each as the flush hook logs an ORM insert; returns their keys.

    For bulk writes (an import of many thousand records), where building an ORM object
    per row would cost more than the insert itself. Every column of the table is given
    a value (its default where a row has none), so that the log shows the whole record.
    """
    if not actor.strip():
        raise AuditError("An actor (user or process name) is required to change registry data")
    if not rows:
        return []
    table, attrs = model.__table__, _logged_attrs(sa.inspect(model))
    generated = table.autoincrement_column  # the row id the database assigns, if any
    full = [{a.columns[0].name: row.get(a.columns[0].name, scalar_default(a.columns[0])) for a in attrs
             if a.columns[0] is not generated} for row in rows]  # fmt: skip
    if generated is None:
        connection.execute(sa.insert(table), full)
    else:  # executemany without RETURNING (which would go row by row), then the new ids by natural key
        before = connection.execute(sa.select(sa.func.max(generated))).scalar() or 0
        connection.execute(sa.insert(table), full)
        natural = next(c for c in table.constraints if isinstance(c, sa.UniqueConstraint)).columns
        new = connection.execute(sa.select(generated, *natural).where(generated > before))
        ids = {tuple(_jsonable(v) for v in found[1:]): found[0] for found in new}
        for row in full:
            row[generated.name] = ids[tuple(_jsonable(row[c.name]) for c in natural)]
    logged = [(a.key, a.columns[0].name) for a in attrs]
    hidden = {a.key for a in attrs if _logged(a, "") == REDACTED}  # direct identifiers
    now = datetime.now(UTC)
    entries = [
        _entry(now, actor, reason, AuditAction.INSERT, table.name,
               "/".join(str(row[c.name]) for c in table.primary_key.columns),
               row["study_id"] if model is Patient else study_ids.get(row["patient_id"]), None,
               {key: REDACTED if key in hidden and row[name] is not None else _jsonable(row[name])
                for key, name in logged})
        for row in full
    ]  # fmt: skip
    connection.execute(sa.insert(AuditLog), entries)
    return [row[table.primary_key.columns[0].name] for row in full]


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
) -> dict[str, Any]:
    """One ``audit_log`` row, as the flush hook and the bulk insert both write it."""
    return {
        "changed_at": now, "actor": actor, "reason": reason, "action": action, "table_name": table_name,
        "record_key": record_key, "study_id": study_id, "old_values": old, "new_values": new,
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


#: The registry's own tables; other mapped classes in the same process are not ours to audit.
_AUDITED = tuple(model for model in TABLES if model is not AuditLog)


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
        if isinstance(obj, AuditLog):
            raise AuditError("The audit log is append-only: its rows cannot be changed or deleted")
        if isinstance(obj, DataCut):
            raise AuditError(f"Data cut {obj.name} is frozen: a cut cannot be changed or deleted (make a new one)")


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
    patient_ids = {getattr(obj, "patient_id", None) for _, obj, _, _ in entries} - {None}
    study_ids = dict(
        connection.execute(sa.select(Patient.id, Patient.study_id).where(Patient.id.in_(patient_ids))).all()
    )
    now = datetime.now(UTC)
    reason = session.info.get("reason")
    rows = [
        _entry(now, actor, reason, action, obj.__tablename__, _key(obj),
               obj.study_id if isinstance(obj, Patient) else study_ids.get(getattr(obj, "patient_id", None)), old, new)
        for action, obj, old, new in entries
    ]  # fmt: skip
    connection.execute(sa.insert(AuditLog), rows)
