"""`Ledger`: the append-only, hash-chained, Merkle-verifiable log of records, on its storage.

Each pipeline step appends one signed record (a DSSE entry, see `mlseal.ledger.entry`).
The ledger assigns ``seq`` (0, 1, 2, …, no gaps), ``prev`` (the SHA-256 of the previous
entry) and ``time``, signs the canonical record with the appender's key, and stores the
exact entry bytes. The entries are also the leaves of an RFC 9162 Merkle tree, so
inclusion and consistency can be proved in O(log n).

The URL selects the storage backend (docs/design.md#storage-verification-lineage):

- ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` (the default is
  ``sqlite:///.mlseal/ledger.db``, or ``$MLSEAL_LEDGER``);
- ``postgresql://user@host:5432/db?options=-csearch_path%3Dschema`` (a libpq URI), or a
  libpq keyword/value string ``host=h dbname=db user=u``.

Messages name a ledger by `redact_url`, which hides passwords and anything else that
might be a credential in every DSN form.

    >>> import tempfile
    >>> from mlseal.signing.keys import LocalKeySigner
    >>> from mlseal.ledger.record import RecordDraft
    >>> url = "sqlite:///" + tempfile.mkdtemp() + "/ledger.db"
    >>> with open_ledger(url) as led:
    ...     a = led.append(RecordDraft(stage="ingest"), LocalKeySigner.generate(), signer_name="demo")
    ...     (a.seq, led.size(), led.head().last_entry_hash == a.entry_hash)
    (0, 1, True)
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from mlseal.errors import ConfigurationError, InfrastructureError, VerificationError
from mlseal.ledger import merkle
from mlseal.ledger._store import ROLE_INPUT, ROLE_OUTPUT, Prepared, Store
from mlseal.ledger.dsn import is_keyword_dsn, redact_dsn
from mlseal.ledger.entry import RecordTemplate
from mlseal.ledger.merkle import Coord
from mlseal.ledger.record import Record, RecordDraft, SignerRef, is_sha256_hex
from mlseal.signing.keys import LocalKeySigner, Signer

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "DEFAULT_URL", "ENV_VAR", "Appended", "Head", "Ledger", "format_time", "open_ledger", "redact_url",
    "sqlite_path", "url_scheme",
]

DEFAULT_URL = "sqlite:///.mlseal/ledger.db"
ENV_VAR = "MLSEAL_LEDGER"

Clock = Callable[[], _dt.datetime]


@dataclass(frozen=True)
class Appended:
    """What `Ledger.append` stored: the seq, the exact entry bytes and their hash."""

    seq: int
    entry: bytes
    entry_hash: str
    record: Record


@dataclass(frozen=True)
class Head:
    """The current tree: its size, Merkle root, and the hash of the last entry."""

    size: int
    root: bytes
    last_entry_hash: str


def _utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def format_time(t: _dt.datetime) -> str:
    """RFC 3339 UTC with microseconds, e.g. ``2026-01-01T00:00:00.000000Z``."""
    if t.tzinfo is None:
        raise ConfigurationError("ledger clock returned a naive datetime; it must be timezone-aware")
    return t.astimezone(_dt.UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def redact_url(url: str) -> str:
    """The URL or libpq DSN with every possible secret hidden, for messages.

    One redaction for every form (URI userinfo and query, keyword/value strings,
    malformed input): see `mlseal.ledger.dsn`. SQLite URLs are shown as given.
    """
    return redact_dsn(url)


def url_scheme(url: str) -> str:
    """``sqlite``, ``postgresql`` (also for a libpq keyword/value DSN), another scheme, or ``""``."""
    if is_keyword_dsn(url):
        return "postgresql"
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    return "postgresql" if scheme == "postgres" else scheme


def sqlite_path(url: str) -> str:
    """File path of a ``sqlite:///…`` URL (SQLAlchemy convention: 4 slashes = absolute)."""
    rest = url[len("sqlite://") :]
    if not rest.startswith("/"):
        raise ConfigurationError(
            f"ledger URL {url!r}: use sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    path = rest[1:].split("?", 1)[0]
    if not path:
        raise ConfigurationError(f"ledger URL {url!r} names no database file")
    return path


def open_ledger(url: str | None = None, *, create: bool = True, clock: Clock = _utc_now) -> Ledger:
    """Open the ledger at ``url`` (None: ``$MLSEAL_LEDGER``, else the default).

    ``create=False`` refuses to create a new ledger (readers and verifiers use it, so a
    mistyped path is an error rather than an empty, "valid" ledger).
    """
    if url is None:
        url = os.environ.get(ENV_VAR) or DEFAULT_URL
    display = redact_url(url)
    scheme = url_scheme(url)
    store: Store
    if scheme == "sqlite":
        path = sqlite_path(url)
        if url == DEFAULT_URL and create:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        from mlseal.ledger._sqlite import SqliteStore

        store = SqliteStore(path, create=create, display=display)
    elif scheme == "postgresql":
        from mlseal.ledger._postgres import PostgresStore

        store = PostgresStore(url, create=create, display=display)
    else:
        raise ConfigurationError(
            f"ledger URL {display!r}: unknown scheme {scheme or '(none)'!r}; "
            "use sqlite:///path/ledger.db, postgresql://host/db or a libpq 'host=... dbname=...' string"
        )
    return Ledger(store, url=display, clock=clock)


class Ledger:
    """An open ledger. Thread-compatible, not thread-safe: one per thread or process."""

    def __init__(self, store: Store, *, url: str = "", clock: Clock = _utc_now) -> None:
        self._store = store
        self.url = url
        self._clock = clock

    def __repr__(self) -> str:
        return f"Ledger({self.url!r})"

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._store.close()

    # --- writing ----------------------------------------------------------------------
    def append(self, draft: RecordDraft, signer: Signer, *, signer_name: str) -> Appended:
        """Sign and append one record; atomic, serialised with every other writer.

        Under the backend's write lock: read the head, complete the draft with
        ``seq = size``, ``prev`` = hash of the last entry and the current time, sign the
        canonical record, and store the entry, its Merkle nodes and digest index rows
        in one transaction. If anything fails, nothing is written.
        """
        if not isinstance(draft, RecordDraft):
            raise ConfigurationError(f"append needs a RecordDraft, got {type(draft).__name__}")
        if not signer_name:
            raise ConfigurationError("append needs a signer_name (the name the trust file gives the key)")
        ref = SignerRef(name=signer_name, key_id=signer.key_id)
        # A signer outside this process (Vault, keyless) might return a signature that
        # does not verify; one such entry would make the append-only log fail
        # verification forever, so check those before storing.
        check = not isinstance(signer, LocalKeySigner)
        template = RecordTemplate(draft, ref)  # all the encoding that need not wait for the lock
        filled: list[tuple[str, str]] = []

        def build(size: int, prev: str, siblings: Mapping[Coord, bytes]) -> Prepared:
            time = format_time(self._clock())
            entry = template.sign(size, prev, time, signer)
            if check:
                _self_check(entry, signer)
            filled.append((prev, time))
            return Prepared(
                seq=size,
                entry=entry,
                entry_hash=hashlib.sha256(entry).digest(),
                nodes=merkle.append_nodes(size, merkle.leaf_hash(entry), siblings),
                digests=digests,
            )

        digests = [(bytes.fromhex(o.sha256), ROLE_OUTPUT) for o in draft.outputs]
        digests += [(bytes.fromhex(i.sha256), ROLE_INPUT) for i in draft.inputs]
        p = self._store.append(build)
        prev, time = filled[-1]
        record = draft.complete(seq=p.seq, prev=prev, time=time, signer=ref)
        return Appended(seq=p.seq, entry=p.entry, entry_hash=p.entry_hash.hex(), record=record)

    # --- checkpoints --------------------------------------------------------------------
    def add_checkpoint(self, note: bytes) -> None:
        """Store a signed checkpoint note (c2sp.org/tlog-checkpoint, `mlseal.ledger.checkpoint`).

        Storage checks only that the note parses (its tree size orders the stored
        notes); it verifies no signature and no consistency: callers verify before
        storing, and readers verify what they read (`latest_checkpoint`).
        """
        from mlseal.ledger.checkpoint import parse_checkpoint

        if not isinstance(note, bytes):
            raise ConfigurationError(f"a checkpoint note is bytes, got {type(note).__name__}")
        cp = parse_checkpoint(note)[0]
        self._store.add_checkpoint(cp.size, note)

    def latest_checkpoint(self) -> bytes | None:
        """The stored note with the largest tree size (ties: the newest stored), or None.

        Untrusted: verify its signature (`checkpoint.verify_checkpoint`) and that the
        log is consistent with it before relying on it.
        """
        notes = self._store.checkpoints(1)
        return notes[0] if notes else None

    def checkpoints(self, limit: int = 64) -> list[bytes]:
        """Up to ``limit`` stored notes, largest tree size first (ties: newest stored first)."""
        return self._store.checkpoints(max(int(limit), 0))

    def checkpoint_rows(self, batch: int = 1000) -> Iterator[tuple[int, int, bytes]]:
        """Every stored checkpoint row as ``(row id, size column, note)``, by id, read
        ``batch`` rows at a time: what an auditor checks (`checkpoint.audit_stored`)."""
        after: int | None = None
        while True:
            rows = self._store.checkpoint_rows(after, max(int(batch), 1))
            yield from rows
            if len(rows) < batch:
                return
            after = rows[-1][0]

    # --- reading ----------------------------------------------------------------------
    def size(self) -> int:
        return self._store.size()

    def head(self) -> Head:
        size, last, root = self._store.head()
        return Head(size=size, root=root, last_entry_hash=last)

    def entry(self, seq: int) -> bytes:
        data = self._store.entry(seq) if seq >= 0 else None
        if data is None:
            raise VerificationError(f"ledger {self.url} has no record {seq} (size {self.size()})")
        return data

    def entries(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, bytes]]:
        """(seq, exact entry bytes), oldest first, for ``start <= seq < end``."""
        if end is None:
            end = self.size()
        return self._store.entries(max(start, 0), end)

    def producers_of(self, sha256_hex: str) -> list[int]:
        return self._store.seqs_for_digest(_digest(sha256_hex), ROLE_OUTPUT)

    def consumers_of(self, sha256_hex: str) -> list[int]:
        return self._store.seqs_for_digest(_digest(sha256_hex), ROLE_INPUT)

    def find_entry(self, entry_hash_hex: str) -> int | None:
        """The seq of the entry with this SHA-256, if stored."""
        return self._store.find_entry_hash(_digest(entry_hash_hex))

    def get_nodes(self, coords: Sequence[Coord]) -> Mapping[Coord, bytes]:
        """Perfect Merkle subtree hashes (a `merkle.NodeReader`)."""
        return self._store.get_nodes(coords)

    def root(self, size: int | None = None) -> bytes:
        return merkle.root_hash(self.size() if size is None else self._check_size(size), self._store)

    def inclusion_proof(self, seq: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 §2.1.3 audit path for leaf ``seq`` in the tree of ``size`` leaves."""
        size = self.size() if size is None else self._check_size(size)
        if not 0 <= seq < size:
            raise VerificationError(f"record {seq} is not in a tree of size {size}")
        return merkle.inclusion_proof(seq, size, self._store)

    def consistency_proof(self, old_size: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 §2.1.4 proof that the tree of ``size`` extends the one of ``old_size``."""
        size = self.size() if size is None else self._check_size(size)
        if not 0 < old_size <= size:
            raise VerificationError(f"no consistency proof from size {old_size} to size {size}")
        return merkle.consistency_proof(old_size, size, self._store)

    def _check_size(self, size: int) -> int:
        current = self.size()
        if not 0 <= size <= current:
            raise VerificationError(f"tree size {size} is larger than the ledger ({current} records)")
        return size


def _digest(sha256_hex: str) -> bytes:
    if not is_sha256_hex(sha256_hex):
        raise ConfigurationError(f"not a SHA-256 hex digest: {str(sha256_hex)[:80]!r}")
    return bytes.fromhex(sha256_hex)


def _self_check(entry: bytes, signer: Signer) -> None:
    from mlseal.ledger.entry import pae, split_entry
    from mlseal.signing.keys import PublicKeyVerifier

    part = split_entry(entry)
    try:
        PublicKeyVerifier(signer.public_key()).verify(pae(part.payload), part.sig)
    except VerificationError:
        raise InfrastructureError(
            f"signer {signer.key_id[:16]}… returned a signature that does not verify; nothing appended"
        ) from None
