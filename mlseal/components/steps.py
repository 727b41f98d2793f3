"""The lifecycle steps behind mlseal's KFP components, as plain, testable functions.

Each step runs inside a sealed `Stage`: its inputs are verified before they are read,
its secrets come by reference, its outputs are signed and one ledger record is
appended. The KFP components (`mlseal.components`) only translate KFP artifacts into
`ArtifactIn` / `ArtifactOut` and call these.

    >>> from mlseal.components import steps
    >>> sorted(steps.STEPS)
    ['anonymize', 'deploy', 'encrypt', 'evaluate', 'ingest', 'train', 'validate']
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlseal.errors import ConfigurationError, PolicyDenied
from mlseal.ledger.record import StageKind
from mlseal.stage import MEDIA_CSV, MEDIA_JSON, MEDIA_YAML, Sealing, Stage, StageResult

__all__ = [
    "DEFAULT_DATA_KEY_NAME",
    "DEFAULT_DB_CREDENTIALS_PATH",
    "DEFAULT_HMAC_KEY_PATH",
    "MEDIA_ENCRYPTED",
    "STEPS",
    "ArtifactIn",
    "ArtifactOut",
    "anonymize",
    "deploy",
    "encrypt",
    "evaluate",
    "ingest",
    "read_dataset",
    "train",
    "validate",
]

#: media type recorded for an encrypted dataset (mlseal.ml.crypto's envelope over a CSV)
MEDIA_ENCRYPTED = "application/vnd.mlseal.dataset.encrypted.v1"

DEFAULT_HMAC_KEY_PATH = "mlseal/anonymize/hmac"
DEFAULT_DATA_KEY_NAME = "mlseal-data"
DEFAULT_DB_CREDENTIALS_PATH = "mlseal/ingest/db"


@contextlib.contextmanager
def _open(
    sealing: Sealing | Stage,
    kind: StageKind,
    name: str,
    *,
    source: object,
    params: Mapping[str, Any] | None = None,
) -> Iterator[Stage]:
    """The step's stage: a new one over `sealing`, or the one a sealed KFP component opened.

    A step called with a `Sealing` (tests, library use) opens, commits and returns its
    own stage; called from a component with the open `Stage`, it works inside it and
    the component's runtime commits (the step then returns None).
    """
    if isinstance(sealing, Stage):
        if sealing.kind != kind:
            raise ConfigurationError(f"step {name} is a {kind} stage, not {sealing.kind}")
        sealing.params.update(params or {})
        yield sealing
        return
    with Stage(kind, name=name, sealing=sealing, source=source, params=params) as st:
        yield st


@dataclass(frozen=True)
class ArtifactIn:
    """An input artifact: where its bytes are, its OMS bundle if it travelled separately,
    and the digest the upstream task recorded for it (KFP metadata), if known."""

    path: Path
    bundle: bytes | None = None
    uri: str | None = None
    sha256: str | None = None

    def open(self, st: Stage, name: str) -> Path:
        """Verify this artifact as input `name` of `st` (fail closed) and return its path."""
        return st.input(name, self.path, bundle=self.bundle, uri=self.uri, expect_sha256=self.sha256)


@dataclass(frozen=True)
class ArtifactOut:
    """Where an output goes, and the URI to record for it (default: its file URI)."""

    path: Path
    uri: str | None = None


# --- ingest ------------------------------------------------------------------------------


def ingest(
    sealing: Sealing | Stage,
    *,
    dataset: ArtifactOut,
    source: str,
    db_credentials_path: str = DEFAULT_DB_CREDENTIALS_PATH,
) -> StageResult | None:
    """Read a source (a path, a URL, or `pgtable:[schema.]table` with credentials from
    Vault) and write it as CSV; record where from (no credentials), schema and row count."""
    from mlseal.ml import data

    with _open(sealing, StageKind.INGEST, "ingest", source=ingest) as st:
        conninfo = None
        if source.startswith(data.PG_PREFIX):
            creds = st.secret(db_credentials_path)
            if "dsn" not in creds.data:
                raise ConfigurationError(f"{creds.path} version {creds.version} has no field 'dsn'")
            conninfo = creds.data["dsn"].reveal()
        table, report = data.read_source(source, conninfo=conninfo)
        out = st.output("dataset", dataset.path, media_type=MEDIA_CSV, uri=dataset.uri)
        data.write_csv(table, out)
        st.params.update({"source": report.source, "source_kind": report.kind,
                          "schema": report.schema.to_obj(), "source_sha256": report.sha256})
        st.metric("rows", report.rows)
        st.metric("columns", len(report.schema.columns))
    return st.result


# --- anonymize ---------------------------------------------------------------------------


def anonymize(
    sealing: Sealing | Stage,
    *,
    data: ArtifactIn,
    anonymized: ArtifactOut,
    hmac_key_path: str = DEFAULT_HMAC_KEY_PATH,
    pseudonymize: tuple[str, ...] | list[str] | None = None,
    redact: tuple[str, ...] | list[str] | None = None,
    drop: tuple[str, ...] | list[str] | None = None,
) -> StageResult | None:
    """Pseudonymise identifiers (HMAC-SHA256, key from Vault), redact PII, drop columns."""
    from mlseal.ml import anonymize as anon
    from mlseal.ml import data as mldata

    if pseudonymize is None and redact is None and drop is None:
        spec = anon.AnonymizeSpec.demo()
    else:
        spec = anon.AnonymizeSpec(tuple(pseudonymize or ()), tuple(redact or ()), tuple(drop or ()))
    with _open(sealing, StageKind.PROCESS, "anonymize", source=anonymize, params={"spec": spec.to_obj()}) as st:
        table = mldata.read_csv(data.open(st, "data"))
        key = _key_bytes(st.secret(hmac_key_path, key=True))
        result, report = anon.anonymize(table, key, spec)
        mldata.write_csv(result, st.output("anonymized", anonymized.path, media_type=MEDIA_CSV, uri=anonymized.uri))
        st.params["report"] = report.to_obj()
        st.metric("rows", report.rows)
        st.metric("rows_with_pii", report.rows_with_pii)
        for kind, n in report.pii_counts:
            st.metric(f"redacted_{kind}", n)
    return st.result


def _key_bytes(kv: Any) -> bytes:
    raw = kv.data["key"].reveal()
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError(f"{kv.path} version {kv.version}: field 'key' is not base64") from None


# --- encrypt / decrypt-on-read ------------------------------------------------------------


def encrypt(
    sealing: Sealing | Stage,
    *,
    data: ArtifactIn,
    encrypted: ArtifactOut,
    data_key_name: str = DEFAULT_DATA_KEY_NAME,
) -> StageResult | None:
    """Envelope-encrypt a dataset at rest with a fresh Transit data key (dev store without Vault)."""
    from mlseal.ml import crypto

    params = {"algorithm": crypto.ALGORITHM, "data_key_name": data_key_name}
    with _open(sealing, StageKind.PROCESS, "encrypt", source=encrypt, params=params) as st:
        plain = data.open(st, "data").read_bytes()
        dk = st.data_key(data_key_name)
        blob = crypto.encrypt(plain, dk.plaintext.reveal(), dk.wrapped, key_name=dk.key_name, content_type=MEDIA_CSV)
        st.output("encrypted", encrypted.path, media_type=MEDIA_ENCRYPTED, uri=encrypted.uri).write_bytes(blob)
        st.metric("plaintext_bytes", len(plain))
    return st.result


def read_dataset(st: Stage, name: str, art: ArtifactIn, *, data_key_name: str = DEFAULT_DATA_KEY_NAME) -> Any:
    """Verify an input dataset, then decrypt it in memory if it is encrypted (decrypt-on-read)."""
    from mlseal.ml import crypto
    from mlseal.ml import data as mldata

    blob = art.open(st, name).read_bytes()
    if blob.startswith(crypto.MAGIC):
        header = crypto.read_header(blob)
        key = st.unwrap_data_key(header.wrapped_key, header.key_name or data_key_name)
        blob = crypto.decrypt(blob, key.reveal(), content_type=MEDIA_CSV)
    return mldata.from_csv_bytes(blob)


# --- validate ----------------------------------------------------------------------------


def validate(
    sealing: Sealing | Stage,
    *,
    data: ArtifactIn,
    report: ArtifactOut,
    reference_path: str,
    thresholds: Mapping[str, float] | None = None,
    data_key_name: str = DEFAULT_DATA_KEY_NAME,
) -> StageResult | None:
    """Schema and poisoning checks against a recorded reference; a breach fails the stage.

    The reference (schema, label distribution, feature ranges) is itself an input: it must
    be a recorded, signed artifact like any other.
    """
    from mlseal.ml import validate as mlvalidate
    from mlseal.ml.errors import DataValidationError

    th = mlvalidate.Thresholds(**dict(thresholds or {}))
    with _open(sealing, StageKind.PROCESS, "validate", source=validate, params={"thresholds": th.to_obj()}) as st:
        ref_file = st.input("reference", reference_path)
        reference = mlvalidate.Reference.from_json(ref_file.read_bytes())
        table = read_dataset(st, "data", data, data_key_name=data_key_name)
        result = mlvalidate.assess(table, reference, th)
        for check in result.checks:
            st.metric(check.name, check.observed)
        st.metric("rows", result.rows)
        st.params["checks"] = [c.to_obj() for c in result.checks]
        if not result.ok:
            raise DataValidationError(result.breaches)
        st.output("report", report.path, media_type=MEDIA_JSON, uri=report.uri).write_text(result.to_json())
    return st.result


# --- train -------------------------------------------------------------------------------


def train(
    sealing: Sealing | Stage,
    *,
    data: ArtifactIn,
    validation: ArtifactIn,
    model: ArtifactOut,
    label: str = "label",
    epsilon: float = 0.2,
    adversarial: bool = True,
    epochs: int = 60,
    seed: int = 0,
    test_fraction: float = 0.25,
    data_key_name: str = DEFAULT_DATA_KEY_NAME,
) -> StageResult | None:
    """Train on the training split (fixed seed), optionally with FGSM adversarial training.

    Nothing is loaded before it is verified: the validation report and the dataset are
    checked against the ledger and their bundles first.
    """
    from mlseal.ml import data as mldata
    from mlseal.ml import serving
    from mlseal.ml import train as mltrain

    config = mltrain.TrainConfig(label=label, adversarial=adversarial, epsilon=epsilon, epochs=epochs, seed=seed)
    params = {**config.to_obj(), "test_fraction": test_fraction, "split_seed": seed}
    with _open(sealing, StageKind.TRAIN, "train", source=train, params=params) as st:
        validation.open(st, "validation")
        table = read_dataset(st, "data", data, data_key_name=data_key_name)
        train_part, _ = mldata.split(table, label=label, test_fraction=test_fraction, seed=seed)
        fitted, report = mltrain.train(train_part, config)
        # the model as it will be served: a Triton repository with one ONNX graph (no pickle)
        out = st.output("model", model.path, media_type=serving.MEDIA_TYPE, uri=model.uri, directory=True)
        serving.export_model_repository(fitted, out)
        st.metric("train_accuracy", report.train_accuracy)
        st.metric("rows", report.rows)
        st.metric("features", len(report.features))
    return st.result


# --- evaluate ----------------------------------------------------------------------------


def evaluate(
    sealing: Sealing | Stage,
    *,
    model: ArtifactIn,
    data: ArtifactIn,
    metrics: ArtifactOut,
    label: str = "label",
    epsilon: float = 0.2,
    seed: int = 0,
    test_fraction: float = 0.25,
    gates: Mapping[str, Any] | None = None,
    data_key_name: str = DEFAULT_DATA_KEY_NAME,
) -> StageResult | None:
    """Accuracy, F1, ROC AUC, robust accuracy (FGSM/PGD), membership-inference advantage; gates.

    The held-out rows are the same seeded split `train` left out. `gates` are explicit
    `mlseal.gates` specs, parsed (a bare number refused) before anything is read or recorded.
    """
    import math

    from mlseal.gates import gates_to_obj, parse_gates
    from mlseal.ml import data as mldata
    from mlseal.ml import evaluate as mleval
    from mlseal.ml import serving

    parsed = parse_gates(gates) if gates else ()
    params = {"label": label, "epsilon": epsilon, "test_fraction": test_fraction, "split_seed": seed,
              "gates": gates_to_obj(parsed)}
    with _open(sealing, StageKind.EVALUATE, "evaluate", source=evaluate, params=params) as st:
        fitted = serving.load_model_repository(model.open(st, "model"))  # exactly the bytes to be served
        table = read_dataset(st, "data", data, data_key_name=data_key_name)
        train_part, test_part = mldata.split(table, label=label, test_fraction=test_fraction, seed=seed)
        scores = mleval.evaluate(fitted, test_part, train=train_part, epsilon=epsilon)
        for k, v in scores.values().items():
            if math.isfinite(v):
                st.metric(k, v)
        if parsed:
            mleval.check_gates(scores, parsed)
        st.output("metrics", metrics.path, media_type=MEDIA_JSON, uri=metrics.uri).write_text(scores.to_json())
    return st.result


# --- deploy ------------------------------------------------------------------------------


def deploy(
    sealing: Sealing | Stage,
    *,
    model: ArtifactIn,
    evaluation: ArtifactIn,
    manifest: ArtifactOut,
    policy_path: str,
    service_name: str = "mlseal-model",
    namespace: str = "models",
) -> StageResult | None:
    """Emit the InferenceService manifest and admit it with the webhook's own policy engine."""
    import yaml

    from mlseal.admission import decide, load_policy
    from mlseal.ml import serving

    params = {"policy": policy_path, "service_name": service_name, "namespace": namespace}
    with _open(sealing, StageKind.DEPLOY, "deploy", source=deploy, params=params) as st:
        model.open(st, "model")
        evaluation.open(st, "evaluation")
        m, ev = st.inputs[0], st.inputs[1]
        recorded = next(o.uri for o in m.producer.outputs if o.sha256 == m.sha256)
        policy = load_policy(policy_path)
        # where the serving runtime fetches the recorded repository (the policy maps, admission checks)
        storage = policy.rules_for(namespace).serving_uri(recorded).rstrip("/") + "/"
        obj = serving.inference_service(name=service_name, namespace=namespace, storage_uri=storage,
                                        model_sha256=m.sha256,
                                        annotations={"mlseal.dev/evaluation-seq": str(ev.producer_seq)})
        decision = decide(obj, policy, ledger=st.sealing.ledger)
        st.params["decision"] = decision.to_json()
        if not decision.allowed:
            raise PolicyDenied("deployment denied by admission policy: " + "; ".join(decision.reasons))
        text = yaml.safe_dump(obj, sort_keys=False)
        st.output("manifest", manifest.path, media_type=MEDIA_YAML, uri=manifest.uri).write_text(text)
    return st.result


STEPS: dict[str, Callable[..., StageResult | None]] = {
    "ingest": ingest,
    "anonymize": anonymize,
    "encrypt": encrypt,
    "validate": validate,
    "train": train,
    "evaluate": evaluate,
    "deploy": deploy,
}
