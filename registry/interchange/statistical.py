"""Statistical files: the analysis dataset and every clinical table, as Stata, SPSS, SAS, R and Parquet read them.

``registry export --format stata|spss|sas|rds|parquet OUT`` writes the folder OUT: ``cohort.<ext>``, the cohort as
analysed (registry.cohort: one row per analysed patient, under the analysis settings), and one ``<sheet>.<ext>`` per
sheet of the workbook (registry.sheets), each with variable labels, value labels for codes and dates as dates, so
that a statistician starts from the registry's own definitions instead of re-deriving them from CSV files.

- Codes: Stata and SPSS label numbers, so a code column holds 1..n in code-list order, labelled with the code's
  label; yes/no is 0/1 labelled no/yes. SAS holds the same numbers, each variable naming its format, and the
  formats are in ``formats.csv`` (PROC FORMAT CNTLIN). R gets a factor with the code list as its levels, Parquet a
  dictionary column; both keep yes/no as logical.
- Missing-data codes (unknown, not done, not applicable, not asked) never vanish into a blank: Stata's extended
  missing values .a-.d, SPSS user-missing values -99..-96 (a missing range), both labelled; where a format cannot
  mark a missing value of a column (SAS transport files, R, Parquet, SPSS dates, text), a companion column
  ``<field>_missing`` holds the code.
- Left out: direct identifiers (they have no sheet), the exact birth date (the cohort has each patient's age) and
  free text, which may name a person (:func:`left_out`).
- Every name and label is checked against the format's limits before anything is written, and refused naming the
  column: never truncated.

The folder is written whole or not at all (registry.atomic). pyreadstat writes .dta, .sav and .xpt, pyarrow .parquet,
pyreadr .rds (which holds dates as ISO text and no labels: labels.csv beside them has the labels).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from registry.atomic import replacing
from registry.codes import ANALYTE_RANGES, STUDY_DRUGS, AdverseEventTerm, Analyte, AntibodyGrade, MissingCode
from registry.cohort import GRADE_ORDER, build_cohort
from registry.config import Config
from registry.dictionary import Entry
from registry.missing import Missing, decode
from registry.sheets import SHEETS, SHEETS_BY_NAME, Sheet, SheetColumn, sheet_dictionary, snapshot, stored_rows
from registry.tables import load_tables

#: Format name -> file extension.
FORMATS: dict[str, str] = {"stata": ".dta", "spss": ".sav", "sas": ".xpt", "rds": ".rds", "parquet": ".parquet"}
COHORT = "cohort"
#: The SAS formats (value labels) of an export in SAS transport files, as PROC FORMAT's CNTLIN data set reads them.
SAS_FORMATS = "formats.csv"
#: The stored birth date: an indirect identifier, and the cohort holds what an analysis needs of it (age).
BIRTH_DATE = ("patients", "birth_date")
#: The suffix of a companion column holding a field's missing-data code; the short one where the long will not fit.
COMPANION_SUFFIXES = ("_missing", "_m")

#: Stata's extended missing value of each missing-data code (.a unknown, .b not done, .c not applicable, .d not asked).
STATA_MISSING: dict[MissingCode, str] = dict(zip(MissingCode, "abcd", strict=True))
#: SPSS's user-missing value of each code; the four are declared as the range -99..-96 (SPSS allows three discrete
#: values, or one range and one value). No field the registry holds can be negative.
SPSS_MISSING: dict[MissingCode, float] = dict(zip(MissingCode, (-99.0, -98.0, -97.0, -96.0), strict=True))
SPSS_MISSING_RANGE = {"lo": min(SPSS_MISSING.values()), "hi": max(SPSS_MISSING.values())}

NO_YES = {0: "no", 1: "yes"}
#: SAS format names of the value-label sets whose own name (the code list's) is longer than 8 characters. Eight is
#: SAS's classic limit, and readstat writes a transport file it cannot read back when a longer format name meets long
#: variable labels; a new code list with a long name stops a SAS export until it is given a name here.
SAS_FORMAT_NAMES: dict[str, str] = {
    "RPILDDEFINITION": "RPILDDEF",
    "ANTIBODYGRADE": "ABGRADE",
    "ANTIBODYUNIT": "ABUNIT",
    "PFTNOTDONEREASON": "PFTNOTDN",
    "HRCTPATTERN": "HRCTPATT",
    "FREQUENCY": "FREQ",
    "STOPREASON": "STOPRSN",
    "ADVERSEEVENTTERM": "AETERM",
    "ADVERSEEVENTOUTCOME": "AEOUTCOM",
    "VITALSTATUS": "VITALST",
    "DEATHCAUSE": "DEATHCS",
}
#: Variable labels of the cohort's columns (registry/cohort.py). Analytes, adverse-event terms and the landmarks'
#: columns are labelled from their code lists and the configuration (:func:`cohort_labels`); a column missing here
#: stops the export, so that no new column of the analysis dataset leaves unlabelled.
COHORT_LABELS: dict[str, str] = {
    "study_id": "Study ID",
    "group": "Group: first study drug started",
    "index_date": "Index date: start of the first study drug",
    "both_study_drugs": "Both study drugs received",
    "event": "Died by the end of follow-up",
    "end_date": "End of follow-up: death, last contact or data cut-off",
    "time_days": "Days from the index date to the end of follow-up",
    "transplant_date": "Lung transplantation counted as competing event",
    "cr_status": "Competing risks: first event",
    "cr_time_days": "Competing risks: days from the index date to first event",
    "age": "Age at the index date (years)",
    "sex": "Sex",
    "male": "Male",
    "smoking": "Smoking",
    "ever_smoker": "Ever smoker (former or current)",
    "rpild": "Rapidly progressive ILD (RPILD)",
    "anti_mda5_grade": "Anti-MDA5 line-blot grade nearest the index date",
    "steroid_sparing": "Concurrent steroid-sparing agent at the index date",
    "pft_fvc_pct_pred": "Baseline FVC (% predicted)",
    "pft_dlco_pct_pred": "Baseline DLCO (% predicted)",
    "pft_tlc_pct_pred": "Baseline TLC (% predicted)",
    "pft_not_done_reason": "Baseline PFT: reason not done",
    "ae_any": "Any adverse event from the index date",
    "ae_serious_or_grade3": "Serious or grade >= 3 adverse event from the index date",
    "discontinuation": "Index study drug discontinued for an adverse event",
    "hrct_pattern": "Baseline HRCT pattern",
    "hrct_total_score": "Baseline total HRCT score (points)",
}
#: The cohort's code columns of its own: the name of their value-label set, and (code, label) in order.
COHORT_CODES: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "group": ("STUDYDRG", tuple((drug.value, drug.label) for drug in STUDY_DRUGS)),
}
#: The cohort's code columns that copy a stored field: (sheet, column) of the field, whose code list they keep.
COHORT_CODE_FIELDS: dict[str, tuple[str, str]] = {
    "sex": ("patients", "sex"),
    "smoking": ("patients", "smoking"),
    "pft_not_done_reason": ("pfts", "not_done_reason"),
    "hrct_pattern": ("hrct", "pattern"),
}
#: The cohort's numeric columns whose numbers stand for something: value-label set name, number -> label.
COHORT_VALUE_LABELS: dict[str, tuple[str, dict[int, str]]] = {
    "event": ("YESNO", NO_YES),
    "male": ("YESNO", NO_YES),
    "ever_smoker": ("YESNO", NO_YES),
    "steroid_sparing": ("YESNO", NO_YES),
    "cr_status": ("CRSTATUS", {0: "Censored", 1: "Death", 2: "Lung transplantation before death"}),
    "anti_mda5_grade": ("MDA5GRD", {n: AntibodyGrade(grade).label for grade, n in GRADE_ORDER.items()}),
}
#: The cohort's variables that may hold a missing-data code, and the stored field it comes from: (table, field).
COHORT_CODED_SOURCES: dict[str, tuple[str, str]] = {
    "smoking": ("patient", "smoking"),
    "ever_smoker": ("patient", "smoking"),
    "rpild": ("patient", "rpild"),
    "pft_fvc_pct_pred": ("pft", "fvc_pct_pred"),
    "pft_dlco_pct_pred": ("pft", "dlco_pct_pred"),
    "pft_tlc_pct_pred": ("pft", "tlc_pct_pred"),
    "hrct_pattern": ("hrct", "pattern"),
    "hrct_total_score": ("hrct", "total_score"),
}


class StatisticalExportError(ValueError):
    """The export cannot be written as asked (an unknown format, a name or label the format cannot hold); nothing
    was written."""


@dataclass(frozen=True)
class Limits:
    """What one format can hold: lengths of names, variable labels and value labels (None: no limit)."""

    name: int | None
    label: int | None
    value_label: int | None
    in_bytes: bool = False  # lengths in UTF-8 bytes (SPSS, SAS), else in characters
    labels_name: int | None = None  # Stata's value-label set names, SAS's format names (see SAS_FORMAT_NAMES)


#: Stata 14+ (dta 118): names 32, variable labels 80, value labels 32,000; SPSS: names 64 bytes, variable labels
#: 256 and value labels 120 bytes; SAS transport version 8: names 32, labels 256, format names 8.
LIMITS: dict[str, Limits] = {
    "stata": Limits(32, 80, 32_000, labels_name=32),
    "spss": Limits(64, 256, 120, in_bytes=True),
    "sas": Limits(32, 256, 32_767, in_bytes=True, labels_name=8),
    "rds": Limits(None, None, None),
    "parquet": Limits(None, None, None),
}
#: Where a format marks a missing-data code in the column itself (else a companion column holds it), by kind.
_TAGGED_KINDS: dict[str, frozenset[str]] = {
    "stata": frozenset({"code", "yesno", "number", "integer", "date"}),
    "spss": frozenset({"code", "yesno", "number", "integer"}),
    "sas": frozenset(),
    "rds": frozenset(),
    "parquet": frozenset(),
}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SAS_FORMAT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,7}(?<![0-9])")  # at most 8, not ending in a digit


@dataclass(frozen=True)
class Variable:
    """One column of a statistical file: what it holds and how it is labelled."""

    name: str
    label: str
    kind: str  # text, number, integer, date, yesno or code
    codes: tuple[tuple[str, str], ...] = ()  # (code, label) of a code column, in code-list order
    value_labels: Mapping[int, str] = field(default_factory=dict)  # of a number or integer whose values mean things
    labels_name: str = ""  # its value-label set's name, its SAS format: the code list's (SMOKING), YESNO, ...
    takes_code: bool = False  # may hold a missing-data code instead of a value

    def numbers(self) -> dict[int, str]:
        """Number -> label: what Stata, SPSS and SAS label (codes 1..n, yes/no 0/1)."""
        if self.kind == "code":
            return {n: label for n, (_, label) in enumerate(self.codes, start=1)}
        return dict(NO_YES) if self.kind == "yesno" else dict(self.value_labels)


@dataclass
class Dataset:
    """One file's rows, column by column: plain Python values (None blank, :class:`Missing` coded)."""

    name: str
    label: str
    variables: list[Variable]
    columns: dict[str, list[Any]]

    @property
    def rows(self) -> int:
        return len(next(iter(self.columns.values()), []))


