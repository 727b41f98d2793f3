"""`mlseal ledger …`: JSON shapes, exit codes (0 ok, 1 verification, 2 config), messages."""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mlseal.cli import main
from mlseal.ledger import merkle, open_ledger
from mlseal.ledger.record import InputRef, OutputRef, RecordDraft, Sha256Hex
from mlseal.signing.keys import LocalKeySigner


@pytest.fixture
def world(tmp_path: Path) -> dict[str, str]:
    """A small recorded pipeline: keys, trust file, artifacts and a ledger."""
    signer, cp = LocalKeySigner.generate(), LocalKeySigner.generate()
    signer.save(tmp_path / "k.pem", tmp_path / "k.pub.pem")
    cp.save(tmp_path / "cp.pem", tmp_path / "cp.pub.pem")
    (tmp_path / "trust.yaml").write_text(
        "signers: [{name: pipeline, public_key: k.pub.pem}]\ncheckpoint_keys: [cp.pub.pem]\n"
    )
    raw = tmp_path / "raw.csv"
    raw.write_text("x,y\n1,2\n")
    model = tmp_path / "model.bin"
    model.write_bytes(b"weights")
    h = lambda p: Sha256Hex(hashlib.sha256(p.read_bytes()).hexdigest())  # noqa: E731
    url = f"sqlite:///{tmp_path}/ledger.db"
    with open_ledger(url) as led:
        led.append(RecordDraft(stage="ingest", outputs=(OutputRef(name="raw", uri=raw.as_uri(), sha256=h(raw)),)),
                   signer, signer_name="pipeline")
        led.append(RecordDraft(stage="train", inputs=(InputRef(name="raw", uri=raw.as_uri(), sha256=h(raw),
                                                               producer_seq=0),),
                               outputs=(OutputRef(name="model", uri=model.as_uri(), sha256=h(model)),)),
                   signer, signer_name="pipeline")
        for i in range(3):
            led.append(RecordDraft(stage="evaluate", params={"i": i}), signer, signer_name="pipeline")
    return {"url": url, "trust": str(tmp_path / "trust.yaml"), "dir": str(tmp_path), "model": str(model),
            "raw": str(raw), "model_sha": h(model), "key": str(tmp_path / "k.pem"), "cpkey": str(tmp_path / "cp.pem")}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_verify_ok_and_json(world: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "ledger", "verify", "--ledger", world["url"], "--trust", world["trust"], "--json")
    assert code == 0, err
    j = json.loads(out)
    assert j == {"ok": True, "size": 5, "root": j["root"], "problems": []} and len(j["root"]) == 64
    assert "ledger OK" in err
    code, out, _ = run(capsys, "ledger", "verify", "--ledger", world["url"], "--trust", world["trust"], "--artifacts")
    assert code == 0 and out == ""  # human text goes to stderr only


