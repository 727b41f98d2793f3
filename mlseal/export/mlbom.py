"""A CycloneDX 1.6 ML-BOM for a model, from its verified ledger records.

The BOM describes the model (``metadata.component``, type ``machine-learning-model``)
and every dataset and artifact upstream of it (``components``, type ``data``), each with
its ledger digest as a ``SHA-256`` hash and the OMS bundle as an external reference;
``dependencies`` follow the records (an artifact depends on the inputs of the record
that made it). The model card comes from the records:

- ``modelParameters``: the training record's learning approach (supervised when it names a
  label), estimator, and the datasets it was trained on (references to the components);
- ``quantitativeAnalysis.performanceMetrics``: every metric of the newest trusted
  evaluation record, with the slice it was measured on (the held-out split);
- ``considerations``: the anonymisation (pseudonymised, redacted and dropped columns, the
  key by path and version) and the encryption at rest applied to the data, as ethical
  considerations with their mitigation; a failed evaluation as a technical limitation;
- ``properties``: each evaluation gate, its bound, the observed value and pass / fail,
  and the evaluation record's seq and status.

Every component carries ``mlseal:*`` properties naming the record (seq, entry SHA-256,
signer as the trust file names it) and the ledger tree the records were read from. For a
directory (a model repository), the ``SHA-256`` hash is mlseal's directory digest (SHA-256
over the names and per-file digests, what ``mlseal digest`` prints and the ledger
records), not a hash of one file's bytes; the ``mlseal:digest`` property says which.

The document is plain JSON built here: cyclonedx-python-lib (used by the tests to
validate it against the 1.6 schema) has no model for ``modelCard`` or component
``data``. Its bytes depend only on the records (the timestamp is the newest record's).

    >>> import json, tempfile
    >>> from mlseal.ledger import open_ledger
    >>> from mlseal.ledger.record import RecordDraft, OutputRef, Sha256Hex
    >>> from mlseal.signing.keys import LocalKeySigner
    >>> from mlseal.signing.trust import TrustRoot
    >>> from mlseal.export._source import load_model
    >>> key = LocalKeySigner.generate()
    >>> led = open_ledger("sqlite:///" + tempfile.mkdtemp() + "/l.db")
    >>> raw = OutputRef(name="raw", uri="file:///raw.csv", sha256=Sha256Hex("ab" * 32))
    >>> _ = led.append(RecordDraft(stage="ingest", outputs=(raw,)), key, signer_name="p")
    >>> bom = json.loads(mlbom_bytes(load_model(led, "ab" * 32, TrustRoot.of(key.verifier("p")))))
    >>> bom["specVersion"], bom["metadata"]["component"]["hashes"][0]["content"] == "ab" * 32
    ('1.6', True)
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

from mlseal import __version__
from mlseal.errors import ConfigurationError
from mlseal.export._source import ModelSource, ingest_source
from mlseal.ledger.checkpoint import expected_origin
from mlseal.ledger.record import OutputRef, Record, Status

__all__ = ["MEDIA_TYPE", "SPEC_VERSION", "bom_ref", "mlbom", "mlbom_bytes"]

SPEC_VERSION = "1.6"
MEDIA_TYPE = "application/vnd.cyclonedx+json; version=1.6"
_MIME = re.compile(r"[-+a-z0-9.]+/[-+a-z0-9.]+")
#: the namespace of the BOM's serial number (a UUIDv5 of the model and the ledger tree)
_SERIAL_NS = uuid.uuid5(uuid.NAMESPACE_URL, "https://mlseal.dev/export/mlbom")
_DATASET_TYPES = ("text/csv", "application/vnd.mlseal.dataset.encrypted.v1")


def bom_ref(sha256: str) -> str:
    return f"artifact:sha256:{sha256}"


def _prop(name: str, value: object) -> dict[str, str]:
    return {"name": name, "value": str(value)}


def _source_url(source: str) -> str:
    """An ingest record's source as a URL (a local path as a file: URL)."""
    if source.startswith("/"):
        return PurePosixPath(source).as_uri()
    return source


def _num(v: float) -> str:
    return repr(float(v)) if isinstance(v, float) else str(v)


