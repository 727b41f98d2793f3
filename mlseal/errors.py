"""The one root of mlseal's exceptions, split by cause.

Callers must be able to tell tampering from a typo from an outage:

- `VerificationError`: the data is bad, tampered or untrusted. Deny; do not retry.
- `InfrastructureError` (and `VaultError`): a service failed. Retry or fail closed.
- `ConfigurationError`: the operator must fix something (a URL, a path, a key type).

Messages name the observed value (a record number, a path, a digest prefix) but never
a secret value or a token.

    >>> from mlseal.errors import Error, VerificationError
    >>> issubclass(VerificationError, Error)
    True
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "Error",
    "InfrastructureError",
    "LedgerConflict",
    "PolicyDenied",
    "VaultError",
    "VerificationError",
]


class Error(Exception):
    """Root of every error mlseal raises on purpose."""

    #: CLI exit code for this kind of error (docs/design.md#exit-codes: 1 verification, 2 config/env).
    exit_code = 2


class VerificationError(Error):
    """The data is bad, tampered with, or not signed by anyone trusted."""

    exit_code = 1


class PolicyDenied(VerificationError):
    """A deployment or input does not satisfy policy."""


class ConfigurationError(Error):
    """Something the operator configured is wrong or missing."""


class InfrastructureError(Error):
    """A service (database, Vault, Sigstore) failed or could not be reached."""


class VaultError(InfrastructureError):
    """Vault refused or failed a request. Never carries a secret value or token."""


class LedgerConflict(InfrastructureError):
    """Another writer appended concurrently; the append may be retried."""
