"""Tampering the verifier must catch, on both backends, and the pure core's guarantees."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlseal.ledger import UNSAFE_SKIP_SIGNATURES, fastread, merkle, open_ledger, verify
from mlseal.ledger.checkpoint import Checkpoint
from mlseal.ledger.entry import build_entry
from mlseal.ledger.record import OutputRef, RecordDraft, RunInfo, Sha256Hex, SignerRef
from mlseal.ledger.unsafe import Trust
from mlseal.ledger.verify import Anchor, verify_entries, verify_ledger
from mlseal.signing.keys import LocalKeySigner
from mlseal.signing.trust import TrustRoot


def sha(n: int) -> Sha256Hex:
    return Sha256Hex(f"{n:064x}")


def fill(url: str, signer: LocalKeySigner, n: int = 10) -> None:
    with open_ledger(url) as led:
        for i in range(n):
            led.append(
                RecordDraft(stage="process", outputs=(OutputRef(name="o", uri=f"file:///o/{i}", sha256=sha(i)),),
                            params={"i": i}),
                signer, signer_name="pipeline",
            )


def raw(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run SQL directly against the storage, as an attacker with database access would."""
    if url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(url[len("sqlite:///") :]) as c:
            return c.execute(sql, params).fetchall()
    import psycopg

    with psycopg.connect(url, autocommit=True) as c:
        cur = c.execute(sql.replace("?", "%s"), params)
        return cur.fetchall() if cur.description else []


def set_entry(url: str, seq: int, data: bytes) -> None:
    raw(url, "UPDATE mlseal_entries SET entry = ? WHERE seq = ?", (data, seq))


def get_entry(url: str, seq: int) -> bytes:
    return bytes(raw(url, "SELECT entry FROM mlseal_entries WHERE seq = ?", (seq,))[0][0])


def check(url: str, trust: Trust, **kw: Any) -> verify.Report:
    with open_ledger(url, create=False) as led:
        return verify_ledger(led, trust, **kw)


def first(report: verify.Report) -> verify.Problem:
    assert not report.ok, "tampering went unnoticed"
    return report.problems[0]


def test_untouched_ledger_verifies(ledger_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot) -> None:
    fill(ledger_url, ledger_signer)
    for trust in (ledger_trust, UNSAFE_SKIP_SIGNATURES):
        r = check(ledger_url, trust)
        assert r.ok and r.size == 10 and not r.problems
        with open_ledger(ledger_url) as led:
            assert r.root == led.head().root


def test_flipped_byte_in_any_entry(ledger_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot) -> None:
    fill(ledger_url, ledger_signer, 6)
    rng = random.Random(7)
    for seq in range(6):
        original = get_entry(ledger_url, seq)
        offsets = {0, len(original) - 1, *rng.sample(range(len(original)), 6)}
        for off in sorted(offsets):
            bad = bytearray(original)
            bad[off] ^= 1 << rng.randrange(8)
            set_entry(ledger_url, seq, bytes(bad))
            p = first(check(ledger_url, ledger_trust))
            assert p.seq == seq, (off, p)
            assert p.detail.startswith(f"record {seq}:")
            # without signatures, the next record's prev link (or the root) catches it
            assert not check(ledger_url, UNSAFE_SKIP_SIGNATURES).ok
        set_entry(ledger_url, seq, original)
    assert check(ledger_url, ledger_trust).ok


def test_deleted_entry(ledger_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot) -> None:
    fill(ledger_url, ledger_signer)
    raw(ledger_url, "DELETE FROM mlseal_entries WHERE seq = 4")
    p = first(check(ledger_url, ledger_trust))
    assert p.seq == 4 and "missing" in p.detail


