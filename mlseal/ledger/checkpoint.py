"""Signed checkpoints (signed tree heads) in the C2SP formats.

A checkpoint (c2sp.org/tlog-checkpoint) is a signed note (c2sp.org/signed-note)::

    mlseal.local/ledger          <- origin: names the log
    1042                         <- tree size, decimal
    dGhlIHJvb3QgaGFzaCBpcyAzMiBieXRlcyBsb25nISE=   <- base64 Merkle root (RFC 9162)
                                 <- blank line: the note text ends above it
    — mlseal.local/ledger AbCdEf…   <- em dash, key name, base64(key ID || signature)

mlseal signs with ECDSA P-256 (signed-note signature type 0x02): the 4-byte key ID is
the first four bytes of SHA-256 of the key's DER SubjectPublicKeyInfo, the signature is
DER ECDSA/SHA-256 over the note text, and the key name is the origin. A verifier
accepts a checkpoint only if a signature line whose name is the expected origin and
whose key ID matches a trusted checkpoint key verifies; a line from a known key that
fails to verify rejects the whole note.

    >>> from mlseal.signing.keys import LocalKeySigner
    >>> from mlseal.signing.trust import TrustRoot
    >>> key = LocalKeySigner.generate()
    >>> note = sign_checkpoint(Checkpoint("example.org/log", 3, bytes(32)), key)
    >>> trust = TrustRoot(checkpoint_keys={key.key_id: key.verifier()})
    >>> verify_checkpoint(note, trust, origin="example.org/log").size
    3
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mlseal.errors import ConfigurationError, VerificationError
from mlseal.ledger import merkle
from mlseal.ledger.merkle import HASH_SIZE
from mlseal.ledger.problem import Problem
from mlseal.signing.keys import PublicKeyVerifier, Signer
from mlseal.signing.trust import TrustRoot

DEFAULT_ORIGIN = "mlseal.local/ledger"
SIG_TYPE_ECDSA = 0x02  # c2sp.org/signed-note, "Signature types"
EM_DASH = "\u2014"
MAX_SIGNATURES = 16

_KEY_NAME = re.compile(r"[^\s+]+")
#: stored checkpoints a reader looks through for the newest one it can verify
SCAN_LIMIT = 64

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from mlseal.ledger import Head

__all__ = [
    "DEFAULT_ORIGIN",
    "EM_DASH",
    "MAX_SIGNATURES",
    "SCAN_LIMIT",
    "SIG_TYPE_ECDSA",
    "Accepted",
    "AuditLedger",
    "Checkpoint",
    "CheckpointError",
    "CheckpointLedger",
    "Consistency",
    "NoteSignature",
    "RollbackError",
    "Trusted",
    "accept",
    "audit_stored",
    "check_consistency",
    "ecdsa_key_hash",
    "expected_origin",
    "newest_stored",
    "parse_checkpoint",
    "prove_consistency",
    "require_included",
    "sign_checkpoint",
    "tree_text",
    "verify_checkpoint",
    "verify_notes",
]


class CheckpointError(VerificationError):
    """A checkpoint is malformed, for another log, or not signed by a trusted key."""


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def body(self) -> bytes:
        """The note text that signatures cover (ends in a newline)."""
        if not self.origin or "\n" in self.origin or self.origin != self.origin.strip():
            raise ConfigurationError(f"checkpoint origin {self.origin!r} must be one non-empty line")
        if len(self.root) != HASH_SIZE:
            raise ConfigurationError(f"checkpoint root is {len(self.root)} bytes, expected {HASH_SIZE}")
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode(), *self.extensions]
        return ("\n".join(lines) + "\n").encode()

    def to_json(self) -> dict[str, object]:
        return {"origin": self.origin, "size": self.size, "root": self.root.hex()}


def ecdsa_key_hash(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """Signed-note key ID for type 0x02: SHA-256(DER SPKI)[:4]."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).digest()[:4]


def sign_checkpoint(cp: Checkpoint, signer: Signer, *, key_name: str | None = None) -> bytes:
    """The signed note bytes for ``cp``; the key name defaults to the origin."""
    name = key_name or cp.origin
    if not _KEY_NAME.fullmatch(name):
        raise ConfigurationError(f"checkpoint key name {name!r} must be non-empty, without spaces or '+'")
    body = cp.body()
    sig = ecdsa_key_hash(signer.public_key()) + signer.sign(body)
    return body + b"\n" + f"{EM_DASH} {name} {base64.b64encode(sig).decode()}\n".encode()


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_hash: bytes
    signature: bytes


