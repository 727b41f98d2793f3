"""The webhook over real TLS: real AdmissionReview v1 JSON to the running uvicorn server.

The server runs in-process (a thread) on a random 127.0.0.1 port with a certificate
issued by a test CA; clients verify it against that CA. The ledger behind it is built
through the ledger library (tests/fixtures_admission.py).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlseal.admission import load_policy
from mlseal.ledger import open_ledger
from mlseal.ledger.record import RecordDraft
from tests.fixtures_admission import (
    AdmissionWorld,
    Model,
    RunningWebhook,
    deployment,
    isvc,
    make_pki,
    review,
    sha,
    write_policy,
)


def response(out: dict[str, Any]) -> dict[str, Any]:
    assert out["apiVersion"] == "admission.k8s.io/v1" and out["kind"] == "AdmissionReview"
    r: dict[str, Any] = out["response"]
    return r


def test_allow_echoes_uid(webhook: RunningWebhook, admission_world: AdmissionWorld) -> None:
    r = response(webhook.validate(review(isvc(admission_world.models["good"]), uid="uid-allow-1")))
    assert r == {"uid": "uid-allow-1", "allowed": True}


@pytest.mark.parametrize(
    ("manifest", "words"),
    [
        (lambda w: isvc(Model(sha("unknown"), "s3://x")), "is not in the ledger"),
        (lambda w: isvc(w.models["untrusted"]), "untrusted signers"),
        (lambda w: isvc(w.models["nostage"]), "required stage 'anonymize' is missing"),
        (lambda w: isvc(w.models["lowacc"]), "gate accuracy >= 0.9 failed"),
        (lambda w: isvc(w.models["good"], uri="s3://models/other/model.joblib"), "is not where the ledger recorded"),
        (lambda w: isvc(w.models["broken"]), "lineage is broken"),
        (lambda w: isvc(w.models["tampered"]), "ledger tampering"),
        (lambda w: isvc(w.models["resigned"]), "ledger tampering"),
        (lambda w: deployment(w.models["lowacc"], kind="StatefulSet"), "gate accuracy"),
    ],
    ids=["unknown-digest", "untrusted-signer", "missing-stage", "failed-gate", "uri-mismatch", "broken-lineage",
         "tampered-entry", "resigned-entry", "statefulset-gate"],
)
def test_deny_with_reason(webhook: RunningWebhook, admission_world: AdmissionWorld, manifest: Any,
                          words: str) -> None:
    r = response(webhook.validate(review(manifest(admission_world), uid="uid-deny")))
    assert r["uid"] == "uid-deny"
    assert r["allowed"] is False
    assert r["status"]["code"] == 403
    assert words in r["status"]["message"], r["status"]["message"]


def test_warn_mode(webhook: RunningWebhook, admission_world: AdmissionWorld) -> None:
    r = response(webhook.validate(review(isvc(admission_world.models["lowacc"], namespace="staging"))))
    assert r["allowed"] is True
    assert "status" not in r
    assert any("accuracy = 0.52" in w for w in r["warnings"])


def test_dry_run_and_update(webhook: RunningWebhook, admission_world: AdmissionWorld,
                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mlseal.audit")
    w = admission_world.models
    # a dry run is decided the same way and audited as a dry run
    r = response(webhook.validate(review(isvc(w["lowacc"]), uid="dry-1", dry_run=True)))
    assert r["allowed"] is False
    # UPDATE is judged on the new object
    r = response(webhook.validate(review(isvc(w["lowacc"]), uid="upd-1", operation="UPDATE", old=isvc(w["good"]))))
    assert r["allowed"] is False
    r = response(webhook.validate(review(isvc(w["good"]), uid="upd-2", operation="UPDATE", old=isvc(w["lowacc"]))))
    assert r["allowed"] is True
    # an object being deleted may drop its finalizers; removing a model is never blocked
    leaving = isvc(w["lowacc"])
    leaving["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert response(webhook.validate(review(leaving, operation="UPDATE", old=leaving)))["allowed"] is True
    assert response(webhook.validate(review(None, operation="DELETE", old=isvc(w["lowacc"]))))["allowed"] is True
    lines = [json.loads(rec.getMessage()) for rec in caplog.records if rec.name == "mlseal.audit"]
    by_uid = {line["uid"]: line for line in lines}
    assert by_uid["dry-1"]["dry_run"] is True and by_uid["dry-1"]["allowed"] is False
    assert by_uid["upd-1"]["operation"] == "UPDATE" and by_uid["upd-1"]["codes"] == ["gate_failed"]
    assert by_uid["upd-2"]["model_sha256"] == w["good"].sha256
    assert by_uid["upd-2"]["user"] == "alice@example.com"


def test_audit_log_carries_no_secrets(webhook: RunningWebhook, admission_world: AdmissionWorld,
                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mlseal.audit")
    leaky = isvc(admission_world.models["good"], uri="https://svc:s3cr3t-Pa55@store/m?X-Amz-Signature=deadbeef")
    r = response(webhook.validate(review(leaky, uid="leak-1")))
    assert r["allowed"] is False
    text = "\n".join(rec.getMessage() for rec in caplog.records) + json.dumps(r)
    assert "uid" in text and "leak-1" in text
    assert "s3cr3t-Pa55" not in text and "deadbeef" not in text


def test_healthz_and_metrics(webhook: RunningWebhook, admission_world: AdmissionWorld) -> None:
    status, body = webhook.request("GET", "/healthz")
    assert status == 200 and json.loads(body) == {"status": "ok"}
    before = webhook.controller.metrics.decisions.value("denied", "gate_failed")
    hits = webhook.controller.metrics.cache.value("hit")
    conn = webhook.connection()
    for _ in range(3):
        webhook.validate(review(isvc(admission_world.models["lowacc"])), conn)
    conn.close()
    status, body = webhook.request("GET", "/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}  # the Prometheus parser
    assert families["mlseal_admission_decisions"].type == "counter"
    denied = [s.value for s in families["mlseal_admission_decisions"].samples
              if s.name == "mlseal_admission_decisions_total"
              and s.labels == {"result": "denied", "reason": "gate_failed"}]
    assert denied and denied[0] >= before + 3
    assert webhook.controller.metrics.cache.value("hit") >= hits + 2
    latency = families["mlseal_admission_decision_duration_seconds"]
    assert latency.type == "histogram"
    samples = {(s.name, s.labels.get("le")): s.value for s in latency.samples}
    assert samples[("mlseal_admission_decision_duration_seconds_bucket", "+Inf")] == samples[
        ("mlseal_admission_decision_duration_seconds_count", None)] >= 3
    assert "process_resident_memory_bytes" in families  # the process collector


def test_cache_follows_the_ledger_head(webhook: RunningWebhook, admission_world: AdmissionWorld) -> None:
    m = webhook.controller.metrics
    good = review(isvc(admission_world.models["good"]))
    webhook.validate(good)
    hits = m.cache.value("hit")
    webhook.validate(good)
    assert m.cache.value("hit") == hits + 1
    with open_ledger(admission_world.ledger_url) as led:
        led.append(RecordDraft(stage="ingest"), admission_world.signer, signer_name="pipeline")
    # within a head refresh (~0.1 s) the new head keys the cache: decided afresh
    deadline = time.monotonic() + 5
    while True:
        before = m.cache.value("hit")
        assert response(webhook.validate(good))["allowed"] is True
        if m.cache.value("hit") == before:
            break
        assert time.monotonic() < deadline, "the cache never noticed the append"
        time.sleep(0.05)


def test_not_an_admission_review(webhook: RunningWebhook) -> None:
    for body in (b"not json", b"[]", json.dumps({"apiVersion": "admission.k8s.io/v1beta1",
                                                  "kind": "AdmissionReview", "request": {"uid": "u"}}).encode()):
        status, data = webhook.request("POST", "/validate", body)
        assert status == 400
        assert json.loads(data)["response"]["allowed"] is False
    status, data = webhook.request("POST", "/validate", b"{" + b" " * (9 * 1024 * 1024) + b"}")
    assert status == 413 and json.loads(data)["response"]["allowed"] is False
    status, _ = webhook.request("GET", "/validate")
    assert status == 405
    assert webhook.request("GET", "/healthz")[0] == 200


def test_ledger_unreachable_denies_with_reason(webhook_factory: Any, admission_world: AdmissionWorld,
                                              tmp_path: Path) -> None:
    p = write_policy(admission_world.dir, "gone.yaml", ledger="sqlite:///" + str(tmp_path / "gone" / "ledger.db"))
    server = webhook_factory(load_policy(p))
    for ns in ("prod", "staging"):  # warn mode fails closed too
        r = response(server.validate(review(isvc(admission_world.models["good"], namespace=ns))))
        assert r["allowed"] is False
        assert "ledger is unreachable" in r["status"]["message"]
    assert server.controller.metrics.decisions.value("denied", "ledger_unavailable") == 2


def test_postgres_ledger_down_denies(webhook_factory: Any, admission_world: AdmissionWorld) -> None:
    p = write_policy(admission_world.dir, "pgdown.yaml", ledger="postgresql://postgres@127.0.0.1:1/test")
    server = webhook_factory(load_policy(p))
    r = response(server.validate(review(isvc(admission_world.models["good"]))))
    assert r["allowed"] is False and "ledger is unreachable" in r["status"]["message"]


def test_certificate_rotation_without_restart(webhook_factory: Any, admission_world: AdmissionWorld) -> None:
    server = webhook_factory(admission_world.policy, reload_interval=0.05)
    first = server.peer_serial()
    keep_alive = server.connection()
    assert response(server.validate(review(isvc(admission_world.models["good"])), keep_alive))["allowed"]
    new = server.pki.issue(server.cert, server.key)
    assert new != first
    deadline = time.monotonic() + 10
    while server.peer_serial() != new:
        assert time.monotonic() < deadline, "rotated certificate not picked up"
        time.sleep(0.05)
    assert server.controller.metrics.tls_reloads.value("ok") == 1
    # new connections verify against the new certificate; the old connection keeps working
    assert response(server.validate(review(isvc(admission_world.models["good"]))))["allowed"]
    assert response(server.validate(review(isvc(admission_world.models["good"])), keep_alive))["allowed"]
    keep_alive.close()
    # a half-written rotation (key that does not match) keeps the current certificate
    server.key.write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    deadline = time.monotonic() + 10
    while server.controller.metrics.tls_reloads.value("failed") < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert server.peer_serial() == new


def test_ledger_url_file_is_read_at_connect(webhook_factory: Any, admission_world: AdmissionWorld,
                                            tmp_path: Path) -> None:
    url_file = tmp_path / "ledger-url"  # what Vault Agent renders in the pod
    p = write_policy(admission_world.dir, "urlfile.yaml", ledger={"url_file": str(url_file)})
    server = webhook_factory(load_policy(p))
    r = response(server.validate(review(isvc(admission_world.models["good"]))))
    assert r["allowed"] is False and "cannot read the ledger URL file" in r["status"]["message"]
    url_file.write_text(admission_world.ledger_url + "\n")
    server.wait_ready()  # the next refresh tick reads the file and verifies the ledger
    assert response(server.validate(review(isvc(admission_world.models["good"]))))["allowed"] is True


def test_slow_ledger_denies_at_once_until_the_view_is_built(webhook_factory: Any,
                                                            admission_world: AdmissionWorld) -> None:
    """Decisions never wait for the ledger: while the view is being built they deny at once,
    /readyz says not ready; once built, decisions come from it."""
    release = threading.Event()

    def hanging() -> Any:
        release.wait(20)
        return open_ledger(admission_world.ledger_url, create=False)

    server = webhook_factory(admission_world.policy, ledger_factory=hanging, wait_view=False)
    try:
        assert server.request("GET", "/readyz")[0] == 503
        assert server.request("GET", "/healthz")[0] == 200  # alive, not ready
        t = time.monotonic()
        r = response(server.validate(review(isvc(admission_world.models["good"]), uid="slow-1")))
        assert time.monotonic() - t < 4
        assert r["uid"] == "slow-1" and r["allowed"] is False
        assert "still reading and verifying the ledger" in r["status"]["message"]
    finally:
        release.set()
    server.wait_ready()
    assert response(server.validate(review(isvc(admission_world.models["good"]))))["allowed"] is True


def test_internal_error_denies(webhook_factory: Any, admission_world: AdmissionWorld,
                               caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlseal.admission import webhook as webhook_module

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(webhook_module, "check_model", broken)
    server = webhook_factory(admission_world.policy, cache_size=0)
    r = response(server.validate(review(isvc(admission_world.models["good"]))))
    assert r["allowed"] is False
    assert "internal error while deciding from the verified ledger view (ZeroDivisionError)" in \
        r["status"]["message"]
    # the deny says "see the webhook's log": the bug's traceback is there
    logged = [rec for rec in caplog.records if rec.name == "mlseal.admission.webhook" and rec.exc_info]
    assert any(rec.exc_info[0] is ZeroDivisionError for rec in logged if rec.exc_info)
    assert server.request("GET", "/healthz")[0] == 200


@pytest.mark.parametrize(("flags", "words"), [
    (["--threads", "0"], "--threads must be at least 1, got 0"),
    (["--cache-size", "-1"], "--cache-size must be at least 0, got -1"),
    (["--cache-ttl", "-5"], "--cache-ttl must be at least 0, got -5.0"),
    (["--max-staleness", "-3"], "--max-staleness must be at least 0, got -3.0"),
    (["--reload-interval", "0"], "--reload-interval must be a positive number of seconds, got 0.0"),
    (["--port", "0"], "--port must be 1-65535, got 0"),
])
def test_serve_refuses_bad_settings_before_starting(admission_world: AdmissionWorld, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str], flags: list[str],
                                                    words: str) -> None:
    from mlseal.cli import main

    pki = make_pki(tmp_path)
    pki.issue(tmp_path / "tls.crt", tmp_path / "tls.key")
    argv = ["webhook", "serve", "--policy", str(admission_world.policy_path),
            "--tls-cert", str(tmp_path / "tls.crt"), "--tls-key", str(tmp_path / "tls.key"), *flags]
    assert main(argv) == 2
    out = capsys.readouterr()
    assert out.out == "" and f"mlseal: error: {words}" in out.err


def test_serve_that_cannot_bind_is_mlseal_error(admission_world: AdmissionWorld, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """uvicorn exits the process when it cannot listen; the CLI must exit 2 with a reason."""
    import socket

    from mlseal.admission import _server
    from mlseal.admission._server import serve
    from mlseal.errors import InfrastructureError

    monkeypatch.setattr(_server, "configure_audit_log", lambda stream=None: None)  # keep caplog's view
    pki = make_pki(tmp_path)
    pki.issue(tmp_path / "tls.crt", tmp_path / "tls.key")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(InfrastructureError, match=f"could not start on 127.0.0.1:{port}"):
            serve(admission_world.policy, cert=tmp_path / "tls.crt", key=tmp_path / "tls.key",
                  host="127.0.0.1", port=port)
