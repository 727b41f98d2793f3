"""Trust files: who may write ledger records, sign artifacts and sign checkpoints.

    # trust.yaml
    signers:
      - name: train
        public_key: keys/train.pub.pem      # relative to this file
        stages: [train]                     # the record stages this key may sign (absent: any)
        components: [<sha256 hex>]          # optional: the component source digests it may record
        images: [registry/image@sha256:…]   # optional: the images it may record
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
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlseal import _yaml as strict_yaml
from mlseal.errors import ConfigurationError, VerificationError
from mlseal.signing.keys import KeyId, PublicKeyVerifier

__all__ = ["Grant", "KeylessIdentity", "TrustRoot", "load_trust", "load_yaml_file"]

_STAGE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Grant:
    """What one record signer may sign: which stages, optionally which components and images.

    ``None`` means "any" (a signer listed without ``stages`` may sign every stage: the
    single-key layout of earlier trust files). A per-stage identity is what stops a key
    that may sign ``train`` records from writing an ``evaluate`` record.

        >>> g = Grant(stages=frozenset({"train"}))
        >>> g.problem("train", None, None) is None, g.problem("evaluate", None, None)
        (True, "may sign ['train'] records, not 'evaluate'")
    """

    stages: frozenset[str] | None = None
    components: frozenset[str] | None = None
    images: frozenset[str] | None = None

    @property
    def needs_component(self) -> bool:
        """Whether checking this grant needs the record's component (digest or image)."""
        return self.components is not None or self.images is not None

    def problem(self, stage: str, component_sha256: str | None, image: str | None) -> str | None:
        """Why a record with these fields is outside this grant, or None if it is inside."""
        if self.stages is not None and stage not in self.stages:
            return f"may sign {sorted(self.stages)} records, not {stage!r}"
        if self.components is not None and component_sha256 not in self.components:
            shown = f"{component_sha256[:16]}…" if component_sha256 else "no component digest"
            return f"may record only its listed component digests, not {shown}"
        if self.images is not None and image not in self.images:
            return f"may record only its listed images, not {image!r}"
        return None


@dataclass(frozen=True)
class TrustRoot:
    """Trusted keys by key id. Empty trust is refused when loading a file."""

    signers: dict[KeyId, PublicKeyVerifier] = field(default_factory=dict)
    checkpoint_keys: dict[KeyId, PublicKeyVerifier] = field(default_factory=dict)
    #: what each record signer may sign; a signer without a grant may sign any stage
    grants: dict[KeyId, Grant] = field(default_factory=dict)
    #: everything else the file said (keyless identities, etc.), for the signing module
    extra: dict[str, Any] = field(default_factory=dict)
    source: str = "<memory>"

    @classmethod
    def of(
        cls,
        *verifiers: PublicKeyVerifier,
        checkpoint_keys: tuple[PublicKeyVerifier, ...] = (),
        stages: dict[str, Iterable[str]] | None = None,
    ) -> TrustRoot:
        """Trust these keys; ``stages`` maps a signer's name to the stages it may sign."""
        grants = {
            v.key_id: Grant(stages=frozenset(stages[v.name])) for v in verifiers if stages and v.name in stages
        }
        return cls(
            signers={v.key_id: v for v in verifiers},
            checkpoint_keys={v.key_id: v for v in checkpoint_keys},
            grants=grants,
        )

    def signer_name(self, key_id: str) -> str | None:
        v = self.signers.get(KeyId(key_id))
        return v.name if v else None

    def grant(self, key_id: str) -> Grant | None:
        return self.grants.get(KeyId(key_id))

    def authorization_problem(
        self, key_id: str, stage: str, component_sha256: str | None = None, image: str | None = None
    ) -> str | None:
        """Why the trusted signer `key_id` may not sign this record, or None if it may."""
        g = self.grants.get(KeyId(key_id))
        why = g.problem(stage, component_sha256, image) if g is not None else None
        if why is None:
            return None
        return f"signer {self.signer_name(key_id) or key_id[:16]} {why} (trust file {self.source})"

    def require_bundle_grant(self, key_id: str | None, stage: str, what: str) -> None:
        """Refuse an artifact bundle (`what`) whose key may not sign `stage` records, the stage
        that produced the artifact: a bundle speaks for the bytes as their producer does.
        A keyless identity (``key_id`` None) signs bundles only and carries no grants."""
        if key_id is None:
            return
        problem = self.authorization_problem(key_id, stage)
        if problem is not None:
            raise VerificationError(f"{what} is signed by a key not granted the producing stage {stage!r}: {problem}")

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
        data = strict_yaml.load(text)
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{what} {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"{what} {path} must be a YAML mapping")
    return data


