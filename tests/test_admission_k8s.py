"""infra/k8s: every manifest validated offline, and the pieces checked against each other.

Built-in kinds are validated with `kubernetes-validate` (strict: unknown fields fail)
against the newest Kubernetes schema it ships. cert-manager's Issuer/Certificate are
CRDs it cannot know; they are checked structurally. The kustomization is built by
`kubectl kustomize` when kubectl is installed, and always by a small in-test renderer
(resources + namespace + configMapGenerator + images), and the two must agree.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils

from mlseal.admission import load_policy
from mlseal.cli import build_parser
from tests.conftest import REPO

K8S = REPO / "infra" / "k8s"
CRD_GROUPS = {"cert-manager.io/v1"}
CLUSTER_SCOPED = {"Namespace", "ValidatingWebhookConfiguration", "ClusterRole", "ClusterRoleBinding"}


def render() -> list[dict[str, Any]]:
    """What `kustomize build` makes of infra/k8s, for the features the kustomization uses."""
    k = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    known = {"apiVersion", "kind", "namespace", "labels", "resources", "configMapGenerator", "images"}
    assert set(k) <= known, f"kustomization uses {set(k) - known}; teach render() about it"
    docs: list[dict[str, Any]] = []
    for res in k["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S / res).read_text()) if d]
    for gen in k.get("configMapGenerator", []):
        data = {}
        for f in gen["files"]:
            key, _, path = f.rpartition("=")
            data[key or Path(path).name] = (K8S / path).read_text()
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data})
    images = {i["name"]: f"{i['newName']}:{i['newTag']}" for i in k.get("images", [])}
    for d in docs:
        if d["kind"] not in CLUSTER_SCOPED:
            d["metadata"]["namespace"] = k["namespace"]
        for c in d.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            c["image"] = images.get(c["image"], c["image"])
    return docs


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return render()


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def test_builtin_kinds_pass_kubernetes_validate(docs: list[dict[str, Any]]) -> None:
    version = kv_utils.latest_version()
    checked = set()
    for d in docs:
        if d["apiVersion"] in CRD_GROUPS:
            continue
        kubernetes_validate.validate(d, version, strict=True)
        checked.add(d["kind"])
    assert checked >= {"Namespace", "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Deployment",
                       "PodDisruptionBudget", "Service", "NetworkPolicy", "ValidatingWebhookConfiguration"}


def test_the_validator_rejects_a_bad_manifest(docs: list[dict[str, Any]]) -> None:
    bad = copy.deepcopy(one(docs, "Deployment"))
    bad["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = {"runAsNonRoot": True}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, kv_utils.latest_version(), strict=True)
    bad = copy.deepcopy(one(docs, "ValidatingWebhookConfiguration"))
    bad["webhooks"][0]["timeoutSeconds"] = "5"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, kv_utils.latest_version(), strict=True)


def test_kubectl_kustomize_agrees(docs: list[dict[str, Any]]) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed; the in-test renderer alone was checked")
    out = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=True)
    built = [d for d in yaml.safe_load_all(out.stdout) if d]

    def key(d: dict[str, Any], hashed: bool = True) -> tuple[str, str, str]:
        name = d["metadata"]["name"]
        if d["kind"] == "ConfigMap" and hashed:
            name = name.rsplit("-", 1)[0]  # kustomize's content hash suffix
        return d["kind"], name, d["metadata"].get("namespace", "")

    assert sorted(map(key, built)) == sorted(key(d, hashed=False) for d in docs)
    dep = one(built, "Deployment")
    # kustomize rewrites the generated ConfigMap's name where the Deployment mounts it
    cm = one(built, "ConfigMap")["metadata"]["name"]
    assert {v.get("configMap", {}).get("name") for v in dep["spec"]["template"]["spec"]["volumes"]} >= {cm}
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/mlseal/mlseal:0.1.0"


def test_cert_manager_resources(docs: list[dict[str, Any]]) -> None:
    issuers = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Issuer"}
    certs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Certificate"}
    for c in certs.values():
        assert c["apiVersion"] == "cert-manager.io/v1"
        spec = c["spec"]
        assert set(spec) <= {"secretName", "isCA", "commonName", "duration", "renewBefore", "dnsNames", "usages",
                             "privateKey", "issuerRef"}, "unknown Certificate field"
        assert spec["secretName"] and spec["issuerRef"]["kind"] == "Issuer"
        assert spec["issuerRef"]["name"] in issuers, "certificate names an issuer that is not defined"
    for i in issuers.values():
        assert i["apiVersion"] == "cert-manager.io/v1"
        (kind,) = i["spec"]
        assert kind in {"selfSigned", "ca"}
        if kind == "ca":
            ca_secret = i["spec"]["ca"]["secretName"]
            assert any(c["spec"]["secretName"] == ca_secret and c["spec"].get("isCA") for c in certs.values())
    serving = certs["mlseal-webhook"]
    svc = one(docs, "Service", "mlseal-webhook")
    assert f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc" in serving["spec"]["dnsNames"]
    assert serving["spec"]["privateKey"]["rotationPolicy"] == "Always"


def test_webhook_configuration(docs: list[dict[str, Any]]) -> None:
    vwc = one(docs, "ValidatingWebhookConfiguration")
    (wh,) = vwc["webhooks"]
    assert wh["failurePolicy"] == "Fail" and wh["timeoutSeconds"] == 5 and wh["sideEffects"] == "None"
    assert wh["admissionReviewVersions"] == ["v1"]
    svc = one(docs, "Service", wh["clientConfig"]["service"]["name"])
    assert wh["clientConfig"]["service"]["namespace"] == svc["metadata"]["namespace"]
    assert wh["clientConfig"]["service"]["path"] == "/validate"
    assert wh["clientConfig"]["service"]["port"] == svc["spec"]["ports"][0]["port"]
    # its own namespace is excluded, so the webhook can never block its own pods
    own = one(docs, "Deployment")["metadata"]["namespace"]
    excluded = next(e for e in wh["namespaceSelector"]["matchExpressions"]
                    if e["key"] == "kubernetes.io/metadata.name")
    assert excluded["operator"] == "NotIn" and own in excluded["values"]
    ns = one(docs, "Namespace", own)
    exempt = next(e for e in wh["namespaceSelector"]["matchExpressions"] if e["key"] == "mlseal.dev/admission")
    assert ns["metadata"]["labels"]["mlseal.dev/admission"] in exempt["values"]
    resources = {(g, r) for rule in wh["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    assert resources == {("serving.kserve.io", "inferenceservices"), ("apps", "deployments"), ("apps", "statefulsets")}
    assert all(set(rule["operations"]) == {"CREATE", "UPDATE"} for rule in wh["rules"])
    cert_ref = vwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
    ns_name, cert_name = cert_ref.split("/")
    assert one(docs, "Certificate", cert_name)["metadata"]["namespace"] == ns_name


def test_deployment_hardening(docs: list[dict[str, Any]]) -> None:
    dep = one(docs, "Deployment")
    spec = dep["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    (c,) = pod["containers"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory"} <= set(c["resources"]["limits"]) and {"cpu", "memory"} <= set(c["resources"]["requests"])
    labels = spec["template"]["metadata"]["labels"]
    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        sel = (one(docs, kind)["spec"].get("selector") or one(docs, kind)["spec"]["podSelector"])["matchLabels"]
        assert sel.items() <= labels.items(), f"{kind} selects no webhook pod"
    assert one(docs, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    assert one(docs, "Service")["spec"]["selector"].items() <= labels.items()
    # the probes and the Service reach the port the server listens on
    args = build_parser().parse_args(c["args"])
    assert args.func.__module__ == "mlseal._cli.webhook"
    assert c["ports"][0]["containerPort"] == args.port
    assert c["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    # certificate and policy files are mounted where the arguments say
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in pod["volumes"]}
    tls_vol = next(n for n, p in mounts.items() if args.tls_cert.startswith(p + "/") and "secret" in vols[n])
    assert vols[tls_vol]["secret"]["secretName"] == one(docs, "Certificate", "mlseal-webhook")["spec"]["secretName"]
    assert args.tls_key.startswith(mounts[tls_vol] + "/")
    policy_vol = next(n for n, p in mounts.items() if args.policy == p + "/policy.yaml")
    assert vols[policy_vol]["configMap"]["name"] == one(docs, "ConfigMap")["metadata"]["name"]


def test_ledger_dsn_comes_from_vault(docs: list[dict[str, Any]], tmp_path: Path) -> None:
    dep = one(docs, "Deployment")
    ann = dep["spec"]["template"]["metadata"]["annotations"]
    assert ann["vault.hashicorp.com/agent-inject"] == "true"
    role = ann["vault.hashicorp.com/role"]
    roles = json.loads((REPO / "infra" / "vault" / "kubernetes-roles.json").read_text())
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] in roles[role]["bound_service_account_names"]
    assert dep["metadata"]["namespace"] in roles[role]["bound_service_account_namespaces"]
    template = ann["vault.hashicorp.com/agent-inject-template-ledger-url"]
    assert "postgresql://" in template and ".Data.password" in template
    # no credential is written into any manifest
    text = "\n".join(yaml.safe_dump(d) for d in docs)
    assert "password=" not in text.lower()
    # the policy the ConfigMap carries loads, and reads the URL from the Vault-rendered file
    cm = one(docs, "ConfigMap")
    for name, content in cm["data"].items():
        (tmp_path / name).write_text(content)
    policy = load_policy(tmp_path / "policy.yaml")
    assert str(policy.ledger_url_file) == "/vault/secrets/ledger-url"
    assert policy.rules_for("models-staging").mode.value == "warn"
    assert policy.trust.signers, "the trust file names the pipeline key"
