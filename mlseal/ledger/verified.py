"""A verified, in-memory view of a ledger: what admission, ``trace`` and stage input checks read.

The ledger's derived tables (the digest index behind ``producers_of``/``consumers_of``,
the Merkle nodes behind its head) are neither signed nor part of any entry: whoever can
write the database can delete one index row and hide a newer failed evaluation. A
`VerifiedView` never reads them to decide. It reads every entry once and builds its own
state from the entries alone:

- each entry is verified as `mlseal.ledger.entry.verify_entry` does (signature by a key
  the trust file lists, under that key's grant, canonical record, stored at the seq it
  claims); an entry whose successor's ``prev`` is not its SHA-256 was altered after it
  was appended. Entries that fail are kept as their error, so a decision that meets one
  reports it (tampered denies, an untrusted signer counts as absent), exactly as
  `TrustedReader` always has;
- its own digest index (artifact sha256 -> the seqs that output / consumed it), built
  from the entries, and the parsed records, so decisions need no ledger read and no
  second signature check;
- its own Merkle tree over the entries, so it knows its root at every size it holds,
  and compares it with what the store says.

`refresh` reads only the entries after the view's size and refuses what an append-only
log can never do; after any of these the view is *failed* for good (every read raises
`ViewFailed`, whose ``code`` names it), until the process restarts and verifies anew:

- ``ledger_rolled_back``: the store has fewer entries than the view (rows deleted from
  the end), or fewer than a signed checkpoint pinned;
- ``ledger_forked``: a new entry's ``prev`` is not the hash of the view's last entry, the
  store's root at the view's size changed, the store's last entry at the view's size is
  not the view's, or a signed checkpoint's root is not the view's root at its size;
- ``tampered``: storage skips a record (a row deleted in the middle).

Checkpoints (`Ledger.checkpoints`, C2SP signed notes) are checked when the trust file
lists ``checkpoint_keys`` and the ledger offers them: the newest stored note that a
checkpoint key signed must have the view's root at its size as its root. A stored note
that does not verify proves nothing: it is skipped with a warning (`ledger verify`
reports its row). A checkpoint beyond the view's size
is reached by reading the tail first; if the store cannot, it was rolled back.
`require` checks a checkpoint the view's reader held (a floor from configuration, the
state a webhook kept: `mlseal.ledger.rollback`) the same way; `checkpoint` is the
largest checkpoint the view accepted.

A view is safe to read from many threads while one thread refreshes it: a refresh
publishes new entries only after verifying them (the size is set last).

Memory: per entry, the parsed record (its signer, component, digests and URIs shared with
earlier records), its signature, its index slots and two Merkle hashes: ~1.5 KB for
typical pipeline records (tracemalloc); a webhook holding a 100,000-entry ledger measured
210 MB resident (docs/admission.md, "Memory").

    >>> import tempfile
    >>> from mlseal.ledger import open_ledger
    >>> from mlseal.ledger.record import RecordDraft, OutputRef, Sha256Hex
    >>> from mlseal.signing.keys import LocalKeySigner
    >>> from mlseal.signing.trust import TrustRoot
    >>> key = LocalKeySigner.generate()
    >>> led = open_ledger("sqlite:///" + tempfile.mkdtemp() + "/l.db")
    >>> raw = OutputRef(name="raw", uri="file:///raw.csv", sha256=Sha256Hex("ab" * 32))
    >>> _ = led.append(RecordDraft(stage="ingest", outputs=(raw,)), key, signer_name="p")
    >>> view = VerifiedView(led, TrustRoot.of(key.verifier("p")))
    >>> view.producers_of("ab" * 32), view.record(0).stage
    ([0], 'ingest')
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlseal import _progress
from mlseal.errors import VerificationError
from mlseal.ledger import merkle
from mlseal.ledger.checkpoint import Checkpoint, Trusted, tree_text, verify_checkpoint
from mlseal.ledger.entry import parse_entry, prev_of, record_of, split_entry, verify_entry
from mlseal.ledger.record import ZERO_HASH, Record
from mlseal.ledger.unsafe import UNSAFE_SKIP_SIGNATURES, Trust, trust_root
from mlseal.signing.trust import TrustRoot

if TYPE_CHECKING:
    from mlseal.ledger.recordcache import VerifiedRecords

log = logging.getLogger(__name__)

ROLLED_BACK = "ledger_rolled_back"
FORKED = "ledger_forked"
TAMPERED = "tampered"

#: stored checkpoints tried, largest first, for the newest one a trusted key signed
STORED_CHECKPOINTS = 16

#: entries read per storage query while building or refreshing
BATCH = 2000

Parse = Callable[[bytes, TrustRoot], Record]
_EMPTY: dict[str, Any] = {}


class ViewFailed(VerificationError):
    """The ledger did something an append-only log never does; the view trusts nothing more.

    ``code`` is ``ledger_rolled_back``, ``ledger_forked`` or ``tampered``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ViewHead:
    """The view's tree: size, its own Merkle root, the hash of its last entry."""

    size: int
    root: bytes
    last_entry_hash: str


