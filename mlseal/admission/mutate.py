"""Mutating mode: inject the verifying loader into a workload that names its model.

A Pod (or any pod-creating kind's template) that carries ``mlseal.dev/model-sha256`` and
``mlseal.dev/model-uri`` but runs no loader gets one, the way KServe's pod mutator adds
its storage initializer: an ``emptyDir`` volume, the loader as the first init container
(the policy's ``loader.image``, command ``[mlseal, fetch]``, args ``[URI, /mnt/models]``,
the digest in ``MLSEAL_MODEL_SHA256``) and a read-only mount of the volume at
``/mnt/models`` in every container. The result is returned as an RFC 6902 JSONPatch
(computed with the ``jsonpatch`` library) for a ``MutatingWebhookConfiguration``.

Mutation only adds the loader; it never decides. The validating webhook judges the
mutated object as any other (`mlseal.admission.workload`), so anything left out here
(a workload that already has a loader, a KServe template whose pods KServe completes, a
name clash, no loader image in the policy, malformed input) is simply not patched and
is then admitted or denied on its own.

    >>> from mlseal.admission.policy import LoaderRules, Rules
    >>> rules = Rules(loader=LoaderRules("ghcr.io/mlseal/mlseal-python@sha256:" + "1" * 64))
    >>> pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "annotations": {
    ...     "mlseal.dev/model-sha256": "ab" * 32, "mlseal.dev/model-uri": "s3://models/m/"}},
    ...     "spec": {"containers": [{"name": "server", "image": "s"}]}}
    >>> sorted(op["path"] for op in loader_patch(pod, rules))
    ['/spec/containers/0/volumeMounts', '/spec/initContainers', '/spec/volumes']
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Mapping
from typing import Any

import jsonpatch

from mlseal.admission.manifest import (
    KSERVE_MODEL_DIR,
    KSERVE_SOURCE_ANNOTATION,
    LOADER_COMMAND,
    LOADER_SHA_ENV,
    POD_SPEC_PATHS,
    SHA_ANNOTATION,
    URI_ANNOTATION,
    ManifestError,
    workload,
)
from mlseal.admission.policy import Rules

__all__ = ["LOADER_NAME", "REVIEW_API", "VOLUME_NAME", "inject_loader", "loader_patch", "mutate_response"]

#: the names the injected pieces take (a workload already using them is left alone)
LOADER_NAME = "mlseal-fetch"
VOLUME_NAME = "mlseal-model"
REVIEW_API = "admission.k8s.io/v1"


def _is_loader(c: Mapping[str, Any], rules: Rules) -> bool:
    command = c.get("command")
    return ((isinstance(command, list) and tuple(command[:2]) == LOADER_COMMAND)
            or c.get("name") in ("storage-initializer", LOADER_NAME)
            or (rules.loader is not None and c.get("image") == rules.loader.image))


def inject_loader(manifest_obj: object, rules: Rules) -> dict[str, Any] | None:
    """The object with the loader injected, or None when it is not patched (see module doc)."""
    if rules.loader is None or not isinstance(manifest_obj, dict):
        return None
    try:
        w = workload(manifest_obj)
    except ManifestError:
        return None
    if w.pod is None:
        return None
    pod = w.pod
    sha = pod.annotations.get(SHA_ANNOTATION) or w.annotations.get(SHA_ANNOTATION)
    uri = pod.annotations.get(URI_ANNOTATION) or w.annotations.get(URI_ANNOTATION)
    if not sha or not uri or KSERVE_SOURCE_ANNOTATION in pod.annotations:
        return None
    out = copy.deepcopy(manifest_obj)
    spec: dict[str, Any] = out
    for key in POD_SPEC_PATHS[(w.api_version, w.kind)]:
        spec = spec[key]
    inits = spec.get("initContainers") or []
    apps = spec.get("containers") or []
    volumes = spec.get("volumes") or []
    if any(_is_loader(c, rules) for c in [*inits, *apps]) or any(v.get("name") == VOLUME_NAME for v in volumes):
        return None
    if any(isinstance(m, dict) and m.get("mountPath", "").rstrip("/") == KSERVE_MODEL_DIR
           for c in apps for m in c.get("volumeMounts") or []):
        return None  # something else sits where the model goes: validation says what
    loader = {
        "name": LOADER_NAME,
        "image": rules.loader.image,
        "command": list(LOADER_COMMAND),
        "args": [uri, KSERVE_MODEL_DIR],
        "env": [{"name": LOADER_SHA_ENV, "value": sha.strip().removeprefix("sha256:")}],
        "volumeMounts": [{"name": VOLUME_NAME, "mountPath": KSERVE_MODEL_DIR}],
    }
    spec["initContainers"] = [loader, *inits]
    spec["volumes"] = [*volumes, {"name": VOLUME_NAME, "emptyDir": {}}]
    for c in apps:
        c["volumeMounts"] = [*(c.get("volumeMounts") or []),
                             {"name": VOLUME_NAME, "mountPath": KSERVE_MODEL_DIR, "readOnly": True}]
    return out


def loader_patch(manifest_obj: object, rules: Rules) -> list[dict[str, Any]]:
    """The RFC 6902 operations that inject the loader; [] when the object is not patched."""
    mutated = inject_loader(manifest_obj, rules)
    if mutated is None:
        return []
    ops: list[dict[str, Any]] = jsonpatch.make_patch(manifest_obj, mutated).patch
    return ops


def mutate_response(uid: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
    """An AdmissionReview response that allows and carries `ops` (the validating webhook decides)."""
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    if ops:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(ops, separators=(",", ":")).encode()).decode()
    return {"apiVersion": REVIEW_API, "kind": "AdmissionReview", "response": response}
