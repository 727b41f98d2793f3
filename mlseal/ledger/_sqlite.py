"""SQLite storage backend: one file, WAL, safe for several processes on one machine.

Durability and serialisation come from SQLite itself: ``journal_mode=WAL`` (readers do
not block the writer), ``synchronous=FULL`` (a commit that returned is on disk), and
``BEGIN IMMEDIATE`` for appends (the write lock is taken before the head is read, so
two writers cannot both see the same head). A busy timeout makes a writer wait for the
lock instead of failing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from mlseal.errors import ConfigurationError, InfrastructureError, LedgerConflict
from mlseal.ledger import merkle
from mlseal.ledger._store import (
    CHECKPOINTS_SINCE,
    SCHEMA_FORMAT,
    SCHEMA_VERSION,
    Build,
    CheckpointRow,
    DigestRow,
    NodeRange,
    NodeRow,
    Prepared,
    batched_entries,
    check_meta,
)
from mlseal.ledger.merkle import Coord
from mlseal.ledger.record import ZERO_HASH

BUSY_TIMEOUT_S = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mlseal_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS mlseal_entries (
    seq INTEGER PRIMARY KEY,
    entry BLOB NOT NULL,
    entry_hash BLOB NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS mlseal_nodes (
    level INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS mlseal_digests (
    sha256 BLOB NOT NULL,
    role INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (sha256, role, seq)
) WITHOUT ROWID;
"""

#: schema version 2: signed checkpoint notes (checked by their readers, never by storage)
_CHECKPOINTS = """
CREATE TABLE IF NOT EXISTS mlseal_checkpoints (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    size INTEGER NOT NULL,
    note BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS mlseal_checkpoints_size ON mlseal_checkpoints (size, id)
"""


