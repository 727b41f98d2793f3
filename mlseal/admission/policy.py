"""Admission policy: what a model needs before it may be deployed, per namespace.

A policy file names the trust file, the ledger, the lifecycle stages a model's lineage
must contain, the evaluation gates its evaluate record must meet, and whether a failure
denies (``enforce``) or only warns (``warn``). Namespaces may override the rules::

    # policy.yaml
    trust: trust.yaml                      # relative paths resolve against this file
    ledger: sqlite:///ledger.db            # or {url_file: /vault/secrets/ledger-url}
    require_stages: [ingest, process, train, evaluate]
    gates:                                 # explicit bounds (mlseal.gates); a bare number is refused
      accuracy: {min: 0.90}                # at least
      mia_advantage: {max: 0.20}           # at most; {min: .., max: ..} bounds both ways
    mode: enforce                          # or warn
    serving_uris:                          # where the serving runtime fetches what KFP recorded
      "minio://mlpipeline/": "s3://mlpipeline/"   # (KServe cannot fetch minio:// URIs)
    evaluation:                            # who may vouch for the gates, and on what data
      signers: [evaluate]                  # trust-file signer names allowed to sign the evaluate record
      held_out: true                       # measured on the held-out split of the data the model was
                                           # trained on, which a validate record checked
    loader:                                # the verifying loader (`mlseal fetch`) a pod must run
      image: ghcr.io/mlseal/mlseal-python@sha256:<64 hex>   # digest-pinned; no loader: no model pod
      policy: /etc/mlseal/policy.yaml      # MLSEAL_POLICY / --policy must be this (the default)
      env: []                              # variables beyond the ones the loader reads (LOADER_ENV)
      mounts: []                           # directories beyond LOADER_MOUNT_ROOTS it may read (read-only)
    images:                                # what containers may run (always repo@sha256:<digest>)
      - registry.example/serving/*         # a repository glob: any digest
      - "registry.example/x@sha256:<64 hex>"   # or one exact digest
    init_images: []                        # extra init containers (never writing the model volume)
    runtimes: [kserve-tritonserver]        # allowed ServingRuntime names (unset: any name)
    transformers: deny                     # or allow: their containers follow `images`
    explainers: deny                       # or allow
    trained_models: deny                   # or check: digest and storageUri against the ledger
    unannotated_workloads: deny            # a workload naming no model (or allow: images still checked)
    volumes: []                            # volume kinds a container besides the loader may mount, beyond
                                           # emptyDir and API-written ones (e.g. [secret] for TLS)
    namespaces:
      staging: {mode: warn}
      prod: {gates: {accuracy: {min: 0.95}, robust_accuracy: {min: 0.70}}}

`serving_uris`, `loader`, `images`, `init_images` and `runtimes` describe the cluster and are
set once, at the top; the other rules may be overridden per namespace. What the workload
keys mean for each kind is in `mlseal.admission.workload` and docs/admission.md.

``ledger: {url_file: PATH}`` names a file holding the URL instead, for a PostgreSQL DSN
with credentials that Vault Agent renders and renews: the file is read each time a
connection is opened, so the URL (and its password) is never in the policy or a log.

A ``require_stages`` entry matches a record's stage kind (``ingest``, ``process``,
``train``, ``evaluate``), a processing step by its component name (``anonymize``: a
``process`` record named so), or ``kind/name`` for a named step of another kind
(``train/fit``). A name never counts from a record of another stage kind, whose key
could write any name.

    >>> import pathlib, tempfile
    >>> from mlseal.signing.keys import LocalKeySigner
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> LocalKeySigner.generate().save(d / "k.pem", d / "k.pub.pem")
    >>> _ = (d / "trust.yaml").write_text("signers: [{name: pipeline, public_key: k.pub.pem}]")
    >>> _ = (d / "policy.yaml").write_text("trust: trust.yaml\\nledger: sqlite:///l.db\\n"
    ...     "gates: {accuracy: {min: 0.9}}\\nnamespaces: {dev: {mode: warn}}\\n")
    >>> p = load_policy(d / "policy.yaml")
    >>> p.rules_for("dev").mode, p.rules_for("prod").mode
    (<Mode.WARN: 'warn'>, <Mode.ENFORCE: 'enforce'>)
    >>> p.ledger_url == "sqlite:///" + str(d / "l.db")
    True
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import logging
import os
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from mlseal.errors import ConfigurationError, InfrastructureError
from mlseal.gates import Gate as Gate  # re-exported: mlseal.admission.Gate
from mlseal.gates import parse_gates
from mlseal.signing.trust import TrustRoot, load_trust, load_yaml_file

__all__ = [
    "DEFAULT_LOADER_POLICY",
    "DEFAULT_STAGES",
    "VOLUME_SOURCES",
    "Allow",
    "EvaluationRules",
    "ImageRule",
    "LoaderRules",
    "Mode",
    "Policy",
    "Rules",
    "TrainedModels",
    "Unannotated",
    "load_policy",
    "parse_policy",
    "resolve_ledger_url",
    "split_image",
]

log = logging.getLogger(__name__)

#: the stages a model must have passed when a policy does not say
DEFAULT_STAGES = ("ingest", "process", "train", "evaluate")
#: the stage kinds whose records may produce a served model when a policy does not say
DEFAULT_MODEL_STAGES = ("train",)

_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_TOP_KEYS = frozenset({
    "trust", "ledger", "require_stages", "gates", "mode", "namespaces", "unannotated_workloads", "evaluation",
    "serving_uris", "loader", "images", "init_images", "runtimes", "transformers", "explainers", "trained_models",
    "volumes", "model_stages",
})
_RULE_KEYS = frozenset({"require_stages", "gates", "mode", "unannotated_workloads", "evaluation", "transformers",
                        "explainers", "trained_models", "volumes", "model_stages"})
#: set once, at the top of the policy (they describe the cluster, not one namespace)
_GLOBAL_KEYS = ("serving_uris", "loader", "images", "init_images", "runtimes")
_LOADER_KEYS = frozenset({"image", "policy", "env", "mounts"})
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: variables no policy may add to the loader's environment: each changes which code the loader
#: runs (the executable and library search paths, Python's start-up hooks, botocore's
#: ``credential_process`` from a config file, google-auth's executable-sourced credentials)
_LOADER_ENV_NEVER = re.compile(
    r"PATH|HOME|PYTHON.*|LD_.*|AWS_CONFIG_FILE|AWS_SHARED_CREDENTIALS_FILE|AWS_PROFILE|AWS_DATA_PATH|BOTO_CONFIG"
    r"|GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES|CLOUDSDK_CONFIG|SSLKEYLOGFILE"
)
#: every volume source a pod spec may name (core/v1 VolumeSource)
VOLUME_SOURCES = frozenset({
    "awsElasticBlockStore", "azureDisk", "azureFile", "cephfs", "cinder", "configMap", "csi", "downwardAPI",
    "emptyDir", "ephemeral", "fc", "flexVolume", "flocker", "gcePersistentDisk", "gitRepo", "glusterfs", "hostPath",
    "image", "iscsi", "nfs", "persistentVolumeClaim", "photonPersistentDisk", "portworxVolume", "projected",
    "quobyte", "rbd", "scaleIO", "secret", "storageos", "vsphereVolume",
})
#: the loader's policy file when the pod does not say (MLSEAL_POLICY)
DEFAULT_LOADER_POLICY = "/etc/mlseal/policy.yaml"
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
#: a repository reference: registry/path segments, lowercase (globs * ? allowed in a pattern)
_REPO = re.compile(r"[a-z0-9][a-z0-9._\-/:]*")
_REPO_PATTERN = re.compile(r"[a-z0-9*?][a-z0-9._\-/:*?]*")
_EVALUATION_KEYS = frozenset({"signers", "held_out"})


class Mode(StrEnum):
    ENFORCE = "enforce"
    WARN = "warn"


class Unannotated(StrEnum):
    """What to do with a workload that names no model at all (no loader, no annotation)."""

    ALLOW = "allow"
    DENY = "deny"


class Allow(StrEnum):
    """Whether a KServe component kind (transformer, explainer) may be deployed."""

    ALLOW = "allow"
    DENY = "deny"


class TrainedModels(StrEnum):
    """TrainedModels are loaded by KServe's model agent, not by the verifying loader."""

    DENY = "deny"
    #: check the TrainedModel's digest and storageUri against the ledger only
    CHECK = "check"


