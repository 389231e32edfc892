"""Data cuts: a report made from a cut is the same report however the live data change afterwards.

Every test runs on SQLite and PostgreSQL. The registry is the synthetic demo cohort
(fixtures/demo); the live data are then changed the ways a registry changes (a death
date corrected, a patient added, a record deleted) through the audited library.
"""

import gzip
import hashlib
import json
import re
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from conftest import add_demo_site, drop_append_only_triggers
from pypdf import PdfReader
from sqlmodel import Session, select
from typer.testing import CliRunner

from registry.audit import AuditError, audited_session
from registry.cli import app
from registry.config import Config
from registry.cuts import (
    CorruptedCut,
    CutError,
    UnknownCut,
    create_cut,
    list_cuts,
    load_cut,
    snapshot_text,
    tables_from_snapshot,
)
from registry.entry import set_deleted
from registry.ingest import import_path
from registry.models import AdverseEvent, AuditLog, DataCut, FollowUp, Patient, PatientIdentifier
from registry.tables import load_tables

DEMO = Path(__file__).resolve().parents[1] / "fixtures" / "demo"
CUTOFF = date(2022, 6, 30)
runner = CliRunner()


@pytest.fixture
def demo(migrated: sa.Engine) -> sa.Engine:
    """The demo cohort (61 synthetic patients) in a fresh database of each kind."""
    add_demo_site(migrated)
    assert import_path(migrated, DEMO, actor="test").written
    return migrated


def cli(url: str, *args: str) -> object:
    return runner.invoke(app, ["--database", url, *args])


