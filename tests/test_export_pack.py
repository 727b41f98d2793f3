"""`mlseal export pack` and `mlseal verify-pack`: one file an auditor checks offline, every byte covered."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlseal.cli import main
from mlseal.errors import VerificationError
from mlseal.export.pack import MANIFEST, MANIFEST_TYPE, _tar, verify_pack_bytes
from mlseal.ledger import _jcs
from mlseal.signing import dsse
from mlseal.signing.trust import load_trust
from tests.export_world import World, make_world, witness


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("pack") / "w")


def _export(world: World, out: Path, *extra: str, key: str = "train") -> int:
    return main(["export", "pack", world.model_sha256, *world.run_args(), "--key", str(world.key_files[key]),
                 "--policy", str(world.policy), "--pipeline", str(world.pipeline), "--out", str(out), *extra])


@pytest.fixture(scope="module")
def pack(world: World, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    out = tmp_path_factory.mktemp("packs") / "model.pack"
    assert _export(world, out) == 0
    return out.read_bytes()


def _members(data: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]


def test_pack_verifies_offline_and_holds_every_piece(world: World, pack: bytes, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "model.pack"
    path.write_bytes(pack)
    capsys.readouterr()
    assert main(["verify-pack", str(path), "--trust", str(world.trust), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["model_sha256"] == world.model_sha256
    assert report["records"] == sorted(world.seqs.values())
    assert report["admission"] == {"allowed": True, "reasons": []}
    assert report["signer"] == "train" and report["checkpoint"]["size"] == len(world.seqs)
    names = [n for n, _ in _members(pack)]
    assert names[0] == MANIFEST
    for want in ("checkpoint", "provenance.intoto.jsonl", "mlbom.cdx.json", "policy.yaml", "admission.json",
                 f"records/{world.seqs['train']}.entry", f"proofs/{world.seqs['train']}.json"):
        assert f"mlseal-pack/{want}" in names
    # standard tools read it: tar lists it, and the model's OMS bundle from the pack verifies the
    # model's bytes with the upstream model_signing library and the train identity's public key
    listing = subprocess.run(["tar", "tf", str(path)], capture_output=True, text=True, check=True).stdout.split()
    assert listing == names
    import model_signing

    members = dict(_members(pack))
    rec = json.loads(members["mlseal-pack/mlbom.cdx.json"])["metadata"]["component"]["externalReferences"][1]
    bundle = tmp_path / "model.sig"
    bundle.write_bytes(members[f"mlseal-pack/bundles/{rec['hashes'][0]['content']}.sig"])
    model_signing.verifying.Config().use_elliptic_key_verifier(
        public_key=world.dir / "keys" / "train.pub.pem").verify(world.model_dir, bundle)
    # the decision the pack carries names the policy it holds
    decision = json.loads(members["mlseal-pack/admission.json"])
    assert decision["policy_sha256"] == hashlib.sha256(members["mlseal-pack/policy.yaml"]).hexdigest()


def _positions(data: bytes) -> list[int]:
    """Every header field of every member, the first, middle and last byte of each member's data and
    of its padding, the end blocks, the manifest's structure, and every 97th byte: each member and the
    container structure."""
    header_fields = [0, 60, 99, 100, 106, 107, 108, 115, 116, 123, 124, 130, 134, 135, 136, 147, 148, 152, 154, 155,
                     156, 157, 256, 257, 262, 263, 264, 265, 296, 297, 328, 329, 337, 345, 420, 499, 500, 511]
    out: set[int] = set()
    end = 0
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar:
            out.update(m.offset + f for f in header_fields)
            out.update({m.offset_data, m.offset_data + m.size // 2, m.offset_data + m.size - 1})
            padded = m.offset_data + -(-m.size // 512) * 512
            if padded > m.offset_data + m.size:
                out.update({m.offset_data + m.size, padded - 1})
            end = padded
            if m.name == MANIFEST:
                # the one member no digest covers: its JSON structure and the tail of each base64
                # string (where a second spelling of the same bytes would hide), byte for byte
                body = data[m.offset_data: m.offset_data + m.size]
                for k, c in enumerate(body):
                    if c in b'{}[]:,"=' or body[k + 1: k + 2] in (b'"', b"="):
                        out.update(m.offset_data + k - j for j in range(4))
    out.update({end, end + 511, end + 512, end + 1023, (end + len(data)) // 2, len(data) - 1})
    out.update(range(0, len(data), 97))
    return sorted(p for p in out if p < len(data))


@pytest.mark.slow
def test_a_changed_byte_anywhere_is_refused(world: World, pack: bytes) -> None:
    trust = load_trust(world.trust)
    verify_pack_bytes(pack, trust)
    positions = _positions(pack)
    assert len(positions) > len(pack) // 97
    accepted = []
    for n, i in enumerate(positions):
        changed = bytearray(pack)
        changed[i] ^= 1 << (n % 8)
        try:
            verify_pack_bytes(bytes(changed), trust)
        except VerificationError:
            continue
        accepted.append(i)
    assert accepted == []
    for cut in (len(pack) - 1, len(pack) - 512, len(pack) // 2, 512, 0):
        with pytest.raises(VerificationError):
            verify_pack_bytes(pack[:cut], trust)
    for extra in (b"\0" * 512, b"x"):
        with pytest.raises(VerificationError):
            verify_pack_bytes(pack + extra, trust)


def test_refusals_name_what_is_wrong(world: World, pack: bytes, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    members = _members(pack)
    # a member's bytes: the manifest's digest no longer matches
    i = next(n for n, (name, _) in enumerate(members) if name.endswith("admission.json"))
    altered = [(n, b.replace(b'"allowed": true', b'"allowed": false')) if k == i else (n, b)
               for k, (n, b) in enumerate(members)]
    path = tmp_path / "p.pack"
    path.write_bytes(_tar(altered))
    assert main(["verify-pack", str(path), "--trust", str(world.trust)]) == 1
    assert "pack member mlseal-pack/admission.json: sha256" in capsys.readouterr().err
    # a header field (the member's time) only: the container is not the canonical archive
    with tarfile.open(fileobj=io.BytesIO(pack)) as tar:
        offset = next(m.offset for m in tar if m.name.endswith("checkpoint"))
    changed = bytearray(pack)
    changed[offset + 146] = ord("1")
    changed[offset + 148: offset + 156] = b"        "
    changed[offset + 148: offset + 155] = f"{sum(changed[offset:offset + 512]):06o}\0".encode()
    path.write_bytes(bytes(changed))
    assert main(["verify-pack", str(path), "--trust", str(world.trust)]) == 1
    assert "the pack was altered: byte" in capsys.readouterr().err


def _resign(members: list[tuple[str, bytes]], key: Any, edit: Any = None) -> bytes:
    """Members with a new manifest: listed afresh, signed by `key` (an attacker's repack)."""
    body = [(n, b) for n, b in members if n != MANIFEST]
    manifest = json.loads(dsse.parse(dict(members)[MANIFEST]).payload)
    if edit is not None:
        body = edit(body, manifest)
    manifest["members"] = [{"name": n, "size": len(b), "sha256": hashlib.sha256(b).hexdigest()} for n, b in body]
    return _tar([(MANIFEST, dsse.sign(key, MANIFEST_TYPE, _jcs.dumps(manifest))), *body])


def test_a_pack_signed_by_a_key_without_the_models_stage_is_refused(world: World, pack: bytes) -> None:
    trust = load_trust(world.trust)
    verify_pack_bytes(_resign(_members(pack), world.keys["train"]), trust)  # the same, re-signed: fine
    with pytest.raises(VerificationError, match="signer evaluate may sign \\['evaluate'\\] records, not 'train'"):
        verify_pack_bytes(_resign(_members(pack), world.keys["evaluate"]), trust)
    with pytest.raises(VerificationError, match="no valid signature from a trusted key"):
        verify_pack_bytes(_resign(_members(pack), world.keys["rogue"]), trust)


def test_a_repack_that_drops_a_record_breaks_the_lineage(world: World, pack: bytes) -> None:
    gone = world.seqs["anonymize"]

    def drop(body: list[tuple[str, bytes]], manifest: dict[str, Any]) -> list[tuple[str, bytes]]:
        manifest["records"] = [s for s in manifest["records"] if s != gone]
        manifest["bundles"] = [b for b in manifest["bundles"] if b["seq"] != gone]
        return [(n, b) for n, b in body if n not in (f"mlseal-pack/records/{gone}.entry",
                                                        f"mlseal-pack/proofs/{gone}.json")]

    with pytest.raises(VerificationError, match=f"is not an output of a record of the pack \\(producer record {gone}"):
        verify_pack_bytes(_resign(_members(pack), world.keys["train"], drop), load_trust(world.trust))


def test_a_record_from_another_ledger_is_not_proven(world: World, pack: bytes, tmp_path: Path) -> None:
    other = make_world(tmp_path / "other")
    seq = world.seqs["train"]
    from mlseal.ledger import open_ledger

    with open_ledger(other.url) as led:
        foreign = led.entry(seq)

    def swap(body: list[tuple[str, bytes]], manifest: dict[str, Any]) -> list[tuple[str, bytes]]:
        return [(n, foreign if n == f"mlseal-pack/records/{seq}.entry" else b) for n, b in body]

    # the other world's train key is not in this trust file
    with pytest.raises(VerificationError, match=f"pack record {seq}: entry is signed by key"):
        verify_pack_bytes(_resign(_members(pack), world.keys["train"], swap), load_trust(world.trust))


def test_an_altered_proof_is_refused(world: World, pack: bytes) -> None:
    seq = world.seqs["evaluate"]

    def bend(body: list[tuple[str, bytes]], manifest: dict[str, Any]) -> list[tuple[str, bytes]]:
        out = []
        for n, b in body:
            if n == f"mlseal-pack/proofs/{seq}.json":
                proof = json.loads(b)
                proof["path"][0] = "00" * 32
                b = json.dumps(proof).encode()
            out.append((n, b))
        return out

    with pytest.raises(VerificationError, match=f"pack record {seq} is not proven in the checkpointed ledger"):
        verify_pack_bytes(_resign(_members(pack), world.keys["train"], bend), load_trust(world.trust))


def test_an_auditor_who_does_not_trust_the_keys_refuses_the_pack(world: World, pack: bytes, tmp_path: Path) -> None:
    other = make_world(tmp_path / "other")
    with pytest.raises(VerificationError, match="the pack manifest: no valid signature from a trusted key"):
        verify_pack_bytes(pack, load_trust(other.trust))


def test_nothing_is_written_when_the_export_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mlseal.ledger import open_ledger
    from mlseal.ledger.record import Component, InputRef, RecordDraft, Sha256Hex

    world = make_world(tmp_path / "w")
    out = tmp_path / "model.pack"
    out.write_bytes(b"the previous pack")
    # an unknown digest
    rc = main(["export", "pack", "ab" * 32, *world.run_args(), "--key", str(world.key_files["train"]),
               "--policy", str(world.policy), "--out", str(out)])
    assert rc == 1 and "(unknown digest)" in capsys.readouterr().err
    # a record of the model appended after the newest checkpoint: it cannot be proven yet
    with open_ledger(world.url) as led:
        late = led.append(RecordDraft(stage="evaluate", component=Component(name="evaluate"),
                                      inputs=(InputRef(name="model", uri="file:///m",
                                                       sha256=Sha256Hex(world.model_sha256),
                                                       producer_seq=world.seqs["train"]),),
                                      metrics={"accuracy": 0.95}), world.keys["evaluate"],
                          signer_name="evaluate").seq
    assert _export(world, out) == 1
    assert f"does not cover record {late}; run `mlseal ledger witness`" in capsys.readouterr().err
    # a key that may not vouch for the model's stage
    assert _export(world, out, key="deploy") == 2
    assert "may sign ['deploy'] records, not 'train'" in capsys.readouterr().err
    assert out.read_bytes() == b"the previous pack"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".model.pack")] == []
    witness(world)
    assert _export(world, out) == 0
    assert main(["verify-pack", str(out), "--trust", str(world.trust)]) == 0


def test_a_denied_model_is_packed_with_its_denial(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    world = make_world(tmp_path / "w", failed_evaluation=True)
    out = tmp_path / "model.pack"
    assert _export(world, out) == 0
    assert "admission DENIED by policy.yaml" in capsys.readouterr().err
    assert main(["verify-pack", str(out), "--trust", str(world.trust)]) == 0
    err = capsys.readouterr().err
    assert "admission decision in the pack: DENIED" in err and "is marked failed" in err


def test_a_trust_file_without_checkpoint_keys_cannot_pack(world: World, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    doc = yaml.safe_load(world.trust.read_text())
    doc.pop("checkpoint_keys")
    trust = world.dir / "trust-no-cp.yaml"
    trust.write_text(yaml.safe_dump(doc))
    out = tmp_path / "p.pack"
    rc = main(["export", "pack", world.model_sha256, "--ledger", world.url, "--trust", str(trust),
               "--key", str(world.key_files["train"]), "--policy", str(world.policy), "--out", str(out)])
    assert rc == 2 and "lists no checkpoint_keys" in capsys.readouterr().err
    assert not out.exists()
