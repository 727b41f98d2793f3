"""Secrets by reference: Vault (KV v2, Transit) through hvac, or a local dev store.

A stage names a secret by its path; the source returns the value wrapped in `Secret`
(which never prints itself) together with the KV version, so the ledger can record
``{path, version}`` and nothing else. Signing keys stay in Vault Transit; datasets are
envelope-encrypted with Transit data keys (`mlseal.secrets.envelope`).

    >>> import tempfile
    >>> from mlseal.secrets import open_secret_source
    >>> src = open_secret_source(dev_dir=tempfile.mkdtemp(), env={})  # no VAULT_ADDR: dev store
    >>> src.kind
    'dev'
    >>> signer = src.transit_signer()
    >>> len(signer.key_id)
    64
    >>> dk = src.data_key()
    >>> src.unwrap_data_key(dk.wrapped) == dk.plaintext
    True
    >>> dk.plaintext
    Secret('***')
"""

from __future__ import annotations

from mlseal.secrets._paths import DATA_KEY, SIGNING_KEY
from mlseal.secrets.errors import (
    KeyTypeError,
    SecretNotFound,
    VaultAuthError,
    VaultPermissionDenied,
    VaultRequestRefused,
    VaultResponseError,
    VaultSealed,
    VaultTLSError,
    VaultUnavailable,
)
from mlseal.secrets.source import SecretSource, open_secret_source
from mlseal.secrets.values import DataKey, KVSecret
from mlseal.sensitive import Secret

__all__ = [
    "DATA_KEY",
    "SIGNING_KEY",
    "DataKey",
    "KVSecret",
    "KeyTypeError",
    "Secret",
    "SecretNotFound",
    "SecretSource",
    "VaultAuthError",
    "VaultPermissionDenied",
    "VaultRequestRefused",
    "VaultResponseError",
    "VaultSealed",
    "VaultTLSError",
    "VaultUnavailable",
    "open_secret_source",
]