def _url(engine: sa.Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def _cut_row_count(engine: sa.Engine) -> tuple[int, int]:
    with engine.connect() as connection:
        cuts = connection.execute(sa.select(sa.func.count()).select_from(DataCut)).scalar()
        audit = connection.execute(sa.select(sa.func.count()).select_from(AuditLog)).scalar()
    return cuts, audit


def _change_live_data(engine: sa.Engine, tmp_path: Path) -> None:
    """A death date corrected, a patient added (a copy of DM-001 as DM-900), an adverse event deleted."""
    with audited_session(engine, actor="coordinator", reason="death date corrected from the death certificate") as s:
        patient = s.exec(select(Patient).where(Patient.study_id == "DM-001")).one()
        follow_up = s.get(FollowUp, patient.id)
        assert follow_up.death_date == date(2018, 9, 9)
        follow_up.death_date = follow_up.last_contact_date = date(2018, 9, 20)
        s.commit()
    copy = tmp_path / "DM-900"
    copy.mkdir()
    for sheet in DEMO.glob("*.csv"):
        header, *rows = sheet.read_text().splitlines()
        copy.joinpath(sheet.name).write_text(
            "\n".join([header, *(row.replace("DM-001,", "DM-900,", 1) for row in rows if row.startswith("DM-001,"))])
            + "\n"
        )
    assert import_path(engine, copy, actor="coordinator").written
    with Session(engine) as session:
        event = session.exec(select(AdverseEvent).order_by(AdverseEvent.id)).first()
    set_deleted(engine, "adverse_events", event.id, deleted=True, actor="dana", reason="entered twice",
                patient_id=event.patient_id)  # fmt: skip


def _report(url: str, name: str | None, folder: Path, *extra: str) -> tuple[dict, list[str]]:
    """Run `registry report` into ``folder`` (an archive); its results document and its PDF's text by page."""
    args = ["report", "--archive", str(folder), *(["--cut", name] if name else []), *extra]
    result = cli(url, *args)
    assert result.exit_code == 0, result.output
    results = json.loads((folder / "latest.json").read_text())
    return results, [page.extract_text() for page in PdfReader(folder / "latest.pdf").pages]


def _without_generation_time(results: dict) -> dict:
    assert set(results) >= {"generated_at", "data_fingerprint", "flow", "overall", "rpild"}
    return {key: value for key, value in results.items() if key != "generated_at"}


def test_a_cut_holds_exactly_the_tables_the_analyses_read(demo):
    live = load_tables(demo)
    made = create_cut(demo, "interim-1", CUTOFF, actor="dana", reason="interim analysis", config=Config())
    tables, cut = load_cut(demo, "interim-1")
    assert cut == made
    assert list(tables) == list(live)
    for name, frame in live.items():
        pd.testing.assert_frame_equal(tables[name], frame, check_exact=True)
    assert cut.row_counts == {name: len(frame) for name, frame in live.items()}
    assert cut.row_counts["patient"] == 61
    assert (cut.name, cut.cutoff_date, cut.created_by, cut.reason) == ("interim-1", CUTOFF, "dana", "interim analysis")
    assert (cut.dq_errors, cut.dq_warnings) == (0, 0)
    assert [c.name for c in list_cuts(demo)] == ["interim-1"]


def test_a_change_committed_while_the_cut_is_read_is_wholly_out_of_it(demo, monkeypatch):
    """The tables are read in one transaction: a patient deleted between two reads leaves no half in the cut."""
    import registry.tables

    before = {name: len(frame) for name, frame in load_tables(demo).items()}
    read, deleted = registry.tables.read_table, []

    def read_then_delete_a_patient(connection: sa.Connection, table: sa.Table, query=None) -> pd.DataFrame:
        frame = read(connection, table, query)
        if table.name == "patient" and not deleted:
            patient_id = int(frame.loc[frame["study_id"].eq("DM-001"), "id"].iloc[0])
            set_deleted(demo, "patients", patient_id, deleted=True, actor="coordinator", reason="withdrew consent")
            deleted.append(patient_id)
        return frame

    monkeypatch.setattr(registry.tables, "read_table", read_then_delete_a_patient)
    cut = create_cut(demo, "interim-1", CUTOFF, actor="dana", reason=None, config=Config())
    monkeypatch.undo()
    assert deleted  # between the reads of patient and of antibody_test
    assert cut.row_counts == before
    assert load_tables(demo)["patient"]["study_id"].ne("DM-001").all()  # the deletion itself did happen


def test_the_snapshot_is_plain_json_without_identifiers_or_bookkeeping(demo):
    with audited_session(demo, actor="test") as session:
        patient = session.exec(select(Patient).where(Patient.study_id == "DM-002")).one()
        session.add(PatientIdentifier(patient_id=patient.id, hospital_number="HN-77123", full_name="Synthetic Person"))
        session.commit()
    create_cut(demo, "interim-1", CUTOFF, actor="dana", reason=None, config=Config())
    with demo.connect() as connection:
        stored = connection.execute(sa.select(DataCut.snapshot)).scalar()
    text = gzip.decompress(stored).decode("utf-8")
    assert "HN-77123" not in text and "Synthetic Person" not in text
    document = json.loads(text)
    assert document["format"] == 1
    assert set(document["tables"]) == set(load_tables(demo))  # no patient_identifier
    patients = document["tables"]["patient"]
    assert "version" not in patients and "deleted_at" not in patients and "locked_at" not in patients
    assert patients["study_id"][0] == "DM-001" and patients["birth_date"][0] == "1942-08-30"


def test_the_snapshot_round_trips_every_value_exactly(demo):
    tables = load_tables(demo)
    labs = tables["lab_result"]
    labs.loc[0, "value"] = 0.1 + 0.2  # 0.30000000000000004: no decimal rounding may pass for it
    labs.loc[1, "value"] = 1 / 3
    labs.loc[2, "value"] = 5e-324
    tables["patient"].loc[0, ["smoking", "rpild", "dm_diagnosis_date"]] = [None, pd.NA, pd.NaT]
    back = tables_from_snapshot(snapshot_text(tables))
    for name, frame in tables.items():
        pd.testing.assert_frame_equal(back[name], frame, check_exact=True)
    assert back["lab_result"].loc[0, "value"] == 0.1 + 0.2


def test_a_snapshot_of_an_unknown_format_is_refused():
    with pytest.raises(CutError) as refused:
        tables_from_snapshot(b'{"format":2,"tables":{}}')
    assert str(refused.value) == "snapshot format 2 is not known (this version reads 1)"


def test_a_report_from_a_cut_is_reproduced_after_the_live_data_changed(demo, tmp_path):
    url = _url(demo)
    made = cli(url, "cut", "create", "--date", "2022-06-30", "--name", "interim-1", "--reason", "interim", "--actor",
               "dana")  # fmt: skip
    assert made.exit_code == 0, made.output
    cut = load_cut(demo, "interim-1")[1]
    before, before_pages = _report(url, "interim-1", tmp_path / "before")
    assert before["data_cut"] == cut.as_dict()
    assert before["data_fingerprint"] == cut.data_fingerprint
    assert before["configuration"]["data_cutoff"] == "2022-06-30"
    live_before = cli(url, "analyze", "--json", str(tmp_path / "live-before.json"))
    assert live_before.exit_code == 0, live_before.output

    _change_live_data(demo, tmp_path)

    after, after_pages = _report(url, "interim-1", tmp_path / "after")
    assert _without_generation_time(after) == _without_generation_time(before)
    generated = re.compile(r"Generated at \(UTC\) \S+")
    assert [generated.sub("", page) for page in after_pages] == [generated.sub("", page) for page in before_pages]
    assert (tmp_path / "after" / f"report-2022-06-30-{cut.data_fingerprint[:12]}.pdf").exists()
    assert f"snapshot SHA-256 {cut.snapshot_sha256} verified" in (tmp_path / "after" / "report.log").read_text()

    live = cli(url, "analyze", "--json", str(tmp_path / "live.json"))
    assert live.exit_code == 0, live.output
    live_results = json.loads((tmp_path / "live.json").read_text())
    assert "data_cut" not in live_results
    assert live_results["flow"]["registered"] == 62 and before["flow"]["registered"] == 61
    assert (
        live_results["data_fingerprint"] != json.loads((tmp_path / "live-before.json").read_text())["data_fingerprint"]
    )
    assert live_results["safety"] != before["safety"]


def test_the_report_names_the_cut_on_its_cover_and_in_its_methods(demo, tmp_path):
    cut = create_cut(demo, "interim-1", CUTOFF, actor="dana", reason=None, config=Config())
    config = tmp_path / "registry.toml"
    config.write_text("data_cutoff = 2021-01-01\n")
    result = cli(_url(demo), "report", "--cut", "interim-1", "--out", str(tmp_path / "r.pdf"), "--config", str(config))
    assert result.exit_code == 0, result.output
    assert (
        "data_cutoff 2021-01-01 of the configuration is not used: data cut interim-1 is analysed at its own cut-off, "
        "2022-06-30" in result.output
    )
    pages = [page.extract_text() for page in PdfReader(tmp_path / "r.pdf").pages]
    frozen = cut.created_at.isoformat(timespec="seconds")
    cover = re.sub(r"\s+", " ", pages[0])
    assert "Data cut-off 2022-06-30" in cover
    assert f"Data cut interim-1, frozen at {frozen} by dana (snapshot SHA-256 {cut.snapshot_sha256})" in cover
    methods = " ".join(page for page in pages if page.startswith("Methods and limitations\n"))
    stated = f"Data cut interim-1, frozen at {frozen} by dana, cut-off 2022-06-30, snapshot SHA-256 "
    hash_anywhere_broken = r"\s*".join(cut.snapshot_sha256)
    assert re.search(re.escape(stated).replace(r"\ ", r"\s+") + hash_anywhere_broken, methods), methods


def test_check_and_analyze_read_the_cut(demo, tmp_path):
    create_cut(demo, "interim-1", CUTOFF, actor="dana", reason=None, config=Config())
    url = _url(demo)
    checked = cli(url, "check", "--cut", "interim-1", "--json", str(tmp_path / "findings.json"))
    assert checked.exit_code == 0, checked.output
    assert "Data cut interim-1: cut-off 2022-06-30, frozen" in checked.output
    assert json.loads((tmp_path / "findings.json").read_text())["configuration"]["data_cutoff"] == "2022-06-30"
    analysed = cli(url, "analyze", "--cut", "interim-1", "--json", str(tmp_path / "results.json"))
    assert analysed.exit_code == 0, analysed.output
    assert json.loads((tmp_path / "results.json").read_text())["data_cut"]["name"] == "interim-1"


def test_a_cut_cannot_be_changed_or_deleted(demo):
    create_cut(demo, "interim-1", CUTOFF, actor="dana", reason=None, config=Config())
    with demo.connect() as connection:
        stored = connection.execute(sa.select(DataCut.__table__)).one()
    refusal = "Data cut interim-1 is frozen: a cut cannot be changed or deleted (make a new one)"
    with audited_session(demo, actor="mallory", reason="tidy up") as session:
        cut = session.exec(select(DataCut)).one()
        cut.cutoff_date = date(2023, 1, 1)
        with pytest.raises(AuditError) as refused:
            session.commit()
        assert str(refused.value) == refusal
    with audited_session(demo, actor="mallory", reason="tidy up") as session:
        session.delete(session.exec(select(DataCut)).one())
        with pytest.raises(AuditError) as refused:
            session.commit()
        assert str(refused.value) == refusal
    with demo.connect() as connection:
        assert connection.execute(sa.select(DataCut.__table__)).one() == stored


def test_making_a_cut_is_audited(demo):
    made = create_cut(demo, "interim-1", CUTOFF, actor="dana", reason="interim analysis", config=Config())
    with Session(demo) as session:
        entry = session.exec(select(AuditLog).where(AuditLog.table_name == "data_cut")).one()
    assert (entry.actor, entry.reason, entry.action.value, entry.study_id) == (
        "dana",
        "interim analysis",
        "insert",
        None,
    )
    assert entry.new_values["name"] == "interim-1" and entry.new_values["cutoff_date"] == "2022-06-30"
    assert entry.new_values["snapshot_sha256"] == made.snapshot_sha256
    assert re.fullmatch(r"\[[\d,]+ bytes\]", entry.new_values["snapshot"])  # the size, not the data


def test_a_duplicate_name_is_refused_and_nothing_is_written(demo):
    made = create_cut(demo, "interim-1", CUTOFF, actor="dana", reason=None, config=Config())
    counts = _cut_row_count(demo)
    with pytest.raises(CutError) as refused:
        create_cut(demo, "interim-1", date(2022, 1, 1), actor="eve", reason=None, config=Config())
    assert str(refused.value) == (
        f"A data cut named interim-1 already exists (cut-off 2022-06-30, made {made.created_at:%Y-%m-%d %H:%M} UTC "
        "by dana); cuts are never replaced: choose another name"
    )
    result = cli(_url(demo), "cut", "create", "--date", "2022-01-01", "--name", "interim-1")
    assert result.exit_code == 2
    assert result.output.startswith("Not made: A data cut named interim-1 already exists")
    assert _cut_row_count(demo) == counts


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--date", "2022-13-01"], "Not made: --date '2022-13-01' is not a date written YYYY-MM-DD (e.g. 2022-06-30)"),
        (["--date", "30/06/2022"], "Not made: --date '30/06/2022' is not a date written YYYY-MM-DD (e.g. 2022-06-30)"),
        (["--date", "2999-01-01"], "Not made: The cut-off 2999-01-01 lies in the future (today is {today} UTC)"),
        (
            ["--date", "2022-06-30", "--name", "interim 1"],
            "Not made: Data cut name 'interim 1' is refused: a name holds only letters, digits, '.', '_' and '-', "
            "starts with a letter or digit, at most 64 characters",
        ),
    ],
)
def test_a_bad_date_or_name_is_refused_and_nothing_is_written(demo, args, message):
    counts = _cut_row_count(demo)
    result = cli(_url(demo), "cut", "create", "--name", "interim-1", *args)
    assert result.exit_code == 2
    assert result.output == message.format(today=date.today().isoformat()) + "\n"
    assert _cut_row_count(demo) == counts


