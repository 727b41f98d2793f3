"""The container driver: resolve a task's inputs, provision its outputs, build its pod.

Follows kubeflow/pipelines backend/src/v2/driver (container.go ``Container``,
resolve.go ``resolveInputs`` / ``resolveInputParameter`` / ``resolveUpstreamArtifacts``,
driver.go ``provisionOutputs`` / ``initPodSpecPatch``, k8s.go ``extendPodSpecPatch``,
util.go ``resolveContainerArgs``). What it does not follow is refused with
`Unsupported`, never approximated; see README.md.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from tests.kfp_backend import _values as V
from tests.kfp_backend.cluster import DEFAULT_TOKEN_DIR, KUBERNETES_AUDIENCE, Cluster

WORKSPACE_MOUNT_PATH = "/kfp-workspace"
OUTPUT_METADATA_FALLBACK = "/tmp/kfp_outputs/output_metadata.json"

#: the placeholders resolveInputParameter replaces when a runtimeValue.constant equals one
#: of them exactly (resolve.go); anywhere else they stay literal text
_RUN_PLACEHOLDERS = (
    "{{$.pipeline_job_name}}",
    "{{$.pipeline_job_resource_name}}",
    "{{$.pipeline_job_uuid}}",
    "{{$.pipeline_task_name}}",
    "{{$.pipeline_task_uuid}}",
    "{{$.pipeline_job_create_time_utc}}",
    "{{$.pipeline_job_schedule_time_utc}}",
)

_INPUT_PARAM_RE = re.compile(r"\{\{\$\.inputs\.parameters\['(.+?)']}}")

#: platform-spec fields that only steer scheduling or image pulls: accepted, no effect here
_SCHEDULING_ONLY = {"nodeSelector", "tolerations", "imagePullPolicy", "imagePullSecret", "nodeAffinity",
                    "podAffinity", "activeDeadlineSeconds"}
_MODELLED = {"secretAsEnv", "secretAsVolume", "configMapAsEnv", "configMapAsVolume", "fieldPathAsEnv",
             "podMetadata"}


class Unsupported(Exception):
    """The IR uses a backend feature this harness does not model."""


class DriverError(V.BackendError):
    """The driver fails the task (the Argo driver pod exits non-zero)."""


class PodStartError(V.BackendError):
    """The kubelet cannot start the pod (missing Secret/ConfigMap, key, or volume)."""


@dataclass
class RunContext:
    run_id: str
    run_name: str
    run_display_name: str
    pipeline_name: str
    create_time_utc: str
    pipeline_root: str          # the run's root: <root>/<pipeline name>/<run id>
    root_parameters: dict[str, Any]
    root_dag_execution_id: int


@dataclass
class Execution:
    """What MLMD holds about a finished container task."""

    id: int
    state: str
    output_parameters: dict[str, Any] = field(default_factory=dict)
    output_artifacts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


@dataclass
class TaskPlan:
    """The driver's result: executor input and the pod to run."""

    task_name: str
    execution_id: int
    executor_input: dict[str, Any]
    component: dict[str, Any]
    command: list[str]          # user command + args after the driver's substitution
    env: dict[str, str]
    files: dict[str, tuple[str, int]]        # absolute path -> (content, mode)
    volume_mounts: list[str]
    labels: dict[str, str]
    annotations: dict[str, str]
    pod_name: str
    pod_uid: str


def generate_output_uri(root: str, paths: list[str], preserve_query: bool) -> str:
    """metadata.GenerateOutputURI (backend/src/v2/metadata/client.go)."""
    query = ""
    parts = root.split("?")
    if len(parts) == 2:
        root = parts[0]
        if preserve_query:
            query = "?" + parts[1]
    joined = "/".join(p.strip("/") for p in paths if p)
    return f"{root.rstrip('/')}/{joined}{query}"


def local_path_for_uri(uri: str) -> str:
    """component.LocalPathForURI (launcher_v2.go)."""
    for scheme, prefix in (("gs://", "/gcs/"), ("minio://", "/minio/"), ("s3://", "/s3/")):
        if uri.startswith(scheme):
            return prefix + uri[len(scheme):]
    if uri.startswith("oci://"):
        return "/oci/" + uri[len("oci://"):].replace("/", "_") + "/models"
    raise V.BackendError(f"failed to generate local path for URI {uri}: unsupported storage scheme")


