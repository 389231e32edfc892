"""Record status and sign-off (registry/signoff.py), `registry status`, `registry site verification` and
`registry cut create --signed-only`, on SQLite and PostgreSQL: the steps and their refusals, the electronic
signature (wrong password, role, site), the voiding of a signature by any change, what the database refuses, the
migration's downgrade, and a cut of signed patients only."""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import WEB_PASSWORD
from typer.testing import CliRunner

from registry import accounts, db
from registry.audit import AuditError, audit_history, audited_session
from registry.cli import app
from registry.codes import RecordStatus, Role
from registry.config import Config
from registry.cuts import create_cut, load_cut
from registry.entry import form_values, save_record, set_deleted, set_locked
from registry.ingest import import_path
from registry.models import Account, AuditLog, PatientStatus, Signature, SignInEvent, Site
from registry.queries import About, close, open_query
from registry.sheets import SHEETS_BY_NAME
from registry.signoff import (
    SignOffError,
    mark_complete,
    mark_verified,
    reopen,
    set_verification,
    sign,
    state_of,
)

DIRTY = Path(__file__).resolve().parents[1] / "fixtures" / "dirty" / "sheets"
INVESTIGATOR_PASSWORD = "signing for the site 7"
runner = CliRunner()


@pytest.fixture
def registry_db(web_registry: sa.Engine) -> sa.Engine:
    """The example (EX-001..004 at DEMO, EX-901 at OTHER) with cora (coordinator, DEMO), dana (data manager), and
    the investigators ivy (DEMO) and otto (OTHER)."""
    with audited_session(web_registry, actor="admin") as session:
        accounts.create_account(session, "ivy", INVESTIGATOR_PASSWORD, Role.INVESTIGATOR, ["DEMO"])
        accounts.create_account(session, "otto", INVESTIGATOR_PASSWORD, Role.INVESTIGATOR, ["OTHER"])
        session.commit()
    return web_registry


def _log_size(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.select(sa.func.count()).select_from(AuditLog)).scalar_one()


def _signed(engine: sa.Engine, study_id: str = "EX-001") -> None:
    mark_complete(engine, study_id, actor="cora", config=Config(), sites=["DEMO"])
    sign(engine, study_id, username="ivy", password=INVESTIGATOR_PASSWORD)


def test_a_patient_goes_complete_verified_signed_with_each_step_audited(registry_db):
    assert state_of(registry_db, "EX-001").status is RecordStatus.IN_PROGRESS
    mark_complete(registry_db, "EX-001", actor="cora", config=Config(), sites=["DEMO"])
    mark_verified(registry_db, "EX-001", actor="dana")
    made = sign(registry_db, "EX-001", username="ivy", password=INVESTIGATOR_PASSWORD)
    assert made.meaning == "I attest that the data of patient EX-001 are complete and accurate"
    state = state_of(registry_db, "EX-001")
    assert (state.status, state.changed_by, state.signature.signer, state.signature.meaning) == (
        RecordStatus.SIGNED, "ivy", "ivy", made.meaning)  # fmt: skip
    history = [(e.table_name, e.action.value, e.actor, e.reason, e.new_values.get("status"))
               for e in audit_history(registry_db, "EX-001") if e.table_name in ("patient_status", "signature")]  # fmt: skip
    assert history == [
        ("patient_status", "insert", "cora", "record marked complete", "complete"),
        ("patient_status", "update", "dana", "source data verified", "verified"),
        ("signature", "insert", "ivy", "electronic signature", None),
        ("patient_status", "update", "ivy", "electronic signature", "signed"),
    ]