def split_image(ref: str) -> tuple[str, str | None]:
    """(repository, digest or None) of an image reference; a tag is dropped.

        >>> split_image("ghcr.io/x/y:1.2@sha256:" + "a" * 64)[0]
        'ghcr.io/x/y'
        >>> split_image("localhost:5000/y:1")
        ('localhost:5000/y', None)
    """
    name, at, digest = ref.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name = name[:colon]
    return name, (digest if at else None)


@dataclass(frozen=True)
class ImageRule:
    """One ``images:`` entry: a repository glob and an exact digest, or any digest of it."""

    repository: str
    digest: str | None = None

    def allows(self, repository: str, digest: str) -> bool:
        return fnmatch.fnmatchcase(repository, self.repository) and self.digest in (None, digest)

    def describe(self) -> str:
        return self.repository + (f"@{self.digest}" if self.digest else " (any digest)")


@dataclass(frozen=True)
class LoaderRules:
    """The verifying loader (`mlseal fetch`) as a pod must run it."""

    #: ``repo@sha256:<64 hex>``
    image: str
    #: the loader's policy file (MLSEAL_POLICY must be unset or this)
    policy: str = DEFAULT_LOADER_POLICY
    #: environment variables the loader may carry beyond the ones it reads
    #: (`mlseal.admission.workload.LOADER_ENV`)
    env: frozenset[str] = frozenset()
    #: directories the loader may mount (read-only) beyond `mlseal.admission.workload.LOADER_MOUNT_ROOTS`
    mounts: tuple[str, ...] = ()


