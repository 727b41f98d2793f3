"""`ledger verify` proves the derived rows: the digest index and the Merkle nodes.

Neither table is signed; both are what the entries imply. An attacker with write access
to the database edits them directly (as `raw` does) and verification must name each
missing, extra or wrong row, through `verify_ledger` and through the CLI (exit 1).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from mlseal.cli import main
from mlseal.ledger import UNSAFE_SKIP_SIGNATURES, merkle, open_ledger, verify
from mlseal.ledger.checkpoint import Checkpoint
from mlseal.ledger.entry import build_entry
from mlseal.ledger.record import ZERO_HASH, InputRef, OutputRef, RecordDraft, Sha256Hex, SignerRef, Status
from mlseal.ledger.unsafe import Trust
from mlseal.ledger.verify import verify_entries, verify_ledger
from mlseal.signing.keys import LocalKeySigner
from mlseal.signing.trust import TrustRoot


def sha(n: int) -> Sha256Hex:
    return Sha256Hex(hashlib.sha256(b"artifact %d" % n).hexdigest())


MODEL = sha(1000)


def fill(url: str, signer: LocalKeySigner, n: int = 10) -> None:
    """Records 0..n-1: each consumes the previous one's output and writes its own; record
    3 also reads and writes the same digest (one index row per role)."""
    with open_ledger(url) as led:
        for i in range(n):
            ins = (InputRef(name="in", uri=f"file:///o/{i - 1}", sha256=sha(i - 1), producer_seq=i - 1),) if i else ()
            if i == 3:
                ins = (*ins, InputRef(name="again", uri="file:///o/3", sha256=sha(i), producer_seq=None))
            led.append(
                RecordDraft(stage="process", inputs=ins,
                            outputs=(OutputRef(name="o", uri=f"file:///o/{i}", sha256=sha(i)),), params={"i": i}),
                signer, signer_name="pipeline",
            )


def raw(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """SQL straight at the storage, as an attacker with database access would run it."""
    if url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(url[len("sqlite:///") :]) as c:
            return c.execute(sql, params).fetchall()
    import psycopg

    with psycopg.connect(url, autocommit=True) as c:
        cur = c.execute(sql.replace("?", "%s"), params)
        return cur.fetchall() if cur.description else []


def check(url: str, trust: Trust, **kw: Any) -> verify.Report:
    with open_ledger(url, create=False) as led:
        return verify_ledger(led, trust, **kw)


def problems(report: verify.Report, kind: str) -> list[verify.Problem]:
    assert not report.ok, "the change to a derived row went unnoticed"
    return [p for p in report.problems if p.kind == kind]


@pytest.fixture
def trust_file(tmp_path: Path, ledger_signer: LocalKeySigner) -> str:
    ledger_signer.save(tmp_path / "k.pem", tmp_path / "k.pub.pem")
    (tmp_path / "trust.yaml").write_text("signers: [{name: pipeline, public_key: k.pub.pem}]\n")
    return str(tmp_path / "trust.yaml")


def cli_verify(capsys: pytest.CaptureFixture[str], url: str, trust_file: str, *extra: str) -> tuple[int, Any, str]:
    code = main(["ledger", "verify", "--ledger", url, "--trust", trust_file, "--json", *extra])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


# --- the digest index ------------------------------------------------------------------------

def test_untouched_ledger_has_exactly_the_implied_rows(
    ledger_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    fill(ledger_url, ledger_signer)
    assert check(ledger_url, ledger_trust).ok
    assert check(ledger_url, UNSAFE_SKIP_SIGNATURES).ok
    with open_ledger(ledger_url) as led:  # and the stores list them, in order
        rows = list(led._store.iter_digest_rows(0))
    assert rows == sorted(rows) and len(rows) == 10 + 9 + 1
    assert (3, 1, bytes.fromhex(sha(3))) in rows and (3, 0, bytes.fromhex(sha(3))) in rows


def test_deleted_digest_row(
    ledger_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot, trust_file: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fill(ledger_url, ledger_signer)
    raw(ledger_url, "DELETE FROM mlseal_digests WHERE seq = 4 AND role = 1")
    for trust in (ledger_trust, UNSAFE_SKIP_SIGNATURES):
        [p] = problems(check(ledger_url, trust), "index")
        assert p.seq == 4 and "no row for its input " + sha(3)[:16] in p.detail and "restore" in p.detail
    code, out, err = cli_verify(capsys, ledger_url, trust_file)
    assert code == 1 and out["ok"] is False
    assert [(p["seq"], p["kind"]) for p in out["problems"]] == [(4, "index")]
    assert "FAILED" in err and "record 4: the digest index has no row for its input" in err


def test_spurious_digest_rows(
    ledger_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot, trust_file: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fill(ledger_url, ledger_signer)
    # record 5 made to look like a producer of the model; a row for a record that is not there
    raw(ledger_url, "INSERT INTO mlseal_digests (sha256, role, seq) VALUES (?, 0, 5)", (bytes.fromhex(MODEL),))
    raw(ledger_url, "INSERT INTO mlseal_digests (sha256, role, seq) VALUES (?, 1, 77)", (bytes.fromhex(MODEL),))
    raw(ledger_url, "INSERT INTO mlseal_digests (sha256, role, seq) VALUES (?, 1, -1)", (bytes.fromhex(MODEL),))
    found = problems(check(ledger_url, ledger_trust), "index")
    assert [p.seq for p in found] == [-1, 5, 77]
    assert "record 5: the digest index holds a row (output " + MODEL[:16] in found[1].detail
    assert "does not list" in found[1].detail
    assert "for record 77, which storage does not hold" in found[2].detail
    code, out, err = cli_verify(capsys, ledger_url, trust_file)
    assert code == 1 and {p["seq"] for p in out["problems"]} == {-1, 5, 77}
    assert "that the record does not list" in err


def test_changed_role(ledger_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot) -> None:
    fill(ledger_url, ledger_signer)
    raw(ledger_url, "UPDATE mlseal_digests SET role = 1 WHERE seq = 6 AND role = 0")
    found = problems(check(ledger_url, ledger_trust), "index")
    assert [p.seq for p in found] == [6, 6]
    assert any("no row for its output " + sha(6)[:16] in p.detail for p in found)
    assert any("holds a row (input " + sha(6)[:16] in p.detail for p in found)


def test_hidden_failed_evaluation(
    ledger_url: str, ledger_signer: LocalKeySigner, trust_file: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The attack: a newer failed evaluation of the model, hidden by deleting its one
    index row, and a verify against a signed checkpoint that still said OK."""
    with open_ledger(ledger_url) as led:
        led.append(RecordDraft(stage="train", outputs=(OutputRef(name="model", uri="file:///m", sha256=MODEL),)),
                   ledger_signer, signer_name="pipeline")
        for status in (Status.OK, Status.FAILED):
            led.append(RecordDraft(stage="evaluate", status=status,
                                   inputs=(InputRef(name="model", uri="file:///m", sha256=MODEL, producer_seq=0),)),
                       ledger_signer, signer_name="pipeline")
        assert led.consumers_of(MODEL) == [1, 2]
    cp = LocalKeySigner.generate()
    cp.save(tmp_path / "cp.pem", tmp_path / "cp.pub.pem")
    Path(trust_file).write_text(Path(trust_file).read_text() + "checkpoint_keys: [cp.pub.pem]\n")
    cpfile = str(tmp_path / "cp.txt")
    assert main(["ledger", "checkpoint", "--ledger", ledger_url, "--key", str(tmp_path / "cp.pem"),
                 "--out", cpfile]) == 0
    raw(ledger_url, "DELETE FROM mlseal_digests WHERE seq = 2")
    with open_ledger(ledger_url) as led:
        assert led.consumers_of(MODEL) == [1]  # what a reader of the index now sees
    capsys.readouterr()
    for extra in ((), ("--from-checkpoint",)):
        code, out, err = cli_verify(capsys, ledger_url, trust_file, "--checkpoint", cpfile, *extra)
        if extra:  # the row belongs to a record before the checkpoint: outside an incremental check
            assert code == 0 and out["ok"]
            continue
        assert code == 1 and [(p["seq"], p["kind"]) for p in out["problems"]] == [(2, "index")]
        assert "record 2: the digest index has no row for its input " + MODEL[:16] in err


