"""KFP v2 integration: seal your own steps, wire tasks to their services.

    >>> from kfp.dsl import Dataset, Input, Model, Output
    >>> from mlseal.kfp import sealed_component
    >>> @sealed_component(stage="train")
    ... def fit(data: Input[Dataset], model: Output[Model], epochs: int = 5):
    ...     open(model.path, "w").write(open(data.path).read()[:epochs])
    >>> fit.stage, sorted(fit.component_spec.inputs)
    ('train', ['data', 'epochs', 'mlseal_pipeline', 'mlseal_run_id', 'mlseal_task'])

- `sealed_component`: one decorator turns a KFP Python function into a sealed stage.
- `current_stage()`: inside its body, the open `mlseal.stage.Stage` (secrets, metrics).
- `wire` / `wire_compiled`: give tasks their services (ledger, trust, Vault) through
  kfp-kubernetes, so the compiled IR carries everything a pod needs.

Only `current_stage` works inside a running task (``_KFP_RUNTIME``); the rest is for
pipeline authors and imports `kfp.dsl` lazily.
"""

from typing import TYPE_CHECKING, Any

from mlseal.kfp._task import current_stage

if TYPE_CHECKING:
    from mlseal.kfp._component import RUN_CONTEXT, SealedComponent, sealed_component
    from mlseal.kfp._wiring import Services, wire, wire_compiled

__all__ = [
    "RUN_CONTEXT",
    "SealedComponent",
    "Services",
    "current_stage",
    "sealed_component",
    "wire",
    "wire_compiled",
]

_LAZY = {
    "RUN_CONTEXT": "mlseal.kfp._component",
    "SealedComponent": "mlseal.kfp._component",
    "sealed_component": "mlseal.kfp._component",
    "Services": "mlseal.kfp._wiring",
    "wire": "mlseal.kfp._wiring",
    "wire_compiled": "mlseal.kfp._wiring",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mlseal.kfp' has no attribute {name!r}")
