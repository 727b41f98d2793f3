"""The loader's cluster pieces, offline: the KServe ClusterStorageContainer and the plain
Deployment example build, validate strictly (the CSC against the schema cut from
KServe's CRD, the Deployment against Kubernetes' own), and wire `mlseal fetch` exactly as
the loader contract says (image pinned by digest, command, args, env from the downward
API, the model volume read-only in the server)."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from mlseal.cli import build_parser
from tests.test_infra_manifests import K8S_VERSION, build, crd_schema

DIGEST_PINNED = re.compile(r"[^@\s]+@sha256:[0-9a-f]{64}")
SHA_FIELD = "metadata.annotations['mlseal.dev/model-sha256']"


def _csc() -> dict[str, Any]:
    (csc,) = build("loader")
    return csc


def _deployment() -> dict[str, Any]:
    (dep,) = build("examples/model-deployment")
    return dep


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container.get("env", [])}


def test_cluster_storage_container_validates_strictly_against_kserves_crd() -> None:
    csc = _csc()
    schema = crd_schema(csc["apiVersion"], csc["kind"])
    assert schema is not None
    jsonschema.validate(csc, schema)
    bad = json.loads(json.dumps(csc))
    bad["spec"]["container"]["volumeMount"] = []  # a typo of volumeMounts
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_cluster_storage_container_runs_the_loader_of_the_contract() -> None:
    spec = _csc()["spec"]
    c = spec["container"]
    assert c["name"] == "storage-initializer"  # what KServe recognises
    assert DIGEST_PINNED.fullmatch(c["image"]), c["image"]
    assert c["command"] == ["mlseal", "fetch"] and "args" not in c  # KServe sets [storageUri, /mnt/models]
    args = build_parser().parse_args([*c["command"][1:], "s3://models/m", "/mnt/models"])
    assert (args.command, args.src, args.dest) == ("fetch", "s3://models/m", "/mnt/models")
    env = _env(c)
    assert env["MLSEAL_MODEL_SHA256"]["valueFrom"]["fieldRef"]["fieldPath"] == SHA_FIELD
    assert env["MLSEAL_POLICY"]["value"] == "/etc/mlseal/policy.yaml"
    assert {m["mountPath"]: m.get("readOnly") for m in c["volumeMounts"]} == {"/etc/mlseal": True}
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] and sc["runAsNonRoot"] and sc["capabilities"] == {"drop": ["ALL"]}
    prefixes = {f.get("prefix") or f.get("regex") for f in spec["supportedUriFormats"]}
    assert prefixes == {"s3://", "gs://", "https://(.+)/(.+)"}
    assert not any("pvc" in p for p in prefixes)  # KServe mounts claims without an initializer


def test_example_deployment_validates_strictly() -> None:
    dep = _deployment()
    kubernetes_validate.validate(dep, K8S_VERSION, strict=True)


def test_example_deployment_serves_only_what_the_loader_verified() -> None:
    dep = _deployment()
    tmpl = dep["spec"]["template"]
    spec = tmpl["spec"]
    (loader,) = spec["initContainers"]
    (server,) = spec["containers"]
    for c in (loader, server):
        assert DIGEST_PINNED.fullmatch(c["image"]), c["image"]
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert loader["command"] == ["mlseal", "fetch"]
    args = build_parser().parse_args(loader["command"][1:] + loader["args"])
    assert args.src == tmpl["metadata"]["annotations"]["mlseal.dev/model-uri"] and args.dest == "/mnt/models"
    assert args.record
    env = _env(loader)
    assert env["MLSEAL_MODEL_SHA256"]["valueFrom"]["fieldRef"]["fieldPath"] == SHA_FIELD
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "MLSEAL_LEDGER"):
        assert "secretKeyRef" in env[name]["valueFrom"], name  # credentials from Secrets, never values
    assert not any("@" in a.split("://", 1)[-1].split("/", 1)[0] for a in loader["args"])
    mounts = {m["mountPath"]: m for m in server["volumeMounts"]}
    assert mounts["/mnt/models"]["readOnly"] is True
    loader_mounts = {m["mountPath"]: m for m in loader["volumeMounts"]}
    assert loader_mounts["/mnt/models"]["name"] == mounts["/mnt/models"]["name"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes[mounts["/mnt/models"]["name"]] == {"name": "model", "emptyDir": {}}
    assert spec["securityContext"]["runAsNonRoot"] is True
