"""Digests: file sha256 (streaming, mmap windows), directory digest (OMS order, ignores, symlinks)."""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import random
import subprocess
import sys
from pathlib import Path

import model_signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlseal.errors import ConfigurationError
from mlseal.signing import digest as dg
from mlseal.signing.digest import digest_path, file_sha256, manifest_of


def random_bytes(size: int, seed: int = 0) -> bytes:
    """Different bytes in every window: a window hashed at a wrong offset, twice, or out
    of order changes the digest (a repeated block would hide it)."""
    return random.Random(seed * 1_000_003 + size).randbytes(size)


@pytest.mark.parametrize("size", [0, 1, dg._CHUNK + 1, dg._MMAP_MIN - 1, dg._MMAP_MIN, 3 * dg._WINDOW + 12345])
def test_file_sha256_matches_hashlib(tmp_path: Path, size: int) -> None:
    """At the real window size: below, at and above the mmap threshold, several windows
    and a size that is no multiple of the window."""
    data = random_bytes(size)
    f = tmp_path / "f"
    f.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert file_sha256(f) == expected
    assert file_sha256(f, prefetch=False) == expected
    assert digest_path(f) == expected


@pytest.fixture
def small_windows(monkeypatch: pytest.MonkeyPatch) -> int:
    """64 KiB mmap windows (a multiple of the mmap granularity), so that many windows,
    the prefetch hand-over and the last partial window are exercised on little data."""
    window = 16 * mmap.ALLOCATIONGRANULARITY
    monkeypatch.setattr(dg, "_WINDOW", window)
    monkeypatch.setattr(dg, "_MMAP_MIN", window)
    monkeypatch.setattr(dg, "_CHUNK", 4096 + 7)  # read loop: many reads, none aligned
    return window


@pytest.mark.parametrize("windows,extra", [(1, 0), (2, 0), (2, 1), (7, 4097), (9, -1), (0, 65535)])
def test_many_windows_match_hashlib(tmp_path: Path, small_windows: int, windows: int, extra: int) -> None:
    size = windows * small_windows + extra
    data = random_bytes(size, seed=windows)
    f = tmp_path / "f"
    f.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert file_sha256(f) == expected  # mmap windows with prefetch (or the read loop, below one window)
    assert file_sha256(f, prefetch=False) == expected
    assert dg.file_artifact_digest(f) == expected  # the tag check keeps the head, hashes it once
    if size:
        assert dg.range_sha256(f, 1, size - 1) == hashlib.sha256(data[1:-1]).hexdigest()


def test_parallel_directory_digests_match_hashlib(tmp_path: Path, small_windows: int) -> None:
    """Files hashed in parallel (no prefetch), each over several windows, and shards."""
    d = tmp_path / "m"
    d.mkdir()
    data = {f"w{i}.bin": random_bytes(i * small_windows + 1000 * i + 1, seed=i) for i in range(6)}
    for name, b in data.items():
        (d / name).write_bytes(b)
    want = {name: hashlib.sha256(b).hexdigest() for name, b in data.items()}
    for workers in (1, 2, 4):
        assert {r.name: r.sha256 for r in manifest_of(d, workers=workers).resources} == want
    shard = small_windows // 3 + 5
    sharded = {r.name: r.sha256 for r in manifest_of(d, shard_size=shard, workers=2).resources}
    assert sharded == {
        f"{name}:{start}:{min(start + shard, len(b))}": hashlib.sha256(b[start : start + shard]).hexdigest()
        for name, b in data.items()
        for start in range(0, len(b), shard)
    }


def test_sparse_file(tmp_path: Path) -> None:
    f = tmp_path / "sparse"
    with f.open("wb") as fh:
        fh.truncate(3 * dg._WINDOW + 5)
        fh.seek(dg._WINDOW + 7)
        fh.write(b"x")
    assert file_sha256(f) == hashlib.sha256(f.read_bytes()).hexdigest()


def test_unreadable_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"cannot read .*nope"):
        digest_path(tmp_path / "nope")


def test_directory_digest_binds_names_and_the_subject_digest_stays_oms(model_dir: Path) -> None:
    m = manifest_of(model_dir)
    assert [r.name for r in m.resources] == ["a/z", "a.txt", "config.json", "sub/weights.bin"]
    concat = b"".join(bytes.fromhex(file_sha256(model_dir / r.name)) for r in m.resources)
    assert m.subject_digest == hashlib.sha256(concat).hexdigest()  # OMS: digests only
    manifest = dg.DIRECTORY_TAG + b"".join(
        b"f" + len(r.name).to_bytes(4, "big") + r.name.encode() + bytes.fromhex(r.sha256) for r in m.resources
    )
    assert digest_path(model_dir) == hashlib.sha256(manifest).hexdigest() == m.artifact_digest
    assert digest_path(model_dir) != m.subject_digest


