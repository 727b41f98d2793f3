"""The audit pack: one file with everything needed to check a model's provenance offline.

A pack is a deterministic POSIX tar (ustar; every member a regular file under
``mlseal-pack/``, mode 0644, owner 0, time 0) holding:

=====================================  ==================================================
``manifest.dsse.json``                 (first) DSSE envelope, type `MANIFEST_TYPE`, over the
                                       manifest: the model, the checkpoint, and the name,
                                       size and SHA-256 of every other member, in order
``checkpoint``                         a checkpoint of the ledger signed by a checkpoint key
``records/<seq>.entry``                each record of the model's lineage (and what was made
                                       from it): the ledger entry's exact bytes
``proofs/<seq>.json``                  its RFC 9162 inclusion proof against the checkpoint
``bundles/<sha256>.sig``               the OMS bundles the records bound, by bundle SHA-256
``provenance.intoto.jsonl``            the SLSA provenance (`mlseal.export.slsa`)
``mlbom.cdx.json``                     the CycloneDX ML-BOM (`mlseal.export.mlbom`)
``policy.yaml``, ``admission.json``    the admission policy and the decision it gave
``README.txt``                         how to check each piece with standard tools
=====================================  ==================================================

The manifest is signed with the exporter's key, which the trust file must grant the
stage that produced the model (as for the provenance). `verify_pack` needs only the pack
and a trust file, and covers every byte: the container must be byte for byte the
canonical archive of its members (so a changed header, padding or end block is refused),
every member must be listed in the signed manifest with its SHA-256, and each piece must
verify on its own (signatures, proofs against the checkpoint, the lineage, the bundles).

    >>> MANIFEST_TYPE
    'application/vnd.mlseal.pack.v1+json'
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

from mlseal._files import write_atomic
from mlseal.errors import ConfigurationError, VerificationError
from mlseal.export._source import ExportRefused, ModelSource, ingest_source
from mlseal.ledger import _jcs, merkle
from mlseal.ledger.checkpoint import Checkpoint, expected_origin, newest_stored, verify_checkpoint
from mlseal.ledger.entry import parse_entry
from mlseal.ledger.record import Record, Status, is_sha256_hex
from mlseal.signing import dsse
from mlseal.signing.keys import Signer
from mlseal.signing.trust import TrustRoot

__all__ = [
    "ADMISSION",
    "CHECKPOINT",
    "MANIFEST",
    "MANIFEST_TYPE",
    "MAX_PACK_BYTES",
    "MLBOM",
    "PACK_VERSION",
    "POLICY",
    "PROVENANCE",
    "README",
    "README_TEXT",
    "ROOT",
    "Built",
    "PackError",
    "PackReport",
    "admission",
    "build_pack",
    "verify_pack_bytes",
    "verify_pack_file",
    "write_pack",
]

MANIFEST_TYPE = "application/vnd.mlseal.pack.v1+json"
PACK_VERSION = 1
ROOT = "mlseal-pack/"
MANIFEST = ROOT + "manifest.dsse.json"
CHECKPOINT = ROOT + "checkpoint"
PROVENANCE = ROOT + "provenance.intoto.jsonl"
MLBOM = ROOT + "mlbom.cdx.json"
POLICY = ROOT + "policy.yaml"
ADMISSION = ROOT + "admission.json"
README = ROOT + "README.txt"
#: a pack larger than this is refused unread (packs hold records and bundles, never models)
MAX_PACK_BYTES = 256 * 1024 * 1024

_MEMBER = re.compile(
    r"mlseal-pack/(manifest\.dsse\.json|checkpoint|provenance\.intoto\.jsonl|mlbom\.cdx\.json|policy\.yaml"
    r"|admission\.json|README\.txt|records/[0-9]{1,16}\.entry|proofs/[0-9]{1,16}\.json|bundles/[0-9a-f]{64}\.sig)"
)


class PackError(VerificationError):
    """A pack is malformed, altered, or does not prove what it claims. Names what is wrong."""


# --- the container: a canonical tar -----------------------------------------------------------

def _tar(members: Sequence[tuple[str, bytes]]) -> bytes:
    """The canonical archive of `members` (same members, same bytes, always)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.type = tarfile.REGTYPE
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _untar(data: bytes) -> list[tuple[str, bytes]]:
    """The members of a canonical pack archive; PackError for anything else.

    1. the archive parses, and holds only regular files with the names a pack has, once each;
    2. it is byte for byte the canonical archive of those members: no other header field,
       padding byte or trailing block differs (the first differing byte is named).
    """
    members: list[tuple[str, bytes]] = []
    spans: list[tuple[int, int, str]] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for info in tar:
                if not info.isreg():
                    raise PackError(f"pack member {info.name[:100]!r} is not a regular file")
                if not _MEMBER.fullmatch(info.name):
                    raise PackError(f"pack member {info.name[:100]!r} is not a file a pack holds")
                if any(info.name == n for n, _ in members):
                    raise PackError(f"pack member {info.name!r} appears twice")
                f = tar.extractfile(info)
                assert f is not None
                members.append((info.name, f.read()))
                spans.append((info.offset, info.offset_data + info.size, info.name))
    except (tarfile.TarError, EOFError) as exc:
        raise PackError(f"the pack is not a readable tar archive: {exc}") from None
    canonical = _tar(members)
    if canonical != data:
        at = next((i for i, (a, b) in enumerate(zip(canonical, data, strict=False)) if a != b),
                  min(len(canonical), len(data)))
        where = next((f"in member {n}" for s, e, n in spans if s <= at < e), "between members or in the end blocks")
        raise PackError(
            f"the pack was altered: byte {at} ({where}) is not what the canonical archive of its members holds "
            f"(the pack has {len(data)} bytes, the canonical archive {len(canonical)})"
        )
    return members


