"""The web application for research coordinators and data managers (FastAPI, server-rendered).

Sign-in and sessions live here; the patient list and page in :mod:`registry.web.patients`,
the entry forms in :mod:`registry.web.records`, the data-quality and report pages in
:mod:`registry.web.results`, the header policy of every response in :mod:`registry.web.headers`,
the error pages in :mod:`registry.web.errors`. Sessions are kept in the database (:mod:`registry.web.sessions`);
their cookie holds a random token alone (HttpOnly, SameSite=Strict, Secure when served
over HTTPS). Every form carries a CSRF token, an HMAC of the session's token, or before
sign-in of a random visitor cookie's, with the server's key. The one-shot messages shown
after a change travel in a separate signed cookie that holds nothing else.
"""

import json
import math
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

import sqlalchemy as sa
from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.middleware.sessions import SessionMiddleware

import registry
from registry.accounts import password_matches, record_event, typed_name
from registry.codes import SignInOutcome
from registry.config import Config
from registry.entry import shown, shown_field
from registry.models import Account
from registry.resources import resource_dir
from registry.tokens import RateLimit
from registry.web import admin, api, errors, patients, records, results, sessions, workflow
from registry.web.headers import Guard
from registry.web.pages import Signed, client_address, local_path, page
from registry.web.security import VISITOR_COOKIE, CsrfToken, check_csrf, claim_sign_in, sign_in_succeeded
from registry.web.sessions import SESSION_COOKIE, SessionLimits

#: A one-shot message lives at most this long in its cookie.
FLASH_SECONDS = 60


def create_app(
    engine: sa.Engine,
    *,
    secret_key: str | None = None,
    https: bool = False,
    config: Config | None = None,
    session_limits: SessionLimits | None = None,
    api_rate_limit: RateLimit | None = None,
) -> FastAPI:
    """The application over ``engine``. Without ``secret_key`` forms opened before a restart must be reloaded."""
    app = FastAPI(title="MDA5-ILD registry", docs_url=None, redoc_url=None, openapi_url=None)
    secret_key = secret_key or secrets.token_urlsafe(32)
    app.add_middleware(Guard, https=https, failed=errors.failed)  # inside the sessions: its error page is a page
    app.add_middleware(
        SessionMiddleware,  # request.session: the one-shot message after a change, nothing else
        secret_key=secret_key,
        session_cookie="registry_flash",
        max_age=FLASH_SECONDS,
        same_site="strict",
        https_only=https,
    )
    template_dir = Path(resource_dir("templates", "_templates", "report.html")) / "web"
    templates = Jinja2Templates(directory=template_dir)
    stylesheet = (template_dir / "registry.css").read_text()
    script = (template_dir / "registry.js").read_text()
    templates.env.globals["version"] = registry.__version__
    templates.env.filters["shown"] = shown
    templates.env.filters["field"] = shown_field
    templates.env.filters["urlpart"] = lambda value: quote(str(value), safe="")  # a path segment: "/" quoted too
    app.state.engine = engine
    app.state.templates = templates
    app.state.config = config or Config()
    app.state.latest_checks = None
    app.state.site_checks = {}  # (coordinator, their sites) -> their latest run of those sites
    app.state.secret_key, app.state.https = secret_key, https
    app.state.session_limits = session_limits or SessionLimits()

    @app.middleware("http")
    async def _visitor(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        """A random visitor token for every browser, which the CSRF token of a not-signed-in form is bound to."""
        known = request.cookies.get(VISITOR_COOKIE)
        request.state.visitor = known or secrets.token_urlsafe(32)
        response = await call_next(request)
        if not known:
            response.set_cookie(VISITOR_COOKIE, request.state.visitor, httponly=True, samesite="strict", secure=https,
                                path="/")  # fmt: skip
        return response

    errors.install(app)

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = "/patients") -> HTMLResponse:
        return page(request, "login.html", next=next, error=None, username="")

    @app.post("/login", response_class=HTMLResponse, response_model=None)
    def login(
        request: Request,
        username: Annotated[str, Form()],
        password: Annotated[str, Form()],
        csrf: CsrfToken = None,
        next: Annotated[str, Form()] = "/patients",
        typed: Annotated[str, Form()] = "",  # what a form held when its session ended (registry.web.errors)
    ) -> Response:
        check_csrf(request, csrf)
        client, name = client_address(request), typed_name(username)
        wait = claim_sign_in(engine, client, name)
        if wait:
            with engine.begin() as connection:
                record_event(connection, name, SignInOutcome.THROTTLED, client=client)
            seconds = math.ceil(wait.total_seconds())
            message = f"Too many failed sign-ins from this address: try again in {seconds} s."
            response = page(request, "login.html", 429, next=next, error=message, username=username, typed=typed)
            response.headers["Retry-After"] = str(seconds)
            return response
        row = None
        if "\x00" not in username:  # no name holds one (and PostgreSQL refuses to compare with it)
            with engine.connect() as connection:
                row = connection.execute(sa.select(Account).where(Account.username == username)).mappings().first()
        found = Account(**row) if row else None
        if not password_matches(found, password) or not found.active:  # an unknown name costs the same Argon2 work
            with engine.begin() as connection:
                record_event(connection, name, SignInOutcome.FAILURE, account_id=found and found.id, client=client)
            return page(request, "login.html", 401, next=next, error="Wrong user name or password.",
                        username=username, typed=typed)  # fmt: skip
        sign_in_succeeded(engine, client, name)
        with engine.begin() as connection:
            if old := request.cookies.get(SESSION_COOKIE):
                sessions.end(connection, old, SignInOutcome.SIGNED_OUT)  # a new session on sign-in: no fixation
            record_event(connection, name, SignInOutcome.SUCCESS, account_id=found.id, client=client)
        target = local_path(next, "/patients")
        resume = json.dumps({"path": target, "values": typed}) if typed else None  # kept with the new session
        response = RedirectResponse(target, status_code=303)
        sessions.set_cookie(request, response, sessions.start(engine, found.id, resume))
        return response

    @app.post("/logout")
    def logout(request: Request, csrf: CsrfToken = None) -> Response:
        check_csrf(request, csrf)
        with engine.begin() as connection:
            token = request.cookies.get(SESSION_COOKIE, "")
            if (account_id := sessions.end(connection, token, SignInOutcome.SIGNED_OUT)) is not None:
                username = connection.execute(sa.select(Account.username).where(Account.id == account_id)).scalar_one()
                record_event(connection, username, SignInOutcome.SIGNED_OUT, account_id=account_id,
                             client=client_address(request))  # fmt: skip
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @app.get("/registry.css", include_in_schema=False)
    def _stylesheet() -> Response:
        return Response(stylesheet, media_type="text/css", headers={"Cache-Control": "max-age=3600"})  # no patient data

    @app.get("/registry.js", include_in_schema=False)
    def _script() -> Response:  # no patient data either
        return Response(script, media_type="text/javascript", headers={"Cache-Control": "max-age=3600"})

    @app.get("/")
    def home(_: Signed) -> Response:
        return RedirectResponse("/patients", status_code=303)

    app.include_router(workflow.router)  # before records: /patients/{study_id}/queries is no action of theirs
    app.include_router(records.router)  # before patients: /patients/new is a page, not a patient
    app.include_router(patients.router)
    app.include_router(results.router)
    app.include_router(admin.router)
    api.install(app, api_rate_limit or RateLimit())

    return app
