"""Run the whole rule catalogue over the registry's tables and collect the findings.

One finding per failing record and field: rule, severity, category, table, record
key, study_id, field, value, message. The summary counts, per rule, the records
checked and the records failing, so a rule that found nothing still shows it ran.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandas.api.types import infer_dtype

from registry.config import Config
from registry.quality.catalogue import CATALOGUE, CODE_LIST, PREFIX, REQUIRED, RULES, TYPE, Severity
from registry.quality.cross import CROSS_RULES, FINDING_COLUMNS, OWNER, RECORD_KEY, Registry
from registry.quality.schemas import SCHEMAS
from registry.tables import DATA_TABLES, DATE, as_dtype, data_columns, dtype_of

COLUMNS = ["rule", "severity", "category", "table", "record", "study_id", "field", "value", "message"]


@dataclass
class CheckRun:
    findings: pd.DataFrame  # COLUMNS, one row per failing record and field
    summary: pd.DataFrame  # per rule: rule, category, severity, checked, failing, percent, message

    def count(self, severity: Severity) -> int:
        return int((self.findings["severity"] == severity).sum())

    @property
    def errors(self) -> int:
        return self.count(Severity.ERROR)

    @property
    def warnings(self) -> int:
        return self.count(Severity.WARNING)


def _rule_of(table: str, check: str) -> str:
    """The catalogue rule a pandera check stands for: built-in checks map to the generic rules."""
    prefix = PREFIX[table]
    if check == "not_nullable":
        return f"{prefix}-{REQUIRED}"
    if check.startswith("isin("):
        return f"{prefix}-{CODE_LIST}"
    return check  # a named check: its name is the rule id


def _is_a(dtype: str) -> Callable[[object], bool]:
    if dtype == "float64":
        return lambda v: isinstance(v, int | float | np.number) and not isinstance(v, bool | np.bool_)
    if dtype == "Int64":
        return lambda v: (
            (isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_))
            or (isinstance(v, float) and v.is_integer())
        )
    if dtype == "boolean":
        return lambda v: isinstance(v, bool | np.bool_)
    if dtype == DATE:
        return lambda v: isinstance(v, datetime | date)
    return lambda v: isinstance(v, str)


def _conform(table: str, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``frame`` with each column in its dtype, and the type findings (rule -001) of the cells that were not.

    A cell of the wrong type is reported once, here, and read as empty by every other
    rule, so one bad cell never crashes or misleads the rest of the catalogue.
    """
    columns, bad = {}, []
    for column in data_columns(DATA_TABLES[table]):
        values, dtype = frame[column.name], dtype_of(column)
        if infer_dtype(values, skipna=True) in ("string", "empty") if dtype == "object" else str(values.dtype) == dtype:
            columns[column.name] = values  # as load_tables gives it: kept, not copied or scanned again
            continue
        well_typed = values.map(_is_a(dtype), na_action="ignore").astype("boolean").fillna(True)
        mistyped = values.notna() & ~well_typed.astype(bool)
        bad.append(pd.DataFrame({"column": column.name, "record": frame.loc[mistyped, RECORD_KEY[table]],
                                 "value": values[mistyped]}))  # fmt: skip
        columns[column.name] = as_dtype(values.where(~mistyped, None), column)
    readable = frame if not bad and list(frame.columns) == list(columns) else pd.DataFrame(columns, index=frame.index)
    bad = [b for b in bad if len(b)]
    if not bad:
        return readable, pd.DataFrame(columns=[*FINDING_COLUMNS, "rule"])
    cells = pd.concat(bad, ignore_index=True)
    owner = OWNER.get(table, "patient_id")
    patients = frame.set_index(frame[RECORD_KEY[table]].to_numpy())[owner] if owner else None
    return readable, pd.DataFrame(
        {
            "rule": f"{PREFIX[table]}-{TYPE}",
            "table": table,
            "record": cells["record"],
            "patient_id": cells["record"].map(patients) if patients is not None else None,
            "field": cells["column"],
            "value": cells["value"],
        }
    )


@cache
def _validator(table: str) -> tuple[pa.DataFrameSchema, tuple[pa.Check, ...]]:
    """The table's schema split in two: its column checks, run by pandera, and its row checks, run by the engine.

    Both are the schema's own checks, run on a frame :func:`_conform` has typed, and
    find the same records; the split is for speed on a large registry:

    - pandera checks a text column's type one cell at a time (an ``isinstance`` per
      cell in Python). :func:`_conform` has already settled it (every text cell is a
      string or empty, the others reported by rule -001 and emptied), so text columns
      run without that type check; the others keep theirs, a comparison of dtypes.
    - pandera turns the failing rows of a dataframe-level check into one failure case
      per cell by transposing them (Python work per failing row: minutes for a few
      hundred thousand). The engine needs only which rows failed, so it calls those
      checks itself (:func:`_row_findings`).
    """
    schema = SCHEMAS[table].to_schema()
    text = [name for name, column in schema.columns.items() if str(column.dtype) == "str"]
    columns = schema.update_columns({name: {"dtype": None} for name in text})  # a copy
    columns.checks = []
    return columns, tuple(schema.checks)