def _record_props(src: ModelSource, rec: Record, origin: str) -> list[dict[str, str]]:
    props = [
        _prop("mlseal:record:seq", rec.seq),
        _prop("mlseal:record:stage", rec.stage),
        _prop("mlseal:record:entry_sha256", src.entry_sha256(rec.seq)),
        _prop("mlseal:record:signer", src.signer_name(rec)),
        _prop("mlseal:record:time", rec.time),
        _prop("mlseal:ledger:origin", origin),
    ]
    if rec.component.name:
        props.append(_prop("mlseal:record:component", rec.component.name))
    if rec.component.source_sha256:
        props.append(_prop("mlseal:record:component_sha256", rec.component.source_sha256))
    if rec.run.run_id:
        props.append(_prop("mlseal:kfp:run_id", rec.run.run_id))
    if rec.run.pipeline:
        props.append(_prop("mlseal:kfp:pipeline", rec.run.pipeline))
    return props


def _artifact_refs(out: OutputRef) -> list[dict[str, Any]]:
    refs: list[dict[str, Any]] = [{"type": "distribution", "url": out.uri}]
    if out.bundle_sha256:
        refs.append({"type": "attestation", "url": out.uri + ".sig",
                     "comment": "OpenSSF Model Signing bundle (Sigstore bundle v0.3)",
                     "hashes": [{"alg": "SHA-256", "content": out.bundle_sha256}]})
    return refs


def _digest_kind(out: OutputRef, rec: Record) -> str:
    return "directory" if out.media_type.startswith("application/vnd.mlseal.model-repository") else "file"


def _component(src: ModelSource, rec: Record, out: OutputRef, origin: str, ctype: str) -> dict[str, Any]:
    comp: dict[str, Any] = {
        "type": ctype,
        "bom-ref": bom_ref(out.sha256),
        "name": f"{rec.component.name or rec.stage}/{out.name}",
        "hashes": [{"alg": "SHA-256", "content": out.sha256}],
    }
    if _MIME.fullmatch(out.media_type):
        comp["mime-type"] = out.media_type
    comp["externalReferences"] = _artifact_refs(out)
    comp["properties"] = [_prop("mlseal:digest", _digest_kind(out, rec)), _prop("mlseal:output", out.name),
                          *_record_props(src, rec, origin)]
    return comp


class _DataNotes:
    """What the records say was done to each dataset: anonymised, encrypted, validated."""

    def __init__(self, src: ModelSource) -> None:
        self.sensitive: dict[str, list[str]] = {}
        self.classification: dict[str, str] = {}
        self.description: dict[str, list[str]] = {}
        self.considerations: list[dict[str, str]] = []
        for rec in src.records:
            name = rec.component.name
            if rec.stage != "process" or rec.status is not Status.OK:
                continue
            if name == "anonymize":
                self._anonymize(src, rec)
            elif name == "encrypt":
                self._encrypt(src, rec)
            elif name == "validate":
                for i in rec.inputs:
                    checks = ", ".join(f"{k} {_num(v)}" for k, v in sorted(rec.metrics.items()))
                    self.description.setdefault(i.sha256, []).append(
                        f"validated by record {rec.seq} ({checks})")

    def _secret(self, rec: Record) -> str:
        return ", ".join(f"{s.path} v{s.version}" if s.version is not None else s.path for s in rec.secrets)

    def _anonymize(self, src: ModelSource, rec: Record) -> None:
        report = rec.params.get("report")
        report = report if isinstance(report, Mapping) else {}
        method = report.get("method") if isinstance(report.get("method"), Mapping) else {}
        assert isinstance(method, Mapping)

        def cols(key: str) -> list[str]:
            v = report.get(key)
            return [str(x) for x in v] if isinstance(v, list) else []

        pseud, redacted, dropped = cols("pseudonymized"), cols("redacted"), cols("dropped")
        counts = report.get("pii_counts") if isinstance(report.get("pii_counts"), Mapping) else {}
        assert isinstance(counts, Mapping)
        pii = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        steps = []
        if pseud:
            steps.append(f"pseudonymised {', '.join(pseud)} ({method.get('pseudonymize', 'keyed hash')}, key "
                         f"{self._secret(rec) or 'by reference'})")
        if redacted:
            steps.append(f"redacted personal data in {', '.join(redacted)} ({method.get('redact', 'patterns')}"
                         + (f"; found {pii}" if pii else "") + ")")
        if dropped:
            steps.append(f"dropped {', '.join(dropped)}")
        what = "; ".join(steps) or "anonymised"
        for i in rec.inputs:
            self.sensitive.setdefault(i.sha256, []).extend(
                [f"identifier column {c}" for c in (*pseud, *dropped)]
                + [f"free text with personal data: {c}" for c in redacted]
            )
        for o in rec.outputs:
            self.classification[o.sha256] = "pseudonymised"
            self.description.setdefault(o.sha256, []).append(f"anonymised by record {rec.seq}: {what}")
        self.considerations.append({
            "name": f"personal data in the training data (the input of record {rec.seq}, {rec.component.name})",
            "mitigationStrategy": f"record {rec.seq} (signed by {src.signer_name(rec)}): {what}",
        })

    def _encrypt(self, src: ModelSource, rec: Record) -> None:
        alg = rec.params.get("algorithm", "encrypted")
        key = rec.params.get("data_key_name")
        what = f"{alg} envelope encryption with a fresh data key wrapped by key {key} ({self._secret(rec)})" \
            if key else str(alg)
        for o in rec.outputs:
            self.classification[o.sha256] = f"encrypted at rest ({alg})"
            self.description.setdefault(o.sha256, []).append(f"encrypted by record {rec.seq}: {what}")
        self.considerations.append({
            "name": f"training data at rest (the output of record {rec.seq}, {rec.component.name})",
            "mitigationStrategy": f"record {rec.seq} (signed by {src.signer_name(rec)}): {what}; stages decrypt "
                                  "it in memory only",
        })


