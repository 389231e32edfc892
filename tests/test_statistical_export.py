"""Statistical files (registry export --format stata|spss|sas|rds|parquet): each file, read back by its own library,
holds the cohort as analysed and every stored record, with variable labels, value labels, dates as dates and the
missing-data codes recovered; what must not leave (birth dates, free text, identifiers) is not there, and the privacy
scan reads these files and finds what is planted in them.

Every identity here is SYNTHETIC: made up for these tests, nobody's.
"""

from __future__ import annotations

import contextlib
import csv
import shutil
import subprocess
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from conftest import add_demo_site, needs_r
from typer.testing import CliRunner

from registry.audit import audited_session
from registry.cli import app
from registry.codes import STUDY_DRUGS, MissingCode
from registry.cohort import build_cohort
from registry.config import Config
from registry.export import workbook_sheets
from registry.ingest import import_path
from registry.interchange import statistical
from registry.interchange.statistical import (
    FORMATS,
    Dataset,
    StatisticalExportError,
    Variable,
    check,
    cohort_labels,
    export_statistical,
    left_out,
    write_dataset,
)
from registry.missing import Missing
from registry.models import Patient, PatientIdentifier
from registry.privacy import BIRTH_DATE, NAME, Scanner, registered_identifiers
from registry.pseudonymise import _dropped_columns
from registry.sheets import SHEETS, SHEETS_BY_NAME, sheet_dictionary, stored_rows
from registry.tables import load_tables

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
#: Missing-data codes planted in a copy of the demo: (sheet, study_id, column, code), each in the patient's first row.
PLANTED = [
    ("patients", "DM-010", "smoking", "unknown"),
    ("patients", "DM-010", "dm_diagnosis_date", "not_done"),
    ("patients", "DM-010", "gottron", "not_applicable"),
    ("patients", "DM-012", "rpild", "not_asked"),
    ("pfts", "DM-010", "fvc_pct_pred", "not_done"),
    ("hrct", "DM-012", "pattern", "not_asked"),
    ("hrct", "DM-012", "total_score", "unknown"),
    ("hrct", "DM-012", "consolidation_right_middle_pct", "not_done"),  # the longest name: SAS's short companion
    ("treatments", "DM-010", "stop_reason", "unknown"),
    ("adverse_events", "DM-001", "outcome", "not_done"),
    ("follow_up", "DM-010", "death_cause", "unknown"),
    ("follow_up", "DM-012", "lung_transplant_date", "not_applicable"),
]
#: What the cohort makes of them: (study_id, column) -> code.
COHORT_CODED = {
    ("DM-010", "smoking"): "unknown",
    ("DM-010", "ever_smoker"): "unknown",
    ("DM-012", "rpild"): "not_asked",
    ("DM-010", "pft_fvc_pct_pred"): "not_done",
    ("DM-012", "hrct_pattern"): "not_asked",
    ("DM-012", "hrct_total_score"): "unknown",
}
#: The cohort's code columns and their code lists, in the order Stata, SPSS and SAS number them 1..n.
COHORT_CODE_LISTS = {
    "group": [drug.value for drug in STUDY_DRUGS],
    "sex": list(SHEETS_BY_NAME["patients"].column("sex").source.type.enums),
    "smoking": list(SHEETS_BY_NAME["patients"].column("smoking").source.type.enums),
    "pft_not_done_reason": list(SHEETS_BY_NAME["pfts"].column("not_done_reason").source.type.enums),
    "hrct_pattern": list(SHEETS_BY_NAME["hrct"].column("pattern").source.type.enums),
}
#: The missing-data codes as Stata's extended missing values and SPSS's user-missing values, as documented.
STATA_TAGS = {"a": "unknown", "b": "not_done", "c": "not_applicable", "d": "not_asked"}
SPSS_VALUES = {-99.0: "unknown", -98.0: "not_done", -97.0: "not_applicable", -96.0: "not_asked"}
DATE_FORMATS = {"stata": "%td", "spss": "DATE11", "sas": "DATE9."}
runner = CliRunner()


