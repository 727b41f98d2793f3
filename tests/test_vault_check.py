"""`mlseal vault check` and infra/vault/bootstrap.sh, end to end over HTTP(S)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mlseal.secrets import open_secret_source
from mlseal.secrets.check import run_checks
from tests.fixtures_vault import REPO, VaultHarness, random_value
from tests.vault_server import FakeVault

pytestmark = pytest.mark.usefixtures("vault_leak_guard")

BOOTSTRAP = REPO / "infra" / "vault" / "bootstrap.sh"


def cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "MLSEAL_VAULT"))}
    return subprocess.run([sys.executable, "-m", "mlseal.cli", *args], env={**clean, **env}, cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def by_name(checks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(c["name"]): c for c in checks}


def test_check_passes_for_least_privileged_pipeline_token(vault: VaultHarness, tmp_path: Path) -> None:
    path = vault.path("db")
    vault.put(path, {"password": random_value()})
    env = vault.token_env(["mlseal-pipeline"])
    r = cli(["vault", "check", "--json", "--path", path], env, tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["ok"] is True and out["source"] == "vault"
    names = [c["name"] for c in out["checks"]]
    assert names[:4] == ["source", "health", "auth", "kv mount"]
    assert "policy" in names and f"secret {path}" in names
    assert "version 1" in by_name(out["checks"])[f"secret {path}"]["detail"]
    for line in r.stderr.splitlines()[:-1]:
        assert line.startswith(("ok ", "failed "))
    vault.assert_clean(r.stdout, r.stderr)


def test_check_flags_an_over_privileged_token(vault: VaultHarness, tmp_path: Path) -> None:
    r = cli(["vault", "check", "--json"], vault.env(VAULT_TOKEN=vault.root_token), tmp_path)
    assert r.returncode == 2
    checks = by_name(json.loads(r.stdout)["checks"])
    assert checks["auth"]["ok"] is True
    assert checks["policy"]["ok"] is False
    assert "not least privilege" in str(checks["policy"]["detail"])
    assert "failed  policy" in r.stderr
    vault.assert_clean(r.stdout, r.stderr)


def test_check_reports_sealed_and_down(vault_fake: VaultHarness, tmp_path: Path) -> None:
    fake = vault_fake.fake
    assert fake is not None
    env = vault_fake.token_env(["mlseal-pipeline"])
    fake.seal()
    r = cli(["vault", "check", "--json"], env, tmp_path)
    assert r.returncode == 2
    checks = by_name(json.loads(r.stdout)["checks"])
    assert checks["health"]["ok"] is False and "sealed" in str(checks["health"]["detail"])
    assert checks["auth"]["ok"] is False and "sealed" in str(checks["auth"]["detail"])
    assert "signing key" not in checks  # nothing after a failed login
    fake.unseal()
    fake.standby = True
    r = cli(["vault", "check", "--json"], env, tmp_path)
    assert by_name(json.loads(r.stdout)["checks"])["health"]["detail"].startswith(fake.addr)
    assert "standby" in r.stderr
    fake.stop()
    r = cli(["vault", "check"], env, tmp_path)
    assert r.returncode == 2 and "failed  health" in r.stderr and "cannot reach Vault" in r.stderr


def test_check_wrong_kv_version_and_exportable_key(vault_fake: VaultHarness, tmp_path: Path) -> None:
    fake = vault_fake.fake
    assert fake is not None
    vault_fake.admin.sys.enable_secrets_engine(backend_type="kv", path="kv1", options={"version": "1"})
    vault_fake.transit_key("exportable-signing", exportable=True)
    vault_fake.transit_key("mlseal-data", "aes256-gcm96")
    env = vault_fake.env(VAULT_TOKEN=vault_fake.root_token, MLSEAL_VAULT_KV_MOUNT="kv1")
    r = cli(["vault", "check", "--json", "--signing-key", "exportable-signing"], env, tmp_path)
    checks = by_name(json.loads(r.stdout)["checks"])
    assert checks["kv mount"]["ok"] is False and "expected kv v2" in str(checks["kv mount"]["detail"])
    assert checks["signing key config"]["ok"] is False
    assert "exportable" in str(checks["signing key config"]["detail"])


def test_check_dev_store(tmp_path: Path) -> None:
    r = cli(["vault", "check", "--json", "--dev-dir", str(tmp_path / "s")], {}, tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["source"] == "dev"
    assert "dev secrets, not Vault" in out["checks"][0]["detail"]
    assert "dev secrets, not Vault" in r.stderr
    (tmp_path / "s" / "transit" / "mlseal-signing.pem").chmod(0o640)
    assert run_checks(open_secret_source(dev_dir=tmp_path / "s", env={}))
    checks = by_name([c.to_obj() for c in run_checks(open_secret_source(dev_dir=tmp_path / "s", env={}))])
    assert checks["store permissions"]["ok"] is False
    assert checks["signing key"]["ok"] is False and "0600" in str(checks["signing key"]["detail"])


def test_bootstrap_script_then_kubernetes_login_passes_check(tmp_path: Path) -> None:
    missing = [tool for tool in ("curl", "jq") if shutil.which(tool) is None]
    assert not missing, f"infra/vault/bootstrap.sh needs {' and '.join(missing)} (apt-get install curl jq)"
    with FakeVault(tls=True, workdir=tmp_path / "v") as fake:
        assert fake.ca_cert_path is not None
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("VAULT_")},
               "VAULT_ADDR": fake.addr, "VAULT_TOKEN": fake.root_token, "VAULT_CACERT": str(fake.ca_cert_path),
               "MLSEAL_K8S_HOST": "https://kubernetes.default.svc", "MLSEAL_APPROLE": "1"}
        for _ in range(2):  # idempotent
            r = subprocess.run(["bash", str(BOOTSTRAP)], env=env, capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
        assert fake.root_token not in r.stderr + r.stdout
        h = VaultHarness(fake.addr, fake.root_token, ca_cert_path=fake.ca_cert_path, fake=fake)
        h.put("mlseal/db", {"password": random_value()})
        jwt = tmp_path / "sa-token"
        jwt.write_text(fake.k8s_jwt("mlseal-pipeline", "kubeflow"))
        k8s_env = h.env(MLSEAL_VAULT_K8S_ROLE="mlseal-pipeline", MLSEAL_VAULT_K8S_JWT=str(jwt))
        r2 = cli(["vault", "check", "--json", "--path", "mlseal/db"], k8s_env, tmp_path)
        assert r2.returncode == 0, r2.stderr
        checks = by_name(json.loads(r2.stdout)["checks"])
        assert "kubernetes auth ok" in str(checks["auth"]["detail"])
        assert "mlseal-pipeline" in str(checks["auth"]["detail"])
        # the webhook's service account may verify but not read secrets or sign
        jwt.write_text(fake.k8s_jwt("mlseal-webhook", "mlseal-system"))
        web_env = h.env(MLSEAL_VAULT_K8S_ROLE="mlseal-webhook", MLSEAL_VAULT_K8S_JWT=str(jwt))
        r3 = cli(["vault", "check", "--json", "--path", "mlseal/db"], web_env, tmp_path)
        checks = by_name(json.loads(r3.stdout)["checks"])
        assert checks["secret mlseal/db"]["ok"] is False and "permission denied" in str(
            checks["secret mlseal/db"]["detail"])
        assert checks["signing key"]["ok"] is False
        assert checks["kv mount"]["ok"] is False  # no capability anywhere in secret/: mount not visible
