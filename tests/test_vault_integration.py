"""mlseal's Vault source through hvac over real HTTP, against the fake or a real Vault.

These tests use only the Vault HTTP API to set things up (`VaultHarness`), so with
``VAULT_ADDR`` and ``VAULT_TOKEN`` (a root or operator token) set they run unchanged
against a real Vault: ``pytest -m vault_real tests/test_vault_integration.py``.
"""

from __future__ import annotations

import base64
import logging

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from mlseal.secrets import (
    KeyTypeError,
    SecretNotFound,
    SecretSource,
    VaultPermissionDenied,
    envelope,
    open_secret_source,
)
from mlseal.signing.keys import Signer, load_public_key
from tests.fixtures_vault import VaultHarness, random_value

pytestmark = pytest.mark.vault_real


def pipeline_source(vault: VaultHarness) -> SecretSource:
    return open_secret_source(env=vault.token_env(["mlseal-pipeline"]))


def test_kv_read_latest_and_pinned_versions(vault: VaultHarness, secrets_log: pytest.LogCaptureFixture) -> None:
    path = vault.path("db")
    v1, v2 = random_value("pw"), random_value("pw")
    assert vault.put(path, {"password": v1, "user": "svc"}) == 1
    assert vault.put(path, {"password": v2, "user": "svc"}) == 2
    src = pipeline_source(vault)
    assert src.kind == "vault"
    latest = src.read(path)
    assert (latest.path, latest.version) == (path, 2)
    assert latest.data["password"].reveal() == v2
    pinned = src.read(path, version=1)
    assert pinned.version == 1 and pinned.data["password"].reveal() == v1
    assert pinned.ref() == {"path": path, "version": 1}
    # the relative form names the same secret
    assert src.read(path.removeprefix("mlseal/")).version == 2
    vault.assert_clean(secrets_log.text, repr(latest), str(latest), repr(src))


def test_missing_path_and_missing_version(vault: VaultHarness) -> None:
    path = vault.path("only-one-version")
    vault.put(path, {"k": random_value()})
    src = pipeline_source(vault)
    with pytest.raises(SecretNotFound, match=f"secret/{path} version 7"):
        src.read(path, version=7)
    with pytest.raises(SecretNotFound, match=f"secret/{vault.path('absent')}"):
        src.read(vault.path("absent"))


def test_deleted_version_is_not_found(vault: VaultHarness) -> None:
    path = vault.path("deleted")
    vault.put(path, {"k": random_value()})
    vault.put(path, {"k": random_value()})
    vault.delete_versions(path, [1])
    src = pipeline_source(vault)
    with pytest.raises(SecretNotFound, match="version 1"):
        src.read(path, version=1)
    assert src.read(path).version == 2


def test_policy_denies_paths_outside_mlseal(vault: VaultHarness) -> None:
    vault.put("elsewhere/db", {"password": random_value()})
    src = pipeline_source(vault)
    from mlseal.secrets._vault import VaultSecretSource

    assert isinstance(src, VaultSecretSource)
    # the pipeline policy allows only secret/data/mlseal/*; prove the server enforces it
    with pytest.raises(VaultPermissionDenied, match="permission denied") as exc:
        src.session.call("read secret/elsewhere/db",
                         lambda c: c.secrets.kv.v2.read_secret_version(path="elsewhere/db", mount_point="secret",
                                                                       raise_on_deleted_version=True))
    assert "secret/elsewhere/db" in str(exc.value)
    vault.assert_clean(str(exc.value), repr(exc.value))


def test_webhook_policy_cannot_sign_or_read(vault: VaultHarness) -> None:
    path = vault.path("db")
    vault.put(path, {"password": random_value()})
    src = open_secret_source(env=vault.token_env(["mlseal-webhook"]))
    with pytest.raises(VaultPermissionDenied, match=f"secret/{path}"):
        src.read(path)
    signer = src.transit_signer()  # reading the public key is allowed
    with pytest.raises(VaultPermissionDenied, match="Transit sign"):
        signer.sign(b"x")


