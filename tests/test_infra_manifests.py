"""infra/k8s, offline: every kustomization builds, every object validates strictly, and
the wiring between the pieces holds (image, entrypoint and flags, ledger TLS, Vault tokens).

Needs `kubectl` (>= 1.27, for kustomize v5) on PATH and the kubernetes-validate package;
neither is optional (a missing tool is a failure, never a skip).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

import mlseal
from mlseal.cli import build_parser
from mlseal.components import IMAGE

REPO = Path(__file__).resolve().parent.parent
K8S = REPO / "infra" / "k8s"
SCHEMAS = K8S / "schemas"
VAULT = REPO / "infra" / "vault"
BUILDS = ["base", "overlays/dev", "overlays/prod"]
OVERLAYS = ["overlays/dev", "overlays/prod"]
#: the Kubernetes version built-in kinds are validated against
K8S_VERSION = "1.30"
LEDGER_HOST = "mlseal-ledger.mlseal-system.svc"
LEDGER_CA = "/etc/mlseal/ledger-ca/ca.crt"
STAGES = ["ingest", "process", "train", "evaluate", "deploy"]


@cache
def build(path: str) -> tuple[dict[str, Any], ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is not installed: CI must install it (kustomize v5, kubectl >= 1.27)")
    out = subprocess.run([kubectl, "kustomize", str(K8S / path)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, f"kubectl kustomize {path} failed:\n{out.stderr}"
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def objects(path: str, kind: str) -> list[dict[str, Any]]:
    return [d for d in build(path) if d["kind"] == kind]


def one(path: str, kind: str, name: str) -> dict[str, Any]:
    found = [d for d in objects(path, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"{path}: expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_specs(path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for d in build(path):
        if d["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"]
        elif d["kind"] == "CronJob":
            yield f"CronJob/{d['metadata']['name']}", d["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def crd_schema(api_version: str, kind: str) -> dict[str, Any] | None:
    group, _, version = api_version.rpartition("/")
    if "." not in group:
        return None  # a built-in API group
    path = SCHEMAS / f"{group}_{kind}_{version}.json"
    if not path.exists() and not group.endswith(".k8s.io"):
        pytest.fail(f"{kind} ({api_version}) has no strict schema in {SCHEMAS}: write one (extract.py)")
    return json.loads(path.read_text()) if path.exists() else None


# --- builds and schemas --------------------------------------------------------------------

@pytest.mark.parametrize("path", BUILDS)
def test_kustomization_builds(path: str) -> None:
    assert build(path)


@pytest.mark.parametrize("path", BUILDS)
def test_every_object_validates_strictly(path: str) -> None:
    problems = []
    for d in build(path):
        name = f"{d['kind']}/{d['metadata'].get('name')}"
        schema = crd_schema(d["apiVersion"], d["kind"])
        try:
            if schema is not None:
                jsonschema.validate(d, schema)
            else:
                kubernetes_validate.validate(d, K8S_VERSION, strict=True)
        except (jsonschema.ValidationError, kubernetes_validate.ValidationError) as exc:
            problems.append(f"{name}: {exc.message}")
    assert not problems, "\n".join(problems)


def test_the_strict_validation_catches_mistakes() -> None:
    dep = json.loads(json.dumps(one("overlays/prod", "Deployment", "mlseal-webhook")))
    dep["spec"]["template"]["spec"]["containers"][0]["volumeMount"] = []  # typo of volumeMounts
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)
    pd = json.loads(json.dumps(one("overlays/dev", "PodDefault", "mlseal-vault-token")))
    pd["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]["audiences"] = ["vault"]
    pd_schema = crd_schema(pd["apiVersion"], pd["kind"])
    assert pd_schema is not None
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(pd, pd_schema)
    vds = json.loads(json.dumps(one("overlays/dev", "VaultDynamicSecret", "mlseal-ledger-writer")))
    del vds["spec"]["path"]
    vds_schema = crd_schema(vds["apiVersion"], vds["kind"])
    assert vds_schema is not None
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(vds, vds_schema)


def test_every_schema_cites_its_upstream_crd_and_is_closed() -> None:
    files = sorted(SCHEMAS.glob("*.json"))
    assert {f.name.split("_")[1] for f in files} >= {
        "Certificate", "Issuer", "ClusterIssuer", "Bundle", "PodDefault", "VaultAuth", "VaultConnection",
        "VaultDynamicSecret"}

    def closed(s: Any, where: str) -> None:
        if isinstance(s, dict):
            if "properties" in s:
                assert s.get("additionalProperties") is False, f"{where} is not closed"
            for k, v in s.items():
                closed(v, f"{where}.{k}")
        elif isinstance(s, list):
            for i, v in enumerate(s):
                closed(v, f"{where}[{i}]")

    for f in files:
        schema = json.loads(f.read_text())
        assert re.search(r"(commit [0-9a-f]{8}|v\d+\.\d+)", schema["$comment"]), f.name
        closed(schema, f.name)


# --- one image, one version ------------------------------------------------------------------

def test_one_image_reference_from_one_version() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    # the package version is mlseal.__version__ (pyproject reads it from there)
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "mlseal.__version__"}
    version = mlseal.__version__
    comp = yaml.safe_load((K8S / "components" / "version" / "kustomization.yaml").read_text())
    (img,) = comp["images"]
    ref = f"{img['newName']}:{img['newTag']}"
    assert img["name"] == "mlseal" and img["newTag"] == version
    assert ref == IMAGE, f"kustomize says {ref}, mlseal.components.IMAGE says {IMAGE}"
    dockerfile = (REPO / "infra" / "docker" / "Dockerfile").read_text()
    assert re.search(rf"^ARG MLSEAL_VERSION={re.escape(version)}$", dockerfile, re.M)
    assert f"-t {ref} ." in dockerfile
    for path in BUILDS:
        for where, spec in pod_specs(path):
            for c in spec["containers"]:
                assert c["image"] != "mlseal", f"{path} {where}: image not rewritten"
                if "mlseal" in c["image"]:
                    assert c["image"] == IMAGE, f"{path} {where}: {c['image']}"


# --- the webhook really starts -----------------------------------------------------------------

def _entrypoint() -> list[str]:
    m = re.search(r"^ENTRYPOINT (\[.*\])$", (REPO / "infra" / "docker" / "Dockerfile").read_text(), re.M)
    assert m, "the Dockerfile has no exec-form ENTRYPOINT"
    return list(json.loads(m.group(1)))


@pytest.mark.parametrize("path", BUILDS)
def test_mlseal_containers_run_real_cli_commands(path: str) -> None:
    assert _entrypoint() == ["mlseal"]
    parser = build_parser()
    seen = set()
    for where, spec in pod_specs(path):
        for c in spec["containers"]:
            if c["image"] != IMAGE:
                continue
            assert "command" not in c, f"{where}: leave the image's entrypoint alone"
            args = parser.parse_args(c["args"])  # SystemExit on an unknown flag
            seen.add(f"{args.command} {getattr(args, 'webhook_command', None) or args.ledger_command}")
    assert "webhook serve" in seen and "ledger witness" in seen
    if path != "base":
        assert "ledger init" in seen


def test_webhook_paths_exist_in_its_mounts() -> None:
    dep = one("overlays/prod", "Deployment", "mlseal-webhook")
    spec = dep["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    args = build_parser().parse_args(c["args"])
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in spec["volumes"]}
    assert vols[mounts["/etc/mlseal/tls"]]["secret"]["secretName"] == "mlseal-webhook-tls"
    assert args.tls_cert == "/etc/mlseal/tls/tls.crt" and args.tls_key == "/etc/mlseal/tls/tls.key"
    policy_cm = vols[mounts[str(Path(args.policy).parent)]]["configMap"]["name"]
    assert policy_cm.startswith("mlseal-admission-policy")
    cert = one("overlays/prod", "Certificate", "mlseal-webhook")
    assert cert["spec"]["secretName"] == "mlseal-webhook-tls"
    assert "mlseal-webhook.mlseal-system.svc" in cert["spec"]["dnsNames"]
    svc = one("overlays/prod", "Service", "mlseal-webhook")
    assert svc["spec"]["ports"][0]["targetPort"] == c["ports"][0]["name"]
    assert c["ports"][0]["containerPort"] == args.port
    vwc = one("overlays/prod", "ValidatingWebhookConfiguration", "mlseal-model-admission")
    assert vwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == "mlseal-system/mlseal-webhook"


@pytest.mark.parametrize("path", BUILDS)
def test_webhook_keeps_its_accepted_checkpoint_on_a_writable_volume(path: str) -> None:
    dep = one(path, "Deployment", "mlseal-webhook")
    spec = dep["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    args = build_parser().parse_args(c["args"])
    assert args.checkpoint_state, "the webhook must keep the checkpoint it accepted (--checkpoint-state)"
    state_dir = str(Path(args.checkpoint_state).parent)
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == state_dir]
    assert not mount.get("readOnly")
    vol = {v["name"]: v for v in spec["volumes"]}[mount["name"]]
    assert "emptyDir" in vol or "persistentVolumeClaim" in vol
    assert c["securityContext"]["readOnlyRootFilesystem"] is True  # the volume is the only place it can write


# --- Vault tokens ------------------------------------------------------------------------------

def _vault_token_volume(spec: dict[str, Any], name: str) -> dict[str, Any]:
    (vol,) = [v for v in spec["volumes"] if v["name"] == name]
    (src,) = vol["projected"]["sources"]
    return dict(src["serviceAccountToken"])


@pytest.mark.parametrize("path", BUILDS)
def test_webhook_logs_in_to_vault_with_an_audience_bound_token_only(path: str) -> None:
    tpl = one(path, "Deployment", "mlseal-webhook")["spec"]["template"]
    spec, ann = tpl["spec"], tpl["metadata"]["annotations"]
    assert spec["automountServiceAccountToken"] is False  # no default (API-server audience) token
    assert one(path, "ServiceAccount", "mlseal-webhook")["automountServiceAccountToken"] is False
    volume = ann["vault.hashicorp.com/agent-service-account-token-volume-name"]
    token = _vault_token_volume(spec, volume)
    assert token["audience"] == "vault" and token["path"] == "token"
    roles = json.loads((VAULT / "kubernetes-roles.json").read_text())
    role = roles[ann["vault.hashicorp.com/role"]]
    assert role["audience"] == "vault"
    assert role["bound_service_account_names"] == [spec["serviceAccountName"]]
    assert role["bound_service_account_namespaces"] == ["mlseal-system"]


@pytest.mark.parametrize("path", OVERLAYS)
def test_pipeline_pods_get_the_vault_token_of_the_contract(path: str) -> None:
    pd = one(path, "PodDefault", "mlseal-vault-token")
    assert pd["spec"]["selector"] == {"matchLabels": {"mlseal.dev/vault-token": "true"}}
    (mount,) = pd["spec"]["volumeMounts"]
    assert mount["mountPath"] == "/var/run/secrets/vault" and mount.get("readOnly") is True
    token = _vault_token_volume(pd["spec"], mount["name"])
    assert token == {"audience": "vault", "expirationSeconds": 600, "path": "token"}


@pytest.mark.parametrize("path", OVERLAYS)
def test_ledger_writer_secret_comes_from_vault_with_an_audience_bound_login(path: str) -> None:
    ns = {d["metadata"]["namespace"] for d in objects(path, "PodDefault")}
    (namespace,) = ns
    vds = one(path, "VaultDynamicSecret", "mlseal-ledger-writer")
    assert vds["metadata"]["namespace"] == namespace
    assert vds["spec"]["destination"]["name"] == "mlseal-ledger-writer" and vds["spec"]["destination"]["create"]
    assert (vds["spec"]["mount"], vds["spec"]["path"]) == ("database", "creds/mlseal-ledger-writer")
    auth = one(path, "VaultAuth", vds["spec"]["vaultAuthRef"])
    assert auth["spec"]["kubernetes"]["audiences"] == ["vault"]
    conn = one(path, "VaultConnection", auth["spec"]["vaultConnectionRef"])
    assert conn["spec"]["skipTLSVerify"] is False and conn["spec"]["address"].startswith("https://")
    roles = json.loads((VAULT / "kubernetes-roles.json").read_text())
    role = roles[auth["spec"]["kubernetes"]["role"]]
    assert role["audience"] == "vault"
    assert auth["spec"]["kubernetes"]["serviceAccount"] in role["bound_service_account_names"]
    assert namespace in role["bound_service_account_namespaces"]
    policy = (VAULT / "policies" / f"{role['token_policies'][0]}.hcl").read_text()
    assert 'path "database/creds/mlseal-ledger-writer"' in policy
    trust = one(path, "ConfigMap", "mlseal-trust")
    assert trust["metadata"]["namespace"] == namespace and "trust.yaml" in trust["data"]


@pytest.mark.parametrize(("path", "namespace", "account"), [
    ("overlays/dev", "kubeflow", "mlseal-pipeline"),
    ("overlays/prod", "kubeflow-user-example-com", "default-editor"),
])
def test_stage_roles_are_bound_to_the_run_service_account(path: str, namespace: str, account: str) -> None:
    roles = json.loads((VAULT / "kubernetes-roles.json").read_text())
    if account == "mlseal-pipeline":
        assert one(path, "ServiceAccount", "mlseal-pipeline")["metadata"]["namespace"] == namespace
    for stage in STAGES:
        role = roles[f"mlseal-{stage}"]
        assert role["audience"] == "vault"
        assert account in role["bound_service_account_names"]
        assert namespace in role["bound_service_account_namespaces"]
        assert role["token_policies"] == [f"mlseal-{stage}"]


# --- ledger TLS ----------------------------------------------------------------------------------

def _dsns(path: str) -> Iterator[tuple[str, str]]:
    for d in build(path):
        # template placeholders (Vault Agent's {{ .Data.password }}) become "x"
        text = re.sub(r"\{\{[^}]*\}\}", "x", yaml.safe_dump(d, width=10_000))
        for m in re.finditer(r"postgres(?:ql)?://[^\s\"']+", text):
            yield f"{d['kind']}/{d['metadata']['name']}", m.group(0)


@pytest.mark.parametrize("path", OVERLAYS)
def test_every_ledger_dsn_verifies_the_server_against_the_mounted_ledger_ca(path: str) -> None:
    dsns = list(_dsns(path))
    assert {w for w, _ in dsns} >= {"Deployment/mlseal-webhook", "Job/mlseal-ledger-init"}
    cert = one(path, "Certificate", "mlseal-ledger-tls")
    for where, dsn in dsns:
        url = urlsplit(dsn)
        q = parse_qs(url.query)
        assert q.get("sslmode") == ["verify-full"], f"{where}: {dsn}"
        assert q.get("sslrootcert") == [LEDGER_CA], f"{where}: {dsn} (never the system bundle)"
        host = url.hostname
        assert host == LEDGER_HOST and host in cert["spec"]["dnsNames"], where
    for where, spec in pod_specs(path):
        text = json.dumps(spec)
        if "sslrootcert" not in text and "mlseal-ledger-url" not in text and "ledger-url" not in text:
            continue
        vols = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["mountPath"]: m["name"] for c in spec["containers"] for m in c.get("volumeMounts", [])}
        assert vols[mounts[str(Path(LEDGER_CA).parent)]]["configMap"]["name"] == "mlseal-ledger-ca", where


@pytest.mark.parametrize("path", OVERLAYS)
def test_ledger_ca_is_published_to_clients_and_the_server_is_tls_only(path: str) -> None:
    bundle = one(path, "Bundle", "mlseal-ledger-ca")  # trust-manager names the ConfigMap after it
    assert bundle["spec"]["target"]["configMap"]["key"] == "ca.crt"
    (src,) = bundle["spec"]["sources"]
    ca = one(path, "Certificate", src["secret"]["name"])
    assert ca["spec"]["isCA"] is True and ca["metadata"]["namespace"] == "cert-manager"
    assert ca["spec"]["secretName"] == src["secret"]["name"]
    label = bundle["spec"]["target"]["namespaceSelector"]["matchLabels"]
    assert one(path, "Namespace", "mlseal-system")["metadata"]["labels"].items() >= label.items()
    issuer = one(path, "ClusterIssuer", one(path, "Certificate", "mlseal-ledger-tls")["spec"]["issuerRef"]["name"])
    assert issuer["spec"]["ca"]["secretName"] == ca["spec"]["secretName"]

    sts = one(path, "StatefulSet", "mlseal-ledger")
    spec = sts["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    settings = dict(a.split("=", 1) for a in c["args"] if "=" in a)
    assert settings["ssl"] == "on"
    vols = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    tls = vols[mounts[str(Path(settings["ssl_cert_file"]).parent)]]
    assert tls["secret"]["secretName"] == "mlseal-ledger-tls" and tls["secret"]["defaultMode"] == 0o440
    hba_cm = one(path, "ConfigMap", vols[mounts[str(Path(settings["hba_file"]).parent)]]["configMap"]["name"])
    rules = [line.split() for line in hba_cm["data"]["pg_hba.conf"].splitlines() if line and not line.startswith("#")]
    remote = [r for r in rules if r[0] != "local"]
    assert remote and all(r[0] == "hostssl" and r[-1] == "scram-sha-256" for r in remote), rules
    svc = one(path, "Service", "mlseal-ledger")
    assert f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc" == LEDGER_HOST


@pytest.mark.parametrize("path", OVERLAYS)
def test_init_job_grants_the_roles_vault_issues_logins_into(path: str) -> None:
    job = one(path, "Job", "mlseal-ledger-init")
    (c,) = job["spec"]["template"]["spec"]["containers"]
    args = build_parser().parse_args(c["args"])
    assert (args.command, args.ledger_command) == ("ledger", "init")
    assert urlsplit(args.ledger).password is None and urlsplit(args.ledger).username is None
    env = {e["name"]: e for e in c["env"]}
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "mlseal-ledger-admin", "key": "password"}
    db_roles = json.loads((VAULT / "database-roles.json").read_text())
    groups = {}
    for name, spec in db_roles.items():
        (stmt,) = spec["creation_statements"]
        m = re.search(r"IN ROLE (\w+);$", stmt)
        assert m, stmt
        groups[name] = m.group(1)
    assert args.grant_writer == [groups["mlseal-ledger-writer"]]
    assert args.grant_reader == [groups["mlseal-ledger-reader"]]
    assert args.grant_witness == [groups["mlseal-ledger-witness"]]


@pytest.mark.parametrize("path", BUILDS)
def test_no_secret_values_are_shipped(path: str) -> None:
    assert not objects(path, "Secret"), "Secrets are created outside the repository (docs/infra.md)"
    for where, spec in pod_specs(path):
        for c in spec["containers"]:
            for e in c.get("env", []):
                if re.search(r"PASSWORD|TOKEN|SECRET", e["name"]):
                    assert "value" not in e, f"{where}: {e['name']} must come from a Secret"


@pytest.mark.parametrize("path", BUILDS)
def test_pods_are_restricted(path: str) -> None:
    for where, spec in pod_specs(path):
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}, where
            assert sc["readOnlyRootFilesystem"] is True, where


def test_prod_is_stricter_than_dev() -> None:
    dev, prod = (one(p, "Deployment", "mlseal-webhook") for p in OVERLAYS)
    assert prod["spec"]["replicas"] >= 3 > dev["spec"]["replicas"]
    assert one("overlays/prod", "PodDisruptionBudget", "mlseal-webhook")["spec"]["minAvailable"] >= 2
    sts = one("overlays/prod", "StatefulSet", "mlseal-ledger")
    assert "ssl_min_protocol_version=TLSv1.3" in sts["spec"]["template"]["spec"]["containers"][0]["args"]


def test_both_trust_copies_are_identical() -> None:
    base = K8S / "base" / "config"
    pipeline = K8S / "pipeline" / "common" / "trust"
    assert (base / "trust.yaml").read_text() == (pipeline / "trust.yaml").read_text()
    trust = yaml.safe_load((base / "trust.yaml").read_text())
    assert [s["name"] for s in trust["signers"]] == STAGES
    for s in trust["signers"]:
        assert s["stages"] == [s["name"]]
        assert (base / s["public_key"]).read_bytes() == (pipeline / s["public_key"]).read_bytes()
    assert trust["checkpoint_keys"] == ["checkpoint.pub.pem"]
    assert (base / "checkpoint.pub.pem").read_bytes() == (pipeline / "checkpoint.pub.pem").read_bytes()


def test_shipped_policy_and_trust_files_load() -> None:
    """The files the ConfigMaps are made of are what mlseal itself accepts (flat layout,
    as mounted: the trust file names its keys relative to itself)."""
    from mlseal.admission import load_policy
    from mlseal.signing.trust import load_trust

    policy = load_policy(str(K8S / "base" / "config" / "policy.yaml"))
    assert policy.ledger_url_file == Path("/vault/secrets/ledger-url")
    trust = load_trust(str(K8S / "pipeline" / "common" / "trust" / "trust.yaml"))
    assert len(trust.signers) == len(STAGES) and len(trust.checkpoint_keys) == 1
    files = {"trust.yaml", "checkpoint.pub.pem", *(f"{s}.pub.pem" for s in STAGES)}
    cm = one("overlays/dev", "ConfigMap", "mlseal-trust")
    assert set(cm["data"]) == files
    (policy_cm,) = [c for c in objects("overlays/dev", "ConfigMap")
                    if c["metadata"]["name"].startswith("mlseal-admission-policy")]
    assert set(policy_cm["data"]) >= files


# --- the ledger witness --------------------------------------------------------------------------

@pytest.mark.parametrize("path", BUILDS)
def test_the_witness_signs_checkpoints_with_its_own_identity(path: str) -> None:
    cron = one(path, "CronJob", "mlseal-ledger-witness")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    tpl = cron["spec"]["jobTemplate"]["spec"]["template"]
    spec, ann = tpl["spec"], tpl["metadata"]["annotations"]
    (c,) = spec["containers"]
    args = build_parser().parse_args(c["args"])
    assert (args.command, args.ledger_command) == ("ledger", "witness")
    assert args.vault_transit == "mlseal-checkpoint" and args.ledger is None and args.key is None
    assert args.ledger_file == "/vault/secrets/ledger-url" and args.state
    # the state survives the pod; the trust file is the webhook's (checkpoint key listed)
    vols = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    claim = vols[mounts[str(Path(args.state).parent)]]["persistentVolumeClaim"]["claimName"]
    assert one(path, "PersistentVolumeClaim", claim)
    assert vols[mounts[str(Path(args.trust).parent)]]["configMap"]["name"].startswith("mlseal-admission-policy")
    # Vault: its own role, bound to its own service account, audience-bound token only
    assert spec["automountServiceAccountToken"] is False
    assert one(path, "ServiceAccount", spec["serviceAccountName"])["automountServiceAccountToken"] is False
    env = {e["name"]: e.get("value") for e in c["env"]}
    roles = json.loads((VAULT / "kubernetes-roles.json").read_text())
    role = roles[env["MLSEAL_VAULT_K8S_ROLE"]]
    assert ann["vault.hashicorp.com/role"] == env["MLSEAL_VAULT_K8S_ROLE"] == "mlseal-witness"
    assert role["bound_service_account_names"] == [spec["serviceAccountName"]]
    assert role["bound_service_account_namespaces"] == ["mlseal-system"] and role["audience"] == "vault"
    token = _vault_token_volume(spec, mounts[str(Path(env["MLSEAL_VAULT_K8S_JWT"]).parent)])
    assert token["audience"] == "vault"
    assert ann["vault.hashicorp.com/agent-pre-populate-only"] == "true"  # a Job must be able to finish
    assert "database/creds/mlseal-ledger-witness" in ann["vault.hashicorp.com/agent-inject-template-ledger-url"]
    policy = (VAULT / "policies" / f"{role['token_policies'][0]}.hcl").read_text()
    assert 'path "database/creds/mlseal-ledger-witness"' in policy
    assert tpl["metadata"]["labels"]["mlseal.dev/ledger-client"] == "true"


def test_only_the_witness_policy_may_sign_checkpoints() -> None:
    signers = []
    for f in sorted((VAULT / "policies").glob("*.hcl")):
        text = f.read_text()
        for m in re.finditer(r'path "transit/sign/([^"]+)"\s*\{([^}]*)\}', text):
            name, body = m.group(1), m.group(2)
            if "deny" in body:
                continue
            if re.fullmatch(name.replace("*", ".*").replace("+", "[^/]+"), "mlseal-checkpoint"):
                signers.append(f.stem)
    assert signers == ["mlseal-witness"]
    roles = json.loads((VAULT / "kubernetes-roles.json").read_text())
    assert [r for r, v in roles.items() if "mlseal-witness" in v["token_policies"]] == ["mlseal-witness"]
    bootstrap = (VAULT / "bootstrap.sh").read_text()
    assert "mlseal-checkpoint:ecdsa-p256" in bootstrap


@pytest.mark.parametrize("path", BUILDS)
def test_webhook_never_judges_what_it_needs_to_start(path: str) -> None:
    vwc = one(path, "ValidatingWebhookConfiguration", "mlseal-model-admission")
    (wh,) = vwc["webhooks"]
    assert wh["failurePolicy"] == "Fail" and wh["sideEffects"] == "None" and wh["admissionReviewVersions"] == ["v1"]
    svc = one(path, "Service", wh["clientConfig"]["service"]["name"])
    assert wh["clientConfig"]["service"]["namespace"] == svc["metadata"]["namespace"] == "mlseal-system"
    assert wh["clientConfig"]["service"]["port"] == svc["spec"]["ports"][0]["port"]
    excluded = next(e for e in wh["namespaceSelector"]["matchExpressions"] if e["key"] == "kubernetes.io/metadata.name")
    assert excluded["operator"] == "NotIn"
    assert {"mlseal-system", "kube-system", "cert-manager", "vault"} <= set(excluded["values"])
    resources = {(g, r) for rule in wh["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    # Pods are the final gate; every pod-creating kind and KServe's kinds are judged too
    assert resources == {
        ("", "pods"), ("", "pods/ephemeralcontainers"), ("", "replicationcontrollers"),
        ("apps", "deployments"), ("apps", "replicasets"), ("apps", "statefulsets"), ("apps", "daemonsets"),
        ("batch", "jobs"), ("batch", "cronjobs"),
        ("serving.kserve.io", "inferenceservices"), ("serving.kserve.io", "trainedmodels"),
        ("serving.kserve.io", "servingruntimes"), ("serving.kserve.io", "clusterservingruntimes"),
    }
    assert all(set(rule["operations"]) == {"CREATE", "UPDATE"} for rule in wh["rules"])
    # opt-in by namespace label
    optin = next(e for e in wh["namespaceSelector"]["matchExpressions"] if e["key"] == "mlseal.dev/admission")
    assert optin == {"key": "mlseal.dev/admission", "operator": "In", "values": ["enforce"]}
    assert [c["name"] for c in wh.get("matchConditions", [])] == ["changes-what-runs"]
    labels = one(path, "Deployment", "mlseal-webhook")["spec"]["template"]["metadata"]["labels"]
    netpol = one(path, "NetworkPolicy", "mlseal-webhook")
    assert netpol["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert svc["spec"]["selector"].items() <= labels.items()
    for pdb in objects(path, "PodDisruptionBudget"):
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # the ledger's NetworkPolicy lets the webhook in, and the webhook's lets it out to the ledger
    if path != "base":
        ledger_np = one(path, "NetworkPolicy", "mlseal-ledger")
        sts_labels = one(path, "StatefulSet", "mlseal-ledger")["spec"]["template"]["metadata"]["labels"]
        assert ledger_np["spec"]["podSelector"]["matchLabels"].items() <= sts_labels.items()
        peers = [p.get("podSelector", {}).get("matchLabels", {}) for r in ledger_np["spec"]["ingress"]
                 for p in r["from"]]
        assert any(sel and sel.items() <= labels.items() for sel in peers)
        out = [p.get("podSelector", {}).get("matchLabels", {}) for r in netpol["spec"]["egress"] for p in r["to"]]
        assert any(sel and sel.items() <= sts_labels.items() for sel in out)
