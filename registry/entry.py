"""One record at a time: what the web forms validate and write, by the import's rules.

A form is read as an import row is: each field by :func:`registry.ingest.parse_cell`
(the same messages), then the table's CHECK rules (:func:`registry.ingest.rule_violations`),
then the natural key's uniqueness, so a record the import would refuse is refused here
too, with every message tied to its field. Writes are audited (actor, reason), and
versioned: a form saved from an older version than the one stored is refused with the
changes made since, so no edit silently overwrites another. Deletion is soft (the
record is kept, hidden from analyses and exports, and restorable), and a data manager
can lock a patient's records against any change. A change of a field that a query is
about is written into the query's thread, which it marks answered (registry/queries.py).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm.exc import StaleDataError
from sqlmodel import Session, SQLModel

from registry import missing, queries
from registry.audit import audited_session
from registry.codes import ANALYTE_RANGES, PFT_RANGES, Analyte, lab_units, to_canonical_unit
from registry.ingest import CellError, parse_cell, rule_violations, show
from registry.models import AuditLog, Patient, Site
from registry.sheets import SHEETS_BY_NAME, Sheet, SheetColumn
from registry.violations import explain

if TYPE_CHECKING:
    from registry.entry_checks import EntryChecks

#: The form of the whole record, for errors that no single field owns.
WHOLE_RECORD = ""


class EntryError(Exception):
    """The change was refused; ``str()`` says why in plain words."""


@dataclass(eq=False)
class Invalid(EntryError):
    """Field name -> what is wrong with it (``WHOLE_RECORD`` for the record as a whole)."""

    errors: dict[str, str]

    def __str__(self) -> str:
        return "; ".join(f"{name or 'record'}: {message}" for name, message in self.errors.items())


@dataclass(eq=False)
class Stale(EntryError):
    """The record changed since the form was opened: the changes made since, newest last."""

    changes: list[AuditLog] = field(default_factory=list)
    stored_version: int | None = None  # the version to open the form at again
    stored: dict[str, str] | None = None  # the record as a form shows it now (None: not known)

    def __str__(self) -> str:
        return "this record was changed by someone else since you opened it: review their change and edit again"


class Locked(EntryError):
    """The patient is locked by a data manager."""

    def __str__(self) -> str:
        return "this patient's records are locked by a data manager: ask them to unlock before changing anything"


class NoReason(EntryError):
    """A change of saved data came without a reason."""

    def __str__(self) -> str:
        return "a reason for the change is required"


#: The form field a reason is given in (its errors are shown there).
REASON = "reason"


@dataclass(frozen=True)
class AppliesWhen:
    """A field that applies only when each of the fields ``controls`` holds one of ``values`` ("": is empty).

    A form hides the field otherwise (registry.js, from the same definitions), and the server refuses a value
    given for it without script: a value that does not apply is refused, never dropped in silence.
    """

    controls: tuple[str, ...]
    values: tuple[str, ...]
    when: str  # when it applies, in words


_DEAD = AppliesWhen(("vital_status",), ("dead",), "the vital status is dead")
_DONE = AppliesWhen(("not_done_reason",), ("",), "the test was done (no reason it was not)")

#: Per sheet, the fields that apply only in some cases. RPILD's definition applies to a 'no' as well as to a 'yes'
#: (each is judged by a definition, and the database requires one for either), so it is hidden only while RPILD
#: is unanswered.
APPLIES: dict[str, dict[str, AppliesWhen]] = {
    "patients": {"rpild_definition": AppliesWhen(("rpild",), ("yes", "no"), "RPILD is answered yes or no")},
    "pfts": {**dict.fromkeys(PFT_RANGES, _DONE),
             "not_done_reason": AppliesWhen(tuple(PFT_RANGES), ("",), "no result is entered")},
    "follow_up": {"death_date": _DEAD, "death_cause": _DEAD},
}  # fmt: skip


def _not_applying(sheet: Sheet, values: Mapping[str, Any]) -> dict[str, str]:
    """The fields given a value where it does not apply, and what to do about it."""
    errors = {}
    for name, rule in APPLIES.get(sheet.name, {}).items():
        applies = all(shown(values.get(control)) in rule.values for control in rule.controls)
        if values.get(name) is not None and not applies:
            errors[name] = f"does not apply unless {rule.when}: leave it empty"
    return errors


def _lab_unit_problem(values: Mapping[str, Any]) -> str | None:
    """What is wrong with a lab form's unit for its analyte, if anything: the form accepts only the units it offers."""
    analyte, unit = values.get("analyte"), values.get("unit")
    units = () if analyte is None else lab_units(Analyte(analyte))
    if analyte is None or unit is None or unit in units:
        return None
    return f"is not a unit of {Analyte(analyte).label} the form accepts: choose {' or '.join(units)}"


