"""The incremental check: for the patients a save or an import touches, exactly what a whole run finds for them."""

from datetime import date, datetime
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from conftest import add_demo_site
from test_quality import as_rows, conformed, restricted

from registry import db, synth
from registry.audit import audited_session
from registry.config import Config
from registry.entry import set_deleted
from registry.entry_checks import EntryChecks
from registry.ingest import import_path
from registry.models import AdverseEvent, AntibodyTest, FollowUp, Hrct, LabResult, Patient, Pft, Site, Treatment
from registry.quality import run_checks
from registry.quality.cross import CROSS_RULES, DUPLICATE_PATIENT_KEY, READS, RECORD_KEY, Registry
from registry.quality.engine import rule_findings
from registry.quality.incremental import check_patients, load_patients
from registry.tables import load_tables

DIRTY = Path(__file__).resolve().parents[1] / "fixtures" / "dirty" / "sheets"
TODAY = date(2026, 11, 25)


def _dirty(engine: sa.Engine) -> dict[str, int]:
    add_demo_site(engine)
    assert import_path(engine, DIRTY, actor="test").written
    with engine.connect() as connection:
        return dict(connection.execute(sa.select(Patient.study_id, Patient.id)).all())


def _whole_run_for(findings: pd.DataFrame, study_ids: list[str]) -> list[dict]:
    return findings[findings["study_id"].isin(study_ids)].to_dict("records")


def test_each_patient_alone_gets_exactly_the_whole_runs_findings(migrated):
    ids = _dirty(migrated)
    whole = run_checks(load_tables(migrated), Config(), TODAY).findings
    with migrated.connect() as connection:
        for study_id, patient_id in ids.items():
            found = check_patients(connection, [patient_id], Config(), TODAY).to_dict("records")
            assert found == _whole_run_for(whole, [study_id]), study_id
    assert whole["study_id"].nunique() > 20  # most patients carry a seeded defect
    assert "PAT-018" in set(whole["rule"])  # the cross-patient rule is among them


def test_several_patients_at_once_and_none(migrated):
    ids = _dirty(migrated)
    whole = run_checks(load_tables(migrated), Config(), TODAY).findings
    some = sorted(ids)[::3]
    with migrated.connect() as connection:
        found = check_patients(connection, [ids[s] for s in some], Config(), TODAY)
        assert found.to_dict("records") == _whole_run_for(whole, some)
        assert check_patients(connection, [], Config(), TODAY).empty


def test_a_probable_duplicate_is_found_when_only_the_new_patient_is_checked(migrated):
    ids = _dirty(migrated)
    whole = run_checks(load_tables(migrated), Config(), TODAY).findings
    twins = whole.loc[whole["rule"] == "PAT-018", "study_id"].tolist()
    assert len(twins) >= 2
    with migrated.connect() as connection:
        found = check_patients(connection, [ids[twins[0]]], Config(), TODAY)
    assert found.loc[found["rule"] == "PAT-018", "study_id"].tolist() == [twins[0]]


def test_deleted_patients_and_records_are_left_out_as_a_whole_run_leaves_them_out(migrated):
    ids = _dirty(migrated)
    with migrated.connect() as connection:
        labs = connection.execute(sa.select(LabResult.patient_id, LabResult.id).order_by(LabResult.id)).all()
    by_id = {patient_id: study_id for study_id, patient_id in ids.items()}
    gone, (kept, lab) = labs[0][0], labs[-1]  # two patients with labs: one deleted whole, one lab of the other
    assert gone != kept
    set_deleted(migrated, "patients", gone, deleted=True, actor="test", reason="withdrew consent")
    set_deleted(migrated, "labs", lab, deleted=True, actor="test", reason="entered twice", patient_id=kept)
    tables = load_tables(migrated)
    whole = run_checks(tables, Config(), TODAY).findings
    with migrated.connect() as connection:
        assert all(frame.empty for name, frame in load_patients(connection, [gone]).items() if name != "site")
        assert lab not in set(load_patients(connection, [kept])["lab_result"]["id"])
        for patient_id in (gone, kept):
            read = load_patients(connection, [patient_id])
            for name, frame in read.items():
                if name in ("site", "patient"):
                    continue
                expected = tables[name][tables[name]["patient_id"] == patient_id]
                key = RECORD_KEY[name]
                pd.testing.assert_frame_equal(frame.sort_values(key, ignore_index=True),
                                              expected.sort_values(key, ignore_index=True))  # fmt: skip
            found = check_patients(connection, [patient_id], Config(), TODAY).to_dict("records")
            assert found == _whole_run_for(whole, [by_id[patient_id]])
    assert gone not in set(tables["patient"]["id"]) and kept in set(tables["patient"]["id"])