class SqliteStore:
    def __init__(self, path: str, *, create: bool, display: str) -> None:
        self._display = display
        memory = path == ":memory:"
        if not memory:
            p = Path(path)
            if not p.parent.is_dir():
                raise ConfigurationError(f"ledger {display}: directory {p.parent} does not exist")
            if not create and not p.exists():
                raise ConfigurationError(f"ledger {display}: file {p} does not exist")
            if p.exists() and not p.is_file():
                raise ConfigurationError(f"ledger {display}: {p} is not a file")
        try:
            target = path if memory or create else f"file:{Path(path).absolute()}?mode=rw"
            self._db = sqlite3.connect(
                target, timeout=BUSY_TIMEOUT_S, isolation_level=None, uri=not (memory or create),
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise ConfigurationError(f"ledger {display}: cannot open: {exc}") from None
        try:
            self._setup(create=create, memory=memory)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise ConfigurationError(f"ledger {display}: not a readable SQLite ledger: {exc}") from None
        except BaseException:
            self._db.close()
            raise

    # --- schema -------------------------------------------------------------------
    def _setup(self, *, create: bool, memory: bool) -> None:
        db = self._db
        db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "mlseal_meta" not in tables:
            if tables:
                raise ConfigurationError(
                    f"ledger {self._display}: the database holds other tables "
                    f"({', '.join(sorted(tables)[:5])}) and no mlseal ledger: refusing a foreign database"
                )
            if not create:
                raise ConfigurationError(f"ledger {self._display}: database is empty (no mlseal ledger)")
        if not memory:
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise ConfigurationError(f"ledger {self._display}: cannot switch to WAL mode (got {mode})")
        db.execute("PRAGMA synchronous = FULL")
        if "mlseal_meta" not in tables:
            db.execute("BEGIN IMMEDIATE")
            try:
                for stmt in (_SCHEMA + _CHECKPOINTS).split(";"):
                    if stmt.strip():
                        db.execute(stmt)
                db.execute(
                    "INSERT OR IGNORE INTO mlseal_meta (key, value) VALUES ('format', ?), ('schema_version', ?)",
                    (SCHEMA_FORMAT, str(SCHEMA_VERSION)),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        meta = dict(db.execute("SELECT key, value FROM mlseal_meta").fetchall())
        check_meta(meta, self._display)
        if int(meta["schema_version"]) < SCHEMA_VERSION:
            self._migrate()

    def _migrate(self) -> None:
        """Bring an older schema to `SCHEMA_VERSION` in one transaction (v1 -> v2: checkpoints)."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            meta = dict(db.execute("SELECT key, value FROM mlseal_meta").fetchall())
            check_meta(meta, self._display)  # another process may have migrated meanwhile
            if int(meta["schema_version"]) < CHECKPOINTS_SINCE:
                for stmt in _CHECKPOINTS.split(";"):
                    if stmt.strip():
                        db.execute(stmt)
            db.execute(
                "UPDATE mlseal_meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),)
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # --- writes ---------------------------------------------------------------------
    def append(self, build: Build) -> Prepared:
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise LedgerConflict(f"ledger {self._display}: could not take the write lock: {exc}") from None
        try:
            size, prev = self._last()
            if prev is None:
                raise InfrastructureError(
                    f"ledger {self._display}: record {size - 1} is missing from storage; refusing to append "
                    "to a damaged ledger (run mlseal ledger verify)"
                )
            siblings = self.get_nodes(merkle.append_coords(size))
            p = build(size, prev, siblings)
            db.execute(
                "INSERT INTO mlseal_entries (seq, entry, entry_hash) VALUES (?, ?, ?)",
                (p.seq, p.entry, p.entry_hash),
            )
            db.executemany("INSERT INTO mlseal_nodes (level, idx, hash) VALUES (?, ?, ?)", p.nodes)
            if p.digests:
                db.executemany(
                    "INSERT OR IGNORE INTO mlseal_digests (sha256, role, seq) VALUES (?, ?, ?)",
                    [(d, role, p.seq) for d, role in p.digests],
                )
            db.execute("COMMIT")
        except BaseException as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise InfrastructureError(f"ledger {self._display}: append failed: {exc}") from None
            raise
        return p

    # --- reads ----------------------------------------------------------------------
    def _last(self) -> tuple[int, str | None]:
        """(size, hash of the last entry); the size is the number of Merkle leaves, so an
        entry row deleted from the end still shows up as a gap."""
        row = self._db.execute(
            "SELECT n.idx, e.entry_hash FROM (SELECT max(idx) AS idx FROM mlseal_nodes WHERE level = 0) n "
            "LEFT JOIN mlseal_entries e ON e.seq = n.idx"
        ).fetchone()
        if row is None or row[0] is None:
            return 0, ZERO_HASH
        return int(row[0]) + 1, None if row[1] is None else bytes(row[1]).hex()

    def head(self) -> tuple[int, str, bytes]:
        db = self._db
        db.execute("BEGIN")  # one read snapshot for size and nodes
        try:
            size, last = self._last()
            root = merkle.root_hash(size, self)
        finally:
            db.execute("COMMIT")
        return size, last or "", root

    def size(self) -> int:
        return self._last()[0]

    def entry(self, seq: int) -> bytes | None:
        row = self._db.execute("SELECT entry FROM mlseal_entries WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else bytes(row[0])

    def entries(self, start: int, end: int, batch: int = 1000) -> Iterator[tuple[int, bytes]]:
        return batched_entries(self._fetch, start, end, batch)

    def _fetch(self, start: int, end: int, limit: int) -> list[tuple[int, bytes]]:
        return self._db.execute(
            "SELECT seq, entry FROM mlseal_entries WHERE seq >= ? AND seq < ? ORDER BY seq LIMIT ?",
            (start, end, limit),
        ).fetchall()

    def get_nodes(self, coords: Sequence[Coord]) -> Mapping[Coord, bytes]:
        out: dict[Coord, bytes] = {}
        if not coords:
            return out
        coords = list(coords)
        for i in range(0, len(coords), 200):
            chunk = coords[i : i + 200]
            where = " OR ".join(["(level = ? AND idx = ?)"] * len(chunk))
            params = [v for c in chunk for v in c]
            for level, idx, h in self._db.execute(
                f"SELECT level, idx, hash FROM mlseal_nodes WHERE {where}", params  # noqa: S608
            ):
                out[(int(level), int(idx))] = bytes(h)
        return out

    def find_entry_hash(self, entry_hash: bytes) -> int | None:
        row = self._db.execute("SELECT seq FROM mlseal_entries WHERE entry_hash = ?", (entry_hash,)).fetchone()
        return None if row is None else int(row[0])

    def seqs_for_digest(self, sha256: bytes, role: int) -> list[int]:
        return [
            int(r[0])
            for r in self._db.execute(
                "SELECT seq FROM mlseal_digests WHERE sha256 = ? AND role = ? ORDER BY seq", (sha256, role)
            )
        ]

    def add_checkpoint(self, size: int, note: bytes) -> None:
        try:
            self._db.execute("INSERT INTO mlseal_checkpoints (size, note) VALUES (?, ?)", (size, note))
        except sqlite3.Error as exc:
            raise InfrastructureError(f"ledger {self._display}: storing a checkpoint failed: {exc}") from None

    def checkpoints(self, limit: int) -> list[bytes]:
        return [
            bytes(r[0])
            for r in self._db.execute(
                "SELECT note FROM mlseal_checkpoints ORDER BY size DESC, id DESC LIMIT ?", (limit,)
            )
        ]

    def checkpoint_rows(self, after: int | None, limit: int) -> list[CheckpointRow]:
        where, params = ("WHERE id > ?", (after, limit)) if after is not None else ("", (limit,))
        rows = self._db.execute(
            f"SELECT id, size, note FROM mlseal_checkpoints {where} ORDER BY id LIMIT ?", params  # noqa: S608
        )
        # SQLite keeps any value in any column: a row written around mlseal may hold text
        return [(int(i), s if isinstance(s, int) else -1, n if isinstance(n, bytes) else str(n).encode())
                for i, s, n in rows]

    def iter_digest_rows(self, start: int) -> Iterator[DigestRow]:
        """Digest index rows with ``seq >= start`` by (seq, role, sha256); SQLite's
        sorter spills to temporary files, so memory stays bounded."""
        # SQLite keeps any value in any column. Rows of other types (only written around
        # mlseal) match no entry and would not compare with the others: one scan finds
        # them too, sorted first, so that the first row tells.
        typed = "(typeof(seq) = 'integer' AND typeof(role) = 'integer' AND typeof(sha256) = 'blob')"
        try:
            cur = self._db.execute(
                f"SELECT seq, role, sha256 FROM mlseal_digests WHERE seq >= ? OR NOT {typed} "  # noqa: S608
                f"ORDER BY {typed}, seq, role, sha256", (start,)
            )
            rows = cur.fetchmany(2048)
            if rows:
                seq, role, sha = rows[0]
                if type(seq) is not int or type(role) is not int or type(sha) is not bytes:
                    raise InfrastructureError(
                        f"ledger {self._display}: the digest index holds a row that mlseal never writes "
                        f"(seq {seq!r:.40}, role {role!r:.40}, sha256 {sha!r:.80}): the table was altered "
                        "outside mlseal; restore the database from a backup taken before the change"
                    )
            while rows:
                yield from rows  # (int, int, bytes) as stored: the schema's types
                rows = cur.fetchmany(2048)
        except sqlite3.Error as exc:
            raise InfrastructureError(f"ledger {self._display}: reading the digest index failed: {exc}") from None

    def iter_node_rows(self, ranges: Sequence[NodeRange]) -> Iterator[NodeRow]:
        try:
            for lv0, lv1, ix0, ix1 in ranges:
                if lv0 == lv1:  # an equality on the key's first column lets the index seek on idx
                    cur = self._db.execute(
                        "SELECT level, idx, hash FROM mlseal_nodes WHERE level = ? AND idx BETWEEN ? AND ? "
                        "ORDER BY level, idx", (lv0, ix0, ix1),
                    )
                else:
                    cur = self._db.execute(
                        "SELECT level, idx, hash FROM mlseal_nodes WHERE level BETWEEN ? AND ? "
                        "AND idx BETWEEN ? AND ? ORDER BY level, idx", (lv0, lv1, ix0, ix1),
                    )
                while rows := cur.fetchmany(2048):
                    for level, idx, h in rows:  # a hash stored as text compares unequal, as it should
                        yield level, idx, h if isinstance(h, bytes) else str(h).encode()
        except sqlite3.Error as exc:
            raise InfrastructureError(f"ledger {self._display}: reading Merkle nodes failed: {exc}") from None

    def close(self) -> None:
        self._db.close()
