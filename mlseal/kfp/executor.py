"""Seal a KFP container component (any image, any language) with `mlseal record`.

A KFP v2 task gets its *executor input* (the JSON the driver builds; the `{{$}}`
placeholder) and reports back through its *executor output* file (`outputs.outputFile`,
parsed by the launcher as an ``ExecutorOutput`` message). This module reads the one and
writes the other, so that a non-Python step is sealed like a Python component:

1. every input artifact is verified against the digest and OMS bundle its producer put
   in the artifact's KFP metadata (`mlseal.sha256`, `mlseal.bundle`);
2. every output artifact's local file or directory is digested, signed and recorded;
3. each output's KFP metadata gets `mlseal.sha256`, `mlseal.seq` and `mlseal.bundle`,
   merged into whatever the step itself wrote to the executor output file, so that a
   downstream sealed task accepts it.

In a pipeline, build the container's command with `shell_command` (or `record_command`
for the ``mlseal record`` argv alone), and pass the run context to the task explicitly:
the KFP backend resolves ``{{$.pipeline_job_uuid}}`` & co. only where they are a task's
input value, not inside a command line or as a component's default.

    from kfp import dsl
    from mlseal.kfp.executor import shell_command

    @dsl.container_component
    def dedupe(raw: dsl.Input[dsl.Dataset], clean: dsl.Output[dsl.Dataset],
               run_id: str, pipeline: str, task: str):
        return dsl.ContainerSpec(
            image="registry.example.org/tools@sha256:...",
            command=shell_command(
                f"mkdir -p \\"$(dirname '{clean.path}')\\" && sort -u '{raw.path}' > '{clean.path}'",
                stage="process", name="dedupe", run_id=run_id, pipeline=pipeline, task=task,
                params={"method": "sort-u"},
            ),
        )

    @dsl.pipeline
    def p():
        ...
        dedupe(raw=..., run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
               pipeline=dsl.PIPELINE_JOB_NAME_PLACEHOLDER, task=dsl.PIPELINE_TASK_NAME_PLACEHOLDER)

Local paths follow the launcher (kubeflow/pipelines backend/src/v2/component,
``LocalPathForURI``) and the SDK (``kfp.dsl.types.artifact_types``): ``gs://`` ->
``/gcs/``, ``s3://`` -> ``/s3/``, ``minio://`` -> ``/minio/``, ``oci://a/b`` ->
``/oci/a_b/models``, each under the launcher's ``$ARTIFACT_LOCAL_PATH`` root (empty in a
cluster pod); an artifact whose metadata says ``_kfp_workspace: true`` lives under
``/kfp-workspace/.artifacts/``. A bare absolute path (what ``kfp.local`` passes) is used
as is.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlseal.errors import ConfigurationError, VerificationError
from mlseal.kfp.metadata import META_BUNDLE, META_CHECKPOINT, META_ENTRY_SHA256, META_SEQ, META_SHA256, upstream

if TYPE_CHECKING:
    from mlseal.stage import Stage, StageResult

__all__ = [
    "EXECUTOR_INPUT",
    "WORKSPACE_MOUNT",
    "ExecutorInput",
    "RuntimeArtifact",
    "SealedRef",
    "local_path",
    "merge_executor_output",
    "parse_executor_input",
    "read_executor_output",
    "record_command",
    "seal",
    "sealed_metadata",
    "sealed_ref",
    "shell_command",
    "unresolved",
    "write_executor_output",
]

#: the KFP placeholder the launcher replaces with the executor input JSON
#: (kfp.dsl.PIPELINE_TASK_EXECUTOR_INPUT_PLACEHOLDER)
EXECUTOR_INPUT = "{{$}}"
#: where KFP mounts a pipeline workspace (kfp.dsl.constants.WORKSPACE_MOUNT_PATH)
WORKSPACE_MOUNT = "/kfp-workspace"

_MOUNTS = (("gs://", "gcs"), ("minio://", "minio"), ("s3://", "s3"))
_HEX64 = re.compile(r"[0-9a-f]{64}")
_UNRESOLVED = "{{$"


# --- the executor input -----------------------------------------------------------------


@dataclass(frozen=True)
class RuntimeArtifact:
    """One input or output artifact of the task, as the driver described it."""

    key: str  # the component's input/output name
    name: str  # KFP's name for the artifact (may be empty)
    uri: str
    path: Path  # where the launcher downloaded it / uploads it from
    schema_title: str | None
    metadata: Mapping[str, Any]


@dataclass(frozen=True)
class ExecutorInput:
    """The parts of a KFP v2 ``ExecutorInput`` that sealing needs."""

    parameters: Mapping[str, Any]
    inputs: Mapping[str, RuntimeArtifact]
    outputs: Mapping[str, RuntimeArtifact]
    output_file: Path


def _where(field: str) -> str:
    return f"executor input: {field}"


def _obj(value: object, field: str, *, optional: bool = True) -> dict[str, Any]:
    if value is None and optional:
        return {}
    if not isinstance(value, dict):
        got = "nothing" if value is None else type(value).__name__
        raise ConfigurationError(f"{_where(field)} must be a JSON object, got {got}")
    return value


def _either(obj: Mapping[str, Any], camel: str, snake: str) -> Any:
    """protojson writes camelCase names and accepts the proto names too; so do we."""
    return obj[camel] if camel in obj else obj.get(snake)


def local_path(uri: str, *, root: str = "", workspace: str | None = None) -> Path:
    """The local path the KFP launcher uses for an artifact URI.

    `root` is the launcher's ``$ARTIFACT_LOCAL_PATH`` (empty in a pod); `workspace` is
    the workspace mount for an artifact marked ``_kfp_workspace``.
    """
    if ".." in uri.split("/"):
        raise ConfigurationError(f"artifact URI {uri!r} has a '..' segment")
    for prefix, mount in _MOUNTS:
        if uri.startswith(prefix):
            path = f"{root}/{mount}/{uri[len(prefix):]}"
            break
    else:
        if uri.startswith("oci://"):
            path = f"{root}/oci/{uri[len('oci://'):].replace('/', '_')}/models"
        elif uri.startswith("/"):  # kfp.local passes plain local paths as URIs
            path = uri
        else:
            raise ConfigurationError(
                f"artifact URI {uri!r}: unsupported scheme (the KFP launcher maps gs://, s3://, "
                "minio:// and oci:// to local paths)"
            )
    if workspace:
        path = os.path.join(workspace, ".artifacts", path.lstrip("/"))
    return Path(path)


def _artifact(key: str, value: object, field: str, root: str, workspace: str) -> RuntimeArtifact | None:
    arts = _obj(value, field, optional=False).get("artifacts")
    if arts is None or arts == []:
        return None  # an optional input nobody passed
    if not isinstance(arts, list):
        raise ConfigurationError(f"{_where(field + '.artifacts')} must be a list, got {type(arts).__name__}")
    if len(arts) > 1:
        raise ConfigurationError(
            f"{_where(field + '.artifacts')} holds {len(arts)} artifacts; mlseal record seals one artifact "
            "per input or output (no lists of artifacts)"
        )
    field = f"{field}.artifacts[0]"
    a = _obj(arts[0], field, optional=False)
    uri = a.get("uri")
    if not isinstance(uri, str) or not uri:
        raise ConfigurationError(f"{_where(field + '.uri')} is missing or not a string")
    metadata = _obj(a.get("metadata"), field + ".metadata")
    type_ = _obj(a.get("type"), field + ".type")
    title = _either(type_, "schemaTitle", "schema_title")
    name = a.get("name") or ""
    if not isinstance(name, str):
        raise ConfigurationError(f"{_where(field + '.name')} must be a string")
    in_workspace = metadata.get("_kfp_workspace") is True
    return RuntimeArtifact(
        key=key,
        name=name,
        uri=uri,
        path=local_path(uri, root=root, workspace=workspace if in_workspace else None),
        schema_title=title if isinstance(title, str) else None,
        metadata=metadata,
    )


#: the output the KFP launcher adds for the task's own log when PUBLISH_LOGS is on (the
#: default); it is written while the task runs and uploaded after it, so it is never sealed
#: (a component cannot declare it: the name is not a Python identifier)
LAUNCHER_LOGS = "executor-logs"


def parse_executor_input(
    source: str | bytes | Mapping[str, Any], *, root: str = "", workspace: str = WORKSPACE_MOUNT
) -> ExecutorInput:
    """Parse the executor input JSON (or its decoded object); `ConfigurationError` names the bad field."""
    if isinstance(source, str | bytes):
        try:
            data = json.loads(source)
        except ValueError as exc:
            text = source.decode("utf-8", "replace") if isinstance(source, bytes) else source
            hint = (
                " — the KFP launcher did not substitute the {{$}} placeholder"
                if _UNRESOLVED in text[:16]
                else ""
            )
            raise ConfigurationError(f"executor input is not JSON ({exc}){hint}") from None
    else:
        data = source
    top = _obj(data, "the document", optional=False)
    inputs = _obj(top.get("inputs"), "inputs")
    outputs = _obj(top.get("outputs"), "outputs")
    params = _obj(_either(inputs, "parameterValues", "parameter_values"), "inputs.parameterValues")
    out_file = _either(outputs, "outputFile", "output_file")
    if not isinstance(out_file, str) or not out_file:
        raise ConfigurationError(
            f"{_where('outputs.outputFile')} is missing: the launcher reads the artifacts' metadata from that file"
        )
    ins: dict[str, RuntimeArtifact] = {}
    outs: dict[str, RuntimeArtifact] = {}
    for side, target in (("inputs", ins), ("outputs", outs)):
        section = inputs if side == "inputs" else outputs
        for key, value in _obj(section.get("artifacts"), f"{side}.artifacts").items():
            if side == "outputs" and key == LAUNCHER_LOGS:
                continue  # the launcher's own log, uploaded after the step: not the step's output
            art = _artifact(key, value, f"{side}.artifacts.{key}", root, workspace)
            if art is not None:
                target[key] = art
    return ExecutorInput(parameters=params, inputs=ins, outputs=outs, output_file=Path(out_file))


# --- input artifacts: what their producer sealed --------------------------------------------


@dataclass(frozen=True)
class SealedRef:
    """The digest and OMS bundle an upstream sealed task put in an artifact's metadata."""

    sha256: str
    bundle: bytes
    #: `Stage.input` arguments for the producer's record and accepted checkpoint (`metadata.upstream`)
    upstream: Mapping[str, Any] = field(default_factory=dict)