@dataclass(frozen=True)
class EvaluationRules:
    """What the evaluate record behind the gates must be.

    ``signers``: the trust-file names of the identities allowed to sign it (the
    evaluator's, not the trainer's). ``held_out``: it names the dataset it measured (an
    input besides the model), that dataset is the one the model's train record split,
    with the same split (``split_seed``, ``test_fraction``), so the measured rows are
    the held-out ones, and a trusted ``validate`` record checked that dataset.
    """

    signers: frozenset[str] | None = None
    held_out: bool = False


@dataclass(frozen=True)
class Rules:
    """The checks one namespace applies."""

    require_stages: tuple[str, ...] = DEFAULT_STAGES
    #: stage kinds whose records may produce a served model: an evaluate, deploy or serve
    #: record that lists a new digest as an output never makes it a model
    model_stages: tuple[str, ...] = DEFAULT_MODEL_STAGES
    gates: tuple[Gate, ...] = ()
    mode: Mode = Mode.ENFORCE
    unannotated_workloads: Unannotated = Unannotated.DENY
    evaluation: EvaluationRules = field(default_factory=EvaluationRules)
    #: recorded URI prefix -> the prefix a serving runtime fetches the same objects from
    serving_uris: tuple[tuple[str, str], ...] = ()
    #: the verifying loader; None: no model workload can be admitted (it cannot show its loader)
    loader: LoaderRules | None = None
    #: images any container may run (always digest-pinned)
    images: tuple[ImageRule, ...] = ()
    #: images an extra init container may run (never writing the model volume)
    init_images: tuple[ImageRule, ...] = ()
    #: ServingRuntime/ClusterServingRuntime names; None: any name (their images are still checked)
    runtimes: frozenset[str] | None = None
    transformers: Allow = Allow.DENY
    explainers: Allow = Allow.DENY
    trained_models: TrainedModels = TrainedModels.DENY
    #: volume sources a container other than the loader may mount beyond the default ones
    #: (emptyDir, and volumes only the API server writes: see `mlseal.admission.workload`)
    volumes: frozenset[str] = frozenset()

    def serving_uri(self, recorded: str) -> str:
        """Where a server fetches the recorded artifact: the longest mapped prefix replaced."""
        hit = max((m for m in self.serving_uris if recorded.startswith(m[0])), key=lambda m: len(m[0]), default=None)
        return recorded if hit is None else hit[1] + recorded[len(hit[0]):]


