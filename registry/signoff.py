"""Record status and sign-off: a patient's data entered, verified at source, and signed by an investigator.

- ``in_progress`` → ``complete``: the coordinator says entry is done. Refused while a
  required form is missing (an antibody test, a treatment, a follow-up), an error
  finding stands that no closed query answers, or a query awaits the site.
- ``complete`` → ``verified``: a data manager has verified the source data; required
  before signing at the sites that ask for it (``registry site verification``).
- ``verified`` (or ``complete`` where verification is not required) → ``signed``: an
  investigator of the patient's site re-enters their password; the signature records
  signer, time and meaning (21 CFR 11.50) and is kept for ever. A refused signature
  (wrong password, role or site) is logged among the sign-in events.
- Any change to the data of a verified or signed patient returns them to ``complete``
  and voids the signature, in the change's own transaction (a flush hook of
  registry/audit.py calls :func:`void_on_change`; the workbook import calls
  :func:`void_for_patients` for what it writes in bulk). ``reopen`` returns a patient to
  ``in_progress``, voiding any signature.

Every status and signature is written through the audit trail. Who may set which status
is checked here by role where it is the rule's essence (only an investigator signs),
and by the caller for the rest (the web application by role; the command line is the
operator's), as for queries.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from registry import accounts
from registry.audit import audited_session
from registry.codes import QueryStatus, RecordStatus, Role, SignInOutcome
from registry.db import as_utc
from registry.models import (
    Account,
    AccountSite,
    DataQuery,
    Entered,
    Patient,
    PatientStatus,
    Signature,
    Site,
    is_bookkeeping,
)
from registry.queries import list_queries, scoped_patient, summarise

if TYPE_CHECKING:
    from registry.config import Config

#: What an investigator's signature attests (21 CFR 11.50(a)(3): the meaning of the signature).
MEANING = "I attest that the data of patient {study_id} are complete and accurate"
#: The statuses each step may follow.
ALLOWED_FROM = {
    RecordStatus.COMPLETE: (RecordStatus.IN_PROGRESS,),
    RecordStatus.VERIFIED: (RecordStatus.COMPLETE,),
    RecordStatus.SIGNED: (RecordStatus.COMPLETE, RecordStatus.VERIFIED),
    RecordStatus.IN_PROGRESS: (RecordStatus.COMPLETE, RecordStatus.VERIFIED, RecordStatus.SIGNED),
}
#: The statuses a change to the data takes back to complete.
VOIDED_BY_CHANGE = (RecordStatus.VERIFIED, RecordStatus.SIGNED)
#: Patients read per statement (PostgreSQL takes at most 65,535 parameters, SQLite 32,766).
_CHUNK = 5_000
_VOID_REASON_LENGTH = Signature.__table__.c.void_reason.type.length


class SignOffError(ValueError):
    """The status cannot be set, or the signature made, as asked; the message says why. Nothing was written."""


@dataclass(frozen=True)
class SignatureShown:
    """A signature as the patient page and the command line show it."""

    signer: str
    signed_at: datetime
    meaning: str
    voided_at: datetime | None
    voided_by: str | None
    void_reason: str | None


@dataclass(frozen=True)
class RecordState:
    """Where a patient's record stands, with the signature standing (if signed) and every earlier one."""

    study_id: str
    site: str
    status: RecordStatus
    changed_by: str | None
    changed_at: datetime | None
    verification_required: bool
    signatures: list[SignatureShown]

    @property
    def signature(self) -> SignatureShown | None:
        """The standing signature, if any."""
        return next((s for s in self.signatures if s.voided_at is None), None)

    def can_be_signed(self) -> bool:
        needed = (RecordStatus.VERIFIED,) if self.verification_required else ALLOWED_FROM[RecordStatus.SIGNED]
        return self.status in needed


def _patient(session: Session, study_id: str, sites: Collection[str] | None, *, lock: bool = False) -> Patient:
    """:func:`registry.queries.scoped_patient`, if not deleted (a deleted patient has no record status)."""
    patient = scoped_patient(session, study_id, sites, lock=lock)
    if patient.deleted_at is not None:
        raise LookupError(f"no patient {study_id}")
    return patient


def state_of(engine: sa.Engine, study_id: str, *, sites: Collection[str] | None = None) -> RecordState:
    """The record status of ``study_id`` (a patient of ``sites``), with its signatures, newest first."""
    with Session(engine) as session:
        return _state(session, _patient(session, study_id, sites))


