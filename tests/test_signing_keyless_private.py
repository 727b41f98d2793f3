"""Keyless signing end to end against a private Sigstore instance (tests/fixtures_signing.py):
OIDC token -> Fulcio certificate (embedded SCT) -> Rekor entry -> OMS bundle, verified
offline by identity + issuer with the instance's trusted root, by mlseal and by upstream
model_signing; and upstream keyless bundles verified by mlseal.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import model_signing
import pytest

from mlseal.cli import main
from mlseal.errors import InfrastructureError, VerificationError
from mlseal.signing.artifact import sign_path, verify_path
from mlseal.signing.keyless import IdentityPolicy, KeylessSigner
from mlseal.signing.keys import LocalKeySigner
from mlseal.signing.policy import KeyPolicy
from mlseal.signing.trust import load_trust
from tests.fixtures_signing import SigstoreInstance, make_identity_token

WHO = "https://ci.mlseal.test/pipelines/train"


@pytest.fixture
def instance_files(sigstore_instance: SigstoreInstance, tmp_path: Path) -> dict[str, Path]:
    d = tmp_path / "sigstore"
    d.mkdir()
    files = {"trust_config": d / "trust_config.json", "trusted_root": d / "trusted_root.json", "token": d / "token"}
    files["trust_config"].write_text(json.dumps(sigstore_instance.trust_config()))
    files["trusted_root"].write_text(json.dumps(sigstore_instance.trusted_root()))
    files["token"].write_text(make_identity_token(sigstore_instance.issuer, WHO))
    return files


def keyless(files: dict[str, Path]) -> KeylessSigner:
    return KeylessSigner(identity_token_file=files["token"], trust_config=files["trust_config"])


def test_keyless_sign_and_verify_offline(
    sigstore_instance: SigstoreInstance, instance_files: dict[str, Path], model_dir: Path
) -> None:
    sig = sign_path(model_dir, keyless(instance_files))
    assert sigstore_instance.requests == ["/api/v2/signingCert", "/api/v1/log/entries"]
    policy = IdentityPolicy(WHO, sigstore_instance.issuer, name="train", trusted_root=instance_files["trusted_root"])
    v = verify_path(model_dir, sig, policy)
    assert v.signer_name == "train" and v.signer.identity == WHO
    # wrong identity, wrong issuer, default (production) root, a key policy: all refused
    with pytest.raises(VerificationError, match="SANs do not match"):
        verify_path(model_dir, sig, IdentityPolicy(WHO + "x", sigstore_instance.issuer,
                                                   trusted_root=instance_files["trusted_root"]))
    with pytest.raises(VerificationError, match="keyless signature not accepted"):
        verify_path(model_dir, sig, IdentityPolicy(WHO, "https://accounts.google.com",
                                                   trusted_root=instance_files["trusted_root"]))
    with pytest.raises(VerificationError, match="keyless signature not accepted"):
        verify_path(model_dir, sig, IdentityPolicy(WHO, sigstore_instance.issuer))
    with pytest.raises(VerificationError, match="signed keylessly"):
        verify_path(model_dir, sig, KeyPolicy(LocalKeySigner.generate().verifier()))
    # and the artifact itself
    (model_dir / "sub" / "weights.bin").write_bytes(b"x")
    with pytest.raises(VerificationError, match=r"sub/weights\.bin: content differs"):
        verify_path(model_dir, sig, policy)


def test_upstream_verifies_mlseal_keyless_bundle(
    sigstore_instance: SigstoreInstance, instance_files: dict[str, Path], model_dir: Path
) -> None:
    sig = sign_path(model_dir, keyless(instance_files))
    cfg = model_signing.verifying.Config().use_sigstore_verifier(
        identity=WHO, oidc_issuer=sigstore_instance.issuer, trust_config=instance_files["trust_config"]
    )
    cfg.verify(model_dir, sig)
    bad = model_signing.verifying.Config().use_sigstore_verifier(
        identity=WHO + "x", oidc_issuer=sigstore_instance.issuer, trust_config=instance_files["trust_config"]
    )
    with pytest.raises(Exception, match="SANs do not match"):
        bad.verify(model_dir, sig)


def test_mlseal_verifies_upstream_keyless_bundle(
    sigstore_instance: SigstoreInstance, instance_files: dict[str, Path], model_dir: Path, tmp_path: Path
) -> None:
    sig = tmp_path / "upstream-keyless.sig"
    model_signing.signing.Config().use_sigstore_signer(
        identity_token=instance_files["token"].read_text(), trust_config=instance_files["trust_config"],
        use_ambient_credentials=False,
    ).sign(model_dir, sig)
    v = verify_path(model_dir, sig, IdentityPolicy(WHO, sigstore_instance.issuer,
                                                   trusted_root=instance_files["trust_config"]))
    assert v.signer.identity == WHO


def test_cli_keyless_with_trust_file(
    sigstore_instance: SigstoreInstance, instance_files: dict[str, Path], model_dir: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    token = instance_files["token"].read_text()
    assert main(["sign", str(model_dir), "--keyless", "--identity-token", str(instance_files["token"]),
                 "--trust-config", str(instance_files["trust_config"]), "--json"]) == 0
    out = capsys.readouterr()
    bundle = json.loads(out.out)["bundle"]
    assert token not in out.out + out.err and token not in Path(bundle).read_text()
    assert main(["verify", str(model_dir), "--identity", WHO, "--issuer", sigstore_instance.issuer,
                 "--trusted-root", str(instance_files["trusted_root"])]) == 0
    trust = instance_files["trusted_root"].parent / "trust.yaml"
    trust.write_text(f"signers:\n  - name: train\n    identity: {WHO}\n    issuer: {sigstore_instance.issuer}\n"
                     "sigstore:\n  trusted_root: trusted_root.json\n")
    assert verify_path(model_dir, Path(bundle), load_trust(trust)).signer_name == "train"
    assert main(["verify", str(model_dir), "--trust", str(trust), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["identity"] == WHO


def test_untrusted_issuer_is_refused_by_fulcio(
    sigstore_instance: SigstoreInstance, instance_files: dict[str, Path], model_dir: Path
) -> None:
    token = make_identity_token("https://evil.example", WHO)
    instance_files["token"].write_text(token)
    with pytest.raises(InfrastructureError, match="keyless signing failed") as err:
        sign_path(model_dir, keyless(instance_files))
    assert token not in str(err.value)


def test_unreachable_instance_is_an_infrastructure_error(
    sigstore_instance: SigstoreInstance, instance_files: dict[str, Path], model_dir: Path
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    cfg = json.loads(instance_files["trust_config"].read_text())
    for svc in ("caUrls", "rekorTlogUrls"):
        cfg["signingConfig"][svc][0]["url"] = dead
    instance_files["trust_config"].write_text(json.dumps(cfg))
    token = instance_files["token"].read_text()
    with pytest.raises(InfrastructureError, match="keyless signing failed") as err:
        sign_path(model_dir, keyless(instance_files))
    assert token not in str(err.value)
    assert not model_dir.with_name("model.sig").exists()


def test_expired_token_is_refused_before_any_request(
    sigstore_instance: SigstoreInstance, instance_files: dict[str, Path], model_dir: Path
) -> None:
    instance_files["token"].write_text(make_identity_token(sigstore_instance.issuer, WHO, ttl=-3600))
    with pytest.raises(Exception, match=r"not a valid OIDC JWT|validity"):
        sign_path(model_dir, keyless(instance_files))
    assert sigstore_instance.requests == []


def test_a_signing_failure_that_echoes_the_token_does_not_repeat_it(
    instance_files: dict[str, Path], model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = instance_files["token"].read_text()

    class EchoingContext:
        def signer(self, identity: object) -> object:
            raise RuntimeError(f"Fulcio said: bad request for token {token}")

    monkeypatch.setattr("sigstore.sign.SigningContext.from_trust_config", lambda _cfg: EchoingContext())
    with pytest.raises(InfrastructureError, match=r"keyless signing failed: RuntimeError: Fulcio said") as err:
        sign_path(model_dir, keyless(instance_files))
    assert token not in str(err.value) and "token ***" in str(err.value)
