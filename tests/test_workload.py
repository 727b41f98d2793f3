"""Whole-workload admission: an attacker who knows a good model's public digest and URI.

Every manifest here names the demo-style good model (its sha256 and URI are public) and
then runs something else: another image, another bucket, an init container over the
model, a transformer, another kind the webhook never saw. Each one was admitted by
`decide` before whole-workload policy; each is denied now with a reason that names the
field, what it holds and the fix. Good counterparts of each kind are admitted, so the
denials are not just "everything is denied".
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlseal.admission import Decision, Reason, decide, load_policy
from mlseal.admission.policy import ImageRule, Rules, split_image
from mlseal.admission.workload import WorkloadDenied, check_workload, workload_model
from mlseal.errors import ConfigurationError
from mlseal.ledger import open_ledger
from tests.fixtures_admission import (
    LOADER_IMAGE,
    SERVER_IMAGE,
    AdmissionWorld,
    Model,
    deployment,
    isvc,
    loader,
    pod_template,
    write_policy,
)

EVIL_TAG = "evil.example/server:latest"
EVIL_PINNED = "evil.example/server@sha256:" + "e" * 64
KSERVE_DEFAULT_INITIALIZER = "kserve/storage-initializer:v0.13.0"
SHA_FIELD = "metadata.annotations['mlseal.dev/model-sha256']"


def check(world: AdmissionWorld, manifest: dict[str, Any], policy: Any = None) -> Decision:
    with open_ledger(world.ledger_url, create=False) as led:
        return decide(manifest, policy or world.policy, ledger=led)


def denied(world: AdmissionWorld, manifest: dict[str, Any], code: Reason, *words: str, policy: Any = None) -> Decision:
    d = check(world, manifest, policy)
    assert not d.allowed, f"admitted: {json.dumps(manifest)[:400]}"
    assert code in d.codes, (d.codes, d.reasons)
    text = " | ".join(d.reasons)
    for w in words:
        assert w in text, (w, d.reasons)
    assert all(";" in r for r in d.reasons), "every reason also says what would fix it"
    return d


def good(world: AdmissionWorld) -> Model:
    return world.models["good"]


def wrap(kind: str, spec: dict[str, Any], model: Model | None, *, namespace: str = "prod",
         owner: dict[str, Any] | None = None, annotate: bool = True) -> dict[str, Any]:
    """`spec` as the pod spec of `kind`, at that kind's template path (Kyverno autogen's paths)."""
    ann = {"mlseal.dev/model-sha256": model.sha256} if model is not None and annotate else {}
    pod_meta: dict[str, Any] = {"labels": {"app": "s"}, "annotations": ann}
    meta: dict[str, Any] = {"name": "s", "namespace": namespace}
    if owner:
        meta["ownerReferences"] = [owner]
    api = {"Pod": "v1", "ReplicationController": "v1", "Job": "batch/v1", "CronJob": "batch/v1"}.get(kind, "apps/v1")
    if kind == "Pod":
        return {"apiVersion": api, "kind": kind, "metadata": {**meta, **pod_meta}, "spec": spec}
    template = {"metadata": pod_meta, "spec": spec}
    if kind == "CronJob":
        body: dict[str, Any] = {"schedule": "@hourly", "jobTemplate": {"spec": {"template": template}}}
    elif kind == "Job":
        body = {"template": template}
    else:
        body = {"selector": {"matchLabels": {"app": "s"}}, "template": template}
    return {"apiVersion": api, "kind": kind, "metadata": meta, "spec": body}


POD_KINDS = ["Pod", "ReplicationController", "Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job",
             "CronJob"]


# --- the pod gate and every pod-creating kind --------------------------------------------

@pytest.mark.parametrize("kind", POD_KINDS)
def test_every_pod_creating_kind_admits_a_workload_that_loads_through_the_loader(
        admission_world: AdmissionWorld, kind: str) -> None:
    d = check(admission_world, wrap(kind, pod_template(good(admission_world)), good(admission_world)))
    assert d.allowed, d.reasons
    # and the ledger still decides the model it loads
    low = admission_world.models["lowacc"]
    denied(admission_world, wrap(kind, pod_template(low), low), Reason.GATE_FAILED, "accuracy = 0.52")


@pytest.mark.parametrize("kind", POD_KINDS)
def test_any_image_reading_another_bucket_is_denied_in_every_kind(admission_world: AdmissionWorld, kind: str) -> None:
    """The finding: the good model's digest in the annotations, and a server that reads elsewhere."""
    spec = {"containers": [{"name": "s", "image": EVIL_TAG, "args": ["--model=s3://attacker/model.joblib"]}]}
    m = wrap(kind, spec, good(admission_world))
    m["metadata"].setdefault("annotations", {})["mlseal.dev/model-uri"] = good(admission_world).uri
    path = "spec" if kind == "Pod" else (
        "spec.jobTemplate.spec.template.spec" if kind == "CronJob" else "spec.template.spec")
    d = denied(admission_world, m, Reason.NO_LOADER, f"{path} does not load it through the verifying loader")
    assert {Reason.IMAGE_UNPINNED, Reason.MODEL_OVERRIDE} <= set(d.codes)
    assert f"{path}.containers[0].args[0] names the remote location 's3://attacker/model.joblib'" in " ".join(d.reasons)


