"""Every change made through the ORM is logged with who, when, old, new and why."""

import re
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import add_demo_site, drop_append_only_triggers
from sqlmodel import Session, select

from registry import db
from registry.audit import REDACTED, AuditError, audited_session
from registry.audit_chain import CHAIN_START, seal_sha256, verify_chain
from registry.models import (
    AdverseEvent,
    AntibodyTest,
    AuditEntryHash,
    AuditLog,
    AuditSeal,
    FollowUp,
    Patient,
    PatientIdentifier,
    Site,
    Treatment,
)


def _log(engine) -> list[AuditLog]:
    with Session(engine) as session:
        return list(session.exec(select(AuditLog).order_by(AuditLog.id)))


@pytest.fixture
def patient(migrated):
    with audited_session(migrated, actor="coordinator1", reason="new case") as session:
        site = Site(code="S1", name="Site one")
        session.add(site)
        session.flush()
        session.add(Patient(study_id="P001", site_id=site.id, sex="female", birth_date=date(1970, 5, 1)))
        session.commit()
    return migrated


def test_insert_is_logged_with_actor_reason_and_values(patient):
    site_entry, patient_entry = _log(patient)
    assert (site_entry.table_name, site_entry.action, site_entry.actor) == ("site", "insert", "coordinator1")
    assert patient_entry.table_name == "patient"
    assert patient_entry.reason == "new case"
    assert patient_entry.study_id == "P001"
    assert patient_entry.old_values is None
    assert patient_entry.new_values["study_id"] == "P001"
    assert patient_entry.new_values["birth_date"] == "1970-05-01"
    assert patient_entry.new_values["sex"] == "female"
    assert patient_entry.changed_at is not None


def test_update_logs_only_changed_columns_old_and_new(patient):
    with audited_session(patient, actor="datamanager", reason="source document checked") as session:
        record = session.exec(select(Patient)).one()
        record.smoking = "former"
        record.sex = "male"
        session.commit()
    entry = _log(patient)[-1]
    assert (entry.action, entry.actor, entry.reason) == ("update", "datamanager", "source document checked")
    assert entry.old_values == {"smoking": None, "sex": "female"}
    assert entry.new_values == {"smoking": "former", "sex": "male"}
    assert entry.record_key == "1"


def test_child_record_changes_carry_the_study_id(patient):
    with audited_session(patient, actor="coordinator1") as session:
        session.add(Treatment(patient_id=1, drug="tofacitinib", start_date=date(2019, 1, 5)))
        session.commit()
    with audited_session(patient, actor="coordinator1", reason="entered twice") as session:
        session.delete(session.exec(select(Treatment)).one())
        session.commit()
    inserted, deleted = _log(patient)[-2:]
    assert (inserted.action, inserted.table_name, inserted.study_id) == ("insert", "treatment", "P001")
    assert (deleted.action, deleted.study_id, deleted.reason) == ("delete", "P001", "entered twice")
    assert deleted.old_values["drug"] == "tofacitinib"
    assert deleted.new_values is None


def test_change_without_actor_is_refused_and_nothing_is_written(patient):
    with Session(patient) as session:
        session.add(Site(code="S2", name="Site two"))
        with pytest.raises(AuditError, match="without an actor"):
            session.commit()
    with Session(patient) as session:
        assert session.exec(select(Site.code)).all() == ["S1"]
    assert len(_log(patient)) == 2


def test_blank_actor_is_refused(migrated):
    with pytest.raises(AuditError, match="actor"):
        audited_session(migrated, actor="  ")


def test_audit_rows_roll_back_with_the_change(patient):
    with audited_session(patient, actor="coordinator1") as session:
        session.add(Patient(study_id="P001", site_id=1, sex="male", birth_date=date(1980, 1, 1)))
        with pytest.raises(sa.exc.IntegrityError):
            session.commit()
    assert len(_log(patient)) == 2


