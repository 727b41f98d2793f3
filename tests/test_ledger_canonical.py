"""Entries must be RFC 8785 canonical: non-canonical payloads are refused even when a
trusted key signed them, by parse_entry and by `mlseal ledger verify` (signature mode and
--artifacts full-parse mode); canonical-but-unusual records still verify."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlseal.cli import main
from mlseal.errors import VerificationError
from mlseal.ledger import UNSAFE_SKIP_SIGNATURES, _canonical, open_ledger
from mlseal.ledger.entry import build_entry, parse_entry, record_of, split_entry
from mlseal.ledger.record import (
    RECORD_PAYLOAD_TYPE,
    ZERO_HASH,
    NonCanonicalRecordError,
    OutputRef,
    Record,
    RecordDraft,
    Sha256Hex,
    SignerRef,
)
from mlseal.ledger.verify import verify_entries, verify_ledger
from mlseal.signing import dsse
from mlseal.signing.keys import LocalKeySigner, public_pem
from mlseal.signing.trust import TrustRoot


def record(signer: LocalKeySigner, seq: int = 0, prev: str = ZERO_HASH, **kw: Any) -> Record:
    draft = RecordDraft(
        stage="train",
        outputs=(OutputRef(name="model", uri="file:///m.pkl", sha256=Sha256Hex("ab" * 32)),),
        params={"epochs": 10, "lr": 0.5},
        metrics={"accuracy": 0.93},
        **kw,
    )
    return draft.complete(seq=seq, prev=prev, time="2026-01-01T00:00:00Z",
                          signer=SignerRef("pipeline", signer.key_id))


def signed(signer: LocalKeySigner, payload: bytes) -> bytes:
    """A canonical DSSE envelope, signed by a trusted key, over arbitrary payload bytes."""
    return dsse.sign(signer, RECORD_PAYLOAD_TYPE, payload)


def replace_once(data: bytes, old: bytes, new: bytes) -> bytes:
    assert data.count(old) == 1, (old, data)
    return data.replace(old, new)


# Each: (name, how to spell the canonical payload differently, what the error must say).
NON_CANONICAL = [
    ("duplicate key", lambda c: replace_once(c, b'"stage":"train"', b'"stage":"deploy","stage":"train"'),
     "duplicate key 'stage'"),
    ("nested duplicate key", lambda c: replace_once(c, b'"epochs":10', b'"epochs":10,"epochs":10'),
     "duplicate key 'epochs'"),
    ("u-escape of a letter", lambda c: replace_once(c, b'"stage":"train"', b'"stage":"tr\\u0061in"'),
     "escape"),
    ("escaped slash", lambda c: replace_once(c, b'"file:///m.pkl"', b'"file:\\/\\/\\/m.pkl"'), "escape"),
    ("upper-case u-escape of a control", lambda c: replace_once(c, b'"time":"2026', b'"time":"\\u001F2026'),
     "escape"),
    ("keys out of order", lambda c: replace_once(c, b'"epochs":10,"lr":0.5', b'"lr":0.5,"epochs":10'),
     "order"),
    ("whitespace", lambda c: replace_once(c, b'"stage":"train"', b'"stage": "train"'), "whitespace"),
    ("trailing newline", lambda c: c + b"\n", "whitespace"),
    ("number 10.0", lambda c: replace_once(c, b'"epochs":10', b'"epochs":10.0'), "number"),
    ("number 1E1", lambda c: replace_once(c, b'"epochs":10', b'"epochs":1E1'), "number"),
    ("number 0.50", lambda c: replace_once(c, b'"lr":0.5', b'"lr":0.50'), "number"),
    ("number 5e-1", lambda c: replace_once(c, b'"lr":0.5', b'"lr":5e-1'), "number"),
    ("unknown field", lambda c: replace_once(c, b'"v":1}', b'"v":1,"zz":1}'), "does not write: zz"),
]


@pytest.mark.parametrize(("name", "spell", "says"), NON_CANONICAL, ids=[n for n, _, _ in NON_CANONICAL])
def test_parse_entry_refuses_non_canonical_payload_signed_by_trusted_key(
    name: str, spell: Any, says: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    canonical = record(ledger_signer).canonical()
    payload = spell(canonical)
    assert payload != canonical and json.loads(payload)["seq"] == 0  # still parses as JSON
    entry = signed(ledger_signer, payload)
    with pytest.raises(NonCanonicalRecordError) as exc:
        parse_entry(entry, ledger_trust)
    msg = str(exc.value)
    assert msg.startswith("record 0 (train): payload is not the RFC 8785 canonical encoding"), msg
    assert says in msg, msg
    assert isinstance(exc.value, VerificationError)
    with pytest.raises(VerificationError, match=says or "canonical"):
        record_of(entry)  # display readers refuse it too
    # the canonical spelling of the same record is accepted
    assert parse_entry(signed(ledger_signer, canonical), ledger_trust) == record(ledger_signer)


def test_absent_optional_field_written_as_null_is_refused(
    ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    # "error" is written only for failed steps: an explicit null is canonical JSON but not
    # the record's encoding (two byte strings, two entry hashes, one record)
    obj = record(ledger_signer).to_obj()
    obj["error"] = None
    with pytest.raises(NonCanonicalRecordError, match="fields the v1 record does not write: error"):
        parse_entry(signed(ledger_signer, rfc8785.dumps(obj)), ledger_trust)


def test_non_canonical_envelope_is_refused(ledger_signer: LocalKeySigner, ledger_trust: TrustRoot) -> None:
    entry = build_entry(record(ledger_signer), ledger_signer)
    spaced = json.dumps(json.loads(entry)).encode()  # same envelope, ", " and ": "
    assert spaced != entry
    with pytest.raises(VerificationError, match="not in RFC 8785 canonical form"):
        parse_entry(spaced, ledger_trust)


def _log_with(signer: LocalKeySigner, spell: Any, at: int = 2, n: int = 4) -> list[tuple[int, bytes]]:
    """A chained log whose record ``at`` is signed over ``spell(its canonical payload)``."""
    out: list[tuple[int, bytes]] = []
    prev = ZERO_HASH
    for seq in range(n):
        rec = record(signer, seq=seq, prev=prev)
        entry = signed(signer, spell(rec.canonical())) if seq == at else build_entry(rec, signer)
        out.append((seq, entry))
        prev = hashlib.sha256(entry).hexdigest()
    return out


@pytest.mark.parametrize(("name", "spell", "says"), NON_CANONICAL, ids=[n for n, _, _ in NON_CANONICAL])
@pytest.mark.parametrize("mode", ["signatures", "full-parse"])
def test_verify_refuses_non_canonical_entry(
    name: str, spell: Any, says: str, mode: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    log = _log_with(ledger_signer, spell)
    digest_uri = (lambda uri: "ab" * 32) if mode == "full-parse" else None
    report = verify_entries(log, ledger_trust, digest_uri=digest_uri)
    assert not report.ok
    p = report.problems[0]
    assert (p.seq, p.kind) == (2, "format"), report.problems
    assert p.detail.startswith("record 2: payload is not the RFC 8785 canonical encoding"), p.detail
    assert says in p.detail, p.detail
    # nothing else is wrong with the log: chain, seq, signatures and root all hold
    assert len(report.problems) == 1, report.problems


def test_hash_only_mode_does_not_check_canonical_form(ledger_signer: LocalKeySigner) -> None:
    # documented in docs/ledger.md: UNSAFE_SKIP_SIGNATURES reads only prev and seq
    log = _log_with(ledger_signer, lambda c: replace_once(c, b'"stage":"train"', b'"stage": "train"'))
    assert verify_entries(log, UNSAFE_SKIP_SIGNATURES).ok


def _append_raw(url: str, entries: list[tuple[int, bytes]]) -> None:
    """Write entries straight into storage and rebuild the stored tree, as an attacker
    with database access (or a buggy writer holding a trusted key) would."""
    import sqlite3

    from mlseal.ledger import merkle

    path = url[len("sqlite:///") :]
    open_ledger(url).close()
    tree = merkle.MemoryTree(merkle.leaf_hash(e) for _, e in entries)
    with sqlite3.connect(path) as db:
        db.executemany("INSERT INTO mlseal_entries (seq, entry, entry_hash) VALUES (?, ?, ?)",
                       [(s, e, hashlib.sha256(e).digest()) for s, e in entries])
        db.executemany("INSERT INTO mlseal_nodes (level, idx, hash) VALUES (?, ?, ?)",
                       [(lv, i, h) for lv, hs in enumerate(tree.levels) for i, h in enumerate(hs)])
        # and the digest index rows the records imply (the parser keeps a duplicate key's last value)
        for s, e in entries:
            rec = json.loads(split_entry(e).payload)
            rows = {(bytes.fromhex(x["digest"]["sha256"]), role, s)
                    for role, name in ((0, "outputs"), (1, "inputs")) for x in rec.get(name, [])}
            db.executemany("INSERT INTO mlseal_digests (sha256, role, seq) VALUES (?, ?, ?)", sorted(rows))


def test_ledger_verify_cli_refuses_signed_duplicate_key_entry(
    tmp_path: Path, ledger_signer: LocalKeySigner, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "k.pub.pem").write_bytes(public_pem(ledger_signer.verifier().key))
    (tmp_path / "trust.yaml").write_text("signers: [{name: pipeline, public_key: k.pub.pem}]\n")
    (tmp_path / "m.pkl").write_bytes(b"model")
    url = f"sqlite:///{tmp_path}/ledger.db"
    _append_raw(url, _log_with(
        ledger_signer, lambda c: replace_once(c, b'"stage":"train"', b'"stage":"deploy","stage":"train"')))
    with open_ledger(url) as led:  # storage itself is consistent: only the record is bad
        assert verify_ledger(led, UNSAFE_SKIP_SIGNATURES).ok
    for extra in ([], ["--artifacts"]):
        code = main(["ledger", "verify", "--ledger", url, "--trust", str(tmp_path / "trust.yaml"), *extra])
        err = capsys.readouterr().err
        assert code == 1, err
        assert "record 2: payload is not the RFC 8785 canonical encoding" in err, err
        assert "duplicate key 'stage'" in err, err


# --- canonical records that look unusual must still verify ------------------------------

UNUSUAL = [
    {"nested": {"b": [1, {"y": None, "x": True}], "a": "z"}},
    {"é": 1, "e": 2, "z": 3},  # non-ASCII keys sort after ASCII
    {"\U0001f600": 1, "\uff61": 2},  # non-BMP key sorts before U+FF61 in UTF-16 order
    {"quote\"back\\slash": "tab\tnl\ncr\rbs\bff\fnul\x00del\x7f"},
    {"tiny": 1e-7, "huge": 1e21, "neg": -0.0001, "small": 0.000001, "big": 123456789012345.6},
    {"i": 2**53 - 1, "neg": -(2**53 - 1), "zero": 0, "f": 1.5},
    {"s": "\u2028\u2029</script>", "empty": "", "list": []},
]


@pytest.mark.parametrize("params", UNUSUAL)
def test_unusual_canonical_records_verify(
    params: dict[str, Any], ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    log: list[tuple[int, bytes]] = []
    prev = ZERO_HASH
    for seq in range(3):
        rec = RecordDraft(stage="process", params=params, metrics={"m": params.get("tiny", 0.5)},
                          error="bad \"input\"\n" if seq == 1 else None).complete(
            seq=seq, prev=prev, time="t", signer=SignerRef("pipeline", ledger_signer.key_id))
        entry = build_entry(rec, ledger_signer)
        assert parse_entry(entry, ledger_trust) == rec
        log.append((seq, entry))
        prev = hashlib.sha256(entry).hexdigest()
    assert verify_entries(log, ledger_trust).ok
    assert verify_entries(log, ledger_trust, digest_uri=lambda uri: "0" * 64).ok


def test_fast_check_covers_the_usual_record(ledger_signer: LocalKeySigner) -> None:
    # the verifier's per-entry cost depends on this: a typical record needs no re-encoding
    rec = record(ledger_signer, seq=7, prev="cd" * 32)
    got = _canonical.fast_fields(rec.canonical())
    assert got == (7, b"cd" * 32, ledger_signer.key_id.encode(), b"train", b"null", b"null")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(params=st.dictionaries(st.text(max_size=6), json_values, max_size=4),
       metrics=st.dictionaries(st.text(max_size=6), st.floats(allow_nan=False, allow_infinity=False), max_size=3))
def test_fast_check_never_accepts_another_spelling(
    params: dict[str, Any], metrics: dict[str, float], ledger_signer: LocalKeySigner
) -> None:
    try:
        rec = RecordDraft(stage="process", params=params, metrics=metrics).complete(
            seq=3, prev=ZERO_HASH, time="t", signer=SignerRef("p", ledger_signer.key_id))
    except VerificationError:
        return  # a value the record refuses (e.g. a float too large for JSON integers)
    try:
        canonical = rec.canonical()
        assert Record.from_bytes(canonical) == rec
    except (VerificationError, ValueError):
        return  # e.g. a metric of 2**53 reads back as an integer RFC 8785 cannot encode
    obj = json.loads(canonical)
    spellings = {
        json.dumps(obj, sort_keys=True, separators=(",", ":")).encode(),
        json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"),
        json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"),
        json.dumps(obj, sort_keys=True).encode(),
    }
    for s in spellings:
        fast = _canonical.fast_fields(s)
        exact = _canonical.problem(s, canonical)
        if s == canonical:
            assert exact is None
        else:
            assert fast is None, s
            assert exact is not None, s
