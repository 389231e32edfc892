"""Many writers at once on PostgreSQL: 20 concurrent writers, no deadlock, no error, no lost or doubled row.

Half the writers are people at browsers, each signed in to the real application (one
uvicorn server, as ``benchmarks/web_load.py`` runs it) as their own account, correcting
their own patients' smoking history and adding laboratory results to them; the other
half are imports (:func:`registry.ingest.import_path`) of small CSV workbooks, each
adding a new patient of its own and updating one of its own existing ones, again and
again. Every seeded patient has a query open: a web writer's correction of the smoking
history answers the query on that field (a message in its thread), and each import is
followed by its writer answering the query on the patient it updated, so queries are
answered while everything else is written. Writers never share a patient, so every action must succeed. Afterwards every
table must hold exactly what the successful actions imply and the audit trail exactly
one entry per change. All data is synthetic. The load lasts REGISTRY_TEST_LOAD_SECONDS
(default 15); a watchdog turns a hang into a failure.
"""

from __future__ import annotations

import csv
import os
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from benchmarks.web_load import PASSWORD, Client, running_server
from registry import db
from registry.accounts import create_account
from registry.audit import audited_session
from registry.audit_chain import verify_chain
from registry.codes import Role
from registry.ingest import Counts, import_path
from registry.models import TABLES, AuditLog, DataQuery, FollowUp, LabResult, Patient, QueryMessage, Site
from registry.queries import About, answer, open_query

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "example"
SECONDS = float(os.environ.get("REGISTRY_TEST_LOAD_SECONDS", "15"))
#: A writer still busy this long after the start is stuck (the machine may be slow, not that slow).
WATCHDOG = SECONDS + 60
WEB_WRITERS = IMPORTERS = 10
OWN_PATIENTS = 3  # patients each writer has before the load
WEB_MIX = [1, 1, 3, 3]  # list, page, edit (form + save), lab (form + add): benchmarks.web_load.ACTIONS
TOGGLE = {"never": "former", "former": "never"}
IMPORT_LAB_DAY = date(2001, 1, 1)  # the importers' labs for existing patients (the web clients' start in 2000)


def _patient_row(study_id: str, smoking: str) -> dict[str, str]:
    """A synthetic patient of site DEMO: the example workbook's EX-002 under another study_id."""
    with (FIXTURES / "patients.csv").open(encoding="utf-8") as handle:
        template = next(row for row in csv.DictReader(handle) if row["study_id"] == "EX-002")
    return template | {"study_id": study_id, "site": "DEMO", "smoking": smoking}