def test_audit_log_is_append_only(patient):
    with audited_session(patient, actor="admin") as session:
        entry = session.exec(select(AuditLog)).first()
        entry.actor = "someone else"
        with pytest.raises(AuditError, match="append-only"):
            session.commit()
    with audited_session(patient, actor="admin") as session:
        session.delete(session.exec(select(AuditLog)).first())
        with pytest.raises(AuditError, match="append-only"):
            session.commit()
    with audited_session(patient, actor="admin") as session:
        session.exec(select(AuditSeal)).first().entries = 1
        with pytest.raises(AuditError, match="append-only"):
            session.commit()
    with audited_session(patient, actor="admin") as session:
        session.delete(session.exec(select(AuditEntryHash)).first())
        with pytest.raises(AuditError, match="append-only"):
            session.commit()
    assert [e.actor for e in _log(patient)] == ["coordinator1", "coordinator1"]


REFUSED = {
    "audit_log": "audit_log is append-only: an audit entry cannot be changed or deleted",
    "audit_seal": "audit_seal is append-only: a seal of audit entries cannot be changed or deleted",
    "audit_entry_hash": "audit_entry_hash is append-only: the hash of an audit entry cannot be changed or deleted",
}


@pytest.mark.parametrize(
    ("table", "statement"),
    [("audit_log", "UPDATE audit_log SET actor = 'someone else' WHERE id = 1"),
     ("audit_log", "UPDATE audit_log SET batch = NULL"), ("audit_log", "DELETE FROM audit_log WHERE id = 1"),
     ("audit_seal", "UPDATE audit_seal SET entries = 1"), ("audit_seal", "DELETE FROM audit_seal"),
     ("audit_entry_hash", "UPDATE audit_entry_hash SET content_sha256 = previous_sha256"),
     ("audit_entry_hash", "DELETE FROM audit_entry_hash WHERE entry_id = 2")],
    ids=["update", "unseal", "delete", "seal update", "seal delete", "hash update", "hash delete"],
)  # fmt: skip
def test_the_database_refuses_to_change_or_delete_audit_entries_and_seals(patient, table, statement):
    before = _rows(patient)
    with patient.begin() as connection, pytest.raises(sa.exc.DBAPIError) as refused:  # below the ORM, raw SQL
        connection.exec_driver_sql(statement)
    assert REFUSED[table] in str(refused.value.orig)
    assert _rows(patient) == before


@pytest.mark.parametrize("table", ["audit_log", "audit_seal", "audit_entry_hash"])
def test_postgresql_refuses_to_truncate_the_audit_log_and_seals(patient, table):
    if patient.dialect.name != "postgresql":
        pytest.skip("TRUNCATE is PostgreSQL's (SQLite has DELETE, refused above)")
    before = _rows(patient)
    with patient.begin() as connection, pytest.raises(sa.exc.DBAPIError, match=REFUSED[table]):
        connection.exec_driver_sql(f"TRUNCATE {table}")
    assert _rows(patient) == before


def _rows(engine) -> list[list[tuple]]:
    with engine.connect() as connection:
        return [[tuple(row) for row in connection.execute(sa.select(table).order_by(*table.primary_key.columns))]
                for table in (AuditLog.__table__, AuditSeal.__table__, AuditEntryHash.__table__)]  # fmt: skip


@pytest.mark.parametrize(
    ("statement", "kind", "table"),
    [(sa.update(Patient).values(smoking="current"), "update", "patient"),
     (sa.delete(Treatment).where(Treatment.patient_id == 1), "delete", "treatment"),
     (sa.update(AuditLog).values(actor="someone else"), "update", "audit_log")],
    ids=["update", "delete", "audit_log"],
)  # fmt: skip
def test_a_bulk_orm_update_or_delete_is_refused_and_nothing_changes(patient, statement, kind, table):
    with audited_session(patient, actor="coordinator1") as session:
        session.add(Treatment(patient_id=1, drug="tofacitinib", start_date=date(2019, 1, 5)))
        session.commit()
    before = every_row(patient)
    with audited_session(patient, actor="coordinator1", reason="bulk") as session:
        with pytest.raises(AuditError) as refused:
            session.execute(statement)
        session.commit()
    assert str(refused.value) == (
        f"A bulk {kind} of {table} is refused: it would change rows without an audit entry; "
        "change the records one by one through the session (setattr, session.delete)"
    )
    assert every_row(patient) == before


def every_row(engine) -> dict[str, list[tuple]]:
    with engine.connect() as connection:
        return {m.__tablename__: [tuple(r) for r in connection.execute(sa.select(m.__table__).order_by(
            *m.__table__.primary_key.columns))] for m in (Patient, Treatment, AuditLog)}  # fmt: skip


