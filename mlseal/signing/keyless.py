"""Sigstore keyless signing and offline verification (through sigstore-python).

Signing: an OIDC identity token (from a file, or an ambient credential such as a
GitHub Actions or GKE workload token) buys a short-lived Fulcio certificate; the DSSE
envelope over the OMS statement is logged in Rekor; the bundle carries certificate and
log entry. That needs a reachable Sigstore instance: the public-good one, or a private
one described by a ClientTrustConfig JSON (`trust_config=`).

Verification needs no network: the bundle carries the certificate and the Rekor entry
(with its inclusion proof and signed entry timestamp), checked against a trusted root —
sigstore-python's bundled production root, the staging root, or a private instance's
trusted_root.json — and an identity policy (certificate SAN + OIDC issuer).

    >>> # verify_bundle(parse_bundle(data), IdentityPolicy(identity=..., issuer=...))
"""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlseal.errors import ConfigurationError, InfrastructureError, VerificationError
from mlseal.sensitive import Secret
from mlseal.signing.authenticated import Authenticated, SignedBy
from mlseal.signing.sigstore_bundle import SigstoreBundle

__all__ = ["IdentityPolicy", "KeylessSigner", "verify_bundle"]

_log = logging.getLogger(__name__)


def _trusted_root(path: Path | None, staging: bool) -> Any:
    # one parse per root (and per version of a root file) per process: an AnyOf over
    # several keyless identities would otherwise reload it for each
    mtime = path.stat().st_mtime_ns if path is not None and path.exists() else 0
    return _load_trusted_root(path, staging, mtime)


@functools.lru_cache(maxsize=8)
def _load_trusted_root(path: Path | None, staging: bool, _mtime: int) -> Any:
    from sigstore.models import ClientTrustConfig, TrustedRoot

    if path is None:
        # offline: sigstore-python's bundled (or cached) TUF root, no network
        cfg = ClientTrustConfig.staging(offline=True) if staging else ClientTrustConfig.production(offline=True)
        return cfg.trusted_root
    try:
        raw = path.read_text()
    except OSError as exc:
        raise ConfigurationError(f"cannot read Sigstore trusted root {path}: {exc.strerror}") from None
    try:
        media_type = json.loads(raw).get("mediaType", "")
    except (ValueError, AttributeError):
        raise ConfigurationError(f"Sigstore trusted root {path} is not a JSON object") from None
    try:
        if "clienttrustconfig" in str(media_type).lower():
            return ClientTrustConfig.from_json(raw).trusted_root
        return TrustedRoot.from_file(str(path))
    except Exception as exc:  # sigstore raises pydantic/protobuf errors of many kinds
        raise ConfigurationError(f"Sigstore trusted root {path} is not valid: {exc}") from None


@dataclass(frozen=True)
class IdentityPolicy:
    """Accepts a keyless bundle: Fulcio certificate for `identity` from `issuer`,
    chained to `trusted_root`, with a Rekor entry (verified offline from the bundle).

    `trusted_root` is a Sigstore trusted_root.json (a private instance) or None for the
    public-good production root that sigstore-python ships.
    """

    identity: str
    issuer: str
    name: str = ""
    trusted_root: Path | None = None
    staging: bool = False

    def verify(self, bundle: SigstoreBundle) -> Authenticated:
        return verify_bundle(bundle, self)