def _state(session: Session, patient: Patient) -> RecordState:
    site = session.get(Site, patient.site_id)
    status = session.get(PatientStatus, patient.id)
    signed = session.execute(
        sa.select(Signature).where(Signature.patient_id == patient.id).order_by(Signature.id.desc())
    ).scalars()
    signatures = [SignatureShown(s.signer, as_utc(s.signed_at), s.meaning, as_utc(s.voided_at), s.voided_by,
                                 s.void_reason) for s in signed]  # fmt: skip
    return RecordState(
        patient.study_id, site.code, status.status if status else RecordStatus.IN_PROGRESS,
        status.changed_by if status else None, as_utc(status.changed_at) if status else None,
        site.verification_required, signatures,
    )  # fmt: skip


def blockers(session: Session, patient: Patient, config: Config, today: date | None = None) -> list[str]:
    """What keeps the patient from being complete: each missing required form, each error finding no closed query
    answers, each query awaiting the site; as sentences, none when the patient may be marked complete."""
    from registry.entry_checks import EntryChecks, is_missing_record
    from registry.quality import Severity

    findings = EntryChecks(config, today or datetime.now(UTC).date()).findings(session, [patient.id])
    closed = {
        (q.rule, q.table_name or "", q.record_key or "", q.field or "")
        for q in session.execute(
            sa.select(DataQuery).where(DataQuery.patient_id == patient.id, DataQuery.status == QueryStatus.CLOSED)
        ).scalars()
    }
    found = []
    for f in findings.to_dict("records"):
        if is_missing_record(f["rule"]):
            found.append(f"a required form is missing ({f['rule']}: {f['message']})")
        elif f["severity"] == Severity.ERROR.value and (f["rule"], f["table"], str(f["record"]),
                                                        f["field"] or "") not in closed:  # fmt: skip
            found.append(f"error {f['rule']} on {f['table']} {f['record']} is open ({f['message']})")
    waiting = session.execute(
        sa.select(DataQuery.id).where(DataQuery.patient_id == patient.id, DataQuery.status == QueryStatus.OPEN)
        .order_by(DataQuery.id)
    ).scalars().all()  # fmt: skip
    found += [f"query {query_id} awaits the site's answer" for query_id in waiting]
    return found


def _set(session: Session, patient: Patient, status: RecordStatus, actor: str) -> None:
    """Give the (locked) patient ``status`` if it may follow the current one."""
    stored = session.get(PatientStatus, patient.id, with_for_update=True)
    before = stored.status if stored else RecordStatus.IN_PROGRESS
    if before not in ALLOWED_FROM[status]:
        allowed = " or ".join(s.value for s in ALLOWED_FROM[status])
        raise SignOffError(f"patient {patient.study_id} is {before.value}: it cannot be marked {status.value} "
                           f"(only a patient {allowed} can)")  # fmt: skip
    now = datetime.now(UTC)
    if stored is None:
        session.add(PatientStatus(patient_id=patient.id, status=status, changed_by=actor, changed_at=now))
    else:
        stored.status, stored.changed_by, stored.changed_at = status, actor, now


def _commit(session: Session, study_id: str) -> None:
    try:
        session.commit()
    except (StaleDataError, sa.exc.IntegrityError):  # set by someone else since it was read
        session.rollback()
        raise SignOffError(f"the status of patient {study_id} was changed by someone else meanwhile: "
                           "read it again") from None  # fmt: skip


def mark_complete(
    engine: sa.Engine, study_id: str, *, actor: str, config: Config, sites: Collection[str] | None = None
) -> None:
    """Mark the patient complete (a coordinator of their site, or a data manager): refused while :func:`blockers`
    finds anything."""
    with audited_session(engine, actor=actor, reason="record marked complete") as session:
        patient = _patient(session, study_id, sites, lock=True)
        _set(session, patient, RecordStatus.COMPLETE, actor)
        if found := blockers(session, patient, config):
            raise SignOffError(f"patient {study_id} cannot be marked complete: {'; '.join(found)}")
        _commit(session, study_id)


def mark_verified(engine: sa.Engine, study_id: str, *, actor: str) -> None:
    """Mark a complete patient's source data verified (a data manager)."""
    with audited_session(engine, actor=actor, reason="source data verified") as session:
        _set(session, _patient(session, study_id, None, lock=True), RecordStatus.VERIFIED, actor)
        _commit(session, study_id)


