"""The patient list (search and filters) and the patient page (every record, a timeline, findings, history)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from registry import missing
from registry.audit import audit_history
from registry.codes import STUDY_DRUGS, Antibody
from registry.ingest import show
from registry.models import AntibodyTest, FollowUp, Patient, Site, Treatment
from registry.quality.incremental import check_patients
from registry.reviews import load_reviews, open_findings, with_reviews
from registry.sheets import SHEETS_BY_NAME
from registry.signoff import MEANING
from registry.web import workflow
from registry.web.pages import (
    RECORD_SHEETS,
    SHEET_OF_TABLE,
    PageNumber,
    Signed,
    engine_of,
    find_patient,
    latest_checks,
    page,
    paged,
)
from registry.web.security import visible_patients

router = APIRouter()


#: The patient's yes/no clinical features, shown together on their page.
CLINICAL_FEATURES = [c.name for c in Patient.__table__.columns if isinstance(c.type, sa.Boolean) and c.name != "rpild"]


def _not_exists(model: Any, *conditions: Any) -> sa.ColumnElement[bool]:
    live = sa.select(model.patient_id).where(model.patient_id == Patient.id, model.deleted_at.is_(None), *conditions)
    return ~sa.exists(live)


#: Missing-data filters of the list: what is missing -> the condition that finds the patients lacking it (a field
#: left blank: one answered with a missing-data code, "unknown", is not to chase again).
MISSING: dict[str, tuple[str, Callable[[], sa.ColumnElement[bool]]]] = {
    "follow_up": ("no follow-up record", lambda: _not_exists(FollowUp)),
    "anti_mda5": ("no anti-MDA5 test", lambda: _not_exists(AntibodyTest, AntibodyTest.antibody == Antibody.ANTI_MDA5)),
    "ild_diagnosis_date": ("no ILD diagnosis date", lambda: Patient.ild_diagnosis_date.is_(None)),  # coded too:
    # the analysis needs the date (STU-002 is an error either way)
    "smoking": ("no smoking history", lambda: missing.blank(Patient.__table__.c.smoking)),
    "rpild": ("RPILD not judged", lambda: missing.blank(Patient.__table__.c.rpild)),
}


def _group() -> sa.ScalarSelect:
    """The study drug a patient started first (the analysis group), as a correlated subquery."""
    return (
        sa.select(Treatment.drug)
        .where(Treatment.patient_id == Patient.id, Treatment.drug.in_(STUDY_DRUGS), Treatment.deleted_at.is_(None))
        .order_by(Treatment.start_date)
        .limit(1)
        .correlate(Patient)
        .scalar_subquery()
    )


def _open_findings_by_patient(request: Request) -> dict[str, int]:
    checks = latest_checks(request)
    if checks is None:
        return {}
    return open_findings(checks.findings(engine_of(request)))["study_id"].dropna().value_counts().to_dict()


@router.get("/patients", response_class=HTMLResponse)
def patient_list(
    request: Request,
    me: Signed,
    q: str = "",
    site: str = "",
    group: str = "",
    missing: str = "",
    findings: str = "",
    deleted: str = "",
    number: PageNumber = 1,
) -> HTMLResponse:
    """The patients the filters match, a page at a time: their study_ids are listed whole (one column), the
    page's rows alone are read with their details (the analysis group is a subquery per patient)."""
    matching = (
        sa.select(Patient.study_id)
        .join(Site, Site.id == Patient.site_id)
        .where(Patient.id.in_(visible_patients(me)))
        .order_by(Patient.study_id)
    )
    if "\x00" in q:  # no study_id holds one (and PostgreSQL refuses to compare with it)
        matching = matching.where(sa.false())
    elif q:
        matching = matching.where(Patient.study_id.contains(q, autoescape=True))
    if site:
        matching = matching.where(Site.code == site)
    if group == "none":
        matching = matching.where(_group().is_(None))
    elif group:
        matching = matching.where(_group() == group)
    if missing in MISSING:
        matching = matching.where(MISSING[missing][1]())
    if deleted != "show":
        matching = matching.where(Patient.deleted_at.is_(None))
    counts = _open_findings_by_patient(request)
    filters = {"q": q, "site": site, "group": group, "missing": missing, "findings": findings, "deleted": deleted}
    with engine_of(request).connect() as connection:
        study_ids = connection.execute(matching).scalars().all()
        if findings == "open":
            study_ids = [study_id for study_id in study_ids if counts.get(study_id)]
        pages = paged(len(study_ids), number, "/patients", filters)
        shown = study_ids[pages.first - 1 : pages.last]
        rows = connection.execute(
            sa.select(
                Patient.study_id, Site.code, Patient.sex, Patient.ild_diagnosis_date, Patient.rpild,
                _group().label("group"), Patient.deleted_at, Patient.locked_at,
            )
            .join(Site, Site.id == Patient.site_id)
            .where(Patient.study_id.in_(shown))
            .order_by(Patient.study_id)
        ).mappings().all()  # fmt: skip
        statuses = workflow.status_column(connection, list(shown))
        sites = connection.execute(
            sa.select(Site.code).join(Patient, Patient.site_id == Site.id)
            .where(Patient.id.in_(visible_patients(me))).distinct().order_by(Site.code)
        ).scalars().all()  # fmt: skip
    return page(
        request, "patients.html", me=me, rows=rows, pages=pages, sites=sites, filters=filters,
        missing_filters=MISSING, study_drugs=[drug.value for drug in STUDY_DRUGS], counts=counts,
        checks=latest_checks(request), statuses=statuses,
    )  # fmt: skip


