"""The bridge between a KFP component body and a sealed step (runs inside the task).

A component body calls `run("train", inputs={...}, outputs={...}, ...)`: the stage's
services come from the pod's environment (`Sealing.from_env`), KFP artifacts become
`ArtifactIn` / `ArtifactOut`, and after the step each output artifact's KFP metadata
carries its digest, ledger seq and OMS bundle. The bundle travels in the metadata so
that a downstream task on a cluster, which downloads only the artifact itself, still
has the signature to verify before it reads a byte.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlseal.kfp.metadata import META_BUNDLE, META_SEQ, META_SHA256


def _uri(raw: str | None, path: str) -> str:
    """A KFP artifact URI as a proper URI (kfp.local gives bare paths)."""
    if raw and urllib.parse.urlsplit(raw).scheme:
        return raw
    return Path(raw or path).resolve().as_uri()


def run(step: str, *, inputs: Mapping[str, Any], outputs: Mapping[str, Any], run_id: str = "",
        task: str = "", pipeline: str = "", **params: Any) -> None:
    from mlseal.components._steps import STEPS, ArtifactIn, ArtifactOut
    from mlseal.stage import Sealing, with_run

    sealing = with_run(Sealing.from_env(), run_id=run_id or None, task=task or None, pipeline=pipeline or None)
    try:
        ins = {
            name: ArtifactIn(
                Path(a.path),
                bundle=(a.metadata.get(META_BUNDLE) or "").encode() or None,
                uri=_uri(a.uri, a.path),
                sha256=a.metadata.get(META_SHA256) or None,
            )
            for name, a in inputs.items()
        }
        outs = {name: ArtifactOut(Path(a.path), uri=_uri(a.uri, a.path)) for name, a in outputs.items()}
        result = STEPS[step](sealing, **ins, **outs, **params)
    finally:
        close = getattr(sealing.ledger, "close", None)
        if callable(close):
            close()
    for name, a in outputs.items():
        sealed = result.outputs[name]
        a.metadata[META_SHA256] = sealed.sha256
        a.metadata[META_SEQ] = result.seq
        a.metadata[META_BUNDLE] = sealed.bundle.read_text()
        if hasattr(a, "log_metric") and result.record is not None:
            for k, v in result.record.metrics.items():
                a.log_metric(k, v)
