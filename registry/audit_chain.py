"""The audit log as a hash chain: an entry changed, removed or slipped in afterwards is found by walking it.

Each entry holds its position in the chain (``chain_index``: 1, 2, ...), the hash of
the entry before it (``previous_sha256``; 64 zeros for the first) and its own hash
(``entry_sha256``): SHA-256 of the previous hash, a line break and the entry's content
in a canonical form (:func:`canonical`). Changing an entry changes its hash; removing
one leaves a gap in the positions; replacing one breaks the link of the next.

Entries are written with empty chain columns, by the ORM's flush hook and by the bulk
import's one ``INSERT ... SELECT`` alike, and sealed as their transaction commits
(:func:`seal`, run by a connection ``commit`` event): the content is read back as
stored, so that what is hashed is exactly what :func:`verify_chain` reads later on
either database, and the bulk path builds no entry in Python. Sealing at the commit,
when the transaction holds every other lock it will take, keeps the chain's lock short
and free of deadlocks: on PostgreSQL a transaction-scoped advisory lock makes writers
seal one after the other (each sees the previous one's committed head), on SQLite the
one writer at a time holds the database. The chain follows commit order, not ``id``
order, as concurrent PostgreSQL writers interleave ids.

The database allows one UPDATE of an entry, the seal, which sets its chain columns
from empty and changes nothing else; any other UPDATE or DELETE is refused by triggers
(migration 0007). The chain makes visible what gets past them (a trigger dropped, a
database file edited, a backup rewritten); it cannot tell a forged tail that was
chained anew from the real one: a backup's manifest records the head to compare with.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

#: The previous hash of the first entry.
CHAIN_START = "0" * 64

#: The PostgreSQL advisory lock (transaction-scoped) that writers take to seal their entries one at a time ("MDA5").
CHAIN_LOCK = 0x4D444135

#: Entries read or sealed per statement: a log of millions of entries is streamed, never held in memory.
BATCH = 10_000

#: audit_log as the chain reads it: the content hashed (action as its stored text) and the chain columns.
ENTRIES = sa.table(
    "audit_log",
    sa.column("id", sa.Integer),
    sa.column("changed_at", sa.DateTime(timezone=True)),
    sa.column("actor", sa.String),
    sa.column("reason", sa.String),
    sa.column("action", sa.String),
    sa.column("table_name", sa.String),
    sa.column("record_key", sa.String),
    sa.column("study_id", sa.String),
    sa.column("old_values", sa.JSON(none_as_null=True)),
    sa.column("new_values", sa.JSON(none_as_null=True)),
    sa.column("chain_index", sa.Integer),
    sa.column("previous_sha256", sa.String),
    sa.column("entry_sha256", sa.String),
)
_CONTENT = ("id", "changed_at", "actor", "reason", "action", "table_name", "record_key", "study_id", "old_values",
            "new_values")  # fmt: skip


def canonical(entry: Mapping[str, Any], chain_index: int) -> bytes:
    """An entry's content as the text its hash covers: JSON with sorted keys, no spaces, the time in UTC.

    The time is written to the microsecond with a ``Z`` (SQLite gives it back without its
    zone: it was stored in UTC); the JSON values are hashed as read back, so the order of
    their keys and the way each database keeps JSON do not matter.
    """
    content = {name: entry[name] for name in _CONTENT}
    changed = content["changed_at"]
    changed = changed.replace(tzinfo=UTC) if changed.tzinfo is None else changed.astimezone(UTC)
    content["changed_at"] = f"{changed:%Y-%m-%dT%H:%M:%S.%f}Z"
    content["chain_index"] = chain_index
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def entry_sha256(previous_sha256: str, entry: Mapping[str, Any], chain_index: int) -> str:
    """The hash of an entry at ``chain_index`` that follows the entry whose hash is ``previous_sha256``."""
    return hashlib.sha256(previous_sha256.encode("ascii") + b"\n" + canonical(entry, chain_index)).hexdigest()


def _head(connection: sa.Connection) -> tuple[int, str]:
    """The position and hash of the newest sealed entry (0 and :data:`CHAIN_START` when there is none)."""
    last = connection.execute(
        sa.select(ENTRIES.c.chain_index, ENTRIES.c.entry_sha256)
        .where(ENTRIES.c.chain_index.is_not(None))
        .order_by(ENTRIES.c.chain_index.desc())
        .limit(1)
    ).first()
    return (0, CHAIN_START) if last is None else (last.chain_index, last.entry_sha256)


_SEAL = (
    sa.update(ENTRIES)
    .where(ENTRIES.c.id == sa.bindparam("entry_id"))
    .values(
        chain_index=sa.bindparam("position"),
        previous_sha256=sa.bindparam("previous"),
        entry_sha256=sa.bindparam("sha256"),
    )
)


def seal(connection: sa.Connection) -> int:
    """Chain every unsealed entry this transaction sees onto the head, in ``id`` order; returns how many.

    Run as the transaction commits (:func:`mark_unsealed`) and by migration 0007 for the
    entries written before it.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(sa.select(sa.func.pg_advisory_xact_lock(CHAIN_LOCK)))
    position, previous = _head(connection)
    sealed, after = 0, 0
    while True:
        batch = connection.execute(
            sa.select(*(ENTRIES.c[name] for name in _CONTENT))
            .where(ENTRIES.c.chain_index.is_(None), ENTRIES.c.id > after)
            .order_by(ENTRIES.c.id)
            .limit(BATCH)
        ).all()
        if not batch:
            return sealed
        links = []
        for entry in batch:
            position += 1
            sha256 = entry_sha256(previous, entry._mapping, position)
            links.append({"entry_id": entry.id, "position": position, "previous": previous, "sha256": sha256})
            previous = sha256
        connection.execute(_SEAL, links)
        sealed, after = sealed + len(batch), batch[-1].id