def _planted_demo(folder: Path) -> Path:
    shutil.copytree(FIXTURES / "demo", folder)
    for sheet, study_id, column, code in PLANTED:
        path = folder / f"{sheet}.csv"
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
        row = next(r for r in rows[1:] if r[0] == study_id)
        row[rows[0].index(column)] = f"[{code}]"
        with path.open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle, lineterminator="\n").writerows(rows)
    return folder


@pytest.fixture
def registry(migrated: sa.Engine, tmp_path: Path) -> sa.Engine:
    """The demo registry (61 analysed patients) with the PLANTED missing-data codes."""
    add_demo_site(migrated)
    assert import_path(migrated, _planted_demo(tmp_path / "demo"), actor="test").written
    return migrated


# --- what each format holds, read back by its own library --------------------------------------------------------
class Read:
    """A file as its library reads it: columns (plain values), variable labels, and per column its format's own
    description (value labels, display format, field metadata)."""

    def __init__(self, columns: dict[str, list[Any]], labels: dict[str, str | None], **meta: Any) -> None:
        self.columns, self.labels, self.meta = columns, labels, meta


def _pandas_columns(frame: pd.DataFrame) -> dict[str, list[Any]]:
    cells = frame.astype(object).where(frame.notna(), None)
    return {name: list(cells[name]) for name in frame.columns}


def _read(fmt: str, path: Path) -> Read:
    import pyarrow.parquet as parquet
    import pyreadr
    import pyreadstat

    if fmt == "parquet":
        table = parquet.read_table(path)
        fields = {f.name: f for f in table.schema}
        labels = {name: f.metadata[b"label"].decode() for name, f in fields.items()}
        columns = {name: table.column(name).to_pylist() for name in table.column_names}
        return Read(columns, labels, fields=fields, file=table.schema.metadata)
    if fmt == "rds":
        frame = pyreadr.read_r(path)[None]
        assert list(frame.index) == [str(n) for n in range(1, len(frame) + 1)]  # row names 1..n, nothing else
        beside = path.with_name("labels.csv")  # pyreadr writes no attributes: the labels are beside the files
        with beside.open(encoding="utf-8", newline="") if beside.exists() else contextlib.nullcontext([]) as handle:
            labels = {r["variable"]: r["label"] for r in csv.DictReader(handle) if r["file"] == path.name}
        return Read(_pandas_columns(frame), labels, frame=frame)
    read = {"stata": pyreadstat.read_dta, "spss": pyreadstat.read_sav, "sas": pyreadstat.read_xport}[fmt]
    options = {"user_missing": True} if fmt in ("stata", "spss") else {}
    frame, meta = read(path, **options)
    return Read(_pandas_columns(frame), meta.column_names_to_labels, meta=meta)


def _companion(fmt: str, name: str) -> str:
    """The documented name of a companion column: <field>_missing, <field>_m where SAS's 32 characters will not do."""
    return f"{name}_m" if fmt == "sas" and len(f"{name}_missing") > 32 else f"{name}_missing"


def _has_companion(fmt: str, kind: str) -> bool:
    """Where the documentation says a field's missing-data code goes into a companion column."""
    return fmt in ("sas", "rds", "parquet") or (fmt == "spss" and kind in ("date", "text")) or kind == "text"


def _decoded(fmt: str, read: Read, name: str, kind: str, codes: list[str], coded: bool) -> list[Any]:
    """A column back in the registry's terms: codes as codes, yes/no as booleans, Missing where a code was kept."""
    values = read.columns[name]
    companion = read.columns.get(_companion(fmt, name)) if coded and _has_companion(fmt, kind) else None
    decoded = []
    for row, value in enumerate(values):
        if fmt == "stata" and isinstance(value, str) and kind != "text":
            decoded.append(Missing(MissingCode(STATA_TAGS[value])))
        elif fmt == "spss" and coded and kind not in ("date", "text") and value in SPSS_VALUES:
            decoded.append(Missing(MissingCode(SPSS_VALUES[value])))
        elif companion is not None and companion[row] not in (None, ""):
            assert value is None, f"{name}: a coded value with a value beside it"
            decoded.append(Missing(MissingCode(companion[row])))
        elif value is None or (kind == "text" and value == ""):
            decoded.append(None)
        elif kind == "date" and fmt == "rds":  # pyreadr writes dates as ISO text
            decoded.append(date.fromisoformat(value))
        elif kind == "code" and fmt in ("stata", "spss", "sas"):
            assert value == int(value) and 1 <= value <= len(codes), (name, value)
            decoded.append(codes[int(value) - 1])
        elif kind == "yesno" and fmt in ("stata", "spss", "sas"):
            decoded.append({0: False, 1: True}[value])
        else:
            decoded.append(value)
    return decoded


