"""The ``registry`` command: one thin layer over the library modules, a module per group of commands."""

from registry.cli import workflow  # noqa: F401  (registers ``registry query`` and ``registry status``)
from registry.cli.main import ReportExit, app, run

__all__ = ["ReportExit", "app", "run"]
