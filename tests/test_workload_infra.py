"""The webhook configuration sends every kind whole-workload policy covers, opted-in
namespaces only, and its matchConditions skip only updates that change nothing that runs.

The CEL expression is evaluated with cel-python on the requests the API server would
send (the API server runs cel-go; the expression uses only the common subset).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml
from celpy.adapter import json_to_cel

from mlseal.admission.manifest import KSERVE_KINDS, POD_SPEC_PATHS

WEBHOOK = Path(__file__).resolve().parent.parent / "infra" / "k8s" / "base" / "webhook.yaml"


def hook() -> dict[str, Any]:
    (wh,) = yaml.safe_load(WEBHOOK.read_text())["webhooks"]
    return dict(wh)


def test_the_webhook_sees_every_kind_the_engine_covers() -> None:
    wh = hook()
    sent = {(g, v, r) for rule in wh["rules"] for g in rule["apiGroups"] for v in rule["apiVersions"]
            for r in rule["resources"]}
    for api, kind in [*POD_SPEC_PATHS, *((a, k) for k, a in KSERVE_KINDS.items())]:
        group, _, version = api.rpartition("/")
        assert (group, version, kind.lower() + "s") in sent, f"{kind} ({api}) never reaches the webhook"
    assert ("", "v1", "pods/ephemeralcontainers") in sent
    scopes = {r: rule["scope"] for rule in wh["rules"] for r in rule["resources"]}
    assert scopes["clusterservingruntimes"] == "Cluster" and scopes["pods"] == "Namespaced"


def _condition() -> Any:
    (cond,) = hook()["matchConditions"]
    env = celpy.Environment()
    return env.program(env.compile(cond["expression"]))


def _matches(operation: str, obj: dict[str, Any] | None, old: dict[str, Any] | None) -> bool:
    activation = {"request": json_to_cel({"operation": operation}),
                  "object": json_to_cel(obj), "oldObject": json_to_cel(old)}
    return bool(_condition().evaluate(activation))


POD = {"metadata": {"name": "p", "labels": {"app": "s"}, "annotations": {"mlseal.dev/model-sha256": "ab" * 32}},
       "spec": {"initContainers": [{"name": "mlseal-fetch", "image": "l"}],
                "containers": [{"name": "s", "image": "a"}]}}


def _changed(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(POD)
    node: Any = obj
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return obj


@pytest.mark.parametrize(("operation", "new", "judged"), [
    ("CREATE", POD, True),
    ("UPDATE", _changed(("metadata", "labels"), {"app": "t"}), False),
    ("UPDATE", _changed(("metadata", "finalizers"), ["x"]), False),
    ("UPDATE", _changed(("spec", "containers"), [{"name": "s", "image": "evil"}]), True),
    ("UPDATE", _changed(("spec", "ephemeralContainers"), [{"name": "debug", "image": "evil"}]), True),
    ("UPDATE", _changed(("metadata", "annotations"), {"mlseal.dev/model-sha256": "cd" * 32}), True),
    ("UPDATE", _changed(("metadata", "annotations"), {}), True),
    ("UPDATE", _changed(("metadata", "ownerReferences"), [{"kind": "InferenceService", "name": "m"}]), True),
])
def test_match_conditions_skip_only_updates_that_change_nothing_that_runs(
        operation: str, new: dict[str, Any], judged: bool) -> None:
    old = POD if operation == "UPDATE" else None
    assert _matches(operation, new, old) is judged


def test_only_opted_in_namespaces_are_judged_and_never_the_webhooks_own() -> None:
    exprs = {e["key"]: e for e in hook()["namespaceSelector"]["matchExpressions"]}
    assert exprs["mlseal.dev/admission"] == {"key": "mlseal.dev/admission", "operator": "In", "values": ["enforce"]}
    assert exprs["kubernetes.io/metadata.name"]["operator"] == "NotIn"
    assert "mlseal-system" in exprs["kubernetes.io/metadata.name"]["values"]
