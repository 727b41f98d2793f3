"""The ledger API on both backends: append, read, index, proofs, and bad configuration."""

from __future__ import annotations

import base64
import itertools
import json
import sqlite3
from pathlib import Path
from typing import TypeAlias

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mlseal.errors import ConfigurationError, InfrastructureError, VerificationError
from mlseal.ledger import _jcs, merkle, open_ledger
from mlseal.ledger.entry import build_entry, parse_entry, split_entry
from mlseal.ledger.record import (
    RECORD_PAYLOAD_TYPE,
    ZERO_HASH,
    InputRef,
    OutputRef,
    Record,
    RecordDraft,
    RecordFormatError,
    Sha256Hex,
    SignerRef,
)
from mlseal.signing import dsse
from mlseal.signing.keys import LocalKeySigner
from mlseal.signing.trust import TrustRoot


def sha(n: int) -> Sha256Hex:
    return Sha256Hex(f"{n:064x}")


def draft(i: int, stage: str = "process") -> RecordDraft:
    return RecordDraft(
        stage=stage,
        inputs=(InputRef(name="in", uri=f"file:///d/{i}", sha256=sha(i), producer_seq=None),),
        outputs=(OutputRef(name="out", uri=f"file:///d/{i + 1}", sha256=sha(i + 1)),),
        params={"i": i, "lr": 0.01, "name": "ü\n\"x\""},
        metrics={"accuracy": 0.9},
    )


def test_append_and_read_back(ledger_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot) -> None:
    with open_ledger(ledger_url) as led:
        assert led.size() == 0
        assert led.head().root == merkle.EMPTY_ROOT
        appended = [led.append(draft(i), ledger_signer, signer_name="pipeline") for i in range(7)]
        assert [a.seq for a in appended] == list(range(7))
        assert appended[0].record.prev == ZERO_HASH
        for a, b in itertools.pairwise(appended):
            assert b.record.prev == a.entry_hash
        assert led.size() == 7
        stored = list(led.entries())
        assert [s for s, _ in stored] == list(range(7))
        assert [e for _, e in stored] == [a.entry for a in appended]  # exact bytes, never re-serialised
        assert led.entry(3) == appended[3].entry
        assert list(led.entries(2, 4)) == stored[2:4]
        for a in appended:
            assert parse_entry(led.entry(a.seq), ledger_trust) == a.record
        head = led.head()
        assert head.size == 7 and head.last_entry_hash == appended[-1].entry_hash
        assert head.root == merkle.root_from_leaves(merkle.leaf_hash(e) for _, e in stored)[1]
        with pytest.raises(VerificationError, match="no record 7"):
            led.entry(7)


def test_digest_indexes(ledger_url: str, ledger_signer: LocalKeySigner) -> None:
    with open_ledger(ledger_url) as led:
        for i in range(4):
            led.append(draft(i), ledger_signer, signer_name="pipeline")
        assert led.producers_of(sha(2)) == [1]
        assert led.consumers_of(sha(2)) == [2]
        assert led.producers_of(sha(99)) == []
        with pytest.raises(ConfigurationError, match="not a SHA-256"):
            led.producers_of("xyz")


def test_proofs_match_rfc9162(ledger_url: str, ledger_signer: LocalKeySigner) -> None:
    with open_ledger(ledger_url) as led:
        for i in range(13):
            led.append(draft(i), ledger_signer, signer_name="pipeline")
        leaves = [merkle.leaf_hash(e) for _, e in led.entries()]
        tree = merkle.MemoryTree(leaves)
        for size in (1, 5, 8, 13):
            root = tree.root(size)
            assert led.root(size) == root
            for seq in range(size):
                proof = led.inclusion_proof(seq, size)
                merkle.verify_inclusion(leaves[seq], seq, size, proof, root)
        for old in range(1, 14):
            proof = led.consistency_proof(old)
            merkle.verify_consistency(old, 13, proof, tree.root(old), tree.root())
        with pytest.raises(VerificationError):
            led.inclusion_proof(13)
        with pytest.raises(VerificationError):
            led.consistency_proof(3, 20)


