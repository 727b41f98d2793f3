"""AES-256-GCM envelope encryption with a wrapped data key in a self-describing header.

The data key comes from `SecretSource.data_key` (Vault Transit ``datakey/plaintext``, or
the dev store); only its wrapped form is stored, in the blob's header, so decrypting
needs the same source (and, for Vault, permission to ``transit/decrypt``). The header is
authenticated together with the caller's ``aad`` (e.g. the artifact's name), so swapping
headers, keys or blobs between artifacts fails.

Layout (all integers big-endian)::

    b"MLSEALENV" | version 0x01 | header length (4 bytes) | header JSON | ciphertext + 16-byte tag

    header JSON (sorted keys): {"alg": "A256GCM", "key_name": ..., "nonce": base64, "wrapped": "vault:v1:..."}
    GCM additional data: b"mlseal-envelope-v1" 0x00 | len(aad) (8 bytes) | aad | header JSON

    >>> import tempfile
    >>> from mlseal.secrets import open_secret_source
    >>> src = open_secret_source(dev_dir=tempfile.mkdtemp(), env={})
    >>> blob = encrypt(b"rows", src.data_key(), b"dataset:raw")
    >>> decrypt(blob, src, b"dataset:raw")
    b'rows'
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mlseal.errors import VerificationError
from mlseal.secrets.source import SecretSource
from mlseal.secrets.values import DataKey

__all__ = ["ALG", "MAGIC", "VERSION", "Header", "decrypt", "encrypt", "read_header"]

MAGIC = b"MLSEALENV"
VERSION = 1
ALG = "A256GCM"
_AAD_DOMAIN = b"mlseal-envelope-v1\x00"
_NONCE = 12
_TAG = 16
_MAX_HEADER = 64 * 1024


@dataclass(frozen=True)
class Header:
    alg: str
    key_name: str
    nonce: bytes
    wrapped: str


def encrypt(plaintext: bytes, key: DataKey, aad: bytes = b"") -> bytes:
    """Encrypt ``plaintext`` under ``key`` (use each `DataKey` for one blob)."""
    raw_key = key.plaintext.reveal()
    if len(raw_key) != 32:
        raise VerificationError(f"data key has {len(raw_key)} bytes; AES-256-GCM needs 32")
    nonce = os.urandom(_NONCE)
    header = json.dumps(
        {"alg": ALG, "key_name": key.key_name, "nonce": base64.b64encode(nonce).decode(), "wrapped": key.wrapped},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    ct = AESGCM(raw_key).encrypt(nonce, plaintext, _gcm_aad(aad, header))
    return MAGIC + bytes([VERSION]) + len(header).to_bytes(4, "big") + header + ct


def read_header(blob: bytes) -> tuple[Header, bytes, bytes]:
    """(header, header bytes, ciphertext) — raises `VerificationError` on any malformation."""
    fixed = len(MAGIC) + 1 + 4
    if len(blob) < fixed or not blob.startswith(MAGIC):
        raise VerificationError("not an mlseal envelope (bad magic)")
    if blob[len(MAGIC)] != VERSION:
        raise VerificationError(f"envelope version {blob[len(MAGIC)]} is not supported (expected {VERSION})")
    n = int.from_bytes(blob[len(MAGIC) + 1 : fixed], "big")
    if n > _MAX_HEADER or len(blob) < fixed + n + _TAG:
        raise VerificationError(f"envelope is truncated (header length {n}, blob {len(blob)} bytes)")
    header_bytes, ct = blob[fixed : fixed + n], blob[fixed + n :]
    try:
        obj = json.loads(header_bytes)
        header = Header(str(obj["alg"]), str(obj["key_name"]), base64.b64decode(obj["nonce"], validate=True),
                        str(obj["wrapped"]))
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise VerificationError("envelope header is malformed") from None
    if header.alg != ALG or len(header.nonce) != _NONCE:
        raise VerificationError(f"envelope header: unsupported alg {header.alg!r} or nonce length")
    return header, header_bytes, ct


def decrypt(blob: bytes, src: SecretSource, aad: bytes = b"") -> bytes:
    """Unwrap the data key through ``src`` and decrypt; any tampering raises `VerificationError`."""
    header, header_bytes, ct = read_header(blob)
    key = src.unwrap_data_key(header.wrapped, header.key_name)
    try:
        return AESGCM(key.reveal()).decrypt(header.nonce, ct, _gcm_aad(aad, header_bytes))
    except InvalidTag:
        raise VerificationError(
            "envelope does not authenticate: the ciphertext, its header or the associated data was changed"
        ) from None


def _gcm_aad(aad: bytes, header: bytes) -> bytes:
    return _AAD_DOMAIN + len(aad).to_bytes(8, "big") + aad + header
