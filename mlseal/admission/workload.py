"""Whole-workload policy: what a covered object will run, checked before its model is.

A manifest's annotations are a claim; what runs is its containers. For every covered
kind this module finds the containers, the images they run, where the model comes from
and where the server reads it, and returns the findings that deny it plus the model
(digest and URI) the ledger check (`mlseal.admission.engine.check_model`) then decides:

- **Pods and every pod-creating kind** (ReplicationController, Deployment, ReplicaSet,
  StatefulSet, DaemonSet, Job, CronJob — one pod template path per kind, as Kyverno's
  autogen): the model comes through exactly one verifying loader (`mlseal fetch`, an init
  container: the policy's ``loader.image``, command ``[mlseal, fetch]``, args
  ``[SRC, DEST, flags]``, the digest in ``MLSEAL_MODEL_SHA256``, only the variables the
  loader reads (`LOADER_ENV`), only read-only configuration and credential mounts under
  `LOADER_MOUNT_ROOTS` besides DEST) into an ``emptyDir`` that every other container
  mounts read-only; every image is digest-pinned and allowed; no container overrides the
  model's location (``STORAGE_URI``/``MLSEAL_*`` variables, ``envFrom``, remote locations
  in command, args, exec hooks and probes after Kubernetes' ``$(VAR)`` expansion, with or
  without a scheme, references to variables admission cannot see, another volume over the
  model mount); no container but the loader mounts a volume whose files a user writes
  (configMap, secret, annotations) unless the policy's ``volumes`` allows it; no init
  container besides the loader (and ``init_images``), no ephemeral one; nothing the
  Kubernetes Pod Security baseline standard forbids.
  The Pod is the final gate: a template KServe's controllers made (controlled by an
  InferenceService, a Knative Revision or, for a ReplicaSet, a Deployment) may leave the
  loader to KServe's pod mutator (the pod template's
  ``serving.kserve.io/storage-initializer-sourceuri``); an owner reference never relaxes
  anything at the Pod.
- **InferenceService**: the predictor's storageUri (existing rules) with no container,
  init container, ``runtimeVersion``, runtime, location override, volume, mount over
  ``/mnt/models`` or pod security setting the policy does not allow; transformers and
  explainers by policy.
- **TrainedModel**: denied unless ``trained_models: check`` (KServe's model agent loads
  it, not the verifying loader); then its digest and storageUri are checked.
- **ServingRuntime / ClusterServingRuntime**: named in ``runtimes`` (when set), images
  pinned and allowed, no location override, volume or pod security setting the policy
  does not allow.

    >>> from mlseal.admission.policy import Rules
    >>> pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
    ...        "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}
    >>> [f.code.value for f in check_workload(pod, Rules())[0]]
    ['image_unpinned', 'no_model']
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
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
    Env,
    ManifestError,
    ModelRef,
    Mount,
    PodSpec,
    Workload,
    _digest,
    _typed,
    container,
    containers_of,
    model_ref,
    volume_sources_of,
    volumes_of,
    workload,
)
from mlseal.admission.policy import Allow, ImageRule, Rules, TrainedModels, Unannotated, split_image

__all__ = [
    "LOADER_ENV",
    "LOADER_MOUNT_ROOTS",
    "VOLUME_KINDS",
    "WorkloadDenied",
    "check_workload",
    "image_finding",
    "kube_expand",
    "mount_findings",
    "override_findings",
    "pod_security_findings",
    "remote_location",
    "user_written_sources",
    "volume_findings",
    "workload_model",
]

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
#: a ``scheme://`` location; it starts where a run of scheme characters starts (not inside one,
#: which would rescan the run from every position)
_URI = re.compile(r"(?<![a-zA-Z0-9+.\-])([a-zA-Z][a-zA-Z0-9+.\-]*+)://([^\s\"',;]*+)")
#: a candidate location without a scheme: a host-like word, an optional port, then "/". It must
#: start a word: a name inside a path (``./model.savedmodel/1``, ``/mnt/a.b/c``) or a URI is not
#: one. Possessive, so that a long dotted word costs linear time; `_bare_host` judges the host.
_BARE = re.compile(r"(?<![A-Za-z0-9_.:/\-])([A-Za-z0-9.\-]++)(:\d{1,5})?+/[^\s\"',;)\]}>]*+")
_BARE_V6 = re.compile(r"\[([0-9A-Fa-f:.]{2,45})\](?::\d{1,5})?/[^\s\"',;)\]}>]*+")
#: what a shell would still expand or splice in the text (bounded, so linear on any input): an
#: unknown word where it stands, so that ``${X}.evil.example/m`` keeps its host
_SHELL_UNKNOWN = re.compile(r"\$\{[^}$]{0,256}\}|\$\([^)$]{0,256}\)|`[^`]{0,256}`|\$[A-Za-z_][A-Za-z0-9_]*+")
_SHELL_SPLICE = re.compile(r"''|\"\"|\\(?=[A-Za-z0-9.:/-])")
_HOST_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", re.IGNORECASE)
#: a top-level domain is letters (or an internationalised one, xn--…): ``model.v2/x`` is a path
_TOP_LABEL = re.compile(r"[a-z]{2,63}|xn--[a-z0-9-]{1,59}", re.IGNORECASE)
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
#: hosts a bare ``host:port/path`` may name without being a remote location: loopback, and the
#: unspecified address a server binds to
_LOCAL_HOSTS = _LOOPBACK | {"0.0.0.0"}  # noqa: S104 (an address compared against, never bound)
#: controllers whose pod templates KServe's pod mutator completes with the loader
_KSERVE_OWNERS = frozenset({
    ("serving.kserve.io/v1beta1", "InferenceService"), ("serving.knative.dev/v1", "Revision"),
})
#: loader flags (contract with `mlseal fetch`): flag -> takes a value
_LOADER_FLAGS = {"--sha256": True, "--policy": True, "--bundle": True, "--ledger": True, "--record": False,
                 "--json": False, "--metrics-file": True}
_SHA_FIELD = f"metadata.annotations['{SHA_ANNOTATION}']"
_SHA_FIELD_ALT = f'metadata.annotations["{SHA_ANNOTATION}"]'
#: volume sources a model-serving pod may declare: none of them can be filled with a model from
#: outside the pod before it starts except by a user writing an API object (configMap and
#: secret objects are capped at 1 MiB), and which container may mount which is judged per mount
VOLUME_KINDS = frozenset({"emptyDir", "configMap", "secret", "projected", "downwardAPI"})
#: the ConfigMap kube-controller-manager publishes in every namespace (the API server's CA),
#: which the ServiceAccount admission plugin projects into every pod
_KUBE_ROOT_CA = "kube-root-ca.crt"
#: predictor/transformer/explainer keys that are pod-spec fields, not a framework spec
_POD_KEYS = frozenset({"containers", "initContainers", "ephemeralContainers", "volumes", "workerSpec"})

#: What the loader reads from its environment, and nothing else (contract with `mlseal fetch`:
#: mlseal/_cli/fetch.py, mlseal/fetch/, mlseal/stage.py's signer, mlseal/secrets' Vault
#: settings) plus what the storage libraries it uses read for credentials and endpoints
#: (botocore through s3fs, google-auth through gcsfs, proxies). A variable outside this
#: list could change which code the loader runs: PATH, PYTHONPATH/PYTHONSTARTUP, LD_PRELOAD,
#: HOME (``~/.aws/config``), AWS_CONFIG_FILE/AWS_SHARED_CREDENTIALS_FILE (a
#: ``credential_process`` command), GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES.
LOADER_ENV = frozenset({
    # mlseal fetch and its --record (the loader's own key, Vault Transit, the ledger to append to)
    LOADER_SHA_ENV, LOADER_POLICY_ENV, "MLSEAL_LEDGER", "MLSEAL_WORKLOAD", "MLSEAL_SIGNING_KEY",
    "MLSEAL_SIGNER_NAME", "MLSEAL_IMAGE", "MLSEAL_PVC_ROOT", "MLSEAL_CHECKPOINT", "MLSEAL_VAULT_TRANSIT_KEY",
    "MLSEAL_VAULT_TRANSIT_MOUNT", "MLSEAL_VAULT_KV_MOUNT", "MLSEAL_VAULT_K8S_ROLE", "MLSEAL_VAULT_K8S_JWT",
    "MLSEAL_VAULT_K8S_MOUNT", "MLSEAL_VAULT_APPROLE_MOUNT",
    # the run's metrics file and its log format (docs/fetch.md, "Logs and metrics")
    "MLSEAL_METRICS_FILE", "MLSEAL_LOG_FORMAT",
    "VAULT_ADDR", "VAULT_CACERT", "VAULT_NAMESPACE", "VAULT_TOKEN", "VAULT_ROLE_ID", "VAULT_SECRET_ID",
    # where the model is served (downward API)
    "POD_NAMESPACE", "POD_NAME", "NODE_NAME", "POD_UID",
    # s3:// through s3fs/botocore: static keys, web identity (IRSA), EKS Pod Identity, endpoint, region
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_STS", "AWS_ROLE_ARN", "AWS_ROLE_SESSION_NAME",
    "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_STS_REGIONAL_ENDPOINTS", "AWS_CA_BUNDLE", "AWS_MAX_ATTEMPTS",
    "AWS_RETRY_MODE", "AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT", "AWS_EC2_METADATA_DISABLED",
    "AWS_METADATA_SERVICE_TIMEOUT", "AWS_METADATA_SERVICE_NUM_ATTEMPTS", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    # KServe's S3 credential builder (pkg/credentials/s3; mlseal reads the first two, the others are harmless)
    "S3_ENDPOINT", "S3_USE_HTTPS", "S3_VERIFY_SSL", "S3_USER_VIRTUAL_BUCKET", "S3_USE_ACCELERATE",
    "awsAnonymousCredential", "AWS_CA_BUNDLE_CONFIGMAP",
    # gs:// through gcsfs/google-auth (a key file; workload identity needs nothing)
    "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "STORAGE_EMULATOR_HOST",
    # https:// and every client: proxies and CA bundles
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy", "SSL_CERT_FILE",
    "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
})
#: Where the loader may mount anything besides its model volume (read-only, configMap, secret,
#: projected or downwardAPI volumes only): the directory of its policy file (``loader.policy``),
#: service-account and cloud identity tokens, the loader's key (docs/fetch.md), KServe's GCS
#: key (``/var/secrets``) and CA bundle (``/etc/ssl/custom-certs``), and where a ``pvc://``
#: source is read. A mount anywhere else could replace the loader's own code.
LOADER_MOUNT_ROOTS = ("/var/run/secrets", "/var/run/mlseal", "/var/secrets", "/etc/ssl/custom-certs", "/mnt/pvc")
_LOADER_VOLUME_KINDS = frozenset({"configMap", "secret", "projected", "downwardAPI"})
#: where the loader reads a ``pvc://`` source (mlseal.fetch.storage.PVC_ROOT): a claim mounted
#: there, read-only, by the loader alone, is a source it verifies like a bucket
_PVC_ROOT = "/mnt/pvc"

# Pod Security Standards, baseline profile (kubernetes.io/docs/concepts/security/pod-security-standards)
_BASELINE_CAPABILITIES = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE", "SETFCAP",
    "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
})
_SAFE_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
})
_SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
_PROFILE_TYPES = frozenset({"RuntimeDefault", "Localhost"})
_APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"


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


# --- images ------------------------------------------------------------------------------

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


# --- what a container runs: its command line after Kubernetes' $(VAR) expansion ----------

def _remote_uri(text: str) -> str | None:
    """The first ``scheme://`` location in `text` that is not an http(s) loopback address."""
    for m in _URI.finditer(text):
        host = urlsplit(m.group(0)).hostname if m.group(1).lower() in ("http", "https") else None
        if host is not None and host in _LOOPBACK:
            continue
        return m.group(0)
    return None


