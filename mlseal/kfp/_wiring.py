"""Wire sealed KFP tasks to their services through kfp-kubernetes, so the IR carries them.

A sealed task needs its ledger, its trust file, Vault and its own signing identity. On
a cluster none of that may come from the pipeline's parameters (they are public) or from
whatever the pod happens to have: it is written into the compiled pipeline's Kubernetes
platform spec, which the KFP backend turns into the pod's environment and volumes.

    >>> from mlseal.kfp import Services
    >>> s = Services(vault_addr="https://vault.vault.svc:8200")
    >>> plan = s.env_for("train")
    >>> plan["MLSEAL_VAULT_K8S_ROLE"], plan["MLSEAL_TRUST"]
    ('mlseal-train', '/etc/mlseal/trust/trust.yaml')

What each task gets (infra/ ships the matching Secret, ConfigMaps, PodDefault and Vault
roles; docs/kubeflow.md walks through it):

- ``MLSEAL_LEDGER``: the ledger URL without credentials (TLS verified against the CA
  mounted from ConfigMap ``mlseal-ledger-ca``); ``PGUSER``/``PGPASSWORD`` from the Secret
  ``mlseal-ledger-writer`` that Vault's database engine keeps current;
- ``MLSEAL_TRUST``: the trust file from ConfigMap ``mlseal-trust``;
- ``VAULT_ADDR`` and Kubernetes auth as role ``mlseal-<stage>`` with the projected
  service-account token of audience ``vault`` (the pod label ``mlseal.dev/vault-token``
  selects the PodDefault that mounts it); the stage signs with Transit key
  ``mlseal-signing-<stage>``, its own identity;
- ``MLSEAL_IMAGE``: the image reference recorded in each record.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlseal.errors import ConfigurationError

__all__ = ["Services", "wire", "wire_compiled"]

#: where the pieces are mounted in a task's pod
TRUST_DIR = "/etc/mlseal/trust"
LEDGER_CA_DIR = "/etc/mlseal/ledger-ca"
VAULT_CA_DIR = "/etc/mlseal/vault-ca"
VAULT_TOKEN_PATH = "/var/run/secrets/vault/token"  # noqa: S105 (a path)
#: the pod label the PodDefault ``mlseal-vault-token`` selects (projected token, audience vault)
VAULT_TOKEN_LABEL = "mlseal.dev/vault-token"  # noqa: S105 (a label)

_DEFAULT_LEDGER_URL = (
    "postgresql://mlseal-ledger.mlseal-system.svc:5432/mlseal"
    f"?sslmode=verify-full&sslrootcert={LEDGER_CA_DIR}/ca.crt"
)
_STAGE = re.compile(r"[a-z][a-z0-9_-]{0,63}")


@dataclass(frozen=True, kw_only=True)
class Services:
    """Where a cluster's mlseal services are; the defaults match infra/k8s."""

    vault_addr: str
    ledger_url: str = _DEFAULT_LEDGER_URL
    ledger_secret: str = "mlseal-ledger-writer"  # noqa: S105 (a Secret's name)
    ledger_ca_config_map: str | None = "mlseal-ledger-ca"
    trust_config_map: str = "mlseal-trust"
    vault_ca_config_map: str | None = None
    vault_role_prefix: str = "mlseal-"
    vault_k8s_mount: str = "kubernetes"
    image: str | None = None

    def __post_init__(self) -> None:
        from mlseal.ledger.dsn import secrets_of
        from mlseal.secrets.refs import secret_literal_kind

        if "@" in self.ledger_url.split("//", 1)[-1].split("/", 1)[0] or secrets_of(self.ledger_url):
            raise ConfigurationError(
                "Services.ledger_url must not carry credentials (they would be in the compiled pipeline for "
                f"everyone to read); they come from the Secret {self.ledger_secret} as PGUSER/PGPASSWORD"
            )
        # every other field lands in the compiled pipeline as a plain value too
        for name in ("vault_addr", "image"):
            value = getattr(self, name)
            userinfo = "://" in value and "@" in value.split("//", 1)[1].split("/", 1)[0] if value else False
            if value and (userinfo or secret_literal_kind(value)):
                raise ConfigurationError(
                    f"Services.{name} must not carry credentials: it is written into the compiled pipeline "
                    "for everyone to read"
                )

    def env_for(self, stage: str) -> dict[str, str]:
        """The plain environment variables of a task of stage kind `stage` (no secrets)."""
        env = {
            "MLSEAL_LEDGER": self.ledger_url,
            "MLSEAL_TRUST": f"{TRUST_DIR}/trust.yaml",
            "VAULT_ADDR": self.vault_addr,
            "MLSEAL_VAULT_K8S_ROLE": f"{self.vault_role_prefix}{stage}",
            "MLSEAL_VAULT_K8S_JWT": VAULT_TOKEN_PATH,
            # the stage's own identity (a sealed component derives the same from its stage;
            # a container step sealed with `mlseal record` reads it from here)
            "MLSEAL_VAULT_TRANSIT_KEY": f"mlseal-signing-{stage}",
            "MLSEAL_SIGNER_NAME": stage,
        }
        if self.vault_k8s_mount != "kubernetes":
            env["MLSEAL_VAULT_K8S_MOUNT"] = self.vault_k8s_mount
        if self.vault_ca_config_map:
            env["VAULT_CACERT"] = f"{VAULT_CA_DIR}/ca.crt"
        if self.image:
            env["MLSEAL_IMAGE"] = self.image
        return env