def test_a_wrong_password_role_or_site_signs_nothing_and_is_logged(registry_db):
    mark_complete(registry_db, "EX-001", actor="cora", config=Config(), sites=["DEMO"])
    mark_complete(registry_db, "EX-901", actor="dana", config=Config())
    before = _log_size(registry_db)
    for username, password, study_id, message in [
        ("ivy", "not the password at all", "EX-001", "the user name or password is not right: nothing was signed"),
        ("nobody", INVESTIGATOR_PASSWORD, "EX-001", "the user name or password is not right: nothing was signed"),
        (
            "cora",
            WEB_PASSWORD,
            "EX-001",
            "cora is not an investigator (only an investigator signs): nothing was signed",
        ),
        ("ivy", INVESTIGATOR_PASSWORD, "EX-901", "no patient EX-901 among the sites ivy serves: nothing was signed"),
        ("otto", INVESTIGATOR_PASSWORD, "EX-001", "no patient EX-001 among the sites otto serves: nothing was signed"),
    ]:
        with pytest.raises(SignOffError, match=f"^{re.escape(message)}$"):
            sign(registry_db, study_id, username=username, password=password)
    assert _log_size(registry_db) == before
    assert state_of(registry_db, "EX-001").status is RecordStatus.COMPLETE
    with registry_db.connect() as connection:
        refused = connection.execute(
            sa.select(SignInEvent.username, SignInEvent.actor).where(SignInEvent.outcome == "signature_refused")
            .order_by(SignInEvent.id)
        ).all()  # fmt: skip
    assert refused == [("ivy", "signature of EX-001"), ("nobody", "signature of EX-001"),
                       ("cora", "signature of EX-001"), ("ivy", "signature of EX-901"),
                       ("otto", "signature of EX-001")]  # fmt: skip
    with audited_session(registry_db, actor="admin") as session:
        accounts.disable(session, "ivy")
        session.commit()
    with pytest.raises(SignOffError, match=r"^the user name or password is not right: nothing was signed$"):
        sign(registry_db, "EX-001", username="ivy", password=INVESTIGATOR_PASSWORD)


def test_steps_out_of_order_are_refused_with_nothing_written(registry_db):
    before = _log_size(registry_db)
    for step, message in [
        (lambda: mark_verified(registry_db, "EX-001", actor="dana"),
         "patient EX-001 is in_progress: it cannot be marked verified (only a patient complete can)"),
        (lambda: sign(registry_db, "EX-001", username="ivy", password=INVESTIGATOR_PASSWORD),
         "patient EX-001 is in_progress: only a patient complete or verified can be signed"),
        (lambda: reopen(registry_db, "EX-001", actor="cora", reason="more to enter"),
         "patient EX-001 is in_progress: it cannot be marked in_progress (only a patient complete or verified or "
         "signed can)"),
        (lambda: reopen(registry_db, "EX-001", actor="cora", reason="  "),
         "a reason (at most 500 characters) is required to re-open a patient"),
    ]:  # fmt: skip
        with pytest.raises(SignOffError, match=f"^{re.escape(message)}$"):
            step()
    with pytest.raises(LookupError, match=r"^no patient EX-901$"):
        mark_complete(registry_db, "EX-901", actor="cora", config=Config(), sites=["DEMO"])
    mark_complete(registry_db, "EX-001", actor="cora", config=Config(), sites=["DEMO"])
    with pytest.raises(SignOffError, match=r"^patient EX-001 is complete: it cannot be marked complete "):
        mark_complete(registry_db, "EX-001", actor="cora", config=Config())
    assert _log_size(registry_db) == before + 1  # the one completion


def test_a_site_requiring_verification_signs_only_verified_patients(registry_db):
    set_verification(registry_db, "DEMO", True, actor="admin")
    mark_complete(registry_db, "EX-001", actor="cora", config=Config(), sites=["DEMO"])
    with pytest.raises(SignOffError, match=re.escape(
            "patient EX-001 is complete: only a patient verified can be signed (site DEMO requires source data "
            "verification)")):  # fmt: skip
        sign(registry_db, "EX-001", username="ivy", password=INVESTIGATOR_PASSWORD)
    mark_verified(registry_db, "EX-001", actor="dana")
    sign(registry_db, "EX-001", username="ivy", password=INVESTIGATOR_PASSWORD)
    assert state_of(registry_db, "EX-001").status is RecordStatus.SIGNED