def test_the_probable_duplicate_key_is_indexed():
    """A save's check finds the patients sharing the key by it (a patient table scan without it)."""
    assert DUPLICATE_PATIENT_KEY in [[column.name for column in index.columns] for index in Patient.__table__.indexes]


def test_the_findings_of_some_rules_are_the_whole_runs_findings_of_those_rules(migrated):
    _dirty(migrated)
    tables = load_tables(migrated)
    labs = tables["lab_result"].assign(value=tables["lab_result"]["value"].astype(object))
    labs.loc[labs.index[0], "value"] = "high"  # a mistyped cell: its type finding drops its other findings
    tables["lab_result"] = labs
    whole = run_checks(tables, Config(), TODAY).findings
    fired = sorted(set(whole["rule"]))
    assert {"LAB-001", "PAT-018"} <= set(fired) and len(fired) > 30
    for rules in [*({rule} for rule in fired), set(fired[::3]), {"LAB-002", "LAB-013"}, {"ABT-011", "SIT-002"}]:
        expected = whole[whole["rule"].isin(rules)].reset_index(drop=True)
        pd.testing.assert_frame_equal(rule_findings(tables, Config(), TODAY, rules), expected)


#: Changes a save makes to a patient: one adding a warning, one a date that many rules hold against others.
SAVES = [{"smoking": None}, {"birth_date": date(1899, 12, 30)}, {"birth_date": date(1990, 1, 1), "smoking": "never"}]


def test_a_saves_added_findings_from_the_rows_before_are_those_of_a_whole_check_before(migrated):
    ids = _dirty(migrated)
    checks = EntryChecks(Config(), TODAY)
    added = 0
    for patient_id in sorted(ids.values())[::8]:
        for change in SAVES:
            with audited_session(migrated, actor="test") as session:
                rows_before, findings_before = (
                    checks.before(session, patient_id),
                    checks.findings(session, [patient_id]),
                )
                patient = session.get(Patient, patient_id)
                for name, value in change.items():
                    setattr(patient, name, value)
                session.flush()
                found = checks.added(session, [patient_id], rows_before).to_dict("records")
                assert found == checks.added(session, [patient_id], findings_before).to_dict("records")
                added += len(found)
                session.rollback()
    assert added > 10, added


def _defective_synthetic(engine: sa.Engine, folder: Path) -> dict[str, int]:
    """A synthetic registry of 200 patients (two sites) with defects seeded in a few: a probable duplicate, a
    spreadsheet's default birth date, a lab dated in the future."""
    made = synth.synthesize(folder, 200, seed=3, sites=2)
    with audited_session(engine, actor="test") as session:
        session.add_all([Site(code=code, name=f"Synthetic site {code}") for code in made.sites])
        session.commit()
    assert import_path(engine, folder, actor="test").written
    with audited_session(engine, actor="test", reason="seeded defects") as session:
        patients = session.scalars(sa.select(Patient).order_by(Patient.id)).all()
        first, *others = patients
        twin = next(p for p in others if p.site_id == first.site_id)
        twin.sex, twin.birth_date, twin.dm_diagnosis_date = first.sex, first.birth_date, first.dm_diagnosis_date
        patients[5].birth_date = date(1899, 12, 30)
        lab = session.scalars(sa.select(LabResult).where(LabResult.patient_id == patients[9].id)).first()
        lab.sample_date = date(2030, 1, 1)
        session.commit()
    with engine.connect() as connection:
        return dict(connection.execute(sa.select(Patient.study_id, Patient.id)).all())


