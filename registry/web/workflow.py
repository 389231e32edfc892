"""The data resolution workflow and the record status on the web: queries (open, answer, close, re-open, the list
with its summary) and a patient's way to complete, verified and signed.

The work is :mod:`registry.queries`' and :mod:`registry.signoff`'s; here each request is checked as every page's is:
its CSRF token, the account's role (:func:`registry.web.pages.require`) and its sites, so that a query or a patient
of another site is answered exactly as one that does not exist (404). A refusal comes back to the page it was asked
from as a message; nothing was written.

- A coordinator of the patient's site or a data manager answers a query; a data manager opens, closes and re-opens
  one (on the patient, a record, a field, or a data-quality finding). Analysts, admins and investigators read.
- A coordinator of the site or a data manager marks a patient complete; a data manager marks them verified and
  re-opens them; an investigator of the site signs them by re-entering their own password, the signature's
  meaning shown above the form. The signer is the signed-in account, never a name from the form; a signature's
  password attempts count as sign-in attempts (:mod:`registry.web.security`'s throttle).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Annotated, Any
from urllib.parse import quote

import pandas as pd
import sqlalchemy as sa
from fastapi import APIRouter, Form, HTTPException, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from registry import queries, signoff
from registry.accounts import record_event, typed_name
from registry.codes import QueryStatus, RecordStatus, Role, SignInOutcome
from registry.models import Account, DataQuery, Patient, PatientStatus, Site, is_bookkeeping, is_missing_codes
from registry.quality.incremental import check_patients
from registry.sheets import SHEETS_BY_NAME
from registry.web.pages import (
    LOCKERS,
    RECORD_SHEETS,
    WRITERS,
    PageNumber,
    Signed,
    account_sites,
    client_address,
    engine_of,
    entry_sites,
    find_patient,
    local_path,
    page,
    paged,
    require,
)
from registry.web.security import CsrfToken, check_csrf, claim_sign_in, sign_in_succeeded

router = APIRouter()

#: Who answers a query: the coordinators of the patient's site (their scope keeps them to it) and data managers.
ANSWERERS = (Role.COORDINATOR, Role.DATA_MANAGER)
#: The steps of a query's thread the web offers: who may take each, and what the page says after it.
STEPS: dict[str, tuple[tuple[Role, ...], str]] = {
    "answer": (ANSWERERS, "Answer sent: query {id} is answered, for a data manager to close or re-open."),
    "close": (LOCKERS, "Query {id} closed."),
    "reopen": (LOCKERS, "Query {id} re-opened: it awaits the site's answer again."),
}
#: The status steps of a patient's record: who may take each, and what the page says after it.
STATUS_STEPS: dict[str, tuple[tuple[Role, ...], str]] = {
    "complete": (WRITERS, "Marked complete."),
    "verify": (LOCKERS, "Marked verified: the source data were checked."),
    "reopen": (LOCKERS, "Re-opened: the patient is in progress again."),
    "sign": ((Role.INVESTIGATOR,), "Signed: {meaning}."),
}
#: The tables of the patient page, in its order (the patient's own first), by database name.
QUERY_TABLES = {"patient": "Patient", **{SHEETS_BY_NAME[n].table.name: kind.title for n, kind in RECORD_SHEETS.items()}}
#: The fields a query may be about, per table (as registry.queries accepts them).
QUERY_FIELDS = {
    table.name: [c.name for c in table.columns
                 if not (is_bookkeeping(c) or c.primary_key or c.foreign_keys or is_missing_codes(c))]
    for table in [Patient.__table__, *(SHEETS_BY_NAME[name].table for name in RECORD_SHEETS)]
}  # fmt: skip


def _text(value: Any) -> str | None:
    """A finding's or a query's cell as text, None for an empty one (pandas gives NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value) or None


def _record(value: Any) -> str | None:
    text = _text(value)
    return str(int(text)) if text is not None and text.isdigit() else text  # as registry.queries stores it


def finding_key(study_id: Any, table: Any, record: Any, field_name: Any, rule: Any) -> tuple:
    return _text(study_id), _text(table), _record(record), _text(field_name), _text(rule)


