"""infra/vault: per-stage roles, policies and keys, end to end through bootstrap.sh.

Against tests/vault_server.FakeVault (Kubernetes auth, Transit, KV, HCL policies) for
what it implements; the database-engine part against a small recorder of the HTTP calls
(the fake has no database engine), checking what bootstrap.sh sends.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import pytest
from cryptography.hazmat.primitives import serialization

from tests.vault_server import FakeVault

REPO = Path(__file__).resolve().parent.parent
VAULT = REPO / "infra" / "vault"
BOOTSTRAP = VAULT / "bootstrap.sh"
STAGES = ["ingest", "process", "train", "evaluate", "deploy"]
COMPONENTS = {"ingest": ["ingest"], "process": ["anonymize", "encrypt", "validate"], "train": ["train"],
              "evaluate": ["evaluate"], "deploy": ["deploy"]}
RUN_ACCOUNTS = [("mlseal-pipeline", "kubeflow"), ("default-editor", "kubeflow-user-example-com")]


def _tools() -> None:
    for tool in ("bash", "curl", "jq"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: CI must install it (apt-get install {tool})")


def _run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    _tools()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "MLSEAL_"))}
    return subprocess.run(["bash", str(BOOTSTRAP)], env={**base, **env}, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.fixture(scope="module")
def bootstrapped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeVault, Path]]:
    tmp = tmp_path_factory.mktemp("vault")
    with FakeVault(tls=True, workdir=tmp / "v") as fake:
        env = {"VAULT_ADDR": fake.addr, "VAULT_TOKEN": fake.root_token, "VAULT_CACERT": str(fake.ca_cert_path),
               "MLSEAL_K8S_HOST": "https://kubernetes.default.svc", "MLSEAL_PUBLIC_KEYS_OUT": str(tmp / "keys")}
        for _ in range(2):  # idempotent
            r = _run(env)
            assert r.returncode == 0, r.stderr
            assert fake.root_token not in r.stdout + r.stderr
        yield fake, tmp / "keys"


def _login(fake: FakeVault, role: str, account: str, namespace: str) -> hvac.Client:
    c = hvac.Client(url=fake.addr, verify=str(fake.ca_cert_path))
    c.auth.kubernetes.login(role=role, jwt=fake.k8s_jwt(account, namespace))
    return c


def _admin(fake: FakeVault) -> hvac.Client:
    return hvac.Client(url=fake.addr, token=fake.root_token, verify=str(fake.ca_cert_path))


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_signs_with_its_own_key_only(bootstrapped: tuple[FakeVault, Path], stage: str) -> None:
    fake, _ = bootstrapped
    for account, namespace in RUN_ACCOUNTS:
        c = _login(fake, f"mlseal-{stage}", account, namespace)
        sig = c.secrets.transit.sign_data(name=f"mlseal-signing-{stage}", hash_input="aGk=",
                                          hash_algorithm="sha2-256", marshaling_algorithm="asn1")
        assert sig["data"]["signature"].startswith("vault:v1:")
        for other in STAGES:
            if other == stage:
                continue
            with pytest.raises(hvac.exceptions.Forbidden):
                c.secrets.transit.sign_data(name=f"mlseal-signing-{other}", hash_input="aGk=",
                                            hash_algorithm="sha2-256", marshaling_algorithm="asn1")
        with pytest.raises(hvac.exceptions.Forbidden):
            c.secrets.transit.sign_data(name="mlseal-signing", hash_input="aGk=")  # the legacy key


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_reads_only_its_components_secrets(bootstrapped: tuple[FakeVault, Path], stage: str) -> None:
    fake, _ = bootstrapped
    admin = _admin(fake)
    for comps in COMPONENTS.values():
        for comp in comps:
            admin.secrets.kv.v2.create_or_update_secret(path=f"mlseal/{comp}/db", secret={"v": comp})
    c = _login(fake, f"mlseal-{stage}", "mlseal-pipeline", "kubeflow")
    for other, comps in COMPONENTS.items():
        for comp in comps:
            if other == stage:
                got = c.secrets.kv.v2.read_secret_version(path=f"mlseal/{comp}/db", raise_on_deleted_version=True)
                assert got["data"]["data"] == {"v": comp}
            else:
                with pytest.raises(hvac.exceptions.Forbidden):
                    c.secrets.kv.v2.read_secret_version(path=f"mlseal/{comp}/db", raise_on_deleted_version=True)
    with pytest.raises(hvac.exceptions.Forbidden):
        c.secrets.kv.v2.create_or_update_secret(path=f"mlseal/{COMPONENTS[stage][0]}/db", secret={"v": "x"})
    datakey_allowed = stage in ("process", "train", "evaluate")
    try:
        c.secrets.transit.generate_data_key(name="mlseal-data", key_type="plaintext")
        assert datakey_allowed
    except hvac.exceptions.Forbidden:
        assert not datakey_allowed


def test_stage_roles_refuse_other_service_accounts(bootstrapped: tuple[FakeVault, Path]) -> None:
    fake, _ = bootstrapped
    for account, namespace in [("mlseal-webhook", "mlseal-system"), ("default", "kubeflow"),
                               ("mlseal-ledger-credentials", "kubeflow"), ("mlseal-pipeline", "other")]:
        with pytest.raises(hvac.exceptions.Forbidden):
            _login(fake, "mlseal-train", account, namespace)


def test_ledger_credentials_role_reads_writer_logins_only(bootstrapped: tuple[FakeVault, Path]) -> None:
    fake, _ = bootstrapped
    c = _login(fake, "mlseal-ledger-credentials", "mlseal-ledger-credentials", "kubeflow")
    caps = c.sys.get_capabilities(paths=["database/creds/mlseal-ledger-writer", "database/creds/mlseal-ledger-reader",
                                         "transit/sign/mlseal-signing-train", "secret/data/mlseal/train/db"])
    caps = caps.get("data", caps)
    assert caps["database/creds/mlseal-ledger-writer"] == ["read"]
    for p in ("database/creds/mlseal-ledger-reader", "transit/sign/mlseal-signing-train",
              "secret/data/mlseal/train/db"):
        assert caps[p] == ["deny"], p


def test_public_keys_are_exported_for_the_trust_file(bootstrapped: tuple[FakeVault, Path]) -> None:
    fake, keys = bootstrapped
    admin = _admin(fake)
    for stage in STAGES:
        info = admin.secrets.transit.read_key(name=f"mlseal-signing-{stage}")["data"]
        assert info["type"] == "ecdsa-p256" and info["exportable"] is False
        want = info["keys"][str(info["latest_version"])]["public_key"]
        got = (keys / f"{stage}.pub.pem").read_bytes()
        assert got.strip() == want.strip().encode()
        serialization.load_pem_public_key(got)


def test_roles_and_policies_are_least_privilege_as_written() -> None:
    roles = json.loads((VAULT / "kubernetes-roles.json").read_text())
    assert all(r["audience"] == "vault" for r in roles.values())
    for stage in STAGES:
        text = (VAULT / "policies" / f"mlseal-{stage}.hcl").read_text()
        assert re.findall(r'path "transit/sign/([^"]+)"', text) == [f"mlseal-signing-{stage}"]
        kv = re.findall(r'path "secret/data/mlseal/([^"/]+)/\*"', text)
        assert kv == COMPONENTS[stage]
        assert "*" not in "".join(re.findall(r'path "(transit/(?:sign|keys|verify)/[^"]*)"', text))
        assert roles[f"mlseal-{stage}"]["token_policies"] == [f"mlseal-{stage}"]


# --- database engine ------------------------------------------------------------------------

class _Recorder(BaseHTTPRequestHandler):
    calls: list[tuple[str, str, Any]]

    def _answer(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        path = self.path.removeprefix("/v1/")
        self.calls.append((self.command, path, json.loads(body) if body.strip() else None))
        if self.command == "GET" and path.startswith("transit/keys/"):
            name = path.split("/")[2]
            out = {"data": {"type": "aes256-gcm96" if name == "mlseal-data" else "ecdsa-p256", "exportable": False}}
            data = json.dumps(out).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_response(204)
        self.end_headers()

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *args: object) -> None:
        pass


def test_database_engine_is_configured_with_tls_and_the_shipped_roles() -> None:
    calls: list[tuple[str, str, Any]] = []
    handler = type("R", (_Recorder,), {"calls": calls})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    password = "Adm1n-pw-" + os.urandom(6).hex()
    try:
        env = {"VAULT_ADDR": f"http://127.0.0.1:{server.server_port}", "VAULT_TOKEN": "root-token-x",
               "MLSEAL_LEDGER_PG_HOST": "mlseal-ledger.mlseal-system.svc", "MLSEAL_LEDGER_PG_ADMIN_USER": "postgres",
               "MLSEAL_LEDGER_PG_ADMIN_PASSWORD": password}
        r = _run(env)
    finally:
        server.shutdown()
    assert r.returncode == 0, r.stderr
    assert password not in r.stdout + r.stderr
    by_path = {p: b for m, p, b in calls if m in ("POST", "PUT")}
    assert by_path["sys/mounts/database"]["type"] == "database"
    cfg = by_path["database/config/mlseal-ledger"]
    assert cfg["password"] == password and cfg["username"] == "postgres"
    assert cfg["connection_url"] == (
        "postgresql://{{username}}:{{password}}@mlseal-ledger.mlseal-system.svc:5432/mlseal"
        "?sslmode=verify-full&sslrootcert=/vault/userconfig/mlseal-ledger-ca/ca.crt")
    assert password not in cfg["connection_url"]
    assert cfg["password_authentication"] == "scram-sha-256"
    shipped = json.loads((VAULT / "database-roles.json").read_text())
    assert sorted(cfg["allowed_roles"]) == sorted(shipped) == [
        "mlseal-ledger-reader", "mlseal-ledger-witness", "mlseal-ledger-writer"]
    for name, spec in shipped.items():
        assert by_path[f"database/roles/{name}"] == spec
    # the credential reaches curl through stdin and jq through its environment, never argv
    script = BOOTSTRAP.read_text()
    assert not re.search(r"--arg\w* \w+ \"\$MLSEAL_LEDGER_PG_ADMIN_PASSWORD\"", script)
    assert "env.MLSEAL_LEDGER_PG_ADMIN_PASSWORD" in script


def test_only_the_witness_signs_checkpoints(bootstrapped: tuple[FakeVault, Path]) -> None:
    fake, keys = bootstrapped
    admin = _admin(fake)
    info = admin.secrets.transit.read_key(name="mlseal-checkpoint")["data"]
    assert info["type"] == "ecdsa-p256" and info["exportable"] is False
    want = info["keys"][str(info["latest_version"])]["public_key"]
    assert (keys / "checkpoint.pub.pem").read_bytes().strip() == want.strip().encode()
    w = _login(fake, "mlseal-witness", "mlseal-witness", "mlseal-system")
    sig = w.secrets.transit.sign_data(name="mlseal-checkpoint", hash_input="aGk=", hash_algorithm="sha2-256",
                                      marshaling_algorithm="asn1")
    assert sig["data"]["signature"].startswith("vault:v1:")
    for stage in STAGES:  # the witness signs no record, and no stage signs a checkpoint
        with pytest.raises(hvac.exceptions.Forbidden):
            w.secrets.transit.sign_data(name=f"mlseal-signing-{stage}", hash_input="aGk=")
        c = _login(fake, f"mlseal-{stage}", "mlseal-pipeline", "kubeflow")
        with pytest.raises(hvac.exceptions.Forbidden):
            c.secrets.transit.sign_data(name="mlseal-checkpoint", hash_input="aGk=")
    with pytest.raises(hvac.exceptions.Forbidden):
        w.secrets.kv.v2.read_secret_version(path="mlseal/train/db", raise_on_deleted_version=True)
    for account, namespace in [("mlseal-webhook", "mlseal-system"), ("mlseal-pipeline", "kubeflow")]:
        with pytest.raises(hvac.exceptions.Forbidden):
            _login(fake, "mlseal-witness", account, namespace)
