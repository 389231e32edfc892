"""mda5-registry: clinical registry and data-quality checks for anti-MDA5 DM-ILD cohorts."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mda5-registry")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
