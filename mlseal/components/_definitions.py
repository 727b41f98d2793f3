"""The built-in KFP components, each a `mlseal.kfp.sealed_component` (imported lazily).

Inside a running task KFP sets `_KFP_RUNTIME=true`, where `kfp.dsl.component` does not
exist; so the task-side code (`_kfp_io`, `steps`, `mlseal.kfp._task`) never imports
this module. Each body only hands its artifacts to the tested step: the stage is already
open and the inputs verified when it runs.
"""

# (no `from __future__ import annotations`: KFP reads the real annotation objects)

from typing import Any

from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from mlseal.image import IMAGE
from mlseal.kfp import sealed_component

__all__ = ["COMPONENTS", "IMAGE", "anonymize", "deploy", "encrypt", "evaluate", "ingest", "train", "validate"]


@sealed_component(stage="ingest", name="ingest")
def ingest(dataset: Output[Dataset], source: str, db_credentials_path: str = "mlseal/ingest/db") -> None:
    """Read a path, URL or `pgtable:` source (credentials from Vault) and record it."""
    from mlseal.components import _kfp_io

    _kfp_io.step("ingest", dataset=dataset, source=source, db_credentials_path=db_credentials_path)


@sealed_component(stage="process", name="anonymize")
def anonymize(
    data: Input[Dataset],
    anonymized: Output[Dataset],
    hmac_key_path: str = "mlseal/anonymize/hmac",
    pseudonymize: list[str] = [],  # noqa: B006 (KFP reads defaults from the signature)
    redact: list[str] = [],  # noqa: B006
    drop: list[str] = [],  # noqa: B006
) -> None:
    """Pseudonymise identifiers with keyed HMAC-SHA256, redact PII, drop direct identifiers.

    Empty column lists select the demo dataset's spec.
    """
    from mlseal.components import _kfp_io

    spec = {"pseudonymize": pseudonymize, "redact": redact, "drop": drop} if pseudonymize or redact or drop else {}
    _kfp_io.step("anonymize", data=data, anonymized=anonymized, hmac_key_path=hmac_key_path, **spec)


@sealed_component(stage="process", name="encrypt")
def encrypt(data: Input[Dataset], encrypted: Output[Dataset], data_key_name: str = "mlseal-data") -> None:
    """Envelope-encrypt the dataset at rest with a Vault Transit data key."""
    from mlseal.components import _kfp_io

    _kfp_io.step("encrypt", data=data, encrypted=encrypted, data_key_name=data_key_name)


@sealed_component(stage="process", name="validate")
def validate(
    data: Input[Dataset],
    report: Output[Artifact],
    reference_path: str,
    thresholds: dict[str, float] = {},  # noqa: B006
    data_key_name: str = "mlseal-data",
) -> None:
    """Schema and poisoning checks against a recorded reference (decrypting on read); a breach fails the stage."""
    from mlseal.components import _kfp_io

    _kfp_io.step("validate", data=data, report=report, reference_path=reference_path,
                 thresholds=thresholds or None, data_key_name=data_key_name)


@sealed_component(stage="train", name="train")
def train(
    data: Input[Dataset],
    validation: Input[Artifact],
    model: Output[Model],
    label: str = "label",
    epsilon: float = 0.2,
    adversarial: bool = True,
    epochs: int = 60,
    seed: int = 0,
    data_key_name: str = "mlseal-data",
) -> None:
    """Train with fixed seeds, optionally adversarially (L-inf FGSM at `epsilon`)."""
    from mlseal.components import _kfp_io

    _kfp_io.step("train", data=data, validation=validation, model=model, label=label, epsilon=epsilon,
                 adversarial=adversarial, epochs=epochs, seed=seed, data_key_name=data_key_name)


@sealed_component(stage="evaluate", name="evaluate")
def evaluate(
    model: Input[Model],
    data: Input[Dataset],
    metrics: Output[Metrics],
    label: str = "label",
    epsilon: float = 0.2,
    seed: int = 0,
    gates: dict[str, Any] = {},  # noqa: B006
    data_key_name: str = "mlseal-data",
) -> None:
    """Accuracy, F1, ROC AUC, robust accuracy, membership-inference risk; gates fail the stage."""
    from mlseal.components import _kfp_io

    _kfp_io.step("evaluate", model=model, data=data, metrics=metrics, label=label, epsilon=epsilon, seed=seed,
                 gates=gates or None, data_key_name=data_key_name)


@sealed_component(stage="deploy", name="deploy")
def deploy(
    model: Input[Model],
    evaluation: Input[Metrics],
    manifest: Output[Artifact],
    policy_path: str,
    service_name: str = "mlseal-model",
    namespace: str = "models",
) -> None:
    """Emit a KServe InferenceService for the model and admit it with mlseal's policy engine."""
    from mlseal.components import _kfp_io

    _kfp_io.step("deploy", model=model, evaluation=evaluation, manifest=manifest, policy_path=policy_path,
                 service_name=service_name, namespace=namespace)


COMPONENTS: dict[str, Any] = {
    "ingest": ingest,
    "anonymize": anonymize,
    "encrypt": encrypt,
    "validate": validate,
    "train": train,
    "evaluate": evaluate,
    "deploy": deploy,
}
