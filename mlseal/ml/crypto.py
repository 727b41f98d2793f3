"""AES-256-GCM envelope for a dataset file's bytes, with a self-describing header.

The caller gets a fresh 32-byte data key and its wrapped form (e.g. a Vault Transit
`vault:v1:...` ciphertext, or a dev-store equivalent) from its secret source; this
module never sees the key-encryption key. Layout:

    MAGIC (8 bytes "MLSDS\\x00\\x01\\n") | header length (4 bytes, big endian) | header JSON
    | AES-256-GCM ciphertext with its 16-byte tag

The header (algorithm, 12-byte nonce, wrapped key, optional media type) is canonical JSON
and the whole prefix MAGIC..header is the GCM associated data, so changing any byte of
it — e.g. swapping in another wrapped key — fails authentication.

    >>> import os
    >>> from mlseal.ml.crypto import encrypt, read_header, decrypt
    >>> key = os.urandom(32)
    >>> blob = encrypt(b"a,b\\n1,2\\n", key, "vault:v1:abc")
    >>> read_header(blob).wrapped_key
    'vault:v1:abc'
    >>> decrypt(blob, key)
    b'a,b\\n1,2\\n'
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mlseal.errors import ConfigurationError, VerificationError

MAGIC = b"MLSDS\x00\x01\n"
ALGORITHM = "AES-256-GCM"
MEDIA_TYPE = "application/vnd.mlseal.dataset.encrypted.v1"
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
MAX_HEADER_BYTES = 64 * 1024


@dataclass(frozen=True)
class Header:
    """The clear, authenticated part of an encrypted dataset."""

    wrapped_key: str
    nonce: bytes
    content_type: str = "text/csv"
    algorithm: str = ALGORITHM

    def to_bytes(self) -> bytes:
        obj = {"alg": self.algorithm, "content_type": self.content_type,
               "nonce": base64.b64encode(self.nonce).decode("ascii"), "v": 1, "wrapped_key": self.wrapped_key}
        return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
        size = len(key) if isinstance(key, bytes | bytearray) else type(key).__name__
        raise ConfigurationError(f"data key must be {KEY_BYTES} bytes for {ALGORITHM}, got {size}")


def encrypt(plaintext: bytes, data_key: bytes, wrapped_key: str, *, content_type: str = "text/csv",
            nonce: bytes | None = None) -> bytes:
    """Encrypt `plaintext` under `data_key`, embedding `wrapped_key` in the header.

    `nonce` is for tests only; by default a fresh random 96-bit nonce is used (one key
    per dataset, so nonce reuse is not a practical risk either way).
    """
    _check_key(data_key)
    if not wrapped_key or not isinstance(wrapped_key, str):
        raise ConfigurationError("wrapped_key must be a non-empty string")
    nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
    if len(nonce) != NONCE_BYTES:
        raise ConfigurationError(f"nonce must be {NONCE_BYTES} bytes, got {len(nonce)}")
    header = Header(wrapped_key=wrapped_key, nonce=nonce, content_type=content_type).to_bytes()
    prefix = MAGIC + struct.pack(">I", len(header)) + header
    return prefix + AESGCM(bytes(data_key)).encrypt(nonce, plaintext, prefix)


def _split(blob: bytes) -> tuple[Header, bytes, bytes]:
    # 1. magic; 2. header length within bounds; 3. header is the JSON we write;
    # 4. room for at least a tag. Any failure: VerificationError naming what is wrong.
    if not blob.startswith(MAGIC):
        raise VerificationError("not an mlseal encrypted dataset (bad magic bytes)")
    if len(blob) < len(MAGIC) + 4:
        raise VerificationError("encrypted dataset truncated in the header")
    (hlen,) = struct.unpack(">I", blob[len(MAGIC):len(MAGIC) + 4])
    start = len(MAGIC) + 4
    if hlen > MAX_HEADER_BYTES or start + hlen + TAG_BYTES > len(blob):
        raise VerificationError(f"encrypted dataset truncated or header length invalid ({hlen} bytes)")
    raw = blob[start:start + hlen]
    try:
        obj = json.loads(raw)
        nonce = base64.b64decode(obj["nonce"], validate=True)
        header = Header(wrapped_key=str(obj["wrapped_key"]), nonce=nonce,
                        content_type=str(obj["content_type"]), algorithm=str(obj["alg"]))
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise VerificationError("encrypted dataset header is malformed") from None
    if header.algorithm != ALGORITHM or obj.get("v") != 1:
        raise VerificationError(f"unsupported encryption: alg {header.algorithm!r}, v {obj.get('v')!r}")
    if len(nonce) != NONCE_BYTES:
        raise VerificationError(f"nonce is {len(nonce)} bytes, expected {NONCE_BYTES}")
    return header, blob[:start + hlen], blob[start + hlen:]


def read_header(blob: bytes) -> Header:
    """The header (to get the wrapped key to unwrap). Not yet authenticated: `decrypt` does that."""
    return _split(blob)[0]


def decrypt(blob: bytes, data_key: bytes) -> bytes:
    """Authenticate header + ciphertext and return the plaintext; raise VerificationError if not."""
    _check_key(data_key)
    header, prefix, body = _split(blob)
    try:
        return AESGCM(bytes(data_key)).decrypt(header.nonce, body, prefix)
    except InvalidTag:
        raise VerificationError("encrypted dataset failed authentication: tampered, truncated, or wrong key") from None


def encrypt_file(src: str | os.PathLike[str], dst: str | os.PathLike[str], data_key: bytes, wrapped_key: str,
                 *, content_type: str = "text/csv") -> None:
    """Encrypt a file; the output is written atomically (temp file + rename)."""
    _atomic_write(Path(dst), encrypt(Path(src).read_bytes(), data_key, wrapped_key, content_type=content_type))


def decrypt_file(src: str | os.PathLike[str], data_key: bytes) -> bytes:
    """Decrypt a file to bytes in memory (the plaintext never touches disk here)."""
    return decrypt(Path(src).read_bytes(), data_key)


def _atomic_write(dest: Path, payload: bytes) -> None:
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