def test_the_deployment_of_the_finding_is_denied(admission_world: AdmissionWorld) -> None:
    """The manifest from the report: annotations right, image and args the attacker's."""
    dep = deployment(good(admission_world))
    dep["spec"]["template"]["spec"] = {"containers": [{"name": "s", "image": "attacker/anything:1",
                                                       "args": ["s3://other-bucket/model"]}]}
    d = denied(admission_world, dep, Reason.NO_LOADER)
    assert set(d.codes) >= {Reason.IMAGE_UNPINNED, Reason.MODEL_OVERRIDE}


def test_ephemeral_containers_are_denied(admission_world: AdmissionWorld) -> None:
    pod = wrap("Pod", pod_template(good(admission_world)), good(admission_world))
    pod["spec"]["ephemeralContainers"] = [{"name": "debug", "image": SERVER_IMAGE,
                                           "volumeMounts": [{"name": "model", "mountPath": "/mnt/models"}]}]
    denied(admission_world, pod, Reason.EXTRA_CONTAINER, "spec.ephemeralContainers[0] (debug)", "kubectl debug")


@pytest.mark.parametrize(("image", "code", "words"), [
    (EVIL_TAG, Reason.IMAGE_UNPINNED, "is not pinned by digest"),
    ("registry.example/serving/server:1.2", Reason.IMAGE_UNPINNED, "repo@sha256:"),
    (EVIL_PINNED, Reason.IMAGE_NOT_ALLOWED, "add evil.example/server@sha256:"),
    (None, None, ""),
])
def test_images_must_be_pinned_and_allowed(admission_world: AdmissionWorld, image: str | None, code: Reason | None,
                                            words: str) -> None:
    pod = wrap("Pod", pod_template(good(admission_world)), good(admission_world))
    pod["spec"]["containers"].append({"name": "sidecar", "image": image or SERVER_IMAGE})
    if code is None:
        assert check(admission_world, pod).allowed
    else:
        denied(admission_world, pod, code, "spec.containers[1].image", words)


def test_an_init_container_that_overwrites_the_model_is_denied(admission_world: AdmissionWorld) -> None:
    pod = wrap("Pod", pod_template(good(admission_world)), good(admission_world))
    pod["spec"]["initContainers"].append({
        "name": "swap", "image": SERVER_IMAGE, "command": ["sh", "-c", "cp /evil/* /mnt/models/"],
        "volumeMounts": [{"name": "model", "mountPath": "/mnt/models"}]})
    d = denied(admission_world, pod, Reason.EXTRA_CONTAINER, "spec.initContainers[1] (swap")
    assert Reason.MODEL_VOLUME in d.codes  # it also mounts the model writable


def test_allowed_extra_init_images_still_cannot_write_the_model(admission_world: AdmissionWorld) -> None:
    p = load_policy(write_policy(admission_world.dir, "initimg.yaml",
                                 init_images=["registry.example/mesh/init"]))
    pod = wrap("Pod", pod_template(good(admission_world)), good(admission_world))
    pod["spec"]["initContainers"].append({"name": "mesh-init", "image": "registry.example/mesh/init@sha256:"
                                          + "3" * 64})
    assert check(admission_world, pod, p).allowed
    pod["spec"]["initContainers"][1]["volumeMounts"] = [{"name": "model", "mountPath": "/x"}]
    denied(admission_world, pod, Reason.MODEL_VOLUME, "readOnly: true", policy=p)