@dataclass(frozen=True)
class Unclosed:
    """The queries not closed, as the pages mark them: by finding (its rule), by record."""

    by_finding: dict[tuple, dict[str, Any]] = field(default_factory=dict)
    by_record: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)

    def of_finding(self, finding: Mapping[str, Any]) -> dict[str, Any] | None:
        """The query not closed on what ``finding`` is about, by its rule, if there is one."""
        return self.by_finding.get(finding_key(finding.get("study_id"), finding.get("table"), finding.get("record"),
                                               finding.get("field"), finding.get("rule")))  # fmt: skip

    def of_record(self, table: str, record: Any) -> list[dict[str, Any]]:
        return self.by_record.get((table, _record(record)), [])


def unclosed(frame: pd.DataFrame) -> Unclosed:
    """The queries of ``frame`` (:func:`registry.queries.list_queries`) that are not closed."""
    found = Unclosed()
    for row in frame.to_dict("records"):
        if row["status"] == QueryStatus.CLOSED.value:
            continue
        shown = {"query": int(row["query"]), "status": row["status"], "field": _text(row["field"])}
        key = finding_key(row["study_id"], row["table"], row["record"], row["field"], row["rule"])
        found.by_finding.setdefault(key, shown)
        if _text(row["table"]) is not None:
            found.by_record.setdefault((row["table"], _record(row["record"])), []).append(shown)
    return found


def unclosed_for(request: Request, me: Account) -> Unclosed:
    """The queries not closed that ``me`` may read."""
    engine = engine_of(request)
    with engine.connect() as connection:
        sites = account_sites(connection, me)
    return unclosed(queries.list_queries(engine, sites=sites))


@dataclass(frozen=True)
class PatientQueries:
    """A patient's queries as their page shows them: each with what it is about and its thread."""

    rows: list[dict[str, Any]]
    unclosed: Unclosed


def patient_queries(engine: sa.Engine, study_id: str) -> PatientQueries:
    """The queries of the patient ``study_id`` (whose page the caller may read), oldest first, with their threads."""
    frame = queries.list_queries(engine, study_id=study_id)
    rows = []
    for row in frame.to_dict("records"):
        about = queries.About(_text(row["table"]), _text(row["record"]), _text(row["field"]))
        messages = queries.thread(engine, int(row["query"]))
        rows.append({**row, "about": about.describe(), "thread": messages, "last": messages[-1] if messages else None})
    return PatientQueries(rows, unclosed(frame))


def query_targets(records: Mapping[str, list[dict]]) -> list[tuple[str, str]]:
    """What the new-query form offers to ask about: (value, label) of each record of the patient page."""
    offered = []
    for name, kind in RECORD_SHEETS.items():
        sheet = SHEETS_BY_NAME[name]
        key = sheet.table.primary_key.columns[0].name
        for row in records[name]:
            dated = row.get(kind.dated)
            offered.append(
                (f"{sheet.table.name}:{row[key]}", f"{kind.noun} {row[key]}" + (f", {dated}" if dated else ""))
            )
    return offered


def record_status(engine: sa.Engine, study_id: str) -> signoff.RecordState | None:
    """The patient's record status (None for a deleted patient, who has none)."""
    try:
        return signoff.state_of(engine, study_id)
    except LookupError:
        return None


def _patient_path(study_id: str, anchor: str = "") -> str:
    return f"/patients/{quote(study_id, safe='')}" + (f"#{anchor}" if anchor else "")


def _study_of_query(engine: sa.Engine, query_id: int, sites: list[str] | None) -> str:
    """The study_id of the query's patient, if ``sites`` (None: any) hold them; 404 otherwise."""
    select = (
        sa.select(Patient.study_id).join(DataQuery, DataQuery.patient_id == Patient.id)
        .join(Site, Site.id == Patient.site_id).where(DataQuery.id == query_id)
    )  # fmt: skip
    if sites is not None:
        select = select.where(Site.code.in_(sites))
    with engine.connect() as connection:
        study_id = connection.execute(select).scalar()
    if study_id is None:
        raise HTTPException(status_code=404, detail="No such query")
    return study_id