def test_entry_is_canonical_dsse(ledger_url: str, ledger_signer: LocalKeySigner) -> None:
    with open_ledger(ledger_url) as led:
        a = led.append(draft(0, "ingest"), ledger_signer, signer_name="pipeline")
    env = dsse.parse(a.entry)
    assert env.payload_type == RECORD_PAYLOAD_TYPE
    assert env.to_bytes() == a.entry  # the RFC 8785 form of the same envelope
    assert env.payload == a.record.canonical()
    dsse.verify(env, [ledger_signer.verifier()], payload_type=RECORD_PAYLOAD_TYPE)


def test_failed_append_writes_nothing(ledger_url: str, ledger_signer: LocalKeySigner) -> None:
    class BrokenSigner:
        key_id = ledger_signer.key_id

        def public_key(self) -> ec.EllipticCurvePublicKey:
            return ledger_signer.public_key()

        def sign(self, data: bytes) -> bytes:
            raise InfrastructureError("signing service down")

    class LyingSigner(BrokenSigner):
        def sign(self, data: bytes) -> bytes:
            return ledger_signer.sign(data + b"x")

    with open_ledger(ledger_url) as led:
        led.append(draft(0), ledger_signer, signer_name="pipeline")
        before = led.head()
        with pytest.raises(InfrastructureError, match="signing service down"):
            led.append(draft(1), BrokenSigner(), signer_name="pipeline")
        with pytest.raises(InfrastructureError, match="does not verify"):
            led.append(draft(1), LyingSigner(), signer_name="pipeline")
        assert led.head() == before
        a = led.append(draft(1), ledger_signer, signer_name="pipeline")
        assert a.seq == 1 and a.record.prev == before.last_entry_hash


