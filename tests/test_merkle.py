"""RFC 9162 Merkle proofs: the transparency-dev conformance vectors and a reference model."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlseal.errors import VerificationError
from mlseal.ledger import merkle


def _b64(s: str) -> bytes:
    return base64.b64decode(s) if s else b""


def _vectors(testdata: Path, kind: str) -> list[Path]:
    files = sorted((testdata / "merkle" / kind).rglob("*.json"))
    assert len(files) > 50, f"expected the {kind} vectors, found {len(files)}"
    return files


def _check_vectors(testdata: Path, kind: str, verify: Callable[[dict[str, Any], list[bytes]], None]) -> None:
    """Run `verify(vector, proof)` on every vector of `kind`: it must pass exactly when
    the vector does not want an error, and otherwise raise `VerificationError`."""
    passed = rejected = 0
    for f in _vectors(testdata, kind):
        v = json.loads(f.read_text())
        proof = [_b64(p) for p in v["proof"] or []]
        if v["wantErr"]:
            with pytest.raises(VerificationError):
                verify(v, proof)
            rejected += 1
        else:
            verify(v, proof)
            passed += 1
    assert passed >= 5 and rejected >= 50


def test_inclusion_vectors(testdata: Path) -> None:
    _check_vectors(testdata, "inclusion", lambda v, proof: merkle.verify_inclusion(
        _b64(v["leafHash"]), v["leafIdx"], v["treeSize"], proof, _b64(v["root"])))


def test_consistency_vectors(testdata: Path) -> None:
    _check_vectors(testdata, "consistency", lambda v, proof: merkle.verify_consistency(
        v["size1"], v["size2"], proof, _b64(v["root1"]), _b64(v["root2"])))


def _mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1, written as literally as possible."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return merkle.node_hash(_mth(leaves[:k]), _mth(leaves[k:]))


def _path(m: int, leaves: list[bytes]) -> list[bytes]:
    n = len(leaves)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*_path(m, leaves[:k]), _mth(leaves[k:])]
    return [*_path(m - k, leaves[k:]), _mth(leaves[:k])]


def _subproof(m: int, leaves: list[bytes], complete: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if complete else [_mth(leaves)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*_subproof(m, leaves[:k], complete), _mth(leaves[k:])]
    return [*_subproof(m - k, leaves[k:], False), _mth(leaves[:k])]


@given(st.integers(min_value=1, max_value=70), st.data())
def test_proofs_match_the_rfc_definitions(n: int, data: st.DataObject) -> None:
    leaves = [merkle.leaf_hash(str(i).encode()) for i in range(n)]
    tree = merkle.MemoryTree(leaves)
    assert tree.root() == _mth(leaves) == merkle.root_from_leaves(leaves)[1]
    m = data.draw(st.integers(min_value=0, max_value=n - 1))
    proof = merkle.inclusion_proof(m, n, tree)
    assert proof == _path(m, leaves)
    merkle.verify_inclusion(leaves[m], m, n, proof, tree.root())
    size1 = data.draw(st.integers(min_value=1, max_value=n))
    cproof = merkle.consistency_proof(size1, n, tree)
    assert cproof == (_subproof(size1, leaves, True) if size1 < n else [])
    merkle.verify_consistency(size1, n, cproof, tree.root(size1), tree.root())


@given(st.integers(min_value=2, max_value=40), st.data())
def test_tampered_proofs_are_rejected(n: int, data: st.DataObject) -> None:
    leaves = [merkle.leaf_hash(bytes([i])) for i in range(n)]
    tree = merkle.MemoryTree(leaves)
    m = data.draw(st.integers(min_value=0, max_value=n - 1))
    proof = merkle.inclusion_proof(m, n, tree)
    if proof:
        i = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
        bad = list(proof)
        bad[i] = bytes([bad[i][0] ^ 1]) + bad[i][1:]
        with pytest.raises(VerificationError):
            merkle.verify_inclusion(leaves[m], m, n, bad, tree.root())
    with pytest.raises(VerificationError):
        merkle.verify_inclusion(leaves[m], m, n, proof, merkle.leaf_hash(b"other"))
    with pytest.raises(VerificationError):
        merkle.verify_inclusion(merkle.leaf_hash(b"forged"), m, n, proof, tree.root())


def test_append_nodes_builds_the_same_tree_as_memory_tree() -> None:
    store: dict[tuple[int, int], bytes] = {}

    class Reader:
        def get_nodes(self, coords: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
            return {c: store[c] for c in coords if c in store}

    leaves = [merkle.leaf_hash(b"%d" % i) for i in range(300)]
    for i, leaf in enumerate(leaves):
        siblings = Reader().get_nodes(merkle.append_coords(i))
        for level, index, h in merkle.append_nodes(i, leaf, siblings):
            store[(level, index)] = h
        assert merkle.root_hash(i + 1, Reader()) == _mth(leaves[: i + 1])
    assert merkle.inclusion_proof(123, 300, Reader()) == _path(123, leaves)


def test_missing_node_is_reported() -> None:
    tree = merkle.MemoryTree([merkle.leaf_hash(b"x")] * 4)
    tree.levels[2] = []
    with pytest.raises(VerificationError, match="missing"):
        merkle.root_hash(4, tree)
