"""VerifiedView promises that mutation testing found unpinned.

The attacker writes the ledger's database. Each test is a change an append-only log never
makes, at the edges the earlier tests did not reach: a view of one record, a rewrite that
keeps the stored Merkle nodes (or changes only them), a read that fails after its first
row, a batch boundary, a trust file that narrows a key's grant, a checkpoint at exactly
the view's size; plus what the view answers about sizes it does not hold.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest

from mlseal.errors import InfrastructureError, VerificationError
from mlseal.ledger import Ledger, merkle, open_ledger, verified
from mlseal.ledger.checkpoint import Checkpoint, sign_checkpoint
from mlseal.ledger.record import ZERO_HASH, Component, InputRef, OutputRef, RecordDraft
from mlseal.ledger.trusted import VerifiedRecords
from mlseal.ledger.verified import FORKED, ROLLED_BACK, TAMPERED, VerifiedView, ViewFailed, ViewHead
from mlseal.signing.keys import LocalKeySigner
from mlseal.signing.trust import TrustRoot
from tests.fixtures_admission import resign_entry, sha


def _db(url: str, sql: str, params: tuple[Any, ...] = ()) -> None:
    """SQL straight at the storage, as someone with write access to the database runs it."""
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        db.execute(sql, params)
    db.close()


def _rewrite(url: str, seq: int, signer: LocalKeySigner) -> None:
    """Replace entry `seq` by an edited, validly signed record, its stored hash updated with it
    (so the store's head and the next append follow the new entry)."""
    resign_entry(url, seq, signer, params={"rewritten": True})
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        (data,) = db.execute("SELECT entry FROM mlseal_entries WHERE seq = ?", (seq,)).fetchone()
        db.execute("UPDATE mlseal_entries SET entry_hash = ? WHERE seq = ?", (hashlib.sha256(data).digest(), seq))
    db.close()


def _fill(led: Ledger, signer: LocalKeySigner, n: int, tag: str = "r") -> None:
    """n records; record i outputs sha(tag/i) and consumes the previous one's output."""
    start = led.size()
    for i in range(start, start + n):
        ins = (InputRef(name="in", uri=f"file:///{tag}/{i - 1}", sha256=sha(f"{tag}/{i - 1}")),) if i else ()
        led.append(RecordDraft(stage="process", component=Component(name="p"), inputs=ins,
                               outputs=(OutputRef(name="o", uri=f"file:///{tag}/{i}", sha256=sha(f"{tag}/{i}")),)),
                   signer, signer_name="pipeline")


def test_view_of_an_empty_ledger_and_its_first_record(
    sqlite_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    with open_ledger(sqlite_url) as led:
        view = VerifiedView(led, ledger_trust)
        assert view.head() == ViewHead(0, merkle.EMPTY_ROOT, ZERO_HASH)
        assert view.root() == merkle.EMPTY_ROOT and view.checkpoint_size == 0
        _fill(led, ledger_signer, 1)
        assert view.refresh() == 1
        assert view.head() == ViewHead(1, led.root(1), led.head().last_entry_hash)
        assert view.checkpoint_size == 0


def test_roots_and_records_only_of_the_sizes_the_view_holds(
    sqlite_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    with open_ledger(sqlite_url) as led:
        _fill(led, ledger_signer, 5)
        view = VerifiedView(led, ledger_trust)
        assert view.root() == led.root() == view.root(5)
        assert [view.root(s) for s in range(6)] == [led.root(s) for s in range(6)]
        for size in (6, -1):
            with pytest.raises(VerificationError, match=f"holds 5 records, not {size}"):
                view.root(size)
        for seq in (5, -1):
            with pytest.raises(VerificationError, match=rf"no record {seq} \(size 5\)"):
                view.record(seq)


def test_a_reader_with_only_size_and_entry_is_verified_alike(
    sqlite_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    """A `LedgerReader` without head, entries or stored checkpoints (e.g. another view)."""

    class Minimal:
        def __init__(self, led: Ledger) -> None:
            self._led = led

        def size(self) -> int:
            return self._led.size()

        def entry(self, seq: int) -> bytes:
            return self._led.entry(seq)

    with open_ledger(sqlite_url) as led:
        _fill(led, ledger_signer, 4)
        view = VerifiedView(Minimal(led), ledger_trust)
        assert view.failure is None and view.size() == 4
        assert view.head().root == led.root() and view.producers_of(sha("r/2")) == [2]
        assert [view.entry(s) for s in range(4)] == [led.entry(s) for s in range(4)]
        _fill(led, ledger_signer, 2)
        assert view.refresh() == 2 and view.record(5).seq == 5


@pytest.mark.parametrize("n", [1, 3])
def test_last_entry_rewritten_in_place_is_a_fork(
    sqlite_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot, n: int
) -> None:
    """The stored nodes are left alone (same root): only the last entry's hash tells."""
    with open_ledger(sqlite_url) as led:
        _fill(led, ledger_signer, n)
        view = VerifiedView(led, ledger_trust)
    _rewrite(sqlite_url, n - 1, ledger_signer)
    with open_ledger(sqlite_url, create=False) as led:
        view.ledger = led
        with pytest.raises(ViewFailed, match=f"tree of {n} records changed") as exc:
            view.refresh()
    assert exc.value.code == FORKED


@pytest.mark.parametrize("n", [1, 3])
def test_last_entry_rewritten_then_appended_to_is_a_fork(
    sqlite_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot, n: int
) -> None:
    """The new record links to the rewritten entry, not to the one the view verified."""
    with open_ledger(sqlite_url) as led:
        _fill(led, ledger_signer, n)
        view = VerifiedView(led, ledger_trust)
    _rewrite(sqlite_url, n - 1, ledger_signer)
    with open_ledger(sqlite_url, create=False) as led:
        _fill(led, ledger_signer, 1)
        view.ledger = led
        with pytest.raises(ViewFailed, match=f"record {n}'s prev .* is not the hash of the verified record {n - 1}") \
                as exc:
            view.refresh()
    assert exc.value.code == FORKED


@pytest.mark.parametrize("n", [1, 2])
def test_stored_root_at_the_views_size_changed_then_appended_to_is_a_fork(
    sqlite_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot, n: int
) -> None:
    with open_ledger(sqlite_url) as led:
        _fill(led, ledger_signer, n)
        view = VerifiedView(led, ledger_trust)
    top = n.bit_length() - 1  # the one node over all n records (n is a power of two)
    _db(sqlite_url, "UPDATE mlseal_nodes SET hash = ? WHERE level = ? AND idx = 0", (bytes(32), top))
    with open_ledger(sqlite_url, create=False) as led:
        _fill(led, ledger_signer, 1)
        view.ledger = led
        with pytest.raises(ViewFailed, match=f"root at {n} records is now") as exc:
            view.refresh()
    assert exc.value.code == FORKED


def test_stored_root_that_is_not_the_entries_root_is_reported_and_logged(
    sqlite_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot, caplog: pytest.LogCaptureFixture
) -> None:
    with open_ledger(sqlite_url) as led:
        _fill(led, ledger_signer, 2)
    _db(sqlite_url, "UPDATE mlseal_nodes SET hash = ? WHERE level = 1 AND idx = 0", (bytes(32),))
    with caplog.at_level(logging.WARNING, logger="mlseal.ledger.verified"), \
            open_ledger(sqlite_url, create=False) as led:
        view = VerifiedView(led, ledger_trust)
    assert view.failure is None and view.size() == 2
    [problem] = view.problems
    assert "stored Merkle root of 2 records" in problem and "is not the root of the stored entries" in problem
    assert problem in caplog.text


def test_a_failed_view_logs_why(
    sqlite_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot, caplog: pytest.LogCaptureFixture
) -> None:
    with open_ledger(sqlite_url) as led:
        _fill(led, ledger_signer, 3)
        view = VerifiedView(led, ledger_trust)
    _db(sqlite_url, "DELETE FROM mlseal_entries WHERE seq >= 1")
    _db(sqlite_url, "DELETE FROM mlseal_nodes WHERE ((idx + 1) << level) > 1")
    with caplog.at_level(logging.ERROR, logger="mlseal.ledger.verified"), \
            open_ledger(sqlite_url, create=False) as led:
        view.ledger = led
        with pytest.raises(ViewFailed, match="rolled back"):
            view.refresh()
    assert "the ledger now has 1 records, but 3 were verified before" in caplog.text


def test_record_zero_must_link_to_no_earlier_record(
    sqlite_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    with open_ledger(sqlite_url) as led:
        _fill(led, ledger_signer, 1)
    resign_entry(sqlite_url, 0, ledger_signer, prev="ab" * 32)
    with open_ledger(sqlite_url, create=False) as led:
        view = VerifiedView(led, ledger_trust)
    assert view.failure is None
    with pytest.raises(VerificationError, match="record 0's prev is not 0000000000000000…: it is not the first record"):
        view.record(0)


def test_rows_deleted_in_the_middle_are_named(
    sqlite_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    with open_ledger(sqlite_url) as led:
        _fill(led, ledger_signer, 5)
    _db(sqlite_url, "DELETE FROM mlseal_entries WHERE seq IN (1, 2)")
    with open_ledger(sqlite_url, create=False) as led:
        view = VerifiedView(led, ledger_trust)
    assert view.failure is not None and view.failure.code == TAMPERED
    assert "returned record 3 where record 1 belongs: records 1..2 were deleted" in str(view.failure)


def test_rows_deleted_at_the_end_behind_the_heads_back_are_named(
    sqlite_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    """The entries of the last records are gone, the stored tree still counts them."""
    with open_ledger(sqlite_url) as led:
        _fill(led, ledger_signer, 5)
    _db(sqlite_url, "DELETE FROM mlseal_entries WHERE seq >= 3")
    with open_ledger(sqlite_url, create=False) as led:
        view = VerifiedView(led, ledger_trust)
    assert view.failure is not None and view.failure.code == TAMPERED
    assert "ledger storage holds 3 records, its head says 5: records 3..4 were deleted" in str(view.failure)


def test_an_entry_altered_in_the_middle_is_named_by_its_successor(
    sqlite_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    with open_ledger(sqlite_url) as led:
        _fill(led, ledger_signer, 4)
    resign_entry(sqlite_url, 1, ledger_signer, params={"edited": True})
    with open_ledger(sqlite_url, create=False) as led:
        view = VerifiedView(led, ledger_trust)
    with pytest.raises(VerificationError, match=r"record 2's prev .* does not match the hash of entry 1 "):
        view.record(1)
    assert [view.record(s).seq for s in (0, 2, 3)] == [0, 2, 3]


@pytest.mark.parametrize("altered", [1, 2, 3, 4])
def test_batches_keep_every_record_and_every_successor_check(
    sqlite_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot, monkeypatch: pytest.MonkeyPatch,
    altered: int,
) -> None:
    """Entries are read in batches; an entry at a batch's end still gets its successor's check."""
    with open_ledger(sqlite_url) as led:
        _fill(led, ledger_signer, 7)
    resign_entry(sqlite_url, altered, ledger_signer, params={"edited": True})
    monkeypatch.setattr(verified, "BATCH", 3)
    with open_ledger(sqlite_url, create=False) as led:
        view = VerifiedView(led, ledger_trust)
    for seq in range(7):
        if seq == altered:
            with pytest.raises(VerificationError, match=f"entry {altered} was altered"):
                view.record(seq)
        else:
            assert view.record(seq).seq == seq


def test_a_read_that_fails_after_one_row_leaves_no_index_entry_behind(
    sqlite_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    class Flaky:
        def __init__(self, led: Ledger) -> None:
            self._led = led
            self.fail_after: int | None = None

        def __getattr__(self, name: str) -> Any:
            return getattr(self._led, name)

        def entries(self, start: int, end: int) -> Iterator[tuple[int, bytes]]:
            for n, row in enumerate(self._led.entries(start, end)):
                if self.fail_after is not None and n >= self.fail_after:
                    raise InfrastructureError("ledger: connection lost")
                yield row

    with open_ledger(sqlite_url) as led:
        _fill(led, ledger_signer, 2)
        flaky = Flaky(led)
        view = VerifiedView(flaky, ledger_trust)
        _fill(led, ledger_signer, 3)
        flaky.fail_after = 1
        with pytest.raises(InfrastructureError):
            view.refresh()
        flaky.fail_after = None
        assert view.refresh() == 3
        assert view.producers_of(sha("r/2")) == [2] and view.consumers_of(sha("r/2")) == [3]


def test_entries_being_read_are_not_answered_before_they_are_verified(
    sqlite_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    """A reader asking while a refresh is under way gets the old size's answers."""
    seen: list[tuple[list[int], list[int]]] = []

    class Watched:
        def __init__(self, led: Ledger) -> None:
            self._led = led
            self.view: VerifiedView | None = None

        def __getattr__(self, name: str) -> Any:
            return getattr(self._led, name)

        def entries(self, start: int, end: int) -> Iterator[tuple[int, bytes]]:
            for n, row in enumerate(self._led.entries(start, end)):
                if n and self.view is not None:  # the rows before this one are indexed, not published
                    seen.append((self.view.producers_of(sha("r/2")), self.view.consumers_of(sha("r/1"))))
                yield row

    with open_ledger(sqlite_url) as led:
        _fill(led, ledger_signer, 2)
        watched = Watched(led)
        view = VerifiedView(watched, ledger_trust)
        watched.view = view
        _fill(led, ledger_signer, 2)
        assert view.refresh() == 2
    assert seen == [([], [])]
    assert view.producers_of(sha("r/2")) == [2] and view.consumers_of(sha("r/1")) == [2]


def test_shared_verified_records_are_not_reused_under_a_narrower_grant(
    sqlite_url: str, ledger_signer: LocalKeySigner
) -> None:
    """A record verified while the key could sign any stage is not believed once the trust
    file allows it only ingest records, even from the shared cache."""
    broad = TrustRoot.of(ledger_signer.verifier("pipeline"))
    narrow = TrustRoot.of(ledger_signer.verifier("pipeline"), stages={"pipeline": ["ingest"]})
    cache = VerifiedRecords()
    with open_ledger(sqlite_url) as led:
        _fill(led, ledger_signer, 2)
        assert VerifiedView(led, broad, verified=cache).record(1).stage == "process"
        view = VerifiedView(led, narrow, verified=cache)
    with pytest.raises(VerificationError, match="may sign"):
        view.record(1)


def _with_checkpoint(led: Ledger, note: bytes | None) -> Any:
    class WithCheckpoint:
        def __init__(self) -> None:
            self.note = note

        def __getattr__(self, name: str) -> Any:
            return getattr(led, name)

        def latest_checkpoint(self) -> bytes | None:
            return self.note

    return WithCheckpoint()


def test_checkpoint_of_exactly_the_views_size_is_accepted(
    sqlite_url: str, ledger_signer: LocalKeySigner
) -> None:
    cp_key = LocalKeySigner.generate()
    trust = TrustRoot.of(ledger_signer.verifier("pipeline"), checkpoint_keys=(cp_key.verifier("cp"),))
    with open_ledger(sqlite_url) as led:
        _fill(led, ledger_signer, 3)
        stub = _with_checkpoint(led, sign_checkpoint(Checkpoint("mlseal.local/ledger", 3, led.root(3)), cp_key))
        view = VerifiedView(stub, trust)
        assert view.failure is None and view.checkpoint_size == 3
        # a checkpoint gone from storage later takes nothing back and fails nothing
        stub.note = None
        assert view.refresh() == 0 and view.checkpoint_size == 3
        stub.note = sign_checkpoint(Checkpoint("mlseal.local/ledger", 4, bytes(32)), cp_key)
        with pytest.raises(ViewFailed, match="pins 4 records, but the ledger has 3") as exc:
            view.refresh()
    assert exc.value.code == ROLLED_BACK


def test_an_entry_that_is_no_envelope_is_named_by_its_position(
    sqlite_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    with open_ledger(sqlite_url) as led:
        _fill(led, ledger_signer, 3)
    _db(sqlite_url, "UPDATE mlseal_entries SET entry = ? WHERE seq = 1", (b"not a DSSE envelope",))
    with open_ledger(sqlite_url, create=False) as led:
        view = VerifiedView(led, ledger_trust)
    assert view.failure is None
    with pytest.raises(VerificationError, match=r"^entry 1: "):
        view.record(1)