@pytest.mark.parametrize(("mutate", "code", "words"), [
    (lambda s: s["volumes"].__setitem__(0, {"name": "model", "hostPath": {"path": "/var/evil"}}),
     Reason.MODEL_VOLUME, "(hostPath)"),
    (lambda s: s["volumes"].__setitem__(0, {"name": "model", "persistentVolumeClaim": {"claimName": "evil"}}),
     Reason.MODEL_VOLUME, "(persistentVolumeClaim)"),
    (lambda s: (s["volumes"].append({"name": "evil", "hostPath": {"path": "/var/evil"}}),
                s["containers"][0]["volumeMounts"].append({"name": "evil", "mountPath": "/mnt/models/m"})),
     Reason.MODEL_VOLUME, "over the verified model's path"),
    (lambda s: (s["volumes"].append({"name": "evil", "hostPath": {"path": "/var/evil"}}),
                s["containers"][0].__setitem__("volumeMounts", [{"name": "evil", "mountPath": "/mnt/models"}])),
     Reason.MODEL_VOLUME, "no container mounts the model volume"),
    (lambda s: s["containers"][0]["volumeMounts"][0].pop("readOnly"), Reason.MODEL_VOLUME, "writable"),
    (lambda s: s["initContainers"][0].__setitem__("volumeMounts", []), Reason.MODEL_VOLUME, "mounts no volume"),
])
def test_the_model_volume_is_the_loaders_and_read_only(admission_world: AdmissionWorld, mutate: Any, code: Reason,
                                                       words: str) -> None:
    pod = wrap("Pod", pod_template(good(admission_world)), good(admission_world))
    mutate(pod["spec"])
    denied(admission_world, pod, code, words)


