"""Unattended report runs: one at a time, files replaced whole or not at all, a log.

A scheduled run (cron, a systemd timer) writes ``report-<cut-off or date>-<fingerprint>.pdf``
and its results JSON into the archive folder, then points ``latest.pdf`` and
``latest.json`` at the new pair. Every file is written to a temporary file in the same
folder and renamed over its name, so a reader (or a crash) never sees half a report.
A lock file keeps two runs from writing at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = ".report.lock"
LOG_NAME = "report.log"


class ArchiveBusy(RuntimeError):
    """Another report run holds the archive's lock."""


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold the archive's lock for the duration, or raise :class:`ArchiveBusy` at once."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / LOCK_NAME).open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ArchiveBusy(f"another report run is writing to {folder} (lock {folder / LOCK_NAME})") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` holds the old bytes or the new, never a part."""
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        temporary = Path(handle.name)
        try:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def archive_name(cutoff_or_date: str, fingerprint: str) -> str:
    return f"report-{cutoff_or_date}-{fingerprint[:12]}"


def store(folder: Path, stem: str, pdf: bytes, results_json: bytes) -> Path:
    """The report and its results under ``stem``, then ``latest.*``; returns the report's path."""
    report = folder / f"{stem}.pdf"
    write_atomically(folder / f"{stem}.json", results_json)
    write_atomically(report, pdf)
    write_atomically(folder / "latest.json", results_json)
    write_atomically(folder / "latest.pdf", pdf)
    return report


def archive_logger(folder: Path) -> logging.Logger:
    """A logger appending to the archive's report.log (one handler, however often it is asked for)."""
    folder.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(f"registry.report.archive.{folder.resolve()}")
    if not logger.handlers:
        handler = logging.FileHandler(folder / LOG_NAME, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger
