"""`mlseal export slsa`: SLSA Provenance v1 in an in-toto Statement v1, checked with third-party code
(in-toto-attestation's protobuf bindings, in-toto's DSSE envelope, sigstore-python for the bundle form)."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from google.protobuf import json_format
from in_toto.models.metadata import Envelope as InTotoEnvelope
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.statement import Statement
from securesystemslib.exceptions import VerificationError as SslibVerificationError
from securesystemslib.signer import SSlibKey

from mlseal.cli import main
from mlseal.errors import VerificationError
from mlseal.export.slsa import BUILD_TYPE, IN_TOTO_PAYLOAD_TYPE, PREDICATE_TYPE, verify_provenance
from mlseal.ledger import _jcs
from mlseal.signing import dsse
from mlseal.signing.trust import load_trust
from tests.export_world import World, make_world, records


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("slsa") / "w")


def _export(world: World, out: Path, *extra: str, key: str = "train") -> int:
    return main(["export", "slsa", world.model_sha256, *world.run_args(), "--key", str(world.key_files[key]),
                 "--pipeline", str(world.pipeline), "--out", str(out), *extra])


def _statement(data: bytes) -> dict[str, Any]:
    env = json.loads(data)
    assert env["payloadType"] == IN_TOTO_PAYLOAD_TYPE
    statement: dict[str, Any] = json.loads(base64.b64decode(env["payload"]))
    return statement


def test_provenance_parses_with_in_toto_attestation_and_verifies_with_in_toto(world: World, tmp_path: Path) -> None:
    out = tmp_path / "model.intoto.jsonl"
    assert _export(world, out) == 0
    line = out.read_bytes()
    assert line.endswith(b"\n") and line.count(b"\n") == 1  # one line of JSON Lines
    env = json.loads(line)
    payload = base64.b64decode(env["payload"])
    # in-toto-attestation: the statement and the SLSA v1 predicate parse into the spec's protobuf
    # messages, strictly (an unknown or misspelled field is an error), and the statement validates
    st = json_format.Parse(payload, statement_pb2.Statement())
    Statement.copy_from_pb(st).validate()
    assert st.predicate_type == PREDICATE_TYPE
    prov = json_format.ParseDict(json.loads(payload)["predicate"], provenance_pb2.Provenance())
    assert prov.build_definition.build_type == BUILD_TYPE
    assert prov.run_details.builder.id.startswith("urn:mlseal:signer:train:")
    assert prov.run_details.metadata.finished_on.seconds > 0
    # in-toto: the DSSE envelope verifies with the train identity's public key, and with no other
    pem = (world.dir / "keys" / "train.pub.pem").read_bytes()
    keyid = env["signatures"][0]["keyid"]
    key = SSlibKey.from_crypto(load_pem_public_key(pem), keyid=keyid)
    verified = InTotoEnvelope.from_dict(copy.deepcopy(env)).verify([key], 1)
    assert list(verified) == [keyid]
    other = SSlibKey.from_crypto(load_pem_public_key((world.dir / "keys" / "evaluate.pub.pem").read_bytes()),
                                 keyid=keyid)
    with pytest.raises(SslibVerificationError):
        InTotoEnvelope.from_dict(copy.deepcopy(env)).verify([other], 1)


def test_provenance_says_what_the_records_say(world: World, tmp_path: Path) -> None:
    out = tmp_path / "p.jsonl"
    assert _export(world, out) == 0
    st = _statement(out.read_bytes())
    recs = records(world)
    train = recs[world.seqs["train"]]
    model = {"name": "model", "uri": world.model_dir.as_uri(), "digest": {"sha256": world.model_sha256}}
    assert st["subject"] == [model]
    bd, rd = st["predicate"]["buildDefinition"], st["predicate"]["runDetails"]
    # the compiled pipeline by digest, the parameters by reference (each record's entry SHA-256)
    assert bd["externalParameters"]["pipeline"]["digest"] == {"sha256": hashlib.sha256(world.pipeline.read_bytes())
                                                              .hexdigest()}
    with sqlite3.connect(world.url.removeprefix("sqlite:///")) as db:
        entries = dict(db.execute("SELECT seq, entry FROM mlseal_entries").fetchall())
    refs = {p["uri"].rsplit("/", 1)[1]: p["digest"]["sha256"] for p in bd["externalParameters"]["parameters"]}
    upstream = [s for k, s in world.seqs.items() if k not in ("evaluate", "deploy")]
    assert refs == {str(s): hashlib.sha256(bytes(entries[s])).hexdigest() for s in upstream}
    # every dataset and model upstream, by digest: each input on the way, and the raw source
    want = {i.sha256 for r in recs[: world.seqs["train"] + 1] for i in r.inputs}
    want.add(recs[world.seqs["ingest"]].params["source_sha256"])
    assert {d["digest"]["sha256"] for d in bd["resolvedDependencies"]} == want
    # the builder is the stage's signing identity; the KFP run is the invocation
    assert rd["builder"]["id"] == f"urn:mlseal:signer:train:{train.signer.key_id}"
    assert rd["metadata"] == {"invocationId": f"{train.run.run_id}/train", "finishedOn": train.time}
    assert bd["internalParameters"]["record"]["seq"] == world.seqs["train"]


def test_bundle_form_verifies_with_sigstore_python(world: World, tmp_path: Path) -> None:
    from sigstore.dsse import Envelope as SigstoreEnvelope
    from sigstore.dsse import Statement as SigstoreStatement
    from sigstore.dsse import _verify
    from sigstore_models.bundle.v1 import Bundle

    out = tmp_path / "model.sigstore.json"
    assert _export(world, out, "--bundle") == 0
    bundle = Bundle.from_json(out.read_bytes())
    pem = (world.dir / "keys" / "train.pub.pem").read_bytes()
    assert bundle.verification_material.public_key is not None
    assert bundle.verification_material.public_key.hint == hashlib.sha256(pem).hexdigest()
    envelope = SigstoreEnvelope._from_json(json.dumps(json.loads(out.read_bytes())["dsseEnvelope"]))
    key = load_pem_public_key(pem)
    assert isinstance(key, EllipticCurvePublicKey)
    payload = _verify(key, envelope)  # raises unless the signature verifies
    statement = SigstoreStatement(payload)
    assert statement._inner.predicate_type == PREDICATE_TYPE
    assert [x.digest.root["sha256"] for x in statement._inner.subjects] == [world.model_sha256]


def test_a_key_not_granted_the_producing_stage_cannot_sign_it(world: World, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.jsonl"
    assert _export(world, out, key="evaluate") == 2
    assert "may sign ['evaluate'] records, not 'train'" in capsys.readouterr().err
    assert not out.exists()
    assert _export(world, out, key="rogue") == 2
    assert "not a signer in the trust file" in capsys.readouterr().err
    assert not out.exists()


def test_verifier_refuses_provenance_signed_by_a_key_without_the_stage(world: World, tmp_path: Path) -> None:
    trust = load_trust(world.trust)
    out = tmp_path / "p.jsonl"
    assert _export(world, out) == 0
    st = _statement(out.read_bytes())
    verify_provenance(out.read_bytes(), trust)
    # the evaluate identity signs the same statement: a trusted key, but not for a train build
    forged = dsse.sign(world.keys["evaluate"], IN_TOTO_PAYLOAD_TYPE, _jcs.dumps(st))
    with pytest.raises(VerificationError, match="may not vouch for it: signer evaluate may sign"):
        verify_provenance(forged, trust)
    # the train identity claims another builder
    st2 = json.loads(json.dumps(st))
    st2["predicate"]["runDetails"]["builder"]["id"] = "urn:mlseal:signer:deploy:" + "0" * 64
    with pytest.raises(VerificationError, match=r"builder\.id"):
        verify_provenance(dsse.sign(world.keys["train"], IN_TOTO_PAYLOAD_TYPE, _jcs.dumps(st2)), trust)
    # a changed payload byte breaks the signature
    env = json.loads(out.read_bytes())
    env["payload"] = base64.b64encode(base64.b64decode(env["payload"]).replace(b"train", b"trian", 1)).decode()
    with pytest.raises(VerificationError, match="signature"):
        verify_provenance(json.dumps(env).encode(), trust)


def test_unknown_digest_is_refused_and_nothing_written(world: World, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.jsonl"
    rc = main(["export", "slsa", "ab" * 32, *world.run_args(), "--key", str(world.key_files["train"]),
               "--out", str(out)])
    assert rc == 1
    assert f"model sha256 {'ab' * 32}: no record in the ledger output this digest (unknown digest)" in \
        capsys.readouterr().err
    assert not out.exists()
    assert main(["export", "slsa", "not-a-digest", *world.run_args(), "--key", str(world.key_files["train"])]) == 1
    assert "is not a SHA-256 digest" in capsys.readouterr().err


def _rewrite(world: World, seq: int, old: bytes, new: bytes) -> None:
    db = sqlite3.connect(world.url.removeprefix("sqlite:///"))
    (entry,) = db.execute("SELECT entry FROM mlseal_entries WHERE seq = ?", (seq,)).fetchone()
    payload = json.loads(bytes(entry))["payload"]
    changed = base64.b64encode(base64.b64decode(payload).replace(old, new, 1)).decode()
    db.execute("UPDATE mlseal_entries SET entry = ? WHERE seq = ?", (bytes(entry).replace(payload.encode(),
                                                                                           changed.encode()), seq))
    db.commit()
    db.close()


def test_a_tampered_record_on_the_way_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # without a checkpoint: the record's signature no longer verifies, and the lineage names it
    world = make_world(tmp_path / "w", checkpoint=False)
    _rewrite(world, world.seqs["anonymize"], b'"rows_with_pii":1', b'"rows_with_pii":0')
    out = tmp_path / "p.jsonl"
    assert _export(world, out) == 1
    err = capsys.readouterr().err
    seq = world.seqs["anonymize"]
    assert "its lineage does not verify" in err and f"record {seq}: entry {seq}: entry signature does not verify" in err
    assert not out.exists()
    # with a signed checkpoint, the rewritten log is refused as a fork before anything is read from it
    world = make_world(tmp_path / "w2")
    _rewrite(world, world.seqs["anonymize"], b'"rows_with_pii":1', b'"rows_with_pii":0')
    assert _export(world, out) == 1
    assert "the log was rewritten (forked)" in capsys.readouterr().err
    assert not out.exists()


def test_a_model_recorded_by_an_untrusted_key_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mlseal.ledger import open_ledger
    from mlseal.ledger.record import Component, OutputRef, RecordDraft, Sha256Hex

    world = make_world(tmp_path / "w")
    rogue_model = OutputRef(name="model", uri="file:///m", sha256=Sha256Hex("cd" * 32))
    with open_ledger(world.url) as led:
        led.append(RecordDraft(stage="train", component=Component(name="train"), outputs=(rogue_model,)),
                   world.keys["rogue"], signer_name="train")
    rc = main(["export", "slsa", "cd" * 32, *world.run_args(), "--key", str(world.key_files["train"])])
    assert rc == 1
    err = capsys.readouterr().err
    assert "no trusted record produced it" in err and "does not list" in err