def _python(values: pd.Series) -> list[Any]:
    """A cohort column as plain Python values (None where missing), independently of the module's conversion."""
    out = []
    for value in values:
        if pd.isna(value):
            out.append(None)
        elif isinstance(value, pd.Timestamp):
            out.append(value.date())
        elif hasattr(value, "item"):
            out.append(value.item())
        else:
            out.append(value)
    return out


def _cohort_kind(name: str, values: pd.Series) -> str:
    if name in COHORT_CODE_LISTS:
        return "code"
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return "date"
    if pd.api.types.is_bool_dtype(values.dtype):
        return "yesno"
    if pd.api.types.is_numeric_dtype(values.dtype):
        return "number"
    return "text"


def _sheet_kind(column) -> str:
    kind = column.source.type
    for sql_type, name in ((sa.Enum, "code"), (sa.Boolean, "yesno"), (sa.Date, "date"), (sa.Integer, "number"),
                           (sa.Float, "number")):  # fmt: skip
        if isinstance(kind, sql_type):
            return name
    return "text"


def _expected(engine: sa.Engine) -> tuple[pd.DataFrame, dict[str, list[dict[str, Any]]]]:
    """The cohort table (Config()) and each sheet's live records in key order, straight from the registry."""
    with engine.connect() as connection:
        tables = load_tables(connection)
        sheets = {}
        for sheet in SHEETS:
            stored = stored_rows(connection, sheet)
            sheets[sheet.name] = [stored[key] for key in sorted(stored) if not stored[key]["deleted"]]
    cohort = build_cohort(tables, Config())
    flagged = {(sid, name) for name in cohort.coded for sid in cohort.coded.index[cohort.coded[name]]}
    assert flagged == set(COHORT_CODED)  # the planted codes reached the cohort as documented
    return cohort.table.reset_index(), sheets


