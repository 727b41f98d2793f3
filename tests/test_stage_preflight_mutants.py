"""Stage input checks and the preflight, pinned where mutation testing found them unpinned."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import pytest

from mlseal.errors import ConfigurationError, Error, VerificationError
from mlseal.ledger.checkpoint import Checkpoint, RollbackError, expected_origin, sign_checkpoint, verify_notes
from mlseal.ledger.record import Record
from mlseal.signing.keys import KeyId, LocalKeySigner
from mlseal.signing.trust import TrustRoot
from mlseal.stage import InputRefused, Sealing, Stage
from tests.fixtures_admission import resign_entry
from tests.fixtures_pipeline import SealedEnv


def _produce(env: SealedEnv, path: Path, text: str) -> int:
    with Stage("ingest", name="ingest", sealing=env.sealing) as st:
        st.output("raw", path, media_type="text/csv").write_text(text)
    assert st.result is not None
    return int(st.result.seq)


def _consume(env: SealedEnv, path: Path, bundle: bytes) -> int:
    with Stage("process", name="p", sealing=env.sealing) as st:
        got = st.input("raw", path, bundle=bundle)
        st.output("o", env.root / f"o{env.ledger.size()}").write_text(got.read_text())
    return int(st.inputs[0].producer_seq)


def test_a_bundle_bound_by_an_older_producer_is_found_past_a_tampered_one(sealed_env: SealedEnv) -> None:
    """The same bytes recorded three times, each with its own bundle; the middle record was
    edited after signing. The oldest record's bundle still verifies the bytes: the search
    for the record that bound it goes on past the tampered one."""
    env = sealed_env
    raw = env.root / "raw.csv"
    _produce(env, raw, "a\n1\n")
    oldest_bundle = raw.with_name("raw.csv.sig").read_bytes()
    middle = _produce(env, raw, "a\n1\n")
    newest = _produce(env, raw, "a\n1\n")
    _produce(env, env.root / "tail.csv", "t\n")
    resign_entry(env.ledger_url, middle, env.signer, params={"edited": True})
    assert raw.with_name("raw.csv.sig").read_bytes() != oldest_bundle
    assert _consume(env, raw, oldest_bundle) == newest


def test_a_ledger_that_cannot_be_checked_for_rollback_is_named(tmp_path: Path) -> None:
    """With checkpoint keys in the trust file, the preflight needs a ledger that serves its
    head, entries, proofs and stored checkpoints."""

    class SizeOnly:
        def size(self) -> int:
            return 0

    signer, cp_key = LocalKeySigner.generate(), LocalKeySigner.generate()
    trust = TrustRoot.of(signer.verifier("pipeline"), checkpoint_keys=(cp_key.verifier("cp"),))
    sealing = Sealing(ledger=SizeOnly(), signer=signer, trust=trust)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError) as exc:
        sealing.preflight("ingest")
    msg = str(exc.value)
    assert "the ledger SizeOnly cannot be checked for rollback" in msg
    assert "(no head, entry, consistency_proof, inclusion_proof, checkpoints)" in msg
    assert "use mlseal.ledger.open_ledger" in msg


def test_an_input_that_does_not_exist_is_named(sealed_env: SealedEnv) -> None:
    missing = sealed_env.root / "missing.csv"
    with pytest.raises(InputRefused, match=f"{missing} does not exist"), \
            Stage("process", name="p", sealing=sealed_env.sealing) as st:
        st.input("raw", missing)


def test_the_sealings_entry_parser_decides_the_producer(sealed_env: SealedEnv) -> None:
    """`Sealing.parse_entry` is what verifies the producer's record (a deployment may
    narrow it); the input check does not fall back to the default parser."""
    env = sealed_env
    raw = env.root / "raw.csv"
    seq = _produce(env, raw, "a\n1\n")

    def refuse(data: bytes, trust: TrustRoot) -> Record:
        raise VerificationError("refused by the deployment's entry parser")

    strict = dataclasses.replace(env.sealing, parse_entry=refuse)
    with pytest.raises(InputRefused, match=f"record {seq}: entry {seq}: refused by the deployment's entry parser"), \
            Stage("process", name="p", sealing=strict) as st:
        st.input("raw", raw)


def test_a_bundle_given_by_path_is_the_one_verified(sealed_env: SealedEnv) -> None:
    env = sealed_env
    raw = env.root / "raw.csv"
    seq = _produce(env, raw, "a\n1\n")
    moved = env.root / "elsewhere.sig"
    raw.with_name("raw.csv.sig").rename(moved)
    with Stage("process", name="p", sealing=env.sealing) as st:
        assert st.input("raw", raw, bundle=moved) == raw
        assert st.input("raw", raw) == raw  # declared again (verified before the body): the same path
        with pytest.raises(ConfigurationError, match="input 'raw' declared twice, for "):
            st.input("raw", env.root / "other.csv")
        st.output("o", env.root / "o.csv").write_text("x")
    [verified] = st.inputs
    assert verified.path == raw and verified.producer_seq == seq and verified.producer.seq == seq


def test_a_bundle_given_as_bytes_leaves_no_temporary_file(
    sealed_env: SealedEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = sealed_env
    raw = env.root / "raw.csv"
    _produce(env, raw, "a\n1\n")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with Stage("process", name="p", sealing=env.sealing) as st:
        st.input("raw", raw, bundle=raw.with_name("raw.csv.sig").read_bytes())
        st.output("o", env.root / "o.csv").write_text("x")
    assert [p.name for p in scratch.iterdir() if p.name.startswith("mlseal-bundle-")] == []


def test_a_signing_key_that_is_not_usable_is_named(sealed_env: SealedEnv) -> None:
    class Broken:
        @property
        def key_id(self) -> KeyId:
            raise Error("the key file is unreadable")

    sealing = dataclasses.replace(sealed_env.sealing, signer=Broken())  # type: ignore[arg-type]  # a stand-in
    with pytest.raises(ConfigurationError, match="the signing key for stage 'train' is not usable: the key file"):
        sealing.preflight("train")


def test_accept_ledger_holds_the_ledger_to_the_checkpoints_it_is_given(sealed_env: SealedEnv) -> None:
    env = sealed_env
    _produce(env, env.root / "raw.csv", "a\n1\n")
    cp_key = LocalKeySigner.generate()
    trust = dataclasses.replace(env.trust, checkpoint_keys={cp_key.key_id: cp_key.verifier("cp")})
    sealing = dataclasses.replace(env.sealing, trust=trust)
    assert sealing.accept_ledger() is not None
    other = sign_checkpoint(Checkpoint(expected_origin(trust), 1, bytes(32)), cp_key)
    known = tuple(verify_notes([other], trust))
    with pytest.raises(RollbackError, match="ledger refused, nothing appended"):
        sealing.accept_ledger(known)


def test_a_signer_missing_from_the_trust_file_is_named_with_the_file(sealed_env: SealedEnv) -> None:
    other = LocalKeySigner.generate()
    sealing = dataclasses.replace(sealed_env.sealing, signer=other, signer_name="train")
    with pytest.raises(ConfigurationError) as exc:
        sealing.preflight("train")
    msg = str(exc.value)
    assert f"is not listed in the trust file {sealed_env.trust_file}" in msg
    assert "signers: [{name: train, public_key: <its public key PEM>, stages: [train]}]" in msg


def test_a_signer_outside_its_grant_is_pointed_to_the_stages_own_key(sealed_env: SealedEnv) -> None:
    env = sealed_env
    narrow = TrustRoot.of(env.signer.verifier("pipeline"), stages={"pipeline": ["ingest"]})
    sealing = dataclasses.replace(env.sealing, trust=narrow)
    with pytest.raises(ConfigurationError, match=r"sign 'train' records with the train stage's own key "
                                                 r"\(mlseal-signing-train\)"):
        sealing.preflight("train")


def test_inputs_need_no_rollback_support_without_checkpoints(sealed_env: SealedEnv) -> None:
    """Without checkpoint keys, a checkpoint or a producer position handed along, a ledger
    that serves records but no tree head or proofs is enough for an input check."""
    env = sealed_env
    raw = env.root / "raw.csv"
    seq = _produce(env, raw, "a\n1\n")

    class RecordsOnly:
        def __init__(self, led: object) -> None:
            self._led = led

        def size(self) -> int:
            return int(self._led.size())  # type: ignore[attr-defined]

        def entry(self, n: int) -> bytes:
            return bytes(self._led.entry(n))  # type: ignore[attr-defined]

        def append(self, *a: object, **k: object) -> object:
            return self._led.append(*a, **k)  # type: ignore[attr-defined]

    sealing = dataclasses.replace(env.sealing, ledger=RecordsOnly(env.ledger))  # type: ignore[arg-type]  # reads only
    with Stage("process", name="p", sealing=sealing) as st:
        st.input("raw", raw)
        st.output("o", env.root / "o.csv").write_text("x")
    assert st.inputs[0].producer_seq == seq


def test_a_rollback_after_an_input_check_is_refused_before_appending(tmp_path: Path) -> None:
    """The tree the input check accepted is what the append is held to."""
    from mlseal.ledger import open_ledger
    from tests.fixtures_checkpoint import RECORD_KEY, TRUST, Sqlite

    db = Sqlite(tmp_path / "ledger.db")

    def sealing() -> Sealing:
        return Sealing(ledger=open_ledger(db.url), signer=RECORD_KEY, trust=TRUST, signer_name="pipeline")

    raw = tmp_path / "raw.csv"
    with Stage("ingest", name="ingest", sealing=sealing()) as st:
        st.output("raw", raw).write_text("a,b\n1,2\n")
    db.append(2)
    with pytest.raises(RollbackError, match="nothing appended"), \
            Stage("process", name="process", sealing=sealing()) as st:
        st.input("raw", raw)
        db.truncate(2)  # after the input was checked, before the append
        st.output("clean", tmp_path / "clean.csv").write_text("x\n")
    with open_ledger(db.url, create=False) as led:
        assert led.size() == 2


def test_records_appended_by_others_while_a_stage_runs_are_proven_and_accepted(tmp_path: Path) -> None:
    from mlseal.ledger import open_ledger
    from tests.fixtures_checkpoint import RECORD_KEY, TRUST, Sqlite

    db = Sqlite(tmp_path / "ledger.db")

    def sealing() -> Sealing:
        return Sealing(ledger=open_ledger(db.url), signer=RECORD_KEY, trust=TRUST, signer_name="pipeline")

    raw = tmp_path / "raw.csv"
    with Stage("ingest", name="ingest", sealing=sealing()) as st:
        st.output("raw", raw).write_text("a,b\n1,2\n")
    with Stage("process", name="process", sealing=sealing()) as st:
        st.input("raw", raw)
        db.append(2)  # another task appends meanwhile: the log grows, it is not rolled back
        st.output("clean", tmp_path / "clean.csv").write_text("x\n")
    assert st.result is not None and st.result.seq == 3


def test_a_head_naming_another_last_entry_is_refused_before_appending(tmp_path: Path) -> None:
    """The next record links to the head's hash of the last entry: right before appending,
    that hash must be the last leaf's entry, or the new record would link to nothing."""
    import sqlite3

    from mlseal.ledger import open_ledger
    from tests.fixtures_checkpoint import RECORD_KEY, TRUST, Sqlite

    db = Sqlite(tmp_path / "ledger.db")

    def sealing() -> Sealing:
        return Sealing(ledger=open_ledger(db.url), signer=RECORD_KEY, trust=TRUST, signer_name="pipeline")

    db.append(2)
    with pytest.raises(RollbackError, match="nothing appended"), \
            Stage("ingest", name="ingest", sealing=sealing()) as st:
        st.output("raw", tmp_path / "raw.csv").write_text("x\n")
        with sqlite3.connect(tmp_path / "ledger.db") as c:
            c.execute("UPDATE mlseal_entries SET entry_hash = ? WHERE seq = 1", (b"\x07" * 32,))
        c.close()
    with open_ledger(db.url, create=False) as led:
        assert led.size() == 2
