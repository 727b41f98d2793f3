"""Dataset encryption at rest: glue over `mlseal.secrets.envelope` (AES-256-GCM).

There is one envelope format in mlseal, `mlseal.secrets.envelope` (a self-describing
header holding the wrapped data key, its Transit key name and the nonce, authenticated
as GCM associated data). This module adds what is specific to datasets, and stays pure
— the caller passes key *bytes* it got from its secret source:

- a dataset domain and the content type are bound into the associated data, so a
  dataset blob cannot be passed off as another kind of envelope (or another content
  type) even under the same key;
- `decrypt` takes the already-unwrapped key, so this library never calls Vault;
- argument errors are `ConfigurationError`, tampering / wrong key `VerificationError`,
  and no message carries key bytes.

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

import os
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from mlseal._files import write_atomic
from mlseal.errors import ConfigurationError
from mlseal.secrets import DATA_KEY, DataKey, SecretSource, envelope
from mlseal.sensitive import Secret

__all__ = [
    "ALGORITHM",
    "DEFAULT_CONTENT_TYPE",
    "KEY_BYTES",
    "MAGIC",
    "Header",
    "decrypt",
    "decrypt_file",
    "encrypt",
    "encrypt_file",
    "read_header",
]

#: Blobs start with the envelope's magic bytes (use `blob.startswith(MAGIC)` to detect them).
MAGIC = envelope.MAGIC
ALGORITHM = "AES-256-GCM"
KEY_BYTES = 32
DEFAULT_CONTENT_TYPE = "text/csv"
_DATASET_DOMAIN = b"mlseal.ml.dataset.v1\x00"


@dataclass(frozen=True)
class Header:
    """The clear part of an encrypted dataset (authenticated only once `decrypt` succeeds)."""

    wrapped_key: str
    key_name: str
    nonce: bytes
    algorithm: str = ALGORITHM


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
        size = len(key) if isinstance(key, bytes | bytearray) else type(key).__name__
        raise ConfigurationError(f"data key must be {KEY_BYTES} bytes for {ALGORITHM}, got {size}")


def _aad(content_type: str) -> bytes:
    if not content_type or not isinstance(content_type, str):
        raise ConfigurationError("content_type must be a non-empty string")
    return _DATASET_DOMAIN + content_type.encode("utf-8")


def encrypt(plaintext: bytes, data_key: bytes, wrapped_key: str, *, key_name: str = DATA_KEY,
            content_type: str = DEFAULT_CONTENT_TYPE) -> bytes:
    """Encrypt `plaintext` under a fresh 32-byte `data_key`; its `wrapped_key` goes in the header.

    `key_name` is the Transit (or dev store) key that wrapped it, recorded so the reader
    knows where to unwrap. Use each data key for one dataset.
    """
    _check_key(data_key)
    if not wrapped_key or not isinstance(wrapped_key, str):
        raise ConfigurationError("wrapped_key must be a non-empty string")
    dk = DataKey(Secret(bytes(data_key)), wrapped_key, key_name)
    return envelope.encrypt(plaintext, dk, _aad(content_type))


def read_header(blob: bytes) -> Header:
    """The header, to learn which wrapped key to unwrap; raises VerificationError if malformed."""
    h = envelope.read_header(blob)[0]
    return Header(wrapped_key=h.wrapped, key_name=h.key_name, nonce=h.nonce)


class _Unwrapped:
    """Answers the envelope's unwrap call with a key the caller already unwrapped."""

    def __init__(self, key: bytes) -> None:
        self._key = Secret(bytes(key))

    def unwrap_data_key(self, wrapped: str, key_name: str = DATA_KEY) -> Secret[bytes]:
        return self._key


def decrypt(blob: bytes, data_key: bytes, *, content_type: str = DEFAULT_CONTENT_TYPE) -> bytes:
    """Authenticate and decrypt with the unwrapped `data_key`; VerificationError if anything changed.

    A swapped header (another wrapped key) fails too: the header is part of the
    authenticated data.
    """
    _check_key(data_key)
    # the envelope only calls unwrap_data_key on its source; the key is already unwrapped
    return envelope.decrypt(blob, cast(SecretSource, _Unwrapped(data_key)), _aad(content_type))


def encrypt_file(src: str | os.PathLike[str], dst: str | os.PathLike[str], data_key: bytes, wrapped_key: str,
                 *, key_name: str = DATA_KEY, content_type: str = DEFAULT_CONTENT_TYPE) -> None:
    """Encrypt a file; the output is written atomically (temp file + rename)."""
    blob = encrypt(Path(src).read_bytes(), data_key, wrapped_key, key_name=key_name, content_type=content_type)
    write_atomic(dst, blob)


def decrypt_file(src: str | os.PathLike[str], data_key: bytes, *, content_type: str = DEFAULT_CONTENT_TYPE) -> bytes:
    """Decrypt a file to bytes in memory (the plaintext never touches disk here)."""
    return decrypt(Path(src).read_bytes(), data_key, content_type=content_type)