def _assert_dates_are_dates(fmt: str, read: Read, name: str) -> None:
    if fmt in DATE_FORMATS:
        assert read.meta["meta"].original_variable_types[name] == DATE_FORMATS[fmt], name
    if fmt == "parquet":
        assert str(read.meta["fields"][name].type) == "date32[day]", name
    assert all(isinstance(v, date) for v in read.columns[name] if v is not None and not isinstance(v, str)), name


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_file_holds_the_cohort_and_every_stored_record(registry: sa.Engine, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / "out"
    rows = export_statistical(registry, out, fmt, Config())
    cohort, sheets = _expected(registry)
    assert rows == {"cohort": 61, **{name: len(records) for name, records in sheets.items()}}
    assert rows["patients"] == 61 and rows["labs"] == 732
    extension = FORMATS[fmt]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            f"cohort{extension}",
            *(f"{s.name}{extension}" for s in SHEETS),
            *({"sas": ["formats.csv"], "rds": ["labels.csv"]}.get(fmt, [])),
        ]
    )

    # the cohort, as analysed: the same values, labels and codes
    read = _read(fmt, out / f"cohort{extension}")
    coded_columns = {name for _, name in COHORT_CODED}
    expected_columns = []
    for name in cohort.columns:
        kind = _cohort_kind(name, cohort[name])
        coded = name in coded_columns | {"pft_dlco_pct_pred", "pft_tlc_pct_pred"}
        expected_columns += [name, *([_companion(fmt, name)] if coded and _has_companion(fmt, kind) else [])]
        expected = _python(cohort[name])
        for (study_id, column), code in COHORT_CODED.items():
            if column == name:
                expected[list(cohort["study_id"]).index(study_id)] = Missing(MissingCode(code))
        assert _decoded(fmt, read, name, kind, COHORT_CODE_LISTS.get(name, []), coded) == expected, name
        if kind == "date":
            _assert_dates_are_dates(fmt, read, name)
    assert list(read.columns) == expected_columns
    first = {name: values[0] for name, values in read.columns.items()}
    index_date = date(2018, 6, 17) if fmt != "rds" else "2018-06-17"  # pyreadr writes dates as ISO text
    assert first["study_id"] == "DM-001" and first["index_date"] == index_date and first["time_days"] == 84
    assert first["ferritin"] == 2440.0 and first["age"] == pytest.approx(75.7974, abs=1e-4)
    groups = pd.Series(_decoded(fmt, read, "group", "code", COHORT_CODE_LISTS["group"], False)).value_counts()
    assert groups.to_dict() == {"tacrolimus": 35, "tofacitinib": 26}

    # every sheet: the stored records, without the birth date and free text
    dropped = left_out()
    assert set(dropped) == {"patients.birth_date", "adverse_events.term_detail"}
    for sheet in SHEETS:
        read = _read(fmt, out / f"{sheet.name}{extension}")
        columns = [c for c in sheet.columns if f"{sheet.name}.{c.name}" not in dropped]
        expected_columns = []
        for column in columns:
            kind = _sheet_kind(column)
            has = column.takes_code and _has_companion(fmt, kind)
            expected_columns += [column.name, *([_companion(fmt, column.name)] if has else [])]
            codes = list(column.source.type.enums) if kind == "code" else []
            decoded = _decoded(fmt, read, column.name, kind, codes, column.takes_code)
            assert decoded == [record[column.name] for record in sheets[sheet.name]], (sheet.name, column.name)
            if kind == "date":
                _assert_dates_are_dates(fmt, read, column.name)
        assert list(read.columns) == expected_columns, sheet.name
    patients = _read(fmt, out / f"patients{extension}")
    assert "birth_date" not in patients.columns
    assert "term_detail" not in _read(fmt, out / f"adverse_events{extension}").columns
    recovered = {}
    for sheet, study_id, column, _ in PLANTED:
        read = _read(fmt, out / f"{sheet}{extension}")
        kind = _sheet_kind(SHEETS_BY_NAME[sheet].column(column))
        codes = list(SHEETS_BY_NAME[sheet].column(column).source.type.enums) if kind == "code" else []
        values = _decoded(fmt, read, column, kind, codes, True)
        rows = zip(values, read.columns["study_id"], strict=True)
        recovered[sheet, study_id, column] = {
            v.code.value for v, sid in rows if sid == study_id and isinstance(v, Missing)
        }
    assert recovered == {(sheet, sid, column): {code} for sheet, sid, column, code in PLANTED}


