"""The admission engine's decision assembly, pinned where mutation testing found it unpinned.

A workload can fail its own checks (an image not pinned by digest) while its model
verifies, or the other way round; the decision must carry both, deny in enforce mode,
and fail closed when the ledger cannot be read even in warn mode. Records are named in
reasons as ``record N (stage name)``: the record an operator looks up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlseal.admission import Reason, decide, load_policy
from mlseal.errors import ConfigurationError, InfrastructureError
from mlseal.ledger import open_ledger
from mlseal.ledger.record import Component, InputRef, OutputRef, RecordDraft, Status
from mlseal.signing.keys import LocalKeySigner
from tests.fixtures_admission import AdmissionWorld, isvc, sha, write_policy

UNPINNED = "registry.example/serving/server:latest"


def unpinned(manifest: dict[str, Any]) -> dict[str, Any]:
    """The model served by a container whose image is a tag, not a digest."""
    manifest["spec"]["predictor"]["containers"][0]["image"] = UNPINNED
    return manifest


class Down:
    """A ledger that does not answer."""

    def __getattr__(self, name: str) -> Any:
        def fail(*_a: Any, **_k: Any) -> Any:
            raise InfrastructureError("ledger: connection refused")

        return fail


def test_a_workload_finding_denies_a_verified_model(admission_world: AdmissionWorld) -> None:
    w = admission_world
    d = decide(unpinned(isvc(w.models["good"], form="container")), w.policy)
    assert not d.allowed and d.codes == (Reason.IMAGE_UNPINNED,), d.reasons
    assert UNPINNED in d.reasons[0] and "not pinned by digest" in d.reasons[0]


def test_warn_mode_reports_the_workload_and_the_model(admission_world: AdmissionWorld) -> None:
    w = admission_world
    d = decide(unpinned(isvc(w.models["lowacc"], form="container", namespace="staging")), w.policy)
    assert d.allowed and d.reasons == []
    assert d.codes == (Reason.IMAGE_UNPINNED, Reason.GATE_FAILED), d.warnings
    assert "not pinned by digest" in d.warnings[0] and "accuracy = 0.52" in d.warnings[1]


def test_enforce_mode_denies_for_the_workload_and_the_model(admission_world: AdmissionWorld) -> None:
    w = admission_world
    d = decide(unpinned(isvc(w.models["lowacc"], form="container")), w.policy)
    assert not d.allowed and d.codes == (Reason.IMAGE_UNPINNED, Reason.GATE_FAILED), d.reasons
    assert "not pinned by digest" in d.reasons[0] and "accuracy = 0.52" in d.reasons[1]


def test_unreadable_ledger_denies_in_warn_mode_with_the_workload_findings(admission_world: AdmissionWorld) -> None:
    w = admission_world
    d = decide(unpinned(isvc(w.models["good"], form="container", namespace="staging")), w.policy, ledger=Down())
    assert not d.allowed and d.warnings == []
    assert d.codes == (Reason.IMAGE_UNPINNED, Reason.LEDGER_UNAVAILABLE), d.reasons
    assert "not pinned by digest" in d.reasons[0]
    assert "the ledger could not be read (ledger: connection refused)" in d.reasons[1]


def test_a_manifest_that_is_not_an_object_is_denied(admission_world: AdmissionWorld) -> None:
    d = decide([], admission_world.policy)  # type: ignore[arg-type]
    assert not d.allowed and "must be a JSON/YAML object" in d.reasons[0]


def _world(d: Path, model_uri: str = "s3://m/model.joblib", *, evaluate: bool = True, linked: bool = True,
           eval_status: Status = Status.OK, evaluations: int = 1, ingest_signer: LocalKeySigner | None = None,
           **policy: Any) -> tuple[Any, str]:
    """ingest -> train (component "fit") -> evaluate (accuracy 0.5) -> a successor; the policy.
    ``linked=False``: the train record names its input by digest only (no producer seq)."""
    signer = LocalKeySigner.generate()
    signer.save(d / "keys" / "pipeline.pem", d / "keys" / "pipeline.pub.pem")
    (d / "trust.yaml").write_text("signers:\n  - name: pipeline\n    public_key: keys/pipeline.pub.pem\n")
    url = f"sqlite:///{d}/ledger.db"
    raw = OutputRef(name="raw", uri="file:///raw.csv", sha256=sha("raw"))
    model = OutputRef(name="model", uri=model_uri, sha256=sha("model"))
    with open_ledger(url) as led:
        led.append(RecordDraft(stage="ingest", component=Component(name="ingest"), outputs=(raw,)),
                   ingest_signer or signer, signer_name="pipeline")
        led.append(RecordDraft(stage="train", component=Component(name="fit"),
                               inputs=(InputRef(name="data", uri=raw.uri, sha256=raw.sha256,
                                                producer_seq=0 if linked else None),),
                               outputs=(model,)), signer, signer_name="pipeline")
        ins = (InputRef(name="model", uri=model.uri, sha256=model.sha256, producer_seq=1),)
        for _ in range(evaluations if evaluate else 0):
            led.append(RecordDraft(stage="evaluate", component=Component(name="evaluate"), inputs=ins,
                                   metrics={"accuracy": 0.5, "robust_accuracy": 0.9}, status=eval_status),
                       signer, signer_name="pipeline")
        # the raw data recorded again, later: not the producer of what the train record read
        led.append(RecordDraft(stage="ingest", component=Component(name="ingest"), outputs=(raw,)), signer,
                   signer_name="pipeline")
        led.append(RecordDraft(stage="ingest"), signer, signer_name="pipeline")
    return load_policy(write_policy(d, ledger=url, **policy)), model.sha256


def _manifest(sha256: str, uri: str) -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": "m", "namespace": "prod", "annotations": {"mlseal.dev/model-sha256": sha256}},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": uri}}},
    }


def test_records_are_named_by_seq_stage_and_component(tmp_path: Path) -> None:
    policy, model = _world(tmp_path)
    text = " | ".join(decide(_manifest(model, "s3://m/copy.joblib"), policy).reasons)
    assert "record 1 (train fit) wrote it to 's3://m/model.joblib'" in text  # a component named apart from its stage
    assert "failed: record 2 (evaluate) measured accuracy = 0.5" in text  # named as its stage: once


def test_a_recorded_directory_uri_matches_with_or_without_its_slash(tmp_path: Path) -> None:
    policy, model = _world(tmp_path, "s3://m/model/")
    for uri in ("s3://m/model", "s3://m/model/"):
        assert Reason.URI_MISMATCH not in decide(_manifest(model, uri), policy).codes
    assert Reason.URI_MISMATCH in decide(_manifest(model, "s3://m/other/"), policy).codes


def test_serving_uris_map_the_recorded_place_with_or_without_a_slash(tmp_path: Path) -> None:
    policy, model = _world(tmp_path, "minio://mlpipeline/run/model/",
                           serving_uris={"minio://mlpipeline/": "s3://mlpipeline/"})
    for uri in ("s3://mlpipeline/run/model", "s3://mlpipeline/run/model/", "minio://mlpipeline/run/model"):
        assert Reason.URI_MISMATCH not in decide(_manifest(model, uri), policy).codes, uri
    assert Reason.URI_MISMATCH in decide(_manifest(model, "s3://mlpipeline/run/other"), policy).codes


def test_a_model_recorded_only_by_untrusted_signers_is_named(admission_world: AdmissionWorld) -> None:
    m = admission_world.models["untrusted"]
    d = decide(isvc(m), admission_world.policy)
    [reason] = [r for r in d.reasons if "recorded only by untrusted signers" in r]
    assert f"model sha256 {m.sha256[:16]}… is recorded only by untrusted signers (entry " in reason
    assert "which the trust file does not list)" in reason


def test_an_input_recorded_again_later_does_not_break_the_lineage(tmp_path: Path) -> None:
    policy, model = _world(tmp_path, linked=False, gates={}, require_stages=["ingest", "train"])
    d = decide(_manifest(model, "s3://m/model.joblib"), policy)
    assert d.allowed, d.reasons


def test_too_many_records_naming_the_model_deny_as_broken_lineage(tmp_path: Path, monkeypatch: Any) -> None:
    from mlseal.ledger import trusted

    policy, model = _world(tmp_path, linked=False, gates={}, require_stages=[])
    monkeypatch.setattr(trusted, "MAX_CANDIDATES", 0)
    d = decide(_manifest(model, "s3://m/model.joblib"), policy)
    assert not d.allowed and d.codes == (Reason.BROKEN_LINEAGE,), d.reasons
    assert d.reasons[0].startswith("model: ") and "more than the 0" in d.reasons[0]


def test_no_evaluation_when_only_the_evaluation_rules_require_one(tmp_path: Path) -> None:
    policy, model = _world(tmp_path, evaluate=False, gates={}, require_stages=[], evaluation={"held_out": True})
    d = decide(_manifest(model, "s3://m/model.joblib"), policy)
    assert not d.allowed and d.codes == (Reason.NO_EVALUATION,), d.reasons
    assert "the policy requires one (evaluation rules)" in d.reasons[0]


def test_no_evaluation_needed_when_nothing_requires_one(tmp_path: Path) -> None:
    policy, model = _world(tmp_path / "a", evaluate=False, gates={}, require_stages=[])
    assert decide(_manifest(model, "s3://m/model.joblib"), policy).allowed


def test_held_out_rule_names_an_evaluation_that_read_only_the_model(tmp_path: Path) -> None:
    policy, model = _world(tmp_path, gates={}, require_stages=[], evaluation={"held_out": True})
    d = decide(_manifest(model, "s3://m/model.joblib"), policy)
    assert not d.allowed and any("names no evaluation dataset" in r for r in d.reasons), d.reasons


def test_a_failed_newest_evaluation_is_a_failed_gate(tmp_path: Path) -> None:
    """Its metrics pass every gate; its status alone denies."""
    policy, model = _world(tmp_path, gates={"accuracy": {"min": 0.4}}, require_stages=[], eval_status=Status.FAILED)
    d = decide(_manifest(model, "s3://m/model.joblib"), policy)
    assert not d.allowed and d.codes == (Reason.GATE_FAILED,), d.reasons
    assert "is marked failed; it supersedes any older pass" in d.reasons[0]


def test_a_lineage_record_signed_by_an_untrusted_key_is_named(tmp_path: Path) -> None:
    policy, model = _world(tmp_path, ingest_signer=LocalKeySigner.generate(), gates={}, require_stages=[])
    d = decide(_manifest(model, "s3://m/model.joblib"), policy)
    assert not d.allowed and d.codes == (Reason.UNTRUSTED_SIGNER,), d.reasons
    assert "entry 0 is signed by key" in d.reasons[0] and "which the trust file does not list" in d.reasons[0]


def test_a_lineage_record_altered_after_appending_is_tampering(tmp_path: Path) -> None:
    from tests.fixtures_admission import resign_entry

    policy, model = _world(tmp_path, gates={}, require_stages=[])
    key = LocalKeySigner.from_file(tmp_path / "keys" / "pipeline.pem")
    resign_entry(policy.resolve_ledger_url(), 0, key, params={"edited": True})
    d = decide(_manifest(model, "s3://m/model.joblib"), policy)
    assert not d.allowed and Reason.TAMPERED in d.codes, d.reasons
    assert any(r.startswith("ledger tampering: ") and "entry 0 was altered" in r for r in d.reasons), d.reasons


def test_too_many_evaluations_are_a_missing_evaluation(tmp_path: Path, monkeypatch: Any) -> None:
    from mlseal.ledger import trusted

    policy, model = _world(tmp_path, evaluations=2, gates={}, require_stages=[])
    monkeypatch.setattr(trusted, "MAX_CANDIDATES", 1)
    d = decide(_manifest(model, "s3://m/model.joblib"), policy)
    assert not d.allowed and d.codes == (Reason.NO_EVALUATION,), d.reasons
    assert d.reasons[0].startswith("model evaluations: 2 ledger records name sha256")


def test_a_policy_ledger_that_does_not_exist_is_not_created(tmp_path: Path, admission_world: AdmissionWorld) -> None:
    """Admission opens the policy's ledger read-only: a wrong path is a configuration error,
    never a new, empty ledger."""
    missing = tmp_path / "nowhere" / "ledger.db"
    (tmp_path / "nowhere").mkdir()
    for name in ("trust.yaml", "keys"):
        (tmp_path / name).symlink_to(admission_world.dir / name)
    policy = load_policy(write_policy(tmp_path, ledger=f"sqlite:///{missing}"))
    with pytest.raises(ConfigurationError, match="does not exist"):
        decide(isvc(admission_world.models["good"]), policy)
    assert not missing.exists()