@pytest.mark.parametrize(("source", "declared"), [
    ({"hostPath": {"path": "/var/lib/models"}}, False),
    ({"persistentVolumeClaim": {"claimName": "models"}}, False),
    ({"image": {"reference": EVIL_PINNED}}, False),
    ({"nfs": {"server": "nfs.example", "path": "/models"}}, False),
    ({"ephemeral": {"volumeClaimTemplate": {"spec": {"dataSource": {"kind": "PersistentVolumeClaim",
                                                                    "name": "models"}}}}}, False),
    # a configMap may be declared (the loader reads its policy from one) but no server may read it
    ({"configMap": {"name": "server-config"}}, True),
    ({"projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}, None),
])
def test_a_second_model_source_beside_the_loaders_volume_is_denied(admission_world: AdmissionWorld,
                                                                  source: dict[str, Any],
                                                                  declared: bool | None) -> None:
    """The server reads another volume, at another path than the verified model's.

    `declared`: None, the volume is admitted; True, it may be declared but the server's mount is
    denied; False, the volume itself is denied."""
    spec = pod_template(good(admission_world))
    spec["volumes"].append({"name": "other", **source})
    spec["containers"][0]["volumeMounts"].append({"name": "other", "mountPath": "/srv/other", "readOnly": True})
    spec["containers"][0]["args"] = ["--model-dir=/srv/other"]
    pod = wrap("Pod", spec, good(admission_world))
    if declared is None:
        assert check(admission_world, pod).allowed
    elif declared:
        denied(admission_world, pod, Reason.MODEL_VOLUME, "spec.containers[0].volumeMounts[1] mounts volume 'other'")
    else:
        denied(admission_world, pod, Reason.MODEL_VOLUME, "spec.volumes[other] is a", "can hold a model")
    m = isvc(good(admission_world))
    m["spec"]["predictor"]["volumes"] = [{"name": "other", **source}]
    if declared is False:
        denied(admission_world, m, Reason.MODEL_VOLUME, "spec.predictor.volumes[other]")
    m["spec"]["predictor"]["model"]["volumeMounts"] = [{"name": "other", "mountPath": "/srv/other"}]
    if declared is None:
        assert check(admission_world, m).allowed
    else:
        denied(admission_world, m, Reason.MODEL_VOLUME, "spec.predictor.")


@pytest.mark.parametrize(("mutate", "code", "words"), [
    (lambda c: c.__setitem__("image", EVIL_PINNED), Reason.BAD_LOADER, "is not the verifying loader"),
    (lambda c: c.__setitem__("image", "ghcr.io/mlseal/mlseal-python:0.1.0"), Reason.BAD_LOADER, "not the verifying"),
    (lambda c: c.__setitem__("command", ["sh", "-c", "mlseal fetch $0 $1 || cp -r /evil $1"]), Reason.BAD_LOADER,
     "command is"),
    (lambda c: c["args"].append("--no-verify"), Reason.BAD_LOADER, "'--no-verify' is not a loader flag"),
    (lambda c: c["args"].extend(["--policy", "/tmp/lenient.yaml"]), Reason.BAD_LOADER, "/tmp/lenient.yaml"),
    (lambda c: c["env"].append({"name": "MLSEAL_POLICY", "value": "/tmp/lenient.yaml"}), Reason.BAD_LOADER,
     "/tmp/lenient.yaml"),
    (lambda c: c.__setitem__("envFrom", [{"configMapRef": {"name": "x"}}]), Reason.BAD_LOADER, "envFrom"),
    (lambda c: c["env"].__setitem__(0, {"name": "MLSEAL_MODEL_SHA256", "value": "ab" * 32}), Reason.MALFORMED,
     "more than one model digest"),
    (lambda c: c["env"].__setitem__(0, {"name": "MLSEAL_MODEL_SHA256", "valueFrom": {"configMapKeyRef": {
        "name": "x", "key": "y"}}}), Reason.BAD_LOADER, "admission cannot see"),
    (lambda c: c.__setitem__("args", ["/mnt/models"]), Reason.BAD_LOADER, "MODEL_URI, DEST_DIR"),
    (lambda c: c["args"].__setitem__(0, "s3://attacker/model.joblib"), Reason.URI_MISMATCH,
     "s3://attacker/model.joblib"),
])
def test_the_loader_is_exactly_the_verifying_loader(admission_world: AdmissionWorld, mutate: Any, code: Reason,
                                                    words: str) -> None:
    pod = wrap("Pod", pod_template(good(admission_world)), good(admission_world))
    mutate(pod["spec"]["initContainers"][0])
    denied(admission_world, pod, code, words)


def test_the_loaders_own_settings_are_admitted(admission_world: AdmissionWorld) -> None:
    """Flags and variables that only change how the loader records or finds the bundle: the bytes
    are still checked against the digest admission checked."""
    pod = wrap("Pod", pod_template(good(admission_world)), good(admission_world))
    ld = pod["spec"]["initContainers"][0]
    ld["args"] += ["--bundle", "s3://models/good/model.joblib.sig", "--record", "--ledger=postgresql://l/db", "--json",
                   "--policy", "/etc/mlseal/policy.yaml"]
    ld["env"] += [{"name": "MLSEAL_WORKLOAD", "value": "s"},
                  {"name": "MLSEAL_POLICY", "value": "/etc/mlseal/policy.yaml"},
                  {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                  {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "id"}}},
                  {"name": "S3_ENDPOINT", "value": "minio.minio.svc:9000"}]
    d = check(admission_world, pod)
    assert d.allowed, d.reasons


def test_the_loader_must_be_an_init_container_and_only_one(admission_world: AdmissionWorld) -> None:
    spec = pod_template(good(admission_world))
    as_app = copy.deepcopy(spec)
    as_app["containers"].append(as_app.pop("initContainers")[0])
    denied(admission_world, wrap("Pod", as_app, good(admission_world)), Reason.BAD_LOADER, "plain init container")
    sidecar = copy.deepcopy(spec)
    sidecar["initContainers"][0]["restartPolicy"] = "Always"
    denied(admission_world, wrap("Pod", sidecar, good(admission_world)), Reason.BAD_LOADER, "restartPolicy: Always")
    two = copy.deepcopy(spec)
    two["initContainers"].append(loader("s3://models/lowacc/model.joblib", admission_world.models["lowacc"].sha256))
    denied(admission_world, wrap("Pod", two, good(admission_world)), Reason.BAD_LOADER, "more than one model loader")


def test_the_digest_can_be_a_literal_or_the_annotation(admission_world: AdmissionWorld) -> None:
    m = good(admission_world)
    spec = pod_template(m)
    spec["initContainers"][0] = loader(m.uri, m.sha256)
    assert check(admission_world, wrap("Pod", spec, m, annotate=False)).allowed
    flag = pod_template(m)
    flag["initContainers"][0]["env"] = []
    flag["initContainers"][0]["args"] += ["--sha256", m.sha256, "--record"]
    assert check(admission_world, wrap("Pod", flag, m, annotate=False)).allowed
    none = pod_template(m)  # fieldRef to an annotation the pod does not have
    denied(admission_world, wrap("Pod", none, m, annotate=False), Reason.NO_MODEL, SHA_FIELD)
    # on the Deployment object only: its pods would not have it
    dep = wrap("Deployment", pod_template(m), m, annotate=False)
    dep["metadata"]["annotations"] = {"mlseal.dev/model-sha256": m.sha256}
    denied(admission_world, dep, Reason.NO_MODEL, "spec.template.metadata.annotations does not have")


def test_the_server_cannot_be_pointed_elsewhere(admission_world: AdmissionWorld) -> None:
    for change, words in [
        ({"env": [{"name": "STORAGE_URI", "value": "s3://attacker/m"}]}, "sets STORAGE_URI"),
        ({"env": [{"name": "MODEL_URL", "value": "https://attacker.example/m.onnx"}]}, "MODEL_URL"),
        ({"command": ["serve", "gs://attacker/m"]}, "command[1]"),
        ({"envFrom": [{"secretRef": {"name": "evil"}}]}, "envFrom"),
    ]:
        spec = pod_template(good(admission_world))
        spec["containers"][0].update(change)
        denied(admission_world, wrap("Deployment", spec, good(admission_world)), Reason.MODEL_OVERRIDE, words)
    # a loopback endpoint is not a model location
    spec = pod_template(good(admission_world))
    spec["containers"][0]["args"].append("--grpc=http://127.0.0.1:8081")
    assert check(admission_world, wrap("Deployment", spec, good(admission_world))).allowed


def test_unannotated_workloads_are_denied_by_default(admission_world: AdmissionWorld) -> None:
    plain = wrap("Deployment", {"containers": [{"name": "s", "image": SERVER_IMAGE}]}, None)
    denied(admission_world, plain, Reason.NO_MODEL, "names no model")


# --- KServe -------------------------------------------------------------------------------

def predictor(world: AdmissionWorld, **model_fields: Any) -> dict[str, Any]:
    m = isvc(good(world))
    m["spec"]["predictor"]["model"].update(model_fields)
    return m


@pytest.mark.parametrize(("fields", "code", "words"), [
    ({"image": EVIL_TAG}, Reason.IMAGE_UNPINNED, "spec.predictor.model.image"),
    ({"image": EVIL_PINNED}, Reason.IMAGE_NOT_ALLOWED, "spec.predictor.model.image"),
    ({"runtime": "attacker-runtime"}, Reason.RUNTIME_NOT_ALLOWED, "spec.predictor.model.runtime 'attacker-runtime'"),
    ({"runtimeVersion": "evil"}, Reason.IMAGE_UNPINNED, "runtimeVersion"),
    ({"env": [{"name": "STORAGE_URI", "value": "s3://attacker/m"}]}, Reason.MODEL_OVERRIDE,
     "spec.predictor.model.env[0] sets STORAGE_URI"),
    ({"args": ["--model_dir=s3://attacker/m"]}, Reason.MODEL_OVERRIDE, "spec.predictor.model.args[0]"),
    ({"volumeMounts": [{"name": "evil", "mountPath": "/mnt/models"}]}, Reason.MODEL_VOLUME, "/mnt/models"),
])
def test_inference_service_overrides_are_denied(admission_world: AdmissionWorld, fields: dict[str, Any],
                                                code: Reason, words: str) -> None:
    p = load_policy(write_policy(admission_world.dir, "runtimes.yaml", runtimes=["kserve-tritonserver"]))
    m = predictor(admission_world, **fields)
    if "runtime" not in fields:
        m["spec"]["predictor"]["model"]["runtime"] = "kserve-tritonserver"
    denied(admission_world, m, code, words, policy=p)


def test_inference_service_with_an_allowed_runtime_and_image_is_admitted(admission_world: AdmissionWorld) -> None:
    p = load_policy(write_policy(admission_world.dir, "runtimes.yaml", runtimes=["kserve-tritonserver"]))
    assert check(admission_world, predictor(admission_world, runtime="kserve-tritonserver", image=SERVER_IMAGE),
                 p).allowed
    # with runtimes set, leaving the choice to KServe is not allowed
    denied(admission_world, predictor(admission_world), Reason.RUNTIME_NOT_ALLOWED, "names no runtime", policy=p)


def test_inference_service_containers_init_containers_and_ephemeral(admission_world: AdmissionWorld) -> None:
    m = isvc(good(admission_world))
    m["spec"]["predictor"]["containers"] = [{"name": "kserve-container", "image": EVIL_TAG}]
    denied(admission_world, m, Reason.IMAGE_UNPINNED, "spec.predictor.containers[0].image")
    m = isvc(good(admission_world))
    m["spec"]["predictor"]["containers"] = [{"name": "kserve-container", "image": SERVER_IMAGE,
                                             "env": [{"name": "STORAGE_URI", "value": good(admission_world).uri}]}]
    denied(admission_world, m, Reason.MODEL_OVERRIDE, "STORAGE_URI")  # beside model.storageUri: an override
    m = isvc(good(admission_world))
    m["spec"]["predictor"]["initContainers"] = [{
        "name": "swap", "image": SERVER_IMAGE, "command": ["sh", "-c", "cp -r /evil/. /mnt/models"],
        "volumeMounts": [{"name": "kserve-provision-location", "mountPath": "/mnt/models"}]}]
    denied(admission_world, m, Reason.EXTRA_CONTAINER, "spec.predictor.initContainers[0] (swap)")
    m = isvc(good(admission_world))
    m["spec"]["predictor"]["workerSpec"] = {"containers": [{"name": "w", "image": EVIL_TAG}]}
    denied(admission_world, m, Reason.IMAGE_UNPINNED, "spec.predictor.workerSpec.containers[0].image")


def test_transformers_and_explainers_follow_policy(admission_world: AdmissionWorld) -> None:
    m = isvc(good(admission_world))
    m["spec"]["transformer"] = {"containers": [{"name": "t", "image": SERVER_IMAGE}]}
    denied(admission_world, m, Reason.COMPONENT_NOT_ALLOWED, "spec.transformer", "transformers: allow")
    p = load_policy(write_policy(admission_world.dir, "tx.yaml", transformers="allow"))
    assert check(admission_world, m, p).allowed
    m["spec"]["transformer"]["containers"][0]["image"] = EVIL_TAG
    denied(admission_world, m, Reason.IMAGE_UNPINNED, "spec.transformer.containers[0].image", policy=p)
    m = isvc(good(admission_world))
    m["spec"]["explainer"] = {"art": {"storageUri": "s3://attacker/explainer", "type": "SquareAttack"}}
    denied(admission_world, m, Reason.COMPONENT_NOT_ALLOWED, "spec.explainer")
    p = load_policy(write_policy(admission_world.dir, "ex.yaml", explainers="allow"))
    denied(admission_world, m, Reason.NO_LOADER, "spec.explainer.art.storageUri", policy=p)


def isvc_owner() -> dict[str, Any]:
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "name": "m", "uid": "u1",
            "controller": True, "blockOwnerDeletion": True}


