"""Sign and verify artifacts as OpenSSF Model Signing (OMS) bundles.

`sign_path` digests a file or directory, builds the OMS in-toto statement, signs it as
a DSSE envelope and writes a Sigstore bundle v0.3 beside the artifact (``PATH.sig``),
byte for byte in the layout `model-signing` 1.1.1 writes, so upstream tools verify it.
`verify_path` checks the bundle's signer against a key, a trust file or a policy, then
re-hashes the artifact and names every file that differs.

    >>> import pathlib, tempfile
    >>> from mlseal.signing.keys import LocalKeySigner
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "model.bin").write_bytes(b"weights")
    >>> key = LocalKeySigner.generate()
    >>> sig = sign_path(d / "model.bin", key)
    >>> sig.name
    'model.bin.sig'
    >>> verify_path(d / "model.bin", sig, key.verifier(name="pipeline")).signer_name
    'pipeline'
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from mlseal._files import write_atomic
from mlseal.errors import ConfigurationError, VerificationError
from mlseal.signing import dsse, oms
from mlseal.signing.authenticated import BundlePolicy, SignedBy
from mlseal.signing.digest import Manifest, manifest_of
from mlseal.signing.digest import _check_kind as check_kind
from mlseal.signing.keys import PublicKeyVerifier, Signer, public_pem
from mlseal.signing.policy import KeyPolicy, policy_from_trust
from mlseal.signing.sigstore_bundle import SigstoreBundle, key_bundle_bytes, parse_bundle
from mlseal.signing.trust import TrustRoot

__all__ = [
    "BundleSigner",
    "PathLike",
    "VerifiedArtifact",
    "as_policy",
    "bundle_for",
    "default_bundle_path",
    "read_bundle",
    "sign_path",
    "verify_path",
]

PathLike = str | os.PathLike[str]


@runtime_checkable
class BundleSigner(Protocol):
    """A signer that produces a whole bundle (keyless: certificate + Rekor entry)."""

    def sign_statement(self, payload: bytes) -> bytes:
        """Sign an in-toto statement (DSSE) and return the Sigstore bundle JSON."""
        ...


@dataclass(frozen=True)
class VerifiedArtifact:
    """A file or directory whose bytes match a bundle signed by a trusted signer."""

    path: Path
    #: what `digest_path` gives and the ledger records: sha256 of a file's bytes, or a
    #: directory's name-binding digest (for a bundle in the "shards" serialization: its
    #: subject digest, which is neither)
    digest: str
    #: the bundle's in-toto subject digest (for a file: sha256 over its sha256, per OMS)
    subject_digest: str
    signer: SignedBy
    files: int

    @property
    def signer_name(self) -> str:
        return self.signer.name

    @property
    def key_id(self) -> str | None:
        return self.signer.key_id


def default_bundle_path(path: PathLike) -> Path:
    """``PATH.sig`` beside the artifact (for a directory, beside it, not inside)."""
    p = Path(os.path.abspath(path))
    return p.with_name(p.name + ".sig")


def _inside(root: Path, candidate: Path) -> str | None:
    """candidate's path relative to root if it lies inside the directory root."""
    try:
        rel = Path(os.path.abspath(candidate)).relative_to(os.path.abspath(root))
    except ValueError:
        return None
    return rel.as_posix()


def _ignore_for(path: Path, bundle_path: Path) -> tuple[str, ...]:
    if path.is_dir():
        rel = _inside(path, bundle_path)
        if rel:
            return (rel,)
    return ()


def sign_path(
    path: PathLike,
    signer: Signer | BundleSigner,
    *,
    out: PathLike | None = None,
    allow_symlinks: bool = False,
    shard_size: int | None = None,
) -> Path:
    """Write the OMS bundle for a file or directory (default ``PATH.sig``); return its path.

    `shard_size` selects `model-signing`'s "shards" serialization (files cut in pieces);
    the default, one digest per file, is what `digest_path` and the ledger use.
    """
    src = Path(path)
    dest = Path(out) if out is not None else default_bundle_path(src)
    manifest = manifest_of(src, ignore=_ignore_for(src, dest), allow_symlinks=allow_symlinks, shard_size=shard_size)
    data = bundle_for(manifest, signer)
    _write_atomic(dest, data)
    return dest


def bundle_for(manifest: Manifest, signer: Signer | BundleSigner) -> bytes:
    """The bundle bytes for a manifest (pure but for the signer's own I/O)."""
    payload = oms.statement_bytes(manifest)
    if isinstance(signer, BundleSigner):
        return signer.sign_statement(payload)
    # (model-signing writes an empty keyid; the bundle's publicKey hint names the key)
    envelope = dsse.Envelope(
        oms.IN_TOTO_PAYLOAD_TYPE,
        payload,
        (dsse.Signature(keyid="", sig=signer.sign(dsse.pae(oms.IN_TOTO_PAYLOAD_TYPE, payload))),),
    )
    return key_bundle_bytes(envelope, public_pem(signer.public_key()))


def _write_atomic(dest: Path, data: bytes) -> None:
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(dest, data, mode=0o644)
    except OSError as exc:
        raise ConfigurationError(f"cannot write bundle {dest}: {exc.strerror or exc}") from None


