"""The registry's doors to other systems: REDCap, statistical packages, CDISC ODM, FHIR.

Each module speaks one ecosystem through that ecosystem's own library, reads and writes the
registry only through the same sheets, import and audit as the workbook, and is proven by a
round trip in the tests.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from registry.workbook import csv_cell


def plain_text(value: Any) -> str:
    """A stored value as these formats write it: a code as itself, yes/no as 1/0, text as it is (a leading = is data
    there, never escaped as in a workbook), numbers and dates as the workbook writes them."""
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, str):
        return value
    return csv_cell(value)
