"""Accounts of the web application: Argon2id password hashes, roles, the sites a coordinator serves.

Passwords are hashed with Argon2id (argon2-cffi's defaults, RFC 9106's recommended
parameters) and never stored or logged; the audit trail records that a hash changed,
not the hash. Accounts are disabled, never deleted, so the audit trail keeps naming
real accounts. A new password, a new role or sites, and disabling end every session
of the account (the web application checks its session on every request) and are
recorded among the sign-in events.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlmodel import Session, select

from registry.codes import SITE_ROLES, Role, SignInOutcome
from registry.models import Account, AccountSite, SignInEvent, Site, WebSession

#: Shortest password accepted (NIST SP 800-63B asks for at least 8; a registry of health data asks for more).
MIN_PASSWORD_LENGTH = 12
_HASHER = PasswordHasher()
USERNAME_LENGTH = Account.__table__.c.username.type.length
#: Sign-in names: lower-case ASCII letters, digits, '.', '_', '-' (no markup, no look-alike or invisible characters).
USERNAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]*")
USERNAME_RULE = "lower-case letters a-z, digits, '.', '_' and '-', starting with a letter or digit"
COMMON_PASSWORDS_FILE = Path(__file__).with_name("common_passwords.txt")


class AccountError(ValueError):
    """The account cannot be created or changed as asked; the message says why."""


@cache
def common_passwords() -> frozenset[str]:
    """The shipped list of common passwords (lower-cased), read once."""
    lines = COMMON_PASSWORDS_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip().lower() for line in lines if line.strip() and not line.startswith("#"))


def hash_password(password: str, username: str) -> str:
    """The Argon2id hash of ``password``, if it is long enough and not trivially guessed for ``username``."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    if not password.strip():
        raise AccountError("the password must not be only spaces")
    if len(set(password)) == 1:
        raise AccountError("the password must not be one character repeated")
    if username.lower() in password.lower():
        raise AccountError("the password must not contain the user name")
    if password.lower() in common_passwords():
        raise AccountError("the password is one of the most common passwords: choose another")
    return _HASHER.hash(password)


@cache
def _dummy_hash() -> str:
    """A hash made once with the same parameters, verified for unknown names so they cost what real ones do."""
    return _HASHER.hash("no account has this password")


def password_matches(account: Account | None, password: str) -> bool:
    """Whether ``password`` is the account's; without an account, the same Argon2 work and ``False``."""
    try:
        return _HASHER.verify(account.password_hash if account else _dummy_hash(), password) and account is not None
    except (VerificationError, InvalidHashError):
        return False


def find(session: Session, username: str) -> Account:
    account = session.exec(select(Account).where(Account.username == username)).first()
    if account is None:
        raise AccountError(f"no account named {username!r}")
    return account


def sites_for_role(session: Session, role: Role, codes: Sequence[str]) -> list[Site]:
    """The sites ``codes`` names, for an account (or token) of ``role``: a coordinator or investigator serves at least
    one, the other roles none (they see every site); :class:`AccountError` otherwise, or for an unknown site."""
    _check_sites(role, codes)
    found = {site.code: site for site in session.exec(select(Site).where(Site.code.in_(codes)))}
    unknown = [code for code in codes if code not in found]
    if unknown:
        raise AccountError(f"unknown site(s) {', '.join(unknown)}: register them first (registry site add)")
    return [found[code] for code in codes]


def create_account(session: Session, username: str, password: str, role: Role, sites: Sequence[str] = ()) -> Account:
    """A new active account; a coordinator or investigator must serve at least one site, other roles none."""
    if len(username) > USERNAME_LENGTH:
        raise AccountError(f"a sign-in name has at most {USERNAME_LENGTH} characters")
    if not USERNAME_PATTERN.fullmatch(username):
        raise AccountError(f"{username!r} is not a usable sign-in name: {USERNAME_RULE}")
    if session.exec(select(Account).where(Account.username == username)).first() is not None:
        raise AccountError(f"an account named {username!r} exists already")
    chosen = sites_for_role(session, role, sites)
    account = Account(username=username, password_hash=hash_password(password, username), role=role,
                      created_at=datetime.now(UTC))  # fmt: skip
    session.add(account)
    session.flush()
    for site in chosen:
        session.add(AccountSite(account_id=account.id, site_id=site.id))
    return account


