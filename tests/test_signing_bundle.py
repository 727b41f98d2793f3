"""OMS bundles: sign/verify round trips and interoperability with upstream model_signing."""

from __future__ import annotations

import shutil
from pathlib import Path

import model_signing
import pytest

from mlseal.errors import VerificationError
from mlseal.signing.artifact import sign_path, verify_path
from mlseal.signing.digest import Resource, digest_path, directory_digest, file_sha256, manifest_of
from mlseal.signing.keys import PublicKeyVerifier
from tests.fixtures_signing import KeyFiles


def upstream_verify(path: Path, sig: Path, pub: Path) -> None:
    model_signing.verifying.Config().use_elliptic_key_verifier(public_key=pub).verify(path, sig)


def upstream_sign(path: Path, sig: Path, priv: Path) -> None:
    model_signing.signing.Config().use_elliptic_key_signer(private_key=priv).sign(path, sig)


def test_mlseal_signed_directory_verifies_with_upstream(model_dir: Path, signing_key: KeyFiles) -> None:
    sig = sign_path(model_dir, signing_key.signer)
    assert sig == model_dir.with_name("model.sig")
    upstream_verify(model_dir, sig, signing_key.public)
    (model_dir / "a.txt").write_text("tampered")
    with pytest.raises(ValueError, match=r"a\.txt"):
        upstream_verify(model_dir, sig, signing_key.public)


def test_mlseal_signed_file_verifies_with_upstream(tmp_path: Path, signing_key: KeyFiles) -> None:
    f = tmp_path / "model.onnx"
    f.write_bytes(b"\x00onnx" * 1000)
    sig = sign_path(f, signing_key.signer)
    assert sig.name == "model.onnx.sig"
    upstream_verify(f, sig, signing_key.public)


def test_upstream_signed_directory_verifies_with_mlseal(model_dir: Path, signing_key: KeyFiles, tmp_path: Path) -> None:
    sig = tmp_path / "upstream.sig"
    upstream_sign(model_dir, sig, signing_key.private)
    v = verify_path(model_dir, sig, PublicKeyVerifier.from_file(signing_key.public, name="pipeline"))
    assert v.signer_name == "pipeline"
    assert v.key_id == signing_key.signer.key_id
    assert v.digest == digest_path(model_dir)
    assert v.files == 4


def test_upstream_signed_file_verifies_with_mlseal(tmp_path: Path, signing_key: KeyFiles) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc" * 10_000)
    sig = tmp_path / "w.bin.sig"
    upstream_sign(f, sig, signing_key.private)
    v = verify_path(f, sig, signing_key.signer.verifier())
    assert v.digest == file_sha256(f) == digest_path(f)


def test_subject_digest_equals_upstream_and_the_digest_follows_from_upstreams_file_list(model_dir: Path) -> None:
    """The bundle's subject is upstream's; the ledger's directory digest is computed from
    the names and digests an upstream manifest lists (so any OMS "files" bundle yields it)."""
    m = model_signing.hashing.hash(model_dir)
    payload = model_signing._signing.signing.Payload(m)
    upstream_subject = payload.statement.pb.subject[0].digest["sha256"]
    assert manifest_of(model_dir).subject_digest == upstream_subject
    listed = [Resource(str(r.identifier), r.digest.digest_hex) for r in m.resource_descriptors()]
    assert digest_path(model_dir) == directory_digest(listed) != upstream_subject


def test_bundle_inside_the_directory_is_ignored(model_dir: Path, signing_key: KeyFiles) -> None:
    sig = sign_path(model_dir, signing_key.signer, out=model_dir / "model.sig")
    verify_path(model_dir, sig, signing_key.signer.verifier())
    upstream_verify(model_dir, sig, signing_key.public)
    assert digest_path(model_dir, ignore=["model.sig"]) == verify_path(
        model_dir, sig, signing_key.signer.verifier()
    ).digest


def test_moved_model_still_verifies(model_dir: Path, signing_key: KeyFiles, tmp_path: Path) -> None:
    sig = sign_path(model_dir, signing_key.signer)
    moved = tmp_path / "elsewhere" / "renamed-model"
    shutil.copytree(model_dir, moved)
    verify_path(moved, sig, signing_key.signer.verifier())


def test_changed_file_is_named(model_dir: Path, signing_key: KeyFiles) -> None:
    sig = sign_path(model_dir, signing_key.signer)
    (model_dir / "sub" / "weights.bin").write_bytes(b"evil")
    with pytest.raises(VerificationError, match=r"sub/weights\.bin: content differs"):
        verify_path(model_dir, sig, signing_key.signer.verifier())


def test_upstream_shard_serialized_bundle_verifies_with_mlseal(
    model_dir: Path, signing_key: KeyFiles, tmp_path: Path
) -> None:
    (model_dir / "empty.bin").write_bytes(b"")
    sig = tmp_path / "sharded.sig"
    cfg = model_signing.signing.Config().use_elliptic_key_signer(private_key=signing_key.private)
    cfg.set_hashing_config(model_signing.hashing.Config().use_shard_serialization(shard_size=4096))
    cfg.sign(model_dir, sig)
    v = verify_path(model_dir, sig, signing_key.signer.verifier())
    assert v.files == 3 + 19  # three small files; weights.bin (76,800 bytes) is 19 shards; empty.bin none
    w = model_dir / "sub" / "weights.bin"
    data = bytearray(w.read_bytes())
    data[5000] ^= 1
    w.write_bytes(bytes(data))
    with pytest.raises(VerificationError, match=r"sub/weights\.bin bytes 4096-8192: content differs"):
        verify_path(model_dir, sig, signing_key.signer.verifier())


def test_mlseal_shard_bundle_verifies_with_upstream(model_dir: Path, signing_key: KeyFiles, tmp_path: Path) -> None:
    f = tmp_path / "big.bin"
    f.write_bytes(bytes(range(256)) * 100)
    for target in (model_dir, f):
        sig = sign_path(target, signing_key.signer, shard_size=1000)
        upstream_verify(target, sig, signing_key.public)
        verify_path(target, sig, signing_key.signer.verifier())
