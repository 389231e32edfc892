"""Queries (registry/queries.py) and `registry query`, on SQLite and PostgreSQL: the thread, the statuses, the scoping,
the corrections that answer a query, the errors confirmed at entry that open one, and what the database refuses."""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from registry import db
from registry.audit import AuditError, audit_history, audited_session
from registry.cli import app
from registry.config import Config
from registry.entry import form_values, save_record
from registry.entry_checks import EntryChecks
from registry.ingest import import_path
from registry.models import AuditLog, DataQuery, LabResult, Patient, QueryMessage, Site
from registry.queries import About, QueryError, answer, close, list_queries, open_query, reopen, thread
from registry.sheets import SHEETS_BY_NAME
from tests.conftest import add_demo_site

DIRTY = Path(__file__).resolve().parents[1] / "fixtures" / "dirty" / "sheets"
runner = CliRunner()


@pytest.fixture
def dirty(migrated: sa.Engine) -> sa.Engine:
    """The seeded-defect registry (site DEMO) with a second site, OTHER, holding one patient."""
    add_demo_site(migrated)
    assert import_path(migrated, DIRTY, actor="test").written
    with audited_session(migrated, actor="admin") as session:
        session.add(Site(code="OTHER", name="Another centre (synthetic)"))
        session.flush()
        patient = session.execute(sa.select(Patient).where(Patient.study_id == "DM-001")).scalar_one()
        patient.site_id = session.execute(sa.select(Site.id).where(Site.code == "OTHER")).scalar_one()
        session.commit()
    return migrated


def _lab(engine: sa.Engine, study_id: str) -> LabResult:
    with engine.connect() as connection:
        patient_id = connection.execute(sa.select(Patient.id).where(Patient.study_id == study_id)).scalar_one()
    with sa.orm.Session(engine) as session:
        return session.execute(sa.select(LabResult).where(LabResult.patient_id == patient_id)
                               .order_by(LabResult.id)).scalars().first()  # fmt: skip


def test_a_query_goes_open_answered_closed_reopened_with_every_step_in_its_thread_and_audited(dirty):
    lab = _lab(dirty, "DM-002")
    about = About("lab_result", str(lab.id), "value")
    query = open_query(dirty, "DM-002", "  Is this value right?  ", actor="dm1", about=about)
    answer(dirty, query, "Checked the laboratory report: it is.", actor="cora", sites=["DEMO"])
    close(dirty, query, "Accepted.", actor="dm1")
    reopen(dirty, query, "The report says otherwise: look again.", actor="dm1")
    messages = thread(dirty, query)
    assert [(m.action.value, m.status.value, m.written_by, m.body) for m in messages] == [
        ("opened", "open", "dm1", "Is this value right?"),
        ("answered", "answered", "cora", "Checked the laboratory report: it is."),
        ("closed", "closed", "dm1", "Accepted."),
        ("reopened", "open", "dm1", "The report says otherwise: look again."),
    ]
    (row,) = list_queries(dirty).to_dict("records")
    assert (row["study_id"], row["table"], row["record"], row["field"], row["status"], row["messages"],
            row["last_action"], row["last_by"]) == ("DM-002", "lab_result", str(lab.id), "value", "open", 4,
                                                    "reopened", "dm1")  # fmt: skip
    history = [(e.table_name, e.action.value, e.actor) for e in audit_history(dirty, "DM-002")
               if e.table_name in ("data_query", "query_message")]  # fmt: skip
    assert history == [("data_query", "insert", "dm1"), ("query_message", "insert", "dm1"),
                       *[entry for actor in ("cora", "dm1", "dm1")
                         for entry in (("query_message", "insert", actor), ("data_query", "update", actor))]]  # fmt: skip