def _seals(engine) -> list[AuditSeal]:
    with Session(engine) as session:
        return list(session.exec(select(AuditSeal).order_by(AuditSeal.chain_index)))


def test_each_transaction_seals_its_entries_as_it_commits_orm_and_bulk_alike(patient):
    from registry.audit import insert_audited

    with patient.begin() as connection:
        insert_audited(connection, Patient, [{"study_id": "B1", "site_id": 1, "sex": "male",
                                              "birth_date": date(1980, 1, 1)}], actor="importer", reason="bulk")  # fmt: skip
    with audited_session(patient, actor="datamanager", reason="checked") as session:
        session.exec(select(Patient).where(Patient.study_id == "P001")).one().smoking = "former"
        session.commit()
    with audited_session(patient, actor="datamanager") as session:  # nothing changed: no entry, no seal
        session.commit()
    entries, seals = _log(patient), _seals(patient)
    assert [(s.chain_index, s.entries, s.first_id, s.last_id) for s in seals] == [(1, 2, 1, 2), (2, 1, 3, 3),
                                                                                   (3, 1, 4, 4)]  # fmt: skip
    assert [e.batch for e in entries] == [seals[0].batch] * 2 + [seals[1].batch, seals[2].batch]
    assert [s.previous_sha256 for s in seals] == [CHAIN_START] + [s.seal_sha256 for s in seals[:-1]]
    with patient.connect() as connection:
        report = verify_chain(connection)
    assert (report.entries, report.head_index, report.head_sha256, report.problem) == (4, 3, seals[-1].seal_sha256,
                                                                                       None)  # fmt: skip


def test_transactions_committed_in_another_order_than_their_ids_chain_in_commit_order(patient):
    """Concurrent PostgreSQL writers interleave ids: the chain follows the commits (SQLite has one writer)."""
    if patient.dialect.name != "postgresql":
        pytest.skip("SQLite runs one writing transaction at a time")
    first, second = audited_session(patient, actor="a"), audited_session(patient, actor="b")
    first.add(Site(code="S2", name="Site two"))
    first.flush()  # its entry takes id 3
    second.add(Site(code="S3", name="Site three"))
    second.commit()  # id 4, committed first: chain position 2
    first.commit()
    first.close(), second.close()
    assert [(s.chain_index, s.first_id) for s in _seals(patient)][1:] == [(2, 4), (3, 3)]
    with patient.connect() as connection:
        assert verify_chain(connection).intact


@pytest.mark.parametrize("tampering", ["content", "removed", "inserted", "seal", "seal removed", "replaced",
                                       "outside"])  # fmt: skip
def test_verify_names_the_first_broken_entries(patient, tampering):
    with audited_session(patient, actor="coordinator1") as session:
        for code in ("S2", "S3"):
            session.add(Site(code=code, name=f"Site {code}"))
            session.commit()
    drop_append_only_triggers(patient)  # what the chain must find gets past the triggers
    log, seals = AuditLog.__table__, AuditSeal.__table__
    batch = _seals(patient)[1].batch  # of entry 3
    with patient.begin() as connection:
        if tampering == "content":
            connection.execute(sa.update(log).where(log.c.id == 3).values(new_values={"code": "S9"}))
        elif tampering == "removed":
            connection.execute(sa.delete(log).where(log.c.id == 3))
        elif tampering == "inserted":  # slipped in with a seal's own token
            connection.execute(sa.insert(log).values(changed_at=datetime.now(UTC), actor="x", action="insert",
                                                     table_name="site", record_key="9", batch=batch))  # fmt: skip
        elif tampering == "seal":
            connection.execute(sa.update(seals).where(seals.c.chain_index == 2).values(first_id=2))
        elif tampering == "seal removed":
            connection.execute(sa.delete(seals).where(seals.c.chain_index == 2))
        elif tampering == "replaced":  # the seal rewritten with a hash of its own, not chained to the one before
            rehashed = seal_sha256("f" * 64, 2, 1, 3, 3, _seals(patient)[1].content_sha256)
            connection.execute(sa.update(seals).where(seals.c.chain_index == 2).values(previous_sha256="f" * 64,
                                                                                       seal_sha256=rehashed))  # fmt: skip
        else:
            connection.execute(sa.insert(log).values(changed_at=datetime.now(UTC), actor="x", action="insert",
                                                     table_name="site", record_key="9"))  # fmt: skip
    with patient.connect() as connection:
        report = verify_chain(connection)
    named = "audit entries 3 to 3 (sealed together at chain position 2)"
    problem = {
        "content": "audit entry 3 (sealed at chain position 2): its content was changed after it was written (it no "
                   "longer gives its stored hash)",
        "removed": f"{named}: the seal holds 1, 0 are found (1 removed)",
        "inserted": "audit entry 5: inserted outside the chain (no seal holds it)",
        "seal": "audit entries 2 to 3 (sealed together at chain position 2): their seal was changed (it no longer "
                "gives its own hash)",
        "seal removed": "audit entries 4 to 4 (sealed together at chain position 3): seals are missing before them: "
                        "the chain jumps from position 1",
        "replaced": f"{named}: the chain is broken: their seal does not follow the one before it (replaced or "
                    "inserted)",
        "outside": "audit entry 5: inserted outside the chain (no seal holds it)",
    }[tampering]  # fmt: skip
    assert report.problem == problem
    assert report.entries == (4 if tampering in ("outside", "inserted") else 2)


