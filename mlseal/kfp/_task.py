"""The task side of a sealed KFP component: what runs inside the pod around the user's body.

A component made with `mlseal.kfp.sealed_component` calls `run(...)` from its generated
body. In order, before the user's code runs: the stage's services come from the pod's
environment (`Sealing.from_env`, which refuses a pod-local ledger or a silent dev store),
the ledger must answer and the stage's own signer must be trusted for its stage, and
every input artifact must verify (the digest and OMS bundle its producer put in the
artifact's KFP metadata, the ledger record, the bundle over the bytes). Then the body
runs with the open `Stage` available as `current_stage()`. After it: every output the
body wrote at its artifact path is digested and signed, one record is appended, and
each output artifact's metadata carries its digest, seq, entry hash and bundle, and the
signed checkpoint the stage accepted, for the next task.

This module runs under ``_KFP_RUNTIME=true``: it must not import ``kfp.dsl``'s component
machinery, only the artifact objects KFP hands to the body.
"""

from __future__ import annotations

import contextvars
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlseal._files import remove_path
from mlseal.errors import ConfigurationError
from mlseal.kfp.metadata import META_BUNDLE, META_CHECKPOINT, META_ENTRY_SHA256, META_SEQ, META_SHA256, upstream

if TYPE_CHECKING:
    from mlseal.stage import Stage

__all__ = ["artifact_uri", "current_stage", "run"]

_CURRENT: contextvars.ContextVar[Stage | None] = contextvars.ContextVar("mlseal_stage", default=None)

#: recorded for an output whose media type the component did not declare
DEFAULT_MEDIA_TYPE = "application/octet-stream"


def current_stage() -> Stage:
    """The open `Stage` of the sealed component whose body is running.

    Use it for what the body needs beyond its artifacts: secrets by reference
    (``current_stage().secret("mlseal/app/key")``), data keys, metrics, more params.
    """
    st = _CURRENT.get()
    if st is None:
        raise ConfigurationError(
            "current_stage() is only available inside the body of a @sealed_component while it runs"
        )
    return st


def artifact_uri(raw: str | None, path: str) -> str:
    """A KFP artifact's URI as a proper URI (kfp.local gives bare paths)."""
    if raw and urllib.parse.urlsplit(raw).scheme:
        return raw
    return Path(raw or path).resolve().as_uri()


def input_ref(artifact: Any) -> tuple[bytes | None, str | None, str]:
    """(OMS bundle bytes, recorded digest, URI) of an input artifact, from its KFP metadata."""
    meta = artifact.metadata or {}
    bundle = meta.get(META_BUNDLE)
    return (
        bundle.encode() if isinstance(bundle, str) and bundle else None,
        meta.get(META_SHA256) or None,
        artifact_uri(artifact.uri, artifact.path),
    )


def _artifacts(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def run(
    body: Callable[..., Any],
    spec: Mapping[str, Any],
    arguments: Mapping[str, Any],
    run_id: str,
    pipeline: str,
    task: str,
) -> Any:
    """Run `body(**arguments)` as a sealed stage described by `spec` (see module docstring).

    ``spec``: ``stage`` (kind), ``name``, ``source_sha256``, ``inputs`` and ``outputs``
    (the names of the artifact arguments), ``media_types`` (output name → media type).
    """
    from mlseal.stage import Sealing, Stage, with_run

    stage_kind = str(spec["stage"])
    inputs = tuple(spec.get("inputs", ()))
    outputs = tuple(spec.get("outputs", ()))
    media_types: Mapping[str, str] = spec.get("media_types") or {}
    sealing = with_run(Sealing.from_env(stage=stage_kind), run_id=run_id, pipeline=pipeline, task=task)
    params = {k: v for k, v in arguments.items() if k not in inputs and k not in outputs}
    try:
        with Stage(stage_kind, name=str(spec["name"]), sealing=sealing, params=params,
                   source_digest=spec.get("source_sha256")) as st:
            for name in inputs:
                arts = _artifacts(arguments.get(name))
                for i, a in enumerate(arts):
                    bundle, sha, uri = input_ref(a)
                    st.input(
                        name if not isinstance(arguments.get(name), list | tuple) else f"{name}[{i}]",
                        a.path,
                        bundle=bundle,
                        uri=uri,
                        expect_sha256=sha,
                        **upstream(a.metadata),
                    )
            token = _CURRENT.set(st)
            try:
                result = body(**arguments)
            except BaseException:
                # what the body wrote at its artifact paths must not be uploaded as output
                for name in outputs:
                    if name not in st.declared_outputs():
                        remove_path(Path(arguments[name].path))
                raise
            finally:
                _CURRENT.reset(token)
            declared = st.declared_outputs()
            for name in outputs:
                if name in declared:
                    continue
                a = arguments[name]
                if not Path(a.path).exists():
                    raise ConfigurationError(
                        f"stage {st.name}: output {name!r} was not written (nothing at {a.path})"
                    )
                st.adopt_output(name, a.path, media_type=media_types.get(name, DEFAULT_MEDIA_TYPE),
                                uri=artifact_uri(a.uri, a.path))
    finally:
        close = getattr(sealing.ledger, "close", None)
        if callable(close):
            close()
    sealed = st.result
    assert sealed is not None  # a stage that committed has a result
    for name in outputs:
        a = arguments[name]
        out = sealed.outputs[name]
        a.metadata[META_SHA256] = out.sha256
        a.metadata[META_SEQ] = sealed.seq
        a.metadata[META_BUNDLE] = out.bundle.read_text()
        a.metadata[META_ENTRY_SHA256] = sealed.entry_hash
        if sealed.checkpoint is not None:
            a.metadata[META_CHECKPOINT] = sealed.checkpoint.decode()
        if hasattr(a, "log_metric") and sealed.record is not None:
            for k, v in sealed.record.metrics.items():
                a.log_metric(k, v)
    return result
