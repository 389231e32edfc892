"""Output written whole or not at all: a temporary sibling, renamed into place once complete.

Every command that writes files (export, template, dictionary, synth, check, analyze,
report and its archive) writes each under a temporary name beside its target,
``.<name>.<8 random characters>``, and renames it over the target only when it is
complete and on disk; when writing fails (a full disk, a killed process) the target
keeps what it held. A temporary is locked while it is written, so that a later run may
remove those of killed writers (unlocked) without touching a live writer's.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

TEMPORARY = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}")  # tempfile's names: .<target>.<8 random characters>
#: The errors of a full or unwritable disk, or of a target that cannot be replaced: one plain message each.
WRITE_ERRORS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR}
)


@contextlib.contextmanager
def replacing(path: Path, *, folder: bool = False) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write (a file, or an empty folder with ``folder``), which replaces
    ``path`` when the block ends without an error and is removed when it does not.

    A folder replaces an absent or empty ``path``; into a folder that holds files its files
    are moved one by one (each whole), and files of other names there stay. A write error
    is raised as an OSError naming ``path``, not the temporary.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, path.name)
    with _locked_temporary(path, folder) as temporary:
        try:
            yield temporary
            _sync(temporary)
            _move(temporary, path)
        except BaseException as error:
            _remove(temporary)
            if isinstance(error, OSError) and error.errno in WRITE_ERRORS and _of(error, temporary):
                raise OSError(error.errno, error.strerror, str(path)) from error
            raise
    fsync(path.parent)


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` holds the old bytes or the new, never a part."""
    with replacing(path) as temporary:
        temporary.write_bytes(data)


@contextlib.contextmanager
def _locked_temporary(path: Path, folder: bool) -> Iterator[Path]:
    while True:
        if folder:
            name = tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0700
            descriptor = os.open(name, os.O_RDONLY)
        else:
            descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            if os.fstat(descriptor).st_nlink == 0:
                continue  # removed as stale between its creation and the lock: take another
            yield Path(name)
            return
        finally:
            os.close(descriptor)


def _of(error: OSError, temporary: Path) -> bool:
    """Whether ``error`` is one of writing ``temporary`` (an open file's errors name no file)."""
    return error.filename is None or str(error.filename).startswith(str(temporary))


def _sync(temporary: Path) -> None:
    """Put the temporary's bytes on disk before it is renamed: else a power cut could leave an empty file."""
    for file in sorted(temporary.iterdir()) if temporary.is_dir() else []:
        fsync(file)
    fsync(temporary)


def _move(temporary: Path, path: Path) -> None:
    if temporary.is_dir() and path.is_dir() and any(path.iterdir()):
        for file in sorted(temporary.iterdir()):
            os.replace(file, path / file.name)
        temporary.rmdir()
    else:
        os.replace(temporary, path)  # a file over a file; a folder over an absent or empty folder


def _remove(temporary: Path) -> None:
    if temporary.is_dir():
        shutil.rmtree(temporary, ignore_errors=True)
    else:
        temporary.unlink(missing_ok=True)


def remove_stale_temporaries(folder: Path, target: str | None = None) -> list[str]:
    """Remove the temporaries of killed writers (of ``target``, or of any name); returns their names.

    A temporary is stale when no writer holds its lock. Left alone: anything else, and
    temporary symbolic links (only a report archive run, under the archive's lock, removes those).
    """
    removed = []
    for candidate in sorted(folder.iterdir()):
        match = TEMPORARY.fullmatch(candidate.name)
        if not match or (target and match["target"] != target) or candidate.is_symlink():
            continue
        if not (candidate.is_file() or candidate.is_dir()):
            continue
        try:
            descriptor = os.open(candidate, os.O_RDONLY)
        except (FileNotFoundError, PermissionError):
            continue
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _remove(candidate)
        except (BlockingIOError, FileNotFoundError, PermissionError):
            continue
        finally:
            os.close(descriptor)
        removed.append(candidate.name)
    return removed


def fsync(path: Path) -> None:
    """Put a file's bytes, or a folder's names, on disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
