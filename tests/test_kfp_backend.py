"""The KFP v2 backend harness (tests/kfp_backend) on plain, unsealed KFP pipelines.

Each test compiles a pipeline with kfp.compiler and runs the IR the way the backend's
driver and launcher would (see tests/kfp_backend/README.md)."""

# no "from __future__ import annotations": the KFP SDK reads the component annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple, Optional

import pytest
from kfp import compiler, dsl, kubernetes
from kfp.dsl import Dataset, Input, Output

from tests.kfp_backend import (
    KUBERNETES_AUDIENCE,
    BackendError,
    Cluster,
    ObjectStore,
    RunResult,
    Unsupported,
    jwt_claims,
    moto_object_store,
    run_pipeline,
)

IMAGE = "python:3.11"


@pytest.fixture(scope="module")
def object_store() -> Iterator[ObjectStore]:
    """moto's S3 server on 127.0.0.1 for this module's runs."""
    with moto_object_store() as store:
        yield store


@pytest.fixture
def kfp_cluster(object_store: ObjectStore) -> Cluster:
    """A fresh cluster: namespace kubeflow, service account pipeline-runner, a new bucket."""
    return Cluster(object_store=object_store)

def compile_ir(pipeline: Any, tmp_path: Path) -> str:
    path = tmp_path / f"{uuid.uuid4().hex}.yaml"
    compiler.Compiler().compile(pipeline, str(path))
    return path.read_text()


def run(pipeline: Any, cluster: Cluster, tmp_path: Path, arguments: dict[str, Any] | None = None,
        **kw: Any) -> RunResult:
    return run_pipeline(compile_ir(pipeline, tmp_path), arguments or {}, cluster, **kw)


# -- components (module level: the SDK needs their source) --------------------------------------


@dsl.component(base_image=IMAGE)
def produce(n: int, data: Output[Dataset]) -> NamedTuple("Outputs", [("count", int), ("label", str)]):  # type: ignore[valid-type]
    import collections

    with open(data.path, "w") as f:
        f.write("row\n" * n)
    data.metadata["rows"] = n
    data.metadata["clean"] = True
    data.metadata["columns"] = ["a", "b"]
    Outputs = collections.namedtuple("Outputs", ["count", "label"])
    return Outputs(n, f"{n} rows")


@dsl.component(base_image=IMAGE)
def consume(data: Input[Dataset], count: int, label: str) -> str:
    import json

    with open(data.path) as f:
        lines = f.read().count("\n")
    return json.dumps({"lines": lines, "count": count, "label": label, "path": data.path,
                       "metadata": data.metadata})


@dsl.pipeline(name="artifacts")
def artifacts_pipeline(n: int = 3) -> None:
    p = produce(n=n)
    consume(data=p.outputs["data"], count=p.outputs["count"], label=p.outputs["label"])


@dsl.component(base_image=IMAGE)
def echo_run_id(run_id: str = dsl.PIPELINE_JOB_ID_PLACEHOLDER) -> str:
    return run_id


@dsl.component(base_image=IMAGE)
def echo(value: str) -> str:
    return value


@dsl.pipeline(name="placeholders")
def placeholders_pipeline() -> None:
    echo_run_id().set_display_name("default")
    echo_run_id(run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER).set_caching_options(False)
    echo(value=dsl.PIPELINE_JOB_NAME_PLACEHOLDER)
    echo(value=dsl.PIPELINE_TASK_NAME_PLACEHOLDER)
    echo(value=f"run-{dsl.PIPELINE_JOB_ID_PLACEHOLDER}")


@dsl.component(base_image=IMAGE)
def optionals(required: str, with_default: str = "component default", without_default: Optional[str] = None,  # noqa: UP045 (the KFP SDK needs Optional)

              number: float = 1.5) -> str:
    import json

    return json.dumps([required, with_default, without_default, number])


@dsl.pipeline(name="optionals")
def optionals_pipeline(maybe: Optional[str] = None,  # noqa: UP045
                        given: str = "pipeline default") -> None:
    optionals(required=given, without_default=maybe).set_display_name("left")
    optionals(required="x", with_default="passed", number=2.0).set_display_name("passed")


@dsl.component(base_image=IMAGE)
def fail(message: str) -> str:
    raise RuntimeError(message)


@dsl.pipeline(name="failing")
def failing_pipeline() -> None:
    bad = fail(message="boom from the component")
    echo(value=bad.output)
    echo(value="independent")


