"""An mlseal cluster for the harness: Vault roles per stage, a PostgreSQL ledger, trust.

Sets up what docs/kubeflow.md says an mlseal cluster has, only through the
services' own APIs:

- Vault (the test server, `tests.vault_server.FakeVault`): Transit keys
  ``mlseal-signing-<stage>`` (ecdsa-p256) and ``mlseal-data``; per stage the policy and the
  Kubernetes auth role ``mlseal-<stage>`` (``audience: vault``) that infra/vault ships;
- PostgreSQL: the ledger's tables in the given schema and a login role for writers whose
  name and password go into the Secret ``mlseal-ledger-writer`` (PGUSER/PGPASSWORD);
- ConfigMap ``mlseal-trust``: ``trust.yaml`` naming one signer per stage (restricted to its
  stage) and the stages' public keys beside it.

    with mlseal_cluster(store, fake_vault, pg_url) as m:
        ir = compile_ir(pipeline_using(m.services))       # wire(task, m.services)
        result = run_pipeline(ir, {}, m.cluster)
"""

from __future__ import annotations

import json
import secrets
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import yaml

from tests.kfp_backend.cluster import Cluster, ObjectStore

STAGES = ("ingest", "process", "train", "evaluate", "deploy")
SERVICE_ACCOUNT = "mlseal-pipeline"
NAMESPACE = "kubeflow"
IMAGE = "registry.example.org/mlseal/components@sha256:" + "ab" * 32


REPO = Path(__file__).resolve().parents[2]
POLICY_DIR = REPO / "infra" / "vault" / "policies"
ROLES = REPO / "infra" / "vault" / "kubernetes-roles.json"


def stage_policy(stage: str) -> str:
    """What a stage's role may do: the policy infra/ ships (infra/vault/policies)."""
    return (POLICY_DIR / f"mlseal-{stage}.hcl").read_text()


@dataclass
class MlsealCluster:
    cluster: Cluster
    services: Any               # mlseal.kfp.Services
    ledger_url: str             # with the test's own credentials, to read the ledger back
    trust_text: str
    public_keys: dict[str, str]  # stage -> PEM
    writer_password: str
    vault: Any                  # the FakeVault
    issued_jwts: list[str]      # every service-account token a pod was given

    def credentials(self) -> set[str]:
        """Every credential in play: the writer's password, Vault tokens, pod JWTs."""
        return {self.writer_password, *self.vault.tokens, *self.issued_jwts}

    def trust(self, tmp_dir: Any) -> Any:
        """The trust file as mlseal loads it (written to `tmp_dir`)."""
        from mlseal.signing.trust import load_trust

        d = Path(tmp_dir)
        for stage, pem in self.public_keys.items():
            (d / f"{stage}.pub.pem").write_text(pem)
        (d / "trust.yaml").write_text(self.trust_text)
        return load_trust(d / "trust.yaml")


def _without_userinfo(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _vault(fake: Any) -> dict[str, str]:
    from mlseal.secrets import open_secret_source
    from mlseal.signing.keys import public_pem

    c = hvac.Client(url=fake.addr, token=fake.root_token)
    for kind, path, opts in (("transit", "transit", None),):
        try:
            c.sys.enable_secrets_engine(backend_type=kind, path=path, options=opts)
        except hvac.exceptions.InvalidRequest as exc:
            if "already in use" not in str(exc):
                raise
    try:
        c.sys.enable_auth_method(method_type="kubernetes", path="kubernetes")
    except hvac.exceptions.InvalidRequest as exc:
        if "already in use" not in str(exc):
            raise
    roles = json.loads(ROLES.read_text())
    c.secrets.transit.create_key(name="mlseal-data", key_type="aes256-gcm96")
    for stage in STAGES:
        c.secrets.transit.create_key(name=f"mlseal-signing-{stage}", key_type="ecdsa-p256")
        c.sys.create_or_update_acl_policy(name=f"mlseal-{stage}", policy=stage_policy(stage))
        # the role exactly as infra/vault/bootstrap.sh writes it
        c.write_data(f"auth/kubernetes/role/mlseal-{stage}", data=roles[f"mlseal-{stage}"])
    src = open_secret_source(None, env={"VAULT_ADDR": fake.addr, "VAULT_TOKEN": fake.root_token})
    return {s: public_pem(src.transit_signer(f"mlseal-signing-{s}").public_key()).decode() for s in STAGES}


@contextmanager
def mlseal_cluster(object_store: ObjectStore, fake_vault: Any, pg_url: str, *,
                   service_account: str = SERVICE_ACCOUNT, namespace: str = NAMESPACE) -> Iterator[MlsealCluster]:
    """`fake_vault`: a running FakeVault; `pg_url`: a PostgreSQL URL whose search_path is a
    fresh schema (tests.fixtures_ledger ``pg_url``); runs use `service_account` in
    `namespace` (single-user KFP: mlseal-pipeline in kubeflow; a profile: default-editor)."""
    import psycopg

    from mlseal.kfp import Services

    keys = _vault(fake_vault)
    trust_text = yaml.safe_dump({"signers": [
        {"name": s, "public_key": f"{s}.pub.pem", "stages": [s]} for s in STAGES]}, sort_keys=False)
    # the operator's `mlseal ledger init` (the shipped schema and group roles), then the login
    # Vault's database engine would create with the shipped creation statement
    from mlseal.ledger._postgres import init_schema

    init_schema(pg_url, display="the test ledger", writers=["mlseal_ledger_writer"], readers=["mlseal_ledger_reader"])
    writer, password = f"mlseal_writer_{uuid.uuid4().hex[:10]}", secrets.token_urlsafe(18)
    roles = json.loads((REPO / "infra" / "vault" / "database-roles.json").read_text())
    with psycopg.connect(pg_url, autocommit=True) as db:
        for statement in roles["mlseal-ledger-writer"]["creation_statements"]:
            db.execute(statement.replace("{{name}}", writer).replace("{{password}}", password)
                       .replace("{{expiration}}", "infinity"))
    issued: list[str] = []

    def issuer(service_account: str, namespace: str, **kw: Any) -> str:
        jwt: str = fake_vault.k8s_jwt(service_account, namespace, **kw)
        issued.append(jwt)
        return jwt

    cluster = Cluster(object_store=object_store, namespace=namespace, service_account=service_account,
                      issuer=issuer)
    cluster.add_secret("mlseal-ledger-writer", {"username": writer, "password": password})
    cluster.add_config_map("mlseal-trust", {"trust.yaml": trust_text,
                                            **{f"{s}.pub.pem": pem for s, pem in keys.items()}})
    services = Services(vault_addr=fake_vault.addr, ledger_url=_without_userinfo(pg_url), ledger_ca_config_map=None,
                        image=IMAGE)
    try:
        yield MlsealCluster(cluster, services, pg_url, trust_text, keys, password, fake_vault, issued)
    finally:
        with psycopg.connect(pg_url, autocommit=True) as db:
            db.execute(f"DROP OWNED BY {writer}")
            db.execute(f"DROP ROLE {writer}")
