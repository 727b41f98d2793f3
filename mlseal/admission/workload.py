"""Whole-workload policy: what a covered object will run, checked before its model is.

A manifest's annotations are a claim; what runs is its containers. For every covered
kind this module finds the containers, the images they run, where the model comes from
and where the server reads it, and returns the findings that deny it plus the model
(digest and URI) the ledger check (`mlseal.admission.engine.check_model`) then decides:

- **Pods and every pod-creating kind** (ReplicationController, Deployment, ReplicaSet,
  StatefulSet, DaemonSet, Job, CronJob — one pod template path per kind, as Kyverno's
  autogen): the model comes through exactly one verifying loader (`mlseal fetch`, an init
  container: the policy's ``loader.image``, command ``[mlseal, fetch]``, args
  ``[SRC, DEST, flags]``, the digest in ``MLSEAL_MODEL_SHA256``) into an ``emptyDir`` that
  every other container mounts read-only; every image is digest-pinned and allowed; no
  container overrides the model's location (``STORAGE_URI``/``MLSEAL_*`` variables,
  ``envFrom``, remote URIs in command, args or variables, another volume over the model
  mount); no init container besides the loader (and ``init_images``), no ephemeral one.
  The Pod is the final gate: a template KServe's controllers made (controlled by an
  InferenceService, a Knative Revision or, for a ReplicaSet, a Deployment) may leave the
  loader to KServe's pod mutator (the pod template's
  ``serving.kserve.io/storage-initializer-sourceuri``); an owner reference never relaxes
  anything at the Pod.
- **InferenceService**: the predictor's storageUri (existing rules) with no container,
  init container, ``runtimeVersion``, runtime, location override or mount over
  ``/mnt/models`` the policy does not allow; transformers and explainers by policy.
- **TrainedModel**: denied unless ``trained_models: check`` (KServe's model agent loads
  it, not the verifying loader); then its digest and storageUri are checked.
- **ServingRuntime / ClusterServingRuntime**: named in ``runtimes`` (when set), images
  pinned and allowed, no location override.

    >>> from mlseal.admission.policy import Rules
    >>> pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
    ...        "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}
    >>> [f.code.value for f in check_workload(pod, Rules())[0]]
    ['image_unpinned', 'no_model']
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from mlseal._uris import redact_uri
from mlseal.admission.decision import Finding, Reason
from mlseal.admission.manifest import (
    _PREDICTOR_NON_MODEL,
    KSERVE_LOADER_NAME,
    KSERVE_MODEL_DIR,
    KSERVE_SOURCE_ANNOTATION,
    LOADER_COMMAND,
    LOADER_POLICY_ENV,
    LOADER_SHA_ENV,
    SHA_ANNOTATION,
    URI_ANNOTATION,
    Container,
    ManifestError,
    ModelRef,
    PodSpec,
    Workload,
    _digest,
    _typed,
    container,
    containers_of,
    model_ref,
    volumes_of,
    workload,
)
from mlseal.admission.policy import Allow, ImageRule, Rules, TrainedModels, Unannotated, split_image

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_URI = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*)://([^\s\"',;]*)")
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
#: controllers whose pod templates KServe's pod mutator completes with the loader
_KSERVE_OWNERS = frozenset({
    ("serving.kserve.io/v1beta1", "InferenceService"), ("serving.knative.dev/v1", "Revision"),
})
#: loader flags (contract with `mlseal fetch`): flag -> takes a value
_LOADER_FLAGS = {"--sha256": True, "--policy": True, "--bundle": True, "--ledger": True, "--record": False,
                 "--json": False}
_SHA_FIELD = f"metadata.annotations['{SHA_ANNOTATION}']"
_SHA_FIELD_ALT = f'metadata.annotations["{SHA_ANNOTATION}"]'
#: volume sources a model-serving pod may have: none of them can be filled with a model from
#: outside the pod before it starts (configMap/secret objects are capped at 1 MiB)
VOLUME_KINDS = frozenset({"emptyDir", "configMap", "secret", "projected", "downwardAPI"})
#: predictor/transformer/explainer keys that are pod-spec fields, not a framework spec
_POD_KEYS = frozenset({"containers", "initContainers", "ephemeralContainers", "volumes", "workerSpec"})


class WorkloadDenied(ManifestError):
    """The workload fails the whole-workload policy (`findings` say why, each with a fix)."""

    def __init__(self, findings: list[Finding]) -> None:
        super().__init__("; ".join(f.message for f in findings))
        self.findings = findings


def workload_model(manifest_obj: object, rules: Rules) -> ModelRef | None:
    """The model to check against the ledger, after the whole-workload checks pass.

    None: the object serves no model and the rules admit that. Raises WorkloadDenied
    (a ManifestError) with every finding otherwise. The webhook calls this where it
    used to call `model_ref`.
    """
    findings, ref = check_workload(manifest_obj, rules)
    if findings:
        raise WorkloadDenied(findings)
    return ref


def check_workload(manifest_obj: object, rules: Rules) -> tuple[list[Finding], ModelRef | None]:
    """(findings, model) for any covered object; malformed input is one MALFORMED finding."""
    try:
        w = workload(manifest_obj)
        if w.pod is not None:
            return _check_pod_workload(w, rules)
        if w.kind == "InferenceService":
            return _check_inference_service(w, rules)
        if w.kind == "TrainedModel":
            return _check_trained_model(w, rules)
        return _check_runtime(w, rules), None
    except ManifestError as exc:
        return [Finding(Reason.MALFORMED, str(exc))], None


# --- images and containers ---------------------------------------------------------------

def image_finding(c: Container, allowed: Iterable[ImageRule], what: str = "images") -> Finding | None:
    """Why `c`'s image may not run, or None: it must be repo@sha256:<64 hex> and allowed."""
    if c.image is None:
        return None
    repo, digest = split_image(c.image)
    if digest is None or not _DIGEST.fullmatch(digest):
        return Finding(Reason.IMAGE_UNPINNED, (
            f"{c.where}.image {c.image[:200]!r} is not pinned by digest, so what runs can change under the same "
            "name; write it as repo@sha256:<digest> (`crane digest IMAGE`)"
        ))
    rules = list(allowed)
    if any(r.allows(repo, digest) for r in rules):
        return None
    listed = ", ".join(r.describe() for r in rules[:5]) or "none"
    return Finding(Reason.IMAGE_NOT_ALLOWED, (
        f"{c.where}.image {c.image[:200]!r} is not allowed by the policy's {what} (allowed: {listed}); "
        f"run an allowed image, or add {repo}@{digest} to {what} in the policy"
    ))