# --- what is exported ------------------------------------------------------------------------------------------------
def _free_text(sheet: Sheet, column: SheetColumn) -> bool:
    """Text that is neither a code, a reference (study_id, site) nor kept on purpose: the rule of the pseudonymised
    export (registry/pseudonymise.py), which leaves the same columns out."""
    from registry.pseudonymise import TEXT_KEPT

    kind = column.source.type
    return (
        isinstance(kind, sa.String)
        and not isinstance(kind, sa.Enum)
        and not column.is_reference
        and column.name != "study_id"
        and (sheet.name, column.name) not in TEXT_KEPT
    )


def left_out() -> dict[str, str]:
    """The sheet columns the statistical files leave out ("sheet.column"), each with why."""
    reasons = {f"{BIRTH_DATE[0]}.{BIRTH_DATE[1]}": "the exact birth date; the cohort holds each patient's age"}
    for sheet in SHEETS:
        for column in sheet.columns:
            if _free_text(sheet, column):
                reasons[f"{sheet.name}.{column.name}"] = "free text, which may name or otherwise identify a person"
    return reasons


def cohort_labels(config: Config) -> dict[str, str]:
    """The variable label of every column the cohort can have under ``config``."""
    labels = dict(COHORT_LABELS)
    for analyte in Analyte:
        labels[analyte.value] = f"Baseline: {analyte.label} ({ANALYTE_RANGES[analyte].unit})"
    for term in AdverseEventTerm:
        labels[f"ae_{term.value}"] = f"Adverse event from the index date: {term.label}"
    for name, days in config.landmarks.items():
        labels[f"dead_by_{days}"] = f"Died by day {days} ({name})"
        labels[f"status_known_{days}"] = f"Vital status known at day {days} ({name})"
    return labels


