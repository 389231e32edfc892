"""The audit log as a hash chain: an entry changed, removed or slipped in afterwards is found by walking it.

Every transaction that writes audit entries seals them as it commits (a connection
``commit`` event): it writes a random token into each of its entries (``audit_log.batch``)
and, at the commit, one ``audit_entry_hash`` row per entry (the SHA-256 of its content,
:func:`content_sha256`, and that of the entry before it in the chain: in id order within
the transaction, the first one's the last entry of the seal before) and one
``audit_seal`` row holding its position in the chain (``chain_index``: 1, 2, ...), how
many entries it wrote and their first and last id, the SHA-256 of their content hashes
in id order, the hash of the seal before it (``previous_sha256``; 64 zeros for the
first) and its own hash (``seal_sha256``, of those). Changing an entry changes its
content hash; removing one breaks the link of the next and its seal's count; one
without a stored hash was slipped in; removing a seal leaves a gap in the positions;
replacing one breaks the link of the next; an entry no seal holds was written around
the registry. So :func:`verify_chain` names the one entry, even among an import's.

Why hashes in rows of their own and a seal per transaction, not chain columns in each
entry: the entries are never updated, so the triggers of migration 0007 refuse every
UPDATE and DELETE of ``audit_log`` (and of the hashes and seals) without exception, and
sealing costs one ``INSERT ... SELECT`` of the hashes, one aggregate over them and two
small inserts per transaction. Chain columns in the entries meant an UPDATE of each
entry as its transaction committed, which took 1.3 s (SQLite) and 4.5 s
(PostgreSQL) for the 147,500 entries of a 10,000-patient import (its import took 2.3
and 7.3 s without); inserting the hashes costs a fraction of that (docs/benchmarks.md).

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

#: The previous hash of the first seal and of the first entry.
CHAIN_START = "0" * 64

#: The PostgreSQL advisory lock (transaction-scoped) that writers take to seal their entries one at a time ("MDA5").
CHAIN_LOCK = 0x4D444135

#: Rows read per round trip by :func:`verify_chain`: a log of millions of entries is streamed, never held in memory.
BATCH = 10_000

#: audit_log as the chain reads it (its content, as stored text), audit_seal and audit_entry_hash.
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
HASHES = sa.table(
    "audit_entry_hash",
    sa.column("entry_id", sa.Integer),
    sa.column("content_sha256", sa.Text),
    sa.column("previous_sha256", sa.Text),
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

    Each entry's content is hashed once, by the database: one ``INSERT ... SELECT`` stores
    the hashes of all but the first entry, each linked to the entry before it (LAG over
    ids); the seal's content hash is the aggregate of those. Only the first entry's link
    (to the last entry of the seal before) waits for the chain's lock, with the seal, so
    that on PostgreSQL the lock is held only to read the head and insert two rows.
    Run as the transaction commits, and by migration 0007 for the entries written before it.
    """
    entries, hashes = ENTRIES.c, HASHES.c
    mine = (entries.id > after) & (entries.batch == batch)
    hashing = sa.select(entries.id, content_sha256(connection).label("sha256")).where(mine)
    if (first := connection.execute(hashing.order_by(entries.id).limit(1)).first()) is None:
        return 0
    hashed = hashing.cte("hashed").prefix_with("MATERIALIZED")  # SQLite would otherwise hash twice, for LAG too
    linked = sa.select(hashed.c.id, hashed.c.sha256, sa.func.lag(hashed.c.sha256).over(order_by=hashed.c.id))
    linked = linked.subquery()
    connection.execute(sa.insert(HASHES).from_select(
        ["entry_id", "content_sha256", "previous_sha256"], sa.select(linked).where(linked.c.id > first.id)
    ))  # fmt: skip
    stored = (
        sa.select(hashes.entry_id.label("id"), hashes.content_sha256.label("sha256"))
        .join(ENTRIES, entries.id == hashes.entry_id)
        .where(mine, entries.id > first.id)
    )
    alone = sa.select(sa.literal(first.id).label("id"), sa.literal(first.sha256).label("sha256"))
    ordered = sa.union_all(alone, stored).subquery()
    if connection.dialect.name == "postgresql":
        joined = sa.func.string_agg(ordered.c.sha256, aggregate_order_by(sa.literal_column("''"), ordered.c.id))
        digest = sa.func.encode(sa.func.sha256(sa.func.convert_to(joined, "UTF8")), "hex")
    else:  # an aggregate over rows in id order (SQLite does not reorder a subquery's rows under an aggregate)
        connection.connection.driver_connection.create_aggregate(_DIGEST, 1, _Digest)
        ordered = sa.select(ordered).order_by(ordered.c.id).subquery()
        digest = getattr(sa.func, _DIGEST)(ordered.c.sha256)
    count, last, content = connection.execute(sa.select(sa.func.count(), sa.func.max(ordered.c.id), digest)).one()
    if connection.dialect.name == "postgresql":  # the entries are hashed before: the lock is held only to chain
        connection.execute(sa.select(sa.func.pg_advisory_xact_lock(CHAIN_LOCK)))
    head = connection.execute(
        sa.select(SEALS.c.chain_index, SEALS.c.seal_sha256, SEALS.c.last_id)
        .order_by(SEALS.c.chain_index.desc()).limit(1)
    ).first()  # fmt: skip
    index, previous, before = (1, CHAIN_START, None) if head is None else (head.chain_index + 1, *head[1:])
    last_entry = connection.execute(sa.select(hashes.content_sha256).where(hashes.entry_id == before)).scalar()
    connection.execute(sa.insert(HASHES).values(
        entry_id=first.id, content_sha256=first.sha256, previous_sha256=last_entry or CHAIN_START
    ))  # fmt: skip
    connection.execute(sa.insert(SEALS).values(
        chain_index=index, batch=batch, entries=count, first_id=first.id, last_id=last, content_sha256=content,
        previous_sha256=previous, seal_sha256=seal_sha256(previous, index, count, first.id, last, content),
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
    """Walk the whole chain, seal by seal in position order with each seal's entries in id order, streamed; stop at
    the first break.

    Broken: an entry whose content no longer gives its stored hash (changed), whose link
    is not the stored hash of the entry before it (that one removed or replaced) or that
    has no stored hash (slipped in); a gap in the seals' positions (seals removed); a seal
    whose entries no longer give its count or content hash, that no longer gives its own
    hash (changed) or does not follow the one before it (replaced, or one slipped in); or
    an entry no seal holds (written around the registry).
    """
    joined = SEALS.outerjoin(ENTRIES, _sealed_by(SEALS)).outerjoin(HASHES, HASHES.c.entry_id == ENTRIES.c.id)
    rows = connection.execution_options(stream_results=True, yield_per=BATCH).execute(
        sa.select(SEALS.c.chain_index, SEALS.c.entries, SEALS.c.first_id, SEALS.c.last_id, SEALS.c.content_sha256,
                  SEALS.c.previous_sha256, SEALS.c.seal_sha256, ENTRIES.c.id, content_sha256(connection),
                  HASHES.c.content_sha256, HASHES.c.previous_sha256)
        .select_from(joined).order_by(SEALS.c.chain_index, ENTRIES.c.id)
    )  # fmt: skip
    position, previous, verified, problem = 0, CHAIN_START, 0, None
    seal, found, digest, last_entry = None, 0, hashlib.sha256(), CHAIN_START
    for row in chain(rows, [None]):  # None: the end, which closes the last seal
        if seal is not None and (row is None or row[0] != seal[0]):
            problem = _broken(seal, found, digest.hexdigest(), previous)
            if problem:
                break
            position, previous, verified = seal[0], seal[6], verified + found
        if row is None:
            break
        if seal is None or row[0] != seal[0]:
            seal, found, digest = row[:7], 0, hashlib.sha256()
            if seal[0] != position + 1:
                problem = (f"audit entries {seal[2]} to {seal[3]} (sealed together at chain position {seal[0]}): "
                           f"seals are missing before them: the chain jumps from position {position}")  # fmt: skip
                break
        if row[7] is not None:
            if problem := _broken_entry(*row[7:], last_entry, seal[0]):
                break
            found, last_entry = found + 1, row[9]
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


def _broken_entry(
    entry: int, content: str, stored: str | None, link: str | None, before: str, index: int
) -> str | None:
    """What is wrong with an entry, its stored hash and link to the stored hash ``before`` it, in words; None when
    nothing is."""
    named = f"audit entry {entry} (sealed at chain position {index})"
    if stored is None:
        return f"{named}: inserted outside the chain (no hash of it is stored)"
    if content != stored:
        return f"{named}: its content was changed after it was written (it no longer gives its stored hash)"
    if link != before:
        return f"{named}: the entry before it in the chain is missing or was replaced"
    return None


def _sealed_by(seals: sa.TableClause) -> sa.ColumnElement[bool]:
    """An entry is held by the seal of its batch, within the seal's ids (read by the primary key: no index on batch)."""
    return (ENTRIES.c.id.between(seals.c.first_id, seals.c.last_id)) & (ENTRIES.c.batch == seals.c.batch)


def _broken(seal: tuple, found: int, content: str, previous: str) -> str | None:
    """What is wrong with a seal and the entries found for it, in words; None when nothing is."""
    index, entries, first, last, recorded, previous_sha256, sha256 = seal
    named = f"audit entries {first} to {last} (sealed together at chain position {index})"
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
