"""Records already verified, shared by the ledger views a process builds.

A stage checking several inputs, or a caller asking many questions of one ledger, builds
one `mlseal.ledger.verified.VerifiedView` after another; `SHARED` lets each signature be
checked once per process (the entries are still read, hashed and hash-linked by every view).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from mlseal.ledger.record import Record

__all__ = ["SHARED", "VerifiedRecords"]


class VerifiedRecords:
    """Records already verified, keyed by the SHA-256 of their exact entry bytes.

    The same bytes under the same trusted keys verify the same way, so views of one
    ledger built one after another in a process (a stage checking several inputs) check
    each signature once. The key holds the trust, the seq and the SHA-256 of the entry's
    exact bytes: changed bytes are a miss. Hash links are checked by every view anew.
    Bounded (least recently used goes first) and thread-safe.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self._max = max_entries
        self._items: OrderedDict[tuple[Any, ...], Record] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> Record | None:
        with self._lock:
            rec = self._items.get(key)
            if rec is not None:
                self._items.move_to_end(key)
            return rec

    def put(self, key: tuple[Any, ...], rec: Record) -> None:
        if self._max <= 0:
            return
        with self._lock:
            self._items[key] = rec
            while len(self._items) > self._max:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


#: records verified by views that readers built in this process, so that a stage checking
#: several inputs, or a caller asking many questions of one ledger, checks each signature
#: once (the entries are still read, hashed and hash-linked by every view)
SHARED = VerifiedRecords(100_000)