def test_completion_is_refused_while_a_form_is_missing_an_error_stands_or_a_query_awaits_the_site(migrated):
    from conftest import add_demo_site

    add_demo_site(migrated)
    assert import_path(migrated, DIRTY, actor="test").written
    with pytest.raises(SignOffError, match=re.escape(
            "patient DM-016 cannot be marked complete: a required form is missing (ABT-010: no anti-MDA5 "
            "result)")):  # fmt: skip
        mark_complete(migrated, "DM-016", actor="cora", config=Config())
    with pytest.raises(SignOffError) as refused:
        mark_complete(migrated, "DM-012", actor="cora", config=Config())
    assert str(refused.value).startswith("patient DM-012 cannot be marked complete: error LAB-010 on lab_result ")
    assert str(refused.value).endswith(" is open (unit is not the analyte's canonical unit)")
    # A data manager accepts the site's answer on the error: a closed query on it answers it.
    from registry.quality.incremental import check_patients

    with migrated.connect() as connection:
        patient_id = connection.execute(sa.text("SELECT id FROM patient WHERE study_id = 'DM-012'")).scalar_one()
        finding = check_patients(connection, [patient_id], Config(), date.today()).query("rule == 'LAB-010'")
    query = open_query(migrated, "DM-012", "Unit?", actor="dm1", finding=finding.iloc[0].to_dict())
    with pytest.raises(SignOffError, match=f"query {query} awaits the site's answer"):
        mark_complete(migrated, "DM-012", actor="cora", config=Config())
    close(migrated, query, "The laboratory reports CRP in mg/dL: accepted as entered.", actor="dm1")
    mark_complete(migrated, "DM-012", actor="cora", config=Config())
    assert state_of(migrated, "DM-012").status is RecordStatus.COMPLETE
    # A query awaiting the site blocks a patient without findings too.
    other = open_query(migrated, "DM-002", "Smoking history?", actor="dm1", about=About("patient", None, "smoking"))
    with pytest.raises(SignOffError, match=f"^patient DM-002 cannot be marked complete: query {other} awaits the "
                                           "site's answer$"):  # fmt: skip
        mark_complete(migrated, "DM-002", actor="cora", config=Config())


def _patient_id(engine: sa.Engine, study_id: str) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.text("SELECT id FROM patient WHERE study_id = :s"), {"s": study_id}).scalar_one()