def parse_checkpoint(data: bytes) -> tuple[Checkpoint, bytes, list[NoteSignature]]:
    """Split a signed checkpoint into (checkpoint, signed text, signatures), unverified."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointError("checkpoint is not UTF-8 text") from None
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise CheckpointError("checkpoint contains control characters")
    if not text.endswith("\n"):
        raise CheckpointError("checkpoint does not end in a newline")
    sep = text.rfind("\n\n")
    if sep < 0:
        raise CheckpointError("checkpoint has no blank line before its signatures")
    body, sig_text = text[: sep + 1], text[sep + 2 :]
    lines = body.split("\n")[:-1]
    if len(lines) < 3:
        raise CheckpointError(f"checkpoint text has {len(lines)} lines, needs origin, size and root")
    origin, size_s, root_s = lines[0], lines[1], lines[2]
    if not origin:
        raise CheckpointError("checkpoint origin line is empty")
    if not re.fullmatch(r"0|[1-9][0-9]{0,18}", size_s):
        raise CheckpointError(f"checkpoint tree size {size_s[:30]!r} is not a decimal number")
    try:
        root = base64.b64decode(root_s, validate=True)
    except (binascii.Error, ValueError):
        raise CheckpointError(f"checkpoint root {root_s[:60]!r} is not base64") from None
    if len(root) != HASH_SIZE:
        raise CheckpointError(f"checkpoint root is {len(root)} bytes, expected {HASH_SIZE}")
    sigs: list[NoteSignature] = []
    for line in sig_text.split("\n")[:-1]:
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != EM_DASH or not _KEY_NAME.fullmatch(parts[1]):
            raise CheckpointError(f"malformed checkpoint signature line {line[:60]!r}")
        try:
            raw = base64.b64decode(parts[2], validate=True)
        except (binascii.Error, ValueError):
            raise CheckpointError(f"checkpoint signature of {parts[1]!r} is not base64") from None
        if len(raw) < 5:
            raise CheckpointError(f"checkpoint signature of {parts[1]!r} is too short")
        sigs.append(NoteSignature(parts[1], raw[:4], raw[4:]))
    if not sigs:
        raise CheckpointError("checkpoint has no signature lines")
    if len(sigs) > MAX_SIGNATURES:
        raise CheckpointError(f"checkpoint has {len(sigs)} signatures, more than {MAX_SIGNATURES}")
    cp = Checkpoint(origin=origin, size=int(size_s), root=root, extensions=tuple(lines[3:]))
    return cp, body.encode(), sigs


def expected_origin(trust: TrustRoot | None, origin: str | None = None) -> str:
    """The origin to require: explicit, else the trust file's ``checkpoint_origin``, else the default."""
    if origin:
        return origin
    configured = trust.extra.get("checkpoint_origin") if trust is not None else None
    return configured if isinstance(configured, str) and configured else DEFAULT_ORIGIN


def verify_checkpoint(data: bytes, trust: TrustRoot, *, origin: str | None = None) -> Checkpoint:
    """Parse and verify a checkpoint against ``trust.checkpoint_keys``.

    1. the note parses (origin, size, root, blank line, signature lines);
    2. the origin is the expected one (a checkpoint of another log is refused);
    3. signature lines named after the origin whose key ID matches a trusted key are
       verified; any failure rejects the note, and at least one must verify.
    """
    cp, body, sigs = parse_checkpoint(data)
    want = expected_origin(trust, origin)
    if cp.origin != want:
        raise CheckpointError(f"checkpoint is for origin {cp.origin!r}, expected {want!r}")
    if not trust.checkpoint_keys:
        raise ConfigurationError(f"trust file {trust.source} lists no checkpoint_keys to verify checkpoints with")
    known: dict[bytes, PublicKeyVerifier] = {ecdsa_key_hash(v.key): v for v in trust.checkpoint_keys.values()}
    verified = 0
    for s in sigs:
        v = known.get(s.key_hash)
        if s.name != cp.origin or v is None:
            continue  # signed-note: ignore signatures from unknown keys
        try:
            v.verify(body, s.signature)
        except VerificationError:
            raise CheckpointError(
                f"checkpoint signature by {v.name or s.key_hash.hex()} does not verify "
                f"(size {cp.size}, root {cp.root.hex()[:16]}…)"
            ) from None
        verified += 1
    if not verified:
        names = ", ".join(f"{s.name}/{s.key_hash.hex()}" for s in sigs)
        raise CheckpointError(f"checkpoint is not signed by a trusted checkpoint key (signatures: {names})")
    return cp


