"""RFC 9162 Merkle tree hashing, proofs and proof verification.

The ledger is a Merkle tree over its entries (RFC 9162 §2.1): the leaf hash of an entry
is ``SHA-256(0x00 || entry bytes)`` and an inner node is ``SHA-256(0x01 || left ||
right)``. Everything here is pure computation; storage is reached through a
`NodeReader`, which returns the hashes of *perfect* subtrees: node ``(level, index)``
covers leaves ``[index * 2**level, (index + 1) * 2**level)``.

Any subtree the RFC's recursion needs is a left-to-right run of at most ``log2 n``
perfect subtrees, so proofs and roots for a tree of ``n`` leaves cost ``O(log n)`` node
reads, and appending a leaf writes ``O(1)`` nodes amortised (at most ``log2 n``).

    >>> from mlseal.ledger import merkle
    >>> leaves = [merkle.leaf_hash(b"a"), merkle.leaf_hash(b"b"), merkle.leaf_hash(b"c")]
    >>> tree = merkle.MemoryTree(leaves)
    >>> proof = merkle.inclusion_proof(1, 3, tree)
    >>> merkle.verify_inclusion(leaves[1], 1, 3, proof, tree.root())
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from mlseal.errors import VerificationError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "LEAF_PREFIX",
    "NODE_PREFIX",
    "Coord",
    "Frontier",
    "MemoryTree",
    "NodeReader",
    "Range",
    "append_coords",
    "append_nodes",
    "consistency_proof",
    "consistency_ranges",
    "fold_cover",
    "inclusion_proof",
    "inclusion_ranges",
    "leaf_hash",
    "node_hash",
    "perfect_cover",
    "range_nodes",
    "root_from_inclusion",
    "root_from_leaves",
    "root_hash",
    "verify_consistency",
    "verify_inclusion",
]

LEAF_PREFIX = b"\x00"  # RFC 9162 §2.1.1: domain separation of leaves ...
NODE_PREFIX = b"\x01"  # ... from inner nodes, so a node cannot pass for a leaf.
HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()  # MTH({}) = SHA-256()

Coord = tuple[int, int]  # (level, index) of a perfect subtree
Range = tuple[int, int]  # [start, end) of leaves


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


class NodeReader(Protocol):
    """Reads perfect-subtree hashes; a missing node is a storage error, not a proof error."""

    def get_nodes(self, coords: Sequence[Coord]) -> Mapping[Coord, bytes]: ...


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (n >= 2), RFC 9162 §2.1.1."""
    return 1 << ((n - 1).bit_length() - 1)


def perfect_cover(start: int, end: int) -> list[Coord]:
    """The perfect subtrees, left to right, that make up ``[start, end)``.

    Only valid for ranges the RFC recursion produces (``start`` aligned to a power of
    two at least as large as the range's left-most perfect part), which is all that
    proofs and roots ever ask for.
    """
    cover: list[Coord] = []
    while start < end:
        size = end - start
        level = size.bit_length() - 1
        # the largest aligned perfect subtree starting at `start` that fits
        while start & ((1 << level) - 1):
            level -= 1
        cover.append((level, start >> level))
        start += 1 << level
    return cover


def fold_cover(hashes: Sequence[bytes]) -> bytes:
    """Hash of a range from its perfect cover: fold right to left (the RFC's right edge)."""
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def _range_hashes(ranges: Sequence[Range], reader: NodeReader) -> list[bytes]:
    covers = [perfect_cover(s, e) for s, e in ranges]
    wanted = sorted({c for cover in covers for c in cover})
    got = reader.get_nodes(wanted)
    try:
        return [fold_cover([got[c] for c in cover]) for cover in covers]
    except KeyError as exc:
        raise VerificationError(f"Merkle node {exc.args[0]} missing from storage") from None