def _label(entry: Entry) -> str:
    """A sheet column's label with its unit, e.g. "FVC (L)" (not repeated where the label names it already)."""
    if not entry.unit or entry.unit.lower() in entry.label.lower():
        return entry.label
    return f"{entry.label} ({entry.unit})"


def _code_list(kind: sa.Enum) -> tuple[str, tuple[tuple[str, str], ...]]:
    """A code column's value-label set name (its code list's, e.g. SMOKING) and its (code, label) in order."""
    members = {member.value: member for member in kind.enum_class}
    name = kind.enum_class.__name__.upper()
    return SAS_FORMAT_NAMES.get(name, name), tuple((code, getattr(members[code], "label", code)) for code in kind.enums)


def _sheet_variable(column: SheetColumn, entry: Entry) -> Variable:
    kind = column.source.type
    common = {"name": column.name, "label": _label(entry), "takes_code": column.takes_code}
    if isinstance(kind, sa.Enum):
        labels_name, codes = _code_list(kind)
        return Variable(**common, kind="code", codes=codes, labels_name=labels_name)
    if isinstance(kind, sa.Boolean):
        return Variable(**common, kind="yesno", labels_name="YESNO")
    if isinstance(kind, sa.Date):
        return Variable(**common, kind="date")
    if isinstance(kind, sa.Integer):
        return Variable(**common, kind="integer")
    if isinstance(kind, sa.Float):
        return Variable(**common, kind="number")
    return Variable(**common, kind="text")