def test_any_change_to_a_signed_patient_voids_the_signature_and_returns_them_to_complete(registry_db, tmp_path):
    _signed(registry_db)
    sheet, patient_id = SHEETS_BY_NAME["patients"], _patient_id(registry_db, "EX-001")
    with sa.orm.Session(registry_db) as session:
        from registry.models import Patient

        patient = session.get(Patient, patient_id)
        form, version = form_values(patient, sheet, "DEMO"), patient.version
    save_record(registry_db, "patients", {**form, "smoking": "former"}, actor="cora", reason="corrected at source",
                key=patient_id, version=version, sites=["DEMO"])  # fmt: skip
    state = state_of(registry_db, "EX-001")
    assert state.status is RecordStatus.COMPLETE and state.signature is None
    (voided,) = state.signatures
    assert (voided.signer, voided.voided_by, voided.void_reason) == ("ivy", "cora", "data changed: corrected at source")
    entries = [(e.table_name, e.action.value, e.actor, e.reason) for e in audit_history(registry_db, "EX-001")][-3:]
    assert sorted(entries) == [("patient", "update", "cora", "corrected at source"),
                       ("patient_status", "update", "cora", "corrected at source"),
                       ("signature", "update", "cora", "corrected at source")]  # fmt: skip

    # Signed again: a record added by the workbook import (in bulk) voids it too, as does a deletion; a lock not.
    sign(registry_db, "EX-001", username="ivy", password=INVESTIGATOR_PASSWORD)
    set_locked(registry_db, patient_id, locked=True, actor="dana", reason="interim analysis")
    set_locked(registry_db, patient_id, locked=False, actor="dana", reason="interim analysis done")
    assert state_of(registry_db, "EX-001").status is RecordStatus.SIGNED
    labs = tmp_path / "more"
    labs.mkdir()
    (labs / "labs.csv").write_text("study_id,analyte,sample_date,value,unit\nEX-001,crp,2019-01-05,12.5,mg/L\n")
    assert import_path(registry_db, labs, actor="cora", reason="laboratory report of January").written
    state = state_of(registry_db, "EX-001")
    assert state.status is RecordStatus.COMPLETE
    assert state.signatures[0].void_reason == "data changed: laboratory report of January"
    mark_verified(registry_db, "EX-001", actor="dana")
    with sa.orm.Session(registry_db) as session:
        from registry.models import LabResult

        lab = session.execute(sa.select(LabResult.id).where(LabResult.patient_id == patient_id)).scalars().first()
    set_deleted(registry_db, "labs", lab, deleted=True, actor="dana", reason="entered twice", patient_id=patient_id)
    assert state_of(registry_db, "EX-001").status is RecordStatus.COMPLETE
    # Re-opening voids a standing signature.
    sign(registry_db, "EX-001", username="ivy", password=INVESTIGATOR_PASSWORD)
    reopen(registry_db, "EX-001", actor="dana", reason="follow-up visit to enter")
    state = state_of(registry_db, "EX-001")
    assert (state.status, state.signature, state.signatures[0].void_reason) == (
        RecordStatus.IN_PROGRESS, None, "re-opened: follow-up visit to enter")  # fmt: skip


def test_the_database_and_the_audit_hooks_keep_signatures(registry_db):
    _signed(registry_db)
    with audited_session(registry_db, actor="x") as session:
        session.execute(sa.select(Signature)).scalar_one().signer = "someone else"
        with pytest.raises(AuditError, match=r"^A signature is kept as made: it cannot be changed or deleted"):
            session.flush()
    with audited_session(registry_db, actor="x") as session:
        session.delete(session.execute(sa.select(Signature)).scalar_one())
        with pytest.raises(AuditError, match=r"^A signature is kept as made"):
            session.flush()
    with audited_session(registry_db, actor="x") as session:
        session.delete(session.execute(sa.select(PatientStatus)).scalar_one())
        with pytest.raises(AuditError, match=r"^A patient's record status cannot be deleted"):
            session.flush()
    statements = [
        ("UPDATE signature SET signer = 'someone else'", "a signature cannot be changed, only voided once"),
        (
            "UPDATE signature SET meaning = 'x', voided_at = signed_at",
            "a signature cannot be changed, only voided once",
        ),
        ("DELETE FROM signature", "signature keeps every signature: a signature cannot be deleted (it is voided)"),
    ]
    if registry_db.dialect.name == "postgresql":
        statements.append(("TRUNCATE signature CASCADE", "signature keeps every signature"))
    for statement, message in statements:
        with pytest.raises(sa.exc.DatabaseError, match=re.escape(message)), registry_db.begin() as connection:
            connection.execute(sa.text(statement))
    with registry_db.begin() as connection:  # the voiding, once
        connection.execute(sa.text("UPDATE signature SET voided_at = signed_at, voided_by = 'x', void_reason = 'y'"))
    with (
        pytest.raises(sa.exc.DatabaseError, match="a signature cannot be changed, only voided once"),
        registry_db.begin() as connection,
    ):
        connection.execute(sa.text("UPDATE signature SET void_reason = 'rewritten'"))