def _write_sheets(folder: Path, sheets: dict[str, list[dict[str, str]]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.csv"):
        old.unlink()
    for name, rows in sheets.items():
        with (folder / f"{name}.csv").open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return folder


@dataclass
class Importer:
    """One import process: its own patients, a workbook of theirs imported again and again."""

    number: int
    folder: Path
    smoking: dict[str, str]  # own existing patient -> smoking history as stored
    queries: dict[str, int]  # own existing patient -> the query open on them
    imports: int = 0
    updates: list[tuple[str, str, str]] = field(default_factory=list)  # (study_id, actor, smoking), in order
    new_patients: list[str] = field(default_factory=list)
    answered: list[str] = field(default_factory=list)  # the patient whose query each answer went to
    labs: list[tuple[str, date, float]] = field(default_factory=list)  # (study_id, sample_date, value)
    failures: list[str] = field(default_factory=list)

    @property
    def actor(self) -> str:
        return f"importer{self.number:02d}"

    def import_once(self, engine: sa.Engine) -> None:
        k = self.imports
        new = f"IMP{self.number:02d}-N{k:04d}"
        existing = sorted(self.smoking)[k % len(self.smoking)]
        smoking = TOGGLE[self.smoking[existing]]
        labs = [
            (existing, IMPORT_LAB_DAY + timedelta(days=k), 10 + k + self.number / 100),
            (new, date(2019, 2, 15), 5.5),
        ]
        sheets = {
            "patients": [_patient_row(new, "never"), _patient_row(existing, smoking)],
            "labs": [
                {"study_id": s, "analyte": "crp", "sample_date": d.isoformat(), "value": str(v), "unit": "mg/L"}
                for s, d, v in labs
            ],
            "follow_up": [
                {"study_id": new, "last_contact_date": "2021-03-01", "vital_status": "alive", "lost_to_follow_up": "no"}
            ],
        }
        result = import_path(engine, _write_sheets(self.folder, sheets), actor=self.actor, reason="load test import")
        expected = {"patients": Counts(1, 1, 0), "labs": Counts(2, 0, 0), "follow_up": Counts(1, 0, 0)}
        if not result.written or result.problems or result.counts != expected:
            raise AssertionError(f"import {k}: written {result.written}, counts {result.counts}, "
                                 f"problems {[str(p) for p in result.problems]}")  # fmt: skip
        answer(engine, self.queries[existing], f"import {k}: smoking history checked", actor=self.actor)
        self.imports += 1
        self.answered.append(existing)
        self.smoking[existing] = smoking
        self.updates.append((existing, self.actor, smoking))
        self.new_patients.append(new)
        self.labs += labs

    def run(self, engine: sa.Engine, start: threading.Barrier, seconds: float) -> None:
        start.wait()
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                self.import_once(engine)
        except Exception:
            self.failures.append(traceback.format_exc())


def _seed(engine: sa.Engine, folder: Path) -> tuple[dict[str, list[str]], dict[str, list[str]], dict[str, int]]:
    """Site DEMO, each writer's own patients (one import), one coordinator account per web writer, and a query open on
    each patient (a web writer's on the smoking history, an importer's on the patient): study_id -> query."""
    with audited_session(engine, actor="test") as session:
        session.add(Site(code="DEMO", name="Load test site (synthetic data)"))
        session.commit()
    web = {f"web{n:02d}": [f"WEB{n:02d}-{p}" for p in range(OWN_PATIENTS)] for n in range(1, WEB_WRITERS + 1)}
    imported = {f"importer{n:02d}": [f"IMP{n:02d}-S{p}" for p in range(OWN_PATIENTS)] for n in range(1, IMPORTERS + 1)}
    everyone = [s for own in (*web.values(), *imported.values()) for s in own]
    result = import_path(engine, _write_sheets(folder, {"patients": [_patient_row(s, "never") for s in everyone]}),
                         actor="test")  # fmt: skip
    assert result.written and not result.problems
    with audited_session(engine, actor="test") as session:
        for name in web:
            create_account(session, name, PASSWORD, Role.COORDINATOR, ["DEMO"])
        session.commit()
    queries = {s: open_query(engine, s, "Smoking history?", actor="dm", about=About("patient", None, "smoking"))
               for own in web.values() for s in own}  # fmt: skip
    queries |= {s: open_query(engine, s, "Please check this patient", actor="dm")
                for own in imported.values() for s in own}  # fmt: skip
    return web, imported, queries


def _stuck(url: str) -> str:
    """What the database's sessions are waiting for; then ends them, so that stuck writers fail instead of hang."""
    admin = db.make_engine(url)
    try:
        with admin.connect() as connection:
            waits = connection.execute(sa.text(
                "SELECT pid, state, wait_event_type, wait_event, left(query, 200) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")).all()  # fmt: skip
            connection.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                       "WHERE datname = current_database() AND pid <> pg_backend_pid()"))  # fmt: skip
    finally:
        admin.dispose()
    return "\n".join(str(tuple(w)) for w in waits)


def _counts(connection: sa.Connection, query: sa.Select) -> Counter:
    return Counter(tuple(row) for row in connection.execute(query))


