"""Data cuts: the analysable data frozen at a cut-off, so that a report can be made again, identically, later.

A cut stores exactly what :func:`registry.tables.load_tables` returns at its creation
(live records, no direct identifiers, no bookkeeping columns) as gzip-compressed JSON:
one list of values per column, dates as ISO text, numbers as JSON numbers (Python
writes the shortest text that reads back to the same float), so any later version of
Python or pandas reads the same frames; never pickle. The SHA-256 of the JSON text is
stored beside it and verified on every read. A cut is written once, through the
audited session, and never changed or deleted (registry.audit refuses it).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import re
import zlib
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from registry.analysis.run import fingerprint
from registry.audit import audited_session
from registry.codes import AuditAction, RecordStatus
from registry.cohort import build_cohort
from registry.config import Config
from registry.db import as_utc
from registry.models import CUT_NAME_PATTERN, AuditLog, DataCut, PatientStatus
from registry.quality import run_checks
from registry.tables import DATA_TABLES, load_tables, typed

#: The snapshot's layout; a reader refuses a layout it does not know rather than guess.
SNAPSHOT_FORMAT = 1


class CutError(ValueError):
    """A cut cannot be made or read: bad name, duplicate, unknown or corrupted."""


class UnknownCut(CutError):
    """No cut has the name asked for."""


class CorruptedCut(CutError):
    """The stored snapshot no longer matches the SHA-256 recorded at creation."""


@dataclass(frozen=True)
class Cut:
    """What is known about a cut besides its snapshot: what the report and the results JSON name."""

    name: str
    cutoff_date: date
    created_at: datetime
    created_by: str
    reason: str | None
    snapshot_sha256: str
    row_counts: dict[str, int]
    data_fingerprint: str | None
    dq_errors: int
    dq_warnings: int
    signed_only: bool = False
    left_out: dict[str, int] | None = None  # signed-only: the live patients not frozen, by record status

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for the results document."""
        return {
            **dataclasses.asdict(self),
            "cutoff_date": self.cutoff_date.isoformat(),
            "created_at": self.created_at.astimezone(UTC).isoformat(timespec="seconds"),
        }

    def config(self, config: Config) -> Config:
        """``config`` with the cut's cut-off as data_cutoff: a cut is always analysed at its own cut-off."""
        return dataclasses.replace(config, data_cutoff=self.cutoff_date)


_METADATA = [DataCut.__table__.c[field.name] for field in dataclasses.fields(Cut)]


def _cut(row: sa.Row | DataCut) -> Cut:
    values = {field.name: getattr(row, field.name) for field in dataclasses.fields(Cut)}
    values["created_at"] = as_utc(values["created_at"])
    return Cut(**values)


def _column_values(values: pd.Series) -> list[Any]:
    """A column as JSON values: dates as ISO text, missing values as null."""
    present = values.notna()
    if pd.api.types.is_datetime64_any_dtype(values):  # numpy writes year 1 as 0001 (strftime: as 1)
        values = pd.Series(np.datetime_as_string(values.to_numpy(), unit="D"), index=values.index)
    return values.astype(object).where(present, None).tolist()