@pytest.mark.parametrize("fmt", ["stata", "spss", "sas", "rds", "parquet"])
def test_variable_labels_value_labels_and_formats(registry: sa.Engine, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / "out"
    export_statistical(registry, out, fmt, Config())
    extension = FORMATS[fmt]
    cohort = _read(fmt, out / f"cohort{extension}")
    labels = cohort_labels(Config())
    assert {name: cohort.labels[name] for name in labels if name in cohort.labels} == {
        name: label for name, label in labels.items() if name in cohort.labels
    }
    assert cohort.labels["age"] == "Age at the index date (years)"
    assert cohort.labels["dead_by_183"] == "Died by day 183 (6 months)"
    if fmt in ("sas", "rds", "parquet"):  # Stata and SPSS mark the code in the column itself
        assert cohort.labels[_companion(fmt, "smoking")] == "Missing-data code: Smoking"
    if fmt != "stata":  # SPSS's dates: a companion too
        patients = _read(fmt, out / f"patients{extension}")
        assert patients.labels["dm_diagnosis_date_missing"] == "Missing-data code: Date of DM diagnosis"
    assert all(cohort.labels[name] for name in cohort.columns), "a column without a label"
    pfts = _read(fmt, out / f"pfts{extension}")
    entries = {(e.table, e.column): e for e in sheet_dictionary()}
    assert pfts.labels["fvc_l"] == "FVC (L)" and pfts.labels["fvc_pct_pred"] == "FVC % predicted"
    assert (
        _read(fmt, out / f"hrct{extension}").labels["ggo_right_upper_pct"]
        == "Ground-glass opacity, right upper zone (% of zone)"
    )
    assert _read(fmt, out / f"labs{extension}").labels["unit"] == entries["labs", "unit"].label
    unknown = MissingCode.UNKNOWN.label
    if fmt == "stata":
        value_labels = cohort.meta["meta"].variable_value_labels
        assert value_labels["group"] == {1: "Tofacitinib", 2: "Tacrolimus"}
        assert value_labels["smoking"] == {1: "Never smoked", 2: "Former smoker", 3: "Current smoker", "a": unknown,
                                           "b": "Not done", "c": "Not applicable", "d": "Not asked"}  # fmt: skip
        assert value_labels["rpild"] == {0: "no", 1: "yes", "a": unknown, "b": "Not done", "c": "Not applicable",
                                         "d": "Not asked"}  # fmt: skip
        assert value_labels["cr_status"] == {0: "Censored", 1: "Death", 2: "Lung transplantation before death"}
        assert cohort.meta["meta"].missing_user_values["hrct_total_score"] == ["a"]  # the tags present: DM-012's
        assert all(len(name) <= 32 for name in cohort.meta["meta"].variable_to_label.values())
        patients = _read(fmt, out / "patients.dta").meta["meta"]
        assert patients.variable_value_labels["dm_diagnosis_date"]["b"] == "Not done"  # a date's own tag
    if fmt == "spss":
        meta = cohort.meta["meta"]
        assert meta.variable_value_labels["sex"] == {1: "Female", 2: "Male"}
        assert meta.variable_value_labels["hrct_total_score"] == {-99: unknown, -98: "Not done",
                                                                  -97: "Not applicable", -96: "Not asked"}  # fmt: skip
        assert meta.missing_ranges["smoking"] == [{"lo": -99.0, "hi": -96.0}]
        assert meta.variable_measure["group"] == "nominal" and meta.variable_measure["age"] == "scale"
    if fmt == "sas":
        types = cohort.meta["meta"].original_variable_types
        # each variable names its format (readstat shows a format given without a width without its dot)
        assert [types[name] for name in ("group", "smoking", "rpild", "cr_status")] == ["STUDYDRG", "SMOKING", "YESNO",
                                                                                       "CRSTATUS"]  # fmt: skip
        assert cohort.meta["meta"].table_name == "cohort"
        with (out / "formats.csv").open(newline="") as handle:
            formats = list(csv.reader(handle))
        assert formats[0] == ["FMTNAME", "START", "LABEL", "TYPE"]
        assert ["STUDYDRG", "1", "Tofacitinib", "N"] in formats and ["YESNO", "1", "yes", "N"] in formats
        assert ["AEOUTCOM", "5", "Fatal", "N"] in formats
        names = {row[0] for row in formats[1:]}
        assert all(len(name) <= 8 and not name[-1].isdigit() for name in names)
        used = {
            t.rstrip(".")
            for f in out.glob("*.xpt")
            for t in _read(fmt, f).meta["meta"].original_variable_types.values()
            if t
        }
        assert used - {"DATE9"} <= names  # every format a variable names is defined
    if fmt == "parquet":
        fields = cohort.meta["fields"]
        assert str(fields["group"].type) == "dictionary<values=string, indices=int32, ordered=0>"
        assert str(fields["smoking_missing"].type).startswith("dictionary<values=string")
        assert fields["smoking_missing"].metadata[b"missing_codes_of"] == b"smoking"
        assert b"Never smoked" in fields["smoking"].metadata[b"codes"]
        assert cohort.meta["file"][b"label"] == b"Analysis dataset, one row per patient"


def test_parquet_and_r_factors_keep_the_whole_code_list(registry: sa.Engine, tmp_path: Path) -> None:
    """The levels are the code list, used or not: a statistician's tables show the empty categories too."""
    import pyarrow.parquet as parquet
    import pyreadr

    export_statistical(registry, tmp_path / "parquet", "parquet", Config())
    export_statistical(registry, tmp_path / "rds", "rds", Config())
    every_term = list(SHEETS_BY_NAME["adverse_events"].column("term").source.type.enums)
    table = parquet.read_table(tmp_path / "parquet" / "adverse_events.parquet")
    assert table.column("term").chunk(0).dictionary.to_pylist() == every_term
    frame = pyreadr.read_r(tmp_path / "rds" / "adverse_events.rds")[None]
    assert list(frame["term"].cat.categories) == every_term
    assert list(frame["outcome_missing"].cat.categories) == [code.value for code in MissingCode]
    assert str(frame["serious"].dtype) == "bool"


@needs_r
def test_r_reads_factors_dates_and_labels(registry: sa.Engine, tmp_path: Path) -> None:
    """What an R user does with the files: readRDS, as.Date, and the labels from labels.csv."""
    export_statistical(registry, tmp_path / "out", "rds", Config())
    script = (
        'x <- readRDS("cohort.rds"); p <- readRDS("patients.rds"); h <- readRDS("hrct.rds")\n'
        'l <- read.csv("labels.csv"); label <- function(f, v) l$label[l$file == f & l$variable == v]\n'
        'cat(nrow(x), class(x$index_date), format(as.Date(x$index_date[1])), is.factor(x$group), levels(x$group), "\\n")\n'
        'cat(label("cohort.rds", "age"), "|", label("cohort.rds", "index_date"), "|", label("cohort.rds", ""), "\\n")\n'
        'cat(as.character(x$smoking_missing[x$study_id == "DM-010"]), is.na(x$smoking[x$study_id == "DM-010"]), "\\n")\n'
        'cat(class(p$rpild), as.character(p$dm_diagnosis_date_missing[p$study_id == "DM-010"]), "\\n")\n'
        'cat(is.na(h$total_score[h$study_id == "DM-012"]), sum(x$event), typeof(x$time_days), "\\n")\n'
    )
    result = subprocess.run(["Rscript", "-e", script], cwd=tmp_path / "out", capture_output=True, text=True, check=True)
    assert result.stdout.splitlines() == [
        "61 character 2018-06-17 TRUE tofacitinib tacrolimus ",
        "Age at the index date (years) | Index date: start of the first study drug | Analysis dataset, one row per patient ",
        "unknown TRUE ",
        "logical not_done ",
        f"TRUE {sum(_expected(registry)[0]['event'])} double ",
    ]


# --- the labels, names and limits ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "config", [Config(), Config(landmarks={"90 days": 90, "2 years": 730})], ids=["default", "other landmarks"]
)
def test_every_cohort_column_has_a_label(demo_table: pd.DataFrame, migrated: sa.Engine, config: Config) -> None:
    """A new column of the analysis dataset cannot leave unlabelled: this fails until it is given its label."""
    labels = cohort_labels(config)
    empty = build_cohort(load_tables(migrated), config).table
    demo = demo_table if config == Config() else None
    for table in (empty, demo):
        if table is None:
            continue
        columns = ["study_id", *table.columns]
        assert [name for name in columns if name not in labels] == []
        assert all(0 < len(labels[name]) <= 80 for name in columns)  # Stata's limit
    assert {f"dead_by_{days}" for days in config.landmarks.values()} <= set(empty.columns)


