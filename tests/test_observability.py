"""Logs and metrics: one JSON log format for the webhook and the loader, the loader's metrics file.

Real lines are parsed and held to the field tables of docs/admission.md ("Audit log")
and docs/fetch.md ("Logs and metrics"), both ways: a field the code writes and the docs
lack (or the reverse) fails. The loader's metrics file is read with Prometheus' own
parser.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlseal.admission.decision import Reason
from mlseal.admission.webhook import AdmissionController
from mlseal.admission.workload import LOADER_ENV, check_workload
from mlseal.cli import main
from mlseal.ledger import open_ledger
from tests.fixtures_admission import AdmissionWorld, deployment, isvc, make_world, review
from tests.test_fetch import World, _aws_env, dest, s3, world  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parent.parent


def documented_fields(doc: str, heading: str) -> set[str]:
    """Field names of the first table after `heading` (a cell may name several: `a`, `b`)."""
    text = (ROOT / "docs" / doc).read_text()
    start = text.index(heading)
    table = re.search(r"\n\| field \| type \| meaning \|\n\|[-| ]+\|\n((?:\|.*\|\n)+)", text[start:])
    assert table is not None, f"{doc}: no field table after {heading!r}"
    names: set[str] = set()
    for row in table.group(1).splitlines():
        names.update(re.findall(r"`([a-z_0-9]+)`", row.split("|")[1]))
    return names


@pytest.fixture(scope="module")
def adm_world(tmp_path_factory: pytest.TempPathFactory) -> AdmissionWorld:
    return make_world(tmp_path_factory.mktemp("observability"))


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "mlseal.audit"]


def test_the_audit_line_has_every_documented_field(adm_world: AdmissionWorld,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mlseal.audit")
    c = AdmissionController(adm_world.policy, ledger_factory=lambda: open_ledger(adm_world.ledger_url, create=False))
    c.follow()
    m = adm_world.models["lowacc"]
    c.review(json.dumps(review(isvc(m), uid="obs-1")).encode())
    c.review(b"not json")
    line, bad = audit_lines(caplog)[-2:]
    assert set(line) == documented_fields("admission.md", "### Audit log")
    assert set(bad) == set(line)  # every field always present
    head = c.view.head() if c.view else None
    assert head is not None
    assert line["uid"] == "obs-1" and line["kind"] == "InferenceService" and line["namespace"] == "prod"
    assert line["name"] == "m" and line["model_sha256"] == m.sha256 and line["decision"] == "denied"
    assert line["codes"] == [str(Reason.GATE_FAILED)] and line["reasons"] and line["latency_ms"] >= 0
    assert line["ledger"] == {"size": head.size, "root": head.root.hex()}
    assert (line["level"], line["logger"], line["event"]) == ("info", "mlseal.audit", "admission")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    assert bad["kind"] is None and bad["model_sha256"] is None and bad["decision"] == "denied"


def fetch_line(err: str) -> dict[str, Any]:
    lines = [json.loads(x) for x in err.splitlines() if x.startswith("{")]
    assert len(lines) == 1, err
    got: dict[str, Any] = lines[0]
    return got


def test_the_loader_line_and_metrics_file(world: World, dest: Path, tmp_path: Path,  # noqa: F811
                                          capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    sha, uri, _ = world.models["good"]
    metrics = tmp_path / "fetch.prom"
    monkeypatch.setenv("MLSEAL_LOG_FORMAT", "json")
    monkeypatch.setenv("POD_NAMESPACE", "models")
    code = main(["fetch", uri, str(dest), "--policy", str(world.policy), "--sha256", sha, "--json",
                 "--metrics-file", str(metrics)])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    line = fetch_line(err)
    assert set(line) == documented_fields("fetch.md", "## Logs and metrics")
    assert (line["level"], line["logger"], line["event"], line["decision"]) == ("info", "mlseal.fetch", "fetch",
                                                                                 "published")
    assert line["model_sha256"] == sha and line["bytes"] == result["bytes"] and line["namespace"] == "models"
    fams = {f.name: f for f in text_string_to_metric_families(metrics.read_text())}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in fams.values() for s in f.samples}
    assert samples[("mlseal_fetch_verifications_total", (("reason", "none"), ("result", "published")))] == 1
    assert samples[("mlseal_fetch_verified_bytes_total", ())] == result["bytes"]
    assert ("mlseal_fetch_duration_seconds", ()) in samples
    assert ("mlseal_fetch_last_run_timestamp_seconds", ()) in samples


def test_a_refusal_is_counted_with_its_reason(world: World, dest: Path, tmp_path: Path,  # noqa: F811
                                              capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = tmp_path / "fetch.prom"
    monkeypatch.setenv("MLSEAL_METRICS_FILE", str(metrics))
    monkeypatch.setenv("MLSEAL_LOG_FORMAT", "json")
    code = main(["fetch", world.models["good"][1], str(dest), "--policy", str(world.policy), "--sha256", "cd" * 32])
    _, err = capsys.readouterr()
    assert code == 1
    line = fetch_line(err)
    assert line["decision"] == "refused" and line["level"] == "error" and "not in the ledger" in line["reasons"][0]
    text = metrics.read_text()
    assert 'mlseal_fetch_verifications_total{reason="unknown_digest",result="refused"} 1.0' in text, text
    assert list(dest.iterdir()) == []


def test_an_unwritable_metrics_file_does_not_change_the_verdict(world: World, dest: Path,  # noqa: F811
                                                                tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    sha, uri, _ = world.models["good"]
    code = main(["fetch", uri, str(dest), "--policy", str(world.policy), "--sha256", sha,
                 "--metrics-file", str(tmp_path / "no" / "such" / "dir" / "m.prom")])
    _, err = capsys.readouterr()
    assert code == 0 and "cannot write the metrics file" in err and "{" not in err


def test_admission_admits_a_loader_with_the_metrics_file_and_log_format(adm_world: AdmissionWorld) -> None:
    assert {"MLSEAL_METRICS_FILE", "MLSEAL_LOG_FORMAT"} <= LOADER_ENV
    d = deployment(adm_world.models["good"])
    init = d["spec"]["template"]["spec"]["initContainers"][0]
    init["args"] += ["--metrics-file", "/var/lib/mlseal/metrics/fetch.prom"]
    init["env"] += [{"name": "MLSEAL_METRICS_FILE", "value": "/var/lib/mlseal/metrics/fetch.prom"},
                    {"name": "MLSEAL_LOG_FORMAT", "value": "json"}]
    findings, ref = check_workload(d, adm_world.policy.rules_for("prod"))
    assert findings == [] and ref is not None


def test_the_webhooks_own_log_records_are_json_lines_too() -> None:
    import sys

    from mlseal._jsonlog import JsonFormatter

    rec = logging.LogRecord("mlseal.admission.webhook", logging.WARNING, __file__, 1,
                            "cannot read the ledger: %s", ("refused",), None)
    line = json.loads(JsonFormatter().format(rec))
    assert line["level"] == "warning" and line["logger"] == "mlseal.admission.webhook" and line["event"] == "log"
    assert line["message"] == "cannot read the ledger: refused" and "time" in line
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert "RuntimeError: boom" in json.loads(JsonFormatter().format(rec))["exception"]


def test_fetch_shows_progress_on_a_terminal_only(world: World, tmp_path: Path) -> None:  # noqa: F811
    from tests.test_progress import run_on_pty

    sha, uri, _ = world.models["local"]
    for i, extra in enumerate(([], ["--json"], ["--quiet"])):
        d = tmp_path / f"d{i}"
        d.mkdir()
        argv = ["fetch", uri, str(d), "--policy", str(world.policy), "--sha256", sha, *extra]
        if extra == ["--quiet"]:
            argv = ["--quiet", *argv[:-1]]
        code, _, err = run_on_pty(argv)
        assert code == 0, err
        assert ("\x1b" in err) is (not extra), err  # the bar's terminal codes, only without --json/--quiet