@dsl.component(base_image=IMAGE)
def write_private(marker: str) -> str:
    import os

    paths = [f"/tmp/{marker}", os.path.expanduser(f"~/{marker}"), f"/etc/mlseal/{marker}", f"{os.getcwd()}/{marker}"]
    for path in paths:
        with open(path, "w") as f:
            f.write("secret scratch")
    try:
        open(f"/opt/{marker}", "w").close()
        host = "host filesystem writable"
    except OSError as exc:
        host = f"{type(exc).__name__}: {exc.strerror}"
    return host


@dsl.component(base_image=IMAGE)
def look_for(marker: str, after: str) -> str:
    import json
    import os

    paths = [f"/tmp/{marker}", os.path.expanduser(f"~/{marker}"), f"/etc/mlseal/{marker}", f"{os.getcwd()}/{marker}"]
    return json.dumps({p: os.path.exists(p) for p in paths})


@dsl.pipeline(name="isolation")
def isolation_pipeline(marker: str) -> None:
    w = write_private(marker=marker)
    look_for(marker=marker, after=w.output)


@dsl.component(base_image=IMAGE)
def environment() -> str:
    import json
    import os

    files = {}
    for root in ("/etc/mlseal", "/var/run/secrets", "/etc/app"):
        for dirpath, _, names in os.walk(root):
            for n in names:
                with open(os.path.join(dirpath, n)) as f:
                    files[os.path.join(dirpath, n)] = f.read()
    return json.dumps({"env": dict(os.environ), "files": files, "cwd": os.getcwd()})


@dsl.pipeline(name="environment")
def environment_pipeline() -> None:
    t = environment()
    t.set_env_variable("APP_MODE", "strict")
    t.set_env_variable("LITERAL", dsl.PIPELINE_JOB_ID_PLACEHOLDER)
    kubernetes.use_secret_as_env(t, secret_name="db", secret_key_to_env={"password": "PGPASSWORD"})
    kubernetes.use_config_map_as_env(t, config_map_name="app", config_map_key_to_env={"mode": "APP_CM"})
    kubernetes.use_config_map_as_volume(t, config_map_name="trust", mount_path="/etc/mlseal/trust")
    kubernetes.use_secret_as_volume(t, secret_name="tls", mount_path="/etc/app/tls")
    kubernetes.use_field_path_as_env(t, env_name="POD_NS", field_path="metadata.namespace")
    kubernetes.use_field_path_as_env(t, env_name="POD_SA", field_path="spec.serviceAccountName")
    kubernetes.add_pod_label(t, "mlseal.dev/vault-token", "true")
    plain = environment()
    plain.set_caching_options(False)


@dsl.pipeline(name="missing-secret")
def missing_secret_pipeline() -> None:
    t = echo(value="never")
    kubernetes.use_secret_as_env(t, secret_name="absent", secret_key_to_env={"k": "K"})


@dsl.container_component
def greet(greeting: str, out: dsl.Output[dsl.Artifact], name: Optional[str] = None) -> dsl.ContainerSpec:  # noqa: UP045
    return dsl.ContainerSpec(
        image=IMAGE, command=["sh", "-c", 'mkdir -p "$(dirname "$2")" && echo "$0, $1" > "$2"'],
        args=[greeting, dsl.IfPresentPlaceholder(input_name="name", then=[name], else_=["nobody"]), out.path])


@dsl.container_component
def shout(word: str = "default") -> dsl.ContainerSpec:
    return dsl.ContainerSpec(image=IMAGE, command=["echo"], args=[word])


@dsl.pipeline(name="container-default")
def container_default_pipeline() -> None:
    shout(word="given")
    shout()


@dsl.pipeline(name="container")
def container_pipeline() -> None:
    greet(greeting="hello").set_display_name("absent")
    greet(greeting="hi", name="ada").set_display_name("present")


# -- tests --------------------------------------------------------------------------------------


def _by_component(result: RunResult, prefix: str) -> list[str]:
    """Task names the compiler gave to calls of one component: prefix, prefix-2, ..."""
    return sorted((n for n in result.tasks if re.fullmatch(re.escape(prefix) + r"(-\d+)?", n)),
                  key=lambda n: int(n.rsplit("-", 1)[1]) if n != prefix else 1)


