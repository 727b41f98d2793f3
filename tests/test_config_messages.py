"""Every configuration error names the file, the key and a valid example.

A table of bad trust files and policies; each error must carry the file's path, the
key it is about and a valid example of that key (`a valid example: `...``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mlseal.admission.policy import load_policy
from mlseal.errors import ConfigurationError
from mlseal.signing.keys import LocalKeySigner
from mlseal.signing.trust import load_trust

GOOD_TRUST = "signers:\n  - name: train\n    public_key: k.pub.pem\n"

TRUST_CASES = [
    # (file text, key the error is about, example text it must show)
    ("signers: {name: x}\n", "signers", "signers: [{name: train"),
    ("signers:\n  - public_key: k.pub.pem\n", "name", "{name: train"),
    ("signers:\n  - name: t\n    public_key: 3\n", "public_key", "public_key: keys/train.pub.pem"),
    ("signers:\n  - name: t\n", "identity", "issuer: https://token.actions.githubusercontent.com"),
    ("signers:\n  - name: t\n    public_key: k.pub.pem\n    stage: [train]\n", "stage", "stages: [train]"),
    ("signers:\n  - name: t\n    public_key: k.pub.pem\n    stages: []\n", "stages", "stages: [train]"),
    ("signers:\n  - name: t\n    public_key: k.pub.pem\n    stages: [Train!]\n", "stages", "stages: [train]"),
    ("signers:\n  - name: t\n    public_key: k.pub.pem\n    components: [abc]\n", "components", "components: ["),
    ("signers:\n  - name: t\n    public_key: k.pub.pem\n    images: [3]\n", "images", "images: [registry"),
    (GOOD_TRUST + "checkpoint_keys: k.pub.pem\n", "checkpoint_keys", "checkpoint_keys: [keys/checkpoint.pub.pem]"),
    (GOOD_TRUST + "checkpoint_key: [k.pub.pem]\n", "checkpoint_key", "checkpoint_keys: [keys/checkpoint.pub.pem]"),
    (GOOD_TRUST + "checkpoint_origin: 3\n", "checkpoint_origin", "checkpoint_origin: mlseal.example/ledger"),
    (GOOD_TRUST + "sigstore: yes\n", "sigstore", "sigstore: {trusted_root: trusted_root.json}"),
    (GOOD_TRUST + "sigstore: {staging: maybe}\n", "staging", "sigstore: {staging: true}"),
    ("signers: []\n", "signers", "signers: [{name: train"),
]


@pytest.fixture()
def keydir(tmp_path: Path) -> Path:
    LocalKeySigner.generate().save(tmp_path / "k.pem", tmp_path / "k.pub.pem")
    return tmp_path


@pytest.mark.parametrize(("text", "key", "example"), TRUST_CASES,
                         ids=[f"{c[1]}-{i}" for i, c in enumerate(TRUST_CASES)])
def test_trust_file_errors_name_file_key_and_example(keydir: Path, text: str, key: str, example: str) -> None:
    f = keydir / "trust.yaml"
    f.write_text(text)
    with pytest.raises(ConfigurationError) as err:
        load_trust(f)
    msg = str(err.value)
    assert str(f) in msg and key in msg and "a valid example: `" in msg and example in msg, msg


POLICY_BASE = "trust: trust.yaml\nledger: sqlite:///l.db\n"
POLICY_CASES = [
    ("trust: 3\nledger: sqlite:///l.db\n", "trust", "trust: trust.yaml"),
    ("trust: trust.yaml\nledger: 3\n", "ledger", "ledger: {url_file: /vault/secrets/ledger-url}"),
    (POLICY_BASE + "mode: audit\n", "mode", "mode: enforce"),
    (POLICY_BASE + "mod: warn\n", "mod", "mode: enforce"),
    (POLICY_BASE + "gates: {accuracy: 0.9}\n", "gates", "gates: {accuracy: {min: 0.9}}"),
    (POLICY_BASE + "require_stages: ingest\n", "require_stages", "require_stages: [ingest, anonymize"),
    (POLICY_BASE + "model_stages: [evaluate]\n", "model_stages", "model_stages: [train]"),
    (POLICY_BASE + "evaluation: {signers: []}\n", "evaluation", "evaluation: {signers: [evaluate]"),
    (POLICY_BASE + "loader: {image: mlseal:latest}\n", "loader.image", "loader: {image: "),
    (POLICY_BASE + "images: registry\n", "images", "images: [\"registry.example/serving/*\"]"),
    (POLICY_BASE + "volumes: [hostPath]\n", "volumes", "volumes: [secret]"),
    (POLICY_BASE + "runtimes: kserve\n", "runtimes", "runtimes: [kserve-tritonserver]"),
    (POLICY_BASE + "trained_models: maybe\n", "trained_models", "trained_models: check"),
    (POLICY_BASE + "serving_uris: [a]\n", "serving_uris", "serving_uris: {"),
    (POLICY_BASE + "namespaces: {prod: {mode: audit}}\n", "namespaces.prod.mode", "mode: enforce"),
    (POLICY_BASE + "namespaces: {prod: {image: [x]}}\n", "image", "images: ["),
    (POLICY_BASE + "namespaces: {prod: {loader: {image: x}}}\n", "loader", "loader: {image: "),
]


@pytest.mark.parametrize(("text", "key", "example"), POLICY_CASES,
                         ids=[f"{c[1]}-{i}" for i, c in enumerate(POLICY_CASES)])
def test_policy_errors_name_file_key_and_example(keydir: Path, text: str, key: str, example: str) -> None:
    (keydir / "trust.yaml").write_text(GOOD_TRUST)
    f = keydir / "policy.yaml"
    f.write_text(text)
    with pytest.raises(ConfigurationError) as err:
        load_policy(f)
    msg = str(err.value)
    assert str(f) in msg and key in msg and "a valid example: `" in msg and example in msg, msg