def raw_deployment_pod_spec(uri: str) -> dict[str, Any]:
    """The predictor pod spec KServe's RawDeployment controller writes (before the pod mutator)."""
    return {"containers": [{"name": "kserve-container", "image": SERVER_IMAGE,
                            "args": ["--model_name=m", "--model_dir=/mnt/models", "--http_port=8080"]}]}


def kserve_pod(world: AdmissionWorld, model: Model, *, initializer_image: str = LOADER_IMAGE) -> dict[str, Any]:
    """The pod after KServe's pod mutator injected the storage initializer from the mlseal ClusterStorageContainer."""
    spec = raw_deployment_pod_spec(model.uri)
    spec["containers"][0]["volumeMounts"] = [{"name": "kserve-provision-location", "mountPath": "/mnt/models",
                                              "readOnly": True}]
    spec["initContainers"] = [{
        "name": "storage-initializer", "image": initializer_image, "command": ["mlseal", "fetch"],
        "args": [model.uri, "/mnt/models"],
        "env": [{"name": "MLSEAL_MODEL_SHA256", "valueFrom": {"fieldRef": {"fieldPath": SHA_FIELD}}}],
        "volumeMounts": [{"name": "kserve-provision-location", "mountPath": "/mnt/models"}]}]
    spec["volumes"] = [{"name": "kserve-provision-location", "emptyDir": {}}]
    rs_owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "m-predictor-abc", "uid": "u3",
                "controller": True}
    pod = wrap("Pod", spec, model, owner=rs_owner)
    pod["metadata"]["annotations"]["serving.kserve.io/storage-initializer-sourceuri"] = model.uri
    return pod


