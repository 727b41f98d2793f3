"""The test server answers like the Vault HTTP API documents (so the other tests mean
something): status codes, ``{"errors": [...]}`` bodies, KV v2 and Transit shapes, token
TTLs, ACL path matching. Raw HTTP with `requests`, no hvac, no mlseal."""

from __future__ import annotations

import base64

import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.vault_server import FakeVault, capabilities, parse_policy


def call(v: FakeVault, method: str, path: str, token: str | None = None, json: object = None,
         ns: str | None = None, **params: str) -> requests.Response:
    headers = {}
    if token:
        headers["X-Vault-Token"] = token
    if ns:
        headers["X-Vault-Namespace"] = ns
    return requests.request(method, f"{v.addr}/v1/{path}", headers=headers, json=json, params=params, timeout=5,
                            verify=str(v.ca_cert_path) if v.ca_cert_path else True)


def test_health_codes(vault_server: FakeVault) -> None:
    r = call(vault_server, "GET", "sys/health")
    assert r.status_code == 200 and r.json()["sealed"] is False and r.json()["initialized"] is True
    vault_server.standby = True
    assert call(vault_server, "GET", "sys/health").status_code == 429
    assert call(vault_server, "GET", "sys/health", standbyok="true").status_code == 200
    vault_server.standby = False
    vault_server.seal()
    r = call(vault_server, "GET", "sys/health")
    assert r.status_code == 503 and r.json()["sealed"] is True
    assert call(vault_server, "GET", "sys/health", sealedcode="200").status_code == 200
    assert call(vault_server, "GET", "sys/seal-status").json()["sealed"] is True
    r = call(vault_server, "GET", "secret/data/x", vault_server.root_token)
    assert (r.status_code, r.json()) == (503, {"errors": ["Vault is sealed"]})


def test_errors_and_auth(vault_server: FakeVault) -> None:
    assert call(vault_server, "GET", "secret/data/x").status_code == 403
    r = call(vault_server, "GET", "secret/data/x", "hvs.bogus")
    assert (r.status_code, r.json()) == (403, {"errors": ["permission denied"]})
    r = call(vault_server, "GET", "secret/data/missing", vault_server.root_token)
    assert (r.status_code, r.json()) == (404, {"errors": []})
    r = call(vault_server, "GET", "nomount/x", vault_server.root_token)
    assert r.status_code == 404 and "no handler for route" in r.json()["errors"][0]
    r = requests.post(f"{vault_server.addr}/v1/secret/data/x", data=b"{not json",
                      headers={"X-Vault-Token": vault_server.root_token}, timeout=5)
    assert r.status_code == 400 and r.headers["Content-Type"] == "application/json"
    r = call(vault_server, "GET", "secret/data/x", vault_server.root_token, ns="no-such-ns")
    assert r.status_code == 404


def test_kv_v2_shapes_and_versions(vault_server: FakeVault) -> None:
    t = vault_server.root_token
    r = call(vault_server, "POST", "secret/data/mlseal/a", t, {"data": {"k": "v1"}})
    assert r.status_code == 200 and r.json()["data"]["version"] == 1
    assert set(r.json()["data"]) == {"created_time", "custom_metadata", "deletion_time", "destroyed", "version"}
    call(vault_server, "POST", "secret/data/mlseal/a", t, {"data": {"k": "v2"}})
    r = call(vault_server, "POST", "secret/data/mlseal/a", t, {"data": {"k": "x"}, "options": {"cas": 1}})
    assert r.status_code == 400 and "check-and-set" in r.json()["errors"][0]
    body = call(vault_server, "GET", "secret/data/mlseal/a", t).json()
    assert body["data"]["data"] == {"k": "v2"} and body["data"]["metadata"]["version"] == 2
    assert {"request_id", "lease_id", "renewable", "lease_duration", "wrap_info", "warnings", "auth"} <= set(body)
    assert call(vault_server, "GET", "secret/data/mlseal/a", t, version="1").json()["data"]["data"] == {"k": "v1"}
    assert call(vault_server, "GET", "secret/data/mlseal/a", t, version="3").status_code == 404
    meta = call(vault_server, "GET", "secret/metadata/mlseal/a", t).json()["data"]
    assert meta["current_version"] == 2 and set(meta["versions"]) == {"1", "2"}
    assert call(vault_server, "POST", "secret/delete/mlseal/a", t, {"versions": [1]}).status_code == 204
    r = call(vault_server, "GET", "secret/data/mlseal/a", t, version="1")
    assert r.status_code == 404 and r.json()["data"]["metadata"]["deletion_time"]


def test_token_ttl_renewal_and_max_ttl(vault_server: FakeVault) -> None:
    r = call(vault_server, "POST", "auth/token/create", vault_server.root_token,
             {"policies": ["p"], "ttl": "60s", "explicit_max_ttl": "100s"})
    auth = r.json()["auth"]
    assert auth["lease_duration"] == 60 and auth["renewable"] is True and auth["policies"] == ["default", "p"]
    tok = auth["client_token"]
    vault_server.advance(30)
    data = call(vault_server, "GET", "auth/token/lookup-self", tok).json()["data"]
    assert 29 <= data["ttl"] <= 30 and data["accessor"] == auth["accessor"]
    r = call(vault_server, "POST", "auth/token/renew-self", tok, {"increment": "60s"})
    assert r.json()["auth"]["lease_duration"] == 60
    vault_server.advance(50)
    r = call(vault_server, "POST", "auth/token/renew-self", tok, {"increment": "60s"})
    assert r.json()["auth"]["lease_duration"] == 20 and r.json()["warnings"]  # capped at max TTL
    vault_server.advance(21)
    assert call(vault_server, "GET", "auth/token/lookup-self", tok).status_code == 403
    r = call(vault_server, "POST", "auth/token/create", vault_server.root_token, {"renewable": False, "ttl": "1h"})
    r = call(vault_server, "POST", "auth/token/renew-self", r.json()["auth"]["client_token"])
    assert (r.status_code, r.json()["errors"]) == (400, ["lease is not renewable"])


