"""Entry forms: create, correct, delete and restore a patient and their records; lock a patient.

The forms are built from the sheets (so from the models): a code list is a drop-down,
a date a date field, everything else text that the server reads by the import's rules
(:mod:`registry.entry`), with each error shown beside its field and every entered value
kept. An optional field has a drop-down of missing-data codes beside it ("unknown", "not done", ...;
``missing.<field>``), folded into the field as a cell writes it (``[unknown]``) as the form arrives. Correcting
saved data asks for a reason; every change lands in the audit trail.

An edit form carries, beside each field, the value it was opened with (``original.<field>``),
so a save refused because someone else changed the record meanwhile (409) can tell which
fields this user changed: the form comes back at the stored version with the other's values
in the fields this user left alone, this user's in the fields only they changed, and both
side by side, to choose from, where both changed one. Saving it again then changes only
what this user changed or chose.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from registry import missing
from registry.codes import Analyte, MissingCode, lab_units
from registry.dictionary import help_text
from registry.entry import (
    APPLIES,
    REASON,
    WHOLE_RECORD,
    EntryError,
    Invalid,
    Stale,
    form_columns,
    form_values,
    save_record,
    set_deleted,
    set_locked,
    with_missing_codes,
)
from registry.entry_checks import EntryChecks, Unconfirmed, is_missing_record
from registry.models import Account, AuditLog, LabResult
from registry.sheets import SHEETS_BY_NAME, Sheet, SheetColumn, sheet_dictionary
from registry.web.entry_findings import Checked, Confirmation, checked
from registry.web.pages import (
    LOCKERS,
    PATIENT,
    RECORD_SHEETS,
    WRITERS,
    FoundPatient,
    Signed,
    engine_of,
    entry_sites,
    find_patient,
    page,
    require,
    resumed,
)
from registry.web.security import check_csrf

router = APIRouter()
YES_NO = [("yes", "yes"), ("no", "no")]
LARGEST_KEY = 2**31 - 1  # INTEGER on both databases
#: Prefix of the hidden field that holds the value a field was shown with, and of the one that holds this user's value
#: of a field in conflict (its radio buttons may be left unchosen).
ORIGINAL, YOURS = "original.", "yours."
#: The missing-data codes a codable field's drop-down offers.
MISSING_CODES = [(code.value, code.label) for code in MissingCode]
NOT_SAVED_YET = "Not saved yet: you were signed out before saving. Check what you typed, then save."
CHOOSE = "choose the stored value or yours"
#: Each sheet column's dictionary entry: a field's label and help are the workbook's and the dictionary's.
ENTRIES = {(entry.table, entry.column): entry for entry in sheet_dictionary()}
#: The analytes (space-separated) each unit a lab form offers is a unit of: the script offers an analyte's own only.
UNIT_ANALYTES = {unit: " ".join(a.value for a in Analyte if unit in lab_units(a))
                 for unit in dict.fromkeys(unit for analyte in Analyte for unit in lab_units(analyte))}  # fmt: skip


@dataclass(frozen=True)
class Conflict:
    """A field both this user and someone else changed since the form opened, to different values."""

    theirs: str  # stored now
    yours: str
    by: str  # who stored theirs, when and why, as the record's audit trail tells ("" if it does not)
    at: datetime | None
    why: str


@dataclass(frozen=True)
class Field:
    """One input of a form, as the template lays it out."""

    name: str
    label: str
    kind: str  # select | date | text
    options: list[tuple[str, str]]  # (value, label) of a select
    required: bool
    help: str
    value: str
    error: str | None
    original: str | None  # the value the form was opened with (None for a new record)
    conflict: Conflict | None
    applies: dict[str, list[str]] | None = None  # when the field applies (registry.entry.APPLIES), for the script
    options_by: str | None = None  # the field whose value decides which options apply ...
    option_for: dict[str, str] = field(default_factory=dict)  # ... each option's values of it, space-separated
    codes: list[tuple[str, str]] = field(default_factory=list)  # (code, label) of the missing-data codes it takes
    code: str = ""  # the missing-data code it holds ("" for a value or a blank)


def _fields(
    sheet: Sheet,
    *,
    creating: bool,
    values: Mapping[str, str],
    errors: dict[str, str],
    sites: list[str],
    originals: Mapping[str, str] | None,
    conflicts: dict[str, Conflict],
) -> list[Field]:
    fields = []
    for column in form_columns(sheet, creating=creating):
        kind, options = _widget(column, sites)
        entry, name = ENTRIES[sheet.name, column.name], column.name
        original = None if originals is None else originals.get(name, "")
        rule = APPLIES.get(sheet.name, {}).get(name)
        applies = None if rule is None else {"controls": list(rule.controls), "values": list(rule.values)}
        units = column.source is LabResult.__table__.c.unit
        value, code = _value_or_code(values.get(name, ""))
        codes = MISSING_CODES if column.takes_code else []
        fields.append(Field(name, entry.label, kind, options, column.required, help_text(entry), value,
                            errors.get(name), original, conflicts.get(name), applies, "analyte" if units else None,
                            UNIT_ANALYTES if units else {}, codes, code))  # fmt: skip
    return fields


def _value_or_code(text: str) -> tuple[str, str]:
    """A field's text as its input shows it and the missing-data code its drop-down shows (one of them is empty)."""
    try:
        coded = missing.from_cell(text)
    except ValueError:
        coded = None
    return ("", coded.code.value) if coded else (text, "")


