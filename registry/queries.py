"""Queries: the data resolution workflow of REDCap, the discrepancy notes of OpenClinica.

A data manager asks about a patient, one record or one field (from a data-quality
finding, or on any field); the coordinators of the patient's site answer, often by
correcting the field; the data manager closes the query, or re-opens it. Each step is a
message of the query's thread, written once and never changed; a query is never deleted.
Every write goes through the audit trail (who, when, what, why).

- ``open`` → ``answered`` → ``closed``, and back to ``open`` by re-opening.
- A correction of the field while its query is not closed is written into the thread
  (old and new value, and the save's reason) and marks the query answered.
- An error confirmed at entry (registry/entry_checks.py) opens a query answered by the
  confirmation's reason, so that a data manager decides on it.

Who may do what is the caller's to check (the web application by role; the command line
is the operator's): here each function takes the sites the person serves, so that a query
of another site is not found.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from registry.audit import audited_session
from registry.codes import QueryAction, QueryStatus, Role
from registry.db import as_utc
from registry.models import (
    TABLES,
    Account,
    AccountSite,
    DataQuery,
    Entered,
    Patient,
    QueryMessage,
    Site,
    is_bookkeeping,
    is_missing_codes,
)

if TYPE_CHECKING:
    import pandas as pd

# pandas and the data-quality package are imported where used: a save (registry.entry) imports this module.

#: Longest message a thread stores.
MESSAGE_LENGTH = QueryMessage.__table__.c.body.type.length
#: Columns of :func:`list_queries`, in order.
COLUMNS = [
    "query", "study_id", "site", "table", "record", "field", "rule", "value", "status", "opened_by", "opened_at",
    "messages", "last_action", "last_by", "last_at", "age_days",
]  # fmt: skip
#: What each step may follow: the statuses a query may be in for it.
ALLOWED_FROM = {
    QueryAction.ANSWERED: (QueryStatus.OPEN, QueryStatus.ANSWERED),
    QueryAction.CLOSED: (QueryStatus.OPEN, QueryStatus.ANSWERED),
    QueryAction.REOPENED: (QueryStatus.ANSWERED, QueryStatus.CLOSED),
}
#: The status each step leaves the query in.
STATUS_AFTER = {
    QueryAction.OPENED: QueryStatus.OPEN,
    QueryAction.ANSWERED: QueryStatus.ANSWERED,
    QueryAction.CORRECTED: QueryStatus.ANSWERED,
    QueryAction.CLOSED: QueryStatus.CLOSED,
    QueryAction.REOPENED: QueryStatus.OPEN,
}
#: Age bands of the unresolved queries in :func:`summarise` (days since opened: up to 7, 8 to 30, over 30).
AGE_BANDS = ((7, "up to 7 days"), (30, "8-30 days"), (None, "over 30 days"))
#: The tables a query may be about, by name: a patient's and their records'.
_DATA_TABLES = {model.__tablename__: model for model in TABLES if issubclass(model, Entered)}


class QueryError(ValueError):
    """The query cannot be opened or changed as asked; the message says why. Nothing was written."""


def message_text(text: str | None, what: str = "the message") -> str:
    """``text`` stripped, if a thread can store it."""
    stripped = (text or "").strip()
    if not stripped:
        raise QueryError(f"{what} is required")
    if len(stripped) > MESSAGE_LENGTH:
        raise QueryError(f"{what} is longer than {MESSAGE_LENGTH:,} characters")
    if "\x00" in stripped:
        raise QueryError(f"{what} contains a NUL character")
    return stripped


@dataclass(frozen=True)
class About:
    """What a query is about: a patient as a whole (nothing given), a record of theirs, or one field of it."""

    table: str | None = None
    record: str | None = None
    field: str | None = None

    def describe(self) -> str:
        if self.table is None:
            return "the patient"
        return f"{self.table} {self.record}" + (f", field {self.field}" if self.field else "")


def scoped_patient(session: Session, study_id: str, sites: Collection[str] | None, *, lock: bool = False) -> Patient:
    """The patient ``study_id`` of ``sites`` (None: any), locked against saves until the transaction ends with
    ``lock``; LookupError for a patient of another site, as for one that does not exist."""
    query = sa.select(Patient).join(Site, Site.id == Patient.site_id).where(Patient.study_id == study_id)
    if sites is not None:
        query = query.where(Site.code.in_(sites))
    patient = session.execute(query.with_for_update(of=Patient) if lock else query).scalar()
    if patient is None:
        raise LookupError(f"no patient {study_id}")
    return patient


def _checked(session: Session, patient: Patient, about: About) -> About:
    """``about`` if it names a record of the patient and one of its data fields (the patient's own record when only
    a field of the patient table is named)."""
    if about.table is None:
        if about.record is not None or about.field is not None:
            raise QueryError("name the table of the record (--table) the query is about")
        return about
    model = _DATA_TABLES.get(about.table)
    if model is None:
        raise QueryError(f"table {about.table!r} is not a table of patients' data: choose one of "
                         f"{', '.join(sorted(_DATA_TABLES))}")  # fmt: skip
    record = about.record if about.record is not None or model is not Patient else str(patient.id)
    if record is None:
        raise QueryError(f"name the {about.table} record (--record) the query is about")
    (key,) = model.__table__.primary_key.columns
    stored = None
    if not isinstance(key.type, sa.Integer):
        stored = session.get(model, record)
    elif record.isdigit():
        record = str(int(record))  # as the checks write it
        stored = session.get(model, int(record))
    owner = stored.id if isinstance(stored, Patient) else getattr(stored, "patient_id", None)
    if stored is None or owner != patient.id:
        raise QueryError(f"patient {patient.study_id} has no {about.table} record {record}")
    if about.field is not None:
        fields = [c.name for c in model.__table__.columns
                  if not (is_bookkeeping(c) or c.primary_key or c.foreign_keys or is_missing_codes(c))]  # fmt: skip
        if about.field not in fields:
            raise QueryError(f"{about.table} has no field {about.field!r}: choose one of {', '.join(fields)}")
    return About(about.table, record, about.field)


def _unclosed(session: Session, patient_id: int, about: About, rule: str | None) -> DataQuery | None:
    """A query not closed on the same patient, record, field and rule, if there is one."""
    return session.execute(
        sa.select(DataQuery).where(
            DataQuery.patient_id == patient_id,
            DataQuery.status != QueryStatus.CLOSED,
            *(getattr(DataQuery, name).is_(None) if value is None else getattr(DataQuery, name) == value
              for name, value in (("table_name", about.table), ("record_key", about.record),
                                  ("field", about.field), ("rule", rule)))
        )
    ).scalar()  # fmt: skip


def _write(session: Session, query: DataQuery, action: QueryAction, body: str, actor: str, at: datetime) -> None:
    query.status = STATUS_AFTER[action]
    session.add(QueryMessage(query_id=query.id, action=action, status=query.status, body=body, written_by=actor,
                             written_at=at))  # fmt: skip


def _new_query(
    session: Session, patient: Patient, about: About, question: str, *, actor: str, rule: str | None,
    value: str | None,
) -> DataQuery:  # fmt: skip
    if (existing := _unclosed(session, patient.id, about, rule)) is not None:
        raise QueryError(f"query {existing.id} on {about.describe()} of patient {patient.study_id} is "
                         f"{existing.status.value}: add to it rather than opening another")  # fmt: skip
    from registry.quality.output import WITHHELD, WITHHELD_FIELDS

    now = datetime.now(UTC)
    shown = WITHHELD if about.field in WITHHELD_FIELDS and value is not None else value
    query = DataQuery(patient_id=patient.id, table_name=about.table, record_key=about.record, field=about.field,
                      rule=rule, value=shown, status=QueryStatus.OPEN, opened_by=actor, opened_at=now)  # fmt: skip
    session.add(query)
    session.flush()  # its id, for the thread
    _write(session, query, QueryAction.OPENED, question, actor, now)
    return query


def open_query(
    engine: sa.Engine,
    study_id: str,
    question: str,
    *,
    actor: str,
    about: About = About(),
    finding: Mapping[str, Any] | None = None,
    sites: Collection[str] | None = None,
) -> int:
    """Open a query on the patient ``study_id`` (``about`` says on what), or on what ``finding`` (a row of a check
    run's findings) is about, with its rule and value; its id. Refused while a query on the same thing is not
    closed."""
    question = message_text(question, "the question")
    if finding is not None:
        about, study_id = About(finding["table"], finding["record"], finding["field"] or None), finding["study_id"]
    with audited_session(engine, actor=actor, reason="query opened") as session:
        patient = scoped_patient(session, study_id, sites)
        about = _checked(session, patient, about)
        rule, value = (finding["rule"], finding["value"]) if finding is not None else (None, None)
        query = _new_query(session, patient, about, question, actor=actor, rule=rule, value=value)
        session.commit()
        return query.id


def _step(
    engine: sa.Engine, query_id: int, action: QueryAction, text: str, *, actor: str, sites: Collection[str] | None
) -> QueryStatus:
    body = message_text(text)
    with audited_session(engine, actor=actor, reason=f"query {query_id} {action.value}") as session:
        query = _scoped(session, query_id, sites, for_update=True)
        if query.status not in ALLOWED_FROM[action]:
            raise QueryError(f"query {query_id} is {query.status.value}: it cannot be {action.value} "
                             f"(only a query {' or '.join(s.value for s in ALLOWED_FROM[action])} can)")  # fmt: skip
        _write(session, query, action, body, actor, datetime.now(UTC))
        try:
            session.commit()
        except StaleDataError:  # another step committed since it was read (SQLite has no FOR UPDATE)
            raise QueryError(f"query {query_id} was changed by someone else meanwhile: read it again") from None
        return query.status


def answer(engine: sa.Engine, query_id: int, text: str, *, actor: str, sites: Collection[str] | None = None) -> None:
    """Answer the query (its site's coordinators): it is answered, for a data manager to close or re-open."""
    _step(engine, query_id, QueryAction.ANSWERED, text, actor=actor, sites=sites)


def close(engine: sa.Engine, query_id: int, text: str, *, actor: str) -> None:
    """Close the query (data managers), with why: the answer is accepted, or the question withdrawn."""
    _step(engine, query_id, QueryAction.CLOSED, text, actor=actor, sites=None)


def reopen(engine: sa.Engine, query_id: int, text: str, *, actor: str) -> None:
    """Re-open an answered or closed query (data managers), with what is still wanted."""
    _step(engine, query_id, QueryAction.REOPENED, text, actor=actor, sites=None)


def _scoped(session: Session, query_id: int, sites: Collection[str] | None, *, for_update: bool = False) -> DataQuery:
    """The query ``query_id`` if it is of a patient of ``sites`` (None: any); LookupError otherwise."""
    select = sa.select(DataQuery).where(DataQuery.id == query_id)
    if sites is not None:
        patients = sa.select(Patient.id).join(Site, Site.id == Patient.site_id).where(Site.code.in_(sites))
        select = select.where(DataQuery.patient_id.in_(patients))
    query = session.execute(select.with_for_update() if for_update else select).scalar()
    if query is None:
        raise LookupError(f"no query {query_id}")
    return query


def record_correction(
    session: Session, *, table: str, record_key: str, changes: Mapping[str, tuple[str, str]], reason: str, actor: str
) -> list[int]:
    """Write a save's change of fields (name -> old, new as shown) into the threads of the queries on them that are
    not closed, marking each answered, in the save's (audited) session; the ids of those queries."""
    from registry.quality.output import WITHHELD, WITHHELD_FIELDS

    if not changes:
        return []
    select = (
        sa.select(DataQuery)
        .where(DataQuery.table_name == table, DataQuery.record_key == record_key, DataQuery.field.in_(list(changes)),
               DataQuery.status != QueryStatus.CLOSED)
        .order_by(DataQuery.id)
    )  # fmt: skip
    with session.no_autoflush:  # the save's own flush is where a lost race is told (registry.entry._commit)
        queries = session.execute(select).scalars().all()
    now = datetime.now(UTC)
    for query in queries:
        old, new = changes[query.field]
        if query.field in WITHHELD_FIELDS:
            old = new = WITHHELD
        _write(session, query, QueryAction.CORRECTED, f"{query.field} changed from {old or '(empty)'} to "
               f"{new or '(empty)'}: {reason}", actor, now)  # fmt: skip
    return [query.id for query in queries]


def open_confirmed(session: Session, finding: Mapping[str, Any], patient_id: int, reason: str, actor: str) -> int:
    """A query on an error finding confirmed at entry, answered by the confirmation, in the save's session (or the
    thread of one already on it, added to); its id."""
    patient = session.get(Patient, patient_id)
    about = About(finding["table"], finding["record"], finding["field"] or None)
    query = _unclosed(session, patient_id, about, finding["rule"])
    if query is None:
        question = f"{finding['rule']}: {finding['message']} (an error confirmed at entry)"
        query = _new_query(session, patient, about, question, actor=actor, rule=finding["rule"],
                           value=finding["value"])  # fmt: skip
    _write(session, query, QueryAction.ANSWERED, reason, actor, datetime.now(UTC))
    return query.id


def list_queries(
    engine: sa.Engine,
    *,
    sites: Collection[str] | None = None,
    status: QueryStatus | None = None,
    study_id: str | None = None,
    now: datetime | None = None,
) -> pd.DataFrame:
    """The queries (of ``sites``' patients, of ``status``, of one patient), oldest first, as :data:`COLUMNS`:
    with their thread's length, its last message, and the days since opened."""
    import pandas as pd

    last = (
        sa.select(QueryMessage.query_id, sa.func.max(QueryMessage.id).label("last_id"),
                  sa.func.count().label("messages"))
        .group_by(QueryMessage.query_id).subquery()
    )  # fmt: skip
    select = (
        sa.select(DataQuery.id.label("query"), Patient.study_id, Site.code.label("site"),
                  DataQuery.table_name.label("table"), DataQuery.record_key.label("record"), DataQuery.field,
                  DataQuery.rule, DataQuery.value, DataQuery.status, DataQuery.opened_by, DataQuery.opened_at,
                  last.c.messages, QueryMessage.action.label("last_action"), QueryMessage.written_by.label("last_by"),
                  QueryMessage.written_at.label("last_at"))
        .join(Patient, Patient.id == DataQuery.patient_id).join(Site, Site.id == Patient.site_id)
        .join(last, last.c.query_id == DataQuery.id).join(QueryMessage, QueryMessage.id == last.c.last_id)
        .order_by(DataQuery.id)
    )  # fmt: skip
    if sites is not None:
        select = select.where(Site.code.in_(sites))
    if status is not None:
        select = select.where(DataQuery.status == status)
    if study_id is not None:
        select = select.where(Patient.study_id == study_id)
    with engine.connect() as connection:
        rows = connection.execute(select).mappings().all()
    frame = pd.DataFrame(rows, columns=COLUMNS[:-1])
    now = now or datetime.now(UTC)
    for name in ("opened_at", "last_at"):  # SQLite gives back naive UTC
        frame[name] = [as_utc(at) for at in frame[name]]
    frame["status"] = [QueryStatus(s).value for s in frame["status"]]
    frame["last_action"] = [QueryAction(a).value for a in frame["last_action"]]
    frame["age_days"] = [(now - at).days for at in frame["opened_at"]]
    return frame.astype({"query": int, "messages": int, "age_days": int}) if len(frame) else frame


def thread(engine: sa.Engine, query_id: int, *, sites: Collection[str] | None = None) -> list[QueryMessage]:
    """The messages of the query ``query_id`` (of ``sites``' patients), oldest first."""
    with Session(engine) as session:
        _scoped(session, query_id, sites)
        messages = session.execute(
            sa.select(QueryMessage).where(QueryMessage.query_id == query_id).order_by(QueryMessage.id)
        ).scalars()
        return list(messages)


def coordinators(engine: sa.Engine) -> dict[str, list[str]]:
    """Site code -> the active coordinators who serve it (who answer its queries)."""
    select = (
        sa.select(Site.code, Account.username)
        .join(AccountSite, AccountSite.site_id == Site.id).join(Account, Account.id == AccountSite.account_id)
        .where(Account.role == Role.COORDINATOR, Account.active.is_(True)).order_by(Site.code, Account.username)
    )  # fmt: skip
    served: dict[str, list[str]] = {}
    with engine.connect() as connection:
        for code, username in connection.execute(select):
            served.setdefault(code, []).append(username)
    return served


def summarise(queries: pd.DataFrame, served: Mapping[str, list[str]]) -> dict[str, Any]:
    """The counts a data manager follows: queries by status; the open ones (awaiting the site) by age band, by rule,
    by site and by coordinator of the site (each open query counts for every coordinator serving its site)."""
    by_status = {s.value: int((queries["status"] == s.value).sum()) for s in QueryStatus}
    waiting = queries[queries["status"] == QueryStatus.OPEN.value]
    bands, lower = {}, -1
    for upper, label in AGE_BANDS:
        within = waiting["age_days"] > lower
        if upper is not None:
            within &= waiting["age_days"] <= upper
        bands[label], lower = int(within.sum()), upper if upper is not None else lower
    rules = waiting["rule"].fillna("(no rule)").value_counts().sort_index()
    sites = waiting["site"].value_counts().sort_index()
    per_coordinator: dict[str, int] = {}
    for site, count in sites.items():
        for username in served.get(site, ["(no coordinator serves the site)"]):
            per_coordinator[username] = per_coordinator.get(username, 0) + int(count)
    return {
        "by_status": by_status,
        "open_by_age": bands,
        "open_by_rule": {rule: int(n) for rule, n in rules.items()},
        "open_by_site": {site: int(n) for site, n in sites.items()},
        "open_by_coordinator": dict(sorted(per_coordinator.items())),
    }
