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
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from mlseal._uris import redact_uri
from mlseal.errors import VerificationError
from mlseal.ledger.record import Sha256Hex, is_sha256_hex

__all__ = [
    "KSERVE_ALPHA_API",
    "KSERVE_API",
    "KSERVE_KINDS",
    "KSERVE_LOADER_NAME",
    "KSERVE_MODEL_DIR",
    "KSERVE_SOURCE_ANNOTATION",
    "LOADER_COMMAND",
    "LOADER_POLICY_ENV",
    "LOADER_SHA_ENV",
    "POD_SPEC_PATHS",
    "SHA_ANNOTATION",
    "URI_ANNOTATION",
    "WORKLOAD_KINDS",
    "Container",
    "Env",
    "Handler",
    "ManifestError",
    "ModelRef",
    "Mount",
    "Owner",
    "PodSpec",
    "Workload",
    "container",
    "containers_of",
    "model_ref",
    "pod_spec",
    "volume_sources_of",
    "volumes_of",
    "workload",
]

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


# --- whole workloads: every container a pod will run ---------------------------------------

#: the pod spec's path in each pod-creating kind (Kyverno's autogen: one template path per kind)
POD_SPEC_PATHS: dict[tuple[str, str], tuple[str, ...]] = {
    ("v1", "Pod"): ("spec",),
    ("v1", "ReplicationController"): ("spec", "template", "spec"),
    ("apps/v1", "Deployment"): ("spec", "template", "spec"),
    ("apps/v1", "ReplicaSet"): ("spec", "template", "spec"),
    ("apps/v1", "StatefulSet"): ("spec", "template", "spec"),
    ("apps/v1", "DaemonSet"): ("spec", "template", "spec"),
    ("batch/v1", "Job"): ("spec", "template", "spec"),
    ("batch/v1", "CronJob"): ("spec", "jobTemplate", "spec", "template", "spec"),
}
KSERVE_ALPHA_API = "serving.kserve.io/v1alpha1"
#: KServe's kinds that are not pod-creating but decide what runs
KSERVE_KINDS: dict[str, str] = {
    "InferenceService": KSERVE_API,
    "TrainedModel": KSERVE_ALPHA_API,
    "ServingRuntime": KSERVE_ALPHA_API,
    "ClusterServingRuntime": KSERVE_ALPHA_API,
}
#: the annotation KServe puts on a predictor's pod template; its pod mutator then injects
#: the storage initializer (the ClusterStorageContainer's container) with args [uri, /mnt/models]
KSERVE_SOURCE_ANNOTATION = "serving.kserve.io/storage-initializer-sourceuri"
KSERVE_MODEL_DIR = "/mnt/models"
#: the env variable the loader takes the model digest from (contract with `mlseal fetch`)
LOADER_SHA_ENV = "MLSEAL_MODEL_SHA256"
LOADER_POLICY_ENV = "MLSEAL_POLICY"
LOADER_COMMAND = ("mlseal", "fetch")
#: KServe names the container its pod mutator injects so
KSERVE_LOADER_NAME = "storage-initializer"


@dataclass(frozen=True)
class Env:
    name: str
    value: str | None
    #: ``metadata.annotations['x']`` for a fieldRef, ``secret``/``configMap``/... for other valueFrom
    source: str | None
    where: str
    #: the ``valueFrom`` kind (``fieldRef``, ``resourceFieldRef``, ``configMapKeyRef``, ``secretKeyRef``, ...);
    #: None for a literal value
    ref: str | None = None


@dataclass(frozen=True)
class Handler:
    """What a lifecycle hook or a probe makes the kubelet do for a container: an ``exec``
    command, or an ``httpGet`` request read as words (its URL, path and header values)."""

    #: e.g. ``spec.containers[0].lifecycle.postStart.exec`` or ``….readinessProbe.httpGet``
    where: str
    command: tuple[str, ...]


@dataclass(frozen=True)
class Mount:
    volume: str
    path: str
    read_only: bool
    where: str


