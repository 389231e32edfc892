"""Accounts and sites, for administrators: the web side of ``registry user`` and ``registry site``.

Every change goes through the same library calls as the command line (Argon2id hashes,
a coordinator tied to at least one site, accounts disabled and never deleted) and is
audited with the administrator's name; passwords are never shown or logged. A new
password, role or sites, or disabling, ends every session of the account. The newest
sign-in events are listed below the accounts.
"""

from __future__ import annotations

from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from registry.accounts import AccountError, create_account, disable, set_password, set_role, sign_in_events, site_codes
from registry.audit import audited_session
from registry.codes import Role
from registry.models import Account, Site
from registry.sites import SITE_FIELDS, SiteError, register_site
from registry.web.pages import Signed, client_address, engine_of, page, require
from registry.web.security import CsrfToken, check_csrf

router = APIRouter()
ADMINS = (Role.ADMIN,)
#: Sign-in events on the page (registry user events lists more).
EVENTS_SHOWN = 50
#: What an administrator may not do to their own account (and so lock out the last administrator).
NOT_ONESELF = {"disable": "disable your own account", "role": "change your own role"}
REASONS = {"disable": "account {} disabled", "password": "password of {} changed", "role": "role of {} changed"}


def _admin_page(request: Request, me: Account, status_code: int = 200, **context: object) -> HTMLResponse:
    with engine_of(request).connect() as connection:
        accounts = [
            {**row, "sites": site_codes(connection, row["id"])}
            for row in connection.execute(
                sa.select(Account.id, Account.username, Account.role, Account.active, Account.created_at)
                .order_by(Account.username)
            ).mappings()
        ]  # fmt: skip
        sites = connection.execute(sa.select(Site.code, Site.name, Site.country).order_by(Site.code)).all()
        events = sign_in_events(connection, limit=EVENTS_SHOWN)
    context.setdefault("error", None)
    return page(request, "admin.html", status_code, me=me, accounts=accounts, sites=sites, roles=list(Role),
                site_fields=SITE_FIELDS, events=events, **context)  # fmt: skip


def _done(request: Request, message: str) -> Response:
    request.session["flash"] = message
    return RedirectResponse("/admin", status_code=303)


@router.get("/admin", response_class=HTMLResponse)
def admin(request: Request, me: Signed) -> HTMLResponse:
    require(me, ADMINS)
    return _admin_page(request, me)


@router.post("/admin/accounts", response_model=None)
async def add_account(request: Request, me: Signed) -> Response:
    form = await request.form()
    check_csrf(request, form.get("csrf_token"))
    require(me, ADMINS)
    username, password = str(form.get("username", "")), str(form.get("password", ""))
    sites = [str(code) for code in form.getlist("site")]
    try:
        role = Role(form.get("role"))
        with audited_session(engine_of(request), actor=me.username, reason=f"account {username} created") as session:
            create_account(session, username, password, role, sites)
            session.commit()
    except (AccountError, ValueError) as error:
        message = str(error) if isinstance(error, AccountError) else "choose a role"
        return _admin_page(request, me, 422, error=f"Account not added: {message}.", entered={"username": username})
    return _done(request, f"Account {username} ({role.value}) added.")


@router.post("/admin/accounts/{username}/{action}", response_model=None)
def change_account(
    request: Request,
    me: Signed,
    username: str,
    action: str,
    password: Annotated[str, Form()] = "",
    role: Annotated[str, Form()] = "",
    site: Annotated[list[str] | None, Form()] = None,
    csrf: CsrfToken = None,
) -> Response:
    check_csrf(request, csrf)
    require(me, ADMINS)
    if action not in REASONS:
        raise HTTPException(status_code=404, detail="No such action")
    if action in NOT_ONESELF and username == me.username:
        return _admin_page(request, me, 409, error=f"Not done: you cannot {NOT_ONESELF[action]}.")
    reason, client = REASONS[action].format(username), client_address(request)
    try:
        with audited_session(engine_of(request), actor=me.username, reason=reason) as session:
            if action == "disable":
                disable(session, username, client)
            elif action == "password":
                set_password(session, username, password, client)
            else:
                set_role(session, username, Role(role), site or [], client)
            session.commit()
    except (AccountError, ValueError) as error:
        message = str(error) if isinstance(error, AccountError) else "choose a role"
        return _admin_page(request, me, 422, error=f"Not done: {message}.")
    return _done(request, f"{reason[0].upper()}{reason[1:]}.")


@router.post("/admin/sites", response_model=None)
async def add_site(request: Request, me: Signed) -> Response:
    form = await request.form()
    check_csrf(request, form.get("csrf_token"))
    require(me, ADMINS)
    try:
        code = register_site(engine_of(request), form, actor=me.username)
    except SiteError as error:
        return _admin_page(request, me, 422, error=f"Site not added: {error}.")
    return _done(request, f"Site {code} added.")