def test_rows_of_a_deleted_entry(ledger_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot) -> None:
    fill(ledger_url, ledger_signer)
    raw(ledger_url, "DELETE FROM mlseal_entries WHERE seq = 4")
    r = check(ledger_url, ledger_trust)
    assert r.problems[0].kind == "missing" and r.problems[0].seq == 4  # the record's own problem comes first
    found = problems(r, "index")
    assert {p.seq for p in found} == {4}
    assert all("for record 4, which storage does not hold" in p.detail for p in found)


# --- Merkle nodes ----------------------------------------------------------------------------

def test_deleted_and_changed_nodes(
    ledger_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot, trust_file: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fill(ledger_url, ledger_signer)  # 10 leaves: the root is over (3, 0) and (1, 4)
    raw(ledger_url, "DELETE FROM mlseal_nodes WHERE level = 0 AND idx = 2")
    raw(ledger_url, "UPDATE mlseal_nodes SET hash = ? WHERE level = 1 AND idx = 2", (bytes(32),))
    raw(ledger_url, "UPDATE mlseal_nodes SET hash = ? WHERE level = 2 AND idx = 0", (b"\x01" * 32,))
    for trust in (ledger_trust, UNSAFE_SKIP_SIGNATURES):
        r = check(ledger_url, trust)
        assert {p.kind for p in r.problems} == {"node"}  # root, chain and signatures are intact
        found = problems(r, "node")
        assert [p.seq for p in found] == [2, 3, 5]
        assert "Merkle node (level 0, index 2) over records 2..2 is missing from storage" in found[0].detail
        assert "(level 2, index 0) over records 0..3 has hash 0101010101010101…, the entries give" in found[1].detail
        assert "(level 1, index 2) over records 4..5 has hash 0000000000000000…" in found[2].detail
        assert "restore the database" in found[0].detail
    code, out, err = cli_verify(capsys, ledger_url, trust_file)
    assert code == 1 and [p["kind"] for p in out["problems"]] == ["node"] * 3
    assert "FAILED: Merkle node (level 0, index 2)" in err


def test_extra_nodes(ledger_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot) -> None:
    fill(ledger_url, ledger_signer)
    for level, idx in ((1, 5), (2, 40), (-1, 0), (64, 0), (3, -2)):
        raw(ledger_url, "INSERT INTO mlseal_nodes (level, idx, hash) VALUES (?, ?, ?)", (level, idx, bytes(32)))
    found = problems(check(ledger_url, ledger_trust), "node")
    assert sorted(p.detail.split(")")[0] for p in found) == sorted(
        f"Merkle node (level {lv}, index {ix}" for lv, ix in ((1, 5), (2, 40), (-1, 0), (64, 0), (3, -2))
    )
    assert all("not part of the tree of the 10 records" in p.detail for p in found)


def test_from_checkpoint_checks_the_new_rows(
    ledger_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    fill(ledger_url, ledger_signer, 11)
    with open_ledger(ledger_url) as led:
        cp = Checkpoint("mlseal.local/ledger", 11, led.root())
    fill(ledger_url, ledger_signer, 6)  # records 11..16
    assert check(ledger_url, ledger_trust, checkpoint=cp, from_checkpoint=True).ok
    raw(ledger_url, "DELETE FROM mlseal_digests WHERE seq = 13 AND role = 0")
    raw(ledger_url, "UPDATE mlseal_nodes SET hash = ? WHERE level = 1 AND idx = 6", (bytes(32),))  # records 12..13
    raw(ledger_url, "UPDATE mlseal_nodes SET hash = ? WHERE level = 2 AND idx = 2", (bytes(32),))  # 8..11: spans it
    raw(ledger_url, "INSERT INTO mlseal_digests (sha256, role, seq) VALUES (?, 0, 40)", (bytes(32),))
    r = check(ledger_url, ledger_trust, checkpoint=cp, from_checkpoint=True)
    assert r.checked == 6
    assert [p.seq for p in problems(r, "index")] == [13, 40]
    assert [p.detail.split(" over")[0] for p in problems(r, "node")] == [
        "Merkle node (level 2, index 2)", "Merkle node (level 1, index 6)"
    ]


# --- the comparison itself, over many chunk layouts ------------------------------------------

class FakeRows:
    """A store's derived rows, held in memory (what verify_entries reads)."""

    def __init__(self, digests: list[tuple[int, int, bytes]], nodes: dict[tuple[int, int], bytes]) -> None:
        self.digests = sorted(digests)
        self.nodes = nodes

    def iter_digest_rows(self, start: int) -> Iterator[tuple[int, int, bytes]]:
        return iter([r for r in self.digests if r[0] >= start])

    def iter_node_rows(self, ranges: Sequence[tuple[int, int, int, int]]) -> Iterator[tuple[int, int, bytes]]:
        for lv0, lv1, ix0, ix1 in ranges:
            yield from sorted(
                (lv, ix, h) for (lv, ix), h in self.nodes.items() if lv0 <= lv <= lv1 and ix0 <= ix <= ix1
            )


def make_log(signer: LocalKeySigner, n: int) -> tuple[list[tuple[int, bytes]], list[tuple[int, int, bytes]]]:
    out, digests, prev = [], [], ZERO_HASH
    for seq in range(n):
        d = RecordDraft(stage="s", inputs=(InputRef(name="i", uri="u", sha256=sha(seq - 1), producer_seq=None),),
                        outputs=(OutputRef(name="o", uri="u", sha256=sha(seq)),))
        e = build_entry(d.complete(seq=seq, prev=prev, time="t", signer=SignerRef("p", signer.key_id)), signer)
        out.append((seq, e))
        digests += [(seq, 0, bytes.fromhex(sha(seq))), (seq, 1, bytes.fromhex(sha(seq - 1)))]
        prev = hashlib.sha256(e).hexdigest()
    return out, digests


def all_nodes(log: list[tuple[int, bytes]]) -> dict[tuple[int, int], bytes]:
    tree = merkle.MemoryTree(merkle.leaf_hash(e) for _, e in log)
    return {(lv, ix): h for lv, row in enumerate(tree.levels) for ix, h in enumerate(row)}


@pytest.mark.parametrize(("batch", "workers"), [(4096, 1), (5, 1), (7, 2), (1, 1)])
def test_every_node_and_row_is_checked(
    monkeypatch: pytest.MonkeyPatch, ledger_signer: LocalKeySigner, batch: int, workers: int
) -> None:
    monkeypatch.setattr(verify, "PARALLEL_THRESHOLD", 8)
    log, digests = make_log(ledger_signer, 23)
    nodes = all_nodes(log)
    assert verify_entries(log, UNSAFE_SKIP_SIGNATURES, derived=FakeRows(digests, nodes), batch=batch,
                          workers=workers).ok
    for c in nodes:
        fewer = dict(nodes)
        del fewer[c]
        r = verify_entries(log, UNSAFE_SKIP_SIGNATURES, derived=FakeRows(digests, fewer), batch=batch, workers=workers)
        named = [p.detail.split(" over")[0] for p in problems(r, "node")]
        assert named == [f"Merkle node (level {c[0]}, index {c[1]})"]
        wrong = {**nodes, c: bytes(32)}
        r = verify_entries(log, UNSAFE_SKIP_SIGNATURES, derived=FakeRows(digests, wrong), batch=batch, workers=workers)
        assert len(problems(r, "node")) == 1 and "has hash 0000" in r.problems[0].detail
    for i in range(0, len(digests), 3):
        r = verify_entries(log, UNSAFE_SKIP_SIGNATURES, derived=FakeRows(digests[:i] + digests[i + 1 :], nodes),
                           batch=batch, workers=workers)
        assert [p.seq for p in problems(r, "index")] == [digests[i][0]]


def test_anchored_chunks_check_spanning_nodes(ledger_signer: LocalKeySigner, ledger_trust: TrustRoot) -> None:
    log, digests = make_log(ledger_signer, 21)
    nodes = all_nodes(log)
    tree = merkle.MemoryTree(merkle.leaf_hash(e) for _, e in log)
    size = 13
    anchor = verify.Anchor(size, tree.root(size), tuple(tree.get_nodes(merkle.perfect_cover(0, size)).values()),
                           log[size - 1][1], tuple(merkle.inclusion_proof(size - 1, size, tree)))
    assert verify_entries(log[size:], ledger_trust, anchor=anchor, derived=FakeRows(digests, nodes), batch=3).ok
    # every node ending after the anchor is read; none before it
    for c in nodes:
        fewer = dict(nodes)
        del fewer[c]
        r = verify_entries(log[size:], ledger_trust, anchor=anchor, derived=FakeRows(digests, fewer), batch=3)
        assert r.ok == ((c[1] + 1) << c[0] <= size), c


def test_many_problems_are_capped(ledger_signer: LocalKeySigner) -> None:
    log, _ = make_log(ledger_signer, 64)
    r = verify_entries(log, UNSAFE_SKIP_SIGNATURES, derived=FakeRows([], {}))
    assert not r.ok and len(r.problems) == verify.MAX_PROBLEMS
    assert r.omitted == 128 + 127 - verify.MAX_PROBLEMS


def test_sqlite_rows_of_other_types(sqlite_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot) -> None:
    """SQLite stores any value in any column: a text digest row is refused by name, a
    text node hash is a wrong node (not a crash)."""
    from mlseal.errors import InfrastructureError

    fill(sqlite_url, ledger_signer, 4)
    raw(sqlite_url, "UPDATE mlseal_nodes SET hash = 'x' WHERE level = 1 AND idx = 0")
    assert [p.seq for p in problems(check(sqlite_url, ledger_trust), "node")] == [1]
    raw(sqlite_url, "INSERT INTO mlseal_digests (sha256, role, seq) VALUES ('ab', 0, 'two')")
    with pytest.raises(InfrastructureError, match=r"digest index holds a row that mlseal never writes \(seq 'two'"):
        check(sqlite_url, ledger_trust)


def test_head_naming_another_last_entry(
    ledger_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot, trust_file: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The head's hash of the last entry (PostgreSQL: the head row; SQLite: the last
    entry's stored hash) is what the next append links to."""
    fill(ledger_url, ledger_signer, 5)
    if ledger_url.startswith("postgresql"):
        raw(ledger_url, "UPDATE mlseal_head SET last_hash = ?", (b"\x07" * 32,))
    else:
        raw(ledger_url, "UPDATE mlseal_entries SET entry_hash = ? WHERE seq = 4", (b"\x07" * 32,))
    [p] = problems(check(ledger_url, ledger_trust), "head")
    assert p.detail.startswith("storage's head names 0707070707070707… as the hash of record 4")
    code, out, err = cli_verify(capsys, ledger_url, trust_file)
    assert code == 1 and [q["kind"] for q in out["problems"]] == ["head"] and "restore the database" in err


def test_refused_anchor_does_not_flood_node_problems(ledger_signer: LocalKeySigner, ledger_trust: TrustRoot) -> None:
    """A stored frontier that does not give the checkpoint's root leaves positions
    unknown: the checkpoint problem is reported, no node is blamed for it."""
    log, digests = make_log(ledger_signer, 21)
    tree = merkle.MemoryTree(merkle.leaf_hash(e) for _, e in log)
    size = 13
    bad = verify.Anchor(size, tree.root(size), (bytes(32),) * len(merkle.perfect_cover(0, size)),
                        log[size - 1][1], tuple(merkle.inclusion_proof(size - 1, size, tree)))
    r = verify_entries(log[size:], ledger_trust, anchor=bad, derived=FakeRows(digests, all_nodes(log)))
    assert [p.kind for p in r.problems] == ["checkpoint"]