def reopen(engine: sa.Engine, study_id: str, *, actor: str, reason: str, sites: Collection[str] | None = None) -> None:
    """Return the patient to in progress (more data to enter), voiding any signature; ``reason`` says why."""
    reason = (reason or "").strip()
    if not reason or len(reason) > _VOID_REASON_LENGTH or "\x00" in reason:
        raise SignOffError(f"a reason (at most {_VOID_REASON_LENGTH} characters) is required to re-open a patient")
    with audited_session(engine, actor=actor, reason=reason) as session:
        patient = _patient(session, study_id, sites, lock=True)
        _set(session, patient, RecordStatus.IN_PROGRESS, actor)
        _void(session, [patient.id], actor, f"re-opened: {reason}")
        _commit(session, study_id)


def sign(
    engine: sa.Engine, study_id: str, *, username: str, password: str, client: str | None = None
) -> SignatureShown:
    """Sign the patient's data as the investigator ``username``, who re-entered ``password``: refused (and logged
    as a refused signature) unless the password is the account's, the account an active investigator's, and the
    patient of one of its sites; refused unless the patient is verified (or complete, where the site does not
    require verification)."""
    with audited_session(engine, actor=username, reason="electronic signature") as session:
        account = session.execute(sa.select(Account).where(Account.username == username)).scalar()
        matches = accounts.password_matches(account, password)
        patient = session.execute(sa.select(Patient).where(Patient.study_id == study_id)).scalar()
        served = account is not None and patient is not None and session.execute(
            sa.select(AccountSite).where(AccountSite.account_id == account.id,
                                         AccountSite.site_id == patient.site_id)
        ).first() is not None  # fmt: skip
        refusal = (
            "the user name or password is not right" if not matches or not account.active
            else f"{username} is not an investigator (only an investigator signs)" if account.role != Role.INVESTIGATOR
            else f"no patient {study_id} among the sites {username} serves" if not served
            else None
        )  # fmt: skip
        if refusal is not None:
            session.rollback()
            with engine.begin() as connection:
                accounts.record_event(connection, username, SignInOutcome.SIGNATURE_REFUSED,
                                      account_id=account.id if account else None, client=client,
                                      actor=f"signature of {study_id}")  # fmt: skip
            raise SignOffError(f"{refusal}: nothing was signed")
        patient = _patient(session, study_id, None, lock=True)
        state = _state(session, patient)
        if not state.can_be_signed():
            needed = "verified" if state.verification_required else "complete or verified"
            raise SignOffError(f"patient {study_id} is {state.status.value}: only a patient {needed} can be signed"
                               + (f" (site {state.site} requires source data verification)"
                                  if state.verification_required else ""))  # fmt: skip
        _set(session, patient, RecordStatus.SIGNED, username)
        made = Signature(patient_id=patient.id, signer=username, signed_at=datetime.now(UTC),
                         meaning=MEANING.format(study_id=study_id))  # fmt: skip
        session.add(made)
        _commit(session, study_id)
        return SignatureShown(made.signer, as_utc(made.signed_at), made.meaning, None, None, None)


def _void(session: Session, patient_ids: Iterable[int], actor: str, why: str) -> None:
    standing = session.execute(
        sa.select(Signature).where(Signature.patient_id.in_(list(patient_ids)), Signature.voided_at.is_(None))
    ).scalars()
    now = datetime.now(UTC)
    for signature in standing:
        signature.voided_at, signature.voided_by = now, actor
        signature.void_reason = (
            why if len(why) <= _VOID_REASON_LENGTH else why[: why.index(":")] + " (the audit trail says why)"
        )


def void_for_patients(session: Session, patient_ids: Collection[int]) -> None:
    """The data of ``patient_ids`` change in ``session``: those verified or signed go back to complete, their
    signatures voided, by the session's actor for its reason."""
    if not patient_ids:
        return
    actor, reason, ids = session.info.get("actor") or "", session.info.get("reason") or "", sorted(patient_ids)
    with session.no_autoflush:
        held = [
            status
            for start in range(0, len(ids), _CHUNK)
            for status in session.execute(
                sa.select(PatientStatus).where(PatientStatus.patient_id.in_(ids[start : start + _CHUNK]),
                                               PatientStatus.status.in_(VOIDED_BY_CHANGE))
            ).scalars()
        ]  # fmt: skip
        now = datetime.now(UTC)
        for status in held:
            status.status, status.changed_by, status.changed_at = RecordStatus.COMPLETE, actor, now
        if held:
            _void(session, [status.patient_id for status in held], actor,
                  f"data changed: {reason}" if reason else "data changed")  # fmt: skip


