"""OpenLineage RunEvents from verified ledger records, and posting them to a lineage server.

One RunEvent (spec 2-0-2) per record, that is per stage run:

- ``eventType`` ``COMPLETE`` (status ok) or ``FAIL`` (with the ``errorMessage`` facet),
  ``eventTime`` the record's time;
- ``run.runId``: a UUID derived from the ledger origin, the record's seq and its entry
  SHA-256 (the same record always gives the same run, so posting twice is idempotent);
  facets ``mlseal_record`` (custom: seq, entry SHA-256, stage, component, signer as the
  trust file names it, key id, status, metrics, ledger origin) and ``parent`` (the KFP
  run: job ``<namespace>/<pipeline>``, run id derived from the KFP run id);
- ``job``: namespace (``--namespace``, default ``mlseal``) and the component's name
  (``ingest``, ``anonymize``, …), facet ``jobType`` (``BATCH``, integration ``MLSEAL``,
  ``TASK``);
- ``inputs`` / ``outputs``: one dataset per artifact, named after its URI by the
  OpenLineage naming conventions (``file`` + path, ``s3://bucket`` + key, …), facets
  ``version`` (``datasetVersion`` ``sha256:<digest>``) and ``mlseal_artifact`` (custom:
  the digest, media type, OMS bundle digest, the producing record).

The custom facets' JSON schemas ship in ``mlseal/export/schemas/``; their ``_schemaURL``
names them. `emit` POSTs the events, in seq order, to a Marquez-compatible endpoint
(``URL/api/v1/lineage`` when the URL has no path).

    >>> import tempfile
    >>> from mlseal.ledger import open_ledger
    >>> from mlseal.ledger.record import RecordDraft, OutputRef, Sha256Hex
    >>> from mlseal.signing.keys import LocalKeySigner
    >>> from mlseal.signing.trust import TrustRoot
    >>> key = LocalKeySigner.generate()
    >>> led = open_ledger("sqlite:///" + tempfile.mkdtemp() + "/l.db")
    >>> raw = OutputRef(name="raw", uri="s3://bucket/raw.csv", sha256=Sha256Hex("ab" * 32))
    >>> _ = led.append(RecordDraft(stage="ingest", outputs=(raw,)), key, signer_name="p")
    >>> [e] = events_for_ledger(led, TrustRoot.of(key.verifier("p")))
    >>> e["eventType"], e["outputs"][0]["namespace"], e["outputs"][0]["name"]
    ('COMPLETE', 's3://bucket', 'raw.csv')
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mlseal import __version__
from mlseal._uris import redact_uri
from mlseal.errors import ConfigurationError, InfrastructureError, VerificationError
from mlseal.export._source import ExportRefused, ModelSource, open_view
from mlseal.ledger.checkpoint import expected_origin
from mlseal.ledger.entry import entry_hash
from mlseal.ledger.record import Record, Status
from mlseal.ledger.verified import VerifiedView
from mlseal.signing.trust import TrustRoot

__all__ = [
    "API_KEY_ENV",
    "ARTIFACT_FACET",
    "DEFAULT_NAMESPACE",
    "ERROR_FACET",
    "JOB_TYPE_FACET",
    "LINEAGE_PATH",
    "PARENT_FACET",
    "PRODUCER",
    "RECORD_FACET",
    "RUN_EVENT_SCHEMA",
    "SPEC",
    "VERSION_FACET",
    "Emitted",
    "dataset_name",
    "emit",
    "events_for_ledger",
    "events_for_model",
    "jsonl",
    "lineage_url",
    "run_event",
    "run_id",
]

SPEC = "https://openlineage.io/spec/2-0-2/OpenLineage.json"
RUN_EVENT_SCHEMA = f"{SPEC}#/$defs/RunEvent"
#: the producer URI every event and facet names
PRODUCER = f"https://mlseal.dev/mlseal/{__version__}"
VERSION_FACET = "https://openlineage.io/spec/facets/1-0-1/DatasetVersionDatasetFacet.json#/$defs/DatasetVersionDatasetFacet"
PARENT_FACET = "https://openlineage.io/spec/facets/1-2-0/ParentRunFacet.json#/$defs/ParentRunFacet"
JOB_TYPE_FACET = "https://openlineage.io/spec/facets/2-0-4/JobTypeJobFacet.json#/$defs/JobTypeJobFacet"
ERROR_FACET = "https://openlineage.io/spec/facets/1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet"
RECORD_FACET = "https://mlseal.dev/spec/openlineage/1-0-0/MlsealRecordRunFacet.json#/$defs/MlsealRecordRunFacet"
ARTIFACT_FACET = ("https://mlseal.dev/spec/openlineage/1-0-0/MlsealArtifactDatasetFacet.json"
                  "#/$defs/MlsealArtifactDatasetFacet")
DEFAULT_NAMESPACE = "mlseal"
#: UUIDv5 namespace of run ids derived from ledger records and KFP runs
_RUN_NS = uuid.uuid5(uuid.NAMESPACE_URL, "https://mlseal.dev/export/openlineage")
LINEAGE_PATH = "/api/v1/lineage"
API_KEY_ENV = "OPENLINEAGE_API_KEY"


def _facet(schema: str, **fields: Any) -> dict[str, Any]:
    return {"_producer": PRODUCER, "_schemaURL": schema, **fields}


def dataset_name(uri: str) -> tuple[str, str]:
    """(namespace, name) of an artifact URI by the OpenLineage naming conventions.

    >>> dataset_name("file:///data/raw.csv"), dataset_name("gs://b/k/x"), dataset_name("plain")
    (('file', '/data/raw.csv'), ('gs://b', 'k/x'), ('mlseal', 'plain'))
    """
    parts = urlsplit(uri)
    if parts.scheme == "file":
        return "file", parts.path
    if parts.scheme and parts.netloc:
        netloc = parts.netloc.rpartition("@")[2]  # never a credential in a dataset name
        name = parts.path.lstrip("/") if parts.scheme in ("s3", "gs", "gcs", "abfss", "wasbs") else parts.path
        return f"{parts.scheme}://{netloc}", name or "/"
    return DEFAULT_NAMESPACE, uri


def run_id(origin: str, seq: int, entry_sha256: str) -> str:
    """The OpenLineage run id of a ledger record (UUIDv5: stable, unique per entry)."""
    return str(uuid.uuid5(_RUN_NS, f"record:{origin}:{seq}:{entry_sha256}"))


def _producers(records: Sequence[Record]) -> dict[str, Record]:
    out: dict[str, Record] = {}
    for r in sorted(records, key=lambda r: r.seq):
        for o in r.outputs:
            out[o.sha256] = r
    return out


def run_event(rec: Record, entry: bytes, trust: TrustRoot, *, origin: str,
              namespace: str = DEFAULT_NAMESPACE) -> dict[str, Any]:
    """The RunEvent of one verified record (see the module docstring)."""
    signer = trust.signer_name(rec.signer.key_id) or rec.signer.key_id[:16]
    run_facets: dict[str, Any] = {
        "mlseal_record": _facet(
            RECORD_FACET,
            seq=rec.seq,
            entrySha256=entry_hash(entry),
            stage=rec.stage,
            status=rec.status.value,
            component={k: v for k, v in {"name": rec.component.name, "sourceSha256": rec.component.source_sha256,
                                         "image": rec.component.image}.items() if v},
            signer={"name": signer, "keyId": rec.signer.key_id},
            metrics={k: v for k, v in sorted(rec.metrics.items())},
            ledger={"origin": origin},
        ),
    }
    if rec.run.run_id:
        run_facets["parent"] = _facet(
            PARENT_FACET,
            run={"runId": str(uuid.uuid5(_RUN_NS, f"kfp-run:{rec.run.run_id}"))},
            job={"namespace": namespace, "name": rec.run.pipeline or "kfp-run"},
        )
    if rec.status is Status.FAILED:
        run_facets["errorMessage"] = _facet(ERROR_FACET, message=rec.error or "the step failed",
                                            programmingLanguage="PYTHON")

    def dataset(uri: str, sha: str, extra: Mapping[str, Any]) -> dict[str, Any]:
        ns, name = dataset_name(uri)
        return {"namespace": ns, "name": name, "facets": {
            "version": _facet(VERSION_FACET, datasetVersion=f"sha256:{sha}"),
            "mlseal_artifact": _facet(ARTIFACT_FACET, digest={"sha256": sha}, **extra),
        }}

    inputs = [dataset(i.uri, i.sha256, {"role": "input", "name": i.name, **(
        {"producerSeq": i.producer_seq} if i.producer_seq is not None else {})}) for i in rec.inputs]
    outputs = [dataset(o.uri, o.sha256, {"role": "output", "name": o.name, "mediaType": o.media_type,
                                         **({"bundleSha256": o.bundle_sha256} if o.bundle_sha256 else {}),
                                         "producerSeq": rec.seq})
               for o in rec.outputs]
    return {
        "eventType": "COMPLETE" if rec.status is Status.OK else "FAIL",
        "eventTime": rec.time,
        "producer": PRODUCER,
        "schemaURL": RUN_EVENT_SCHEMA,
        "run": {"runId": run_id(origin, rec.seq, entry_hash(entry)), "facets": run_facets},
        "job": {"namespace": namespace, "name": rec.component.name or rec.stage, "facets": {
            "jobType": _facet(JOB_TYPE_FACET, processingType="BATCH", integration="MLSEAL", jobType="TASK"),
        }},
        "inputs": inputs,
        "outputs": outputs,
    }


def events_for_model(src: ModelSource, *, namespace: str = DEFAULT_NAMESPACE,
                     origin: str | None = None) -> list[dict[str, Any]]:
    """One event per record of a model's verified lineage (and what was made from it), by seq."""
    origin = origin or expected_origin(src.trust)
    return [run_event(r, src.entries[r.seq], src.trust, origin=origin, namespace=namespace) for r in src.records]


