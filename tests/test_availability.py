"""No stored value, however odd, stops the registry (issue 16, point 1).

A coordinator saved a lab dated 0001-01-01 and a patient born 1600-01-01, and from then
on ``registry check``, ``analyze``, ``report``, the web's "Checks and report" page and
the PDF download failed for everyone (pandas' nanosecond timestamps end in 1677).

- Entry and import refuse dates outside 1900-01-01 to 2100-12-31 with the row's message.
- Whatever the database holds all the same (data stored before that rule, or by other
  tools) is read, checked, analysed, reported, exported and shown: the property test
  stores values drawn from the whole domain each column's type and constraints accept
  (any date a date column holds, any float including infinities and NaN, any text of
  the column's length, any integer of the column), on SQLite and PostgreSQL, on top of
  the demo cohort, and runs the commands over them.
"""

from __future__ import annotations

import csv
import math
import os
import re
from datetime import date
from pathlib import Path
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from conftest import WEB_PASSWORD, add_demo_site
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st
from test_web import sign_in
from test_web_entry import csrf_of
from typer.testing import CliRunner

from registry.accounts import create_account
from registry.audit import audited_session
from registry.cli import app
from registry.codes import Role
from registry.cuts import load_cut, snapshot_text
from registry.ingest import import_path, import_sheets
from registry.models import (
    AdverseEvent,
    AntibodyTest,
    FollowUp,
    Hrct,
    LabResult,
    Patient,
    Pft,
    Site,
    Treatment,
    is_bookkeeping,
)
from registry.resources import resource_dir
from registry.web.app import create_app
from registry.workbook import RawSheet

runner = CliRunner()
DEMO = Path(resource_dir("fixtures/demo", "_fixtures/demo", "patients.csv"))
CHILDREN = (AntibodyTest, LabResult, Pft, Hrct, Treatment, AdverseEvent, FollowUp)
#: Examples per database: the default keeps the suite quick; REGISTRY_PROPERTY_EXAMPLES=200 explores further.
EXAMPLES = int(os.environ.get("REGISTRY_PROPERTY_EXAMPLES", "6"))


