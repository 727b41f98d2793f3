"""Which Sigstore root a keyless bundle is checked against: staging is not production, a
trusted root file replaced on disk is read again, and a malformed certificate is refused.

Uses the production bundle in testdata/sigstore (see test_signing_keyless.py), offline.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from mlseal.errors import VerificationError
from mlseal.signing.artifact import sign_path, verify_path
from mlseal.signing.keyless import IdentityPolicy
from mlseal.signing.keys import LocalKeySigner
from mlseal.signing.policy import AllOf, UnsafeNoSignatureCheck
from mlseal.signing.trust import load_trust
from tests.fixtures_signing import KeyFiles

IDENTITY = "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2"
ISSUER = "https://token.actions.githubusercontent.com"


@pytest.fixture
def wheel(testdata: Path, tmp_path: Path) -> tuple[Path, Path]:
    src = testdata / "sigstore"
    whl = tmp_path / "bundle_v3_github.whl"
    shutil.copyfile(src / "bundle_v3_github.whl", whl)
    return whl, src / "bundle_v3_github.whl.sigstore"


def _root_json(staging: bool) -> str:
    from sigstore.models import ClientTrustConfig

    cfg = ClientTrustConfig.staging(offline=True) if staging else ClientTrustConfig.production(offline=True)
    out: str = cfg.trusted_root._inner.to_json()
    return out


def test_staging_root_does_not_accept_a_production_bundle(wheel: tuple[Path, Path], tmp_path: Path) -> None:
    whl, bundle = wheel
    assert verify_path(whl, bundle, IdentityPolicy(IDENTITY, ISSUER)).signer.identity == IDENTITY
    refused = rf"^keyless signature not accepted for identity {IDENTITY} \({ISSUER}\)"
    with pytest.raises(VerificationError, match=refused):
        verify_path(whl, bundle, IdentityPolicy(IDENTITY, ISSUER, staging=True))
    t = tmp_path / "trust.yaml"
    t.write_text(f"signers: [{{name: r, identity: '{IDENTITY}', issuer: '{ISSUER}'}}]\nsigstore: {{staging: true}}\n")
    with pytest.raises(VerificationError, match="keyless signature not accepted"):
        verify_path(whl, bundle, load_trust(t))


def test_trusted_root_file_replaced_on_disk_is_read_again(wheel: tuple[Path, Path], tmp_path: Path) -> None:
    """A rotated (or revoked) root takes effect in a long-running process: no stale cache."""
    whl, bundle = wheel
    root = tmp_path / "trusted_root.json"
    root.write_text(_root_json(staging=False))
    policy = IdentityPolicy(IDENTITY, ISSUER, trusted_root=root)
    assert verify_path(whl, bundle, policy).signer_name == IDENTITY
    st = root.stat()
    root.write_text(_root_json(staging=True))
    os.utime(root, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    with pytest.raises(VerificationError, match="keyless signature not accepted"):
        verify_path(whl, bundle, policy)


def test_malformed_certificate_is_refused(wheel: tuple[Path, Path], tmp_path: Path) -> None:
    whl, bundle = wheel
    obj = json.loads(bundle.read_bytes())
    obj["verificationMaterial"]["x509CertificateChain"] = {"certificates": [{"rawBytes": "AAAA"}]}
    bad = tmp_path / "bad.sigstore"
    bad.write_text(json.dumps(obj))
    with pytest.raises(VerificationError, match=r"^keyless bundle is malformed: \S"):
        verify_path(whl, bad, IdentityPolicy(IDENTITY, ISSUER))


def test_keyless_identity_and_integrity_check_agree_on_what_a_message_signature_signs(
    wheel: tuple[Path, Path],
) -> None:
    whl, bundle = wheel
    v = verify_path(whl, bundle, AllOf([IdentityPolicy(IDENTITY, ISSUER, name="r"), UnsafeNoSignatureCheck()]))
    assert v.signer_name == "r"


def test_trust_file_identity_with_another_issuer_is_refused(wheel: tuple[Path, Path], tmp_path: Path) -> None:
    """The issuer is part of the identity: the same SAN from another OIDC issuer is not the signer."""
    whl, bundle = wheel
    t = tmp_path / "trust.yaml"
    t.write_text(f"signers: [{{name: r, identity: '{IDENTITY}', issuer: 'https://accounts.google.com'}}]\n")
    with pytest.raises(VerificationError, match="keyless signature not accepted"):
        verify_path(whl, bundle, load_trust(t))


def test_trust_file_with_keys_and_keyless_identities(
    wheel: tuple[Path, Path], model_dir: Path, signing_key: KeyFiles, tmp_path: Path
) -> None:
    """Every signer a trust file lists may sign, whatever its kind; no other key may."""
    whl, bundle = wheel
    t = tmp_path / "trust.yaml"
    t.write_text(
        f"signers:\n  - {{name: ci, public_key: {signing_key.public}}}\n"
        f"  - {{name: release, identity: '{IDENTITY}', issuer: '{ISSUER}'}}\n"
    )
    trust = load_trust(t)
    assert verify_path(whl, bundle, trust).signer_name == "release"
    assert verify_path(model_dir, sign_path(model_dir, signing_key.signer), trust).signer_name == "ci"
    with pytest.raises(VerificationError, match="no trusted signer accepts the bundle"):
        verify_path(model_dir, sign_path(model_dir, LocalKeySigner.generate()), trust)
