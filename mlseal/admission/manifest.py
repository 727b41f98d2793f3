"""Find the model a Kubernetes manifest deploys: its sha256 digest and its URI.

Kinds understood:

- KServe ``InferenceService`` (``serving.kserve.io/v1beta1``): the URI comes from the
  predictor, in any of its forms — ``spec.predictor.model.storageUri`` (the
  ``modelFormat`` form), ``spec.predictor.<framework>.storageUri`` (``sklearn``,
  ``xgboost``, ``pytorch``, ...) or a custom container's ``STORAGE_URI`` environment
  variable; the digest from the annotation ``mlseal.dev/model-sha256``.
- ``Deployment`` and ``StatefulSet`` (``apps/v1``) carrying ``mlseal.dev/model-sha256``
  and ``mlseal.dev/model-uri``, on the object or on its pod template.

Untyped JSON is parsed here, once; every rejection names the field path and what to
write there instead.

    >>> ref = model_ref({"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
    ...     "metadata": {"name": "m", "annotations": {"mlseal.dev/model-sha256": "ab" * 32}},
    ...     "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"},
    ...                                      "storageUri": "s3://models/m"}}}})
    >>> ref.uri, ref.where
    ('s3://models/m', 'spec.predictor.model.storageUri')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mlseal.errors import VerificationError
from mlseal.ledger.record import Sha256Hex, is_sha256_hex

SHA_ANNOTATION = "mlseal.dev/model-sha256"
URI_ANNOTATION = "mlseal.dev/model-uri"

KSERVE_API = "serving.kserve.io/v1beta1"
#: predictor keys that are not a framework spec holding a storageUri
_PREDICTOR_NON_MODEL = frozenset({
    "containers", "volumes", "initContainers", "imagePullSecrets", "serviceAccountName", "nodeSelector",
    "tolerations", "affinity", "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "scaleMetricType",
    "containerConcurrency", "timeout", "canaryTrafficPercent", "logger", "batcher", "annotations", "labels",
    "deploymentStrategy", "autoScaling", "workerSpec", "securityContext", "hostNetwork", "dnsPolicy",
    "priorityClassName", "schedulerName", "runtimeClassName", "restartPolicy", "hostname", "subdomain",
    "enableServiceLinks", "automountServiceAccountToken", "topologySpreadConstraints", "hostAliases",
    "preemptionPolicy", "overhead", "readinessGates", "shareProcessNamespace", "hostIPC", "hostPID",
    "terminationGracePeriodSeconds", "activeDeadlineSeconds", "dnsConfig", "ephemeralContainers",
    "priority", "setHostnameAsFQDN", "os", "hostUsers", "schedulingGates", "resourceClaims", "nodeName",
    "serviceAccount", "resources", "initContainer",
})
WORKLOAD_KINDS = frozenset({("apps/v1", "Deployment"), ("apps/v1", "StatefulSet")})


class ManifestError(VerificationError):
    """The manifest is malformed or does not say which model it deploys."""


@dataclass(frozen=True)
class ModelRef:
    """The model a manifest deploys."""

    kind: str
    name: str
    namespace: str | None
    sha256: Sha256Hex
    uri: str | None
    #: the field path the URI came from (for reasons a person can act on)
    where: str


def redact_uri(uri: str) -> str:
    """Drop credentials and query strings a URI may carry, before it is logged or shown."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparseable uri>"
    netloc = parts.netloc.rpartition("@")[2]
    query = "<redacted>" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _typed(v: object, t: type, where: str, what: str) -> Any:
    if not isinstance(v, t):
        raise ManifestError(f"{where} must be {what}, got {type(v).__name__}")
    return v