_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|[0-9]+")


def _ipv4_shorthand(labels: list[str], port: str | None) -> bool:
    """An address in the forms resolvers also accept (``inet_aton``: one to four numbers,
    each decimal, octal with a leading 0, or hex with 0x), when it cannot be read as
    anything else: with a port, or with a hex or octal part. Bare decimal shorthand
    (``10.1/m``) reads like ``20240101/model.onnx`` and is left to the egress policy."""
    if not 1 <= len(labels) <= 4 or not all(_NUMBER.fullmatch(p) for p in labels):
        return False
    unusual = any(len(p) > 1 and p.startswith("0") for p in labels)  # octal 012, hex 0xa
    return port is not None or unusual


def _bare_host(host: str, port: str | None) -> bool:
    """Whether `host` (before ``:port/`` or ``/``) names another machine: a dotted DNS name whose
    last label is a top-level domain, an IPv4 address, or a single label with a port; not loopback."""
    name = host.removesuffix(".")  # a fully qualified name's root dot is not part of its 253 characters
    if host.lower() in _LOCAL_HOSTS or len(name) > 253:
        return False
    labels = name.split(".")
    if len(labels) == 4 and all(p.isdigit() and len(p) <= 3 for p in labels):
        return True
    if _ipv4_shorthand(labels, port):
        return True
    if not all(_HOST_LABEL.fullmatch(p) for p in labels):
        return False
    return bool(_TOP_LABEL.fullmatch(labels[-1])) if len(labels) > 1 else port is not None