@dataclass(frozen=True)
class Moment:
    day: date
    what: str
    link: str  # the section of the page holding the record


def _index_date(records: dict[str, list[dict]]) -> date | None:
    starts = [r["start_date"] for r in records["treatments"] if r["drug"] in STUDY_DRUGS and r["deleted_at"] is None]
    return min(starts, default=None)


def timeline(p: Patient, records: dict[str, list[dict]]) -> list[Moment]:
    """The patient's course in date order: diagnoses, antibody results, treatments, adverse events, outcome."""
    moments = [
        Moment(day, what, "#patient")
        for day, what in (
            (p.dm_diagnosis_date, "dermatomyositis diagnosed"),
            (p.resp_symptom_onset_date, "respiratory symptoms began"),
            (p.ild_diagnosis_date, "ILD diagnosed"),
            (p.ild_worsening_date, "ILD worsened"),
        )
        if day is not None
    ]
    live = {name: [r for r in rows if r["deleted_at"] is None] for name, rows in records.items()}
    for r in live["antibody_tests"]:
        result = " ".join(show(v) for v in (r["grade"], r["value"], r["unit"]) if v is not None)
        moments.append(Moment(r["sample_date"], f"{show(r['antibody'])} {result}", "#antibody_tests"))
    for r in live["treatments"]:
        moments.append(Moment(r["start_date"], f"{show(r['drug'])} started", "#treatments"))
        if r["end_date"] is not None:
            why = f" ({show(r['stop_reason'])})" if r["stop_reason"] is not None else ""
            moments.append(Moment(r["end_date"], f"{show(r['drug'])} stopped{why}", "#treatments"))
    for r in live["adverse_events"]:
        moments.append(Moment(r["onset_date"], f"{show(r['term'])}, grade {r['ctcae_grade']}", "#adverse_events"))
    for r in live["follow_up"]:
        if r["death_date"] is not None:
            cause = f" ({show(r['death_cause'])})" if r["death_cause"] is not None else ""
            moments.append(Moment(r["death_date"], f"died{cause}", "#follow_up"))
        else:
            moments.append(Moment(r["last_contact_date"], f"last contact, {show(r['vital_status'])}", "#follow_up"))
    return sorted(moments, key=lambda m: m.day)


@router.get("/patients/{study_id}", response_class=HTMLResponse)
def patient_page(request: Request, me: Signed, study_id: str) -> HTMLResponse:
    found = find_patient(engine_of(request), me, study_id)
    with engine_of(request).connect() as connection:
        records = {}
        for name, kind in RECORD_SHEETS.items():
            table = SHEETS_BY_NAME[name].table
            rows = connection.execute(
                sa.select(table).where(table.c.patient_id == found.id).order_by(table.c[kind.dated])
            ).mappings().all()  # fmt: skip
            records[name] = [dict(row) for row in rows]
        now = check_patients(connection, [found.id], request.app.state.config, date.today())
    findings = with_reviews(now, load_reviews(engine_of(request))).to_dict("records")
    asked = workflow.patient_queries(engine_of(request), found.study_id)
    return page(
        request, "patient.html", me=me, patient=found, records=records, sheets=SHEETS_BY_NAME, kinds=RECORD_SHEETS,
        features=CLINICAL_FEATURES, timeline=timeline(found.record, records), index_date=_index_date(records),
        findings=findings, sheet_of_table=SHEET_OF_TABLE,
        history=audit_history(engine_of(request), study_id),
        queries=asked.rows, unclosed=asked.unclosed, query_targets=workflow.query_targets(records),
        query_tables=workflow.QUERY_TABLES, query_fields=workflow.QUERY_FIELDS,
        can_answer=me.role in workflow.ANSWERERS, state=workflow.record_status(engine_of(request), found.study_id),
        meaning=MEANING.format(study_id=found.study_id),
    )  # fmt: skip
