"""Every way a signed model can be tampered with fails, with a reason a person can act on."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlseal.errors import ConfigurationError, VerificationError
from mlseal.signing import dsse, oms
from mlseal.signing.artifact import sign_path, verify_path
from mlseal.signing.digest import manifest_of
from mlseal.signing.keys import LocalKeySigner
from mlseal.signing.sigstore_bundle import key_bundle_bytes
from tests.fixtures_signing import KeyFiles


@pytest.fixture
def signed(model_dir: Path, signing_key: KeyFiles) -> tuple[Path, Path, KeyFiles]:
    return model_dir, sign_path(model_dir, signing_key.signer), signing_key


def check(model: Path, sig: Path, key: KeyFiles, pattern: str) -> None:
    with pytest.raises(VerificationError, match=pattern):
        verify_path(model, sig, key.signer.verifier())


def test_untouched_model_verifies(signed: tuple[Path, Path, KeyFiles]) -> None:
    model, sig, key = signed
    assert verify_path(model, sig, key.signer.verifier()).files == 4


def test_changed_file(signed: tuple[Path, Path, KeyFiles]) -> None:
    model, sig, key = signed
    (model / "config.json").write_text('{"layers": 3}')
    check(model, sig, key, r"config\.json: content differs \(signed sha256 [0-9a-f]{16}…, found [0-9a-f]{16}…\)")


def test_one_flipped_bit(signed: tuple[Path, Path, KeyFiles]) -> None:
    model, sig, key = signed
    w = model / "sub" / "weights.bin"
    data = bytearray(w.read_bytes())
    data[1234] ^= 0x01
    w.write_bytes(bytes(data))
    check(model, sig, key, r"sub/weights\.bin: content differs")


def test_added_file(signed: tuple[Path, Path, KeyFiles]) -> None:
    model, sig, key = signed
    (model / "sub" / "backdoor.py").write_text("import os")
    check(model, sig, key, r"not covered by the signature: sub/backdoor\.py")


def test_removed_file(signed: tuple[Path, Path, KeyFiles]) -> None:
    model, sig, key = signed
    (model / "a" / "z").unlink()
    check(model, sig, key, r"signed file\(s\) missing: a/z")


def test_renamed_file_names_both_paths(signed: tuple[Path, Path, KeyFiles]) -> None:
    model, sig, key = signed
    (model / "a.txt").rename(model / "b.txt")
    check(model, sig, key, r"missing: a\.txt.*not covered by the signature: b\.txt")


def test_git_directory_changes_do_not_matter(signed: tuple[Path, Path, KeyFiles]) -> None:
    model, sig, key = signed
    (model / ".git" / "HEAD").write_text("ref: refs/heads/other\n")
    verify_path(model, sig, key.signer.verifier())


def test_wrong_key(signed: tuple[Path, Path, KeyFiles]) -> None:
    model, sig, _ = signed
    other = LocalKeySigner.generate()
    with pytest.raises(VerificationError, match=r"signed by key [0-9a-f]{16}…, not by key other"):
        verify_path(model, sig, other.verifier(name="other"))


def test_wrong_key_without_hint(signed: tuple[Path, Path, KeyFiles]) -> None:
    model, sig, _ = signed
    obj = json.loads(sig.read_bytes())
    del obj["verificationMaterial"]["publicKey"]["hint"]
    sig.write_text(json.dumps(obj))
    with pytest.raises(VerificationError, match="does not verify with key other"):
        verify_path(model, sig, LocalKeySigner.generate().verifier(name="other"))


def test_swapped_bundle_from_another_model(signed: tuple[Path, Path, KeyFiles], tmp_path: Path) -> None:
    model, _, key = signed
    other = tmp_path / "other-model"
    other.mkdir()
    (other / "weights.bin").write_bytes(b"other weights")
    other_sig = sign_path(other, key.signer)
    check(model, other_sig, key, r"content differs|missing|not covered")
    # every differing file is named
    with pytest.raises(VerificationError) as err:
        verify_path(model, other_sig, key.signer.verifier())
    assert "weights.bin" in str(err.value) and "config.json" in str(err.value)


def test_swapped_signature_from_another_bundle(signed: tuple[Path, Path, KeyFiles], tmp_path: Path) -> None:
    model, sig, key = signed
    f = tmp_path / "f.bin"
    f.write_bytes(b"x")
    other = json.loads(sign_path(f, key.signer).read_bytes())
    mine = json.loads(sig.read_bytes())
    mine["dsseEnvelope"]["signatures"] = other["dsseEnvelope"]["signatures"]
    sig.write_text(json.dumps(mine))
    check(model, sig, key, "bundle signature does not verify with key")


def test_edited_payload_breaks_signature(signed: tuple[Path, Path, KeyFiles]) -> None:
    model, sig, key = signed
    (model / "config.json").write_text("evil")
    obj = json.loads(sig.read_bytes())
    payload = json.loads(base64.b64decode(obj["dsseEnvelope"]["payload"]))
    fresh = oms.statement_obj(manifest_of(model))
    payload["predicate"] = fresh["predicate"]
    payload["subject"] = fresh["subject"]
    obj["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    sig.write_text(json.dumps(obj))
    check(model, sig, key, "bundle signature does not verify with key")


def test_file_bundle_used_for_a_directory(signed: tuple[Path, Path, KeyFiles], tmp_path: Path) -> None:
    model, _, key = signed
    f = tmp_path / "one.bin"
    f.write_bytes(b"1")
    check(model, sign_path(f, key.signer), key, "signs a single file named 'one.bin', but .* is a directory")


def test_directory_bundle_used_for_a_file(signed: tuple[Path, Path, KeyFiles], tmp_path: Path) -> None:
    _, sig, key = signed
    f = tmp_path / "one.bin"
    f.write_bytes(b"1")
    check(f, sig, key, r"signs a directory model \(4 files\) named 'model', but .* is a file")


@pytest.mark.parametrize("cut", [0, 1, 50, -1])
def test_truncated_bundle(signed: tuple[Path, Path, KeyFiles], cut: int) -> None:
    model, sig, key = signed
    data = sig.read_bytes()
    sig.write_bytes(data[:cut] if cut >= 0 else data[:-1])
    check(model, sig, key, r"is empty|is not valid JSON \(truncated or corrupt")


def test_non_json_bundle(signed: tuple[Path, Path, KeyFiles]) -> None:
    model, sig, key = signed
    sig.write_bytes(b"\x89PNG\r\n\x1a\n binary")
    check(model, sig, key, "is not UTF-8 JSON|is not valid JSON")
    sig.write_text("[1, 2]")
    check(model, sig, key, "is not a JSON object")


def test_wrong_media_type(signed: tuple[Path, Path, KeyFiles]) -> None:
    model, sig, key = signed
    obj = json.loads(sig.read_bytes())
    obj["mediaType"] = "application/json"
    sig.write_text(json.dumps(obj))
    check(model, sig, key, "media type 'application/json'")


def _resign(model: Path, key: KeyFiles, edit: Callable[[dict[str, Any]], object]) -> Path:
    """A bundle whose statement is edited and then properly signed (a trusted signer's mistake)."""
    obj = oms.statement_obj(manifest_of(model))
    edit(obj)
    payload = json.dumps(obj).encode()
    env = dsse.Envelope(
        oms.IN_TOTO_PAYLOAD_TYPE,
        payload,
        (dsse.Signature("", key.signer.sign(dsse.pae(oms.IN_TOTO_PAYLOAD_TYPE, payload))),),
    )
    out = model.with_name("edited.sig")
    from mlseal.signing.keys import public_pem

    out.write_bytes(key_bundle_bytes(env, public_pem(key.signer.public_key())))
    return out


def test_wrong_predicate_type(model_dir: Path, signing_key: KeyFiles) -> None:
    sig = _resign(model_dir, signing_key, lambda o: o.update(predicateType="https://slsa.dev/provenance/v1"))
    check(model_dir, sig, signing_key, "predicate type is 'https://slsa.dev/provenance/v1', expected")


def test_pre_1_0_predicate_is_refused(model_dir: Path, signing_key: KeyFiles) -> None:
    sig = _resign(model_dir, signing_key, lambda o: o.update(predicateType=oms.PREDICATE_TYPE_V01))
    check(model_dir, sig, signing_key, "pre-1.0 model-signing format")


def test_wrong_statement_type(model_dir: Path, signing_key: KeyFiles) -> None:
    sig = _resign(model_dir, signing_key, lambda o: o.update(_type="https://in-toto.io/Statement/v0.1"))
    check(model_dir, sig, signing_key, "statement type is 'https://in-toto.io/Statement/v0.1'")


def test_subject_digest_disagreeing_with_resources(model_dir: Path, signing_key: KeyFiles) -> None:
    sig = _resign(model_dir, signing_key, lambda o: o["subject"][0]["digest"].update(sha256="0" * 64))
    check(model_dir, sig, signing_key, "subject digest 0000000000000000… does not match the listed resources")


def test_wrong_payload_type(model_dir: Path, signing_key: KeyFiles) -> None:
    payload = oms.statement_bytes(manifest_of(model_dir))
    sig_bytes = signing_key.signer.sign(dsse.pae("application/json", payload))
    env = dsse.Envelope("application/json", payload, (dsse.Signature("", sig_bytes),))
    from mlseal.signing.keys import public_pem

    sig = model_dir.with_name("pt.sig")
    sig.write_bytes(key_bundle_bytes(env, public_pem(signing_key.signer.public_key())))
    check(model_dir, sig, signing_key, "payload type is 'application/json', expected 'application/vnd.in-toto\\+json'")


def test_symlink_refused_unless_allowed(model_dir: Path, signing_key: KeyFiles, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    (model_dir / "link.txt").symlink_to(outside)
    with pytest.raises(ConfigurationError, match=r"link\.txt is a symbolic link"):
        sign_path(model_dir, signing_key.signer)
    sig = sign_path(model_dir, signing_key.signer, allow_symlinks=True)
    verify_path(model_dir, sig, signing_key.signer.verifier())
    outside.write_text("changed")
    check(model_dir, sig, signing_key, r"link\.txt: content differs")


def test_missing_bundle_is_a_configuration_error(model_dir: Path, signing_key: KeyFiles) -> None:
    with pytest.raises(ConfigurationError, match="cannot read bundle"):
        verify_path(model_dir, None, signing_key.signer.verifier())


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda o: o["predicate"]["serialization"].update(method="tensors"), "serialization method='tensors'"),
        (lambda o: o["predicate"]["serialization"].update(hash_type="blake3"), "hash_type='blake3'"),
        (lambda o: o["predicate"]["resources"][0].update(algorithm="md5"), "algorithm 'md5', expected 'sha256'"),
        (lambda o: o["predicate"]["resources"].append(dict(o["predicate"]["resources"][0])), "is listed twice"),
        (lambda o: o["predicate"]["resources"][0].update(digest="XYZ"), "is not 64 lowercase hex digits"),
        (lambda o: o["predicate"]["serialization"].update(ignore_paths=["../etc"]), "relative paths inside the model"),
        (lambda o: o.update(subject=[]), "exactly one subject, found 0"),
        (lambda o: o["predicate"]["serialization"].update(method="shards", shard_size=0), "shard_size must be"),
    ],
    ids=["method", "hash-type", "algorithm", "duplicate", "digest", "ignore-escape", "no-subject", "shard-size"],
)
def test_malformed_statements_signed_by_a_trusted_key(
    model_dir: Path, signing_key: KeyFiles, edit: Callable[[dict[str, Any]], object], reason: str
) -> None:
    import re

    sig = _resign(model_dir, signing_key, edit)
    check(model_dir, sig, signing_key, re.escape(reason))