def test_transit_signature_verifies_with_public_key_alone(vault: VaultHarness) -> None:
    src = pipeline_source(vault)
    signer = src.transit_signer()
    assert isinstance(signer, Signer)
    data = b"in-toto statement bytes"
    sig = signer.sign(data)
    # independent of mlseal and of the server: the public key from transit/keys + cryptography
    info = vault.admin.secrets.transit.read_key(name="mlseal-signing")["data"]
    pem = info["keys"][str(info["latest_version"])]["public_key"]
    pub = load_public_key(pem.encode())
    pub.verify(sig, data, ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignature):
        pub.verify(sig, data + b"!", ec.ECDSA(hashes.SHA256()))
    # and Vault's own verify endpoint agrees
    resp = vault.admin.secrets.transit.verify_signed_data(
        name="mlseal-signing", hash_input=base64.b64encode(data).decode(),
        signature=f"vault:v{info['latest_version']}:{base64.b64encode(sig).decode()}",
        hash_algorithm="sha2-256", marshaling_algorithm="asn1")
    assert resp["data"]["valid"] is True


def test_signer_is_pinned_to_key_version_across_rotation(vault: VaultHarness) -> None:
    name = f"mlseal-rot-{vault.run_id}"
    vault.transit_key(name)
    src = open_secret_source(env=vault.env(VAULT_TOKEN=vault.root_token))
    signer = src.transit_signer(name)
    vault.rotate(name)
    sig = signer.sign(b"data")
    signer.public_key().verify(sig, b"data", ec.ECDSA(hashes.SHA256()))
    assert src.transit_signer(name).key_id != signer.key_id  # a new signer sees the new version


def test_wrong_key_type_for_signing_and_data_keys(vault: VaultHarness) -> None:
    src = pipeline_source(vault)
    with pytest.raises(KeyTypeError, match="transit/keys/mlseal-data has type 'aes256-gcm96'"):
        src.transit_signer("mlseal-data")
    with pytest.raises((KeyTypeError, VaultPermissionDenied), match="mlseal-signing"):
        src.data_key("mlseal-signing")


def test_data_key_envelope_roundtrip(vault: VaultHarness, secrets_log: pytest.LogCaptureFixture) -> None:
    src = pipeline_source(vault)
    dk = src.data_key()
    assert dk.wrapped.startswith("vault:v") and len(dk.plaintext.reveal()) == 32
    assert src.unwrap_data_key(dk.wrapped) == dk.plaintext
    blob = envelope.encrypt(b"dataset rows", dk, b"raw.csv")
    assert dk.plaintext.reveal() not in blob
    assert envelope.decrypt(blob, src, b"raw.csv") == b"dataset rows"
    text = secrets_log.text
    assert base64.b64encode(dk.plaintext.reveal()).decode() not in text


def test_approle_login(vault: VaultHarness, secrets_log: pytest.LogCaptureFixture) -> None:
    path = vault.path("app")
    value = random_value()
    vault.put(path, {"v": value})
    env = vault.approle(f"mlseal-pipeline-{vault.run_id}", ["mlseal-pipeline"])
    src = open_secret_source(env=env)
    assert src.read(path).data["v"].reveal() == value
    assert "accessor" in secrets_log.text and "approle" in secrets_log.text
    vault.assert_clean(secrets_log.text, repr(src))


def test_logs_name_the_accessor_not_the_token(vault: VaultHarness, secrets_log: pytest.LogCaptureFixture) -> None:
    token, accessor = vault.create_token(["mlseal-pipeline"])
    src = open_secret_source(env=vault.env(VAULT_TOKEN=token))
    vault.put(vault.path("x"), {"k": random_value()})
    src.read(vault.path("x"))
    assert accessor in secrets_log.text
    assert token not in secrets_log.text
    assert any(r.levelno >= logging.INFO for r in secrets_log.records)


def test_pipeline_policy_is_read_only_and_cannot_export(vault: VaultHarness) -> None:
    import hvac

    token, _ = vault.create_token(["mlseal-pipeline"])
    c = hvac.Client(url=vault.addr, token=token, verify=str(vault.ca_cert_path) if vault.ca_cert_path else True,
                    namespace=vault.namespace)
    with pytest.raises(hvac.exceptions.Forbidden):
        c.secrets.kv.v2.create_or_update_secret(path=vault.path("w"), secret={"k": "v"})
    for kind in ("signing-key", "hmac-key"):
        with pytest.raises(hvac.exceptions.Forbidden):
            c.secrets.transit.export_key(name="mlseal-signing", key_type=kind)
    with pytest.raises(hvac.exceptions.Forbidden):
        c.secrets.transit.export_key(name="mlseal-data", key_type="encryption-key")
    with pytest.raises(hvac.exceptions.Forbidden):
        c.secrets.transit.rotate_key(name="mlseal-signing")
    with pytest.raises(hvac.exceptions.Forbidden):
        c.secrets.transit.sign_data(name="other-key", hash_input="eA==")
