"""Run the whole rule catalogue over the registry's tables and collect the findings.

One finding per failing record and field: rule, severity, category, table, record
key, study_id, field, value, message. The summary counts, per rule, the records
checked and the records failing, so a rule that found nothing still shows it ran.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandas.api.types import infer_dtype

from registry.config import Config
from registry.quality.catalogue import CATALOGUE, CODE_LIST, PREFIX, REQUIRED, RULES, TYPE, Severity
from registry.quality.cross import CROSS_RULES, FINDING_COLUMNS, NOTHING, OWNER, READS, RECORD_KEY, Registry
from registry.quality.schemas import READS_BEYOND_FIELDS, SCHEMAS
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
    """The catalogue rule a schema check stands for: built-in checks map to the generic rules."""
    prefix = PREFIX[table]
    if check == "not_nullable":
        return f"{prefix}-{REQUIRED}"
    if check == "isin":
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


def conform(table: str, frame: pd.DataFrame) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
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
        return readable, []
    cells = pd.concat(bad, ignore_index=True)
    owner = OWNER.get(table, "patient_id")
    patients = frame.set_index(frame[RECORD_KEY[table]].to_numpy())[owner] if owner else None
    return readable, [
        pd.DataFrame(
            {
                "rule": f"{PREFIX[table]}-{TYPE}",
                "table": table,
                "record": cells["record"],
                "patient_id": cells["record"].map(patients) if patients is not None else None,
                "field": cells["column"],
                "value": cells["value"],
            }
        )
    ]


@dataclass(frozen=True)
class _Validator:
    """A table's schema as the engine runs it: its column checks by column, and its row checks."""

    columns: tuple[tuple[str, bool, tuple[pa.Check, ...]], ...]  # name, nullable, checks
    rows: tuple[pa.Check, ...]
    finds: frozenset[str]  # the rules its checks find records by
    reads: dict[str, frozenset[str]]  # the columns each rule's checks read (every column: a rule of each column)

    @property
    def names(self) -> list[str]:
        return [name for name, _, _ in self.columns]


@cache
def _validator(table: str) -> _Validator:
    """The table's schema, for the engine to run its checks itself, on a frame :func:`conform` has typed.

    They are the schema's own checks (pandera's check functions, with pandera's rules for
    empty values) and find the same records; what pandera's ``validate`` would add is
    settled already or not needed, and costs time:

    - the column types: :func:`conform` has put every column in its dtype (a cell that
      was not of it is reported by rule -001 and emptied);
    - pandera turns the failing rows of a dataframe-level check into one failure case per
      cell by transposing them (Python work per failing row: minutes for a few hundred
      thousand), where the engine needs only which rows failed;
    - on the few rows of one patient (a save's check) pandera's fixed cost per column and
      check (about 2 ms a table) was most of the schema's time.
    """
    schema = SCHEMAS[table].to_schema()
    schema.register_default_backends(pd.DataFrame)  # what validate does first: the built-in checks' pandas code
    checks = [*schema.checks, *(check for column in schema.columns.values() for check in column.checks)]
    for check in checks:
        if check.element_wise or check.groupby is not None or check.n_failure_cases is not None:
            raise RuntimeError(f"data-quality check {check.name} of {table}: the engine runs vectorised checks only")
    columns = tuple((name, column.nullable, tuple(column.checks)) for name, column in schema.columns.items())
    required = [] if all(column.nullable for column in schema.columns.values()) else ["not_nullable"]
    finds = frozenset(_rule_of(table, name) for name in [*required, *(check.name for check in checks)])
    names = list(schema.columns)
    every_column = {_rule_of(table, "not_nullable"), _rule_of(table, "isin")}  # a rule of each column
    reads: dict[str, set[str]] = {rule: set(names) for rule in finds & every_column}
    for name, column in schema.columns.items():
        for check in column.checks:
            reads.setdefault(_rule_of(table, check.name), set()).add(name)
    codes = {"missing_codes"} & set(names)  # a field's code answers it (tables.answered)
    for check in schema.checks:
        fields = {n for pattern in CATALOGUE[check.name].fields for n in fnmatch.filter(names, pattern)}
        reads[check.name] = fields | set(READS_BEYOND_FIELDS.get(check.name, ())) | codes
    return _Validator(columns, tuple(schema.checks), finds, {rule: frozenset(r) for rule, r in reads.items()})


