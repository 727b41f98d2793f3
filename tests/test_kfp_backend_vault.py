"""Service-account tokens in harness pods, and the Vault test server's audience check.

Every pod gets the default token (audience: the API server); only pods labelled
``mlseal.dev/vault-token: "true"`` get the projected token of audience ``vault`` through
the PodDefault, and a Vault Kubernetes role with ``audience=vault`` accepts only that one.
"""

# no "from __future__ import annotations": the KFP SDK reads the component annotations

from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest
from kfp import compiler, dsl, kubernetes

from tests.kfp_backend import KUBERNETES_AUDIENCE, Cluster, ObjectStore, jwt_claims, moto_object_store, run_pipeline
from tests.vault_server import FakeVault

IMAGE = "python:3.11"


@pytest.fixture(scope="module")
def object_store() -> Iterator[ObjectStore]:
    """moto's S3 server on 127.0.0.1 for this module's runs."""
    with moto_object_store() as store:
        yield store


@pytest.fixture
def vault() -> Iterator[FakeVault]:
    with FakeVault() as fake:
        c = hvac.Client(url=fake.addr, token=fake.root_token)
        c.sys.enable_auth_method(method_type="kubernetes", path="kubernetes")
        c.sys.create_or_update_acl_policy(name="reader", policy='path "secret/data/app/*" { capabilities = ["read"] }')
        c.secrets.kv.v2.create_or_update_secret(path="app/db", secret={"password": "kv-value"}, mount_point="secret")
        c.auth.kubernetes.create_role(name="with-audience", bound_service_account_names=["mlseal-pipeline"],
                                      bound_service_account_namespaces=["kubeflow"], policies=["reader"],
                                      audience="vault")
        c.auth.kubernetes.create_role(name="no-audience", bound_service_account_names=["mlseal-pipeline"],
                                      bound_service_account_namespaces=["kubeflow"], policies=["reader"])
        yield fake


def _login(fake: FakeVault, role: str, jwt: str) -> str:
    c = hvac.Client(url=fake.addr)
    return str(c.auth.kubernetes.login(role=role, jwt=jwt)["auth"]["client_token"])


def test_role_audience_is_enforced(vault: FakeVault) -> None:
    sa = ("mlseal-pipeline", "kubeflow")
    assert _login(vault, "with-audience", vault.k8s_jwt(*sa, audience="vault"))
    assert _login(vault, "with-audience", vault.k8s_jwt(*sa, audience=[KUBERNETES_AUDIENCE, "vault"]))
    wrong: str | list[str]
    for wrong in (KUBERNETES_AUDIENCE, "vault-other", []):
        with pytest.raises(hvac.exceptions.Forbidden, match=r"invalid audience \(aud\) claim"):
            _login(vault, "with-audience", vault.k8s_jwt(*sa, audience=wrong))
    # a role without an audience does not check it (real Vault leaves that to TokenReview)
    assert _login(vault, "no-audience", vault.k8s_jwt(*sa, audience=KUBERNETES_AUDIENCE))
    assert jwt_claims(vault.k8s_jwt(*sa))["aud"] == ["vault"]  # the default: what mlseal's roles bind


@dsl.component(base_image=IMAGE)
def vault_login(role: str, token_file: str) -> str:
    import os

    import hvac

    if not os.path.exists(token_file):
        return "no token at " + token_file
    client = hvac.Client(url=os.environ["VAULT_ADDR"])
    try:
        with open(token_file) as f:
            client.auth.kubernetes.login(role=role, jwt=f.read())
    except hvac.exceptions.Forbidden as exc:
        return "refused: " + str(exc).split(",")[0]
    secret = client.secrets.kv.v2.read_secret_version(path="app/db", mount_point="secret",
                                                      raise_on_deleted_version=True)
    return "read " + str(len(secret["data"]["data"]["password"])) + " chars"


def tokens_pipeline(vault_addr: str) -> dsl.graph_component.GraphComponent:
    @dsl.pipeline(name="vault-tokens")
    def pipeline() -> None:
        projected = vault_login(role="with-audience", token_file="/var/run/secrets/vault/token")
        default = vault_login(role="with-audience", token_file="/var/run/secrets/kubernetes.io/serviceaccount/token")
        unlabelled = vault_login(role="with-audience", token_file="/var/run/secrets/vault/token")
        for t in (projected, default, unlabelled):
            t.set_env_variable("VAULT_ADDR", vault_addr)
            t.set_caching_options(False)
        for t in (projected, default):
            kubernetes.add_pod_label(t, "mlseal.dev/vault-token", "true")

    return pipeline


def test_only_the_projected_vault_token_logs_in(vault: FakeVault, object_store: ObjectStore,
                                                tmp_path: Path) -> None:
    ir = tmp_path / "p.yaml"
    compiler.Compiler().compile(tokens_pipeline(vault.addr), str(ir))
    cluster = Cluster(object_store=object_store, service_account="mlseal-pipeline", issuer=vault.k8s_jwt)
    result = run_pipeline(ir.read_text(), {}, cluster)
    assert result.state == "SUCCEEDED", result.logs()
    out = {n: t.outputs["Output"] for n, t in result.tasks.items()}
    assert out["vault-login"] == "read 8 chars"
    assert out["vault-login-2"].startswith("refused: invalid audience (aud) claim")
    assert out["vault-login-3"] == "no token at /var/run/secrets/vault/token"
    assert "kv-value" not in result.logs()