def _sheet_dataset(connection: sa.Connection, sheet: Sheet, entries: Mapping[tuple[str, str], Entry]) -> Dataset:
    """A sheet's live records, sorted by their natural key as the export sorts them, without what is left out."""
    dropped = left_out()
    columns = [c for c in sheet.columns if f"{sheet.name}.{c.name}" not in dropped]
    variables = [_sheet_variable(c, entries[sheet.name, c.name]) for c in columns]
    stored = stored_rows(connection, sheet)
    records = [stored[key] for key in sorted(stored) if not stored[key]["deleted"]]
    values = {c.name: [record[c.name] for record in records] for c in columns}
    return Dataset(sheet.name, f"Registry sheet {sheet.name}", variables, values)


def _cohort_variable(name: str, values: pd.Series, label: str, coded: bool) -> Variable:
    common = {"name": name, "label": label, "takes_code": coded}
    if name in COHORT_CODES:
        labels_name, codes = COHORT_CODES[name]
        return Variable(**common, kind="code", codes=codes, labels_name=labels_name)
    if name in COHORT_CODE_FIELDS:
        sheet, column = COHORT_CODE_FIELDS[name]
        labels_name, codes = _code_list(SHEETS_BY_NAME[sheet].column(column).source.type)
        return Variable(**common, kind="code", codes=codes, labels_name=labels_name)
    dtype = values.dtype
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return Variable(**common, kind="date")
    if pd.api.types.is_bool_dtype(dtype):
        return Variable(**common, kind="yesno", labels_name="YESNO")
    labels_name, value_labels = COHORT_VALUE_LABELS.get(name, ("", {}))
    if pd.api.types.is_integer_dtype(dtype):
        return Variable(**common, kind="integer", value_labels=value_labels, labels_name=labels_name)
    if pd.api.types.is_float_dtype(dtype):
        return Variable(**common, kind="number", value_labels=value_labels, labels_name=labels_name)
    return Variable(**common, kind="text")


def _plain(values: pd.Series, kind: str) -> list[Any]:
    """A pandas column as plain Python values, None where missing."""
    missing = values.isna().to_numpy()
    if kind == "date":
        return [None if gone else value.date() for value, gone in zip(values, missing, strict=True)]
    cast = {"yesno": bool, "integer": int, "number": float}.get(kind, str)
    return [None if gone else cast(value) for value, gone in zip(values, missing, strict=True)]


def _cohort_codes(tables: dict[str, pd.DataFrame], cohort_table: pd.DataFrame, config: Config) -> dict[str, pd.Series]:
    """Per coded variable of the cohort, by study_id, the missing-data code of the stored field it comes from: the
    patient's own, or that of the baseline record the cohort took (the nearest in the window that coded it, found by
    the cohort's own look-up, registry.cohort._nearest)."""
    from registry.cohort import _nearest
    from registry.definitions import index_treatment

    patients = tables["patient"].set_index("id")
    kept = patients.index[patients["study_id"].isin(cohort_table.index)]
    study_ids = patients.loc[kept, "study_id"]
    index = index_treatment(tables["treatment"]).loc[kept]
    dates = {"pft": "test_date", "hrct": "scan_date"}
    found: dict[str, pd.Series] = {}
    for variable, (table, name) in COHORT_CODED_SOURCES.items():
        frame = tables[table]
        codes = frame["missing_codes"].map(lambda text, name=name: decode(text).get(name))
        if table == "patient":
            by_patient = pd.Series(codes.to_numpy(), index=frame["id"]).reindex(kept)
        else:
            nearest = _nearest(frame.assign(_code=codes), dates[table], index, config.baseline_window_days)
            by_patient = nearest["_code"].reindex(kept)
        found[variable] = pd.Series(by_patient.to_numpy(), index=study_ids.to_numpy())
    return found