def converted_lab_unit(values: dict[str, Any]) -> str:
    """A lab form's value in another accepted unit converted to the analyte's canonical unit, in place; what was
    entered and what is stored, in words, for the audit reason and the page ("" when nothing was converted)."""
    analyte, unit, value = values.get("analyte"), values.get("unit"), values.get("value")
    if analyte is None or value is None or unit == ANALYTE_RANGES[Analyte(analyte)].unit:
        return ""
    values["value"] = to_canonical_unit(Analyte(analyte), value, unit)
    values["unit"] = ANALYTE_RANGES[Analyte(analyte)].unit
    return f"entered as {show(value)} {unit}, stored as {show(values['value'])} {values['unit']}"


def form_columns(sheet: Sheet, *, creating: bool) -> list[SheetColumn]:
    """The columns a form shows: a record's patient comes from the page, a patient's study_id is fixed once saved."""
    if sheet.name == "patients":
        return [c for c in sheet.columns if creating or c.name != "study_id"]
    return [c for c in sheet.columns if c.name != "study_id"]


def stored_values(record: SQLModel | None, sheet: Sheet, site_code: str | None = None) -> dict[str, Any]:
    """A stored record's values under the sheet's column names (its patient left out; a coded field's
    :class:`registry.missing.Missing`)."""
    if record is None:
        return {}
    values = {c.name: getattr(record, c.target) for c in sheet.columns if not c.is_reference}
    missing.with_codes(values, getattr(record, missing.COLUMN, None), sheet.coded)
    return values | ({"site": site_code} if sheet.name == "patients" else {})


#: Prefix of the form field that holds a field's missing-data code (a drop-down beside the field).
MISSING = "missing."


def with_missing_codes(form: Mapping[str, str]) -> dict[str, str]:
    """A submitted form with each code chosen beside an empty field written into the field as a cell writes it
    (``[unknown]``), so that the field has one value wherever forms are compared. A code chosen beside a field that
    has a value too is left where it is, for :func:`parse_form` to refuse."""
    folded = dict(form)
    for name, code in form.items():
        field = name.removeprefix(MISSING)
        if field != name and code and not folded.get(field, "").strip():
            folded[field] = f"[{code}]"
        if field != name and (not code or folded.get(field) == f"[{code}]"):
            del folded[name]
    return folded


def shown(value: Any) -> str:
    """A value as a form or page shows it: empty for none, else as the person entered it."""
    return "" if value is None else show(value)


def shown_field(record: SQLModel | Mapping[str, Any], name: str) -> str:
    """A stored record's field (an ORM record or a row as a dict) as a page shows it: its value, or the missing-data
    code it holds as a cell writes it (``[unknown]``)."""
    read = record.get if isinstance(record, Mapping) else lambda key: getattr(record, key, None)
    codes = missing.decode(read(missing.COLUMN))
    return str(missing.Missing(codes[name])) if name in codes else shown(read(name))


def form_values(record: SQLModel | None, sheet: Sheet, site_code: str | None = None) -> dict[str, str]:
    """A stored record as a form shows it (empty for a new record)."""
    return {name: shown(value) for name, value in stored_values(record, sheet, site_code).items()}


def _site_code(session: Session, patient: Patient | None) -> str | None:
    if patient is None:
        return None
    return session.execute(sa.select(Site.code).where(Site.id == patient.site_id)).scalar()