def _data_entry(out: OutputRef, rec: Record, notes: _DataNotes) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "type": "dataset" if out.media_type in _DATASET_TYPES else "other",
        "name": out.name,
        "contents": {"url": out.uri},
    }
    if out.sha256 in notes.classification:
        entry["classification"] = notes.classification[out.sha256]
    if notes.sensitive.get(out.sha256):
        entry["sensitiveData"] = list(dict.fromkeys(notes.sensitive[out.sha256]))
    desc = [f"{out.media_type}, output {out.name!r} of record {rec.seq} ({rec.component.name or rec.stage})",
            *notes.description.get(out.sha256, [])]
    entry["description"] = "; ".join(desc)
    return entry


def _gates(src: ModelSource) -> tuple[list[dict[str, str]], list[str]]:
    """Gate properties and the limitations a failed evaluation implies."""
    from mlseal.gates import parse_gates

    ev = src.evaluation
    if ev is None:
        return [_prop("mlseal:evaluation", "none: no trusted evaluate record consumed the model")], [
            "not evaluated: no trusted evaluation record consumed this model"]
    props = [_prop("mlseal:evaluation:seq", ev.seq), _prop("mlseal:evaluation:status", ev.status.value),
             _prop("mlseal:evaluation:signer", src.signer_name(ev)),
             _prop("mlseal:evaluation:entry_sha256", src.entry_sha256(ev.seq))]
    limits = []
    if ev.status is not Status.OK:
        limits.append(f"the newest evaluation (record {ev.seq}) failed: {ev.error or 'no reason recorded'}")
    raw = ev.params.get("gates")
    try:
        gates = parse_gates(raw) if raw else ()
    except ConfigurationError as exc:
        return [*props, _prop("mlseal:gates", f"unreadable: {exc}")], limits
    for g in gates:
        unmet = g.unmet(ev.metrics.get(g.metric))
        observed = ev.metrics.get(g.metric)
        shown = _num(observed) if isinstance(observed, int | float) else "missing"
        verdict = "pass" if not unmet else "fail"
        props.append(_prop(f"mlseal:gate:{g.metric}", f"{g.describe()}; observed {shown}; {verdict}"))
    return props, limits


