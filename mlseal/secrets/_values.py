"""Value types handed out by secret sources: `Secret`, `KVSecret`, `DataKey`.

A `Secret` hides its value from ``repr``/``str``/f-strings/logging; reading it is an
explicit `.reveal()`, so a value reaches a log only if someone writes ``.reveal()`` next
to a log call.

    >>> s = Secret("hunter2")
    >>> s, f"{s}"
    (Secret('***'), "Secret('***')")
    >>> s.reveal()
    'hunter2'
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, NoReturn

if TYPE_CHECKING:
    from typing_extensions import TypeVar

    T = TypeVar("T", str, bytes, default=str)
else:  # the default (PEP 696) is for type checkers; importing typing_extensions costs a KFP task ~3 ms
    from typing import TypeVar

    T = TypeVar("T", str, bytes)

_MASK = "Secret('***')"


class Secret(Generic[T]):
    """A secret value (``str`` or ``bytes``) that does not print itself."""

    __slots__ = ("_value",)
    _value: T

    def __init__(self, value: T) -> None:
        if not isinstance(value, str | bytes):
            raise TypeError(f"Secret holds str or bytes, not {type(value).__name__}")
        object.__setattr__(self, "_value", value)

    def reveal(self) -> T:
        """The value. Call it where the value is used, never to build a message."""
        return self._value

    def __repr__(self) -> str:
        return _MASK

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return _MASK

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        a, b = self._value, other._value
        if type(a) is not type(b):
            return False
        ab = a.encode() if isinstance(a, str) else a
        bb = b.encode() if isinstance(b, str) else b
        return hmac.compare_digest(ab, bb)

    def __hash__(self) -> int:
        return hash((Secret, len(self._value)))

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError("Secret is immutable")

    def __reduce__(self) -> NoReturn:
        # Pickling would write the value to wherever the pickle goes (a KFP artifact,
        # a multiprocessing pipe, a cache). Refuse rather than leak.
        raise TypeError("a Secret cannot be pickled")

    def __len__(self) -> int:
        return len(self._value)


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