def root_hash(size: int, reader: NodeReader) -> bytes:
    """MTH of the first ``size`` leaves."""
    if size == 0:
        return EMPTY_ROOT
    return _range_hashes([(0, size)], reader)[0]


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """Leaf ranges whose hashes form PATH(index, D[size]), leaf first (RFC 9162 §2.1.3.1)."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} outside tree of size {size}")
    path: list[Range] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index - start < k:
            path.append((start + k, end))
            end = start + k
        else:
            path.append((start, start + k))
            start += k
    path.reverse()
    return path


def consistency_ranges(size1: int, size2: int) -> list[Range]:
    """Leaf ranges whose hashes form PROOF(size1, D[size2]) (RFC 9162 §2.1.4.1)."""
    if not 0 < size1 <= size2:
        raise ValueError(f"no consistency proof from size {size1} to size {size2}")
    path: list[Range] = []
    start, end, m, complete = 0, size2, size1, True
    while True:
        n = end - start
        if m == n:
            if not complete:
                path.append((start, end))
            break
        k = _split(n)
        if m <= k:
            path.append((start + k, end))
            end = start + k
        else:
            path.append((start, start + k))
            start += k
            m -= k
            complete = False
    path.reverse()
    return path


def inclusion_proof(index: int, size: int, reader: NodeReader) -> list[bytes]:
    return _range_hashes(inclusion_ranges(index, size), reader)


def consistency_proof(size1: int, size2: int, reader: NodeReader) -> list[bytes]:
    if size1 == size2:
        return []
    return _range_hashes(consistency_ranges(size1, size2), reader)


def append_coords(size: int) -> list[Coord]:
    """Left siblings needed to append leaf number ``size`` (one per trailing 1 bit)."""
    coords: list[Coord] = []
    level, index = 0, size
    while index & 1:
        coords.append((level, index - 1))
        level, index = level + 1, index >> 1
    return coords


def append_nodes(size: int, leaf: bytes, siblings: Mapping[Coord, bytes]) -> list[tuple[int, int, bytes]]:
    """Perfect nodes that appending ``leaf`` as leaf number ``size`` completes.

    ``siblings`` must hold the hashes at `append_coords(size)`.
    """
    out = [(0, size, leaf)]
    level, index, acc = 0, size, leaf
    while index & 1:
        acc = node_hash(siblings[(level, index - 1)], acc)
        level, index = level + 1, index >> 1
        out.append((level, index, acc))
    return out


class MemoryTree:
    """An in-memory tree that keeps every perfect node: for verifiers and tests."""

    def __init__(self, leaves: Iterable[bytes] = ()) -> None:
        self.levels: list[list[bytes]] = [[]]
        for leaf in leaves:
            self.append(leaf)

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def append(self, leaf: bytes) -> None:
        level, acc = 0, leaf
        self.levels[0].append(acc)
        while len(self.levels[level]) % 2 == 0:
            row = self.levels[level]
            acc = node_hash(row[-2], row[-1])
            level += 1
            if level == len(self.levels):
                self.levels.append([])
            self.levels[level].append(acc)

    def get_nodes(self, coords: Sequence[Coord]) -> dict[Coord, bytes]:
        out: dict[Coord, bytes] = {}
        for level, index in coords:
            if level < len(self.levels) and index < len(self.levels[level]):
                out[(level, index)] = self.levels[level][index]
        return out

    def root(self, size: int | None = None) -> bytes:
        return root_hash(self.size if size is None else size, self)


def root_from_leaves(leaves: Iterable[bytes]) -> tuple[int, bytes]:
    """(size, MTH) of a stream of leaf hashes, in O(log n) memory."""
    stack: list[tuple[int, bytes]] = []  # (level, hash) of the current frontier
    size = 0
    for acc in leaves:
        level = 0
        while stack and stack[-1][0] == level:
            acc = node_hash(stack.pop()[1], acc)
            level += 1
        stack.append((level, acc))
        size += 1
    if not stack:
        return 0, EMPTY_ROOT
    return size, fold_cover([h for _, h in stack])


class Frontier:
    """The perfect subtrees covering leaves ``[0, end)``, merged as subtrees arrive left to right.

    What a verifier streaming a log keeps: O(log n) hashes, from which `root` is the
    RFC 9162 root of everything pushed so far. Start it from a trusted earlier tree by
    passing that tree's size and its perfect cover's hashes (`perfect_cover(0, size)`).

        >>> leaves = [leaf_hash(bytes([i])) for i in range(5)]
        >>> f = Frontier()
        >>> for level, h in range_nodes(0, leaves[:3]) + range_nodes(3, leaves[3:]):
        ...     f.push(level, h)
        >>> (f.end, f.root() == MemoryTree(leaves).root())
        (5, True)
        >>> g = Frontier(4, [MemoryTree(leaves[:4]).root()])
        >>> g.push(0, leaves[4]); g.root() == f.root()
        True
    """

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        levels = [lv for lv, _ in perfect_cover(0, size)]
        self.stack: list[tuple[int, bytes]] = list(zip(levels, hashes, strict=True))
        self.end = size

    def push(self, level: int, h: bytes, made: dict[Coord, bytes] | None = None) -> None:
        """Add the perfect subtree of ``2**level`` leaves right after the current ones
        (aligned to its size); the nodes the merges complete go to ``made``."""
        start = self.end
        self.end += 1 << level
        while self.stack and self.stack[-1][0] == level:
            h = node_hash(self.stack.pop()[1], h)
            start -= 1 << level
            level += 1
            if made is not None:
                made[(level, start >> level)] = h
        self.stack.append((level, h))

    def root(self) -> bytes:
        if not self.stack:
            return EMPTY_ROOT
        return fold_cover([h for _, h in self.stack])


def range_nodes(start: int, leaves: Sequence[bytes], tree: dict[Coord, bytes] | None = None) -> list[tuple[int, bytes]]:
    """Perfect subtrees ``(level, hash)``, left to right, covering leaves ``[start,
    start + len(leaves))``; with ``tree``, every perfect node inside the range goes there too.

        >>> leaves = [leaf_hash(bytes([i])) for i in range(3)]
        >>> [lv for lv, _ in range_nodes(0, leaves)], range_nodes(0, leaves)[0][1] == MemoryTree(leaves[:2]).root()
        ([1, 0], True)
    """
    out: list[tuple[int, bytes]] = []
    i, n = 0, len(leaves)
    node = NODE_PREFIX
    sha256 = hashlib.sha256
    while i < n:
        level = (n - i).bit_length() - 1
        p = start + i
        while p & ((1 << level) - 1):
            level -= 1
        row: Sequence[bytes] = leaves[i : i + (1 << level)]
        lv = 0
        if tree is not None:
            tree.update(zip(zip(itertools.repeat(0), range(p, p + len(row))), row, strict=False))
        while len(row) > 1:  # node_hash, inlined: half of a verification's hashing is here
            row = [sha256(node + a + b).digest() for a, b in zip(row[::2], row[1::2], strict=True)]
            lv += 1
            if tree is not None:
                tree.update(zip(zip(itertools.repeat(lv), range(p >> lv, (p >> lv) + len(row))), row, strict=False))
        out.append((level, row[0]))
        i += 1 << level
    return out


def _check_hash(name: str, value: bytes) -> None:
    if len(value) != HASH_SIZE:
        raise VerificationError(f"{name} is {len(value)} bytes, a SHA-256 hash has {HASH_SIZE}")


def root_from_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """The root that ``proof`` implies for ``leaf`` at ``index`` (RFC 9162 §2.1.3.2)."""
    _check_hash("leaf hash", leaf)
    if not 0 <= index < size:
        raise VerificationError(f"leaf index {index} is outside a tree of size {size}")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        _check_hash("proof hash", p)
        if sn == 0:
            raise VerificationError("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise VerificationError("inclusion proof is shorter than the tree is deep")
    return r


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    _check_hash("root", root)
    got = root_from_inclusion(leaf, index, size, proof)
    if got != root:
        raise VerificationError(
            f"inclusion proof for leaf {index} gives root {got.hex()[:16]}…, "
            f"expected {root.hex()[:16]}…"
        )


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check that the tree (size2, root2) extends (size1, root1) (RFC 9162 §2.1.4.2)."""
    if size1 < 0 or size2 < size1:
        raise VerificationError(f"tree size went from {size1} to {size2}: a log never shrinks")
    if size1 == size2:
        if proof:
            raise VerificationError("equal tree sizes need an empty consistency proof")
        if size1 == 0 and root1 != EMPTY_ROOT:
            raise VerificationError("an empty tree's root must be SHA-256 of nothing")
        if root1 != root2:
            raise VerificationError(
                f"same tree size {size1} but different roots "
                f"{root1.hex()[:16]}… and {root2.hex()[:16]}…: the log forked"
            )
        return
    if size1 == 0:
        # Every log extends the empty one; a checkpoint of size 0 pins nothing, and
        # RFC 9162 defines no proof for it, so refuse rather than pass vacuously.
        raise VerificationError("consistency from an empty tree proves nothing")
    if not proof:
        raise VerificationError("empty consistency proof between different tree sizes")
    _check_hash("old root", root1)
    _check_hash("new root", root2)
    for p in proof:
        _check_hash("proof hash", p)
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # size1 is a power of two: its root is on the path
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise VerificationError("consistency proof is longer than needed")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise VerificationError("consistency proof is shorter than needed")
    if fr != root1:
        raise VerificationError(
            f"consistency proof does not reproduce the old root {root1.hex()[:16]}… "
            f"(got {fr.hex()[:16]}…)"
        )
    if sr != root2:
        raise VerificationError(
            f"consistency proof does not reproduce the new root {root2.hex()[:16]}… "
            f"(got {sr.hex()[:16]}…)"
        )