# -- inputs -----------------------------------------------------------------------------------


def _runtime_constant(value: Any, ctx: RunContext, task_name: str) -> Any:
    if isinstance(value, str):
        if "{{$.workspace_path}}" in value:
            return value.replace("{{$.workspace_path}}", WORKSPACE_MOUNT_PATH)
        resolved = {
            "{{$.pipeline_job_name}}": ctx.run_display_name,
            "{{$.pipeline_job_resource_name}}": ctx.run_name,
            "{{$.pipeline_job_uuid}}": ctx.run_id,
            "{{$.pipeline_task_name}}": task_name,
            # resolve.go formats the parent DAG's execution id here
            "{{$.pipeline_task_uuid}}": str(ctx.root_dag_execution_id),
            "{{$.pipeline_job_create_time_utc}}": ctx.create_time_utc,
            "{{$.pipeline_job_schedule_time_utc}}": "",
        }.get(value)
        if resolved is not None:
            return resolved
    return V.normalize(value)


class _Null(Exception):
    """ErrResolvedParameterNull."""


def _resolve_parameter(spec: dict[str, Any], ctx: RunContext, task_name: str,
                       mlmd: dict[str, Execution]) -> Any:
    if "componentInputParameter" in spec:
        name = spec["componentInputParameter"]
        if name not in ctx.root_parameters:
            raise DriverError(f"resolving input parameter with spec {json.dumps(spec)}: "
                              f"parent DAG does not have input parameter {name}")
        value = ctx.root_parameters[name]
        if value is None:
            raise _Null(name)
        return value
    if "taskOutputParameter" in spec:
        ref = spec["taskOutputParameter"]
        producer = mlmd.get(ref["producerTask"])
        if producer is None:
            raise DriverError(f"producer task, {ref['producerTask']}, not in tasks")
        if ref["outputParameterKey"] not in producer.output_parameters:
            raise DriverError(f"producer task {ref['producerTask']} has no output parameter "
                              f"{ref['outputParameterKey']!r}")
        return producer.output_parameters[ref["outputParameterKey"]]
    if "runtimeValue" in spec:
        rv = spec["runtimeValue"]
        if "constant" not in rv:
            raise DriverError(f"param runtime value spec {rv} not implemented")
        return _runtime_constant(rv["constant"], ctx, task_name)
    if "taskFinalStatus" in spec:
        raise Unsupported("taskFinalStatus inputs (exit handlers) are not modelled")
    raise DriverError(f"parameter spec {spec} not implemented yet")


def _validate_types(inputs: dict[str, Any], definitions: dict[str, Any]) -> None:
    """handleParamTypeValidationAndConversion (resolve.go)."""
    for name, spec in definitions.items():
        has_value = name in inputs
        optional = bool(spec.get("isOptional"))
        if not has_value and not optional:
            if "defaultValue" not in spec:
                raise DriverError(f"neither value nor default value provided for non-optional parameter {name!r}")
        elif not has_value and optional:
            # The default is not passed: "they are resolved internally within the component"
            # (resolve.go; kubeflow/pipelines#8765).
            continue
        value = inputs.get(name)
        ptype = spec.get("parameterType")
        if ptype == "STRING":
            if not isinstance(value, str):
                inputs[name] = V.pb_value_to_text(value)
            continue
        actual = V.kind(value) if has_value else "nil"
        expected = {"NUMBER_DOUBLE": "number", "NUMBER_INTEGER": "number", "BOOLEAN": "bool", "LIST": "list",
                    "STRUCT": "struct", "TASK_FINAL_STATUS": "struct", "TASK_CONFIG": "struct"}.get(str(ptype))
        if actual == "null":
            raise DriverError(f"got null for input parameter {name!r}")
        if actual == "nil":
            raise DriverError(f"parameter {name} has unknown protobuf.Value type: <nil>")
        if actual != expected:
            raise DriverError(f"input parameter {name!r} type mismatch: expect {ptype}, got {actual}")