# --- rollback and fork protection: what a reader accepted, and the log extending it ---------


class RollbackError(CheckpointError):
    """The log does not extend a tree its reader accepted before: rolled back (truncated) or
    forked (rewritten). Names both tree heads."""


class CheckpointLedger(Protocol):
    """The ledger reads that checking a checkpoint needs (`mlseal.ledger.Ledger` has them)."""

    def head(self) -> Head: ...

    def entry(self, seq: int) -> bytes: ...

    def consistency_proof(self, old_size: int, size: int | None = None) -> list[bytes]: ...

    def inclusion_proof(self, seq: int, size: int | None = None) -> list[bytes]: ...

    def checkpoints(self, limit: int = SCAN_LIMIT) -> list[bytes]: ...


def tree_text(size: int, root: bytes) -> str:
    """``size 12, root 3f2a…`` — how messages name a tree head."""
    return f"size {size}, root {root.hex()[:16]}…"


@dataclass(frozen=True)
class Consistency:
    """The current tree (``size``, ``root``) extends ``old``; ``proof`` is the RFC 9162 proof.

    From `check_consistency`: ``error`` says why it does not (then ``proof`` is empty)."""

    old: Checkpoint
    size: int
    root: bytes
    proof: tuple[bytes, ...]
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, object]:
        """What ``ledger consistency --json`` prints."""
        return {
            "old_size": self.old.size,
            "new_size": self.size,
            "old_root": self.old.root.hex(),
            "new_root": self.root.hex(),
            "path": [p.hex() for p in self.proof],
            "ok": self.ok,
        }


def prove_consistency(led: CheckpointLedger, old: Checkpoint, head: Head | None = None) -> Consistency:
    """Prove (O(log n) stored nodes) that the ledger's tree at ``head`` extends ``old``.

    `RollbackError` naming both tree heads when the log is shorter than ``old``
    (truncated, rolled back) or its first ``old.size`` records are not the ones ``old``
    pinned (forked, rewritten). The proof is checked against ``head.root``: callers that
    do not verify the entries themselves bind the head to the entries they rely on with
    `require_included`.
    """
    if head is None:
        head = led.head()
    what = f"the ledger ({tree_text(head.size, head.root)}) does not extend the accepted checkpoint " \
           f"({tree_text(old.size, old.root)})"
    if old.size > head.size:
        raise RollbackError(f"{what}: it has {head.size} records, the checkpoint pinned {old.size} "
                            "(truncated or rolled back)")
    proof: list[bytes] = []
    if 0 < old.size < head.size:
        try:
            proof = led.consistency_proof(old.size, head.size)
        except VerificationError as exc:
            raise RollbackError(f"{what}: no consistency proof ({exc})") from None
    try:
        merkle.verify_consistency(old.size, head.size, proof, old.root, head.root)
    except VerificationError as exc:
        raise RollbackError(f"{what}: the records it pinned were rewritten (forked): {exc}") from None
    return Consistency(old=old, size=head.size, root=head.root, proof=tuple(proof))


def check_consistency(led: CheckpointLedger, old: Checkpoint) -> Consistency:
    """`prove_consistency` against the ledger's current head, as an answer: a log that does not
    extend ``old`` gives a `Consistency` whose ``error`` names both tree heads."""
    head = led.head()
    try:
        return prove_consistency(led, old, head)
    except RollbackError as exc:
        return Consistency(old=old, size=head.size, root=head.root, proof=(), error=str(exc))


