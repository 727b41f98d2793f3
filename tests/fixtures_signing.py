"""Pytest fixtures for the signing area (loaded by conftest.py): keys and small models."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from mlseal.signing.keys import LocalKeySigner


@dataclass(frozen=True)
class KeyFiles:
    signer: LocalKeySigner
    private: Path
    public: Path


def make_key(directory: Path, name: str = "signer") -> KeyFiles:
    signer = LocalKeySigner.generate()
    priv, pub = directory / f"{name}.pem", directory / f"{name}.pub.pem"
    signer.save(priv, pub)
    return KeyFiles(signer, priv, pub)


@pytest.fixture
def signing_key(tmp_path: Path) -> KeyFiles:
    """A fresh EC P-256 key pair written to tmp_path (private 0600, public PEM)."""
    return make_key(tmp_path / "keys")


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A small model directory: nested files, a name that sorts differently by path
    component than by string (a/z vs a.txt), and a .git directory that is ignored."""
    d = tmp_path / "model"
    (d / "sub").mkdir(parents=True)
    (d / "a").mkdir()
    (d / "config.json").write_text('{"layers": 2}')
    (d / "a.txt").write_text("hello")
    (d / "a" / "z").write_text("z")
    (d / "sub" / "weights.bin").write_bytes(bytes(range(256)) * 300)
    (d / ".git").mkdir()
    (d / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return d