def resolve_inputs(task_name: str, task: dict[str, Any], component: dict[str, Any], ctx: RunContext,
                   mlmd: dict[str, Execution]) -> dict[str, Any]:
    definitions = component.get("inputDefinitions", {}).get("parameters", {})
    params: dict[str, Any] = {}
    for name, spec in task.get("inputs", {}).get("parameters", {}).items():
        if "parameterExpressionSelector" in spec:
            raise Unsupported("parameterExpressionSelector is not modelled")
        comp_param = definitions.get(name)
        try:
            value = _resolve_parameter(spec, ctx, task_name, mlmd)
        except _Null:
            if comp_param is not None and comp_param.get("isOptional"):
                continue  # "the launcher will handle defaults"
            raise DriverError(f"the resolved input parameter is null: {name}") from None
        literals = (comp_param or {}).get("literals")
        if literals and value not in [V.normalize(x) for x in literals]:
            raise DriverError(f"validating parameter {name!r}: value {value!r} is not one of {literals}")
        params[name] = value
    artifacts: dict[str, Any] = {}
    for name, spec in task.get("inputs", {}).get("artifacts", {}).items():
        if "taskOutputArtifact" not in spec:
            raise Unsupported(f"input artifact {name}: only taskOutputArtifact is modelled, got {sorted(spec)}")
        ref = spec["taskOutputArtifact"]
        producer = mlmd.get(ref["producerTask"])
        if producer is None:
            raise DriverError(f"cannot find producer task {ref['producerTask']!r}")
        found = producer.output_artifacts.get(ref["outputArtifactKey"])
        if not found:
            raise DriverError(f"cannot find output artifact key {ref['outputArtifactKey']!r} in producer task "
                              f"{ref['producerTask']!r}")
        artifacts[name] = {"artifacts": [json.loads(json.dumps(a)) for a in found]}
    _validate_types(params, definitions)
    inputs: dict[str, Any] = {}
    if params:
        inputs["parameterValues"] = params
    if artifacts:
        inputs["artifacts"] = artifacts
    return inputs


def provision_outputs(pipeline_root: str, task_name: str, outputs_spec: dict[str, Any], *,
                      publish_logs: bool = True) -> dict[str, Any]:
    """provisionOutputs (driver.go); with ``publish_logs`` (PUBLISH_LOGS, "true" in the
    API server's manifests) an ``executor-logs`` output artifact the launcher fills."""
    task_root = generate_output_uri(pipeline_root, [task_name, str(uuid.uuid4())], False)
    outputs: dict[str, Any] = {}
    arts = {}
    specs = dict(outputs_spec.get("artifacts", {}))
    if publish_logs:
        specs["executor-logs"] = {"artifactType": {"schemaTitle": "system.Artifact"}}
    for name, spec in specs.items():
        art: dict[str, Any] = {"name": name, "type": spec.get("artifactType", {}),
                               "uri": generate_output_uri(task_root, [name], False)}
        if spec.get("metadata"):
            art["metadata"] = spec["metadata"]
        arts[name] = {"artifacts": [art]}
    if arts:
        outputs["artifacts"] = arts
    params = {name: {"outputFile": f"/tmp/kfp/outputs/{name}"} for name in outputs_spec.get("parameters", {})}
    if params:
        outputs["parameters"] = params
    try:
        outputs["outputFile"] = local_path_for_uri(task_root) + "/output_metadata.json"
    except V.BackendError:
        outputs["outputFile"] = OUTPUT_METADATA_FALLBACK
    return outputs


# -- container args (driver stage) ------------------------------------------------------------


def _resolve_placeholders(arg: str, params: dict[str, Any]) -> str:
    def one(m: re.Match[str]) -> str:
        if m.group(1) not in params:
            raise DriverError(f"failed to resolve input parameters: parameter {m.group(1)!r} not found in "
                              "executor input")
        return V.driver_placeholder_text(params[m.group(1)])

    return _INPUT_PARAM_RE.sub(one, arg)


