"""Trust files: who may write ledger records, sign artifacts and sign checkpoints.

    # trust.yaml
    signers:
      - name: pipeline
        public_key: keys/pipeline.pub.pem   # relative to this file
      - name: release                       # keyless (Sigstore): certificate identity + OIDC issuer
        identity: https://github.com/org/repo/.github/workflows/release.yml@refs/tags/v1
        issuer: https://token.actions.githubusercontent.com
    checkpoint_keys: [keys/ledger.pub.pem]
    sigstore:                               # optional, for keyless signers
      trusted_root: sigstore/trusted_root.json   # a private instance; default: public-good production
      # staging: true                       # or the public staging instance

    >>> import tempfile, pathlib
    >>> from mlseal.signing.keys import LocalKeySigner
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> LocalKeySigner.generate().save(d / "k.pem", d / "k.pub.pem")
    >>> _ = (d / "trust.yaml").write_text("signers: [{name: pipeline, public_key: k.pub.pem}]")
    >>> [v.name for v in load_trust(d / "trust.yaml").signers.values()]
    ['pipeline']
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlseal.errors import ConfigurationError
from mlseal.signing.keys import KeyId, PublicKeyVerifier


@dataclass(frozen=True)
class TrustRoot:
    """Trusted keys by key id. Empty trust is refused when loading a file."""

    signers: dict[KeyId, PublicKeyVerifier] = field(default_factory=dict)
    checkpoint_keys: dict[KeyId, PublicKeyVerifier] = field(default_factory=dict)
    #: everything else the file said (keyless identities, etc.), for the signing module
    extra: dict[str, Any] = field(default_factory=dict)
    source: str = "<memory>"

    @classmethod
    def of(cls, *verifiers: PublicKeyVerifier, checkpoint_keys: tuple[PublicKeyVerifier, ...] = ()) -> TrustRoot:
        return cls(
            signers={v.key_id: v for v in verifiers},
            checkpoint_keys={v.key_id: v for v in checkpoint_keys},
        )

    def signer_name(self, key_id: str) -> str | None:
        v = self.signers.get(KeyId(key_id))
        return v.name if v else None

    def keyless_identities(self) -> list[KeylessIdentity]:
        """The keyless signers the trust file lists (validated when it was loaded)."""
        return [
            KeylessIdentity(s["name"], s["identity"], s["issuer"])
            for s in self.extra.get("signers", [])
            if isinstance(s, dict) and "identity" in s
        ]

    def sigstore_trusted_root(self) -> Path | None:
        """A private instance's trusted_root.json (relative to the trust file), or None."""
        cfg = self.extra.get("sigstore") or {}
        tr = cfg.get("trusted_root") if isinstance(cfg, dict) else None
        if tr is None:
            return None
        return Path(self.source).parent / tr if self.source != "<memory>" else Path(tr)

    def sigstore_staging(self) -> bool:
        cfg = self.extra.get("sigstore") or {}
        return bool(isinstance(cfg, dict) and cfg.get("staging"))


@dataclass(frozen=True)
class KeylessIdentity:
    """A Sigstore keyless signer: the certificate's identity (SAN) and OIDC issuer."""

    name: str
    identity: str
    issuer: str


def load_yaml_file(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    """Read a YAML mapping, with errors that name the file."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{what} {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"{what} {path} must be a YAML mapping")
    return data


def load_trust(path: str | os.PathLike[str]) -> TrustRoot:
    path = Path(path)
    data = load_yaml_file(path, "trust file")
    base = path.parent
    signers: dict[KeyId, PublicKeyVerifier] = {}
    raw_signers = data.get("signers") or []
    if not isinstance(raw_signers, list):
        raise ConfigurationError(f"trust file {path}: signers must be a list")
    for i, s in enumerate(raw_signers):
        if not isinstance(s, dict) or not isinstance(s.get("name"), str):
            raise ConfigurationError(f"trust file {path}: signers[{i}] needs a name")
        if "public_key" not in s:
            # keyless identities are kept in `extra` (see TrustRoot.keyless_identities)
            if not isinstance(s.get("identity"), str) or not isinstance(s.get("issuer"), str):
                raise ConfigurationError(
                    f"trust file {path}: signers[{i}] ({s['name']}) needs a public_key, or an identity and an issuer"
                )
            continue
        if not isinstance(s["public_key"], str):
            raise ConfigurationError(f"trust file {path}: signers[{i}].public_key must be a path")
        v = PublicKeyVerifier.from_file(base / s["public_key"], name=s["name"])
        signers[v.key_id] = v
    cps: dict[KeyId, PublicKeyVerifier] = {}
    raw_cps = data.get("checkpoint_keys") or []
    if not isinstance(raw_cps, list):
        raise ConfigurationError(f"trust file {path}: checkpoint_keys must be a list of paths")
    for p in raw_cps:
        if not isinstance(p, str):
            raise ConfigurationError(f"trust file {path}: checkpoint_keys entries must be paths")
        v = PublicKeyVerifier.from_file(base / p, name=Path(p).stem)
        cps[v.key_id] = v
    sig_cfg = data.get("sigstore")
    if sig_cfg is not None and not (
        isinstance(sig_cfg, dict) and isinstance(sig_cfg.get("trusted_root", ""), str)
    ):
        raise ConfigurationError(f"trust file {path}: sigstore must be a mapping with a trusted_root path")
    extra = {k: v for k, v in data.items() if k not in ("signers", "checkpoint_keys")}
    extra["signers"] = [s for s in raw_signers if isinstance(s, dict) and "public_key" not in s]
    if not signers and not extra["signers"]:
        raise ConfigurationError(f"trust file {path} trusts no signer: an empty trust policy is refused")
    return TrustRoot(signers=signers, checkpoint_keys=cps, extra=extra, source=str(path))
