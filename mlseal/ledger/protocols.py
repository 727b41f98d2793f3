"""The parts of a `Ledger` that its users depend on, as protocols.

The admission engine only reads (`LedgerReader`); a sealed stage also appends
(`LedgerWriter`). Both accept an open `mlseal.ledger.Ledger`, or any test double with
the same methods, and a stage can hand its ledger to the policy engine unchanged.

    >>> import tempfile
    >>> from mlseal.ledger import open_ledger
    >>> led = open_ledger("sqlite:///" + tempfile.mkdtemp() + "/l.db")
    >>> isinstance(led, LedgerWriter) and isinstance(led, LedgerReader)
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from mlseal.ledger.record import RecordDraft
    from mlseal.signing.keys import Signer

__all__ = ["LedgerReader", "LedgerWriter"]


@runtime_checkable
class LedgerReader(Protocol):
    """Reading records by digest and seq."""

    def producers_of(self, sha256_hex: str) -> list[int]: ...

    def consumers_of(self, sha256_hex: str) -> list[int]: ...

    def entry(self, seq: int) -> bytes: ...

    def size(self) -> int: ...


@runtime_checkable
class LedgerWriter(LedgerReader, Protocol):
    """Reading, and appending one signed record."""

    def append(self, draft: RecordDraft, signer: Signer, *, signer_name: str) -> Any: ...