def schema_reads(table: str) -> dict[str, frozenset[str]]:
    """The columns each rule of ``table``'s schema reads (its type rule, -001, reads every column)."""
    validator = _validator(table)
    return {f"{PREFIX[table]}-{TYPE}": frozenset(validator.names)} | validator.reads


def failing(table: str, check: pa.Check, checked: pd.DataFrame | pd.Series) -> np.ndarray:
    """Where ``check`` fails on ``checked``: as pandera's backend calls it, one result per row required."""
    output = check._check_fn(checked, **check._check_kwargs)
    if not isinstance(output, pd.Series) or not output.index.equals(checked.index):
        raise RuntimeError(f"data-quality check {check.name} did not give one result per {table} row")
    return ~output.to_numpy(dtype=bool)  # an empty result is an error (a check's bug), never read as a pass


def _cases(table: str, keyed: pd.DataFrame, rule: str, field: str, rows: np.ndarray) -> pd.DataFrame:
    """The records at ``rows`` (a mask of ``keyed``) as findings of ``rule`` about ``field``."""
    failed, owner = keyed[rows], OWNER.get(table, "patient_id")
    return pd.DataFrame(
        {
            "rule": rule,
            "table": table,
            "record": failed.index,
            "patient_id": failed[owner].to_numpy() if owner else None,
            "field": field,
            "value": failed[field].to_numpy(dtype=object),
        }
    )


#: The rules a run is of: every rule (None), or these.
Rules = frozenset[str] | None


def _runs(rule: str, rules: Rules) -> bool:
    return rules is None or rule in rules


def _column_failures(
    table: str, keyed: pd.DataFrame, validator: _Validator, missing: np.ndarray, rules: Rules
) -> list[tuple[str, str, np.ndarray]]:
    """Each column check's failing rows, as rule, column, mask (``missing``: the empty cells, a column each);
    pandera's rules: an empty value fails only the column's being required, and the checks about emptiness
    (``ignore_na=False``), which see every value."""
    failures = []
    required = _rule_of(table, "not_nullable")
    for n, (name, nullable, checks) in enumerate(validator.columns):
        empty = missing[:, n]
        if not nullable and _runs(required, rules) and empty.any():
            failures.append((required, name, empty))
        for check in checks:
            if not _runs(_rule_of(table, check.name), rules):
                continue
            values = keyed[name]
            if check.ignore_na and empty.any():
                failed = np.zeros(len(values), dtype=bool)
                failed[~empty] = failing(table, check, values[~empty])
            else:
                failed = failing(table, check, values)
            if failed.any():
                failures.append((_rule_of(table, check.name), name, failed))
    return failures


def _schema_findings(table: str, frame: pd.DataFrame, rules: Rules) -> list[pd.DataFrame]:
    """The records failing the table's schema checks of ``rules`` (none of no records: a patient without such
    records).

    A row passes a dataframe-level check if the check says so or it is all empty (pandera's
    rule), the empty rows found once per table: pandera's own call looks for them in every
    cell again for each check (seconds per table on a large registry).
    """
    validator = _validator(table)
    if frame.empty or (rules is not None and not validator.finds & rules):
        return []
    keyed = frame.set_index(frame[RECORD_KEY[table]].to_numpy(), drop=False)
    missing = keyed.isna().to_numpy()
    failures = _column_failures(table, keyed, validator, missing[:, keyed.columns.get_indexer(validator.names)], rules)
    row_checks = [check for check in validator.rows if _runs(check.name, rules)]
    if row_checks:
        empty = missing.all(axis=1)
        for check in row_checks:
            failed = failing(table, check, keyed) & ~empty
            if failed.any():
                failures.append((check.name, CATALOGUE[check.name].fields[0], failed))
    return [_cases(table, keyed, rule, field, rows) for rule, field, rows in failures]


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
    findings, registry = _findings(tables, config, today, None)
    checked = {name: len(frame) for name, frame in registry.tables.items()} | {"date": len(registry.dates)}
    return CheckRun(findings, summarise(checked, findings))


