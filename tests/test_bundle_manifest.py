"""The re-hash `verify_path` compares a bundle with: every file is seen (an unreadable or
symlinked directory is not silently skipped), and what cannot be read is named."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlseal.errors import ConfigurationError, VerificationError
from mlseal.signing.artifact import sign_path, verify_path
from mlseal.signing.digest import DEFAULT_IGNORED, list_files, manifest_of, range_sha256
from tests.fixtures_signing import KeyFiles


def test_unreadable_directory_added_to_a_model_is_not_skipped(
    model_dir: Path, signing_key: KeyFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An extra directory the verifier cannot list must fail verification, not hide its files."""
    sig = sign_path(model_dir, signing_key.signer)
    hidden = model_dir / "hidden"
    hidden.mkdir()
    (hidden / "payload.pkl").write_bytes(b"evil")
    real_scandir = os.scandir

    def scandir(path: Any = ".") -> Iterator[os.DirEntry[str]]:
        if Path(os.fsdecode(path)) == hidden:
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(ConfigurationError, match=rf"^cannot read {re.escape(str(hidden))}: Permission denied$"):
        verify_path(model_dir, sig, signing_key.signer.verifier())


def test_changed_file_in_an_allowed_symlinked_directory(model_dir: Path, signing_key: KeyFiles, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "tokenizer.json").write_text("{}")
    (model_dir / "tok").symlink_to(shared, target_is_directory=True)
    sig = sign_path(model_dir, signing_key.signer, allow_symlinks=True)
    v = verify_path(model_dir, sig, signing_key.signer.verifier())
    assert v.files == 5
    (shared / "tokenizer.json").write_text('{"evil": 1}')
    with pytest.raises(VerificationError, match=r"tok/tokenizer\.json: content differs"):
        verify_path(model_dir, sig, signing_key.signer.verifier())


def test_broken_symlink_in_a_model_that_allows_symlinks(model_dir: Path, signing_key: KeyFiles) -> None:
    sig = sign_path(model_dir, signing_key.signer, allow_symlinks=True)
    (model_dir / "dangling").symlink_to(model_dir / "nowhere")
    link = model_dir / "dangling"
    with pytest.raises(ConfigurationError, match=rf"^{re.escape(str(link))} is a broken symbolic link: No such file"):
        verify_path(model_dir, sig, signing_key.signer.verifier())


def test_symlinks_are_refused_by_default(model_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "t").write_text("t")
    (model_dir / "link").symlink_to(tmp_path / "t")
    for call in (lambda: manifest_of(model_dir), lambda: list_files(model_dir)):
        with pytest.raises(ConfigurationError, match="is a symbolic link; refusing to follow it"):
            call()


def test_sharded_bundle_inside_the_model_is_ignored(model_dir: Path, signing_key: KeyFiles) -> None:
    sig = sign_path(model_dir, signing_key.signer, out=model_dir / "model.sig", shard_size=1000)
    assert manifest_of(model_dir, ignore=["model.sig"], shard_size=1000).ignore_paths[0] == "model.sig"
    verify_path(model_dir, sig, signing_key.signer.verifier())


def test_manifest_of_the_current_directory_is_named_after_it(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(model_dir)
    assert manifest_of(".").name == "model"


def test_zero_shard_size_is_refused(model_dir: Path, signing_key: KeyFiles) -> None:
    with pytest.raises(ConfigurationError, match=r"^shard size must be positive, got 0$"):
        sign_path(model_dir, signing_key.signer, shard_size=0)


def test_unreadable_paths_are_named(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    with pytest.raises(ConfigurationError, match=rf"^cannot read {re.escape(str(gone))}: No such file"):
        manifest_of(gone)
    with pytest.raises(ConfigurationError, match=rf"^cannot read {re.escape(str(gone))}: No such file"):
        range_sha256(gone, 0, 1)


def test_file_that_shrank_while_hashed(tmp_path: Path) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    with pytest.raises(
        ConfigurationError, match=rf"^{re.escape(str(f))} shrank while it was hashed \(wanted bytes up to 5\)$"
    ):
        range_sha256(f, 1, 5)


def test_single_file_manifest_lists_the_default_ignores(tmp_path: Path) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(b"w")
    assert manifest_of(f).ignore_paths == DEFAULT_IGNORED
