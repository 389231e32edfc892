"""Personal API tokens: created by an administrator, shown once, stored as a hash, expiring, revocable, every use
logged and counted against a rate limit.

A token stands for a person or a script with a role and, for a coordinator or investigator, sites: the API scopes
what it reads and writes exactly as the forms scope an account of that role. Its changes are audited under
``token:NAME``. A token is 256 random bits, so its SHA-256 is what is stored (as a session's is).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, select

from registry.accounts import AccountError, sites_for_role
from registry.codes import SITE_ROLES, Role
from registry.db import as_utc
from registry.models import ApiToken, ApiTokenSite, ApiTokenUse, Patient, Site
from registry.settings import API_REQUESTS, API_WINDOW_SECONDS, TOKEN_DAYS, TOKEN_MOST_DAYS

PREFIX = "mda5_"
NAME_LENGTH = ApiToken.__table__.c.name.type.length
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]*")
NAME_RULE = "lower-case letters a-z, digits, '.', '_' and '-', starting with a letter or digit"
PATH_LENGTH = ApiTokenUse.__table__.c.path.type.length


class TokenError(AccountError):
    """A token that cannot be created or revoked as asked."""


@dataclass(frozen=True)
class RateLimit:
    """At most ``requests`` per token in any ``seconds``: a script in a loop cannot hold the registry."""

    requests: int = API_REQUESTS
    seconds: int = API_WINDOW_SECONDS


@dataclass(frozen=True)
class Caller:
    """Who makes an API request: a standing token's holder, role and sites."""

    token_id: int
    name: str
    role: Role
    site_ids: tuple[int, ...]

    @property
    def actor(self) -> str:
        """The name the audit trail gives the changes made with this token."""
        return f"token:{self.name}"

    def visible_patients(self) -> sa.Select:
        """The ids of the patients the token may read (as :func:`registry.web.security.visible_patients`)."""
        query = sa.select(Patient.id)
        return query.where(Patient.site_id.in_(self.site_ids)) if self.role in SITE_ROLES else query


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(
    session: Session, name: str, role: Role, sites: list[str], days: int = TOKEN_DAYS, now: datetime | None = None
) -> tuple[ApiToken, str]:
    """A new token; returns it with the secret, which is shown once and never stored."""
    if len(name) > NAME_LENGTH or not NAME_PATTERN.fullmatch(name):
        raise TokenError(f"{name!r} is not a usable token name: {NAME_RULE}, at most {NAME_LENGTH} characters")
    if not 1 <= days <= TOKEN_MOST_DAYS:
        raise TokenError(f"a token lasts 1 to {TOKEN_MOST_DAYS} days, not {days}")
    if session.exec(select(ApiToken).where(ApiToken.name == name)).first() is not None:
        raise TokenError(f"a token named {name!r} exists already (tokens are never reused: choose another name)")
    chosen = sites_for_role(session, role, sites)
    now = now or datetime.now(UTC)
    secret = PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(name=name, token_hash=token_hash(secret), role=role, created_at=now,
                     created_by=session.info["actor"], expires_at=now + timedelta(days=days))  # fmt: skip
    session.add(token)
    session.flush()
    session.add_all(ApiTokenSite(token_id=token.id, site_id=site.id) for site in chosen)
    return token, secret


def revoke_token(session: Session, name: str, now: datetime | None = None) -> ApiToken:
    token = session.exec(select(ApiToken).where(ApiToken.name == name)).first()
    if token is None:
        raise TokenError(f"no token named {name!r} (registry token list)")
    if token.revoked_at is not None:
        raise TokenError(f"the token {name!r} was revoked already")
    token.revoked_at = now or datetime.now(UTC)
    return token


def list_tokens(connection: sa.Connection) -> list[dict[str, Any]]:
    """Every token (never its secret), newest first, with its sites and its last use."""
    sites = {}
    for token_id, code in connection.execute(
        sa.select(ApiTokenSite.token_id, Site.code).join(Site, Site.id == ApiTokenSite.site_id).order_by(Site.code)
    ):
        sites.setdefault(token_id, []).append(code)
    last_use = sa.select(sa.func.max(ApiTokenUse.at)).where(ApiTokenUse.token_id == ApiToken.id).scalar_subquery()
    rows = connection.execute(
        sa.select(ApiToken.id, ApiToken.name, ApiToken.role, ApiToken.created_at, ApiToken.created_by,
                  ApiToken.expires_at, ApiToken.revoked_at, last_use.label("last_used_at")).order_by(ApiToken.id.desc())
    ).mappings()  # fmt: skip
    return [{**row, "sites": sites.get(row["id"], [])} for row in rows]


def authenticate(connection: sa.Connection, secret: str, now: datetime) -> Caller | tuple[int | None, str]:
    """The caller a presented token stands for; else (the token's id if it is one of ours, why it is refused)."""
    row = connection.execute(sa.select(ApiToken).where(ApiToken.token_hash == token_hash(secret))).mappings().first()
    if row is None:
        return None, "unknown token"
    if row["revoked_at"] is not None:
        return row["id"], "the token was revoked"
    if as_utc(row["expires_at"]) <= now:
        return row["id"], "the token has expired"
    sites = connection.execute(sa.select(ApiTokenSite.site_id).where(ApiTokenSite.token_id == row["id"])).scalars()
    return Caller(row["id"], row["name"], Role(row["role"]), tuple(sites))


def claim_use(
    connection: sa.Connection, token_id: int, request: tuple[str, str, str | None], now: datetime, limit: RateLimit
) -> tuple[int, bool]:
    """Log a request (method, path, client) of a standing token, as being answered, and say whether the rate limit
    allows it; returns (the use's id, allowed). Serialised per token (PostgreSQL: the token's row locked; SQLite: the
    insert takes the database's write lock first), so parallel requests cannot all see the same count. A refused
    request (429) does not count: a client that waits is answered again."""
    if connection.dialect.name == "postgresql":
        connection.execute(sa.select(ApiToken.id).where(ApiToken.id == token_id).with_for_update())
    use_id = connection.execute(_use(token_id, request, now, 0).returning(ApiTokenUse.id)).scalar_one()
    since = now - timedelta(seconds=limit.seconds)
    used = connection.execute(
        sa.select(sa.func.count()).select_from(ApiTokenUse).where(
            ApiTokenUse.token_id == token_id, ApiTokenUse.at > since, ApiTokenUse.id != use_id,
            ApiTokenUse.status != 429)
    ).scalar_one()  # fmt: skip
    if used >= limit.requests:
        finish_use(connection, use_id, 429)
        return use_id, False
    return use_id, True


def log_refusal(connection: sa.Connection, token_id: int, request: tuple[str, str, str | None], now: datetime) -> None:
    """Log a request made with a token that was refused (revoked, expired)."""
    connection.execute(_use(token_id, request, now, 401))


def _use(token_id: int, request: tuple[str, str, str | None], now: datetime, status: int) -> sa.Insert:
    method, path, client = request
    return sa.insert(ApiTokenUse).values(token_id=token_id, at=now, method=method[:8], path=path[:PATH_LENGTH],
                                         status=status, client_address=client)  # fmt: skip


def finish_use(connection: sa.Connection, use_id: int, status: int) -> None:
    """The status a logged request was answered with."""
    connection.execute(sa.update(ApiTokenUse).where(ApiTokenUse.id == use_id).values(status=status))
