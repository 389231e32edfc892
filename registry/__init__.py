"""mda5-registry: clinical registry and data-quality checks for anti-MDA5 DM-ILD cohorts."""

import os
from importlib.metadata import PackageNotFoundError, version

# openpyxl writes through lxml whenever lxml is installed (the ODM door needs it): that writer reports a full disk as
# "IO_EFBIG", naming no file, where the standard library's raises an OSError that registry.failures explains. The
# registry keeps openpyxl on the standard library, as before lxml came (set OPENPYXL_LXML=True to override).
os.environ.setdefault("OPENPYXL_LXML", "False")

try:
    __version__ = version("mda5-registry")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
