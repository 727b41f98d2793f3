"""Large-file digests on random bytes, so that a byte range read at a wrong offset, twice
or out of order changes the result: shards across mmap windows and read chunks, the
sharded bundle a verifier checks, and windows moved inside a file (periodic test data,
such as one block repeated, would hide all of these)."""

from __future__ import annotations

import hashlib
import mmap
import random
from pathlib import Path

import pytest

from mlseal.errors import VerificationError
from mlseal.signing import digest as dg
from mlseal.signing.artifact import sign_path, verify_path
from mlseal.signing.keys import LocalKeySigner


@pytest.fixture
def small_windows(monkeypatch: pytest.MonkeyPatch) -> int:
    window = 4 * mmap.ALLOCATIONGRANULARITY
    monkeypatch.setattr(dg, "_WINDOW", window)
    monkeypatch.setattr(dg, "_MMAP_MIN", window)
    monkeypatch.setattr(dg, "_CHUNK", 4096 + 13)
    return window


def rand(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def test_random_ranges_match_the_slice(tmp_path: Path, small_windows: int) -> None:
    data = rand(5 * small_windows + 777, 1)
    f = tmp_path / "f"
    f.write_bytes(data)
    rng = random.Random(2)
    edges = [0, 1, dg._CHUNK - 1, dg._CHUNK, dg._CHUNK + 1, small_windows - 1, small_windows, len(data) - 1]
    pairs = [(a, b) for a in edges for b in edges if a < b] + [
        tuple(sorted(rng.sample(range(len(data) + 1), 2))) for _ in range(40)
    ]
    for a, b in pairs:
        assert dg.range_sha256(f, a, b) == hashlib.sha256(data[a:b]).hexdigest(), (a, b)


def test_moved_window_changes_the_digest(tmp_path: Path, small_windows: int) -> None:
    """Two files with the same windows in another order: each hashes to its own bytes."""
    blocks = [rand(small_windows, 10 + i) for i in range(4)]
    f, g = tmp_path / "f", tmp_path / "g"
    f.write_bytes(b"".join(blocks) + b"tail")
    g.write_bytes(b"".join([blocks[1], blocks[0], *blocks[2:]]) + b"tail")
    for p in (f, g):
        want = hashlib.sha256(p.read_bytes()).hexdigest()
        assert dg.file_sha256(p) == want and dg.file_sha256(p, prefetch=False) == want
        assert dg.file_artifact_digest(p) == want
    assert dg.file_sha256(f) != dg.file_sha256(g)


def test_sharded_manifest_on_random_data(tmp_path: Path, small_windows: int) -> None:
    d = tmp_path / "m"
    d.mkdir()
    data = rand(3 * small_windows + 1001, 3)
    (d / "w.bin").write_bytes(data)
    shard = small_windows // 3 + 17  # shards straddle windows and read chunks
    got = {r.name: r.sha256 for r in dg.manifest_of(d, shard_size=shard, workers=3).resources}
    assert got == {
        f"w.bin:{s}:{min(s + shard, len(data))}": hashlib.sha256(data[s : s + shard]).hexdigest()
        for s in range(0, len(data), shard)
    }


def test_swapped_shards_fail_bundle_verification(tmp_path: Path) -> None:
    """Two equal-size shards of a file exchanged: the bytes are all there, at the wrong
    offsets; the verifier names the first range that differs."""
    key = LocalKeySigner.generate()
    d = tmp_path / "model"
    d.mkdir()
    shard = 4096
    data = rand(6 * shard + 100, 4)
    w = d / "weights.bin"
    w.write_bytes(data)
    sig = sign_path(d, key, shard_size=shard, out=tmp_path / "model.sig")
    assert verify_path(d, sig, key.verifier()).files == 7
    w.write_bytes(data[:shard] + data[2 * shard : 3 * shard] + data[shard : 2 * shard] + data[3 * shard :])
    with pytest.raises(VerificationError, match=r"weights\.bin bytes 4096-8192: content differs"):
        verify_path(d, sig, key.verifier())