def _is_data_change(obj: Any, session: Session) -> bool:
    if obj in session.new:
        return not isinstance(obj, Patient)  # a new patient has no status yet
    if obj in session.deleted:
        return True
    state = sa.inspect(obj)
    return any(
        state.attrs[attr.key].history.has_changes()
        for attr in state.mapper.column_attrs
        if not is_bookkeeping(attr.columns[0]) or attr.key == "deleted_at"  # not the edit counter or the lock
    )


def void_on_change(session: Session) -> None:
    """Before a flush: the patients whose data the flush changes (a record added, changed, deleted or restored)
    lose their verification and signature (:func:`void_for_patients`)."""
    changed = {
        obj.id if isinstance(obj, Patient) else obj.patient_id
        for obj in (*session.new, *session.dirty, *session.deleted)
        if isinstance(obj, Entered) and _is_data_change(obj, session)
    }
    void_for_patients(session, changed - {None})


def _of_live_patients(select: sa.Select, sites: Collection[str] | None) -> sa.Select:
    """``select`` over the live patients (of ``sites``), each joined to its site and its record status (outer: a
    patient without one is in progress)."""
    select = (
        select.select_from(Patient)
        .join(Site, Site.id == Patient.site_id)
        .outerjoin(PatientStatus, PatientStatus.patient_id == Patient.id)
        .where(Patient.deleted_at.is_(None))
    )
    return select if sites is None else select.where(Site.code.in_(sites))


def list_states(
    engine: sa.Engine, *, sites: Collection[str] | None = None, status: RecordStatus | None = None
) -> list[dict[str, Any]]:
    """Every live patient (of ``sites``) with their record status (of ``status``), by study_id: study_id, site,
    status, changed_by, changed_at, signer, signed_at."""
    signed = sa.select(Signature.patient_id, Signature.signer, Signature.signed_at).where(
        Signature.voided_at.is_(None)
    ).subquery()  # fmt: skip
    select = _of_live_patients(
        sa.select(Patient.study_id, Site.code.label("site"), PatientStatus.status, PatientStatus.changed_by,
                  PatientStatus.changed_at, signed.c.signer, signed.c.signed_at), sites
    ).outerjoin(signed, signed.c.patient_id == Patient.id).order_by(Patient.study_id)  # fmt: skip
    with engine.connect() as connection:
        rows = [dict(row) for row in connection.execute(select).mappings()]
    for row in rows:
        row["status"] = RecordStatus(row["status"] or RecordStatus.IN_PROGRESS)
        row["changed_at"], row["signed_at"] = as_utc(row["changed_at"]), as_utc(row["signed_at"])
    return [row for row in rows if status is None or row["status"] is status]


def count_by_status(engine: sa.Engine, *, sites: Collection[str] | None = None) -> dict[str, int]:
    """Live patients (of ``sites``) per record status, every status listed: one count per status in the database,
    not a row per patient (100,000 patients: 0.9 s -> a few hundredths)."""
    select = _of_live_patients(sa.select(PatientStatus.status, sa.func.count()), sites).group_by(PatientStatus.status)
    counts = {s.value: 0 for s in RecordStatus}
    with engine.connect() as connection:
        for status, n in connection.execute(select):
            counts[RecordStatus(status or RecordStatus.IN_PROGRESS).value] += n
    return counts


def resolution_counts(engine: sa.Engine) -> dict[str, dict[str, int]]:
    """The registry's queries by status and its patients by record status, as the report's data-quality section
    gives them."""
    return {
        "queries": summarise(list_queries(engine), {})["by_status"],
        "record_status": count_by_status(engine),
    }


def set_verification(engine: sa.Engine, site: str, required: bool, *, actor: str) -> None:
    """Whether the patients of ``site`` need source data verification before an investigator signs."""
    why = "source verification " + ("required" if required else "not required")
    with audited_session(engine, actor=actor, reason=why) as session:
        found = session.execute(sa.select(Site).where(Site.code == site)).scalar()
        if found is None:
            raise LookupError(f"no site {site}")
        found.verification_required = required
        session.commit()