@dataclass(frozen=True)
class Policy:
    """A loaded policy: default rules, per-namespace overrides, trust and ledger."""

    trust: TrustRoot
    ledger_url: str
    default: Rules = field(default_factory=Rules)
    namespaces: Mapping[str, Rules] = field(default_factory=dict)
    source: str = "<memory>"
    #: a file holding the ledger URL (credentials from Vault), read at each connect
    ledger_url_file: Path | None = None
    #: sha256 over the policy and trust file bytes: part of the webhook's cache key
    fingerprint: str = ""

    def resolve_ledger_url(self) -> str:
        """The ledger URL, read from `ledger_url_file` when the policy names one."""
        if self.ledger_url_file is None:
            return self.ledger_url
        try:
            url = self.ledger_url_file.read_text().strip()
        except OSError as exc:
            raise InfrastructureError(
                f"cannot read the ledger URL file {self.ledger_url_file}: {exc.strerror}"
            ) from None
        if not url:
            raise InfrastructureError(f"the ledger URL file {self.ledger_url_file} is empty (not rendered yet?)")
        return url

    def rules_for(self, namespace: str | None) -> Rules:
        if namespace is not None and namespace in self.namespaces:
            return self.namespaces[namespace]
        return self.default


# --- parsing ------------------------------------------------------------------------

#: a valid example of each key, added to every error about it (docs/design.md#admission-policy-file)
_EXAMPLES = {
    "trust": "trust: trust.yaml",
    "ledger": "ledger: {url_file: /vault/secrets/ledger-url}",
    "model_stages": "model_stages: [train]",
    "require_stages": "require_stages: [ingest, anonymize, train, evaluate]",
    "gates": "gates: {accuracy: {min: 0.9}}",
    "mode": "mode: enforce",
    "evaluation": "evaluation: {signers: [evaluate], held_out: true}",
    "unannotated_workloads": "unannotated_workloads: deny",
    "transformers": "transformers: deny",
    "explainers": "explainers: deny",
    "trained_models": "trained_models: check",
    "serving_uris": 'serving_uris: {"minio://mlpipeline/": "s3://mlpipeline/"}',
    "loader": 'loader: {image: "ghcr.io/mlseal/mlseal-python@sha256:<64 hex>"}',
    "images": 'images: ["registry.example/serving/*"]',
    "init_images": 'init_images: ["registry.example/tools/certs@sha256:<64 hex>"]',
    "runtimes": "runtimes: [kserve-tritonserver]",
    "volumes": "volumes: [secret]",
    "namespaces": "namespaces: {models-staging: {mode: warn}}",
}
_KEY = re.compile(r"(?:namespaces\.[^.:\s]+\.)?([a-z_]+)")


def _err(source: str, msg: str) -> ConfigurationError:
    """An error naming the file, the key (every message starts with the key's path) and a
    valid example of that key; an unknown key gets the example of the nearest known one."""
    m = _KEY.match(msg)
    key = m.group(1) if m else ""
    if "unknown keys" in msg:  # "unknown keys ['stage'] (known: ...)": the nearest known key
        import difflib

        named = re.findall(r"'([^']*)'", msg)
        near = difflib.get_close_matches(named[0], list(_EXAMPLES), n=1, cutoff=0.5) if named else []
        key = near[0] if near else "mode"
    example = _EXAMPLES.get(key, _EXAMPLES["mode"])
    return ConfigurationError(f"policy {source}: {msg}; a valid example: `{example}`")


def _parse_gates(raw: object, source: str, where: str) -> tuple[Gate, ...]:
    """The evaluate stage's parser (`mlseal.gates`), so both read a gate set one way."""
    if raw is None:
        return ()
    try:
        return parse_gates(raw, where=where)
    except ConfigurationError as exc:
        raise _err(source, str(exc)) from None