def _opt_obj(o: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    v = o.get(key)
    if v is None:
        return {}
    return dict(_typed(v, dict, f"{where}.{key}", "an object"))


def _annotations(meta: Mapping[str, Any], where: str) -> dict[str, Any]:
    ann = _opt_obj(meta, "annotations", where)
    for k, v in ann.items():
        if k in (SHA_ANNOTATION, URI_ANNOTATION):
            _typed(v, str, f"{where}.annotations[{k}]", "a string")
    return ann


def _digest(raw: str, where: str) -> Sha256Hex:
    value = raw.strip().removeprefix("sha256:")
    if not is_sha256_hex(value):
        raise ManifestError(
            f"{where} must be the model's sha256 as 64 lowercase hex digits (from `mlseal digest`), "
            f"got {raw[:80]!r}"
        )
    return Sha256Hex(value)


def _str_field(o: Mapping[str, Any], key: str, where: str) -> str | None:
    v = o.get(key)
    if v is None:
        return None
    s: str = _typed(v, str, f"{where}.{key}", "a string")
    if not s:
        raise ManifestError(f"{where}.{key} is empty")
    return s


def _predictor_uris(predictor: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every (field path, storage URI) the predictor names."""
    found: list[tuple[str, str]] = []
    base = "spec.predictor"
    for key, spec in predictor.items():
        if key in _PREDICTOR_NON_MODEL or not isinstance(key, str):
            continue
        if not isinstance(spec, dict):
            continue  # scalar fields KServe may add; a framework spec is always an object
        uri = _str_field(spec, "storageUri", f"{base}.{key}")
        if uri is not None:
            found.append((f"{base}.{key}.storageUri", uri))
        elif "storage" in spec:
            raise ManifestError(
                f"{base}.{key}.storage (a storage spec) is not supported; name the model by "
                f"{base}.{key}.storageUri so its URI can be matched against the ledger"
            )
    containers = predictor.get("containers")
    if containers is not None:
        for i, c in enumerate(_typed(containers, list, f"{base}.containers", "a list")):
            c = _typed(c, dict, f"{base}.containers[{i}]", "an object")
            env = c.get("env")
            if env is None:
                continue
            for j, e in enumerate(_typed(env, list, f"{base}.containers[{i}].env", "a list")):
                e = _typed(e, dict, f"{base}.containers[{i}].env[{j}]", "an object")
                if e.get("name") == "STORAGE_URI":
                    where = f"{base}.containers[{i}].env[{j}]"
                    value = _str_field(e, "value", where)
                    if value is None:
                        raise ManifestError(f"{where}: STORAGE_URI must have a literal value, not valueFrom")
                    found.append((f"{where}.value", value))
    return found


def _inference_service(obj: Mapping[str, Any], meta: Mapping[str, Any], name: str, ns: str | None) -> ModelRef:
    if obj.get("apiVersion") != KSERVE_API:
        raise ManifestError(
            f"InferenceService apiVersion {str(obj.get('apiVersion'))[:80]!r} is not supported; use {KSERVE_API}"
        )
    ann = _annotations(meta, "metadata")
    spec = _typed(obj.get("spec"), dict, "spec", "an object")
    predictor = _typed(spec.get("predictor"), dict, "spec.predictor", "an object")
    uris = _predictor_uris(predictor)
    if not uris:
        raise ManifestError(
            "spec.predictor names no model: set spec.predictor.model.storageUri (or a framework's storageUri)"
        )
    if len({u for _, u in uris}) > 1:
        shown = ", ".join(f"{w}={redact_uri(u)}" for w, u in uris)
        raise ManifestError(
            f"spec.predictor names more than one model ({shown}); deploy one model per InferenceService"
        )
    where, uri = uris[0]
    raw_sha = ann.get(SHA_ANNOTATION)
    if raw_sha is None:
        raise ManifestError(
            f"InferenceService {name} has no {SHA_ANNOTATION} annotation: add the model's sha256 "
            f"(`mlseal digest MODEL`) as metadata.annotations[{SHA_ANNOTATION}]"
        )
    sha = _digest(raw_sha, f"metadata.annotations[{SHA_ANNOTATION}]")
    ann_uri = ann.get(URI_ANNOTATION)
    if ann_uri is not None and ann_uri != uri:
        raise ManifestError(
            f"metadata.annotations[{URI_ANNOTATION}] {redact_uri(ann_uri)!r} differs from {where} "
            f"{redact_uri(uri)!r}; make them name the same model"
        )
    return ModelRef("InferenceService", name, ns, sha, uri, where)


def _workload(obj: Mapping[str, Any], meta: Mapping[str, Any], kind: str, name: str,
              ns: str | None) -> ModelRef | None:
    if (obj.get("apiVersion"), kind) not in WORKLOAD_KINDS:
        raise ManifestError(f"{kind} apiVersion {str(obj.get('apiVersion'))[:80]!r} is not supported; use apps/v1")
    top = _annotations(meta, "metadata")
    spec = _opt_obj(obj, "spec", "")
    template = _opt_obj(spec, "template", "spec")
    tmeta = _opt_obj(template, "metadata", "spec.template")
    pod = _annotations(tmeta, "spec.template.metadata")
    values: dict[str, tuple[str, str]] = {}
    for key in (SHA_ANNOTATION, URI_ANNOTATION):
        a, b = top.get(key), pod.get(key)
        if a is not None and b is not None and a != b:
            raise ManifestError(
                f"annotation {key} differs between metadata ({a[:80]!r}) and spec.template.metadata "
                f"({b[:80]!r}); set it once"
            )
        if a is not None:
            values[key] = (a, f"metadata.annotations[{key}]")
        elif b is not None:
            values[key] = (b, f"spec.template.metadata.annotations[{key}]")
    if not values:
        return None
    if SHA_ANNOTATION not in values:
        raise ManifestError(
            f"{kind} {name} has {URI_ANNOTATION} but no {SHA_ANNOTATION}: "
            "add the model's sha256 (`mlseal digest MODEL`)"
        )
    if URI_ANNOTATION not in values:
        raise ManifestError(f"{kind} {name} has {SHA_ANNOTATION} but no {URI_ANNOTATION}: add the model's URI")
    sha = _digest(*values[SHA_ANNOTATION])
    uri, where = values[URI_ANNOTATION]
    if not uri:
        raise ManifestError(f"{where} is empty")
    return ModelRef(kind, name, ns, sha, uri, where)


def model_ref(manifest_obj: object) -> ModelRef | None:
    """The model `obj` deploys; None for a Deployment/StatefulSet that names no model.

    Raises ManifestError when the manifest is malformed, of a kind mlseal does not
    handle, or names its model ambiguously.
    """
    obj: dict[str, Any] = _typed(manifest_obj, dict, "the manifest", "a JSON/YAML object")
    kind = obj.get("kind")
    if not isinstance(kind, str):
        raise ManifestError(f"the manifest's kind must be a string, got {type(kind).__name__}")
    meta = _typed(obj.get("metadata"), dict, "metadata", "an object")
    name = meta.get("name") or meta.get("generateName") or "<unnamed>"
    name = _typed(name, str, "metadata.name", "a string")[:253]
    ns = meta.get("namespace")
    if ns is not None:
        ns = _typed(ns, str, "metadata.namespace", "a string")[:63]
    if kind == "InferenceService":
        return _inference_service(obj, meta, name, ns)
    if kind in ("Deployment", "StatefulSet"):
        return _workload(obj, meta, kind, name, ns)
    raise ManifestError(
        f"kind {kind[:80]!r} is not handled by mlseal admission (InferenceService, Deployment, StatefulSet); "
        "remove it from the webhook's rules"
    )
