"""Accounts of the web application: Argon2id password hashes, roles, the sites a coordinator serves.

Passwords are hashed with Argon2id (argon2-cffi's defaults, RFC 9106's recommended
parameters) and never stored or logged; the audit trail records that a hash changed,
not the hash. Accounts are disabled, never deleted, so the audit trail keeps naming
real accounts.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlmodel import Session, select

from registry.codes import Role
from registry.models import Account, AccountSite, Site

#: Shortest password accepted (NIST SP 800-63B asks for at least 8; a registry of health data asks for more).
MIN_PASSWORD_LENGTH = 12
_HASHER = PasswordHasher()
USERNAME_LENGTH = Account.__table__.c.username.type.length


class AccountError(ValueError):
    """The account cannot be created or changed as asked; the message says why."""


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    return _HASHER.hash(password)


def password_matches(account: Account, password: str) -> bool:
    try:
        return _HASHER.verify(account.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def find(session: Session, username: str) -> Account:
    account = session.exec(select(Account).where(Account.username == username)).first()
    if account is None:
        raise AccountError(f"no account named {username!r}")
    return account


def _sites(session: Session, codes: Sequence[str]) -> list[Site]:
    found = {site.code: site for site in session.exec(select(Site).where(Site.code.in_(codes)))}
    unknown = [code for code in codes if code not in found]
    if unknown:
        raise AccountError(f"unknown site(s) {', '.join(unknown)}: register them first (registry site add)")
    return [found[code] for code in codes]


def create_account(session: Session, username: str, password: str, role: Role, sites: Sequence[str] = ()) -> Account:
    """A new active account; a coordinator must serve at least one site, other roles none."""
    if not username.strip() or username != username.strip() or "\x00" in username:
        raise AccountError(f"{username!r} is not a usable sign-in name (empty, or spaces at either end)")
    if len(username) > USERNAME_LENGTH:
        raise AccountError(f"a sign-in name has at most {USERNAME_LENGTH} characters")
    if session.exec(select(Account).where(Account.username == username)).first() is not None:
        raise AccountError(f"an account named {username!r} exists already")
    if role is Role.COORDINATOR and not sites:
        raise AccountError("a coordinator needs at least one site (--site CODE)")
    if role is not Role.COORDINATOR and sites:
        raise AccountError(f"only coordinators are tied to sites; the {role.value} role sees every site")
    chosen = _sites(session, sites)
    account = Account(username=username, password_hash=hash_password(password), role=role, created_at=datetime.now(UTC))
    session.add(account)
    session.flush()
    for site in chosen:
        session.add(AccountSite(account_id=account.id, site_id=site.id))
    return account


def set_password(session: Session, username: str, password: str) -> None:
    find(session, username).password_hash = hash_password(password)


def disable(session: Session, username: str) -> None:
    account = find(session, username)
    if not account.active:
        raise AccountError(f"{username!r} is disabled already")
    account.active = False


def site_codes(connection: sa.Connection, account_id: int) -> list[str]:
    rows = connection.execute(
        sa.select(Site.code)
        .join(AccountSite, AccountSite.site_id == Site.id)
        .where(AccountSite.account_id == account_id)
    )
    return sorted(code for (code,) in rows)