@pytest.mark.parametrize("tampering", ["content", "removed", "hash removed"])
def test_verify_names_the_one_entry_broken_inside_a_large_transaction(patient, tampering):
    """An import's seal holds thousands of entries: verify names the entry, by its own hash and link."""
    from registry.audit import insert_audited

    with patient.begin() as connection:  # entries 3 to 2002, one seal
        insert_audited(connection, Patient, [{"study_id": f"B{n}", "site_id": 1, "sex": "male",
                                              "birth_date": date(1980, 1, 1)} for n in range(2000)],
                       actor="importer", reason="bulk")  # fmt: skip
    drop_append_only_triggers(patient)
    log, hashes = AuditLog.__table__, AuditEntryHash.__table__
    with patient.begin() as connection:
        if tampering == "content":
            connection.execute(sa.update(log).where(log.c.id == 1234).values(reason="changed"))
        elif tampering == "removed":
            connection.execute(sa.delete(log).where(log.c.id == 1234))
        else:
            connection.execute(sa.delete(hashes).where(hashes.c.entry_id == 1234))
    with patient.connect() as connection:
        report = verify_chain(connection)
    problem = {
        "content": "audit entry 1234 (sealed at chain position 2): its content was changed after it was written (it "
                   "no longer gives its stored hash)",
        "removed": "audit entry 1235 (sealed at chain position 2): the entry before it in the chain is missing or "
                   "was replaced",
        "hash removed": "audit entry 1234 (sealed at chain position 2): inserted outside the chain (no hash of it is "
                        "stored)",
    }[tampering]  # fmt: skip
    assert (report.problem, report.entries, report.head_index) == (problem, 2, 1)


def test_each_entry_is_hashed_and_linked_to_the_entry_before_it_across_seals(patient):
    with audited_session(patient, actor="coordinator1") as session:
        session.add(Site(code="S2", name="Site two"))
        session.commit()
    with Session(patient) as session:
        stored = list(session.exec(select(AuditEntryHash).order_by(AuditEntryHash.entry_id)))
    assert [h.entry_id for h in stored] == [1, 2, 3]
    assert [h.previous_sha256 for h in stored] == [CHAIN_START] + [h.content_sha256 for h in stored[:-1]]
    assert len({h.content_sha256 for h in stored}) == 3


def test_direct_identifiers_are_logged_as_changed_but_never_copied(patient):
    with audited_session(patient, actor="coordinator1") as session:
        session.add(PatientIdentifier(patient_id=1, hospital_number="H123456", full_name="Jane Example"))
        session.commit()
    with audited_session(patient, actor="coordinator1", reason="typo") as session:
        session.exec(select(PatientIdentifier)).one().full_name = "Jane Exampel"
        session.commit()
    inserted, updated = _log(patient)[-2:]
    assert inserted.new_values == {"patient_id": 1, "hospital_number": REDACTED, "full_name": REDACTED}
    assert (updated.old_values, updated.new_values) == ({"full_name": REDACTED}, {"full_name": REDACTED})
    with patient.connect() as connection:
        dump = " ".join(str(row) for row in connection.execute(sa.select(AuditLog.__table__)))
    assert "H123456" not in dump and "Jane" not in dump


