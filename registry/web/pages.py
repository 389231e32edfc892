"""What every page needs: the signed-in account, the role it must have, the patient it may read, the page itself.

The application keeps its engine, templates and configuration in ``app.state``, so the
routers of the other modules reach them through the request and stay plain modules.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode

import pandas as pd
import sqlalchemy as sa
from fastapi import Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from sqlmodel import Session

from registry.codes import SITE_ROLES, Role
from registry.models import Account, AccountSite, Patient, SignInEvent, Site
from registry.quality import CheckRun
from registry.reviews import load_reviews, with_reviews
from registry.sheets import SHEETS
from registry.web.security import csrf_token, visible_patients
from registry.web.sessions import signed_in, take_resumed_form

#: Who may enter and correct data, run the checks and read reports, lock records.
WRITERS = (Role.COORDINATOR, Role.DATA_MANAGER)
READERS_OF_RESULTS = (Role.ANALYST, Role.DATA_MANAGER, Role.ADMIN)
LOCKERS = (Role.DATA_MANAGER,)


@dataclass(frozen=True)
class RecordKind:
    title: str  # the section of the patient page
    noun: str  # one record, in a sentence
    dated: str  # the date the records are sorted by


#: The sheets whose records a patient page lists, in entry order (the patient's own row is shown above them).
RECORD_SHEETS: dict[str, RecordKind] = {
    "antibody_tests": RecordKind("Antibody tests", "antibody test", "sample_date"),
    "labs": RecordKind("Laboratory results", "laboratory result", "sample_date"),
    "pfts": RecordKind("Pulmonary function tests", "pulmonary function test", "test_date"),
    "hrct": RecordKind("HRCT", "HRCT scan", "scan_date"),
    "treatments": RecordKind("Treatments", "treatment", "start_date"),
    "adverse_events": RecordKind("Adverse events", "adverse event", "onset_date"),
    "follow_up": RecordKind("Follow-up", "follow-up record", "last_contact_date"),
}
PATIENT = RecordKind("Patient", "patient", "")
#: The sheet that holds the records of each table, for links from data-quality findings.
SHEET_OF_TABLE = {sheet.table.name: sheet.name for sheet in SHEETS}


class NotSignedIn(Exception):
    """Answered with a redirect to the sign-in page."""


def engine_of(request: Request) -> sa.Engine:
    return request.app.state.engine


CLIENT_LENGTH = SignInEvent.__table__.c.client_address.type.length


def client_address(request: Request) -> str:
    """The address the request came from, as the server saw it (uvicorn takes X-Forwarded-For from a proxy on
    127.0.0.1 only, its FORWARDED_ALLOW_IPS default)."""
    return request.client.host[:CLIENT_LENGTH] if request.client else "unknown"


def account(request: Request) -> Account:
    """The active account of the request's live session (checked in the database); otherwise :class:`NotSignedIn`."""
    found = signed_in(request)
    if found is None:
        raise NotSignedIn
    return found


Signed = Annotated[Account, Depends(account)]


def require(me: Account, roles: tuple[Role, ...]) -> None:
    """403 unless ``me`` has one of ``roles`` (what a role may not do is forbidden, not hidden)."""
    if me.role not in roles:
        raise HTTPException(status_code=403, detail=f"Your role ({me.role.value}) may not do this.")


def resumed(request: Request) -> dict[str, str] | None:
    """What was typed into the form at this address before the session ended, once; None if nothing was."""
    text = take_resumed_form(request)
    try:
        typed = json.loads(text) if text else {}
        values = json.loads(typed["values"]) if typed.get("path") == request.url.path else None
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(values, dict) or not all(isinstance(value, str) for value in values.values()):
        return None
    return values


def local_path(target: str, default: str) -> str:
    """``target`` if it is a path on this site, else ``default``: a form never redirects elsewhere."""
    local = target.startswith("/") and not target.startswith("//") and "\\" not in target
    return target if local else default


#: Rows of a long list (patients, findings) on one page: 100,000 patients would be a 20 MB page (REDCap pages its
#: record lists too).
PAGE_SIZE = 100
#: The ``page`` query parameter of a long list: 1, 2, ...
PageNumber = Annotated[int, Query(alias="page", ge=1)]


