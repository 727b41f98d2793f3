"""The KFP component definitions (imported lazily by `mlseal.components`).

Inside a running task KFP sets `_KFP_RUNTIME=true`, where `kfp.dsl.component` does not
exist; so the task-side code (`_kfp_io`, `_steps`) never imports this module.
"""

# (no `from __future__ import annotations`: KFP reads the real annotation objects)

from collections.abc import Callable
from typing import Any

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

#: The image the components run in on a cluster (infra/docker/Dockerfile builds it).
IMAGE = "ghcr.io/mlseal/mlseal-python:0.1.0"

# The image provides mlseal and kfp: no pip install at task start (and none offline).
_component: Callable[[Callable[..., None]], Any] = dsl.component(base_image=IMAGE, install_kfp_package=False)


@_component
def ingest(
    dataset: Output[Dataset],
    source: str,
    db_credentials_path: str = "mlseal/ingest/db",
    run_id: str = dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    pipeline: str = dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
    task: str = dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
) -> None:
    """Read a path, URL or `pgtable:` source (credentials from Vault) and record it."""
    from mlseal.components import _kfp_io

    _kfp_io.run("ingest", inputs={}, outputs={"dataset": dataset}, run_id=run_id, pipeline=pipeline, task=task,
                source=source, db_credentials_path=db_credentials_path)


@_component
def anonymize(
    data: Input[Dataset],
    anonymized: Output[Dataset],
    hmac_key_path: str = "mlseal/anonymize/hmac",
    pseudonymize: list[str] = [],  # noqa: B006 (KFP reads defaults from the signature)
    redact: list[str] = [],  # noqa: B006
    drop: list[str] = [],  # noqa: B006
    run_id: str = dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    pipeline: str = dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
    task: str = dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
) -> None:
    """Pseudonymise identifiers with keyed HMAC-SHA256, redact PII, drop direct identifiers.

    Empty column lists select the demo dataset's spec.
    """
    from mlseal.components import _kfp_io

    spec = {"pseudonymize": pseudonymize, "redact": redact, "drop": drop} if pseudonymize or redact or drop else {}
    _kfp_io.run("anonymize", inputs={"data": data}, outputs={"anonymized": anonymized}, run_id=run_id,
                pipeline=pipeline, task=task, hmac_key_path=hmac_key_path, **spec)


@_component
def encrypt(
    data: Input[Dataset],
    encrypted: Output[Dataset],
    data_key_name: str = "mlseal-data",
    run_id: str = dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    pipeline: str = dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
    task: str = dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
) -> None:
    """Envelope-encrypt the dataset at rest with a Vault Transit data key."""
    from mlseal.components import _kfp_io

    _kfp_io.run("encrypt", inputs={"data": data}, outputs={"encrypted": encrypted}, run_id=run_id,
                pipeline=pipeline, task=task, data_key_name=data_key_name)


@_component
def validate(
    data: Input[Dataset],
    report: Output[Artifact],
    reference_path: str,
    thresholds: dict[str, float] = {},  # noqa: B006
    data_key_name: str = "mlseal-data",
    run_id: str = dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    pipeline: str = dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
    task: str = dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
) -> None:
    """Schema and poisoning checks against a recorded reference (decrypting on read); a breach fails the stage."""
    from mlseal.components import _kfp_io

    _kfp_io.run("validate", inputs={"data": data}, outputs={"report": report}, run_id=run_id,
                pipeline=pipeline, task=task, reference_path=reference_path,
                thresholds=thresholds or None, data_key_name=data_key_name)


@_component
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
    run_id: str = dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    pipeline: str = dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
    task: str = dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
) -> None:
    """Train with fixed seeds, optionally adversarially (L-inf FGSM at `epsilon`)."""
    from mlseal.components import _kfp_io

    _kfp_io.run("train", inputs={"data": data, "validation": validation}, outputs={"model": model},
                run_id=run_id, pipeline=pipeline, task=task, label=label, epsilon=epsilon,
                adversarial=adversarial, epochs=epochs, seed=seed, data_key_name=data_key_name)


@_component
def evaluate(
    model: Input[Model],
    data: Input[Dataset],
    metrics: Output[Metrics],
    label: str = "label",
    epsilon: float = 0.2,
    seed: int = 0,
    gates: dict[str, Any] = {},  # noqa: B006
    data_key_name: str = "mlseal-data",
    run_id: str = dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    pipeline: str = dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
    task: str = dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
) -> None:
    """Accuracy, F1, ROC AUC, robust accuracy, membership-inference risk; gates fail the stage."""
    from mlseal.components import _kfp_io

    _kfp_io.run("evaluate", inputs={"model": model, "data": data}, outputs={"metrics": metrics}, run_id=run_id,
                pipeline=pipeline, task=task, label=label, epsilon=epsilon, seed=seed, gates=gates or None,
                data_key_name=data_key_name)


@_component
def deploy(
    model: Input[Model],
    evaluation: Input[Metrics],
    manifest: Output[Artifact],
    policy_path: str,
    service_name: str = "mlseal-model",
    namespace: str = "models",
    run_id: str = dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    pipeline: str = dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
    task: str = dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
) -> None:
    """Emit a KServe InferenceService for the model and admit it with mlseal's policy engine."""
    from mlseal.components import _kfp_io

    _kfp_io.run("deploy", inputs={"model": model, "evaluation": evaluation}, outputs={"manifest": manifest},
                run_id=run_id, pipeline=pipeline, task=task, policy_path=policy_path,
                service_name=service_name, namespace=namespace)


COMPONENTS = {
    "ingest": ingest,
    "anonymize": anonymize,
    "encrypt": encrypt,
    "validate": validate,
    "train": train,
    "evaluate": evaluate,
    "deploy": deploy,
}