def _rows_per_table(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {m.__tablename__: connection.execute(sa.select(sa.func.count()).select_from(m)).scalar_one()
                for m in TABLES}  # fmt: skip


def _load(url: str, engine: sa.Engine, people: list[Client], importers: list[Importer]) -> None:
    """Every writer at once for SECONDS; fails (ending the database's sessions) if any is still busy at the watchdog."""
    start = threading.Barrier(len(people) + len(importers) + 1)
    threads = [threading.Thread(target=p.run, args=(start, SECONDS, WEB_MIX), daemon=True) for p in people]
    threads += [threading.Thread(target=i.run, args=(engine, start, SECONDS), daemon=True) for i in importers]
    for thread in threads:
        thread.start()
    start.wait(timeout=WATCHDOG)
    watchdog = time.monotonic() + WATCHDOG
    for thread in threads:
        thread.join(max(watchdog - time.monotonic(), 0))
    if any(thread.is_alive() for thread in threads):
        sessions = _stuck(url)
        for thread in threads:  # their sessions ended, the stuck writers fail and stop
            thread.join(10)
        pytest.fail(f"writers still busy {WATCHDOG:.0f} s after the start (deadlock?); sessions:\n{sessions}")


@dataclass
class Expected:
    """What the successful actions imply, from the writers' own records of them."""

    updates: list[tuple[str, str, str]]  # (study_id, actor, smoking) of each correction, in each writer's order
    labs: list[tuple[str, date, float]]  # (study_id, sample_date, value) of each new CRP result
    new_patients: list[str]
    log: Counter  # (table, action, actor) -> audit entries

    @classmethod
    def of(cls, people: list[Client], importers: list[Importer]) -> Expected:
        posted = [(p.username, kind, url.split("/")[2], form) for p in people for kind, url, form in p.result.posted]
        edits = [(study_id, name, form["smoking"]) for name, kind, study_id, form in posted if kind == "edit_save"]
        labs = [(study_id, date.fromisoformat(form["sample_date"]), float(form["value"]))
                for _, kind, study_id, form in posted if kind == "lab_save"]  # fmt: skip
        log = Counter(("patient", "update", name) for _, name, _ in edits)
        # A correction writes into its field's query thread; the first answer of a query changes its status.
        log += Counter(("query_message", "insert", name) for _, name, _ in edits)
        log += Counter(("data_query", "update", name) for _, name in {(s, name) for s, name, _ in edits})
        log += Counter(("lab_result", "insert", name) for name, kind, _, _ in posted if kind == "lab_save")
        for i in importers:
            log += {("patient", "update", i.actor): i.imports, ("patient", "insert", i.actor): i.imports,
                    ("lab_result", "insert", i.actor): 2 * i.imports, ("follow_up", "insert", i.actor): i.imports,
                    ("query_message", "insert", i.actor): len(i.answered),
                    ("data_query", "update", i.actor): len(set(i.answered))}  # fmt: skip
        return cls(
            updates=edits + [u for i in importers for u in i.updates],
            labs=labs + [lab for i in importers for lab in i.labs],
            new_patients=[s for i in importers for s in i.new_patients],
            log=log,
        )


def test_twenty_concurrent_writers_lose_nothing_and_double_nothing(postgres_server, tmp_path):
    with db.new_postgres_database(postgres_server, "load") as url:
        engine = db.make_engine(url)
        db.upgrade(engine)
        web_own, import_own, queries = _seed(engine, tmp_path / "seed")
        rows_before = _rows_per_table(engine)
        with engine.connect() as connection:
            versions_before = dict(connection.execute(sa.select(Patient.study_id, Patient.version)).all())
            last_audit = connection.execute(sa.select(sa.func.max(AuditLog.id))).scalar_one()
        importers = [Importer(n, tmp_path / f"importer{n:02d}", dict.fromkeys(own, "never"), {s: queries[s] for s in own})
                     for n, own in enumerate(import_own.values(), start=1)]  # fmt: skip
        with running_server(url, tmp_path / "server.log") as server:
            people = [Client(server.base, name, own, list(versions_before), seed=n)
                      for n, (name, own) in enumerate(web_own.items())]  # fmt: skip
            for person in people:
                person.sign_in()
            _load(url, engine, people, importers)
        engine.dispose()

        # Every action succeeded: each web request answered as it should (saves 303), each import written.
        web_failures = [f for p in people for f in p.result.failures]
        import_failures = [f for i in importers for f in i.failures]
        log = server.log.read_text(errors="replace")
        assert not web_failures and not import_failures, (web_failures[:5], import_failures[:5], log[-3000:])
        expected = Expected.of(people, importers)
        saves = sum(len(p.result.posted) for p in people)
        assert saves and expected.new_patients  # both kinds of writer got work done
        print(f"\n{SECONDS:g} s: {saves} web saves, {sum(i.imports for i in importers)} imports, "
              f"{expected.log.total()} audited changes")  # fmt: skip

        check = db.make_engine(url)
        with check.connect() as connection:
            # Rows: every table holds what the seed and the successful actions imply, each natural key once.
            added = {"patient": len(expected.new_patients), "lab_result": len(expected.labs),
                     "follow_up": len(expected.new_patients), "audit_log": expected.log.total(),
                     "query_message": sum(n for (table, _, _), n in expected.log.items() if table == "query_message"),
                     # each client signed in once, from one address (whose throttle counter stays, at 0 failures)
                     "web_session": len(people), "sign_in_event": len(people), "sign_in_throttle": 1}  # fmt: skip
            seals = connection.execute(sa.select(sa.func.count(sa.distinct(AuditLog.batch)))
                                       .where(AuditLog.id > last_audit)).scalar_one()  # fmt: skip
            added["audit_seal"] = seals  # one per transaction that wrote entries
            added["audit_entry_hash"] = expected.log.total()  # one per entry
            assert _rows_per_table(check) == {t: n + added.get(t, 0) for t, n in rows_before.items()}
            patients = _counts(connection, sa.select(Patient.study_id))
            assert patients == Counter((s,) for s in [*versions_before, *expected.new_patients])
            labs = _counts(connection, sa.select(Patient.study_id, LabResult.sample_date, LabResult.value)
                           .join(Patient).where(LabResult.analyte == "crp"))  # fmt: skip
            assert labs == Counter(expected.labs)
            follow_up = _counts(connection, sa.select(Patient.study_id).join(FollowUp))
            assert follow_up == Counter((s,) for s in expected.new_patients)
            # Queries: each thread holds its question and one message per correction of its field or answer to it.
            threads = dict(connection.execute(sa.select(Patient.study_id, sa.func.count(QueryMessage.id))
                                              .join(DataQuery, DataQuery.patient_id == Patient.id)
                                              .join(QueryMessage, QueryMessage.query_id == DataQuery.id)
                                              .group_by(Patient.study_id)).all())  # fmt: skip
            answers = Counter(s for s, _, _ in expected.updates)  # each correction or import answered its query
            assert threads == {s: 1 + answers[s] for s in queries}
            statuses = dict(connection.execute(sa.select(Patient.study_id, DataQuery.status).select_from(DataQuery)
                                               .join(Patient)).all())  # fmt: skip
            assert {s: status.value for s, status in statuses.items()} == {
                s: "answered" if answers[s] else "open" for s in queries}  # fmt: skip
            # Corrections: each stored, the last one's value kept, the edit counter up by one each.
            stored = dict(connection.execute(sa.select(Patient.study_id, Patient.smoking)).all())
            last = {study_id: smoking for study_id, _, smoking in expected.updates}
            assert {s: stored[s].value for s in last} == last
            versions = dict(connection.execute(sa.select(Patient.study_id, Patient.version)).all())
            per_patient = Counter(study_id for study_id, _, _ in expected.updates)
            assert versions == {s: versions_before.get(s, 1) + per_patient[s] for s in versions}
            # Audit trail: one entry per change under its writer's name; each patient's corrections in order.
            entries = connection.execute(sa.select(AuditLog.table_name, AuditLog.action, AuditLog.actor,
                                                   AuditLog.study_id, AuditLog.new_values)
                                         .where(AuditLog.id > last_audit).order_by(AuditLog.id)).all()  # fmt: skip
            assert Counter((e.table_name, e.action.value, e.actor) for e in entries) == expected.log
            logged = [
                (e.study_id, e.actor, e.new_values["smoking"])
                for e in entries
                if (e.table_name, e.action.value) == ("patient", "update")
            ]
            for study_id in per_patient:
                assert [u for u in logged if u[0] == study_id] == [u for u in expected.updates if u[0] == study_id]
            # The writers sealed their entries one at a time: the chain holds every entry, unbroken.
            chain = verify_chain(connection)
            assert (chain.problem, chain.entries) == (None, rows_before["audit_log"] + expected.log.total())
            # PostgreSQL saw no deadlock (the writers' sessions have ended, so their statistics are in).
            deadlocks = connection.execute(
                sa.text("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
            ).scalar_one()
            assert deadlocks == 0
        check.dispose()
