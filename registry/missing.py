"""Missing-data codes: "unknown", "not done", "not applicable", "not asked" in place of a blank.

A blank says nothing about why a value is absent; a code does. Everywhere a record is
handled field by field (import rows, forms, exports) a coded field holds a
:class:`Missing`, written ``[unknown]``, ``[not_done]``, ``[not_applicable]`` or
``[not_asked]`` in a cell (the documented syntax). In the database the field itself is
empty (NULL: analyses see no value) and the code is kept in the record's
``missing_codes`` column, so a coded field is told apart from a value and from a blank:
:func:`stored` splits a record into the two, :func:`with_codes` joins them again.
Only optional clinical fields take a code (:func:`registry.models.is_codable`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from registry.codes import MissingCode

#: The column of a record that keeps its fields' codes.
COLUMN = "missing_codes"
#: A cell that is a missing-data code: the code between square brackets, nothing else.
_CELL = re.compile(r"\[([^\[\]]*)\]")
#: The cells, in the code list's order, for messages and drop-downs.
CELLS = tuple(f"[{code.value}]" for code in MissingCode)


@dataclass(frozen=True)
class Missing:
    """A field answered with a missing-data code: equal only to the same code, never to a value."""

    code: MissingCode

    def __str__(self) -> str:
        return f"[{self.code.value}]"


def from_cell(text: str) -> Missing | None:
    """The code a cell's text writes (None if it is not written as one); ``ValueError`` for an unknown code."""
    match = _CELL.fullmatch(text.strip())
    if match is None:
        return None
    try:
        return Missing(MissingCode(match.group(1).strip()))
    except ValueError:
        raise ValueError(f"is not a missing-data code: write one of {', '.join(CELLS)}") from None


def decode(text: str | None) -> dict[str, MissingCode]:
    """A stored ``missing_codes`` value as field -> code. What no write of this package makes (text that is not a JSON
    object of known codes, stored past it) reads as no code, never as a crash of whatever reads the record."""
    try:
        stored = json.loads(text) if text else {}
    except ValueError:
        return {}
    if not isinstance(stored, dict):
        return {}
    codes = {code.value: code for code in MissingCode}
    return {field: codes[code] for field, code in stored.items() if isinstance(code, str) and code in codes}


def encode(codes: Mapping[str, MissingCode]) -> str | None:
    """Field -> code as stored: JSON with sorted keys, one spelling for equal contents (None for no code)."""
    return json.dumps({field: codes[field].value for field in sorted(codes)}, separators=(",", ":")) if codes else None


def has(table: sa.Table) -> bool:
    return COLUMN in table.c


def stored(values: Mapping[str, Any], codes_now: str | None = None) -> dict[str, Any]:
    """``values`` (column -> value, a :class:`Missing` for a coded field) as they are written to the record: each
    coded field empty and its code in ``missing_codes``, which starts from ``codes_now`` (the record's stored codes;
    a field given a value or a blank loses its code)."""
    codes = decode(codes_now)
    plain = {}
    for name, value in values.items():
        if isinstance(value, Missing):
            plain[name], codes[name] = None, value.code
        else:
            plain[name] = value
            codes.pop(name, None)
    return plain | {COLUMN: encode(codes)}


def stored_columns(columns: Mapping[str, list[Any]]) -> dict[str, list[Any]]:
    """:func:`stored` for new records given column by column (an import's bulk insert)."""
    count = len(next(iter(columns.values()), ()))
    codes: list[dict[str, MissingCode]] = [{} for _ in range(count)]
    plain = {}
    for name, values in columns.items():
        if not any(isinstance(value, Missing) for value in values):
            plain[name] = values
            continue
        plain[name] = [None if isinstance(value, Missing) else value for value in values]
        for row, value in enumerate(values):
            if isinstance(value, Missing):
                codes[row][name] = value.code
    return plain | {COLUMN: [encode(row) for row in codes]}


def with_codes(values: dict[str, Any], codes: str | None, names: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """``values`` with each coded field's :class:`Missing` in place of its blank, in place; ``names`` pairs each
    column with its name in ``values`` (a sheet's header)."""
    if codes:
        coded = decode(codes)
        for column, name in names:
            if column in coded:
                values[name] = Missing(coded[column])
    return values


def blank(column: sa.Column) -> sa.ColumnElement[bool]:
    """SQL: the field ``column`` is left blank, neither given a value nor a missing-data code (stored codes are
    JSON with sorted keys, so a field's key is found as text)."""
    codes = column.table.c[COLUMN]
    return column.is_(None) & (codes.is_(None) | codes.not_like(f'%"{column.name}":%'))