def require_included(led: CheckpointLedger, seq: int, head: Head, *, entry_sha256: str | None = None) -> bytes:
    """Entry ``seq`` as stored, proven to be leaf ``seq`` of the tree ``head`` (and, if
    given, to have SHA-256 ``entry_sha256``); `RollbackError` otherwise. Returns the entry."""
    where = f"record {seq}"
    if not 0 <= seq < head.size:
        raise RollbackError(f"{where} is not in the ledger ({tree_text(head.size, head.root)}): "
                            "the ledger was truncated or rolled back")
    try:
        entry = led.entry(seq)
    except VerificationError:
        raise RollbackError(f"{where} is missing from storage ({tree_text(head.size, head.root)})") from None
    got = hashlib.sha256(entry).hexdigest()
    if entry_sha256 is not None and got != entry_sha256:
        raise RollbackError(f"{where} is now entry {got[:16]}…, not the {entry_sha256[:16]}… that was appended "
                            "there: the ledger was forked (rewritten)")
    try:
        merkle.verify_inclusion(merkle.leaf_hash(entry), seq, head.size, led.inclusion_proof(seq, head.size),
                                head.root)
    except VerificationError as exc:
        raise RollbackError(f"{where} as stored is not leaf {seq} of the ledger's tree "
                            f"({tree_text(head.size, head.root)}): {exc}") from None
    return entry


@dataclass(frozen=True)
class Trusted:
    """A checkpoint whose signature verified, with its note bytes and, for messages, where
    it came from (``--checkpoint FILE``, ``$MLSEAL_CHECKPOINT``, a state file)."""

    checkpoint: Checkpoint
    note: bytes
    source: str = field(default="", compare=False)


def newest_stored(led: CheckpointLedger, trust: TrustRoot, *, origin: str | None = None,
                  limit: int = SCAN_LIMIT) -> tuple[Trusted | None, list[str]]:
    """The stored checkpoint with the largest tree size whose signature verifies against
    ``trust``, and why the larger ones were skipped (a stored note is never trusted by itself:
    one that does not verify is ignored, and reported). Looks at most ``limit`` notes."""
    skipped: list[str] = []
    for note in led.checkpoints(limit):
        try:
            cp = verify_checkpoint(note, trust, origin=origin)
        except VerificationError as exc:
            skipped.append(f"ignored a stored checkpoint: {exc}")
            continue
        return Trusted(cp, note), skipped
    return None, skipped


def verify_notes(notes: Iterable[bytes], trust: TrustRoot, *, origin: str | None = None,
                 where: str = "checkpoint") -> list[Trusted]:
    """Verify checkpoints handed over by a trusted party (a state file, an upstream task's
    metadata): one that does not verify is an error, not skipped."""
    out = []
    for note in notes:
        try:
            out.append(Trusted(verify_checkpoint(note, trust, origin=origin), note))
        except CheckpointError as exc:
            raise CheckpointError(f"{where}: {exc}") from None
    return out


@dataclass(frozen=True)
class Accepted:
    """What a reader accepted: the largest trusted checkpoint (if any) and the tree head it
    proved to extend every checkpoint it was given."""

    checkpoint: Trusted | None
    head: Head


def accept(led: CheckpointLedger, trust: TrustRoot, *, known: Iterable[Trusted] = (),
           origin: str | None = None, head: Head | None = None) -> Accepted:
    """Check the ledger against every checkpoint its reader holds, and the newest trusted one stored.

    Each of ``known`` (checkpoints accepted before) and the newest stored checkpoint that
    verifies must be extended by the current tree (`prove_consistency`), and the last
    entry must be the last leaf of that tree (so the next record's ``prev`` links into
    the proven tree). `RollbackError` names the first checkpoint the log does not extend.
    """
    if head is None:
        head = led.head()
    candidates = list(known)
    stored, skipped = newest_stored(led, trust, origin=origin)
    for why in skipped:
        log.warning("%s", why)
    if stored is not None:
        candidates.append(stored)
    for t in candidates:
        prove_consistency(led, t.checkpoint, head)
    if head.size:
        require_included(led, head.size - 1, head, entry_sha256=head.last_entry_hash or None)
    best = max(candidates, key=lambda t: t.checkpoint.size, default=None)
    return Accepted(best, head)


# --- auditing what is stored ------------------------------------------------------------------


class AuditLedger(Protocol):
    """The ledger reads that auditing its stored checkpoints needs (`mlseal.ledger.Ledger` has them)."""

    def checkpoint_rows(self, batch: int = 1000) -> Iterator[tuple[int, int, bytes]]: ...

    def get_nodes(self, coords: Sequence[merkle.Coord]) -> Mapping[merkle.Coord, bytes]: ...


_WRITTEN_AROUND = ("only the witness stores checkpoints, and only notes it signed: someone who can write the "
                   "ledger's database stored this row; find out who, then delete the row as the schema owner")