def remote_location(text: str) -> str | None:
    """The first remote location `text` names: a ``scheme://`` URI, or a host (or host:port)
    followed by a path without a scheme (``wget evil.example/m``); loopback addresses and file
    paths (``/mnt/models/model.joblib``, ``model.joblib``, ``./a.b/c``) are not remote. What a
    shell would still expand (``${X}``, ``$(cmd)``, backquotes) stands as the word ``unknown``,
    and empty quotes and backslashes a shell drops are dropped.

        >>> remote_location("sh -c 'wget -O /tmp/m evil.example.com/model && serve /tmp/m'")
        'evil.example.com/model'
        >>> remote_location("--model=/mnt/models/model.joblib --grpc=0.0.0.0:8081") is None
        True
    """
    uri = _remote_uri(text)
    if uri is not None:
        return uri
    words = _SHELL_SPLICE.sub("", _SHELL_UNKNOWN.sub("unknown", text))
    for m in _BARE.finditer(words):
        if _bare_host(m.group(1), m.group(2)):
            return m.group(0)
    for m in _BARE_V6.finditer(words):
        if m.group(1) != "::1":
            return m.group(0)
    return None


@dataclass(frozen=True)
class _Hidden:
    """A variable whose value admission cannot know, and why."""

    name: str
    #: the env entry that sets it
    where: str
    why: str


@dataclass(frozen=True)
class _Value:
    """A string as the container will see it, and the hidden variables it was built from."""

    text: str
    hidden: tuple[_Hidden, ...] = ()


@dataclass(frozen=True)
class _PodFacts:
    """What the downward API gives a container, as far as the reviewed object says."""

    name: str
    namespace: str
    #: annotations a fieldRef may read: the pod's (template's); every change to them is reviewed
    annotations: Mapping[str, str]
    service_account: str
    node_name: str | None


#: stand-ins for values the API server fills in: the pod's own address is loopback; the
#: node's and other services' are addresses another workload may listen on (TEST-NET-1)
_OTHER_HOST = "192.0.2.1"
_FIELD_VALUES = {"metadata.uid": "00000000-0000-0000-0000-000000000000", "status.podIP": "127.0.0.1",
                 "status.podIPs": "127.0.0.1", "status.hostIP": _OTHER_HOST, "status.hostIPs": _OTHER_HOST}
_FIELD_KEY = re.compile(r"metadata\.(annotations|labels)\[(['\"])(.*)\2\]")
#: the variables the kubelet defines for every service of the namespace (service links) and
#: for the API server; a reference to one the container does not define expands to an address
_SERVICE_VAR = re.compile(r"[A-Z0-9_]+_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT(_\d+_(TCP|UDP|SCTP)(_PROTO|_PORT"
                          r"|_ADDR)?)?)")
_SHELL_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def _service_var(name: str) -> str | None:
    """The stand-in for a service-link variable the container does not define itself."""
    m = _SERVICE_VAR.fullmatch(name) if len(name) <= 128 else None  # a Service name has at most 63
    if m is None:
        return None
    suffix = m.group(1)
    if suffix == "SERVICE_HOST" or suffix.endswith("_ADDR"):
        return _OTHER_HOST
    if suffix.endswith("_PROTO"):
        return "tcp"
    if suffix.startswith("SERVICE_PORT") or m.group(5) == "_PORT":
        return "1"
    return f"tcp://{_OTHER_HOST}:1"  # FOO_PORT, FOO_PORT_80_TCP


def _field_value(e: Env, facts: _PodFacts) -> _Value:
    path = e.source or ""
    m = _FIELD_KEY.fullmatch(path)
    if m is not None and m.group(1) == "annotations":
        return _Value(facts.annotations.get(m.group(3), ""))
    if m is not None:
        return _Value("", (_Hidden(e.name, e.where, f"fieldRef {path}, a label, which can change without an "
                                                    "admission review"),))
    known = {"metadata.name": facts.name, "metadata.namespace": facts.namespace,
             "spec.serviceAccountName": facts.service_account, "spec.nodeName": facts.node_name or "node.invalid",
             **_FIELD_VALUES}
    if path in known:
        return _Value(known[path])
    return _Value("", (_Hidden(e.name, e.where, f"fieldRef {path[:80]!r}"),))