def resolve_container_args(args: list[str], executor_input: dict[str, Any]) -> list[str]:
    """resolveContainerArgs (driver/util.go)."""
    params = executor_input.get("inputs", {}).get("parameterValues", {})
    out: list[str] = []
    for arg in args:
        if "$.outputs" in arg:
            out.append(arg)
        elif arg.strip().startswith('{"IfPresent":'):
            clause = json.loads(arg)["IfPresent"]
            present = clause.get("InputName") in params and params[clause["InputName"]] is not None
            chosen = clause.get("Then") if present else clause.get("Else")
            if chosen is None:
                continue
            for item in [chosen] if isinstance(chosen, str) else chosen:
                out.append(_resolve_placeholders(item, params))
        else:
            out.append(_resolve_placeholders(arg, params))
    return out


# -- pod ----------------------------------------------------------------------------------------


def _name_of(ref: dict[str, Any], key: str, ctx: RunContext, task_name: str, mlmd: dict[str, Execution]) -> str | None:
    """SecretName / SecretNameParameter (resolveInputParameterStr); None: null optional input."""
    param = ref.get(f"{key}NameParameter")
    if param is not None:
        try:
            value = _resolve_parameter(param, ctx, task_name, mlmd)
        except _Null:
            return None
        if not isinstance(value, str) or not value:
            raise DriverError(f"resolving input parameter with spec {json.dumps(param)}. Expected a non-empty string")
        return value
    name = ref.get(f"{key}Name")
    if not name:
        raise DriverError(f"missing either {key}Name or {key}NameParameter in executor config")
    return str(name)


def _field_path(path: str, pod: dict[str, Any]) -> str:
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return str(pod[m.group(1)].get(m.group(2), ""))
    simple = {"metadata.name": pod["name"], "metadata.namespace": pod["namespace"], "metadata.uid": pod["uid"],
              "spec.serviceAccountName": pod["service_account"], "spec.nodeName": "kfp-harness-node",
              "status.podIP": "127.0.0.1", "status.hostIP": "127.0.0.1", "status.podIPs": "127.0.0.1"}
    if path not in simple:
        raise PodStartError(f"unsupported fieldPath {path!r}")
    return str(simple[path])


#: where the task process puts ``python3``/``python`` links to the host interpreter
SHIM_DIR = "/kfp-launcher/bin"
POD_HOME = "/tmp/home"
POD_WORKDIR = "/tmp/work"
_KUBERNETES_SERVICE_ENV = {
    "KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443",
    "KUBERNETES_SERVICE_PORT_HTTPS": "443", "KUBERNETES_PORT": "tcp://10.96.0.1:443",
    "KUBERNETES_PORT_443_TCP": "tcp://10.96.0.1:443", "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
    "KUBERNETES_PORT_443_TCP_PORT": "443", "KUBERNETES_PORT_443_TCP_ADDR": "10.96.0.1",
}


