"""Run the whole rule catalogue over the registry's tables and collect the findings.

One finding per failing record and field: rule, severity, category, table, record
key, study_id, field, value, message. The summary counts, per rule, the records
checked and the records failing, so a rule that found nothing still shows it ran.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandas.api.types import infer_dtype

from registry.config import Config
from registry.quality.catalogue import CATALOGUE, CODE_LIST, PREFIX, REQUIRED, RULES, TYPE, Severity
from registry.quality.cross import CROSS_RULES, FINDING_COLUMNS, OWNER, RECORD_KEY, Registry
from registry.quality.schemas import SCHEMAS
from registry.tables import DATA_TABLES, dtype_of, typed

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
    if dtype == "datetime64[ns]":
        return lambda v: isinstance(v, datetime | date)
    return lambda v: isinstance(v, str)


def _conform(table: str, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``frame`` with each column in its dtype, and the type findings (rule -001) of the cells that were not.

    A cell of the wrong type is reported once, here, and read as empty by every other
    rule, so one bad cell never crashes or misleads the rest of the catalogue.
    """
    columns, bad = {}, []
    for column in DATA_TABLES[table].columns:
        values, dtype = frame[column.name], dtype_of(column)
        if infer_dtype(values, skipna=True) in ("string", "empty") if dtype == "object" else str(values.dtype) == dtype:
            columns[column.name] = values
            continue
        well_typed = values.map(_is_a(dtype), na_action="ignore").astype("boolean").fillna(True)
        mistyped = values.notna() & ~well_typed.astype(bool)
        bad.append(pd.DataFrame({"column": column.name, "record": frame.loc[mistyped, RECORD_KEY[table]],
                                 "value": values[mistyped]}))  # fmt: skip
        columns[column.name] = values.where(~mistyped, None)
    readable = typed(pd.DataFrame(columns, index=frame.index), DATA_TABLES[table])
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


def _schema_findings(table: str, frame: pd.DataFrame) -> pd.DataFrame:
    keyed = frame.set_index(frame[RECORD_KEY[table]].to_numpy(), drop=False)
    try:
        SCHEMAS[table].validate(keyed, lazy=True)
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases
    else:
        return pd.DataFrame(columns=FINDING_COLUMNS)
    if cases["index"].isna().any():  # a check that could not run: a bug, never a finding
        raise RuntimeError(
            f"data-quality schema of {table} failed to run: {cases[cases['index'].isna()].to_dict('records')}"
        )
    cases = cases.assign(rule=[_rule_of(table, str(check)) for check in cases["check"]])
    dataframe_level = cases["schema_context"] == "DataFrameSchema"
    fields = [
        CATALOGUE[rule].fields[0] if is_frame else column
        for rule, column, is_frame in zip(cases["rule"], cases["column"], dataframe_level, strict=True)
    ]
    records = cases["index"]
    owner = OWNER.get(table, "patient_id")
    values = [
        keyed.at[record, field] if is_frame else case
        for case, is_frame, record, field in zip(cases["failure_case"], dataframe_level, records, fields, strict=True)
    ]
    return pd.DataFrame(
        {
            "rule": cases["rule"].to_numpy(),
            "table": table,
            "record": records.to_numpy(),
            "patient_id": records.map(keyed[owner]).to_numpy() if owner else None,
            "field": fields,
            "value": values,
        }
    )


def _text(value: object) -> str | None:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.date().isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def run_checks(tables: dict[str, pd.DataFrame], config: Config, today: date) -> CheckRun:
    """Every rule of the catalogue on ``tables`` (as :func:`registry.tables.load_tables` gives them)."""
    parts, readable = [], {}
    for table in SCHEMAS:
        readable[table], type_findings = _conform(table, tables[table])
        parts += [type_findings, _schema_findings(table, readable[table])]
    tables = readable
    registry = Registry(tables, config, today)
    parts += [function(registry).assign(rule=rule_id) for rule_id, function in CROSS_RULES.items()]
    found = [p[[*FINDING_COLUMNS, "rule"]].astype(object) for p in parts if len(p)]
    findings = pd.concat(found, ignore_index=True) if found else pd.DataFrame(columns=[*FINDING_COLUMNS, "rule"])
    study_ids = tables["patient"].set_index("id")["study_id"]
    rules = findings["rule"].map(CATALOGUE)
    findings = pd.DataFrame(
        {
            "rule": findings["rule"],
            "severity": rules.map(lambda r: r.severity.value),
            "category": rules.map(lambda r: r.category.value),
            "table": findings["table"],
            "record": findings["record"].map(_text),
            "study_id": findings["patient_id"].map(study_ids).map(_text),
            "field": findings["field"],
            "value": findings["value"].map(_text),
            "message": rules.map(lambda r: r.message),
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
    return CheckRun(findings, _summary(checked, findings))


def _summary(checked_by_table: dict[str, int], findings: pd.DataFrame) -> pd.DataFrame:
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