def kube_expand(text: str, lookup: Callable[[str], str | None]) -> str:
    """`text` with ``$(NAME)`` references replaced as the kubelet does it.

    Kubernetes' expansion (``third_party/forked/golang/expansion``): ``$$`` is a literal
    ``$``, ``$(NAME)`` is the variable's value when `lookup` knows it and stays as written
    otherwise, an unterminated ``$(`` or a ``$`` before anything else stays as written.

        >>> kube_expand("$(A)$(B) $$(A) $(C) $x $(", {"A": "s3:", "B": "//b/m"}.get)
        's3://b/m $(A) $(C) $x $('
    """
    out: list[str] = []
    checkpoint = 0
    unclosed = len(text)  # no ")" from here on: each "$(" after it stays as written, without a rescan
    cursor = text.find("$")
    while 0 <= cursor < len(text) - 1:
        out.append(text[checkpoint:cursor])
        nxt = text[cursor + 1]
        advance = 1
        if nxt == "$":
            out.append("$")
        elif nxt == "(":
            close = text.find(")", cursor + 2) if cursor + 2 < unclosed else -1
            if close < 0:
                unclosed = min(unclosed, cursor + 2)
                out.append("$(")
            else:
                name = text[cursor + 2:close]
                value = lookup(name)
                out.append(f"$({name})" if value is None else value)
                advance = close - cursor
        else:
            out.append("$" + nxt)
        checkpoint = cursor + advance + 1
        cursor = text.find("$", checkpoint)
    out.append(text[checkpoint:])
    return "".join(out)


class _Environment:
    """A container's variables as the kubelet resolves them (env order, each value expanded with
    the ones before it), with what admission cannot know marked hidden."""

    def __init__(self, c: Container, facts: _PodFacts) -> None:
        self.values: dict[str, _Value] = {}
        #: every entry, in order, with its resolved value (a name set twice appears twice)
        self.entries: list[tuple[Env, _Value]] = []
        for e in c.env:
            if e.ref is None:
                v = self.expand(e.value or "")
            elif e.ref == "fieldRef":
                v = _field_value(e, facts)
            elif e.ref == "resourceFieldRef":
                v = _Value("1")
            else:  # configMapKeyRef, secretKeyRef, fileKeyRef, ...: not in the reviewed object
                v = _Value("", (_Hidden(e.name, e.where, f"valueFrom.{e.ref}"),))
            self.values[e.name] = v
            self.entries.append((e, v))

    def expand(self, text: str) -> _Value:
        """Kubernetes' ``$(VAR)`` expansion of a command, args or env value."""
        hidden: list[_Hidden] = []

        def lookup(name: str) -> str | None:
            v = self.values.get(name)
            if v is None:
                return _service_var(name)
            hidden.extend(v.hidden)
            return v.text

        return _Value(kube_expand(text, lookup), tuple(hidden))

    def shell_expand(self, v: _Value) -> _Value:
        """``$NAME`` / ``${NAME}`` of the container's variables, as a shell running the text would."""
        hidden = list(v.hidden)

        def sub(m: re.Match[str]) -> str:
            name = m.group(1) or m.group(2)
            value = self.values.get(name)
            if value is None:
                return m.group(0)
            hidden.extend(value.hidden)
            return value.text

        return _Value(_SHELL_VAR.sub(sub, v.text), tuple(hidden))


def _runs(c: Container) -> list[tuple[str, str, bool]]:
    """(field path, text, expanded by the kubelet) of everything the container executes."""
    out = [(f"{c.where}.{key}[{i}]", a, True) for key, items in (("command", c.command), ("args", c.args))
           for i, a in enumerate(items)]
    out += [(f"{h.where}.command[{i}]", a, False) for h in c.handlers for i, a in enumerate(h.command)]
    return out


def _hidden_findings(where: str, hidden: Iterable[_Hidden], code: Reason, container_name: str) -> list[Finding]:
    seen: dict[str, _Hidden] = {h.name: h for h in hidden}
    return [Finding(code, (
        f"{where} (container {container_name!r}) references {h.name}, which {h.where} sets from {h.why}: "
        f"admission cannot see that value, so it could name another model's location; give {h.name} a literal "
        "value, or let the program read the variable itself instead of passing it on its command line"
    )) for h in seen.values()]


def _location_finding(where: str, raw: str, loc: str, container_name: str) -> Finding:
    how = ""
    if loc not in raw:
        how = " (after expanding its variables"
        how += (f": {_OTHER_HOST} stands for an address the kubelet fills in, the node's or a Service's)"
                if _OTHER_HOST in loc and _OTHER_HOST not in raw else ")")
    return Finding(Reason.MODEL_OVERRIDE, (
        f"{where} names the remote location {redact_uri(loc)[:200]!r}{how} in container {container_name!r}, which "
        "could serve another model than the verified one; remove it (servers read the model from the loader's "
        "volume)"
    ))


def override_findings(c: Container, facts: _PodFacts, *, storage_uri_ok: bool = False) -> list[Finding]:
    """A container that could point its server at another model than the loader's.

    Its command, args, exec lifecycle hooks and exec probes are read as the container runs
    them: ``$(VAR)`` expanded as the kubelet does (command and args), the container's
    variables as a shell would (all of them), values from the downward API resolved from
    the object; a reference to a variable whose value is not in the reviewed object
    (configMapKeyRef, secretKeyRef, a label) is denied, and so is any remote location.
    """
    out: list[Finding] = []
    env = _Environment(c, facts)
    if c.env_from:
        out.append(Finding(Reason.MODEL_OVERRIDE, (
            f"{c.where}.envFrom can set any variable, including the model's location (STORAGE_URI); "
            "list the variables by name in env instead"
        )))
    for e, v in env.entries:
        if e.name == "STORAGE_URI" and not storage_uri_ok:
            out.append(Finding(Reason.MODEL_OVERRIDE, (
                f"{e.where} sets STORAGE_URI ({redact_uri(e.value) if e.value else e.source}), overriding where the "
                "model is loaded from; remove it: the model comes only from the verified storageUri"
            )))
        elif e.name.startswith("MLSEAL_"):
            out.append(Finding(Reason.MODEL_OVERRIDE, (
                f"{e.where} sets {e.name} in a container that is not the verifying loader; remove it"
            )))
        elif e.ref in (None, "fieldRef") and e.name != "STORAGE_URI" and (uri := _remote_uri(v.text)):
            out.append(Finding(Reason.MODEL_OVERRIDE, (
                f"{e.where} ({e.name}) names the remote location {redact_uri(uri)!r}, which could serve another "
                "model than the verified one; remove it (servers read the model from the loader's volume)"
            )))
    for where, raw, kube in _runs(c):
        value = env.shell_expand(env.expand(raw) if kube else _Value(raw))
        if value.hidden:
            out.extend(_hidden_findings(where, value.hidden, Reason.MODEL_OVERRIDE, c.name))
        loc = remote_location(value.text)
        if loc:
            out.append(_location_finding(where, raw, loc, c.name))
    return out