def _parse_stages(raw: object, source: str, where: str) -> tuple[str, ...]:
    if not isinstance(raw, list):
        raise _err(source, f"{where} must be a list of stage or component names, got {type(raw).__name__}")
    for s in raw:
        kind, _, name = s.rpartition("/") if isinstance(s, str) else ("", "", "")
        if not isinstance(s, str) or not _NAME.fullmatch(name) or (kind and not _NAME.fullmatch(kind)):
            raise _err(source, f"{where}: {s!r} is not a stage kind, a processing step or kind/step "
                               "(lowercase, e.g. ingest, anonymize, train/fit)")
    return tuple(dict.fromkeys(raw))


#: stage kinds that judge or ship a model: never its producer
_NOT_PRODUCERS = frozenset({"evaluate", "deploy", "serve"})


def _parse_model_stages(raw: object, source: str, where: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw or not all(isinstance(s, str) and _NAME.fullmatch(s) for s in raw):
        raise _err(source, f"{where} must be a non-empty list of stage kinds, e.g. [train]")
    bad = sorted(set(raw) & _NOT_PRODUCERS)
    if bad:
        raise _err(source, f"{where}: {bad[0]!r} judges or ships a model, it cannot produce one; "
                           "list the stages that train or transform models, e.g. [train]")
    return tuple(dict.fromkeys(raw))


def _parse_enum(raw: object, enum: type[StrEnum], source: str, where: str) -> Any:
    values = {m.value: m for m in enum}
    if not isinstance(raw, str) or raw not in values:
        raise _err(source, f"{where} must be one of {', '.join(values)}, got {raw!r}")
    return values[raw]


def _parse_evaluation(raw: object, source: str, where: str) -> EvaluationRules:
    if not isinstance(raw, dict) or set(raw) - _EVALUATION_KEYS:
        raise _err(source, f"{where} must be a mapping with keys {sorted(_EVALUATION_KEYS)}, e.g. "
                           "{signers: [evaluate], held_out: true}")
    signers = raw.get("signers")
    if signers is not None and (
        not isinstance(signers, list) or not signers or not all(isinstance(s, str) and s for s in signers)
    ):
        raise _err(source, f"{where}.signers must be a non-empty list of trust-file signer names, e.g. [evaluate]")
    held_out = raw.get("held_out", False)
    if not isinstance(held_out, bool):
        raise _err(source, f"{where}.held_out must be true or false, got {held_out!r}")
    return EvaluationRules(signers=frozenset(signers) if signers else None, held_out=held_out)


def _parse_serving_uris(raw: object, source: str) -> tuple[tuple[str, str], ...]:
    example = '{"minio://mlpipeline/": "s3://mlpipeline/"}'
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and "://" in k and "://" in v and k.endswith("/") and v.endswith("/")
        for k, v in raw.items()
    ):
        raise _err(source, f"serving_uris must map recorded URI prefixes to serving URI prefixes, each ending "
                           f"in '/', e.g. {example}")
    return tuple(sorted(raw.items()))


def _parse_loader(raw: object, source: str) -> LoaderRules:
    example = "{image: ghcr.io/mlseal/mlseal-python@sha256:<64 hex>}"
    if not isinstance(raw, dict) or set(raw) - _LOADER_KEYS or "image" not in raw:
        raise _err(source, f"loader must be a mapping with keys image (and optionally policy), e.g. {example}")
    image = raw["image"]
    repo, digest = split_image(image) if isinstance(image, str) else ("", None)
    if not isinstance(image, str) or digest is None or not _DIGEST.fullmatch(digest) or not _REPO.fullmatch(repo):
        raise _err(source, f"loader.image must be pinned by digest (repo@sha256:<64 hex>), got {image!r}; "
                           f"e.g. {example}")
    policy = raw.get("policy", DEFAULT_LOADER_POLICY)
    if not isinstance(policy, str) or not policy.startswith("/"):
        raise _err(source, f"loader.policy must be the absolute path of the loader's policy file, got {policy!r}")
    env = raw.get("env", [])
    if not isinstance(env, list) or not all(isinstance(n, str) and _ENV_NAME.fullmatch(n) for n in env):
        raise _err(source, f"loader.env must be a list of environment variable names, got {env!r}")
    never = [n for n in env if _LOADER_ENV_NEVER.fullmatch(n)]
    if never:
        raise _err(source, f"loader.env may not list {', '.join(never)}: it changes which code the loader runs "
                           "(a search path, a start-up hook or a command in a credentials file); pass storage "
                           "settings through the variables mlseal reads (docs/admission.md)")
    mounts = raw.get("mounts", [])
    if not isinstance(mounts, list) or not all(
        isinstance(m, str) and m.startswith("/") and posixpath.normpath(m) not in ("/", "//") for m in mounts
    ):
        raise _err(source, f"loader.mounts must be a list of absolute directories other than /, got {mounts!r}")
    return LoaderRules(image=image, policy=policy, env=frozenset(env),
                       mounts=tuple(posixpath.normpath(m) for m in mounts))


