"""Mutating mode: the loader injected into an annotated workload makes it admissible, and
nothing else: the validating checks still judge the patched object."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import jsonpatch
import pytest

from mlseal.admission import Reason, decide
from mlseal.admission.mutate import inject_loader, loader_patch, mutate_response
from mlseal.admission.policy import Rules
from mlseal.ledger import open_ledger
from tests.fixtures_admission import SERVER_IMAGE, AdmissionWorld, Model, pod_template
from tests.test_workload import EVIL_TAG, POD_KINDS, isvc_owner, raw_deployment_pod_spec, wrap


def annotated(kind: str, model: Model, image: str = SERVER_IMAGE) -> dict[str, Any]:
    m = wrap(kind, {"containers": [{"name": "server", "image": image, "args": ["--model-dir=/mnt/models"]}]}, model)
    m["metadata"].setdefault("annotations", {})["mlseal.dev/model-uri"] = model.uri
    return m


def patched(obj: dict[str, Any], rules: Rules) -> dict[str, Any]:
    ops = loader_patch(obj, rules)
    out: dict[str, Any] = jsonpatch.apply_patch(obj, ops)
    return out


def allowed(w: AdmissionWorld, obj: dict[str, Any]) -> Any:
    with open_ledger(w.ledger_url, create=False) as led:
        return decide(obj, w.policy, ledger=led)


@pytest.mark.parametrize("kind", POD_KINDS)
def test_the_injected_loader_makes_an_annotated_workload_admissible(admission_world: AdmissionWorld,
                                                                    kind: str) -> None:
    w = admission_world
    rules = w.policy.rules_for("prod")
    obj = annotated(kind, w.models["good"])
    before = allowed(w, obj)
    assert not before.allowed and Reason.NO_LOADER in before.codes
    after = allowed(w, patched(obj, rules))
    assert after.allowed, after.reasons
    # the ledger still decides the model
    low = annotated(kind, w.models["lowacc"])
    d = allowed(w, patched(low, rules))
    assert not d.allowed and d.codes == (Reason.GATE_FAILED,)


def test_injection_never_launders_the_rest_of_the_workload(admission_world: AdmissionWorld) -> None:
    w = admission_world
    rules = w.policy.rules_for("prod")
    evil = annotated("Deployment", w.models["good"], EVIL_TAG)
    d = allowed(w, patched(evil, rules))
    assert not d.allowed and d.codes == (Reason.IMAGE_UNPINNED,)
    swap = annotated("Pod", w.models["good"])
    swap["spec"]["initContainers"] = [{"name": "swap", "image": SERVER_IMAGE,
                                       "volumeMounts": [{"name": "mlseal-model", "mountPath": "/x"}]}]
    out = patched(swap, rules)
    assert [c["name"] for c in out["spec"]["initContainers"]] == ["mlseal-fetch", "swap"]
    assert Reason.EXTRA_CONTAINER in allowed(w, out).codes


def test_what_is_not_patched(admission_world: AdmissionWorld) -> None:
    w = admission_world
    rules = w.policy.rules_for("prod")
    good = w.models["good"]
    assert loader_patch(wrap("Pod", pod_template(good), good), rules) == []  # has its loader
    kserve = wrap("Deployment", raw_deployment_pod_spec(good.uri), good, owner=isvc_owner())
    kserve["spec"]["template"]["metadata"]["annotations"]["serving.kserve.io/storage-initializer-sourceuri"] = good.uri
    assert loader_patch(kserve, rules) == []  # KServe's pod mutator adds it to each pod
    assert loader_patch(annotated("Pod", good), Rules()) == []  # no loader image in the policy
    no_uri = annotated("Pod", good)
    del no_uri["metadata"]["annotations"]["mlseal.dev/model-uri"]
    assert loader_patch(no_uri, rules) == []
    clash = annotated("Pod", good)
    clash["spec"]["volumes"] = [{"name": "mlseal-model", "hostPath": {"path": "/evil"}}]
    assert loader_patch(clash, rules) == [] and not allowed(w, clash).allowed
    over = annotated("Pod", good)
    over["spec"]["containers"][0]["volumeMounts"] = [{"name": "x", "mountPath": "/mnt/models"}]
    assert inject_loader(over, rules) is None
    junk: object
    for junk in (None, [], {"kind": "Pod"}, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}):
        assert loader_patch(junk, rules) == []


def test_the_input_is_not_modified_and_the_response_carries_the_patch(admission_world: AdmissionWorld) -> None:
    rules = admission_world.policy.rules_for("prod")
    obj = annotated("Pod", admission_world.models["good"])
    before = copy.deepcopy(obj)
    ops = loader_patch(obj, rules)
    assert obj == before and ops
    r = mutate_response("uid-1", ops)["response"]
    assert r["allowed"] is True and r["patchType"] == "JSONPatch"
    assert json.loads(base64.b64decode(r["patch"])) == ops
    assert mutate_response("uid-2", [])["response"] == {"uid": "uid-2", "allowed": True}