def snapshot_text(tables: dict[str, pd.DataFrame]) -> bytes:
    """``tables`` as the JSON text a cut stores (and hashes), column by column."""
    document = {
        "format": SNAPSHOT_FORMAT,
        "tables": {name: {c: _column_values(frame[c]) for c in frame.columns} for name, frame in tables.items()},
    }
    return json.dumps(document, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode("utf-8")


def tables_from_snapshot(text: bytes) -> dict[str, pd.DataFrame]:
    """The frames of a snapshot, typed as :func:`registry.tables.load_tables` types them."""
    document = json.loads(text)
    if document.get("format") != SNAPSHOT_FORMAT:
        raise CutError(
            f"snapshot format {document.get('format')!r} is not known (this version reads {SNAPSHOT_FORMAT})"
        )
    return {name: typed(pd.DataFrame(document["tables"][name]), table) for name, table in DATA_TABLES.items()}


def _check_name(name: str) -> None:
    length = DataCut.__table__.c.name.type.length
    if not re.fullmatch(CUT_NAME_PATTERN[0], name) or len(name) > length:
        raise CutError(f"Data cut name {name!r} is refused: a name {CUT_NAME_PATTERN[1]}, at most {length} characters")


def _existing(engine: sa.Engine, name: str) -> Cut | None:
    with engine.connect() as connection:
        row = connection.execute(sa.select(*_METADATA).where(DataCut.name == name)).first()
    return None if row is None else _cut(row)


def _duplicate(cut: Cut) -> CutError:
    return CutError(
        f"A data cut named {cut.name} already exists (cut-off {cut.cutoff_date}, made "
        f"{cut.created_at:%Y-%m-%d %H:%M} UTC by {cut.created_by}); cuts are never replaced: choose another name"
    )


def _consistent_tables(engine: sa.Engine, signed_only: bool) -> tuple[dict[str, pd.DataFrame], dict[str, int] | None]:
    """:func:`load_tables` in one read transaction, so that no change committed meanwhile is half in the snapshot;
    with ``signed_only``, of the signed patients alone, and the others counted by record status."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="REPEATABLE READ") as connection:
            return _tables(connection, signed_only)
    with engine.connect() as connection:
        connection.exec_driver_sql("BEGIN")  # pysqlite would run each SELECT in a read snapshot of its own
        try:
            return _tables(connection, signed_only)
        finally:
            connection.exec_driver_sql("ROLLBACK")


def _tables(connection: sa.Connection, signed_only: bool) -> tuple[dict[str, pd.DataFrame], dict[str, int] | None]:
    tables = load_tables(connection)
    if not signed_only:
        return tables, None
    statuses = dict(connection.execute(sa.select(PatientStatus.patient_id, PatientStatus.status)).all())
    status = tables["patient"]["id"].map(lambda patient: RecordStatus(statuses.get(patient, RecordStatus.IN_PROGRESS)))
    signed = set(tables["patient"]["id"][status == RecordStatus.SIGNED])
    left_out = {s.value: int((status == s).sum()) for s in RecordStatus if s is not RecordStatus.SIGNED}
    kept = {
        name: frame[frame["id" if name == "patient" else "patient_id"].isin(signed)].reset_index(drop=True)
        if name != "site" else frame
        for name, frame in tables.items()
    }  # fmt: skip
    return kept, left_out


def create_cut(
    engine: sa.Engine,
    name: str,
    cutoff: date,
    *,
    actor: str,
    reason: str | None,
    config: Config,
    signed_only: bool = False,
) -> Cut:
    """Freeze the live data under ``name`` with cut-off ``cutoff``; audited as made by ``actor`` for ``reason``.
    With ``signed_only``, only the signed patients' data (registry/signoff.py); the cut records how many patients
    it left out, by record status.

    The data-quality status and the analysis fingerprint are those of the snapshot under
    ``config`` with ``cutoff`` as data_cutoff, as `registry report --cut` will find them.
    """
    _check_name(name)
    if (existing := _existing(engine, name)) is not None:
        raise _duplicate(existing)
    created_at = datetime.now(UTC)
    if cutoff > created_at.date():
        raise CutError(f"The cut-off {cutoff} lies in the future (today is {created_at.date()} UTC)")
    tables, left_out = _consistent_tables(engine, signed_only)
    frozen = dataclasses.replace(config, data_cutoff=cutoff)
    checks = run_checks(tables, frozen, created_at.date())
    text = snapshot_text(tables)
    made = DataCut(
        name=name,
        cutoff_date=cutoff,
        created_at=created_at,
        created_by=actor,
        reason=reason,
        snapshot=gzip.compress(text, compresslevel=6, mtime=0),  # zlib's default level: 9 is slower, barely smaller
        snapshot_sha256=hashlib.sha256(text).hexdigest(),
        row_counts={table: len(frame) for table, frame in tables.items()},
        data_fingerprint=_fingerprint(tables, frozen),
        dq_errors=checks.errors,
        dq_warnings=checks.warnings,
        signed_only=signed_only,
        left_out=left_out,
    )
    with audited_session(engine, actor, reason or f"data cut {name}") as session:
        session.add(made)
        try:
            session.commit()
        except sa.exc.IntegrityError:  # made under the same name meanwhile
            session.rollback()
            raise _duplicate(_existing(engine, name)) from None
        return _cut(made)  # as stored and read back (SQLite gives the time without its zone)


def list_cuts(engine: sa.Engine) -> list[Cut]:
    """Every cut, oldest first (their snapshots are not read)."""
    with engine.connect() as connection:
        return [_cut(row) for row in connection.execute(sa.select(*_METADATA).order_by(DataCut.created_at))]


def load_cut(engine: sa.Engine, name: str, config: Config | None = None) -> tuple[dict[str, pd.DataFrame], Cut]:
    """The frozen tables of the cut ``name`` and what is known about it, once verified (:class:`CorruptedCut`).

    Verified: the snapshot against its SHA-256, the cut's record against the audit entry
    of its creation, the row counts against the snapshot, and, when ``config`` is given
    (the configuration the cut is analysed under), the data fingerprint against the one
    of the analysis table made from the snapshot.
    """
    with engine.connect() as connection:
        row = connection.execute(
            sa.select(DataCut.id, DataCut.snapshot, *_METADATA).where(DataCut.name == name)
        ).first()
        if row is None:
            raise UnknownCut(f"No data cut named {name}: `registry cut list` shows the cuts")
        created = connection.execute(
            sa.select(AuditLog.new_values).where(
                AuditLog.table_name == DataCut.__tablename__,
                AuditLog.record_key == str(row.id),
                AuditLog.action == AuditAction.INSERT,
            )
        ).scalar()
    cut = _cut(row)
    try:
        text = gzip.decompress(row.snapshot)
    except (OSError, EOFError, zlib.error):
        text = b""
    if hashlib.sha256(text).hexdigest() != cut.snapshot_sha256:
        raise CorruptedCut(
            f"Data cut {name} is corrupted: its snapshot does not match the SHA-256 recorded at creation "
            f"({cut.snapshot_sha256}); it cannot be used (restore the database from a backup)"
        )
    stored = {field: getattr(cut, field) for field in _AUDITED_FIELDS} | {"cutoff_date": cut.cutoff_date.isoformat()}
    logged = {**_BEFORE_SIGN_OFF, **(created or {})}
    if changed := [field for field in _AUDITED_FIELDS if logged.get(field) != stored[field]]:
        raise CorruptedCut(
            f"Data cut {name} is corrupted: its {' and '.join(changed)} differ{'s' * (len(changed) == 1)} from the "
            "audit entry of its creation; "
            "it cannot be used (restore the database from a backup)"
        )
    tables = tables_from_snapshot(text)
    if {table: len(frame) for table, frame in tables.items()} != cut.row_counts:
        raise CorruptedCut(
            f"Data cut {name} is corrupted: its snapshot does not hold the rows recorded at creation "
            f"({cut.row_counts}); it cannot be used (restore the database from a backup)"
        )
    if config is not None and (found := _fingerprint(tables, cut.config(config))) != cut.data_fingerprint:
        raise CorruptedCut(
            f"Data cut {name} does not match its snapshot: the analysis table made from it has the fingerprint "
            f"{found}, the cut recorded {cut.data_fingerprint} at creation: the snapshot was rewritten, or the "
            "configuration (enrolment window, windows, drugs) differs from the one the cut was made under; "
            "it is not used"
        )
    return tables, cut


#: What the audit entry of a cut's creation records of it, compared on every read.
_AUDITED_FIELDS = ("snapshot_sha256", "data_fingerprint", "row_counts", "cutoff_date", "signed_only", "left_out")
#: What a cut made before record statuses existed (migration 0011) was: every live patient frozen.
_BEFORE_SIGN_OFF = {"signed_only": False, "left_out": None}


def _fingerprint(tables: dict[str, pd.DataFrame], config: Config) -> str | None:
    """The data fingerprint of the analysis table of ``tables``; None when no patient is analysable."""
    cohort = build_cohort(tables, config)
    return None if cohort.table.empty else fingerprint(cohort.table)
