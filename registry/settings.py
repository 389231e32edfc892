"""The settings the registry reads from its environment, with their defaults: the database URL, how long a write
waits for a lock, how long a web session lasts.

Kept apart from registry.db and registry.accounts, which load SQLAlchemy, so that the command line can name them in
its help and options without loading it (start-up time: `registry --version` in a tenth of a second).
"""

from __future__ import annotations

import math
import os
from datetime import timedelta

URL_VARIABLE = "REGISTRY_DATABASE_URL"
DEFAULT_URL = "sqlite:///registry.db"
#: How long a write waits for another writer's lock (SQLite's busy timeout, PostgreSQL's lock_timeout), in seconds.
BUSY_TIMEOUT_VARIABLE = "REGISTRY_BUSY_TIMEOUT"
DEFAULT_BUSY_TIMEOUT = 10.0
#: A web session unused this long ends (OWASP ASVS 3.3.2: 30 minutes or less for sensitive data); registry serve
#: --idle-minutes changes it.
IDLE_TIMEOUT = timedelta(minutes=30)
#: A web session ends this long after sign-in however busy (one working day); registry serve --session-hours.
ABSOLUTE_TIMEOUT = timedelta(hours=8)
#: An API token lasts this many days unless created for fewer (registry token create --days), and never longer than
#: the most.
TOKEN_DAYS, TOKEN_MOST_DAYS = 90, 365
#: Requests an API token may make in a window of seconds (registry serve --api-requests-per-minute changes it).
API_REQUESTS, API_WINDOW_SECONDS = 120, 60  # a minute: registry serve counts per minute


def database_url(explicit: str | None = None) -> str:
    """The URL to use, normalised so ``postgresql://`` means the psycopg 3 driver."""
    url = explicit or os.environ.get(URL_VARIABLE) or DEFAULT_URL
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def busy_timeout() -> float:
    """Seconds a write waits for another writer before it fails: REGISTRY_BUSY_TIMEOUT, else 10."""
    text = os.environ.get(BUSY_TIMEOUT_VARIABLE, "").strip()
    if not text:
        return DEFAULT_BUSY_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise ValueError(f"{BUSY_TIMEOUT_VARIABLE}={text!r} is not a positive number of seconds (e.g. 10 or 0.5)")
    return seconds