def _remote_uri(text: str) -> str | None:
    for m in _URI.finditer(text):
        host = urlsplit(m.group(0)).hostname if m.group(1).lower() in ("http", "https") else None
        if host is not None and host in _LOOPBACK:
            continue
        return m.group(0)
    return None


def override_findings(c: Container, *, storage_uri_ok: bool = False) -> list[Finding]:
    """A container that could point its server at another model than the loader's."""
    out: list[Finding] = []
    if c.env_from:
        out.append(Finding(Reason.MODEL_OVERRIDE, (
            f"{c.where}.envFrom can set any variable, including the model's location (STORAGE_URI); "
            "list the variables by name in env instead"
        )))
    for e in c.env:
        if e.name == "STORAGE_URI" and not storage_uri_ok:
            out.append(Finding(Reason.MODEL_OVERRIDE, (
                f"{e.where} sets STORAGE_URI ({redact_uri(e.value) if e.value else e.source}), overriding where the "
                "model is loaded from; remove it: the model comes only from the verified storageUri"
            )))
        elif e.name.startswith("MLSEAL_"):
            out.append(Finding(Reason.MODEL_OVERRIDE, (
                f"{e.where} sets {e.name} in a container that is not the verifying loader; remove it"
            )))
        elif e.value is not None and (e.name != "STORAGE_URI") and (uri := _remote_uri(e.value)):
            out.append(Finding(Reason.MODEL_OVERRIDE, (
                f"{e.where} ({e.name}) names the remote location {redact_uri(uri)!r}, which could serve another "
                "model than the verified one; remove it (servers read the model from the loader's volume)"
            )))
    for key, items in (("command", c.command), ("args", c.args)):
        for i, a in enumerate(items):
            uri = _remote_uri(a)
            if uri:
                out.append(Finding(Reason.MODEL_OVERRIDE, (
                    f"{c.where}.{key}[{i}] names the remote location {redact_uri(uri)!r}, which could serve another "
                    "model than the verified one; remove it (servers read the model from the loader's volume)"
                )))
    return out