def parse_form(
    sheet: Sheet, form: Mapping[str, str], *, creating: bool, sites: Collection[str] | None
) -> dict[str, Any]:
    """The form's values, parsed and checked as an import row's; :class:`Invalid` with every problem otherwise.

    ``sites`` are the site codes the person may enter patients for (None: any site).
    """
    values, errors = {}, {}
    form = with_missing_codes(form)
    for column in form_columns(sheet, creating=creating):
        if form.get(MISSING + column.name):
            errors[column.name] = "has a value and a missing-data code: keep one of them"
            continue
        try:
            values[column.name] = parse_cell(column, form.get(column.name))
        except CellError as error:
            errors[column.name] = str(error)
    site = values.get("site")
    if site is not None and sites is not None and site not in sites:
        errors["site"] = "is not a site you enter patients for"
    if sheet.name == "labs" and "unit" not in errors and (problem := _lab_unit_problem(values)):
        errors["unit"] = problem
    errors = _not_applying(sheet, values) | errors
    if errors:
        raise Invalid(errors)
    return values


def _site_id(session: Session, code: str) -> int:
    site_id = session.execute(sa.select(Site.id).where(Site.code == code)).scalar()
    if site_id is None:
        raise Invalid({"site": "is not a registered site"})
    return site_id


def _check_rules(sheet: Sheet, record: dict[str, Any]) -> None:
    errors: dict[str, str] = {}
    for _, column, message in rule_violations(sheet, [record]):
        errors.setdefault(column or WHOLE_RECORD, message)
    if errors:
        raise Invalid(errors)


def _check_unique(session: Session, sheet: Sheet, patient_id: int | None, values: dict[str, Any], own: Any) -> None:
    """The natural key is free (a deleted record holding it is named: restore that one instead)."""
    table, key = sheet.table, [name for name in sheet.key if name != "study_id"]
    if sheet.name == "patients":
        query = sa.select(table.c.deleted_at).where(table.c.study_id == values["study_id"])
    else:
        query = sa.select(table.c.deleted_at).where(table.c.patient_id == patient_id)
        query = query.where(*(table.c[sheet.column(name).target] == values[name] for name in key))
    pk = table.primary_key.columns[0]
    if own is not None:
        query = query.where(pk != own)
    clash = session.execute(query).first()
    if clash is None:
        return
    if sheet.name == "patients":
        place, taken = "study_id", "another patient has this study_id"
        deleted = "a deleted patient has this study_id: restore them instead of entering them again"
    elif key:
        what = " + ".join(key)
        place, taken = key[-1], f"another record of this patient has the same {what}"
        deleted = f"a deleted record has the same {what}: restore it instead of entering it again"
    else:  # one record per patient (follow-up)
        place, taken = WHOLE_RECORD, "this patient has this record already: edit it instead"
        deleted = "this patient has a deleted record of this kind: restore it instead"
    raise Invalid({place: deleted if clash.deleted_at is not None else taken})


def changes_since(session: Session, sheet: Sheet, record_key: str, version: int, stored_version: int) -> list[AuditLog]:
    """The audit entries of the updates that took the record from ``version`` to ``stored_version``."""
    entries = session.execute(
        sa.select(AuditLog)
        .where(AuditLog.table_name == sheet.table.name, AuditLog.record_key == record_key)
        .order_by(AuditLog.id.desc())
        .limit(max(stored_version - version, 0))
    ).scalars()
    return list(reversed(list(entries)))


def _stale(engine: sa.Engine, sheet: Sheet, key: Any, version: int | None) -> Stale:
    """The refusal of a write that lost the race, with what the winner changed."""
    with Session(engine) as session:
        stored = session.get(sheet.model, key)
        if stored is None or version is None:
            return Stale()
        site_code = _site_code(session, stored) if sheet.name == "patients" else None
        changes = changes_since(session, sheet, str(key), version, stored.version)
        return Stale(changes, stored.version, form_values(stored, sheet, site_code))


@dataclass
class Saved:
    key: Any  # the record's primary key
    changed: list[str]  # the fields that changed (every given field of a new record)
    conversion: str = ""  # a lab value converted to its canonical unit: as entered, as stored
    findings: list[dict[str, Any]] = field(default_factory=list)  # what the checks found that the save added
    answered: list[int] = field(default_factory=list)  # the queries on changed fields the save marked answered