# --- writing ------------------------------------------------------------------------------------

def _proof_obj(seq: int, entry: bytes, size: int, root: bytes, path: Sequence[bytes]) -> dict[str, Any]:
    """The same JSON as `mlseal ledger prove --json`."""
    return {"seq": seq, "leaf_index": seq, "tree_size": size, "leaf_hash": merkle.leaf_hash(entry).hex(),
            "root": root.hex(), "path": [p.hex() for p in path]}


def _local_path(uri: str) -> Path | None:
    parts = urlsplit(uri)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    if not parts.scheme and uri.startswith("/"):
        return Path(uri)
    return None


def _bundles(src: ModelSource, trust: TrustRoot) -> tuple[dict[str, bytes], list[dict[str, Any]]]:
    """The OMS bundle of every output the records bound one to and that is on a local path,
    checked against the record (SHA-256 and signature); the model's must be there."""
    from mlseal.signing.artifact import default_bundle_path

    found: dict[str, bytes] = {}
    listed: list[dict[str, Any]] = []
    for rec in src.records:
        for out in rec.outputs:
            if out.bundle_sha256 is None:
                continue
            path = _local_path(out.uri)
            is_model = rec.seq == src.producer.seq and out.sha256 == src.model_sha256
            data = None
            if path is not None:
                try:
                    data = default_bundle_path(path).read_bytes()
                except OSError:
                    data = None
            if data is None:
                if is_model:
                    raise ExportRefused(
                        f"the model's OMS bundle ({out.uri}.sig, bound by record {rec.seq}) cannot be read: a pack "
                        "without it proves nothing about the model's bytes"
                    )
                continue
            got = hashlib.sha256(data).hexdigest()
            if got != out.bundle_sha256:
                raise ExportRefused(
                    f"the OMS bundle of output {out.name!r} of record {rec.seq} ({out.uri}.sig) hashes to {got[:16]}…, "
                    f"but the record bound {out.bundle_sha256[:16]}…: the bundle was altered or replaced"
                )
            _check_bundle(data, out.sha256, trust, f"bundle of output {out.name!r} of record {rec.seq}")
            found[out.bundle_sha256] = data
            listed.append({"seq": rec.seq, "output": out.name, "sha256": out.sha256, "bundle": out.bundle_sha256})
    return found, listed