def volume_findings(volumes: Mapping[str, str], where: str) -> list[Finding]:
    """Volumes that could hand a server bytes the loader never verified (a node path, a claim, an image)."""
    return [Finding(Reason.MODEL_VOLUME, (
        f"{where}.volumes[{name}] is a {kind} volume, which can hold a model the loader never verified; "
        f"serve the model from the loader's emptyDir and use only {', '.join(sorted(VOLUME_KINDS))} volumes"
    )) for name, kind in volumes.items() if kind not in VOLUME_KINDS]


def _overlaps(a: str, b: str) -> bool:
    a, b = posixpath.normpath(a), posixpath.normpath(b)
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")


def _volume(m_volume: str) -> str:
    return m_volume.split("/", 1)[0]


# --- pods and pod templates ---------------------------------------------------------------

def _is_loader(c: Container, rules: Rules) -> bool:
    return (c.command[:2] == LOADER_COMMAND or c.name == KSERVE_LOADER_NAME
            or (rules.loader is not None and c.image == rules.loader.image))


def _check_pod_workload(w: Workload, rules: Rules) -> tuple[list[Finding], ModelRef | None]:
    pod = w.pod
    assert pod is not None
    out: list[Finding] = []
    loaders = [c for c in pod.containers if _is_loader(c, rules) and c.role != "ephemeral"]
    for c in pod.containers:
        if c.role == "ephemeral":
            out.append(Finding(Reason.EXTRA_CONTAINER, (
                f"{c.where} ({c.name}) is an ephemeral container: it could read or replace the verified model in "
                "a running pod; debug a copy of the pod instead (`kubectl debug --copy-to`) in a namespace "
                "mlseal does not judge"
            )))
            continue
        if c in loaders:
            continue
        if c.role == "init" and not (rules.init_images and image_finding(c, rules.init_images, "init_images") is None):
            out.append(Finding(Reason.EXTRA_CONTAINER, (
                f"{c.where} ({c.name}, image {str(c.image)[:200]!r}) is an init container other than the verifying "
                "loader: it runs before the server and could replace the model; remove it, or list its "
                "digest-pinned image in the policy's init_images"
            )))
        elif c.role == "app":
            f = image_finding(c, rules.images)
            if f is not None:
                out.append(f)
        out.extend(override_findings(c))
    sha_ann = _pod_sha_annotation(w, pod)
    if len(loaders) > 1:
        shown = ", ".join(f"{c.where} ({c.name})" for c in loaders)
        out.append(Finding(Reason.BAD_LOADER, (
            f"the pod runs more than one model loader ({shown}); load one model through one loader"
        )))
        return out, None
    if not loaders:
        return _no_loader(w, pod, rules, sha_ann, out)
    ref = _check_loader(w, pod, loaders[0], rules, sha_ann, out)
    return out, ref


def _pod_sha_annotation(w: Workload, pod: PodSpec) -> tuple[str, str] | None:
    """(value, field path) of the digest annotation on the pod (template) or the object."""
    found = [(v, f"{where}[{SHA_ANNOTATION}]") for v, where in (
        (pod.annotations.get(SHA_ANNOTATION), pod.annotations_where),
        (w.annotations.get(SHA_ANNOTATION) if w.kind != "Pod" else None, "metadata.annotations"),
    ) if v is not None]
    if len({v for v, _ in found}) > 1:
        raise ManifestError(
            f"{found[0][1]} ({found[0][0][:80]!r}) and {found[1][1]} ({found[1][0][:80]!r}) differ; set the "
            "model digest once"
        )
    return found[0] if found else None