def build_pod(container: dict[str, Any], platform: dict[str, Any], ctx: RunContext, cluster: Cluster,
              task_name: str, mlmd: dict[str, Execution], pythonpath: str
              ) -> tuple[dict[str, str], dict[str, tuple[str, int]], list[str], dict[str, str], dict[str, str],
                         str, str]:
    """Env, volume files, mount points, labels, annotations, pod name and uid.

    The env is built in the order Kubernetes applies it (later wins): the image's ENV,
    service links, the executor template's envFrom (metadata-grpc-configmap) and env
    (KFP_POD_NAME/KFP_POD_UID, argocompiler/common.go), then the podSpecPatch: the
    component's container env (driver.go initPodSpecPatch), secretAsEnv, configMapAsEnv,
    fieldPathAsEnv (k8s.go extendPodSpecPatch)."""
    unknown = set(platform) - _MODELLED - _SCHEDULING_ONLY
    if unknown:
        raise Unsupported(f"kubernetes platform config {sorted(unknown)} is not modelled")
    pod_uid = str(uuid.uuid4())
    pod_name = f"{ctx.run_name}-system-container-impl-{uuid.uuid4().int % 10**10:010d}"
    meta = platform.get("podMetadata", {})
    labels = {"pipelines.kubeflow.org/v2_component": "true", "workflows.argoproj.io/workflow": ctx.run_name,
              **{str(k): str(v) for k, v in meta.get("labels", {}).items()}}
    annotations = {str(k): str(v) for k, v in meta.get("annotations", {}).items()}
    pod = {"name": pod_name, "uid": pod_uid, "namespace": cluster.namespace, "labels": labels,
           "annotations": annotations, "service_account": cluster.service_account}

    env = {"PATH": f"{SHIM_DIR}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "HOME": POD_HOME, "HOSTNAME": pod_name, **cluster.image_env, **_KUBERNETES_SERVICE_ENV,
           "METADATA_GRPC_SERVICE_HOST": "metadata-grpc-service.kubeflow", "METADATA_GRPC_SERVICE_PORT": "8080",
           "KFP_POD_NAME": pod_name, "KFP_POD_UID": pod_uid}
    if pythonpath:
        # the one thing from the test process: where the code under test is importable
        env["PYTHONPATH"] = pythonpath
    for item in container.get("env", []):
        env[str(item["name"])] = str(item.get("value", ""))
    for ref in platform.get("secretAsEnv", []):
        for k2e in ref.get("keyToEnv", []):
            name = _name_of(ref, "secret", ctx, task_name, mlmd)
            if name is None:
                continue
            data = cluster.secret(name)
            if data is None or k2e["secretKey"] not in data:
                if ref.get("optional"):
                    continue
                raise PodStartError(f'CreateContainerConfigError: secret "{name}" not found' if data is None else
                                    f"CreateContainerConfigError: couldn't find key {k2e['secretKey']} in Secret "
                                    f"{cluster.namespace}/{name}")
            env[k2e["envVar"]] = data[k2e["secretKey"]]
    for ref in platform.get("configMapAsEnv", []):
        for k2e in ref.get("keyToEnv", []):
            name = _name_of(ref, "configMap", ctx, task_name, mlmd)
            if name is None:
                continue
            data = cluster.config_map(name)
            if data is None or k2e["configMapKey"] not in data:
                if ref.get("optional"):
                    continue
                raise PodStartError(f'CreateContainerConfigError: configmap "{name}" not found' if data is None else
                                    f"CreateContainerConfigError: couldn't find key {k2e['configMapKey']} in "
                                    f"ConfigMap {cluster.namespace}/{name}")
            env[k2e["envVar"]] = data[k2e["configMapKey"]]
    for ref in platform.get("fieldPathAsEnv", []):
        env[ref["name"]] = _field_path(ref["fieldPath"], pod)

    files: dict[str, tuple[str, int]] = {}
    mounts: list[str] = []
    for kind, getter in (("secret", cluster.secret), ("configMap", cluster.config_map)):
        for ref in platform.get(f"{kind}AsVolume", []):
            name = _name_of(ref, kind, ctx, task_name, mlmd)
            if name is None:
                continue
            data = getter(name)
            if data is None and not ref.get("optional"):
                raise PodStartError(f'FailedMount: MountVolume.SetUp failed for volume "{name}" : '
                                    f'{kind.lower()} "{name}" not found')
            mount = ref["mountPath"].rstrip("/")
            mounts.append(mount)
            for key, content in (data or {}).items():
                files[f"{mount}/{key}"] = (content, 0o644)

    # The image's own files (a stand-in for what a container image ships).
    for path, content in cluster.image_files.items():
        mounts.append(path.rsplit("/", 1)[0] or "/")
        files[path] = (content, 0o644)
    # Every pod: the service account's token (kubelet-projected, API server audience).
    mounts.append(DEFAULT_TOKEN_DIR)
    files[f"{DEFAULT_TOKEN_DIR}/token"] = (
        cluster.issuer(cluster.service_account, cluster.namespace, audience=KUBERNETES_AUDIENCE), 0o644)
    files[f"{DEFAULT_TOKEN_DIR}/namespace"] = (cluster.namespace, 0o644)
    # PodDefaults (Kubeflow admission webhook): selected by labels.
    for pd in cluster.pod_defaults:
        if all(labels.get(k) == v for k, v in pd.selector.items()):
            mounts.append(pd.mount_path)
            files[f"{pd.mount_path}/{pd.path}"] = (
                cluster.issuer(cluster.service_account, cluster.namespace, audience=pd.audience,
                               expires_in=pd.expiration_seconds), 0o644)
    return env, files, mounts, labels, annotations, pod_name, pod_uid