_NOT_EXTENDED = ("the ledger does not extend a checkpoint the checkpoint key signed: restore the ledger from a "
                 "verified copy (it was {what} after that checkpoint), or, if the key signed a tree that is not "
                 "this ledger's, rotate the checkpoint key")


def audit_stored(led: AuditLedger, trust: TrustRoot, size: int, root: bytes, *, origin: str | None = None,
                 batch: int = 512) -> tuple[int, list[Problem]]:
    """Check every stored checkpoint row against the tree (``size``, ``root``) the caller
    verified; return (rows checked, problems, one per bad row, in row order). Each is a
    ``stored_checkpoint`` `Problem` whose detail starts ``checkpoint row ROW (size SIZE):``.

    For each row, in this order (the first failure is its problem):

    1. the note parses (`parse_checkpoint`);
    2. the row's size column is the note's tree size (readers order the rows by it);
    3. it verifies against ``trust.checkpoint_keys`` with the expected origin (`verify_checkpoint`);
    4. the verified tree extends it: it pins no more than ``size`` records, and an RFC 9162
       consistency proof from its size to ``size``, read from the stored Merkle nodes, is
       checked against both roots (a wrong stored node cannot make a wrong root pass).

    Storage is read ``batch`` rows at a time, and the nodes of a batch's proofs in one read.
    """
    problems: list[tuple[int, Problem]] = []  # (row, problem)
    checked = 0
    rows = iter(led.checkpoint_rows())
    while True:
        page = list(itertools.islice(rows, max(batch, 1)))
        if not page:
            return checked, [p for _, p in problems]
        checked += len(page)
        pending: list[tuple[int, int, Checkpoint]] = []
        for row, column, note in page:
            where = f"checkpoint row {row} (size {column})"
            try:
                cp = parse_checkpoint(note)[0]
            except CheckpointError as exc:
                problems.append(_stored(row, f"{where}: the note does not parse ({exc}); {_WRITTEN_AROUND}"))
                continue
            if cp.size != column:
                problems.append(_stored(row, (
                    f"{where}: its size column says {column}, but the note's tree size is {cp.size} (a row placed "
                    f"to sort before the real checkpoints); {_WRITTEN_AROUND}")))
                continue
            try:
                cp = verify_checkpoint(note, trust, origin=origin)
            except CheckpointError as exc:
                problems.append(_stored(row, f"{where}: {exc}; {_WRITTEN_AROUND}"))
                continue
            if cp.size > size:
                problems.append(_stored(row, (
                    f"{where}: it pins {cp.size} records, but the ledger has only {size}; "
                    + _NOT_EXTENDED.format(what="truncated (rolled back)"))))
                continue
            pending.append((row, column, cp))
        problems += _not_extended(led, pending, size, root)
        problems.sort(key=lambda rp: rp[0])


def _stored(row: int, detail: str) -> tuple[int, Problem]:
    return row, Problem(None, "stored_checkpoint", detail)


def _not_extended(led: AuditLedger, pending: list[tuple[int, int, Checkpoint]], size: int,
                  root: bytes) -> list[tuple[int, Problem]]:
    """The rows of ``pending`` whose checkpoint the tree (size, root) does not extend."""
    coords = sorted({c for _, _, cp in pending if 0 < cp.size < size
                     for s, e in merkle.consistency_ranges(cp.size, size) for c in merkle.perfect_cover(s, e)})
    nodes = led.get_nodes(coords) if coords else {}

    class Fetched:
        def get_nodes(self, want: Sequence[merkle.Coord]) -> Mapping[merkle.Coord, bytes]:
            return nodes

    out = []
    for row, column, cp in pending:
        try:
            if cp.size == 0:
                if cp.root != merkle.EMPTY_ROOT:
                    raise VerificationError(f"an empty tree's root is {merkle.EMPTY_ROOT.hex()[:16]}…")
                continue
            proof = merkle.consistency_proof(cp.size, size, Fetched())
            merkle.verify_consistency(cp.size, size, proof, cp.root, root)
        except VerificationError as exc:
            out.append(_stored(row, (
                f"checkpoint row {row} (size {column}): its root {cp.root.hex()[:16]}… is not the root of the "
                f"ledger's first {cp.size} records ({exc}); " + _NOT_EXTENDED.format(what="rewritten (forked)"))))
    return out
