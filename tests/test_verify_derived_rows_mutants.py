"""`ledger verify`'s derived-row checks where mutation testing found them unpinned: an
incremental verify from a checkpoint of one record, which record a wrong row is blamed
on at a chunk's edges, and the digest stream being closed (a server-side cursor on
PostgreSQL) once verification is over.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from mlseal.ledger import open_ledger
from mlseal.ledger.checkpoint import Checkpoint
from mlseal.ledger.unsafe import UNSAFE_SKIP_SIGNATURES
from mlseal.ledger.verify import verify_entries
from mlseal.signing.keys import LocalKeySigner
from mlseal.signing.trust import TrustRoot
from tests.test_ledger_derived import FakeRows, all_nodes, check, fill, make_log, problems, raw


def test_from_a_checkpoint_of_one_record_only_the_rows_after_it_are_compared(
    sqlite_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    fill(sqlite_url, ledger_signer, 1)
    with open_ledger(sqlite_url) as led:
        cp = Checkpoint("mlseal.local/ledger", 1, led.root())
    fill(sqlite_url, ledger_signer, 4)
    r = check(sqlite_url, ledger_trust, checkpoint=cp, from_checkpoint=True)
    assert r.ok and r.checked == 4, r.problems


def test_a_spurious_row_at_a_chunks_first_and_last_record_is_blamed_on_that_record(
    sqlite_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    fill(sqlite_url, ledger_signer, 6)
    for seq in (0, 5):
        raw(sqlite_url, "INSERT INTO mlseal_digests (sha256, role, seq) VALUES (?, 0, ?)", (bytes(32), seq))
    found = problems(check(sqlite_url, ledger_trust), "index")
    assert [p.seq for p in found] == [0, 5]
    for p in found:
        assert p.detail.startswith(f"record {p.seq}: the digest index holds a row (output 0000000000000000…) "
                                   "that the record does not list")


def test_a_wrong_node_over_the_last_record_is_blamed_on_it(
    sqlite_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    fill(sqlite_url, ledger_signer, 6)
    raw(sqlite_url, "UPDATE mlseal_nodes SET hash = ? WHERE level = 0 AND idx = 5", (bytes(32),))
    [p] = problems(check(sqlite_url, ledger_trust), "node")
    assert p.seq == 5 and p.detail.startswith("Merkle node (level 0, index 5) over records 5..5 has hash 0000")


def test_the_digest_stream_is_closed_when_verification_ends(ledger_signer: LocalKeySigner) -> None:
    log, digests = make_log(ledger_signer, 9)

    class Stream:
        def __init__(self, rows: Iterator[tuple[int, int, bytes]]) -> None:
            self.rows, self.closed = rows, False

        def __iter__(self) -> Iterator[tuple[int, int, bytes]]:
            return self

        def __next__(self) -> tuple[int, int, bytes]:
            return next(self.rows)

        def close(self) -> None:
            self.closed = True

    class Rows(FakeRows):
        stream: Stream | None = None

        def iter_digest_rows(self, start: int) -> Iterator[tuple[int, int, bytes]]:
            self.stream = Stream(super().iter_digest_rows(start))
            return self.stream

        def iter_node_rows(self, ranges: Sequence[tuple[int, int, int, int]]) -> Iterator[tuple[int, int, bytes]]:
            return super().iter_node_rows(ranges)

    rows = Rows(digests, all_nodes(log))
    assert verify_entries(log, UNSAFE_SKIP_SIGNATURES, derived=rows).ok
    assert rows.stream is not None and rows.stream.closed


def test_rows_outside_the_log_are_named_with_their_role_and_coordinates(
    sqlite_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    fill(sqlite_url, ledger_signer, 6)
    raw(sqlite_url, "INSERT INTO mlseal_digests (sha256, role, seq) VALUES (?, 1, 40)", (bytes(32),))
    raw(sqlite_url, "INSERT INTO mlseal_nodes (level, idx, hash) VALUES (1, -1, ?)", (bytes(32),))
    r = check(sqlite_url, ledger_trust)
    [row] = problems(r, "index")
    assert row.seq == 40 and row.detail.startswith(
        "the digest index holds a row (input 0000000000000000…) for record 40, which storage does not hold")
    [node] = problems(r, "node")
    assert node.detail.startswith("Merkle node (level 1, index -1) is stored but is not part of the tree of the 6")
