"""Vault connection settings, read once from the environment at the boundary.

Environment (the names Vault's own CLI and agents use, plus mlseal's):

====================================  =============================================
``VAULT_ADDR``                        Vault address (https://vault:8200)
``VAULT_NAMESPACE``                   Enterprise namespace (sent as X-Vault-Namespace)
``VAULT_CACERT``                      PEM CA bundle that signed Vault's TLS certificate
``VAULT_TOKEN``                       auth: a token
``VAULT_ROLE_ID`` + ``VAULT_SECRET_ID``  auth: AppRole (mount ``MLSEAL_VAULT_APPROLE_MOUNT``, default approle)
``MLSEAL_VAULT_K8S_ROLE``             auth: Kubernetes role; JWT from ``MLSEAL_VAULT_K8S_JWT``
                                      (default the pod's service-account token), mount
                                      ``MLSEAL_VAULT_K8S_MOUNT`` (default kubernetes)
``MLSEAL_VAULT_KV_MOUNT``             KV v2 mount (default secret)
``MLSEAL_VAULT_TRANSIT_MOUNT``        Transit mount (default transit)
====================================  =============================================

If more than one auth method is configured the first of token, AppRole, Kubernetes wins
and the choice is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from mlseal.errors import ConfigurationError
from mlseal.sensitive import Secret

log = logging.getLogger("mlseal.secrets")

K8S_JWT_DEFAULT = "/var/run/secrets/kubernetes.io/serviceaccount/token"

AuthMethod = Literal["token", "approle", "kubernetes"]


@dataclass(frozen=True)
class AuthConfig:
    """How to log in. Credentials are `Secret`s; the JWT is read from its file at login."""

    method: AuthMethod
    token: Secret | None = field(default=None, repr=False)
    role_id: str | None = None
    secret_id: Secret | None = field(default=None, repr=False)
    k8s_role: str | None = None
    jwt_path: Path | None = None
    mount: str = ""

    @property
    def can_relogin(self) -> bool:
        """A token cannot be re-obtained; AppRole and Kubernetes logins can be repeated."""
        return self.method != "token"


@dataclass(frozen=True)
class VaultConfig:
    addr: str
    auth: AuthConfig
    namespace: str | None = None
    cacert: Path | None = None
    kv_mount: str = "secret"
    transit_mount: str = "transit"
    timeout: float = 10.0
    #: attempts for 5xx / 429 / connection errors (1 = no retry); 4xx are never retried
    attempts: int = 4
    backoff: float = 0.1
    backoff_max: float = 2.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> VaultConfig:
        addr = env.get("VAULT_ADDR", "").strip().rstrip("/")
        parts = urlsplit(addr)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError(f"VAULT_ADDR must be an http(s) URL, got {addr!r}")
        cacert = env.get("VAULT_CACERT") or None
        if cacert is not None and not Path(cacert).is_file():
            raise ConfigurationError(f"VAULT_CACERT={cacert} is not a readable file")
        if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            log.warning("VAULT_ADDR %s is plain http: tokens and secrets cross the network unencrypted", addr)
        return cls(
            addr=addr,
            auth=_auth_from_env(env),
            namespace=env.get("VAULT_NAMESPACE") or None,
            cacert=Path(cacert) if cacert else None,
            kv_mount=_mount(env, "MLSEAL_VAULT_KV_MOUNT", "secret"),
            transit_mount=_mount(env, "MLSEAL_VAULT_TRANSIT_MOUNT", "transit"),
        )


def _mount(env: Mapping[str, str], name: str, default: str) -> str:
    value = (env.get(name) or default).strip("/")
    if not value or any(s in ("", ".", "..") for s in value.split("/")):
        raise ConfigurationError(f"{name}={env.get(name)!r} is not a valid mount path")
    return value


def _auth_from_env(env: Mapping[str, str]) -> AuthConfig:
    candidates: list[AuthConfig] = []
    if env.get("VAULT_TOKEN"):
        candidates.append(AuthConfig("token", token=Secret(env["VAULT_TOKEN"].strip())))
    role_id, secret_id = env.get("VAULT_ROLE_ID"), env.get("VAULT_SECRET_ID")
    if role_id or secret_id:
        if not (role_id and secret_id):
            raise ConfigurationError("AppRole auth needs both VAULT_ROLE_ID and VAULT_SECRET_ID")
        candidates.append(
            AuthConfig(
                "approle",
                role_id=role_id,
                secret_id=Secret(secret_id),
                mount=_mount(env, "MLSEAL_VAULT_APPROLE_MOUNT", "approle"),
            )
        )
    if env.get("MLSEAL_VAULT_K8S_ROLE"):
        candidates.append(
            AuthConfig(
                "kubernetes",
                k8s_role=env["MLSEAL_VAULT_K8S_ROLE"],
                jwt_path=Path(env.get("MLSEAL_VAULT_K8S_JWT") or K8S_JWT_DEFAULT),
                mount=_mount(env, "MLSEAL_VAULT_K8S_MOUNT", "kubernetes"),
            )
        )
    if not candidates:
        raise ConfigurationError(
            "VAULT_ADDR is set but no Vault auth is configured: set VAULT_TOKEN, "
            "or VAULT_ROLE_ID + VAULT_SECRET_ID (AppRole), or MLSEAL_VAULT_K8S_ROLE (Kubernetes)"
        )
    if len(candidates) > 1:
        log.warning(
            "several Vault auth methods configured (%s); using %s",
            ", ".join(c.method for c in candidates),
            candidates[0].method,
        )
    return candidates[0]