def test_change_after_a_commit_logs_the_stored_old_value(patient):
    """A commit expires the loaded values; the log must still show what was stored."""
    with audited_session(patient, actor="coordinator1") as session:
        record = session.exec(select(Patient)).one()
        record.smoking = "former"
        session.commit()
        record.smoking = "current"  # edited again after the commit, as a web form does
        session.commit()
    entry = _log(patient)[-1]
    assert (entry.old_values, entry.new_values) == ({"smoking": "former"}, {"smoking": "current"})


def test_objects_of_other_tables_are_not_audited(patient, tmp_path):
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

    class Base(DeclarativeBase):
        pass

    class Note(Base):
        __tablename__ = "note"
        id: Mapped[int] = mapped_column(primary_key=True)

    other = sa.create_engine(f"sqlite:///{tmp_path / 'other.db'}")
    Base.metadata.create_all(other)
    with Session(other) as session:  # no actor: not a registry change, so not refused
        session.add(Note(id=1))
        session.commit()
    assert len(_log(patient)) == 2


def test_a_bulk_insert_is_logged_exactly_as_an_orm_insert(patient):
    """The import's bulk path (insert_audited) writes the entries the flush hook would write."""
    from registry.audit import insert_audited

    with Session(patient) as session:
        site_id, first_id = session.exec(select(Patient.site_id, Patient.id)).one()
    rows = [
        {"study_id": "P002", "site_id": site_id, "sex": "male", "birth_date": date(1960, 1, 2), "smoking": "former"},
        {"study_id": "P003", "site_id": site_id, "sex": "female", "birth_date": date(1955, 3, 4)},
    ]
    treatment = {
        "patient_id": first_id,
        "drug": "tofacitinib",
        "start_date": date(2020, 1, 1),
        "dose": 5.0,
        "dose_unit": "mg",
    }
    with audited_session(patient, actor="importer", reason="bulk") as session:
        connection = session.connection()
        keys = insert_audited(connection, Patient, rows, actor="importer", reason="bulk")
        insert_audited(connection, Treatment, [treatment], actor="importer", reason="bulk")
        session.commit()
    with audited_session(patient, actor="importer", reason="bulk") as session:  # the same rows through the ORM
        session.add(Patient(**{**rows[0], "study_id": "P004"}))
        session.add(Treatment(**{**treatment, "start_date": date(2020, 2, 1)}))
        session.commit()
    bulk_patient, bulk_other, bulk_treatment, orm_patient, orm_treatment = _log(patient)[-5:]
    with Session(patient) as session:
        stored = {p.study_id: p.id for p in session.exec(select(Patient))}
    assert keys == [stored["P002"], stored["P003"]]
    assert bulk_other.new_values["smoking"] is None and bulk_other.study_id == "P003"
    for bulk, orm in ((bulk_patient, orm_patient), (bulk_treatment, orm_treatment)):
        assert (bulk.action, bulk.table_name, bulk.actor, bulk.reason, bulk.old_values) == (
            orm.action, orm.table_name, orm.actor, orm.reason, orm.old_values)  # fmt: skip
        differ = {k for k in orm.new_values if orm.new_values[k] != bulk.new_values[k]}
        assert list(bulk.new_values) == list(orm.new_values)
        assert differ <= {"id", "study_id", "start_date"}, differ
    assert (bulk_treatment.study_id, bulk_treatment.record_key) == ("P001", str(bulk_treatment.new_values["id"]))


#: Values whose JSON is easy to get wrong: floats that need more than 15 significant digits (SQLite prints 15)
#: beside some that do not, floats that print like whole numbers or in exponent form, booleans, NULLs, text with
#: quotes, control characters and characters outside ASCII, at full length.
_FLOATS = [0.1 + 0.2, 1e-7, 100.0, 123456789.12345679, 2.0**60, 1e15, 1e300, 5e-324, 0.0, 1 / 3]
_SHORT_FLOATS = [1e-7, 100.0, 1e15, 1e300, 5e-324, 0.0, 10.6, None, 2046.0, 1e16]
_TEXT = ('"quoted" \\ back\nslash\ttab \x01 é 肺 🫁 ' * 10)[:200]


