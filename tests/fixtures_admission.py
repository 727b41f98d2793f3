"""Pytest fixtures for the admission area (loaded by conftest.py).

`admission_world` builds, through the ledger library, one SQLite ledger holding a model
lineage per scenario the webhook must tell apart (good, missing stage, failed gate,
untrusted signer, broken lineage, tampered entry, re-signed entry, no evaluation),
plus the trust and policy files beside it. `webhook_server` runs the real server over
real TLS on a random 127.0.0.1 port with certificates made by `cryptography`.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import hashlib
import http.client
import ipaddress
import json
import socket
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mlseal.admission import Policy, load_policy
from mlseal.ledger import open_ledger
from mlseal.ledger.entry import build_entry, record_of, split_entry
from mlseal.ledger.record import Component, InputRef, OutputRef, RecordDraft, Sha256Hex
from mlseal.signing.keys import LocalKeySigner

GATES = {"accuracy": {"min": 0.90}, "robust_accuracy": {"min": 0.70}}
#: the verifying loader (`mlseal fetch`) and a serving image the test policies allow
LOADER_IMAGE = "ghcr.io/mlseal/mlseal-python@sha256:" + "1" * 64
SERVER_IMAGE = "registry.example/serving/server@sha256:" + "2" * 64
IMAGES = ["registry.example/serving/*"]
GOOD_METRICS = {"accuracy": 0.95, "robust_accuracy": 0.81}


def sha(text: str) -> Sha256Hex:
    return Sha256Hex(hashlib.sha256(text.encode()).hexdigest())


@dataclass(frozen=True)
class Model:
    sha256: str
    uri: str
    seqs: dict[str, int] = field(default_factory=dict)


def build_lineage(
    led: Any,
    signer: LocalKeySigner,
    tag: str,
    *,
    stages: tuple[str, ...] = ("ingest", "anonymize", "train", "evaluate"),
    metrics: dict[str, float] | None = None,
    train_signer: LocalKeySigner | None = None,
    orphan_input: bool = False,
) -> Model:
    """Append a pipeline run's records: ingest -> anonymize (process) -> train -> evaluate."""
    seqs: dict[str, int] = {}
    raw = OutputRef(name="raw", uri=f"file:///data/{tag}/raw.csv", sha256=sha(f"{tag}/raw"))
    seqs["ingest"] = led.append(
        RecordDraft(stage="ingest", component=Component(name="ingest"), outputs=(raw,)),
        signer, signer_name="pipeline").seq
    data, data_seq = raw, seqs["ingest"]
    if "anonymize" in stages:
        clean = OutputRef(name="clean", uri=f"file:///data/{tag}/clean.csv", sha256=sha(f"{tag}/clean"))
        seqs["anonymize"] = led.append(RecordDraft(
            stage="process", component=Component(name="anonymize"),
            inputs=(InputRef(name="raw", uri=raw.uri, sha256=raw.sha256, producer_seq=data_seq),),
            outputs=(clean,)), signer, signer_name="pipeline").seq
        data, data_seq = clean, seqs["anonymize"]
    model = OutputRef(name="model", uri=f"s3://models/{tag}/model.joblib", sha256=sha(f"{tag}/model"),
                      media_type="application/vnd.mlseal.model")
    train_input = (InputRef(name="nowhere", uri="file:///tmp/x", sha256=sha(f"{tag}/orphan")) if orphan_input
                   else InputRef(name="data", uri=data.uri, sha256=data.sha256, producer_seq=data_seq))
    seqs["train"] = led.append(RecordDraft(
        stage="train", component=Component(name="train"), inputs=(train_input,), outputs=(model,),
        params={"n_estimators": 10}), train_signer or signer,
        signer_name="rogue" if train_signer else "pipeline").seq
    if "evaluate" in stages:
        seqs["evaluate"] = led.append(RecordDraft(
            stage="evaluate", component=Component(name="evaluate"),
            inputs=(InputRef(name="model", uri=model.uri, sha256=model.sha256, producer_seq=seqs["train"]),
                    InputRef(name="test", uri=data.uri, sha256=data.sha256, producer_seq=data_seq)),
            outputs=(OutputRef(name="metrics", uri=f"file:///data/{tag}/metrics.json", sha256=sha(f"{tag}/m")),),
            metrics=metrics if metrics is not None else GOOD_METRICS), signer, signer_name="pipeline").seq
    return Model(model.sha256, model.uri, seqs)