def test_steps_out_of_order_and_bad_input_are_refused_with_nothing_written(dirty):
    query = open_query(dirty, "DM-002", "Smoking history?", actor="dm1", about=About("patient", None, "smoking"))
    with dirty.connect() as connection:
        before = connection.execute(sa.select(sa.func.count()).select_from(AuditLog)).scalar_one()
    refusals = [
        (lambda: reopen(dirty, query, "again", actor="dm1"),
         "query 1 is open: it cannot be reopened (only a query answered or closed can)"),
        (lambda: answer(dirty, query, "   ", actor="cora"), "the message is required"),
        (lambda: answer(dirty, query, "x" * 2001, actor="cora"), "the message is longer than 2,000 characters"),
        (lambda: answer(dirty, query, "a\x00b", actor="cora"), "the message contains a NUL character"),
        (lambda: open_query(dirty, "DM-002", "again?", actor="dm1", about=About("patient", None, "smoking")),
         "query 1 on patient 2, field smoking of patient DM-002 is open: add to it rather than opening another"),
        (lambda: open_query(dirty, "DM-002", "?", actor="dm1", about=About("account", "1")),
         "table 'account' is not a table of patients' data: choose one of adverse_event, antibody_test, "
         "follow_up, hrct, lab_result, patient, pft, treatment"),
        (lambda: open_query(dirty, "DM-002", "?", actor="dm1", about=About("patient", None, "version")),
         "patient has no field 'version': choose one of study_id, sex, birth_date, smoking, dm_diagnosis_date, "
         "ild_diagnosis_date, resp_symptom_onset_date, ild_worsening_date, rpild, rpild_definition, gottron, "
         "heliotrope_rash, mechanics_hands, skin_ulcers, fever, arthritis, muscle_weakness"),
        (lambda: open_query(dirty, "DM-002", "?", actor="dm1", about=About("patient", None, "missing_codes")),
         "patient has no field 'missing_codes': choose one of study_id, sex, birth_date, smoking, dm_diagnosis_date, "
         "ild_diagnosis_date, resp_symptom_onset_date, ild_worsening_date, rpild, rpild_definition, gottron, "
         "heliotrope_rash, mechanics_hands, skin_ulcers, fever, arthritis, muscle_weakness"),
        (lambda: open_query(dirty, "DM-002", "?", actor="dm1", about=About("lab_result", "1")),
         "patient DM-002 has no lab_result record 1"),
        (lambda: open_query(dirty, "DM-002", "?", actor="dm1", about=About(None, None, "smoking")),
         "name the table of the record (--table) the query is about"),
    ]  # fmt: skip
    for refused, message in refusals:
        with pytest.raises(QueryError) as raised:
            refused()
        assert str(raised.value) == message
    close(dirty, query, "done", actor="dm1")
    with pytest.raises(QueryError, match=r"^query 1 is closed: it cannot be answered"):
        answer(dirty, query, "late", actor="cora")
    with dirty.connect() as connection:
        after = connection.execute(sa.select(sa.func.count()).select_from(AuditLog)).scalar_one()
    assert after == before + 2  # the closing only: its message and the query's new status


def test_a_coordinator_of_another_site_finds_no_query_of_this_site(dirty):
    query = open_query(dirty, "DM-002", "Smoking history?", actor="dm1", about=About("patient", None, "smoking"))
    with pytest.raises(LookupError, match=r"^no query 1$"):
        answer(dirty, query, "I should not see this", actor="olga", sites=["OTHER"])
    with pytest.raises(LookupError, match=r"^no query 1$"):
        thread(dirty, query, sites=["OTHER"])
    with pytest.raises(LookupError, match=r"^no patient DM-002$"):
        open_query(dirty, "DM-002", "?", actor="olga", sites=["OTHER"])
    assert list_queries(dirty, sites=["OTHER"]).empty
    assert list(list_queries(dirty, sites=["DEMO"])["query"]) == [query]


def test_correcting_the_field_answers_its_query_with_the_change_in_the_thread(dirty):
    lab = _lab(dirty, "DM-002")
    query = open_query(dirty, "DM-002", "Is the value right?", actor="dm1",
                       about=About("lab_result", str(lab.id), "value"))  # fmt: skip
    other = open_query(
        dirty, "DM-002", "And the date?", actor="dm1", about=About("lab_result", str(lab.id), "sample_date")
    )
    form = form_values(lab, SHEETS_BY_NAME["labs"])
    new = str(float(form["value"]) + 1)
    saved = save_record(dirty, "labs", form | {"value": new}, actor="cora", reason="transcription error",
                        patient_id=lab.patient_id, key=lab.id, version=lab.version)  # fmt: skip
    assert saved.answered == [query]
    last = thread(dirty, query)[-1]
    assert (last.action.value, last.status.value, last.written_by) == ("corrected", "answered", "cora")
    assert last.body == f"value changed from {form['value']} to {saved and new.removesuffix('.0')}: transcription error"
    assert [m.action.value for m in thread(dirty, other)] == ["opened"]  # another field's query is left alone


