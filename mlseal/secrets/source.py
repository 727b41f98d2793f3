"""The `SecretSource` interface and the factory that picks Vault or the dev store.

Stages ask for secrets by path; the source answers with `KVSecret` (path, version and
`Secret` values), signs through Transit without the private key leaving Vault, and mints
data keys for envelope encryption.

    >>> import tempfile
    >>> src = open_secret_source(dev_dir=tempfile.mkdtemp(), env={})
    >>> src.kind
    'dev'
    >>> key = src.ensure_key("mlseal/demo/hmac")
    >>> key.path, key.version
    ('mlseal/demo/hmac', 1)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from mlseal.secrets._paths import DATA_KEY, SIGNING_KEY
from mlseal.secrets.values import DataKey, KVSecret
from mlseal.sensitive import Secret
from mlseal.signing.keys import Signer

__all__ = ["DEFAULT_DEV_DIR", "SecretSource", "open_secret_source"]

log = logging.getLogger("mlseal.secrets")

DEFAULT_DEV_DIR = Path(".mlseal/secrets")


@runtime_checkable
class SecretSource(Protocol):
    """Where secrets come from. Implementations: Vault (through hvac) and the dev store."""

    @property
    def kind(self) -> Literal["vault", "dev"]: ...

    def read(self, path: str, version: int | None = None) -> KVSecret:
        """KV v2 read of ``mlseal/<path>`` (latest, or the pinned ``version``)."""
        ...

    def ensure_key(self, path: str, nbytes: int = 32) -> KVSecret:
        """The random key at ``path`` (field ``key``, base64); dev creates it on first use."""
        ...

    def transit_signer(self, key_name: str = SIGNING_KEY) -> Signer:
        """An ECDSA P-256 / SHA-256 signer whose private key stays in Vault (or the dev store)."""
        ...

    def data_key(self, key_name: str = DATA_KEY) -> DataKey:
        """A fresh 32-byte data key and its wrapped form (Transit ``datakey/plaintext``)."""
        ...

    def unwrap_data_key(self, wrapped: str, key_name: str = DATA_KEY) -> Secret[bytes]:
        """The plaintext of a wrapped data key (Transit ``decrypt``)."""
        ...

    def describe(self) -> str:
        """One line for humans: which source, where (never a credential)."""
        ...


def open_secret_source(
    dev_dir: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
) -> SecretSource:
    """Vault when ``VAULT_ADDR`` is set (auth from the environment), else the dev store.

    Does no network I/O: Vault login happens on first use. A Vault address with no
    usable auth configured raises `ConfigurationError` rather than falling back to dev.
    """
    env = os.environ if env is None else env
    if env.get("VAULT_ADDR"):
        from mlseal.secrets._vault import VaultSecretSource
        from mlseal.secrets._vault_config import VaultConfig

        src = VaultSecretSource(VaultConfig.from_env(env))
        log.info("secrets from Vault at %s (auth: %s)", src.config.addr, src.config.auth.method)
        return src
    from mlseal.secrets._dev import DevSecretSource

    dev = DevSecretSource(Path(dev_dir) if dev_dir is not None else DEFAULT_DEV_DIR)
    log.warning("dev secrets, not Vault: using the local store %s (set VAULT_ADDR to use Vault)", dev.root)
    return dev