def sqlite_file(url: str) -> str:
    return url.removeprefix("sqlite:///")


def tamper_metrics(url: str, seq: int, **metrics: float) -> None:
    """Edit a stored entry's record in place, keeping the (now invalid) signature."""
    db = sqlite3.connect(sqlite_file(url))
    (data,) = db.execute("SELECT entry FROM mlseal_entries WHERE seq = ?", (seq,)).fetchone()
    part = split_entry(bytes(data))
    obj = json.loads(part.payload)
    obj["metrics"].update(metrics)
    payload = rfc8785.dumps(obj)
    forged = bytes(data).replace(base64.b64encode(part.payload), base64.b64encode(payload))
    db.execute("UPDATE mlseal_entries SET entry = ? WHERE seq = ?", (forged, seq))
    db.commit()
    db.close()


def resign_entry(url: str, seq: int, signer: LocalKeySigner, **changes: Any) -> None:
    """Replace a stored record by an edited one, validly signed by a trusted key."""
    db = sqlite3.connect(sqlite_file(url))
    (data,) = db.execute("SELECT entry FROM mlseal_entries WHERE seq = ?", (seq,)).fetchone()
    rec = dataclasses.replace(record_of(bytes(data)), **changes)
    db.execute("UPDATE mlseal_entries SET entry = ? WHERE seq = ?", (build_entry(rec, signer), seq))
    db.commit()
    db.close()


@dataclass
class AdmissionWorld:
    dir: Path
    ledger_url: str
    policy_path: Path
    policy: Policy
    signer: LocalKeySigner
    rogue: LocalKeySigner
    models: dict[str, Model]


def write_policy(d: Path, name: str = "policy.yaml", ledger: str | dict[str, str] = "sqlite:///ledger.db",
                 **extra: Any) -> Path:
    import yaml

    doc: dict[str, Any] = {
        "trust": "trust.yaml",
        "ledger": ledger,
        "require_stages": ["ingest", "anonymize", "train", "evaluate"],
        "gates": GATES,
        "mode": "enforce",
        "namespaces": {"staging": {"mode": "warn"}, "lab": {"gates": {"accuracy": {"min": 0.4}}, "require_stages": []}},
        "loader": {"image": LOADER_IMAGE},
        "images": IMAGES,
    }
    doc.update(extra)
    (d / name).write_text(yaml.safe_dump(doc))
    return d / name


def make_world(d: Path) -> AdmissionWorld:
    signer, rogue = LocalKeySigner.generate(), LocalKeySigner.generate()
    signer.save(d / "keys" / "pipeline.pem", d / "keys" / "pipeline.pub.pem")
    (d / "trust.yaml").write_text("signers:\n  - name: pipeline\n    public_key: keys/pipeline.pub.pem\n")
    url = "sqlite:///" + str(d / "ledger.db")
    models: dict[str, Model] = {}
    with open_ledger(url) as led:
        models["good"] = build_lineage(led, signer, "good")
        models["nostage"] = build_lineage(led, signer, "nostage", stages=("ingest", "train", "evaluate"))
        models["lowacc"] = build_lineage(led, signer, "lowacc", metrics={"accuracy": 0.52, "robust_accuracy": 0.8})
        models["untrusted"] = build_lineage(led, signer, "untrusted", train_signer=rogue)
        models["broken"] = build_lineage(led, signer, "broken", orphan_input=True)
        models["tampered"] = build_lineage(led, signer, "tampered", metrics={"accuracy": 0.5, "robust_accuracy": 0.5})
        models["resigned"] = build_lineage(led, signer, "resigned")
        models["noeval"] = build_lineage(led, signer, "noeval", stages=("ingest", "anonymize", "train"))
        build_lineage(led, signer, "tail")  # every scenario record has a successor (prev links)
    tamper_metrics(url, models["tampered"].seqs["evaluate"], accuracy=0.99, robust_accuracy=0.99)
    resign_entry(url, models["resigned"].seqs["train"], signer, params={"n_estimators": 11})
    policy_path = write_policy(d)
    return AdmissionWorld(d, url, policy_path, load_policy(policy_path), signer, rogue, models)