def _apply(task: Any, stage: str, services: Services) -> None:
    """The one place that says what a sealed task gets: through kfp-kubernetes' own functions."""
    from kfp import kubernetes

    for name, value in services.env_for(stage).items():
        task.set_env_variable(name, value)
    kubernetes.use_secret_as_env(
        task, secret_name=services.ledger_secret, secret_key_to_env={"username": "PGUSER", "password": "PGPASSWORD"}
    )
    kubernetes.use_config_map_as_volume(task, config_map_name=services.trust_config_map, mount_path=TRUST_DIR)
    if services.ledger_ca_config_map:
        kubernetes.use_config_map_as_volume(task, config_map_name=services.ledger_ca_config_map,
                                            mount_path=LEDGER_CA_DIR)
    if services.vault_ca_config_map:
        kubernetes.use_config_map_as_volume(task, config_map_name=services.vault_ca_config_map,
                                            mount_path=VAULT_CA_DIR)
    kubernetes.add_pod_label(task, VAULT_TOKEN_LABEL, "true")


def wire(task: Any, services: Services, *, stage: str | None = None) -> Any:
    """Give one pipeline task its services (in a ``@dsl.pipeline`` body); returns the task.

    `stage` defaults to the stage of the sealed component the task runs; a container
    step sealed with ``mlseal record`` names its stage here.
    """
    kind = stage or getattr(task, "mlseal_stage", None)
    if not kind:
        raise ConfigurationError(
            f"wire: task {getattr(task, 'name', task)!r} is not a sealed component; pass stage=… for a "
            "container step sealed with `mlseal record`"
        )
    _apply(task, kind, services)
    return task


class _CompiledTask:
    """An executor of compiled IR, seen through the two things kfp-kubernetes touches."""

    def __init__(self, platform: dict[str, Any]) -> None:
        self.platform_config: dict[str, Any] = {"kubernetes": platform} if platform else {}
        self.env: dict[str, str] = {}

    def set_env_variable(self, name: str, value: str) -> _CompiledTask:
        self.env[name] = value
        return self


def _docs(text: str) -> list[dict[str, Any]]:
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"wire_compiled: not a compiled KFP pipeline (YAML error: {exc})") from None
    if not docs or not isinstance(docs[0], dict) or "deploymentSpec" not in docs[0]:
        raise ConfigurationError("wire_compiled: not a compiled KFP pipeline (no deploymentSpec)")
    return docs


def _sealed_stage(container: Mapping[str, Any]) -> str | None:
    """The stage of the sealed component a compiled executor runs, or None.

    Read from the program KFP ships in the command: the function named by
    ``--function_to_execute`` must end exactly as `sealed_component` generates it,
    ``from mlseal.kfp import _task`` then ``return _task.run(_mlseal_step, {... 'stage': S ...}, ...)``.
    Text elsewhere (a docstring, a string in another component) never counts.
    """
    import ast

    args = [str(a) for a in container.get("args") or ()]
    try:
        name = args[args.index("--function_to_execute") + 1]
    except (ValueError, IndexError):
        return None
    for text in (str(c) for c in container.get("command") or ()):
        if f"def {name}(" not in text:
            continue
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name), None)
        if fn is None or len(fn.body) < 2:
            return None
        imp, ret = fn.body[-2], fn.body[-1]
        if not (isinstance(imp, ast.ImportFrom) and imp.module == "mlseal.kfp"
                and [a.name for a in imp.names] == ["_task"]):
            return None
        call = ret.value if isinstance(ret, ast.Return) else None
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "run"
                and isinstance(call.func.value, ast.Name) and call.func.value.id == "_task"
                and len(call.args) >= 2 and isinstance(call.args[0], ast.Name) and call.args[0].id == "_mlseal_step"):
            return None
        try:
            spec = ast.literal_eval(call.args[1])
        except ValueError:
            return None
        stage = spec.get("stage") if isinstance(spec, dict) else None
        return stage if isinstance(stage, str) and _STAGE.fullmatch(stage) else None
    return None


def sealed_executors(spec: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(executor label, stage kind) of every sealed component in compiled IR."""
    for label, ex in (spec.get("deploymentSpec", {}).get("executors") or {}).items():
        stage = _sealed_stage(ex.get("container") or {})
        if stage is not None:
            yield label, stage


def wire_compiled(
    pipeline: str | Path, services: Services, *, stages: Mapping[str, str] | None = None, out: str | Path | None = None
) -> str:
    """Wire every sealed task of compiled IR (YAML text or a file); return (and write) the result.

    ``stages`` maps further executor labels (container steps sealed with ``mlseal
    record``) to their stage kinds.
    """
    text = Path(pipeline).read_text() if isinstance(pipeline, Path) or "\n" not in str(pipeline) else str(pipeline)
    docs = _docs(text)
    spec = docs[0]
    platform_doc = docs[1] if len(docs) > 1 else {"platforms": {"kubernetes": {"deploymentSpec": {"executors": {}}}}}
    k8s_execs = (
        platform_doc.setdefault("platforms", {}).setdefault("kubernetes", {})
        .setdefault("deploymentSpec", {}).setdefault("executors", {})
    )
    targets = dict(sealed_executors(spec))
    targets.update(stages or {})
    executors = spec["deploymentSpec"]["executors"]
    for label, kind in targets.items():
        if label not in executors:
            raise ConfigurationError(f"wire_compiled: no executor {label!r} in the pipeline")
        t = _CompiledTask(k8s_execs.get(label) or {})
        _apply(t, kind, services)
        k8s_execs[label] = t.platform_config["kubernetes"]
        container = executors[label].setdefault("container", {})
        env = [e for e in container.get("env") or () if e.get("name") not in t.env]
        container["env"] = env + [{"name": k, "value": v} for k, v in t.env.items()]
    result = yaml.safe_dump_all([spec, platform_doc], sort_keys=True)
    if out is not None:
        Path(out).write_text(result)
    return result
