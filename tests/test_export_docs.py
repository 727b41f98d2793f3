"""docs/export.md's recipes for checking exports with standard tools, run against a real pack:
OpenSSL and jq for the DSSE signatures and the checkpoint, sha256sum for the members, tar, the
RFC 9162 proof snippet, and the Python checks with in-toto-attestation, in-toto and cyclonedx."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from mlseal.cli import main
from tests.export_world import World, make_world

DOC = Path(__file__).resolve().parent.parent / "docs" / "export.md"


def _blocks(lang: str) -> list[str]:
    return [b for lg, b in re.findall(r"```(\w*)\n(.*?)```", DOC.read_text(), re.S) if lg == lang]


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory: pytest.TempPathFactory) -> tuple[World, Path]:
    world = make_world(tmp_path_factory.mktemp("docs") / "w")
    d = tmp_path_factory.mktemp("unpacked")
    assert main(["export", "pack", world.model_sha256, *world.run_args(), "--key", str(world.key_files["train"]),
                 "--policy", str(world.policy), "--out", str(d / "model.pack")]) == 0
    with tarfile.open(d / "model.pack") as tar:
        tar.extractall(d, filter="data")
    shutil.copytree(world.dir / "keys", d / "keys")
    return world, d


def _sh(script: str, cwd: Path) -> str:
    for tool in ("openssl", "jq", "sha256sum", "tar"):
        assert shutil.which(tool), f"{tool} is needed by docs/export.md's recipes"
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "LC_ALL": "C"})
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def test_dsse_recipe_verifies_manifest_provenance_and_records_with_openssl(unpacked: tuple[World, Path]) -> None:
    world, d = unpacked
    fn = "dsse-verify() {\n" + _blocks("sh")[0] + "}\n"
    train = world.seqs["train"]
    out = _sh(fn + "dsse-verify mlseal-pack/manifest.dsse.json keys/train.pub.pem\n"
              "dsse-verify mlseal-pack/provenance.intoto.jsonl keys/train.pub.pem\n"
              f"dsse-verify mlseal-pack/records/{train}.entry keys/train.pub.pem\n"
              f"dsse-verify mlseal-pack/records/{world.seqs['anonymize']}.entry keys/process.pub.pem\n", d)
    assert out.count("Verified OK") == 4
    with pytest.raises(AssertionError, match="Verification failure"):
        _sh(fn + f"dsse-verify mlseal-pack/records/{train}.entry keys/process.pub.pem\n", d)


def test_pack_recipe_checks_members_and_checkpoint(unpacked: tuple[World, Path]) -> None:
    _, d = unpacked
    recipe = _blocks("sh")[2]
    lines = [x for x in recipe.splitlines() if x and not x.lstrip().startswith(("dsse-verify", "model_signing"))]
    script = "\n".join(x for x in lines if not x.startswith("tar xf"))
    out = _sh(script, d)
    assert "Verified OK" in out
    policy = d / "mlseal-pack" / "policy.yaml"
    kept = policy.read_bytes()
    policy.write_text("mode: warn\n")
    try:
        with pytest.raises(AssertionError, match="FAILED"):
            _sh(script, d)
    finally:
        policy.write_bytes(kept)


def test_proof_snippet_reproduces_the_checkpoint_root(unpacked: tuple[World, Path],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    world, d = unpacked
    monkeypatch.chdir(d)
    snippet = _blocks("python")[-1].replace("proofs/5.json", f"proofs/{world.seqs['train']}.json") \
        .replace("records/5.entry", f"records/{world.seqs['train']}.entry")
    exec(snippet, {})  # the documented snippet, run as a reader would


def test_python_checks_in_the_doc_run(unpacked: tuple[World, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    _, d = unpacked
    monkeypatch.chdir(d)
    shutil.copy(d / "mlseal-pack" / "provenance.intoto.jsonl", d / "model.intoto.jsonl")
    shutil.copy(d / "mlseal-pack" / "mlbom.cdx.json", d / "model.cdx.json")
    for snippet in _blocks("python")[:-1]:
        exec(snippet, {})
