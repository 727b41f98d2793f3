"""Two verifications at once, in two threads of one process, each with its own trust file.

Every verification's trust (and mode) reaches the code that checks its entries through
that call alone (arguments, and the pool's initializer for worker processes), never
through state another call can overwrite: a second verification that starts, or ends,
while the first is still reading its entries must not change the first one's answer.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlseal.ledger import verify
from mlseal.ledger.entry import build_entry
from mlseal.ledger.record import ZERO_HASH, RecordDraft, SignerRef
from mlseal.ledger.verify import Report, verify_entries
from mlseal.signing.keys import LocalKeySigner, public_pem
from mlseal.signing.trust import TrustRoot, load_trust


def _log(signers: list[LocalKeySigner]) -> list[tuple[int, bytes]]:
    """One record per signer, each naming the key that signs it, hash-linked."""
    out, prev = [], ZERO_HASH
    for seq, s in enumerate(signers):
        rec = RecordDraft(stage="process", params={"seq": seq}).complete(
            seq=seq, prev=prev, time="2026-01-01T00:00:00Z", signer=SignerRef("p", s.key_id))
        e = build_entry(rec, s)
        out.append((seq, e))
        prev = hashlib.sha256(e).hexdigest()
    return out


def _trust_file(tmp_path: Path, name: str, signer: LocalKeySigner) -> TrustRoot:
    pem = tmp_path / f"{name}.pub.pem"
    pem.write_bytes(public_pem(signer.public_key()))
    path = tmp_path / f"{name}.trust.yaml"
    path.write_text(f"signers:\n  - name: {name}\n    public_key: {pem.name}\n")
    return load_trust(path)


@pytest.fixture()
def two_worlds(tmp_path: Path) -> tuple[list[tuple[int, bytes]], TrustRoot, list[tuple[int, bytes]], TrustRoot]:
    """Ledger A (key a, record 30 signed by b) with a trust file listing only a; ledger
    B (key b, record 5 signed by a) with one listing only b."""
    a, b = LocalKeySigner.generate(), LocalKeySigner.generate()
    log_a = _log([b if i == 30 else a for i in range(40)])
    log_b = _log([a if i == 5 else b for i in range(40)])
    return log_a, _trust_file(tmp_path, "a", a), log_b, _trust_file(tmp_path, "b", b)


def _found(r: Report) -> list[tuple[int | None, str]]:
    return [(p.seq, p.kind) for p in r.problems]


def test_a_verification_that_starts_and_ends_meanwhile_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
    two_worlds: tuple[list[tuple[int, bytes]], TrustRoot, list[tuple[int, bytes]], TrustRoot],
) -> None:
    """A is paused while reading its entries (storage is slow); B runs from start to end
    in another thread meanwhile. A's later entries are still checked against A's trust
    file: its record signed by b is found, not waved through (hash-only) or checked
    against B's trust file."""
    monkeypatch.setattr(verify, "PARALLEL_THRESHOLD", 16)
    log_a, trust_a, log_b, trust_b = two_worlds
    a_reading, b_done = threading.Event(), threading.Event()
    results: dict[str, Report] = {}
    errors: list[BaseException] = []

    def slow_entries() -> Iterator[tuple[int, bytes]]:
        for i, row in enumerate(log_a):
            if i == 20:
                a_reading.set()
                assert b_done.wait(60)
            yield row

    def run_a() -> None:
        try:
            results["a"] = verify_entries(slow_entries(), trust_a, workers=1, batch=8)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            a_reading.set()

    def run_b() -> None:
        try:
            assert a_reading.wait(60)
            results["b"] = verify_entries(log_b, trust_b, workers=1, batch=8)
        except BaseException as exc:
            errors.append(exc)
        finally:
            b_done.set()

    threads = [threading.Thread(target=run_a), threading.Thread(target=run_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert _found(results["a"]) == [(30, "signature")], results["a"].problems
    assert _found(results["b"]) == [(5, "signature")], results["b"].problems


@pytest.mark.parametrize("workers", [1, 2])
def test_two_threads_verify_two_ledgers_with_their_own_trust(
    monkeypatch: pytest.MonkeyPatch, workers: int,
    two_worlds: tuple[list[tuple[int, bytes]], TrustRoot, list[tuple[int, bytes]], TrustRoot],
) -> None:
    """Both at once, in worker processes too: each gets the answer it gets alone."""
    monkeypatch.setattr(verify, "PARALLEL_THRESHOLD", 16)
    log_a, trust_a, log_b, trust_b = two_worlds
    alone_a = verify_entries(log_a, trust_a, workers=workers, batch=8)
    alone_b = verify_entries(log_b, trust_b, workers=workers, batch=8)
    assert _found(alone_a) == [(30, "signature")] and _found(alone_b) == [(5, "signature")]
    results: dict[tuple[str, int], Report] = {}
    start = threading.Barrier(2)

    def run(name: str, log: list[tuple[int, bytes]], trust: TrustRoot) -> None:
        start.wait(60)
        for round_ in range(3):
            results[(name, round_)] = verify_entries(log, trust, workers=workers, batch=8)

    threads = [threading.Thread(target=run, args=("a", log_a, trust_a)),
               threading.Thread(target=run, args=("b", log_b, trust_b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == 6
    for (name, _), r in results.items():
        assert r == (alone_a if name == "a" else alone_b)