def test_a_downgrade_below_0011_is_refused_while_sign_off_exists_and_then_makes_investigators_analysts(registry_db):
    _signed(registry_db)
    with pytest.raises(SignOffError):
        sign(registry_db, "EX-002", username="ivy", password="a wrong password")
    with pytest.raises(db.DowngradeRefused, match=re.escape(
            "Downgrade refused: the registry holds 1 record status(es), 1 signature(s), 2 investigator account(s), "
            "which migrating below 0011 drops")):  # fmt: skip
        db.downgrade(registry_db, "0010")
    assert db.current_revision(registry_db) == db.head_revision()
    db.downgrade(registry_db, "0010", force=True)
    assert {"patient_status", "signature"}.isdisjoint(sa.inspect(registry_db).get_table_names())
    with registry_db.connect() as connection:
        assert connection.execute(sa.text("SELECT username, role, active FROM account WHERE username IN "
                                          "('ivy', 'otto') ORDER BY username")).all() == [
            ("ivy", "analyst", False), ("otto", "analyst", False)]  # fmt: skip
        assert connection.execute(sa.text("SELECT outcome FROM sign_in_event WHERE actor = 'signature of EX-002'")
                                  ).all() == [("failure",)]  # fmt: skip
    with pytest.raises(sa.exc.IntegrityError), registry_db.begin() as connection:  # 0010 knows no investigators
        connection.execute(sa.text("UPDATE account SET role = 'investigator' WHERE username = 'ivy'"))
    db.upgrade(registry_db)
    with registry_db.begin() as connection:
        connection.execute(sa.text("UPDATE account SET role = 'investigator', active = true WHERE username = 'ivy'"))
    assert state_of(registry_db, "EX-001").status is RecordStatus.IN_PROGRESS


def test_a_signed_only_cut_freezes_the_signed_patients_and_counts_those_left_out(registry_db, tmp_path):
    _signed(registry_db, "EX-001")
    _signed(registry_db, "EX-002")
    mark_complete(registry_db, "EX-003", actor="cora", config=Config(), sites=["DEMO"])
    made = create_cut(registry_db, "signed-1", date(2024, 1, 1), actor="dana", reason="interim", config=Config(),
                      signed_only=True)  # fmt: skip
    assert (made.signed_only, made.left_out) == (True, {"in_progress": 2, "complete": 1, "verified": 0})
    tables, cut = load_cut(registry_db, "signed-1", Config())
    assert cut == made
    assert sorted(tables["patient"]["study_id"]) == ["EX-001", "EX-002"]
    ids = set(tables["patient"]["id"])
    assert all(set(frame["patient_id"]) <= ids for name, frame in tables.items() if "patient_id" in frame)
    assert len(tables["lab_result"]) > 0 and len(tables["site"]) == 2
    every = create_cut(registry_db, "all-1", date(2024, 1, 1), actor="dana", reason=None, config=Config())
    assert (every.signed_only, every.left_out, every.row_counts["patient"]) == (False, None, 5)


def _cli(url: str, *args: str, stdin: str | None = None):
    return runner.invoke(app, ["--database", url, *args], input=stdin, catch_exceptions=False)


