"""Signer and verifier interfaces, and the local EC P-256 key implementation.

Every signer in mlseal — a local PEM key, a Vault Transit key, a keyless Sigstore
identity — produces ECDSA P-256 / SHA-256 signatures (DER) over raw bytes, and is known
by a key id: the hex SHA-256 of its public key's DER SubjectPublicKeyInfo.

    >>> signer = LocalKeySigner.generate()
    >>> sig = signer.sign(b"data")
    >>> signer.verifier().verify(b"data", sig)
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NewType, Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mlseal._files import write_atomic
from mlseal.errors import ConfigurationError, VerificationError

__all__ = [
    "KeyId",
    "LocalKeySigner",
    "PublicKeyVerifier",
    "Signer",
    "key_id",
    "load_public_key",
    "public_pem",
]

KeyId = NewType("KeyId", str)

_ECDSA = ec.ECDSA(hashes.SHA256())


def key_id(public_key: ec.EllipticCurvePublicKey) -> KeyId:
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return KeyId(hashlib.sha256(der).hexdigest())


def public_pem(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@runtime_checkable
class Signer(Protocol):
    """Makes ECDSA P-256 SHA-256 signatures; the private key may live elsewhere (Vault)."""

    @property
    def key_id(self) -> KeyId: ...

    def public_key(self) -> ec.EllipticCurvePublicKey: ...

    def sign(self, data: bytes) -> bytes:
        """DER-encoded ECDSA signature over SHA-256(data)."""
        ...


@dataclass(frozen=True)
class PublicKeyVerifier:
    """Verifies signatures made by one EC P-256 key. Raises, never returns False."""

    key: ec.EllipticCurvePublicKey
    name: str = ""

    @property
    def key_id(self) -> KeyId:
        return key_id(self.key)

    def verify(self, data: bytes, signature: bytes) -> None:
        try:
            self.key.verify(signature, data, _ECDSA)
        except InvalidSignature:
            who = self.name or self.key_id[:16]
            raise VerificationError(f"signature does not verify with key {who}") from None

    @classmethod
    def from_pem(cls, pem: bytes, *, name: str = "", source: str = "public key") -> PublicKeyVerifier:
        return cls(load_public_key(pem, source=source), name=name)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, name: str = "") -> PublicKeyVerifier:
        return cls(load_public_key(_read(path), source=str(path)), name=name)


def _read(path: str | os.PathLike[str]) -> bytes:
    text = os.fspath(path)
    if ("-----BEGIN" in text or "\n" in text or len(text) > 4096):
        # The key itself where its path belongs (e.g. $MLSEAL_SIGNING_KEY set to the PEM):
        # never echo it.
        raise ConfigurationError(
            "a key file setting holds key material, not a path: write the PEM to a file "
            "(mode 0600) and give its path"
        )
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read key file {path}: {exc.strerror}") from None


def _require_p256(key: object, source: str) -> None:
    if not isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        raise ConfigurationError(
            f"{source}: expected an EC P-256 key, got {type(key).__name__.lstrip('_')}"
        )
    if not isinstance(key.curve, ec.SECP256R1):
        raise ConfigurationError(f"{source}: expected curve P-256, got {key.curve.name}")


def load_public_key(pem: bytes, *, source: str = "public key") -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise ConfigurationError(f"{source}: not a PEM public key") from None
    _require_p256(key, source)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


class LocalKeySigner:
    """An EC P-256 private key held in this process (from a PEM file or generated)."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        _require_p256(private_key, "signing key")
        self._key = private_key
        self._key_id = key_id(private_key.public_key())

    def __repr__(self) -> str:  # never print key material
        return f"LocalKeySigner(key_id={self._key_id[:16]}…)"

    @property
    def key_id(self) -> KeyId:
        return self._key_id

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data, _ECDSA)

    def verifier(self, name: str = "") -> PublicKeyVerifier:
        return PublicKeyVerifier(self.public_key(), name=name)

    @classmethod
    def generate(cls) -> LocalKeySigner:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def from_pem(cls, pem: bytes, *, source: str = "signing key") -> LocalKeySigner:
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError):
            raise ConfigurationError(
                f"{source}: not an unencrypted PEM private key"
            ) from None
        _require_p256(key, source)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cls(key)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> LocalKeySigner:
        return cls.from_pem(_read(path), source=str(path))

    def private_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def save(self, private_path: str | os.PathLike[str], public_path: str | os.PathLike[str]) -> None:
        """Write the private key 0600 (atomically) and the public key beside it."""
        private_path = Path(private_path)
        private_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(private_path, self.private_pem(), mode=0o600)
        Path(public_path).parent.mkdir(parents=True, exist_ok=True)
        Path(public_path).write_bytes(public_pem(self.public_key()))
