"""Reviews of data-quality findings: a data manager confirms that a warned value is right.

A plausibility warning (a ferritin of 90,000 ng/mL) may describe a true value. Once a
data manager has checked it at source, the finding is answered: it stays in every
check run, marked verified with who, when and what was checked, and no longer counts
as open. A review holds for the value it verified; a changed value is a new finding.
Errors are never verified, only corrected. Reviews are audited like any change, and
reopening one (deleting the review) needs a reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.orm import Session

from registry.audit import audited_session
from registry.entry import EntryError, NoReason, reason_problem, require_reason
from registry.models import FindingReview, Patient
from registry.quality import Severity

#: What identifies a finding across check runs.
FINDING_KEY = ["rule", "table", "record", "field", "value"]
#: Columns :func:`with_reviews` adds to the findings.
REVIEW_COLUMNS = ["review_id", "reviewed_by", "reviewed_at", "review_comment"]


def verify(engine: sa.Engine, finding: Mapping[str, Any], *, comment: str, actor: str) -> None:
    """Record that the value of ``finding`` (a row of a check run's findings) was checked and is right."""
    problem = reason_problem(comment)  # the comment is the audit trail's reason too
    if problem == str(NoReason()):
        raise EntryError("say what was checked, and where (the comment is required)")
    if problem is not None:
        raise EntryError(f"the comment {problem}")
    comment = comment.strip()
    if finding["severity"] != Severity.WARNING.value:
        raise EntryError("an error cannot be verified: correct the data")
    with audited_session(engine, actor=actor, reason=comment) as session:
        patient_id = session.execute(sa.select(Patient.id).where(Patient.study_id == finding["study_id"])).scalar()
        add_review(session, finding, patient_id=patient_id, comment=comment, actor=actor)
        session.commit()


def add_review(
    session: Session, finding: Mapping[str, Any], *, patient_id: int | None, comment: str, actor: str
) -> None:
    """Store the review of ``finding`` in ``session`` (an audited one), in place of any review of an earlier value."""
    key = {"rule": finding["rule"], "table_name": finding["table"], "record_key": finding["record"],
           "field": finding["field"]}  # fmt: skip
    stale = session.execute(sa.select(FindingReview).filter_by(**key)).scalar()
    if stale is not None:  # the verdict on an earlier value of the same field, now replaced
        session.delete(stale)
        session.flush()
    session.add(FindingReview(**key, patient_id=patient_id, value=finding["value"], comment=comment,
                              reviewed_by=actor, reviewed_at=datetime.now(UTC)))  # fmt: skip


def reopen(engine: sa.Engine, review_id: int, *, actor: str, reason: str | None) -> None:
    """Withdraw a review: its finding counts as open again."""
    with audited_session(engine, actor=actor, reason=require_reason(reason)) as session:
        review = session.get(FindingReview, review_id)
        if review is None:
            raise LookupError(f"no review {review_id}")
        session.delete(review)
        session.commit()


def load_reviews(engine: sa.Engine) -> pd.DataFrame:
    """Every review, under the findings' column names."""
    query = sa.select(
        FindingReview.id.label("review_id"),
        FindingReview.rule,
        FindingReview.table_name.label("table"),
        FindingReview.record_key.label("record"),
        FindingReview.field,
        FindingReview.value,
        FindingReview.reviewed_by,
        FindingReview.reviewed_at,
        FindingReview.comment.label("review_comment"),
    )
    with engine.connect() as connection:
        return pd.DataFrame(connection.execute(query).mappings().all(), columns=[*FINDING_KEY, *REVIEW_COLUMNS])


def with_reviews(findings: pd.DataFrame, reviews: pd.DataFrame) -> pd.DataFrame:
    """``findings`` with the review that answers each (its value unchanged), or empty review columns."""
    left = findings.assign(_value=findings["value"].fillna(""))
    right = reviews.assign(_value=reviews["value"].fillna("")).drop(columns="value")
    merged = left.merge(right, how="left", on=[*FINDING_KEY[:-1], "_value"])  # an absent value matches an absent one
    merged = merged.drop(columns="_value").astype({"review_id": "Int64"})  # a merge leaves float ids
    merged = merged.astype({column: object for column in REVIEW_COLUMNS})
    return merged.where(merged.notna(), None)


def open_findings(findings: pd.DataFrame) -> pd.DataFrame:
    """The findings no review answers (``findings`` as :func:`with_reviews` gives them). An error is open until it is
    corrected: one confirmed at entry (registry.entry_checks) keeps its reason as a review, and stays open."""
    return findings[findings["review_id"].isna() | (findings["severity"] == Severity.ERROR.value)]