def _check_bundle(data: bytes, artifact_sha256: str, trust: TrustRoot, what: str) -> None:
    """The bundle's signer is trusted and its signed file list gives the recorded digest."""
    from mlseal.signing import oms
    from mlseal.signing.policy import policy_from_trust
    from mlseal.signing.sigstore_bundle import parse_bundle

    try:
        auth = policy_from_trust(trust).verify(parse_bundle(data, source=what))
        if auth.message_sha256 is not None:
            digest = auth.message_sha256
        else:
            if auth.payload_type != oms.IN_TOTO_PAYLOAD_TYPE:
                raise VerificationError(f"payload type {auth.payload_type!r} is not an in-toto statement")
            digest = oms.parse_statement(auth.payload).artifact_digest
    except (VerificationError, ConfigurationError) as exc:
        raise PackError(f"{what}: {exc}") from None
    if digest != artifact_sha256:
        raise PackError(f"{what} signs digest {digest[:16]}…, but the record names {artifact_sha256[:16]}…")


def _checkpoint(src: ModelSource, led: Any, trust: TrustRoot, note: bytes | None,
                origin: str) -> tuple[bytes, Checkpoint]:
    """A trusted checkpoint that covers every record of the pack, matching the verified tree."""
    if not trust.checkpoint_keys:
        raise ConfigurationError(
            f"trust file {trust.source} lists no checkpoint_keys: a pack needs a signed checkpoint to prove its "
            "records against"
        )
    if note is None:
        stored, _skipped = newest_stored(led, trust, origin=origin)
        if stored is None:
            raise ExportRefused("the ledger holds no checkpoint signed by a trusted checkpoint key; run "
                                "`mlseal ledger witness` first")
        note, cp = stored.note, stored.checkpoint
    else:
        cp = verify_checkpoint(note, trust, origin=origin)
    last = max(r.seq for r in src.records)
    if cp.size <= last:
        raise ExportRefused(
            f"the checkpoint (size {cp.size}) does not cover record {last}; run `mlseal ledger witness` to sign a "
            "checkpoint of the current ledger, then export again"
        )
    if cp.size > src.size:
        raise ExportRefused(f"the checkpoint pins {cp.size} records, the verified ledger holds {src.size}")
    if src.view.root(cp.size) != cp.root:
        raise ExportRefused(
            f"the checkpoint's root {cp.root.hex()[:16]}… is not the verified records' root at size {cp.size} "
            f"({src.view.root(cp.size).hex()[:16]}…): the ledger was forked"
        )
    return note, cp


def _tree(led: Any, src: ModelSource, size: int) -> merkle.MemoryTree:
    """The Merkle tree of the first `size` stored entries, checked against the verified view's root."""
    tree = merkle.MemoryTree(merkle.leaf_hash(e) for _, e in led.entries(0, size))
    if tree.size != size or tree.root(size) != src.view.root(size):
        raise ExportRefused(f"the ledger changed while the pack was built (its first {size} entries no longer give "
                            "the verified root); export again")
    return tree


README_TEXT = """\
mlseal audit pack
=================

Check the whole pack (no ledger access needed):

    mlseal verify-pack PACK --trust trust.yaml

Each piece can also be checked on its own with standard tools (see docs/export.md):

- manifest.dsse.json       DSSE envelope over the list of members and their SHA-256
- checkpoint               C2SP signed note (tlog-checkpoint) of the ledger
- records/<seq>.entry      ledger entries: DSSE envelopes over RFC 8785 records
- proofs/<seq>.json        RFC 9162 inclusion proofs of the entries against the checkpoint
- bundles/<sha256>.sig     OpenSSF Model Signing bundles (verify with model_signing / cosign)
- provenance.intoto.jsonl  SLSA Provenance v1 in-toto statement, DSSE-signed
- mlbom.cdx.json           CycloneDX 1.6 ML-BOM (cyclonedx validate --input-version v1_6)
- policy.yaml              the admission policy
- admission.json           the admission decision at export time
"""