def _check_sites(role: Role, sites: Sequence[str]) -> None:
    if role in SITE_ROLES and not sites:
        raise AccountError(f"a{'n' * role.value.startswith('i')} {role.value} needs at least one site (--site CODE)")
    if role not in SITE_ROLES and sites:
        raise AccountError(f"only coordinators and investigators are tied to sites; the {role.value} role sees "
                           "every site")  # fmt: skip


def typed_name(username: str) -> str:
    """A user name as typed at sign-in, as the sign-in log and throttle keep it: trimmed, lower-cased, no NUL
    (PostgreSQL text refuses it), cut to the column's width."""
    return username.replace("\x00", "").strip().lower()[:USERNAME_LENGTH]


def record_event(
    connection: sa.Connection,
    username: str,
    outcome: SignInOutcome,
    *,
    account_id: int | None = None,
    client: str | None = None,
    actor: str | None = None,
) -> None:
    """One row of the sign-in log."""
    connection.execute(sa.insert(SignInEvent).values(
        at=datetime.now(UTC), username=typed_name(username), account_id=account_id,
        client_address=client, outcome=outcome, actor=actor,
    ))  # fmt: skip


def end_sessions(session: Session, account: Account, why: SignInOutcome, client: str | None = None) -> None:
    """End every session of ``account`` and record why, in the transaction of the change that calls for it."""
    connection = session.connection()
    connection.execute(
        sa.update(WebSession)
        .where(WebSession.account_id == account.id, WebSession.ended_at.is_(None))
        .values(ended_at=datetime.now(UTC), end_reason=why)
    )
    actor = session.info.get("actor")
    record_event(connection, account.username, why, account_id=account.id, client=client, actor=actor)


def set_password(session: Session, username: str, password: str, client: str | None = None) -> None:
    account = find(session, username)
    account.password_hash = hash_password(password, username)
    end_sessions(session, account, SignInOutcome.PASSWORD_CHANGED, client)


def set_role(session: Session, username: str, role: Role, sites: Sequence[str] = (), client: str | None = None) -> None:
    """Give the account ``role`` and exactly ``sites`` (a coordinator or investigator at least one, others none)."""
    account = find(session, username)
    chosen = sites_for_role(session, role, sites)
    account.role = role
    for link in session.exec(select(AccountSite).where(AccountSite.account_id == account.id)):
        if link.site_id not in {site.id for site in chosen}:
            session.delete(link)
    kept = set(session.exec(select(AccountSite.site_id).where(AccountSite.account_id == account.id)))
    session.add_all(AccountSite(account_id=account.id, site_id=site.id) for site in chosen if site.id not in kept)
    end_sessions(session, account, SignInOutcome.ROLE_CHANGED, client)


def disable(session: Session, username: str, client: str | None = None) -> None:
    account = find(session, username)
    if not account.active:
        raise AccountError(f"{username!r} is disabled already")
    account.active = False
    end_sessions(session, account, SignInOutcome.DISABLED, client)


def site_codes(connection: sa.Connection, account_id: int) -> list[str]:
    rows = connection.execute(
        sa.select(Site.code)
        .join(AccountSite, AccountSite.site_id == Site.id)
        .where(AccountSite.account_id == account_id)
    )
    return sorted(code for (code,) in rows)


def sign_in_events(connection: sa.Connection, username: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The newest ``limit`` sign-in events, newest first, of one user name (as typed) or of all."""
    query = sa.select(SignInEvent.at, SignInEvent.username, SignInEvent.outcome, SignInEvent.client_address,
                      SignInEvent.actor).order_by(SignInEvent.id.desc()).limit(limit)  # fmt: skip
    if username is not None:
        query = query.where(SignInEvent.username == typed_name(username))
    return [dict(row) for row in connection.execute(query).mappings()]