#: every key a trust file may hold, where; any other is refused (a typo would widen trust,
#: e.g. ``stage:`` for ``stages:``, or drop a check, e.g. ``checkpoint_key:``)
_TOP_KEYS = ("signers", "checkpoint_keys", "checkpoint_origin", "sigstore")
_KEY_SIGNER_KEYS = ("name", "public_key", "stages", "components", "images")
_KEYLESS_SIGNER_KEYS = ("name", "identity", "issuer")
_SIGSTORE_KEYS = ("trusted_root", "staging")


#: a valid example of each key, added to every error about it (docs/design.md#trust-file)
_EXAMPLES = {
    "signers": "signers: [{name: train, public_key: keys/train.pub.pem, stages: [train]}]",
    "name": "signers: [{name: train, public_key: keys/train.pub.pem}]",
    "public_key": "public_key: keys/train.pub.pem",
    "identity": "{name: ci, identity: https://github.com/org/repo/.github/workflows/release.yml@refs/heads/main, "
                "issuer: https://token.actions.githubusercontent.com}",
    "issuer": "issuer: https://token.actions.githubusercontent.com",
    "stages": "stages: [train]",
    "components": "components: [<64 hex digits of the component source>]",
    "images": "images: [registry.example/mlseal@sha256:<digest>]",
    "checkpoint_keys": "checkpoint_keys: [keys/checkpoint.pub.pem]",
    "checkpoint_origin": "checkpoint_origin: mlseal.example/ledger",
    "sigstore": "sigstore: {trusted_root: trusted_root.json}",
    "trusted_root": "sigstore: {trusted_root: trusted_root.json}",
    "staging": "sigstore: {staging: true}",
}


def _bad(where: str, key: str, msg: str) -> ConfigurationError:
    """An error naming the file (`where` starts with it), the key and a valid example."""
    return ConfigurationError(f"{where}: {msg}; a valid example: `{_EXAMPLES[key]}`")


