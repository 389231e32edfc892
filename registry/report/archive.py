"""Unattended report runs: one at a time, files replaced whole or not at all, a log.

A scheduled run (cron, a systemd timer) writes ``report-<cut-off or date>-<fingerprint>.pdf``
and its results JSON into the archive folder, then publishes the new pair as the latest.
Every file is written to a temporary file in the same folder and renamed over its name
(registry.atomic), so a reader (or a crash) never sees half a file; a dated PDF and its
results are both written before either is renamed, the PDF first, so a results file
always has its PDF (a full disk used to leave the results without it).

``latest.pdf`` and ``latest.json`` are fixed symbolic links into ``latest``, itself a
symbolic link to a folder in ``.pairs/`` holding (hard links to) one run's PDF and JSON.
A run publishes its pair with one rename of ``latest``: both names change together or
not at all, so they always come from the same run, whenever the writer is killed.

A lock file keeps two runs from writing at once; it also holds the running run's process
id and start, so the next run can tell that one was killed and remove what it left.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from registry.atomic import TEMPORARY, fsync, remove_stale_temporaries, replacing

LOCK_NAME = ".report.lock"
LOG_NAME = "report.log"
LATEST = "latest"  # symbolic link to the published pair's folder in PAIRS
PAIRS = ".pairs"
PAIR_FILES = {"latest.pdf": "report.pdf", "latest.json": "report.json"}  # name in the archive: name in a pair


class ArchiveBusy(RuntimeError):
    """Another report run holds the archive's lock."""


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[str | None]:
    """Hold the archive's lock for the duration, or raise :class:`ArchiveBusy` at once.

    Yields what a previous run that never finished (killed, crashed) left in the lock
    file (its process id and start), else None; the kernel releases the lock of a dead run.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / LOCK_NAME).open("a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ArchiveBusy(f"another report run is writing to {folder} (lock {folder / LOCK_NAME})") from None
        try:
            handle.seek(0)
            unfinished = handle.read().strip() or None
            _rewrite(handle, f"pid {os.getpid()}, started {datetime.now(UTC).isoformat(timespec='seconds')}")
            yield unfinished
        finally:
            _rewrite(handle, "")  # finished, if with an error: only a killed run leaves its record
            fcntl.flock(handle, fcntl.LOCK_UN)


def _rewrite(handle: IO[str], text: str) -> None:
    handle.seek(0)
    handle.truncate()
    handle.write(text)
    handle.flush()


def archive_name(cutoff_or_date: str, fingerprint: str) -> str:
    return f"report-{cutoff_or_date}-{fingerprint[:12]}"


def store(folder: Path, stem: str, pdf: bytes, results_json: bytes) -> Path:
    """The report and its results under ``stem``, then published as ``latest.*`` together; returns the PDF's path."""
    report, results = folder / f"{stem}.pdf", folder / f"{stem}.json"
    with replacing(results) as results_temporary:  # renamed after the PDF: no results without their PDF
        results_temporary.write_bytes(results_json)
        with replacing(report) as report_temporary:
            report_temporary.write_bytes(pdf)
    links = [folder / name for name in PAIR_FILES]
    if all(link.exists() for link in links) and not all(link.is_symlink() for link in links):
        _adopt(folder)
    for name, inside in PAIR_FILES.items():
        if not (folder / name).is_symlink():
            _point(folder / name, Path(LATEST) / inside)  # a new archive: nothing to read until a pair is published
    pair = _pair(folder, stem, report, results)
    replaced = _published(folder)
    _point(folder / LATEST, Path(PAIRS) / pair.name)  # the moment the new pair becomes the latest
    _remove_pairs(folder, keep={pair.name, replaced})  # the replaced pair stays for readers who resolved it
    return report


def _pair(folder: Path, stem: str, pdf: Path, results: Path) -> Path:
    """A new folder in .pairs/ holding (hard links to) a PDF and its results."""
    (folder / PAIRS).mkdir(exist_ok=True)
    pair = folder / PAIRS / f"{stem}.{uuid.uuid4().hex[:8]}"
    pair.mkdir()
    os.link(pdf, pair / PAIR_FILES["latest.pdf"])
    os.link(results, pair / PAIR_FILES["latest.json"])
    fsync(pair)
    return pair


def _adopt(folder: Path) -> None:
    """Turn plain latest.* files (an archive written before pairs) into a published pair, the same bytes throughout."""
    pair = _pair(folder, "adopted", folder / "latest.pdf", folder / "latest.json")
    _point(folder / LATEST, Path(PAIRS) / pair.name)
    for name, inside in PAIR_FILES.items():
        _point(folder / name, Path(LATEST) / inside)


def recover(folder: Path) -> list[str]:
    """Remove what killed runs left in the archive (run under its lock); returns the names removed."""
    removed = remove_stale_temporaries(folder)
    for candidate in sorted(folder.glob(".*")):
        if candidate.is_symlink() and TEMPORARY.fullmatch(candidate.name):
            candidate.unlink()
            removed.append(candidate.name)
    return removed + _remove_pairs(folder, keep={_published(folder)})


def _published(folder: Path) -> str | None:
    """The name of the pair ``latest`` points at."""
    return Path(os.readlink(folder / LATEST)).name if (folder / LATEST).is_symlink() else None


def _remove_pairs(folder: Path, keep: set[str | None]) -> list[str]:
    pairs = folder / PAIRS
    removed = []
    for pair in sorted(pairs.iterdir()) if pairs.is_dir() else []:
        if pair.name not in keep:
            shutil.rmtree(pair)
            removed.append(f"{PAIRS}/{pair.name}")
    return removed


def _point(link: Path, target: Path) -> None:
    """Make ``link`` a symbolic link to ``target`` in one rename (whatever ``link`` was before)."""
    temporary = link.with_name(f".{link.name}.{uuid.uuid4().hex[:8]}")
    os.symlink(target, temporary)
    os.replace(temporary, link)
    fsync(link.parent)


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