def test_interleaved_writers_keep_one_tree(
    ledger_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    """Two open ledgers on one store take turns (and fail in between): each append
    builds on the other's, and the stored tree is the tree of all entries."""
    from mlseal.ledger.verify import verify_ledger

    class BrokenSigner:
        key_id = ledger_signer.key_id

        def public_key(self) -> ec.EllipticCurvePublicKey:
            return ledger_signer.public_key()

        def sign(self, data: bytes) -> bytes:
            raise InfrastructureError("signing service down")

    with open_ledger(ledger_url) as a, open_ledger(ledger_url) as b:
        for i, led in enumerate([a, a, b, a, b, b, b, a, a, b, a]):
            if i == 5:
                with pytest.raises(InfrastructureError):
                    led.append(draft(i), BrokenSigner(), signer_name="pipeline")
            got = led.append(draft(i), ledger_signer, signer_name="pipeline")
            assert got.seq == i
        entries = [e for _, e in a.entries()]
        tree = merkle.MemoryTree(merkle.leaf_hash(e) for e in entries)
        assert a.head().root == b.head().root == tree.root()
        for i in range(len(entries)):
            assert b.inclusion_proof(i) == merkle.inclusion_proof(i, len(entries), tree)
        assert verify_ledger(b, ledger_trust).ok


def test_record_field_of_wrong_type_is_refused(ledger_url: str, ledger_signer: LocalKeySigner) -> None:
    with open_ledger(ledger_url) as led:
        with pytest.raises(RecordFormatError, match="params"):
            led.append(RecordDraft(stage="train", params={"x": float("nan")}), ledger_signer, signer_name="p")
        with pytest.raises(RecordFormatError, match="stage"):
            led.append(RecordDraft(stage="Bad Stage!"), ledger_signer, signer_name="p")
        with pytest.raises(ConfigurationError, match="RecordDraft"):
            led.append({"stage": "train"}, ledger_signer, signer_name="p")  # type: ignore[arg-type]
        assert led.size() == 0


# --- parse_entry ----------------------------------------------------------------------

def _entry(signer: LocalKeySigner, **fields: object) -> bytes:
    rec = RecordDraft(stage="ingest").complete(
        seq=0, prev=ZERO_HASH, time="2026-01-01T00:00:00Z", signer=SignerRef("pipeline", signer.key_id)
    )
    obj = rec.to_obj()
    obj.update(fields)
    payload = rfc8785.dumps(obj)  # entries are canonical; json.dumps output is refused
    return dsse.sign(signer, RECORD_PAYLOAD_TYPE, payload)


def test_parse_entry_rejects_bad_entries(ledger_signer: LocalKeySigner, ledger_trust: TrustRoot) -> None:
    good = _entry(ledger_signer)
    assert parse_entry(good, ledger_trust).stage == "ingest"
    # any flipped byte in the entry: not JSON, bad base64, or a bad signature
    for i in range(0, len(good), 7):
        bad = bytearray(good)
        bad[i] ^= 0x01
        with pytest.raises(VerificationError):
            parse_entry(bytes(bad), ledger_trust)
    other = LocalKeySigner.generate()
    with pytest.raises(VerificationError, match="does not list"):
        parse_entry(_entry(other), ledger_trust)
    with pytest.raises(VerificationError, match="seq must be a non-negative integer"):
        parse_entry(_entry(ledger_signer, seq="3"), ledger_trust)
    with pytest.raises(VerificationError, match="not a DSSE envelope"):
        parse_entry(b"garbage", ledger_trust)
    wrong_type = dsse.sign(ledger_signer, "application/json", split_entry(good).payload)
    with pytest.raises(VerificationError, match="payloadType"):
        parse_entry(wrong_type, ledger_trust)
    # a trusted key signing a record that names another key as its signer
    rec = RecordDraft(stage="ingest").complete(
        seq=0, prev=ZERO_HASH, time="t", signer=SignerRef("pipeline", other.key_id)
    )
    with pytest.raises(VerificationError, match="names signer key"):
        parse_entry(build_entry(rec, ledger_signer), ledger_trust)


def test_build_entry_equals_generic_dsse(ledger_signer: LocalKeySigner) -> None:
    rec = draft(3).complete(seq=5, prev=sha(7), time="t", signer=SignerRef("p", ledger_signer.key_id))
    fast = build_entry(rec, ledger_signer)
    env = dsse.parse(fast)
    assert env.to_bytes() == fast
    assert base64.b64decode(json.loads(fast)["payload"]) == rec.canonical()


# --- opening: URLs and files ------------------------------------------------------------

def test_bad_urls(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="unknown scheme 'mysql'"):
        open_ledger("mysql://localhost/x")
    with pytest.raises(ConfigurationError, match="unknown scheme"):
        open_ledger("just-a-path.db")
    with pytest.raises(ConfigurationError, match="does not exist"):
        open_ledger(f"sqlite:///{tmp_path}/nope/ledger.db")
    with pytest.raises(ConfigurationError, match="does not exist"):
        open_ledger(f"sqlite:///{tmp_path}/absent.db", create=False)
    assert not (tmp_path / "absent.db").exists()
    with pytest.raises(ConfigurationError, match="sqlite:///relative"):
        open_ledger("sqlite://host/x.db")
    with pytest.raises(ConfigurationError, match=r"\*\*\*") as exc:
        open_ledger("mongodb://user:hunter2@host/db")
    assert "hunter2" not in str(exc.value)
    from mlseal.ledger import redact_url

    assert "s3cret" not in redact_url("postgresql://h/db?sslmode=require&password=s3cret")


def test_url_forms_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ledger_signer: LocalKeySigner) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    with open_ledger("sqlite:///sub/rel.db") as led:
        led.append(draft(0), ledger_signer, signer_name="p")
    assert (tmp_path / "sub" / "rel.db").is_file()
    monkeypatch.setenv("MLSEAL_LEDGER", f"sqlite:///{tmp_path}/sub/rel.db")
    with open_ledger() as led:
        assert led.size() == 1
    monkeypatch.delenv("MLSEAL_LEDGER")
    with open_ledger() as led:  # the default creates .mlseal/
        assert led.size() == 0
    assert (tmp_path / ".mlseal" / "ledger.db").is_file()