def verify_bundle(bundle: SigstoreBundle, policy: IdentityPolicy) -> Authenticated:
    """Check a keyless bundle offline: chain to the trusted root, Rekor entry, identity.

    Steps (sigstore-python `Verifier`): (1) the certificate chains to a Fulcio CA in
    the trusted root at the time the log recorded; (2) the Rekor entry's inclusion proof
    / signed timestamp verify with the root's log keys; (3) the certificate names the
    expected identity and OIDC issuer; (4) the DSSE envelope (or message signature)
    verifies with the certificate key and matches the log entry.
    """
    if not bundle.is_keyless:
        raise VerificationError(f"identity {policy.identity}: bundle is signed with a key, not keylessly")
    from sigstore.errors import Error as SigstoreError
    from sigstore.hashes import Hashed
    from sigstore.models import Bundle
    from sigstore.verify import Verifier
    from sigstore.verify import policy as sp
    from sigstore_models.common.v1 import HashAlgorithm

    verifier = Verifier(trusted_root=_trusted_root(policy.trusted_root, policy.staging))
    identity = sp.Identity(identity=policy.identity, issuer=policy.issuer)
    try:
        sb = Bundle.from_json(bundle.raw)
    except Exception as exc:  # malformed certificate, log entry, ...
        raise VerificationError(f"keyless bundle is malformed: {exc}") from None
    signer = SignedBy(name=policy.name or policy.identity, identity=policy.identity, issuer=policy.issuer)
    try:
        if bundle.envelope is not None:
            ptype, payload = verifier.verify_dsse(sb, identity)
            return Authenticated(ptype, payload, signer)
        assert bundle.message_signature is not None
        digest = bytes.fromhex(bundle.message_signature.sha256)
        verifier.verify_artifact(Hashed(algorithm=HashAlgorithm.SHA2_256, digest=digest), sb, identity)
        return Authenticated("", b"", signer, message_sha256=digest.hex())
    except SigstoreError as exc:
        raise VerificationError(
            f"keyless signature not accepted for identity {policy.identity} ({policy.issuer}): {exc}"
        ) from None


@dataclass
class KeylessSigner:
    """Signs OMS statements keylessly (Fulcio certificate + Rekor entry).

    `identity_token_file` names a file holding the OIDC token (e.g. a projected
    Kubernetes service-account token); without it an ambient credential is detected.
    `trust_config` is a ClientTrustConfig JSON for a private instance. The constructor
    does no I/O; `sign_statement` talks to the instance.
    """

    identity_token_file: Path | None = None
    trust_config: Path | None = None
    staging: bool = False

    def _token(self) -> tuple[Secret[str], str]:
        """The OIDC identity token (a bearer credential) and where it came from."""
        if self.identity_token_file is not None:
            try:
                value = self.identity_token_file.read_text().strip()
            except OSError as exc:
                raise ConfigurationError(
                    f"cannot read identity token file {self.identity_token_file}: {exc.strerror}"
                ) from None
            if not value:
                raise ConfigurationError(f"identity token file {self.identity_token_file} is empty")
            return Secret(value), str(self.identity_token_file)
        env_file = os.environ.get("MLSEAL_OIDC_TOKEN_FILE")
        if env_file:
            return KeylessSigner(Path(env_file), self.trust_config, self.staging)._token()
        from sigstore.oidc import IdentityError, detect_credential

        try:
            found = detect_credential()
        except IdentityError as exc:
            # present but broken: never fall back silently
            raise ConfigurationError(f"ambient OIDC credential is present but unusable: {exc}") from None
        if not found:
            raise ConfigurationError(
                "keyless signing needs an OIDC identity token: pass --identity-token FILE, set "
                "MLSEAL_OIDC_TOKEN_FILE, or run where an ambient credential is available"
            )
        return Secret(found), "ambient credential"

    def _trust_config(self) -> Any:
        from sigstore.models import ClientTrustConfig

        try:
            if self.trust_config is not None:
                return ClientTrustConfig.from_json(self.trust_config.read_text())
            return ClientTrustConfig.staging() if self.staging else ClientTrustConfig.production()
        except OSError as exc:
            raise ConfigurationError(f"cannot read Sigstore trust config {self.trust_config}: {exc}") from None
        except Exception as exc:
            raise InfrastructureError(f"cannot load the Sigstore trust configuration: {exc}") from None

    def sign_statement(self, payload: bytes) -> bytes:
        from sigstore import dsse as sdsse
        from sigstore.oidc import IdentityToken
        from sigstore.sign import SigningContext

        token, source = self._token()
        try:
            identity = IdentityToken(token.reveal())
        except Exception as exc:
            raise ConfigurationError(f"identity token from {source} is not a valid OIDC JWT: {exc}") from None
        ctx = SigningContext.from_trust_config(self._trust_config())
        try:
            with ctx.signer(identity) as signer:
                bundle = signer.sign_dsse(sdsse.Statement(payload))
        except Exception as exc:
            # Fulcio/Rekor unreachable or refusing. A server may echo what it was sent:
            # the token (a bearer credential) is cut out of the message, whatever it says.
            detail = str(exc).replace(token.reveal(), "***")
            raise InfrastructureError(f"keyless signing failed: {type(exc).__name__}: {detail}") from None
        out: str = bundle.to_json()
        return out.encode()