def _parse_volumes(raw: object, source: str, where: str) -> frozenset[str]:
    if not isinstance(raw, list) or not all(isinstance(k, str) for k in raw):
        raise _err(source, f"{where} must be a list of volume types, e.g. [secret]")
    unknown = [k for k in raw if k not in VOLUME_SOURCES]
    if unknown:
        raise _err(source, f"{where}: {', '.join(map(repr, unknown))} is not a volume type (known: "
                           f"{', '.join(sorted(VOLUME_SOURCES))})")
    if "hostPath" in raw:
        raise _err(source, f"{where}: hostPath volumes cannot be allowed: the Kubernetes Pod Security baseline "
                           "standard forbids them (a node path can hold or replace any model on the node)")
    return frozenset(raw)


def _parse_images(raw: object, source: str, where: str) -> tuple[ImageRule, ...]:
    example = '["ghcr.io/org/server", "ghcr.io/org/*@sha256:<64 hex>"]'
    if not isinstance(raw, list):
        raise _err(source, f"{where} must be a list of image patterns, e.g. {example}")
    out = []
    for entry in raw:
        repo, _, digest = entry.partition("@") if isinstance(entry, str) else ("", "", "")
        if (not _REPO_PATTERN.fullmatch(repo) or split_image(repo)[0] != repo
                or (digest and not _DIGEST.fullmatch(digest))):
            raise _err(source, f"{where}: {entry!r} is not an image pattern: write a repository (globs * ? "
                               f"allowed, no tag) optionally followed by @sha256:<64 hex>, e.g. {example}")
        out.append(ImageRule(repo, digest or None))
    return tuple(out)


def _parse_runtimes(raw: object, source: str) -> frozenset[str]:
    if not isinstance(raw, list) or not all(isinstance(r, str) and _NAMESPACE.fullmatch(r) for r in raw):
        raise _err(source, "runtimes must be a list of ServingRuntime names, e.g. [kserve-tritonserver]")
    return frozenset(raw)


def _parse_rules(data: Mapping[str, Any], base: Rules, source: str, where: str) -> Rules:
    rules = base
    for key in _GLOBAL_KEYS:
        if key in data and where:
            raise _err(source, f"{where}{key}: set {key} once, at the top of the policy")
    if "serving_uris" in data:
        rules = replace(rules, serving_uris=_parse_serving_uris(data["serving_uris"], source))
    if "loader" in data:
        rules = replace(rules, loader=_parse_loader(data["loader"], source))
    if "images" in data:
        rules = replace(rules, images=_parse_images(data["images"], source, "images"))
    if "init_images" in data:
        rules = replace(rules, init_images=_parse_images(data["init_images"], source, "init_images"))
    if "runtimes" in data:
        rules = replace(rules, runtimes=_parse_runtimes(data["runtimes"], source))
    for key, enum in (("transformers", Allow), ("explainers", Allow), ("trained_models", TrainedModels)):
        if key in data:
            rules = replace(rules, **{key: _parse_enum(data[key], enum, source, f"{where}{key}")})
    if "volumes" in data:
        rules = replace(rules, volumes=_parse_volumes(data["volumes"], source, f"{where}volumes"))
    if "evaluation" in data:
        rules = replace(rules, evaluation=_parse_evaluation(data["evaluation"], source, f"{where}evaluation"))
    if "require_stages" in data:
        rules = replace(rules, require_stages=_parse_stages(data["require_stages"], source, f"{where}require_stages"))
    if "model_stages" in data:
        rules = replace(rules, model_stages=_parse_model_stages(data["model_stages"], source, f"{where}model_stages"))
    if "gates" in data:
        rules = replace(rules, gates=_parse_gates(data["gates"], source, f"{where}gates"))
    if "mode" in data:
        rules = replace(rules, mode=_parse_enum(data["mode"], Mode, source, f"{where}mode"))
    if "unannotated_workloads" in data:
        rules = replace(rules, unannotated_workloads=_parse_enum(
            data["unannotated_workloads"], Unannotated, source, f"{where}unannotated_workloads"))
    return rules


