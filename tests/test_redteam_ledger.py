"""Red team: rollback and fork protection must hold wherever a reader holds a checkpoint.

The world is the demo's shape: a model's lineage (ingest -> anonymize -> train ->
evaluate), a newer *failed* re-evaluation of the model, and a witness that signed a
checkpoint after it. The attacker can write the ledger's database: it cuts the ledger
back to before the failed evaluation (a rollback: the model is admissible again) or
replaces the tail with other, validly signed records (a fork: a stolen record key), and
deletes the stored checkpoints so that the ledger alone shows nothing. Every reader that
was handed the checkpoint (`mlseal admit`, `mlseal fetch`, `mlseal ledger trace`, the
webhook) must refuse, with the view's reason codes ``ledger_rolled_back`` /
``ledger_forked``; `mlseal ledger verify` must check every stored checkpoint and say
what it actually verified.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlseal.admission import load_policy
from mlseal.cli import main
from mlseal.ledger import open_ledger
from mlseal.ledger.checkpoint import Checkpoint, Trusted, sign_checkpoint
from mlseal.ledger.record import Component, InputRef, OutputRef, RecordDraft, Sha256Hex, Status
from mlseal.ledger.witness import witness
from mlseal.signing.artifact import sign_path
from mlseal.signing.digest import digest_path
from mlseal.signing.keys import LocalKeySigner
from mlseal.signing.trust import load_trust
from tests.fixtures_admission import GOOD_METRICS, isvc, write_policy
from tests.fixtures_checkpoint import Sqlite


@dataclass(frozen=True)
class Model:
    sha256: str
    uri: str
    path: Path
    seqs: dict[str, int]


@dataclass
class World:
    dir: Path
    db: Sqlite
    signer: LocalKeySigner
    cp_key: LocalKeySigner
    policy: Path
    model: Model
    note: Path  # the checkpoint the witness signed after the failed re-evaluation
    size: int  # the ledger's size at that checkpoint
    before_failure: int  # the size that hides the failed re-evaluation

    @property
    def url(self) -> str:
        return self.db.url

    def manifest(self) -> Path:
        p = self.dir / "isvc.yaml"
        p.write_text(yaml.safe_dump(isvc(self.model)))  # type: ignore[arg-type]
        return p

    def rollback(self) -> None:
        """Cut the ledger back to before the failed re-evaluation; remove the stored checkpoints."""
        self.db.truncate(self.before_failure)
        self.db.clear_checkpoints()

    def fork(self) -> None:
        """Replace the failed re-evaluation and its successor by a passing one (a stolen
        record key): the same size as the checkpoint, other records."""
        self.db.truncate(self.before_failure)
        with open_ledger(self.url, create=False) as led:
            _evaluate(led, self.signer, self.model, Status.OK)
            _tail(led, self.signer)
            assert led.size() == self.size
        self.db.clear_checkpoints()


def _evaluate(led: Any, signer: LocalKeySigner, model: Model, status: Status) -> int:
    metrics = GOOD_METRICS if status is Status.OK else {"accuracy": 0.41, "robust_accuracy": 0.2}
    return int(led.append(RecordDraft(
        stage="evaluate", component=Component(name="evaluate"), status=status,
        inputs=(InputRef("model", model.uri, Sha256Hex(model.sha256), model.seqs["train"]),),
        metrics=metrics), signer, signer_name="pipeline").seq)


def _tail(led: Any, signer: LocalKeySigner) -> None:
    # a successor, so that the record before it is hash-linked (TrustedReader's rule)
    led.append(RecordDraft(stage="ingest", component=Component(name="ingest")), signer, signer_name="pipeline")


def _h(text: str) -> Sha256Hex:
    return Sha256Hex(hashlib.sha256(text.encode()).hexdigest())


def _lineage(led: Any, signer: LocalKeySigner, model_dir: Path) -> Model:
    seqs: dict[str, int] = {}
    raw = OutputRef(name="raw", uri="file:///data/raw.csv", sha256=_h("raw"))
    seqs["ingest"] = led.append(RecordDraft(stage="ingest", component=Component(name="ingest"), outputs=(raw,)),
                                signer, signer_name="pipeline").seq
    clean = OutputRef(name="clean", uri="file:///data/clean.csv", sha256=_h("clean"))
    seqs["anonymize"] = led.append(RecordDraft(
        stage="process", component=Component(name="anonymize"),
        inputs=(InputRef("raw", raw.uri, raw.sha256, seqs["ingest"]),), outputs=(clean,)),
        signer, signer_name="pipeline").seq
    bundle = sign_path(model_dir, signer)
    sha = Sha256Hex(digest_path(model_dir))
    uri = model_dir.as_uri()
    out = OutputRef(name="model", uri=uri, sha256=sha,
                    bundle_sha256=Sha256Hex(hashlib.sha256(bundle.read_bytes()).hexdigest()))
    seqs["train"] = led.append(RecordDraft(
        stage="train", component=Component(name="train"),
        inputs=(InputRef("data", clean.uri, clean.sha256, seqs["anonymize"]),), outputs=(out,)),
        signer, signer_name="pipeline").seq
    model = Model(sha, uri, model_dir, seqs)
    seqs["evaluate"] = _evaluate(led, signer, model, Status.OK)
    return model


@pytest.fixture
def world(tmp_path: Path) -> World:
    signer, cp_key = LocalKeySigner.generate(), LocalKeySigner.generate()
    signer.save(tmp_path / "keys" / "pipeline.pem", tmp_path / "keys" / "pipeline.pub.pem")
    cp_key.save(tmp_path / "keys" / "checkpoint.pem", tmp_path / "keys" / "checkpoint.pub.pem")
    (tmp_path / "trust.yaml").write_text(yaml.safe_dump({
        "signers": [{"name": "pipeline", "public_key": "keys/pipeline.pub.pem"}],
        "checkpoint_keys": ["keys/checkpoint.pub.pem"],
    }))
    trust = load_trust(tmp_path / "trust.yaml")
    model_dir = tmp_path / "models" / "churn" / "model"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "model.onnx").write_bytes(os.urandom(4096))
    (model_dir / "config.pbtxt").write_text('name: "churn"\n')
    db = Sqlite(tmp_path / "ledger.db")
    with open_ledger(db.url) as led:
        model = _lineage(led, signer, model_dir)
        witness(led, trust, cp_key)  # a checkpoint of the passing model
        before_failure = led.size()
        _evaluate(led, signer, model, Status.FAILED)  # re-evaluated: it fails now
        _tail(led, signer)
        done = witness(led, trust, cp_key)
    note = tmp_path / "checkpoint"
    note.write_bytes(done.note)
    policy = write_policy(tmp_path, ledger=db.url)
    return World(tmp_path, db, signer, cp_key, policy, model, note, done.new.size, before_failure)


ATTACKS: dict[str, tuple[Callable[[World], None], str, str]] = {
    "rollback": (World.rollback, "ledger_rolled_back", "rolled back"),
    "fork": (World.fork, "ledger_forked", "forked"),
}


@pytest.fixture(autouse=True)
def _no_ambient_checkpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("MLSEAL_CHECKPOINT", "MLSEAL_LEDGER", "MLSEAL_POLICY", "MLSEAL_MODEL_SHA256"):
        monkeypatch.delenv(k, raising=False)


def _admit(world: World, *extra: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any], str]:
    code = main(["admit", str(world.manifest()), "--policy", str(world.policy), "--json", *extra])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else {}, err


# --- 1. mlseal admit ------------------------------------------------------------------------------

def test_admit_denies_the_model_before_the_attack(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _admit(world, "--checkpoint", str(world.note), capsys=capsys)
    assert code == 1 and any("marked failed" in r or "failed" in r for r in out["reasons"]), out


@pytest.mark.parametrize("attack", ATTACKS)
def test_admit_with_the_accepted_checkpoint_refuses_a_rolled_back_or_forked_ledger(
        world: World, attack: str, capsys: pytest.CaptureFixture[str]) -> None:
    do, code_name, words = ATTACKS[attack]
    do(world)
    # the ledger alone no longer shows the failed re-evaluation: without the checkpoint it passes
    code, out, _ = _admit(world, capsys=capsys)
    assert code == 0 and out["allowed"] is True, out
    code, out, err = _admit(world, "--checkpoint", str(world.note), capsys=capsys)
    assert code == 1 and out["allowed"] is False, out
    assert out["codes"] == [code_name], out
    assert words in out["reasons"][0] and f"size {world.size}" in out["reasons"][0], out
    assert "DENIED" in err


@pytest.mark.parametrize("form", ["path", "text", "text-without-final-newline"])
def test_admit_reads_the_checkpoint_from_the_environment(world: World, form: str, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    note = world.note.read_text()
    value = {"path": str(world.note), "text": note, "text-without-final-newline": note.rstrip("\n")}[form]
    monkeypatch.setenv("MLSEAL_CHECKPOINT", value)
    world.rollback()
    code, out, _ = _admit(world, capsys=capsys)
    assert code == 1 and out["codes"] == ["ledger_rolled_back"], out


def test_admit_with_a_checkpoint_it_cannot_verify_stops_and_says_why(
        world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    forged = tmp_path / "forged"
    forged.write_bytes(sign_checkpoint(Checkpoint("mlseal.local/ledger", 2, bytes(32)), LocalKeySigner.generate()))
    code, out, err = _admit(world, "--checkpoint", str(forged), capsys=capsys)
    assert code == 1 and out == {}
    assert f"--checkpoint {forged}" in err and "not signed by a trusted checkpoint key" in err and "witness" in err
    code, _, err = _admit(world, "--checkpoint", str(tmp_path / "missing"), capsys=capsys)
    assert code == 2 and "cannot read" in err and "missing" in err


# --- 2. mlseal fetch ------------------------------------------------------------------------------

def _fetch(world: World, dest: Path, *extra: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = main(["fetch", world.model.uri, str(dest), "--policy", str(world.policy), "--sha256",
                 world.model.sha256, "--json", *extra])
    out, _ = capsys.readouterr()
    return code, json.loads(out) if out.strip() else {}


@pytest.mark.parametrize("attack", ATTACKS)
def test_fetch_with_the_accepted_checkpoint_refuses_before_publishing(
        world: World, attack: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    do, code_name, words = ATTACKS[attack]
    do(world)
    dest = tmp_path / "mnt" / "models"
    dest.mkdir(parents=True)
    code, out = _fetch(world, dest, capsys=capsys)
    assert code == 0 and out["ok"] is True, out  # the gap the checkpoint closes
    for p in list(dest.iterdir()):
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    # in Kubernetes the loader gets the note's text in MLSEAL_CHECKPOINT
    monkeypatch.setenv("MLSEAL_CHECKPOINT", world.note.read_text())
    code, out = _fetch(world, dest, capsys=capsys)
    assert code == 1 and out["ok"] is False and out["codes"] == [code_name], out
    assert words in out["error"], out
    assert list(dest.iterdir()) == []


def test_fetch_checkpoint_flag_and_a_bad_note(world: World, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "mnt"
    dest.mkdir()
    world.rollback()
    code, out = _fetch(world, dest, "--checkpoint", str(world.note), capsys=capsys)
    assert code == 1 and out["codes"] == ["ledger_rolled_back"], out
    garbage = tmp_path / "garbage"
    garbage.write_text("not a checkpoint\n")
    code, out = _fetch(world, dest, "--checkpoint", str(garbage), capsys=capsys)
    assert code == 1 and f"--checkpoint {garbage}" in out["error"], out
    assert list(dest.iterdir()) == []


def test_fetch_with_the_checkpoint_publishes_an_intact_model(world: World, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    # the intact ledger: the failed re-evaluation denies; after a passing one it is fetched
    dest = tmp_path / "mnt"
    dest.mkdir()
    code, out = _fetch(world, dest, "--checkpoint", str(world.note), capsys=capsys)
    assert code == 1 and "gate_failed" in out.get("codes", []), out
    with open_ledger(world.url, create=False) as led:
        _evaluate(led, world.signer, world.model, Status.OK)
        _tail(led, world.signer)
    code, out = _fetch(world, dest, "--checkpoint", str(world.note), capsys=capsys)
    assert code == 0 and out["ok"] is True, out


# --- 4. mlseal ledger trace ---------------------------------------------------------------------

@pytest.mark.parametrize("attack", ATTACKS)
def test_trace_with_the_accepted_checkpoint_refuses_a_rolled_back_or_forked_ledger(
        world: World, attack: str, capsys: pytest.CaptureFixture[str]) -> None:
    do, code_name, words = ATTACKS[attack]
    do(world)
    base = ["ledger", "trace", world.model.sha256, "--ledger", world.url, "--trust", str(world.dir / "trust.yaml")]
    assert main(base) == 0
    capsys.readouterr()
    assert main([*base, "--checkpoint", str(world.note), "--json"]) == 1
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc["ok"] is False and doc["code"] == code_name and words in doc["error"], doc
    assert words in err


def test_trace_checkpoint_without_a_trust_file_is_checked_but_says_its_signature_was_not(
        world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    world.rollback()
    monkeypatch.setenv("MLSEAL_CHECKPOINT", str(world.note))
    assert main(["ledger", "trace", world.model.sha256, "--ledger", world.url]) == 1
    err = capsys.readouterr().err
    assert "rolled back" in err and "checkpoint signature NOT checked" in err


# --- 3. the webhook -------------------------------------------------------------------------------

def _until(check: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def _decision(hook: Any, world: World) -> dict[str, Any]:
    from tests.fixtures_admission import review

    out: dict[str, Any] = hook.validate(review(isvc(world.model)))["response"]  # type: ignore[arg-type]
    return out


def _floor(world: World, path: Path) -> Trusted:
    """The configured floor, as `mlseal webhook serve --checkpoint FILE` loads it."""
    from mlseal.ledger.rollback import load_checkpoint

    held = load_checkpoint(load_trust(world.dir / "trust.yaml"), path=str(path), env={})
    assert held is not None
    return held


def _denied_for(hook: Any, world: World, code_name: str, words: str) -> None:
    r = _decision(hook, world)
    assert r["allowed"] is False and words in r["status"]["message"], r
    assert hook.controller.metrics.decisions.value("denied", code_name) >= 1


@pytest.mark.parametrize("attack", ATTACKS)
def test_webhook_state_survives_a_restart_and_refuses_a_rolled_back_or_forked_ledger(
        webhook_factory: Any, world: World, attack: str) -> None:
    do, code_name, words = ATTACKS[attack]
    state = world.dir / "state" / "checkpoint"
    state.parent.mkdir()
    policy = load_policy(world.policy)
    hook = webhook_factory(policy, checkpoint_state=state)
    # at start it takes the newest stored checkpoint signed by the checkpoint key and keeps it
    _until(state.exists, "the webhook did not keep the checkpoint it accepted")
    assert state.read_bytes() == world.note.read_bytes()
    assert _decision(hook, world)["allowed"] is False  # the failed re-evaluation
    do(world)
    # a restart: the new process holds only its state file; the ledger alone shows nothing wrong
    fresh = webhook_factory(policy)
    assert fresh.request("GET", "/readyz")[0] == 200 and _decision(fresh, world)["allowed"] is True
    hook = webhook_factory(policy, checkpoint_state=state)
    status, body = hook.request("GET", "/readyz")
    assert status == 503 and code_name in body.decode(), body
    _denied_for(hook, world, code_name, words)
    assert state.read_bytes() == world.note.read_bytes()  # kept, not replaced by the attacker's tree


@pytest.mark.parametrize("attack", ATTACKS)
def test_webhook_checkpoint_floor_refuses_a_rolled_back_or_forked_ledger(
        webhook_factory: Any, world: World, attack: str) -> None:
    do, code_name, words = ATTACKS[attack]
    do(world)
    hook = webhook_factory(load_policy(world.policy), checkpoint=_floor(world, world.note))
    status, body = hook.request("GET", "/readyz")
    assert status == 503 and code_name in body.decode(), body
    _denied_for(hook, world, code_name, words)


def test_webhook_state_follows_newer_checkpoints_and_the_floor_is_extended(
        webhook_factory: Any, world: World) -> None:
    state = world.dir / "state"
    floor = world.dir / "floor"
    with open_ledger(world.url, create=False) as led:
        floor.write_bytes(sign_checkpoint(Checkpoint("mlseal.local/ledger", 3, led.root(3)), world.cp_key))
    hook = webhook_factory(load_policy(world.policy), checkpoint=_floor(world, floor), checkpoint_state=state)
    assert hook.request("GET", "/readyz")[0] == 200
    # the newest stored checkpoint extends the floor: it is the one kept
    _until(lambda: state.exists() and state.read_bytes() == world.note.read_bytes(), "state is not the stored one")
    with open_ledger(world.url, create=False) as led:
        _evaluate(led, world.signer, world.model, Status.OK)
        _tail(led, world.signer)
        newer = witness(led, load_trust(world.dir / "trust.yaml"), world.cp_key)
    _until(lambda: state.read_bytes() == newer.note, "the newer checkpoint was not kept")
    assert _decision(hook, world)["allowed"] is True
    assert not list(world.dir.glob(".state.*")), "a temporary state file was left behind"


def test_webhook_floor_of_another_tree_is_a_fork(webhook_factory: Any, world: World) -> None:
    """The configured floor pins a tree the ledger never had (its stored checkpoints agree with the ledger)."""
    floor = world.dir / "floor"
    floor.write_bytes(sign_checkpoint(Checkpoint("mlseal.local/ledger", 3, bytes(32)), world.cp_key))
    hook = webhook_factory(load_policy(world.policy), checkpoint=_floor(world, floor))
    assert hook.request("GET", "/readyz")[0] == 503
    _denied_for(hook, world, "ledger_forked", "forked")


def test_webhook_refuses_to_start_with_a_state_file_it_cannot_verify(world: World, tmp_path: Path) -> None:
    from mlseal.admission._server import build_server
    from mlseal.errors import VerificationError
    from tests.fixtures_admission import make_pki

    pki = make_pki(tmp_path / "tls")
    pki.issue(tmp_path / "tls" / "c.pem", tmp_path / "tls" / "k.pem")
    state = tmp_path / "state"
    state.write_bytes(sign_checkpoint(Checkpoint("mlseal.local/ledger", 2, bytes(32)), LocalKeySigner.generate()))
    with pytest.raises(VerificationError, match=rf"checkpoint state {state}.*not signed by a trusted"):
        build_server(load_policy(world.policy), cert=tmp_path / "tls" / "c.pem", key=tmp_path / "tls" / "k.pem",
                     port=0, checkpoint_state=state)


# --- 5. ledger verify checks every stored checkpoint -----------------------------------------------

def _insert(world: World, size: int, note: bytes) -> int:
    with sqlite3.connect(world.db.path) as c:
        cur = c.execute("INSERT INTO mlseal_checkpoints (size, note) VALUES (?, ?)", (size, note))
        assert cur.lastrowid is not None
        return cur.lastrowid


def _verify(world: World, *extra: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any], str]:
    code = main(["ledger", "verify", "--ledger", world.url, "--trust", str(world.dir / "trust.yaml"), "--json",
                 *extra])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def _garbage(world: World) -> dict[str, tuple[int, bytes, str]]:
    with open_ledger(world.url, create=False) as led:
        root3 = led.root(3)
    body, sig = world.note.read_bytes().split(b"\n\n")
    line = sig.decode().split(" ")
    raw = bytearray(base64.b64decode(line[2]))
    raw[-1] ^= 1  # the trusted key's ID, a signature that does not verify
    line[2] = base64.b64encode(bytes(raw)).decode()
    return {
        "unparseable": (3, b"garbage\n", "does not parse"),
        "wrong-signature": (world.size, body + b"\n\n" + " ".join(line).encode() + b"\n", "does not verify"),
        "unknown-key": (3, sign_checkpoint(Checkpoint("mlseal.local/ledger", 3, root3), LocalKeySigner.generate()),
                        "not signed by a trusted checkpoint key"),
        "other-root": (3, sign_checkpoint(Checkpoint("mlseal.local/ledger", 3, bytes(32)), world.cp_key),
                       "not the root of the ledger's first 3 records"),
        "beyond-the-log": (world.size + 4, sign_checkpoint(
            Checkpoint("mlseal.local/ledger", world.size + 4, bytes(32)), world.cp_key), "has only"),
        "size-column-lies": (world.size + 100, sign_checkpoint(
            Checkpoint("mlseal.local/ledger", 3, root3), world.cp_key), "size column"),
    }


@pytest.mark.parametrize("kind", ["unparseable", "wrong-signature", "unknown-key", "other-root", "beyond-the-log",
                                  "size-column-lies"])
def test_verify_reports_a_bad_stored_checkpoint_naming_its_row(world: World, kind: str,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _verify(world, capsys=capsys)
    assert code == 0 and out["ok"] is True, out
    size, note, words = _garbage(world)[kind]
    row = _insert(world, size, note)
    for extra in ((), ("--checkpoint", str(world.note)), ("--checkpoint", str(world.note), "--from-checkpoint")):
        code, out, err = _verify(world, *extra, capsys=capsys)
        assert code == 1 and out["ok"] is False, (extra, out)
        bad = [p for p in out["problems"] if p["kind"] == "stored_checkpoint"]
        assert len(bad) == 1 and f"checkpoint row {row}" in bad[0]["detail"] and words in bad[0]["detail"], \
            (extra, out["problems"])
        assert "ledger OK" not in err and f"checkpoint row {row}" in err


def test_verify_checks_every_stored_checkpoint_not_only_the_newest(world: World,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with open_ledger(world.url, create=False) as led:
        n = len(led.checkpoints())
    assert n == 2
    # an old, small checkpoint far below the newest ones, signed by the checkpoint key, of another tree
    row = _insert(world, 1, sign_checkpoint(Checkpoint("mlseal.local/ledger", 1, bytes(32)), world.cp_key))
    for _ in range(70):  # more than the 64 stored checkpoints a reader looks through
        with open_ledger(world.url, create=False) as led:
            led.add_checkpoint(world.note.read_bytes())
    code, out, _ = _verify(world, capsys=capsys)
    assert code == 1 and [p["detail"].split(":")[0] for p in out["problems"]] == [f"checkpoint row {row} (size 1)"]


def test_verify_names_what_it_checked(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _verify(world, capsys=capsys)
    assert code == 0 and f"{world.size} records read" in err and "2 stored checkpoints" in err, err
    # 6. from the checkpoint with nothing after it: nothing was read, and it says so
    code, _, err = _verify(world, "--checkpoint", str(world.note), "--from-checkpoint", capsys=capsys)
    assert code == 0, err
    assert f"0 records after the checkpoint at size {world.size}" in err, err
    assert "signatures" not in err.split("0 records after")[0], err
    with open_ledger(world.url, create=False) as led:
        _tail(led, world.signer)
    code, _, err = _verify(world, "--checkpoint", str(world.note), "--from-checkpoint", capsys=capsys)
    assert code == 0 and f"1 record after the checkpoint at size {world.size}" in err, err
    assert f"records 0..{world.size - 1} not read" in err, err


def test_every_stored_row_is_audited_on_both_backends(ledger_url: str) -> None:
    """`checkpoint_rows` pages through every row by id (here 3 rows a page), on SQLite and PostgreSQL."""
    from mlseal.ledger.checkpoint import audit_stored
    from tests.fixtures_checkpoint import CHECKPOINT_KEY, RECORD_KEY, TRUST

    with open_ledger(ledger_url) as led:
        for _ in range(4):
            led.append(RecordDraft(stage="ingest"), RECORD_KEY, signer_name="pipeline")
        head = led.head()
        good = [sign_checkpoint(Checkpoint("mlseal.local/ledger", n, led.root(n)), CHECKPOINT_KEY) for n in (1, 2, 4)]
        forged = sign_checkpoint(Checkpoint("mlseal.local/ledger", 3, bytes(32)), CHECKPOINT_KEY)
        for note in (good[0], good[1], forged, *good[2:], good[0], good[1]):
            led.add_checkpoint(note)
        rows = list(led.checkpoint_rows(batch=3))
        assert [r[1] for r in rows] == [1, 2, 3, 4, 1, 2] and [r[0] for r in rows] == sorted(r[0] for r in rows)
        checked, problems = audit_stored(led, TRUST, head.size, head.root, batch=2)
    assert checked == 6
    assert [(p.kind, p.detail.split(":")[0]) for p in problems] == [
        ("stored_checkpoint", f"checkpoint row {rows[2][0]} (size 3)")], problems
    assert "is not the root of the ledger's first 3 records" in problems[0].detail
