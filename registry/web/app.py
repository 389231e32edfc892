"""The web application for research coordinators and data managers (FastAPI, server-rendered).

Sign-in and sessions live here; the patient list and page in :mod:`registry.web.patients`,
the entry forms in :mod:`registry.web.records`, the data-quality and report pages in
:mod:`registry.web.results`, the header policy of every response in :mod:`registry.web.headers`,
the error pages in :mod:`registry.web.errors`. Sessions are signed cookies (HttpOnly,
SameSite=Strict, Secure when served over HTTPS); every form carries a CSRF token.
"""

import secrets
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

import sqlalchemy as sa
from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.middleware.sessions import SessionMiddleware

import registry
from registry.accounts import password_matches
from registry.config import Config
from registry.entry import shown
from registry.models import Account
from registry.resources import resource_dir
from registry.web import admin, errors, patients, records, results
from registry.web.headers import Guard
from registry.web.pages import TYPED, Signed, local_path, page
from registry.web.security import Throttle, check_csrf

SESSION_SECONDS = 8 * 60 * 60


def create_app(
    engine: sa.Engine, *, secret_key: str | None = None, https: bool = False, config: Config | None = None
) -> FastAPI:
    """The application over ``engine``. Without ``secret_key`` sessions last as long as the process."""
    app = FastAPI(title="MDA5-ILD registry", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(Guard, https=https, failed=errors.failed)  # inside the sessions: its error page is a page
    app.add_middleware(
        SessionMiddleware,
        secret_key=secret_key or secrets.token_urlsafe(32),
        session_cookie="registry_session",
        max_age=SESSION_SECONDS,
        same_site="strict",
        https_only=https,
    )
    template_dir = Path(resource_dir("templates", "_templates", "report.html")) / "web"
    templates = Jinja2Templates(directory=template_dir)
    stylesheet = (template_dir / "registry.css").read_text()
    templates.env.globals["version"] = registry.__version__
    templates.env.filters["shown"] = shown
    templates.env.filters["urlpart"] = lambda value: quote(str(value), safe="")  # a path segment: "/" quoted too
    app.state.engine = engine
    app.state.templates = templates
    app.state.config = config or Config()
    app.state.latest_checks = None
    throttle = Throttle()

    errors.install(app)

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
        typed: Annotated[str, Form()] = "",  # what a form held when its session ended (registry.web.errors)
    ) -> Response:
        check_csrf(request, csrf)
        if throttle.blocked(username):
            message = "Too many failed sign-ins for this name: wait 15 minutes, or ask an administrator."
            return page(request, "login.html", 429, next=next, error=message, username=username, typed=typed)
        with engine.connect() as connection:
            row = connection.execute(sa.select(Account).where(Account.username == username)).mappings().first()
        found = Account(**row) if row else None
        if found is None or not found.active or not password_matches(found, password):
            throttle.failed(username)
            return page(request, "login.html", 401, next=next, error="Wrong user name or password.",
                        username=username, typed=typed)  # fmt: skip
        throttle.succeeded(username)
        request.session.clear()  # a new session on sign-in: no fixation
        request.session["account_id"] = found.id
        if typed:
            request.session[TYPED] = {"path": local_path(next, "/patients"), "values": typed}
        return RedirectResponse(local_path(next, "/patients"), status_code=303)

    @app.post("/logout")
    def logout(request: Request, csrf: Annotated[str | None, Form(alias="csrf_token")] = None) -> Response:
        check_csrf(request, csrf)
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    @app.get("/registry.css", include_in_schema=False)
    def _stylesheet() -> Response:
        return Response(stylesheet, media_type="text/css", headers={"Cache-Control": "max-age=3600"})  # no patient data

    @app.get("/")
    def home(_: Signed) -> Response:
        return RedirectResponse("/patients", status_code=303)

    app.include_router(records.router)  # first: /patients/new is a page, not a patient
    app.include_router(patients.router)
    app.include_router(results.router)
    app.include_router(admin.router)

    return app
