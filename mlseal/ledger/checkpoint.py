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
import re
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mlseal.errors import ConfigurationError, VerificationError
from mlseal.ledger.merkle import HASH_SIZE
from mlseal.signing.keys import PublicKeyVerifier, Signer
from mlseal.signing.trust import TrustRoot

DEFAULT_ORIGIN = "mlseal.local/ledger"
SIG_TYPE_ECDSA = 0x02  # c2sp.org/signed-note, "Signature types"
EM_DASH = "\u2014"
MAX_SIGNATURES = 16

_KEY_NAME = re.compile(r"[^\s+]+")


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
