"""Database constraint violations, told in plain words.

SQLite and PostgreSQL word their refusals differently (and SQLite's foreign-key
error names nothing); this module maps either back to the table, columns and rule
declared in the models, so users of both databases read the same message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import sqlalchemy as sa

from registry.models import TABLES

_TABLES = {model.__table__.name: model.__table__ for model in TABLES}
_CONSTRAINTS = {c.name: c for table in _TABLES.values() for c in table.constraints}
_POSTGRES_KINDS = {"23502": "not_null", "23505": "unique", "23503": "foreign_key", "23514": "check"}
_SQLITE_KINDS = {
    "NOT NULL constraint failed": "not_null",
    "UNIQUE constraint failed": "unique",
    "FOREIGN KEY constraint failed": "foreign_key",
    "CHECK constraint failed": "check",
}


@dataclass(frozen=True)
class Violation:
    kind: str  # not_null | unique | foreign_key | check | unknown
    table: str
    message: str


def _statement(statement: str | None) -> tuple[str, str]:
    """(verb, table) of the INSERT/UPDATE/DELETE statement that was refused."""
    match = re.match(r"\s*(INSERT INTO|UPDATE|DELETE FROM)\s+\"?(\w+)", statement or "", re.IGNORECASE)
    return (match.group(1).split()[0].upper(), match.group(2)) if match else ("", "")


def _check_message(constraint: sa.CheckConstraint) -> str:
    if "message" in constraint.info:
        return constraint.info["message"]
    (column,) = constraint.columns  # a code-list constraint generated for an Enum column
    return f"{column.name} must be one of: {', '.join(column.type.enums)}"


def _foreign_key_message(table: sa.Table, verb: str, constraint: sa.Constraint | None) -> str:
    if verb == "DELETE":  # SQLite does not say which table still refers to the row
        children = constraint.table.name if constraint is not None else "other tables"
        return f"cannot delete this {table.name}: records in {children} still refer to it"
    return "; ".join(
        f"{fk.parent.name} refers to a {fk.column.table.name} that does not exist" for fk in table.foreign_keys
    )


def explain(error: sa.exc.IntegrityError) -> Violation:
    """What the database refused and why: ``"<table>: <rule in plain words>"``."""
    verb, table_name = _statement(error.statement)
    table = _TABLES.get(table_name)
    diag = getattr(error.orig, "diag", None)
    if diag is not None:  # PostgreSQL: structured diagnostics
        kind = _POSTGRES_KINDS.get(error.orig.sqlstate, "unknown")
        constraint, column = _CONSTRAINTS.get(diag.constraint_name), diag.column_name
        columns = [c.name for c in constraint.columns] if constraint is not None else []
    else:  # SQLite: "<KIND> constraint failed: <detail>"
        text = str(error.orig)
        kind = next((k for prefix, k in _SQLITE_KINDS.items() if text.startswith(prefix)), "unknown")
        detail = text.partition(": ")[2]
        constraint = _CONSTRAINTS.get(detail)
        columns = [part.partition(".")[2] for part in detail.split(", ")]
        column = columns[0]

    if table is None:
        message = str(error.orig).strip()
    elif kind == "check" and isinstance(constraint, sa.CheckConstraint):
        message = _check_message(constraint)
    elif kind == "not_null":
        message = f"{column} is required"
    elif kind == "unique":
        message = f"another record already has the same {' + '.join(columns)}"
    elif kind == "foreign_key":
        message = _foreign_key_message(table, verb, constraint)
    else:
        message = str(error.orig).strip()
    return Violation(kind, table_name, f"{table_name}: {message}")