def resolve_ledger_url(raw: str, base: Path) -> str:
    """Make a relative ``sqlite:///x.db`` URL absolute against the policy's directory."""
    prefix = "sqlite:///"
    if raw.startswith(prefix) and not raw.startswith(prefix + "/"):
        rest = raw[len(prefix):]
        path, sep, query = rest.partition("?")
        return prefix + str((base / path).resolve()) + sep + query
    return raw


def parse_policy(data: Mapping[str, Any], *, base: Path, source: str = "<memory>",
                 trust: TrustRoot | None = None, fingerprint: str = "") -> Policy:
    """Build a policy from parsed YAML; `base` is the directory relative paths use."""
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise _err(source, f"unknown keys {sorted(map(str, unknown))} (known: {sorted(_TOP_KEYS)})")
    ledger = data.get("ledger")
    url_file: Path | None = None
    if isinstance(ledger, dict) and set(ledger) == {"url_file"} and isinstance(ledger["url_file"], str):
        url_file = base / ledger["url_file"]
        ledger = ""
    elif not isinstance(ledger, str) or not ledger:
        raise _err(source, "ledger must be a ledger URL (sqlite:///path.db or postgresql://...) "
                           "or {url_file: PATH}")
    if trust is None:
        trust_path = data.get("trust")
        if not isinstance(trust_path, str) or not trust_path:
            raise _err(source, "trust must be the path of a trust file")
        trust = load_trust(base / trust_path)
    default = _parse_rules(data, Rules(), source, "")
    namespaces: dict[str, Rules] = {}
    raw_ns = data.get("namespaces") or {}
    if not isinstance(raw_ns, dict):
        raise _err(source, f"namespaces must map namespace names to rules, got {type(raw_ns).__name__}")
    for ns, rules in raw_ns.items():
        if not isinstance(ns, str) or not _NAMESPACE.fullmatch(ns):
            raise _err(source, f"namespaces: {ns!r} is not a Kubernetes namespace name")
        if not isinstance(rules, dict):
            raise _err(source, f"namespaces.{ns} must be a mapping of rules, got {type(rules).__name__}")
        bad = set(rules) - _RULE_KEYS
        if bad:
            raise _err(source, f"namespaces.{ns}: unknown keys {sorted(map(str, bad))} (known: {sorted(_RULE_KEYS)})")
        namespaces[ns] = _parse_rules(rules, default, source, f"namespaces.{ns}.")
    return Policy(trust=trust, ledger_url=resolve_ledger_url(ledger, base) if ledger else "", default=default,
                  namespaces=namespaces, source=source, ledger_url_file=url_file, fingerprint=fingerprint)


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read a policy file and the trust file it names; raises ConfigurationError."""
    path = Path(path)
    data = load_yaml_file(path, "policy file")
    h = hashlib.sha256(path.read_bytes())
    trust_path = data.get("trust")
    if isinstance(trust_path, str):
        with contextlib.suppress(OSError):  # load_trust below reports a missing file
            h.update((path.parent / trust_path).read_bytes())
    policy = parse_policy(data, base=path.parent, source=str(path), fingerprint=h.hexdigest())
    warned = [ns for ns, r in policy.namespaces.items() if r.mode is Mode.WARN]
    if policy.default.mode is Mode.WARN or warned:
        where = "every namespace" if policy.default.mode is Mode.WARN else "namespaces " + ", ".join(warned)
        log.warning("policy %s: warn mode in %s: models that fail the checks are admitted", path, where)
    return policy