def test_verify_tampered_names_the_record(world: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    db = world["url"][len("sqlite:///") :]
    with sqlite3.connect(db) as c:
        e = bytes(c.execute("SELECT entry FROM mlseal_entries WHERE seq = 2").fetchone()[0])
        c.execute("UPDATE mlseal_entries SET entry = ? WHERE seq = 2", (e.replace(b'"sig":"', b'"sig":"AA', 1),))
    code, out, err = run(capsys, "ledger", "verify", "--ledger", world["url"], "--trust", world["trust"], "--json")
    assert code == 1
    j = json.loads(out)
    assert j["ok"] is False and j["problems"][0]["seq"] == 2
    assert "record 2:" in err and "FAILED" in err


def test_verify_changed_artifact(world: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    Path(world["model"]).write_bytes(b"poisoned weights")
    argv = ["ledger", "verify", "--ledger", world["url"], "--trust", world["trust"]]
    assert run(capsys, *argv)[0] == 0
    code, out, _ = run(capsys, *argv, "--artifacts", "--json")
    assert code == 1
    p = json.loads(out)["problems"][0]
    assert p["seq"] == 1 and p["kind"] == "artifact" and "model" in p["detail"]


def test_config_errors_exit_2(world: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "ledger", "verify", "--ledger", f"sqlite:///{tmp_path}/none.db", "--trust",
                       world["trust"])
    assert code == 2 and "does not exist" in err
    assert not (tmp_path / "none.db").exists()
    code, _, err = run(capsys, "ledger", "verify", "--ledger", "ftp://x/y", "--trust", world["trust"])
    assert code == 2 and "unknown scheme" in err
    code, _, err = run(capsys, "ledger", "verify", "--ledger", world["url"], "--trust", str(tmp_path / "no.yaml"))
    assert code == 2 and "no.yaml" in err
    # a key of the wrong type
    rsa_pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "rsa.pem").write_bytes(rsa_pem)
    code, out, err = run(capsys, "ledger", "checkpoint", "--ledger", world["url"], "--key", str(tmp_path / "rsa.pem"),
                         "--out", str(tmp_path / "cp.txt"))
    assert code == 2 and "EC P-256" in err and out == ""
    assert not (tmp_path / "cp.txt").exists()
    code, _, err = run(capsys, "ledger", "checkpoint", "--ledger", world["url"])
    assert code == 2 and "signing key" in err


def test_log_json_lets_anyone_recompute_the_tree(world: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "ledger", "log", "--ledger", world["url"], "--json")
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [x["seq"] for x in lines] == list(range(5))
    assert set(lines[0]) == {"seq", "leaf", "leaf_hash", "record"}
    leaves = [merkle.leaf_hash(base64.b64decode(x["leaf"])) for x in lines]
    assert [x["leaf_hash"] for x in lines] == [h.hex() for h in leaves]
    assert lines[1]["record"]["stage"] == "train" and lines[1]["record"]["prev"] == hashlib.sha256(
        base64.b64decode(lines[0]["leaf"])).hexdigest()
    with open_ledger(world["url"]) as led:
        assert merkle.root_from_leaves(leaves)[1] == led.head().root
    code, out, err = run(capsys, "ledger", "log", "--ledger", world["url"])
    assert code == 0 and out == "" and "ingest" in err


def test_prove(world: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    for target in ("3", world["model_sha"], world["model"]):
        code, out, _ = run(capsys, "ledger", "prove", target, "--ledger", world["url"], "--trust", world["trust"],
                           "--json")
        assert code == 0
        j = json.loads(out)
        assert set(j) == {"seq", "leaf_index", "tree_size", "leaf_hash", "root", "path"}
        merkle.verify_inclusion(bytes.fromhex(j["leaf_hash"]), j["leaf_index"], j["tree_size"],
                                [bytes.fromhex(p) for p in j["path"]], bytes.fromhex(j["root"]))
    assert json.loads(out)["seq"] == 1
    code, _, err = run(capsys, "ledger", "prove", "99", "--ledger", world["url"])
    assert code == 1 and "no record 99" in err
    code, _, err = run(capsys, "ledger", "prove", "ab" * 32, "--ledger", world["url"], "--trust", world["trust"])
    assert code == 1 and "no trusted record" in err
    # by digest, the record is chosen from verified entries: a trust file is required
    code, _, err = run(capsys, "ledger", "prove", world["model_sha"], "--ledger", world["url"])
    assert code == 2 and "--trust FILE" in err


def test_prove_does_not_follow_the_digest_index(world: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    """The digest index is a derived table nobody signs: a row pointing the model's digest
    at another record must not make `prove` prove that record."""
    import sqlite3

    with sqlite3.connect(world["url"][len("sqlite:///"):]) as c:
        c.execute("UPDATE mlseal_digests SET seq = 4 WHERE sha256 = ?", (bytes.fromhex(world["model_sha"]),))
    code, out, _ = run(capsys, "ledger", "prove", world["model_sha"], "--ledger", world["url"], "--trust",
                       world["trust"], "--json")
    assert code == 0 and json.loads(out)["seq"] == 1


def test_trace(world: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "ledger", "trace", world["model"], "--ledger", world["url"], "--trust",
                         world["trust"], "--json")
    assert code == 0, err
    j = json.loads(out)
    assert j["ok"] and j["producer"]["seq"] == 1 and [a["stage"] for a in j["ancestors"]] == ["ingest"]
    code, out, err = run(capsys, "ledger", "trace", "cd" * 32, "--ledger", world["url"], "--json")
    assert code == 1 and json.loads(out)["producer"] is None and "NOT checked" in err


def test_checkpoint_consistency_and_truncation(
    world: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cpfile = str(tmp_path / "cp.txt")
    code, _, _ = run(capsys, "ledger", "checkpoint", "--ledger", world["url"], "--key", world["cpkey"], "--out", cpfile)
    assert code == 0 and Path(cpfile).read_text().startswith("mlseal.local/ledger\n5\n")
    with open_ledger(world["url"]) as led:
        for _ in range(4):
            led.append(RecordDraft(stage="evaluate"), LocalKeySigner.from_file(world["key"]), signer_name="pipeline")
    code, out, err = run(capsys, "ledger", "consistency", cpfile, "--ledger", world["url"], "--trust",
                         world["trust"], "--json")
    assert code == 0, err
    j = json.loads(out)
    assert set(j) == {"old_size", "new_size", "old_root", "new_root", "path", "ok"}
    assert j["ok"] and j["old_size"] == 5 and j["new_size"] == 9
    merkle.verify_consistency(5, 9, [bytes.fromhex(p) for p in j["path"]], bytes.fromhex(j["old_root"]),
                              bytes.fromhex(j["new_root"]))
    argv = ["ledger", "verify", "--ledger", world["url"], "--trust", world["trust"], "--checkpoint", cpfile]
    assert run(capsys, *argv)[0] == 0
    code, _, err = run(capsys, *argv, "--from-checkpoint")
    assert code == 0 and "4 records after the checkpoint at size 5 (records 0..4 not read" in err
    # truncate below the checkpoint: verify and consistency both fail
    db = world["url"][len("sqlite:///") :]
    with sqlite3.connect(db) as c:
        c.execute("DELETE FROM mlseal_entries WHERE seq >= 3")
        c.execute("DELETE FROM mlseal_nodes WHERE idx >= 3 AND level = 0")
        c.execute("DELETE FROM mlseal_nodes WHERE level > 0 AND (idx + 1) * (1 << level) > 3")
    code, out, err = run(capsys, *argv, "--json")
    assert code == 1 and "truncated" in err
    code, out, err = run(capsys, "ledger", "consistency", cpfile, "--ledger", world["url"], "--json")
    assert code == 1 and json.loads(out)["ok"] is False and "truncated" in err


def test_foreign_or_forged_checkpoint(
    world: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = str(tmp_path / "other.txt")
    assert run(capsys, "ledger", "checkpoint", "--ledger", world["url"], "--key", world["cpkey"], "--origin",
               "elsewhere.example/log", "--out", other)[0] == 0
    code, _, err = run(capsys, "ledger", "consistency", other, "--ledger", world["url"], "--trust", world["trust"])
    assert code == 1 and "elsewhere.example/log" in err
    code, out, err = run(capsys, "ledger", "verify", "--ledger", world["url"], "--trust", world["trust"],
                         "--checkpoint", other, "--json")
    assert code == 1 and json.loads(out)["problems"][0]["kind"] == "checkpoint"
    forged = str(tmp_path / "forged.txt")
    assert run(capsys, "ledger", "checkpoint", "--ledger", world["url"], "--key", world["key"], "--out", forged)[0] == 0
    code, _, err = run(capsys, "ledger", "consistency", forged, "--ledger", world["url"], "--trust", world["trust"])
    assert code == 1 and "not signed by a trusted checkpoint key" in err
    (tmp_path / "junk.txt").write_text("hello\n")
    code, _, err = run(capsys, "ledger", "consistency", str(tmp_path / "junk.txt"), "--ledger", world["url"])
    assert code == 1 and "checkpoint" in err


def test_corrupt_entry_in_log_and_verify(world: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    db = world["url"][len("sqlite:///") :]
    with sqlite3.connect(db) as c:
        c.execute("UPDATE mlseal_entries SET entry = ? WHERE seq = 4", (b"\x00garbage",))
    code, out, _ = run(capsys, "ledger", "log", "--ledger", world["url"], "--json")
    assert code == 0 and json.loads(out.splitlines()[4])["record"] is None
    code, out, err = run(capsys, "ledger", "verify", "--ledger", world["url"], "--trust", world["trust"], "--json")
    assert code == 1 and json.loads(out)["problems"][0] == {
        "seq": 4, "kind": "format", "detail": json.loads(out)["problems"][0]["detail"]}
    assert "record 4:" in err
