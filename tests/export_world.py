"""A small sealed pipeline for the export tests, built through the ledger library.

`make_world` writes, in a directory, what a demo workdir holds, without running KFP: one
key per stage kind (and a checkpoint key and a rogue key the trust file does not list),
the trust file granting each key its stage, real artifacts with real OMS bundles beside
them (the model is a directory), one record per stage (ingest of the validation
reference and of the data, anonymize, encrypt, validate, train, evaluate, deploy) with
the params, secrets and metrics the reference components record, a signed checkpoint
stored in the ledger, and the admission policy.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlseal.ledger import open_ledger
from mlseal.ledger.checkpoint import DEFAULT_ORIGIN, Checkpoint, sign_checkpoint
from mlseal.ledger.record import Component, InputRef, OutputRef, RecordDraft, RunInfo, SecretRef, Sha256Hex, Status
from mlseal.signing.artifact import sign_path
from mlseal.signing.digest import digest_path
from mlseal.signing.keys import LocalKeySigner

STAGES = ("ingest", "process", "train", "evaluate", "deploy")
GATES = {"accuracy": {"min": 0.9}, "robust_accuracy": {"min": 0.7}, "mia_advantage": {"max": 0.2}}
METRICS = {"accuracy": 0.97, "f1": 0.96, "robust_accuracy": 0.88, "mia_advantage": 0.05, "roc_auc": 0.99}
RUN = RunInfo(pipeline="mlseal-reference", run_id="4f1c2d9e-run", task=None)


@dataclass
class World:
    dir: Path
    url: str
    trust: Path
    policy: Path
    pipeline: Path
    keys: dict[str, LocalKeySigner]
    key_files: dict[str, Path]
    model_sha256: str
    model_dir: Path
    seqs: dict[str, int] = field(default_factory=dict)

    def run_args(self) -> list[str]:
        return ["--ledger", self.url, "--trust", str(self.trust)]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _artifact(path: Path, key: LocalKeySigner, name: str, media_type: str) -> OutputRef:
    bundle = sign_path(path, key)
    return OutputRef(name=name, uri=path.as_uri(), sha256=Sha256Hex(digest_path(path)), media_type=media_type,
                     bundle_sha256=Sha256Hex(_sha(bundle)))


def _inp(name: str, out: OutputRef, seq: int) -> InputRef:
    return InputRef(name=name, uri=out.uri, sha256=out.sha256, producer_seq=seq)


def make_world(d: Path, *, failed_evaluation: bool = False, checkpoint: bool = True) -> World:
    d.mkdir(parents=True, exist_ok=True)
    keys = {k: LocalKeySigner.generate() for k in (*STAGES, "checkpoint", "rogue")}
    files: dict[str, Path] = {}
    for k, key in keys.items():
        key.save(d / "keys" / f"{k}.pem", d / "keys" / f"{k}.pub.pem")
        files[k] = d / "keys" / f"{k}.pem"
    (d / "trust.yaml").write_text(yaml.safe_dump({
        "signers": [{"name": k, "public_key": f"keys/{k}.pub.pem", "stages": [k]} for k in STAGES],
        "checkpoint_keys": ["keys/checkpoint.pub.pem"],
    }, sort_keys=False))
    art = d / "artifacts"
    art.mkdir()
    (d / "pipeline.yaml").write_text("# compiled pipeline (KFP IR)\npipelineInfo: {name: mlseal-reference}\n")
    source = art / "source.csv"
    source.write_text("patient_id,name,email,notes,x,label\n1,Ann,ann@example.org,call 555-0100,0.5,1\n")
    url = "sqlite:///" + str(d / "ledger.db")
    seqs: dict[str, int] = {}

    def write(name: str, text: str | bytes) -> Path:
        p = art / name
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
        return p

    with open_ledger(url) as led:
        def add(key: str, draft: RecordDraft) -> int:
            return led.append(draft, keys[key], signer_name=key).seq

        ref = _artifact(write("reference.json", '{"schema": []}'), keys["ingest"], "reference", "application/json")
        seqs["reference"] = add("ingest", RecordDraft(stage="ingest", component=Component(name="reference"),
                                                      outputs=(ref,), params={"label": "label"}))
        rows = source.read_bytes() + b"2,Bo,bo@example.org,,0.1,0\n"
        raw = _artifact(write("dataset.csv", rows), keys["ingest"], "dataset", "text/csv")
        seqs["ingest"] = add("ingest", RecordDraft(
            stage="ingest", component=Component(name="ingest", source_sha256=Sha256Hex("1" * 64)), run=RUN,
            outputs=(raw,), params={"source": str(source), "source_kind": "file", "source_sha256": _sha(source)},
            metrics={"rows": 1, "columns": 6}))
        anon = _artifact(write("anonymized.csv", "patient_id,notes,x,label\nab12,call [phone],0.5,1\n"),
                         keys["process"], "anonymized", "text/csv")
        seqs["anonymize"] = add("process", RecordDraft(
            stage="process", component=Component(name="anonymize"), run=RUN,
            inputs=(_inp("data", raw, seqs["ingest"]),), outputs=(anon,),
            secrets=(SecretRef(path="mlseal/anonymize/hmac", version=1),),
            params={"spec": {"pseudonymize": ["patient_id"], "redact": ["notes"], "drop": ["name", "email"]},
                    "report": {"pseudonymized": ["patient_id"], "redacted": ["notes"], "dropped": ["name", "email"],
                               "method": {"pseudonymize": "hmac-sha256", "redact": "regex+luhn",
                                          "drop": "remove column"},
                               "pii_counts": {"phone": 1}, "rows": 1, "rows_with_pii": 1}},
            metrics={"rows": 1, "rows_with_pii": 1}))
        enc = _artifact(write("encrypted.bin", b"MLSEALENC1" + bytes(range(64))), keys["process"], "encrypted",
                        "application/vnd.mlseal.dataset.encrypted.v1")
        seqs["encrypt"] = add("process", RecordDraft(
            stage="process", component=Component(name="encrypt"), run=RUN,
            inputs=(_inp("data", anon, seqs["anonymize"]),), outputs=(enc,),
            secrets=(SecretRef(path="transit/mlseal-data", version=1),),
            params={"algorithm": "AES-256-GCM", "data_key_name": "mlseal-data"}, metrics={"plaintext_bytes": 52}))
        rep = _artifact(write("report.json", '{"ok": true}'), keys["process"], "report", "application/json")
        seqs["validate"] = add("process", RecordDraft(
            stage="process", component=Component(name="validate"), run=RUN,
            inputs=(_inp("data", enc, seqs["encrypt"]), _inp("reference", ref, seqs["reference"])),
            outputs=(rep,), metrics={"schema": 0, "label_shift": 0.0, "rows": 1}))
        model_dir = art / "model"
        (model_dir / "mlseal-model" / "1").mkdir(parents=True)
        (model_dir / "mlseal-model" / "config.pbtxt").write_text('name: "mlseal-model"\n')
        (model_dir / "mlseal-model" / "1" / "model.onnx").write_bytes(b"\x08\x07onnx-graph" * 8)
        model = _artifact(model_dir, keys["train"], "model", "application/vnd.mlseal.model-repository.onnx.v1")
        seqs["train"] = add("train", RecordDraft(
            stage="train", component=Component(name="train", source_sha256=Sha256Hex("2" * 64)),
            run=RunInfo(pipeline=RUN.pipeline, run_id=RUN.run_id, task="train"),
            inputs=(_inp("data", enc, seqs["encrypt"]), _inp("validation", rep, seqs["validate"])), outputs=(model,),
            params={"label": "label", "epochs": 3, "seed": 0, "test_fraction": 0.25, "split_seed": 0,
                    "estimator": "sklearn.linear_model.SGDClassifier(loss=log_loss)"},
            metrics={"train_accuracy": 0.98}))
        metrics = _artifact(write("metrics.json", json.dumps(METRICS)), keys["evaluate"], "metrics",
                            "application/json")
        seqs["evaluate"] = add("evaluate", RecordDraft(
            stage="evaluate", component=Component(name="evaluate"), run=RUN,
            inputs=(_inp("model", model, seqs["train"]), _inp("data", enc, seqs["encrypt"])), outputs=(metrics,),
            params={"gates": GATES, "test_fraction": 0.25, "split_seed": 0, "label": "label"}, metrics=METRICS))
        manifest = _artifact(write("manifest.yaml", "kind: InferenceService\n"), keys["deploy"], "manifest",
                             "application/yaml")
        seqs["deploy"] = add("deploy", RecordDraft(
            stage="deploy", component=Component(name="deploy"), run=RUN,
            inputs=(_inp("model", model, seqs["train"]), _inp("evaluation", metrics, seqs["evaluate"])),
            outputs=(manifest,), params={"decision": {"allowed": True, "reasons": []}}))
        if failed_evaluation:
            seqs["reevaluate"] = add("evaluate", RecordDraft(
                stage="evaluate", component=Component(name="evaluate"), run=RUN,
                inputs=(_inp("model", model, seqs["train"]), _inp("data", enc, seqs["encrypt"])),
                params={"gates": GATES, "test_fraction": 0.25, "split_seed": 0},
                metrics={**METRICS, "accuracy": 0.61}, status=Status.FAILED,
                error="gate accuracy: observed 0.61, required >= 0.9"))
        if checkpoint:
            head = led.head()
            led.add_checkpoint(sign_checkpoint(Checkpoint(DEFAULT_ORIGIN, head.size, head.root), keys["checkpoint"]))
    (d / "policy.yaml").write_text(yaml.safe_dump({
        "trust": "trust.yaml", "ledger": "sqlite:///ledger.db",
        "require_stages": ["ingest", "process", "train", "evaluate"], "gates": GATES,
        "evaluation": {"signers": ["evaluate"], "held_out": True}, "mode": "enforce",
    }, sort_keys=False))
    return World(d, url, d / "trust.yaml", d / "policy.yaml", d / "pipeline.yaml", keys, files, model.sha256,
                 model_dir, seqs)


def witness(world: World) -> None:
    """Sign and store a checkpoint of the ledger as it is now."""
    with open_ledger(world.url) as led:
        head = led.head()
        led.add_checkpoint(sign_checkpoint(Checkpoint(DEFAULT_ORIGIN, head.size, head.root),
                                           world.keys["checkpoint"]))


def records(world: World) -> list[Any]:
    from mlseal.ledger.entry import record_of

    with open_ledger(world.url) as led:
        return [record_of(e) for _, e in led.entries()]
