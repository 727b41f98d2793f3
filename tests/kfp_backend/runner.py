"""``run_pipeline``: execute a compiled KFP v2 pipeline (IR YAML) as the v2 backend does.

    result = run_pipeline(Path("pipeline.yaml").read_text(), {"n": 3}, cluster)
    result.state, result.tasks["make"].outputs["Output"], result.tasks["make"].logs

The API server / Argo part runs here, in the test process: run parameters (defaults filled
in as argocompiler/argo.go does), the root DAG in dependency order, the container driver
per task (`tests.kfp_backend._driver`), and an in-memory MLMD. Each task then runs as its
own process in its own mount namespace (`tests.kfp_backend._launcher`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.kfp_backend import _driver as D
from tests.kfp_backend import _values as V
from tests.kfp_backend.cluster import Cluster

REPO = Path(__file__).resolve().parents[2]


@dataclass
class TaskResult:
    """One task of the run.

    ``state``: SUCCEEDED, CACHED (outputs reused from an earlier run's execution with the
    same fingerprint; no pod ran), FAILED, or NOT_RUN (an upstream task failed or the run
    stopped scheduling after a failure; Argo's ``.Succeeded`` depends + failFast).
    ``executor_input``: what the driver built (as stored in MLMD and passed to the
    launcher); ``command``: the user command after the launcher's substitution.
    ``executor_output``: the parsed outputs.outputFile; ``outputs``: output parameters as
    published; ``artifacts``: output artifacts as MLMD returns them to downstream tasks.
    ``logs``: the pod's log (user command output and launcher messages) or the reason
    the pod could not start; ``error``: why the task failed."""

    name: str
    state: str
    executor_input: dict[str, Any] | None = None
    executor_output: dict[str, Any] | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    command: list[str] | None = None
    logs: str = ""
    error: str | None = None
    pod_name: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class RunResult:
    state: str
    run_id: str
    run_name: str
    pipeline_root: str
    tasks: dict[str, TaskResult]

    def logs(self) -> str:
        return "".join(f"--- {t.name} [{t.state}]\n{t.logs}" for t in self.tasks.values())


def _documents(ir_text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(ir_text) if d]
    spec = docs[0]
    if "pipelineSpec" in spec:  # a PipelineJob wrapper
        spec = spec["pipelineSpec"]
    platform: dict[str, Any] = {}
    for d in docs[1:]:
        platform = d.get("platforms", {}).get("kubernetes", {}) or platform
    return spec, platform


def _run_parameters(spec: dict[str, Any], arguments: dict[str, Any]) -> dict[str, Any]:
    """API server validation (apiserver/template/v2_template.go) + defaults (argo.go)."""
    definitions = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    unknown = set(arguments) - set(definitions)
    if unknown:
        raise V.BackendError(f"unknown run parameter(s): {sorted(unknown)}")
    values: dict[str, Any] = {}
    for name, d in definitions.items():
        if name in arguments:
            value = V.normalize(arguments[name])
            want = {"NUMBER_DOUBLE": "number", "NUMBER_INTEGER": "number", "STRING": "string", "BOOLEAN": "bool",
                    "LIST": "list", "STRUCT": "struct"}.get(d.get("parameterType", ""))
            if want and V.kind(value) != want:
                raise V.BackendError(f"input parameter {name} requires type {d['parameterType']}, "
                                     f"got {V.kind(value)}")
            values[name] = value
        elif "defaultValue" in d:
            values[name] = V.normalize(d["defaultValue"])
        elif d.get("isOptional"):
            values[name] = None
        else:
            raise V.BackendError(f"parameter {name} is not optional, yet has neither default value nor user "
                                 "provided value")
    return values


def _waves(tasks: dict[str, Any]) -> list[list[str]]:
    """Tasks grouped by when Argo could start them: each wave's dependencies are all in
    earlier waves (names sorted within a wave)."""
    waves: list[list[str]] = []
    done: set[str] = set()
    pending = dict(tasks)
    while pending:
        ready = sorted(n for n, t in pending.items() if all(d in done for d in t.get("dependentTasks", [])))
        if not ready:
            raise V.BackendError(f"dependency cycle among {sorted(pending)}")
        waves.append(ready)
        done.update(ready)
        for n in ready:
            del pending[n]
    return waves


def _check_supported(name: str, task: dict[str, Any], spec: dict[str, Any]) -> None:
    if task.get("triggerPolicy", {}).get("condition") or task.get("triggerPolicy", {}).get("strategy"):
        raise D.Unsupported(f"task {name}: triggerPolicy (dsl.If / exit handlers) is not modelled")
    if "iteratorPolicy" in task or "parameterIterator" in task or "artifactIterator" in task:
        raise D.Unsupported(f"task {name}: ParallelFor is not modelled")
    comp = spec["components"][task["componentRef"]["name"]]
    if "dag" in comp:
        raise D.Unsupported(f"task {name}: nested pipelines (sub-DAGs) are not modelled")
    executor = spec["deploymentSpec"]["executors"][comp["executorLabel"]]
    if "container" not in executor:
        raise D.Unsupported(f"task {name}: executor {sorted(executor)} (importer?) is not modelled")


def run_pipeline(ir_text: str, arguments: dict[str, Any] | None, cluster: Cluster, *,
                 run_display_name: str | None = None, pipeline_root: str | None = None,
                 timeout: float = 300.0, pythonpath: str | None = None) -> RunResult:
    """Run the root DAG of ``ir_text`` on ``cluster`` and return every task's result.

    ``pythonpath`` (default: this checkout) is the only value of the test process that
    reaches a task's environment, so that the task imports the code under test."""
    spec, platform = _documents(ir_text)
    params = _run_parameters(spec, dict(arguments or {}))
    tasks = spec["root"]["dag"]["tasks"]
    for name, task in tasks.items():
        _check_supported(name, task, spec)
    root = pipeline_root or spec.get("defaultPipelineRoot") or cluster.default_pipeline_root()
    pipeline_name = spec["pipelineInfo"]["name"]
    run_id = str(uuid.uuid4())
    ctx = D.RunContext(
        run_id=run_id,
        run_name=f"{pipeline_name}-{secrets.token_hex(3)[:5]}",
        run_display_name=run_display_name or f"{pipeline_name} run",
        pipeline_name=pipeline_name,
        create_time_utc=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        pipeline_root=D.generate_output_uri(root, [pipeline_name, run_id], True),
        root_parameters=params,
        root_dag_execution_id=1,
    )
    run = _Run(spec, platform, ctx, cluster, timeout, str(REPO) if pythonpath is None else pythonpath)
    failed = False
    for wave in _waves(tasks):
        # Argo starts every ready task of a wave; after a failure it starts no new ones
        # (DAG failFast), and a task whose dependency did not succeed never starts
        # (``depends: a.Succeeded``, argocompiler/dag.go).
        for name in wave:
            if failed:
                run.results[name] = TaskResult(name=name, state="NOT_RUN")
                continue
            run.task(name, tasks[name])
        failed = failed or any(run.results[n].state not in ("SUCCEEDED", "CACHED") for n in wave)
    return RunResult(state="FAILED" if failed else "SUCCEEDED", run_id=run_id, run_name=ctx.run_name,
                     pipeline_root=ctx.pipeline_root, tasks=run.results)


class _Run:
    """The API server/Argo side of one run: drives tasks and keeps the in-memory MLMD."""

    def __init__(self, spec: dict[str, Any], platform: dict[str, Any], ctx: D.RunContext, cluster: Cluster,
                 timeout: float, pythonpath: str) -> None:
        self.spec, self.ctx, self.cluster, self.timeout, self.pythonpath = spec, ctx, cluster, timeout, pythonpath
        self.executors = platform.get("deploymentSpec", {}).get("executors", {})
        self.mlmd: dict[str, D.Execution] = {}
        self.results: dict[str, TaskResult] = {}
        self.next_id = ctx.root_dag_execution_id + 1

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def task(self, name: str, task: dict[str, Any]) -> None:
        comp = self.spec["components"][task["componentRef"]["name"]]
        label = comp["executorLabel"]
        container = self.spec["deploymentSpec"]["executors"][label]["container"]
        result = self.results[name] = TaskResult(name=name, state="FAILED")
        execution = self.mlmd[name] = D.Execution(id=self._id(), state="FAILED")
        try:  # the driver pod
            inputs = D.resolve_inputs(name, task, comp, self.ctx, self.mlmd)
            outputs = D.provision_outputs(self.ctx.pipeline_root, name, comp.get("outputDefinitions", {}),
                                          publish_logs=self.cluster.publish_logs)
            executor_input = {"inputs": inputs, "outputs": outputs}
            result.executor_input = executor_input
            fingerprint = self._fingerprint(task, comp, container, executor_input)
            cache_key = (self.cluster.namespace, self.ctx.pipeline_name, fingerprint or "")
            if fingerprint and (hit := self.cluster.cache.get(cache_key)):
                # reuseCachedOutputs: the earlier execution's outputs, no pod at all
                result.state = execution.state = "CACHED"
                result.outputs = execution.output_parameters = dict(hit.output_parameters)
                result.artifacts = execution.output_artifacts = dict(hit.output_artifacts)
                return
            command = (D.resolve_container_args(list(container.get("command", [])), executor_input)
                       + D.resolve_container_args(list(container.get("args", [])), executor_input))
            env, files, mounts, labels, _ann, pod_name, _uid = D.build_pod(
                container, self.executors.get(label, {}), self.ctx, self.cluster, name, self.mlmd, self.pythonpath)
        except V.BackendError as exc:
            result.error = result.logs = f"{type(exc).__name__}: {exc}"
            return
        result.pod_name, result.env, result.labels = pod_name, env, labels
        store = self.cluster.object_store
        published = _launch({
            "executor_input": executor_input, "component": comp, "command": command, "env": env,
            "files": {p: [c, m] for p, (c, m) in files.items()}, "volume_mounts": mounts,
            "home": D.POD_HOME, "workdir": D.POD_WORKDIR, "timeout": self.timeout,
            "pipeline_root": self.ctx.pipeline_root,
            "object_store": {"endpoint": store.endpoint, "access_key": store.access_key,
                             "secret_key": store.secret_key, "region": store.region},
        }, self.timeout)
        result.state = execution.state = published["state"]
        result.command = published.get("command")
        result.executor_output = published.get("executor_output")
        result.logs = published.get("logs", "")
        result.error = published.get("error")
        if result.state != "SUCCEEDED":
            result.artifacts = execution.output_artifacts = self._record(published)  # executor-logs only
            return
        result.outputs = execution.output_parameters = published.get("output_parameters", {})
        result.artifacts = execution.output_artifacts = self._record(published)
        if fingerprint:  # the launcher's CreateExecutionCache
            self.cluster.cache[cache_key] = execution

    def _record(self, published: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        """The output artifacts as MLMD hands them to a downstream driver: the artifact id
        as name and an empty schema (metadata.Client.GetOutputArtifactsByExecutionId)."""
        return {out_name: [{"name": str(self._id()), "type": {"instanceSchema": ""}, "uri": a["uri"],
                            "metadata": a["metadata"]} for a in arts]
                for out_name, arts in published.get("output_artifacts", {}).items()}

    def _fingerprint(self, task: dict[str, Any], comp: dict[str, Any], container: dict[str, Any],
                     executor_input: dict[str, Any]) -> str | None:
        """getFingerPrint (driver/cache.go) over GenerateCacheKey (cacheutils/cache.go), or
        None when caching is off for the task or the server. The key's fields are the
        backend's; the hash over them is this harness's own (it only has to be stable)."""
        options = task.get("cachingOptions", {})
        if not self.cluster.cache_enabled or not options.get("enableCache"):
            return None
        h = hashlib.sha256()
        if options.get("cacheKey"):
            h.update(task["componentRef"]["name"].encode() + b"\0" + options["cacheKey"].encode())
            return h.hexdigest()
        inputs, outputs = executor_input["inputs"], executor_input["outputs"]
        key = {
            "inputArtifactNames": {n: [a["name"] for a in al["artifacts"]]
                                   for n, al in inputs.get("artifacts", {}).items()},
            "inputParameterValues": inputs.get("parameterValues", {}),
            "outputArtifactsSpec": {n: {k: al["artifacts"][0].get(k) for k in ("name", "type", "metadata")}
                                    for n, al in outputs.get("artifacts", {}).items()},
            "outputParametersSpec": {n: comp["outputDefinitions"]["parameters"][n]["parameterType"]
                                     for n in outputs.get("parameters", {})},
            "containerSpec": {"image": container.get("image"),
                              "cmdArgs": [*container.get("command", []), *container.get("args", [])], "pvcNames": []},
        }
        h.update(V.to_protojson(key).encode())
        return h.hexdigest()


def _launch(launch: dict[str, Any], timeout: float) -> dict[str, Any]:
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(REPO),
           "KFP_HARNESS_NAMESPACED": "1"}
    try:
        proc = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", sys.executable, "-m", "tests.kfp_backend._launcher"],
            input=json.dumps(launch).encode(), capture_output=True, env=env, cwd="/", timeout=timeout + 60,
            check=False)
    except subprocess.TimeoutExpired:
        return {"state": "FAILED", "error": f"the task did not finish within {timeout + 60:.0f} s", "logs": ""}
    if proc.returncode != 0 or not proc.stdout.strip():
        return {"state": "FAILED", "error": f"launcher exited with {proc.returncode}",
                "logs": proc.stderr.decode(errors="replace")}
    published: dict[str, Any] = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    if proc.stderr:
        published["logs"] = published.get("logs", "") + proc.stderr.decode(errors="replace")
    return published


__all__ = ["RunResult", "TaskResult", "run_pipeline"]
