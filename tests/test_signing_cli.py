"""`mlseal sign` / `mlseal verify`: exit codes, messages, --json, trust files, resolve_signer."""

from __future__ import annotations

import json
from pathlib import Path

import model_signing
import pytest

from mlseal.cli import main
from mlseal.errors import ConfigurationError
from mlseal.secrets.signer import resolve_signer
from mlseal.signing.keys import LocalKeySigner
from tests.fixtures_signing import KeyFiles, make_key


def test_sign_then_verify_with_key_and_trust(
    model_dir: Path, signing_key: KeyFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sign", str(model_dir), "--key", str(signing_key.private), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    sig = Path(out["bundle"])
    assert sig == model_dir.with_name("model.sig") and out["files"] == 4
    assert out["key_id"] == signing_key.signer.key_id

    assert main(["verify", str(model_dir), "--key", str(signing_key.public), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["ok"] is True and res["sha256"] == out["sha256"]

    trust = tmp_path / "trust.yaml"
    trust.write_text(f"signers:\n  - name: pipeline\n    public_key: {signing_key.public}\n")
    assert main(["verify", str(model_dir), "--bundle", str(sig), "--trust", str(trust)]) == 0
    assert "signed by pipeline" in capsys.readouterr().err

    model_signing.verifying.Config().use_elliptic_key_verifier(public_key=signing_key.public).verify(model_dir, sig)


def test_verify_mismatch_exits_1_naming_the_file(
    model_dir: Path, signing_key: KeyFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sign", str(model_dir), "--key", str(signing_key.private)]) == 0
    (model_dir / "sub" / "weights.bin").write_bytes(b"changed")
    capsys.readouterr()
    assert main(["verify", str(model_dir), "--key", str(signing_key.public), "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["ok"] is False
    assert "sub/weights.bin: content differs" in captured.err


def test_verify_with_untrusted_key_exits_1(
    model_dir: Path, signing_key: KeyFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sign", str(model_dir), "--key", str(signing_key.private)]) == 0
    other = make_key(tmp_path, "other")
    trust = tmp_path / "trust.yaml"
    trust.write_text(f"signers:\n  - name: other\n    public_key: {other.public}\n")
    assert main(["verify", str(model_dir), "--trust", str(trust)]) == 1
    assert "not by key other" in capsys.readouterr().err


def test_sign_without_a_key_exits_2_and_says_what_to_pass(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MLSEAL_SIGNING_KEY", raising=False)
    assert main(["sign", str(model_dir)]) == 2
    err = capsys.readouterr().err
    assert "--key PEM" in err and "--vault-transit KEY" in err and "MLSEAL_SIGNING_KEY" in err


def test_verify_needs_key_or_trust(model_dir: Path) -> None:
    with pytest.raises(SystemExit) as e:
        main(["verify", str(model_dir)])
    assert e.value.code == 2


def test_empty_trust_file_is_refused(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trust = tmp_path / "trust.yaml"
    trust.write_text("signers: []\n")
    assert main(["verify", str(model_dir), "--trust", str(trust)]) == 2
    assert "empty trust policy is refused" in capsys.readouterr().err


def test_trust_file_keyless_entry_needs_identity_and_issuer(tmp_path: Path) -> None:
    from mlseal.signing.trust import load_trust

    trust = tmp_path / "trust.yaml"
    trust.write_text("signers:\n  - name: release\n    identity: https://example.com/ci\n")
    with pytest.raises(ConfigurationError, match=r"signers\[0\] \(release\) needs a public_key, or an identity"):
        load_trust(trust)


@pytest.mark.parametrize(("text", "named"), [
    # a typo for `stages` would leave the key allowed to sign every stage
    ("signers:\n  - name: train\n    public_key: k.pub.pem\n    stage: [train]\n",
     "signers[0] (train): unknown key 'stage'"),
    # a typo for `checkpoint_keys` would silently turn off rollback protection
    ("signers:\n  - name: p\n    public_key: k.pub.pem\ncheckpoint_key: [k.pub.pem]\n", "unknown key 'checkpoint_key'"),
    ("signers:\n  - name: p\n    public_key: k.pub.pem\nsigstore: {trusted_root: r.json, stagin: true}\n",
     "sigstore: unknown key 'stagin'"),
    ("signers:\n  - name: r\n    identity: https://ci.example/x\n    issuer: https://iss.example\n"
     "    stages: [train]\n", "signers[0] (r): unknown key 'stages'"),
    ("signers:\n  - name: p\n    public_key: k.pub.pem\ncheckpoint_origin: 7\n", "checkpoint_origin must be a string"),
    # a repeated key: PyYAML would keep the second list, another reader the first
    ("signers:\n  - name: p\n    public_key: k.pub.pem\nsigners: []\n", "found the key 'signers' twice"),
])
def test_trust_file_refuses_what_it_does_not_know(tmp_path: Path, text: str, named: str) -> None:
    """Every key of a trust file means something; one it does not know is a typo that would
    widen trust or drop a check, so it is refused with the file, the key and the valid keys."""
    from mlseal.signing.trust import load_trust

    LocalKeySigner.generate().save(tmp_path / "k.pem", tmp_path / "k.pub.pem")
    trust = tmp_path / "trust.yaml"
    trust.write_text(text)
    with pytest.raises(ConfigurationError) as exc:
        load_trust(trust)
    assert named in str(exc.value) and str(trust) in str(exc.value)


def test_key_material_where_a_path_belongs_is_never_echoed(
    signing_key: KeyFiles, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """$MLSEAL_SIGNING_KEY set to the PEM itself (a common slip in a Secret-to-env mapping):
    the refusal says so and prints no part of the key, from the library, the stages and the CLI."""
    from mlseal.stage import stage_signer

    pem = signing_key.private.read_text()
    body = [line for line in pem.splitlines() if line and not line.startswith("-----")]
    monkeypatch.setenv("MLSEAL_SIGNING_KEY", pem)
    with pytest.raises(ConfigurationError, match="holds key material, not a path") as lib:
        resolve_signer()
    with pytest.raises(ConfigurationError, match="holds key material, not a path") as stage:
        stage_signer({"MLSEAL_SIGNING_KEY": pem, "MLSEAL_DEV_SECRETS": str(signing_key.private.parent)}, "train")
    target = signing_key.private.parent / "m.bin"
    target.write_bytes(b"m")
    assert main(["sign", str(target)]) != 0
    shown = str(lib.value) + str(stage.value) + "".join(capsys.readouterr())
    assert "holds key material" in shown
    for line in body:
        assert line not in shown
        assert line[:16] not in shown


def test_resolve_signer_sources(signing_key: KeyFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLSEAL_SIGNING_KEY", raising=False)
    assert resolve_signer(key=str(signing_key.private)).key_id == signing_key.signer.key_id
    monkeypatch.setenv("MLSEAL_SIGNING_KEY", str(signing_key.private))
    assert resolve_signer().key_id == signing_key.signer.key_id
    with pytest.raises(ConfigurationError, match="either --key or --vault-transit"):
        resolve_signer(key="a", vault_transit="b")
    with pytest.raises(ConfigurationError, match="cannot read key file"):
        resolve_signer(key="/nonexistent.pem")


def test_sign_env_key_and_custom_out(
    model_dir: Path, signing_key: KeyFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLSEAL_SIGNING_KEY", str(signing_key.private))
    out = tmp_path / "bundles" / "m.sig"
    assert main(["sign", str(model_dir), "--out", str(out)]) == 0
    assert main(["verify", str(model_dir), "--bundle", str(out), "--key", str(signing_key.public)]) == 0


def test_keyless_flags_need_keyless(model_dir: Path, signing_key: KeyFiles, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sign", str(model_dir), "--key", str(signing_key.private), "--staging"]) == 2
    assert "need --keyless" in capsys.readouterr().err
    assert main(["sign", str(model_dir), "--key", str(signing_key.private), "--keyless"]) == 2


def test_private_key_never_printed(model_dir: Path, signing_key: KeyFiles, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sign", str(model_dir), "--key", str(signing_key.private), "--json"]) == 0
    captured = capsys.readouterr()
    pem = signing_key.private.read_text()
    body = "".join(pem.splitlines()[1:-1])
    assert body[:40] not in captured.out + captured.err
    assert "LocalKeySigner(key_id=" in repr(LocalKeySigner.from_file(signing_key.private))


def test_vault_transit_without_vault_is_refused_not_downgraded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--vault-transit must not silently sign with the dev store's local key."""
    for var in ("VAULT_ADDR", "VAULT_TOKEN", "VAULT_ROLE_ID", "VAULT_SECRET_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match="needs Vault: set VAULT_ADDR"):
        resolve_signer(vault_transit="mlseal-signing")
    assert not (tmp_path / ".mlseal").exists(), "no dev key may be created on the way"


def test_sign_to_an_unwritable_bundle_path_exits_2(
    model_dir: Path, signing_key: KeyFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    for out in (blocker / "model.sig", tmp_path):  # a parent that is a file; a directory in the way
        assert main(["sign", str(model_dir), "--key", str(signing_key.private), "--out", str(out), "--json"]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and f"mlseal: error: cannot write bundle {out}: " in captured.err