#: Longest reason the audit trail stores (``AuditLog.reason``).
REASON_LENGTH = AuditLog.__table__.c.reason.type.length


def reason_problem(reason: str | None) -> str | None:
    """What is wrong with a reason for a change, if anything."""
    text = (reason or "").strip()
    if not text:
        return str(NoReason())
    if len(text) > REASON_LENGTH:
        return f"is longer than {REASON_LENGTH} characters"
    if "\x00" in text:
        return "contains a NUL character"
    return None


def require_reason(reason: str | None) -> str:
    """The reason, stripped; :class:`NoReason` (or :class:`Invalid`) if it cannot be stored."""
    problem = reason_problem(reason)
    if problem == str(NoReason()):
        raise NoReason
    if problem is not None:
        raise Invalid({REASON: problem})
    return (reason or "").strip()


def _refuse_if_closed(session: Session, patient_id: int | None, *, deleted_too: bool = True) -> None:
    """Refuse changes to a locked patient's records, and (unless restoring them) a deleted patient's.

    The patient row is read FOR SHARE (PostgreSQL), so a lock cannot be committed while
    the change is under way; :func:`_commit` asks again after the flush for SQLite,
    whose write lock is only taken then.
    """
    if patient_id is None:
        return
    state = session.execute(
        sa.select(Patient.locked_at, Patient.deleted_at).where(Patient.id == patient_id).with_for_update(read=True)
    ).first()
    if state is None:
        raise LookupError(f"no patient {patient_id}")
    if state.locked_at is not None:
        raise Locked
    if deleted_too and state.deleted_at is not None:
        raise EntryError("this patient is deleted: restore them before changing their records")


def _commit(session: Session, engine: sa.Engine, sheet: Sheet, key: Any, version: int | None, closed: Any) -> None:
    """Flush, check the patient is still open (``closed``), commit; a lost race is :class:`Stale`."""
    try:
        session.flush()
        closed()
        session.commit()
    except StaleDataError:  # changed between our read and our write (SQLite has no FOR UPDATE)
        raise _stale(engine, sheet, key, version) from None
    except sa.exc.IntegrityError as error:  # a concurrent entry the checks could not see
        raise Invalid({WHOLE_RECORD: explain(error).message}) from None


def _load_for_update(session: Session, sheet: Sheet, key: Any, patient_id: int | None) -> SQLModel:
    """The stored record, locked until the transaction ends (PostgreSQL: SELECT ... FOR UPDATE)."""
    record = session.get(sheet.model, key, with_for_update=True)
    if record is None or (patient_id is not None and getattr(record, "patient_id", patient_id) != patient_id):
        raise LookupError(f"no {sheet.name} record {key}")
    return record