def test_the_status_commands(registry_db, database_url, tmp_path):
    run = lambda *args, stdin=None: _cli(database_url, *args, stdin=stdin)  # noqa: E731
    done = run("status", "complete", "EX-001", "--actor", "cora")
    assert (done.exit_code, done.output) == (0, "Patient EX-001 marked complete\n")
    again = run("status", "complete", "EX-001", "--actor", "cora")
    assert (again.exit_code, again.output) == (1, "Not done: patient EX-001 is complete: it cannot be marked "
                                                  "complete (only a patient in_progress can)\n")  # fmt: skip
    assert run("site", "verification", "DEMO", "--required", "--actor", "admin").output == (
        "Site DEMO: source data verification required before signing\n")  # fmt: skip
    assert run("site", "list").output == "DEMO\tDemo\t\tsource verification required\nOTHER\tOther\t\n"
    unknown = run("site", "verification", "XX", "--required")
    assert (unknown.exit_code, unknown.output) == (1, "Not done: no site XX\n")
    early = run("status", "sign", "EX-001", "--user", "ivy", "--password-stdin", stdin=INVESTIGATOR_PASSWORD + "\n")
    assert (early.exit_code, early.output) == (1, 'Signing as ivy: "I attest that the data of patient EX-001 are '
                                                  'complete and accurate"\nNot done: patient EX-001 is complete: only a '
                                                  "patient verified can be signed (site DEMO requires source data "
                                                  "verification)\n")  # fmt: skip
    assert run("status", "verify", "EX-001", "--actor", "dana").output == "Patient EX-001 marked verified\n"
    wrong = run("status", "sign", "EX-001", "--user", "ivy", "--password-stdin", stdin="guess guess guess\n")
    assert wrong.exit_code == 1
    assert wrong.output.splitlines()[-1] == "Not done: the user name or password is not right: nothing was signed"
    signed = run("status", "sign", "EX-001", "--user", "ivy", "--password-stdin", stdin=INVESTIGATOR_PASSWORD + "\n")
    assert signed.exit_code == 0
    assert re.fullmatch(r"Patient EX-001 signed \d{4}-\d\d-\d\d \d\d:\d\d UTC by ivy", signed.output.splitlines()[-1])
    listed = run("status", "list").output.splitlines()
    assert [line.split("\t")[:3] for line in listed[:-1]] == [
        ["EX-001", "DEMO", "signed"], ["EX-002", "DEMO", "in_progress"], ["EX-003", "DEMO", "in_progress"],
        ["EX-004", "DEMO", "in_progress"], ["EX-901", "OTHER", "in_progress"]]  # fmt: skip
    assert listed[0].split("\t")[4].endswith(" UTC by ivy")
    assert listed[-1] == "Record status: 4 in progress, 0 complete, 0 verified, 1 signed"
    document = json.loads(run("status", "list", "--site", "DEMO", "--status", "signed", "--json").output)
    assert [(p["study_id"], p["status"], p["signer"]) for p in document["patients"]] == [("EX-001", "signed", "ivy")]
    assert document["by_status"] == {"in_progress": 3, "complete": 0, "verified": 0, "signed": 1}
    shown = run("status", "show", "EX-001").output.splitlines()
    assert shown[0].startswith("Patient EX-001 (site DEMO): signed, set ") and shown[0].endswith(" UTC by ivy")
    assert shown[1] == "Site DEMO requires source data verification before signing"
    assert shown[2].endswith(' UTC by ivy: "I attest that the data of patient EX-001 are complete and accurate"')
    cut = run("cut", "create", "--date", "2024-01-01", "--name", "signed", "--signed-only", "--actor", "dana")
    assert cut.exit_code == 0, cut.output
    assert "Signed only  4 patient(s) left out, not signed: 4 in progress, 0 complete, 0 verified" in cut.output
    checked = run("check")
    assert "Record status: 4 in progress, 0 complete, 0 verified, 1 signed" in checked.output
    reopened = run("status", "reopen", "EX-001", "-m", "more to enter", "--actor", "dana")
    assert reopened.output == "Patient EX-001 re-opened: in progress\n"
    shown = run("status", "show", "EX-001").output.splitlines()
    assert shown[3].endswith(" UTC by dana: re-opened: more to enter")
    missing = run("status", "show", "EX-999")
    assert (missing.exit_code, missing.output) == (1, "Not done: no patient EX-999\n")
    with registry_db.connect() as connection:
        assert connection.execute(sa.select(Site.verification_required).where(Site.code == "DEMO")).scalar() is True
        assert connection.execute(sa.select(Account.role).where(Account.username == "ivy")).scalar() == "investigator"