def test_artifacts_and_parameters_flow_through_the_object_store(kfp_cluster: Cluster, tmp_path: Path) -> None:
    import json

    result = run(artifacts_pipeline, kfp_cluster, tmp_path, {"n": 4})
    assert result.state == "SUCCEEDED", result.logs()
    prod, cons = result.tasks["produce"], result.tasks["consume"]

    # the backend's URI scheme: <root>/<pipeline name>/<run id>/<task>/<uuid>/<output name>
    uri = prod.artifacts["data"][0]["uri"]
    root = kfp_cluster.default_pipeline_root()
    assert result.pipeline_root == f"{root}/artifacts/{result.run_id}"
    task_root, name = uri.rsplit("/", 1)
    assert name == "data" and task_root.rsplit("/", 1)[0] == f"{result.pipeline_root}/produce"
    assert prod.executor_input is not None
    assert prod.executor_input["outputs"]["outputFile"] == "/s3/" + task_root[len("s3://"):] + "/output_metadata.json"
    assert prod.executor_input["outputs"]["parameters"] == {"count": {"outputFile": "/tmp/kfp/outputs/count"},
                                                            "label": {"outputFile": "/tmp/kfp/outputs/label"}}
    assert kfp_cluster.object_store.read(uri) == b"row\n" * 4
    # PUBLISH_LOGS: the task's log is an artifact too, at the retry-qualified URI
    log_uri = prod.artifacts["executor-logs"][0]["uri"]
    assert log_uri == f"{task_root}/executor-logs-0"
    assert b"Wrote executor output file" in kfp_cluster.object_store.read(log_uri)

    # the consumer's input artifact is what MLMD returns: id as name, no schema title,
    # metadata with display_name/store_session_info, bool -> 1, list -> {"list": [...]}
    assert cons.executor_input is not None
    art = cons.executor_input["inputs"]["artifacts"]["data"]["artifacts"][0]
    assert art["uri"] == uri and art["name"].isdigit() and art["type"] == {"instanceSchema": ""}
    assert art["metadata"]["rows"] == 4 and art["metadata"]["clean"] == 1
    assert art["metadata"]["columns"] == {"list": ["a", "b"]}
    assert art["metadata"]["display_name"] == "data" and "store_session_info" in art["metadata"]
    assert cons.executor_input["inputs"]["parameterValues"] == {"count": 4, "label": "4 rows"}
    out = json.loads(cons.outputs["Output"])
    assert out["lines"] == 4 and out["count"] == 4 and out["label"] == "4 rows"
    assert out["path"] == "/s3/" + uri[len("s3://"):]


def test_a_default_placeholder_arrives_literally_and_only_whole_constants_are_resolved(
        kfp_cluster: Cluster, tmp_path: Path) -> None:
    result = run(placeholders_pipeline, kfp_cluster, tmp_path, run_display_name="nightly")
    assert result.state == "SUCCEEDED", result.logs()
    default, explicit = (result.tasks[n] for n in _by_component(result, "echo-run-id"))
    # left to the component: the driver does not pass the default, the component's own
    # default (the placeholder text) is used as is
    assert default.executor_input is not None
    assert "run_id" not in default.executor_input["inputs"].get("parameterValues", {})
    assert default.outputs["Output"] == "{{$.pipeline_job_uuid}}"
    # passed explicitly: a runtimeValue constant that IS the placeholder is resolved
    assert explicit.outputs["Output"] == result.run_id
    echoes = {result.tasks[n].outputs["Output"] for n in _by_component(result, "echo")}
    assert echoes == {"nightly", "echo-2", "run-{{$.pipeline_job_uuid}}"}


def test_optional_parameters_are_left_to_the_component(kfp_cluster: Cluster, tmp_path: Path) -> None:
    import json

    result = run(optionals_pipeline, kfp_cluster, tmp_path)
    assert result.state == "SUCCEEDED", result.logs()
    left, passed = (result.tasks[n] for n in _by_component(result, "optionals"))
    assert left.executor_input is not None and passed.executor_input is not None
    # a null optional pipeline input is skipped, defaults are not filled in by the driver
    assert left.executor_input["inputs"]["parameterValues"] == {"required": "pipeline default"}
    assert json.loads(left.outputs["Output"]) == ["pipeline default", "component default", None, 1.5]
    assert passed.executor_input["inputs"]["parameterValues"] == {"required": "x", "with_default": "passed",
                                                                  "number": 2}
    assert json.loads(passed.outputs["Output"]) == ["x", "passed", None, 2]
    # the launcher does add defaults to the {{$}} it substitutes into the command
    assert left.command is not None and '"with_default":"component default"' in " ".join(left.command)
    assert '"number":1.5' in " ".join(left.command)


