"""Check 7: the derived rows a store holds are exactly those its entries imply.

A ledger derives two tables from its signed entries: the digest index (sha256, role,
seq: what lookups by digest read) and the Merkle nodes (what proofs and roots are served
from). Nobody signs them, so whoever can write the database can change them; `DerivedCheck`
compares them, chunk by chunk as `verify_entries` reads the entries, with the rows the
entries imply (`mlseal.ledger.checks.Chunk.digests` and ``.tree``). Problem kinds:
``index`` and ``node`` (and ``head``, checked with the tree: `mlseal.ledger.checks.check_head`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from mlseal.ledger._store import ROLE_INPUT, ROLE_OUTPUT, DigestRow, NodeRange, NodeRow
from mlseal.ledger.checks import Chunk
from mlseal.ledger.merkle import Coord
from mlseal.ledger.problem import Problem


class DerivedRows(Protocol):
    """Read access to the rows a ledger derives from its entries (a storage backend)."""

    def iter_digest_rows(self, start: int) -> Iterator[DigestRow]: ...

    def iter_node_rows(self, ranges: Sequence[NodeRange]) -> Iterator[NodeRow]: ...


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
#: kinds of problems with derived rows; a report lists them after all of the entries' own
_ROLE_NAMES = {ROLE_OUTPUT: "output", ROLE_INPUT: "input"}
_INDEX_FIX = (
    "the digest index is derived from the signed entries and must match them exactly: "
    "someone with write access to the database changed it, so lookups by digest (admission, "
    "trace, stage input checks) can miss or invent records; restore the database from a backup "
    "taken before the change and find out who could write to it"
)
_NODE_FIX = (
    "Merkle nodes are derived from the signed entries and must match them exactly: "
    "proofs and roots served from them are wrong; restore the database from a backup "
    "taken before the change and find out who could write to it"
)


def _role(role: int) -> str:
    return _ROLE_NAMES.get(role, f"role {role}")


class DerivedCheck:
    """Compares, chunk by chunk, the stored derived rows with those the entries imply.

    The digest index is read as one stream sorted by seq (merged with the chunks, which
    arrive in seq order); nodes are read per chunk by coordinate ranges, the same way
    proofs read them. Memory: one chunk's rows. Problems are capped at ``max_problems`` (a
    deleted entry shifts every later leaf), the rest only counted.
    """

    def __init__(self, source: DerivedRows, start: int, max_problems: int) -> None:
        self.max_problems = max_problems
        self.source = source
        self.start = start
        self._stream = source.iter_digest_rows(start if start > 0 else _INT64_MIN)
        self._next: DigestRow | None = next(self._stream, None)
        self.problems: list[Problem] = []
        self.omitted = 0
        self.nodes = True  # off when the starting frontier is unusable (positions unknown)

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()

    def _add(self, p: Problem) -> None:
        if len(self.problems) < self.max_problems:
            self.problems.append(p)
        else:
            self.omitted += 1

    def _take_digests(self, last_key: int | None) -> list[DigestRow]:
        out = []
        while self._next is not None and (last_key is None or self._next[0] <= last_key):
            out.append(self._next)
            self._next = next(self._stream, None)
        return out

    def chunk(self, chunk: Chunk, hi: int, made: dict[Coord, bytes]) -> None:
        stored = self._take_digests(chunk.last_key)
        if stored != chunk.digests:
            keys = chunk.keys
            first, last = chunk.first_key, chunk.last_key
            self._digest_problems(
                chunk.digests, stored, lambda seq: first <= seq <= last and (keys is None or seq in keys)
            )
        if not self.nodes:
            return
        lo = chunk.lo
        want = chunk.tree
        want.update(made)
        ranges = [(k, k, lo >> k, (hi >> k) - 1) for k in range(hi.bit_length()) if lo >> k < hi >> k]
        got = {(lv, ix): h for lv, ix, h in self.source.iter_node_rows(ranges)}
        if got != want:
            self._node_problems(want, got, hi)

    def finish(self, size: int) -> None:
        """Rows beyond what the entries imply: digest rows after the last entry, nodes
        outside the tree of ``size`` leaves."""
        self._digest_problems([], self._take_digests(None), lambda seq: False)
        top = size.bit_length()  # no level from here up has a node in the tree
        ranges: list[NodeRange] = [(_INT64_MIN, -1, _INT64_MIN, _INT64_MAX), (top, _INT64_MAX, _INT64_MIN, _INT64_MAX)]
        for k in range(top):  # one level each, so that the key's index seeks
            ranges += [(k, k, size >> k, _INT64_MAX), (k, k, _INT64_MIN, -1)]
        for lv, ix, _ in self.source.iter_node_rows(ranges):
            self._add(Problem(
                None, "node",
                f"Merkle node (level {lv}, index {ix}) is stored but is not part of the tree of the "
                f"{size} records: {_NODE_FIX}",
            ))

    def _digest_problems(self, want: list[DigestRow], got: list[DigestRow], held: Callable[[int], bool]) -> None:
        w, g = set(want), set(got)
        for seq, role, sha in sorted(w - g):
            self._add(Problem(
                seq, "index",
                f"record {seq}: the digest index has no row for its {_role(role)} {sha.hex()[:16]}… "
                f"(a lookup by that digest does not find this record): {_INDEX_FIX}",
            ))
        for seq, role, sha in sorted(g - w):
            if held(seq):
                what = (f"record {seq}: the digest index holds a row ({_role(role)} {sha.hex()[:16]}…) "
                        "that the record does not list")
            else:
                what = (f"the digest index holds a row ({_role(role)} {sha.hex()[:16]}…) for record {seq}, "
                        "which storage does not hold")
            self._add(Problem(seq, "index", f"{what}: {_INDEX_FIX}"))

    def _node_problems(self, want: dict[Coord, bytes], got: dict[Coord, bytes], size: int) -> None:
        for c in sorted(want.keys() | got.keys()):
            lv, ix = c
            first, last = ix << lv, ((ix + 1) << lv) - 1
            where = f"Merkle node (level {lv}, index {ix}) over records {first}..{last}"
            w, g = want.get(c), got.get(c)
            if w == g:
                continue
            if g is None:
                msg = f"{where} is missing from storage"
            elif w is None:
                msg = f"{where} is stored but is not part of the tree of the {size} records"
            else:
                msg = f"{where} has hash {g.hex()[:16]}…, the entries give {w.hex()[:16]}…"
            self._add(Problem(min(last, size - 1), "node", f"{msg}: {_NODE_FIX}"))


__all__ = ["DerivedCheck", "DerivedRows"]