def events_for_ledger(led: Any, trust: TrustRoot, *, run: str | None = None, namespace: str = DEFAULT_NAMESPACE,
                      origin: str | None = None, view: VerifiedView | None = None) -> list[dict[str, Any]]:
    """One event per record of the ledger (of KFP run `run`, when given), by seq.

    Every record must verify (signature by a listed key under its grant, hash links):
    one that does not is refused with its seq, and no event is returned.
    """
    origin = origin or expected_origin(trust)
    view = view if view is not None else open_view(led, trust)
    bad: list[str] = []
    records: list[Record] = []
    for seq in range(view.size()):
        try:
            rec = view.record(seq)
        except VerificationError as exc:
            bad.append(f"record {seq}: {exc}")
            continue
        if run is None or rec.run.run_id == run:
            records.append(rec)
    if bad:
        raise ExportRefused("the ledger holds records that do not verify: " + "; ".join(bad[:10])
                            + (f"; and {len(bad) - 10} more" if len(bad) > 10 else ""))
    if run is not None and not records:
        raise ExportRefused(f"no record in the ledger belongs to KFP run {run!r}")
    return [run_event(r, view.entry(r.seq), trust, origin=origin, namespace=namespace) for r in records]


def jsonl(events: Iterable[Mapping[str, Any]]) -> bytes:
    """Events as JSON Lines (what OpenLineage's file transport writes)."""
    return b"".join(json.dumps(e, sort_keys=True, ensure_ascii=False).encode() + b"\n" for e in events)