def test_a_failing_task_fails_the_run_and_nothing_runs_after_it(kfp_cluster: Cluster, tmp_path: Path) -> None:
    result = run(failing_pipeline, kfp_cluster, tmp_path)
    assert result.state == "FAILED"
    assert result.tasks["fail"].state == "FAILED"
    assert "RuntimeError: boom from the component" in result.tasks["fail"].logs
    assert result.tasks["fail"].outputs == {}
    # a failed task registers its log, and nothing else
    assert set(result.tasks["fail"].artifacts) == {"executor-logs"}
    log_uri = result.tasks["fail"].artifacts["executor-logs"][0]["uri"]
    assert b"boom from the component" in kfp_cluster.object_store.read(log_uri)
    # downstream (depends on .Succeeded) never starts; an independent task started
    # alongside the failing one runs to completion
    assert result.tasks["echo"].state == "NOT_RUN" and result.tasks["echo"].executor_input is None
    assert result.tasks["echo-2"].state == "SUCCEEDED"


def test_tasks_do_not_share_tmp_home_workdir_or_mounts(kfp_cluster: Cluster, tmp_path: Path) -> None:
    import json

    marker = f"kfp-harness-{uuid.uuid4().hex}"
    result = run(isolation_pipeline, kfp_cluster, tmp_path, {"marker": marker})
    assert result.state == "SUCCEEDED", result.logs()
    assert result.tasks["write-private"].outputs["Output"] == "OSError: Read-only file system"
    seen = json.loads(result.tasks["look-for"].outputs["Output"])
    assert seen and not any(seen.values()), seen
    # nor did anything reach the host's /tmp
    assert not Path(f"/tmp/{marker}").exists() and not Path(f"/etc/mlseal/{marker}").exists()


