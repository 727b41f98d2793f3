"""Vault Transit-signed OMS bundles: the private key stays in Vault; the bundle verifies
with the exported public key, in mlseal and in upstream model_signing.

Runs against the Vault-API test server, or a real Vault when VAULT_ADDR/VAULT_TOKEN are set.
"""

from __future__ import annotations

import json
from pathlib import Path

import model_signing
import pytest

from mlseal.cli import main
from mlseal.errors import VerificationError
from mlseal.secrets.signer import resolve_signer
from mlseal.signing.artifact import sign_path, verify_path
from mlseal.signing.keys import PublicKeyVerifier
from tests.fixtures_vault import VaultHarness

pytestmark = pytest.mark.vault_real


def export_public_key(vault: VaultHarness, name: str, dest: Path) -> Path:
    info = vault.admin.secrets.transit.read_key(name=name)["data"]
    dest.write_text(info["keys"][str(info["latest_version"])]["public_key"])
    return dest


@pytest.fixture
def pipeline_env(vault: VaultHarness, monkeypatch: pytest.MonkeyPatch) -> VaultHarness:
    """The environment of a pipeline pod: Vault address and a mlseal-pipeline token."""
    for k, v in vault.token_env(["mlseal-pipeline"]).items():
        monkeypatch.setenv(k, v)
    return vault


def upstream_verify(model: Path, sig: Path, pub: Path) -> None:
    model_signing.verifying.Config().use_elliptic_key_verifier(public_key=pub).verify(model, sig)


def test_transit_signed_directory_verifies_with_upstream_and_mlseal(
    pipeline_env: VaultHarness, model_dir: Path, tmp_path: Path
) -> None:
    signer = resolve_signer(vault_transit="mlseal-signing")
    sig = sign_path(model_dir, signer)
    pub = export_public_key(pipeline_env, "mlseal-signing", tmp_path / "transit.pub.pem")
    upstream_verify(model_dir, sig, pub)
    v = verify_path(model_dir, sig, PublicKeyVerifier.from_file(pub, name="vault-transit"))
    assert v.signer_name == "vault-transit" and v.key_id == signer.key_id
    (model_dir / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"config\.json"):
        upstream_verify(model_dir, sig, pub)
    with pytest.raises(VerificationError, match=r"config\.json: content differs"):
        verify_path(model_dir, sig, PublicKeyVerifier.from_file(pub))


def test_transit_signed_file_verifies_with_upstream(pipeline_env: VaultHarness, tmp_path: Path) -> None:
    f = tmp_path / "model.pkl"
    f.write_bytes(b"\x80\x04pickle" * 500)
    sig = sign_path(f, resolve_signer(vault_transit="mlseal-signing"))
    upstream_verify(f, sig, export_public_key(pipeline_env, "mlseal-signing", tmp_path / "t.pub.pem"))


def test_cli_sign_with_vault_transit_leaks_no_token(
    pipeline_env: VaultHarness, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG", logger="mlseal")
    assert main(["sign", str(model_dir), "--vault-transit", "mlseal-signing", "--json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    pub = export_public_key(pipeline_env, "mlseal-signing", tmp_path / "t.pub.pem")
    assert main(["verify", str(model_dir), "--bundle", out["bundle"], "--key", str(pub)]) == 0
    pipeline_env.assert_clean(captured.out, captured.err, caplog.text, Path(out["bundle"]).read_text())


def test_bundle_from_rotated_key_does_not_verify_with_old_public_key(
    vault: VaultHarness, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"mlseal-rot-{vault.run_id}"
    vault.transit_key(name)
    for k, v in vault.env(VAULT_TOKEN=vault.root_token).items():
        monkeypatch.setenv(k, v)
    old_pub = export_public_key(vault, name, tmp_path / "v1.pub.pem")
    vault.rotate(name)
    sig = sign_path(model_dir, resolve_signer(vault_transit=name))
    with pytest.raises(VerificationError, match="not by key"):
        verify_path(model_dir, sig, PublicKeyVerifier.from_file(old_pub))
    with pytest.raises(ValueError, match="Key mismatch"):
        upstream_verify(model_dir, sig, old_pub)
    upstream_verify(model_dir, sig, export_public_key(vault, name, tmp_path / "v2.pub.pem"))
