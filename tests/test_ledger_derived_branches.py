"""Branches no other test reached: the signer-name and grant checks of bulk verification
(fast canonical path, JSON path, worker processes) and the lineage walk's odd cases."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence

import pytest

from mlseal.ledger import UNSAFE_SKIP_SIGNATURES, open_ledger, verify
from mlseal.ledger.entry import build_entry
from mlseal.ledger.lineage import trace
from mlseal.ledger.record import ZERO_HASH, Component, InputRef, OutputRef, RecordDraft, Sha256Hex, SignerRef
from mlseal.ledger.verify import verify_entries
from mlseal.signing.keys import LocalKeySigner
from mlseal.signing.trust import Grant, TrustRoot

# --- bulk verification: who a record says signed it, and what that key may sign ---------------


def chain(drafts: Sequence[tuple[RecordDraft, LocalKeySigner, str]]) -> list[tuple[int, bytes]]:
    """Entries for (draft, signing key, key id the record names), hash-linked."""
    out, prev = [], ZERO_HASH
    for seq, (d, key, named) in enumerate(drafts):
        e = build_entry(d.complete(seq=seq, prev=prev, time="t", signer=SignerRef("p", named)), key)
        out.append((seq, e))
        prev = hashlib.sha256(e).hexdigest()
    return out


@pytest.fixture
def two_keys() -> tuple[LocalKeySigner, LocalKeySigner, TrustRoot]:
    train, evaluate = LocalKeySigner.generate(), LocalKeySigner.generate()
    return train, evaluate, TrustRoot.of(train.verifier("train"), evaluate.verifier("evaluate"))


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("params", [{"i": 1}, {"nested": {"x": [1, "\\"]}}])  # fast regex, nested re-encoding
def test_record_naming_another_trusted_key(
    monkeypatch: pytest.MonkeyPatch, two_keys: tuple[LocalKeySigner, LocalKeySigner, TrustRoot],
    workers: int, params: dict[str, object],
) -> None:
    """The train key signs a record that names the evaluate key as its signer: both keys
    are trusted and the signature verifies, but the record lies about who wrote it."""
    monkeypatch.setattr(verify, "PARALLEL_THRESHOLD", 4)
    train, evaluate, trust = two_keys
    ok = [(RecordDraft(stage="evaluate", params=params), evaluate, evaluate.key_id) for _ in range(5)]
    log = chain([*ok, (RecordDraft(stage="evaluate", params=params), train, evaluate.key_id), *ok])
    r = verify_entries(log, trust, workers=workers, batch=3)
    assert [(p.seq, p.kind) for p in r.problems] == [(5, "signature")]
    assert r.problems[0].detail == (
        f"record 5: names signer key {evaluate.key_id[:16]}… but was signed by {train.key_id[:16]}…"
    )
    assert verify_entries(chain(ok * 2), trust, workers=workers, batch=3).ok


def test_record_naming_another_key_on_the_json_path(
    two_keys: tuple[LocalKeySigner, LocalKeySigner, TrustRoot],
) -> None:
    """With artifacts checked, every record is parsed in full: the same check applies."""
    train, evaluate, trust = two_keys
    out = OutputRef(name="m", uri="file:///m", sha256=Sha256Hex("ab" * 32))
    log = chain([(RecordDraft(stage="train", outputs=(out,)), train, evaluate.key_id)])
    r = verify_entries(log, trust, digest_uri=lambda uri: "ab" * 32)
    assert [(p.seq, p.kind) for p in r.problems] == [(0, "signature")]
    assert "names signer key " + evaluate.key_id[:16] in r.problems[0].detail


@pytest.mark.parametrize("json_path", [False, True])
def test_grants_in_bulk_verification(
    two_keys: tuple[LocalKeySigner, LocalKeySigner, TrustRoot], json_path: bool
) -> None:
    train, evaluate, trust = two_keys
    comp = "cd" * 32
    trust = dataclasses.replace(trust, grants={
        train.key_id: Grant(stages=frozenset({"train"})),
        evaluate.key_id: Grant(stages=frozenset({"evaluate"}), components=frozenset({comp})),
    })
    good = RecordDraft(stage="evaluate", component=Component(name="e", source_sha256=Sha256Hex(comp)))
    other = RecordDraft(stage="evaluate", component=Component(name="e", source_sha256=Sha256Hex("ef" * 32)))
    log = chain([
        (RecordDraft(stage="train"), train, train.key_id),
        (good, evaluate, evaluate.key_id),
        (RecordDraft(stage="evaluate"), train, train.key_id),  # outside its stages
        (other, evaluate, evaluate.key_id),  # outside its components
    ])
    kw = {"digest_uri": lambda uri: ""} if json_path else {}
    r = verify_entries(log, trust, **kw)  # type: ignore[arg-type]
    assert [(p.seq, p.kind) for p in r.problems] == [(2, "signature"), (3, "signature")]
    assert "may sign ['train'] records, not 'evaluate'" in r.problems[0].detail
    assert "may record only its listed component digests, not efefefef" in r.problems[1].detail


# --- lineage ---------------------------------------------------------------------------------

def d(c: str) -> Sha256Hex:
    return Sha256Hex(c * 64)


def out(name: str, c: str) -> OutputRef:
    return OutputRef(name=name, uri=f"file:///a/{name}", sha256=d(c))


def inp(name: str, c: str, seq: int | None = None) -> InputRef:
    return InputRef(name=name, uri=f"file:///a/{name}", sha256=d(c), producer_seq=seq)


def test_producer_seq_that_is_not_earlier(
    sqlite_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    with open_ledger(sqlite_url) as led:
        led.append(RecordDraft(stage="ingest", outputs=(out("raw", "1"),)), ledger_signer, signer_name="p")
        led.append(RecordDraft(stage="train", inputs=(inp("raw", "1", 1),), outputs=(out("m", "2"),)),
                   ledger_signer, signer_name="p")
        for trust in (ledger_trust, UNSAFE_SKIP_SIGNATURES):
            lin = trace(led, d("2"), trust)
            assert not lin.ok and lin.ancestors == ()
            assert [(p.seq, p.kind) for p in lin.problems] == [(1, "break")]
            assert "input raw names producer record 1, which is not earlier" in lin.problems[0].detail


def test_diamond_lineage_lists_each_ancestor_once(
    ledger_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    with open_ledger(ledger_url) as led:
        add = lambda **kw: led.append(RecordDraft(**kw), ledger_signer, signer_name="p")  # noqa: E731
        add(stage="ingest", outputs=(out("raw", "1"),))  # 0
        add(stage="process", inputs=(inp("raw", "1", 0),), outputs=(out("a", "2"),))  # 1
        add(stage="process", inputs=(inp("raw", "1", 0),), outputs=(out("b", "3"),))  # 2
        add(stage="train", inputs=(inp("a", "2", 1), inp("b", "3", 2), inp("raw", "1", 0)),
            outputs=(out("m", "4"),))  # 3
        for trust in (ledger_trust, UNSAFE_SKIP_SIGNATURES):
            lin = trace(led, d("4"), trust)
            assert lin.ok, lin.problems
            assert [r.seq for r in lin.ancestors] == [1, 2, 0]
            down = trace(led, d("1"), trust)
            assert [r.seq for r in down.descendants] == [1, 2, 3]


def test_unchecked_trace_refuses_a_record_stored_at_another_seq(
    sqlite_url: str, ledger_signer: LocalKeySigner
) -> None:
    import sqlite3

    with open_ledger(sqlite_url) as led:
        led.append(RecordDraft(stage="ingest", outputs=(out("raw", "1"),)), ledger_signer, signer_name="p")
        led.append(RecordDraft(stage="ingest", outputs=(out("x", "5"),)), ledger_signer, signer_name="p")
        led.append(RecordDraft(stage="train", inputs=(inp("raw", "1", 0),), outputs=(out("m", "2"),)),
                   ledger_signer, signer_name="p")
    with sqlite3.connect(sqlite_url[len("sqlite:///") :]) as c:  # record 1's bytes stored at 0
        e1 = c.execute("SELECT entry FROM mlseal_entries WHERE seq = 1").fetchone()[0]
        c.execute("UPDATE mlseal_entries SET entry = ?, entry_hash = ? WHERE seq = 0", (e1, b"x" * 32))
    with open_ledger(sqlite_url) as led:
        lin = trace(led, d("2"), UNSAFE_SKIP_SIGNATURES)
    assert not lin.ok
    assert [(p.seq, p.kind) for p in lin.problems] == [(0, "signature")]
    assert "entry stored at 0 holds record seq 1" in lin.problems[0].detail


def test_unchecked_trace_takes_only_earlier_producers(sqlite_url: str, ledger_signer: LocalKeySigner) -> None:
    with open_ledger(sqlite_url) as led:
        led.append(RecordDraft(stage="train", inputs=(inp("data", "7"),), outputs=(out("m", "8"),)),
                   ledger_signer, signer_name="p")
        led.append(RecordDraft(stage="ingest", outputs=(out("data", "7"),)), ledger_signer, signer_name="p")
        lin = trace(led, d("8"), UNSAFE_SKIP_SIGNATURES)
    assert not lin.ok and lin.ancestors == ()
    assert "input data (sha256 777777777777…) was not output by any earlier trusted record" in lin.problems[0].detail


def test_untrusted_consumer_is_left_out_of_descendants(
    ledger_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    intruder = LocalKeySigner.generate()
    with open_ledger(ledger_url) as led:
        led.append(RecordDraft(stage="ingest", outputs=(out("raw", "1"),)), ledger_signer, signer_name="p")
        led.append(RecordDraft(stage="process", inputs=(inp("raw", "1", 0),), outputs=(out("c", "2"),)),
                   intruder, signer_name="x")
        led.append(RecordDraft(stage="process", inputs=(inp("raw", "1", 0),), outputs=(out("d", "3"),)),
                   ledger_signer, signer_name="p")
        lin = trace(led, d("1"), ledger_trust)
    assert [r.seq for r in lin.descendants] == [2]
    assert [(p.seq, p.kind) for p in lin.problems] == [(1, "signature")]


def test_untrusted_newer_producer_reported_once(
    sqlite_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    """An intruder's record outputs the same digest after the trusted one; it is reached
    both as a candidate producer and by the walk, and reported once."""
    intruder = LocalKeySigner.generate()
    with open_ledger(sqlite_url) as led:
        led.append(RecordDraft(stage="ingest", outputs=(out("raw", "1"),)), ledger_signer, signer_name="p")
        led.append(RecordDraft(stage="process", inputs=(inp("raw", "1", 0),), outputs=(out("raw", "1"),)),
                   intruder, signer_name="x")
        led.append(RecordDraft(stage="train", inputs=(inp("raw", "1"),), outputs=(out("m", "2"),)),
                   ledger_signer, signer_name="p")
        lin = trace(led, d("1"), ledger_trust)
        assert lin.producer is not None and lin.producer.seq == 0
        assert [p.seq for p in lin.problems] == [1]
        up = trace(led, d("2"), ledger_trust)
    assert [p.seq for p in up.problems] == [1] and [r.seq for r in up.ancestors] == [0]
