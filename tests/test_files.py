"""`mlseal._files.write_atomic`: all or nothing, exact modes, no temp file left behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlseal._files import write_atomic


def test_replaces_the_file_with_the_exact_mode(tmp_path: Path) -> None:
    dest = tmp_path / "key.pem"
    dest.write_bytes(b"old")
    write_atomic(dest, b"new", mode=0o600)
    assert dest.read_bytes() == b"new"
    assert dest.stat().st_mode & 0o777 == 0o600
    write_atomic(dest, b"newer", mode=0o644)
    assert dest.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key.pem"]


def test_without_a_mode_the_umask_applies(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        write_atomic(tmp_path / "a", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o640


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "model.json"
    dest.write_bytes(b"old")

    def crash(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="No space"):
        write_atomic(dest, b"new")
    assert dest.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json"]


def test_create_only_keeps_the_first_writer(tmp_path: Path) -> None:
    dest = tmp_path / "key"
    assert write_atomic(dest, b"first", mode=0o600, replace=False) is True
    assert write_atomic(dest, b"second", mode=0o600, replace=False) is False
    assert dest.read_bytes() == b"first"
    assert oct(dest.stat().st_mode & 0o777) == "0o600"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key"], "no temporary file left behind"
