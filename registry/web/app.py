"""The web application for research coordinators and data managers (FastAPI, server-rendered).

This first part: sign-in and sign-out, the patient list (search, site filter) and the
patient page (every table's records and the audit history), each scoped to what the
account may read. Sessions are signed cookies (HttpOnly, SameSite=Strict, Secure when
served over HTTPS); every form carries a CSRF token.
"""

import secrets
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.middleware.sessions import SessionMiddleware

import registry
from registry.accounts import password_matches
from registry.audit import audit_history
from registry.models import (
    Account,
    AdverseEvent,
    AntibodyTest,
    FollowUp,
    Hrct,
    LabResult,
    Patient,
    Pft,
    Site,
    Treatment,
)
from registry.resources import resource_dir
from registry.web.security import Throttle, check_csrf, csrf_token, visible_patients

#: The records shown on a patient's page, in entry order, each sorted by its date.
PATIENT_RECORDS = {
    "Antibody tests": (AntibodyTest, "sample_date"),
    "Laboratory results": (LabResult, "sample_date"),
    "Pulmonary function tests": (Pft, "test_date"),
    "HRCT": (Hrct, "scan_date"),
    "Treatments": (Treatment, "start_date"),
    "Adverse events": (AdverseEvent, "onset_date"),
    "Follow-up": (FollowUp, "last_contact_date"),
}
SESSION_SECONDS = 8 * 60 * 60


class NotSignedIn(Exception):
    """Answered with a redirect to the sign-in page."""


def create_app(engine: sa.Engine, *, secret_key: str | None = None, https: bool = False) -> FastAPI:
    """The application over ``engine``. Without ``secret_key`` sessions last as long as the process."""
    app = FastAPI(title="MDA5-ILD registry", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(
        SessionMiddleware,
        secret_key=secret_key or secrets.token_urlsafe(32),
        session_cookie="registry_session",
        max_age=SESSION_SECONDS,
        same_site="strict",
        https_only=https,
    )
    templates = Jinja2Templates(directory=Path(resource_dir("templates", "_templates", "report.html")) / "web")
    templates.env.globals["version"] = registry.__version__
    throttle = Throttle()

    @app.exception_handler(NotSignedIn)
    async def _sign_in_first(request: Request, _: NotSignedIn) -> Response:
        return RedirectResponse(f"/login?next={request.url.path}", status_code=303)

    def account(request: Request) -> Account:
        account_id = request.session.get("account_id")
        if account_id is None:
            raise NotSignedIn
        with engine.connect() as connection:
            row = connection.execute(sa.select(Account).where(Account.id == account_id)).mappings().first()
        if row is None or not row["active"]:
            request.session.clear()
            raise NotSignedIn
        return Account(**row)

    Signed = Annotated[Account, Depends(account)]

    def page(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        context |= {"csrf_token": csrf_token(request)}
        return templates.TemplateResponse(request, name, context, status_code=status_code)

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = "/patients") -> HTMLResponse:
        return page(request, "login.html", next=next, error=None, username="")

    @app.post("/login", response_class=HTMLResponse, response_model=None)
    def login(
        request: Request,
        username: Annotated[str, Form()],
        password: Annotated[str, Form()],
        csrf: Annotated[str | None, Form(alias="csrf_token")] = None,
        next: Annotated[str, Form()] = "/patients",
    ) -> Response:
        check_csrf(request, csrf)
        if throttle.blocked(username):
            message = "Too many failed sign-ins for this name: wait 15 minutes, or ask an administrator."
            return page(request, "login.html", 429, next=next, error=message, username=username)
        with engine.connect() as connection:
            row = connection.execute(sa.select(Account).where(Account.username == username)).mappings().first()
        found = Account(**row) if row else None
        if found is None or not found.active or not password_matches(found, password):
            throttle.failed(username)
            return page(request, "login.html", 401, next=next, error="Wrong user name or password.", username=username)
        throttle.succeeded(username)
        request.session.clear()  # a new session on sign-in: no fixation
        request.session["account_id"] = found.id
        target = next if next.startswith("/") and not next.startswith("//") else "/patients"
        return RedirectResponse(target, status_code=303)

    @app.post("/logout")
    def logout(request: Request, csrf: Annotated[str | None, Form(alias="csrf_token")] = None) -> Response:
        check_csrf(request, csrf)
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    @app.get("/")
    def home(_: Signed) -> Response:
        return RedirectResponse("/patients", status_code=303)

    @app.get("/patients", response_class=HTMLResponse)
    def patients(request: Request, me: Signed, q: str = "", site: str = "") -> HTMLResponse:
        query = (
            sa.select(Patient.study_id, Site.code, Patient.sex, Patient.ild_diagnosis_date, Patient.rpild)
            .join(Site, Site.id == Patient.site_id)
            .where(Patient.id.in_(visible_patients(me)))
            .order_by(Patient.study_id)
        )
        if q:
            query = query.where(Patient.study_id.contains(q, autoescape=True))
        if site:
            query = query.where(Site.code == site)
        with engine.connect() as connection:
            rows = connection.execute(query).all()
            sites = connection.execute(
                sa.select(Site.code).join(Patient, Patient.site_id == Site.id)
                .where(Patient.id.in_(visible_patients(me))).distinct().order_by(Site.code)
            ).scalars().all()  # fmt: skip
        return page(request, "patients.html", me=me, rows=rows, q=q, site=site, sites=sites)

    @app.get("/patients/{study_id}", response_class=HTMLResponse)
    def patient(request: Request, me: Signed, study_id: str) -> HTMLResponse:
        with engine.connect() as connection:
            found = connection.execute(
                sa.select(Patient, Site.code.label("site_code")).join(Site, Site.id == Patient.site_id)
                .where(Patient.study_id == study_id, Patient.id.in_(visible_patients(me)))
            ).mappings().first()  # fmt: skip
            if found is None:
                raise HTTPException(status_code=404, detail="No such patient")
            records = {}
            for title, (model, date_column) in PATIENT_RECORDS.items():
                table = model.__table__
                rows = connection.execute(
                    sa.select(table).where(table.c.patient_id == found["id"]).order_by(table.c[date_column])
                ).mappings().all()  # fmt: skip
                columns = [c.name for c in table.columns if c.name not in ("id", "patient_id")]
                records[title] = (columns, [[row[c] for c in columns] for row in rows])
        history = audit_history(engine, study_id)
        return page(request, "patient.html", me=me, patient=found, records=records, history=history)

    @app.exception_handler(404)
    async def _not_found(request: Request, _: Exception) -> HTMLResponse:
        return templates.TemplateResponse(request, "not_found.html", {}, status_code=404)

    return app