def test_a_synthetic_registrys_patients_alone_get_exactly_the_whole_runs_findings(migrated, tmp_path):
    ids = _defective_synthetic(migrated, tmp_path / "sheets")
    whole = run_checks(load_tables(migrated), Config(), TODAY).findings
    assert {"PAT-018", "TIM-008", "TIM-004"} <= set(whole["rule"])
    flagged = sorted(set(whole["study_id"].dropna()))
    sample = sorted(
        set(flagged[:: max(len(flagged) // 12, 1)]) | set(whole.loc[whole["rule"] == "PAT-018", "study_id"])
    )
    with migrated.connect() as connection:
        for study_id in [*sample, *sorted(ids)[::50]]:
            found = check_patients(connection, [ids[study_id]], Config(), TODAY).to_dict("records")
            assert found == _whole_run_for(whole, [study_id]), study_id
        some = sorted(ids)[::7]
        found = check_patients(connection, [ids[s] for s in some], Config(), TODAY).to_dict("records")
        assert found == _whole_run_for(whole, some)


def test_each_cross_rule_reads_only_the_columns_it_declares_on_real_registries(migrated, tmp_path):
    """As tests/test_quality.py holds each rule to its declaration on its own case, here on the dirty fixture and a
    synthetic registry with defects, as read from the database (a save skips a rule when no column it declares
    changed: one reading another would miss what the save adds)."""
    _dirty(migrated)
    synthetic = sa.create_engine(f"sqlite:///{tmp_path / 'synthetic.db'}")
    db.upgrade(synthetic)
    _defective_synthetic(synthetic, tmp_path / "sheets")
    fired = set()
    for tables in (load_tables(migrated), load_tables(synthetic)):
        for config in (Config(), Config(data_cutoff=date(2024, 1, 1))):
            registry = Registry(conformed(tables), config, TODAY)
            for rule, check in CROSS_RULES.items():
                whole = check(registry)
                assert as_rows(check(restricted(registry, READS[rule]))) == as_rows(whole), rule
                fired |= {rule} if len(whole) else set()
    assert {"PAT-018", "TIM-002", "TIM-003", "TIM-006", "AEV-010", "STU-008"} <= fired and len(fired) > 15


MODELS = {
    model.__tablename__: model for model in (Patient, AntibodyTest, LabResult, Pft, Hrct, Treatment, AdverseEvent)
}
MODELS["follow_up"] = FollowUp


def _stored(value: object) -> object:
    """A value read by :func:`load_tables` as the ORM stores it."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.date()
    return value.item() if hasattr(value, "item") else value


def _edits(tables: dict[str, pd.DataFrame], whole: pd.DataFrame, patient_id: int) -> list[tuple[str, int, dict]]:
    """Saves of one patient: each data column of each of its records' tables set to another value (one a finding
    was about, where there is one), then a record of each table deleted and one added (a copy of another
    patient's)."""
    saves = []
    for name, frame in tables.items():
        if name == "site":
            continue
        owner, key = ("id", "id") if name == "patient" else ("patient_id", RECORD_KEY[name])
        own, others = frame[frame[owner] == patient_id], frame[frame[owner] != patient_id]
        if own.empty or others.empty:
            continue
        record = int(own[key].iloc[0])
        flagged = set(whole.loc[whole["table"] == name, "record"])
        for column in frame.columns:
            if column in ("id", "patient_id", "site_id", "study_id"):
                continue
            candidates = others[others[key].astype(str).isin(flagged) & others[column].notna()]
            candidates = candidates if len(candidates) else others[others[column] != own[column].iloc[0]]
            value = _stored(candidates[column].iloc[0]) if len(candidates) else None
            saves.append((name, record, {column: value}))
        if name not in ("patient", "follow_up"):
            saves.append((name, record, {"deleted_at": datetime(2026, 1, 1)}))
            copy = {column: _stored(value) for column, value in others.iloc[0].items() if column != "id"}
            saves.append((name, 0, copy | {"patient_id": patient_id}))
    return saves


def test_a_saves_findings_from_the_rules_reading_what_it_changed_are_those_of_the_whole_catalogue(migrated):
    """Every column of every table a patient has records in, changed in turn (and a record deleted and added):
    what the save adds, found by the rules reading what it changed alone, is what two whole checks find."""
    ids = _dirty(migrated)
    tables, checks = load_tables(migrated), EntryChecks(Config(), TODAY)
    whole = run_checks(tables, Config(), TODAY).findings
    counts = tables["lab_result"]["patient_id"].value_counts()
    patient_id = next(
        int(p) for p in counts.index if all(p in set(tables[n]["patient_id"]) for n in MODELS if n != "patient")
    )
    assert patient_id in ids.values()
    saves, added, refused = _edits(tables, whole, patient_id), set(), 0
    for name, record, values in saves:
        with audited_session(migrated, actor="test") as session:
            rows_before, findings_before = checks.before(session, patient_id), checks.findings(session, [patient_id])
            if record:
                row = session.get(MODELS[name], record)
                for column, value in values.items():
                    setattr(row, column, value)
            else:
                session.add(MODELS[name](**values))
            try:
                session.flush()
            except sa.exc.IntegrityError:  # a change the database's own constraints refuse: no save to check
                refused += 1
                continue
            found = checks.added(session, [patient_id], rows_before)
            assert found.to_dict("records") == checks.added(session, [patient_id], findings_before).to_dict("records")
            added |= set(found["rule"])
            session.rollback()
    assert len(saves) - refused > 75 and len(added) > 15, (len(saves), refused, sorted(added))