def _invoke(url: str, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["--database", url, *args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception  # the traceback of a crash, not an exit code
    return result.exit_code, result.output


@pytest.fixture
def demo_registry(migrated: sa.Engine) -> sa.Engine:
    add_demo_site(migrated)
    assert import_path(migrated, DEMO, actor="test").written
    with audited_session(migrated, actor="test") as session:
        create_account(session, "dana", WEB_PASSWORD, Role.DATA_MANAGER)
        session.commit()
    return migrated


def _url(engine: sa.Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def _signed_in(engine: sa.Engine) -> TestClient:
    client = TestClient(create_app(engine, secret_key="test-secret"))
    assert sign_in(client, "dana").status_code == 303
    return client


def _runs_everywhere(engine: sa.Engine, out: Path, study_ids: list[str]) -> None:
    """Every command and page that reads the registry completes: no traceback, no HTTP 500."""
    url = _url(engine)
    code, output = _invoke(url, "check", "--json", str(out / "findings.json"), "--html", str(out / "findings.html"))
    assert code in (0, 2), output
    code, output = _invoke(url, "analyze", "--json", str(out / "results.json"))
    assert code == 0, output
    code, output = _invoke(url, "report", "--allow-dq-errors", "--out", str(out / "report.pdf"))
    assert code == 0 and (out / "report.pdf").read_bytes().startswith(b"%PDF"), output
    code, output = _invoke(url, "export", str(out / "export"))
    assert code == 0, output
    code, output = _invoke(url, "export", str(out / "export.xlsx"))  # refused, and said why, for control characters
    assert code == 0 or (
        code == 2 and "which an .xlsx cell cannot hold" in output and not (out / "export.xlsx").exists()
    )
    key = out / "registry.key"
    key.write_bytes(bytes(range(48)))
    code, output = _invoke(url, "export", str(out / "shared"), "--pseudonymise", "--key-file", str(key))
    assert code == 0 or (code == 2 and "cannot be shifted by" in output and not (out / "shared").exists()), output
    client = _signed_in(engine)
    for path in ("/patients", "/checks", *(f"/patients/{quote(sid, safe='')}" for sid in study_ids)):
        assert client.get(path).status_code == 200, path
    assert client.post("/checks", data={"csrf_token": csrf_of(client, "/checks")}).status_code == 200
    pdf = client.get("/report.pdf")  # refused while error findings are open, as the command line refuses
    assert (pdf.status_code, pdf.content[:4]) == (200, b"%PDF") or pdf.status_code == 409, pdf.text


# --- the issue's own case --------------------------------------------------------------------


def test_a_lab_dated_year_1_and_a_birth_in_1600_stop_nothing(demo_registry, tmp_path):
    """Stored before entry refused such dates (here by SQL): every command and page still works."""
    with demo_registry.begin() as connection:
        first, last = connection.execute(sa.select(LabResult.id).where(LabResult.patient_id == 1).limit(2)).scalars()
        connection.execute(sa.update(LabResult).where(LabResult.id == first).values(sample_date=date(1, 1, 1)))
        connection.execute(sa.update(LabResult).where(LabResult.id == last).values(sample_date=date(9999, 12, 31)))
        connection.execute(sa.update(Patient).where(Patient.id == 2).values(birth_date=date(1600, 1, 1)))
        study_id = connection.execute(sa.select(Patient.study_id).where(Patient.id == 2)).scalar_one()
    _runs_everywhere(demo_registry, tmp_path, [study_id])
    code, output = _invoke(_url(demo_registry), "check")
    assert code == 2 and re.search(r"PAT-010 .* error .* 1 ", output)  # age at diagnosis over 100: an error finding
    exported = (tmp_path / "export" / "labs.csv").read_text()
    assert ",0001-01-01," in exported  # the stored date, exported as it is
    assert _invoke(_url(demo_registry), "backup", str(tmp_path / "backup"))[0] == 0
    assert _invoke(_url(demo_registry), "cut", "create", "--date", "2021-06-30", "--name", "odd")[0] == 0
    code, output = _invoke(_url(demo_registry), "analyze", "--cut", "odd", "--json", str(tmp_path / "cut.json"))
    assert code == 0, output
    frozen = load_cut(demo_registry, "odd")[0]
    dates = frozen["lab_result"]["sample_date"]  # the snapshot gives both dates back
    assert {str(d.date()) for d in dates if d.year in (1, 9999)} == {"0001-01-01", "9999-12-31"}
    assert b'"0001-01-01"' in snapshot_text(frozen)  # ISO 8601 (strftime wrote "1-01-01")
    code, output = _invoke(_url(demo_registry), "export", str(tmp_path / "shared-2"), "--pseudonymise", "--key-file",
                           str(tmp_path / "registry.key"))  # fmt: skip
    # The patient's one shift cannot move both dates (it is never 0): refused rather than shared unshifted.
    assert code == 2 and not (tmp_path / "shared-2").exists()
    assert re.fullmatch(
        r"Nothing written: labs: sample_date (0001-01-01 of DM-\d{3} cannot be shifted by -|9999-12-31 of DM-\d{3} "
        r"cannot be shifted by )\d+ days \(the calendar ends at years 1 and 9999\): correct the date first\n",
        output,
    ), output


def _patients(*rows: list[str]) -> RawSheet:
    header = ["study_id", "site", "sex", "birth_date"]
    return RawSheet("patients", "patients", header, [(n, row) for n, row in enumerate(rows, start=2)])


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("0001-01-01", '"0001-01-01" is outside 1900-01-01 to 2100-12-31: a date so far off is a typing error'),
        ("1899-12-31", '"1899-12-31" is outside 1900-01-01 to 2100-12-31: a date so far off is a typing error'),
        ("2101-01-01", '"2101-01-01" is outside 1900-01-01 to 2100-12-31: a date so far off is a typing error'),
    ],
)
def test_import_refuses_a_date_outside_1900_to_2100_and_writes_nothing(migrated, cell, message):
    add_demo_site(migrated)
    result = import_sheets(migrated, [_patients(["P-1", "DEMO", "female", cell])], actor="t", reason="test")
    assert [str(problem) for problem in result.errors] == [f"patients row 2, column birth_date: {message}"]
    assert not result.written
    with migrated.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(Patient)).scalar_one() == 0