def _model_card(src: ModelSource, data_refs: list[str], notes: _DataNotes) -> dict[str, Any]:
    p = src.producer
    params: dict[str, Any] = {}
    if "label" in p.params:
        params["approach"] = {"type": "supervised"}
    estimator = p.params.get("estimator")
    if isinstance(estimator, str):
        params["modelArchitecture"] = estimator
    if data_refs:
        params["datasets"] = [{"ref": r} for r in data_refs]
    card: dict[str, Any] = {"bom-ref": f"model-card:sha256:{src.model_sha256}"}
    if params:
        card["modelParameters"] = params
    ev = src.evaluation
    if ev is not None and ev.metrics:
        held = next((i for i in ev.inputs if i.sha256 != src.model_sha256), None)
        where = ""
        if held is not None:
            split = ", ".join(f"{k} {ev.params[k]}" for k in ("test_fraction", "split_seed") if k in ev.params)
            where = f"held-out split ({split}) of dataset sha256:{held.sha256}" if split else \
                f"dataset sha256:{held.sha256}"
        metrics = []
        for k, v in sorted(ev.metrics.items()):
            if isinstance(v, int | float) and math.isfinite(v):
                m = {"type": k, "value": _num(v)}
                if where:
                    m["slice"] = where
                metrics.append(m)
        card["quantitativeAnalysis"] = {"performanceMetrics": metrics}
    gate_props, limits = _gates(src)
    considerations: dict[str, Any] = {}
    if notes.considerations:
        considerations["ethicalConsiderations"] = notes.considerations
    if limits:
        considerations["technicalLimitations"] = limits
    if considerations:
        card["considerations"] = considerations
    card["properties"] = gate_props
    return card


def mlbom(src: ModelSource, *, origin: str | None = None) -> dict[str, Any]:
    """The CycloneDX 1.6 BOM (a JSON object) for `src`'s model."""
    origin = origin or expected_origin(src.trust)
    notes = _DataNotes(src)
    model = _component(src, src.producer, src.output, origin, "machine-learning-model")
    components: list[dict[str, Any]] = []
    refs: dict[str, str] = {}
    trained_on: list[str] = []
    for up in src.upstream():
        made = src.output_of(up.input.sha256)
        if made is None or up.input.sha256 in refs:
            continue
        rec, out = made
        comp = _component(src, rec, out, origin, "data")
        comp["data"] = [_data_entry(out, rec, notes)]
        components.append(comp)
        refs[out.sha256] = comp["bom-ref"]
        if up.consumer.seq == src.producer.seq and comp["data"][0]["type"] == "dataset":
            trained_on.append(comp["bom-ref"])
    for rec in (*src.ancestors, src.producer):
        source = ingest_source(rec)
        if source is None or bom_ref(source[1]) in {c["bom-ref"] for c in components}:
            continue
        url, sha = _source_url(source[0]), source[1]
        components.append({
            "type": "data", "bom-ref": bom_ref(sha), "name": f"{rec.component.name or rec.stage}/source",
            "hashes": [{"alg": "SHA-256", "content": sha}],
            "data": [{"type": "dataset", "name": "source", "contents": {"url": url},
                      "description": f"the raw data record {rec.seq} ingested"}],
            "properties": [_prop("mlseal:digest", "file"), *_record_props(src, rec, origin)],
        })
        for o in rec.outputs:
            if o.sha256 != sha:  # ingest copied the source unchanged: one component, no self-dependency
                refs.setdefault(f"source-of:{o.sha256}", bom_ref(sha))
    model["modelCard"] = _model_card(src, trained_on, notes)
    deps = []
    for ref_sha, ref in [(src.model_sha256, model["bom-ref"]),
                         *((c["hashes"][0]["content"], c["bom-ref"]) for c in components)]:
        made = src.output_of(ref_sha)
        if made is None:
            continue
        rec = made[0]
        on = [refs[i.sha256] for i in rec.inputs if i.sha256 in refs]
        if f"source-of:{ref_sha}" in refs:
            on.append(refs[f"source-of:{ref_sha}"])
        deps.append({"ref": ref, "dependsOn": list(dict.fromkeys(on))})
    newest = max(src.records, key=lambda r: r.seq)
    return {
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "serialNumber": "urn:uuid:" + str(uuid.uuid5(_SERIAL_NS, f"{src.model_sha256}:{src.size}:{src.root.hex()}")),
        "version": 1,
        "metadata": {
            "timestamp": newest.time,
            "lifecycles": [{"phase": "build"}, {"phase": "post-build"}],
            "tools": {"components": [{"type": "application", "name": "mlseal", "version": __version__}]},
            "component": model,
            "properties": [_prop("mlseal:ledger:origin", origin), _prop("mlseal:ledger:tree_size", src.size),
                           _prop("mlseal:ledger:root", src.root.hex())],
        },
        "components": components,
        "dependencies": deps,
    }


def mlbom_bytes(src: ModelSource, *, origin: str | None = None) -> bytes:
    """The BOM as indented JSON with a final newline."""
    return (json.dumps(mlbom(src, origin=origin), indent=2, ensure_ascii=False) + "\n").encode()
