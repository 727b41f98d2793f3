"""Keyless (Sigstore) verification, offline, of a real production bundle; keyless signing errors.

The bundle in ../shared/testdata/sigstore was signed on the public-good instance by
GitHub Actions (README there). It is checked against sigstore-python's bundled
production trusted root, with no network access.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mlseal.cli import main
from mlseal.errors import ConfigurationError, VerificationError
from mlseal.signing.artifact import sign_path, verify_path
from mlseal.signing.keyless import IdentityPolicy, KeylessSigner
from mlseal.signing.keys import LocalKeySigner
from mlseal.signing.policy import AnyOf, KeyPolicy, policy_from_trust
from mlseal.signing.trust import load_trust

IDENTITY = "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2"
ISSUER = "https://token.actions.githubusercontent.com"


@pytest.fixture
def wheel(testdata: Path, tmp_path: Path) -> tuple[Path, Path]:
    src = testdata / "sigstore"
    whl = tmp_path / "bundle_v3_github.whl"
    shutil.copyfile(src / "bundle_v3_github.whl", whl)
    return whl, src / "bundle_v3_github.whl.sigstore"


def test_right_identity_verifies(wheel: tuple[Path, Path]) -> None:
    whl, bundle = wheel
    v = verify_path(whl, bundle, IdentityPolicy(IDENTITY, ISSUER, name="rfc8785-release"))
    assert v.signer_name == "rfc8785-release"
    assert v.signer.identity == IDENTITY and v.signer.issuer == ISSUER
    assert v.digest == "c4e92e9ecc828bef2aa7dba1de8ac983511f7532a0df11c770d39099a25cf201"


def test_wrong_identity_is_refused(wheel: tuple[Path, Path]) -> None:
    whl, bundle = wheel
    other = IDENTITY.replace("v0.1.2", "v0.1.3")
    with pytest.raises(VerificationError, match=r"SANs do not match .*v0\.1\.3"):
        verify_path(whl, bundle, IdentityPolicy(other, ISSUER))


def test_wrong_issuer_is_refused(wheel: tuple[Path, Path]) -> None:
    whl, bundle = wheel
    with pytest.raises(VerificationError, match=r"accounts\.google\.com"):
        verify_path(whl, bundle, IdentityPolicy(IDENTITY, "https://accounts.google.com"))


def test_changed_artifact_is_refused(wheel: tuple[Path, Path]) -> None:
    whl, bundle = wheel
    with whl.open("ab") as f:
        f.write(b"\0")
    with pytest.raises(VerificationError, match=r"bundle_v3_github\.whl: content differs"):
        verify_path(whl, bundle, IdentityPolicy(IDENTITY, ISSUER))


def test_edited_digest_in_bundle_is_refused(wheel: tuple[Path, Path], tmp_path: Path) -> None:
    """Rewriting the bundle's message digest to match another file breaks the signature."""
    import base64
    import hashlib
    import json

    whl, bundle = wheel
    whl.write_bytes(b"malicious wheel")
    obj = json.loads(bundle.read_bytes())
    evil = base64.b64encode(hashlib.sha256(b"malicious wheel").digest()).decode()
    obj["messageSignature"]["messageDigest"]["digest"] = evil
    forged = tmp_path / "forged.sigstore"
    forged.write_text(json.dumps(obj))
    with pytest.raises(VerificationError, match="keyless signature not accepted"):
        verify_path(whl, forged, IdentityPolicy(IDENTITY, ISSUER))


