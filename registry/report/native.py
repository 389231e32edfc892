"""weasyprint loaded without a search for its native libraries on every report.

weasyprint opens GObject, Pango, HarfBuzz and Fontconfig through cffi, trying some twenty spellings of their names
(Linux, macOS and Windows ones, and an optional harfbuzz-vector that Debian 12 lacks). cffi asks
``ctypes.util.find_library`` for each spelling, which on Linux runs ldconfig, then gcc, then ld for a name it does not
find: 0.15-0.35 s of every command that renders a report, spent before the first page. While weasyprint loads,
:func:`load_weasyprint` answers ``find_library`` from one reading of the dynamic linker's cache (``ldconfig -p``),
which names every library the standard lookup finds there; should weasyprint still fail to load (a library only gcc
or ld would have found), it is loaded again with the standard lookup, as if this module were not here.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import importlib
import io
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from types import ModuleType

#: The dynamic linker's cache, as ctypes.util reads it.
LDCONFIG = "/sbin/ldconfig"
#: One load at a time: the web application renders reports in threads, and the lookup is swapped process-wide.
_LOADING = threading.Lock()


def linker_cache() -> list[str]:
    """The sonames ``ldconfig -p`` lists (none where it is missing or fails: not glibc, or no ldconfig)."""
    try:
        listed = subprocess.run([LDCONFIG, "-p"], capture_output=True, env={"LC_ALL": "C", "LANG": "C"}, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    if listed.returncode != 0:
        return []
    return re.findall(r"^\s+(\S+) \(", os.fsdecode(listed.stdout), flags=re.MULTILINE)


def cache_lookup(sonames: list[str]) -> Callable[[str], str | None]:
    """``find_library`` over ``sonames``: the first ``lib<name>.<...>``, as the standard lookup matches the cache."""

    def find_library(name: str) -> str | None:
        pattern = re.compile(rf"lib{re.escape(name)}\.\S+")
        return next((soname for soname in sonames if pattern.fullmatch(soname)), None)

    return find_library


def load_weasyprint() -> ModuleType:
    """The weasyprint module, its libraries looked up in the linker's cache on Linux (standard lookup elsewhere, with
    LD_LIBRARY_PATH set, once weasyprint is loaded, or when the cache does not serve)."""
    if "weasyprint" in sys.modules or not sys.platform.startswith("linux") or os.environ.get("LD_LIBRARY_PATH"):
        return importlib.import_module("weasyprint")
    with _LOADING:
        if "weasyprint" in sys.modules:  # loaded by another thread meanwhile
            return importlib.import_module("weasyprint")
        return _load_with_cache_lookup()


def _load_with_cache_lookup() -> ModuleType:
    sonames = linker_cache()
    if not sonames:
        return importlib.import_module("weasyprint")
    standard = ctypes.util.find_library
    ctypes.util.find_library = cache_lookup(sonames)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # weasyprint prints its installation hints before it raises
            return importlib.import_module("weasyprint")
    except OSError:  # a library the cache does not name: weasyprint's modules that failed are unloaded by Python
        ctypes.util.find_library = standard
        return importlib.import_module("weasyprint")
    finally:
        ctypes.util.find_library = standard
