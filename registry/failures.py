"""Failures of the machine rather than of the input, each as one plain message: a full or unwritable disk,
a read-only database, a database locked by another writer.

A command that meets one stops with that message (and no traceback); what it was
writing is rolled back (the database) or never renamed into place (files, registry.atomic).
"""

from __future__ import annotations

import errno
import logging
import sqlite3
import sys

from registry.atomic import WRITE_ERRORS
from registry.settings import busy_timeout

#: SQLite's primary result codes (the low byte of the extended code) and PostgreSQL's SQLSTATEs, by failure.
_SQLITE = {sqlite3.SQLITE_FULL: "full", sqlite3.SQLITE_IOERR: "full", sqlite3.SQLITE_READONLY: "read-only",
           sqlite3.SQLITE_BUSY: "locked", sqlite3.SQLITE_LOCKED: "locked"}  # fmt: skip
_POSTGRES = {"53100": "full", "25006": "read-only", "55P03": "locked"}  # the last: lock_not_available


def explained(error: BaseException, url: str) -> str | None:
    """The plain message for ``error`` met on the database ``url``, or None when it is not such a failure."""
    if isinstance(error, OSError) and error.errno in WRITE_ERRORS:
        where = f"{error.filename}: " if error.filename else ""
        return f"Nothing written: {where}{error.strerror} ({errno.errorcode[error.errno]})"
    sa = sys.modules.get("sqlalchemy")  # not loaded: the command met no database error
    if sa is None or not isinstance(error, sa.exc.DBAPIError):
        return None
    from registry.db import redacted

    failure, detail = _database_failure(error.orig)
    shown = redacted(url)
    if failure == "full":
        return f"Nothing written: the database {shown} could not be written ({detail}): is its disk full?"
    if failure == "read-only":
        return f"Nothing written: the database {shown} is read-only ({detail})"
    if failure == "locked":
        return (
            f"Nothing written: the database {shown} is locked by another writer (waited {busy_timeout():g} s: "
            f"{detail}); try again when it has finished"
        )
    return None


def _database_failure(orig: BaseException) -> tuple[str | None, str]:
    """Which failure the driver's error is, and its first line (never the statement or its values)."""
    if isinstance(orig, sqlite3.Error):
        code = getattr(orig, "sqlite_errorcode", None)
        return _SQLITE.get(code & 0xFF) if code is not None else None, str(orig).splitlines()[0]
    sqlstate = getattr(orig, "sqlstate", None)
    diagnostic = getattr(orig, "diag", None)
    primary = getattr(diagnostic, "message_primary", None) or str(orig).splitlines()[0]
    return _POSTGRES.get(sqlstate or ""), primary


class SecondErrors(logging.Filter):
    """Drops psycopg's note that it ignored an error while ending a pipeline that had failed: the first error is the
    one reported, and the note on stderr would make two messages of one failure."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("error ignored terminating")
