"""The sealed-stage runtime: fail closed on inputs, sign outputs, one record per stage."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from mlseal.errors import ConfigurationError, VerificationError
from mlseal.ledger.entry import parse_entry
from mlseal.ledger.record import RunInfo, Status
from mlseal.signing.artifact import verify_path
from mlseal.signing.keys import LocalKeySigner
from mlseal.signing.trust import TrustRoot
from mlseal.stage import InputRefused, Sealing, Stage, run_info_from_env, sealed, source_sha256
from tests.fixtures_pipeline import SealedEnv


def _produce(env: SealedEnv, path: Path, text: str = "a,b\n1,2\n", *, sealing: Sealing | None = None) -> int:
    with Stage("ingest", name="ingest", sealing=sealing or env.sealing) as st:
        st.output("raw", path, media_type="text/csv").write_text(text)
    assert st.result is not None
    return st.result.seq


def _leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if ".mlseal-" in p.name or p.name.endswith(".tmp"))


def test_stage_signs_outputs_and_appends_one_record(sealed_env: SealedEnv) -> None:
    env = sealed_env
    raw = env.root / "data" / "raw.csv"
    seq0 = _produce(env, raw)
    sealing = replace(env.sealing, run=RunInfo(pipeline="p", run_id="run-1", task="clean"))
    out = env.root / "data" / "clean.csv"
    with Stage("process", name="clean", sealing=sealing, params={"mode": "lower"}, source=_produce) as st:
        text = st.input("raw", raw).read_text()
        st.output("clean", out, media_type="text/csv").write_text(text.upper())
        st.metric("rows", 1)
    assert st.result is not None and st.result.status is Status.OK
    assert env.ledger.size() == 2
    rec = parse_entry(env.ledger.entry(st.result.seq), env.trust)
    assert rec.stage == "process" and rec.component.name == "clean"
    assert rec.component.source_sha256 == source_sha256(_produce)
    assert rec.component.image == env.sealing.image
    assert rec.run == RunInfo(pipeline="p", run_id="run-1", task="clean")
    assert [(i.name, i.producer_seq) for i in rec.inputs] == [("raw", seq0)]
    assert rec.params == {"mode": "lower"} and rec.metrics == {"rows": 1.0}
    (o,) = rec.outputs
    assert o.uri == out.resolve().as_uri() and o.media_type == "text/csv"
    sig = out.with_name(out.name + ".sig")
    import hashlib

    assert o.sha256 == hashlib.sha256(out.read_bytes()).hexdigest()
    assert o.bundle_sha256 == hashlib.sha256(sig.read_bytes()).hexdigest()
    verify_path(out, sig, env.trust)  # an OMS bundle over the output, by a trusted key
    assert _leftovers(out.parent) == []


def test_unrecorded_input_fails_closed_and_writes_nothing(sealed_env: SealedEnv) -> None:
    env = sealed_env
    stray = env.root / "stray.csv"
    stray.write_text("x\n1\n")
    out = env.root / "out.csv"
    with pytest.raises(InputRefused, match="never recorded as an output"), \
            Stage("process", name="p", sealing=env.sealing) as st:
        st.output("o", out).write_text("partial")
        st.input("in", stray)
    assert env.ledger.size() == 0
    assert not out.exists() and not out.with_name("out.csv.sig").exists()
    assert _leftovers(env.root) == []


def test_altered_input_is_refused(sealed_env: SealedEnv) -> None:
    env = sealed_env
    raw = env.root / "raw.csv"
    _produce(env, raw)
    raw.write_text("a,b\n1,3\n")  # one byte changed after it was sealed
    with pytest.raises(InputRefused), Stage("process", name="p", sealing=env.sealing) as st:
        st.input("raw", raw)
    assert env.ledger.size() == 1


def test_swapped_bundle_is_refused(sealed_env: SealedEnv) -> None:
    env = sealed_env
    a, b = env.root / "a.csv", env.root / "b.csv"
    _produce(env, a, "a\n1\n")
    _produce(env, b, "b\n2\n")
    with pytest.raises(InputRefused, match="bundle"), Stage("process", name="p", sealing=env.sealing) as st:
        st.input("a", a, bundle=b.with_name("b.csv.sig").read_bytes())
    missing = env.root / "c.csv"
    _produce(env, missing, "c\n3\n")
    missing.with_name("c.csv.sig").unlink()
    with pytest.raises(InputRefused, match="no signature bundle"), \
            Stage("process", name="p", sealing=env.sealing) as st:
        st.input("c", missing)
    assert env.ledger.size() == 3


def test_expected_digest_stops_a_swap_for_another_signed_artifact(sealed_env: SealedEnv) -> None:
    env = sealed_env
    a, b = env.root / "a.csv", env.root / "b.csv"
    _produce(env, a, "a\n1\n")
    _produce(env, b, "b\n2\n")
    import hashlib

    want = hashlib.sha256(a.read_bytes()).hexdigest()
    with Stage("process", name="p", sealing=env.sealing) as st:
        st.input("x", a, expect_sha256=want)  # the artifact it was handed
    with pytest.raises(InputRefused, match="swapped"), Stage("process", name="p", sealing=env.sealing) as st:
        st.input("x", b, expect_sha256=want)  # recorded and signed, but not this input
    assert env.ledger.size() == 3


def test_input_from_untrusted_signer_is_refused(sealed_env: SealedEnv) -> None:
    env = sealed_env
    key = LocalKeySigner.generate()
    # the intruder trusts itself; the consumer's trust file does not name it
    intruder = replace(env.sealing, signer=key, signer_name="intruder", trust=TrustRoot.of(key.verifier("intruder")))
    raw = env.root / "raw.csv"
    _produce(env, raw, sealing=intruder)
    with pytest.raises(InputRefused, match="record 0"), Stage("process", name="p", sealing=env.sealing) as st:
        st.input("raw", raw)
    assert env.ledger.size() == 1


def test_failed_stage_appends_failed_record_without_outputs(sealed_env: SealedEnv) -> None:
    env = sealed_env
    raw = env.root / "raw.csv"
    _produce(env, raw)
    out = env.root / "model.json"
    with pytest.raises(RuntimeError, match="boom"), Stage("train", name="train", sealing=env.sealing) as st:
        st.input("raw", raw)
        key = st.secret("mlseal/test/hmac", key=True)
        st.output("model", out).write_text("half a model")
        raise RuntimeError("boom " + key.data["key"].reveal())  # a careless message
    assert st.result is not None and st.result.status is Status.FAILED
    rec = parse_entry(env.ledger.entry(st.result.seq), env.trust)
    assert rec.status is Status.FAILED and rec.outputs == ()
    assert [i.name for i in rec.inputs] == ["raw"]
    assert rec.error is not None and rec.error.startswith("RuntimeError: boom ***")
    assert not out.exists() and _leftovers(env.root) == []


def test_secrets_are_recorded_by_reference_only(sealed_env: SealedEnv) -> None:
    env = sealed_env
    out = env.root / "x.bin"
    with Stage("process", name="encrypt", sealing=env.sealing) as st:
        kv = st.secret("mlseal/test/hmac", key=True)
        dk = st.data_key("mlseal-data")
        assert st.unwrap_data_key(dk.wrapped, "mlseal-data") == dk.plaintext
        st.output("x", out).write_bytes(b"ciphertext")
    assert st.result is not None
    entry = env.ledger.entry(st.result.seq)
    rec = parse_entry(entry, env.trust)
    assert [(s.path, s.version) for s in rec.secrets] == [("mlseal/test/hmac", 1), ("transit/mlseal-data", 1)]
    for value in (kv.data["key"].reveal(), dk.plaintext.reveal().hex()):
        assert value not in json.dumps(rec.to_obj())
    import base64

    assert base64.b64encode(dk.plaintext.reveal()) not in entry


def test_sealed_decorator_records_plain_params(sealed_env: SealedEnv) -> None:
    env = sealed_env
    src = env.root / "in.txt"
    _produce(env, src, "b\na\nb\n")

    @sealed("process", name="dedupe", sealing=env.sealing)
    def dedupe(st: Stage, source: Path, dest: Path, *, keep: str = "first") -> int:
        rows = st.input("raw", source).read_text().splitlines()
        unique = list(dict.fromkeys(rows))
        st.output("clean", dest).write_text("\n".join(unique))
        return len(unique)

    assert dedupe(src, env.root / "out.txt", keep="first") == 2
    rec = parse_entry(env.ledger.entry(1), env.trust)
    assert rec.component.name == "dedupe" and rec.params == {"keep": "first"}
    assert rec.component.source_sha256 == source_sha256(dedupe.__wrapped__)  # type: ignore[attr-defined]


def test_stage_must_be_entered_and_outputs_written(sealed_env: SealedEnv) -> None:
    st = Stage("process", name="p", sealing=sealed_env.sealing)
    with pytest.raises(ConfigurationError):
        st.output("o", sealed_env.root / "o")
    with pytest.raises(ConfigurationError, match="was not written"), \
            Stage("process", name="p", sealing=sealed_env.sealing) as st2:
        st2.output("o", sealed_env.root / "o")
    # a stage whose commit failed is itself recorded as failed
    assert sealed_env.ledger.size() == 1


def test_run_info_from_environment() -> None:
    info = run_info_from_env({"KFP_RUN_ID": "r-9", "KFP_POD_NAME": "pod-1", "MLSEAL_PIPELINE": "ref"})
    assert info == RunInfo(pipeline="ref", run_id="r-9", task="pod-1")
    assert run_info_from_env({}) == RunInfo()


def test_verification_error_is_the_base() -> None:
    assert issubclass(InputRefused, VerificationError)


def test_a_stage_kind_the_record_schema_refuses_is_a_configuration_error(sealed_env: SealedEnv) -> None:
    for kind in ("", "Train", "train step"):
        with pytest.raises(ConfigurationError, match="record field stage must match"):
            Stage(kind, name="t", sealing=sealed_env.sealing)
    assert sealed_env.ledger.size() == 0


def test_an_output_name_is_declared_once(sealed_env: SealedEnv) -> None:
    env = sealed_env
    done = env.root / "done.csv"
    done.write_text("a\n1\n")
    for first, second in (("output", "output"), ("output", "existing_output"), ("existing_output", "output")):
        with pytest.raises(ConfigurationError, match="output 'x' declared twice"), \
                Stage("process", name="p", sealing=env.sealing) as st:
            for how in (first, second):
                if how == "output":
                    st.output("x", env.root / "x.csv")
                else:
                    st.existing_output("x", done)
