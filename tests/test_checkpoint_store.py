"""Checkpoint storage (`Ledger.add_checkpoint` / `latest_checkpoint`) on both backends, and
the SQLite migration of a version-1 ledger."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mlseal.errors import VerificationError
from mlseal.ledger import open_ledger
from mlseal.ledger._store import SCHEMA_VERSION
from mlseal.ledger.checkpoint import Checkpoint, sign_checkpoint
from mlseal.ledger.record import RecordDraft
from mlseal.ledger.verify import verify_ledger
from mlseal.signing.keys import LocalKeySigner
from mlseal.signing.trust import TrustRoot

KEY = LocalKeySigner.generate()


def _note(size: int, root: bytes = bytes(32)) -> bytes:
    return sign_checkpoint(Checkpoint("mlseal.local/ledger", size, root), KEY)


def test_latest_is_the_largest_tree_then_the_newest(ledger_url: str) -> None:
    with open_ledger(ledger_url) as led:
        assert led.latest_checkpoint() is None
        a, b, c, d = _note(5), _note(9), _note(9, b"\x01" * 32), _note(7)
        for n in (a, b, c, d):
            led.add_checkpoint(n)
        assert led.latest_checkpoint() == c  # size 9 twice: the one stored last
        assert led.checkpoints(10) == [c, b, d, a]
        assert led.checkpoints(2) == [c, b]
    with open_ledger(ledger_url, create=False) as led:  # durable, seen by a new connection
        assert led.latest_checkpoint() == c


def test_a_malformed_note_is_not_stored(ledger_url: str) -> None:
    with open_ledger(ledger_url) as led:
        with pytest.raises(VerificationError, match="checkpoint"):
            led.add_checkpoint(b"not a checkpoint\n")
        assert led.latest_checkpoint() is None


def test_sqlite_version_1_ledger_is_migrated_on_open(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/l.db"
    signer = LocalKeySigner.generate()
    with open_ledger(url) as led:
        led.append(RecordDraft(stage="ingest"), signer, signer_name="pipeline")
    with sqlite3.connect(tmp_path / "l.db") as c:  # what mlseal wrote before checkpoints
        c.execute("DROP TABLE mlseal_checkpoints")
        c.execute("UPDATE mlseal_meta SET value = '1' WHERE key = 'schema_version'")
    with open_ledger(url, create=False) as led:
        assert led.latest_checkpoint() is None
        note = _note(1)
        led.add_checkpoint(note)
        assert led.latest_checkpoint() == note
        assert verify_ledger(led, TrustRoot.of(signer.verifier("pipeline"))).ok
    with sqlite3.connect(tmp_path / "l.db") as c:
        assert c.execute("SELECT value FROM mlseal_meta WHERE key = 'schema_version'").fetchone() == (
            str(SCHEMA_VERSION),)


def test_ledger_init_migrates_a_version_1_sqlite_ledger_and_says_so(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from mlseal.cli import main

    url = f"sqlite:///{tmp_path}/l.db"
    open_ledger(url).close()
    with sqlite3.connect(tmp_path / "l.db") as c:
        c.execute("DROP TABLE mlseal_checkpoints")
        c.execute("UPDATE mlseal_meta SET value = '1' WHERE key = 'schema_version'")
    assert main(["ledger", "init", "--ledger", url, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["migrated_from"] == 1 and out["changed"] is True and out["schema_version"] == SCHEMA_VERSION
    assert main(["ledger", "init", "--ledger", url, "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["migrated_from"] is None and again["changed"] is False