def _conflicts(yours: Mapping[str, str], theirs: Mapping[str, str], history: list[AuditLog]) -> dict[str, Conflict]:
    """Each field of ``yours`` beside the stored value, with the latest audited change of that field."""
    conflicts = {}
    for name, value in yours.items():
        last = next((e for e in reversed(history) if name in (e.new_values or {})), None)
        by, at, why = (last.actor, last.changed_at, last.reason or "") if last else ("", None, "")
        conflicts[name] = Conflict(theirs.get(name, ""), value, by, at, why)
    return conflicts


def _originals(form: Mapping[str, str]) -> dict[str, str]:
    """The values the submitted form was opened with, by field."""
    return {name.removeprefix(ORIGINAL): value for name, value in form.items() if name.startswith(ORIGINAL)}


def _merged(form: Mapping[str, str], stale: Stale, names: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """After a conflict: the form over the record as stored now, and this user's values of the fields both changed.

    A field this user did not change (submitted as it was opened) shows the stored value;
    one only this user changed keeps theirs; one changed by both to different values shows
    the stored value, with this user's beside it. Without the opened values (``original.``)
    every submitted field counts as changed.
    """
    originals = _originals(form)
    stored = dict(form) if stale.stored is None else stale.stored
    values, yours = dict(form), {}
    for name in names:
        mine = name not in originals or form.get(name, "") != originals[name]
        now = stored.get(name, "")
        if not mine:
            values[name] = now
        elif name in originals and now not in (originals[name], form.get(name, "")):
            values[name], yours[name] = now, form.get(name, "")
    return values, yours


def _widget(column: SheetColumn, sites: list[str]) -> tuple[str, list[tuple[str, str]]]:
    kind = column.source.type
    if column.name == "site":
        return "select", [(code, code) for code in sites]
    if isinstance(kind, sa.Enum):  # the code, then its label: what is stored, and what it means
        labels = {member.value: getattr(member, "label", member.value) for member in kind.enum_class}
        return "select", [(value, f"{value}: {labels[value]}" if labels[value] != value else value)
                          for value in kind.enums]  # fmt: skip
    if isinstance(kind, sa.Boolean):
        return "select", YES_NO
    if column.source is LabResult.__table__.c.unit:  # never free text: the units the form converts exactly
        return "select", [(unit, unit) for unit in UNIT_ANALYTES]
    if isinstance(kind, sa.Date):
        return "date", []
    return "text", []


def _sheet(name: str) -> Sheet:
    if name not in RECORD_SHEETS:
        raise HTTPException(status_code=404, detail="No such kind of record")
    return SHEETS_BY_NAME[name]


def record_key(text: str) -> int:
    """A record key from an address; 404 unless it is one a database could hold."""
    if not (text.isascii() and text.isdigit()) or int(text) > LARGEST_KEY:
        raise HTTPException(status_code=404, detail="No such record")
    return int(text)


def _record(session: Session, sheet: Sheet, key: int, patient_id: int) -> Any:
    """The record ``key`` of this patient; 404 for anything else (another patient's record is never shown)."""
    record = session.get(sheet.model, key)
    if record is None or getattr(record, "patient_id", patient_id) != patient_id:
        raise HTTPException(status_code=404, detail="No such record")
    return record


def _record_history(request: Request, sheet: Sheet, key: int) -> list[AuditLog]:
    with Session(engine_of(request)) as session:
        return list(
            session.execute(
                sa.select(AuditLog)
                .where(AuditLog.table_name == sheet.table.name, AuditLog.record_key == str(key))
                .order_by(AuditLog.id)
            ).scalars()
        )


def _form_page(
    request: Request,
    me: Account,
    sheet: Sheet,
    *,
    patient: FoundPatient | None,
    key: int | None,
    values: Mapping[str, str],
    version: int | None,
    originals: Mapping[str, str] | None = None,
    yours: Mapping[str, str] | None = None,
    errors: dict[str, str] | None = None,
    stale: Stale | None = None,
    message: str | None = None,
    reason: str = "",
    findings: Checked | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    """The form; opened (GET) after signing in again, it holds what was typed before the session ended."""
    creating = key is None
    note = None
    if request.method == "GET" and (typed := resumed(request)) is not None:
        values, reason, note = typed, typed.get(REASON, ""), NOT_SAVED_YET
        if not creating:
            originals, version = _originals(typed), _version(typed.get("version"))
    with engine_of(request).connect() as connection:
        sites = entry_sites(connection, me)
    if creating and sheet.name == "patients" and len(sites) == 1 and "site" not in values:
        values = {**values, "site": sites[0]}  # a single-site coordinator's site, chosen for them
    errors = errors or {}
    history = [] if creating else _record_history(request, sheet, key)
    conflicts = _conflicts(yours or {}, values, history)
    fields = _fields(sheet, creating=creating, values=values, errors=errors, sites=sites,
                     originals=None if creating else originals or {}, conflicts=conflicts)  # fmt: skip
    first = [f.name for f in fields if f.error or f.conflict] + ([REASON] if REASON in errors else [])
    refused = errors.get(WHOLE_RECORD) or message or stale
    return page(
        request, "record_form.html", status_code, me=me, sheet=sheet, patient=patient, key=key, creating=creating,
        fields=fields, record_version=version, record_error=errors.get(WHOLE_RECORD), reason_error=errors.get(REASON),
        stale=stale, message=message, note=note, reason=reason, kind=RECORD_SHEETS.get(sheet.name, PATIENT),
        history=history, focus=first[0] if first else "refusal" if refused else None, checked=findings,
    )  # fmt: skip


def _save(
    request: Request,
    me: Account,
    sheet: Sheet,
    form: dict[str, str],
    *,
    patient: FoundPatient | None,
    key: int | None,
) -> Response:
    """Save the form, or show it again with what is wrong; stored data only change on success."""
    check_csrf(request, form.get("csrf_token"))
    require(me, WRITERS)
    reason, version = form.get("reason", ""), _version(form.get("version"))
    engine = engine_of(request)
    with engine.connect() as connection:
        sites = entry_sites(connection, me)
    again: dict[str, Any] = {"patient": patient, "key": key, "values": form, "version": version, "reason": reason,
                             "originals": _originals(form)}  # fmt: skip
    names = [column.name for column in form_columns(sheet, creating=key is None)]
    if unchosen := [name for name in again["originals"] if name in names and name not in form]:
        yours = {name: form.get(YOURS + name, "") for name in unchosen}
        again["values"] = form | {name: again["originals"][name] for name in unchosen}
        return _form_page(request, me, sheet, **again, yours=yours, errors=dict.fromkeys(unchosen, CHOOSE),
                          status_code=422)  # fmt: skip
    confirmation = Confirmation.of(form)
    checks = EntryChecks(request.app.state.config, date.today(), confirmation.given)
    try:
        saved = save_record(
            engine, sheet.name, form, actor=me.username, reason=reason, patient_id=patient.id if patient else None,
            key=key, version=version, sites=sites, checks=checks,
        )  # fmt: skip
    except Unconfirmed as unconfirmed:
        return _form_page(request, me, sheet, **again, message=str(unconfirmed), status_code=422,
                          findings=checked(sheet, unconfirmed, confirmation, creating=key is None))  # fmt: skip
    except Invalid as invalid:
        return _form_page(request, me, sheet, **again, errors=invalid.errors, status_code=422)
    except Stale as stale:
        values, yours = _merged(form, stale, names)
        again |= {"values": values, "version": stale.stored_version, "originals": stale.stored or again["originals"]}
        return _form_page(request, me, sheet, **again, yours=yours, stale=stale, status_code=409)
    except LookupError:
        raise HTTPException(status_code=404, detail="No such record") from None
    except EntryError as refused:
        return _form_page(request, me, sheet, **again, message=str(refused), status_code=409)
    study_id = patient.study_id if patient else form["study_id"].strip()  # as parsed and stored
    if saved.changed:
        converted = f" Result {saved.conversion}." if saved.conversion else ""
        answered = f" Answers query {', '.join(map(str, saved.answered))}." if saved.answered else ""
        request.session["flash"] = f"Saved: {', '.join(saved.changed)}.{converted}{answered}" + _found(saved.findings)
    else:
        request.session["flash"] = "Nothing changed."
    anchor = "" if sheet.name == "patients" else f"#{sheet.name}"
    return RedirectResponse(f"/patients/{quote(study_id, safe='')}{anchor}", status_code=303)


def _found(findings: list[dict[str, Any]]) -> str:
    """What a saved form's checks added, in a sentence (the patient page lists the findings)."""
    counts = {"error": 0, "warning": 0, "missing": 0}
    for finding in findings:
        counts["missing" if is_missing_record(finding["rule"]) else finding["severity"]] += 1
    said = [f"{counts['error']} confirmed error(s)"] if counts["error"] else []
    said += [f"{counts['warning']} warning(s)"] if counts["warning"] else []
    said += [f"{counts['missing']} record(s) still to enter"] if counts["missing"] else []
    return f" The checks found {', '.join(said)}: see the findings below." if said else ""


def _version(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


async def _form(request: Request) -> dict[str, str]:
    """The submitted fields as text (a repeated field keeps its last value; files are refused)."""
    data = await request.form()
    return with_missing_codes({name: value for name, value in data.items() if isinstance(value, str)})


def _patient(request: Request, me: Account, study_id: str) -> FoundPatient:
    return find_patient(engine_of(request), me, study_id)


@router.get("/patients/new", response_class=HTMLResponse)
def new_patient(request: Request, me: Signed) -> HTMLResponse:
    require(me, WRITERS)
    return _form_page(request, me, SHEETS_BY_NAME["patients"], patient=None, key=None, values={}, version=None)


@router.post("/patients/new", response_class=HTMLResponse, response_model=None)
async def create_patient(request: Request, me: Signed) -> Response:
    form = await _form(request)
    return await run_in_threadpool(_save, request, me, SHEETS_BY_NAME["patients"], form, patient=None, key=None)


@router.get("/patients/{study_id}/edit", response_class=HTMLResponse)
def edit_patient(request: Request, me: Signed, study_id: str) -> HTMLResponse:
    patient = _patient(request, me, study_id)
    require(me, WRITERS)
    record = patient.record
    values = form_values(record, SHEETS_BY_NAME["patients"], patient.site_code)
    key = str(patient.id)
    return _form_page(request, me, SHEETS_BY_NAME["patients"], patient=patient, key=key, values=values,
                      version=record.version, originals=values)  # fmt: skip


@router.post("/patients/{study_id}/edit", response_class=HTMLResponse, response_model=None)
async def update_patient(request: Request, me: Signed, study_id: str) -> Response:
    form = await _form(request)

    def save() -> Response:
        patient = _patient(request, me, study_id)
        return _save(request, me, SHEETS_BY_NAME["patients"], form, patient=patient, key=patient.id)

    return await run_in_threadpool(save)


@router.get("/patients/{study_id}/{sheet_name}/new", response_class=HTMLResponse)
def new_record(request: Request, me: Signed, study_id: str, sheet_name: str) -> HTMLResponse:
    patient, sheet = _patient(request, me, study_id), _sheet(sheet_name)
    require(me, WRITERS)
    return _form_page(request, me, sheet, patient=patient, key=None, values={}, version=None)


@router.post("/patients/{study_id}/{sheet_name}/new", response_class=HTMLResponse, response_model=None)
async def create_record(request: Request, me: Signed, study_id: str, sheet_name: str) -> Response:
    form = await _form(request)

    def save() -> Response:
        patient, sheet = _patient(request, me, study_id), _sheet(sheet_name)
        return _save(request, me, sheet, form, patient=patient, key=None)

    return await run_in_threadpool(save)


@router.get("/patients/{study_id}/{sheet_name}/{key}/edit", response_class=HTMLResponse, response_model=None)
def edit_record(request: Request, me: Signed, study_id: str, sheet_name: str, key: str) -> Response:
    patient, sheet, number = _patient(request, me, study_id), _sheet(sheet_name), record_key(key)
    with Session(engine_of(request)) as session:
        record = _record(session, sheet, number, patient.id)
        values, version, deleted = form_values(record, sheet), record.version, record.deleted_at is not None
    require(me, WRITERS)
    if deleted:
        request.session["flash"] = "This record is deleted: restore it before changing it."
        return RedirectResponse(f"/patients/{quote(study_id, safe='')}#{sheet.name}", status_code=303)
    key = number
    return _form_page(request, me, sheet, patient=patient, key=key, values=values, version=version, originals=values)


@router.post("/patients/{study_id}/{sheet_name}/{key}/edit", response_class=HTMLResponse, response_model=None)
async def update_record(request: Request, me: Signed, study_id: str, sheet_name: str, key: str) -> Response:
    form = await _form(request)

    def save() -> Response:
        patient, sheet, number = _patient(request, me, study_id), _sheet(sheet_name), record_key(key)
        with Session(engine_of(request)) as session:  # first: a refused form shows the record's history
            _record(session, sheet, number, patient.id)
        return _save(request, me, sheet, form, patient=patient, key=number)

    return await run_in_threadpool(save)


#: The saves of the entry forms, each at its form's address: a form sent after the session ended opens again there
#: (:mod:`registry.web.errors`).
FORM_SAVES = (create_patient, update_patient, create_record, update_record)


def _act(request: Request, study_id: str, form: dict[str, str], action: Callable[[], None], done: str) -> Response:
    """Run a delete/restore/lock action; its refusal comes back to the patient page as a message."""
    check_csrf(request, form.get("csrf_token"))
    try:
        action()
    except LookupError:
        raise HTTPException(status_code=404, detail="No such record") from None
    except EntryError as refused:
        request.session["flash"] = f"Not done: {refused}."
    else:
        request.session["flash"] = done
    return RedirectResponse(f"/patients/{quote(study_id, safe='')}", status_code=303)


#: What the patient page says after each action.
DONE = {
    "delete": "Deleted.",
    "restore": "Restored.",
    "lock": "Patient locked: no record of theirs can change until a data manager unlocks it.",
    "unlock": "Patient unlocked.",
}


@router.post("/patients/{study_id}/{action}", response_model=None)
async def patient_action(request: Request, me: Signed, study_id: str, action: str) -> Response:
    if action not in DONE:
        raise HTTPException(status_code=404, detail="No such action")
    form = await _form(request)

    def act() -> Response:
        patient = _patient(request, me, study_id)
        require(me, LOCKERS if action in ("lock", "unlock") else WRITERS)
        engine, reason = engine_of(request), form.get("reason")
        if action in ("lock", "unlock"):
            return _act(
                request,
                study_id,
                form,
                lambda: set_locked(engine, patient.id, locked=action == "lock", actor=me.username, reason=reason),
                DONE[action],
            )
        return _act(request, study_id, form, lambda: set_deleted(
            engine, "patients", patient.id, deleted=action == "delete", actor=me.username, reason=reason),
            DONE[action])  # fmt: skip

    return await run_in_threadpool(act)


@router.post("/patients/{study_id}/{sheet_name}/{key}/{action}", response_model=None)
async def record_action(
    request: Request, me: Signed, study_id: str, sheet_name: str, key: str, action: str
) -> Response:
    if action not in ("delete", "restore"):
        raise HTTPException(status_code=404, detail="No such action")
    form = await _form(request)

    def act() -> Response:
        patient, sheet, number = _patient(request, me, study_id), _sheet(sheet_name), record_key(key)
        require(me, WRITERS)
        return _act(request, study_id, form, lambda: set_deleted(
            engine_of(request), sheet.name, number, deleted=action == "delete", actor=me.username,
            reason=form.get("reason"), patient_id=patient.id), DONE[action])  # fmt: skip

    return await run_in_threadpool(act)
