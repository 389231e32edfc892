"""What an entry form shows of the checks of its save (registry.entry_checks), and how it confirms errors.

A save that adds errors comes back with each finding beside the field it concerns (those
about other records of the patient listed together), and a confirmation: a tick, a reason
chosen from the usual ones or written, or both. The reason is kept with the confirmed errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from registry.entry import form_columns, reason_problem
from registry.entry_checks import CONFIRMED, Unconfirmed
from registry.sheets import Sheet

#: The reasons offered for confirming an error ("": another, written in the note).
CONFIRM_REASONS = ("value verified at source", "as in the record", "")
NO_CONFIRM_REASON = "say why the values are right: choose a reason or write one"


@dataclass(frozen=True)
class Confirmation:
    """The form's confirmation of errors: whether it was ticked, the reason chosen, the note written."""

    confirm: bool = False
    reason: str = CONFIRM_REASONS[0]
    note: str = ""

    @classmethod
    def of(cls, form: Mapping[str, str]) -> Confirmation:
        reason = form.get("confirm_reason", CONFIRM_REASONS[0])
        chosen = reason if reason in CONFIRM_REASONS else ""
        return cls(form.get("confirm") == "yes", chosen, form.get("confirm_note", ""))

    @property
    def text(self) -> str:
        return "; ".join(part for part in (self.reason, self.note.strip()) if part)

    @property
    def problem(self) -> str | None:
        """What is wrong with a ticked confirmation (None if it can be stored, or was not ticked)."""
        if not self.confirm:
            return None
        if not self.text:
            return NO_CONFIRM_REASON
        problem = reason_problem(CONFIRMED.format(reason=self.text))
        return None if problem is None else f"the reason {problem}"

    @property
    def given(self) -> str | None:
        """The reason the errors are confirmed with, or None (not ticked, or not storable)."""
        return self.text if self.confirm and self.problem is None else None


@dataclass(frozen=True)
class Checked:
    """The findings of a refused save, as the form lays them out, with its confirmation."""

    beside: dict[str, list[dict[str, Any]]]  # form field -> the findings about it
    elsewhere: list[dict[str, Any]]  # findings about other records, or about no field of the form
    confirmation: Confirmation
    error: str | None = None
    reasons: tuple[str, ...] = CONFIRM_REASONS


def checked(sheet: Sheet, refused: Unconfirmed, confirmation: Confirmation, *, creating: bool) -> Checked:
    """The findings of ``refused`` beside the fields of ``sheet``'s form that they concern."""
    names = {column.target: column.name for column in form_columns(sheet, creating=creating)}
    table, record = refused.record
    beside: dict[str, list[dict[str, Any]]] = {}
    elsewhere = []
    for finding in refused.findings.to_dict("records"):
        if finding["table"] == table and finding["record"] == record and finding["field"] in names:
            beside.setdefault(names[finding["field"]], []).append(finding)
        else:
            elsewhere.append(finding)
    return Checked(beside, elsewhere, confirmation, confirmation.problem)