def test_kserve_raw_deployment_children_through_owner_references(admission_world: AdmissionWorld) -> None:
    w = admission_world
    m = good(w)
    dep = wrap("Deployment", raw_deployment_pod_spec(m.uri), m, owner=isvc_owner())
    dep["spec"]["template"]["metadata"]["annotations"]["serving.kserve.io/storage-initializer-sourceuri"] = m.uri
    assert check(w, dep).allowed, check(w, dep).reasons
    rs = copy.deepcopy(dep)
    rs["kind"] = "ReplicaSet"
    rs["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "m-predictor",
                                          "uid": "u2", "controller": True}]
    assert check(w, rs).allowed, check(w, rs).reasons
    assert check(w, kserve_pod(w, m)).allowed, check(w, kserve_pod(w, m)).reasons
    # the storage initializer is KServe's default one, not the verifying loader
    denied(w, kserve_pod(w, m, initializer_image=KSERVE_DEFAULT_INITIALIZER), Reason.BAD_LOADER,
           "spec.initContainers[0].image 'kserve/storage-initializer:v0.13.0' is not the verifying loader")
    # the pod mutator did not run: the Pod is the final gate, whoever owns it
    bare = kserve_pod(w, m)
    del bare["spec"]["initContainers"]
    denied(w, bare, Reason.NO_LOADER, "storage initializer must be the mlseal loader")
    # the template's model is still decided by the ledger
    low = w.models["lowacc"]
    bad = copy.deepcopy(dep)
    bad["spec"]["template"]["metadata"]["annotations"] = {
        "mlseal.dev/model-sha256": low.sha256, "serving.kserve.io/storage-initializer-sourceuri": low.uri}
    denied(w, bad, Reason.GATE_FAILED)
    # a forged owner reference on a template without KServe's annotation defers nothing
    forged = wrap("Deployment", raw_deployment_pod_spec(m.uri), m, owner=isvc_owner())
    denied(w, forged, Reason.NO_LOADER)
    # a Deployment with KServe's annotation but no KServe owner must carry the loader itself
    unowned = copy.deepcopy(dep)
    del unowned["metadata"]["ownerReferences"]
    denied(w, unowned, Reason.NO_LOADER)