def sealed_ref(art: RuntimeArtifact) -> SealedRef:
    """The producer's digest and bundle from the artifact's metadata; `VerificationError` without them."""
    sha = art.metadata.get(META_SHA256)
    bundle = art.metadata.get(META_BUNDLE)
    if sha is None and bundle is None:
        raise VerificationError(
            f"input {art.key!r} ({art.uri}) carries no {META_SHA256}/{META_BUNDLE} metadata: it was not "
            "produced by a sealed task (or its metadata was stripped)"
        )
    if not isinstance(sha, str) or not _HEX64.fullmatch(sha):
        raise VerificationError(f"input {art.key!r} ({art.uri}): metadata {META_SHA256} is not a sha256 hex digest")
    if not isinstance(bundle, str) or not bundle:
        raise VerificationError(f"input {art.key!r} ({art.uri}): metadata {META_BUNDLE} is missing or empty")
    return SealedRef(sha256=sha, bundle=bundle.encode(), upstream=upstream(art.metadata))


def sealed_metadata(
    sha256: str, seq: int, bundle: str, *, entry_sha256: str | None = None, checkpoint: bytes | None = None
) -> dict[str, Any]:
    """The KFP metadata every sealed output carries (the same keys the Python components set)."""
    meta: dict[str, Any] = {META_SHA256: sha256, META_SEQ: seq, META_BUNDLE: bundle}
    if entry_sha256 is not None:
        meta[META_ENTRY_SHA256] = entry_sha256
    if checkpoint is not None:
        meta[META_CHECKPOINT] = checkpoint.decode()
    return meta


