"""The ledger's digest index is a derived table nobody signs: editing it must change nothing.

An attacker who can write the ledger database deletes the one ``mlseal_digests`` row
that names a newer, failing evaluation of a model (or adds a row naming a record that
never touched a digest). Admission (`decide`, ``mlseal admit``, the webhook) and
``mlseal ledger trace`` must answer exactly as before, on SQLite and PostgreSQL: they
decide from verified entries only. These tests use only public entry points.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mlseal.admission import decide, load_policy
from mlseal.admission.decision import Reason
from mlseal.ledger import UNSAFE_SKIP_SIGNATURES, open_ledger
from mlseal.ledger.lineage import trace
from mlseal.ledger.record import Component, InputRef, RecordDraft, Sha256Hex
from mlseal.signing.keys import LocalKeySigner
from mlseal.signing.trust import load_trust
from tests.fixtures_admission import Model, build_lineage, isvc, review, run_webhook, sha, write_policy

REPO = Path(__file__).resolve().parent.parent


@dataclass
class World:
    dir: Path
    url: str
    policy_path: Path
    signer: LocalKeySigner
    model: Model
    failed_eval: int  # the newer evaluation that fails the accuracy gate
    other: int  # a record that never touched the model


def _sql(url: str, statement: str, *args: Any) -> None:
    """Run one statement directly against the ledger's database (the attacker's access)."""
    if url.startswith("sqlite:///"):
        db = sqlite3.connect(url.removeprefix("sqlite:///"))
        db.execute(statement.replace("%s", "?"), args)
        db.commit()
        db.close()
    else:
        import psycopg

        with psycopg.connect(url, autocommit=True) as c:
            c.execute(statement, args)


def delete_digest_row(url: str, sha256: str, role: int, seq: int) -> None:
    _sql(url, "DELETE FROM mlseal_digests WHERE sha256 = %s AND role = %s AND seq = %s", bytes.fromhex(sha256), role,
         seq)


def add_digest_row(url: str, sha256: str, role: int, seq: int) -> None:
    _sql(url, "INSERT INTO mlseal_digests (sha256, role, seq) VALUES (%s, %s, %s)", bytes.fromhex(sha256), role, seq)


@pytest.fixture
def world(ledger_url: str, tmp_path: Path) -> Iterator[World]:
    signer = LocalKeySigner.generate()
    signer.save(tmp_path / "keys" / "pipeline.pem", tmp_path / "keys" / "pipeline.pub.pem")
    (tmp_path / "trust.yaml").write_text("signers:\n  - name: pipeline\n    public_key: keys/pipeline.pub.pem\n")
    with open_ledger(ledger_url) as led:
        model = build_lineage(led, signer, "m")
        failed = led.append(RecordDraft(
            stage="evaluate", component=Component(name="evaluate"),
            inputs=(InputRef("model", model.uri, Sha256Hex(model.sha256), model.seqs["train"]),),
            metrics={"accuracy": 0.31, "robust_accuracy": 0.2}), signer, signer_name="pipeline").seq
        other = build_lineage(led, signer, "other").seqs["ingest"]
    policy_path = write_policy(tmp_path, ledger=ledger_url)
    yield World(tmp_path, ledger_url, policy_path, signer, model, failed, other)


def _admit_cli(w: World, *extra: str) -> tuple[int, dict[str, Any]]:
    manifest = w.dir / "isvc.json"
    manifest.write_text(json.dumps(isvc(w.model)))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-m", "mlseal.cli", "admit", str(manifest), "--policy", str(w.policy_path),
                        "--json", *extra], capture_output=True, text=True, env=env, timeout=120, check=False)
    return p.returncode, json.loads(p.stdout) if p.stdout.strip() else {"stderr": p.stderr}


def _denied_for_the_gate(w: World) -> None:
    d = decide(isvc(w.model), load_policy(w.policy_path))
    assert not d.allowed and Reason.GATE_FAILED in d.codes, d.reasons
    assert any(f"record {w.failed_eval}" in r for r in d.reasons), d.reasons


def test_deleted_digest_row_does_not_hide_a_newer_failed_evaluation(world: World) -> None:
    _denied_for_the_gate(world)  # before the attack
    delete_digest_row(world.url, world.model.sha256, 1, world.failed_eval)
    # the library decision
    _denied_for_the_gate(world)
    with open_ledger(world.url, create=False) as led:
        d = decide(isvc(world.model), load_policy(world.policy_path), ledger=led)
        assert not d.allowed and Reason.GATE_FAILED in d.codes, d.reasons
        # trace still lists the evaluation among what was made from the model
        lin = trace(led, world.model.sha256, load_trust(world.dir / "trust.yaml"))
        assert world.failed_eval in [r.seq for r in lin.descendants]
    # the CLI
    code, out = _admit_cli(world)
    assert code == 1 and out["allowed"] is False, out
    assert any("accuracy = 0.31" in r for r in out["reasons"]), out


def test_deleted_producer_row_does_not_hide_the_model(world: World) -> None:
    """Deleting the row that names the model's producer must not turn a known model into an
    unknown one (nor anything else): the entries say who produced it."""
    delete_digest_row(world.url, world.model.sha256, 0, world.model.seqs["train"])
    with open_ledger(world.url, create=False) as led:
        lin = trace(led, world.model.sha256, load_trust(world.dir / "trust.yaml"))
    assert lin.producer is not None and lin.producer.seq == world.model.seqs["train"]
    _denied_for_the_gate(world)


def test_extra_digest_row_does_not_change_an_answer(world: World) -> None:
    """A row claiming an unrelated record output the model, or that the model's failed
    evaluation consumed another digest, is not believed."""
    unknown = sha("never-recorded")
    add_digest_row(world.url, unknown, 0, world.model.seqs["train"])
    add_digest_row(world.url, world.model.sha256, 0, world.other)
    d = decide(isvc(Model(unknown, world.model.uri)), load_policy(world.policy_path))
    assert not d.allowed and d.codes == (Reason.UNKNOWN_DIGEST,), d.reasons
    _denied_for_the_gate(world)
    with open_ledger(world.url, create=False) as led:
        lin = trace(led, world.model.sha256, load_trust(world.dir / "trust.yaml"))
        assert lin.producers == (world.model.seqs["train"],)
        assert trace(led, unknown, UNSAFE_SKIP_SIGNATURES).producer is None


def test_trace_cli_lists_the_hidden_record(world: World) -> None:
    delete_digest_row(world.url, world.model.sha256, 1, world.failed_eval)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-m", "mlseal.cli", "ledger", "trace", world.model.sha256,
                        "--ledger", world.url, "--trust", str(world.dir / "trust.yaml"), "--json"],
                       capture_output=True, text=True, env=env, timeout=120, check=False)
    out = json.loads(p.stdout)
    assert world.failed_eval in [r["seq"] for r in out["descendants"]], out


def test_webhook_is_not_fooled_by_a_deleted_digest_row(world: World, tmp_path: Path) -> None:
    delete_digest_row(world.url, world.model.sha256, 1, world.failed_eval)
    with run_webhook(load_policy(world.policy_path), tmp_path / "tls") as hook:
        hook.wait_ready()
        r = hook.validate(review(isvc(world.model), uid="attack-1"))["response"]
    assert r["allowed"] is False, r
    assert "accuracy = 0.31" in r["status"]["message"], r
