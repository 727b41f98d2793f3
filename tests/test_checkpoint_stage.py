"""Stages check the ledger against signed checkpoints: the newest trusted stored one, the one
their upstream task accepted (KFP metadata), and the tree they accepted themselves."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from mlseal.kfp.executor import sealed_metadata
from mlseal.kfp.metadata import META_CHECKPOINT, META_ENTRY_SHA256, upstream
from mlseal.ledger import open_ledger
from mlseal.ledger.checkpoint import Checkpoint, RollbackError, sign_checkpoint, verify_checkpoint
from mlseal.ledger.witness import witness
from mlseal.signing.keys import LocalKeySigner
from mlseal.signing.trust import TrustRoot
from mlseal.stage import InputRefused, Sealing, Stage, StageResult
from tests.fixtures_checkpoint import CHECKPOINT_KEY, RECORD_KEY, TRUST, Sqlite, rewrite, signed_entry


@pytest.fixture
def db(tmp_path: Path) -> Sqlite:
    return Sqlite(tmp_path / "ledger.db")


def _sealing(db: Sqlite, trust: TrustRoot = TRUST) -> Sealing:
    return Sealing(ledger=open_ledger(db.url), signer=RECORD_KEY, trust=trust, signer_name="pipeline")


def _witness(db: Sqlite) -> bytes:
    with open_ledger(db.url, create=False) as led:
        return witness(led, TRUST, CHECKPOINT_KEY).note


def _produce(db: Sqlite, out: Path, trust: TrustRoot = TRUST) -> StageResult:
    with Stage("ingest", name="ingest", sealing=_sealing(db, trust)) as st:
        st.output("raw", out).write_text("a,b\n1,2\n")
    assert st.result is not None
    return st.result


def _consume(db: Sqlite, path: Path, produced: StageResult | None = None, trust: TrustRoot = TRUST,
             **kwargs: object) -> StageResult:
    meta = sealed_metadata("0" * 64, produced.seq, "", entry_sha256=produced.entry_hash,
                           checkpoint=produced.checkpoint) if produced else {}
    with Stage("process", name="process", sealing=_sealing(db, trust)) as st:
        st.input("raw", path, **{**upstream(meta), **kwargs})
        st.output("clean", path.with_name("clean.csv")).write_text("x\n")
    assert st.result is not None
    return st.result


def _size(db: Sqlite) -> int:
    with open_ledger(db.url, create=False) as led:
        return led.size()


def test_a_stage_refuses_a_ledger_truncated_after_a_checkpoint(db: Sqlite, tmp_path: Path) -> None:
    db.append(3)
    _witness(db)
    db.truncate(2)
    with pytest.raises(RollbackError, match=r"nothing appended.*size 2.*size 3"):
        _produce(db, tmp_path / "raw.csv")
    assert _size(db) == 2
    assert not (tmp_path / "raw.csv").exists()


def test_a_stage_refuses_a_fork_of_the_last_record(db: Sqlite, tmp_path: Path) -> None:
    db.append(3)
    _witness(db)
    db.fork_last()
    with pytest.raises(RollbackError, match="does not extend the accepted checkpoint"):
        _produce(db, tmp_path / "raw.csv")
    assert _size(db) == 3


def test_a_stage_refuses_a_replaced_last_entry_the_tree_does_not_hold(db: Sqlite, tmp_path: Path) -> None:
    db.append(3)
    _witness(db)
    db.append(1)  # not witnessed yet
    with open_ledger(db.url, create=False) as led:
        prev = hashlib.sha256(led.entry(2)).hexdigest()
    other = signed_entry(3, prev, stage="train")
    with sqlite3.connect(db.path) as c:  # the entry row swapped, the Merkle nodes left alone
        c.execute("UPDATE mlseal_entries SET entry = ?, entry_hash = ? WHERE seq = 3",
                  (other, hashlib.sha256(other).digest()))
    with pytest.raises(RollbackError, match="record 3 as stored is not leaf 3"):
        _produce(db, tmp_path / "raw.csv")
    assert _size(db) == 4


def test_a_stored_checkpoint_by_an_untrusted_key_is_ignored(db: Sqlite, tmp_path: Path) -> None:
    db.append(2)
    attacker = LocalKeySigner.generate()
    with open_ledger(db.url, create=False) as led:  # a huge tree nobody trusted signed: not a rollback
        led.add_checkpoint(sign_checkpoint(Checkpoint("mlseal.local/ledger", 10**6, bytes(32)), attacker))
    assert _produce(db, tmp_path / "raw.csv").seq == 2
    # ... nor does it hide the trusted checkpoint a truncation contradicts
    _witness(db)
    db.truncate(1)
    with open_ledger(db.url, create=False) as led:
        head = led.head()
        led.add_checkpoint(sign_checkpoint(Checkpoint("mlseal.local/ledger", head.size, head.root), attacker))
    with pytest.raises(RollbackError, match="size 1"):
        _produce(db, tmp_path / "raw2.csv")


def test_the_accepted_checkpoint_travels_downstream_and_a_rollback_between_tasks_is_caught(
    db: Sqlite, tmp_path: Path
) -> None:
    db.append(3)
    cp = _witness(db)
    raw = tmp_path / "raw.csv"
    a = _produce(db, raw)  # task A: accepted the checkpoint of 3 records, appended record 3
    assert a.checkpoint == cp and a.seq == 3
    meta = sealed_metadata("0" * 64, a.seq, "", entry_sha256=a.entry_hash, checkpoint=a.checkpoint)
    assert verify_checkpoint(meta[META_CHECKPOINT].encode(), TRUST).size == 3
    assert meta[META_ENTRY_SHA256] == a.entry_hash
    # between the tasks: record 1 rewritten (validly signed), nodes rebuilt, stored checkpoints gone
    with open_ledger(db.url, create=False) as led:
        prev_hash = hashlib.sha256(led.entry(0)).hexdigest()
    rewrite(db.path, 1, signed_entry(1, prev_hash, stage="train"))
    db.clear_checkpoints()
    with pytest.raises(RollbackError, match=r"raw.*refused.*does not extend"):
        _consume(db, raw, a)
    assert _size(db) == 4  # nothing appended
    # the same stage without the upstream's checkpoint has nothing to notice it by
    assert _consume(db, raw, a, checkpoint=None).seq == 4


def test_the_input_record_must_still_be_the_entry_its_producer_appended(db: Sqlite, tmp_path: Path) -> None:
    plain = TrustRoot.of(RECORD_KEY.verifier("pipeline"))  # no checkpoint keys at all
    raw = tmp_path / "raw.csv"
    a = _produce(db, raw, plain)
    with pytest.raises(RollbackError, match=r"record 0 is now entry .* not the .* appended there"):
        _consume(db, raw, a, trust=plain, producer_entry_sha256="ab" * 32)
    with pytest.raises(RollbackError, match="record 7 is not in the ledger"):
        _consume(db, raw, a, trust=plain, producer_seq=7)
    assert _size(db) == 1
    assert _consume(db, raw, a, trust=plain).seq == 1


def test_metadata_checkpoint_that_does_not_verify_is_refused(db: Sqlite, tmp_path: Path) -> None:
    raw = tmp_path / "raw.csv"
    a = _produce(db, raw)
    attacker = LocalKeySigner.generate()
    forged = sign_checkpoint(Checkpoint("mlseal.local/ledger", 1, bytes(32)), attacker)
    with pytest.raises(InputRefused, match=r"checkpoint its producer accepted.*not signed by a trusted"):
        _consume(db, raw, a, checkpoint=forged)
    with pytest.raises(InputRefused, match="checkpoint"):
        _consume(db, raw, a, **upstream({META_CHECKPOINT: 5}))
    assert _size(db) == 1


def test_a_rollback_while_the_stage_runs_is_refused_before_appending(db: Sqlite, tmp_path: Path) -> None:
    db.append(3)
    with pytest.raises(RollbackError, match=r"nothing appended.*size 2.*size 3"), \
            Stage("ingest", name="ingest", sealing=_sealing(db)) as st:
        st.output("raw", tmp_path / "raw.csv").write_text("x\n")
        db.truncate(2)  # during the body: after preflight, before the append
    assert _size(db) == 2
    assert not (tmp_path / "raw.csv").exists()
