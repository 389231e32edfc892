"""The audit log as a hash chain: an entry changed, removed or slipped in afterwards is found by walking it.

Each entry holds its position in the chain (``chain_index``: 1, 2, ...), the hash of
the entry before it (``previous_sha256``; 64 zeros for the first) and its own hash
(``entry_sha256``): SHA-256 of the previous hash, its position and the SHA-256 of its
content in a canonical form (:func:`content_sha256`). Changing an entry changes its
hash; removing one leaves a gap in the positions; replacing one breaks the link of the
next.

Entries are written with empty chain columns, by the ORM's flush hook and by the bulk
import's one ``INSERT ... SELECT`` alike, and sealed as their transaction commits
(:func:`seal`, run by a connection ``commit`` event): the content is hashed as the
database stores it, so that what is hashed is exactly what :func:`verify_chain` reads
later, and the bulk path builds no entry in Python. Sealing at the commit,
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
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

#: The previous hash of the first entry.
CHAIN_START = "0" * 64

#: The PostgreSQL advisory lock (transaction-scoped) that writers take to seal their entries one at a time ("MDA5").
CHAIN_LOCK = 0x4D444135

#: Entries read or sealed per statement: a log of millions of entries is streamed, never held in memory.
BATCH = 10_000

#: audit_log as the chain reads it: its content as stored text, and the chain columns.
ENTRIES = sa.table(
    "audit_log",
    *(sa.column(name, sa.Integer) for name in ("id", "chain_index")),
    sa.column("changed_at", sa.DateTime(timezone=True)),
    *(sa.column(name, sa.Text) for name in ("actor", "reason", "action", "table_name", "record_key", "study_id",
                                             "old_values", "new_values", "previous_sha256", "entry_sha256")),
)  # fmt: skip


def content_sha256(connection: sa.Connection) -> sa.ColumnElement[str]:
    """SHA-256 (hex) of an entry's content, computed by the database from the text it keeps: nothing is parsed.

    The content is the database's own JSON array of the entry's fields (``id``, the time
    as SQLite stores it, ``2026-12-02 06:10:34.562583``, UTC, PostgreSQL writing its own
    the same way; actor, reason, action, table_name, record_key, study_id), a line break,
    ``old_values``, a line break, ``new_values``, each JSON value as written (empty for
    none). SQLite keeps text, and PostgreSQL's ``json`` type (not ``jsonb``) keeps its
    input verbatim, through pg_dump and pg_restore too. Parsing the values and writing
    them again in Python cost more than the rest of an import's sealing; PostgreSQL
    hashes in C, SQLite with Python's hashlib, called once per entry.
    """
    entries = ENTRIES.c
    fields = [entries.id, entries.changed_at, entries.actor, entries.reason, entries.action, entries.table_name,
              entries.record_key, entries.study_id]  # fmt: skip
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


def link_sha256(previous_sha256: str, chain_index: int, content: str) -> str:
    """An entry's own hash: of the previous entry's, its position and its :func:`content_sha256`."""
    return hashlib.sha256(f"{previous_sha256}\n{chain_index}\n{content}".encode()).hexdigest()


def _head(connection: sa.Connection) -> tuple[int, str]:
    """The position and hash of the newest sealed entry (0 and :data:`CHAIN_START` when there is none)."""
    last = connection.execute(
        sa.select(ENTRIES.c.chain_index, ENTRIES.c.entry_sha256)
        .where(ENTRIES.c.chain_index.is_not(None))
        .order_by(ENTRIES.c.chain_index.desc())
        .limit(1)
    ).first()
    return (0, CHAIN_START) if last is None else (last.chain_index, last.entry_sha256)


def seal(connection: sa.Connection) -> int:
    """Chain every unsealed entry this transaction sees onto the head, in ``id`` order; returns how many.

    Run as the transaction commits (:func:`mark_unsealed`) and by migration 0007 for the
    entries written before it. The database hashes each entry's content; Python links
    the hashes (64 characters each); the links go back in one statement per batch.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(sa.select(sa.func.pg_advisory_xact_lock(CHAIN_LOCK)))
    position, previous = _head(connection)
    hashed, sealed, after = content_sha256(connection), 0, 0
    while True:
        batch = connection.execute(
            sa.select(ENTRIES.c.id, hashed).where(ENTRIES.c.chain_index.is_(None), ENTRIES.c.id > after)
            .order_by(ENTRIES.c.id).limit(BATCH)
        ).all()  # fmt: skip
        if not batch:
            return sealed
        links = []
        for entry_id, content in batch:
            position += 1
            sha256 = link_sha256(previous, position, content)
            links.append((entry_id, position, previous, sha256))
            previous = sha256
        _store(connection, links)
        sealed, after = sealed + len(batch), batch[-1][0]


def _store(connection: sa.Connection, links: list[tuple[int, int, str, str]]) -> None:
    """Set the chain columns of each (id, position, previous, hash) of ``links``: one statement, no per-row parameters
    (SQLAlchemy's processing of them, and psycopg's executemany, cost more than the update)."""
    if connection.dialect.name == "postgresql":
        ids, positions, previous, hashes = map(list, zip(*links, strict=True))
        connection.exec_driver_sql(
            "UPDATE audit_log SET chain_index = link.position, previous_sha256 = link.previous, "
            "entry_sha256 = link.sha256 FROM unnest(%s::integer[], %s::integer[], %s::text[], %s::text[]) "
            "AS link(id, position, previous, sha256) WHERE audit_log.id = link.id",
            (ids, positions, previous, hashes),
        )
    else:
        connection.exec_driver_sql(
            "UPDATE audit_log SET chain_index = ?, previous_sha256 = ?, entry_sha256 = ? WHERE id = ?",
            [(position, previous, sha256, entry_id) for entry_id, position, previous, sha256 in links],
        )


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
        sa.select(ENTRIES.c.id, ENTRIES.c.chain_index, ENTRIES.c.previous_sha256, ENTRIES.c.entry_sha256,
                  content_sha256(connection)).where(ENTRIES.c.chain_index.is_not(None)).order_by(ENTRIES.c.chain_index)
    )  # fmt: skip
    problem = None
    for entry_id, index, previous_sha256, sha256, content in entries:
        named = f"audit entry {entry_id} (chain position {index})"
        if index != position + 1:
            problem = f"{named}: entries are missing before it: the chain jumps from position {position}"
        elif sha256 != link_sha256(previous_sha256, index, content):
            problem = f"{named}: its content was changed after it was written (it no longer gives its hash)"
        elif previous_sha256 != previous:
            problem = f"{named}: the chain is broken: it does not follow the entry before it (replaced or inserted)"
        if problem:
            entries.close()
            return ChainReport(count, position, previous, problem)
        position, previous, count = index, sha256, count + 1
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
