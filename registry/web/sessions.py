"""Server-side sessions: the browser holds a random token, the database its SHA-256 and the session's state.

Every request looks its session up: it must exist, not have ended (sign-out, a new
password, a new role or sites, a disabled account end it), belong to an active
account, and be within the idle and the absolute timeout. Nothing readable is in the
cookie, so a copied cookie is worth nothing once the session has ended.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from fastapi import Request
from fastapi.responses import Response

from registry.codes import SignInOutcome
from registry.db import as_utc
from registry.models import Account, WebSession
from registry.settings import ABSOLUTE_TIMEOUT, IDLE_TIMEOUT

SESSION_COOKIE = "registry_session"
#: ``last_seen_at`` is written at most once a minute, not on every request.
TOUCH_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class SessionLimits:
    idle: timedelta = IDLE_TIMEOUT
    absolute: timedelta = ABSOLUTE_TIMEOUT


def token_id(token: str) -> str:
    """What the database keeps of a session token: its SHA-256, so a copy of the table signs no one in."""
    return hashlib.sha256(token.encode()).hexdigest()


def start(engine: sa.Engine, account_id: int, resumed_form: str | None = None) -> str:
    """A new session of ``account_id``; returns the token for the cookie (never stored).

    ``resumed_form``: what a form held when the previous session ended, kept here (on the server, not in a cookie)
    until that form opens again (:func:`take_resumed_form`).
    """
    token, now = secrets.token_urlsafe(32), datetime.now(UTC)
    with engine.begin() as connection:
        connection.execute(sa.insert(WebSession).values(id=token_id(token), account_id=account_id, created_at=now,
                                                        last_seen_at=now, resumed_form=resumed_form))  # fmt: skip
    return token


def take_resumed_form(request: Request) -> str | None:
    """The request's session's resumed form, once: it is cleared as it is read. Asks the database only when
    :func:`signed_in` saw that the session holds one, so opening a form costs no extra query."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token or not getattr(request.state, "resuming", False):
        return None
    session = WebSession.__table__.c
    with request.app.state.engine.begin() as connection:
        resumed = connection.execute(sa.select(session.resumed_form).where(session.id == token_id(token))).scalar()
        if resumed is not None:
            connection.execute(sa.update(WebSession).where(session.id == token_id(token)).values(resumed_form=None))
    return resumed


def end(connection: sa.Connection, token: str, why: SignInOutcome) -> int | None:
    """End the session of ``token`` if it lasts; returns its account's id (None: no such session, or over)."""
    return connection.execute(
        sa.update(WebSession)
        .where(WebSession.id == token_id(token), WebSession.ended_at.is_(None))
        .values(ended_at=datetime.now(UTC), end_reason=why)
        .returning(WebSession.account_id)
    ).scalar()


def signed_in(request: Request) -> Account | None:
    """The active account whose live session the request's cookie names, or None; refreshes the idle clock."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    engine, limits, now = request.app.state.engine, request.app.state.session_limits, datetime.now(UTC)
    with engine.connect() as connection:
        row = connection.execute(
            sa.select(Account, WebSession.created_at.label("began"), WebSession.last_seen_at.label("seen"),
                      WebSession.resumed_form.is_not(None).label("resuming"))
            .join(Account, Account.id == WebSession.account_id)
            .where(WebSession.id == token_id(token), WebSession.ended_at.is_(None))
        ).mappings().first()  # fmt: skip
    if row is None or not row["active"]:
        return None
    last_seen = as_utc(row["seen"])
    if now - last_seen > limits.idle or now - as_utc(row["began"]) > limits.absolute:
        return None
    if now - last_seen > TOUCH_EVERY:
        with engine.begin() as connection:
            connection.execute(sa.update(WebSession).where(WebSession.id == token_id(token)).values(last_seen_at=now))
    request.state.resuming = bool(row["resuming"])  # a form to open again: read (and cleared) only then
    return Account(**{column.name: row[column.name] for column in Account.__table__.columns})


def set_cookie(request: Request, response: Response, token: str) -> None:
    """The session cookie: the token alone; HttpOnly, SameSite=Strict, Secure when served over HTTPS, whole site."""
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict", secure=request.app.state.https,
                        path="/")  # fmt: skip
