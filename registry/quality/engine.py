"""Run the whole rule catalogue over the registry's tables and collect the findings.

One finding per failing record and field: rule, severity, category, table, record
key, study_id, field, value, message. The summary counts, per rule, the records
checked and the records failing, so a rule that found nothing still shows it ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import pandas as pd
import pandera.pandas as pa

from registry.config import Config
from registry.quality.catalogue import CATALOGUE, CODE_LIST, PREFIX, REQUIRED, RULES, TYPE, Severity
from registry.quality.cross import CROSS_RULES, FINDING_COLUMNS, RECORD_KEY, Registry
from registry.quality.schemas import SCHEMAS

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
    if check.startswith(("dtype(", "column_in_dataframe")):
        return f"{prefix}-{TYPE}"
    return check  # a named check: its name is the rule id


def _schema_findings(table: str, frame: pd.DataFrame) -> pd.DataFrame:
    keyed = frame.set_index(frame[RECORD_KEY[table]].to_numpy(), drop=False)
    try:
        SCHEMAS[table].validate(keyed, lazy=True)
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases
    else:
        return pd.DataFrame(columns=FINDING_COLUMNS)
    cases = cases.assign(rule=[_rule_of(table, str(check)) for check in cases["check"]])
    unreadable = cases["index"].isna()
    if unreadable.any() and not (cases["rule"] == f"{PREFIX[table]}-{TYPE}").any():
        raise RuntimeError(f"data-quality check failed to run on {table}: {cases[unreadable].to_dict('records')}")
    cases = cases[~unreadable | cases["check"].astype(str).str.startswith("column_in")]
    dataframe_level = cases["schema_context"] == "DataFrameSchema"
    fields = [
        CATALOGUE[rule].fields[0] if is_frame else column
        for rule, column, is_frame in zip(cases["rule"], cases["column"], dataframe_level, strict=True)
    ]
    records = cases["index"]
    patients = keyed["id" if table == "patient" else "patient_id"] if table != "site" else None
    values = [
        case if not is_frame else (keyed.at[record, field] if record in keyed.index else None)
        for case, is_frame, record, field in zip(cases["failure_case"], dataframe_level, records, fields, strict=True)
    ]
    return pd.DataFrame(
        {
            "rule": cases["rule"].to_numpy(),
            "table": table,
            "record": records.to_numpy(),
            "patient_id": records.map(patients).to_numpy() if patients is not None else None,
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
    registry = Registry(tables, config, today)
    parts = [_schema_findings(table, tables[table]) for table in SCHEMAS]
    parts += [function(registry).assign(rule=rule_id) for rule_id, function in CROSS_RULES.items()]
    findings = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) else None
    if findings is None:
        findings = pd.DataFrame(columns=[*FINDING_COLUMNS, "rule"])
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