# --- volumes ------------------------------------------------------------------------------

def volume_findings(volumes: Mapping[str, str], where: str, rules: Rules) -> list[Finding]:
    """Volumes that could hand a server bytes the loader never verified (a node path, a claim, an image)."""
    allowed = VOLUME_KINDS | rules.volumes
    return [Finding(Reason.MODEL_VOLUME, (
        f"{where}.volumes[{name}] is a {kind} volume, which can hold a model the loader never verified; "
        f"serve the model from the loader's emptyDir and use only {', '.join(sorted(allowed))} volumes"
    )) for name, kind in volumes.items() if kind not in allowed]


def _user_downward_items(src: object) -> bool:
    """Whether a downward-API source exposes annotations (up to 256 KiB a user writes: a small model)."""
    if not isinstance(src, dict):
        return True
    items = src.get("items")
    if items is None:
        return False
    if not isinstance(items, list):
        return True
    for item in items:
        if not isinstance(item, dict):
            return True
        ref = item.get("fieldRef")
        if ref is None:
            continue  # resourceFieldRef: a number
        path = ref.get("fieldPath") if isinstance(ref, dict) else None
        if not isinstance(path, str) or path.startswith("metadata.annotations"):
            return True
    return False


def user_written_sources(volume: Mapping[str, Any]) -> set[str]:
    """The sources of `volume` whose files a user writes through the API (a configMap, a secret,
    annotations through the downward API), or that live outside the pod (a claim, a node path,
    a network share, an image); empty for an emptyDir and for what only the API server writes
    (service-account tokens, the cluster's CA bundle, the pod's name, namespace and labels)."""
    kinds = [k for k in volume if k != "name"]
    if len(kinds) != 1:
        return {"unknown"}
    kind = kinds[0]
    src = volume[kind]
    if kind == "emptyDir":
        return set()
    if kind == "downwardAPI":
        return {"downwardAPI"} if _user_downward_items(src) else set()
    if kind != "projected":
        return {kind}
    out: set[str] = set()
    sources = src.get("sources") if isinstance(src, dict) else None
    for s in sources if isinstance(sources, list) else [{"unknown": None}]:
        for sk, sv in (s.items() if isinstance(s, dict) else [("unknown", None)]):
            if sk in ("serviceAccountToken", "clusterTrustBundle"):
                continue
            if sk == "configMap" and isinstance(sv, dict) and sv.get("name") == _KUBE_ROOT_CA and _ca_only(sv):
                continue
            if sk == "downwardAPI":
                if _user_downward_items(sv):
                    out.add("downwardAPI")
                continue
            out.add(sk)
    return out


def _ca_only(src: Mapping[str, Any]) -> bool:
    """The projection of kube-root-ca.crt the ServiceAccount admission plugin writes, exactly:
    its ``ca.crt`` key at ``ca.crt``. A namespace editor can add keys to that ConfigMap (under
    ``binaryData``, which its publisher does not reset), so any other projection of it is a
    configMap volume like another."""
    return src.get("items") == [{"key": "ca.crt", "path": "ca.crt"}]


def mount_findings(c: Container, sources: Mapping[str, Mapping[str, Any]], rules: Rules) -> list[Finding]:
    """Mounts through which a container besides the loader could read bytes the loader never
    verified: any volume a user writes, unless the policy's ``volumes`` allows its kind."""
    out: list[Finding] = []
    for m in c.mounts:
        vol = _volume(m.volume)
        src = sources.get(vol)
        if src is None:
            continue  # declared elsewhere (a runtime's volumes); the Pod that merges them is judged
        missing = sorted(user_written_sources(src) - rules.volumes)
        if missing:
            kinds = ", ".join(missing)
            out.append(Finding(Reason.MODEL_VOLUME, (
                f"{m.where} mounts volume {vol!r} ({kinds}) at {m.path} in {c.name or 'the container'}: its files "
                f"are written by whoever may write that {kinds}, not verified by the loader, and can be a small "
                f"model; read the model only from the loader's volume, or allow the kind with volumes: [{kinds}] "
                "in the policy if the container must read it (TLS keys, configuration)"
            )))
    return out


def _overlaps(a: str, b: str) -> bool:
    a, b = posixpath.normpath(a), posixpath.normpath(b)
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")


def _under(path: str, root: str) -> bool:
    path, root = posixpath.normpath(path), posixpath.normpath(root)
    return path == root or path.startswith(root.rstrip("/") + "/")


def _volume(m_volume: str) -> str:
    return m_volume.split("/", 1)[0]


# --- pod security (Kubernetes Pod Security Standards, baseline) ---------------------------

def _baseline(where: str, shown: object, what: str, fix: str) -> Finding:
    return Finding(Reason.POD_SECURITY, (
        f"{where} is {str(shown)[:120]}: {what}; the Kubernetes Pod Security baseline standard forbids it, and "
        f"mlseal applies it to every workload it judges (a container that leaves its sandbox can read or replace "
        f"any model on the node); {fix}"
    ))


def _profile_findings(sc: Mapping[str, Any], where: str) -> list[Finding]:
    out: list[Finding] = []
    for key, what in (("seccompProfile", "it runs without a seccomp filter"),
                      ("appArmorProfile", "it runs without an AppArmor profile")):
        prof = sc.get(key)
        if prof is None:
            continue
        kind = _typed(prof, dict, f"{where}.{key}", "an object").get("type")
        if kind not in _PROFILE_TYPES:
            out.append(_baseline(f"{where}.{key}.type", repr(kind), what,
                                 "use type RuntimeDefault or Localhost, or leave it unset"))
    se = sc.get("seLinuxOptions")
    if se is not None:
        se = _typed(se, dict, f"{where}.seLinuxOptions", "an object")
        if se.get("type", "") not in _SELINUX_TYPES or se.get("user") or se.get("role"):
            shown = {k: se[k] for k in ("type", "user", "role") if se.get(k)}
            out.append(_baseline(f"{where}.seLinuxOptions", shown, "it sets a custom SELinux type, user or role",
                                 "set no user or role and a type of container_t, container_init_t or "
                                 "container_kvm_t (or leave it unset)"))
    win = sc.get("windowsOptions")
    if win is not None and _typed(win, dict, f"{where}.windowsOptions", "an object").get("hostProcess") is True:
        out.append(_baseline(f"{where}.windowsOptions.hostProcess", "true", "it runs as a process on the host",
                             "remove hostProcess"))
    return out