@pytest.mark.parametrize("command", [["report", "--out", "never.pdf"], ["analyze"], ["check"], ["cut", "show"]])
def test_an_unknown_cut_is_refused(demo, command, tmp_path, monkeypatch):
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    args = [*command, "nope"] if command[0] == "cut" else [*command, "--cut", "nope"]
    result = cli(_url(demo), *args)
    assert result.exit_code == 2
    assert result.output == "No data cut named nope: `registry cut list` shows the cuts\n"
    assert list((tmp_path / "work").iterdir()) == []  # no results, no report
    with pytest.raises(UnknownCut):
        load_cut(demo, "nope")


def test_a_corrupted_snapshot_is_refused(demo, tmp_path):
    cut = create_cut(demo, "interim-1", CUTOFF, actor="dana", reason=None, config=Config())
    tables = load_tables(demo)
    tables["follow_up"].loc[0, "death_date"] = pd.Timestamp("2018-12-31")  # one value changed behind the audit's back
    drop_append_only_triggers(demo)
    with demo.begin() as connection:  # below the ORM, as a disk fault or a hand-made UPDATE would
        connection.execute(sa.update(DataCut.__table__).values(snapshot=gzip.compress(snapshot_text(tables))))
    message = (
        f"Data cut interim-1 is corrupted: its snapshot does not match the SHA-256 recorded at creation "
        f"({cut.snapshot_sha256}); it cannot be used (restore the database from a backup)"
    )
    with pytest.raises(CorruptedCut) as refused:
        load_cut(demo, "interim-1")
    assert str(refused.value) == message
    result = cli(_url(demo), "report", "--cut", "interim-1", "--out", str(tmp_path / "r.pdf"))
    assert (result.exit_code, result.output) == (1, message + "\n")
    assert not (tmp_path / "r.pdf").exists()
    with demo.begin() as connection:  # not even gzip any more
        connection.execute(sa.update(DataCut.__table__).values(snapshot=b"\x1f\x8b not a snapshot"))
    with pytest.raises(CorruptedCut) as refused:
        load_cut(demo, "interim-1")
    assert str(refused.value) == message


