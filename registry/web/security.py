"""Who may see what: sign-in throttling, CSRF tokens, and the sites an account may read.

Every request is checked on the server: a coordinator reads the patients of their own
sites only, and a patient of another site is answered exactly as a patient that does
not exist (404), so URLs reveal nothing.

Sign-in throttling slows guessing without locking anyone out: failures are counted in
the database per client address (``ADDRESS``) and per user name from one address
(``NAME_AT_ADDRESS``). Past a policy's free attempts each further attempt must wait a
delay that doubles (1 s, 2 s, 4 s, ...) up to its cap; an attempt made earlier is
refused unchecked. A guesser at another address never delays the real user's own.
Each attempt claims its turn by a conditional UPDATE before its password is checked,
so parallel requests and server processes cannot check more passwords than allowed.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

import sqlalchemy as sa
from fastapi import Form, HTTPException, Request

from registry.codes import SITE_ROLES
from registry.db import as_utc
from registry.models import Account, AccountSite, Patient, SignInThrottle
from registry.web.sessions import SESSION_COOKIE

VISITOR_COOKIE = "registry_visitor"


@dataclass(frozen=True)
class ThrottlePolicy:
    """``free`` attempts, then delays doubling from ``first`` up to ``cap``; forgotten after ``forget`` of quiet."""

    free: int
    first: timedelta
    cap: timedelta
    forget: timedelta

    def delay(self, attempts: int) -> timedelta:
        """The wait before the attempt after ``attempts`` counted ones."""
        if attempts < self.free:
            return timedelta(0)
        return min(self.cap, self.first * 2 ** min(attempts - self.free, 32))


#: One name from one address: 5 free attempts, then 1 s, 2 s, ... up to 5 minutes; a success starts afresh.
NAME_AT_ADDRESS = ThrottlePolicy(5, timedelta(seconds=1), timedelta(minutes=5), timedelta(hours=1))
#: Every name from one address: 30 free failures, then 1 s, 2 s, ... up to 15 minutes.
ADDRESS = ThrottlePolicy(30, timedelta(seconds=1), timedelta(minutes=15), timedelta(hours=1))


def now() -> datetime:
    """The throttle's clock (a test stops it)."""
    return datetime.now(UTC)


def _claim(engine: sa.Engine, key: str, policy: ThrottlePolicy) -> timedelta:
    """Count one attempt under ``key`` if its turn has come (returns 0), else the wait left, counting nothing.

    Compare-and-set: the UPDATE changes the row only if no other attempt counted since it
    was read, else the attempt reads again; a new key's INSERT that loses the race does too.
    """
    table = SignInThrottle.__table__
    while True:
        moment = now()
        with engine.connect() as connection:
            row = connection.execute(sa.select(table).where(table.c.key == key)).mappings().first()
        try:
            with engine.begin() as connection:
                if row is None:
                    connection.execute(sa.insert(table).values(key=key, failures=1, last_failure_at=moment,
                                                               next_allowed_at=moment + policy.delay(1)))  # fmt: skip
                    return timedelta(0)
                last = as_utc(row["last_failure_at"])
                counted = 0 if moment - last > policy.forget else row["failures"]
                # A free attempt is never refused: a parallel one that read the clock a moment later may have
                # counted first, leaving next_allowed_at just after this attempt's moment.
                if counted >= policy.free and moment < as_utc(row["next_allowed_at"]):
                    return as_utc(row["next_allowed_at"]) - moment
                changed = connection.execute(
                    sa.update(table)
                    .where(table.c.key == key, table.c.failures == row["failures"], table.c.last_failure_at == last)
                    .values(failures=counted + 1, last_failure_at=moment,
                            next_allowed_at=moment + policy.delay(counted + 1))
                )  # fmt: skip
                if changed.rowcount == 1:
                    return timedelta(0)
        except sa.exc.IntegrityError:
            continue  # another attempt made the row first: read it


def _keys(client: str, name: str) -> tuple[str, str]:
    return f"addr:{client}", f"name:{client}:{name}"


def claim_sign_in(engine: sa.Engine, client: str, name: str) -> timedelta:
    """Count a sign-in attempt from ``client`` for ``name`` before its password is checked; 0, or the wait left."""
    address, name_at_address = _keys(client, name)
    return _claim(engine, address, ADDRESS) or _claim(engine, name_at_address, NAME_AT_ADDRESS)


def sign_in_succeeded(engine: sa.Engine, client: str, name: str) -> None:
    """A claimed attempt succeeded: the name starts afresh from this address, and the address counts it not."""
    address, name_at_address = _keys(client, name)
    table = SignInThrottle.__table__
    with engine.begin() as connection:
        connection.execute(sa.delete(table).where(table.c.key == name_at_address))
        connection.execute(sa.update(table).where(table.c.key == address, table.c.failures > 0)
                           .values(failures=table.c.failures - 1))  # fmt: skip


def _bound_to(request: Request) -> str:
    """What the CSRF token is bound to: the session's token, or before sign-in the visitor cookie's."""
    return request.cookies.get(SESSION_COOKIE) or request.state.visitor


def csrf_token(request: Request) -> str:
    """The CSRF token of the session (or visitor): an HMAC of its cookie's token with the server's key."""
    key = request.app.state.secret_key.encode()
    return hmac.new(key, b"csrf:" + _bound_to(request).encode(), hashlib.sha256).hexdigest()


#: A form's CSRF token field, as every POST of the application takes it.
CsrfToken = Annotated[str | None, Form(alias="csrf_token")]


def check_csrf(request: Request, submitted: str | None) -> None:
    if not submitted or not hmac.compare_digest(csrf_token(request), submitted):
        raise HTTPException(status_code=403, detail="The form has expired or did not come from this site: reload it.")


def visible_patients(account: Account) -> sa.Select:
    """The ids of the patients ``account`` may read, as a subquery-ready select."""
    query = sa.select(Patient.id)
    if account.role in SITE_ROLES:
        sites = sa.select(AccountSite.site_id).where(AccountSite.account_id == account.id)
        query = query.where(Patient.site_id.in_(sites))
    return query