def _no_loader(w: Workload, pod: PodSpec, rules: Rules, sha_ann: tuple[str, str] | None,
               out: list[Finding]) -> tuple[list[Finding], ModelRef | None]:
    source = pod.annotations.get(KSERVE_SOURCE_ANNOTATION)
    owner = (w.owner.api_version, w.owner.kind) if w.owner else None
    deferred = w.kind != "Pod" and source is not None and (
        owner in _KSERVE_OWNERS or (w.kind == "ReplicaSet" and owner == ("apps/v1", "Deployment")))
    if deferred and sha_ann is not None:
        assert source is not None
        # KServe's pod mutator adds the loader to each pod; the Pod gate checks it there
        for c in pod.containers:
            for m in c.mounts:
                if _overlaps(m.path, KSERVE_MODEL_DIR):
                    out.append(Finding(Reason.MODEL_VOLUME, (
                        f"{m.where} mounts volume {m.volume!r} at {m.path}, over the model KServe's loader writes "
                        f"to {KSERVE_MODEL_DIR}; remove the mount"
                    )))
        out.extend(volume_findings(pod.volumes, pod.where))
        sha = _digest(*sha_ann)
        return out, ModelRef(w.kind, w.name, w.namespace, sha, source,
                             f"{pod.annotations_where}[{KSERVE_SOURCE_ANNOTATION}]")
    named = sha_ann or (pod.annotations.get(URI_ANNOTATION) or w.annotations.get(URI_ANNOTATION) or source)
    if named:
        image = rules.loader.image if rules.loader else "<the policy's loader.image>"
        fix = ("KServe's storage initializer must be the mlseal loader (its ClusterStorageContainer)"
               if source is not None else
               f"add an init container running the loader: image {image}, command [mlseal, fetch], args "
               "[MODEL_URI, /mnt/models], env MLSEAL_MODEL_SHA256, writing an emptyDir the server mounts read-only")
        out.append(Finding(Reason.NO_LOADER, (
            f"{w.kind} {w.name} names a model but {pod.where} does not load it through the verifying loader "
            f"(no init container runs `mlseal fetch`), so nothing checks the bytes the server reads; {fix}"
        )))
        return out, None
    if rules.unannotated_workloads is Unannotated.DENY:
        out.append(Finding(Reason.NO_MODEL, (
            f"{w.kind} {w.name} names no model (no verifying loader, no {SHA_ANNOTATION} annotation) and this "
            "namespace admits model workloads only; load the model through the verifying loader, or set "
            "unannotated_workloads: allow for a namespace that serves no models"
        )))
    return out, None