def _cohort_dataset(connection: sa.Connection, config: Config) -> Dataset:
    """The cohort as analysed, study_id first; every coded variable's code where the cohort says a code is why the
    value is missing (Cohort.coded)."""
    tables = load_tables(connection)
    cohort = build_cohort(tables, config)
    table = cohort.table.reset_index()
    labels = cohort_labels(config)
    unlabelled = [name for name in table.columns if name not in labels]
    if unlabelled:
        raise StatisticalExportError(
            f"cohort column {', '.join(unlabelled)} has no variable label: add one to COHORT_LABELS in "
            "registry/interchange/statistical.py"
        )
    unknown = [name for name in cohort.coded.columns if name not in COHORT_CODED_SOURCES]
    if unknown:
        raise StatisticalExportError(
            f"cohort column {', '.join(unknown)} may hold a missing-data code but its source field is not known: add "
            "it to COHORT_CODED_SOURCES in registry/interchange/statistical.py"
        )
    codes = _cohort_codes(tables, cohort.table, config)
    variables, columns = [], {}
    for name in table.columns:
        variable = _cohort_variable(name, table[name], labels[name], name in cohort.coded.columns)
        values = _plain(table[name], variable.kind)
        if variable.takes_code:
            flags = cohort.coded[name].reindex(table["study_id"]).to_numpy()
            found = codes[name].reindex(table["study_id"]).to_numpy()
            for row, (flag, code) in enumerate(zip(flags, found, strict=True)):
                if flag:
                    if not isinstance(code, str):
                        raise StatisticalExportError(f"cohort column {name}: row {row + 1} is coded, but by no code")
                    values[row] = Missing(MissingCode(code))
        variables.append(variable)
        columns[name] = values
    return Dataset(COHORT, "Analysis dataset, one row per patient", variables, columns)


def datasets(engine: sa.Engine, config: Config) -> list[Dataset]:
    """The cohort and every sheet, as the statistical files hold them (before any format's encoding)."""
    entries = {(e.table, e.column): e for e in sheet_dictionary()}
    with snapshot(engine) as connection:
        return [_cohort_dataset(connection, config), *(_sheet_dataset(connection, s, entries) for s in SHEETS)]


# --- names, labels and limits ----------------------------------------------------------------------------------------
def companion(variable: Variable, fmt: str) -> str:
    """The name of the column holding ``variable``'s missing-data codes in ``fmt``: ``<field>_missing``, or
    ``<field>_m`` where that would be too long for the format (SAS: hrct's consolidation_right_middle_pct_m)."""
    limit = LIMITS[fmt].name
    for suffix in COMPANION_SUFFIXES:
        if limit is None or _length(variable.name + suffix, LIMITS[fmt]) <= limit:
            return variable.name + suffix
    raise StatisticalExportError(
        f"column {variable.name}: its missing-data codes need a companion column, and no name for it fits {fmt}'s "
        f"{limit} characters"
    )


def needs_companion(variable: Variable, fmt: str) -> bool:
    """Whether ``fmt`` keeps ``variable``'s missing-data codes in a companion column (it cannot mark them itself)."""
    return variable.takes_code and variable.kind not in _TAGGED_KINDS[fmt]


def _companion_label(variable: Variable) -> str:
    return f"Missing-data code: {variable.label}"


def _length(text: str, limits: Limits) -> int:
    return len(text.encode()) if limits.in_bytes else len(text)


def _value_label_texts(variable: Variable) -> list[str]:
    return [*variable.numbers().values(), *([code.label for code in MissingCode] if variable.takes_code else [])]


def stata_label_sets(dataset: Dataset) -> dict[str, str]:
    """Variable -> the name pyreadstat gives its value-label set in a .dta file (the variable's name and a count)."""
    labelled = [v for v in dataset.variables if v.kind != "text" and (v.numbers() or v.takes_code)]
    return {v.name: f"{v.name}{n}" for n, v in enumerate(labelled)}