def test_the_report_counts_the_queries_and_record_statuses_of_the_live_registry(registry_db, database_url, tmp_path):
    from pypdf import PdfReader

    open_query(registry_db, "EX-002", "Smoking?", actor="dana", about=About("patient", None, "smoking"))
    _signed(registry_db)
    made = _cli(database_url, "report", "--archive", str(tmp_path / "archive"))
    assert made.exit_code == 0, made.output
    results = json.loads((tmp_path / "archive" / "latest.json").read_text())
    assert results["data_resolution"] == {
        "queries": {"open": 1, "answered": 0, "closed": 0},
        "record_status": {"in_progress": 4, "complete": 0, "verified": 0, "signed": 1},
    }
    text = " ".join(
        " ".join(page.extract_text().split()) for page in PdfReader(tmp_path / "archive" / "latest.pdf").pages
    )
    assert (
        "Data resolution: 1 open query (awaiting the site), 0 answered (awaiting a data manager), 0 closed. Record "
        "status: 4 in progress, 0 complete, 0 verified, 1 signed (registry query list, registry status list)."
    ) in text
    _signed(registry_db, "EX-003")  # a tacrolimus patient beside EX-001's tofacitinib: two groups to compare
    create_cut(registry_db, "signed", date(2024, 1, 1), actor="dana", reason=None, config=Config(), signed_only=True)
    from_cut = _cli(database_url, "report", "--cut", "signed", "--archive", str(tmp_path / "cut"))
    assert from_cut.exit_code == 0, from_cut.output
    results = json.loads((tmp_path / "cut" / "latest.json").read_text())
    assert "data_resolution" not in results  # a cut keeps no queries: its report stays the same however they change
    assert results["flow"]["not_signed"] == {
        "in_registry": 5,
        "total": 3,
        "by_status": {"in_progress": 3, "complete": 0, "verified": 0},
    }
    text = " ".join(" ".join(page.extract_text().split()) for page in PdfReader(tmp_path / "cut" / "latest.pdf").pages)
    assert "Patients in the registry at the cut n = 5" in text
    assert "Not signed, left out of the cut n = 3 in progress: 3 complete: 0 verified: 0" in text
    assert "Signed patients in the cut n = 2" in text


def _rows(engine: sa.Engine, tables: list[str]) -> dict[str, int]:
    with engine.connect() as connection:
        return {t: connection.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one() for t in tables}


