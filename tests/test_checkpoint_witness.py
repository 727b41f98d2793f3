"""`mlseal ledger witness`: signs checkpoints only for a log that extends what it accepted."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from mlseal.cli import main
from mlseal.errors import ConfigurationError
from mlseal.ledger import open_ledger
from mlseal.ledger.checkpoint import Checkpoint, CheckpointError, RollbackError, sign_checkpoint, verify_checkpoint
from mlseal.ledger.witness import witness
from mlseal.signing.keys import LocalKeySigner
from tests.fixtures_checkpoint import CHECKPOINT_KEY, RECORD_KEY, TRUST, Sqlite


@pytest.fixture
def db(tmp_path: Path) -> Sqlite:
    d = Sqlite(tmp_path / "ledger.db")
    d.append(3)
    return d


def _witness(db: Sqlite, state: bytes | None = None) -> Checkpoint:
    with open_ledger(db.url, create=False) as led:
        return witness(led, TRUST, CHECKPOINT_KEY, state=state).new


def test_first_run_verifies_everything_and_stores_a_checkpoint(db: Sqlite) -> None:
    with open_ledger(db.url, create=False) as led:
        done = witness(led, TRUST, CHECKPOINT_KEY)
        assert done.old is None and done.checked == 3 and done.stored
        stored = led.latest_checkpoint()
        assert stored == done.note
        assert verify_checkpoint(stored, TRUST) == Checkpoint("mlseal.local/ledger", 3, led.head().root)
        again = witness(led, TRUST, CHECKPOINT_KEY)  # nothing new: nothing stored again
        assert not again.stored and led.checkpoints() == [done.note]
    db.append(2)
    with open_ledger(db.url, create=False) as led:
        nxt = witness(led, TRUST, CHECKPOINT_KEY)
        assert nxt.old is not None and nxt.old.size == 3 and nxt.checked == 2 and nxt.new.size == 5


def test_truncation_after_a_checkpoint_is_refused_naming_both_heads(db: Sqlite) -> None:
    old = _witness(db)
    db.truncate(2)
    with open_ledger(db.url, create=False) as led:
        now = led.head()
        with pytest.raises(RollbackError) as info:
            witness(led, TRUST, CHECKPOINT_KEY)
        assert led.checkpoints() == led.checkpoints(1)  # nothing new stored
    msg = str(info.value)
    assert f"size {now.size}, root {now.root.hex()[:16]}" in msg
    assert f"size {old.size}, root {old.root.hex()[:16]}" in msg


def test_truncation_and_regrowth_is_a_fork_and_refused(db: Sqlite) -> None:
    _witness(db)
    db.truncate(2)
    db.append(2)  # longer than the checkpoint again, but not its records
    with open_ledger(db.url, create=False) as led, pytest.raises(RollbackError, match=r"forked|rewritten"):
        witness(led, TRUST, CHECKPOINT_KEY)


def test_a_fork_of_the_last_record_is_refused(db: Sqlite) -> None:
    _witness(db)
    db.fork_last()  # validly signed, chain and nodes consistent: only the checkpoint tells
    with open_ledger(db.url, create=False) as led:
        assert led.size() == 3
        with pytest.raises(RollbackError, match="does not extend the accepted checkpoint"):
            witness(led, TRUST, CHECKPOINT_KEY)


def test_the_state_file_catches_a_rollback_that_also_removed_the_stored_checkpoints(db: Sqlite) -> None:
    with open_ledger(db.url, create=False) as led:
        state = witness(led, TRUST, CHECKPOINT_KEY).note
    db.truncate(1)
    db.clear_checkpoints()  # a restored backup has neither the records nor the checkpoints
    with open_ledger(db.url, create=False) as led:
        assert witness(led, TRUST, CHECKPOINT_KEY).new.size == 1  # without state: nothing to compare with
    with open_ledger(db.url, create=False) as led, pytest.raises(RollbackError, match=r"size 1.*size 3"):
        witness(led, TRUST, CHECKPOINT_KEY, state=state)


def test_a_stored_checkpoint_by_an_untrusted_key_is_ignored(db: Sqlite) -> None:
    _witness(db)
    db.truncate(2)
    attacker = LocalKeySigner.generate()
    with open_ledger(db.url, create=False) as led:
        head = led.head()
        # the attacker's checkpoint of the truncated log is ignored (and reported), the trusted one is not
        led.add_checkpoint(sign_checkpoint(Checkpoint("mlseal.local/ledger", 99, head.root), attacker))
        led.add_checkpoint(sign_checkpoint(Checkpoint("mlseal.local/ledger", head.size, head.root), attacker))
        with pytest.raises(RollbackError):
            witness(led, TRUST, CHECKPOINT_KEY)


def test_an_untrusted_checkpoint_in_the_state_is_refused(db: Sqlite) -> None:
    attacker = LocalKeySigner.generate()
    with open_ledger(db.url, create=False) as led:
        note = sign_checkpoint(Checkpoint("mlseal.local/ledger", 3, led.head().root), attacker)
        with pytest.raises(CheckpointError, match=r"witness state: .*not signed by a trusted"):
            witness(led, TRUST, CHECKPOINT_KEY, state=note)


def test_the_witness_key_must_be_a_trusted_checkpoint_key(db: Sqlite) -> None:
    with open_ledger(db.url, create=False) as led, pytest.raises(ConfigurationError, match="checkpoint_keys"):
        witness(led, TRUST, RECORD_KEY)


def test_a_record_that_does_not_verify_is_not_witnessed(db: Sqlite) -> None:
    _witness(db)
    stranger = LocalKeySigner.generate()
    from mlseal.ledger.record import RecordDraft

    with open_ledger(db.url, create=False) as led:
        led.append(RecordDraft(stage="ingest"), stranger, signer_name="pipeline")
        with pytest.raises(Exception, match="does not verify"):
            witness(led, TRUST, CHECKPOINT_KEY)
        assert len(led.checkpoints()) == 1


# --- the command -------------------------------------------------------------------------------

def _pem(path: Path, key: LocalKeySigner, private: bool) -> Path:
    if private:
        path.write_bytes(key.private_pem())
    else:
        path.write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def test_witness_command_state_and_exit_codes(db: Sqlite, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
        code = main(list(argv))
        out = capsys.readouterr()
        return subprocess.CompletedProcess(argv, code, out.out, out.err)

    key = _pem(tmp_path / "cp.pem", CHECKPOINT_KEY, private=True)
    trust = tmp_path / "trust.yaml"
    trust.write_text(json.dumps({
        "signers": [{"name": "pipeline", "public_key": str(_pem(tmp_path / "r.pub", RECORD_KEY, False))}],
        "checkpoint_keys": [str(_pem(tmp_path / "cp.pub", CHECKPOINT_KEY, False))],
    }))
    state = tmp_path / "state"
    args = ("ledger", "witness", "--ledger", db.url, "--trust", str(trust), "--key", str(key),
            "--state", str(state), "--json")
    r = _cli(*args)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["ok"] and out["new"]["size"] == 3 and out["stored"]
    assert state.read_text() == out["checkpoint"]
    db.truncate(2)
    r = _cli(*args)
    assert r.returncode == 1
    assert "witness REFUSED" in r.stderr and "size 2" in r.stderr and "size 3" in r.stderr
    assert json.loads(r.stdout)["kind"] == "rollback"
    assert state.read_text() == out["checkpoint"]  # the state still holds what was accepted
    # `ledger consistency` says the same, from the same code
    cp = tmp_path / "cp.txt"
    cp.write_text(out["checkpoint"])
    r = _cli("ledger", "consistency", str(cp), "--ledger", db.url, "--trust", str(trust))
    assert r.returncode == 1 and "size 2" in r.stderr and "truncated" in r.stderr
    r = _cli("ledger", "witness", "--ledger", db.url, "--trust", str(trust))
    assert r.returncode == 2 and "--key PEM or --vault-transit" in r.stderr


# --- PostgreSQL: the same refusals ---------------------------------------------------------------

def _pg_truncate(url: str, size: int) -> None:
    """What the schema owner can do: cut the log to ``size`` records, head row included."""
    import psycopg

    from mlseal.ledger import merkle

    with psycopg.connect(url, autocommit=True) as c:
        c.execute("DELETE FROM mlseal_entries WHERE seq >= %s", (size,))
        c.execute("DELETE FROM mlseal_nodes WHERE ((idx + 1) << level) > %s", (size,))
        row = c.execute("SELECT entry_hash FROM mlseal_entries WHERE seq = %s", (size - 1,)).fetchone()
        assert row is not None
        frontier = b""
        for level, idx in merkle.perfect_cover(0, size):
            node = c.execute("SELECT hash FROM mlseal_nodes WHERE level = %s AND idx = %s", (level, idx)).fetchone()
            assert node is not None
            frontier += bytes(node[0])
        c.execute("UPDATE mlseal_head SET size = %s, last_hash = %s, frontier = %s", (size, bytes(row[0]), frontier))


@pytest.mark.postgres
def test_postgres_truncation_is_refused_by_the_witness_and_a_stage(pg_url: str, tmp_path: Path) -> None:
    from mlseal.ledger.record import RecordDraft
    from mlseal.stage import Sealing, Stage

    with open_ledger(pg_url) as led:
        for _ in range(3):
            led.append(RecordDraft(stage="ingest"), RECORD_KEY, signer_name="pipeline")
        witness(led, TRUST, CHECKPOINT_KEY)
    _pg_truncate(pg_url, 2)
    with open_ledger(pg_url, create=False) as led:
        assert led.size() == 2
        with pytest.raises(RollbackError, match=r"size 2.*size 3"):
            witness(led, TRUST, CHECKPOINT_KEY)
        sealing = Sealing(ledger=led, signer=RECORD_KEY, trust=TRUST, signer_name="pipeline")
        with pytest.raises(RollbackError, match="nothing appended"), \
                Stage("ingest", name="ingest", sealing=sealing) as st:
            st.output("raw", tmp_path / "raw.csv").write_text("x\n")
        assert led.size() == 2