def test_import_accepts_the_first_and_last_day_of_the_range(migrated):
    add_demo_site(migrated)
    sheet = _patients(["P-1", "DEMO", "female", "1900-01-01"], ["P-2", "DEMO", "male", "2100-12-31"])
    assert import_sheets(migrated, [sheet], actor="t", reason="test").written


def test_a_web_form_refuses_a_date_outside_the_range_and_saves_nothing(demo_registry):
    client = _signed_in(demo_registry)
    path = "/patients/DM-001/labs/new"
    lab = {"analyte": "ferritin", "sample_date": "0001-01-01", "value": "500", "unit": "ng/mL"}
    refused = client.post(path, data={"csrf_token": csrf_of(client, path), **lab}, follow_redirects=False)
    shown = re.search(r'<span class="field-error" id="error-sample_date">([^<]*)</span>', refused.text).group(1)
    assert refused.status_code == 422
    assert shown == "is outside 1900-01-01 to 2100-12-31: a date so far off is a typing error"
    with demo_registry.connect() as connection:
        assert not connection.execute(sa.select(LabResult.id).where(LabResult.sample_date < date(1900, 1, 1))).all()


def test_text_with_a_control_character_is_refused_at_import(migrated):
    add_demo_site(migrated)
    sheet = _patients(["P-1", "DEMO", "female", "1960-01-01"])
    header = ["study_id", "onset_date", "term", "term_detail", "ctcae_grade", "serious", "led_to_discontinuation"]
    events = RawSheet(
        "adverse_events", "adverse_events", header, [(2, ["P-1", "2020-01-01", "other", "bell\x07", "2", "no", "no"])]
    )
    result = import_sheets(migrated, [sheet, events], actor="t", reason="test")
    assert [str(problem) for problem in result.errors] == [
        'adverse_events row 2, column term_detail: "bell\x07" contains the control character U+0007 (text may hold '
        "tabs and line breaks, no other control character: an .xlsx cell cannot hold one)"
    ]
    assert not result.written


def test_an_xlsx_export_of_a_stored_control_character_is_refused_and_a_csv_export_keeps_it(demo_registry, tmp_path):
    """Stored by other means (entry refuses it): the .xlsx is refused naming the cell, nothing is written."""
    with demo_registry.begin() as connection:
        event = connection.execute(sa.select(sa.func.min(AdverseEvent.id))).scalar_one()
        connection.execute(sa.update(AdverseEvent).where(AdverseEvent.id == event).values(term_detail="bell\x07"))
    assert _invoke(_url(demo_registry), "export", str(tmp_path / "out"))[0] == 0
    with (tmp_path / "out" / "adverse_events.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    row = next(number for number, cells in enumerate(rows, start=1) if "bell\x07" in cells)  # kept as it is
    code, output = _invoke(_url(demo_registry), "export", str(tmp_path / "out.xlsx"))
    assert code == 2 and not (tmp_path / "out.xlsx").exists()
    assert output.strip() == (
        f"Nothing written: sheet adverse_events row {row}, column term_detail holds the control character U+0007, "
        "which an .xlsx cell cannot hold: correct the value, or write a folder of CSV files (a path without .xlsx)"
    )


# --- the property test ---------------------------------------------------------------------------

#: Text of any Unicode character a database stores (PostgreSQL refuses NUL, as entry does; lone surrogates are
#: not characters).
_TEXT_CHARACTERS = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")


def _domain(column: sa.Column) -> st.SearchStrategy:
    """Every value ``column``'s type can hold (its CHECK constraints are the database's to apply)."""
    kind = column.type
    if isinstance(kind, sa.Enum):
        values = st.sampled_from(kind.enums)
    elif isinstance(kind, sa.String):
        values = st.text(_TEXT_CHARACTERS, min_size=1, max_size=kind.length or 500)
    elif isinstance(kind, sa.Date):
        values = st.dates()  # 0001-01-01 to 9999-12-31: every date the database driver reads and writes
    elif isinstance(kind, sa.Boolean):
        values = st.booleans()
    elif isinstance(kind, sa.Integer):
        values = st.integers(-(2**31), 2**31 - 1)
    elif isinstance(kind, sa.Float):
        values = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, 5e-324, 1.7976931348623157e308])
    else:
        raise TypeError(f"no strategy for {kind!r}")
    return st.none() | values if column.nullable else values


