"""The demo writes all four exports for its model, and they check out with the same tools as any export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from mlseal.cli import main
from mlseal.export.slsa import verify_provenance
from mlseal.signing.trust import load_trust

pytestmark = pytest.mark.slow


def test_demo_writes_and_links_every_export(demo_run, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    result, lines = demo_run
    assert result.ok, result.failed
    wd: Path = result.workdir
    exports = wd / "exports"
    assert result.exports == [exports / n for n in ("model.intoto.jsonl", "model.cdx.json", "openlineage.jsonl",
                                                    "model.pack")]
    assert any("exports: SLSA provenance, CycloneDX ML-BOM" in line for line in lines)
    trust = load_trust(wd / "trust.yaml")
    # the provenance: signed by the train identity, about the deployed model
    prov = verify_provenance((exports / "model.intoto.jsonl").read_bytes(), trust)
    assert prov.subject_sha256 == result.model_sha256 and prov.signer_name == "train" and prov.stage == "train"
    # the ML-BOM: valid CycloneDX 1.6, with the evaluation's metrics
    bom_text = (exports / "model.cdx.json").read_text()
    assert not JsonStrictValidator(SchemaVersion.V1_6).validate_str(bom_text)
    card = json.loads(bom_text)["metadata"]["component"]["modelCard"]
    evaluate = next(r for r in result.run_records if r.stage == "evaluate")
    assert {m["type"] for m in card["quantitativeAnalysis"]["performanceMetrics"]} == set(evaluate.metrics)
    # the events: one per record of the model's lineage, the run's stages among them
    events = [json.loads(x) for x in (exports / "openlineage.jsonl").read_text().splitlines()]
    seqs = {e["run"]["facets"]["mlseal_record"]["seq"] for e in events}
    assert {r.seq for r in result.run_records} <= seqs
    # the pack verifies offline with the workdir's trust file, and carries the admission of the model
    capsys.readouterr()
    assert main(["verify-pack", str(exports / "model.pack"), "--trust", str(wd / "trust.yaml"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model_sha256"] == result.model_sha256 and report["admission"]["allowed"] is True
    # report.html links them
    html = (wd / "report.html").read_text()
    for f in result.exports:
        assert f'<a href="exports/{f.name}">' in html