def test_environment_comes_only_from_the_compiled_spec(kfp_cluster: Cluster, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    monkeypatch.setenv("TEST_PROCESS_ONLY", "must not leak")
    kfp_cluster.add_secret("db", {"password": "pw-in-secret"})
    kfp_cluster.add_secret("tls", {"tls.crt": "CERT", "tls.key": "KEY"})
    kfp_cluster.add_config_map("app", {"mode": "from-cm"})
    kfp_cluster.add_config_map("trust", {"trust.yaml": "signers: []\n"})
    result = run(environment_pipeline, kfp_cluster, tmp_path)
    assert result.state == "SUCCEEDED", result.logs()
    labelled = json.loads(result.tasks["environment"].outputs["Output"])
    plain = json.loads(result.tasks["environment-2"].outputs["Output"])
    env = labelled["env"]
    assert "TEST_PROCESS_ONLY" not in env and "TEST_PROCESS_ONLY" not in plain["env"]
    assert env["APP_MODE"] == "strict" and env["LITERAL"] == "{{$.pipeline_job_uuid}}"
    assert env["PGPASSWORD"] == "pw-in-secret" and env["APP_CM"] == "from-cm"
    assert env["POD_NS"] == "kubeflow" and env["POD_SA"] == "pipeline-runner"
    assert env["KFP_POD_NAME"] == result.tasks["environment"].pod_name == env["HOSTNAME"]
    expected = {"PATH", "HOME", "HOSTNAME", "PYTHONPATH", "KFP_POD_NAME", "KFP_POD_UID",
                "METADATA_GRPC_SERVICE_HOST", "METADATA_GRPC_SERVICE_PORT", "APP_MODE", "LITERAL", "PGPASSWORD",
                "APP_CM", "POD_NS", "POD_SA"}
    # what the processes themselves add (sh's PWD/SHLVL, the KFP runtime flag, ...)
    added_by_processes = {"PWD", "SHLVL", "_", "_KFP_RUNTIME", "OLDPWD", "LC_CTYPE"}
    assert set(env) - added_by_processes - {k for k in env if k.startswith("KUBERNETES_")} == expected
    assert labelled["files"]["/etc/mlseal/trust/trust.yaml"] == "signers: []\n"
    assert labelled["files"]["/etc/app/tls/tls.key"] == "KEY"
    assert "PGPASSWORD" not in plain["env"] and "/etc/app/tls/tls.key" not in plain["files"]
    # every pod: the default token (API server audience); labelled pods: the Vault token
    for out in (labelled, plain):
        token = out["files"]["/var/run/secrets/kubernetes.io/serviceaccount/token"]
        assert jwt_claims(token)["aud"] == [KUBERNETES_AUDIENCE]
        assert jwt_claims(token)["sub"] == "system:serviceaccount:kubeflow:pipeline-runner"
    assert jwt_claims(labelled["files"]["/var/run/secrets/vault/token"])["aud"] == ["vault"]
    assert "/var/run/secrets/vault/token" not in plain["files"]


def test_a_missing_secret_keeps_the_pod_from_starting(kfp_cluster: Cluster, tmp_path: Path) -> None:
    result = run(missing_secret_pipeline, kfp_cluster, tmp_path)
    assert result.state == "FAILED"
    task = result.tasks["echo"]
    assert task.state == "FAILED" and task.command is None
    assert 'secret "absent" not found' in (task.error or "")


def test_container_component_placeholders_and_if_present(kfp_cluster: Cluster, tmp_path: Path) -> None:
    result = run(container_pipeline, kfp_cluster, tmp_path)
    assert result.state == "SUCCEEDED", result.logs()
    absent, present = (result.tasks[n] for n in _by_component(result, "greet"))
    assert kfp_cluster.object_store.read(absent.artifacts["out"][0]["uri"]) == b"hello, nobody\n"
    assert kfp_cluster.object_store.read(present.artifacts["out"][0]["uri"]) == b"hi, ada\n"
    assert present.command is not None and present.command[3:5] == ["hi", "ada"]
    assert present.command[5].startswith("/s3/")


def test_a_container_placeholder_for_an_input_left_to_its_default_fails_in_the_driver(
        kfp_cluster: Cluster, tmp_path: Path) -> None:
    # driver/util.go resolveInputParameterPlaceholders: the input is not in the executor
    # input (defaults are left to the component), so the driver cannot substitute it
    result = run(container_default_pipeline, kfp_cluster, tmp_path)
    assert result.tasks["shout"].state == "SUCCEEDED" and "given" in result.tasks["shout"].logs
    failed = result.tasks["shout-2"]
    assert failed.state == "FAILED" and failed.command is None
    assert "parameter 'word' not found in executor input" in (failed.error or "")


def test_run_parameters_are_validated_like_the_api_server(kfp_cluster: Cluster, tmp_path: Path) -> None:
    ir = compile_ir(isolation_pipeline, tmp_path)
    with pytest.raises(BackendError, match="marker is not optional"):
        run_pipeline(ir, {}, kfp_cluster)
    with pytest.raises(BackendError, match="requires type STRING"):
        run_pipeline(ir, {"marker": 3}, kfp_cluster)


@dsl.pipeline(name="caching")
def caching_pipeline(n: int = 3) -> None:
    p = produce(n=n)
    consume(data=p.outputs["data"], count=p.outputs["count"], label=p.outputs["label"])
    echo_run_id(run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
    echo(value="uncached").set_caching_options(False)


def test_the_server_cache_reuses_outputs_unless_inputs_differ(kfp_cluster: Cluster, tmp_path: Path) -> None:
    ir = compile_ir(caching_pipeline, tmp_path)
    first = run_pipeline(ir, {"n": 2}, kfp_cluster)
    second = run_pipeline(ir, {"n": 2}, kfp_cluster)
    assert first.state == second.state == "SUCCEEDED", second.logs()
    assert {n: t.state for n, t in first.tasks.items()} == dict.fromkeys(first.tasks, "SUCCEEDED")
    # same inputs (for consume: the same MLMD artifact) -> no pod, the first run's outputs
    assert second.tasks["produce"].state == second.tasks["consume"].state == "CACHED"
    assert second.tasks["consume"].command is None
    assert second.tasks["consume"].outputs == first.tasks["consume"].outputs
    assert second.tasks["produce"].artifacts == first.tasks["produce"].artifacts
    # a resolved run id is a different input every run; caching off always runs
    assert second.tasks["echo-run-id"].state == second.tasks["echo"].state == "SUCCEEDED"
    third = run_pipeline(ir, {"n": 3}, kfp_cluster)
    assert third.tasks["produce"].state == third.tasks["consume"].state == "SUCCEEDED"


@dsl.pipeline(name="conditional")
def conditional_pipeline(flag: bool = True) -> None:
    with dsl.If(flag == True):  # noqa: E712 (KFP's condition syntax)
        echo(value="x")


def test_unmodelled_features_are_refused(kfp_cluster: Cluster, tmp_path: Path) -> None:
    with pytest.raises(Unsupported):
        run(conditional_pipeline, kfp_cluster, tmp_path)