QueryId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.post("/queries/{query_id}/{action}")
def query_step(
    request: Request,
    me: Signed,
    query_id: QueryId,
    action: str,
    text: Annotated[str, Form()] = "",
    back: Annotated[str, Form()] = "",
    csrf: CsrfToken = None,
) -> Response:
    """Answer, close or re-open a query, with the message the thread keeps."""
    if action not in STEPS:
        raise HTTPException(status_code=404, detail="No such action")
    check_csrf(request, csrf)
    engine = engine_of(request)
    with engine.connect() as connection:
        sites = account_sites(connection, me)
    study_id = _study_of_query(engine, query_id, sites)
    roles, done = STEPS[action]
    require(me, roles)
    steps: dict[str, Callable[[], None]] = {
        "answer": lambda: queries.answer(engine, query_id, text, actor=me.username, sites=sites),
        "close": lambda: queries.close(engine, query_id, text, actor=me.username),
        "reopen": lambda: queries.reopen(engine, query_id, text, actor=me.username),
    }
    try:
        steps[action]()
    except LookupError:
        raise HTTPException(status_code=404, detail="No such query") from None
    except queries.QueryError as refused:
        request.session["flash"] = f"Not done: {refused}."
    else:
        request.session["flash"] = done.format(id=query_id)
    return RedirectResponse(local_path(back, _patient_path(study_id, f"query-{query_id}")), status_code=303)


def _finding_now(request: Request, patient_id: int, wanted: Mapping[str, str]) -> dict[str, Any] | None:
    """The finding the checks give now for the patient that matches ``wanted`` (rule, table, record, field, value as
    the page showed them), as :func:`registry.queries.open_query` takes it; None if they give none."""
    with engine_of(request).connect() as connection:
        found = check_patients(connection, [patient_id], request.app.state.config, date.today())
    key = finding_key(wanted["study_id"], wanted["table"], wanted["record"], wanted["field"], wanted["rule"])
    for row in found.to_dict("records"):
        if finding_key(row["study_id"], row["table"], row["record"], row["field"], row["rule"]) == key and (
            (_text(row["value"]) or "") == wanted["value"]
        ):
            return {**row, "field": _text(row["field"]), "value": _text(row["value"]), "record": _record(row["record"])}
    return None


@router.post("/patients/{study_id}/queries")
def open_on_patient(
    request: Request,
    me: Signed,
    study_id: str,
    question: Annotated[str, Form()] = "",
    about: Annotated[str, Form()] = "",  # "" (the patient) or "table:record"
    field: Annotated[str, Form()] = "",
    rule: Annotated[str, Form()] = "",  # with table, record, field and value: a finding's
    table: Annotated[str, Form()] = "",
    record: Annotated[str, Form()] = "",
    value: Annotated[str, Form()] = "",
    back: Annotated[str, Form()] = "",
    csrf: CsrfToken = None,
) -> Response:
    """A data manager opens a query on the patient, a record or a field of theirs, or on a data-quality finding (as
    the checks give it now)."""
    check_csrf(request, csrf)
    engine = engine_of(request)
    patient = find_patient(engine, me, study_id)
    require(me, LOCKERS)
    target = local_path(back, _patient_path(patient.study_id, "queries"))
    try:
        if rule:
            wanted = {"study_id": patient.study_id, "rule": rule, "table": table, "record": record, "field": field,
                      "value": value}  # fmt: skip
            finding = _finding_now(request, patient.id, wanted)
            if finding is None:
                request.session["flash"] = ("Not done: the checks no longer find this on the patient's records as they "
                                            "are now (run the checks again).")  # fmt: skip
                return RedirectResponse(target, status_code=303)
            opened = queries.open_query(engine, patient.study_id, question, actor=me.username, finding=finding)
        else:
            chosen_table, _, chosen_record = about.partition(":")
            # a field without a record: the patient's own record's
            on = queries.About(chosen_table or ("patient" if field else None), chosen_record or None, field or None)
            opened = queries.open_query(engine, patient.study_id, question, actor=me.username, about=on)
    except LookupError:
        raise HTTPException(status_code=404, detail="No such patient") from None
    except queries.QueryError as refused:
        request.session["flash"] = f"Not done: {refused}."
    else:
        request.session["flash"] = f"Query {opened} opened."
    return RedirectResponse(target, status_code=303)