def _container_security(c: Mapping[str, Any], where: str) -> list[Finding]:
    out: list[Finding] = []
    raw_sc = c.get("securityContext")
    if raw_sc is not None:
        sc = _typed(raw_sc, dict, f"{where}.securityContext", "an object")
        w = f"{where}.securityContext"
        if sc.get("privileged") is True:
            out.append(_baseline(f"{w}.privileged", "true", "it has every capability and every device of the node",
                                 "remove privileged"))
        if sc.get("allowPrivilegeEscalation") is True:
            out.append(_baseline(f"{w}.allowPrivilegeEscalation", "true", "a process may gain more privileges "
                                 "than its parent (setuid binaries)", "set allowPrivilegeEscalation: false"))
        caps = sc.get("capabilities")
        if caps is not None:
            add = _typed(caps, dict, f"{w}.capabilities", "an object").get("add") or []
            extra = [a for a in _typed(add, list, f"{w}.capabilities.add", "a list")
                     if str(a).upper().removeprefix("CAP_") not in _BASELINE_CAPABILITIES]
            if extra:
                out.append(_baseline(f"{w}.capabilities.add", extra, "it adds capabilities beyond the runtime's "
                                     "defaults", "drop them (add only NET_BIND_SERVICE and the runtime defaults)"))
        if sc.get("procMount") not in (None, "Default"):
            out.append(_baseline(f"{w}.procMount", repr(sc["procMount"]), "it unmasks /proc",
                                 "use procMount: Default"))
        out.extend(_profile_findings(sc, w))
    ports = c.get("ports")
    for i, p in enumerate(_typed(ports, list, f"{where}.ports", "a list") if ports is not None else []):
        host_port = _typed(p, dict, f"{where}.ports[{i}]", "an object").get("hostPort")
        if host_port not in (None, 0):
            out.append(_baseline(f"{where}.ports[{i}].hostPort", host_port, "it listens on the node's network",
                                 "remove hostPort and reach the server through a Service"))
    return out


def _name_resolution_findings(spec: Mapping[str, Any], where: str) -> list[Finding]:
    """``hostAliases`` and a ``dnsConfig`` with its own nameservers or search domains change
    where every name a container resolves points (``localhost`` included: an alias appends
    another address for it), so a location the rules take for loopback or for the cluster's
    own can reach another host."""
    out: list[Finding] = []
    if spec.get("hostAliases"):
        out.append(Finding(Reason.MODEL_OVERRIDE, (
            f"{where}.hostAliases rewrites /etc/hosts in every container (a name such as localhost can then "
            "reach another host); remove it"
        )))
    dns = spec.get("dnsConfig")
    if isinstance(dns, dict):
        for key in ("nameservers", "searches"):
            if dns.get(key):
                out.append(Finding(Reason.MODEL_OVERRIDE, (
                    f"{where}.dnsConfig.{key} changes how every container resolves names (a short name can then "
                    "reach a host outside the cluster); remove it"
                )))
    return out


def pod_security_findings(spec: Mapping[str, Any], where: str, containers: Iterable[tuple[Mapping[str, Any], str]],
                          annotations: Mapping[str, str] | None = None,
                          annotations_where: str = "metadata.annotations") -> list[Finding]:
    """What the baseline Pod Security Standard forbids in a pod spec (or a KServe component or
    serving runtime spec, which hold the same fields): host namespaces, privileged containers,
    added capabilities beyond the runtime's defaults, hostPath volumes, host ports, unconfined
    seccomp/AppArmor, custom SELinux types, unmasked /proc, unsafe sysctls, Windows host
    processes; and ``allowPrivilegeEscalation: true``."""
    out: list[Finding] = []
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key) is True:
            out.append(_baseline(f"{where}.{key}", "true", "the pod shares the node's "
                                 f"{ {'hostNetwork': 'network', 'hostPID': 'processes', 'hostIPC': 'IPC'}[key]}",
                                 f"remove {key}"))
    psc = spec.get("securityContext")
    if psc is not None:
        sc = _typed(psc, dict, f"{where}.securityContext", "an object")
        out.extend(_profile_findings(sc, f"{where}.securityContext"))
        sysctls = sc.get("sysctls")
        for i, s in enumerate(_typed(sysctls, list, f"{where}.securityContext.sysctls", "a list") if sysctls else []):
            name = _typed(s, dict, f"{where}.securityContext.sysctls[{i}]", "an object").get("name")
            if name not in _SAFE_SYSCTLS:
                out.append(_baseline(f"{where}.securityContext.sysctls[{i}]", repr(name), "it is not one of the "
                                     "safe, namespaced sysctls", "remove it"))
    for name, kind in volumes_of(spec, where).items():
        if kind == "hostPath":
            out.append(_baseline(f"{where}.volumes[{name}]", "a hostPath volume", "it mounts a path of the node",
                                 "use an emptyDir (the model comes through the loader)"))
    for c, cwhere in containers:
        out.extend(_container_security(c, cwhere))
    out.extend(_name_resolution_findings(spec, where))
    for key, value in (annotations or {}).items():
        if key.startswith(_APPARMOR_ANNOTATION) and not (value == "runtime/default" or value.startswith("localhost/")):
            out.append(_baseline(f"{annotations_where}[{key}]", repr(value), "it runs without an AppArmor profile",
                                 "use runtime/default or localhost/<profile>"))
    return out


# --- pods and pod templates ---------------------------------------------------------------

def _is_loader(c: Container, rules: Rules) -> bool:
    return (c.command[:2] == LOADER_COMMAND or c.name == KSERVE_LOADER_NAME
            or (rules.loader is not None and c.image == rules.loader.image))