def test_deleted_last_entry_is_caught_by_the_stored_tree(
    ledger_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    fill(ledger_url, ledger_signer)
    raw(ledger_url, "DELETE FROM mlseal_entries WHERE seq = 9")
    r = check(ledger_url, ledger_trust)
    assert not r.ok and {p.kind for p in r.problems} & {"size", "root"}


def test_reordered_entries(ledger_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot) -> None:
    fill(ledger_url, ledger_signer)
    a, b = get_entry(ledger_url, 3), get_entry(ledger_url, 4)
    set_entry(ledger_url, 3, b)
    set_entry(ledger_url, 4, a)
    p = first(check(ledger_url, ledger_trust))
    assert p.seq == 3 and p.kind in ("prev", "seq")


def test_replayed_entry(ledger_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot) -> None:
    fill(ledger_url, ledger_signer)
    e2 = get_entry(ledger_url, 2)
    raw(ledger_url, "INSERT INTO mlseal_entries (seq, entry, entry_hash) VALUES (10, ?, ?)",
        (e2, hashlib.sha256(e2 + b"x").digest()))
    p = first(check(ledger_url, ledger_trust))
    assert p.seq == 10 and p.kind in ("prev", "seq")
    # the same entry replayed in place of another
    set_entry(ledger_url, 5, e2)
    assert first(check(ledger_url, ledger_trust)).seq == 5


def test_inserted_entry_signed_by_a_trusted_key(
    ledger_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    fill(ledger_url, ledger_signer)
    # shift records 5..9 up by one and insert a well-formed, trusted record at 5
    entries = [get_entry(ledger_url, s) for s in range(10)]
    prev = hashlib.sha256(entries[4]).hexdigest()
    forged = RecordDraft(stage="train").complete(
        seq=5, prev=prev, time="2026-01-01T00:00:00Z", signer=SignerRef("pipeline", ledger_signer.key_id)
    )
    new = [*entries[:5], build_entry(forged, ledger_signer), *entries[5:]]
    raw(ledger_url, "DELETE FROM mlseal_entries WHERE seq >= 5")
    for s in range(5, 11):
        raw(ledger_url, "INSERT INTO mlseal_entries (seq, entry, entry_hash) VALUES (?, ?, ?)",
            (s, new[s], hashlib.sha256(new[s]).digest()))
    p = first(check(ledger_url, ledger_trust))
    assert p.seq == 6 and p.kind in ("prev", "seq")


def test_forged_prev(ledger_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot) -> None:
    fill(ledger_url, ledger_signer)
    forged = RecordDraft(stage="train").complete(
        seq=7, prev=sha(12345), time="2026-01-01T00:00:00Z", signer=SignerRef("pipeline", ledger_signer.key_id)
    )
    set_entry(ledger_url, 7, build_entry(forged, ledger_signer))
    p = first(check(ledger_url, ledger_trust))
    assert p.seq == 7 and p.kind == "prev"
    assert p.detail.startswith("record 7: prev hash 00000000… does not match hash of record 6 (")


def test_entry_signed_by_untrusted_key(
    ledger_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    fill(ledger_url, ledger_signer, 3)
    with open_ledger(ledger_url) as led:
        led.append(RecordDraft(stage="train"), LocalKeySigner.generate(), signer_name="intruder")
        led.append(RecordDraft(stage="train"), ledger_signer, signer_name="pipeline")
    r = check(ledger_url, ledger_trust)
    p = first(r)
    assert p.seq == 3 and p.kind == "signature" and "does not list" in p.detail
    assert [q.seq for q in r.problems] == [3]
    assert check(ledger_url, UNSAFE_SKIP_SIGNATURES).ok  # hash-only mode cannot see who signed


def test_tampered_merkle_nodes(ledger_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot) -> None:
    fill(ledger_url, ledger_signer, 8)
    raw(ledger_url, "UPDATE mlseal_nodes SET hash = ? WHERE level = 3 AND idx = 0", (bytes(32),))
    if ledger_url.startswith("postgresql"):  # its head row caches the frontier
        raw(ledger_url, "UPDATE mlseal_head SET frontier = ?", (bytes(32),))
    p = first(check(ledger_url, ledger_trust))
    assert p.kind == "root"


def test_truncated_tail_against_checkpoint(
    ledger_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    fill(ledger_url, ledger_signer)
    with open_ledger(ledger_url) as led:
        head = led.head()
    cp = Checkpoint("mlseal.local/ledger", head.size, head.root)
    assert check(ledger_url, ledger_trust, checkpoint=cp).ok
    # an attacker drops the last 3 records and rebuilds a consistent tree for the rest
    raw(ledger_url, "DELETE FROM mlseal_entries WHERE seq >= 7")
    raw(ledger_url, "DELETE FROM mlseal_nodes")
    raw(ledger_url, "DELETE FROM mlseal_digests WHERE seq >= 7")  # rows left behind would be reported
    entries = [get_entry(ledger_url, s) for s in range(7)]
    tree = merkle.MemoryTree(merkle.leaf_hash(e) for e in entries)
    for level, row in enumerate(tree.levels):
        for idx, h in enumerate(row):
            raw(ledger_url, "INSERT INTO mlseal_nodes (level, idx, hash) VALUES (?, ?, ?)", (level, idx, h))
    if ledger_url.startswith("postgresql"):
        frontier = b"".join(tree.get_nodes(merkle.perfect_cover(0, 7)).values())
        raw(ledger_url, "UPDATE mlseal_head SET size = 7, last_hash = ?, frontier = ?",
            (hashlib.sha256(entries[6]).digest(), frontier))
    assert check(ledger_url, ledger_trust).ok  # self-consistent: only a checkpoint can tell
    p = first(check(ledger_url, ledger_trust, checkpoint=cp))
    assert p.kind == "checkpoint" and "truncated" in p.detail and "pinned 10" in p.detail


def test_rewritten_history_against_checkpoint(ledger_signer: LocalKeySigner, ledger_trust: TrustRoot) -> None:
    log = make_log(ledger_signer, 12)
    cp = Checkpoint("o", 8, merkle.root_from_leaves(merkle.leaf_hash(e) for _, e in log[:8])[1])
    assert verify_entries(log, ledger_trust, checkpoint=cp).ok
    other = make_log(ledger_signer, 12)  # a different, internally valid history
    p = first(verify_entries(other, ledger_trust, checkpoint=cp))
    assert p.kind == "checkpoint" and "does not extend" in p.detail


def test_changed_artifact(tmp_path: Path, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot) -> None:
    art = tmp_path / "model.bin"
    art.write_bytes(b"weights v1")
    digest = Sha256Hex(hashlib.sha256(b"weights v1").hexdigest())
    url = f"sqlite:///{tmp_path}/l.db"
    with open_ledger(url) as led:
        led.append(RecordDraft(stage="train", outputs=(OutputRef(name="model", uri=art.as_uri(), sha256=digest),)),
                   ledger_signer, signer_name="pipeline")

    def digest_uri(uri: str) -> str:
        assert uri == art.as_uri()
        return hashlib.sha256(art.read_bytes()).hexdigest()

    assert check(url, ledger_trust, digest_uri=digest_uri).ok
    art.write_bytes(b"weights v2")
    assert check(url, ledger_trust).ok  # without --artifacts the log itself is fine
    p = first(check(url, ledger_trust, digest_uri=digest_uri))
    assert p.seq == 0 and p.kind == "artifact" and "model" in p.detail


# --- the pure core ------------------------------------------------------------------------

def make_log(signer: LocalKeySigner, n: int, start: int = 0, prev: str = "0" * 64) -> list[tuple[int, bytes]]:
    out = []
    for seq in range(start, start + n):
        rec = RecordDraft(stage="process", params={"seq": seq, "r": random.random()}).complete(
            seq=seq, prev=prev, time="2026-01-01T00:00:00Z", signer=SignerRef("pipeline", signer.key_id)
        )
        e = build_entry(rec, signer)
        out.append((seq, e))
        prev = hashlib.sha256(e).hexdigest()
    return out


def test_parallel_and_serial_agree(
    monkeypatch: pytest.MonkeyPatch, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    monkeypatch.setattr(verify, "PARALLEL_THRESHOLD", 16)
    log = make_log(ledger_signer, 300)
    log[150] = (150, log[150][1].replace(b'"payload":"', b'"payload":"A', 1))
    log[201], log[202] = (201, log[202][1]), (202, log[201][1])
    root = merkle.root_from_leaves(merkle.leaf_hash(e) for _, e in log)[1]
    cp = Checkpoint("o", 100, merkle.root_from_leaves(merkle.leaf_hash(e) for _, e in log[:100])[1])
    for trust in (ledger_trust, UNSAFE_SKIP_SIGNATURES):
        serial = verify_entries(log, trust, workers=1, checkpoint=cp)
        parallel = verify_entries(log, trust, workers=2, batch=37, checkpoint=cp)
        assert serial == parallel
        assert serial.root == root and serial.size == 300
        assert [p.seq for p in serial.problems][:1] == [150]
        assert 201 in [p.seq for p in serial.problems]


def test_storage_error_while_streaming_is_raised(
    monkeypatch: pytest.MonkeyPatch, ledger_signer: LocalKeySigner
) -> None:
    from mlseal.errors import InfrastructureError

    monkeypatch.setattr(verify, "PARALLEL_THRESHOLD", 16)
    log = make_log(ledger_signer, 200)

    def entries() -> Iterator[tuple[int, bytes]]:
        yield from log[:150]
        raise InfrastructureError("storage went away")

    for workers in (1, 2):
        with pytest.raises(InfrastructureError, match="went away"):
            verify_entries(entries(), UNSAFE_SKIP_SIGNATURES, workers=workers, batch=37)


def test_fast_path_equals_json_parsing(ledger_signer: LocalKeySigner) -> None:
    # a params key named like a top-level field must not fool the hash-only fast path
    recs = []
    prev = "0" * 64
    cases: list[dict[str, object]] = [{"prev": "f" * 64, "seq": 99}, {"x": '"prev":"' + "e" * 64}, {}]
    for seq, params in enumerate(cases):
        rec = RecordDraft(stage="process", params=params).complete(
            seq=seq, prev=prev, time="t", signer=SignerRef("p", ledger_signer.key_id)
        )
        e = build_entry(rec, ledger_signer)
        recs.append((seq, e))
        prev = hashlib.sha256(e).hexdigest()
    assert verify_entries(recs, UNSAFE_SKIP_SIGNATURES).ok
    forged = RecordDraft(stage="process", params={"prev": prev}).complete(
        seq=3, prev="1" * 64, time="t", signer=SignerRef("p", ledger_signer.key_id)
    )
    p = first(verify_entries([*recs, (3, build_entry(forged, ledger_signer))], UNSAFE_SKIP_SIGNATURES))
    assert p.seq == 3 and p.kind == "prev"


def test_verify_from_anchor_reads_only_new_entries(ledger_signer: LocalKeySigner, ledger_trust: TrustRoot) -> None:
    log = make_log(ledger_signer, 21)
    tree = merkle.MemoryTree(merkle.leaf_hash(e) for _, e in log)
    size = 13
    anchor = Anchor(
        size=size,
        root=tree.root(size),
        frontier=tuple(tree.get_nodes(merkle.perfect_cover(0, size)).values()),
        last_entry=log[size - 1][1],
        last_entry_proof=tuple(merkle.inclusion_proof(size - 1, size, tree)),
    )
    r = verify_entries(log[size:], ledger_trust, anchor=anchor, stored_root=tree.root())
    assert r.ok and r.size == 21 and r.checked == 8 and r.root == tree.root()
    # a wrong frontier or a wrong last entry is refused
    bad = Anchor(size, tree.root(size), (bytes(32),) * len(anchor.frontier), anchor.last_entry,
                 anchor.last_entry_proof)
    assert first(verify_entries(log[size:], ledger_trust, anchor=bad)).kind == "checkpoint"
    bad = Anchor(size, tree.root(size), anchor.frontier, log[3][1], anchor.last_entry_proof)
    assert first(verify_entries(log[size:], ledger_trust, anchor=bad)).kind == "checkpoint"


def test_verify_from_checkpoint_on_a_ledger(
    ledger_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    fill(ledger_url, ledger_signer, 11)
    with open_ledger(ledger_url) as led:
        head = led.head()
    cp = Checkpoint("mlseal.local/ledger", head.size, head.root)
    fill(ledger_url, ledger_signer, 5)
    r = check(ledger_url, ledger_trust, checkpoint=cp, from_checkpoint=True)
    assert r.ok and r.checked == 5 and r.size == 16
    # tampering before the checkpoint is outside an incremental check; after it, caught
    set_entry(ledger_url, 13, get_entry(ledger_url, 12))
    assert first(check(ledger_url, ledger_trust, checkpoint=cp, from_checkpoint=True)).seq == 13


def test_report_json_shape(ledger_signer: LocalKeySigner, ledger_trust: TrustRoot) -> None:
    log = make_log(ledger_signer, 3)
    log[1] = (1, b"not an entry")
    j = verify_entries(log, ledger_trust).to_json()
    assert set(j) == {"ok", "size", "root", "problems"}
    assert j["ok"] is False and j["size"] == 3 and len(j["root"]) == 64
    assert set(j["problems"][0]) == {"seq", "kind", "detail"}
    assert j["problems"][0]["seq"] == 1 and j["problems"][0]["kind"] == "format"


_keys = st.sampled_from(["prev", "seq", "run", "signer", "key_id", "v", "x", ',"prev":"', "\\", '"'])
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=12)
    | st.sampled_from([',"prev":"' + "a" * 64 + '"', '\\",\\"seq\\":', "0" * 64]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(params=st.dictionaries(_keys | st.text(max_size=5), _json, max_size=4),
       seq=st.integers(0, 10**9), run_task=st.text(max_size=8))
def test_fast_field_reader_agrees_with_json(
    ledger_signer: LocalKeySigner, params: dict[str, Any], seq: int, run_task: str
) -> None:
    rec = RecordDraft(stage="train", params=params, run=RunInfo(task=run_task)).complete(
        seq=seq, prev=sha(seq), time="t", signer=SignerRef("p", ledger_signer.key_id)
    )
    e = build_entry(rec, ledger_signer)
    end = e.find(b'"', 12)
    want = (seq, rec.prev.encode(), ledger_signer.key_id.encode())
    got = fastread.fast_fields(e[12:end])
    assert got is None or got[:3] == want
    # a guessed tail length (right, or off by a few bytes) never changes the answer
    for hint in {got[3] if got else 0, 250, 251, 300, 5, 2000}:
        guessed = fastread.fast_fields(e[12:end], hint)
        assert guessed is None or guessed[:3] == want
        in_place = fastread.guessed_tail(e, end, hint)
        assert in_place is None or in_place[:3] == want
    if got is not None:  # the right guess is read in place too
        assert fastread.guessed_tail(e, end, got[3]) == got
