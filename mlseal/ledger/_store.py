"""The interface storage backends implement: store and fetch bytes, nothing else.

A backend knows nothing about signatures or record schemas. It keeps, per ledger:
the exact entry bytes by ``seq``, each entry's SHA-256, the perfect Merkle nodes, and an
index from artifact digests to the seqs that produced (role 0) or consumed (role 1) them.

Appends are serialised by the backend: `Store.append` takes the write lock, reads the
head, calls ``build(size, prev_hash, siblings)`` (which signs the new entry) and writes
its result in the same transaction, so two writers can never produce the same ``seq``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from mlseal.errors import ConfigurationError
from mlseal.ledger.merkle import Coord

#: version of the storage schema this code writes; newer schemas are refused.
#: 1: entries, nodes, digests (and the PostgreSQL head); 2: adds ``mlseal_checkpoints``
SCHEMA_VERSION = 2
#: the first schema version with the checkpoints table
CHECKPOINTS_SINCE = 2
#: marks a database as an mlseal ledger (anything else there is "foreign")
SCHEMA_FORMAT = "mlseal-ledger"

ROLE_OUTPUT = 0
ROLE_INPUT = 1


@dataclass(frozen=True)
class Prepared:
    """A signed entry ready to be stored at ``seq``."""

    seq: int
    entry: bytes
    entry_hash: bytes  # SHA-256(entry), 32 bytes
    nodes: Sequence[tuple[int, int, bytes]]  # (level, index, hash): leaf first
    digests: Sequence[tuple[bytes, int]]  # (sha256 32 bytes, ROLE_*)


#: build(size, prev entry hash hex, siblings) -> the entry for seq == size
Build = Callable[[int, str, Mapping[Coord, bytes]], Prepared]

#: (seq, role, sha256) of a digest index row
DigestRow = tuple[int, int, bytes]
#: (row id, the row's size column, the note as stored) of a stored checkpoint
CheckpointRow = tuple[int, int, bytes]
#: (level, index, hash) of a stored Merkle node
NodeRow = tuple[int, int, bytes]
#: (min level, max level, min index, max index), all inclusive: a block of node coordinates
NodeRange = tuple[int, int, int, int]

#: fetch(start, end, limit) -> up to ``limit`` (seq, entry) rows with start <= seq < end, by seq
Fetch = Callable[[int, int, int], Sequence[tuple[int, bytes]]]


def batched_entries(fetch: Fetch, start: int, end: int, batch: int) -> Iterator[tuple[int, bytes]]:
    """(seq, entry) for ``start <= seq < end`` in seq order, ``batch`` rows per query.

    Seqs come from storage as they are: a missing row shows as a jump, which verifiers
    report (they compare each seq with its position).
    """
    while start < end:
        rows = fetch(start, end, batch)
        if not rows:
            return
        for seq, data in rows:
            yield int(seq), bytes(data)
        start = int(rows[-1][0]) + 1


class Store(Protocol):
    def append(self, build: Build) -> Prepared: ...

    def head(self) -> tuple[int, str, bytes]:
        """(size, last entry hash hex, root hash) read in one snapshot."""
        ...

    def size(self) -> int: ...

    def entry(self, seq: int) -> bytes | None: ...

    def entries(self, start: int, end: int, batch: int = 1000) -> Iterator[tuple[int, bytes]]: ...

    def get_nodes(self, coords: Sequence[Coord]) -> Mapping[Coord, bytes]: ...

    def find_entry_hash(self, entry_hash: bytes) -> int | None: ...

    def seqs_for_digest(self, sha256: bytes, role: int) -> list[int]: ...

    def add_checkpoint(self, size: int, note: bytes) -> None:
        """Store a signed checkpoint note for a tree of ``size`` leaves (unverified)."""
        ...

    def checkpoints(self, limit: int) -> list[bytes]:
        """Up to ``limit`` stored notes, largest tree size first (ties: newest stored first)."""
        ...

    def checkpoint_rows(self, after: int | None, limit: int) -> list[CheckpointRow]:
        """Up to ``limit`` stored checkpoint rows with ``id > after`` (None: from the first),
        by id: every row as stored, for auditors (`mlseal ledger verify`)."""
        ...

    def iter_digest_rows(self, start: int) -> Iterator[DigestRow]:
        """Every digest index row with ``seq >= start``, ordered by (seq, role, sha256),
        streamed in bounded memory (for verifiers: they compare it with the entries)."""
        ...

    def iter_node_rows(self, ranges: Sequence[NodeRange]) -> Iterator[NodeRow]:
        """The stored Merkle node rows inside each range, range by range, each by
        (level, index); rows in several ranges come once per range."""
        ...

    def close(self) -> None: ...


def check_meta(meta: Mapping[str, str], display: str) -> None:
    """Refuse a database that is not an mlseal ledger, or one newer than this code."""
    if meta.get("format") != SCHEMA_FORMAT:
        raise ConfigurationError(f"ledger {display}: not an mlseal ledger (format {meta.get('format')!r})")
    try:
        version = int(meta.get("schema_version", ""))
    except ValueError:
        raise ConfigurationError(
            f"ledger {display}: unreadable schema version {meta.get('schema_version')!r}"
        ) from None
    if version > SCHEMA_VERSION:
        raise ConfigurationError(
            f"ledger {display}: schema version {version} is newer than this mlseal supports "
            f"({SCHEMA_VERSION}); upgrade mlseal"
        )
