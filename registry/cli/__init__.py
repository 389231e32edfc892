"""The ``registry`` command: one thin layer over the library modules, a module per group of commands."""

from registry.cli import (  # noqa: F401  (registers the groups of commands kept in modules of their own)
    interchange,  # registry redcap
    tokens,  # registry token
    workflow,  # registry query, registry status
)
from registry.cli.main import ReportExit, app, run

__all__ = ["ReportExit", "app", "run"]