@dataclass(frozen=True)
class Container:
    """One container of a pod spec (or KServe's container-shaped specs), as admission sees it."""

    where: str
    #: "app", "init" or "ephemeral"
    role: str
    name: str
    image: str | None
    command: tuple[str, ...]
    args: tuple[str, ...]
    env: tuple[Env, ...]
    env_from: bool
    mounts: tuple[Mount, ...]
    #: an init container's ``restartPolicy`` (``Always``: a native sidecar, running beside the app)
    restart_policy: str | None = None
    #: exec lifecycle hooks (postStart, preStop) and exec probes (liveness, readiness, startup)
    handlers: tuple[Handler, ...] = ()
    #: the container as written (its securityContext and ports, for the pod security checks)
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class PodSpec:
    """The parts of a pod spec that decide what runs and what it reads."""

    where: str
    containers: tuple[Container, ...]
    #: volume name -> its source kind (emptyDir, hostPath, persistentVolumeClaim, ...)
    volumes: Mapping[str, str]
    #: the pod's annotations (the template's, for a template)
    annotations: Mapping[str, str]
    #: the annotations paths are relative to (for reasons)
    annotations_where: str
    #: the pod's labels (the template's, for a template)
    labels: Mapping[str, str] = field(default_factory=dict)
    #: the pod spec as written (pod-level security fields, volume sources, service account)
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Owner:
    api_version: str
    kind: str
    name: str


@dataclass(frozen=True)
class Workload:
    """A covered object, parsed: its kind, name, controller, the pod specs it makes."""

    api_version: str
    kind: str
    name: str
    namespace: str | None
    #: the controlling ownerReference (who created it), if any
    owner: Owner | None
    annotations: Mapping[str, str]
    pod: PodSpec | None
    obj: Mapping[str, Any]


