"""What a signature check proves: who signed (`SignedBy`) and what they signed
(`Authenticated`), and the shape every bundle policy has (`BundlePolicy`).

The bottom of the signing verification code: `mlseal.signing.policy` (keys and
compositions) and `mlseal.signing.keyless` (Sigstore identities) both return these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from mlseal.signing.sigstore_bundle import SigstoreBundle

__all__ = ["Authenticated", "BundlePolicy", "SignedBy"]


@dataclass(frozen=True)
class SignedBy:
    """Who signed: a trusted key (`key_id`) or a keyless identity (`identity`, `issuer`)."""

    name: str
    key_id: str | None = None
    identity: str | None = None
    issuer: str | None = None

    def __str__(self) -> str:
        if self.identity:
            return f"{self.name} ({self.identity} via {self.issuer})"
        return f"{self.name} (key {self.key_id[:16] if self.key_id else '?'}…)"


@dataclass(frozen=True)
class Authenticated:
    """What a bundle whose signature a policy accepted signs: a DSSE payload, or (for a
    plain Sigstore message signature, no DSSE) the sha256 of one artifact."""

    payload_type: str
    payload: bytes
    signer: SignedBy
    message_sha256: str | None = None


@runtime_checkable
class BundlePolicy(Protocol):
    def verify(self, bundle: SigstoreBundle) -> Authenticated:
        """Return what the bundle signs if this policy accepts its signer; else raise."""
        ...