def _pod_facts(w: Workload, pod: PodSpec) -> _PodFacts:
    sa = pod.raw.get("serviceAccountName") or pod.raw.get("serviceAccount") or "default"
    node = pod.raw.get("nodeName")
    return _PodFacts(w.name, w.namespace or "default", pod.annotations, str(sa),
                     node if isinstance(node, str) and node else None)


def _check_pod_workload(w: Workload, rules: Rules) -> tuple[list[Finding], ModelRef | None]:
    pod = w.pod
    assert pod is not None
    facts = _pod_facts(w, pod)
    sources = volume_sources_of(pod.raw, pod.where)
    out: list[Finding] = pod_security_findings(pod.raw, pod.where, [(c.raw, c.where) for c in pod.containers],
                                               pod.annotations, pod.annotations_where)
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
        out.extend(override_findings(c, facts))
        out.extend(mount_findings(c, sources, rules))
    sha_ann = _pod_sha_annotation(w, pod)
    if len(loaders) > 1:
        shown = ", ".join(f"{c.where} ({c.name})" for c in loaders)
        out.append(Finding(Reason.BAD_LOADER, (
            f"the pod runs more than one model loader ({shown}); load one model through one loader"
        )))
        return out, None
    if not loaders:
        return _no_loader(w, pod, rules, sha_ann, out)
    ref = _check_loader(w, pod, loaders[0], rules, sha_ann, facts, out)
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
        out.extend(volume_findings(pod.volumes, pod.where, rules))
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
                  facts: _PodFacts, out: list[Finding]) -> ModelRef | None:
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
    for h in ld.handlers:
        out.append(Finding(Reason.BAD_LOADER, (
            f"{h.where} runs {[redact_uri(a)[:80] for a in h.command[:3]]!r} in the loader's container, which "
            "writes the model volume; the loader runs exactly [mlseal, fetch]: remove the hook or probe"
        )))
    if ld.env_from:
        out.append(Finding(Reason.BAD_LOADER, f"{ld.where}.envFrom could change the loader's settings; list "
                                              "the variables by name in env"))
    env = _Environment(ld, facts)
    out.extend(_loader_env_findings(env, want.env if want else frozenset()))
    args: list[str] = []
    for i, a in enumerate(ld.args):
        v = env.expand(a)
        out.extend(_hidden_findings(f"{ld.where}.args[{i}]", v.hidden, Reason.BAD_LOADER, ld.name))
        args.append(v.text)
    if len(args) < 2 or args[0].startswith("-") or args[1].startswith("-"):
        out.append(Finding(Reason.BAD_LOADER, (
            f"{ld.where}.args is {[redact_uri(a) for a in args[:4]]!r}; the loader takes "
            "[MODEL_URI, DEST_DIR, flags...]"
        )))
        return None
    src, dest = args[0], args[1]
    digests: list[tuple[str, str]] = []
    if sha_ann is not None:
        digests.append(sha_ann)
    flags = args[2:]
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
    for e, v in env.entries:
        if e.name == LOADER_SHA_ENV:
            if e.ref is None:
                digests.append((v.text, e.where))
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
        elif e.name == LOADER_POLICY_ENV and want is not None and (e.ref is not None or v.text != want.policy):
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
    model_mount = _check_model_volume(pod, ld, dest, out)
    out.extend(_loader_mount_findings(pod, ld, model_mount, rules))
    sources = {_volume(m.volume) for m in ld.mounts if _is_pvc_source(pod, m)}
    out.extend(volume_findings({k: v for k, v in pod.volumes.items() if k not in sources}, pod.where, rules))
    return ModelRef(w.kind, w.name, w.namespace, shas[0][0], src, f"{ld.where}.args[0]")


def _loader_env_findings(env: _Environment, extra: frozenset[str]) -> list[Finding]:
    """The loader carries only the variables it reads (`LOADER_ENV`) and the policy's ``loader.env``."""
    return [Finding(Reason.BAD_LOADER, (
        f"{e.where} sets {e.name[:80]} on the loader, which reads only its own variables (MLSEAL_*, the "
        "downward-API placement, Vault, and the storage credentials, endpoints and proxies of docs/admission.md); "
        "a variable such as PATH, PYTHONPATH, HOME or AWS_CONFIG_FILE changes which code the loader runs; remove "
        "it, or list a storage setting mlseal does not know in loader.env in the policy"
    )) for e, _ in env.entries if e.name not in LOADER_ENV and e.name not in extra]


def _loader_roots(rules: Rules) -> tuple[str, ...]:
    # normalised first: the directory of /./policy.yaml or /etc/../policy.yaml is /, not a directory below it
    policy = posixpath.normpath(rules.loader.policy) if rules.loader else None
    policy_dir = posixpath.dirname(policy) if policy else "/etc/mlseal"
    own = policy if policy and policy_dir in ("/", "//") else policy_dir
    return (own, *LOADER_MOUNT_ROOTS, *(rules.loader.mounts if rules.loader else ()))


def _is_pvc_source(pod: PodSpec, m: Mount) -> bool:
    return pod.volumes.get(_volume(m.volume)) == "persistentVolumeClaim" and m.read_only and _under(m.path, _PVC_ROOT)


