"""A directory's digest binds its files' names and kinds, wherever a digest is compared.

The attacks: rename a file inside a recorded model directory (keeping the order of the
per-file digests), move a file into a subdirectory, swap two files' names, add an empty
file, turn a file into a directory holding the same bytes, replace the directory by one
file holding its digests (or its manifest), replace a recorded file by a directory whose
digest list hashes to the file's digest, and an empty directory for an empty file. Each
must change what `mlseal digest` prints, be reported by `mlseal ledger verify
--artifacts`, make a sealed stage refuse the input at the digest check (before the
bundle is looked at), and leave admission with a digest no record lists.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlseal.admission.decision import Reason
from mlseal.admission.engine import check_model
from mlseal.admission.manifest import ModelRef
from mlseal.admission.policy import Rules
from mlseal.cli import main
from mlseal.errors import ConfigurationError, VerificationError
from mlseal.ledger import open_ledger
from mlseal.ledger.artifacts import digest_uri
from mlseal.ledger.record import OutputRef, RecordDraft, Sha256Hex
from mlseal.ledger.verify import verify_ledger
from mlseal.signing import digest as dg
from mlseal.signing.digest import Resource, digest_path, file_sha256, manifest_of
from mlseal.signing.keys import LocalKeySigner
from mlseal.signing.trust import TrustRoot
from mlseal.stage import InputRefused, Stage
from tests.fixtures_pipeline import SealedEnv

Tamper = Callable[[Path], None]

#: the files of a small model; sorted, config.json < tokenizer/vocab.txt < weights.bin
MODEL_FILES = {
    "config.json": b'{"layers": 2}',
    "tokenizer/vocab.txt": b"a b c\n",
    "weights.bin": random.Random(7).randbytes(5000),
}


def write_model(d: Path) -> Path:
    for name, data in MODEL_FILES.items():
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(data)
    return d


def concatenated_digests(d: Path) -> bytes:
    """What the OMS subject digest hashes: the raw per-file digests, in manifest order."""
    return b"".join(bytes.fromhex(r.sha256) for r in manifest_of(d).resources)


# --- the tampers, each applied to a recorded model directory ------------------------------

def rename_keeping_order(d: Path) -> None:
    (d / "weights.bin").rename(d / "weights.pt")  # still sorts last: same digest sequence


def move_into_subdirectory(d: Path) -> None:
    (d / "tokenizer" / "v1").mkdir()
    (d / "tokenizer" / "vocab.txt").rename(d / "tokenizer" / "v1" / "vocab.txt")


def swap_two_names(d: Path) -> None:
    a, b = d / "config.json", d / "weights.bin"
    a.rename(d / "tmp")
    b.rename(a)
    (d / "tmp").rename(b)


def add_empty_file(d: Path) -> None:
    (d / "weights.bin.lock").write_bytes(b"")


def file_becomes_directory(d: Path) -> None:
    data = (d / "weights.bin").read_bytes()
    (d / "weights.bin").unlink()
    (d / "weights.bin").mkdir()
    (d / "weights.bin" / "part-0").write_bytes(data)  # same bytes, same place in the order


def directory_becomes_file_of_its_digests(d: Path) -> None:
    blob = concatenated_digests(d)
    shutil.rmtree(d)
    d.write_bytes(blob)


def directory_becomes_file_of_its_manifest(d: Path) -> None:
    blob = dg.directory_manifest_bytes(manifest_of(d).resources)
    shutil.rmtree(d)
    d.write_bytes(blob)


DIRECTORY_TAMPERS: list[Tamper] = [
    rename_keeping_order,
    move_into_subdirectory,
    swap_two_names,
    add_empty_file,
    file_becomes_directory,
    directory_becomes_file_of_its_digests,
    directory_becomes_file_of_its_manifest,
]


def tampered_digest(path: Path) -> str | None:
    """What `mlseal digest` makes of the tampered artifact (None: it refuses to digest it)."""
    try:
        return digest_path(path)
    except VerificationError as exc:
        assert "directory manifest" in str(exc)
        return None


# --- the digest itself ---------------------------------------------------------------------

@pytest.mark.parametrize("tamper", DIRECTORY_TAMPERS, ids=lambda t: t.__name__)
def test_every_directory_tamper_changes_the_digest(tmp_path: Path, tamper: Tamper) -> None:
    d = write_model(tmp_path / "model")
    recorded = digest_path(d)
    tamper(d)
    assert tampered_digest(d) != recorded


def test_a_rename_that_keeps_the_order_keeps_the_oms_subject_but_not_the_digest(tmp_path: Path) -> None:
    """The OMS subject digest binds no names (the bundle's file list does); ours does."""
    d = write_model(tmp_path / "model")
    before = manifest_of(d)
    rename_keeping_order(d)
    after = manifest_of(d)
    assert after.subject_digest == before.subject_digest
    assert after.artifact_digest != before.artifact_digest


def test_recorded_file_replaced_by_a_directory_of_its_preimage(tmp_path: Path) -> None:
    payload = b"any bytes at all"
    f = tmp_path / "model.bin"
    f.write_bytes(hashlib.sha256(payload).digest())  # a file holding one file's digest
    recorded = digest_path(f)
    f.unlink()
    f.mkdir()
    (f / "x").write_bytes(payload)  # its OMS subject digest is sha256(sha256(payload))
    assert manifest_of(f).subject_digest == recorded
    assert digest_path(f) != recorded


def test_empty_file_and_empty_directory_differ(tmp_path: Path) -> None:
    f, d = tmp_path / "f", tmp_path / "d"
    f.write_bytes(b"")
    d.mkdir()
    assert digest_path(f) == hashlib.sha256(b"").hexdigest()
    assert digest_path(d) != digest_path(f)
    assert manifest_of(d).subject_digest == digest_path(f)  # why OMS alone cannot tell them apart


def test_a_file_carrying_the_manifest_tag_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "forged"
    f.write_bytes(dg.DIRECTORY_TAG + b"anything")
    with pytest.raises(VerificationError, match=r"forged begins with mlseal's directory manifest tag"):
        digest_path(f)
    with pytest.raises(VerificationError, match="directory manifest tag"):
        manifest_of(f)  # and so `mlseal sign` / `verify_path` of it
    # inside a directory it is just a file: its entry is bound to its name
    d = tmp_path / "dir"
    d.mkdir()
    shutil.copy(f, d / "forged")
    assert [r.name for r in manifest_of(d).resources] == ["forged"]
    digest_path(d)
    # a prefix of the tag, or the tag later in the file, is fine
    f.write_bytes(dg.DIRECTORY_TAG[:-1])
    assert digest_path(f) == hashlib.sha256(dg.DIRECTORY_TAG[:-1]).hexdigest()
    f.write_bytes(b"x" + dg.DIRECTORY_TAG)
    assert digest_path(f) == file_sha256(f)


@pytest.mark.parametrize("size", [len(dg.DIRECTORY_TAG) + 10, dg._MMAP_MIN + 4097])
def test_the_tag_check_covers_the_bytes_that_are_hashed(tmp_path: Path, size: int) -> None:
    """Both read paths (read loop, mmap windows) refuse the tag and hash every byte."""
    f = tmp_path / "f"
    data = dg.DIRECTORY_TAG + random.Random(size).randbytes(size - len(dg.DIRECTORY_TAG))
    f.write_bytes(data)
    with pytest.raises(VerificationError, match="directory manifest tag"):
        dg.file_artifact_digest(f)
    f.write_bytes(b"\x01" + data[1:])
    assert dg.file_artifact_digest(f) == hashlib.sha256(b"\x01" + data[1:]).hexdigest()


# --- the manifest format -------------------------------------------------------------------

def test_directory_digest_is_sha256_of_the_documented_manifest(tmp_path: Path) -> None:
    """The format docs/signing.md describes, rebuilt here byte by byte."""
    d = write_model(tmp_path / "model")
    (d / "a").mkdir()
    (d / "a" / "z").write_bytes(b"z")  # a/z sorts before a.txt: path components, one by one
    (d / "a.txt").write_bytes(b"")
    (d / "ä.bin").write_bytes(b"umlaut")  # UTF-8 names
    names = ["a/z", "a.txt", "config.json", "tokenizer/vocab.txt", "weights.bin", "ä.bin"]
    m = b"\x00mlseal.dev/directory-manifest/v1\x00"
    for n in names:
        raw = n.encode()
        m += b"f" + len(raw).to_bytes(4, "big") + raw + hashlib.sha256((d / n).read_bytes()).digest()
    assert m.startswith(dg.DIRECTORY_TAG)
    assert dg.directory_manifest_bytes(manifest_of(d).resources) == m
    assert digest_path(d) == hashlib.sha256(m).hexdigest() == manifest_of(d).artifact_digest


def test_manifest_order_does_not_depend_on_the_order_given() -> None:
    rs = [Resource(n, hashlib.sha256(n.encode()).hexdigest()) for n in ("b", "a/z", "a.txt", "a-b")]
    assert dg.directory_digest(rs) == dg.directory_digest(reversed(rs)) == dg.directory_digest(sorted(
        rs, key=lambda r: dg.sort_key(r.name)))


def parse_manifest(m: bytes) -> list[Resource]:
    """The documented format read back: if this recovers every (kind, name, digest), two
    different file lists can never encode to the same bytes."""
    assert m.startswith(dg.DIRECTORY_TAG)
    i, out = len(dg.DIRECTORY_TAG), []
    while i < len(m):
        assert m[i : i + 1] == b"f"
        n = int.from_bytes(m[i + 1 : i + 5], "big")
        name = m[i + 5 : i + 5 + n].decode("utf-8")
        digest = m[i + 5 + n : i + 37 + n]
        assert len(digest) == 32
        out.append(Resource(name, digest.hex()))
        i += 37 + n
    return out


#: one path component: no "/", never "." or ".."; spaces, newlines, colons and non-ASCII are fine
_part = st.text(alphabet=st.sampled_from("ab.-_ äz0\n:"), min_size=1, max_size=4).filter(lambda p: p not in (".", ".."))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.lists(_part, min_size=1, max_size=3).map("/".join), st.binary(min_size=32, max_size=32),
                       max_size=6))