def test_the_migration_upgrades_a_registry_holding_todays_data_and_downgrades(migrated):
    """A registry as this version's predecessor (0010) holds it: the demo cohort, a query, accounts, and a cut made
    before cuts recorded whether they were signed-only; 0011 comes and goes without touching any of it."""
    from conftest import add_demo_site

    add_demo_site(migrated)
    assert import_path(migrated, Path(__file__).resolve().parents[1] / "fixtures" / "demo", actor="test").written
    open_query(migrated, "DM-002", "Smoking?", actor="dm1", about=About("patient", None, "smoking"))
    with audited_session(migrated, actor="admin") as session:
        accounts.create_account(session, "cora", WEB_PASSWORD, Role.COORDINATOR, ["DEMO"])
        session.commit()
    create_cut(migrated, "interim", date(2022, 6, 30), actor="dm1", reason=None, config=Config())
    later = ("patient_status", "signature", "api_token", "api_token_site", "api_token_use")  # 0011's and 0012's
    kept = [name for name in sa.inspect(migrated).get_table_names() if name not in later]
    before = _rows(migrated, kept)
    db.downgrade(migrated, "0010")  # nothing of 0011's is held: not refused
    assert _rows(migrated, kept) == before
    with migrated.begin() as connection:  # a cut as the registry before 0011 made it: its row and its audit entry
        columns = [c["name"] for c in sa.inspect(connection).get_columns("data_cut") if c["name"] not in ("id", "name")]
        connection.execute(sa.text(f"INSERT INTO data_cut (name, {', '.join(columns)}) SELECT 'before-0011', "
                                   f"{', '.join(columns)} FROM data_cut WHERE name = 'interim'"))  # fmt: skip
        new_id = connection.execute(sa.text("SELECT id FROM data_cut WHERE name = 'before-0011'")).scalar_one()
        log = AuditLog.__table__
        entry = connection.execute(sa.select(log).where(log.c.table_name == "data_cut")).mappings().one()
        logged = dict(entry["new_values"])
        assert (logged.pop("signed_only"), logged.pop("left_out")) == (False, None)
        connection.execute(sa.insert(log).values(
            changed_at=entry["changed_at"], actor="dm1", reason=None, action="insert", table_name="data_cut",
            record_key=str(new_id), study_id=None, old_values=None, new_values=logged | {"name": "before-0011"},
        ))  # fmt: skip
    db.upgrade(migrated)
    assert _rows(migrated, kept) == {t: n + (t == "data_cut") + (t == "audit_log") for t, n in before.items()}
    tables, old = load_cut(migrated, "before-0011", Config())
    assert (old.signed_only, old.left_out, len(tables["patient"])) == (False, None, 61)
    assert load_cut(migrated, "interim", Config())[1].row_counts == old.row_counts
    with migrated.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM site WHERE verification_required")).scalar() == 0
    assert state_of(migrated, "DM-002").status is RecordStatus.IN_PROGRESS
    with audited_session(migrated, actor="admin") as session:  # the widened role list takes an investigator
        accounts.create_account(session, "ivy", INVESTIGATOR_PASSWORD, Role.INVESTIGATOR, ["DEMO"])
        session.commit()


def test_a_signed_only_cut_of_one_group_is_refused_plainly_by_report_and_analyze(registry_db, database_url, tmp_path):
    _signed(registry_db)  # EX-001 alone: tofacitinib
    create_cut(registry_db, "early", date(2024, 1, 1), actor="dana", reason=None, config=Config(), signed_only=True)
    why = ("othing can be compared: every analysed patient is in one group (tofacitinib 1), and the analyses compare "
           "tofacitinib with tacrolimus\n")  # fmt: skip
    reported = runner.invoke(app, ["--database", database_url, "report", "--cut", "early", "--out",
                                   str(tmp_path / "r.pdf")])  # fmt: skip
    assert (reported.exit_code, reported.stderr.splitlines()[-1] + "\n") == (1, "n" + why)
    analysed = runner.invoke(app, ["--database", database_url, "analyze", "--cut", "early", "--json",
                                   str(tmp_path / "r.json")])  # fmt: skip
    assert (analysed.exit_code, analysed.stderr.splitlines()[-1] + "\n") == (1, "N" + why)
    assert not (tmp_path / "r.pdf").exists() and not (tmp_path / "r.json").exists()


def test_the_counts_by_status_are_those_of_the_patients_listed(registry_db):
    """count_by_status counts in the database what list_states lists patient by patient: live patients only, each in
    its status (none recorded: in progress), of the sites asked for."""
    from registry.signoff import count_by_status, list_states

    mark_complete(registry_db, "EX-002", actor="cora", config=Config(), sites=["DEMO"])
    _signed(registry_db)
    with registry_db.connect() as connection:
        gone = connection.execute(sa.text("SELECT id FROM patient WHERE study_id = 'EX-003'")).scalar_one()
    set_deleted(registry_db, "patients", gone, deleted=True, actor="dana", reason="withdrew consent")
    for sites in (None, ["DEMO"], ["OTHER"], ["DEMO", "OTHER"], []):
        listed = {s.value: 0 for s in RecordStatus}
        for row in list_states(registry_db, sites=sites):
            listed[row["status"].value] += 1
        assert count_by_status(registry_db, sites=sites) == listed, sites
    assert count_by_status(registry_db) == {"in_progress": 2, "complete": 1, "verified": 0, "signed": 1}
