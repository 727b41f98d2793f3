"""SLSA Provenance v1 for a model, as an in-toto Statement v1 in a DSSE envelope.

The statement says how the model was built, from the ledger's verified records only:

- ``subject``: the model (the producing record's output name, its ledger digest);
- ``buildDefinition``: ``buildType`` `BUILD_TYPE`; ``externalParameters``: the compiled
  pipeline (its name from the records, its SHA-256 when the compiled file is given) and
  the parameters *by reference* (each step's signed ledger record, by entry SHA-256);
  ``internalParameters``: the producing record (seq, stage, component, signer) and the
  ledger tree the records were read from; ``resolvedDependencies``: every dataset and
  model consumed on the way to the model, by digest;
- ``runDetails``: ``builder.id`` names the stage's signing identity from the producing
  record (`builder_id`), ``metadata.invocationId`` the KFP run and task,
  ``finishedOn`` the record's time; ``byproducts``: the record and the model's OMS bundle.

Who signs: the exporter signs with a key the caller supplies (``--key`` /
``--vault-transit``) that the trust file grants the producing record's stage (for a
trained model, ``train``), under the same grant rule records are held to (stages,
components, images). `verify_provenance` accepts an envelope only if its signer is such a
key, so a key that may sign ``evaluate`` records cannot vouch for how a model was built.

    >>> import json, tempfile
    >>> from mlseal.ledger import open_ledger
    >>> from mlseal.ledger.record import RecordDraft, OutputRef, Sha256Hex
    >>> from mlseal.signing.keys import LocalKeySigner
    >>> from mlseal.signing.trust import TrustRoot
    >>> from mlseal.export._source import load_model
    >>> key = LocalKeySigner.generate()
    >>> trust = TrustRoot.of(key.verifier("pipeline"))
    >>> led = open_ledger("sqlite:///" + tempfile.mkdtemp() + "/l.db")
    >>> raw = OutputRef(name="raw", uri="file:///raw.csv", sha256=Sha256Hex("ab" * 32))
    >>> _ = led.append(RecordDraft(stage="ingest", outputs=(raw,)), key, signer_name="pipeline")
    >>> envelope = sign_provenance(provenance(load_model(led, "ab" * 32, trust)), key, trust)
    >>> verify_provenance(envelope, trust).subject_sha256 == "ab" * 32
    True
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from mlseal import __version__
from mlseal.errors import ConfigurationError, VerificationError
from mlseal.export._source import ModelSource, ingest_source
from mlseal.ledger import _jcs
from mlseal.ledger.checkpoint import expected_origin
from mlseal.ledger.record import RECORD_PAYLOAD_TYPE, Record, is_sha256_hex
from mlseal.signing import dsse
from mlseal.signing.keys import Signer
from mlseal.signing.trust import TrustRoot

__all__ = [
    "BUILDER_PREFIX",
    "BUILD_TYPE",
    "IN_TOTO_PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "ProvenanceError",
    "VerifiedProvenance",
    "builder_id",
    "bundle_of",
    "check_exporter_key",
    "provenance",
    "record_uri",
    "sign_provenance",
    "verify_provenance",
]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
#: what a build of this type is: one sealed stage of a KFP pipeline, recorded in an mlseal ledger
BUILD_TYPE = "https://mlseal.dev/provenance/sealed-kfp-stage/v1"
#: the builder ids mlseal writes: ``urn:mlseal:signer:<trust-file name>:<key id>``
BUILDER_PREFIX = "urn:mlseal:signer:"


class ProvenanceError(VerificationError):
    """A provenance envelope is malformed, not signed by a trusted key, or signed by a key
    the trust file does not let vouch for the stage it describes."""


def builder_id(name: str, key_id: str) -> str:
    """The stage's signing identity as a URI: the trust file's name for the key, and the key id."""
    return f"{BUILDER_PREFIX}{name}:{key_id}"


def record_uri(origin: str, seq: int) -> str:
    """Where a ledger record is: ``mlseal-ledger://<origin>/records/<seq>``."""
    return f"mlseal-ledger://{origin}/records/{seq}"


def _source_uri(source: str) -> str:
    """An ingest record's source as a URI (a local path as a file: URI)."""
    return PurePosixPath(source).as_uri() if source.startswith("/") else source


def _record_ref(src: ModelSource, rec: Record, origin: str) -> dict[str, Any]:
    return {
        "name": f"{rec.stage}/{rec.component.name}" if rec.component.name else rec.stage,
        "uri": record_uri(origin, rec.seq),
        "digest": {"sha256": src.entry_sha256(rec.seq)},
        "mediaType": RECORD_PAYLOAD_TYPE,
    }