def rule_findings(
    tables: dict[str, pd.DataFrame], config: Config, today: date, rules: Collection[str] | None = None
) -> pd.DataFrame:
    """:func:`run_checks`' findings without its summary; with ``rules``, exactly the rows of them of these rules.

    The other rules are not run, nor the tables they alone read typed; the type findings
    (-001) of the tables typed, which their typing makes anyway, are, so that a mistyped
    cell's other findings are dropped as in a whole run."""
    return _findings(tables, config, today, None if rules is None else frozenset(rules))[0]


def _findings(
    tables: dict[str, pd.DataFrame], config: Config, today: date, rules: Rules
) -> tuple[pd.DataFrame, Registry]:
    """The findings of ``rules`` on ``tables``, in the order of the catalogue, and the registry they were found in."""
    parts, readable, read = [], dict(tables), _tables_read(rules)
    for table in SCHEMAS:
        if table in read:  # a table no rule of ``rules`` reads is left as it is: none of its findings are kept
            readable[table], type_findings = conform(table, tables[table])
            parts += [*type_findings, *_schema_findings(table, readable[table], rules)]
    registry = Registry(readable, config, today)
    for rule_id, function in CROSS_RULES.items():
        part = function(registry) if _runs(rule_id, rules) else NOTHING
        if len(part):
            parts.append(part.assign(rule=rule_id))
    found = [p[[*FINDING_COLUMNS, "rule"]].astype(object) for p in parts if len(p)]
    if not found:  # a clean patient's check: the steps below on no rows were a tenth of its time
        return _none_found(readable["patient"].empty).copy(), registry
    findings = _once_per_mistyped_cell(pd.concat(found, ignore_index=True))
    if rules is not None:
        findings = findings[findings["rule"].isin(rules)]
    return _as_findings(findings, readable["patient"].set_index("id")["study_id"]), registry


def _tables_read(rules: Rules) -> set[str]:
    """The tables ``rules`` read (each rule's findings are about a table it reads), and the patients, whose study
    ids the findings name."""
    if rules is None:
        return set(SCHEMAS)
    return {"patient"} | {t for rule in rules for t in (READS[rule] if rule in READS else [CATALOGUE[rule].table])}


@cache
def _none_found(no_patients: bool) -> pd.DataFrame:
    """No findings, as :func:`_as_findings` gives them (never changed: copied). pandas types the empty study_id
    column by what it is looked up in: the patients' study_ids (text), or none."""
    patients = pd.Series(dtype=object) if no_patients else pd.Series(["-"], index=pd.array([1], dtype="Int64"))
    return _as_findings(pd.DataFrame(columns=[*FINDING_COLUMNS, "rule"]), patients)


def _as_findings(found: pd.DataFrame, study_ids: pd.Series) -> pd.DataFrame:
    """The rules' failing records (``FINDING_COLUMNS`` and rule) as findings (:data:`COLUMNS`), in the catalogue's
    order: each rule's severity, category and message, the patient's study_id, values as text."""
    unknown = set(found["rule"]) - set(CATALOGUE)
    if unknown:  # a check whose name is no rule of the catalogue: a bug, never a finding
        raise RuntimeError(f"data-quality checks reported rules that are not in the catalogue: {sorted(unknown)}")
    rules = found["rule"]
    findings = pd.DataFrame(
        {
            "rule": found["rule"],
            "severity": rules.map({rule.id: rule.severity.value for rule in RULES}),
            "category": rules.map({rule.id: rule.category.value for rule in RULES}),
            "table": found["table"],
            "record": found["record"].map(_text),
            "study_id": found["patient_id"].map(study_ids).map(_text),
            "field": found["field"],
            "value": found["value"].map(_text),
            "message": rules.map({rule.id: rule.message for rule in RULES}),
        },
        columns=COLUMNS,
    )
    order = {rule.id: n for n, rule in enumerate(RULES)}
    return (
        findings.assign(_order=findings["rule"].map(order))
        .sort_values(["_order", "table", "study_id", "record", "field"], na_position="first", kind="stable")
        .drop(columns="_order")
        .drop_duplicates()
        .reset_index(drop=True)
    )


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
