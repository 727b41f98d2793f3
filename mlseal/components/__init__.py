"""KFP v2 components for every lifecycle stage, each a sealed stage.

Import them into your own pipeline, or use `mlseal.pipelines.reference` as is:

    >>> from kfp import dsl
    >>> from mlseal import components as c
    >>> @dsl.pipeline(name="mine")
    ... def mine(source: str):
    ...     raw = c.ingest(source=source)
    ...     c.anonymize(data=raw.outputs["dataset"])
    >>> sorted(c.COMPONENTS)
    ['anonymize', 'deploy', 'encrypt', 'evaluate', 'ingest', 'train', 'validate']

Each body is a few lines: it imports `mlseal.components._kfp_io` and calls the tested
step in `mlseal.components.steps`. Secrets are parameters only as references (a Vault
KV path ending in ``_path``, a Transit key ending in ``_name``), and
`mlseal.components.compile.check_no_secret_literals` refuses a compiled spec where a
secret-like parameter carries a literal value. The stage's services (ledger URL, trust
file, signing key or Transit key, Vault address) come from the task's environment, never
from parameters: see docs/pipeline.md.

The run context is passed with KFP's placeholders (job id, job name, task name), so each
ledger record names the KFP run and task that made it.

Compiled component YAML for each lives in ``mlseal/components/yaml/`` (regenerate with
``python -m mlseal.components.compile``).
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlseal.components._definitions import (
        COMPONENTS,
        IMAGE,
        anonymize,
        deploy,
        encrypt,
        evaluate,
        ingest,
        train,
        validate,
    )

__all__ = ["COMPONENTS", "IMAGE", "anonymize", "deploy", "encrypt", "evaluate", "ingest", "train", "validate"]


def __getattr__(name: str) -> Any:
    # Lazy: a running KFP task imports mlseal.components._kfp_io, and there (_KFP_RUNTIME)
    # kfp.dsl cannot define components.
    if name in __all__:
        from mlseal.components import _definitions

        return getattr(_definitions, name)
    raise AttributeError(f"module 'mlseal.components' has no attribute {name!r}")