def test_policy_matching_follows_vault_priority() -> None:
    rules = parse_policy('''
        # comment
        path "secret/data/*" { capabilities = ["read"] }
        path "secret/data/mlseal/*" { capabilities = ["read", "update"] }
        path "secret/data/mlseal/locked" { capabilities = ["deny"] }
        path "transit/keys/+/rotate" { capabilities = ["update"] }
    ''')
    assert capabilities(rules, "secret/data/other") == {"read"}
    assert capabilities(rules, "secret/data/mlseal/x") == {"read", "update"}
    assert capabilities(rules, "secret/data/mlseal/locked") == {"deny"}
    assert capabilities(rules, "transit/keys/k/rotate") == {"update"}
    assert capabilities(rules, "transit/keys/k/config") == {"deny"}
    assert capabilities(rules, "sys/mounts") == {"deny"}
    with pytest.raises(Exception, match="failed to parse policy"):
        parse_policy('path "x" { capabilities = ["fly"] }')


def test_transit_sign_verify_datakey_export(vault_server: FakeVault) -> None:
    t = vault_server.root_token
    call(vault_server, "POST", "transit/keys/s", t, {"type": "ecdsa-p256"})
    call(vault_server, "POST", "transit/keys/d", t, {"type": "aes256-gcm96"})
    info = call(vault_server, "GET", "transit/keys/s", t).json()["data"]
    assert info["type"] == "ecdsa-p256" and info["latest_version"] == 1 and info["supports_signing"] is True
    pub = serialization.load_pem_public_key(info["keys"]["1"]["public_key"].encode())
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    inp = base64.b64encode(b"msg").decode()
    sig = call(vault_server, "POST", "transit/sign/s", t, {"input": inp, "marshaling_algorithm": "asn1"}).json()
    assert sig["data"]["signature"].startswith("vault:v1:") and sig["data"]["key_version"] == 1
    pub.verify(base64.b64decode(sig["data"]["signature"].split(":")[2]), b"msg", ec.ECDSA(hashes.SHA256()))
    ok = call(vault_server, "POST", "transit/verify/s", t, {"input": inp, "signature": sig["data"]["signature"]})
    assert ok.json()["data"]["valid"] is True
    bad = call(vault_server, "POST", "transit/verify/s", t, {"input": base64.b64encode(b"other").decode(),
                                                              "signature": sig["data"]["signature"]})
    assert bad.json()["data"]["valid"] is False
    jws = call(vault_server, "POST", "transit/sign/s/sha2-256", t, {"input": inp, "marshaling_algorithm": "jws"})
    jws_sig = jws.json()["data"]["signature"]
    assert call(vault_server, "POST", "transit/verify/s", t,
                {"input": inp, "signature": jws_sig, "marshaling_algorithm": "jws"}).json()["data"]["valid"]
    r = call(vault_server, "POST", "transit/sign/d", t, {"input": inp})
    assert r.status_code == 400 and "does not support signing" in r.json()["errors"][0]
    dk = call(vault_server, "POST", "transit/datakey/plaintext/d", t, {"bits": 256}).json()["data"]
    assert len(base64.b64decode(dk["plaintext"])) == 32 and dk["ciphertext"].startswith("vault:v1:")
    assert "plaintext" not in call(vault_server, "POST", "transit/datakey/wrapped/d", t).json()["data"]
    back = call(vault_server, "POST", "transit/decrypt/d", t, {"ciphertext": dk["ciphertext"]}).json()["data"]
    assert back["plaintext"] == dk["plaintext"]
    r = call(vault_server, "GET", "transit/export/signing-key/s", t)
    assert r.status_code == 400 and r.json()["errors"] == ["key is not exportable"]
    r = call(vault_server, "GET", "transit/export/public-key/s", t)
    assert r.status_code == 200 and "BEGIN PUBLIC KEY" in r.json()["data"]["keys"]["1"]
    call(vault_server, "POST", "transit/keys/s/rotate", t)
    assert call(vault_server, "GET", "transit/keys/s", t).json()["data"]["latest_version"] == 2


def test_tls_variant(vault_tls_server: FakeVault) -> None:
    assert vault_tls_server.addr.startswith("https://") and vault_tls_server.ca_cert_path is not None
    assert call(vault_tls_server, "GET", "sys/health").status_code == 200
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{vault_tls_server.addr}/v1/sys/health", timeout=5)


def test_setup_shortcuts_drive_the_same_state(vault_server: FakeVault) -> None:
    vault_server.write_policy("p", 'path "secret/data/mlseal/*" { capabilities = ["read"] }')
    vault_server.put_kv("mlseal/a", {"k": "v"})
    vault_server.create_transit_key("s")
    tok = vault_server.create_token(["p"], ttl="10m")
    assert call(vault_server, "GET", "secret/data/mlseal/a", tok).json()["data"]["data"] == {"k": "v"}
    assert call(vault_server, "GET", "secret/data/other", tok).status_code == 403
    role_id, secret_id = vault_server.approle_creds("r", ["p"])
    r = call(vault_server, "POST", "auth/approle/login", json={"role_id": role_id, "secret_id": secret_id})
    assert r.json()["auth"]["policies"] == ["default", "p"]
    assert call(vault_server, "GET", "transit/keys/s", vault_server.root_token).json()["data"]["type"] == "ecdsa-p256"