def provenance(src: ModelSource, *, pipeline_sha256: str | None = None, pipeline_uri: str | None = None,
               origin: str | None = None) -> dict[str, Any]:
    """The in-toto Statement (a JSON object) for `src`'s model; see the module docstring.

    `pipeline_sha256` is the SHA-256 of the compiled pipeline file (KFP IR) the run used,
    when the caller has it: the records name the pipeline, not its bytes.
    """
    origin = origin or expected_origin(src.trust)
    p, out = src.producer, src.output
    chain = sorted((*src.ancestors, p), key=lambda r: r.seq)
    pipeline: dict[str, Any] = {"name": p.run.pipeline or ""}
    if pipeline_uri:
        pipeline["uri"] = pipeline_uri
    if pipeline_sha256:
        pipeline["digest"] = {"sha256": pipeline_sha256}
    deps: list[dict[str, Any]] = []
    for up in src.upstream():
        ann: dict[str, Any] = {"consumedBy": up.consumer.seq}
        if up.producer is not None:
            ann["producedBy"] = up.producer.seq
            ann["stage"] = up.producer.stage
            made = next((o for o in up.producer.outputs if o.sha256 == up.input.sha256), None)
            if made is not None:
                ann["mediaType"] = made.media_type
                if made.bundle_sha256:
                    ann["bundleSha256"] = made.bundle_sha256
        deps.append({"name": up.input.name, "uri": up.input.uri, "digest": {"sha256": up.input.sha256},
                     "annotations": ann})
    for rec in chain:
        source = ingest_source(rec)
        if source is not None and source[1] not in {d["digest"]["sha256"] for d in deps}:
            deps.append({"name": "source", "uri": _source_uri(source[0]), "digest": {"sha256": source[1]},
                         "annotations": {"ingestedBy": rec.seq}})
    internal = {
        "record": {
            "seq": p.seq,
            "stage": p.stage,
            "component": p.component.name,
            **({"componentSha256": p.component.source_sha256} if p.component.source_sha256 else {}),
            **({"image": p.component.image} if p.component.image else {}),
            "entrySha256": src.entry_sha256(p.seq),
            "signer": {"name": src.signer_name(p), "keyId": p.signer.key_id},
        },
        "ledger": {"origin": origin, "treeSize": src.size, "rootHash": src.root.hex()},
    }
    invocation = "/".join(x for x in (p.run.run_id, p.run.task) if x) or record_uri(origin, p.seq)
    byproducts: list[dict[str, Any]] = [_record_ref(src, p, origin)]
    if out.bundle_sha256:
        byproducts.append({"name": f"{out.name}.sig", "uri": out.uri + ".sig",
                           "digest": {"sha256": out.bundle_sha256},
                           "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"})
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": out.name, "uri": out.uri, "digest": {"sha256": out.sha256}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "pipeline": pipeline,
                    "parameters": [_record_ref(src, r, origin) for r in chain],
                },
                "internalParameters": internal,
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {"id": builder_id(src.signer_name(p), p.signer.key_id),
                            "version": {"mlseal": __version__}},
                "metadata": {"invocationId": invocation, "finishedOn": p.time},
                "byproducts": byproducts,
            },
        },
    }


def check_exporter_key(signer: Signer, trust: TrustRoot, *, stage: str, component_sha256: str | None,
                       image: str | None, what: str) -> None:
    """The exporter's key must be a trust-file signer granted `stage` (and the component and
    image, when its grant names them), else ConfigurationError: the operator chose the wrong key."""
    if trust.signer_name(signer.key_id) is None:
        raise ConfigurationError(
            f"the signing key {signer.key_id[:16]}… is not a signer in the trust file {trust.source}: sign {what} "
            f"with the key of the {stage!r} stage identity"
        )
    why = trust.authorization_problem(signer.key_id, stage, component_sha256, image)
    if why is not None:
        raise ConfigurationError(
            f"the signing key may not vouch for a {stage!r} build: {why}; sign {what} with the key of the "
            f"{stage!r} stage identity"
        )


def sign_provenance(statement: Mapping[str, Any], signer: Signer, trust: TrustRoot) -> bytes:
    """The DSSE envelope (canonical JSON, one line with its newline: an ``.intoto.jsonl``).

    Refuses (ConfigurationError) a key the trust file does not grant the producing stage,
    and checks the signature it made before returning it.
    """
    rec = _internal_record(statement)
    check_exporter_key(signer, trust, stage=rec["stage"], component_sha256=rec.get("componentSha256"),
                       image=rec.get("image"), what="the provenance")
    envelope = dsse.sign(signer, IN_TOTO_PAYLOAD_TYPE, _jcs.dumps(dict(statement))) + b"\n"
    verify_provenance(envelope, trust)
    return envelope


def bundle_of(envelope: bytes, signer_public_pem: bytes) -> bytes:
    """The same envelope as a Sigstore bundle v0.3 naming the key by hint (no transparency log)."""
    from mlseal.signing.sigstore_bundle import key_bundle_bytes

    return key_bundle_bytes(dsse.parse(envelope.strip()), signer_public_pem)


@dataclass(frozen=True)
class VerifiedProvenance:
    """A provenance statement whose signer the trust file grants the stage it describes."""

    statement: dict[str, Any]
    signer_key_id: str
    signer_name: str
    subject_sha256: str
    stage: str
    record_seq: int
    record_entry_sha256: str


