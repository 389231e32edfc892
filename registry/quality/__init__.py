"""Data-quality checks: the rule catalogue and the engine that runs it (see docs/quality.md)."""

from registry.quality.catalogue import CATALOGUE, RULES, Category, Rule, Severity
from registry.quality.engine import CheckRun, run_checks

__all__ = ["CATALOGUE", "RULES", "Category", "CheckRun", "Rule", "Severity", "run_checks"]