# --- the executor output ------------------------------------------------------------------


def read_executor_output(ei: ExecutorInput) -> dict[str, Any]:
    """What the step already wrote to the executor output file ({} if nothing), checked.

    An entry that points one of our outputs elsewhere (another ``uri``, or a
    ``customPath``) would make the launcher upload something other than what is sealed:
    refused.
    """
    path = ei.output_file
    if not path.exists():
        return {}
    where = f"executor output file {path}"
    try:
        data = json.loads(path.read_bytes())
    except ValueError as exc:
        raise ConfigurationError(f"{where} is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"{where} must hold a JSON object")
    arts = data.get("artifacts")
    if arts is not None and not isinstance(arts, dict):
        raise ConfigurationError(f"{where}: artifacts must be an object")
    for key, art in ei.outputs.items():
        entry = (arts or {}).get(key)
        if entry is None:
            continue
        listed = entry.get("artifacts") if isinstance(entry, dict) else None
        if not isinstance(listed, list) or len(listed) > 1 or (listed and not isinstance(listed[0], dict)):
            raise ConfigurationError(f"{where}: artifacts.{key} must be {{\"artifacts\": [one object]}}")
        first: dict[str, Any] = listed[0] if listed else {}
        if first.get("uri") not in (None, "", art.uri):
            raise ConfigurationError(
                f"{where}: artifacts.{key} moves the output to {first['uri']!r}, but {art.uri!r} is what is sealed"
            )
        if _either(first, "customPath", "custom_path"):
            raise ConfigurationError(
                f"{where}: artifacts.{key} sets a customPath; the launcher would upload that path, not the sealed "
                f"{art.path}"
            )
        if first.get("metadata") is not None and not isinstance(first["metadata"], dict):
            raise ConfigurationError(f"{where}: artifacts.{key}.artifacts[0].metadata must be an object")
    return data


def merge_executor_output(
    existing: Mapping[str, Any], ei: ExecutorInput, metadata: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """`existing` with each output's metadata merged in (ours win), in the ``ExecutorOutput`` JSON shape."""
    out = dict(existing)
    arts = dict(out.get("artifacts") or {})
    for key, md in metadata.items():
        art = ei.outputs[key]
        listed = (arts.get(key) or {}).get("artifacts") or [{}]
        entry = dict(listed[0])
        if art.name:
            entry["name"] = art.name
        entry["uri"] = art.uri
        entry["metadata"] = {**(entry.get("metadata") or {}), **md}
        arts[key] = {"artifacts": [entry]}
    if arts:
        out["artifacts"] = arts
    return out


def write_executor_output(
    ei: ExecutorInput, metadata: Mapping[str, Mapping[str, Any]], *, existing: Mapping[str, Any] | None = None
) -> Path:
    """Merge `metadata` into the executor output file (atomically) and return its path."""
    from mlseal._files import write_atomic

    current = read_executor_output(ei) if existing is None else existing
    doc = merge_executor_output(current, ei, metadata)
    ei.output_file.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(ei.output_file, json.dumps(doc, sort_keys=True).encode())
    return ei.output_file


# --- sealing one task ---------------------------------------------------------------------


def seal(
    ei: ExecutorInput,
    stage: Stage,
    *,
    media_type: str = "application/octet-stream",
    metrics: Mapping[str, float] | None = None,
) -> tuple[StageResult, Path]:
    """Verify every input, seal every output, record `stage`, write the executor output.

    Fails closed, in order, before anything is written: an input without mlseal metadata
    (`VerificationError`), an output the step did not write or an executor output file
    that redirects an output (`ConfigurationError`); then, inside the stage, an input the
    ledger cannot vouch for (`InputRefused`; no record). Only a recorded stage gets its
    metadata into the executor output file. Should the commit itself fail (signing or
    the ledger unreachable), the outputs are removed with the stage's other partial
    outputs: the task fails and the launcher uploads nothing unsealed.
    """
    refs = {key: sealed_ref(art) for key, art in ei.inputs.items()}
    for key, art in ei.outputs.items():
        if not art.path.exists():
            raise ConfigurationError(f"output {key!r} was not written (expected at {art.path}, for {art.uri})")
    existing = read_executor_output(ei)
    with stage as st:
        for key, art in ei.inputs.items():
            st.input(key, art.path, bundle=refs[key].bundle, expect_sha256=refs[key].sha256, uri=art.uri,
                     **refs[key].upstream)
        for key, art in ei.outputs.items():
            # Stage.output records the KFP URI; the step's file moves to the stage's temporary
            # path and back into place when the stage commits (same directory: a rename).
            temp = st.output(key, art.path, media_type=media_type, directory=art.path.is_dir(), uri=art.uri)
            os.replace(art.path, temp)
        for name, value in (metrics or {}).items():
            st.metric(name, value)
    result = stage.result
    assert result is not None  # __exit__ without an exception always sets it
    metadata = {
        key: sealed_metadata(out.sha256, result.seq, out.bundle.read_text(), entry_sha256=result.entry_hash,
                             checkpoint=result.checkpoint)
        for key, out in result.outputs.items()
    }
    return result, write_executor_output(ei, metadata, existing=existing)


# --- the container command ----------------------------------------------------------------


def unresolved(value: object) -> str | None:
    """The first string in `value` (nested) that still holds a ``{{$`` KFP placeholder."""
    if isinstance(value, str):
        return value if _UNRESOLVED in value else None
    if isinstance(value, Mapping):
        for k, v in value.items():
            found = unresolved(k) or unresolved(v)
            if found:
                return found
    elif isinstance(value, list | tuple):
        for v in value:
            found = unresolved(v)
            if found:
                return found
    return None


_RUN_PLACEHOLDERS = (
    "{{$.pipeline_job_uuid}}",
    "{{$.pipeline_job_name}}",
    "{{$.pipeline_job_resource_name}}",
    "{{$.pipeline_task_name}}",
    "{{$.pipeline_task_uuid}}",
)


def _text(value: object, option: str) -> str:
    text = str(value)  # a KFP placeholder object (a component input) renders as its placeholder
    for p in _RUN_PLACEHOLDERS:
        if p in text:
            raise ConfigurationError(
                f"{option} {text!r}: the KFP backend does not resolve {p} inside a command; declare a component "
                f"input (e.g. run_id: str), use it here, and pass {p} to the task as that input's value"
            )
    return text


def record_command(
    *,
    stage: str,
    name: str | None = None,
    run_id: object | None = None,
    pipeline: object | None = None,
    task: object | None = None,
    params: Mapping[str, object] | None = None,
    metrics: Mapping[str, object] | None = None,
    media_type: str | None = None,
    trust: str | None = None,
    signer_name: str | None = None,
    executor_input: str = EXECUTOR_INPUT,
    program: Sequence[str] = ("mlseal",),
) -> list[str]:
    """The ``mlseal record --executor-input {{$}} ...`` argv for a container component.

    Values may be KFP placeholders of the component's own inputs (inside a
    ``@dsl.container_component`` function a parameter renders as
    ``{{$.inputs.parameters['x']}}``, which the launcher substitutes). Without `run_id`,
    `pipeline`, `task`, the record takes them from the pod's environment (``MLSEAL_RUN_ID``,
    ``KFP_RUN_ID``, ...). The ledger, trust file and signing key come from the
    environment too (`mlseal.kfp.wire`).
    """
    argv = [*program, "record", "--executor-input", executor_input, "--stage", _text(stage, "stage")]
    options: list[tuple[str, object | None]] = [
        ("--name", name),
        ("--run-id", run_id),
        ("--pipeline", pipeline),
        ("--task", task),
        ("--media-type", media_type),
        ("--trust", trust),
        ("--signer-name", signer_name),
    ]
    for option, value in options:
        if value is not None:
            argv += [option, _text(value, option)]
    from mlseal.secrets.refs import check_parameter

    for k, v in (params or {}).items():  # the argv is in the compiled pipeline: refuse secrets now
        if not hasattr(v, "_to_string"):  # a pipeline channel is resolved at run time, and checked then
            check_parameter(k, v, where=f"record_command: param {k}")
    for option, pairs in (("--param", params), ("--metric", metrics)):
        for k, v in (pairs or {}).items():
            value = v if isinstance(v, str) or hasattr(v, "_to_string") else json.dumps(v)
            argv += [option, f"{k}={_text(value, f'{option} {k}')}"]
    return argv


def shell_command(script: str, **record: Any) -> list[str]:
    """``sh -c`` running `script`, then (only if it succeeded) ``mlseal record``.

    The record's argv, with the executor input JSON, travels as the shell's positional
    parameters (``exec "$@"``), never spliced into the script text. The script runs
    with ``set -e``: a failing command stops the step before anything is sealed.
    `record` takes `record_command`'s keyword arguments.
    """
    argv = record_command(**record)
    # set -e stops at a failing command; the status check covers a failing `a && b` at the end,
    # which set -e lets pass (POSIX: -e is ignored in the left part of an && or || list).
    body = f'set -e\n{script}\nstatus=$?\n[ "$status" -eq 0 ] || exit "$status"\nexec "$@"\n'
    return ["sh", "-c", body, "mlseal-record", *argv]