def _check_loader(w: Workload, pod: PodSpec, ld: Container, rules: Rules, sha_ann: tuple[str, str] | None,
                  out: list[Finding]) -> ModelRef | None:
    want = rules.loader
    if want is None:
        out.append(Finding(Reason.BAD_LOADER, (
            f"{ld.where} is a model loader but the policy names no loader image, so it cannot be told from an "
            "impostor; set loader: {image: REPO@sha256:DIGEST} in the policy"
        )))
    elif ld.image != want.image:
        out.append(Finding(Reason.BAD_LOADER, (
            f"{ld.where}.image {str(ld.image)[:200]!r} is not the verifying loader the policy names "
            f"({want.image}); use that image"
        )))
    if ld.role != "init" or ld.restart_policy == "Always":
        out.append(Finding(Reason.BAD_LOADER, (
            f"{ld.where} runs the loader beside the server (a regular container or an init container with "
            "restartPolicy: Always), so the server may start before the model is verified; make it a plain init "
            "container"
        )))
    if ld.command != LOADER_COMMAND:
        out.append(Finding(Reason.BAD_LOADER, (
            f"{ld.where}.command is {list(ld.command)!r}; the loader runs exactly [mlseal, fetch] with the model "
            "in args"
        )))
    if ld.env_from:
        out.append(Finding(Reason.BAD_LOADER, f"{ld.where}.envFrom could change the loader's settings; list "
                                              "the variables by name in env"))
    if len(ld.args) < 2 or ld.args[0].startswith("-") or ld.args[1].startswith("-"):
        out.append(Finding(Reason.BAD_LOADER, (
            f"{ld.where}.args is {[redact_uri(a) for a in ld.args[:4]]!r}; the loader takes "
            "[MODEL_URI, DEST_DIR, flags...]"
        )))
        return None
    src, dest = ld.args[0], ld.args[1]
    digests: list[tuple[str, str]] = []
    if sha_ann is not None:
        digests.append(sha_ann)
    flags = list(ld.args[2:])
    i = 0
    while i < len(flags):
        flag, eq, val = flags[i].partition("=")
        where = f"{ld.where}.args[{i + 2}]"
        if flag not in _LOADER_FLAGS:
            out.append(Finding(Reason.BAD_LOADER, (
                f"{where} {flags[i][:80]!r} is not a loader flag mlseal admits ({', '.join(_LOADER_FLAGS)}); "
                "remove it"
            )))
        elif _LOADER_FLAGS[flag]:
            if not eq:
                i += 1
                val = flags[i] if i < len(flags) else ""
            if flag == "--sha256":
                digests.append((val, where))
            elif flag == "--policy" and want is not None and val != want.policy:
                out.append(Finding(Reason.BAD_LOADER, (
                    f"{where} points the loader at policy {val[:200]!r}, not the admission policy "
                    f"{want.policy}; remove --policy"
                )))
        i += 1
    for e in ld.env:
        if e.name == LOADER_SHA_ENV:
            if e.value is not None:
                digests.append((e.value, e.where))
            elif e.source in (_SHA_FIELD, _SHA_FIELD_ALT):
                if pod.annotations.get(SHA_ANNOTATION) is None:
                    out.append(Finding(Reason.NO_MODEL, (
                        f"{e.where} reads the digest from {_SHA_FIELD}, which {pod.annotations_where} does not "
                        "have; annotate the pod (its template), not only the object"
                    )))
            else:
                out.append(Finding(Reason.BAD_LOADER, (
                    f"{e.where} takes the model digest from {e.source}, which admission cannot see; set it as a "
                    f"literal value or from {_SHA_FIELD}"
                )))
        elif e.name == LOADER_POLICY_ENV and want is not None and e.value != want.policy:
            out.append(Finding(Reason.BAD_LOADER, (
                f"{e.where} points the loader at policy {str(e.value or e.source)[:200]!r}, not the admission "
                f"policy {want.policy}; remove it or set it to {want.policy}"
            )))
    if not digests:
        out.append(Finding(Reason.NO_MODEL, (
            f"{ld.where} is given no model digest; set env {LOADER_SHA_ENV} (or the pod annotation "
            f"{SHA_ANNOTATION}) to the model's sha256 (`mlseal digest MODEL`)"
        )))
        return None
    shas = [(_digest(v, where), where) for v, where in digests]
    if len({s for s, _ in shas}) > 1:
        shown = ", ".join(f"{where}={s[:16]}…" for s, where in shas)
        out.append(Finding(Reason.MALFORMED, (
            f"the pod names more than one model digest ({shown}); make them the same model"
        )))
        return None
    uri_ann = pod.annotations.get(URI_ANNOTATION) or w.annotations.get(URI_ANNOTATION)
    if uri_ann is not None and uri_ann.rstrip("/") != src.rstrip("/"):
        out.append(Finding(Reason.URI_MISMATCH, (
            f"annotation {URI_ANNOTATION} {redact_uri(uri_ann)!r} differs from what the loader fetches "
            f"({ld.where}.args[0] {redact_uri(src)!r}); make them name the same model"
        )))
    _check_model_volume(pod, ld, dest, out)
    out.extend(volume_findings(pod.volumes, pod.where))
    return ModelRef(w.kind, w.name, w.namespace, shas[0][0], src, f"{ld.where}.args[0]")