#: Set in a connection's ``info`` by whatever writes an entry: its commit seals the entries first.
_UNSEALED = "registry_audit_unsealed"


def mark_unsealed(connection: sa.Connection) -> None:
    """Have the transaction of ``connection`` seal its new entries as it commits."""
    connection.info[_UNSEALED] = True


@event.listens_for(sa.Engine, "commit")
def _seal_as_the_transaction_commits(connection: sa.Connection) -> None:
    if connection.info.pop(_UNSEALED, False):
        seal(connection)


@event.listens_for(sa.Engine, "rollback")
def _nothing_to_seal(connection: sa.Connection) -> None:
    connection.info.pop(_UNSEALED, None)


@dataclass(frozen=True)
class ChainReport:
    """What :func:`verify_chain` found: how many entries hold, the head, and the first broken entry, if any."""

    entries: int  # entries verified, from the first on
    head_index: int
    head_sha256: str
    problem: str | None  # the first broken entry, in words; None when the whole log is intact

    @property
    def intact(self) -> bool:
        return self.problem is None

    def as_dict(self) -> dict[str, Any]:
        """For a backup's manifest."""
        return {"entries": self.entries, "head_index": self.head_index, "head_sha256": self.head_sha256,
                "intact": self.intact, "problem": self.problem}  # fmt: skip

    @classmethod
    def from_dict(cls, recorded: dict[str, Any]) -> ChainReport:
        """As :meth:`as_dict` wrote it."""
        return cls(recorded["entries"], recorded["head_index"], recorded["head_sha256"], recorded["problem"])


def verify_chain(connection: sa.Connection) -> ChainReport:
    """Walk the whole chain, streamed in position order, and stop at the first broken entry.

    Broken: an entry whose content no longer gives its hash (changed), a gap in the
    positions (entries removed), an entry that does not follow the one before it
    (replaced, or one slipped in), or a committed entry outside the chain (written
    around the registry, or its chain columns cleared).
    """
    position, previous, count = 0, CHAIN_START, 0
    entries = connection.execution_options(stream_results=True, yield_per=BATCH).execute(
        sa.select(ENTRIES).where(ENTRIES.c.chain_index.is_not(None)).order_by(ENTRIES.c.chain_index)
    )
    problem = None
    for entry in entries:
        named = f"audit entry {entry.id} (chain position {entry.chain_index})"
        if entry.chain_index != position + 1:
            problem = f"{named}: entries are missing before it: the chain jumps from position {position}"
        elif entry.entry_sha256 != entry_sha256(entry.previous_sha256, entry._mapping, entry.chain_index):
            problem = f"{named}: its content was changed after it was written (it no longer gives its hash)"
        elif entry.previous_sha256 != previous:
            problem = f"{named}: the chain is broken: it does not follow the entry before it (replaced or inserted)"
        if problem:
            entries.close()
            return ChainReport(count, position, previous, problem)
        position, previous, count = entry.chain_index, entry.entry_sha256, count + 1
    outside = connection.execute(
        sa.select(ENTRIES.c.id).where(ENTRIES.c.chain_index.is_(None)).order_by(ENTRIES.c.id).limit(1)
    ).scalar()
    if outside is not None:
        problem = f"audit entry {outside}: inserted outside the chain (it has no chain position)"
    return ChainReport(count, position, previous, problem)


def has_chain(connection: sa.Connection) -> bool:
    """Whether the schema of the database has the audit chain (migration 0007 or later)."""
    inspector = sa.inspect(connection)
    return inspector.has_table("audit_log") and "chain_index" in {c["name"] for c in inspector.get_columns("audit_log")}


def verified(connection: sa.Connection) -> ChainReport | None:
    """:func:`verify_chain`; None when the schema has no chain (before migration 0007)."""
    return verify_chain(connection) if has_chain(connection) else None


def verify_database(engine: sa.Engine) -> ChainReport | None:
    """:func:`verified` in the database of ``engine``."""
    with engine.connect() as connection:
        return verified(connection)


def chain_head_message(report: ChainReport) -> str:
    """The chain in one line, as a command prints it."""
    entries = f"{report.entries:,} entr{'y' if report.entries == 1 else 'ies'}"
    if report.intact:
        return f"audit log intact: {entries}, head {report.head_index} {report.head_sha256}"
    return f"audit log BROKEN at {report.problem} ({entries} verified before it)"