def test_manifest_encoding_reads_back_to_the_file_list(files: dict[str, bytes]) -> None:
    rs = [Resource(n, d.hex()) for n, d in files.items()]
    assert parse_manifest(dg.directory_manifest_bytes(rs)) == sorted(rs, key=lambda r: dg.sort_key(r.name))


@pytest.mark.parametrize("name", ["", ".", "/abs", "a//b", "a/./b", "a/../b", "..", "a/", "./a", "a\x00b", "\udcff"])
def test_manifest_refuses_names_that_are_not_normalised_relative_paths(name: str) -> None:
    with pytest.raises(ConfigurationError, match="cannot be named in a directory manifest"):
        dg.directory_manifest_bytes([Resource(name, "ab" * 32)])


def test_manifest_refuses_duplicate_names_and_malformed_digests() -> None:
    with pytest.raises(ConfigurationError, match="listed twice"):
        dg.directory_manifest_bytes([Resource("a", "ab" * 32), Resource("a", "cd" * 32)])
    with pytest.raises(ConfigurationError, match="64 lowercase hex"):
        dg.directory_manifest_bytes([Resource("a", "AB" * 32)])


def test_a_file_name_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "m"
    d.mkdir()
    (d / "ok.bin").write_bytes(b"x")
    with open(os.fsencode(d) + b"/w\xff.bin", "wb") as f:  # a Latin-1 name, as an old tool may write
        f.write(b"x")
    with pytest.raises(ConfigurationError, match=r"w\\xff\.bin': the file name is not valid UTF-8"):
        digest_path(d)