def check(dataset: Dataset, fmt: str) -> None:
    """Refuse, naming the column, any name or label ``fmt`` cannot hold whole, and any value that would pass for a
    missing-data code; a name is never cut short."""
    limits = LIMITS[fmt]
    where = f"{fmt} file {dataset.name}{FORMATS[fmt]}"

    def fits(text: str, limit: int | None, what: str, column: str) -> None:
        if limit is not None and _length(text, limits) > limit:
            unit = "bytes" if limits.in_bytes else "characters"
            raise StatisticalExportError(
                f"{where}: column {column}: its {what} {text!r} is {_length(text, limits)} {unit}; {fmt} holds {limit}"
            )

    names: dict[str, str] = {}
    for variable in dataset.variables:
        columns = [(variable.name, variable.label)]
        if needs_companion(variable, fmt):
            columns.append((companion(variable, fmt), _companion_label(variable)))
        for name, label in columns:
            if not _NAME.fullmatch(name):
                raise StatisticalExportError(f"{where}: column {name}: not a valid variable name")
            if name.lower() in names:
                raise StatisticalExportError(f"{where}: column {name}: the same name as column {names[name.lower()]}")
            names[name.lower()] = name
            fits(name, limits.name, "name", name)
            fits(label, limits.label, "label", name)
        for text in _value_label_texts(variable):
            fits(text, limits.value_label, "value label", variable.name)
        if fmt == "sas" and variable.numbers() and not _SAS_FORMAT_NAME.fullmatch(variable.labels_name):
            raise StatisticalExportError(
                f"{where}: column {variable.name}: {variable.labels_name} cannot name a SAS format (at most 8 "
                "letters, digits or '_', not ending in a digit): give it a name in SAS_FORMAT_NAMES"
            )
        if fmt == "spss" and variable.takes_code and variable.kind in ("number", "integer"):
            low, high = SPSS_MISSING_RANGE["lo"], SPSS_MISSING_RANGE["hi"]
            clash = [v for v in dataset.columns[variable.name] if isinstance(v, int | float) and low <= v <= high]
            if clash:
                raise StatisticalExportError(
                    f"{where}: column {variable.name}: the value {clash[0]} would read as a missing-data code in SPSS "
                    f"(user-missing {SPSS_MISSING_RANGE['lo']:g} to {SPSS_MISSING_RANGE['hi']:g})"
                )
    if fmt == "stata":
        for variable, name in stata_label_sets(dataset).items():
            fits(name, limits.labels_name, "value-label set name", variable)
    if fmt == "sas":
        fits(dataset.name, limits.name, "data set name", dataset.name)


# --- the pyreadstat formats ------------------------------------------------------------------------------------------
_STATA_EPOCH = date(1960, 1, 1)  # Stata's and SAS's day 0
_SPSS_EPOCH = date(1582, 10, 14)  # SPSS counts seconds from the start of the Gregorian calendar


def _number(variable: Variable, value: Any, fmt: str) -> float | None:
    """A value as the number Stata, SPSS and SAS store (a date in the format's own count)."""
    if value is None:
        return None
    if variable.kind == "code":
        codes = [code for code, _ in variable.codes]
        if value not in codes:
            raise StatisticalExportError(f"column {variable.name}: {value!r} is not in its code list")
        return float(codes.index(value) + 1)
    if variable.kind == "date":
        if fmt == "spss":
            return float((value - _SPSS_EPOCH).days * 86_400)
        return float((value - _STATA_EPOCH).days)
    return float(value)


_DATE_FORMATS = {"stata": "%td", "spss": "DATE11", "sas": "DATE9."}