def _tricky_records(patient_id: int, offset: int) -> dict[type, list[dict]]:
    """Records of every kind the bulk path logs; ``offset`` moves their dates, so two sets never share a key."""
    day = date(2020, 1, 1).toordinal() + offset
    return {
        AntibodyTest: [
            {"patient_id": patient_id, "antibody": "anti_mda5", "assay": "elisa", "unit": "index",
             "sample_date": date.fromordinal(day + n), "value": value, "cutoff": cutoff}
            for n, (value, cutoff) in enumerate(zip(_FLOATS, _SHORT_FLOATS, strict=True))
        ] + [{"patient_id": patient_id, "antibody": "anti_ro52", "assay": "line_blot", "grade": "weak",
              "sample_date": date.fromordinal(day)}],
        AdverseEvent: [
            {"patient_id": patient_id, "onset_date": date.fromordinal(day + n), "term": term, "term_detail": detail,
             "ctcae_grade": 1 + n, "serious": serious, "led_to_discontinuation": not serious}
            for n, (term, detail, serious) in enumerate([("pjp", _TEXT, True), ("herpes_zoster", None, False)])
        ],
        FollowUp: [{"patient_id": patient_id, "last_contact_date": date.fromordinal(day), "vital_status": "alive"}],
        PatientIdentifier: [{"patient_id": patient_id, "full_name": "Jane Synthetic", "hospital_number": None}],
    }  # fmt: skip


def test_bulk_entries_keep_every_kind_of_value_as_the_orm_logs_it(patient):
    """Floats to the last digit (and still floats), booleans, NULLs, long and non-ASCII text, redacted identifiers:
    the entries the database writes for a bulk insert read back as the flush hook's (synthetic values)."""
    from registry.audit import insert_audited

    with Session(patient) as session:
        site_id = session.exec(select(Patient.site_id)).first()
    flags = {"gottron": True, "fever": False, "arthritis": None, "birth_date": date(1960, 1, 2), "smoking": "never"}
    with audited_session(patient, actor="importer", reason="bulk") as session:
        connection = session.connection()
        (bulk_id,) = insert_audited(connection, Patient, [{"study_id": "B1", "site_id": site_id, "sex": "male",
                                                           **flags}], actor="importer", reason="bulk")  # fmt: skip
        for model, rows in _tricky_records(bulk_id, 0).items():
            insert_audited(connection, model, rows, actor="importer", reason="bulk")
        session.commit()
    with audited_session(patient, actor="importer", reason="bulk") as session:
        orm_patient = Patient(study_id="O1", site_id=site_id, sex="male", **flags)
        session.add(orm_patient)
        session.flush()
        for model, rows in _tricky_records(orm_patient.id, 1000).items():
            session.add_all(model(**row) for row in rows)
        session.commit()
    entries = _log(patient)
    bulk = [e for e in entries if e.study_id == "B1"]
    orm = [e for e in entries if e.study_id == "O1"]
    assert len(bulk) == len(orm) == 1 + len(_FLOATS) + 1 + 2 + 1 + 1
    keyed = {"id", "study_id", "patient_id", "sample_date", "onset_date", "last_contact_date"}
    for made in (bulk, orm):  # the flush hook logs in its own order: compare each table's entries in key order
        made.sort(key=lambda e: (e.table_name, e.new_values.get("sample_date") or "", e.new_values.get("antibody", ""),
                                 e.new_values.get("onset_date") or ""))  # fmt: skip
    for b, o in zip(bulk, orm, strict=True):
        assert (b.action, b.table_name, b.actor, b.reason, b.old_values) == (
            o.action, o.table_name, o.actor, o.reason, o.old_values)  # fmt: skip
        assert list(b.new_values) == list(o.new_values)
        for name in o.new_values.keys() - keyed:
            assert (type(b.new_values[name]), b.new_values[name]) == (type(o.new_values[name]), o.new_values[name]), (
                b.table_name, name)  # fmt: skip
    values = sorted(e.new_values["value"] for e in bulk if e.table_name == "antibody_test" and e.new_values["value"])
    assert values == sorted(v for v in _FLOATS if v)  # exactly the floats given, none rounded
    cutoffs = [e.new_values["cutoff"] for e in bulk if e.table_name == "antibody_test"]
    assert sorted(c for c in cutoffs if c is not None) == sorted(c for c in _SHORT_FLOATS if c is not None)
    assert [e.new_values["full_name"] for e in bulk if e.table_name == "patient_identifier"] == [REDACTED]
    assert [e.record_key for e in bulk if e.table_name in ("follow_up", "patient_identifier")] == [str(bulk_id)] * 2


