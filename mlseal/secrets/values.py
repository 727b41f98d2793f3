"""Value types handed out by secret sources: `KVSecret` (one version of a KV secret) and
`DataKey` (a fresh data key and its wrapped form). Both hold their secret parts in
`mlseal.sensitive.Secret`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mlseal.sensitive import Secret

__all__ = ["DataKey", "KVSecret"]


@dataclass(frozen=True)
class KVSecret:
    """One version of a KV v2 secret: what a ledger records is ``path`` + ``version``."""

    path: str
    version: int
    data: Mapping[str, Secret] = field(repr=False)

    def __repr__(self) -> str:
        return f"KVSecret(path={self.path!r}, version={self.version}, keys={sorted(self.data)!r})"

    def ref(self) -> dict[str, Any]:
        """The reference a ledger record stores (docs/design.md#record-fields-v1 ``secrets[{path, version}]``)."""
        return {"path": self.path, "version": self.version}


@dataclass(frozen=True)
class DataKey:
    """A fresh data-encryption key: use ``plaintext`` once, store only ``wrapped``."""

    plaintext: Secret[bytes] = field(repr=False)
    wrapped: str
    key_name: str = "mlseal-data"

    def __repr__(self) -> str:
        return f"DataKey(key_name={self.key_name!r}, wrapped={self.wrapped[:16]!r}…)"
