"""Reference pipelines built from mlseal's sealed components.

`reference`: ingest → anonymize → encrypt → validate → train → evaluate → deploy.

    >>> from mlseal.pipelines import compile_reference
    >>> text = compile_reference()      # KFP IR YAML; refuses secret literals
    >>> "comp-anonymize" in text and "comp-deploy" in text
    True

Compile it for a cluster with ``python -m mlseal.pipelines OUT.yaml``.
"""

# (no `from __future__ import annotations`: KFP reads the real annotation objects)

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kfp import dsl

from mlseal import components as c
from mlseal.components.compile import compile_checked

__all__ = ["DEFAULT_GATES", "PIPELINE_NAME", "compile_reference", "reference"]

PIPELINE_NAME = "mlseal-reference"

#: evaluation gates the reference pipeline applies (and the demo's policy requires); explicit
#: bounds (`mlseal.gates`), read the same way by the evaluate stage and by admission
DEFAULT_GATES: dict[str, Any] = {"accuracy": {"min": 0.90}, "robust_accuracy": {"min": 0.70},
                                 "mia_advantage": {"max": 0.20}}


_pipeline: Callable[[Callable[..., None]], Any] = dsl.pipeline(
    name=PIPELINE_NAME,
    description="Sealed reference pipeline: ingest, anonymize, encrypt, validate, train, evaluate, deploy.",
)


@_pipeline
def reference(
    source: str,
    reference_path: str,
    policy_path: str,
    hmac_key_path: str = "mlseal/anonymize/hmac",
    data_key_name: str = "mlseal-data",
    epsilon: float = 0.2,
    epochs: int = 60,
    seed: int = 0,
    gates: dict[str, Any] = DEFAULT_GATES,
    service_name: str = "mlseal-model",
    namespace: str = "models",
) -> None:
    raw = c.ingest(source=source)
    raw.set_display_name("ingest")
    anon = c.anonymize(data=raw.outputs["dataset"], hmac_key_path=hmac_key_path)
    enc = c.encrypt(data=anon.outputs["anonymized"], data_key_name=data_key_name)
    val = c.validate(data=enc.outputs["encrypted"], reference_path=reference_path, data_key_name=data_key_name)
    model = c.train(data=enc.outputs["encrypted"], validation=val.outputs["report"], epsilon=epsilon,
                    epochs=epochs, seed=seed, data_key_name=data_key_name)
    ev = c.evaluate(model=model.outputs["model"], data=enc.outputs["encrypted"], epsilon=epsilon, seed=seed,
                    gates=gates, data_key_name=data_key_name)
    c.deploy(model=model.outputs["model"], evaluation=ev.outputs["metrics"], policy_path=policy_path,
             service_name=service_name, namespace=namespace)


def compile_reference(path: str | Path | None = None) -> str:
    """The reference pipeline as KFP IR YAML (written to `path` if given)."""
    return compile_checked(reference, path)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m mlseal.pipelines OUT.yaml", file=sys.stderr)
        return 2
    compile_reference(args[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
