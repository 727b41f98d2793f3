"""`mlseal demo`: the whole reference pipeline through KFP's local runner, verified and reported."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest
import yaml

from mlseal.cli import main
from mlseal.demo import STAGES, run_demo
from mlseal.ledger import open_ledger
from mlseal.ledger.record import Status
from tests.fixtures_pipeline import DemoRun, ledger_plaintext, secret_values
from tests.fixtures_vault import VaultHarness

pytestmark = pytest.mark.slow


def test_demo_runs_every_stage_and_verifies(demo_run: DemoRun) -> None:
    result, lines = demo_run
    assert result.ok, result.failed
    assert [r.component.name for r in result.run_records] == list(STAGES)
    assert all(r.status is Status.OK for r in result.run_records)
    assert result.verification is not None
    assert result.verification.ok and not result.verification.problems
    # progress: one line per stage as it was recorded
    for i, name in enumerate(STAGES, 1):
        assert any(f"[{i}/7] {name}" in line for line in lines), name
    assert any("dev secrets, not Vault" in line for line in lines)
    # every record names its KFP run and task
    runs = {r.run.run_id for r in result.run_records}
    assert len(runs) == 1 and None not in runs
    assert [r.run.task for r in result.run_records] == list(STAGES)
    # the lineage in the report goes from the raw data to the deploy record
    assert result.chain[-1].stage == "deploy" and result.chain[-1].inputs[0].sha256 == result.model_sha256


def test_demo_workdir_layout(demo_run: DemoRun) -> None:
    result, _ = demo_run
    wd: Path = result.workdir
    for name in ("ledger.db", "trust.yaml", "policy.yaml", "pipeline.yaml", "report.html"):
        assert (wd / name).is_file(), name
    keys = list((wd / "keys").iterdir())
    assert keys and all(b"PRIVATE" not in k.read_bytes() for k in keys)  # public keys only
    secret_files = [p for p in (wd / "secrets").rglob("*") if p.is_file()]
    assert secret_files and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in secret_files)
    private = [p for p in wd.rglob("*") if p.is_file() and b"PRIVATE KEY" in p.read_bytes()]
    assert private and all((wd / "secrets") in p.parents for p in private)
    for r in result.run_records:
        for o in r.outputs:
            path = Path(o.uri.removeprefix("file://"))
            assert (wd / "artifacts") in path.parents
            assert path.with_name(path.name + ".sig").is_file()


def test_demo_policy_admits_its_model(demo_run: DemoRun, capsys: pytest.CaptureFixture[str]) -> None:
    result, _ = demo_run
    wd: Path = result.workdir
    deploy = result.run_records[-1]
    manifest = Path(deploy.outputs[0].uri.removeprefix("file://"))
    doc = yaml.safe_load(manifest.read_text())
    assert doc["kind"] == "InferenceService"
    assert doc["metadata"]["annotations"]["mlseal.dev/model-sha256"] == result.model_sha256
    assert main(["admit", str(manifest), "--policy", str(wd / "policy.yaml"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["allowed"] is True
    assert main(["ledger", "verify", "--ledger", f"sqlite:///{wd / 'ledger.db'}", "--trust", str(wd / "trust.yaml"),
                 "--artifacts", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


def test_no_secret_value_leaves_the_secret_store(demo_run: DemoRun) -> None:
    result, _ = demo_run
    wd: Path = result.workdir
    values = secret_values(wd / "secrets")
    # the run's data key: unwrap it from the encrypted dataset's header with the dev store
    from mlseal.ml import crypto
    from mlseal.secrets import open_secret_source

    enc = next(r for r in result.run_records if r.component.name == "encrypt")
    blob = Path(enc.outputs[0].uri.removeprefix("file://")).read_bytes()
    dk = open_secret_source(wd / "secrets", env={}).unwrap_data_key(crypto.read_header(blob).wrapped_key)
    values += [dk.reveal(), dk.reveal().hex().encode()]
    assert len(values) >= 6
    scanned = [wd / "pipeline.yaml", wd / "report.html", wd / "ledger.db", *(wd / "logs").iterdir(),
               *(p for p in (wd / "artifacts").rglob("*") if p.is_file())]
    executor_outputs = [p for p in scanned if p.name == "executor_output.json"]
    assert len(executor_outputs) >= 7  # KFP local outputs: executor outputs with artifact metadata
    with open_ledger(f"sqlite:///{wd / 'ledger.db'}") as led:
        entries = ledger_plaintext(led)
    assert b"transit/mlseal-data" in entries
    for path in scanned:
        content = path.read_bytes()
        for v in values:
            assert v not in content, f"a secret value appears in {path}"
    for v in values:
        assert v not in entries


def test_rerun_appends_a_new_run_and_still_verifies(demo_run: DemoRun, tmp_path: Path) -> None:
    first, _ = demo_run
    assert first.verification is not None
    before = first.verification.size
    # on a copy: the session's other tests read the first run's workdir (exports, checkpoint)
    workdir = tmp_path / "wd"
    shutil.copytree(first.workdir, workdir)
    again = run_demo(workdir, progress=lambda _: None, epochs=10)
    assert again.ok, again.failed
    assert again.verification is not None
    assert again.verification.size == before + len(STAGES)  # the reference is recorded once
    assert again.run_records[0].seq == before
    assert again.run_id != first.run_id or again.run_records[0].run.run_id != first.run_records[0].run.run_id


@pytest.mark.vault_real
def test_demo_with_vault_says_so_and_leaks_nothing(vault: VaultHarness, tmp_path: Path) -> None:
    import base64
    import os

    version = vault.put("mlseal/anonymize/hmac", {"key": base64.b64encode(os.urandom(32)).decode()})
    # one local user running every stage and the witness: a token with each stage's policy
    # and the witness's (the only one that may sign checkpoints)
    env = vault.token_env([f"mlseal-{kind}" for kind in ("ingest", "process", "train", "evaluate", "deploy",
                                                         "witness")])
    lines: list[str] = []
    result = run_demo(tmp_path / "wd", progress=lines.append, env=env, epochs=10)
    assert result.ok, result.failed
    assert result.secrets.lower().startswith("vault") and any("Vault" in line for line in lines)
    assert not (result.workdir / "secrets").exists()  # no dev store: nothing secret on disk
    anon = next(r for r in result.run_records if r.component.name == "anonymize")
    assert [(x.path, x.version) for x in anon.secrets] == [("mlseal/anonymize/hmac", version)]
    wd = result.workdir
    texts = [p.read_bytes().decode("utf-8", "replace")
             for p in [wd / "pipeline.yaml", wd / "report.html", wd / "ledger.db", *wd.rglob("*.log"),
                       *(q for q in (wd / "artifacts").rglob("*") if q.is_file())]]
    with open_ledger(f"sqlite:///{wd / 'ledger.db'}") as led:
        texts.append(ledger_plaintext(led).decode())
    vault.assert_clean(*texts, *lines)


def test_demo_workdir_that_cannot_be_created_is_a_usage_error(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["demo", "--workdir", str(blocker / "wd"), "--json"]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert f"mlseal: error: cannot create the demo workdir {blocker / 'wd'}: Not a directory" in out.err
