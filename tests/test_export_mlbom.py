"""`mlseal export mlbom`: a CycloneDX 1.6 ML-BOM validated by cyclonedx-python-lib's strict JSON validator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from mlseal.cli import main
from tests.export_world import GATES, METRICS, World, make_world, records


def _validate(text: str) -> list[str]:
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text, all_errors=True)
    return [str(e) for e in errors] if errors else []


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("mlbom") / "w")


def _export(world: World, out: Path) -> dict[str, Any]:
    assert main(["export", "mlbom", world.model_sha256, *world.run_args(), "--out", str(out)]) == 0
    bom: dict[str, Any] = json.loads(out.read_bytes())
    return bom


def test_bom_is_valid_cyclonedx_1_6(world: World, tmp_path: Path) -> None:
    out = tmp_path / "model.cdx.json"
    bom = _export(world, out)
    assert _validate(out.read_text()) == []
    # the validator is not vacuous: a field the 1.6 model card does not have, or a bad hash, is caught
    bad = json.loads(out.read_text())
    bad["metadata"]["component"]["modelCard"]["trainingLoss"] = "0.1"
    assert _validate(json.dumps(bad))
    bad = json.loads(out.read_text())
    bad["components"][0]["hashes"][0]["content"] = "xyz"
    assert _validate(json.dumps(bad))
    assert bom["specVersion"] == "1.6" and bom["bomFormat"] == "CycloneDX"


def test_model_card_comes_from_the_evaluation_and_training_records(world: World, tmp_path: Path) -> None:
    bom = _export(world, tmp_path / "b.json")
    model = bom["metadata"]["component"]
    assert model["type"] == "machine-learning-model"
    assert model["hashes"] == [{"alg": "SHA-256", "content": world.model_sha256}]
    card = model["modelCard"]
    metrics = {m["type"]: float(m["value"]) for m in card["quantitativeAnalysis"]["performanceMetrics"]}
    assert metrics == METRICS
    assert all("held-out split (test_fraction 0.25, split_seed 0)" in m["slice"]
               for m in card["quantitativeAnalysis"]["performanceMetrics"])
    props = {p["name"]: p["value"] for p in card["properties"]}
    assert props["mlseal:evaluation:seq"] == str(world.seqs["evaluate"])
    assert props["mlseal:evaluation:status"] == "ok"
    assert props["mlseal:gate:accuracy"] == "accuracy >= 0.9; observed 0.97; pass"
    assert props["mlseal:gate:mia_advantage"] == "mia_advantage <= 0.2; observed 0.05; pass"
    assert {k.removeprefix("mlseal:gate:") for k in props if k.startswith("mlseal:gate:")} == set(GATES)
    assert card["modelParameters"]["approach"] == {"type": "supervised"}
    assert card["modelParameters"]["modelArchitecture"].startswith("sklearn.linear_model.SGDClassifier")


def test_datasets_carry_their_digests_and_what_was_done_to_them(world: World, tmp_path: Path) -> None:
    bom = _export(world, tmp_path / "b.json")
    recs = records(world)
    comps = {c["hashes"][0]["content"]: c for c in bom["components"]}
    upstream = {i.sha256 for r in recs[: world.seqs["train"] + 1] for i in r.inputs}
    source = recs[world.seqs["ingest"]].params["source_sha256"]
    assert set(comps) == upstream | {source}
    raw = recs[world.seqs["ingest"]].outputs[0]
    anon = recs[world.seqs["anonymize"]].outputs[0]
    enc = recs[world.seqs["encrypt"]].outputs[0]
    assert comps[raw.sha256]["data"][0]["sensitiveData"] == [
        "identifier column patient_id", "identifier column name", "identifier column email",
        "free text with personal data: notes"]
    assert comps[anon.sha256]["data"][0]["classification"] == "pseudonymised"
    assert comps[enc.sha256]["data"][0]["classification"] == "encrypted at rest (AES-256-GCM)"
    # the model card's datasets: what the model was trained on, by reference
    assert card_datasets(bom) == [f"artifact:sha256:{enc.sha256}"]
    ethics = bom["metadata"]["component"]["modelCard"]["considerations"]["ethicalConsiderations"]
    text = json.dumps(ethics)
    assert "pseudonymised patient_id (hmac-sha256, key mlseal/anonymize/hmac v1)" in text
    assert "dropped name, email" in text
    assert "AES-256-GCM envelope encryption" in text and "transit/mlseal-data v1" in text
    # dependencies follow the records: the model on what train read, the encrypted data on the anonymised
    deps = {d["ref"]: d["dependsOn"] for d in bom["dependencies"]}
    assert set(deps[f"artifact:sha256:{world.model_sha256}"]) == {
        f"artifact:sha256:{i.sha256}" for i in recs[world.seqs["train"]].inputs}
    assert deps[f"artifact:sha256:{enc.sha256}"] == [f"artifact:sha256:{anon.sha256}"]
    assert deps[f"artifact:sha256:{raw.sha256}"] == [f"artifact:sha256:{source}"]
    # the OMS bundle of each artifact, by its digest
    refs = comps[raw.sha256]["externalReferences"]
    assert {"alg": "SHA-256", "content": raw.bundle_sha256} in refs[1]["hashes"]


def card_datasets(bom: dict[str, Any]) -> list[str]:
    return [d["ref"] for d in bom["metadata"]["component"]["modelCard"]["modelParameters"]["datasets"]]


def test_a_newer_failed_evaluation_shows_in_the_card(tmp_path: Path) -> None:
    world = make_world(tmp_path / "w", failed_evaluation=True)
    out = tmp_path / "b.json"
    bom = _export(world, out)
    assert _validate(out.read_text()) == []
    card = bom["metadata"]["component"]["modelCard"]
    props = {p["name"]: p["value"] for p in card["properties"]}
    assert props["mlseal:evaluation:seq"] == str(world.seqs["reevaluate"])
    assert props["mlseal:evaluation:status"] == "failed"
    assert props["mlseal:gate:accuracy"] == "accuracy >= 0.9; observed 0.61; fail"
    assert card["considerations"]["technicalLimitations"] == [
        f"the newest evaluation (record {world.seqs['reevaluate']}) failed: gate accuracy: observed 0.61, "
        "required >= 0.9"]


def test_unknown_digest_is_refused_and_nothing_written(world: World, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "b.json"
    assert main(["export", "mlbom", "sha256:" + "ef" * 32, *world.run_args(), "--out", str(out)]) == 1
    assert "(unknown digest)" in capsys.readouterr().err
    assert not out.exists()


def test_exports_need_a_trust_file(world: World, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLSEAL_TRUST", raising=False)
    assert main(["export", "mlbom", world.model_sha256, "--ledger", world.url]) == 2
    assert "exports read only verified records: pass --trust FILE" in capsys.readouterr().err
