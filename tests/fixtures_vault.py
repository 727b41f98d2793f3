"""Pytest fixtures for the vault area (loaded by conftest.py).

- ``vault_server``: a fresh `tests.vault_server.FakeVault` over plain HTTP on 127.0.0.1
  (a random port) with ``.addr``, ``.root_token`` and test controls (``seal``,
  ``inject``, ``advance``, ``refuse_renewal``, ``standby``, ``k8s_jwt``).
- ``vault_tls_server``: the same over HTTPS with a CA it generates (``.ca_cert_path``).
- ``vault``: a `VaultHarness` — admin operations through Vault's own HTTP API (tokens
  with policies and TTLs, policies, KV writes, Transit keys, AppRole credentials). It
  drives a real Vault when ``VAULT_ADDR`` and ``VAULT_TOKEN`` are set (tests marked
  ``vault_real`` then run against it unchanged), else a fresh fake.

Every secret value a harness creates (tokens, AppRole secret ids, KV values) is
remembered in ``harness.secret_values`` so tests can assert none of them leaked.
"""

from __future__ import annotations

import logging
import os
import secrets
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import hvac
import pytest

from tests.vault_server import FakeVault

REPO = Path(__file__).resolve().parent.parent
POLICY_DIR = REPO / "infra" / "vault" / "policies"

#: every secret value any vault test created, for the suite-wide leak scan
ALL_SECRET_VALUES: set[str] = set()


def real_vault_env() -> tuple[str, str] | None:
    addr, token = os.environ.get("VAULT_ADDR"), os.environ.get("VAULT_TOKEN")
    return (addr, token) if addr and token else None


class VaultHarness:
    """Sets up Vault state the way an operator would: only through the HTTP API."""

    def __init__(self, addr: str, root_token: str, *, ca_cert_path: str | Path | None = None,
                 fake: FakeVault | None = None, namespace: str | None = None) -> None:
        self.addr = addr
        self.root_token = root_token
        self.ca_cert_path = Path(ca_cert_path) if ca_cert_path else None
        self.fake = fake
        self.namespace = namespace
        self.real = fake is None
        self.run_id = uuid.uuid4().hex[:8]
        self.secret_values: set[str] = set()
        self.admin = hvac.Client(url=addr, token=root_token, verify=str(ca_cert_path) if ca_cert_path else True,
                                 namespace=namespace)
        self._remember(root_token)

    def _remember(self, value: str) -> str:
        self.secret_values.add(value)
        ALL_SECRET_VALUES.add(value)
        return value

    # -- environment for mlseal ---------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        env = {"VAULT_ADDR": self.addr}
        if self.ca_cert_path:
            env["VAULT_CACERT"] = str(self.ca_cert_path)
        if self.namespace:
            env["VAULT_NAMESPACE"] = self.namespace
        env.update(extra)
        return env

    def token_env(self, policies: list[str], *, ttl: str = "1h", renewable: bool = True) -> dict[str, str]:
        token, _ = self.create_token(policies, ttl=ttl, renewable=renewable)
        return self.env(VAULT_TOKEN=token)

    # -- admin operations -------------------------------------------------------------------

    def create_token(self, policies: list[str], *, ttl: str = "1h", renewable: bool = True,
                     explicit_max_ttl: str | None = None) -> tuple[str, str]:
        params: dict[str, Any] = {"policies": policies, "ttl": ttl, "renewable": renewable}
        if explicit_max_ttl:
            params["explicit_max_ttl"] = explicit_max_ttl
        resp = self.admin.auth.token.create(**params)
        return self._remember(resp["auth"]["client_token"]), resp["auth"]["accessor"]

    def write_policy(self, name: str, text: str) -> None:
        self.admin.sys.create_or_update_acl_policy(name=name, policy=text)

    def install_policies(self) -> None:
        """Load infra/vault/policies/*.hcl exactly as the bootstrap script does."""
        for f in sorted(POLICY_DIR.glob("*.hcl")):
            self.write_policy(f.stem, f.read_text())

    def ensure_mounts(self, kv: str = "secret", transit: str = "transit") -> None:
        for path, kind, options in ((kv, "kv", {"version": "2"}), (transit, "transit", None)):
            try:
                self.admin.sys.enable_secrets_engine(backend_type=kind, path=path, options=options)
            except hvac.exceptions.InvalidRequest as exc:
                if "already in use" not in str(exc):
                    raise

    def put(self, path: str, data: Mapping[str, str], *, mount: str = "secret") -> int:
        for v in data.values():
            self._remember(v)
        resp = self.admin.secrets.kv.v2.create_or_update_secret(path=path, secret=dict(data), mount_point=mount)
        return int(resp["data"]["version"])

    def delete_versions(self, path: str, versions: list[int], *, mount: str = "secret") -> None:
        self.admin.secrets.kv.v2.delete_secret_versions(path=path, versions=versions, mount_point=mount)

    def path(self, name: str) -> str:
        """A KV path under mlseal/ unique to this test run (real Vaults are shared)."""
        return f"mlseal/test-{self.run_id}/{name}"

    def transit_key(self, name: str, key_type: str = "ecdsa-p256", *, mount: str = "transit",
                    exportable: bool = False) -> None:
        self.admin.secrets.transit.create_key(name=name, key_type=key_type, exportable=exportable, mount_point=mount)

    def rotate(self, name: str, *, mount: str = "transit") -> None:
        self.admin.secrets.transit.rotate_key(name=name, mount_point=mount)

    def approle(self, role: str, policies: list[str], *, ttl: str = "1h", mount: str = "approle") -> dict[str, str]:
        try:
            self.admin.sys.enable_auth_method(method_type="approle", path=mount)
        except hvac.exceptions.InvalidRequest as exc:
            if "already in use" not in str(exc):
                raise
        self.admin.auth.approle.create_or_update_approle(role_name=role, token_policies=policies, token_ttl=ttl,
                                                         mount_point=mount)
        role_id = self.admin.auth.approle.read_role_id(role_name=role, mount_point=mount)["data"]["role_id"]
        secret_id = self.admin.auth.approle.generate_secret_id(role_name=role, mount_point=mount)["data"]["secret_id"]
        self._remember(secret_id)
        return self.env(VAULT_ROLE_ID=role_id, VAULT_SECRET_ID=secret_id, MLSEAL_VAULT_APPROLE_MOUNT=mount)

    def assert_clean(self, *texts: str) -> None:
        """None of the secret values this harness created appears in ``texts``."""
        for text in texts:
            for value in self.secret_values:
                assert value not in text, "a secret value leaked into output"


