"""Typed errors for secret sources, one per cause an operator must tell apart.

Every message names *what* failed (the Vault address, the KV path and version, the
Transit key, the auth method, the token accessor) and never a secret value or a token.

    >>> from mlseal.secrets.errors import SecretNotFound
    >>> str(SecretNotFound("secret/mlseal/db", version=3))
    'secret/mlseal/db version 3: not found in Vault'
"""

from __future__ import annotations

from mlseal.errors import ConfigurationError, VaultError


class VaultUnavailable(VaultError):
    """Vault could not be reached (connection refused, timeout) or kept answering 5xx/429."""


class VaultSealed(VaultError):
    """Vault answered 503 "Vault is sealed"."""


class VaultTLSError(VaultError):
    """The TLS handshake with Vault failed (unknown CA, wrong host name, not TLS)."""


class VaultAuthError(VaultError):
    """Login failed, or the token expired / was revoked / could not be renewed."""


class VaultPermissionDenied(VaultError):
    """Vault answered 403 for a path: the token's policies do not allow the operation."""


class SecretNotFound(VaultError):
    """A KV path (or the pinned version of it) does not exist, or was deleted/destroyed."""

    def __init__(
        self, path: str, version: int | None = None, *, where: str = "Vault", why: str = "not found", hint: str = ""
    ) -> None:
        self.path = path
        self.version = version
        at = f"{path} version {version}" if version is not None else path
        super().__init__(f"{at}: {why} in {where}" + (f"; {hint}" if hint else ""))


class VaultResponseError(VaultError):
    """Vault (or something pretending to be it) sent a response mlseal cannot parse."""


class VaultRequestRefused(VaultError):
    """Vault refused a request as invalid (400, 404 and other 4xx not covered above)."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class KeyTypeError(VaultError, ConfigurationError):
    """A Transit key exists but has the wrong type for its use (e.g. aes256 for signing).

    Both a `VaultError` (it came from Vault) and a `ConfigurationError` (an operator must
    recreate the key with the right type).
    """


__all__ = [
    "KeyTypeError",
    "SecretNotFound",
    "VaultAuthError",
    "VaultPermissionDenied",
    "VaultRequestRefused",
    "VaultResponseError",
    "VaultSealed",
    "VaultTLSError",
    "VaultUnavailable",
]