@pytest.fixture(scope="session")
def admission_world(tmp_path_factory: pytest.TempPathFactory) -> AdmissionWorld:
    return make_world(tmp_path_factory.mktemp("admission"))


# --- manifests and reviews ------------------------------------------------------------

def isvc(model: Model, *, namespace: str = "prod", name: str = "m", uri: str | None = None,
         form: str = "model") -> dict[str, Any]:
    storage = uri or model.uri
    if form == "model":
        predictor: dict[str, Any] = {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": storage}}
    elif form == "container":
        predictor = {"containers": [{"name": "kserve-container", "image": SERVER_IMAGE,
                                     "env": [{"name": "STORAGE_URI", "value": storage}]}]}
    else:
        predictor = {form: {"storageUri": storage}}
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace,
                     "annotations": {"mlseal.dev/model-sha256": model.sha256}},
        "spec": {"predictor": predictor},
    }


def loader(uri: str, sha256: str | None = None, *, dest: str = "/mnt/models") -> dict[str, Any]:
    """The verifying loader as an init container (docs/fetch.md): mlseal fetch SRC DEST."""
    env = [{"name": "MLSEAL_MODEL_SHA256", "value": sha256}] if sha256 else [
        {"name": "MLSEAL_MODEL_SHA256",
         "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['mlseal.dev/model-sha256']"}}}]
    return {"name": "mlseal-fetch", "image": LOADER_IMAGE, "command": ["mlseal", "fetch"], "args": [uri, dest],
            "env": env, "volumeMounts": [{"name": "model", "mountPath": dest}]}


def pod_template(model: Model, *, uri: str | None = None) -> dict[str, Any]:
    """A pod spec serving `model` through the loader: what a plain Deployment should run."""
    return {
        "initContainers": [loader(uri or model.uri)],
        "containers": [{"name": "server", "image": SERVER_IMAGE, "args": ["--model-dir=/mnt/models"],
                        "volumeMounts": [{"name": "model", "mountPath": "/mnt/models", "readOnly": True}]}],
        "volumes": [{"name": "model", "emptyDir": {}}],
    }


def deployment(model: Model, *, kind: str = "Deployment", namespace: str = "prod", on_template: bool = False,
               uri: str | None = None) -> dict[str, Any]:
    ann = {"mlseal.dev/model-sha256": model.sha256, "mlseal.dev/model-uri": uri or model.uri}
    meta: dict[str, Any] = {"name": "server", "namespace": namespace}
    template: dict[str, Any] = {"metadata": {"labels": {"app": "server"},
                                             "annotations": {"mlseal.dev/model-sha256": model.sha256}},
                                "spec": pod_template(model, uri=uri)}
    if on_template:
        template["metadata"]["annotations"] = ann
    else:
        meta["annotations"] = ann
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": meta,
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "server"}}, "template": template}}


def review(obj: Any, *, uid: str = "0df28fbd-5f5f-11e8-9c2d-fa7ae01bbebc", operation: str = "CREATE",
           dry_run: bool = False, old: Any = None) -> dict[str, Any]:
    meta = obj.get("metadata", {}) if isinstance(obj, dict) else {}
    kind = obj.get("kind", "") if isinstance(obj, dict) else ""
    group = "serving.kserve.io" if kind == "InferenceService" else "apps"
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": group, "version": "v1beta1" if group != "apps" else "v1", "kind": kind},
            "resource": {"group": group, "version": "v1", "resource": kind.lower() + "s"},
            "requestKind": {"group": group, "version": "v1", "kind": kind},
            "name": meta.get("name", ""),
            "namespace": meta.get("namespace"),
            "operation": operation,
            "userInfo": {"username": "alice@example.com", "groups": ["system:authenticated"]},
            "object": obj,
            "oldObject": old,
            "dryRun": dry_run,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


