"""The rule catalogue at the moment of entry: what a save adds, before it commits.

A save is checked for its patient before and after the change, inside its transaction
(:func:`registry.quality.incremental.check_change`): what it adds is what the rules
reading what it changed find after it and did not before (the before-run is of the
rules the after-run finds something by, on the patient's rows read before it). A
warning saves. An error refuses the save (:class:`Unconfirmed`) unless the person
confirms it with a reason: then it is saved, and kept with the reason as a review of
the finding, by the person who confirmed it (audited, like every change). A
confirmed error stays an open error, and opens a query answered by the reason
(registry/queries.py), for the data manager to close or re-open. A patient's
missing records (no antibody test, no treatment, no follow-up) are not the save's to
answer: they are listed, never refused.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import date

import pandas as pd
from sqlmodel import Session

from registry.config import Config
from registry.entry import EntryError
from registry.quality import CATALOGUE, Category, Severity
from registry.quality.incremental import check_change, check_patients, load_patients
from registry.queries import open_confirmed
from registry.reviews import FINDING_KEY, add_review

#: What a confirmation's reason is stored as: the review's comment says it was confirmed, not verified.
CONFIRMED = "confirmed at entry: {reason}"


def is_missing_record(rule_id: str) -> bool:
    """Whether a rule reports a record the patient lacks (answered by entering that record, not by this save)."""
    rule = CATALOGUE[rule_id]
    return rule.category is Category.COMPLETENESS and rule.table == "patient" and not rule_id.startswith("PAT-")


@dataclass(eq=False)
class Unconfirmed(EntryError):
    """The save adds error findings: correct them, or confirm them with a reason. Nothing was written."""

    findings: pd.DataFrame  # every finding the save adds (the errors, the warnings, the missing records)
    record: tuple[str, str]  # the table and key of the record saved (findings about it belong beside its fields)

    def __str__(self) -> str:
        return "the checks found errors: correct them, or confirm them with a reason"


@dataclass(frozen=True)
class Before:
    """A patient's rows as they were before a change (none for a new patient). Their findings are worked out only
    for the rules that find something after the change, of those reading what it changed: a finding is added
    only by such a rule (a save's check runs the catalogue once, for what the save changed, not twice)."""

    tables: dict[str, pd.DataFrame]


@dataclass(frozen=True)
class EntryChecks:
    """How a save is checked: the configuration and day of the rules, and the reason errors are confirmed with."""

    config: Config
    today: date
    confirmation: str | None = None  # None: errors refuse the save

    def findings(self, session: Session, patient_ids: Collection[int]) -> pd.DataFrame:
        """The patients' findings as the session's transaction sees them."""
        return check_patients(session.connection(), patient_ids, self.config, self.today)

    def before(self, session: Session, patient_id: int | None) -> Before:
        """The patient's rows before the change, as the session's transaction sees them."""
        return Before(load_patients(session.connection(), () if patient_id is None else (patient_id,)))

    def added(self, session: Session, patient_ids: Collection[int], before: pd.DataFrame | Before) -> pd.DataFrame:
        """The patients' findings now that are not among those before (the same rule, record, field and value).

        ``before`` is the findings before, or the rows before (:meth:`before`): then only the rules reading
        what changed run (:func:`registry.quality.incremental.check_change`)."""
        if isinstance(before, Before):
            now, before = check_change(before.tables, patient_ids, session.connection(), self.config, self.today)
        else:
            now = self.findings(session, patient_ids)
        known = pd.MultiIndex.from_frame(before[FINDING_KEY].fillna(""))
        return now[~pd.MultiIndex.from_frame(now[FINDING_KEY].fillna("")).isin(known)].reset_index(drop=True)

    @staticmethod
    def errors(added: pd.DataFrame) -> pd.DataFrame:
        """The error findings among ``added`` that refuse a change (a missing record never does)."""
        return added[(added["severity"] == Severity.ERROR.value) & ~added["rule"].map(is_missing_record)]

    def after(
        self, session: Session, patient_id: int, before: Before, *, record: tuple[str, str], actor: str
    ) -> pd.DataFrame:
        """The findings the flushed change adds; :class:`Unconfirmed` if errors are among them and not confirmed,
        else the confirmed errors are stored as reviews, each with a query answered by the confirmation (in the
        caller's audited session)."""
        added = self.added(session, [patient_id], before)
        errors = self.errors(added)
        if errors.empty:
            return added
        if self.confirmation is None:
            raise Unconfirmed(added, record)
        reason = CONFIRMED.format(reason=self.confirmation)
        session.info["reason"] = reason  # the reviews' audit entries carry the confirmation, the record's the save's
        for finding in errors.to_dict("records"):
            add_review(session, finding, patient_id=patient_id, comment=reason, actor=actor)
            open_confirmed(session, finding, patient_id, self.confirmation, actor)
        session.flush()
        return added