def test_an_unlabelled_cohort_column_stops_the_export_and_nothing_is_written(
    registry: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def with_new_column(tables, config):
        cohort = build_cohort(tables, config)
        cohort.table["new_score"] = 1.0
        return cohort

    monkeypatch.setattr(statistical, "build_cohort", with_new_column)
    with pytest.raises(StatisticalExportError, match="cohort column new_score has no variable label"):
        export_statistical(registry, tmp_path / "out", "stata", Config())
    assert not (tmp_path / "out").exists()


def test_a_failure_midway_leaves_no_folder(
    registry: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = []

    def failing(dataset, path, fmt):
        if len(written) == 3:
            raise OSError(28, "No space left on device")
        written.append(dataset.name)
        path.write_bytes(b"x")

    monkeypatch.setattr(statistical, "write_dataset", failing)
    with pytest.raises(OSError, match="No space left"):
        export_statistical(registry, tmp_path / "out", "parquet", Config())
    assert written == ["cohort", "patients", "antibody_tests"]
    assert not (tmp_path / "out").exists() and list(tmp_path.glob(".out.*")) == []


def _one(variable: Variable, values: list[Any]) -> Dataset:
    return Dataset("things", "Synthetic", [Variable("study_id", "Study ID", "text"), variable],
                   {"study_id": ["X-1"] * len(values), variable.name: values})  # fmt: skip


def test_what_a_format_cannot_hold_is_refused_naming_the_column() -> None:
    long_name = "a_very_long_variable_name_of_33_c"
    assert len(long_name) == 33
    with pytest.raises(StatisticalExportError, match=f"stata file things.dta: column {long_name}: its name"):
        check(_one(Variable(long_name, "Long", "number"), [1.0]), "stata")
    check(_one(Variable(long_name, "Long", "number"), [1.0]), "spss")  # SPSS holds 64
    with pytest.raises(
        StatisticalExportError, match=r"column score: its label 'L{81}' is 81 characters; stata holds 80"
    ):
        check(_one(Variable("score", "L" * 81, "number"), [1.0]), "stata")
    long_code = Variable("kind", "Kind", "code", codes=(("x", "é" * 61),), labels_name="KIND")
    with pytest.raises(StatisticalExportError, match=r"column kind: its value label .* 122 bytes; spss holds 120"):
        check(_one(long_code, ["x"]), "spss")
    with pytest.raises(StatisticalExportError, match="column kind: LONGFORMAT cannot name a SAS format"):
        check(_one(Variable("kind", "Kind", "code", codes=(("x", "X"),), labels_name="LONGFORMAT"), ["x"]), "sas")
    # a companion column: <field>_missing, else <field>_m, else refused
    thirty = "consolidation_right_middle_pct"
    coded = Variable(thirty, "Extent", "number", takes_code=True)
    assert statistical.companion(coded, "sas") == f"{thirty}_m" and statistical.companion(coded, "rds") == (
        f"{thirty}_missing"
    )
    check(_one(coded, [1.0]), "sas")
    with pytest.raises(StatisticalExportError, match="column consolidation_right_middle_pct_x: its missing-data codes"):
        check(_one(Variable(f"{thirty}_x", "Extent", "number", takes_code=True), [1.0]), "sas")
    with pytest.raises(
        StatisticalExportError, match=r"column score: the value -97\.0 would read as a missing-data code"
    ):
        check(_one(Variable("score", "Score", "number", takes_code=True), [-97.0]), "spss")
    clash = Dataset("things", "Synthetic", [Variable("score", "Score", "number", takes_code=True),
                                            Variable("score_missing", "Other", "text")],
                    {"score": [1.0], "score_missing": ["x"]})  # fmt: skip
    with pytest.raises(StatisticalExportError, match="column score_missing: the same name as column score_missing"):
        check(clash, "parquet")


def test_an_unknown_format_is_refused(registry: sa.Engine, tmp_path: Path) -> None:
    with pytest.raises(StatisticalExportError, match="unknown format 'xls': one of stata, spss, sas, rds, parquet"):
        export_statistical(registry, tmp_path / "out", "xls", Config())
    assert FORMATS == {"stata": ".dta", "spss": ".sav", "sas": ".xpt", "rds": ".rds", "parquet": ".parquet"}


def test_left_out_is_the_birth_date_and_the_free_text_the_pseudonymised_export_drops() -> None:
    free_text = {f"{sheet.name}.{name}" for sheet in workbook_sheets(None) for name in _dropped_columns(sheet)}
    assert set(left_out()) == {"patients.birth_date", *free_text}
    assert free_text == {"adverse_events.term_detail"}


def test_an_empty_registry_gives_empty_files(migrated: sa.Engine, tmp_path: Path) -> None:
    for fmt in FORMATS:
        rows = export_statistical(migrated, tmp_path / fmt, fmt, Config())
        assert set(rows.values()) == {0}
        read = _read(fmt, tmp_path / fmt / f"cohort{FORMATS[fmt]}")
        assert "index_date" in read.columns and read.columns["study_id"] == []


# --- privacy ---------------------------------------------------------------------------------------------------------
def _identities(engine: sa.Engine) -> None:
    """SYNTHETIC names and hospital numbers for the first three patients."""
    with audited_session(engine, actor="test", reason="synthetic identifiers") as session:
        ids = session.execute(sa.select(Patient.id).order_by(Patient.study_id).limit(3)).scalars().all()
        for i, patient_id in enumerate(ids):
            session.add(PatientIdentifier(patient_id=patient_id, full_name=f"Zhao Wei{'xyz'[i]}",
                                          hospital_number=f"H77{i:05d}"))  # fmt: skip
        session.commit()


def test_the_privacy_scan_reads_every_statistical_file_and_finds_nothing(registry: sa.Engine, tmp_path: Path) -> None:
    _identities(registry)
    out = tmp_path / "exports"
    for fmt in FORMATS:
        export_statistical(registry, out / fmt, fmt, Config())
    url = registry.url.render_as_string(hide_password=False)
    result = runner.invoke(app, ["--database", url, "privacy", "scan", str(out)], catch_exceptions=False)
    files = sum(1 for p in out.rglob("*") if p.is_file())
    assert files == 5 * 9 + 2  # every sheet and the cohort in five formats, SAS's formats.csv and R's labels.csv
    assert (result.exit_code, result.stdout) == (0, f"{files} files scanned, 0 identifiers found\n")


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_a_birth_date_planted_in_a_statistical_file_is_found(registry: sa.Engine, tmp_path: Path, fmt: str) -> None:
    """The scan can fail: a registered birth date as a date cell, and (where the format has labels the scan reads) a
    registered name in a variable label."""
    _identities(registry)
    with registry.connect() as connection:
        identifiers = registered_identifiers(connection)
    birth = identifiers.birth_date_of["DM-001"]
    label = "Visit" if fmt == "rds" else "Visit of Zhao Weix"
    planted = Dataset(
        "patients",  # named as the patients sheet: no file but the full export's CSV or workbook may hold birth dates
        "Synthetic",
        [Variable("study_id", "Study ID", "text"), Variable("visit", label, "date"), Variable("n", "N", "number")],
        {"study_id": ["DM-002", "DM-001"], "visit": [date(2019, 3, 4), birth], "n": [13912345678.0, 22344.0]},
    )
    path = tmp_path / f"patients{FORMATS[fmt]}"
    write_dataset(planted, path, fmt)
    result = Scanner(identifiers).scan([path])
    assert result.unreadable == [] and result.allowed == {}
    found = [(f.location, f.kind, f.masked) for f in result.findings]
    expected = [("row 3, column visit", BIRTH_DATE, "1********0"), ("row 2, column n", "phone number", "1*********8")]
    if fmt != "rds":  # pyreadr reads no attributes: an R file's labels go unread (the data are read)
        where = "label of column visit" if fmt != "parquet" else "metadata of column visit"
        expected.append((where, NAME, "Z*******x"))
    assert sorted(found) == sorted(expected)  # 22344 is a measurement here, not the Excel serial of a birth date
    assert birth == date(1942, 8, 30)


def test_an_unreadable_statistical_file_is_reported_not_skipped(tmp_path: Path) -> None:
    from registry.privacy import Identifiers

    for suffix in (".dta", ".sav", ".xpt", ".rds", ".parquet"):
        (tmp_path / f"broken{suffix}").write_bytes(b"not a statistical file\x00")
    result = Scanner(Identifiers()).scan([tmp_path])
    assert result.scanned == []
    assert sorted(line.split(": ", 1)[1].split(" (")[0] for line in result.unreadable) == [
        "not a readable Parquet file", "not a readable R file", "not a readable SAS transport file",
        "not a readable SPSS file", "not a readable Stata file"]  # fmt: skip


def test_export_command_writes_a_statistical_folder(registry: sa.Engine, tmp_path: Path) -> None:
    url = registry.url.render_as_string(hide_password=False)
    out = tmp_path / "stata"
    done = runner.invoke(app, ["--database", url, "export", "--format", "stata", str(out)])
    assert done.exit_code == 0, done.output
    assert done.output.strip() == (
        f"Exported stata files (rows) to {out}: cohort 61, patients 61, antibody_tests 122, labs 732, pfts 61, "
        "hrct 61, treatments 243, adverse_events 45, follow_up 61"
    )
    refused = runner.invoke(app, ["--database", url, "export", "--format", "stata", str(tmp_path / "x"),
                                  "--pseudonymise"])  # fmt: skip
    assert (refused.exit_code, refused.output.strip()) == (
        2,
        "Nothing written: --pseudonymise, --key-file and --site go with the workbook format",
    )
    assert not (tmp_path / "x").exists()
