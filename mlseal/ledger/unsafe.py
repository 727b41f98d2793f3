"""`UNSAFE_SKIP_SIGNATURES`: the one way to read a ledger without checking signatures.

Every reader of the ledger (`verify_ledger`, `verify_entries`, `verify_entry`,
`VerifiedView`, `trace`, `load_checkpoint`) takes a trust root: the trust file's
signers decide which records count. Passing ``None`` is refused with a
`ConfigurationError` (a forgotten trust file must not silently switch signature checks
off). A caller that means it passes `UNSAFE_SKIP_SIGNATURES` instead: the hash chain,
positions and Merkle tree are still checked, but anybody who can write the database can
also write records that pass. The readers log a warning when they run in this mode.

    >>> from mlseal.ledger.unsafe import UNSAFE_SKIP_SIGNATURES, trust_root
    >>> trust_root(UNSAFE_SKIP_SIGNATURES, "example") is None
    True
    >>> trust_root(None, "example")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mlseal.errors.ConfigurationError: example needs a trust root (...) to check signatures; pass ...
"""

from __future__ import annotations

import logging
from typing import Final, final

from mlseal.errors import ConfigurationError
from mlseal.signing.trust import TrustRoot

log = logging.getLogger("mlseal.ledger")


@final
class UnsafeSkipSignatures:
    """The type of `UNSAFE_SKIP_SIGNATURES` (one instance)."""

    _instance: UnsafeSkipSignatures | None = None

    def __new__(cls) -> UnsafeSkipSignatures:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSAFE_SKIP_SIGNATURES"

    def __reduce__(self) -> str:
        return "UNSAFE_SKIP_SIGNATURES"


#: read records without checking their signatures, grants or canonical form
UNSAFE_SKIP_SIGNATURES: Final = UnsafeSkipSignatures()

#: what the readers take: a trust root, or the explicit unsafe option
Trust = TrustRoot | UnsafeSkipSignatures


def trust_root(trust: object, what: str, *, warn: bool = False) -> TrustRoot | None:
    """The trust root to check signatures with, or None for `UNSAFE_SKIP_SIGNATURES`
    (logged as a warning with ``warn``); anything else, None included, is refused."""
    if isinstance(trust, TrustRoot):
        return trust
    if trust is UNSAFE_SKIP_SIGNATURES:
        if warn:
            log.warning("%s: signatures NOT checked (UNSAFE_SKIP_SIGNATURES)", what)
        return None
    if trust is None:
        raise ConfigurationError(
            f"{what} needs a trust root (mlseal.signing.trust.load_trust) to check signatures; pass "
            "mlseal.ledger.UNSAFE_SKIP_SIGNATURES to read the ledger without checking them")
    raise ConfigurationError(f"{what}: trust must be a TrustRoot or mlseal.ledger.UNSAFE_SKIP_SIGNATURES, "
                             f"not {type(trust).__name__}")


__all__ = ["UNSAFE_SKIP_SIGNATURES", "Trust", "UnsafeSkipSignatures", "trust_root"]