def test_a_birth_date_never_appears_in_a_thread_or_a_list(dirty):
    with dirty.connect() as connection:
        patient = connection.execute(sa.select(Patient).where(Patient.study_id == "DM-002")).one()
    query = open_query(dirty, "DM-002", "Birth date?", actor="dm1", about=About("patient", None, "birth_date"))
    sheet = SHEETS_BY_NAME["patients"]
    with sa.orm.Session(dirty) as session:
        form = form_values(session.get(Patient, patient.id), sheet, "DEMO")
    save_record(dirty, "patients", form | {"birth_date": "1960-02-03"}, actor="cora", reason="typo",
                key=patient.id, version=patient.version)  # fmt: skip
    body = thread(dirty, query)[-1].body
    assert body == "birth_date changed from (withheld: a birth date, see the patient's record) to (withheld: a birth " \
                   "date, see the patient's record): typo"  # fmt: skip
    assert str(patient.birth_date) not in body and "1960-02-03" not in body


def test_an_error_confirmed_at_entry_opens_a_query_answered_by_the_confirmation(dirty):
    with dirty.connect() as connection:
        patient = connection.execute(sa.select(Patient).where(Patient.study_id == "DM-002")).one()
    sheet = SHEETS_BY_NAME["patients"]
    with sa.orm.Session(dirty) as session:
        form = form_values(session.get(Patient, patient.id), sheet, "DEMO")
    checks = EntryChecks(Config(), date(2026, 11, 25), confirmation="as in the source document")
    save_record(dirty, "patients", form | {"birth_date": "1901-01-01"}, actor="cora", reason="re-entered",
                key=patient.id, version=patient.version, checks=checks)  # fmt: skip
    queries = list_queries(dirty, study_id="DM-002")
    assert list(queries["rule"]) == ["PAT-010"]
    assert set(queries["status"]) == {"answered"}
    messages = thread(dirty, int(queries["query"].iloc[0]))
    assert [(m.action.value, m.written_by) for m in messages] == [("opened", "cora"), ("answered", "cora")]
    assert messages[0].body.endswith("(an error confirmed at entry)")
    assert messages[1].body == "as in the source document"
    assert set(queries["value"]) == {"(withheld: a birth date, see the patient's record)"}


def test_the_database_and_the_audit_hooks_keep_threads_and_queries(dirty):
    query = open_query(dirty, "DM-002", "Smoking?", actor="dm1", about=About("patient", None, "smoking"))
    with audited_session(dirty, actor="dm1") as session:
        session.delete(session.get(DataQuery, query))
        with pytest.raises(AuditError, match=r"^Query 1 cannot be deleted: close it$"):
            session.flush()
    with audited_session(dirty, actor="dm1") as session:
        session.execute(sa.select(QueryMessage)).scalar_one().body = "rewritten"
        with pytest.raises(AuditError, match=r"^A message of a query is kept as written"):
            session.flush()
    for statement, message in [
        ("UPDATE query_message SET body = 'rewritten'", "query_message is append-only"),
        ("DELETE FROM query_message", "query_message is append-only"),
        ("DELETE FROM data_query", "data_query keeps every query: a query cannot be deleted (close it)"),
    ]:
        with pytest.raises(sa.exc.DatabaseError, match=re.escape(message)), dirty.begin() as connection:
            connection.execute(sa.text(statement))
    assert [m.body for m in thread(dirty, query)] == ["Smoking?"]


def test_a_downgrade_below_0010_is_refused_while_queries_exist_and_then_drops_them(dirty):
    open_query(dirty, "DM-002", "Smoking?", actor="dm1", about=About("patient", None, "smoking"))
    with pytest.raises(db.DowngradeRefused, match=r"^Downgrade refused: the registry holds 1 query about its data"):
        db.downgrade(dirty, "0009")
    assert db.current_revision(dirty) == db.head_revision()
    db.downgrade(dirty, "0009", force=True)
    assert "data_query" not in sa.inspect(dirty).get_table_names()
    db.upgrade(dirty)
    assert list_queries(dirty).empty