def test_a_bulk_insert_refuses_values_it_could_not_log_as_the_orm_does(patient):
    """A date-time's time zone is not stored by SQLite, so its entry could not match the ORM's: refused, nothing written."""
    from registry.audit import insert_audited

    before = len(_log(patient))
    row = {"study_id": "P009", "site_id": 1, "sex": "male", "birth_date": date(1960, 1, 2)}
    refused = r"^patient.deleted_at: a bulk insert cannot log such values as the ORM does; use the ORM$"
    with audited_session(patient, actor="importer", reason="bulk") as session, pytest.raises(TypeError, match=refused):
        insert_audited(session.connection(), Patient, [{**row, "deleted_at": datetime.now(UTC)}],
                       actor="importer", reason="bulk")  # fmt: skip
    with Session(patient) as session:
        assert session.exec(select(Patient.study_id)).all() == ["P001"]
    assert len(_log(patient)) == before


def test_the_documented_postgresql_roles_let_the_application_only_append_to_the_log(postgres_server):
    """docs/operations.md's grants.sql, run as written: the application role works, and cannot touch the log."""
    docs = (Path(__file__).resolve().parents[1] / "docs" / "operations.md").read_text()
    grants = re.search(r"<!-- grants.sql: .*? -->\n```sql\n(.*?)```", docs, re.S).group(1)
    suffix = uuid.uuid4().hex[:8]
    owner, app, name = f"registry_owner_{suffix}", f"registry_app_{suffix}", f"roles_{suffix}"
    server = sa.make_url(db.database_url(postgres_server))
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE ROLE {owner} LOGIN; CREATE ROLE {app} LOGIN")
        connection.exec_driver_sql(f"CREATE DATABASE {name} OWNER {owner}")
    engines = [
        db.make_engine(server.set(username=role, database=name).render_as_string(False)) for role in (owner, app)
    ]
    try:
        db.upgrade(engines[0])  # the owner migrates, then grants
        with engines[0].begin() as connection:
            connection.exec_driver_sql(grants.replace("registry_app", app))
        add_demo_site(engines[1])  # an audited change by the application role, sealed by it
        with engines[1].connect() as connection:
            assert verify_chain(connection).entries == 1
        for statement in ("UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_seal", "DELETE FROM audit_entry_hash",
                          "TRUNCATE data_cut", "UPDATE query_message SET body = 'x'", "DELETE FROM data_query",
                          "TRUNCATE query_message", "DELETE FROM signature", "UPDATE signature SET signer = 'x'",
                          "DELETE FROM patient_status", "TRUNCATE signature",
                          "DROP TRIGGER audit_log_refused ON audit_log", "ALTER TABLE audit_log DISABLE TRIGGER ALL",
                          "UPDATE alembic_version SET version_num = '0001'"):  # fmt: skip
            with engines[1].begin() as connection, pytest.raises(sa.exc.ProgrammingError) as refused:
                connection.exec_driver_sql(statement)
            assert re.match(
                r"(permission denied for table|must be owner of (table|relation)) ", str(refused.value.orig)
            )
        with engines[1].begin() as connection:  # what sign-off needs: set a status, void a signature
            connection.exec_driver_sql("UPDATE patient_status SET status = 'complete' WHERE false")
            connection.exec_driver_sql("UPDATE signature SET voided_at = now(), voided_by = 'x', void_reason = 'y' "
                                       "WHERE false")  # fmt: skip
        with engines[1].connect() as connection:
            assert verify_chain(connection).intact
    finally:
        for engine in engines:
            engine.dispose()
        with admin.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
            connection.exec_driver_sql(f"DROP ROLE {app}; DROP ROLE {owner}")
        admin.dispose()