@dataclass(frozen=True)
class Built:
    """A pack's bytes, and what it holds."""

    data: bytes
    members: tuple[str, ...]
    checkpoint: Checkpoint
    allowed: bool


def build_pack(src: ModelSource, led: Any, signer: Signer, *, provenance: bytes, mlbom: bytes,
               policy_bytes: bytes, decision: Mapping[str, Any], checkpoint: bytes | None = None,
               origin: str | None = None) -> Built:
    """The pack's bytes (nothing is written). ExportRefused / ConfigurationError naming what is missing."""
    from mlseal.export.slsa import check_exporter_key

    trust = src.trust
    origin = origin or expected_origin(trust)
    p = src.producer
    check_exporter_key(signer, trust, stage=p.stage, component_sha256=p.component.source_sha256,
                       image=p.component.image, what="the pack")
    note, cp = _checkpoint(src, led, trust, checkpoint, origin)
    tree = _tree(led, src, cp.size)
    bundles, listed = _bundles(src, trust)
    body: list[tuple[str, bytes]] = [(README, README_TEXT.encode()), (CHECKPOINT, note)]
    for rec in src.records:
        entry = src.entries[rec.seq]
        path = merkle.inclusion_proof(rec.seq, cp.size, tree)
        merkle.verify_inclusion(merkle.leaf_hash(entry), rec.seq, cp.size, path, cp.root)  # never pack a wrong proof
        body.append((f"{ROOT}records/{rec.seq}.entry", entry))
        body.append((f"{ROOT}proofs/{rec.seq}.json",
                     json.dumps(_proof_obj(rec.seq, entry, cp.size, cp.root, path), indent=2).encode() + b"\n"))
    body += [(f"{ROOT}bundles/{sha}.sig", data) for sha, data in sorted(bundles.items())]
    body += [(PROVENANCE, provenance), (MLBOM, mlbom), (POLICY, policy_bytes),
             (ADMISSION, json.dumps(dict(decision), indent=2, sort_keys=True).encode() + b"\n")]
    manifest = {
        "v": PACK_VERSION,
        "model": {"sha256": src.model_sha256, "record": p.seq, "output": src.output.name},
        "evaluation": src.evaluation.seq if src.evaluation is not None else None,
        "ledger": {"origin": origin, "checkpoint": {"size": cp.size, "root": cp.root.hex()}},
        "records": [r.seq for r in src.records],
        "bundles": listed,
        "members": [{"name": n, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in body],
    }
    envelope = dsse.sign(signer, MANIFEST_TYPE, _jcs.dumps(manifest))
    members = [(MANIFEST, envelope), *body]
    return Built(_tar(members), tuple(n for n, _ in members), cp, bool(decision.get("allowed")))


def write_pack(dest: str | os.PathLike[str], built: Built, trust: TrustRoot) -> None:
    """Verify the pack as an auditor would, then write it atomically (temp file + rename)."""
    verify_pack_bytes(built.data, trust)
    write_atomic(dest, built.data)


# --- verifying ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PackReport:
    """What a verified pack proves."""

    model_sha256: str
    producer_seq: int
    records: tuple[int, ...]
    checkpoint: Checkpoint
    signer: str
    allowed: bool
    reasons: tuple[str, ...]
    evaluation: int | None
    members: int
    bundles: int
    problems: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {"ok": True, "model_sha256": self.model_sha256, "producer": self.producer_seq,
                "records": list(self.records), "evaluation": self.evaluation, "signer": self.signer,
                "checkpoint": self.checkpoint.to_json(), "admission": {"allowed": self.allowed,
                                                                       "reasons": list(self.reasons)},
                "members": self.members, "bundles": self.bundles}


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise PackError(f"{what} is not JSON") from None


def verify_pack_file(path: str | os.PathLike[str], trust: TrustRoot) -> PackReport:
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_PACK_BYTES:
            raise PackError(f"pack {p} is {size} bytes, more than a pack holds ({MAX_PACK_BYTES}); refused unread")
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read pack {p}: {exc.strerror}") from None
    return verify_pack_bytes(data, trust)


def verify_pack_bytes(data: bytes, trust: TrustRoot) -> PackReport:
    """Verify a pack offline against a trust file; PackError (a VerificationError) naming what is wrong.

    1. the container is the canonical tar of its members (`_untar`);
    2. the first member is the manifest: a DSSE envelope by a record signer of the trust
       file, over the RFC 8785 manifest; every other member is listed in it, in order,
       with its size and SHA-256, and nothing else is;
    3. the checkpoint verifies with a checkpoint key, and is the one the manifest names;
    4. every record verifies (`parse_entry`: signature, grant, canonical form) at the seq
       its name says, and its inclusion proof gives the checkpoint's root;
    5. the model: a record of the pack with status ok outputs it, and the manifest's
       signer is granted that record's stage; its lineage within the pack reaches
       ``ingest`` records through the producers each input names; the evaluation the
       manifest names consumed the model;
    6. every bundle is one a record bound (by SHA-256), signed by a trusted signer over
       the recorded digest; the model's bundle is there;
    7. the provenance verifies (`verify_provenance`), is signed by the manifest's signer,
       and describes the producer record of the pack and the upstream inputs of its
       lineage; the ML-BOM is a CycloneDX 1.6 BOM of the model; the admission decision
       names the model and the policy's SHA-256;
    8. a decision that says *allowed* agrees with what the pack itself proves: the model's
       producer is of a stage the policy's ``model_stages`` lists, and the newest evaluation
       of the model in the pack (at least the one the manifest names) has status ok and meets
       the policy's gates. (The workload rules and anything outside the pack are the
       signer's claim.)
    """
    from mlseal.export.slsa import verify_provenance

    if len(data) > MAX_PACK_BYTES:
        raise PackError(f"the pack is {len(data)} bytes, more than a pack holds ({MAX_PACK_BYTES})")
    members = _untar(data)  # 1
    if not members or members[0][0] != MANIFEST:  # 2
        raise PackError(f"the pack's first member must be {MANIFEST}")
    try:
        env = dsse.parse(members[0][1])
        ok = dsse.verify(env, trust.signers.values(), payload_type=MANIFEST_TYPE)
    except VerificationError as exc:
        raise PackError(f"the pack manifest: {exc}") from None
    if env.to_bytes() != members[0][1]:
        # the one member no digest covers: its bytes must be the envelope's only spelling
        raise PackError("the pack manifest is not the RFC 8785 canonical DSSE envelope it signs (altered)")
    manifest = _json(ok.payload, "the pack manifest")
    if not isinstance(manifest, dict) or manifest.get("v") != PACK_VERSION:
        raise PackError(f"the pack manifest is not a version {PACK_VERSION} manifest")
    if _jcs.dumps(manifest) != ok.payload:
        raise PackError("the pack manifest is not in RFC 8785 canonical form")
    listed = manifest.get("members")
    if not isinstance(listed, list):
        raise PackError("the pack manifest lists no members")
    rest = members[1:]
    names = [n for n, _ in rest]
    want = [m.get("name") if isinstance(m, dict) else None for m in listed]
    if names != want:
        extra = sorted(set(names) - {str(w) for w in want})
        missing = sorted({str(w) for w in want} - set(names))
        raise PackError(f"the pack's members are not the ones its signed manifest lists (not listed: {extra}; "
                        f"missing: {missing}; or out of order)")
    files = dict(rest)
    for m in listed:
        body = files[m["name"]]
        got = hashlib.sha256(body).hexdigest()
        if got != m.get("sha256") or len(body) != m.get("size"):
            raise PackError(f"pack member {m['name']}: sha256 {got[:16]}… ({len(body)} bytes) is not what the signed "
                            f"manifest lists ({str(m.get('sha256'))[:16]}…, {m.get('size')} bytes): it was altered")
    signer = trust.signer_name(ok.key_id) or ok.key_id[:16]
    ledger, model = manifest.get("ledger"), manifest.get("model")
    if not isinstance(ledger, dict) or not isinstance(ledger.get("origin"), str) or not isinstance(model, dict):
        raise PackError("the pack manifest names no ledger origin or no model")
    origin = ledger["origin"]
    try:  # 3
        cp = verify_checkpoint(files.get(CHECKPOINT, b""), trust, origin=origin)
    except VerificationError as exc:
        raise PackError(f"the pack's checkpoint: {exc}") from None
    if ledger.get("checkpoint") != {"size": cp.size, "root": cp.root.hex()}:
        raise PackError("the pack's checkpoint is not the one its manifest names")
    records: dict[int, Record] = {}
    for name, body in rest:  # 4
        m = re.fullmatch(r"mlseal-pack/records/([0-9]+)\.entry", name)
        if m is None:
            continue
        seq = int(m.group(1))
        try:
            rec = parse_entry(body, trust)
        except VerificationError as exc:
            raise PackError(f"pack record {seq}: {exc}") from None
        if rec.seq != seq:
            raise PackError(f"pack member {name} holds record {rec.seq}")
        proof = _json(files.get(f"{ROOT}proofs/{seq}.json", b"null"), f"the inclusion proof of record {seq}")
        try:
            if not isinstance(proof, dict) or proof.get("tree_size") != cp.size or proof.get("seq") != seq:
                raise VerificationError(f"it is not a proof of leaf {seq} in the tree of size {cp.size}")
            path = [bytes.fromhex(h) for h in proof.get("path", [])]
            merkle.verify_inclusion(merkle.leaf_hash(body), seq, cp.size, path, cp.root)
        except (VerificationError, ValueError, TypeError) as exc:
            raise PackError(f"pack record {seq} is not proven in the checkpointed ledger: {exc}") from None
        records[seq] = rec
    if sorted(records) != manifest.get("records"):
        raise PackError(f"the pack holds records {sorted(records)}, its manifest lists {manifest.get('records')}")
    for name in files:
        m = re.fullmatch(r"mlseal-pack/proofs/([0-9]+)\.json", name)
        if m is not None and int(m.group(1)) not in records:
            raise PackError(f"pack member {name} proves a record the pack does not hold")
    sha, pseq = model.get("sha256"), model.get("record")  # 5
    producer = records.get(pseq) if isinstance(pseq, int) else None
    if not is_sha256_hex(sha) or producer is None or producer.status is not Status.OK \
            or not any(o.sha256 == sha for o in producer.outputs):
        raise PackError(f"the pack's record {pseq} is not an ok record that output the model {str(sha)[:16]}…")
    assert isinstance(sha, str)
    why = trust.authorization_problem(ok.key_id, producer.stage, producer.component.source_sha256,
                                      producer.component.image)
    if why is not None:
        raise PackError(f"the pack manifest is signed by a key that may not vouch for a {producer.stage!r} "
                        f"build: {why}")
    upstream = _lineage_in_pack(records, producer)
    ev_seq = manifest.get("evaluation")
    if ev_seq is not None:
        ev = records.get(ev_seq) if isinstance(ev_seq, int) else None
        if ev is None or ev.stage != "evaluate" or not any(i.sha256 == sha for i in ev.inputs):
            raise PackError(f"the pack's evaluation record {ev_seq} is not an evaluate record of the model")
    bundle_files = {n.removeprefix(ROOT + "bundles/").removesuffix(".sig"): b for n, b in files.items()
                    if n.startswith(ROOT + "bundles/")}  # 6
    bound: dict[str, tuple[Record, Any]] = {o.bundle_sha256: (r, o) for r in records.values() for o in r.outputs
                                            if o.bundle_sha256}
    for bsha, body in bundle_files.items():
        if bsha not in bound:
            raise PackError(f"pack bundle {bsha[:16]}… is not bound by any record of the pack")
        r, o = bound[bsha]
        _check_bundle(body, o.sha256, trust, f"pack bundle of output {o.name!r} of record {r.seq}")
    model_out = next(o for o in producer.outputs if o.sha256 == sha)
    if model_out.bundle_sha256 is not None and model_out.bundle_sha256 not in bundle_files:
        raise PackError("the pack does not hold the model's OMS bundle")
    try:  # 7
        prov = verify_provenance(files.get(PROVENANCE, b""), trust)
    except VerificationError as exc:
        raise PackError(f"the pack's provenance: {exc}") from None
    if prov.signer_key_id != ok.key_id or prov.subject_sha256 != sha or prov.record_seq != producer.seq \
            or prov.record_entry_sha256 != hashlib.sha256(files[f"{ROOT}records/{producer.seq}.entry"]).hexdigest():
        raise PackError("the pack's provenance does not describe the pack's model record, or has another signer")
    deps = prov.statement["predicate"]["buildDefinition"].get("resolvedDependencies") or []
    stated = {d["digest"].get("sha256") if isinstance(d, dict) and isinstance(d.get("digest"), dict) else None
              for d in deps}
    if stated != upstream:
        raise PackError("the pack's provenance lists other dependencies than the lineage of its records "
                        f"(provenance: {len(stated)}, records: {len(upstream)})")
    bom = _json(files.get(MLBOM, b""), "the pack's ML-BOM")
    comp = (bom.get("metadata") or {}).get("component") if isinstance(bom, dict) else None
    if not isinstance(bom, dict) or bom.get("bomFormat") != "CycloneDX" or bom.get("specVersion") != "1.6" \
            or not isinstance(comp, dict) or {"alg": "SHA-256", "content": sha} not in (comp.get("hashes") or []):
        raise PackError("the pack's ML-BOM is not a CycloneDX 1.6 BOM of the model")
    decision = _json(files.get(ADMISSION, b""), "the pack's admission decision")
    policy = files.get(POLICY)
    if not isinstance(decision, dict) or policy is None or decision.get("model_sha256") != sha \
            or decision.get("policy_sha256") != hashlib.sha256(policy).hexdigest() \
            or not isinstance(decision.get("allowed"), bool):
        raise PackError("the pack's admission decision does not name the model and the pack's policy")
    if decision["allowed"]:  # 8
        named = records.get(ev_seq) if isinstance(ev_seq, int) else None
        contradiction = _contradicts_allow(policy, decision.get("namespace"), producer, named, records, sha, trust)
        if contradiction is not None:
            raise PackError(f"the pack's admission decision says allowed, but {contradiction}: the decision "
                            "contradicts the pack's own policy and records")
    return PackReport(
        model_sha256=sha, producer_seq=producer.seq, records=tuple(sorted(records)), checkpoint=cp, signer=signer,
        allowed=decision["allowed"], reasons=tuple(str(r) for r in decision.get("reasons") or ()),
        evaluation=ev_seq if isinstance(ev_seq, int) else None, members=len(members), bundles=len(bundle_files),
    )


def _contradicts_allow(policy: bytes, namespace: object, producer: Record, named: Record | None,
                       records: Mapping[int, Record], sha: str, trust: TrustRoot) -> str | None:
    """What in the pack contradicts an *allowed* decision (check 8), or None. The pack's policy
    is read as admission reads it (`parse_policy`, the rules of the decision's namespace)."""
    from mlseal import _yaml as strict_yaml
    from mlseal.admission.policy import parse_policy
    from mlseal.gates import unmet

    try:
        doc = strict_yaml.load(policy)
        if not isinstance(doc, dict):
            return "its policy is not a mapping"
        rules = parse_policy(doc, base=Path("."), source="the pack's policy.yaml", trust=trust).rules_for(
            namespace if isinstance(namespace, str) else None)
    except (yaml.YAMLError, ConfigurationError) as exc:
        return f"its policy does not parse ({exc})"
    if producer.stage not in rules.model_stages:
        return (f"the model was produced by a {producer.stage!r} record, not one of the policy's model stages "
                f"{list(rules.model_stages)}")
    evaluations = [r for r in records.values() if r.stage == "evaluate" and any(i.sha256 == sha for i in r.inputs)]
    newest = max([*evaluations, *([named] if named else [])], key=lambda r: r.seq, default=None)
    if newest is None:
        return "the policy has gates and the pack holds no evaluation of the model" if rules.gates else None
    if newest.status is not Status.OK:
        return f"the model's newest evaluation in the pack, record {newest.seq}, is marked {newest.status.value}"
    failed = unmet(rules.gates, newest.metrics)
    if failed:
        return f"its evaluation record {newest.seq} fails {'; '.join(u.describe() for u in failed)}"
    return None


def _lineage_in_pack(records: Mapping[int, Record], producer: Record) -> set[str]:
    """The digests consumed on the way to the model, following each input to the pack record
    its ``producer_seq`` names, until every path reaches an ``ingest`` record."""
    seen: set[int] = set()
    consumed: set[str] = set()
    todo = [producer]
    while todo:
        rec = todo.pop()
        if rec.seq in seen:
            continue
        seen.add(rec.seq)
        if not rec.inputs and rec.stage != "ingest":
            raise PackError(f"pack record {rec.seq} ({rec.stage}) has no inputs and is not an ingest record: the "
                            "lineage does not reach the raw data")
        source = ingest_source(rec)
        if source is not None:
            consumed.add(source[1])
        for i in rec.inputs:
            consumed.add(i.sha256)
            if i.producer_seq is not None:
                parent = records.get(i.producer_seq)
            else:  # the newest earlier ok record of the pack that output it (the TrustedReader rule)
                parent = next((r for s, r in sorted(records.items(), reverse=True) if s < rec.seq
                               and r.status is Status.OK and any(o.sha256 == i.sha256 for o in r.outputs)), None)
            if parent is None or parent.seq >= rec.seq or parent.status is not Status.OK \
                    or not any(o.sha256 == i.sha256 for o in parent.outputs):
                raise PackError(f"pack record {rec.seq}: input {i.name!r} (sha256 {i.sha256[:16]}…) is not an output "
                                f"of a record of the pack (producer record {i.producer_seq})")
            todo.append(parent)
    return consumed


def admission(src: ModelSource, policy_path: str | os.PathLike[str], *,
              namespace: str | None = None) -> tuple[bytes, dict[str, Any]]:
    """(policy bytes, decision): the admission engine's verdict on the model under the policy,
    from the same verified view and trust the export read (steps 2-6 of `mlseal.admission.engine`)."""
    from mlseal.admission.engine import decide_model
    from mlseal.admission.manifest import ModelRef
    from mlseal.admission.policy import load_policy
    from mlseal.ledger.record import Sha256Hex

    path = Path(policy_path)
    try:
        policy_bytes = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read policy {path}: {exc.strerror}") from None
    policy = load_policy(path)
    ref = ModelRef(kind="Model", name=src.output.name, namespace=namespace, sha256=Sha256Hex(src.model_sha256),
                   uri=None, where="export")
    d = decide_model(ref, policy, ledger=src.view, trust=src.trust)
    return policy_bytes, {
        "model_sha256": src.model_sha256,
        "policy": path.name,
        "policy_sha256": hashlib.sha256(policy_bytes).hexdigest(),
        "namespace": namespace,
        "allowed": d.allowed,
        "reasons": list(d.reasons),
        "warnings": list(d.warnings),
        "codes": [c.value for c in d.codes],
        "ledger": {"tree_size": src.size, "root": src.root.hex()},
    }
