"""The "cluster" a run executes in: namespace objects, service account, PodDefaults,
the token issuer and the S3 object store.

    cluster = Cluster(object_store=store, service_account="mlseal-pipeline", issuer=fake_vault.k8s_jwt)
    cluster.add_secret("mlseal-ledger-writer", {"username": "w", "password": "p"})
    cluster.add_config_map("mlseal-trust", {"trust.yaml": "signers: []"})

Nothing here talks to Kubernetes: Secrets and ConfigMaps are namespace-scoped dicts the
driver reads when it builds a pod, the way the kubelet resolves ``secretKeyRef`` /
``configMapKeyRef`` and fills secret/configMap volumes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

#: audience of the token the kubelet projects into every pod by default (the API
#: server's own audience on a standard cluster)
KUBERNETES_AUDIENCE = "https://kubernetes.default.svc.cluster.local"
DEFAULT_TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

#: issuer(service_account, namespace, audience=..., expires_in=...) -> JWT
TokenIssuer = Callable[..., str]


class LocalIssuer:
    """Mints HS256 service-account JWTs with its own key, for runs that use no Vault.

    The claims are those of a projected service-account token; no Vault accepts them.
    Pass ``FakeVault.k8s_jwt`` as the cluster's issuer when tasks log in to Vault."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    def __call__(self, service_account: str, namespace: str, *, audience: str | list[str],
                 expires_in: int = 3600) -> str:
        def b64(obj: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

        head = b64({"alg": "HS256", "typ": "JWT"})
        body = b64({
            "iss": "kubernetes/serviceaccount",
            "aud": [audience] if isinstance(audience, str) else list(audience),
            "sub": f"system:serviceaccount:{namespace}:{service_account}",
            "kubernetes.io/serviceaccount/namespace": namespace,
            "kubernetes.io/serviceaccount/service-account.name": service_account,
            "exp": int(time.time()) + expires_in,
        })
        sig = hmac.new(self._key, f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{base64.urlsafe_b64encode(sig).rstrip(b'=').decode()}"


def jwt_claims(token: str) -> dict[str, Any]:
    """The (unverified) claims of a JWT, for assertions in tests."""
    body = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    assert isinstance(claims, dict)
    return claims


@dataclass(frozen=True)
class PodDefault:
    """A Kubeflow PodDefault that projects a service-account token with ``audience`` at
    ``mount_path``/``path`` into every pod whose labels include all of ``selector``."""

    name: str
    selector: dict[str, str]
    mount_path: str
    audience: str
    path: str = "token"
    expiration_seconds: int = 3600


#: the PodDefault mlseal.kfp.wire relies on (docs/kubeflow.md)
MLSEAL_VAULT_TOKEN = PodDefault(
    name="mlseal-vault-token",
    selector={"mlseal.dev/vault-token": "true"},
    mount_path="/var/run/secrets/vault",
    audience="vault",
)


@dataclass(frozen=True)
class ObjectStore:
    """An S3 endpoint (moto's server in tests) and the credentials the launcher uses.

    On a cluster the launcher reads these from the namespace's ``kfp-launcher``
    ConfigMap / ``mlpipeline-minio-artifact`` Secret; the user container never gets them."""

    endpoint: str
    access_key: str = "testing"
    secret_key: str = "testing"
    region: str = "us-east-1"

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=self.region)

    def create_bucket(self, name: str | None = None) -> str:
        bucket = name or f"kfp-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=bucket)
        return bucket

    def read(self, uri: str) -> bytes:
        assert uri.startswith("s3://"), uri
        bucket, _, key = uri[len("s3://"):].partition("/")
        return bytes(self.client().get_object(Bucket=bucket, Key=key)["Body"].read())

    def keys(self, uri_prefix: str) -> list[str]:
        bucket, _, prefix = uri_prefix[len("s3://"):].partition("/")
        out: list[str] = []
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            out.extend(o["Key"] for o in page.get("Contents", []))
        return out


@contextmanager
def moto_object_store() -> Iterator[ObjectStore]:
    """moto's S3 API server on 127.0.0.1 (a free port) for the duration."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield ObjectStore(endpoint=f"http://127.0.0.1:{port}")
    finally:
        server.stop()


@dataclass
class Cluster:
    """Namespace-scoped Secrets/ConfigMaps, the run's service account, PodDefaults.

    ``pipeline_root`` is the default pipeline root (the ``kfp-launcher`` ConfigMap's
    ``defaultPipelineRoot``); when ``None``, ``s3://<bucket>/v2/artifacts`` in a fresh bucket
    of ``object_store``."""

    object_store: ObjectStore
    namespace: str = "kubeflow"
    service_account: str = "pipeline-runner"
    issuer: TokenIssuer = field(default_factory=LocalIssuer)
    pod_defaults: list[PodDefault] = field(default_factory=lambda: [MLSEAL_VAULT_TOKEN])
    secrets: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    config_maps: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    pipeline_root: str | None = None
    #: extra ``KEY=value`` the "image" defines (Dockerfile ENV); PATH and HOME are fixed
    image_env: dict[str, str] = field(default_factory=dict)
    #: the API server's PUBLISH_LOGS: each task's log becomes an ``executor-logs`` artifact
    publish_logs: bool = True
    #: the KFP server's cache (``CACHEENABLED``): (namespace, pipeline name, fingerprint) -> execution
    cache_enabled: bool = True
    cache: dict[tuple[str, str, str], Any] = field(default_factory=dict)
    #: files the "image" contains (absolute path -> text), e.g. a task's input data; each
    #: file's directory is a private tmpfs in every pod
    image_files: dict[str, str] = field(default_factory=dict)

    def add_secret(self, name: str, data: dict[str, str], *, namespace: str | None = None) -> None:
        self.secrets.setdefault(namespace or self.namespace, {})[name] = dict(data)

    def add_config_map(self, name: str, data: dict[str, str], *, namespace: str | None = None) -> None:
        self.config_maps.setdefault(namespace or self.namespace, {})[name] = dict(data)

    def secret(self, name: str) -> dict[str, str] | None:
        return self.secrets.get(self.namespace, {}).get(name)

    def config_map(self, name: str) -> dict[str, str] | None:
        return self.config_maps.get(self.namespace, {}).get(name)

    def default_pipeline_root(self) -> str:
        if self.pipeline_root is None:
            self.pipeline_root = f"s3://{self.object_store.create_bucket()}/v2/artifacts"
        return self.pipeline_root

    def secret_values(self) -> set[str]:
        """Every Secret value in the cluster (for leak scans)."""
        return {v for ns in self.secrets.values() for data in ns.values() for v in data.values() if v}