def test_key_policy_refuses_keyless_bundle_and_keyless_refuses_key_bundle(
    wheel: tuple[Path, Path], model_dir: Path
) -> None:
    whl, bundle = wheel
    key = LocalKeySigner.generate()
    with pytest.raises(VerificationError, match="signed keylessly"):
        verify_path(whl, bundle, KeyPolicy(key.verifier(name="k")))
    sig = sign_path(model_dir, key)
    with pytest.raises(VerificationError, match="signed with a key, not keylessly"):
        verify_path(model_dir, sig, IdentityPolicy(IDENTITY, ISSUER))
    # AnyOf of both accepts each bundle by the right child
    both = AnyOf([KeyPolicy(key.verifier(name="k")), IdentityPolicy(IDENTITY, ISSUER, name="release")])
    assert verify_path(whl, bundle, both).signer_name == "release"
    assert verify_path(model_dir, sig, both).signer_name == "k"


def test_trust_file_with_keyless_identity(wheel: tuple[Path, Path], tmp_path: Path) -> None:
    whl, bundle = wheel
    t = tmp_path / "trust.yaml"
    t.write_text(f"signers:\n  - name: release\n    identity: {IDENTITY}\n    issuer: {ISSUER}\n")
    trust = load_trust(t)
    assert verify_path(whl, bundle, trust).signer_name == "release"
    assert verify_path(whl, bundle, policy_from_trust(trust)).signer_name == "release"
    t.write_text(f"signers:\n  - name: release\n    identity: {IDENTITY}x\n    issuer: {ISSUER}\n")
    with pytest.raises(VerificationError):
        verify_path(whl, bundle, load_trust(t))


def test_private_trusted_root_that_does_not_anchor_the_bundle(wheel: tuple[Path, Path], tmp_path: Path) -> None:
    """A private instance's root (here: staging's) must not accept a production certificate."""
    from sigstore.models import ClientTrustConfig

    whl, bundle = wheel
    root = tmp_path / "trusted_root.json"
    root.write_text(ClientTrustConfig.staging(offline=True).trusted_root._inner.to_json())
    with pytest.raises(VerificationError, match="keyless signature not accepted"):
        verify_path(whl, bundle, IdentityPolicy(IDENTITY, ISSUER, trusted_root=root))
    t = tmp_path / "trust.yaml"
    t.write_text(
        f"signers: [{{name: r, identity: '{IDENTITY}', issuer: '{ISSUER}'}}]\n"
        "sigstore: {trusted_root: trusted_root.json}\n"
    )
    assert load_trust(t).sigstore_trusted_root() == root
    with pytest.raises(VerificationError):
        verify_path(whl, bundle, load_trust(t))


def test_broken_trusted_root_is_a_configuration_error(wheel: tuple[Path, Path], tmp_path: Path) -> None:
    whl, bundle = wheel
    root = tmp_path / "trusted_root.json"
    root.write_text("{}")
    with pytest.raises(ConfigurationError, match="trusted root"):
        verify_path(whl, bundle, IdentityPolicy(IDENTITY, ISSUER, trusted_root=root))


def test_cli_keyless_verify(wheel: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    whl, bundle = wheel
    base = ["verify", str(whl), "--bundle", str(bundle), "--issuer", ISSUER]
    assert main([*base, "--identity", IDENTITY]) == 0
    assert main([*base, "--identity", IDENTITY + "x"]) == 1
    assert "SANs do not match" in capsys.readouterr().err


def test_keyless_signing_without_a_token_says_what_to_pass(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("MLSEAL_OIDC_TOKEN_FILE", "GITHUB_ACTIONS", "ACTIONS_ID_TOKEN_REQUEST_URL", "SIGSTORE_ID_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr("sigstore.oidc.detect_credential", lambda *a, **k: None)
    with pytest.raises(ConfigurationError, match="--identity-token FILE"):
        sign_path(model_dir, KeylessSigner())


def test_keyless_signing_rejects_a_malformed_token_without_echoing_it(model_dir: Path, tmp_path: Path) -> None:
    tok = tmp_path / "token"
    tok.write_text("not-a-jwt-SECRETVALUE")
    with pytest.raises(ConfigurationError) as err:
        sign_path(model_dir, KeylessSigner(identity_token_file=tok))
    assert "SECRETVALUE" not in str(err.value)
    assert str(tok) in str(err.value)