def save_record(
    engine: sa.Engine,
    sheet_name: str,
    form: Mapping[str, str],
    *,
    actor: str,
    reason: str | None,
    patient_id: int | None = None,
    key: Any = None,
    version: int | None = None,
    sites: Collection[str] | None = None,
    checks: EntryChecks | None = None,
) -> Saved:
    """Create (``key`` None) or update the record ``key`` of ``sheet_name`` from a form.

    ``patient_id`` is the patient whose page the form belongs to (None for a new
    patient). An update needs ``version``, the version the form was opened at, and a
    reason (``reason`` field errors come with the others). Raises :class:`Invalid`,
    :class:`Stale`, :class:`Locked`, ``EntryError`` (deleted) or ``LookupError`` when
    the record is not this patient's. With ``checks``, what the save adds to the patient's data-quality findings
    is checked before it commits (:mod:`registry.entry_checks`: an unconfirmed error is
    :class:`registry.entry_checks.Unconfirmed`, and nothing is written).
    """
    sheet = SHEETS_BY_NAME[sheet_name]
    creating = key is None
    if sheet.name == "patients" and not creating:
        patient_id = key
    errors = {}
    try:
        values = parse_form(sheet, form, creating=creating, sites=sites)
    except Invalid as invalid:
        errors = invalid.errors
    conversion = converted_lab_unit(values) if sheet.name == "labs" and not errors else ""
    why = "; ".join(part for part in ((reason or "").strip() or "initial entry", conversion) if part)
    if not creating and (problem := reason_problem(reason) or reason_problem(why)):
        errors[REASON] = problem
    if errors:
        raise Invalid(errors)
    with audited_session(engine, actor=actor, reason=why) as session:
        # The record's row FOR UPDATE first, then its patient's FOR SHARE: two edits of one patient queue
        # (the other way round, both would hold the share and wait for each other's update).
        record = None if creating else _load_for_update(session, sheet, key, patient_id)
        _refuse_if_closed(session, patient_id)
        if record is not None and record.deleted_at is not None:
            raise EntryError("this record is deleted: restore it before changing it")
        site_code = _site_code(session, record) if sheet.name == "patients" else None
        stored = form_values(record, sheet, site_code)
        if record is not None and record.version != version:
            raise Stale(changes_since(session, sheet, str(key), version or 0, record.version), record.version, stored)
        changed = [name for name in values if shown(values[name]) != stored.get(name, "")]
        if not changed and not creating:
            return Saved(key, [])
        before = checks.before(session, patient_id) if checks is not None else None
        merged = {c.name: None for c in sheet.columns} | stored_values(record, sheet, site_code) | values
        _check_rules(sheet, merged)
        if sheet.name == "patients" and record is not None:
            values["study_id"] = record.study_id
        _check_unique(session, sheet, patient_id, values, key)
        targets = {sheet.column(name).target: value for name, value in values.items() if name != "site"}
        if "site" in values:
            targets["site_id"] = _site_id(session, values["site"])
        if missing.has(sheet.table):
            targets = missing.stored(targets, None if creating else record.missing_codes)
        if creating:
            if sheet.name != "patients":
                targets["patient_id"] = patient_id
            record = sheet.model(**targets)
            session.add(record)
            answered = []
        else:
            for target, value in targets.items():
                setattr(record, target, value)
            corrected = {sheet.column(name).target: (stored.get(name, ""), shown(values[name])) for name in changed}
            answered = queries.record_correction(session, table=sheet.table.name, record_key=str(key),
                                                 changes=corrected, reason=why, actor=actor)  # fmt: skip
        found: list[dict[str, Any]] = []

        def before_commit() -> None:
            _refuse_if_closed(session, patient_id)
            if checks is not None:
                saved = (sheet.table.name, str(getattr(record, sheet.table.primary_key.columns[0].name)))
                added = checks.after(session, patient_id or record.id, before, record=saved, actor=actor)
                found.extend(added.to_dict("records"))

        _commit(session, engine, sheet, key, version, before_commit)
        return Saved(getattr(record, sheet.table.primary_key.columns[0].name), changed, conversion, found, answered)


def set_deleted(
    engine: sa.Engine,
    sheet_name: str,
    key: Any,
    *,
    deleted: bool,
    actor: str,
    reason: str | None,
    patient_id: int | None = None,
) -> None:
    """Delete (softly) or restore a record; a deleted patient hides every record of theirs."""
    sheet = SHEETS_BY_NAME[sheet_name]
    patients = sheet.name == "patients"
    with audited_session(engine, actor=actor, reason=require_reason(reason)) as session:

        def closed() -> None:
            _refuse_if_closed(session, key if patients else patient_id, deleted_too=not patients)

        record = _load_for_update(session, sheet, key, patient_id)  # in save_record's order
        closed()
        if (record.deleted_at is not None) == deleted:
            raise EntryError("this record is deleted already" if deleted else "this record is not deleted")
        record.deleted_at = datetime.now(UTC) if deleted else None
        _commit(session, engine, sheet, key, None, closed)


def set_locked(engine: sa.Engine, patient_id: int, *, locked: bool, actor: str, reason: str | None) -> None:
    """Lock a patient's records against every change, or unlock them (data managers)."""
    with audited_session(engine, actor=actor, reason=require_reason(reason)) as session:
        patient = session.get(Patient, patient_id, with_for_update=True)
        if patient is None:
            raise LookupError(f"no patient {patient_id}")
        if patient.deleted_at is not None:
            raise EntryError("this patient is deleted: restore them before locking")
        if (patient.locked_at is not None) == locked:
            raise EntryError("the patient is locked already" if locked else "the patient is not locked")
        patient.locked_at = datetime.now(UTC) if locked else None
        session.commit()
