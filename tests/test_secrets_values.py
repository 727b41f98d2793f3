"""Secret / KVSecret / DataKey never print their values; the dev store keeps files 0600."""

from __future__ import annotations

import base64
import logging
import os
import pickle
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from mlseal.errors import ConfigurationError, VerificationError
from mlseal.secrets import DataKey, KVSecret, Secret, SecretNotFound, SecretSource, envelope, open_secret_source
from mlseal.signing.keys import Signer
from tests.fixtures_vault import random_value


def test_secret_hides_value_everywhere() -> None:
    value = random_value()
    s = Secret(value)
    for text in (repr(s), str(s), f"{s}", f"{s!r}", f"{s}", repr([s]), repr({"k": s})):
        assert value not in text
        assert "Secret('***')" in text
    assert s.reveal() == value
    assert s == Secret(value) and s != Secret(value + "x")
    with pytest.raises(TypeError):
        pickle.dumps(s)
    with pytest.raises(AttributeError):
        s._value = "other"


def test_kvsecret_and_datakey_reprs_hide_values() -> None:
    value = random_value()
    kv = KVSecret("mlseal/db", 3, {"password": Secret(value)})
    assert value not in repr(kv) and "password" in repr(kv) and "3" in repr(kv)
    assert kv.ref() == {"path": "mlseal/db", "version": 3}
    raw = os.urandom(32)
    dk = DataKey(Secret(raw), "vault:v1:abc")
    assert raw.hex() not in repr(dk) and str(raw) not in repr(dk)


def test_dev_store_lifecycle(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mlseal")
    src = open_secret_source(dev_dir=tmp_path / "s", env={})
    assert src.kind == "dev" and isinstance(src, SecretSource)
    assert "dev secrets, not Vault" in caplog.text
    key = src.ensure_key("demo/hmac")
    assert key.path == "mlseal/demo/hmac" and key.version == 1
    assert len(base64.b64decode(key.data["key"].reveal())) == 32
    assert src.ensure_key("mlseal/demo/hmac").data["key"] == key.data["key"]  # created once
    assert src.read("demo/hmac", version=1).data["key"] == key.data["key"]
    with pytest.raises(SecretNotFound, match="mlseal/demo/hmac version 2"):
        src.read("demo/hmac", version=2)
    with pytest.raises(SecretNotFound, match="mlseal/nothing"):
        src.read("nothing")
    with pytest.raises(ConfigurationError, match="bad segment"):
        src.read("../etc/passwd")
    # every file is 0600 and the store's directories are private
    files = [p for p in (tmp_path / "s").rglob("*") if p.is_file()]
    signer = src.transit_signer()
    dk = src.data_key()
    files = [p for p in (tmp_path / "s").rglob("*") if p.is_file()]
    assert len(files) == 3
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    assert key.data["key"].reveal() not in caplog.text
    assert isinstance(signer, Signer)
    sig = signer.sign(b"payload")
    signer.public_key().verify(sig, b"payload", ec.ECDSA(hashes.SHA256()))
    assert src.transit_signer().key_id == signer.key_id  # stable across calls
    assert src.unwrap_data_key(dk.wrapped) == dk.plaintext
    assert dk.wrapped.startswith("dev:v1:")


def test_dev_store_refuses_readable_files(tmp_path: Path) -> None:
    src = open_secret_source(dev_dir=tmp_path, env={})
    src.transit_signer()
    pem = tmp_path / "transit" / "mlseal-signing.pem"
    pem.chmod(0o644)
    with pytest.raises(ConfigurationError, match="must be 0600"):
        src.transit_signer()


def test_dev_versions_and_tampered_wrapped_key(tmp_path: Path) -> None:
    from mlseal.secrets._dev import DevSecretSource

    src = DevSecretSource(tmp_path)
    a, b = random_value(), random_value()
    assert src.put("db", {"password": a}).version == 1
    assert src.put("db", {"password": b}).version == 2
    assert src.read("db").data["password"].reveal() == b
    assert src.read("db", 1).data["password"].reveal() == a
    dk = src.data_key()
    raw = bytearray(base64.b64decode(dk.wrapped[len("dev:v1:"):]))
    raw[-1] ^= 1
    with pytest.raises(VerificationError, match="does not decrypt"):
        src.unwrap_data_key("dev:v1:" + base64.b64encode(bytes(raw)).decode())
    with pytest.raises(ConfigurationError, match="not by this dev store"):
        src.unwrap_data_key("vault:v1:AAAA")


def test_envelope_roundtrip_and_tampering(tmp_path: Path) -> None:
    src = open_secret_source(dev_dir=tmp_path, env={})
    data = os.urandom(1000)
    blob = envelope.encrypt(data, src.data_key(), b"artifact:a")
    assert data not in blob
    assert envelope.decrypt(blob, src, b"artifact:a") == data
    with pytest.raises(VerificationError, match="does not authenticate"):
        envelope.decrypt(blob, src, b"artifact:b")
    for i in (len(blob) - 1, len(blob) - 20):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises(VerificationError):
            envelope.decrypt(bytes(bad), src, b"artifact:a")
    with pytest.raises(VerificationError, match="truncated"):
        envelope.decrypt(blob[:30], src, b"artifact:a")
    with pytest.raises(VerificationError, match="bad magic"):
        envelope.decrypt(b"x" + blob, src, b"artifact:a")
    # swapping the header of another blob (other data key) fails
    other = envelope.encrypt(data, src.data_key(), b"artifact:a")
    _h1, hb1, _ct1 = envelope.read_header(blob)
    _, hb2, _ = envelope.read_header(other)
    swapped = blob.replace(hb1, hb2)
    with pytest.raises(VerificationError):
        envelope.decrypt(swapped, src, b"artifact:a")


def test_vault_addr_without_auth_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no Vault auth is configured"):
        open_secret_source(dev_dir=tmp_path, env={"VAULT_ADDR": "http://127.0.0.1:1"})
    with pytest.raises(ConfigurationError, match="VAULT_ROLE_ID and VAULT_SECRET_ID"):
        open_secret_source(env={"VAULT_ADDR": "http://127.0.0.1:1", "VAULT_ROLE_ID": "r"})
    with pytest.raises(ConfigurationError, match="http"):
        open_secret_source(env={"VAULT_ADDR": "vault:8200", "VAULT_TOKEN": "t"})
