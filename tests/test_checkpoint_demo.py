"""Rollback and fork protection is on by default: `mlseal demo` makes a checkpoint key, the
witness signs checkpoints, stages check them (also a user's own steps through mlseal.env),
and the demo's verification uses the checkpoint."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from mlseal.demo import Workdir, _prepare, verify_workdir, witness_workdir
from mlseal.ledger import open_ledger
from mlseal.ledger.checkpoint import RollbackError, verify_checkpoint
from mlseal.secrets import open_secret_source
from mlseal.signing.trust import load_trust
from tests.fixtures_checkpoint import Sqlite
from tests.fixtures_pipeline import DemoRun
from tests.test_kfp_sealed import _run_user_pipeline

pytestmark = pytest.mark.slow


def test_demo_signs_and_verifies_against_a_checkpoint(demo_run: DemoRun) -> None:
    result, lines = demo_run
    assert result.ok, result.failed
    wd = Workdir(result.workdir)
    trust = load_trust(wd.trust)
    assert yaml.safe_load(wd.trust.read_text())["checkpoint_keys"] == ["keys/checkpoint.pub.pem"]
    with open_ledger(wd.ledger_url, create=False) as led:
        size, stored = led.size(), led.checkpoints()
        cp = verify_checkpoint(wd.checkpoint.read_bytes(), trust)
        assert (cp.size, cp.root) == (size, led.head().root)
    assert stored[0] == wd.checkpoint.read_bytes()
    assert len(stored) >= 2  # one before the pipeline (the stages checked it), one after
    assert result.verification is not None  # (a later test may rerun the demo on this workdir: sizes grow)
    assert result.verification.checkpoint == result.verification.size <= size and result.verification.ok
    assert sum("witness: checkpoint of" in line for line in lines) >= 2
    env = wd.env_file.read_text()
    assert f"MLSEAL_CHECKPOINT={wd.checkpoint}" in env and "mlseal ledger witness" in env


def test_a_truncated_demo_ledger_is_reported_and_refused(demo_run: DemoRun, tmp_path: Path) -> None:
    result, _ = demo_run
    wd = Workdir(tmp_path / "wd")
    shutil.copytree(result.workdir, wd.root)
    # the trust file names keys relative to itself; the ledger URL is absolute in the copy
    Sqlite(wd.ledger_db).truncate(3)
    v = verify_workdir(wd)
    assert not v.ok and any("truncated" in p for p in v.problems)
    src = open_secret_source(wd.secrets, env={})
    with pytest.raises(RollbackError, match="size 3"):
        witness_workdir(wd, src, lambda _: None)


@pytest.fixture
def fresh_workdir(tmp_path: Path) -> Workdir:
    wd = Workdir(tmp_path / "wd")
    _prepare(wd, {}, lambda _: None, {"accuracy": {"min": 0.9}})
    return wd


def test_users_own_steps_pass_the_checkpoint_downstream_and_refuse_a_rollback(
    fresh_workdir: Workdir, tmp_path: Path
) -> None:
    wd = fresh_workdir
    note = wd.checkpoint.read_bytes()  # signed by _prepare's witness run
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    proc = _run_user_pipeline(wd, tmp_path / "a", "mean")
    assert proc.returncode == 0, proc.stderr[-3000:]
    outputs = list((tmp_path / "a" / "root").rglob("executor_output.json"))
    metas = [a["metadata"] for p in outputs for o in yaml.safe_load(p.read_text()).get("artifacts", {}).values()
             for a in o["artifacts"]]
    assert metas and all(m["mlseal.checkpoint"] == note.decode() for m in metas)
    assert all(len(m["mlseal.entry_sha256"]) == 64 for m in metas)
    # roll the ledger back to before the checkpoint: the user's steps refuse it, append nothing
    Sqlite(wd.ledger_db).truncate(0)
    proc = _run_user_pipeline(wd, tmp_path / "b", "mean")
    assert proc.returncode != 0
    assert "nothing appended" in proc.stdout + proc.stderr
    with open_ledger(wd.ledger_url, create=False) as led:
        assert led.size() == 0