def _readstat_frame(dataset: Dataset, fmt: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The frame pyreadstat writes for ``fmt`` and the keyword arguments that label it."""
    frame: dict[str, pd.Series] = {}
    labels: dict[str, str] = {}
    value_labels: dict[str, dict[Any, str]] = {}
    formats: dict[str, str] = {}
    user_missing: dict[str, list[str]] = {}
    missing_ranges: dict[str, list[dict[str, float]]] = {}
    measures: dict[str, str] = {}
    for variable in dataset.variables:
        values = dataset.columns[variable.name]
        labels[variable.name] = variable.label
        tagged = variable.takes_code and variable.kind in _TAGGED_KINDS[fmt]
        if variable.kind == "text":
            frame[variable.name] = pd.Series(["" if v is None else str(v) for v in values], dtype=object)
            measures[variable.name] = "nominal"
        else:
            tags: Mapping[MissingCode, Any] = (
                {"stata": STATA_MISSING, "spss": SPSS_MISSING}.get(fmt, {}) if tagged else {}
            )
            numbers = [
                tags.get(v.code) if isinstance(v, Missing) else _number(variable, v, fmt) for v in values
            ]  # an untagged code: a blank here, its code in the companion column
            has_letters = fmt == "stata" and any(isinstance(n, str) for n in numbers)
            frame[variable.name] = (
                pd.Series(numbers, dtype=object) if has_letters else pd.Series(numbers, dtype="float64")
            )
            measures[variable.name] = "nominal" if variable.kind in ("code", "yesno") else "scale"
            named = {float(n): label for n, label in variable.numbers().items()}
            if variable.kind == "date":
                formats[variable.name] = _DATE_FORMATS[fmt]
            elif fmt == "sas" and named:
                formats[variable.name] = f"{variable.labels_name}."
            elif variable.kind in ("code", "yesno", "integer") and fmt == "spss":
                formats[variable.name] = "F8.0"
            if tagged and fmt == "stata":
                user_missing[variable.name] = list(STATA_MISSING.values())
                named |= {STATA_MISSING[code]: code.label for code in MissingCode}
            elif tagged and fmt == "spss":
                missing_ranges[variable.name] = [dict(SPSS_MISSING_RANGE)]
                named |= {SPSS_MISSING[code]: code.label for code in MissingCode}
            if named and fmt != "sas":
                value_labels[variable.name] = named
        if needs_companion(variable, fmt):
            name = companion(variable, fmt)
            codes = ["" if not isinstance(v, Missing) else v.code.value for v in values]
            frame[name] = pd.Series(codes, dtype=object)
            labels[name] = _companion_label(variable)
            measures[name] = "nominal"
    arguments: dict[str, Any] = {"column_labels": labels, "variable_format": formats}
    if fmt == "stata":
        arguments |= {"variable_value_labels": value_labels, "missing_user_values": user_missing, "version": 14}
    elif fmt == "spss":
        arguments |= {"variable_value_labels": value_labels, "missing_ranges": missing_ranges}
        arguments["variable_measure"] = measures
    else:
        arguments |= {"file_format_version": 8, "table_name": dataset.name}
    return pd.DataFrame(frame, index=pd.RangeIndex(dataset.rows)), arguments


def _write_readstat(dataset: Dataset, path: Path, fmt: str) -> None:
    import pyreadstat

    frame, arguments = _readstat_frame(dataset, fmt)
    write = {"stata": pyreadstat.write_dta, "spss": pyreadstat.write_sav, "sas": pyreadstat.write_xport}[fmt]
    write(frame, path, file_label=dataset.label, **arguments)


def sas_formats(all_datasets: Sequence[Dataset]) -> list[list[str]]:
    """The rows of formats.csv: FMTNAME, START, LABEL, TYPE (numeric), one per labelled number of each format."""
    formats: dict[str, dict[int, str]] = {}
    for dataset in all_datasets:
        for variable in dataset.variables:
            numbers = variable.numbers()
            if not numbers:
                continue
            if formats.setdefault(variable.labels_name, numbers) != numbers:
                raise StatisticalExportError(f"column {variable.name}: format {variable.labels_name} means two things")
    rows = [["FMTNAME", "START", "LABEL", "TYPE"]]
    for name in sorted(formats):
        rows += [[name, str(number), label, "N"] for number, label in sorted(formats[name].items())]
    return rows


def _write_csv(rows: list[list[str]], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)


# --- Parquet ---------------------------------------------------------------------------------------------------------
def _field_metadata(variable: Variable) -> dict[str, str]:
    metadata = {"label": variable.label}
    if variable.codes:
        metadata["codes"] = json.dumps(dict(variable.codes), ensure_ascii=False)
    if variable.value_labels:
        metadata["value_labels"] = json.dumps({str(n): label for n, label in variable.value_labels.items()})
    return metadata


def _dictionary(values: Sequence[str | None], levels: Sequence[str]) -> Any:
    import pyarrow as pa

    positions = {level: n for n, level in enumerate(levels)}
    indices = pa.array([None if v is None else positions[v] for v in values], pa.int32())
    return pa.DictionaryArray.from_arrays(indices, pa.array(list(levels), pa.string()))


def _write_parquet(dataset: Dataset, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {"text": pa.string(), "number": pa.float64(), "integer": pa.int64(), "date": pa.date32(),
             "yesno": pa.bool_()}  # fmt: skip
    fields, arrays = [], []
    for variable in dataset.variables:
        values = dataset.columns[variable.name]
        plain = [None if isinstance(v, Missing) else v for v in values]
        if variable.kind == "code":
            array = _dictionary(plain, [code for code, _ in variable.codes])
        else:
            array = pa.array(plain, types[variable.kind])
        fields.append(pa.field(variable.name, array.type, metadata=_field_metadata(variable)))
        arrays.append(array)
        if needs_companion(variable, "parquet"):
            codes = [v.code.value if isinstance(v, Missing) else None for v in values]
            array = _dictionary(codes, [code.value for code in MissingCode])
            metadata = {"label": _companion_label(variable), "missing_codes_of": variable.name,
                        "codes": json.dumps({c.value: c.label for c in MissingCode})}  # fmt: skip
            fields.append(pa.field(companion(variable, "parquet"), array.type, metadata=metadata))
            arrays.append(array)
    schema = pa.schema(fields, metadata={"label": dataset.label})
    pq.write_table(pa.Table.from_arrays(arrays, schema=schema), path)


# --- R ---------------------------------------------------------------------------------------------------------------
#: Beside the .rds files: every variable's label (pyreadr writes data, not attributes), one row per file and variable.
R_LABELS = "labels.csv"


def _r_frame(dataset: Dataset) -> pd.DataFrame:
    """The dataset as pyreadr writes it: codes as factors of the whole code list, yes/no as logicals, numbers as
    doubles, dates as ISO text (pyreadr writes no Date class: as.Date() in R), a companion factor per coded field."""
    columns: dict[str, Any] = {}
    for variable in dataset.variables:
        values = dataset.columns[variable.name]
        plain = [None if isinstance(v, Missing) else v for v in values]
        if variable.kind == "code":
            columns[variable.name] = pd.Categorical(plain, categories=[code for code, _ in variable.codes])
        elif variable.kind == "date":
            columns[variable.name] = pd.Series([None if v is None else v.isoformat() for v in plain], dtype=object)
        elif variable.kind == "yesno":
            columns[variable.name] = pd.Series(plain, dtype="boolean" if None in plain else bool)
        elif variable.kind in ("integer", "number"):
            columns[variable.name] = pd.Series(plain, dtype="float64")
        else:
            columns[variable.name] = pd.Series([None if v is None else str(v) for v in plain], dtype=object)
        if needs_companion(variable, "rds"):
            codes = [v.code.value if isinstance(v, Missing) else None for v in values]
            columns[companion(variable, "rds")] = pd.Categorical(codes, categories=[c.value for c in MissingCode])
    return pd.DataFrame(columns, index=range(dataset.rows))


def _write_rds(dataset: Dataset, path: Path) -> None:
    import pyreadr

    pyreadr.write_rds(path, _r_frame(dataset), compress="gzip")


def r_labels(all_datasets: Sequence[Dataset]) -> list[list[str]]:
    """The labels the .rds files cannot hold: file, variable, label (companions included)."""
    rows = [["file", "variable", "label"]]
    for dataset in all_datasets:
        rows.append([f"{dataset.name}.rds", "", dataset.label])
        for variable in dataset.variables:
            rows.append([f"{dataset.name}.rds", variable.name, variable.label])
            if needs_companion(variable, "rds"):
                rows.append([f"{dataset.name}.rds", companion(variable, "rds"), _companion_label(variable)])
    return rows


# --- the export ------------------------------------------------------------------------------------------------------
def write_dataset(dataset: Dataset, path: Path, fmt: str) -> None:
    """Write one dataset as ``fmt`` (checked first)."""
    check(dataset, fmt)
    if fmt == "parquet":
        _write_parquet(dataset, path)
    elif fmt == "rds":
        _write_rds(dataset, path)
    else:
        _write_readstat(dataset, path, fmt)


def export_statistical(engine: sa.Engine, out: Path, fmt: str, config: Config) -> dict[str, int]:
    """Write folder ``out`` (whole or not at all) with cohort.<ext> and one <sheet>.<ext> per sheet of
    registry.sheets.SHEETS (and formats.csv for SAS); returns rows per file stem."""
    if fmt not in FORMATS:
        raise StatisticalExportError(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")
    written = datasets(engine, config)
    for dataset in written:
        check(dataset, fmt)  # every file, before any is written
    with replacing(out, folder=True) as folder:
        for dataset in written:
            write_dataset(dataset, folder / f"{dataset.name}{FORMATS[fmt]}", fmt)
        if fmt == "sas":
            _write_csv(sas_formats(written), folder / SAS_FORMATS)
        if fmt == "rds":
            _write_csv(r_labels(written), folder / R_LABELS)
    return {dataset.name: dataset.rows for dataset in written}
