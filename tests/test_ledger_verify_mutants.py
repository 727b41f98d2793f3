"""`ledger verify` checks that mutation testing found unpinned: checkpoints and anchors of
one record, the positions and numbers its problems name, and artifacts that cannot be read.

A problem's ``seq`` and the record numbers in its detail are what an operator acts on
(which record to look at, which range was removed); they are asserted exactly.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from mlseal.errors import InfrastructureError, VerificationError
from mlseal.ledger import merkle
from mlseal.ledger.checkpoint import Checkpoint
from mlseal.ledger.entry import build_entry, envelope_bytes, pae
from mlseal.ledger.record import ZERO_HASH, Component, OutputRef, RecordDraft, Sha256Hex, SignerRef
from mlseal.ledger.unsafe import UNSAFE_SKIP_SIGNATURES
from mlseal.ledger.verify import Anchor, Report, verify_entries
from mlseal.signing.keys import LocalKeySigner
from mlseal.signing.trust import Grant, TrustRoot


def make_log(signer: LocalKeySigner, n: int, **fields: Any) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    prev = ZERO_HASH
    for seq in range(n):
        rec = RecordDraft(stage="process", params={"seq": seq}, **fields).complete(
            seq=seq, prev=prev, time="2026-01-01T00:00:00Z", signer=SignerRef("pipeline", signer.key_id))
        e = build_entry(rec, signer)
        out.append((seq, e))
        prev = hashlib.sha256(e).hexdigest()
    return out


def only(report: Report) -> tuple[int | None, str, str]:
    assert not report.ok, "went unnoticed"
    [p] = report.problems
    return p.seq, p.kind, p.detail


def _anchor(log: list[tuple[int, bytes]], size: int, **changes: Any) -> Anchor:
    tree = merkle.MemoryTree(merkle.leaf_hash(e) for _, e in log)
    fields: dict[str, Any] = {
        "size": size,
        "root": tree.root(size),
        "frontier": tuple(tree.get_nodes(merkle.perfect_cover(0, size)).values()),
        "last_entry": log[size - 1][1],
        "last_entry_proof": tuple(merkle.inclusion_proof(size - 1, size, tree)),
    }
    fields.update(changes)
    return Anchor(**fields)


def test_anchor_of_one_record_is_checked_like_any_other(
    ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    log = make_log(ledger_signer, 4)
    r = verify_entries(log[1:], ledger_trust, anchor=_anchor(log, 1))
    assert r.ok and (r.start, r.checked, r.size) == (1, 3, 4)
    seq, kind, detail = only(verify_entries(log[1:], ledger_trust, anchor=_anchor(log, 1, frontier=(bytes(32),))))
    assert (seq, kind) == (None, "checkpoint")
    assert "stored Merkle nodes do not reproduce the checkpoint root at size 1" in detail
    # the next record's prev does not link to the wrong entry either; the anchor's problem comes first
    p = verify_entries(log[1:], ledger_trust, anchor=_anchor(log, 1, last_entry=log[1][1])).problems[0]
    assert (p.seq, p.kind) == (0, "checkpoint") and p.detail.startswith("record 0: not the entry the checkpoint pinned")


def test_anchor_whose_last_entry_is_another_names_that_record(
    ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    log = make_log(ledger_signer, 9)
    bad = _anchor(log, 6, last_entry=log[2][1])
    problems = verify_entries(log[6:], ledger_trust, anchor=bad).problems
    assert problems[0].seq == 5 and problems[0].kind == "checkpoint"
    assert problems[0].detail.startswith("record 5: not the entry the checkpoint pinned (")


def test_checkpoint_of_one_record_is_compared(ledger_signer: LocalKeySigner, ledger_trust: TrustRoot) -> None:
    log = make_log(ledger_signer, 3)
    first_root = merkle.leaf_hash(log[0][1])
    assert verify_entries(log, ledger_trust, checkpoint=Checkpoint("o", 1, first_root)).ok
    seq, kind, detail = only(verify_entries(log, ledger_trust, checkpoint=Checkpoint("o", 1, bytes(32))))
    assert (seq, kind) == (0, "checkpoint")
    assert (f"the first 1 records have root {first_root.hex()[:16]}…, but the checkpoint pinned "
            f"{'0' * 16}…: the log was rewritten") in detail


def test_checkpoint_of_a_rewritten_history_names_its_last_record(
    ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    log, other = make_log(ledger_signer, 6), make_log(ledger_signer, 6, metrics={"x": 1.0})
    root4 = merkle.MemoryTree(merkle.leaf_hash(e) for _, e in log).root(4)
    seq, kind, detail = only(verify_entries(other, ledger_trust, checkpoint=Checkpoint("o", 4, root4)))
    assert (seq, kind) == (3, "checkpoint") and f"the checkpoint pinned {root4.hex()[:16]}…:" in detail


def test_truncated_log_names_the_removed_records(ledger_signer: LocalKeySigner, ledger_trust: TrustRoot) -> None:
    log = make_log(ledger_signer, 5)
    root5 = merkle.MemoryTree(merkle.leaf_hash(e) for _, e in log).root()
    seq, kind, detail = only(verify_entries(log[:3], ledger_trust, checkpoint=Checkpoint("o", 5, root5)))
    assert (seq, kind) == (3, "checkpoint")
    assert "the log has 3 records but checkpoint 'o' pinned 5: records 3..4 were removed (truncated)" in detail


def test_unreadable_artifact_is_named_and_the_others_still_checked(
    ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    """`--artifacts`: an artifact storage cannot read is a problem of its record, and the
    check goes on with the next artifact."""
    digests = [Sha256Hex(hashlib.sha256(b"a%d" % i).hexdigest()) for i in range(3)]
    log: list[tuple[int, bytes]] = []
    prev = ZERO_HASH
    for seq, d in enumerate(digests):
        rec = RecordDraft(stage="train", outputs=(OutputRef(name=f"m{seq}", uri=f"s3://b/m{seq}", sha256=d),)).complete(
            seq=seq, prev=prev, time="t", signer=SignerRef("pipeline", ledger_signer.key_id))
        e = build_entry(rec, ledger_signer)
        log.append((seq, e))
        prev = hashlib.sha256(e).hexdigest()
    wrong = "f" * 64

    def digest_uri(uri: str) -> str:
        if uri == "s3://b/m0":
            raise InfrastructureError("storage: access denied")
        if uri == "s3://b/m1":
            raise VerificationError("object was deleted")
        return wrong

    report = verify_entries(log, ledger_trust, digest_uri=digest_uri)
    assert [(p.seq, p.kind) for p in report.problems] == [(0, "artifact"), (1, "artifact"), (2, "artifact")]
    assert report.problems[0].detail == "record 0: artifact m0 (s3://b/m0): storage: access denied"
    assert report.problems[1].detail == "record 1: artifact m1 (s3://b/m1): object was deleted"
    assert (f"record 2: artifact m2 (s3://b/m2) has sha256 {wrong[:12]}…, the record says {digests[2][:12]}…"
            == report.problems[2].detail)


def test_entry_with_characters_outside_base64_is_not_read_past_them(
    ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    """A payload or signature with a character outside the base64 alphabet is not the
    canonical envelope (a lenient decoder would skip it and read the signed bytes). Checked
    with a trust file; the hash-only mode reads prev and seq only (docs/ledger.md)."""
    log = make_log(ledger_signer, 2)
    e = log[1][1]
    sig_at = e.index(b'"sig":"') + len(b'"sig":"')
    for at in (12 + 8, sig_at + 8):
        bad = [log[0], (1, e[:at] + b"!" + e[at:])]
        assert (1, "format") in [(p.seq, p.kind) for p in verify_entries(bad, ledger_trust).problems]


def _signed(signer: LocalKeySigner, payload: bytes) -> bytes:
    """An envelope in the canonical form around any payload, validly signed."""
    return envelope_bytes(payload, signer.key_id, signer.sign(pae(payload)))


def _indented_log(signer: LocalKeySigner, n: int, **obj_changes: Any) -> list[tuple[int, bytes]]:
    """Records whose payloads are valid JSON but not their RFC 8785 encoding (indented)."""
    out: list[tuple[int, bytes]] = []
    prev = ZERO_HASH
    for seq in range(n):
        rec = RecordDraft(stage="process", params={"seq": seq}).complete(
            seq=seq, prev=prev, time="t", signer=SignerRef("pipeline", signer.key_id))
        obj = {**rec.to_obj(), **(obj_changes if seq == n - 1 else {})}
        e = _signed(signer, json.dumps(obj, indent=1).encode())
        out.append((seq, e))
        prev = hashlib.sha256(e).hexdigest()
    return out


def test_a_signature_that_does_not_verify_names_the_signer(
    ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    log = make_log(ledger_signer, 3)
    e1, e2 = log[1][1], log[2][1]
    swapped = e1[: e1.index(b'"sig":"')] + e2[e2.index(b'"sig":"'):]  # another record's signature
    problems = verify_entries([log[0], (1, swapped), log[2]], ledger_trust).problems
    assert (1, "signature") in [(p.seq, p.kind) for p in problems]
    [p] = [p for p in problems if p.kind == "signature"]
    assert "record 1: signature does not verify with key pipeline (entry altered after signing)" in p.detail


def test_a_payload_that_is_not_its_records_canonical_encoding(
    ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    log = _indented_log(ledger_signer, 3)
    found = verify_entries(log, ledger_trust).problems
    assert [(p.seq, p.kind) for p in found] == [(0, "format"), (1, "format"), (2, "format")]
    assert all("payload is not the RFC 8785 canonical encoding of its record" in p.detail for p in found)
    # the hash-only mode reads seq and prev from any JSON payload (docs/ledger.md)
    assert verify_entries(log, UNSAFE_SKIP_SIGNATURES).ok
    moved = _indented_log(ledger_signer, 3, seq=7)
    assert [(p.seq, p.kind) for p in verify_entries(moved, UNSAFE_SKIP_SIGNATURES).problems] == [(2, "seq")]
    relinked = _indented_log(ledger_signer, 3, prev="ab" * 32)
    assert [(p.seq, p.kind) for p in verify_entries(relinked, UNSAFE_SKIP_SIGNATURES).problems] == [(2, "prev")]


def test_hash_only_mode_needs_an_integer_seq_and_a_string_prev(ledger_signer: LocalKeySigner) -> None:
    for change in ({"seq": "2"}, {"seq": True}, {"prev": 5}):
        log = _indented_log(ledger_signer, 3, **change)
        [p] = verify_entries(log, UNSAFE_SKIP_SIGNATURES).problems
        assert (p.seq, p.kind) == (2, "format"), change
        assert p.detail == "record 2: record has no integer seq and string prev"


def test_image_grant_is_checked_when_artifacts_are_checked_too(ledger_signer: LocalKeySigner) -> None:
    """With `--artifacts` every record is parsed in full; the grant's image list still holds."""
    allowed = "registry.example/mlseal@sha256:" + "cd" * 32
    grant = Grant(images=frozenset({allowed}))
    trust = TrustRoot(signers={ledger_signer.key_id: ledger_signer.verifier("pipeline")},
                      grants={ledger_signer.key_id: grant})
    log = make_log(ledger_signer, 2, component=Component(name="p", image="registry.example/other:1"))
    for digest_uri in (None, lambda _u: "0" * 64):
        found = [p for p in verify_entries(log, trust, digest_uri=digest_uri).problems if p.kind == "signature"]
        assert [p.seq for p in found] == [0, 1], digest_uri
        assert all("may record only its listed images, not 'registry.example/other:1'" in p.detail for p in found)