def _loader_mount_findings(pod: PodSpec, ld: Container, model: Mount | None, rules: Rules) -> list[Finding]:
    """Besides the model volume, the loader mounts only its configuration and credentials:
    read-only, from configMap/secret/projected/downwardAPI volumes, under `LOADER_MOUNT_ROOTS`."""
    out: list[Finding] = []
    roots = _loader_roots(rules)
    for m in ld.mounts:
        if m is model:
            continue
        vol = _volume(m.volume)
        kind = pod.volumes.get(vol, "undeclared")
        path = posixpath.normpath(m.path)
        if not m.read_only:
            out.append(Finding(Reason.BAD_LOADER, (
                f"{m.where} mounts volume {vol!r} writable at {path} in the loader, which writes only the model "
                "volume; set readOnly: true"
            )))
        if kind not in _LOADER_VOLUME_KINDS and not (kind == "persistentVolumeClaim" and _under(path, _PVC_ROOT)):
            out.append(Finding(Reason.BAD_LOADER, (
                f"{m.where} mounts a {kind} volume ({vol!r}) in the loader; besides the model volume the loader reads "
                "only its configuration and credentials, from configMap, secret, projected or downwardAPI volumes, "
                f"and a pvc:// source claim at {_PVC_ROOT}; remove the mount"
            )))
        if not any(_under(path, r) for r in roots):
            out.append(Finding(Reason.BAD_LOADER, (
                f"{m.where} mounts volume {vol!r} at {path[:200]} in the loader, outside the places it reads "
                f"configuration and credentials from ({', '.join(roots)}); a mount elsewhere can replace the "
                "loader's own code (its Python packages, its executable); mount it under one of them, or add the "
                "directory to loader.mounts in the policy"
            )))
    return out


def _check_model_volume(pod: PodSpec, ld: Container, dest: str, out: list[Finding]) -> Mount | None:
    """The loader writes DEST on an emptyDir that the other containers only read; returns the
    loader's mount of it."""
    if not dest.startswith("/"):
        out.append(Finding(Reason.BAD_LOADER, f"{ld.where}.args[1] {dest[:200]!r} must be an absolute path"))
        return None
    d = posixpath.normpath(dest)
    mine = [m for m in ld.mounts
            if d == posixpath.normpath(m.path) or d.startswith(posixpath.normpath(m.path).rstrip("/") + "/")]
    if not mine:
        out.append(Finding(Reason.MODEL_VOLUME, (
            f"{ld.where} writes the model to {dest} but mounts no volume there, so no server can read it; mount "
            "an emptyDir volume at that path"
        )))
        return None
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
    return mount


# --- KServe ------------------------------------------------------------------------------

def _component_facts(w: Workload, spec: Mapping[str, Any], where: str) -> _PodFacts:
    """What the downward API gives the pods KServe makes for a component (its annotations are
    the object's and the component's)."""
    own = spec.get("annotations")
    ann = {**w.annotations, **(_typed(own, dict, f"{where}.annotations", "an object") if own is not None else {})}
    sa = spec.get("serviceAccountName") or "default"
    return _PodFacts(w.name, w.namespace or "default", {k: str(v) for k, v in ann.items()}, str(sa), None)


def _check_component_spec(w: Workload, spec: Mapping[str, Any], where: str, rules: Rules, *,
                          storage_uri_ok: bool) -> list[Finding]:
    """A predictor/transformer/explainer/serving runtime: its pod-spec containers, inlined framework
    containers and worker spec, and the pod-spec fields they share with a pod."""
    facts = _component_facts(w, spec, where)
    sources = volume_sources_of(spec, where)
    out: list[Finding] = volume_findings(volumes_of(spec, where), where, rules)
    spec_containers = containers_of(spec, where)
    for c in spec_containers:
        if c.role != "app":
            out.append(Finding(Reason.EXTRA_CONTAINER, (
                f"{c.where} ({c.name}) is an {'init' if c.role == 'init' else 'ephemeral'} container; KServe injects "
                "the verifying loader itself, and any other container before or beside it could replace the "
                "model; remove it"
            )))
            continue
        out.extend(_kserve_container(c, rules, facts, sources, storage_uri_ok=storage_uri_ok))
    inlined: list[tuple[Mapping[str, Any], str]] = []
    for key, sub in spec.items():
        if key in _POD_KEYS or key in _PREDICTOR_NON_MODEL or not isinstance(sub, dict):
            continue
        for extra in ("storageUris", "storage"):  # before the filter below: alone, they are still locations
            if sub.get(extra) is not None:
                out.append(Finding(Reason.NO_LOADER, (
                    f"{where}.{key}.{extra} names model locations admission does not check; the model comes only "
                    "from the verified storageUri, so remove it"
                )))
        if not any(k in sub for k in ("storageUri", "image", "args", "command", "env", "runtime", "modelFormat",
                                      "runtimeVersion", "volumeMounts", "envFrom", "storage", "lifecycle",
                                      "livenessProbe", "readinessProbe", "startupProbe", "securityContext",
                                      "ports")):
            continue
        c = container({**sub, "name": sub.get("name", key)}, f"{where}.{key}", "app")
        inlined.append((sub, f"{where}.{key}"))
        out.extend(_kserve_container(c, rules, facts, sources, storage_uri_ok=False))
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
    annotations = spec.get("annotations")
    out.extend(pod_security_findings(spec, where, [*((c.raw, c.where) for c in spec_containers), *inlined],
                                     annotations if isinstance(annotations, dict) else None, f"{where}.annotations"))
    worker = spec.get("workerSpec")
    if isinstance(worker, dict):
        wwhere = f"{where}.workerSpec"
        worker_containers = containers_of(worker, wwhere)
        worker_sources = {**sources, **volume_sources_of(worker, wwhere)}
        for c in worker_containers:
            out.extend(_kserve_container(c, rules, facts, worker_sources, storage_uri_ok=False))
        out.extend(volume_findings(volumes_of(worker, wwhere), wwhere, rules))
        out.extend(pod_security_findings(worker, wwhere, [(c.raw, c.where) for c in worker_containers]))
    return out


def _kserve_container(c: Container, rules: Rules, facts: _PodFacts, sources: Mapping[str, Mapping[str, Any]], *,
                      storage_uri_ok: bool) -> list[Finding]:
    out: list[Finding] = []
    f = image_finding(c, rules.images)
    if f is not None:
        out.append(f)
    out.extend(override_findings(c, facts, storage_uri_ok=storage_uri_ok))
    out.extend(mount_findings(c, sources, rules))
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
    out = _check_component_spec(w, predictor, "spec.predictor", rules, storage_uri_ok=not framework)
    out.extend(pod_security_findings({}, "spec", [], w.annotations, "metadata.annotations"))
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
        out.extend(_check_component_spec(w, comp, f"spec.{key}", rules, storage_uri_ok=False))
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
    out.extend(_check_component_spec(w, spec, "spec", rules, storage_uri_ok=False))
    return out
