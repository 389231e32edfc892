"""The data dictionary, generated from the models so it can never drift from the schema."""

from __future__ import annotations

import csv
import io
from dataclasses import astuple, dataclass, fields
from enum import Enum

import sqlalchemy as sa

from registry.codes import ANALYTE_RANGES, DRUGS, LAB_UNIT_FACTORS, Analyte, MissingCode, Range
from registry.models import TABLES, help_of, is_codable, label_of


@dataclass(frozen=True)
class Entry:
    table: str
    column: str
    label: str  # what people call the column: forms, template notes and the dictionary show it
    type: str
    unit: str
    allowed_values: str
    required: str
    missing_codes: str  # "yes" where a missing-data code ([unknown], [not_done], ...) may stand for the value
    plausible_range: str
    description: str  # the one-line help text


#: Plain names of column types, most specific first (an Enum is also a String).
_TYPE_NAMES: tuple[tuple[type, str], ...] = (
    (sa.Enum, "code"),
    (sa.DateTime, "date-time"),
    (sa.Date, "date (YYYY-MM-DD)"),
    (sa.Boolean, "yes/no"),
    (sa.Integer, "integer"),
    (sa.Float, "number"),
    (sa.JSON, "JSON"),
)


def type_name(column: sa.Column, names: tuple[tuple[type, str], ...], default: str) -> str:
    """The name ``names`` (column type -> name, most specific first) give the column's type; ``default`` if none.

    Each system names our types its own way: this dictionary, REDCap's validations, ODM's data types."""
    return next((name for kind, name in names if isinstance(column.type, kind)), default)


def _type_name(column: sa.Column) -> str:
    if isinstance(column.type, sa.String) and not isinstance(column.type, sa.Enum):
        return f"text (max {column.type.length})" if column.type.length else "text"
    return type_name(column, _TYPE_NAMES, str(column.type).lower())


def _range_text(plausible: Range | None) -> str:
    if plausible is None:
        return ""
    text = f"{plausible.low:g}-{plausible.high:g}"
    if plausible.soft_high is not None:
        text += f" (review > {plausible.soft_high:g})"
    return text


def required(column: sa.Column) -> bool:
    """Whether a value must be supplied: not nullable, no default, not generated."""
    generated_key = column.primary_key and not column.foreign_keys
    return not column.nullable and column.default is None and not generated_key


def describe(column: sa.Column, table: str, name: str | None = None, *, is_required: bool | None = None) -> Entry:
    """The dictionary entry of one column, optionally under another name (as in a workbook sheet)."""
    enum_class = getattr(column.type, "enum_class", None)
    allowed = ", ".join(m.value for m in enum_class) if enum_class is not None and issubclass(enum_class, Enum) else ""
    needed = required(column) if is_required is None else is_required
    return Entry(
        table=table,
        column=name or column.name,
        type=_type_name(column),
        unit=column.info.get("unit", ""),
        allowed_values=allowed,
        required="yes" if needed else "no",
        missing_codes="yes" if is_codable(column) and not needed else "no",
        plausible_range=_range_text(column.info.get("plausible")),
        description=help_of(column) or ("Row identifier" if column.primary_key else ""),
        label=label_of(column),
    )


def help_text(entry: Entry) -> str:
    """The help a form shows under a field and a template's header note holds: the description, unit and range."""
    notes = [f"unit: {entry.unit}"] if entry.unit else []
    notes += [f"plausible: {entry.plausible_range}"] if entry.plausible_range else []
    return entry.description + (f" ({'; '.join(notes)})" if notes else "")


def data_dictionary() -> list[Entry]:
    """One entry per column of every table, in data-entry order."""
    return [describe(column, model.__table__.name) for model in TABLES for column in model.__table__.columns]


HEADER = [f.name for f in fields(Entry)]


def to_csv(entries: list[Entry]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(astuple(entry) for entry in entries)
    return buffer.getvalue()


def _markdown_table(header: list[str], rows: list[tuple]) -> list[str]:
    def line(cells: tuple | list) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"

    return [line(header), line(["---"] * len(header)), *(line(row) for row in rows)]


def _conversions(analyte: Analyte) -> str:
    """The other units an entry form accepts for ``analyte``, each with the factor to its canonical unit."""
    return ", ".join(f"{unit} x{factor:g}" for unit, factor in LAB_UNIT_FACTORS.get(analyte, {}).items())


def to_markdown(entries: list[Entry]) -> str:
    """Per-table column tables, then the analyte and drug code lists with units and ranges."""
    lines = ["# Data dictionary", ""]
    for table in dict.fromkeys(entry.table for entry in entries):
        lines += [f"## {table}", ""]
        lines += _markdown_table(HEADER[1:], [astuple(e)[1:] for e in entries if e.table == table])
        lines.append("")
    lines += ["## Missing-data codes", "",
              "A field marked missing_codes = yes may hold, instead of a value, the reason it has none. In a workbook"
              " cell or CSV field write the code between square brackets; forms offer them in a drop-down beside the"
              " field. A coded field is answered (the completeness rules accept it) but has no value (analyses see"
              " it as missing, and Table 1 counts it apart from the blanks).", ""]  # fmt: skip
    lines += _markdown_table(["cell", "code", "meaning"], [(f"[{c.value}]", c.value, c.label) for c in MissingCode])
    lines += ["", "## Analytes (lab_result.analyte)", ""]
    lines += _markdown_table(
        ["analyte", "label", "canonical unit", "plausible range", "forms also accept (x factor)", "source"],
        [(a.value, a.label, r.unit, _range_text(r), _conversions(a), r.source) for a, r in ANALYTE_RANGES.items()],
    )
    lines += ["", "## Drugs (treatment.drug)", ""]
    lines += _markdown_table(
        ["drug", "label", "class", "steroid-sparing", "usual dose", "source"],
        [
            (
                d.value,
                d.label,
                i.drug_class.value,
                "yes" if i.steroid_sparing else "no",
                f"{i.dose_low:g}-{i.dose_high:g} {i.dose_unit.value} {i.dose_per.value}"
                if i.dose_low is not None
                else "",
                i.source,
            )
            for d, i in DRUGS.items()
        ],
    )
    return "\n".join(lines) + "\n"