def test_directory_order_matches_upstream_on_awkward_names(tmp_path: Path) -> None:
    d = tmp_path / "m"
    names = ["a.b/c", "a/b", "a-b", "a b", "A", "a/b.c/d", "ä", "z0", "z/0", "_x", "a.b.c"]
    for n in names:
        p = d / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(n)
    upstream = model_signing.hashing.hash(d)
    assert [r.name for r in manifest_of(d).resources] == [str(r.identifier) for r in upstream.resource_descriptors()]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.text(alphabet="ab./-_", min_size=1, max_size=6), min_size=1, max_size=6, unique=True))
def test_sort_key_is_pure_posix_path_order(names: list[str]) -> None:
    from pathlib import PurePosixPath

    clean = sorted({str(PurePosixPath(n)) for n in names if n.strip("/.") and ".." not in n.split("/")})
    assert sorted(clean, key=dg.sort_key) == [str(p) for p in sorted(PurePosixPath(n) for n in clean)]


def test_default_ignores_and_extra_ignores(model_dir: Path) -> None:
    before = digest_path(model_dir)
    (model_dir / ".gitignore").write_text("*.pyc")
    (model_dir / ".github").mkdir()
    (model_dir / ".github" / "ci.yml").write_text("on: push")
    assert digest_path(model_dir) == before
    (model_dir / "model.sig").write_text("{}")
    assert digest_path(model_dir) != before
    assert digest_path(model_dir, ignore=["model.sig"]) == before
    # a nested .git is part of the model (only the top-level one is git's)
    (model_dir / "sub" / ".git").mkdir()
    (model_dir / "sub" / ".git" / "x").write_text("x")
    assert digest_path(model_dir, ignore=["model.sig"]) != before


def test_empty_directory_and_empty_subdirectories(tmp_path: Path) -> None:
    d = tmp_path / "empty"
    d.mkdir()
    assert digest_path(d) == hashlib.sha256(dg.DIRECTORY_TAG).hexdigest()  # never an empty file's
    (d / "sub").mkdir()
    assert digest_path(d) == hashlib.sha256(dg.DIRECTORY_TAG).hexdigest()  # as in OMS: no files, no part


def test_symlinks_refused_unless_allowed(model_dir: Path) -> None:
    (model_dir / "alias.txt").symlink_to("a.txt")
    with pytest.raises(ConfigurationError, match=r"alias\.txt is a symbolic link"):
        digest_path(model_dir)
    with_links = manifest_of(model_dir, allow_symlinks=True)
    alias = {r.name: r.sha256 for r in with_links.resources}["alias.txt"]
    assert alias == file_sha256(model_dir / "a.txt")
    link_dir = model_dir.parent / "linkdir"
    link_dir.symlink_to(model_dir)
    with pytest.raises(ConfigurationError, match="symbolic link"):
        digest_path(link_dir)


def test_special_files_are_refused(tmp_path: Path) -> None:
    d = tmp_path / "m"
    d.mkdir()
    os.mkfifo(d / "pipe")
    with pytest.raises(ConfigurationError, match="neither a regular file nor a directory"):
        digest_path(d)


def test_parallel_and_serial_agree(tmp_path: Path) -> None:
    d = tmp_path / "m"
    d.mkdir()
    for i in range(12):
        (d / f"shard-{i:02}.bin").write_bytes(os.urandom(1000 * i + 1))
    assert manifest_of(d, workers=1) == manifest_of(d, workers=4)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlseal.cli", *args], capture_output=True, text=True, check=False)


def test_cli_digest_file_and_directory(model_dir: Path) -> None:
    r = run_cli("digest", str(model_dir / "a.txt"))
    assert r.returncode == 0
    assert r.stdout.split()[0] == hashlib.sha256(b"hello").hexdigest()
    r = run_cli("digest", "--json", str(model_dir))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["kind"] == "directory" and out["sha256"] == digest_path(model_dir)
    assert [f["name"] for f in out["files"]] == ["a/z", "a.txt", "config.json", "sub/weights.bin"]


def test_cli_digest_missing_path_exits_2(tmp_path: Path) -> None:
    r = run_cli("digest", str(tmp_path / "missing"))
    assert r.returncode == 2
    assert "cannot read" in r.stderr


def test_digest_module_imports_no_heavy_dependencies() -> None:
    code = (
        "import sys, mlseal.cli, mlseal.signing.digest; mlseal.cli.build_parser();"
        "heavy = [m for m in ('cryptography', 'sigstore', 'yaml', 'model_signing', 'hvac', 'kfp') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "", f"heavy modules imported at start: {r.stdout}"