CUT_REFUSED = "data_cut is frozen: a data cut cannot be changed or deleted (make a new one)"


@pytest.mark.parametrize("statement", ["UPDATE data_cut SET reason = 'changed'", "DELETE FROM data_cut"])
def test_the_database_refuses_to_change_or_delete_a_cut(demo, statement):
    create_cut(demo, "interim-1", CUTOFF, actor="dana", reason=None, config=Config())
    with demo.connect() as connection:
        before = connection.execute(sa.select(DataCut.__table__)).all()
    with demo.begin() as connection, pytest.raises(sa.exc.DBAPIError) as refused:  # raw SQL, below the ORM
        connection.exec_driver_sql(statement)
    assert CUT_REFUSED in str(refused.value.orig)
    with demo.connect() as connection:
        assert connection.execute(sa.select(DataCut.__table__)).all() == before


def test_a_snapshot_rewritten_with_its_checksum_is_found(demo, tmp_path):
    """The issue's case: the snapshot and its SHA-256 rewritten together, then the audit entry of the cut too."""
    create_cut(demo, "interim-1", CUTOFF, actor="dana", reason=None, config=Config())
    tables = load_tables(demo)
    tables["follow_up"].loc[0, "death_date"] = pd.Timestamp("2018-12-31")
    text = snapshot_text(tables)
    forged = hashlib.sha256(text).hexdigest()
    drop_append_only_triggers(demo)
    with demo.begin() as connection:
        connection.execute(sa.update(DataCut.__table__).values(snapshot=gzip.compress(text), snapshot_sha256=forged))
    with pytest.raises(CorruptedCut) as refused:
        load_cut(demo, "interim-1")
    assert str(refused.value) == (
        "Data cut interim-1 is corrupted: its snapshot_sha256 differs from the audit entry of its creation; "
        "it cannot be used (restore the database from a backup)"
    )

    log = AuditLog.__table__
    with demo.begin() as connection:  # the audit entry rewritten to match (which breaks the audit chain)
        entry = connection.execute(sa.select(log.c.id, log.c.new_values).where(log.c.table_name == "data_cut")).one()
        connection.execute(sa.update(log).where(log.c.id == entry.id).values(
            new_values={**entry.new_values, "snapshot_sha256": forged}))  # fmt: skip
    load_cut(demo, "interim-1")  # nothing left to compare without the configuration: the fingerprint finds it
    recorded = list_cuts(demo)[0].data_fingerprint
    with pytest.raises(CorruptedCut) as refused:
        load_cut(demo, "interim-1", Config())
    message = str(refused.value)
    assert message.startswith("Data cut interim-1 does not match its snapshot: the analysis table made from it has ")
    assert f", the cut recorded {recorded} at creation: the snapshot was rewritten" in message
    result = cli(_url(demo), "report", "--cut", "interim-1", "--out", str(tmp_path / "r.pdf"))
    assert (result.exit_code, result.output) == (1, message + "\n")
    assert not (tmp_path / "r.pdf").exists()
    verified = cli(_url(demo), "audit", "verify")
    assert verified.exit_code == 1
    assert (
        f"audit log BROKEN at audit entry {entry.id} (sealed at chain position 3): its content was changed"
        in verified.output
    )
