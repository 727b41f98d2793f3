"""Who may sign an artifact: composable bundle policies.

A policy looks at a parsed Sigstore bundle, checks its signature, and either returns
what was signed and by whom, or raises `VerificationError` saying why not. Policies
compose: `AnyOf` accepts the first child that accepts, `AllOf` needs every child. An
empty composition is refused when it is built (it would accept nothing, or worse, be
read as "no rules"). The one bypass, `UnsafeNoSignatureCheck`, says so in its name and
logs a warning each time it is used.

    >>> from mlseal.signing.keys import LocalKeySigner
    >>> key = LocalKeySigner.generate()
    >>> p = AnyOf([KeyPolicy(key.verifier(name="pipeline"))])
    >>> AnyOf([])
    Traceback (most recent call last):
    ...
    mlseal.errors.ConfigurationError: AnyOf needs at least one policy: an empty policy is refused
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from mlseal.errors import ConfigurationError, VerificationError
from mlseal.signing import dsse
from mlseal.signing.authenticated import Authenticated, BundlePolicy, SignedBy
from mlseal.signing.keyless import IdentityPolicy
from mlseal.signing.keys import PublicKeyVerifier, public_pem
from mlseal.signing.sigstore_bundle import SigstoreBundle, key_hint
from mlseal.signing.trust import TrustRoot

__all__ = ["AllOf", "AnyOf", "KeyPolicy", "UnsafeNoSignatureCheck", "policy_from_trust"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyPolicy:
    """Accepts a bundle whose DSSE signature verifies with one EC P-256 public key."""

    verifier: PublicKeyVerifier

    def verify(self, bundle: SigstoreBundle) -> Authenticated:
        who = self.verifier.name or self.verifier.key_id[:16]
        if bundle.is_keyless:
            raise VerificationError(f"key {who}: bundle is signed keylessly (certificate), not with a key")
        if bundle.envelope is None:
            raise VerificationError(f"key {who}: bundle has no DSSE envelope to check")
        expected = key_hint(public_pem(self.verifier.key))
        # (model-signing checks the hint too: a different key is named before any crypto)
        if bundle.key_hint and bundle.key_hint != expected:
            raise VerificationError(
                f"bundle says it was signed by key {bundle.key_hint[:16]}…, not by key {who} ({expected[:16]}…)"
            )
        env = bundle.envelope
        message = dsse.pae(env.payload_type, env.payload)
        for s in env.signatures:  # OMS bundles carry an empty keyid: try the key on each
            try:
                self.verifier.verify(message, s.sig)
            except VerificationError:
                continue
            return Authenticated(env.payload_type, env.payload, SignedBy(name=who, key_id=self.verifier.key_id))
        raise VerificationError(f"bundle signature does not verify with key {who} (tampered, or another key)")


@dataclass(frozen=True)
class AnyOf:
    """Accepts the first child policy that accepts; else lists every child's reason."""

    policies: Sequence[BundlePolicy]

    def __post_init__(self) -> None:
        if not self.policies:
            raise ConfigurationError("AnyOf needs at least one policy: an empty policy is refused")

    def verify(self, bundle: SigstoreBundle) -> Authenticated:
        reasons = []
        for p in self.policies:
            try:
                return p.verify(bundle)
            except VerificationError as exc:
                reasons.append(str(exc))
        if len(reasons) == 1:
            raise VerificationError(reasons[0])
        raise VerificationError("no trusted signer accepts the bundle: " + "; ".join(reasons))


@dataclass(frozen=True)
class AllOf:
    """Accepts only if every child accepts the same payload (e.g. key and identity)."""

    policies: Sequence[BundlePolicy]

    def __post_init__(self) -> None:
        if not self.policies:
            raise ConfigurationError("AllOf needs at least one policy: an empty policy is refused")

    def verify(self, bundle: SigstoreBundle) -> Authenticated:
        results = [p.verify(bundle) for p in self.policies]
        first = results[0]
        # what is signed: a DSSE payload, or (message signature) the artifact's sha256
        signed = (first.payload_type, first.payload, first.message_sha256)
        if any((r.payload_type, r.payload, r.message_sha256) != signed for r in results[1:]):
            raise VerificationError("policies authenticated different payloads")
        return first


@dataclass(frozen=True)
class UnsafeNoSignatureCheck:
    """Skips the signature: checks integrity against the bundle's claims only. Warns."""

    reason: str = field(default="integrity only")

    def verify(self, bundle: SigstoreBundle) -> Authenticated:
        _log.warning("UNSAFE: bundle signature NOT checked (%s); anyone could have written it", self.reason)
        if bundle.envelope is not None:
            e = bundle.envelope
            return Authenticated(e.payload_type, e.payload, SignedBy(name="UNVERIFIED"))
        if bundle.message_signature is not None:
            return Authenticated("", b"", SignedBy(name="UNVERIFIED"), bundle.message_signature.sha256)
        raise VerificationError("bundle has nothing signed")


def policy_from_trust(trust: TrustRoot) -> BundlePolicy:
    """Any key or keyless identity the trust file lists may sign; nothing else may."""
    children: list[BundlePolicy] = [KeyPolicy(v) for v in trust.signers.values()]
    root = trust.sigstore_trusted_root()
    staging = trust.sigstore_staging()
    children += [
        IdentityPolicy(i.identity, i.issuer, name=i.name, trusted_root=root, staging=staging)
        for i in trust.keyless_identities()
    ]
    if not children:
        raise ConfigurationError(f"trust {trust.source} lists no artifact signer: an empty policy is refused")
    return AnyOf(children)