@dataclass(frozen=True)
class Emitted:
    url: str  # redacted
    sent: int


def lineage_url(url: str) -> str:
    """The endpoint to POST to: ``URL/api/v1/lineage`` when `url` has no path, else `url`."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(f"--emit {redact_uri(url)}: expected an http(s) URL of a lineage server")
    if parts.path in ("", "/"):
        parts = parts._replace(path=LINEAGE_PATH)
    return urlunsplit(parts)


def emit(events: Sequence[Mapping[str, Any]], url: str, *, timeout: float = 10.0,
         environ: Mapping[str, str] | None = None) -> Emitted:
    """POST each event as JSON, in order; InfrastructureError naming the first that fails.

    An API key, when needed, comes from ``$OPENLINEAGE_API_KEY`` (sent as a bearer token),
    never from the command line.
    """
    target = lineage_url(url)
    shown = redact_uri(target)
    env = os.environ if environ is None else environ
    headers = {"Content-Type": "application/json"}
    if env.get(API_KEY_ENV):
        headers["Authorization"] = f"Bearer {env[API_KEY_ENV]}"
    for n, event in enumerate(events):
        body = json.dumps(event, sort_keys=True).encode()
        req = urllib.request.Request(target, data=body, headers=headers, method="POST")  # noqa: S310 (http(s) only)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
                resp.read()
        except urllib.error.HTTPError as exc:
            raise InfrastructureError(
                f"the lineage server at {shown} refused event {n + 1} of {len(events)} (record "
                f"{event['run']['facets']['mlseal_record']['seq']}): HTTP {exc.code} {exc.reason}; {n} sent"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise InfrastructureError(
                f"cannot reach the lineage server at {shown}: {reason}; {n} of {len(events)} events sent"
            ) from None
    return Emitted(shown, len(events))
