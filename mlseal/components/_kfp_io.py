"""The bridge between a built-in component's body and its tested step (runs inside the task).

Each built-in component is a `mlseal.kfp.sealed_component`: by the time its body runs,
the stage is open and every input artifact has been verified. The body calls
`step("train", data=..., model=..., ...)`, which hands the KFP artifacts to the step
in `mlseal.components.steps` as `ArtifactIn` / `ArtifactOut` together with the open
stage; the step writes its outputs through the stage, and the sealed component's runtime
signs them, appends the record and puts digest, seq and bundle into each output
artifact's metadata.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["step"]


def _is_artifact(value: Any) -> bool:
    return hasattr(value, "uri") and hasattr(value, "metadata") and hasattr(value, "path")


def step(name: str, **arguments: Any) -> None:
    """Run built-in step `name` inside the running sealed component's stage."""
    from mlseal.components.steps import STEPS, ArtifactIn, ArtifactOut
    from mlseal.kfp._task import artifact_uri, current_stage, input_ref

    st = current_stage()
    inputs = {i.name for i in st.inputs}
    converted: dict[str, Any] = {}
    for key, value in arguments.items():
        if not _is_artifact(value):
            converted[key] = value
        elif key in inputs:
            bundle, sha, uri = input_ref(value)
            converted[key] = ArtifactIn(Path(value.path), bundle=bundle, uri=uri, sha256=sha)
        else:
            converted[key] = ArtifactOut(Path(value.path), uri=artifact_uri(value.uri, value.path))
    STEPS[name](st, **converted)