def _obj(v: object, where: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ProvenanceError(f"provenance {where} must be an object, got {type(v).__name__}")
    return v


def _internal_record(statement: Mapping[str, Any]) -> dict[str, Any]:
    pred = _obj(statement.get("predicate"), "predicate")
    bd = _obj(pred.get("buildDefinition"), "predicate.buildDefinition")
    internal = _obj(bd.get("internalParameters"), "buildDefinition.internalParameters")
    rec = _obj(internal.get("record"), "internalParameters.record")
    if not isinstance(rec.get("stage"), str) or not isinstance(rec.get("seq"), int):
        raise ProvenanceError("provenance internalParameters.record needs a stage and a seq")
    return rec


def verify_provenance(data: bytes, trust: TrustRoot) -> VerifiedProvenance:
    """Verify an exported provenance envelope (``.intoto.jsonl`` line or the JSON); raise naming why.

    1. one DSSE envelope of type ``application/vnd.in-toto+json``;
    2. a signature verifies with a record signer the trust file lists;
    3. the payload is an in-toto Statement v1 with one subject (a SHA-256 digest) and a
       SLSA Provenance v1 predicate of `BUILD_TYPE`;
    4. the trust file grants the signing key the stage of the record the statement
       describes (and its component and image, when the grant names them);
    5. ``builder.id`` names the record's signer as the trust file names its key, and that
       key is granted the stage too.
    """
    text = data.strip()
    if b"\n" in text:
        raise ProvenanceError("provenance file holds more than one line: expected one DSSE envelope")
    try:
        env = dsse.parse(text)  # 1
    except VerificationError as exc:
        raise ProvenanceError(f"provenance is not a DSSE envelope: {exc}") from None
    if env.payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise ProvenanceError(f"provenance payloadType is {env.payload_type[:80]!r}, expected {IN_TOTO_PAYLOAD_TYPE!r}")
    try:
        ok = dsse.verify(env, trust.signers.values())  # 2
    except VerificationError as exc:
        raise ProvenanceError(f"provenance signature: {exc}") from None
    try:
        st = json.loads(ok.payload)
    except (ValueError, UnicodeDecodeError):
        raise ProvenanceError("provenance payload is not JSON") from None
    st = _obj(st, "statement")  # 3
    if st.get("_type") != STATEMENT_TYPE:
        raise ProvenanceError(f"provenance _type is {str(st.get('_type'))[:80]!r}, expected {STATEMENT_TYPE!r}")
    if st.get("predicateType") != PREDICATE_TYPE:
        raise ProvenanceError(f"provenance predicateType is {str(st.get('predicateType'))[:80]!r}, "
                              f"expected {PREDICATE_TYPE!r}")
    subjects = st.get("subject")
    if not isinstance(subjects, list) or len(subjects) != 1:
        raise ProvenanceError("provenance must name exactly one subject (the model)")
    sha = _obj(_obj(subjects[0], "subject[0]").get("digest"), "subject[0].digest").get("sha256")
    if not is_sha256_hex(sha):
        raise ProvenanceError("provenance subject has no SHA-256 digest")
    pred = _obj(st.get("predicate"), "predicate")
    bd = _obj(pred.get("buildDefinition"), "predicate.buildDefinition")
    if bd.get("buildType") != BUILD_TYPE:
        raise ProvenanceError(f"provenance buildType is {str(bd.get('buildType'))[:80]!r}, expected {BUILD_TYPE!r}")
    rec = _internal_record(st)
    stage = rec["stage"]
    why = trust.authorization_problem(ok.key_id, stage, rec.get("componentSha256"), rec.get("image"))  # 4
    if why is not None:
        raise ProvenanceError(f"provenance of a {stage!r} build is signed by a key that may not vouch for it: {why}")
    signer = _obj(rec.get("signer"), "internalParameters.record.signer")  # 5
    rec_key = signer.get("keyId")
    if not isinstance(rec_key, str) or trust.signer_name(rec_key) is None:
        raise ProvenanceError(f"provenance names record signer key {str(rec_key)[:16]}…, which the trust file does "
                              "not list")
    run = _obj(pred.get("runDetails"), "predicate.runDetails")
    want = builder_id(trust.signer_name(rec_key) or "", rec_key)
    got = _obj(run.get("builder"), "runDetails.builder").get("id")
    if got != want:
        raise ProvenanceError(f"provenance builder.id is {str(got)[:120]!r}, but the record's signer is {want!r}")
    why = trust.authorization_problem(rec_key, stage, rec.get("componentSha256"), rec.get("image"))
    if why is not None:
        raise ProvenanceError(f"provenance builder {want!r} may not sign {stage!r} records: {why}")
    entry = rec.get("entrySha256")
    if not is_sha256_hex(entry):
        raise ProvenanceError("provenance internalParameters.record has no entrySha256")
    assert isinstance(sha, str) and isinstance(entry, str)
    return VerifiedProvenance(st, ok.key_id, trust.signer_name(ok.key_id) or "", sha, stage, rec["seq"], entry)