def _str_list(o: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    v = o.get(key)
    if v is None:
        return ()
    items = _typed(v, list, f"{where}.{key}", "a list of strings")
    for i, s in enumerate(items):
        _typed(s, str, f"{where}.{key}[{i}]", "a string")
    return tuple(items)


def _env(c: Mapping[str, Any], where: str) -> tuple[Env, ...]:
    out = []
    raw = c.get("env")
    for j, e in enumerate(_typed(raw, list, f"{where}.env", "a list") if raw is not None else []):
        w = f"{where}.env[{j}]"
        e = _typed(e, dict, w, "an object")
        name = _typed(e.get("name"), str, f"{w}.name", "a string")
        value = e.get("value")
        if value is not None:
            value = _typed(value, str, f"{w}.value", "a string")
        source: str | None = None
        ref: str | None = None
        vf = e.get("valueFrom")
        if vf is not None:
            vf = _typed(vf, dict, f"{w}.valueFrom", "an object")
            fr = vf.get("fieldRef")
            if isinstance(fr, dict) and isinstance(fr.get("fieldPath"), str):
                ref, source = "fieldRef", fr["fieldPath"]
            else:
                source = ref = str(next(iter(vf), "valueFrom"))
        out.append(Env(name, value, source, w, ref))
    return tuple(out)


def _percent_decoded(text: str) -> str:
    """``text`` %-decoded until it no longer changes (at most a few rounds)."""
    for _ in range(4):
        decoded = unquote(text)
        if decoded == text:
            break
        text = decoded
    return text


def _handler_actions(raw: object, where: str) -> list[Handler]:
    """The hook's or probe's ``exec`` command, and what its ``httpGet`` asks for (a URL of
    the host, port and path, and its header values) as a command, so that both are held to
    the same location rules: a path such as ``/load?url=https://…`` is a remote location."""
    h = _typed(raw, dict, where, "an object")
    out: list[Handler] = []
    ex = h.get("exec")
    if ex is not None:
        ex = _typed(ex, dict, f"{where}.exec", "an object")
        out.append(Handler(f"{where}.exec", _str_list(ex, "command", f"{where}.exec")))
    get = h.get("httpGet")
    if get is not None:
        get = _typed(get, dict, f"{where}.httpGet", "an object")
        host = get.get("host")
        path = get.get("path")
        words = [f"http://{host}/" if isinstance(host, str) and host else "", path if isinstance(path, str) else ""]
        for i, hdr in enumerate(_typed(get.get("httpHeaders") or [], list, f"{where}.httpGet.httpHeaders", "a list")):
            value = _typed(hdr, dict, f"{where}.httpGet.httpHeaders[{i}]", "an object").get("value")
            words.append(value if isinstance(value, str) else "")
        # as the server reads them: a query's %-encoded URL is a URL once decoded
        words += [d for w in words if (d := _percent_decoded(w)) != w]
        out.append(Handler(f"{where}.httpGet", tuple(w for w in words if w)))
    return out


def _handlers(c: Mapping[str, Any], where: str) -> tuple[Handler, ...]:
    """Every hook and probe action of the container: what the kubelet runs in it or asks of it
    besides its command."""
    out: list[Handler] = []
    lifecycle = _opt_obj(c, "lifecycle", where)
    for hook in ("postStart", "preStop"):
        if lifecycle.get(hook) is not None:
            out.extend(_handler_actions(lifecycle[hook], f"{where}.lifecycle.{hook}"))
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        if c.get(probe) is not None:
            out.extend(_handler_actions(c[probe], f"{where}.{probe}"))
    return tuple(out)


def _mounts(c: Mapping[str, Any], where: str) -> tuple[Mount, ...]:
    out = []
    raw = c.get("volumeMounts")
    for j, m in enumerate(_typed(raw, list, f"{where}.volumeMounts", "a list") if raw is not None else []):
        w = f"{where}.volumeMounts[{j}]"
        m = _typed(m, dict, w, "an object")
        name = _typed(m.get("name"), str, f"{w}.name", "a string")
        path = _typed(m.get("mountPath"), str, f"{w}.mountPath", "a string")
        sub = m.get("subPath") or m.get("subPathExpr")
        ro = m.get("readOnly") is True
        out.append(Mount(name + (f"/{sub}" if isinstance(sub, str) and sub else ""), path, ro, w))
    return tuple(out)


def container(raw: object, where: str, role: str) -> Container:
    """Parse one container (or a KServe spec that inlines a container) at `where`."""
    c: dict[str, Any] = _typed(raw, dict, where, "an object")
    name = c.get("name") or ""
    image = c.get("image")
    if image is not None:
        image = _typed(image, str, f"{where}.image", "a string")
    return Container(where, role, _typed(name, str, f"{where}.name", "a string"), image,
                     _str_list(c, "command", where), _str_list(c, "args", where), _env(c, where),
                     bool(c.get("envFrom")), _mounts(c, where),
                     str(c["restartPolicy"]) if c.get("restartPolicy") is not None else None,
                     _handlers(c, where), c)


def containers_of(spec: Mapping[str, Any], where: str) -> tuple[Container, ...]:
    out: list[Container] = []
    for key, role in (("initContainers", "init"), ("containers", "app"), ("ephemeralContainers", "ephemeral")):
        raw = spec.get(key)
        if raw is None:
            continue
        for i, c in enumerate(_typed(raw, list, f"{where}.{key}", "a list")):
            out.append(container(c, f"{where}.{key}[{i}]", role))
    return tuple(out)


def volumes_of(spec: Mapping[str, Any], where: str) -> dict[str, str]:
    """Volume name -> its source kind (``emptyDir``, ``configMap``, ...; ``unknown`` when not exactly one)."""
    out: dict[str, str] = {}
    for name, v in volume_sources_of(spec, where).items():
        kinds = [k for k in v if k != "name"]
        out[name] = kinds[0] if len(kinds) == 1 else "unknown"
    return out


def volume_sources_of(spec: Mapping[str, Any], where: str) -> dict[str, dict[str, Any]]:
    """Volume name -> the volume as written (its source: a projected volume's sources, a
    downward-API volume's items)."""
    out: dict[str, dict[str, Any]] = {}
    raw = spec.get("volumes")
    for i, v in enumerate(_typed(raw, list, f"{where}.volumes", "a list") if raw is not None else []):
        v = _typed(v, dict, f"{where}.volumes[{i}]", "an object")
        name = _typed(v.get("name"), str, f"{where}.volumes[{i}].name", "a string")
        out[name] = v
    return out


def _string_map(meta: Mapping[str, Any], key: str, where: str) -> dict[str, str]:
    raw = _opt_obj(meta, key, where)
    for k, v in raw.items():
        _typed(v, str, f"{where}.{key}[{k}]", "a string")
    return raw


def pod_spec(obj: Mapping[str, Any], api_version: str, kind: str) -> PodSpec:
    """The pod spec a pod-creating kind runs, found at its kind's template path."""
    path = POD_SPEC_PATHS[(api_version, kind)]
    node: Mapping[str, Any] = obj
    walked: list[str] = []
    for key in path:
        walked.append(key)
        node = _typed(node.get(key), dict, ".".join(walked), "an object")
    where = ".".join(path)
    meta_where = "metadata" if kind == "Pod" else ".".join([*path[:-1], "metadata"])
    if kind == "Pod":
        meta: Mapping[str, Any] = obj.get("metadata") or {}
    else:
        parent: Mapping[str, Any] = obj
        for key in path[:-1]:
            parent = parent[key]
        meta = _opt_obj(parent, "metadata", ".".join(path[:-1]))
    return PodSpec(where, containers_of(node, where), volumes_of(node, where),
                   _string_map(meta, "annotations", meta_where), f"{meta_where}.annotations",
                   _string_map(meta, "labels", meta_where), node)


def _owner(meta: Mapping[str, Any]) -> Owner | None:
    raw = meta.get("ownerReferences")
    if raw is None:
        return None
    for i, ref in enumerate(_typed(raw, list, "metadata.ownerReferences", "a list")):
        ref = _typed(ref, dict, f"metadata.ownerReferences[{i}]", "an object")
        if ref.get("controller") is True:
            return Owner(str(ref.get("apiVersion", "")), str(ref.get("kind", "")), str(ref.get("name", "")))
    return None


def workload(manifest_obj: object) -> Workload:
    """Parse any covered object; raises ManifestError for a kind admission does not cover."""
    obj: dict[str, Any] = _typed(manifest_obj, dict, "the manifest", "a JSON/YAML object")
    kind = obj.get("kind")
    api = obj.get("apiVersion")
    if not isinstance(kind, str) or not isinstance(api, str):
        raise ManifestError("the manifest's apiVersion and kind must be strings")
    meta = _typed(obj.get("metadata"), dict, "metadata", "an object")
    name = meta.get("name") or meta.get("generateName") or "<unnamed>"
    name = _typed(name, str, "metadata.name", "a string")[:253]
    ns = meta.get("namespace")
    if ns is not None:
        ns = _typed(ns, str, "metadata.namespace", "a string")[:63]
    annotations = _string_map(meta, "annotations", "metadata")
    owner = _owner(meta)
    if (api, kind) in POD_SPEC_PATHS:
        return Workload(api, kind, name, ns, owner, annotations, pod_spec(obj, api, kind), obj)
    if kind in KSERVE_KINDS:
        if api != KSERVE_KINDS[kind]:
            raise ManifestError(f"{kind} apiVersion {api[:80]!r} is not supported; use {KSERVE_KINDS[kind]}")
        return Workload(api, kind, name, ns, owner, annotations, None, obj)
    covered = sorted({k for _, k in POD_SPEC_PATHS} | set(KSERVE_KINDS))
    raise ManifestError(
        f"kind {kind[:80]!r} ({api[:80]}) is not handled by mlseal admission (covered: {', '.join(covered)}); "
        "remove it from the webhook's rules"
    )