def trained_model(model: Model, uri: str | None = None) -> dict[str, Any]:
    return {"apiVersion": "serving.kserve.io/v1alpha1", "kind": "TrainedModel",
            "metadata": {"name": "tm", "namespace": "prod", "annotations": {"mlseal.dev/model-sha256": model.sha256}},
            "spec": {"inferenceService": "m", "model": {"storageUri": uri or model.uri, "framework": "sklearn",
                                                        "memory": "1Gi"}}}


def test_trained_models(admission_world: AdmissionWorld) -> None:
    w = admission_world
    denied(w, trained_model(good(w)), Reason.COMPONENT_NOT_ALLOWED, "model agent", "trained_models: check")
    p = load_policy(write_policy(w.dir, "tm.yaml", trained_models="check"))
    assert check(w, trained_model(good(w)), p).allowed
    denied(w, trained_model(good(w), "s3://attacker/model.joblib"), Reason.URI_MISMATCH, "spec.model.storageUri",
           policy=p)


def serving_runtime(kind: str, name: str, image: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if kind == "ServingRuntime":
        meta["namespace"] = "prod"
    return {"apiVersion": "serving.kserve.io/v1alpha1", "kind": kind, "metadata": meta,
            "spec": {"supportedModelFormats": [{"name": "onnx", "version": "1", "autoSelect": True}],
                     "protocolVersions": ["v2"],
                     "containers": [{"name": "kserve-container", "image": image,
                                     "args": ["--model-repository=/mnt/models", "--http-port=8080"]}]}}


@pytest.mark.parametrize("kind", ["ServingRuntime", "ClusterServingRuntime"])
def test_serving_runtimes(admission_world: AdmissionWorld, kind: str) -> None:
    w = admission_world
    p = load_policy(write_policy(w.dir, "runtimes.yaml", runtimes=["kserve-tritonserver"]))
    assert check(w, serving_runtime(kind, "kserve-tritonserver", SERVER_IMAGE), p).allowed
    denied(w, serving_runtime(kind, "kserve-tritonserver", "nvcr.io/nvidia/tritonserver:23.05-py3"),
           Reason.IMAGE_UNPINNED, "spec.containers[0].image", policy=p)
    denied(w, serving_runtime(kind, "kserve-tritonserver", EVIL_PINNED), Reason.IMAGE_NOT_ALLOWED, policy=p)
    denied(w, serving_runtime(kind, "attacker-runtime", SERVER_IMAGE), Reason.RUNTIME_NOT_ALLOWED,
           "add 'attacker-runtime' to runtimes", policy=p)
    # without runtimes in the policy, any name, but still only allowed images
    assert check(w, serving_runtime(kind, "attacker-runtime", SERVER_IMAGE)).allowed
    denied(w, serving_runtime(kind, "x", EVIL_TAG), Reason.IMAGE_UNPINNED)


# --- the policy, the webhook's entry point, and `mlseal admit` ------------------------------

def test_policy_keys_are_parsed_and_checked(admission_world: AdmissionWorld) -> None:
    p = admission_world.policy.default
    assert p.loader is not None and p.loader.image == LOADER_IMAGE
    assert p.images == (ImageRule("registry.example/serving/*"),)
    assert split_image("r.example:5000/a/b:1@sha256:" + "f" * 64) == ("r.example:5000/a/b", "sha256:" + "f" * 64)
    exact = ImageRule("registry.example/*/server", "sha256:" + "2" * 64)
    assert exact.allows("registry.example/serving/server", "sha256:" + "2" * 64)
    assert not exact.allows("registry.example/serving/server", "sha256:" + "3" * 64)
    assert not exact.allows("evil.example/serving/server", "sha256:" + "2" * 64)
    bad_policies: list[tuple[dict[str, Any], str]] = [
        ({"loader": {"image": "ghcr.io/mlseal/mlseal-python:0.1.0"}}, "pinned by digest"),
        ({"loader": {"image": LOADER_IMAGE, "policy": "relative.yaml"}}, "absolute path"),
        ({"images": ["evil.example/x:latest"]}, "not an image pattern"),
        ({"images": "registry.example/*"}, "must be a list"),
        ({"runtimes": ["Bad Name"]}, "ServingRuntime names"),
        ({"transformers": "maybe"}, "transformers must be one of allow, deny"),
        ({"namespaces": {"x": {"images": []}}}, "unknown keys \\['images'\\]"),
        ({"model_stages": ["train", "evaluate"]}, "'evaluate' judges or ships a model, it cannot produce one"),
        ({"model_stages": []}, "model_stages must be a non-empty list"),
    ]
    assert p.model_stages == ("train",)
    custom = load_policy(write_policy(admission_world.dir, "ms.yaml", model_stages=["train", "quantize"]))
    assert custom.default.model_stages == ("train", "quantize")
    for extra, words in bad_policies:
        with pytest.raises(ConfigurationError, match=words):
            load_policy(write_policy(admission_world.dir, "bad.yaml", **extra))


def test_without_a_loader_in_the_policy_no_model_workload_is_admitted(admission_world: AdmissionWorld) -> None:
    import yaml as _yaml
    doc = _yaml.safe_load(admission_world.policy_path.read_text())
    del doc["loader"]
    (admission_world.dir / "noloader.yaml").write_text(_yaml.safe_dump(doc))
    p = load_policy(admission_world.dir / "noloader.yaml")
    pod = wrap("Pod", pod_template(good(admission_world)), good(admission_world))
    denied(admission_world, pod, Reason.BAD_LOADER, "policy names no loader image", policy=p)


def test_workload_model_is_the_webhooks_single_call(admission_world: AdmissionWorld) -> None:
    rules = admission_world.policy.rules_for("prod")
    ref = workload_model(wrap("Pod", pod_template(good(admission_world)), good(admission_world)), rules)
    assert ref is not None and ref.sha256 == good(admission_world).sha256 and ref.uri == good(admission_world).uri
    assert ref.where == "spec.initContainers[0].args[0]"
    with pytest.raises(WorkloadDenied) as exc:
        workload_model(wrap("Pod", {"containers": [{"name": "s", "image": EVIL_TAG}]}, good(admission_world)), rules)
    assert [f.code for f in exc.value.findings] == [Reason.IMAGE_UNPINNED, Reason.NO_LOADER]
    assert workload_model(wrap("Pod", {"containers": [{"name": "s", "image": SERVER_IMAGE}]}, None),
                          Rules(unannotated_workloads=rules.unannotated_workloads.ALLOW,
                                images=rules.images)) is None


def test_malformed_pod_specs_are_denied_with_the_path() -> None:
    rules = Rules()
    for obj, words in [
        ({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": "x"}},
         "spec.containers must be a list"),
        ({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c"}, "spec": {"jobTemplate": {}}},
         "spec.jobTemplate.spec must be an object"),
        ({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}, "is not handled by mlseal"),
        ({"apiVersion": "extensions/v1beta1", "kind": "Deployment", "metadata": {"name": "c"}}, "not handled"),
        ({"apiVersion": "serving.kserve.io/v1beta1", "kind": "TrainedModel", "metadata": {"name": "t"}},
         "use serving.kserve.io/v1alpha1"),
    ]:
        findings, ref = check_workload(obj, rules)
        assert ref is None and [f.code for f in findings] == [Reason.MALFORMED], findings
        assert words in findings[0].message


def admit(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlseal.cli", "admit", *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_admit_cli_judges_every_kind(admission_world: AdmissionWorld, tmp_path: Path) -> None:
    w = admission_world
    docs = [wrap(k, pod_template(good(w)), good(w)) for k in POD_KINDS]
    ok = tmp_path / "ok.yaml"
    ok.write_text(yaml.safe_dump_all(docs))
    r = admit(str(ok), "--policy", str(w.policy_path), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    evil = [wrap(k, {"containers": [{"name": "s", "image": EVIL_TAG}]}, good(w)) for k in POD_KINDS]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump_all([*docs, *evil, trained_model(good(w)),
                                       serving_runtime("ServingRuntime", "x", EVIL_TAG)]))
    r = admit(str(bad), "--policy", str(w.policy_path), "--json")
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    assert [d["allowed"] for d in out["documents"]] == [True] * len(POD_KINDS) + [False] * (len(POD_KINDS) + 2)