def _row_findings(table: str, keyed: pd.DataFrame, check: pa.Check, empty: pd.Series) -> pd.DataFrame:
    """The records failing a dataframe-level check: the check's rule, about the rule's field.

    pandera's own rule, a row passes if the check says so or it is all ``empty``, with the
    empty rows found once per table: pandera's ``check(keyed)`` looks for them in every
    cell again for each check (seconds per table on a large registry).
    """
    output = check._check_fn(keyed, **check._check_kwargs)  # what pandera's backend calls
    if not isinstance(output, pd.Series) or not output.index.equals(keyed.index):
        raise RuntimeError(f"data-quality check {check.name} did not give one result per {table} row")
    rows = keyed[~(output.astype(bool) | empty).to_numpy()]
    field, owner = CATALOGUE[check.name].fields[0], OWNER.get(table, "patient_id")
    return pd.DataFrame(
        {
            "rule": check.name,
            "table": table,
            "record": rows.index,
            "patient_id": rows[owner].to_numpy() if owner else None,
            "field": field,
            "value": rows[field].to_numpy(dtype=object),
        }
    )


def _schema_findings(table: str, frame: pd.DataFrame) -> list[pd.DataFrame]:
    keyed = frame.set_index(frame[RECORD_KEY[table]].to_numpy(), drop=False)
    columns, row_checks = _validator(table)
    empty = keyed.isna().all(axis="columns")
    parts = [_row_findings(table, keyed, check, empty) for check in row_checks]
    try:
        columns.validate(keyed, lazy=True)
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases
    else:
        return parts
    unexpected = cases["index"].isna() | (cases["schema_context"] != "Column")
    if unexpected.any():  # a check that could not run, or a frame not shaped as the table: a bug, never a finding
        raise RuntimeError(f"data-quality schema of {table} failed to run: {cases[unexpected].to_dict('records')}")
    records, checks = cases["index"], cases["check"].astype(str)
    owner = OWNER.get(table, "patient_id")
    column_cases = pd.DataFrame(
        {
            "rule": checks.map({check: _rule_of(table, check) for check in checks.unique()}).to_numpy(),
            "table": table,
            "record": records.to_numpy(),
            "patient_id": records.map(keyed[owner]).to_numpy() if owner else None,
            "field": cases["column"].to_numpy(),
            "value": cases["failure_case"].to_numpy(),
        }
    )
    return [*parts, column_cases]


def _text(value: object) -> str | None:
    """A finding's value as the forms, sheets and exports write it (yes/no, never Python's True/False)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, pd.Timestamp):
        return value.date().isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _once_per_mistyped_cell(findings: pd.DataFrame) -> pd.DataFrame:
    """A cell of the wrong type keeps its type finding (-001) only: the other rules read it as
    empty, and what they would say of that same cell (required, out of range) is its type."""
    is_type = findings["rule"].isin([f"{prefix}-{TYPE}" for prefix in PREFIX.values()])
    if not is_type.any():
        return findings
    key = ["table", "record", "field"]
    cells = pd.MultiIndex.from_frame(findings.loc[is_type, key].astype(str))
    same_cell = pd.MultiIndex.from_frame(findings[key].astype(str)).isin(cells)
    return findings[is_type | ~same_cell]


def run_checks(tables: dict[str, pd.DataFrame], config: Config, today: date) -> CheckRun:
    """Every rule of the catalogue on ``tables`` (as :func:`registry.tables.load_tables` gives them)."""
    parts, readable = [], {}
    for table in SCHEMAS:
        readable[table], type_findings = _conform(table, tables[table])
        parts += [type_findings, *_schema_findings(table, readable[table])]
    tables = readable
    registry = Registry(tables, config, today)
    parts += [function(registry).assign(rule=rule_id) for rule_id, function in CROSS_RULES.items()]
    found = [p[[*FINDING_COLUMNS, "rule"]].astype(object) for p in parts if len(p)]
    findings = pd.concat(found, ignore_index=True) if found else pd.DataFrame(columns=[*FINDING_COLUMNS, "rule"])
    findings = _once_per_mistyped_cell(findings)
    study_ids = tables["patient"].set_index("id")["study_id"]
    unknown = set(findings["rule"]) - set(CATALOGUE)
    if unknown:  # a check whose name is no rule of the catalogue: a bug, never a finding
        raise RuntimeError(f"data-quality checks reported rules that are not in the catalogue: {sorted(unknown)}")
    rules = findings["rule"]
    findings = pd.DataFrame(
        {
            "rule": findings["rule"],
            "severity": rules.map({rule.id: rule.severity.value for rule in RULES}),
            "category": rules.map({rule.id: rule.category.value for rule in RULES}),
            "table": findings["table"],
            "record": findings["record"].map(_text),
            "study_id": findings["patient_id"].map(study_ids).map(_text),
            "field": findings["field"],
            "value": findings["value"].map(_text),
            "message": rules.map({rule.id: rule.message for rule in RULES}),
        },
        columns=COLUMNS,
    )
    order = {rule.id: n for n, rule in enumerate(RULES)}
    findings = (
        findings.assign(_order=findings["rule"].map(order))
        .sort_values(["_order", "table", "study_id", "record", "field"], na_position="first", kind="stable")
        .drop(columns="_order")
        .drop_duplicates()
        .reset_index(drop=True)
    )
    checked = {name: len(frame) for name, frame in tables.items()} | {"date": len(registry.dates)}
    return CheckRun(findings, summarise(checked, findings))


def summarise(checked_by_table: dict[str, int], findings: pd.DataFrame) -> pd.DataFrame:
    """Per rule: the records checked (by table), the failing ones and their share."""
    failing = findings.drop_duplicates(["rule", "table", "record"]).groupby("rule").size()
    rows = []
    for rule in RULES:
        checked = checked_by_table[rule.table]
        count = int(failing.get(rule.id, 0))
        rows.append(
            {
                "rule": rule.id,
                "category": rule.category.value,
                "severity": rule.severity.value,
                "checked": checked,
                "failing": count,
                "percent": round(100 * count / checked, 1) if checked else 0.0,
                "message": rule.message,
            }
        )
    return pd.DataFrame(rows)