def trust_key(trust: Trust) -> frozenset[Any] | None:
    """What makes two trust roots verify alike: the signer keys and what each may sign
    (None for `UNSAFE_SKIP_SIGNATURES`)."""
    if not isinstance(trust, TrustRoot):
        trust_root(trust, "trust_key")  # refuses anything but the unsafe option
        return None
    return frozenset((k, trust.grants.get(k)) for k in trust.signers)


class VerifiedView:
    """An incrementally verified copy of a ledger's entries (see the module docstring).

    Implements `mlseal.ledger.protocols.LedgerReader` (``producers_of``, ``consumers_of``,
    ``entry``, ``size``) plus ``head``, ``record``, ``refresh``, all from memory except
    ``refresh``. Building reads the whole ledger (an unreadable ledger raises
    `InfrastructureError`); a ledger found rolled back or forked while building gives a
    failed view, whose reads raise `ViewFailed`. ``trust`` is the trust root, or
    `UNSAFE_SKIP_SIGNATURES` to check hash chain, positions and Merkle tree only (records
    are read without checking signatures; logged as a warning), for ``trace`` without a
    trust file. ``None`` is refused (`ConfigurationError`).
    """

    def __init__(self, ledger: Any, trust: Trust, *, parse: Parse = parse_entry,
                 verified: VerifiedRecords | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.ledger = ledger
        self._verified = verified
        self._root = trust_root(trust, "VerifiedView", warn=True)
        self.trust: Trust = UNSAFE_SKIP_SIGNATURES if self._root is None else self._root
        self.trust_key = trust_key(trust)
        self.parse = parse
        self._clock = clock
        self._records: list[Record | VerificationError] = []
        self._sigs: list[bytes] = []  # each entry's signature, to give its exact bytes back
        self._memo: dict[Any, Any] = {}  # one object per equal value (signer, component, digest, URI)
        self._producers: dict[str, list[int]] = {}
        self._consumers: dict[str, list[int]] = {}
        self._tree = merkle.MemoryTree()
        self._size = 0
        self._head = ViewHead(0, merkle.EMPTY_ROOT, ZERO_HASH)
        self._last_hash = ZERO_HASH
        self._store_root: bytes = merkle.EMPTY_ROOT  # what the store said its root at our size was
        self._failed: ViewFailed | None = None
        self._checkpoint_note: bytes | None = None  # the newest stored note checked
        self._bad_notes: set[bytes] = set()  # sha256 of stored notes that did not verify (warned once)
        self._checkpoint: Trusted | None = None  # the largest checkpoint accepted
        self.checkpoint_size = 0  # the size of the newest checkpoint accepted
        #: what is wrong with the store that did not fail the view (logged; the text of a ``root`` `Problem`)
        self.problems: list[str] = []
        self.verified_at = 0.0  # clock() of the last successful build or refresh
        self._lock = threading.Lock()
        with contextlib.suppress(ViewFailed):  # kept: every read raises it
            self.refresh()

    # --- the LedgerReader side: memory only -----------------------------------------
    @property
    def failure(self) -> ViewFailed | None:
        return self._failed

    def _check(self) -> int:
        if self._failed is not None:
            raise self._failed
        return self._size

    def size(self) -> int:
        return self._check()

    def head(self) -> ViewHead:
        self._check()
        return self._head

    def root(self, size: int | None = None) -> bytes:
        """The view's own Merkle root of its first ``size`` entries (default: all)."""
        held = self._check()
        size = held if size is None else size
        if not 0 <= size <= held:
            raise VerificationError(f"the verified view holds {held} records, not {size}")
        return self._tree.root(size)

    def producers_of(self, sha256_hex: str) -> list[int]:
        size = self._check()
        return [s for s in self._producers.get(sha256_hex, ()) if s < size]

    def consumers_of(self, sha256_hex: str) -> list[int]:
        size = self._check()
        return [s for s in self._consumers.get(sha256_hex, ()) if s < size]

    def record(self, seq: int) -> Record:
        """The verified record at ``seq``; raises the error it failed verification with."""
        size = self._check()
        if not 0 <= seq < size:
            raise VerificationError(f"the ledger has no record {seq} (size {size})")
        got = self._records[seq]
        if isinstance(got, VerificationError):
            raise got
        return got

    def entry(self, seq: int) -> bytes:
        """The exact bytes of a verified entry, rebuilt from memory and checked against its leaf hash."""
        rec = self.record(seq)
        from mlseal.ledger.entry import envelope_bytes

        # a verified record's signer.key_id is the key that signed it (parse_entry checks)
        data = envelope_bytes(rec.canonical(), rec.signer.key_id, self._sigs[seq])
        if merkle.leaf_hash(data) != self._tree.levels[0][seq]:
            raise VerificationError(f"record {seq} could not be rebuilt from the verified view")
        return data

    # --- following the store --------------------------------------------------------
    def refresh(self) -> int:
        """Read and verify the entries appended since the last call; return how many.

        Raises `ViewFailed` (and stays failed) on a rollback, fork or bad checkpoint;
        `InfrastructureError` when the store cannot be read (the view keeps what it
        verified).
        """
        with self._lock:
            if self._failed is not None:
                raise self._failed
            try:
                n = self._refresh()
            except ViewFailed as exc:
                self._failed = exc
                log.error("verified ledger view failed: %s", exc)
                raise
            self.verified_at = self._clock()
            return n

    def _refresh(self) -> int:
        led = self.ledger
        head = led.head() if hasattr(led, "head") else None
        size = int(head.size if head is not None else led.size())
        old = self._size
        if size < old:
            raise ViewFailed(ROLLED_BACK, (
                f"the ledger now has {size} records, but {old} were verified before: records were deleted "
                "from its end (rolled back)"))
        if head is not None and size == old and old > 0 and (
                head.root != self._store_root or head.last_entry_hash != self._last_hash):
            raise ViewFailed(FORKED, (
                f"the ledger's tree of {old} records changed (root {head.root.hex()[:16]}…, was "
                f"{self._store_root.hex()[:16]}…; last entry {str(head.last_entry_hash)[:16]}…, verified "
                f"{self._last_hash[:16]}…): the log was rewritten (forked)"))
        if size > old and head is not None and old > 0:
            before = led.root(old)
            if before != self._store_root:
                raise ViewFailed(FORKED, (
                    f"the ledger's root at {old} records is now {before.hex()[:16]}…, it was "
                    f"{self._store_root.hex()[:16]}… when they were verified: the log was rewritten (forked)"))
        if size > old:
            _progress.expect(size - old, "entries")
            try:
                self._extend(old, size)
            except BaseException:
                self._forget(old)  # a read that failed half way leaves nothing behind
                raise
            if head is not None:
                root = self._tree.root(size)
                if head.root != root:
                    self.problems.append(
                        f"the stored Merkle root of {size} records ({head.root.hex()[:16]}…) is not the root of "
                        f"the stored entries ({root.hex()[:16]}…): entries or tree nodes were changed in storage")
                    log.warning("verified ledger view: %s", self.problems[-1])
                self._store_root = head.root
            self._head = ViewHead(size, self._tree.root(size), self._last_hash)
            self._size = size  # published last: readers see only verified entries
        self._check_checkpoint()
        return size - old

    def _rows(self, start: int, end: int) -> Iterator[tuple[int, bytes]]:
        led = self.ledger
        if hasattr(led, "entries"):
            yield from led.entries(start, end)
        else:
            for seq in range(start, end):
                yield seq, led.entry(seq)

    def _extend(self, start: int, end: int) -> None:
        prev_hash = self._last_hash
        pos = start
        pending: list[Record | VerificationError] = []
        for key, data in self._rows(start, end):
            if key != pos:
                raise ViewFailed(TAMPERED, (
                    f"ledger storage returned record {key} where record {pos} belongs: records {pos}..{key - 1} "
                    "were deleted from storage"))
            got, prev = self._verify(pos, data)
            if prev != prev_hash:
                if pos == start and pos > 0:
                    raise ViewFailed(FORKED, (
                        f"record {pos}'s prev {str(prev)[:16]}… is not the hash of the verified record {pos - 1} "
                        f"({prev_hash[:16]}…): the log was rewritten (forked)"))
                if pos > start and not isinstance(pending[-1], VerificationError):
                    pending[-1] = VerificationError(
                        f"record {pos}'s prev {str(prev)[:16]}… does not match the hash of entry {pos - 1} "
                        f"({prev_hash[:16]}…): entry {pos - 1} was altered after it was appended")
                elif pos == 0:
                    got = got if isinstance(got, VerificationError) else VerificationError(
                        f"record 0's prev is not {ZERO_HASH[:16]}…: it is not the first record of a log")
            pending.append(got)
            self._index(pos, got, data)
            self._tree.append(merkle.leaf_hash(data))
            prev_hash = hashlib.sha256(data).hexdigest()
            pos += 1
            _progress.advance(1, "entries")
            if len(pending) >= BATCH:
                self._records.extend(pending[:-1])  # the last may still lose its successor check
                pending = pending[-1:]
        if pos != end:
            raise ViewFailed(TAMPERED, f"ledger storage holds {pos} records, its head says {end}: records "
                                       f"{pos}..{end - 1} were deleted from storage")
        self._records.extend(pending)
        self._last_hash = prev_hash

    def _forget(self, size: int) -> None:
        """Drop whatever a failed `_extend` added beyond ``size`` (never published)."""
        del self._records[size:]
        del self._sigs[size:]
        for level, row in enumerate(self._tree.levels):
            del row[size >> level:]
        for index in (self._producers, self._consumers):
            for seqs in index.values():
                while seqs and seqs[-1] >= size:
                    seqs.pop()

    def _verify(self, seq: int, data: bytes) -> tuple[Record | VerificationError, str | None]:
        """(the verified record or why not, the entry's prev as stored)."""
        try:
            part = split_entry(data)
            self._sigs.append(part.sig)
        except VerificationError as exc:
            self._sigs.append(b"")
            return VerificationError(f"entry {seq}: {exc}"), None
        key = None
        if self._verified is not None and self._root is not None:
            key = (self.trust_key, self.parse, seq, hashlib.sha256(data).digest())
            known = self._verified.get(key)
            if known is not None:
                return known, known.prev
        try:
            rec = self._compact(verify_entry(seq, data, self.trust, parse=self.parse))
            if key is not None:
                self._verified.put(key, rec)  # type: ignore[union-attr]
        except VerificationError as exc:
            try:
                prev: str | None = prev_of(data)
            except VerificationError:
                prev = None
            return exc, prev
        return rec, rec.prev

    def _compact(self, rec: Record) -> Record:
        """The same record, its repeated parts shared with earlier ones (memory: a lineage
        repeats its signer, component, digests and URIs in every record)."""
        memo = self._memo
        share = object.__setattr__  # frozen dataclasses; the values are equal, only the objects change
        for name in ("signer", "component", "run", "stage"):
            value = getattr(rec, name)
            share(rec, name, memo.setdefault(value, value))
        for ref in (*rec.inputs, *rec.outputs):
            for name in ("name", "uri", "sha256"):
                value = getattr(ref, name)
                share(ref, name, memo.setdefault(value, value))
        if not rec.params:
            share(rec, "params", _EMPTY)
        return rec

    def _index(self, seq: int, got: Record | VerificationError, data: bytes) -> None:
        """Index the digests an entry names; an entry that failed verification is indexed by
        what it claims, so a question about those digests meets it (and reports it)."""
        rec: Record | None = got if isinstance(got, Record) else None
        if rec is None:
            try:
                rec = record_of(data)
            except VerificationError:
                return
        for o in rec.outputs:
            self._producers.setdefault(o.sha256, []).append(seq)
        for i in rec.inputs:
            self._consumers.setdefault(i.sha256, []).append(seq)

    def _check_checkpoint(self) -> None:
        """Enforce the newest stored checkpoint that a trusted checkpoint key signed.

        Stored notes are tried largest first (at most `STORED_CHECKPOINTS`); one that does
        not verify proves nothing and is skipped with a warning (once per note): failing
        the view on it would let whoever may write the checkpoint table deny every model,
        while deleting the rows is open to them anyway. `ledger verify` names such rows.
        """
        trust = self._root
        stored = getattr(self.ledger, "checkpoints", None)
        if trust is None or not trust.checkpoint_keys or stored is None:
            return
        newest = stored(1)  # every refresh (the webhook's follower: ten a second): one row when nothing changed
        if not newest or newest[0] == self._checkpoint_note:
            return
        for note in stored(STORED_CHECKPOINTS):
            if note == self._checkpoint_note:
                return
            digest = hashlib.sha256(note).digest()
            if digest in self._bad_notes:
                continue  # refused before, and warned about once
            try:
                cp = verify_checkpoint(note, trust)
            except VerificationError as exc:
                self._bad_notes.add(digest)
                log.warning("verified ledger view: a stored checkpoint does not verify and is ignored "
                            "(run `mlseal ledger verify` to name its row): %s", exc)
                continue
            self._extends(cp, "a signed checkpoint")
            self._checkpoint_note = note
            self._accept(Trusted(cp, note, "the ledger's newest stored checkpoint"))
            return

    def _extends(self, cp: Checkpoint, what: str) -> None:
        """`ViewFailed` unless the verified records extend ``cp`` (``what`` names it in messages)."""
        size = self._size
        if cp.size > size:
            raise ViewFailed(ROLLED_BACK, (
                f"{what} ({tree_text(cp.size, cp.root)}) pins {cp.size} records, but the ledger has {size}: "
                "records were deleted from its end (rolled back)"))
        if cp.size and self._tree.root(cp.size) != cp.root:
            raise ViewFailed(FORKED, (
                f"{what} ({tree_text(cp.size, cp.root)}) is not the ledger's tree of {cp.size} records (root "
                f"{self._tree.root(cp.size).hex()[:16]}…): the log was rewritten (forked)"))

    def _accept(self, t: Trusted) -> None:
        if self._checkpoint is None or t.checkpoint.size > self._checkpoint.checkpoint.size:
            self._checkpoint = t
        self.checkpoint_size = max(self.checkpoint_size, t.checkpoint.size)

    # --- checkpoints its reader holds -----------------------------------------------
    @property
    def checkpoint(self) -> Trusted | None:
        """The largest signed checkpoint the view accepted: the newest stored one it checked,
        or one its reader required (`require`), whichever pins more records."""
        return self._checkpoint

    def require(self, held: Trusted) -> None:
        """Require the verified records to extend ``held``, a checkpoint the reader accepted
        before (its signature verified: `mlseal.ledger.rollback.load_checkpoint`).

        The view holds every leaf, so this is exact: the checkpoint pins no more records
        than the view holds, and the view's own root at its size is its root. Otherwise the
        view fails for good with `ViewFailed` ``ledger_rolled_back`` (fewer records) or
        ``ledger_forked`` (other records), naming where the checkpoint came from and both
        tree heads; a reader that catches it finds every later read failing the same way.
        """
        with self._lock:
            if self._failed is not None:
                raise self._failed
            what = f"the checkpoint from {held.source}" if held.source else "the accepted checkpoint"
            try:
                self._extends(held.checkpoint, what)
            except ViewFailed as exc:
                self._failed = exc
                log.error("verified ledger view failed: %s", exc)
                raise
            self._accept(held)


__all__ = ["FORKED", "ROLLED_BACK", "TAMPERED", "VerifiedView", "ViewFailed", "ViewHead", "trust_key"]