def _harness_for(fake: FakeVault) -> VaultHarness:
    return VaultHarness(fake.addr, fake.root_token, ca_cert_path=fake.ca_cert_path, fake=fake)


@pytest.fixture
def vault_server() -> Iterator[FakeVault]:
    with FakeVault() as server:
        yield server


@pytest.fixture
def vault_tls_server(tmp_path: Path) -> Iterator[FakeVault]:
    with FakeVault(tls=True, workdir=tmp_path / "vault-tls") as server:
        yield server


@pytest.fixture
def vault_fake(vault_server: FakeVault) -> VaultHarness:
    """A harness over the fake (for fault tests that need the fake's controls)."""
    h = _harness_for(vault_server)
    h.ensure_mounts()
    h.install_policies()
    return h


#: the stage kinds, each signing with its own Transit key mlseal-signing-<stage>
STAGE_KINDS = ("ingest", "process", "train", "evaluate", "deploy")


def _transit_keys(h: VaultHarness) -> None:
    h.transit_key("mlseal-signing", "ecdsa-p256")
    for kind in STAGE_KINDS:
        h.transit_key(f"mlseal-signing-{kind}", "ecdsa-p256")
    h.transit_key("mlseal-data", "aes256-gcm96")
    h.transit_key("mlseal-checkpoint", "ecdsa-p256")  # the witness's checkpoint key


@pytest.fixture
def vault(request: pytest.FixtureRequest) -> Iterator[VaultHarness]:
    """Real Vault if VAULT_ADDR + VAULT_TOKEN are set, else a fresh fake; policies loaded."""
    real = real_vault_env()
    if real is not None:
        h = VaultHarness(real[0], real[1], ca_cert_path=os.environ.get("VAULT_CACERT"),
                         namespace=os.environ.get("VAULT_NAMESPACE"))
        h.ensure_mounts()
        h.install_policies()
        _transit_keys(h)
        yield h
        return
    with FakeVault() as server:
        h = _harness_for(server)
        h.ensure_mounts()
        h.install_policies()
        _transit_keys(h)
        yield h


@pytest.fixture
def secrets_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Capture every mlseal.secrets log record (DEBUG and up) for leak scans."""
    caplog.set_level(logging.DEBUG, logger="mlseal")
    return caplog


@pytest.fixture
def vault_leak_guard(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """After the test: no secret value any vault test created appears in mlseal's logs."""
    caplog.set_level(logging.DEBUG, logger="mlseal")
    yield caplog
    text = caplog.text
    leaked = [v for v in ALL_SECRET_VALUES if v in text]
    assert not leaked, f"{len(leaked)} secret value(s) leaked into the log"


def random_value(prefix: str = "s3cr3t") -> str:
    value = f"{prefix}-{secrets.token_hex(12)}"
    ALL_SECRET_VALUES.add(value)
    return value