@router.get("/queries", response_class=HTMLResponse)
def query_list(request: Request, me: Signed, status: str = "", site: str = "", number: PageNumber = 1) -> HTMLResponse:
    """The queries of every site (a coordinator's or an investigator's: of their own sites), of one status or site,
    a page at a time, with the counts a data manager follows."""
    engine = engine_of(request)
    with engine.connect() as connection:
        sites = entry_sites(connection, me)
    chosen = [site] if site in sites else sites if not site else []
    frame = queries.list_queries(engine, sites=chosen)
    summary = queries.summarise(frame, queries.coordinators(engine))
    statuses = [s.value for s in QueryStatus]
    listed = frame[frame["status"] == status] if status in statuses else frame
    pages = paged(len(listed), number, "/queries", {"status": status, "site": site})
    rows = []
    for row in listed.iloc[pages.first - 1 : pages.last].to_dict("records"):
        about = queries.About(_text(row["table"]), _text(row["record"]), _text(row["field"]))
        rows.append({**row, "about": about.describe()})
    return page(
        request, "queries.html", me=me, rows=rows, pages=pages, summary=summary, sites=sites, statuses=statuses,
        filters={"status": status, "site": site},
    )  # fmt: skip


def _sign(request: Request, me: Account, study_id: str, password: str) -> str:
    """Sign as the signed-in account, the password's attempt counted by the sign-in throttle; what the page says."""
    engine, client, name = engine_of(request), client_address(request), typed_name(me.username)
    if wait := claim_sign_in(engine, client, name):
        with engine.begin() as connection:
            record_event(connection, name, SignInOutcome.THROTTLED, account_id=me.id, client=client,
                         actor=f"signature of {study_id}")  # fmt: skip
        raise signoff.SignOffError(f"too many failed attempts from this address: try again in "
                                   f"{math.ceil(wait.total_seconds())} s; nothing was signed")  # fmt: skip
    made = signoff.sign(engine, study_id, username=me.username, password=password, client=client)
    sign_in_succeeded(engine, client, name)
    return STATUS_STEPS["sign"][1].format(meaning=made.meaning)


@router.post("/patients/{study_id}/status/{action}")
def status_step(
    request: Request,
    me: Signed,
    study_id: str,
    action: str,
    reason: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    csrf: CsrfToken = None,
) -> Response:
    """Mark the patient complete or verified, re-open them, or sign them."""
    if action not in STATUS_STEPS:
        raise HTTPException(status_code=404, detail="No such action")
    check_csrf(request, csrf)
    engine = engine_of(request)
    patient = find_patient(engine, me, study_id)
    roles, done = STATUS_STEPS[action]
    require(me, roles)
    with engine.connect() as connection:
        sites = account_sites(connection, me)
    steps: dict[str, Callable[[], str]] = {
        "complete": lambda: signoff.mark_complete(engine, patient.study_id, actor=me.username,
                                                  config=request.app.state.config, sites=sites) or done,
        "verify": lambda: signoff.mark_verified(engine, patient.study_id, actor=me.username) or done,
        "reopen": lambda: signoff.reopen(engine, patient.study_id, actor=me.username, reason=reason) or done,
        "sign": lambda: _sign(request, me, patient.study_id, password),
    }  # fmt: skip
    try:
        request.session["flash"] = steps[action]()
    except LookupError:
        raise HTTPException(status_code=404, detail="No such patient") from None
    except signoff.SignOffError as refused:
        request.session["flash"] = f"Not done: {refused}."
    return RedirectResponse(_patient_path(patient.study_id, "status"), status_code=303)


def status_column(connection: sa.Connection, study_ids: list[str]) -> dict[str, str]:
    """The record status of each of ``study_ids`` (the rows of one page of the patient list)."""
    found = connection.execute(
        sa.select(Patient.study_id, PatientStatus.status).join(PatientStatus, PatientStatus.patient_id == Patient.id)
        .where(Patient.study_id.in_(study_ids))
    ).all()  # fmt: skip
    stated = {study_id: RecordStatus(status).value for study_id, status in found}
    return {study_id: stated.get(study_id, RecordStatus.IN_PROGRESS.value) for study_id in study_ids}
