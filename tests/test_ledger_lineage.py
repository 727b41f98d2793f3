"""Lineage: producer, ancestors back to ingest, descendants, and what breaks a lineage."""

from __future__ import annotations

import pytest

from mlseal.ledger import UNSAFE_SKIP_SIGNATURES, Ledger, open_ledger
from mlseal.ledger.lineage import trace
from mlseal.ledger.record import InputRef, OutputRef, RecordDraft, Sha256Hex
from mlseal.signing.keys import LocalKeySigner
from mlseal.signing.trust import TrustRoot


def d(c: str) -> Sha256Hex:
    return Sha256Hex(c * 64)


def out(name: str, c: str) -> OutputRef:
    return OutputRef(name=name, uri=f"file:///a/{name}", sha256=d(c))


def inp(name: str, c: str, seq: int | None = None) -> InputRef:
    return InputRef(name=name, uri=f"file:///a/{name}", sha256=d(c), producer_seq=seq)


def pipeline(led: Ledger, signer: LocalKeySigner) -> None:
    add = lambda **kw: led.append(RecordDraft(**kw), signer, signer_name="pipeline")  # noqa: E731
    add(stage="ingest", outputs=(out("raw", "1"),))                                   # 0
    add(stage="ingest", outputs=(out("labels", "2"),))                                # 1
    add(stage="process", inputs=(inp("raw", "1", 0), inp("labels", "2")), outputs=(out("clean", "3"),))  # 2
    add(stage="train", inputs=(inp("clean", "3", 2),), outputs=(out("model", "4"),))  # 3
    add(stage="evaluate", inputs=(inp("model", "4", 3), inp("clean", "3", 2)), metrics={"accuracy": 0.95})  # 4
    add(stage="deploy", inputs=(inp("model", "4", 3),))                              # 5


def test_trace_model(ledger_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot) -> None:
    with open_ledger(ledger_url) as led:
        pipeline(led, ledger_signer)
        lin = trace(led, d("4"), ledger_trust)
    assert lin.ok, lin.problems
    assert lin.producer is not None and lin.producer.seq == 3
    assert [r.seq for r in lin.ancestors] == [2, 0, 1]
    assert [r.seq for r in lin.descendants] == [4, 5]
    assert lin.stages == {"train", "process", "ingest"}
    j = lin.to_json()
    assert j["ok"] and j["producer"]["seq"] == 3 and [a["seq"] for a in j["ancestors"]] == [2, 0, 1]


def test_trace_raw_data_goes_forward(ledger_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot) -> None:
    with open_ledger(ledger_url) as led:
        pipeline(led, ledger_signer)
        lin = trace(led, d("1"), ledger_trust)
    assert lin.ok and lin.producer is not None and lin.producer.stage == "ingest"
    assert lin.ancestors == ()
    assert [r.seq for r in lin.descendants] == [2, 3, 4, 5]


def test_unknown_digest(sqlite_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot) -> None:
    with open_ledger(sqlite_url) as led:
        pipeline(led, ledger_signer)
        lin = trace(led, d("9"), ledger_trust)
    assert not lin.ok and lin.producer is None and lin.problems[0].kind == "missing"


def test_break_unrecorded_input(sqlite_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot) -> None:
    with open_ledger(sqlite_url) as led:
        led.append(RecordDraft(stage="train", inputs=(inp("data", "7"),), outputs=(out("model", "8"),)),
                   ledger_signer, signer_name="pipeline")
        lin = trace(led, d("8"), ledger_trust)
    assert not lin.ok
    assert lin.problems[0].kind == "break" and "input data" in lin.problems[0].detail


def test_break_wrong_producer_seq(sqlite_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot) -> None:
    with open_ledger(sqlite_url) as led:
        led.append(RecordDraft(stage="ingest", outputs=(out("raw", "1"),)), ledger_signer, signer_name="p")
        led.append(RecordDraft(stage="ingest", outputs=(out("other", "2"),)), ledger_signer, signer_name="p")
        led.append(RecordDraft(stage="train", inputs=(inp("raw", "1", 1),), outputs=(out("m", "3"),)),
                   ledger_signer, signer_name="p")
        lin = trace(led, d("3"), ledger_trust)
    assert not lin.ok and "did not output that digest" in lin.problems[0].detail


def test_break_no_ingest(sqlite_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot) -> None:
    with open_ledger(sqlite_url) as led:
        led.append(RecordDraft(stage="process", outputs=(out("x", "1"),)), ledger_signer, signer_name="p")
        lin = trace(led, d("1"), ledger_trust)
    assert not lin.ok and "not an ingest record" in lin.problems[0].detail


def test_untrusted_record_in_lineage(sqlite_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot) -> None:
    intruder = LocalKeySigner.generate()
    with open_ledger(sqlite_url) as led:
        led.append(RecordDraft(stage="ingest", outputs=(out("raw", "1"),)), intruder, signer_name="x")
        led.append(RecordDraft(stage="train", inputs=(inp("raw", "1", 0),), outputs=(out("m", "2"),)),
                   ledger_signer, signer_name="pipeline")
        lin = trace(led, d("2"), ledger_trust)
        unchecked = trace(led, d("2"), UNSAFE_SKIP_SIGNATURES)
    assert not lin.ok
    assert {p.kind for p in lin.problems} == {"signature"} and lin.problems[0].seq == 0
    assert unchecked.ok  # without a trust root only the structure is traced


@pytest.mark.parametrize("trusted_first", [True, False])
def test_producer_is_earliest_trusted(
    sqlite_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot, trusted_first: bool
) -> None:
    intruder = LocalKeySigner.generate()
    signers = [ledger_signer, intruder] if trusted_first else [intruder, ledger_signer]
    with open_ledger(sqlite_url) as led:
        for s in signers:
            led.append(RecordDraft(stage="ingest", outputs=(out("raw", "1"),)), s, signer_name="p")
        lin = trace(led, d("1"), ledger_trust)
    assert lin.producer is not None and lin.producer.seq == (0 if trusted_first else 1)
    assert lin.producers == (0, 1)