def as_policy(verifier_or_trust: PublicKeyVerifier | TrustRoot | BundlePolicy) -> BundlePolicy:
    if isinstance(verifier_or_trust, PublicKeyVerifier):
        return KeyPolicy(verifier_or_trust)
    if isinstance(verifier_or_trust, TrustRoot):
        return policy_from_trust(verifier_or_trust)
    if isinstance(verifier_or_trust, BundlePolicy):
        return verifier_or_trust
    raise ConfigurationError(f"cannot verify with a {type(verifier_or_trust).__name__}")


def read_bundle(bundle_path: PathLike) -> SigstoreBundle:
    try:
        data = Path(bundle_path).read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read bundle {bundle_path}: {exc.strerror}") from None
    return parse_bundle(data, source=f"bundle {bundle_path}")


def verify_path(
    path: PathLike,
    bundle_path: PathLike | None,
    verifier_or_trust: PublicKeyVerifier | TrustRoot | BundlePolicy,
) -> VerifiedArtifact:
    """Verify a file or directory against its bundle; raise VerificationError naming why.

    Checklist: (1) the bundle parses; (2) the policy accepts its signer and returns
    the signed payload; (3) the payload is an in-toto OMS v1.0 statement whose subject
    digest matches its file list; (4) the artifact is re-hashed with the statement's
    serialization (ignored paths, symlink rule); (5) every file matches: none changed,
    none missing, none added.
    """
    src = Path(path)
    bpath = Path(bundle_path) if bundle_path is not None else default_bundle_path(src)
    try:
        src.lstat()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {src}: {exc.strerror}") from None
    bundle = read_bundle(bpath)  # (1)
    auth = as_policy(verifier_or_trust).verify(bundle)  # (2)

    if auth.message_sha256 is not None:
        # a plain Sigstore signature over one file's sha256 (not OMS)
        return _verify_message_digest(src, auth.message_sha256, auth.signer)
    if auth.payload_type != oms.IN_TOTO_PAYLOAD_TYPE:
        raise VerificationError(
            f"bundle payload type is {auth.payload_type!r}, expected {oms.IN_TOTO_PAYLOAD_TYPE!r}"
        )
    expected = oms.parse_statement(auth.payload)  # (3)

    # what the path is, by the statement's symlink rule: a symbolic link the bundle does not
    # allow is refused as such (not reported as a directory), a FIFO or device likewise
    is_file = stat.S_ISREG(check_kind(src, expected.allow_symlinks).st_mode)
    names = [r.name for r in expected.resources]
    signs_file = bool(names) and all(n == "." or n.startswith(".:") for n in names)
    if is_file and names and not signs_file:
        raise VerificationError(
            f"bundle {bpath} signs a directory model ({len(names)} files) named {expected.name!r}, but {src} is a file"
        )
    if not is_file and signs_file:
        raise VerificationError(f"bundle {bpath} signs a single file named {expected.name!r}, but {src} is a directory")

    ignore = tuple(p for p in expected.ignore_paths) + _ignore_for(src, bpath)
    actual = manifest_of(  # (4)
        src, ignore=ignore, allow_symlinks=expected.allow_symlinks, shard_size=expected.shard_size
    )
    _compare(src, expected, actual)  # (5)
    # the ledger's digest (digest_path), from the names and digests just compared with the
    # signed file list; a sharded bundle only yields its subject digest
    digest = actual.artifact_digest if expected.shard_size is None else actual.subject_digest
    return VerifiedArtifact(src, digest, expected.subject_digest, auth.signer, len(actual.resources))


def _compare(src: Path, expected: Manifest, actual: Manifest) -> None:
    want = {r.name: r.sha256 for r in expected.resources}
    have = {r.name: r.sha256 for r in actual.resources}
    problems = []
    for name in sorted(want.keys() & have.keys()):
        if want[name] != have[name]:
            problems.append(
                f"{_shown(src, name, expected.shard_size)}: content differs "
                f"(signed sha256 {want[name][:16]}…, found {have[name][:16]}…)"
            )
    missing = sorted(want.keys() - have.keys())
    added = sorted(have.keys() - want.keys())
    if missing:
        problems.append(f"{src}: signed file(s) missing: {', '.join(missing)}")
    if added:
        problems.append(f"{src}: file(s) not covered by the signature: {', '.join(added)}")
    if problems:
        raise VerificationError("; ".join(problems))


def _shown(src: Path, name: str, sharded: int | None) -> str:
    """A resource as a person reads it: the file's path (and byte range of a shard)."""
    rng = ""
    if sharded is not None:
        name, start, end = name.rsplit(":", 2)
        rng = f" bytes {start}-{end}"
    return f"{src / name}{rng}"  # (a single file's resource is ".", and src / "." is src)


def _verify_message_digest(src: Path, signed: str, signer: SignedBy) -> VerifiedArtifact:
    from mlseal.signing.digest import file_artifact_digest

    if not src.is_file():
        raise VerificationError(f"bundle signs a single file's digest, but {src} is not a file")
    found = file_artifact_digest(src)
    if found != signed:
        raise VerificationError(f"{src}: content differs (signed sha256 {signed[:16]}…, found {found[:16]}…)")
    return VerifiedArtifact(src, found, signed, signer, 1)