def _check_model_volume(pod: PodSpec, ld: Container, dest: str, out: list[Finding]) -> None:
    """The loader writes DEST on an emptyDir that the other containers only read."""
    if not dest.startswith("/"):
        out.append(Finding(Reason.BAD_LOADER, f"{ld.where}.args[1] {dest[:200]!r} must be an absolute path"))
        return
    d = posixpath.normpath(dest)
    mine = [m for m in ld.mounts
            if d == posixpath.normpath(m.path) or d.startswith(posixpath.normpath(m.path).rstrip("/") + "/")]
    if not mine:
        out.append(Finding(Reason.MODEL_VOLUME, (
            f"{ld.where} writes the model to {dest} but mounts no volume there, so no server can read it; mount "
            "an emptyDir volume at that path"
        )))
        return
    mount = max(mine, key=lambda m: len(m.path))
    vol = _volume(mount.volume)
    kind = pod.volumes.get(vol)
    if kind != "emptyDir":
        out.append(Finding(Reason.MODEL_VOLUME, (
            f"{mount.where} puts the model on volume {vol!r} ({kind or 'not declared in volumes'}), which can hold "
            "bytes the loader never verified or outlive the pod; use an emptyDir volume"
        )))
    readers = 0
    for c in pod.containers:
        if c is ld or c.role == "ephemeral":
            continue
        model_paths = [m.path for m in c.mounts if _volume(m.volume) == vol]
        for m in c.mounts:
            if _volume(m.volume) == vol:
                if c.role == "app":
                    readers += 1
                if not m.read_only:
                    out.append(Finding(Reason.MODEL_VOLUME, (
                        f"{m.where} mounts the model volume {vol!r} writable in {c.name}, which could replace the "
                        "verified model; set readOnly: true"
                    )))
            elif any(_overlaps(m.path, p) for p in [*model_paths, dest]):
                out.append(Finding(Reason.MODEL_VOLUME, (
                    f"{m.where} mounts volume {m.volume!r} at {m.path}, over the verified model's path; remove the "
                    "mount (the model is read from the loader's volume only)"
                )))
    if readers == 0:
        out.append(Finding(Reason.MODEL_VOLUME, (
            f"no container mounts the model volume {vol!r} the loader fills, so the server does not serve the "
            "verified model; mount it read-only in the server container"
        )))


# --- KServe ------------------------------------------------------------------------------

def _check_component_spec(spec: Mapping[str, Any], where: str, rules: Rules, *,
                          storage_uri_ok: bool) -> list[Finding]:
    """A predictor/transformer/explainer: its pod-spec containers and inlined framework containers."""
    out: list[Finding] = volume_findings(volumes_of(spec, where), where)
    for c in containers_of(spec, where):
        if c.role != "app":
            out.append(Finding(Reason.EXTRA_CONTAINER, (
                f"{c.where} ({c.name}) is an {'init' if c.role == 'init' else 'ephemeral'} container; KServe injects "
                "the verifying loader itself, and any other container before or beside it could replace the "
                "model; remove it"
            )))
            continue
        out.extend(_kserve_container(c, rules, storage_uri_ok=storage_uri_ok))
    worker = spec.get("workerSpec")
    if isinstance(worker, dict):
        for c in containers_of(worker, f"{where}.workerSpec"):
            out.extend(_kserve_container(c, rules, storage_uri_ok=False))
    for key, sub in spec.items():
        if key in _POD_KEYS or key in _PREDICTOR_NON_MODEL or not isinstance(sub, dict):
            continue
        if not any(k in sub for k in ("storageUri", "image", "args", "command", "env", "runtime", "modelFormat",
                                      "runtimeVersion", "volumeMounts", "envFrom", "storage")):
            continue
        c = container({**sub, "name": sub.get("name", key)}, f"{where}.{key}", "app")
        out.extend(_kserve_container(c, rules, storage_uri_ok=False))
        if sub.get("runtimeVersion") is not None:
            out.append(Finding(Reason.IMAGE_UNPINNED, (
                f"{where}.{key}.runtimeVersion {str(sub['runtimeVersion'])[:80]!r} replaces the serving runtime's "
                "pinned image by a tag; remove it"
            )))
        runtime = sub.get("runtime")
        if runtime is not None and rules.runtimes is not None and runtime not in rules.runtimes:
            out.append(Finding(Reason.RUNTIME_NOT_ALLOWED, (
                f"{where}.{key}.runtime {str(runtime)[:80]!r} is not a serving runtime the policy allows "
                f"({', '.join(sorted(rules.runtimes)) or 'none'}); use one of them, or add it to runtimes"
            )))
        if key == "model" and rules.runtimes is not None and runtime is None:
            out.append(Finding(Reason.RUNTIME_NOT_ALLOWED, (
                f"{where}.model names no runtime, so KServe would pick any runtime supporting the model format; "
                f"set {where}.model.runtime to one the policy allows ({', '.join(sorted(rules.runtimes))})"
            )))
    return out


