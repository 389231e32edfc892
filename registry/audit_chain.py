"""The audit log as a hash chain: an entry changed, removed or slipped in afterwards is found by walking it.

Every transaction that writes audit entries seals them as it commits (a connection
``commit`` event): it writes a random token into each of its entries (``audit_log.batch``)
and, at the commit, one ``audit_seal`` row holding its position in the chain
(``chain_index``: 1, 2, ...), how many entries it wrote and their first and last id,
the SHA-256 of their content (:func:`content_sha256`, entry by entry in id order), the
hash of the seal before it (``previous_sha256``; 64 zeros for the first) and its own
hash (``seal_sha256``, of those). Changing an entry changes its content hash; removing
one changes its seal's count; removing a seal leaves a gap in the positions; replacing
one breaks the link of the next; an entry no seal holds was written around the registry.

Why a seal per transaction and not chain columns in each entry: the entries are never
updated, so the triggers of migration 0007 refuse every UPDATE and DELETE of
``audit_log`` without exception, and sealing costs one aggregate query and one insert
per transaction. Chaining each entry meant an UPDATE of each entry as its transaction
committed, which took 1.3 s (SQLite) and 4.5 s (PostgreSQL) for the 147,500 entries of
a 10,000-patient import (its import took 2.3 and 7.3 s without); the seal takes about a
tenth of that (docs/benchmarks.md). The price: a broken seal names its transaction's
entries, not the one entry changed (one entry for most web edits, a whole workbook for
an import).

The content is hashed by the database, from the text it keeps: the bulk import's
``INSERT ... SELECT`` and the ORM's flush hook are sealed alike, and what is hashed is
exactly what :func:`verify_chain` reads later. Sealing at the commit, when the
transaction holds every other lock it will take, keeps the chain's lock short and free
of deadlocks: on PostgreSQL a transaction-scoped advisory lock makes writers seal one
after the other (each sees the previous one's committed seal), on SQLite the one
writer at a time holds the database. The chain follows commit order, not ``id`` order,
as concurrent PostgreSQL writers interleave ids.

The chain makes visible what gets past the triggers (a trigger dropped, a database file
edited, a backup rewritten); it cannot tell a forged tail that was chained anew from
the real one: a backup's manifest records the head to compare with.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from itertools import chain
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects.postgresql import aggregate_order_by

#: The previous hash of the first seal.
CHAIN_START = "0" * 64

#: The PostgreSQL advisory lock (transaction-scoped) that writers take to seal their entries one at a time ("MDA5").
CHAIN_LOCK = 0x4D444135

#: Rows read per round trip by :func:`verify_chain`: a log of millions of entries is streamed, never held in memory.
BATCH = 10_000

#: audit_log as the chain reads it (its content, as stored text) and audit_seal.
ENTRIES = sa.table(
    "audit_log",
    sa.column("id", sa.Integer),
    sa.column("changed_at", sa.DateTime(timezone=True)),
    *(sa.column(name, sa.Text) for name in ("actor", "reason", "action", "table_name", "record_key", "study_id",
                                             "old_values", "new_values", "batch")),
)  # fmt: skip
SEALS = sa.table(
    "audit_seal",
    *(sa.column(name, sa.Integer) for name in ("chain_index", "entries", "first_id", "last_id")),
    *(sa.column(name, sa.Text) for name in ("batch", "content_sha256", "previous_sha256", "seal_sha256")),
)


def content_sha256(connection: sa.Connection) -> sa.ColumnElement[str]:
    """SHA-256 (hex) of an entry's content, computed by the database from the text it keeps: nothing is parsed.

    The content is the database's own JSON array of the entry's fields (``id``, the time
    as SQLite stores it, ``2026-12-02 06:10:34.562583``, UTC, PostgreSQL writing its own
    the same way; actor, reason, action, table_name, record_key, study_id, batch), a line
    break, ``old_values``, a line break, ``new_values``, each JSON value as written
    (empty for none). SQLite keeps text, and PostgreSQL's ``json`` type (not ``jsonb``)
    keeps its input verbatim, through pg_dump and pg_restore too. PostgreSQL hashes in C,
    SQLite with Python's hashlib, called once per entry.
    """
    entries = ENTRIES.c
    fields = [entries.id, entries.changed_at, entries.actor, entries.reason, entries.action, entries.table_name,
              entries.record_key, entries.study_id, entries.batch]  # fmt: skip
    if connection.dialect.name == "postgresql":
        fields[1] = sa.func.to_char(sa.func.timezone("UTC", entries.changed_at), "YYYY-MM-DD HH24:MI:SS.US")
        text = sa.cast(sa.func.json_build_array(*fields), sa.Text)
        for values in (entries.old_values, entries.new_values):
            text = text + sa.literal_column("E'\\n'") + sa.func.coalesce(sa.cast(values, sa.Text), "")
        return sa.func.encode(sa.func.sha256(sa.func.convert_to(text, "UTF8")), "hex")
    connection.connection.driver_connection.create_function(_SHA256, 1, _sha256, deterministic=True)
    text = sa.type_coerce(sa.func.json_array(*fields), sa.Text)
    for values in (entries.old_values, entries.new_values):
        text = text + sa.func.char(10) + sa.func.coalesce(values, "")
    return getattr(sa.func, _SHA256)(text)


#: The SQLite function giving the SHA-256 (hex) of a text's UTF-8 bytes.
_SHA256 = "registry_sha256"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def seal_sha256(previous_sha256: str, chain_index: int, entries: int, first: int, last: int, content: str) -> str:
    """A seal's own hash: of the seal before it, its position, its count of entries, their first and last id and
    their content hash."""
    text = f"{previous_sha256}\n{chain_index}\n{entries}\n{first}\n{last}\n{content}"
    return hashlib.sha256(text.encode()).hexdigest()


def batch_of(connection: sa.Connection) -> str:
    """The token the entries of the transaction of ``connection`` carry: its commit seals them (:func:`seal`).

    The newest entry id before them is noted too: every id the transaction takes is
    above it (a sequence never gives a smaller value later), so that the seal reads the
    transaction's entries by a range of the primary key, and ``batch`` needs no index.
    """
    if (batch := connection.info.get(_BATCH)) is None:
        before = connection.execute(sa.select(sa.func.max(ENTRIES.c.id))).scalar() or 0
        batch = connection.info[_BATCH] = (uuid.uuid4().hex, before)
    return batch[0]


#: Where a connection's ``info`` keeps the token of its transaction's entries, and the newest entry id before them.
_BATCH = "registry_audit_batch"


@event.listens_for(sa.Engine, "commit")
def _seal_as_the_transaction_commits(connection: sa.Connection) -> None:
    if (batch := connection.info.pop(_BATCH, None)) is not None:
        seal(connection, *batch)


@event.listens_for(sa.Engine, "rollback")
def _nothing_to_seal(connection: sa.Connection) -> None:
    connection.info.pop(_BATCH, None)


def seal(connection: sa.Connection, batch: str, after: int) -> int:
    """Chain the entries carrying ``batch`` (each with an id above ``after``) onto the newest seal, as one seal;
    returns how many (none: no seal).

    Run as the transaction commits, and by migration 0007 for the entries written before it.
    """
    entries = ENTRIES.c
    if connection.dialect.name == "postgresql":
        ordered = sa.func.string_agg(
            content_sha256(connection), aggregate_order_by(sa.literal_column("''"), entries.id)
        )
        digest = sa.func.encode(sa.func.sha256(sa.func.convert_to(ordered, "UTF8")), "hex")
        found = sa.select(sa.func.count(), sa.func.min(entries.id), sa.func.max(entries.id), digest)
        found = found.where(entries.id > after, entries.batch == batch)
    else:  # an aggregate over rows in id order (SQLite does not reorder a subquery's rows under an aggregate)
        connection.connection.driver_connection.create_aggregate(_DIGEST, 1, _Digest)
        hashed = sa.select(entries.id, content_sha256(connection).label("sha256"))
        hashed = hashed.where(entries.id > after, entries.batch == batch)
        hashed = hashed.order_by(entries.id).subquery()
        found = sa.select(sa.func.count(), sa.func.min(hashed.c.id), sa.func.max(hashed.c.id),
                          getattr(sa.func, _DIGEST)(hashed.c.sha256))  # fmt: skip
    count, first, last, content = connection.execute(found).one()
    if not count:
        return 0
    if connection.dialect.name == "postgresql":  # the entries are hashed before: the lock is held only to chain
        connection.execute(sa.select(sa.func.pg_advisory_xact_lock(CHAIN_LOCK)))
    head = connection.execute(
        sa.select(SEALS.c.chain_index, SEALS.c.seal_sha256).order_by(SEALS.c.chain_index.desc()).limit(1)
    ).first()
    index, previous = (1, CHAIN_START) if head is None else (head.chain_index + 1, head.seal_sha256)
    connection.execute(sa.insert(SEALS).values(
        chain_index=index, batch=batch, entries=count, first_id=first, last_id=last, content_sha256=content,
        previous_sha256=previous, seal_sha256=seal_sha256(previous, index, count, first, last, content),
    ))  # fmt: skip
    return count


#: The SQLite aggregate giving the SHA-256 (hex) of its rows' texts, joined in the order given.
_DIGEST = "registry_sha256_of_all"


class _Digest:
    def __init__(self) -> None:
        self.digest = hashlib.sha256()

    def step(self, text: str) -> None:
        self.digest.update(text.encode())

    def finalize(self) -> str:
        return self.digest.hexdigest()


@dataclass(frozen=True)
class ChainReport:
    """What :func:`verify_chain` found: how many entries hold, the head seal, and the first broken entry, if any."""

    entries: int  # entries verified, from the first on
    head_index: int  # chain position of the newest seal verified
    head_sha256: str
    problem: str | None  # the first broken entries, in words; None when the whole log is intact

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
    """Walk the whole chain, seal by seal in position order with each seal's entries, streamed; stop at the first
    break.

    Broken: a seal whose entries no longer give its content hash (an entry changed) or
    its count (removed, or inserted), a seal that no longer gives its own hash (changed),
    a gap in the positions (seals removed), a seal that does not follow the one before it
    (replaced, or one slipped in), or an entry no seal holds (written around the registry).
    """
    joined = SEALS.outerjoin(ENTRIES, _sealed_by(SEALS))
    rows = connection.execution_options(stream_results=True, yield_per=BATCH).execute(
        sa.select(SEALS.c.chain_index, SEALS.c.entries, SEALS.c.first_id, SEALS.c.last_id, SEALS.c.content_sha256,
                  SEALS.c.previous_sha256, SEALS.c.seal_sha256, ENTRIES.c.id, content_sha256(connection))
        .select_from(joined).order_by(SEALS.c.chain_index, ENTRIES.c.id)
    )  # fmt: skip
    position, previous, verified, problem = 0, CHAIN_START, 0, None
    seal, found, digest = None, 0, hashlib.sha256()
    for row in chain(rows, [None]):  # None: the end, which closes the last seal
        if seal is not None and (row is None or row[0] != seal[0]):
            problem = _broken(seal, found, digest.hexdigest(), position, previous)
            if problem:
                break
            position, previous, verified = seal[0], seal[6], verified + found
        if row is None:
            break
        if seal is None or row[0] != seal[0]:
            seal, found, digest = row[:7], 0, hashlib.sha256()
        if row[7] is not None:
            found += 1
            digest.update(row[8].encode())
    rows.close()
    if problem is None:
        outside = connection.execute(
            sa.select(sa.func.min(ENTRIES.c.id)).where(
                ENTRIES.c.batch.is_(None) | ~sa.exists().where(_sealed_by(SEALS))
            )
        ).scalar()
        if outside is not None:
            problem = f"audit entry {outside}: inserted outside the chain (no seal holds it)"
    return ChainReport(verified, position, previous, problem)


def _sealed_by(seals: sa.TableClause) -> sa.ColumnElement[bool]:
    """An entry is held by the seal of its batch, within the seal's ids (read by the primary key: no index on batch)."""
    return (ENTRIES.c.id.between(seals.c.first_id, seals.c.last_id)) & (ENTRIES.c.batch == seals.c.batch)


def _broken(seal: tuple, found: int, content: str, position: int, previous: str) -> str | None:
    """What is wrong with a seal and the entries found for it, in words; None when nothing is."""
    index, entries, first, last, recorded, previous_sha256, sha256 = seal
    named = f"audit entries {first} to {last} (sealed together at chain position {index})"
    if index != position + 1:
        return f"{named}: seals are missing before them: the chain jumps from position {position}"
    if found != entries:
        change = f"{entries - found} removed" if found < entries else f"{found - entries} inserted among them"
        return f"{named}: the seal holds {entries}, {found} are found ({change})"
    if content != recorded:
        return f"{named}: an entry's content was changed after it was written (they no longer give their seal's hash)"
    if sha256 != seal_sha256(previous_sha256, index, entries, first, last, recorded):
        return f"{named}: their seal was changed (it no longer gives its own hash)"
    if previous_sha256 != previous:
        return f"{named}: the chain is broken: their seal does not follow the one before it (replaced or inserted)"
    return None


def has_chain(connection: sa.Connection) -> bool:
    """Whether the schema of the database has the audit chain (migration 0007 or later)."""
    inspector = sa.inspect(connection)
    return inspector.has_table("audit_seal")


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
