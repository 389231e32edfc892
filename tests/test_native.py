"""registry.report.native: weasyprint's libraries found in the linker's cache, as the standard lookup finds them."""

import ctypes.util
import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the linker's cache is Linux's")

#: Renders a one-line PDF in a fresh interpreter, recording the programs started and the names weasyprint asked for.
PROBE = """
import ctypes.util, json, subprocess, sys
started, asked = [], []
popen = subprocess.Popen.__init__
def record(self, args, *rest, **options):
    started.append(args[0] if isinstance(args, (list, tuple)) else args)
    popen(self, args, *rest, **options)
subprocess.Popen.__init__ = record
from registry.report import native
{setup}
lookup = native.cache_lookup
def recording_lookup(sonames):
    find = lookup(sonames)
    def find_library(name):
        asked.append(name)
        return find(name)
    return find_library
native.cache_lookup = recording_lookup
from registry.report.document import render_pdf
pdf = render_pdf("<p>MDA5</p>")
print(json.dumps({{"started": started, "asked": asked, "pdf": pdf[:5].decode(),
                   "restored": ctypes.util.find_library is ctypes.util.__dict__['find_library'] and
                               ctypes.util.find_library.__module__ == 'ctypes.util'}}))
"""


def _probe(setup: str = "") -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE.format(setup=setup)], capture_output=True, text=True,
                          check=True)  # fmt: skip
    return json.loads(done.stdout.splitlines()[-1])


def test_a_report_starts_ldconfig_once_and_neither_gcc_nor_ld():
    """The standard lookup ran ldconfig, gcc and ld for each of some fifteen names weasyprint does not find."""
    seen = _probe()
    assert seen["pdf"] == "%PDF-"
    assert seen["started"] == ["/sbin/ldconfig"]
    assert seen["restored"]


def test_the_cache_answers_every_name_weasyprint_asks_as_the_standard_lookup():
    asked = _probe()["asked"]
    assert {"pango-1.0", "harfbuzz", "fontconfig", "gobject-2.0", "pangoft2-1.0"} <= set(asked)
    from registry.report.native import cache_lookup, linker_cache

    find = cache_lookup(linker_cache())
    assert {name: find(name) for name in asked} == {name: ctypes.util.find_library(name) for name in asked}


#: The first load of weasyprint's library bindings fails, as it would for a library the cache does not name.
FAIL_ONCE = """
import importlib.abc
class FailOnce(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "weasyprint.text.ffi":
            sys.meta_path.remove(self)
            print("WeasyPrint could not import some external libraries")
            raise OSError("cannot load library 'pango'")
sys.meta_path.insert(0, FailOnce())
"""


def test_weasyprint_failing_to_load_from_the_cache_is_loaded_the_standard_way():
    """Silently: weasyprint's installation hints of the failed attempt are not printed."""
    done = subprocess.run([sys.executable, "-c", PROBE.format(setup=FAIL_ONCE)], capture_output=True, text=True,
                          check=True)  # fmt: skip
    assert "could not import" not in done.stdout + done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["pdf"] == "%PDF-"
    assert {"gcc", "ld"} & set(seen["started"])  # the standard lookup ran for the second load
    assert seen["restored"]


def test_threads_loading_at_once_leave_the_standard_lookup_in_place():
    """The web application renders reports in threads: the swapped lookup must not outlive the first load."""
    probe = """
import ctypes.util, threading
standard = ctypes.util.find_library
from registry.report import native
start = threading.Barrier(4)
def load():
    start.wait()
    native.load_weasyprint()
threads = [threading.Thread(target=load) for _ in range(4)]
for thread in threads: thread.start()
for thread in threads: thread.join()
print(ctypes.util.find_library is standard)
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True"]