def _cli(url: str, *args: str):
    return runner.invoke(app, ["--database", url, *args], catch_exceptions=False)


def test_the_query_commands_open_answer_close_reopen_list_and_show(dirty, database_url):
    opened = _cli(database_url, "query", "open", "DM-012", "--rule", "LAB-010", "-m", "CRP in mg/dL?",
                  "--actor", "dm1")  # fmt: skip
    assert (opened.exit_code, opened.output) == (0, "Query 1 opened\n")
    twice = _cli(database_url, "query", "open", "DM-012", "--rule", "LAB-010", "-m", "again", "--actor", "dm1")
    assert twice.exit_code == 1
    assert twice.output.startswith("Not done: query 1 on lab_result ")
    none = _cli(database_url, "query", "open", "DM-002", "--rule", "LAB-010", "-m", "?", "--actor", "dm1")
    assert (none.exit_code, none.output) == (1, "Not done: LAB-010 finds 0 finding(s) about DM-002\n")
    unknown = _cli(database_url, "query", "open", "DM-002", "--rule", "XYZ-001", "-m", "?", "--actor", "dm1")
    assert (unknown.exit_code, unknown.output) == (1, "Not done: XYZ-001 is not a rule of the catalogue "
                                                      "(registry rules lists them)\n")  # fmt: skip
    field = _cli(database_url, "query", "open", "DM-001", "--table", "patient", "--field", "smoking", "-m", "?",
                 "--actor", "dm1")  # fmt: skip
    assert (field.exit_code, field.output) == (0, "Query 2 opened\n")
    assert _cli(database_url, "query", "answer", "1", "-m", "corrected", "--actor", "cora").output == \
        "Query 1 answered\n"  # fmt: skip
    assert _cli(database_url, "query", "close", "1", "-m", "ok", "--actor", "dm1").output == "Query 1 closed\n"
    late = _cli(database_url, "query", "close", "1", "-m", "ok", "--actor", "dm1")
    assert (late.exit_code, late.output) == (1, "Not done: query 1 is closed: it cannot be closed (only a query "
                                                "open or answered can)\n")  # fmt: skip
    assert _cli(database_url, "query", "reopen", "1", "-m", "no", "--actor", "dm1").output == "Query 1 re-opened\n"
    missing = _cli(database_url, "query", "answer", "9", "-m", "x", "--actor", "cora")
    assert (missing.exit_code, missing.output) == (1, "Not done: no query 9\n")

    listed = _cli(database_url, "query", "list", "--site", "OTHER")
    lines = listed.output.splitlines()
    assert lines[0].split("\t")[:6] == ["2", "DM-001", "OTHER", "patient 1 smoking", "-", "open"]
    assert lines[1:] == [
        "Queries: 1 open (awaiting the site), 0 answered (awaiting a data manager), 0 closed",
        "  open by age: up to 7 days 1, 8-30 days 0, over 30 days 0",
        "  open by rule: (no rule) 1",
        "  open by site: OTHER 1",
        "  open by coordinator: (no coordinator serves the site) 1",
    ]
    document = json.loads(_cli(database_url, "query", "list", "--status", "open", "--json").output)
    assert [q["query"] for q in document["queries"]] == [1, 2]
    assert document["summary"]["by_status"] == {"open": 2, "answered": 0, "closed": 0}
    assert document["summary"]["open_by_rule"] == {"(no rule)": 1, "LAB-010": 1}
    shown = _cli(database_url, "query", "show", "1").output.splitlines()
    assert shown[0].startswith("Query 1 on lab_result ") and shown[0].endswith(" of DM-012 (site DEMO): open")
    assert shown[1] == "From finding LAB-010, value mg/dL"
    assert [line.split("  ")[-1] for line in shown[2::2]] == ["opened -> open", "answered -> answered",
                                                              "closed -> closed", "reopened -> open"]  # fmt: skip
    assert shown[3::2] == ["    CRP in mg/dL?", "    corrected", "    ok", "    no"]
    checked = _cli(database_url, "check")
    assert "Queries: 2 open (awaiting the site), 0 answered (awaiting a data manager), 0 closed" in checked.output