def _known(obj: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = [k for k in obj if k not in allowed]
    if unknown:
        import difflib

        near = difflib.get_close_matches(str(unknown[0]), allowed, n=1, cutoff=0.5)
        raise _bad(where, near[0] if near else allowed[0],
                   f"unknown key {str(unknown[0])!r}; the keys here are {', '.join(allowed)} "
                   "(docs/design.md#trust-file)")


def load_trust(path: str | os.PathLike[str]) -> TrustRoot:
    path = Path(path)
    data = load_yaml_file(path, "trust file")
    _known(data, _TOP_KEYS, f"trust file {path}")
    base = path.parent
    signers: dict[KeyId, PublicKeyVerifier] = {}
    grants: dict[KeyId, Grant] = {}
    raw_signers = data.get("signers") or []
    if not isinstance(raw_signers, list):
        raise _bad(f"trust file {path}", "signers", "signers must be a list")
    for i, s in enumerate(raw_signers):
        if not isinstance(s, dict) or not isinstance(s.get("name"), str):
            raise _bad(f"trust file {path}", "name", f"signers[{i}] needs a name")
        if "public_key" not in s:
            # keyless identities are kept in `extra` (see TrustRoot.keyless_identities)
            if not isinstance(s.get("identity"), str) or not isinstance(s.get("issuer"), str):
                raise _bad(f"trust file {path}", "identity",
                           f"signers[{i}] ({s['name']}) needs a public_key, or an identity and an issuer")
            # (no grants: keyless identities sign artifact bundles, never ledger records)
            _known(s, _KEYLESS_SIGNER_KEYS, f"trust file {path}: signers[{i}] ({s['name']})")
            continue
        _known(s, _KEY_SIGNER_KEYS, f"trust file {path}: signers[{i}] ({s['name']})")
        if not isinstance(s["public_key"], str):
            raise _bad(f"trust file {path}", "public_key", f"signers[{i}].public_key must be a path")
        v = PublicKeyVerifier.from_file(base / s["public_key"], name=s["name"])
        if v.key_id in signers:
            raise _bad(f"trust file {path}", "signers",
                       f"signers[{i}] ({s['name']}) repeats the key of {signers[v.key_id].name}: "
                       "list each key once, with every stage it may sign")
        signers[v.key_id] = v
        grant = _grant(s, f"trust file {path}: signers[{i}] ({s['name']})")
        if grant is not None:
            grants[v.key_id] = grant
    cps: dict[KeyId, PublicKeyVerifier] = {}
    raw_cps = data.get("checkpoint_keys") or []
    if not isinstance(raw_cps, list):
        raise _bad(f"trust file {path}", "checkpoint_keys", "checkpoint_keys must be a list of paths")
    for p in raw_cps:
        if not isinstance(p, str):
            raise _bad(f"trust file {path}", "checkpoint_keys", "checkpoint_keys entries must be paths")
        v = PublicKeyVerifier.from_file(base / p, name=Path(p).stem)
        cps[v.key_id] = v
    sig_cfg = data.get("sigstore")
    if sig_cfg is not None and not (
        isinstance(sig_cfg, dict) and isinstance(sig_cfg.get("trusted_root", ""), str)
    ):
        raise _bad(f"trust file {path}", "sigstore", "sigstore must be a mapping with a trusted_root path")
    if isinstance(sig_cfg, dict):
        _known(sig_cfg, _SIGSTORE_KEYS, f"trust file {path}: sigstore")
        if not isinstance(sig_cfg.get("staging", False), bool):
            raise _bad(f"trust file {path}", "staging", "sigstore.staging must be true or false")
    if not isinstance(data.get("checkpoint_origin", ""), str):
        raise _bad(f"trust file {path}", "checkpoint_origin", "checkpoint_origin must be a string")
    extra = {k: v for k, v in data.items() if k not in ("signers", "checkpoint_keys")}
    extra["signers"] = [s for s in raw_signers if isinstance(s, dict) and "public_key" not in s]
    if not signers and not extra["signers"]:
        raise _bad(f"trust file {path}", "signers", "trusts no signer: an empty trust policy is refused")
    return TrustRoot(signers=signers, checkpoint_keys=cps, grants=grants, extra=extra, source=str(path))


def _grant(s: dict[str, Any], where: str) -> Grant | None:
    """A signer entry's `stages` / `components` / `images`, checked; None when it has none."""

    def strings(key: str, pattern: re.Pattern[str] | None, example: str) -> frozenset[str] | None:
        raw = s.get(key)
        if raw is None:
            return None
        if not isinstance(raw, list) or not raw or not all(isinstance(x, str) for x in raw):
            raise _bad(where, key, f"{key} must be a non-empty list of strings")
        bad = [x for x in raw if pattern is not None and not pattern.fullmatch(x)]
        if bad:
            raise _bad(where, key, f"{key} has {bad[0]!r}; expected values like {example}")
        return frozenset(raw)

    stages = strings("stages", _STAGE_NAME, "train")
    components = strings("components", _HEX64, "<64 hex digits of the component source>")
    images = strings("images", None, "registry.example/mlseal@sha256:<digest>")
    if stages is None and components is None and images is None:
        return None
    return Grant(stages=stages, components=components, images=images)