def test_foreign_and_unreadable_sqlite(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(ConfigurationError, match="not a readable SQLite ledger"):
        open_ledger(f"sqlite:///{junk}")
    assert junk.read_bytes().startswith(b"this is not")
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as c:
        c.execute("CREATE TABLE users (id INTEGER)")
    with pytest.raises(ConfigurationError, match="foreign"):
        open_ledger(f"sqlite:///{foreign}")
    with sqlite3.connect(foreign) as c:
        assert [r[0] for r in c.execute("SELECT name FROM sqlite_master")] == ["users"]
    d = tmp_path / "dir.db"
    d.mkdir()
    with pytest.raises(ConfigurationError, match="not a file"):
        open_ledger(f"sqlite:///{d}")


def test_newer_schema_is_refused(ledger_url: str) -> None:
    open_ledger(ledger_url).close()
    if ledger_url.startswith("sqlite"):
        with sqlite3.connect(ledger_url[len("sqlite:///") :]) as c:
            c.execute("UPDATE mlseal_meta SET value = '99' WHERE key = 'schema_version'")
    else:
        import psycopg

        with psycopg.connect(ledger_url, autocommit=True) as c:
            c.execute("UPDATE mlseal_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(ConfigurationError, match="schema version 99 is newer"):
        open_ledger(ledger_url)


@pytest.mark.postgres
def test_postgres_foreign_schema_and_empty(pg_url: str) -> None:
    import psycopg

    with pytest.raises(ConfigurationError, match="no mlseal ledger"):
        open_ledger(pg_url, create=False)
    with psycopg.connect(pg_url, autocommit=True) as c:
        c.execute("CREATE TABLE mlseal_entries (x int)")
    with pytest.raises(ConfigurationError, match="foreign"):
        open_ledger(pg_url)


@pytest.mark.postgres
def test_postgres_unreachable_is_infrastructure_error() -> None:
    with pytest.raises(InfrastructureError, match="cannot connect"):
        open_ledger("postgresql://postgres@127.0.0.1:1/test?connect_timeout=2")


JsonValue: TypeAlias = bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"] | None

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(_json_values)
def test_fast_canonical_json_equals_rfc8785(value: JsonValue) -> None:
    try:
        want = rfc8785.dumps(value)
    except Exception:
        with pytest.raises(Exception):
            _jcs.dumps(value)
        return
    assert _jcs.dumps(value) == want


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(params=st.dictionaries(st.text(max_size=6), _json_values.filter(lambda v: _jcs_ok(v)), max_size=4),
       seq=st.integers(0, 2**40), stage=st.sampled_from(["ingest", "train"]), task=st.text(max_size=6),
       time=st.one_of(st.just("2026-01-01T00:00:00.5Z"), st.text(max_size=8)))
def test_record_template_renders_the_canonical_record(
    ledger_signer: LocalKeySigner, params: dict[str, object], seq: int, stage: str, task: str, time: str
) -> None:
    from mlseal.ledger.entry import RecordTemplate
    from mlseal.ledger.record import RunInfo

    try:
        d = RecordDraft(stage=stage, params=params, run=RunInfo(task=task), inputs=draft(3).inputs)
    except RecordFormatError:
        assume(False)
    ref = SignerRef("pipeline", ledger_signer.key_id)
    assume(_jcs_ok(time))
    complete = d.complete(seq=seq, prev=sha(seq), time=time, signer=ref)
    template = RecordTemplate(d, ref)
    got = template.render(seq, sha(seq), time)
    assert got == complete.canonical()
    assert Record.from_bytes(got) == complete


def _jcs_ok(v: JsonValue) -> bool:
    try:
        rfc8785.dumps(v)
    except Exception:
        return False
    return True


def test_bad_digest_in_draft_is_refused(sqlite_url: str, ledger_signer: LocalKeySigner) -> None:
    with open_ledger(sqlite_url) as led:
        bad = RecordDraft(stage="train", outputs=(OutputRef(name="m", uri="u", sha256=Sha256Hex("XYZ")),))
        with pytest.raises(RecordFormatError, match="outputs"):
            led.append(bad, ledger_signer, signer_name="p")
        wrong_type = RecordDraft(stage="train", inputs=(InputRef(name=5, uri="u", sha256=sha(1)),))  # type: ignore[arg-type]
        with pytest.raises(RecordFormatError, match="name"):
            led.append(wrong_type, ledger_signer, signer_name="p")
        assert led.size() == 0


def test_messages_show_sqlite_urls_as_given(tmp_path: Path) -> None:
    from mlseal.ledger import redact_url

    url = f"sqlite:///{tmp_path}/missing/ledger.db"  # absolute: four slashes
    assert redact_url(url) == url
    with pytest.raises(ConfigurationError) as exc:
        open_ledger(url, create=False)
    assert f"sqlite:///{tmp_path}/missing" in str(exc.value)
