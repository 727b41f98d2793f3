"""The provenance ledger: an append-only, hash-chained, Merkle-verifiable log of records.

Each pipeline step appends one signed record (a DSSE entry, `mlseal.ledger.entry`); the
entries are the leaves of an RFC 9162 Merkle tree (`mlseal.ledger.merkle`), checked by
`mlseal.ledger.verify`, read through verified views (`mlseal.ledger.verified`,
`mlseal.ledger.trusted`, `mlseal.ledger.lineage`) and pinned by signed checkpoints
(`mlseal.ledger.checkpoint`, `mlseal.ledger.rollback`). `Ledger` and `open_ledger` live in
`mlseal.ledger.ledger`.

The package names them lazily: importing a pure module such as `mlseal.ledger.merkle`
loads neither the storage backends nor the signing code.

    >>> from mlseal.ledger import open_ledger
    >>> open_ledger.__module__
    'mlseal.ledger.ledger'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlseal.ledger.ledger import (
        DEFAULT_URL,
        ENV_VAR,
        Appended,
        Head,
        Ledger,
        open_ledger,
        redact_url,
        sqlite_path,
        url_scheme,
    )
    from mlseal.ledger.unsafe import UNSAFE_SKIP_SIGNATURES

__all__ = [
    "DEFAULT_URL",
    "ENV_VAR",
    "UNSAFE_SKIP_SIGNATURES",
    "Appended",
    "Head",
    "Ledger",
    "open_ledger",
    "redact_url",
    "sqlite_path",
    "url_scheme",
]

_LAZY = {name: "mlseal.ledger.ledger" for name in __all__} | {"UNSAFE_SKIP_SIGNATURES": "mlseal.ledger.unsafe"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mlseal.ledger' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
