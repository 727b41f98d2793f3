"""Choose the artifact signer a command or stage was configured with.

    --key PEM               a local EC P-256 private key
    --vault-transit KEY     a Vault Transit key (the private key never leaves Vault)
    neither                 $MLSEAL_SIGNING_KEY (a PEM path), else a ConfigurationError

Keyless Sigstore signing is a `BundleSigner` (`mlseal.signing.keyless.KeylessSigner`),
chosen with `mlseal sign --keyless`.

    >>> import os, tempfile
    >>> from mlseal.signing.keys import LocalKeySigner
    >>> d = tempfile.mkdtemp()
    >>> LocalKeySigner.generate().save(f"{d}/k.pem", f"{d}/k.pub.pem")
    >>> type(resolve_signer(key=f"{d}/k.pem")).__name__
    'LocalKeySigner'
"""

from __future__ import annotations

import os

from mlseal.errors import ConfigurationError
from mlseal.secrets.source import open_secret_source
from mlseal.signing.keys import LocalKeySigner, Signer

__all__ = ["SIGNING_KEY_ENV", "resolve_signer"]

SIGNING_KEY_ENV = "MLSEAL_SIGNING_KEY"


def resolve_signer(*, key: str | None = None, vault_transit: str | None = None) -> Signer:
    if key and vault_transit:
        raise ConfigurationError("pass either --key or --vault-transit, not both")
    if vault_transit:
        source = open_secret_source()
        if source.kind != "vault":
            # Asked for Vault explicitly: a silent fall-back to a local dev key would break
            # "the private key never leaves Vault", so refuse instead.
            raise ConfigurationError(
                f"--vault-transit {vault_transit} needs Vault: set VAULT_ADDR (and a Vault auth "
                "method such as VAULT_TOKEN); the dev secret store is not Vault"
            )
        signer: Signer = source.transit_signer(vault_transit)
        return signer
    if key:
        return LocalKeySigner.from_file(key)
    env = os.environ.get(SIGNING_KEY_ENV)
    if env:
        return LocalKeySigner.from_file(env)
    raise ConfigurationError(
        "no signing key: pass --key PEM (a local EC P-256 private key) or --vault-transit KEY "
        f"(a Vault Transit key), or set ${SIGNING_KEY_ENV} to a PEM file"
    )