def test_sharded_manifest_has_no_artifact_digest(tmp_path: Path) -> None:
    d = write_model(tmp_path / "model")
    m = manifest_of(d, shard_size=1000)
    with pytest.raises(ConfigurationError, match="shards"):
        _ = m.artifact_digest


# --- where a directory digest is compared ---------------------------------------------------

@pytest.mark.parametrize("tamper", DIRECTORY_TAMPERS, ids=lambda t: t.__name__)
def test_ledger_verify_artifacts_reports_the_tamper(
    tmp_path: Path, tamper: Tamper, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    d = write_model(tmp_path / "model")
    url = f"sqlite:///{tmp_path}/l.db"
    with open_ledger(url) as led:
        led.append(RecordDraft(stage="train", outputs=(
            OutputRef(name="model", uri=d.as_uri(), sha256=Sha256Hex(digest_path(d))),)),
            ledger_signer, signer_name="pipeline")
        assert verify_ledger(led, ledger_trust, digest_uri=digest_uri).ok
        tamper(d)
        report = verify_ledger(led, ledger_trust, digest_uri=digest_uri)
    assert not report.ok, "tampering went unnoticed"
    (p,) = report.problems
    assert p.seq == 0 and p.kind == "artifact" and "model" in p.detail


def test_cli_ledger_verify_artifacts_and_digest_see_a_rename(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signer = LocalKeySigner.generate()
    signer.save(tmp_path / "k.pem", tmp_path / "k.pub.pem")
    (tmp_path / "trust.yaml").write_text("signers: [{name: pipeline, public_key: k.pub.pem}]\n")
    d = write_model(tmp_path / "model")
    assert main(["digest", str(d)]) == 0
    recorded = capsys.readouterr().out.split()[0]
    url = f"sqlite:///{tmp_path}/ledger.db"
    with open_ledger(url) as led:
        led.append(RecordDraft(stage="train", outputs=(
            OutputRef(name="model", uri=d.as_uri(), sha256=Sha256Hex(recorded)),)), signer, signer_name="pipeline")
    argv = ["ledger", "verify", "--ledger", url, "--trust", str(tmp_path / "trust.yaml"), "--artifacts"]
    assert main(argv) == 0, capsys.readouterr().err
    rename_keeping_order(d)
    capsys.readouterr()
    assert main(argv) == 1
    assert "artifact model" in capsys.readouterr().err
    assert main(["digest", str(d)]) == 0
    assert capsys.readouterr().out.split()[0] != recorded
    directory_becomes_file_of_its_manifest(d)
    assert main(["digest", str(d)]) == 1
    assert "directory manifest tag" in capsys.readouterr().err


def _seal_model(env: SealedEnv, path: Path) -> None:
    with Stage("train", name="train", sealing=env.sealing) as st:
        write_model(st.output("model", path, directory=True))
    assert st.result is not None


@pytest.mark.parametrize("tamper", DIRECTORY_TAMPERS, ids=lambda t: t.__name__)
def test_stage_refuses_the_tampered_input_at_the_digest(sealed_env: SealedEnv, tamper: Tamper) -> None:
    """Refused by the digest alone ("never recorded"), before the bundle's file list is read."""
    env = sealed_env
    model = env.root / "out" / "model"
    _seal_model(env, model)
    with Stage("evaluate", name="evaluate", sealing=env.sealing) as st:
        st.input("model", model)  # untampered: accepted
    tamper(model)
    with pytest.raises(InputRefused, match=r"never recorded as an output|directory manifest tag"), \
            Stage("evaluate", name="evaluate", sealing=env.sealing) as st:
        st.input("model", model)
    assert env.ledger.size() == 2


@pytest.mark.parametrize("tamper", [rename_keeping_order, directory_becomes_file_of_its_digests],
                         ids=lambda t: t.__name__)
def test_admission_finds_no_record_for_the_tampered_model(
    tmp_path: Path, tamper: Tamper, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    """Admission looks up the digest `mlseal digest MODEL` prints (the annotation)."""
    d = write_model(tmp_path / "model")
    with open_ledger(f"sqlite:///{tmp_path}/l.db") as led:
        led.append(RecordDraft(stage="train", outputs=(
            OutputRef(name="model", uri=d.as_uri(), sha256=Sha256Hex(digest_path(d))),)),
            ledger_signer, signer_name="pipeline")

        def findings() -> set[Reason]:
            ref = ModelRef("InferenceService", "m", "ns", Sha256Hex(digest_path(d)), d.as_uri(), "spec")
            return {f.code for f in check_model(ref, Rules(require_stages=()), led, ledger_trust)}

        assert Reason.UNKNOWN_DIGEST not in findings()
        tamper(d)
        assert Reason.UNKNOWN_DIGEST in findings()


def test_cli_digest_sign_and_verify_report_the_same_digests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = LocalKeySigner.generate()
    key.save(tmp_path / "k.pem", tmp_path / "k.pub.pem")
    d = write_model(tmp_path / "model")
    outs = []
    for argv in (["digest", "--json", str(d)],
                 ["sign", str(d), "--key", str(tmp_path / "k.pem"), "--json"],
                 ["verify", str(d), "--key", str(tmp_path / "k.pub.pem"), "--json"]):
        assert main(argv) == 0, capsys.readouterr().err
        outs.append(json.loads(capsys.readouterr().out))
    assert {o["sha256"] for o in outs} == {digest_path(d)}
    assert {o["subject_sha256"] for o in outs} == {manifest_of(d).subject_digest}
    assert digest_path(d) != manifest_of(d).subject_digest


def test_the_recipe_in_the_docs_computes_the_same_digest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/signing.md shows how to recompute a directory digest without mlseal."""
    doc = (Path(__file__).parents[1] / "docs" / "signing.md").read_text()
    (recipe,) = re.findall(r"```python\n(import hashlib, pathlib\n.*?)```", doc, re.S)
    d = write_model(tmp_path / "model")
    (d / "a").mkdir()
    (d / "a" / "z").write_bytes(b"z")
    (d / "a.txt").write_bytes(b"")
    (d / ".git").mkdir()
    (d / ".git" / "HEAD").write_bytes(b"ref")
    (d / "sub" / ".git").mkdir(parents=True)
    (d / "sub" / ".git" / "x").write_bytes(b"nested .git is part of the model")
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(recipe, "docs/signing.md", "exec"), {})  # our own documentation's code
    assert out.getvalue().strip() == digest_path(d)