def test_a_payload_that_is_not_json_is_a_format_problem(ledger_signer: LocalKeySigner, ledger_trust: TrustRoot) -> None:
    log = make_log(ledger_signer, 2)
    bad = [log[0], (1, _signed(ledger_signer, b"not json"))]
    for trust in (ledger_trust, UNSAFE_SKIP_SIGNATURES):
        found = [(p.seq, p.kind, p.detail) for p in verify_entries(bad, trust).problems]
        assert (1, "format", "record 1: payload is not valid JSON") in found, trust


def test_a_broken_link_at_a_batch_boundary_is_found(ledger_signer: LocalKeySigner, ledger_trust: TrustRoot) -> None:
    """Entries are checked in batches; the link into each batch is checked by the driver."""
    log = make_log(ledger_signer, 6)
    forged = RecordDraft(stage="process", params={"seq": 3}).complete(
        seq=3, prev="ab" * 32, time="2026-01-01T00:00:00Z", signer=SignerRef("pipeline", ledger_signer.key_id))
    bad = [*log[:3], (3, build_entry(forged, ledger_signer)), *log[4:]]
    for batch in (3, 4096):
        found = [(p.seq, p.kind) for p in verify_entries(bad, ledger_trust, batch=batch).problems]
        assert (3, "prev") in found, batch


def test_storage_claiming_another_size_is_named_once(ledger_signer: LocalKeySigner) -> None:
    log = make_log(ledger_signer, 4)
    r = verify_entries(log, UNSAFE_SKIP_SIGNATURES, stored_size=5, stored_last_hash="ab" * 32, stored_root=bytes(32))
    assert [(p.kind, p.detail) for p in r.problems] == [
        ("size", "storage says the log has 5 records, but 4 were read")]
    [p] = verify_entries(log, UNSAFE_SKIP_SIGNATURES, stored_root=bytes(32)).problems
    root = merkle.MemoryTree(merkle.leaf_hash(e) for _, e in log).root()
    assert (p.kind, p.detail) == (
        "root", f"stored Merkle root {'0' * 16}… does not match the root of the entries ({root.hex()[:16]}…)")


def test_problems_beyond_the_cap_are_counted(ledger_signer: LocalKeySigner, ledger_trust: TrustRoot) -> None:
    rogue = LocalKeySigner.generate()
    r = verify_entries(make_log(rogue, 55), ledger_trust)
    assert len(r.problems) == 50 and r.omitted == 5 and not r.ok
