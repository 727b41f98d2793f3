"""The webhook's controller applies whole-workload policy before the ledger and its cache.

Needs the controller to call `mlseal.admission.workload.workload_model` where it called
`model_ref` (see docs/admission.md#workloads).
"""

from __future__ import annotations

import json
from typing import Any

from mlseal.admission.webhook import AdmissionController, DecisionCache
from mlseal.ledger import open_ledger
from tests.fixtures_admission import AdmissionWorld, pod_template, review
from tests.test_workload import EVIL_TAG, kserve_pod, serving_runtime, wrap


def _review(obj: dict[str, Any], resource: tuple[str, str, str]) -> bytes:
    r = review(obj)
    group, version, plural = resource
    kind = {"group": group, "version": version, "kind": obj["kind"]}
    r["request"].update(kind=kind, requestKind=kind, resource={"group": group, "version": version,
                                                                "resource": plural})
    return json.dumps(r).encode()


def _controller(w: AdmissionWorld) -> AdmissionController:
    c = AdmissionController(w.policy, ledger_factory=lambda: open_ledger(w.ledger_url, create=False),
                            cache=DecisionCache(64))
    follow = getattr(c, "follow", None)
    if follow is not None:
        follow()  # a controller deciding from a verified ledger view builds it first
    return c


def test_the_webhook_judges_the_pod_and_the_cache_never_admits_another_workload(
        admission_world: AdmissionWorld) -> None:
    w = admission_world
    c = _controller(w)
    good = w.models["good"]
    pod = ("", "v1", "pods")
    status, out = c.review(_review(kserve_pod(w, good), pod))
    assert status == 200 and out["response"]["allowed"] is True, out
    # same model digest and URI (a warm cache entry), another workload
    evil = kserve_pod(w, good)
    evil["spec"]["containers"][0]["image"] = EVIL_TAG
    out = c.review(_review(evil, pod))[1]["response"]
    assert out["allowed"] is False and "is not pinned by digest" in out["status"]["message"]
    bare = wrap("Pod", {"containers": [{"name": "s", "image": EVIL_TAG, "args": ["s3://attacker/m"]}]}, good)
    out = c.review(_review(bare, pod))[1]["response"]
    assert out["allowed"] is False and "verifying loader" in out["status"]["message"]
    dep = wrap("Deployment", pod_template(good), good)
    assert c.review(_review(dep, ("apps", "v1", "deployments")))[1]["response"]["allowed"] is True


def test_the_webhook_admits_a_good_runtime_and_denies_a_bad_one(admission_world: AdmissionWorld) -> None:
    from tests.fixtures_admission import SERVER_IMAGE

    c = _controller(admission_world)
    res = ("serving.kserve.io", "v1alpha1", "clusterservingruntimes")
    ok = c.review(_review(serving_runtime("ClusterServingRuntime", "triton", SERVER_IMAGE), res))[1]["response"]
    assert ok["allowed"] is True, ok
    bad = c.review(_review(serving_runtime("ClusterServingRuntime", "triton", EVIL_TAG), res))[1]["response"]
    assert bad["allowed"] is False and "spec.containers[0].image" in bad["status"]["message"]