# --- TLS ---------------------------------------------------------------------------

@dataclass
class Pki:
    ca_key: ec.EllipticCurvePrivateKey
    ca_cert: x509.Certificate
    ca_path: Path

    def issue(self, cert_path: Path, key_path: Path, *, serial: int | None = None) -> int:
        """Write a server certificate for 127.0.0.1/localhost signed by the CA; return its serial."""
        key = ec.generate_private_key(ec.SECP256R1())
        serial = serial or x509.random_serial_number()
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mlseal-webhook")]))
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        # cert-manager/kubelet swap both files at once; write each atomically
        for path, data in ((key_path, key_pem), (cert_path, cert.public_bytes(serialization.Encoding.PEM))):
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        return serial

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_path))


def make_pki(d: Path) -> Pki:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mlseal test CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    d.mkdir(parents=True, exist_ok=True)
    (d / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Pki(key, cert, d / "ca.pem")


@dataclass
class RunningWebhook:
    port: int
    pki: Pki
    cert: Path
    key: Path
    controller: Any
    _local: threading.local = field(default_factory=threading.local)

    def connection(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.pki.client_context(), timeout=30)

    def request(self, method: str, path: str, body: bytes | None = None,
                conn: http.client.HTTPSConnection | None = None) -> tuple[int, bytes]:
        own = conn is None
        c = conn or self.connection()
        try:
            c.request(method, path, body=body, headers={"Content-Type": "application/json"})
            resp = c.getresponse()
            return resp.status, resp.read()
        finally:
            if own:
                c.close()

    def validate(self, review_obj: Any, conn: http.client.HTTPSConnection | None = None) -> dict[str, Any]:
        status, data = self.request("POST", "/validate", json.dumps(review_obj).encode(), conn)
        assert status == 200, (status, data[:300])
        out: dict[str, Any] = json.loads(data)
        return out

    def wait_ready(self, timeout: float = 30) -> None:
        """Until /readyz answers 200 (a server without /readyz is ready once it answers)."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.request("GET", "/readyz")[0]
            if status in (200, 404):
                return
            assert time.monotonic() < deadline, f"/readyz still answers {status}"
            time.sleep(0.05)

    def peer_serial(self) -> int:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as raw, \
                self.pki.client_context().wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number


@contextlib.contextmanager
def run_webhook(policy: Policy, tls_dir: Path, *, wait_view: bool = True, **kwargs: Any) -> Iterator[RunningWebhook]:
    """The real server (uvicorn + TLS) in a thread, on a random 127.0.0.1 port; with
    `wait_view`, returns once the first attempt to build its verified ledger view ended."""
    from mlseal.admission._server import build_server

    pki = make_pki(tls_dir)
    cert, key = tls_dir / "tls.crt", tls_dir / "tls.key"
    pki.issue(cert, key)
    server, controller = build_server(policy, cert=cert, key=key, host="127.0.0.1", port=0, **kwargs)
    # IPPROTO_TCP explicitly: asyncio only disables Nagle on sockets whose proto says TCP,
    # and a proto-0 socket would add a delayed-ACK stall (~40 ms) to every response
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("webhook server did not start")
        time.sleep(0.02)
    attempted = getattr(controller, "attempted", None)
    if attempted is not None and wait_view:  # the first attempt to build the verified ledger view
        attempted.wait(30)
    try:
        yield RunningWebhook(port, pki, cert, key, controller)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="session")
def webhook(admission_world: AdmissionWorld, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningWebhook]:
    with run_webhook(admission_world.policy, tmp_path_factory.mktemp("tls"), reload_interval=0.1) as w:
        yield w


@pytest.fixture
def webhook_factory(tmp_path: Path) -> Iterator[Callable[..., RunningWebhook]]:
    stack = contextlib.ExitStack()
    started = [0]

    def start(policy: Policy, **kwargs: Any) -> RunningWebhook:
        started[0] += 1
        return stack.enter_context(run_webhook(policy, tmp_path / f"tls{started[0]}", **kwargs))

    with stack:
        yield start
