"""Who may see what: sign-in throttling, CSRF tokens, and the sites an account may read.

Every request is checked on the server: a coordinator reads the patients of their own
sites only, and a patient of another site is answered exactly as a patient that does
not exist (404), so URLs reveal nothing. Failed sign-ins are counted per user name;
after ``MAX_FAILURES`` within ``WINDOW`` the name is refused for ``WINDOW``, whatever
the password.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import defaultdict, deque

import sqlalchemy as sa
from fastapi import HTTPException, Request

from registry.codes import Role
from registry.models import Account, AccountSite, Patient

MAX_FAILURES = 5
WINDOW = 15 * 60  # seconds


class Throttle:
    """Failed sign-ins per user name in a sliding window (one process; reset on restart)."""

    def __init__(self, max_failures: int = MAX_FAILURES, window: float = WINDOW) -> None:
        self.max_failures, self.window = max_failures, window
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _recent(self, username: str, now: float) -> deque[float]:
        failures = self._failures[username.casefold()]
        while failures and failures[0] < now - self.window:
            failures.popleft()
        return failures

    def blocked(self, username: str) -> bool:
        with self._lock:
            return len(self._recent(username, time.monotonic())) >= self.max_failures

    def failed(self, username: str) -> None:
        with self._lock:
            now = time.monotonic()
            self._recent(username, now).append(now)

    def succeeded(self, username: str) -> None:
        with self._lock:
            self._failures.pop(username.casefold(), None)


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use."""
    if "csrf" not in request.session:
        request.session["csrf"] = secrets.token_urlsafe(32)
    return request.session["csrf"]


def check_csrf(request: Request, submitted: str | None) -> None:
    expected = request.session.get("csrf")
    if not expected or not submitted or not hmac.compare_digest(expected, submitted):
        raise HTTPException(status_code=403, detail="The form has expired or did not come from this site: reload it.")


def visible_patients(account: Account) -> sa.Select:
    """The ids of the patients ``account`` may read, as a subquery-ready select."""
    query = sa.select(Patient.id)
    if account.role is Role.COORDINATOR:
        sites = sa.select(AccountSite.site_id).where(AccountSite.account_id == account.id)
        query = query.where(Patient.site_id.in_(sites))
    return query