def _fields(model: type) -> dict[str, st.SearchStrategy]:
    table = model.__table__
    return {
        column.name: _domain(column)
        for column in table.columns
        if not (column.primary_key or column.foreign_keys or is_bookkeeping(column))
    }


@st.composite
def _odd_records(draw: st.DrawFn, patients: list[int]) -> list[tuple[type, dict, int | None]]:
    """A new patient and child records for them or for patients of the demo cohort (None: the new patient)."""
    records = [(Patient, draw(st.fixed_dictionaries(_fields(Patient))), None)]
    for model in CHILDREN:
        for _ in range(draw(st.integers(0, 3))):
            owner = draw(st.none() | st.sampled_from(patients))
            records.append((model, draw(st.fixed_dictionaries(_fields(model))), owner))
    return records


def _store(engine: sa.Engine, records: list[tuple[type, dict, int | None]]) -> list[str]:
    """Each record the database accepts, by the library's audited path; the study_ids of the patients touched."""
    new_patient, touched = None, set()
    with audited_session(engine, actor="property test") as session:
        site = session.exec(sa.select(Site.id)).scalars().first()
        for model, values, owner in records:
            try:
                with session.begin_nested():
                    if model is Patient:
                        record = Patient(**values, site_id=site)
                    else:
                        if owner is None and new_patient is None:
                            continue
                        record = model(**values, patient_id=owner or new_patient.id)
                    session.add(record)
                    session.flush()
            except (sa.exc.IntegrityError, sa.exc.DataError):
                continue  # refused by the database: not storable, so not part of the domain
            if model is Patient:
                new_patient = record
            touched.add(record.id if model is Patient else record.patient_id)
        session.commit()
        return list(session.exec(sa.select(Patient.study_id).where(Patient.id.in_(touched))).scalars())


def _key(model: type) -> sa.Column:
    return next(iter(model.__table__.primary_key.columns))  # follow_up's is its patient_id


def _remove_since(engine: sa.Engine, baseline: dict[str, int]) -> None:
    """Back to the demo cohort: the rows stored since ``baseline`` (the largest id of each table) deleted."""
    with engine.begin() as connection:
        for model in (*reversed(CHILDREN), Patient):
            connection.execute(sa.delete(model).where(_key(model) > baseline[model.__tablename__]))


def test_every_storable_value_is_checked_analysed_reported_and_exported(demo_registry, tmp_path):
    with demo_registry.connect() as connection:
        patients = list(connection.execute(sa.select(Patient.id)).scalars())
        baseline = {
            model.__tablename__: connection.execute(sa.select(sa.func.max(_key(model)))).scalar_one()
            for model in (Patient, *CHILDREN)
        }
    examples = iter(range(10**6))

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=not os.environ.get("REGISTRY_PROPERTY_EXAMPLES"),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        phases=[Phase.explicit, Phase.reuse, Phase.generate],  # no shrinking: an example takes seconds; it is printed
    )
    @given(records=_odd_records(patients))
    def stored_values_stop_nothing(records: list[tuple[type, dict, int | None]]) -> None:
        out = tmp_path / str(next(examples))
        out.mkdir()
        try:
            _runs_everywhere(demo_registry, out, _store(demo_registry, records))
        finally:
            _remove_since(demo_registry, baseline)

    stored_values_stop_nothing()


def test_the_domain_reaches_the_odd_corners():
    """The strategies can draw what broke the registry: dates before 1677 and after 2262, infinite floats."""
    dates = _domain(Patient.__table__.c.birth_date)
    assert find(dates, lambda d: d.year < 1677) and find(dates, lambda d: d.year > 2262)
    assert math.isinf(find(_domain(LabResult.__table__.c.value), math.isinf))
    assert math.isnan(find(_domain(LabResult.__table__.c.value), math.isnan))