def _kserve_container(c: Container, rules: Rules, *, storage_uri_ok: bool) -> list[Finding]:
    out: list[Finding] = []
    f = image_finding(c, rules.images)
    if f is not None:
        out.append(f)
    out.extend(override_findings(c, storage_uri_ok=storage_uri_ok))
    for m in c.mounts:
        if _overlaps(m.path, KSERVE_MODEL_DIR):
            out.append(Finding(Reason.MODEL_VOLUME, (
                f"{m.where} mounts volume {m.volume!r} at {m.path}, over the model KServe's loader writes to "
                f"{KSERVE_MODEL_DIR}; remove the mount"
            )))
    return out


def _check_inference_service(w: Workload, rules: Rules) -> tuple[list[Finding], ModelRef | None]:
    ref = model_ref(w.obj)
    spec = _typed(w.obj.get("spec"), dict, "spec", "an object")
    predictor = _typed(spec.get("predictor"), dict, "spec.predictor", "an object")
    framework = any(isinstance(v, dict) and "storageUri" in v for k, v in predictor.items() if k not in _POD_KEYS)
    out = _check_component_spec(predictor, "spec.predictor", rules, storage_uri_ok=not framework)
    for key, allow in (("transformer", rules.transformers), ("explainer", rules.explainers)):
        comp = spec.get(key)
        if comp is None:
            continue
        comp = _typed(comp, dict, f"spec.{key}", "an object")
        if allow is Allow.DENY:
            out.append(Finding(Reason.COMPONENT_NOT_ALLOWED, (
                f"spec.{key} runs a {key} in front of the model; this namespace's policy does not allow {key}s "
                f"({key}s: deny), so remove it or set {key}s: allow in the policy"
            )))
            continue
        out.extend(_check_component_spec(comp, f"spec.{key}", rules, storage_uri_ok=False))
        for sub, v in comp.items():
            if isinstance(v, dict) and ("storageUri" in v or "storage" in v):
                out.append(Finding(Reason.NO_LOADER, (
                    f"spec.{key}.{sub}.storageUri loads a second model that admission does not check; remove it"
                )))
    return out, ref


def _check_trained_model(w: Workload, rules: Rules) -> tuple[list[Finding], ModelRef | None]:
    spec = _typed(w.obj.get("spec"), dict, "spec", "an object")
    model = _typed(spec.get("model"), dict, "spec.model", "an object")
    uri = _typed(model.get("storageUri"), str, "spec.model.storageUri", "a string")
    if rules.trained_models is TrainedModels.DENY:
        return [Finding(Reason.COMPONENT_NOT_ALLOWED, (
            f"TrainedModel {w.name} (spec.model.storageUri {redact_uri(uri)!r}) is loaded by KServe's model agent, "
            "not by the verifying loader, so its bytes are never checked; serve the model from its own "
            "InferenceService, or set trained_models: check in the policy"
        ))], None
    raw = w.annotations.get(SHA_ANNOTATION)
    if raw is None:
        raise ManifestError(
            f"TrainedModel {w.name} has no {SHA_ANNOTATION} annotation: add the model's sha256 "
            f"(`mlseal digest MODEL`) as metadata.annotations[{SHA_ANNOTATION}]"
        )
    sha = _digest(raw, f"metadata.annotations[{SHA_ANNOTATION}]")
    return [], ModelRef(w.kind, w.name, w.namespace, sha, uri, "spec.model.storageUri")


def _check_runtime(w: Workload, rules: Rules) -> list[Finding]:
    out: list[Finding] = []
    if rules.runtimes is not None and w.name not in rules.runtimes:
        out.append(Finding(Reason.RUNTIME_NOT_ALLOWED, (
            f"{w.kind} {w.name} is not a serving runtime the policy allows "
            f"({', '.join(sorted(rules.runtimes)) or 'none'}); add {w.name!r} to runtimes in the policy"
        )))
    spec = _typed(w.obj.get("spec"), dict, "spec", "an object")
    out.extend(_check_component_spec(spec, "spec", rules, storage_uri_ok=False))
    return out
