"""`verify_path` decisions no other test pins: what a verified artifact reports, every
difference named at once, plain message-signature bundles, and OMS statements a trusted
key signed but that say something odd (absent defaults, bad shard sizes, odd names)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlseal.errors import ConfigurationError, VerificationError
from mlseal.signing import dsse, oms
from mlseal.signing.artifact import sign_path, verify_path
from mlseal.signing.digest import file_sha256, manifest_of
from mlseal.signing.keys import LocalKeySigner, public_pem
from mlseal.signing.policy import KeyPolicy, UnsafeNoSignatureCheck
from mlseal.signing.sigstore_bundle import key_bundle_bytes
from tests.fixtures_signing import KeyFiles
from tests.test_bundle_parsing import message_bundle

Obj = dict[str, Any]


def check(model: Path, sig: Path, key: KeyFiles, message: str) -> None:
    """verify_path refuses with exactly this message."""
    with pytest.raises(VerificationError) as err:
        verify_path(model, sig, key.signer.verifier())
    assert str(err.value) == message


def resign(model: Path, key: KeyFiles, edit: Callable[[Obj], object], **manifest: Any) -> Path:
    """A bundle over an edited statement, properly signed by the trusted key."""
    obj = oms.statement_obj(manifest_of(model, **manifest))
    edit(obj)
    payload = json.dumps(obj).encode()
    env = dsse.Envelope(
        oms.IN_TOTO_PAYLOAD_TYPE,
        payload,
        (dsse.Signature("", key.signer.sign(dsse.pae(oms.IN_TOTO_PAYLOAD_TYPE, payload))),),
    )
    out = model.with_name(model.name + ".edited.sig")
    out.write_bytes(key_bundle_bytes(env, public_pem(key.signer.public_key())))
    return out


# --- what a verified artifact reports ---------------------------------------------------


def test_verified_artifact_reports_path_and_subject(model_dir: Path, signing_key: KeyFiles) -> None:
    sig = sign_path(model_dir, signing_key.signer)
    v = verify_path(model_dir, sig, signing_key.signer.verifier(name="ci"))
    m = manifest_of(model_dir)
    assert v.path == model_dir
    assert v.subject_digest == m.subject_digest and v.digest == m.artifact_digest
    assert v.files == 4 and v.signer_name == "ci"


def test_missing_artifact_is_a_configuration_error(tmp_path: Path, signing_key: KeyFiles) -> None:
    with pytest.raises(ConfigurationError, match=rf"^cannot read {re.escape(str(tmp_path / 'gone'))}: No such file"):
        verify_path(tmp_path / "gone", None, signing_key.signer.verifier())


def test_verifying_with_something_that_is_not_a_key_or_policy(model_dir: Path, signing_key: KeyFiles) -> None:
    sig = sign_path(model_dir, signing_key.signer)
    with pytest.raises(ConfigurationError, match=r"^cannot verify with a str$"):
        verify_path(model_dir, sig, str(signing_key.public))  # type: ignore[arg-type]


# --- every difference, named ------------------------------------------------------------


def test_every_difference_is_named_in_one_message(model_dir: Path, signing_key: KeyFiles) -> None:
    sig = sign_path(model_dir, signing_key.signer)
    (model_dir / "config.json").write_text("{}")
    (model_dir / "a.txt").unlink()
    (model_dir / "a" / "z").unlink()
    (model_dir / "new.bin").write_bytes(b"x")
    (model_dir / "sub" / "extra.bin").write_bytes(b"y")
    with pytest.raises(VerificationError) as err:
        verify_path(model_dir, sig, signing_key.signer.verifier())
    parts = str(err.value).split("; ")
    assert len(parts) == 3
    assert parts[0].startswith(f"{model_dir / 'config.json'}: content differs (signed sha256 ")
    assert parts[1] == f"{model_dir}: signed file(s) missing: a.txt, a/z"
    assert parts[2] == f"{model_dir}: file(s) not covered by the signature: new.bin, sub/extra.bin"


def test_changed_shard_of_a_file_whose_name_has_colons(model_dir: Path, signing_key: KeyFiles) -> None:
    w = model_dir / "w:1:2.bin"
    w.write_bytes(bytes(range(256)) * 8)
    sig = sign_path(model_dir, signing_key.signer, shard_size=1000)
    verify_path(model_dir, sig, signing_key.signer.verifier())
    w.write_bytes(bytes(range(256)) * 7 + bytes(255) + b"\1")
    with pytest.raises(VerificationError) as err:
        verify_path(model_dir, sig, signing_key.signer.verifier())
    assert str(err.value).startswith(f"{w} bytes 1000-2000: content differs (signed sha256 ")


def test_shard_size_one_is_valid(tmp_path: Path, signing_key: KeyFiles) -> None:
    f = tmp_path / "tiny.bin"
    f.write_bytes(b"abc")
    sig = sign_path(f, signing_key.signer, shard_size=1)
    assert verify_path(f, sig, signing_key.signer.verifier()).files == 3


# --- statements a trusted key signed ------------------------------------------------------


def test_statement_without_ignore_paths_verifies(tmp_path: Path, signing_key: KeyFiles) -> None:
    d = tmp_path / "plain"
    d.mkdir()
    (d / "w.bin").write_bytes(b"w")
    sig = resign(d, signing_key, lambda o: o["predicate"]["serialization"].pop("ignore_paths"))
    assert verify_path(d, sig, signing_key.signer.verifier()).files == 1
    (d / ".gitignore").write_text("x")  # model-signing's default ignores still apply
    verify_path(d, sig, signing_key.signer.verifier())
    (d / "notes.txt").write_text("x")
    check(d, sig, signing_key, f"{d}: file(s) not covered by the signature: notes.txt")


def test_statement_without_allow_symlinks_does_not_allow_them(
    model_dir: Path, signing_key: KeyFiles, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    (model_dir / "link.txt").symlink_to(outside)
    sig = resign(
        model_dir, signing_key, lambda o: o["predicate"]["serialization"].pop("allow_symlinks"), allow_symlinks=True
    )
    with pytest.raises(ConfigurationError, match=r"link\.txt is a symbolic link"):
        verify_path(model_dir, sig, signing_key.signer.verifier())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda o: o["predicate"]["serialization"].update(allow_symlinks="yes"),
            "OMS statement: malformed serialization parameters",
        ),
        (
            lambda o: o["predicate"]["serialization"].update(ignore_paths=".git"),
            "OMS statement: malformed serialization parameters",
        ),
        (
            lambda o: o["predicate"]["serialization"].update(ignore_paths=["/etc"]),
            "OMS statement: ignore_paths must be relative paths inside the model: ['/etc']",
        ),
        (
            lambda o: o["predicate"]["serialization"].update(method="shards", shard_size=None),
            "OMS statement: shard_size must be a positive integer, got None",
        ),
        (
            lambda o: o["predicate"]["serialization"].update(method="shards", shard_size="40"),
            "OMS statement: shard_size must be a positive integer, got '40'",
        ),
        (
            lambda o: o["predicate"]["serialization"].update(method="shards", shard_size=True),
            "OMS statement: shard_size must be a positive integer, got True",
        ),
        (
            lambda o: o["predicate"]["serialization"].update(method="shards", shard_size=40.5),
            "OMS statement: shard_size must be a positive integer, got 40.5",
        ),
        (
            lambda o: o["predicate"]["serialization"].update(method="shards", shard_size=-4),
            "OMS statement: shard_size must be a positive integer, got -4",
        ),
        (
            lambda o: o["predicate"].pop("serialization"),
            "OMS statement: predicate.serialization must be a dict, got None",
        ),
        (lambda o: o["predicate"].update(resources={}), "OMS statement: predicate.resources must be a list, got {}"),
        (lambda o: o["predicate"]["resources"].__setitem__(0, "a.txt"), "OMS statement: resource 0 is not an object"),
        (
            lambda o: o["predicate"]["resources"][0].pop("name"),
            "OMS statement: resources[0].name must be a str, got None",
        ),
        (
            lambda o: o["predicate"]["resources"][1].update(digest=7),
            "OMS statement: resources[1].digest must be a str, got 7",
        ),
        (lambda o: o.pop("predicate"), "OMS statement: predicate must be a dict, got None"),
        (lambda o: o.update(subject={}), "OMS statement: subject must be a list, got {}"),
        (lambda o: o["subject"][0].pop("name"), "OMS statement: subject.name must be a str, got None"),
        (lambda o: o["subject"][0].update(digest="ab"), "OMS statement: subject.digest must be a dict, got 'ab'"),
        (
            lambda o: o["subject"][0]["digest"].pop("sha256"),
            "OMS statement: subject.digest.sha256 must be a str, got None",
        ),
    ],
    ids=[
        "symlinks-str",
        "ignore-str",
        "ignore-absolute",
        "shard-none",
        "shard-str",
        "shard-bool",
        "shard-frac",
        "shard-negative",
        "no-serialization",
        "resources-dict",
        "resource-str",
        "resource-no-name",
        "resource-int-digest",
        "no-predicate",
        "subject-dict",
        "subject-no-name",
        "subject-digest-str",
        "subject-no-sha256",
    ],
)
def test_malformed_statement_is_refused_with_its_defect(
    model_dir: Path, signing_key: KeyFiles, edit: Callable[[Obj], object], message: str
) -> None:
    check(model_dir, resign(model_dir, signing_key, edit), signing_key, message)


def test_sharded_resource_not_named_path_start_end(model_dir: Path, signing_key: KeyFiles) -> None:
    def edit(o: Obj) -> None:
        o["predicate"]["resources"][0]["name"] = "a.txt"

    sig = resign(model_dir, signing_key, edit, shard_size=1000)
    check(model_dir, sig, signing_key, "resource 'a.txt' is not named path:start:end")


@pytest.mark.parametrize(
    ("payload", "message"),
    [(b"\xff", "OMS statement is not valid JSON"), (b"[1]", "OMS statement is not a JSON object")],
)
def test_statement_that_is_not_an_object(model_dir: Path, signing_key: KeyFiles, payload: bytes, message: str) -> None:
    env = dsse.Envelope(
        oms.IN_TOTO_PAYLOAD_TYPE,
        payload,
        (dsse.Signature("", signing_key.signer.sign(dsse.pae(oms.IN_TOTO_PAYLOAD_TYPE, payload))),),
    )
    sig = model_dir.with_name("odd.sig")
    sig.write_bytes(key_bundle_bytes(env, public_pem(signing_key.signer.public_key())))
    check(model_dir, sig, signing_key, message)


def test_subject_mismatch_names_both_digests(model_dir: Path, signing_key: KeyFiles) -> None:
    sig = resign(model_dir, signing_key, lambda o: o["subject"][0]["digest"].update(sha256="0" * 64))
    computed = manifest_of(model_dir).subject_digest
    check(
        model_dir,
        sig,
        signing_key,
        f"subject digest {'0' * 16}… does not match the listed resources ({computed[:16]}…)",
    )


# --- plain Sigstore message signatures (one file's sha256, no OMS statement) ------------------


def _message_sig(path: Path, digest: bytes) -> Path:
    sig = path.with_name(path.name + ".sigstore")
    sig.write_text(json.dumps(message_bundle(digest)))
    return sig


def test_message_signature_without_signature_check(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(b"weights")
    sig = _message_sig(f, hashlib.sha256(b"weights").digest())
    with caplog.at_level(logging.WARNING):
        v = verify_path(f, sig, UnsafeNoSignatureCheck("offline mirror"))
    assert [r.getMessage() for r in caplog.records] == [
        "UNSAFE: bundle signature NOT checked (offline mirror); anyone could have written it"
    ]
    assert (v.path, v.digest, v.subject_digest, v.files, v.signer_name) == (
        f,
        file_sha256(f),
        file_sha256(f),
        1,
        "UNVERIFIED",
    )


def test_message_signature_changed_file(tmp_path: Path) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(b"weights")
    signed = hashlib.sha256(b"weights").hexdigest()
    sig = _message_sig(f, bytes.fromhex(signed))
    f.write_bytes(b"evil")
    with pytest.raises(VerificationError) as err:
        verify_path(f, sig, UnsafeNoSignatureCheck())
    assert str(err.value) == (f"{f}: content differs (signed sha256 {signed[:16]}…, found {file_sha256(f)[:16]}…)")


def test_message_signature_for_a_directory(model_dir: Path) -> None:
    sig = _message_sig(model_dir, b"\1" * 32)
    with pytest.raises(VerificationError) as err:
        verify_path(model_dir, sig, UnsafeNoSignatureCheck())
    assert str(err.value) == f"bundle signs a single file's digest, but {model_dir} is not a file"


def test_key_policy_refuses_a_message_signature(tmp_path: Path) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(b"weights")
    sig = _message_sig(f, hashlib.sha256(b"weights").digest())
    key = LocalKeySigner.generate()
    with pytest.raises(VerificationError) as err:
        verify_path(f, sig, KeyPolicy(key.verifier(name="ci")))
    assert str(err.value) == "key ci: bundle has no DSSE envelope to check"


# --- what the path is ------------------------------------------------------------------------


def test_symbolic_link_to_a_signed_file_is_named_as_such(tmp_path: Path, signing_key: KeyFiles) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(b"weights")
    sig = sign_path(f, signing_key.signer)
    link = tmp_path / "link.bin"
    link.symlink_to(f)
    with pytest.raises(ConfigurationError, match=rf"^{re.escape(str(link))} is a symbolic link; refusing to follow it"):
        verify_path(link, sig, signing_key.signer.verifier())
    sig = sign_path(f, signing_key.signer, allow_symlinks=True)
    assert verify_path(link, sig, signing_key.signer.verifier()).digest == file_sha256(f)


def test_fifo_is_not_taken_for_a_directory(tmp_path: Path, signing_key: KeyFiles) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(b"weights")
    sig = sign_path(f, signing_key.signer)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ConfigurationError, match=rf"^{re.escape(str(fifo))} is neither a regular file nor a directory"):
        verify_path(fifo, sig, signing_key.signer.verifier())


def test_changed_single_file_is_named_by_its_path(tmp_path: Path, signing_key: KeyFiles) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(b"weights")
    for shard_size in (None, 4):
        sig = sign_path(f, signing_key.signer, shard_size=shard_size)
        f.write_bytes(b"weighty")
        with pytest.raises(VerificationError) as err:
            verify_path(f, sig, signing_key.signer.verifier())
        shown = f"{f} bytes 4-7" if shard_size else f"{f}"
        assert str(err.value).startswith(f"{shown}: content differs (signed sha256 ")
        f.write_bytes(b"weights")