@dataclass(frozen=True)
class Pages:
    """Where one page of a list stands among all the rows its filters match."""

    total: int
    number: int  # 1, 2, ...
    count: int  # pages in all (1 for an empty list)
    size: int
    links: dict[str, str]  # "previous" / "next": the list's address for that page, filters kept

    @property
    def first(self) -> int:  # the position (1, 2, ...) of the page's first row
        return min(self.total, (self.number - 1) * self.size + 1)

    @property
    def last(self) -> int:
        return min(self.total, self.number * self.size)


def paged(total: int, wanted: int, path: str, filters: dict[str, str]) -> Pages:
    """The page numbered ``wanted`` of a list at ``path`` (the last page if there are fewer), with links to its
    neighbours that keep the list's ``filters``."""
    count = max(1, -(-total // PAGE_SIZE))
    number = min(wanted, count)
    kept = {name: value for name, value in filters.items() if value}
    neighbours = {"previous": number - 1, "next": number + 1}
    links = {name: f"{path}?{urlencode({**kept, 'page': n})}" for name, n in neighbours.items() if 1 <= n <= count}
    return Pages(total, number, count, PAGE_SIZE, links)


def page(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    context |= {
        "csrf_token": csrf_token(request),
        "flash": request.session.pop("flash", None),
        "can_write": context.get("me") is not None and context["me"].role in WRITERS,
        "can_lock": context.get("me") is not None and context["me"].role in LOCKERS,
        "can_read_results": context.get("me") is not None and context["me"].role in READERS_OF_RESULTS,
    }
    context.setdefault("me", None)
    return request.app.state.templates.TemplateResponse(request, name, context, status_code=status_code)


@dataclass(frozen=True)
class FoundPatient:
    record: Patient
    site_code: str

    @property
    def id(self) -> int:
        return self.record.id

    @property
    def study_id(self) -> str:
        return self.record.study_id


def find_patient(engine: sa.Engine, me: Account, study_id: str) -> FoundPatient:
    """The patient ``study_id`` with its site code, if ``me`` may read them; 404 otherwise (absent or not theirs)."""
    if "\x00" in study_id:  # no study_id holds one (and PostgreSQL refuses to compare with it)
        raise HTTPException(status_code=404, detail="No such patient")
    with Session(engine) as session:
        found = session.execute(
            sa.select(Patient, Site.code)
            .join(Site, Site.id == Patient.site_id)
            .where(Patient.study_id == study_id, Patient.id.in_(visible_patients(me)))
        ).first()
    if found is None:
        raise HTTPException(status_code=404, detail="No such patient")
    return FoundPatient(*found)


def entry_sites(connection: sa.Connection, me: Account) -> list[str]:
    """The site codes ``me`` may work on: a coordinator's (or investigator's) own, every site for the other roles."""
    own = account_sites(connection, me)
    return own if own is not None else list(connection.execute(sa.select(Site.code).order_by(Site.code)).scalars())


def account_sites(connection: sa.Connection, me: Account) -> list[str] | None:
    """The site codes a site-tied account (a coordinator, an investigator) serves; None for the roles that read every
    site (the scope the query and sign-off functions take)."""
    if me.role not in SITE_ROLES:
        return None
    return list(
        connection.execute(
            sa.select(Site.code).join(AccountSite, AccountSite.site_id == Site.id)
            .where(AccountSite.account_id == me.id).order_by(Site.code)
        ).scalars()
    )  # fmt: skip


@dataclass
class LatestChecks:
    """The newest data-quality run of this process: the findings the pages show, when and by whom it ran."""

    run: CheckRun
    ran_at: datetime
    ran_by: str

    def findings(self, engine: sa.Engine) -> pd.DataFrame:
        """The run's findings with the reviews that answer them now (reviews change between runs)."""
        return with_reviews(self.run.findings, load_reviews(engine))


def latest_checks(request: Request) -> LatestChecks | None:
    return request.app.state.latest_checks
